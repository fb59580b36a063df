/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * JSON text for json-glib trees, written the way QEMU writes it: ASCII
 * only (everything else as \uXXXX, invalid UTF-8 as U+FFFD per byte),
 * QEMU's short escapes, doubles with 17 significant digits.  Two
 * layouts: QMP's single line and qemu-img's pretty form.  Private to
 * strata's own programs (not installed).
 */
#ifndef STRATA_BLOCK_JSON_WRITER_H
#define STRATA_BLOCK_JSON_WRITER_H

#include <glib.h>
#include <json-glib/json-glib.h>

G_BEGIN_DECLS

/* QMP's layout: one line, ", " and ": " separators, members in the order
 * they were added; no line end. */
char *json_writer_line(JsonNode *node);

/* The single line with members in QEMU's QDict order: how QEMU writes a
 * node's json:{...} name. */
char *json_writer_line_qdict(JsonNode *node);

/* qemu-img's --output=json layout: 4-space indents, one member or element
 * per line, members in QEMU's QDict order; no final line end. */
char *json_writer_pretty(JsonNode *node);

/* The member names of obj in QEMU's QDict order: QEMU keeps objects in a
 * hash table and prints them bucket by bucket.  Free the array only. */
GPtrArray *json_writer_qdict_order(JsonObject *obj);

/* A node owning obj (or arr): the caller's reference moves into it.
 * json_node_init_object() takes a reference of its own instead, which
 * leaks the caller's when the caller does not drop it. */
JsonNode *json_node_new_taking_object(JsonObject *obj);
JsonNode *json_node_new_taking_array(JsonArray *arr);

G_END_DECLS

#endif
