/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Persistent dirty bitmaps (qemu-img bitmap, info, measure): a bitmap
 * records which parts of the disk were written since it was created or
 * cleared, at a granularity of bytes per bit.  Only qcow2 version 3
 * images hold them; the format driver keeps enabled bitmaps up to date
 * with every write while the image is open read-write.
 */
#ifndef STRATA_DIRTY_BITMAP_H
#define STRATA_DIRTY_BITMAP_H

#include "block/block.h"

G_BEGIN_DECLS

/* QEMU's limit on a bitmap name. */
#define BDRV_BITMAP_MAX_NAME_SIZE 1023

typedef struct BdrvBitmapInfo {
    char *name;
    uint32_t granularity;   /* bytes per bit */
    bool in_use;            /* not saved properly: inconsistent */
    bool auto_;             /* enabled: follows every write */
} BdrvBitmapInfo;

void bdrv_bitmap_info_free(BdrvBitmapInfo *info);

typedef enum {
    BDRV_BITMAP_ADD,
    BDRV_BITMAP_REMOVE,
    BDRV_BITMAP_CLEAR,
    BDRV_BITMAP_ENABLE,
    BDRV_BITMAP_DISABLE,
    BDRV_BITMAP_MERGE,
} BdrvBitmapOp;

typedef struct BdrvBitmapRequest {
    BdrvBitmapOp op;
    const char *name;
    uint32_t granularity;        /* ADD: validated, never 0 here */
    bool disabled;               /* ADD */
    BlockDriverState *src_bs;    /* MERGE: the node holding src_name */
    const char *src_name;
} BdrvBitmapRequest;

/* The node's persistent bitmaps in directory order (BdrvBitmapInfo *,
 * freed with the array); an empty array when it has none or cannot. */
GPtrArray *bdrv_bitmap_list(BlockDriverState *bs, GError **errp);
/* One qemu-img bitmap action on a node opened read-write.  granularity
 * 0 takes the default (the cluster size, kept within 4 KiB..64 KiB).
 * errp gets QEMU's text for what failed; hint (may be NULL) the line
 * QEMU prints after it, or NULL. */
bool bdrv_bitmap_modify(BlockDriverState *bs, BdrvBitmapRequest *req,
                        char **hint, GError **errp);
/* Whether the node's format (and version) can hold persistent bitmaps. */
bool bdrv_supports_bitmaps(BlockDriverState *bs);
/* What the node's bitmaps would take in a qcow2 image of the given
 * cluster size (qemu-img measure); -1: the node holds none it could. */
int64_t bdrv_bitmaps_size(BlockDriverState *bs, uint32_t cluster_size);

G_END_DECLS

#endif
