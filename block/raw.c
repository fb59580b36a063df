/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The "raw" format driver: guest bytes are the file's bytes.  It passes
 * everything to its file child; probing picks it when nothing else fits.
 */
#include <errno.h>

#include "block/block_int.h"
#include "block/drivers.h"

static int raw_probe(const uint8_t *buf, int buf_size, const char *filename)
{
    return 1; /* anything is raw, as a last resort */
}

static int raw_open(BlockDriverState *bs, BlockOpts *options, int flags,
                    GError **errp)
{
    return 0;
}

static int raw_pread(BlockDriverState *bs, int64_t offset, int64_t bytes,
                     void *buf)
{
    return bdrv_pread(bs->file, offset, bytes, buf);
}

static int raw_pwrite(BlockDriverState *bs, int64_t offset, int64_t bytes,
                      const void *buf)
{
    return bdrv_pwrite(bs->file, offset, bytes, buf);
}

static int raw_pwrite_zeroes(BlockDriverState *bs, int64_t offset,
                             int64_t bytes, int flags)
{
    return bdrv_pwrite_zeroes(bs->file, offset, bytes, flags);
}

static int raw_pdiscard(BlockDriverState *bs, int64_t offset, int64_t bytes)
{
    return bdrv_pdiscard(bs->file, offset, bytes);
}

/* Like QEMU, a raw image's size is whole sectors: the padding past the
 * end of the file reads as zeroes. */
static int64_t raw_getlength(BlockDriverState *bs)
{
    int64_t len = bdrv_getlength(bs->file);

    return len < 0 ? len : (len + BDRV_SECTOR_SIZE - 1) / BDRV_SECTOR_SIZE *
                           BDRV_SECTOR_SIZE;
}

static int raw_truncate(BlockDriverState *bs, int64_t size, GError **errp)
{
    return bdrv_truncate(bs->file, size, errp);
}

static int raw_block_status(BlockDriverState *bs, int64_t offset,
                            int64_t bytes, int64_t *pnum, int64_t *map,
                            BlockDriverState **file)
{
    return bdrv_block_status(bs->file, offset, bytes, pnum, map, file);
}

static int raw_get_info(BlockDriverState *bs, BlockDriverInfo *bdi)
{
    bdi->unallocated_reads_zero = true;
    return 0;
}

static bool raw_create(const char *filename, BlockOpts *opts, GError **errp)
{
    uint64_t size;

    if (bdrv_opts_get(opts, "backing_file")) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "Backing file not supported for file format 'raw'");
        return false;
    }
    if (!bdrv_opts_get_size(opts, "size", 0, &size, errp)) {
        return false;
    }
    return file_create_with_size(filename, size, errp);
}

BlockDriver bdrv_raw = {
    .format_name = "raw",
    .probe = raw_probe,
    .open = raw_open,
    .create = raw_create,
    .pread = raw_pread,
    .pwrite = raw_pwrite,
    .pwrite_zeroes = raw_pwrite_zeroes,
    .pdiscard = raw_pdiscard,
    .getlength = raw_getlength,
    .truncate = raw_truncate,
    .block_status = raw_block_status,
    .get_info = raw_get_info,
};
