/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * JSON output the way qemu-img prints it: objects built with json-glib,
 * printed by the library's writer (block/json-writer.c) in qemu's pretty
 * layout and qemu's member order.
 */
#ifndef STRATA_IMG_JSON_H
#define STRATA_IMG_JSON_H

#include "block/block.h"
#include "block/json-writer.h"

/* Prints node pretty-printed like qemu-img, and a newline, on stdout. */
void img_json_print(JsonNode *node);

/* ---- strata's pending-transaction report (issue 14) ---- */

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
