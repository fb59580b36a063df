/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * JSON output the way qemu-img prints it: objects built with json-glib,
 * printed by the library's writer (block/json-writer.c) in qemu's pretty
 * layout and qemu's member order.
 */
#ifndef STRATA_IMG_JSON_H
#define STRATA_IMG_JSON_H

#include "block/json-writer.h"

/* Prints node pretty-printed like qemu-img, and a newline, on stdout. */
void img_json_print(JsonNode *node);

#endif
