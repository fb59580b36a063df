/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The "null-co" protocol driver, QEMU's test device: a disk of `size`
 * bytes (1 GiB unless told) that forgets what is written.  Reads return
 * zeroes with read-zeroes=on; otherwise QEMU leaves the buffer as it was,
 * which strata does not copy (the buffer is zeroed too, never left
 * uninitialised), but block status still says only that reads are not
 * known to be zeroes.  latency-ns is accepted and ignored.
 */
#include <errno.h>
#include <string.h>

#include "block/block_int.h"
#include "block/drivers.h"

typedef struct BDRVNullState {
    int64_t size;
    bool read_zeroes;
} BDRVNullState;

static int null_open(BlockDriverState *bs, BlockOpts *options, int flags,
                     GError **errp)
{
    BDRVNullState *s = bs->opaque;
    uint64_t size, latency;

    if (bs->filename && *bs->filename && strcmp(bs->filename, "null-co://")) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "The only allowed filename for this driver is "
                    "'null-co://'");
        return -EINVAL;
    }
    if (!bdrv_opts_get_size(options, "size", 1 << 30, &size, errp) ||
        !bdrv_opts_get_bool(options, "read-zeroes", false, &s->read_zeroes,
                            errp) ||
        !bdrv_opts_get_size(options, "latency-ns", 0, &latency, errp)) {
        return -EINVAL;
    }
    g_hash_table_remove(options, "size");
    g_hash_table_remove(options, "read-zeroes");
    g_hash_table_remove(options, "latency-ns");
    g_hash_table_remove(options, "filename");
    s->size = (int64_t)MIN(size, (uint64_t)INT64_MAX);
    return 0;
}

static int null_pread(BlockDriverState *bs, int64_t offset, int64_t bytes,
                      void *buf)
{
    memset(buf, 0, bytes);
    return 0;
}

static int null_pwrite(BlockDriverState *bs, int64_t offset, int64_t bytes,
                       const void *buf)
{
    return 0;
}

static int null_pwrite_zeroes(BlockDriverState *bs, int64_t offset,
                              int64_t bytes, int flags)
{
    return 0;
}

static int null_pdiscard(BlockDriverState *bs, int64_t offset, int64_t bytes)
{
    return 0;
}

static int64_t null_getlength(BlockDriverState *bs)
{
    BDRVNullState *s = bs->opaque;

    return s->size;
}

/* As QEMU's: every byte maps to itself on this node. */
static int null_block_status(BlockDriverState *bs, int64_t offset,
                             int64_t bytes, int64_t *pnum, int64_t *map,
                             BlockDriverState **file)
{
    BDRVNullState *s = bs->opaque;

    *pnum = bytes;
    *map = offset;
    *file = bs;
    return BDRV_BLOCK_OFFSET_VALID | BDRV_BLOCK_ALLOCATED |
           (s->read_zeroes ? BDRV_BLOCK_ZERO : 0);
}

static int64_t null_allocated_size(BlockDriverState *bs)
{
    return 0;
}

BlockDriver bdrv_null_co = {
    .format_name = "null-co",
    .instance_size = sizeof(BDRVNullState),
    .is_protocol = true,
    .open = null_open,
    .pread = null_pread,
    .pwrite = null_pwrite,
    .pwrite_zeroes = null_pwrite_zeroes,
    .pdiscard = null_pdiscard,
    .getlength = null_getlength,
    .get_allocated_file_size = null_allocated_size,
    .block_status = null_block_status,
};
