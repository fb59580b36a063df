/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * BlockBackend: a device's handle on the top node of its chain.  Every
 * request enters the device (counted in flight, held while another
 * thread drains it), reads the root once and runs on it; switching the
 * root drains first, so the switch is atomic for the guest.  Before a
 * request reaches the root it is checked against the device's size, and
 * the device's write-cache and discard settings shape it on the way.
 */
#include <errno.h>
#include <stdatomic.h>
#include <string.h>

#include "block/block-backend.h"

typedef struct WriteNotifier {
    BlkWriteNotifyFunc *fn;
    void *opaque;
} WriteNotifier;

struct BlockBackend {
    char *name;
    uint64_t serial;             /* see blk_get_serial() */
    gint refcnt;
    /* Settings; written by the owner between requests. */
    bool write_cache;
    bool ignore_discard;
    bool copy_on_read;

    GMutex lock;                 /* everything below */
    GCond cond;
    BlockDriverState *root;
    int in_flight;
    int quiesce_counter;
    GThread *drain_owner;
    uint64_t write_count;
    GArray *notifiers;           /* WriteNotifier; changed only drained */
    BlockJob *job;
};

BlockBackend *blk_new(const char *name, BlockDriverState *root)
{
    static atomic_uint_fast64_t next_serial;
    BlockBackend *blk = g_new0(BlockBackend, 1);

    blk->name = g_strdup(name);
    blk->serial = atomic_fetch_add(&next_serial, 1) + 1;
    blk->refcnt = 1;
    blk->write_cache = true;
    g_mutex_init(&blk->lock);
    g_cond_init(&blk->cond);
    blk->notifiers = g_array_new(FALSE, FALSE, sizeof(WriteNotifier));
    if (root) {
        bdrv_ref(root);
    }
    blk->root = root;
    return blk;
}

void blk_ref(BlockBackend *blk)
{
    g_atomic_int_inc(&blk->refcnt);
}

void blk_unref(BlockBackend *blk)
{
    if (!blk || !g_atomic_int_dec_and_test(&blk->refcnt)) {
        return;
    }
    g_assert(blk->in_flight == 0);
    if (blk->root) {
        bdrv_unref(blk->root);
    }
    g_array_free(blk->notifiers, TRUE);
    g_mutex_clear(&blk->lock);
    g_cond_clear(&blk->cond);
    g_free(blk->name);
    g_free(blk);
}

const char *blk_name(BlockBackend *blk)
{
    return blk->name ? blk->name : "";
}

uint64_t blk_get_serial(BlockBackend *blk)
{
    return blk->serial;
}

void blk_set_enable_write_cache(BlockBackend *blk, bool enable)
{
    blk->write_cache = enable;
}

bool blk_enable_write_cache(BlockBackend *blk)
{
    return blk->write_cache;
}

void blk_set_copy_on_read(BlockBackend *blk, bool enable)
{
    blk->copy_on_read = enable;
}

void blk_set_ignore_discard(BlockBackend *blk, bool ignore)
{
    blk->ignore_discard = ignore;
}

bool blk_ignore_discard(BlockBackend *blk)
{
    return blk->ignore_discard;
}

BlockDriverState *blk_bs(BlockBackend *blk)
{
    BlockDriverState *bs;

    g_mutex_lock(&blk->lock);
    bs = blk->root;
    g_mutex_unlock(&blk->lock);
    return bs;
}

/* The root is swapped under the lock and the old one dropped only after,
 * so a reference taken under the lock is taken on a live node. */
BlockDriverState *blk_get_root(BlockBackend *blk)
{
    BlockDriverState *bs;

    g_mutex_lock(&blk->lock);
    bs = blk->root;
    if (bs) {
        bdrv_ref(bs);
    }
    g_mutex_unlock(&blk->lock);
    return bs;
}

void blk_drained_begin(BlockBackend *blk)
{
    GThread *self = g_thread_self();

    g_mutex_lock(&blk->lock);
    while (blk->quiesce_counter > 0 && blk->drain_owner != self) {
        g_cond_wait(&blk->cond, &blk->lock);
    }
    blk->quiesce_counter++;
    blk->drain_owner = self;
    while (blk->in_flight > 0) {
        g_cond_wait(&blk->cond, &blk->lock);
    }
    g_mutex_unlock(&blk->lock);
}

void blk_drained_end(BlockBackend *blk)
{
    g_mutex_lock(&blk->lock);
    g_assert(blk->quiesce_counter > 0);
    if (--blk->quiesce_counter == 0) {
        blk->drain_owner = NULL;
        g_cond_broadcast(&blk->cond);
    }
    g_mutex_unlock(&blk->lock);
}

void blk_set_root(BlockBackend *blk, BlockDriverState *new_root)
{
    BlockDriverState *old;

    if (new_root) {
        bdrv_ref(new_root);
    }
    blk_drained_begin(blk);
    g_mutex_lock(&blk->lock);
    old = blk->root;
    blk->root = new_root;
    g_mutex_unlock(&blk->lock);
    blk_drained_end(blk);
    if (old) {
        bdrv_unref(old);
    }
}

/* Enters a request; returns the root it must run on (NULL: no medium). */
static BlockDriverState *blk_enter(BlockBackend *blk)
{
    GThread *self = g_thread_self();
    BlockDriverState *bs;

    g_mutex_lock(&blk->lock);
    while (blk->quiesce_counter > 0 && blk->drain_owner != self) {
        g_cond_wait(&blk->cond, &blk->lock);
    }
    blk->in_flight++;
    bs = blk->root;
    g_mutex_unlock(&blk->lock);
    return bs;
}

/* blk_enter that does not wait: NULL root and nothing counted while
 * another thread drains the device (*entered false). */
static BlockDriverState *blk_try_enter(BlockBackend *blk, bool *entered)
{
    BlockDriverState *bs = NULL;

    g_mutex_lock(&blk->lock);
    *entered = blk->quiesce_counter == 0 ||
               blk->drain_owner == g_thread_self();
    if (*entered) {
        blk->in_flight++;
        bs = blk->root;
    }
    g_mutex_unlock(&blk->lock);
    return bs;
}

static void blk_leave(BlockBackend *blk, bool wrote)
{
    g_mutex_lock(&blk->lock);
    if (wrote) {
        blk->write_count++;
    }
    if (--blk->in_flight == 0) {
        g_cond_broadcast(&blk->cond);
    }
    g_mutex_unlock(&blk->lock);
}

/* Notifiers change only while drained, so reading them in flight is safe. */
static void blk_notify_write(BlockBackend *blk, int64_t offset,
                             int64_t bytes)
{
    for (guint i = 0; i < blk->notifiers->len; i++) {
        WriteNotifier *n = &g_array_index(blk->notifiers, WriteNotifier, i);
        n->fn(blk, offset, bytes, n->opaque);
    }
}

/* The bounds check on the root the request entered with. */
static int check_request(BlockDriverState *bs, int64_t offset, int64_t bytes)
{
    int64_t len;

    if (!bs) {
        return -ENOMEDIUM;
    }
    if (offset < 0 || bytes < 0) {
        return -EIO;
    }
    len = bdrv_getlength(bs);
    if (len < 0) {
        return (int)len;
    }
    if (offset > len || len - offset < bytes) {
        return -EIO;
    }
    return 0;
}

int blk_check_request(BlockBackend *blk, int64_t offset, int64_t bytes)
{
    BlockDriverState *bs = blk_enter(blk);
    int ret = check_request(bs, offset, bytes);

    blk_leave(blk, false);
    return ret;
}

/*
 * A write that changed the device: notifiers first (the data may have
 * reached the node even if the flush below fails), then the flush that
 * FUA or write-through asks for.
 */
static int finish_write(BlockBackend *blk, BlockDriverState *bs,
                        int64_t offset, int64_t bytes, int flags)
{
    blk_notify_write(blk, offset, bytes);
    if ((flags & BLK_REQ_FUA) || !blk->write_cache) {
        return bdrv_flush(bs);
    }
    return 0;
}

int blk_pread(BlockBackend *blk, int64_t offset, int64_t bytes, void *buf)
{
    BlockDriverState *bs = blk_enter(blk);
    int ret = check_request(bs, offset, bytes);

    if (ret == 0) {
        ret = blk->copy_on_read ? bdrv_pread_copy_on_read(bs, offset, bytes,
                                                          buf)
                                : bdrv_pread(bs, offset, bytes, buf);
    }
    blk_leave(blk, false);
    return ret;
}

int blk_pwrite_flags(BlockBackend *blk, int64_t offset, int64_t bytes,
                     const void *buf, int flags)
{
    BlockDriverState *bs = blk_enter(blk);
    int ret = check_request(bs, offset, bytes);
    bool wrote = false;

    if (ret == 0) {
        ret = bdrv_pwrite(bs, offset, bytes, buf);
        wrote = ret == 0;
    }
    if (wrote) {
        ret = finish_write(blk, bs, offset, bytes, flags);
    }
    blk_leave(blk, wrote);
    return ret;
}

/* The device's part of an asynchronous request (see block/io.c's). */
typedef struct {
    BdrvAio inner;              /* first: the completion gets its address */
    BlockBackend *blk;
    BdrvAio *outer;
} BlkAio;

static void blk_aio_done(BdrvAio *inner, int ret)
{
    BlkAio *a = (BlkAio *)inner;
    BdrvAio *outer = a->outer;

    blk_leave(a->blk, ret == 0 && outer->op == BDRV_AIO_WRITE);
    g_free(a);
    outer->cb(outer, ret);
}

/* Whether a request needs work after its data moved, which only the
 * synchronous path does (notifiers run and flushes happen there). */
static bool needs_completion_work(BlockBackend *blk, BdrvAioOp op)
{
    if (op == BDRV_AIO_READ) {
        return blk->copy_on_read;
    }
    return blk->notifiers->len > 0 || !blk->write_cache;
}

int blk_aio_submit(BlockBackend *blk, BdrvAio *aio)
{
    bool entered;
    BlockDriverState *bs = blk_try_enter(blk, &entered);
    int ret;
    BlkAio *a;

    if (!entered) {
        return -ENOTSUP;        /* drained: the synchronous call waits */
    }
    ret = check_request(bs, aio->offset, aio->bytes);
    if (ret == 0 && needs_completion_work(blk, aio->op)) {
        ret = -ENOTSUP;
    }
    if (ret < 0) {
        blk_leave(blk, false);
        return ret;
    }
    a = g_new(BlkAio, 1);
    a->inner = *aio;
    a->inner.cb = blk_aio_done;
    a->blk = blk;
    a->outer = aio;
    ret = bdrv_aio_submit(bs, &a->inner);
    if (ret < 0) {
        blk_leave(blk, false);
        g_free(a);
    }
    return ret;
}

int blk_pwrite(BlockBackend *blk, int64_t offset, int64_t bytes,
               const void *buf)
{
    return blk_pwrite_flags(blk, offset, bytes, buf, 0);
}

int blk_pwrite_zeroes(BlockBackend *blk, int64_t offset, int64_t bytes,
                      int flags)
{
    BlockDriverState *bs = blk_enter(blk);
    int ret = check_request(bs, offset, bytes);
    bool wrote = false;

    if (blk->ignore_discard) {
        flags &= ~BDRV_REQ_MAY_UNMAP;
    }
    if (ret == 0) {
        ret = bdrv_pwrite_zeroes_root(bs, offset, bytes,
                                      flags & ~BLK_REQ_FUA);
        wrote = ret == 0;
    }
    if (wrote) {
        ret = finish_write(blk, bs, offset, bytes, flags);
    }
    blk_leave(blk, wrote);
    return ret;
}

int blk_pwrite_compressed(BlockBackend *blk, int64_t offset, int64_t bytes,
                          const void *buf)
{
    BlockDriverState *bs = blk_enter(blk);
    int ret = check_request(bs, offset, bytes);
    bool wrote = false;

    if (ret == 0) {
        ret = bdrv_pwrite_compressed(bs, offset, bytes, buf);
        wrote = ret == 0 && bytes > 0;
    }
    if (wrote) {
        ret = finish_write(blk, bs, offset, bytes, 0);
    }
    blk_leave(blk, wrote);
    return ret;
}

/* A discard is a hint: dropping it (discard=ignore) is a success. */
int blk_pdiscard(BlockBackend *blk, int64_t offset, int64_t bytes)
{
    BlockDriverState *bs = blk_enter(blk);
    int ret = check_request(bs, offset, bytes);
    bool wrote = false;

    if (ret == 0 && !blk->ignore_discard) {
        ret = bdrv_pdiscard(bs, offset, bytes);
        wrote = ret == 0;
    }
    if (wrote) {
        blk_notify_write(blk, offset, bytes);
    }
    blk_leave(blk, wrote);
    return ret;
}

int blk_flush(BlockBackend *blk)
{
    BlockDriverState *bs = blk_enter(blk);
    int ret = bs ? bdrv_flush(bs) : -ENOMEDIUM;

    blk_leave(blk, false);
    return ret;
}

int64_t blk_getlength(BlockBackend *blk)
{
    BlockDriverState *bs = blk_enter(blk);
    int64_t ret = bs ? bdrv_getlength(bs) : -ENOMEDIUM;

    blk_leave(blk, false);
    return ret;
}

int blk_truncate(BlockBackend *blk, int64_t size, GError **errp)
{
    BlockDriverState *bs = blk_enter(blk);
    int ret = bs ? bdrv_truncate(bs, size, errp) : -ENOMEDIUM;

    blk_leave(blk, false);
    return ret;
}

uint64_t blk_get_write_count(BlockBackend *blk)
{
    uint64_t n;

    g_mutex_lock(&blk->lock);
    n = blk->write_count;
    g_mutex_unlock(&blk->lock);
    return n;
}

void blk_add_write_notifier(BlockBackend *blk, BlkWriteNotifyFunc *fn,
                            void *opaque)
{
    WriteNotifier n = { fn, opaque };

    blk_drained_begin(blk);
    g_array_append_val(blk->notifiers, n);
    blk_drained_end(blk);
}

void blk_remove_write_notifier(BlockBackend *blk, BlkWriteNotifyFunc *fn,
                               void *opaque)
{
    blk_drained_begin(blk);
    for (guint i = 0; i < blk->notifiers->len; i++) {
        WriteNotifier *n = &g_array_index(blk->notifiers, WriteNotifier, i);
        if (n->fn == fn && n->opaque == opaque) {
            g_array_remove_index(blk->notifiers, i);
            break;
        }
    }
    blk_drained_end(blk);
}

BlockJob *blk_get_job(BlockBackend *blk)
{
    BlockJob *job;

    g_mutex_lock(&blk->lock);
    job = blk->job;
    g_mutex_unlock(&blk->lock);
    return job;
}

void blk_set_job(BlockBackend *blk, BlockJob *job)
{
    g_mutex_lock(&blk->lock);
    blk->job = job;
    g_mutex_unlock(&blk->lock);
}
