/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The stream job: copies into top what the layers between top and base
 * hold, then makes base top's backing file (none without a base).
 *
 * top only receives, where it holds nothing itself, the bytes a reader of
 * top sees there already, so the chain reads the same at every moment;
 * each step (look, read, write) runs with the device drained when top is
 * the device's active image, so a guest write to the same range cannot
 * slip between the look and the write and be overwritten.  The commit
 * point is one header write of top, after top has been flushed.
 */
#include <errno.h>
#include <string.h>

#include "block/backing.h"
#include "block/blockjob.h"
#include "block/block_int.h"

#define STREAM_CHUNK (2 * 1024 * 1024)

typedef struct StreamJob {
    BlockJob common;
    BlockDriverState *top;       /* references held by the job */
    BlockDriverState *base;      /* may be NULL */
    bool top_is_root;
    bool top_made_rw;
    char *backing_file;
    int64_t len;
    uint8_t *buf;
} StreamJob;

/* Zeroes top over [off, off+bytes) where base, once top's backing file,
 * would not read zeroes (without a base, top alone reads zeroes there). */
static int stream_zero(StreamJob *s, int64_t off, int64_t bytes)
{
    int64_t base_len, end;

    if (!s->base) {
        return 0;
    }
    base_len = bdrv_getlength(s->base);
    if (base_len < 0) {
        return (int)base_len;
    }
    end = MIN(off + bytes, base_len);
    while (off < end) {
        int64_t n = 0;
        int ret = bdrv_block_status_above(s->base, off, end - off, &n, NULL,
                                          NULL, NULL);
        if (ret < 0) {
            return ret;
        }
        if (n <= 0) {
            return -EIO;
        }
        if (!(ret & BDRV_BLOCK_ZERO)) {
            ret = bdrv_pwrite_zeroes(s->top, off, n, 0);
            if (ret < 0) {
                return ret;
            }
        }
        off += n;
    }
    return 0;
}

/* One step at off: copies at most STREAM_CHUNK bytes; *done says how far
 * it got. */
static int stream_step(StreamJob *s, int64_t off, int64_t *done,
                       GError **errp)
{
    BlockDriverState *decider = NULL;
    int64_t n = 0;
    int ret;

    ret = bdrv_block_status(s->top, off, MIN(STREAM_CHUNK, s->len - off),
                            &n, NULL, NULL);
    if (ret >= 0 && n <= 0) {
        ret = -EIO;
    }
    if (ret < 0) {
        goto status_error;
    }
    *done = n;
    if (ret & BDRV_BLOCK_ALLOCATED) {
        return 0;               /* top decides already */
    }
    ret = bdrv_block_status_between(s->top->backing, s->base, off, n, &n,
                                    &decider);
    if (ret < 0) {
        goto status_error;
    }
    *done = n;
    if (!decider) {
        return 0;               /* comes from base (or zeroes without) */
    }
    if (ret & BDRV_BLOCK_ZERO) {
        ret = stream_zero(s, off, n);
    } else {
        ret = bdrv_pread(decider, off, n, s->buf);
        if (ret < 0) {
            g_set_error(errp, BDRV_ERROR, BDRV_ERROR_IO,
                        "Could not read '%s': %s", decider->filename,
                        g_strerror(-ret));
            return ret;
        }
        ret = bdrv_pwrite(s->top, off, n, s->buf);
    }
    if (ret < 0) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_IO,
                    "Could not write to '%s': %s", s->top->filename,
                    g_strerror(-ret));
    }
    return ret;

status_error:
    g_set_error(errp, BDRV_ERROR, BDRV_ERROR_IO,
                "Could not read the allocation status of '%s': %s",
                s->top->filename, g_strerror(-ret));
    return ret;
}

static int stream_run(BlockJob *job, GError **errp)
{
    StreamJob *s = (StreamJob *)job;
    int64_t off, n = 0;
    int ret;

    block_job_progress_set_total(job, s->len);
    if (s->top->backing == s->base) {
        block_job_progress_add(job, s->len);
        return 0;               /* nothing between top and base */
    }
    for (off = 0; off < s->len; off += n) {
        block_job_pause_point(job);
        if (block_job_is_cancelled(job)) {
            return -ECANCELED;
        }
        if (s->top_is_root) {
            blk_drained_begin(job->blk);
        }
        ret = stream_step(s, off, &n, errp);
        if (s->top_is_root) {
            blk_drained_end(job->blk);
        }
        if (ret < 0) {
            return ret;
        }
        block_job_progress_add(job, n);
        block_job_rate_limit(job, n);
    }
    return 0;                   /* stream_prepare() publishes */
}

/* Once the job may finalize: top flushed, then its one header write that
 * names base (the commit point), then the graph follows. */
static int stream_prepare(BlockJob *job, GError **errp)
{
    StreamJob *s = (StreamJob *)job;
    g_autofree char *name = NULL;
    int ret;

    if (s->top->backing == s->base) {
        return 0;
    }
    ret = bdrv_flush(s->top);
    if (ret < 0) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_IO,
                    "Could not flush '%s': %s", s->top->filename,
                    g_strerror(-ret));
        return ret;
    }
    if (s->base) {
        name = s->backing_file ? g_strdup(s->backing_file) :
               bdrv_backing_name_for(s->top, s->base,
                                     s->top->backing_file &&
                                     bdrv_backing_name_is_relative(
                                         s->top->backing_file));
    }
    blk_drained_begin(job->blk);
    if (!bdrv_change_backing_file(s->top, name,
                                  s->base ? bdrv_get_format_name(s->base)
                                          : NULL, errp)) {
        blk_drained_end(job->blk);
        return -EIO;
    }
    bdrv_set_backing(s->top, s->base);
    blk_drained_end(job->blk);
    return 0;
}

static void stream_clean(BlockJob *job)
{
    StreamJob *s = (StreamJob *)job;

    if (s->top_made_rw) {
        block_job_restore_read_only(job, s->top);
    }
    bdrv_unref(s->top);
    if (s->base) {
        bdrv_unref(s->base);
    }
    g_free(s->backing_file);
    g_free(s->buf);
}

static const BlockJobDriver stream_job_driver = {
    .job_type = "stream",
    .instance_size = sizeof(StreamJob),
    .run = stream_run,
    .prepare = stream_prepare,
    .clean = stream_clean,
};

BlockJob *stream_start(const char *job_id, BlockBackend *blk,
                       BlockDriverState *top, BlockDriverState *base,
                       const StreamOptions *opts, GError **errp)
{
    StreamJob *s;
    int64_t len;

    top = block_job_resolve_top(blk, top, errp);
    if (!top) {
        return NULL;
    }
    if (base && (base == top || !bdrv_chain_contains(top, base))) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "'%s' is not in the backing chain of '%s'",
                    bdrv_get_node_name(base), bdrv_get_node_name(top));
        return NULL;
    }
    if (!top->drv || !top->drv->change_backing_file) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_NOT_SUPPORTED,
                    "Block format '%s' used by node '%s' does not support "
                    "backing files", bdrv_get_format_name(top),
                    bdrv_get_node_name(top));
        return NULL;
    }
    len = block_job_node_length(top, errp);
    if (len < 0) {
        return NULL;
    }
    s = block_job_create(job_id, &stream_job_driver, blk,
                         opts ? &opts->job : NULL, errp);
    if (!s) {
        return NULL;
    }
    s->top = top;
    bdrv_ref(top);
    s->base = base;
    if (base) {
        bdrv_ref(base);
    }
    s->top_is_root = top == blk_bs(blk);
    s->len = len;
    s->backing_file = g_strdup(opts ? opts->backing_file : NULL);
    s->buf = g_malloc(STREAM_CHUNK);
    if (!block_job_make_writable(top, &s->top_made_rw, errp)) {
        block_job_discard(&s->common);
        return NULL;
    }
    block_job_start(&s->common);
    return &s->common;
}
