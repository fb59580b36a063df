/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Two filter drivers with QEMU's names, each a node over one "file" child
 * that passes everything through but one thing:
 *
 * - "compress": writes become compressed writes of the child (qcow2), a
 *   whole cluster at a time -- the generic layer completes partial
 *   clusters by read-modify-write, since the node's alignment is the
 *   child's cluster size;
 * - "copy-on-read": reads copy what they read from the child's backing
 *   chain into the child (bdrv_pread_copy_on_read), so the node needs the
 *   child writable even to read.
 *
 * Both are filters in the backing-chain sense (is_filter): the layer below
 * is the child's backing file.
 */
#include <errno.h>

#include "block/block_int.h"
#include "block/drivers.h"

static int filter_pread(BlockDriverState *bs, int64_t offset, int64_t bytes,
                        void *buf)
{
    return bdrv_pread(bs->file, offset, bytes, buf);
}

static int filter_pwrite(BlockDriverState *bs, int64_t offset, int64_t bytes,
                         const void *buf)
{
    return bdrv_pwrite(bs->file, offset, bytes, buf);
}

static int filter_pwrite_zeroes(BlockDriverState *bs, int64_t offset,
                                int64_t bytes, int flags)
{
    return bdrv_pwrite_zeroes(bs->file, offset, bytes, flags);
}

static int filter_pdiscard(BlockDriverState *bs, int64_t offset,
                           int64_t bytes)
{
    return bdrv_pdiscard(bs->file, offset, bytes);
}

static int64_t filter_getlength(BlockDriverState *bs)
{
    return bdrv_getlength(bs->file);
}

static int filter_truncate(BlockDriverState *bs, int64_t size, GError **errp)
{
    return bdrv_truncate(bs->file, size, errp);
}

static int filter_block_status(BlockDriverState *bs, int64_t offset,
                               int64_t bytes, int64_t *pnum, int64_t *map,
                               BlockDriverState **file)
{
    return bdrv_block_status(bs->file, offset, bytes, pnum, map, file);
}

static int filter_get_info(BlockDriverState *bs, BlockDriverInfo *bdi)
{
    return bdrv_get_info(bs->file, bdi);
}

/* ---- compress ---- */

static int compress_open(BlockDriverState *bs, BlockOpts *options, int flags,
                         GError **errp)
{
    BlockDriverInfo bdi = { 0 };

    if (!bdrv_driver_can_compress(bs->file->drv)) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_NOT_SUPPORTED,
                    "Compression is not supported for underlying format: %s",
                    bs->file->drv ? bs->file->drv->format_name
                                  : "(no format)");
        return -ENOTSUP;
    }
    if (bdrv_get_info(bs->file, &bdi) == 0 && bdi.cluster_size > 0) {
        bs->request_alignment = MAX(bs->request_alignment,
                                    (uint32_t)bdi.cluster_size);
    }
    return 0;
}

static int compress_pwrite(BlockDriverState *bs, int64_t offset,
                           int64_t bytes, const void *buf)
{
    return bdrv_pwrite_compressed(bs->file, offset, bytes, buf);
}

BlockDriver bdrv_compress = {
    .format_name = "compress",
    .is_filter = true,
    .open = compress_open,
    .pread = filter_pread,
    .pwrite = compress_pwrite,
    .pwrite_zeroes = filter_pwrite_zeroes,
    .pdiscard = filter_pdiscard,
    .getlength = filter_getlength,
    .truncate = filter_truncate,
    .block_status = filter_block_status,
    .get_info = filter_get_info,
};

/* ---- copy-on-read ---- */

static int cor_open(BlockDriverState *bs, BlockOpts *options, int flags,
                    GError **errp)
{
    /* QEMU's text: the node would write to its child on every read */
    if (!(flags & BDRV_O_RDWR) || bs->file->read_only) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "Block node is read-only");
        return -EACCES;
    }
    return 0;
}

static int cor_pread(BlockDriverState *bs, int64_t offset, int64_t bytes,
                     void *buf)
{
    return bdrv_pread_copy_on_read(bs->file, offset, bytes, buf);
}

BlockDriver bdrv_copy_on_read = {
    .format_name = "copy-on-read",
    .is_filter = true,
    .open = cor_open,
    .pread = cor_pread,
    .pwrite = filter_pwrite,
    .pwrite_zeroes = filter_pwrite_zeroes,
    .pdiscard = filter_pdiscard,
    .getlength = filter_getlength,
    .truncate = filter_truncate,
    .block_status = filter_block_status,
    .get_info = filter_get_info,
};
