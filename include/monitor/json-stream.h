/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * QMP's JSON reader and writer.  The reader takes a byte stream in any
 * chunks and hands out one complete top-level value at a time (input may
 * be pretty-printed, several values may share a line, strings may use
 * single quotes as QEMU allows), or one error per bad value with QEMU
 * 7.2's texts ("JSON parse error, expecting value", "... invalid keyword
 * 'x'", "... stray 'c'").  Memory is bounded: a value larger than
 * JSON_STREAM_MAX_BYTES or nested deeper than JSON_STREAM_MAX_DEPTH is
 * refused with QEMU's limit messages and the bytes of it still to come
 * are read and dropped, never stored.
 *
 * Replies are written by the library's writer, block/json-writer.h.
 */
#ifndef STRATA_MONITOR_JSON_STREAM_H
#define STRATA_MONITOR_JSON_STREAM_H

#include <stdbool.h>
#include <glib.h>
#include <json-glib/json-glib.h>

#include "block/json-writer.h"

G_BEGIN_DECLS

#define JSON_STREAM_MAX_BYTES (8u << 20)
#define JSON_STREAM_MAX_DEPTH 1024

/* Receives a value (owned; NULL on error) or an error (owned). */
typedef void JsonStreamEmit(JsonNode *value, GError *err, void *opaque);

typedef struct JsonStream JsonStream;
JsonStream *json_stream_new(JsonStreamEmit *emit, void *opaque);
void json_stream_feed(JsonStream *s, const char *buf, size_t len);
/* The end of input: a value still open is reported as an error. */
void json_stream_flush(JsonStream *s);
void json_stream_free(JsonStream *s);

/* One value from a whole text (--blockdev '{...}'); NULL with errp set. */
JsonNode *json_stream_parse_text(const char *text, GError **errp);

G_END_DECLS

#endif
