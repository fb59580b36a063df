/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Persistent dirty bitmaps of a qcow2 image (qcow2-bitmap.c): what the
 * header, open/close, the write paths and check need from them.
 */
#ifndef STRATA_QCOW2_BITMAP_H
#define STRATA_QCOW2_BITMAP_H

#include "block/dirty-bitmap.h"
#include "qcow2.h"

/* autoclear bit 0: the bitmaps extension can be trusted */
#define QCOW2_AUTOCLEAR_BITMAPS (1ULL << 0)

/* The bitmaps header extension (len bytes at data), while the header is
 * parsed: validated with QEMU's texts.  When the autoclear bit says
 * another program wrote the image, the extension is ignored with QEMU's
 * warning, and a read-write open drops it. */
bool qcow2_bitmaps_parse_ext(BlockDriverState *bs, const uint8_t *data,
                             uint32_t len, GError **errp);
/* The extension to write (24 bytes into out), or false for none. */
bool qcow2_bitmaps_ext_bytes(BDRVQcow2State *s, uint8_t out[24]);
/* A read-write open must rewrite the header to drop a stale extension. */
bool qcow2_bitmaps_ext_dropped(BDRVQcow2State *s);
/* The autoclear bit this state keeps set. */
uint64_t qcow2_bitmaps_autoclear(BDRVQcow2State *s);

/* After the header: reads the bitmap directory (QEMU's checks: an image
 * whose directory is broken does not open).  Read-write (and not for
 * check): loads every consistent bitmap and marks it in use on disk, so
 * that a crash leaves it marked inconsistent rather than stale. */
int qcow2_bitmaps_open(BlockDriverState *bs, int flags, GError **errp);
/* Writes the loaded bitmaps back (new clusters, then the directory,
 * then the header) and drops them from memory; nothing loaded: 0. */
int qcow2_bitmaps_store(BlockDriverState *bs, GError **errp);
void qcow2_bitmaps_free(BDRVQcow2State *s);

/* Guest writes: the enabled bitmaps mark [offset, offset+bytes). */
void qcow2_bitmaps_mark(BlockDriverState *bs, uint64_t offset,
                        uint64_t bytes);
/* The whole disk changed (a snapshot was applied, the layer emptied). */
void qcow2_bitmaps_mark_all(BlockDriverState *bs);
/* Before a resize: refuses (QEMU's text) while a bitmap is inconsistent
 * or not loaded; after it, the bitmaps follow the new size. */
int qcow2_bitmaps_can_resize(BlockDriverState *bs, GError **errp);
void qcow2_bitmaps_resized(BlockDriverState *bs);
/* A downgrade to version 2 cannot keep bitmaps. */
bool qcow2_bitmaps_present(BDRVQcow2State *s);

/* For check: calls inc for each cluster range the bitmaps use (the
 * directory, each table, each data cluster); bad entries count as
 * corruptions.  Returns 0 or -errno (an unreadable directory). */
int qcow2_bitmaps_count_refs(BlockDriverState *bs,
                             void (*inc)(void *opaque, uint64_t offset,
                                         uint64_t bytes),
                             void *opaque, int *corruptions);

/* The BlockDriver entries (include/block/dirty-bitmap.h). */
int qcow2_bitmap_list(BlockDriverState *bs, GPtrArray **list, GError **errp);
int qcow2_bitmap_modify(BlockDriverState *bs, const BdrvBitmapRequest *req,
                        char **hint, GError **errp);
uint64_t qcow2_bitmaps_size(BlockDriverState *bs, uint32_t cluster_size);

#endif
