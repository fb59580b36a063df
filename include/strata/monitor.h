/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The monitor in-process: QMP commands (JSON text in, JSON text out, as
 * on strata-daemon's socket: QEMU 7.2's protocol and commands) and HMP
 * command lines (text out), so a hypervisor can serve its own monitor
 * socket and forward to libstrata.
 *
 * Threads: monitor calls (these, strata_device_open/close,
 * strata_shutdown) are made from one thread at a time; the library
 * serialises them with a lock.  Events (JOB_STATUS_CHANGE,
 * BLOCK_JOB_COMPLETED, ...) are queued by any thread and delivered, in
 * order, to the handler in the thread that runs the global default
 * GMainContext, or in the thread that calls strata_monitor_qmp(),
 * strata_qmp_session_handle() or strata_monitor_dispatch_events(): a
 * program without a GLib main loop calls the last one regularly.
 */
#ifndef STRATA_PUBLIC_MONITOR_H
#define STRATA_PUBLIC_MONITOR_H

#include <stdbool.h>
#include <glib.h>

G_BEGIN_DECLS

/*
 * Runs one QMP request ({"execute": ..., "arguments": ..., "id": ...}) on
 * an already negotiated session and returns the reply text
 * ({"return": ...} or {"error": {"class", "desc"}}), one line without a
 * newline, to be freed with g_free().  Malformed JSON gets QMP's error
 * reply; never NULL.
 */
char *strata_monitor_qmp(const char *request);

/*
 * Runs one HMP command line ("info snapshots", "savevm s1", ...) and
 * returns what it prints (lines ended by "\n"; "" for none), to be freed
 * with g_free().  Errors are printed text, as on QEMU's monitor.
 */
char *strata_monitor_hmp(const char *line);

/*
 * The event handler: called with each event message as one line of JSON
 * text ({"timestamp": ..., "event": ..., "data": ...}), owned by the
 * library.  It must not call monitor functions.  NULL: none.
 */
typedef void StrataEventFunc(const char *event, void *opaque);
void strata_monitor_set_event_handler(StrataEventFunc *fn, void *opaque);

/* Delivers the events queued so far to the handler, now, in the calling
 * thread. */
void strata_monitor_dispatch_events(void);

/*
 * A QMP client session for a program that forwards a socket's lines:
 * the greeting, capabilities negotiation (commands before
 * qmp_capabilities get QMP's CommandNotFound-style error) and the
 * replies, as strata-daemon's socket gives them.
 */
typedef struct StrataQmpSession StrataQmpSession;
StrataQmpSession *strata_qmp_session_new(void);
void strata_qmp_session_free(StrataQmpSession *s);
/* The greeting line ({"QMP": {...}}), g_free() it. */
char *strata_qmp_session_greeting(StrataQmpSession *s);
/* The reply line to one request line, g_free() it. */
char *strata_qmp_session_handle(StrataQmpSession *s, const char *line);
/* Whether qmp_capabilities was accepted (events are for such clients). */
bool strata_qmp_session_negotiated(StrataQmpSession *s);

/*
 * At the end of the program: cancels running jobs (their events are
 * delivered), closes every node opened by strata_device_open() or
 * blockdev-add (images flushed and unlocked).  Device handles still open
 * must not be used afterwards (free them with strata_device_close(),
 * which then only frees).
 */
void strata_shutdown(void);

G_END_DECLS

#endif
