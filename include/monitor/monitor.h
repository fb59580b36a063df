/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The QMP monitor of strata-daemon: listening sockets on a GLib main
 * loop (GIO), one connection per client, QEMU 7.2's wire protocol
 * (greeting, capabilities negotiation, one JSON object per CRLF-ended
 * line), and the dispatch of commands through the generated QAPI table.
 * Commands run on the main loop's thread, one at a time, in order.
 *
 * Also the block state the commands share: the nodes blockdev-add
 * created (each with an anonymous device, see blockdev/registry.h).
 */
#ifndef STRATA_MONITOR_MONITOR_H
#define STRATA_MONITOR_MONITOR_H

#include <stdbool.h>
#include <glib.h>
#include <json-glib/json-glib.h>

G_BEGIN_DECLS

/* The QEMU version whose QMP we speak (query-version, the greeting). */
#define MONITOR_QEMU_MAJOR 7
#define MONITOR_QEMU_MINOR 2
#define MONITOR_QEMU_MICRO 0

/* Error domain of the monitor itself; codes are QMP classes that only
 * the monitor produces. */
#define MONITOR_ERROR monitor_error_quark()
GQuark monitor_error_quark(void);
typedef enum {
    MONITOR_ERROR_COMMAND_NOT_FOUND,  /* QMP CommandNotFound */
    MONITOR_ERROR_DEVICE_NOT_ACTIVE,  /* QMP DeviceNotActive (no such job) */
} MonitorErrorCode;

/* "strata <version>", set once by the program before listening. */
void monitor_set_package(const char *package);
const char *monitor_get_package(void);

/* A listening endpoint ("--chardev socket,..."); opened at once.  The
 * unix socket is created with mode 0600 and removed at shutdown. */
bool monitor_listen_unix(const char *path, GError **errp);
bool monitor_listen_tcp(const char *host, const char *port, GError **errp);

/* quit and SIGTERM end the main loop with this; set by the program. */
void monitor_set_quit_func(void (*fn)(void *opaque), void *opaque);
void monitor_request_quit(void);

/* Closes every listener and client (the unix sockets are unlinked). */
void monitor_shutdown(void);

/*
 * blockdev-add for the command line and for QMP: options is a
 * BlockdevOptions object (keyval: scalars as strings, as from
 * "--blockdev driver=qcow2,..."); the node is opened and given an
 * anonymous device.
 */
bool monitor_blockdev_add(JsonNode *options, bool keyval, GError **errp);
/* Drops every node blockdev-add made: devices released, images flushed
 * and closed, locks released. */
void monitor_blockdev_close_all(void);

/* For tests and callers that run one request without a socket: the
 * reply to one request on a fresh, already negotiated session. */
JsonNode *monitor_handle_request(JsonNode *request, GError *parse_err);

/* issue 13 (api): every event message is also given to fn (libstrata's
 * strata_monitor_set_event_handler()), in the thread that delivers the
 * event queue; NULL: none. */
void monitor_set_event_sink(void (*fn)(JsonNode *msg, void *opaque),
                            void *opaque);

G_END_DECLS

#endif
