/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * JSON output the way qemu-img prints it: objects built with json-glib,
 * printed with qemu's pretty layout and qemu's member order (QEMU keeps
 * objects in a hash table and prints them in bucket order, so
 * `--output=json` shows keys in that order rather than the schema's).
 */
#ifndef STRATA_IMG_JSON_H
#define STRATA_IMG_JSON_H

#include <json-glib/json-glib.h>

/* The text of node, pretty-printed like qemu (4-space indents, "k": v). */
char *img_json_to_string(JsonNode *node);
/* Prints node and a newline on stdout. */
void img_json_print(JsonNode *node);
/* The member names of obj in qemu's order (free the array only). */
GPtrArray *img_json_members_ordered(JsonObject *obj);

#endif
