/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Persistent dirty bitmaps, the generic part (include/block/dirty-bitmap.h):
 * the checks QEMU makes before any format sees a request (name, the
 * granularity and its default), then the format driver's entry.
 */
#include <errno.h>
#include <string.h>

#include "block/block_int.h"
#include "block/dirty-bitmap.h"

void bdrv_bitmap_info_free(BdrvBitmapInfo *info)
{
    if (info) {
        g_free(info->name);
        g_free(info);
    }
}

GPtrArray *bdrv_bitmap_list(BlockDriverState *bs, GError **errp)
{
    GPtrArray *list = NULL;

    if (bs->drv && bs->drv->bitmap_list &&
        bs->drv->bitmap_list(bs, &list, errp) < 0) {
        return NULL;
    }
    return list ? list : g_ptr_array_new_with_free_func(
                             (GDestroyNotify)bdrv_bitmap_info_free);
}

/* The cluster size, kept within 4 KiB..64 KiB; 64 KiB without one. */
static uint32_t default_granularity(BlockDriverState *bs)
{
    BlockDriverInfo bdi = { 0 };

    if (bdrv_get_info(bs, &bdi) >= 0 && bdi.cluster_size > 0) {
        return MIN(65536, MAX(4096, bdi.cluster_size));
    }
    return 65536;
}

bool bdrv_bitmap_modify(BlockDriverState *bs, BdrvBitmapRequest *req,
                        char **hint, GError **errp)
{
    if (hint) {
        *hint = NULL;
    }
    if (req->op == BDRV_BITMAP_ADD) {
        if (!req->name || !req->name[0]) {
            g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                        "Bitmap name cannot be empty");
            return false;
        }
        if (req->granularity == 0) {
            req->granularity = default_granularity(bs);
        } else if (req->granularity < 512 ||
                   (req->granularity & (req->granularity - 1))) {
            g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                        "Granularity must be power of 2 and at least 512");
            return false;
        }
    }
    if (!bs->drv || !bs->drv->bitmap_modify) {
        if (req->op == BDRV_BITMAP_ADD) {
            g_set_error(errp, BDRV_ERROR, BDRV_ERROR_NOT_SUPPORTED,
                        "Can't make bitmap '%s' persistent in '%s': Block "
                        "format '%s' does not support persistent bitmaps",
                        req->name, bdrv_get_node_name(bs),
                        bdrv_get_format_name(bs));
        } else {
            g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                        "Dirty bitmap '%s' not found", req->name);
        }
        return false;
    }
    return bs->drv->bitmap_modify(bs, req, hint, errp) == 0;
}

bool bdrv_supports_bitmaps(BlockDriverState *bs)
{
    return bs->drv && bs->drv->supports_bitmaps &&
           bs->drv->supports_bitmaps(bs);
}

int64_t bdrv_bitmaps_size(BlockDriverState *bs, uint32_t cluster_size)
{
    if (!bs->drv || !bs->drv->bitmaps_size) {
        return -1;
    }
    return (int64_t)bs->drv->bitmaps_size(bs, cluster_size);
}
