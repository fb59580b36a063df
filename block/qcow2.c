/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The qcow2 format driver: open/close, flush, resize, information, and the
 * BlockDriver table.  The format's pieces live in qcow2-header.c (cluster
 * 0), qcow2-cluster.c (guest I/O), qcow2-refcount.c (allocation),
 * qcow2-cache.c, qcow2-snapshot.c, qcow2-check.c and qcow2-create.c.
 */
#include <errno.h>
#include <string.h>

#include "qcow2.h"
#include "block/drivers.h"

/* Cover up to 32 MiB of L2 tables, like QEMU's default on Linux. */
#define QCOW2_L2_CACHE_MAX_BYTES (32 * 1024 * 1024)
#define QCOW2_MIN_CACHE_TABLES 16


static int qcow2_probe(const uint8_t *buf, int buf_size, const char *filename)
{
    if (buf_size >= 8 && ((uint32_t)buf[0] << 24 | buf[1] << 16 | buf[2] << 8 |
                          buf[3]) == QCOW_MAGIC && buf[7] >= 2) {
        return 100;
    }
    return 0;
}

static void qcow2_free_state(BDRVQcow2State *s)
{
    qcow2_cache_destroy(s->l2_cache);
    qcow2_cache_destroy(s->refcount_cache);
    s->l2_cache = s->refcount_cache = NULL;
    qcow2_free_snapshots(s);
    g_free(s->l1_table);
    g_free(s->refcount_table);
    g_free(s->unknown_header_fields);
    if (s->unknown_exts) {
        g_ptr_array_free(s->unknown_exts, TRUE);
    }
    if (s->pending_frees) {
        g_array_free(s->pending_frees, TRUE);
    }
    g_mutex_clear(&s->lock);
    g_rw_lock_clear(&s->free_lock);
    g_cond_clear(&s->alloc_cond);
}

static void qcow2_init_caches(BDRVQcow2State *s)
{
    uint64_t l2_tables = qcow2_l1_entries_for(s, s->size);
    uint64_t max_tables = QCOW2_L2_CACHE_MAX_BYTES / s->cluster_size;
    int n = (int)CLAMP(l2_tables, QCOW2_MIN_CACHE_TABLES, max_tables);

    s->l2_cache = qcow2_cache_new(n, s->cluster_size, qcow2_before_l2_write);
    s->refcount_cache = qcow2_cache_new(MAX(n / 4, QCOW2_MIN_CACHE_TABLES),
                                        s->cluster_size,
                                        qcow2_before_refblock_write);
}

static int qcow2_open(BlockDriverState *bs, BlockOpts *options, int flags,
                      GError **errp)
{
    BDRVQcow2State *s = bs->opaque;
    int ret;

    g_mutex_init(&s->lock);
    g_rw_lock_init(&s->free_lock);
    g_cond_init(&s->alloc_cond);
    s->pending_frees = g_array_new(FALSE, FALSE, sizeof(uint64_t));

    ret = qcow2_read_header(bs, flags, errp);
    if (ret < 0) {
        goto fail;
    }
    qcow2_init_caches(s);
    ret = qcow2_read_snapshots(bs, errp);
    if (ret < 0) {
        goto fail;
    }
    /* Autoclear bits we do not maintain must be cleared once we write. */
    if ((flags & BDRV_O_RDWR) && s->autoclear_features) {
        s->autoclear_features = 0;
        ret = qcow2_write_header(bs, errp);
        if (ret < 0) {
            goto fail;
        }
    }
    return 0;

fail:
    qcow2_free_state(s);
    return ret;
}

static int qcow2_flush_metadata(BlockDriverState *bs)
{
    BDRVQcow2State *s = bs->opaque;
    int ret;

    /* free_lock first: applying frees must not race data requests. */
    g_rw_lock_writer_lock(&s->free_lock);
    g_mutex_lock(&s->lock);
    ret = qcow2_write_back_metadata(bs);
    g_mutex_unlock(&s->lock);
    g_rw_lock_writer_unlock(&s->free_lock);
    return ret;
}

static void qcow2_close(BlockDriverState *bs)
{
    BDRVQcow2State *s = bs->opaque;

    if (!bs->read_only) {
        qcow2_flush_metadata(bs);
    }
    qcow2_free_state(s);
}

static int qcow2_flush(BlockDriverState *bs)
{
    return qcow2_flush_metadata(bs);
}

static int qcow2_reopen(BlockDriverState *bs, bool read_only, GError **errp)
{
    int ret = 0;

    if (read_only) {
        ret = qcow2_flush_metadata(bs);
        if (ret < 0) {
            g_set_error(errp, BDRV_ERROR, BDRV_ERROR_IO,
                        "Could not write back metadata: %s", g_strerror(-ret));
        }
    }
    return ret;
}

static int64_t qcow2_getlength(BlockDriverState *bs)
{
    BDRVQcow2State *s = bs->opaque;

    return (int64_t)s->size;
}

int qcow2_truncate(BlockDriverState *bs, int64_t size, GError **errp)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t be;
    int ret;

    if (size % BDRV_SECTOR_SIZE) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "The new size must be a multiple of 512");
        return -EINVAL;
    }
    if ((uint64_t)size < s->size) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_NOT_SUPPORTED,
                    "qcow2 doesn't support shrinking images yet");
        return -ENOTSUP;
    }
    if (s->version < 3 && s->nb_snapshots) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "Can't resize a v2 image which has snapshots");
        return -ENOTSUP;
    }
    if (qcow2_l1_entries_for(s, size) > QCOW2_MAX_L1_BYTES / 8) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "Image size is too big for the cluster size");
        return -EFBIG;
    }
    g_rw_lock_writer_lock(&s->free_lock);
    g_mutex_lock(&s->lock);
    ret = qcow2_grow_l1_table(bs, qcow2_l1_entries_for(s, size));
    if (ret == 0) {
        be = GUINT64_TO_BE((uint64_t)size);
        ret = qcow2_write_header_bytes(bs, QCOW2_HDR_SIZE_OFF, &be, 8);
    }
    if (ret == 0) {
        s->size = size;
    }
    g_mutex_unlock(&s->lock);
    g_rw_lock_writer_unlock(&s->free_lock);
    if (ret < 0) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_IO,
                    "Failed to grow the image: %s", g_strerror(-ret));
    }
    return ret;
}

static int qcow2_get_info(BlockDriverState *bs, BlockDriverInfo *bdi)
{
    BDRVQcow2State *s = bs->opaque;

    bdi->cluster_size = s->cluster_size;
    bdi->is_dirty = !!(s->incompatible_features & QCOW2_INCOMPAT_DIRTY);
    bdi->unallocated_reads_zero = !bs->backing;
    return 0;
}

static void qcow2_get_specific_info(BlockDriverState *bs,
                                    BlockSpecificInfo *info)
{
    BDRVQcow2State *s = bs->opaque;

    info->type = "qcow2";
    info->compat = s->version >= 3 ? "1.1" : "0.10";
    info->compression_type = s->compression_type ? "zstd" : "zlib";
    info->lazy_refcounts =
        !!(s->compatible_features & QCOW2_COMPAT_LAZY_REFCOUNTS);
    info->refcount_bits = s->refcount_bits;
    info->corrupt = !!(s->incompatible_features & QCOW2_INCOMPAT_CORRUPT);
    info->extended_l2 = false;
}

BlockDriver bdrv_qcow2 = {
    .format_name = "qcow2",
    .instance_size = sizeof(BDRVQcow2State),
    .supports_backing = true,
    .probe = qcow2_probe,
    .open = qcow2_open,
    .close = qcow2_close,
    .create = qcow2_create,
    .reopen = qcow2_reopen,
    .pread = qcow2_pread,
    .pwrite = qcow2_pwrite,
    .pwrite_zeroes = qcow2_pwrite_zeroes,
    .pdiscard = qcow2_pdiscard,
    .flush = qcow2_flush,
    .truncate = qcow2_truncate,
    .getlength = qcow2_getlength,
    .block_status = qcow2_block_status,
    .get_info = qcow2_get_info,
    .get_specific_info = qcow2_get_specific_info,
    .check = qcow2_check,
};
