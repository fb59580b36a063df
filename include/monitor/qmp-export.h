/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * NBD exports from the command line: strata-daemon's --nbd-server and
 * --export go through the same code as QMP's nbd-server-start and
 * block-export-add (monitor/qmp-cmd-export.c), with the options checked
 * against the schema (NbdServerOptions, BlockExportOptions).
 */
#ifndef STRATA_MONITOR_QMP_EXPORT_H
#define STRATA_MONITOR_QMP_EXPORT_H

#include <stdbool.h>
#include <glib.h>
#include <json-glib/json-glib.h>

G_BEGIN_DECLS

/* Checks options (keyval: scalars are strings) without acting. */
bool monitor_nbd_server_check(JsonNode *options, bool keyval, GError **errp);
bool monitor_export_check(JsonNode *options, bool keyval, GError **errp);
/* --nbd-server / --export: checks and acts. */
bool monitor_nbd_server_start(JsonNode *options, bool keyval, GError **errp);
bool monitor_export_add(JsonNode *options, bool keyval, GError **errp);
/* --object tls-creds-x509,id=ID,dir=DIR,endpoint=server[,verify-peer=B]
 * (the only object type strata-daemon has): check, and load. */
bool monitor_object_check(JsonNode *options, bool keyval, GError **errp);
bool monitor_object_add(JsonNode *options, bool keyval, GError **errp);
/* HMP object_add's argument: "TYPE,id=ID,..." (keyval). */
bool monitor_object_add_text(const char *text, GError **errp);
/* At exit: every export closed (clients disconnected), server stopped. */
void monitor_exports_shutdown(void);

G_END_DECLS

#endif
