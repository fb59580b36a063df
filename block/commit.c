/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The commit job: merges the layers [top, base) of a chain into base.
 *
 * Safety at every step (cancel, error, or the process killed): base only
 * receives data for ranges that a layer above it decides, so no reader
 * of the chain sees base there until the chain is shortened; base grows
 * (if top is larger) with the new area zeroed, under drain.  The step
 * that makes the result visible comes last:
 *  - intermediate commit: base is flushed, then the image above top gets
 *    base as its backing file in one header write (the commit point),
 *    then the graph follows and the merged layers are dropped;
 *  - active commit: the device's writes are tracked in a dirty bitmap
 *    while the bulk copy runs, re-copied until the copy converges
 *    (READY); once completed (and finalized) the device is drained, the
 *    rest copied, base flushed and the device switched to base.
 * Both final steps run in the job's prepare(), so a job that waits for
 * job-finalize has changed nothing visible yet.  top's file is left as it is (a
 *    chain that still reads the same); the caller may empty it.
 */
#include <errno.h>
#include <string.h>

#include "block/backing.h"
#include "block/blockjob.h"
#include "block/block_int.h"

#define COMMIT_CHUNK (2 * 1024 * 1024)
#define DIRTY_GRANULARITY (64 * 1024)
#define READY_POLL_US 100000

typedef struct CommitJob {
    BlockJob common;
    BlockDriverState *top;       /* references held by the job */
    BlockDriverState *base;
    BlockDriverState *above;     /* NULL for active commit */
    bool active;
    bool base_made_rw;
    bool auto_complete;
    bool pivoted;
    char *backing_file;
    int64_t len;                 /* top's virtual size */
    uint8_t *buf;

    /* active commit: device writes since the bulk copy started */
    GMutex dirty_lock;
    uint64_t *dirty;
    int64_t dirty_bits;
    int64_t dirty_count;
    int64_t dirty_cursor;
    bool notifier_added;
} CommitJob;

static void dirty_set(CommitJob *s, int64_t offset, int64_t bytes)
{
    int64_t first, last;

    if (bytes <= 0 || offset >= s->len) {
        return;
    }
    first = offset / DIRTY_GRANULARITY;
    last = (MIN(offset + bytes, s->len) - 1) / DIRTY_GRANULARITY;
    g_mutex_lock(&s->dirty_lock);
    for (int64_t i = first; i <= last; i++) {
        uint64_t bit = 1ULL << (i % 64);
        if (!(s->dirty[i / 64] & bit)) {
            s->dirty[i / 64] |= bit;
            s->dirty_count++;
        }
    }
    g_mutex_unlock(&s->dirty_lock);
}

/* Takes (clears) the next run of dirty chunks, at most COMMIT_CHUNK bytes;
 * false if nothing is dirty. */
static bool dirty_take(CommitJob *s, int64_t *offset, int64_t *bytes)
{
    int64_t start = -1, n = 0;
    const int64_t max = COMMIT_CHUNK / DIRTY_GRANULARITY;

    g_mutex_lock(&s->dirty_lock);
    for (int64_t k = 0; k < s->dirty_bits && s->dirty_count; k++) {
        int64_t i = (s->dirty_cursor + k) % s->dirty_bits;
        if (s->dirty[i / 64] & (1ULL << (i % 64))) {
            start = i;
            break;
        }
    }
    while (start >= 0 && start + n < s->dirty_bits && n < max &&
           (s->dirty[(start + n) / 64] & (1ULL << ((start + n) % 64)))) {
        s->dirty[(start + n) / 64] &= ~(1ULL << ((start + n) % 64));
        s->dirty_count--;
        n++;
    }
    if (start >= 0) {
        s->dirty_cursor = start + n;
    }
    g_mutex_unlock(&s->dirty_lock);
    if (start < 0) {
        return false;
    }
    *offset = start * DIRTY_GRANULARITY;
    *bytes = MIN(n * DIRTY_GRANULARITY, s->len - *offset);
    return true;
}

static void commit_write_notify(BlockBackend *blk, int64_t offset,
                                int64_t bytes, void *opaque)
{
    CommitJob *s = opaque;

    dirty_set(s, offset, bytes);
    block_job_kick(&s->common);
}

/* Zeroes base over [off, off+bytes) where base does not read zeroes. */
static int commit_zero(CommitJob *s, int64_t off, int64_t bytes)
{
    while (bytes > 0) {
        int64_t n = 0;
        int ret = bdrv_block_status_above(s->base, off, bytes, &n, NULL,
                                          NULL, NULL);
        if (ret < 0) {
            return ret;
        }
        if (n <= 0) {
            n = bytes;
            ret = 0;
        }
        if (!(ret & BDRV_BLOCK_ZERO)) {
            /* MAY_UNMAP: qemu-img commit (QEMU's mirror, unmap on)
             * frees base clusters the top reads as zeroes (iotest 313) */
            ret = bdrv_pwrite_zeroes(s->base, off, n, BDRV_REQ_MAY_UNMAP);
            if (ret < 0) {
                return ret;
            }
        }
        off += n;
        bytes -= n;
    }
    return 0;
}

/* Copies into base what the layers above it hold in [off, off+bytes). */
static int commit_copy(CommitJob *s, int64_t off, int64_t bytes,
                       GError **errp)
{
    while (bytes > 0) {
        BlockDriverState *decider = NULL;
        int64_t n = 0;
        int ret = bdrv_block_status_between(s->top, s->base, off,
                                            MIN(bytes, COMMIT_CHUNK), &n,
                                            &decider);
        if (ret < 0) {
            g_set_error(errp, BDRV_ERROR, BDRV_ERROR_IO,
                        "Could not read the allocation status of '%s': %s",
                        s->top->filename, g_strerror(-ret));
            return ret;
        }
        if (decider && (ret & BDRV_BLOCK_ZERO)) {
            ret = commit_zero(s, off, n);
        } else if (decider) {
            ret = bdrv_pread(decider, off, n, s->buf);
            if (ret < 0) {
                g_set_error(errp, BDRV_ERROR, BDRV_ERROR_IO,
                            "Could not read '%s': %s", decider->filename,
                            g_strerror(-ret));
                return ret;
            }
            ret = bdrv_pwrite(s->base, off, n, s->buf);
        }
        if (ret < 0) {
            g_set_error(errp, BDRV_ERROR, BDRV_ERROR_IO,
                        "Could not write to '%s': %s", s->base->filename,
                        g_strerror(-ret));
            return ret;
        }
        off += n;
        bytes -= n;
    }
    return 0;
}

/* Grows base to top's size; the new area reads zeroes even if base has a
 * backing file of its own.  Drained: readers through top must never see
 * the moment between the resize and the zeroing. */
static int commit_grow_base(CommitJob *s, GError **errp)
{
    int64_t base_len = bdrv_getlength(s->base);
    int ret = 0;

    if (base_len < 0) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_IO,
                    "Could not get the size of '%s': %s", s->base->filename,
                    g_strerror((int)-base_len));
        return (int)base_len;
    }
    if (base_len >= s->len) {
        return 0;
    }
    blk_drained_begin(s->common.blk);
    ret = bdrv_truncate(s->base, s->len, errp);
    if (ret == 0 && s->base->backing) {
        ret = bdrv_pwrite_zeroes(s->base, base_len, s->len - base_len, 0);
        if (ret < 0) {
            g_set_error(errp, BDRV_ERROR, BDRV_ERROR_IO,
                        "Could not zero the new area of '%s': %s",
                        s->base->filename, g_strerror(-ret));
        }
    }
    blk_drained_end(s->common.blk);
    return ret;
}

static int commit_flush_base(CommitJob *s, GError **errp)
{
    int ret = bdrv_flush(s->base);

    if (ret < 0) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_IO,
                    "Could not flush '%s': %s", s->base->filename,
                    g_strerror(-ret));
    }
    return ret;
}

/* Intermediate commit: the image above top now names base. */
static int commit_finish_intermediate(CommitJob *s, GError **errp)
{
    int64_t above_len = bdrv_getlength(s->above);
    int64_t base_len = bdrv_getlength(s->base);
    g_autofree char *name = NULL;
    int ret;

    /* Above top's end the image above read zeroes; base must too. */
    if (above_len > s->len && base_len > s->len) {
        ret = commit_zero(s, s->len, MIN(above_len, base_len) - s->len);
        if (ret < 0) {
            g_set_error(errp, BDRV_ERROR, BDRV_ERROR_IO,
                        "Could not write to '%s': %s", s->base->filename,
                        g_strerror(-ret));
            return ret;
        }
    }
    ret = commit_flush_base(s, errp);
    if (ret < 0) {
        return ret;
    }
    if (s->backing_file) {
        name = g_strdup(s->backing_file);
    } else {
        name = bdrv_backing_name_for(
            s->above, s->base, s->above->backing_file &&
            bdrv_backing_name_is_relative(s->above->backing_file));
    }
    blk_drained_begin(s->common.blk);
    if (!bdrv_change_backing_file(s->above, name,
                                  bdrv_get_format_name(s->base), errp)) {
        blk_drained_end(s->common.blk);
        return -EIO;
    }
    bdrv_set_backing(s->above, s->base);
    blk_drained_end(s->common.blk);
    return 0;
}

static int commit_run(BlockJob *job, GError **errp)
{
    CommitJob *s = (CommitJob *)job;
    int64_t off, n = 0;
    int ret;

    block_job_progress_set_total(job, s->len);
    ret = commit_grow_base(s, errp);
    if (ret < 0) {
        return ret;
    }
    if (s->active) {
        blk_add_write_notifier(job->blk, commit_write_notify, s);
        s->notifier_added = true;
    }
    for (off = 0; off < s->len; off += n) {
        block_job_pause_point(job);
        if (block_job_is_cancelled(job)) {
            return -ECANCELED;
        }
        n = MIN(COMMIT_CHUNK, s->len - off);
        ret = commit_copy(s, off, n, errp);
        if (ret < 0) {
            return ret;
        }
        block_job_progress_add(job, n);
        block_job_rate_limit(job, n);
    }
    if (!s->active) {
        return 0;               /* commit_prepare() publishes */
    }

    /* Active commit: follow the device's writes until asked to pivot. */
    for (bool ready = false;;) {
        if (block_job_is_cancelled(job)) {
            return -ECANCELED;
        }
        if (ready && (s->auto_complete || block_job_complete_requested(job))) {
            break;
        }
        if (dirty_take(s, &off, &n)) {
            block_job_progress_add_total(job, n);
            ret = commit_copy(s, off, n, errp);
            if (ret < 0) {
                return ret;
            }
            block_job_progress_add(job, n);
            block_job_rate_limit(job, n);
            continue;
        }
        block_job_set_ready(job);
        ready = true;
        if (!s->auto_complete) {
            block_job_wait_event(job, READY_POLL_US);
        }
    }

    return 0;                   /* commit_prepare() pivots */
}

/*
 * The step that makes the result visible, once the job may finalize
 * (QEMU's prepare): an intermediate commit rewrites the image above top;
 * an active commit drains the device, copies what was written since,
 * flushes base and switches the device to it -- unless a cancel without
 * force asked to finish without the pivot.
 */
static int commit_prepare(BlockJob *job, GError **errp)
{
    CommitJob *s = (CommitJob *)job;
    int64_t off, n;
    int ret;

    if (!s->active) {
        return commit_finish_intermediate(s, errp);
    }
    if (!block_job_should_pivot(job)) {
        return 0;
    }
    blk_drained_begin(job->blk);
    while (dirty_take(s, &off, &n)) {
        ret = commit_copy(s, off, n, errp);
        if (ret < 0) {
            blk_drained_end(job->blk);
            return ret;
        }
    }
    ret = commit_flush_base(s, errp);
    if (ret < 0) {
        blk_drained_end(job->blk);
        return ret;
    }
    blk_remove_write_notifier(job->blk, commit_write_notify, s);
    s->notifier_added = false;
    blk_set_root(job->blk, s->base);
    s->pivoted = true;
    blk_drained_end(job->blk);
    return 0;
}

static void commit_clean(BlockJob *job)
{
    CommitJob *s = (CommitJob *)job;

    if (s->notifier_added) {
        blk_remove_write_notifier(job->blk, commit_write_notify, s);
    }
    if (s->base_made_rw && !s->pivoted) {
        block_job_restore_read_only(job, s->base);
    }
    bdrv_unref(s->top);
    bdrv_unref(s->base);
    if (s->above) {
        bdrv_unref(s->above);
    }
    g_free(s->backing_file);
    g_free(s->buf);
    g_free(s->dirty);
    g_mutex_clear(&s->dirty_lock);
}

static const BlockJobDriver commit_job_driver = {
    .job_type = "commit",
    .instance_size = sizeof(CommitJob),
    .run = commit_run,
    .prepare = commit_prepare,
    .clean = commit_clean,
};

BlockJob *commit_start(const char *job_id, BlockBackend *blk,
                       BlockDriverState *top, BlockDriverState *base,
                       const CommitOptions *opts, GError **errp)
{
    CommitJob *s;
    int64_t len;

    top = block_job_resolve_top(blk, top, errp);
    if (!top) {
        return NULL;
    }
    if (!base) {
        base = bdrv_find_base(top);
    }
    if (top == base) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "cannot commit an image into itself");
        return NULL;
    }
    if (!bdrv_chain_contains(top, base)) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "'%s' is not in this backing file chain",
                    bdrv_get_node_name(base));
        return NULL;
    }
    if (!base->drv || !base->drv->pwrite) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_NOT_SUPPORTED,
                    "Block format '%s' does not support writing",
                    bdrv_get_format_name(base));
        return NULL;
    }
    len = block_job_node_length(top, errp);
    if (len < 0) {
        return NULL;
    }
    s = block_job_create(job_id, &commit_job_driver, blk,
                         opts ? &opts->job : NULL, errp);
    if (!s) {
        return NULL;
    }
    s->top = top;
    s->base = base;
    bdrv_ref(top);
    bdrv_ref(base);
    s->active = top == blk_bs(blk);
    if (!s->active) {
        s->above = bdrv_find_overlay(blk_bs(blk), top);
        bdrv_ref(s->above);
    }
    s->len = len;
    s->auto_complete = opts && opts->auto_complete;
    s->backing_file = g_strdup(opts ? opts->backing_file : NULL);
    s->buf = g_malloc(COMMIT_CHUNK);
    g_mutex_init(&s->dirty_lock);
    s->dirty_bits = (len + DIRTY_GRANULARITY - 1) / DIRTY_GRANULARITY;
    s->dirty = g_new0(uint64_t, s->dirty_bits / 64 + 1);
    if (!block_job_make_writable(base, &s->base_made_rw, errp)) {
        block_job_discard(&s->common);
        return NULL;
    }
    block_job_start(&s->common);
    return &s->common;
}
