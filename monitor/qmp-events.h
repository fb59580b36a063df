/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * QMP events: any thread queues an event (it is timestamped when queued);
 * the main loop delivers the queue, in order, to every client that has
 * negotiated capabilities.  Work that must run on the main loop in order
 * with the events (freeing a concluded job) goes through the same queue.
 * No thread but the main loop's ever writes to a socket.
 */
#ifndef STRATA_MONITOR_QMP_EVENTS_H
#define STRATA_MONITOR_QMP_EVENTS_H

#include <stdbool.h>
#include <glib.h>
#include <json-glib/json-glib.h>

G_BEGIN_DECLS

/* Any thread: queues event `name` with `data` (consumed; NULL: none). */
void qmp_event_emit(const char *name, JsonNode *data);
/* Any thread: runs fn(opaque) on the main loop after the events queued
 * so far. */
void qmp_event_call(void (*fn)(void *opaque), void *opaque);
/* Main loop's thread: delivers (and runs) everything queued, now. */
void qmp_events_flush(void);

/* monitor/qmp-server.c: msg to every negotiated client. */
void monitor_broadcast(JsonNode *msg);

/* monitor/qmp-cmd-jobs.c: at exit, cancels every job, waits for each,
 * delivers their events and frees them. */
void monitor_jobs_shutdown(void);

/* SHUTDOWN {guest: false, reason} (QEMU's reasons: "host-qmp-quit",
 * "host-signal"). */
void qmp_event_shutdown(const char *reason);

/* BLOCK_IMAGE_CORRUPTED for every node that marks itself corrupt from now
 * on (installs the library's hook). */
void qmp_events_watch_corruption(void);

G_END_DECLS

#endif
