/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Asynchronous I/O of the public API: a GThreadPool runs the synchronous
 * device calls, finished requests wait in a list for the reaper, and an
 * eventfd tells the reaper's loop (a GMainContext source or the caller's
 * own poll) that the list is not empty.  The device layer is what makes
 * requests from many threads safe; this file only moves them between
 * threads.  Reads and plain writes on a device whose driver queues
 * requests itself (rbd: blk_aio_submit) skip the pool: the driver's
 * completion thread hands them to the reaper, so no worker sleeps per
 * request.
 */
#include <errno.h>
#include <unistd.h>
#include <sys/eventfd.h>
#include <glib-unix.h>

#include "api-int.h"
#include "blockdev/registry.h"

typedef struct Request {
    StrataDevice *dev;
    StrataOp op;
    int64_t offset;
    size_t bytes;
    void *buf;
    unsigned flags;
    StrataCompletionFunc *cb;
    void *opaque;
    int ret;
    StrataQueue *q;
    BdrvAio aio;              /* when it went to the driver directly */
} Request;

struct StrataQueue {
    GThreadPool *pool;
    int efd;
    GMutex lock;
    GQueue done;             /* Request *, finished, under lock */
    unsigned pending;        /* submitted, callback not run; under lock */
    GPtrArray *sources;      /* GSource * attached by strata_queue_attach */
    GCond idle;              /* direct == 0 */
    unsigned direct;         /* at the driver, not yet handed over; lock */
};

static int run_request(Request *r)
{
    switch (r->op) {
    case STRATA_OP_READ:
        return strata_device_pread(r->dev, r->offset, r->bytes, r->buf);
    case STRATA_OP_WRITE:
        return strata_device_pwrite(r->dev, r->offset, r->bytes, r->buf,
                                    r->flags);
    case STRATA_OP_WRITE_ZEROES:
        return strata_device_write_zeroes(r->dev, r->offset, r->bytes,
                                          r->flags);
    case STRATA_OP_DISCARD:
        return strata_device_discard(r->dev, r->offset, r->bytes);
    case STRATA_OP_FLUSH:
        return strata_device_flush(r->dev);
    }
    return -EINVAL;
}

/* Puts a finished request on the reaper's list and wakes the reaper. */
static void hand_to_reaper(StrataQueue *q, Request *r)
{
    uint64_t one = 1;
    ssize_t n;

    g_mutex_lock(&q->lock);
    g_queue_push_tail(&q->done, r);
    g_mutex_unlock(&q->lock);
    /* An eventfd counter only overflows after 2^64-2 writes unread. */
    do {
        n = write(q->efd, &one, sizeof(one));
    } while (n < 0 && errno == EINTR);
}

/* A worker: runs the request and hands it to the reaper. */
static void worker(gpointer data, gpointer user_data)
{
    StrataQueue *q = user_data;
    Request *r = data;

    r->ret = run_request(r);
    hand_to_reaper(q, r);
}

/* The driver's completion thread: the request goes to the reaper, then
 * the queue may be freed (strata_queue_free waits for direct == 0, which
 * is why the count drops only after the eventfd write). */
static void direct_done(BdrvAio *aio, int ret)
{
    Request *r = aio->opaque;
    StrataQueue *q = r->q;

    r->ret = ret;
    hand_to_reaper(q, r);
    g_mutex_lock(&q->lock);
    if (--q->direct == 0) {
        g_cond_broadcast(&q->idle);
    }
    g_mutex_unlock(&q->lock);
}

/* Sends r to the driver itself if it can take it; false: use the pool. */
static bool submit_direct(StrataQueue *q, Request *r)
{
    int ret;

    if (r->op != STRATA_OP_READ &&
        !(r->op == STRATA_OP_WRITE && r->flags == 0)) {
        return false;
    }
    if (r->bytes > INT64_MAX) {
        return false;           /* the synchronous call says -EINVAL */
    }
    r->q = q;
    r->aio = (BdrvAio) {
        .op = r->op == STRATA_OP_READ ? BDRV_AIO_READ : BDRV_AIO_WRITE,
        .offset = r->offset, .bytes = (int64_t)r->bytes, .buf = r->buf,
        .cb = direct_done, .opaque = r,
    };
    g_mutex_lock(&q->lock);
    q->direct++;
    g_mutex_unlock(&q->lock);
    ret = blk_aio_submit(r->dev->blk, &r->aio);
    if (ret == 0) {
        return true;
    }
    g_mutex_lock(&q->lock);
    q->direct--;
    g_cond_broadcast(&q->idle);
    g_mutex_unlock(&q->lock);
    if (ret == -ENOTSUP) {
        return false;
    }
    r->ret = ret;               /* refused: reported at the next reap */
    hand_to_reaper(q, r);
    return true;
}

StrataQueue *strata_queue_new(unsigned workers, GError **errp)
{
    StrataQueue *q;

    if (workers < 1 || workers > 64) {
        g_set_error(errp, BLOCKDEV_ERROR, BLOCKDEV_ERROR_GENERIC,
                    "Invalid number of workers %u (1 to 64)", workers);
        return NULL;
    }
    q = g_new0(StrataQueue, 1);
    q->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (q->efd < 0) {
        int e = errno;
        g_set_error(errp, BLOCKDEV_ERROR, BLOCKDEV_ERROR_GENERIC,
                    "Could not create the completion eventfd: %s",
                    g_strerror(e));
        g_free(q);
        return NULL;
    }
    g_mutex_init(&q->lock);
    g_cond_init(&q->idle);
    g_queue_init(&q->done);
    q->sources = g_ptr_array_new();
    /* exclusive threads: a guest's requests must not wait behind other
     * pools' work in GLib's shared threads */
    q->pool = g_thread_pool_new(worker, q, workers, TRUE, NULL);
    return q;
}

bool strata_queue_submit(StrataQueue *q, StrataDevice *dev, StrataOp op,
                         int64_t offset, size_t bytes, void *buf,
                         unsigned flags, StrataCompletionFunc *cb,
                         void *opaque, GError **errp)
{
    Request *r;

    if ((unsigned)op > STRATA_OP_FLUSH || !dev || !cb) {
        g_set_error(errp, BLOCKDEV_ERROR, BLOCKDEV_ERROR_GENERIC,
                    "Invalid request (operation %d)", (int)op);
        return false;
    }
    r = g_new0(Request, 1);
    *r = (Request) { .dev = dev, .op = op, .offset = offset,
                     .bytes = bytes, .buf = buf, .flags = flags,
                     .cb = cb, .opaque = opaque };
    g_mutex_lock(&q->lock);
    q->pending++;
    g_mutex_unlock(&q->lock);
    if (!submit_direct(q, r)) {
        g_thread_pool_push(q->pool, r, NULL);
    }
    return true;
}

int strata_queue_get_fd(StrataQueue *q)
{
    return q->efd;
}

unsigned strata_queue_reap(StrataQueue *q)
{
    uint64_t count;
    GQueue ready = G_QUEUE_INIT;
    unsigned n = 0;
    Request *r;

    /* Reset the counter before taking the list: a completion pushed
     * after this read makes the fd readable again, so none is missed. */
    while (read(q->efd, &count, sizeof(count)) < 0 && errno == EINTR) {
    }
    g_mutex_lock(&q->lock);
    ready = q->done;
    g_queue_init(&q->done);
    g_mutex_unlock(&q->lock);
    while ((r = g_queue_pop_head(&ready))) {
        r->cb(r->ret, r->opaque);
        g_free(r);
        n++;
    }
    if (n) {
        g_mutex_lock(&q->lock);
        q->pending -= n;
        g_mutex_unlock(&q->lock);
    }
    return n;
}

unsigned strata_queue_pending(StrataQueue *q)
{
    unsigned n;

    g_mutex_lock(&q->lock);
    n = q->pending;
    g_mutex_unlock(&q->lock);
    return n;
}

static gboolean source_ready(gint fd, GIOCondition cond, gpointer data)
{
    strata_queue_reap(data);
    return G_SOURCE_CONTINUE;
}

unsigned strata_queue_attach(StrataQueue *q, GMainContext *ctx)
{
    GSource *src = g_unix_fd_source_new(q->efd, G_IO_IN);
    unsigned id;

    g_source_set_callback(src, (GSourceFunc)(void (*)(void))source_ready,
                          q, NULL);
    id = g_source_attach(src, ctx);
    g_ptr_array_add(q->sources, src);
    return id;
}

void strata_queue_free(StrataQueue *q)
{
    if (!q) {
        return;
    }
    /* waits for every queued and running request */
    g_thread_pool_free(q->pool, FALSE, TRUE);
    g_mutex_lock(&q->lock);
    while (q->direct > 0) {
        g_cond_wait(&q->idle, &q->lock);
    }
    g_mutex_unlock(&q->lock);
    for (guint i = 0; i < q->sources->len; i++) {
        GSource *src = g_ptr_array_index(q->sources, i);
        g_source_destroy(src);
        g_source_unref(src);
    }
    g_ptr_array_free(q->sources, TRUE);
    strata_queue_reap(q);
    close(q->efd);
    g_cond_clear(&q->idle);
    g_mutex_clear(&q->lock);
    g_free(q);
}
