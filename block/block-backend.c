/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * BlockBackend: a device's handle on the top node of its chain.  Every
 * request enters the device (counted in flight, held while another
 * thread drains it), reads the root once and runs on it; switching the
 * root drains first, so the switch is atomic for the guest.
 */
#include <errno.h>

#include "block/block-backend.h"

typedef struct WriteNotifier {
    BlkWriteNotifyFunc *fn;
    void *opaque;
} WriteNotifier;

struct BlockBackend {
    char *name;
    gint refcnt;

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
    BlockBackend *blk = g_new0(BlockBackend, 1);

    blk->name = g_strdup(name);
    blk->refcnt = 1;
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

BlockDriverState *blk_bs(BlockBackend *blk)
{
    BlockDriverState *bs;

    g_mutex_lock(&blk->lock);
    bs = blk->root;
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

int blk_pread(BlockBackend *blk, int64_t offset, int64_t bytes, void *buf)
{
    BlockDriverState *bs = blk_enter(blk);
    int ret = bs ? bdrv_pread(bs, offset, bytes, buf) : -ENOMEDIUM;

    blk_leave(blk, false);
    return ret;
}

int blk_pwrite(BlockBackend *blk, int64_t offset, int64_t bytes,
               const void *buf)
{
    BlockDriverState *bs = blk_enter(blk);
    int ret = bs ? bdrv_pwrite(bs, offset, bytes, buf) : -ENOMEDIUM;

    if (ret == 0) {
        blk_notify_write(blk, offset, bytes);
    }
    blk_leave(blk, ret == 0);
    return ret;
}

int blk_pwrite_zeroes(BlockBackend *blk, int64_t offset, int64_t bytes,
                      int flags)
{
    BlockDriverState *bs = blk_enter(blk);
    int ret = bs ? bdrv_pwrite_zeroes(bs, offset, bytes, flags) : -ENOMEDIUM;

    if (ret == 0) {
        blk_notify_write(blk, offset, bytes);
    }
    blk_leave(blk, ret == 0);
    return ret;
}

int blk_pdiscard(BlockBackend *blk, int64_t offset, int64_t bytes)
{
    BlockDriverState *bs = blk_enter(blk);
    int ret = bs ? bdrv_pdiscard(bs, offset, bytes) : -ENOMEDIUM;

    if (ret == 0) {
        blk_notify_write(blk, offset, bytes);
    }
    blk_leave(blk, ret == 0);
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
