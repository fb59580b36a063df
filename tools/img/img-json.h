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

/* ---- strata's pending-transaction report (issue 14) ---- */
#include "block/block.h"

/* The JSON member check and info add for an image that took part in an
 * unfinished crash-atomic transaction (extension naming per QAPI's
 * downstream rule). */
#define IMG_JSON_INTENT_MEMBER "__org.strata_intent"
/* Adds {"transaction", "journal", "state", "detail"} under
 * IMG_JSON_INTENT_MEMBER when bs has anything to say; returns whether. */
bool img_json_add_intent(JsonBuilder *b, BlockDriverState *bs);
/* The one-line human sentence for it, NULL when there is none. */
char *img_intent_sentence(BlockDriverState *bs);

#endif
