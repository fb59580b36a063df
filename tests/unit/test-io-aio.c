/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * bdrv_aio_submit (block/io.c) through raw (block/raw.c) on a test
 * protocol driver whose asynchronous requests wait in a queue until the
 * test lets a "device" thread complete them: the data lands, the callback
 * runs exactly once, a drain waits for a request still in the device, a
 * refused submission runs no callback and leaves nothing counted in
 * flight, a drain by another thread turns submissions away instead of
 * blocking the submitter, and nodes that cannot take such requests say
 * so.  The same for a device (blk_aio_submit), which also sends what
 * needs work after the data moved (notifiers, write-through) back to the
 * synchronous path.
 */
#include <check.h>
#include <errno.h>
#include <string.h>
#include <unistd.h>
#include <glib/gstdio.h>

#include "block/block-backend.h"
#include "block/block_int.h"
#include "block/drivers.h"

#define DISK (1024 * 1024)

/* ---- the test protocol driver ---- */

typedef struct {
    uint8_t *data;
    GAsyncQueue *queue;       /* BdrvAio * waiting for the device */
    int fail_submit;          /* next submission returns this, once */
    int fail_complete;        /* every completion reports this */
} AioTestState;

static AioTestState *dev;     /* the one open test node */

static int aiotest_open(BlockDriverState *bs, BlockOpts *options, int flags,
                        GError **errp)
{
    AioTestState *s = bs->opaque;

    s->data = g_malloc0(DISK);
    s->queue = g_async_queue_new();
    bs->request_alignment = 1;
    dev = s;
    return 0;
}

static void aiotest_close(BlockDriverState *bs)
{
    AioTestState *s = bs->opaque;

    ck_assert_int_eq(g_async_queue_length(s->queue), 0);
    g_async_queue_unref(s->queue);
    g_free(s->data);
    dev = NULL;
}

static int64_t aiotest_getlength(BlockDriverState *bs)
{
    return DISK;
}

static int aiotest_pread(BlockDriverState *bs, int64_t offset, int64_t bytes,
                         void *buf)
{
    AioTestState *s = bs->opaque;

    memcpy(buf, s->data + offset, bytes);
    return 0;
}

static int aiotest_pwrite(BlockDriverState *bs, int64_t offset,
                          int64_t bytes, const void *buf)
{
    AioTestState *s = bs->opaque;

    memcpy(s->data + offset, buf, bytes);
    return 0;
}

static int aiotest_submit(BlockDriverState *bs, BdrvAio *aio)
{
    AioTestState *s = bs->opaque;
    int r = s->fail_submit;

    if (r) {
        s->fail_submit = 0;
        return r;
    }
    g_async_queue_push(s->queue, aio);
    return 0;
}

static BlockDriver bdrv_aiotest = {
    .format_name = "aio-test",
    .instance_size = sizeof(AioTestState),
    .is_protocol = true,
    .open = aiotest_open,
    .close = aiotest_close,
    .getlength = aiotest_getlength,
    .pread = aiotest_pread,
    .pwrite = aiotest_pwrite,
    .aio_submit = aiotest_submit,
};

/* The device completes n queued requests (waiting for each), on the
 * calling thread or a thread of the test's. */
static void device_complete(int n)
{
    for (int i = 0; i < n; i++) {
        BdrvAio *aio = g_async_queue_timeout_pop(dev->queue, 10 * 1000000);

        ck_assert_msg(aio, "request %d never reached the device", i);
        if (!dev->fail_complete) {
            if (aio->op == BDRV_AIO_WRITE) {
                memcpy(dev->data + aio->offset, aio->buf, aio->bytes);
            } else {
                memcpy(aio->buf, dev->data + aio->offset, aio->bytes);
            }
        }
        aio->cb(aio, dev->fail_complete);
    }
}

/* ---- the caller's side ---- */

typedef struct {
    BdrvAio aio;
    int calls;
    int ret;
} Req;

static void req_done(BdrvAio *aio, int ret)
{
    Req *r = aio->opaque;

    r->calls++;
    r->ret = ret;
}

static void req_init(Req *r, BdrvAioOp op, int64_t offset, int64_t bytes,
                     void *buf)
{
    *r = (Req) { .aio = { .op = op, .offset = offset, .bytes = bytes,
                          .buf = buf, .cb = req_done, .opaque = r } };
}

static BlockDriverState *open_raw(bool rw)
{
    g_autoptr(GError) err = NULL;
    BlockOpts *o = bdrv_opts_new();
    BlockDriverState *bs;

    bdrv_opts_set(o, "driver", "raw");
    bdrv_opts_set(o, "file.driver", "aio-test");
    bs = bdrv_open("aio-test", o, rw ? BDRV_O_RDWR : 0, &err);
    ck_assert_msg(bs, "open: %s", err ? err->message : "");
    return bs;
}

START_TEST(test_data_and_callbacks)
{
    BlockDriverState *bs = open_raw(true);
    enum { N = 32, LEN = 4096 + 17 };
    Req reqs[N];
    g_autofree uint8_t *wbuf = g_malloc(N * LEN);
    g_autofree uint8_t *rbuf = g_malloc0(N * LEN);
    g_autofree uint8_t *check = g_malloc(N * LEN);

    ck_assert(bdrv_aio_supported(bs));
    for (int i = 0; i < N * LEN; i++) {
        wbuf[i] = (uint8_t)(i * 7 + 3);
    }
    /* 32 writes in flight at once, at odd offsets and lengths */
    for (int i = 0; i < N; i++) {
        req_init(&reqs[i], BDRV_AIO_WRITE, 5 + (int64_t)i * LEN, LEN,
                 wbuf + i * LEN);
        ck_assert_int_eq(bdrv_aio_submit(bs, &reqs[i].aio), 0);
        ck_assert_int_eq(reqs[i].calls, 0);
    }
    device_complete(N);
    for (int i = 0; i < N; i++) {
        ck_assert_int_eq(reqs[i].calls, 1);
        ck_assert_int_eq(reqs[i].ret, 0);
    }
    /* what the synchronous path reads is what was written */
    ck_assert_int_eq(bdrv_pread(bs, 5, N * LEN, check), 0);
    ck_assert(memcmp(check, wbuf, N * LEN) == 0);
    /* and asynchronous reads return it too */
    for (int i = 0; i < N; i++) {
        req_init(&reqs[i], BDRV_AIO_READ, 5 + (int64_t)i * LEN, LEN,
                 rbuf + i * LEN);
        ck_assert_int_eq(bdrv_aio_submit(bs, &reqs[i].aio), 0);
    }
    device_complete(N);
    for (int i = 0; i < N; i++) {
        ck_assert_int_eq(reqs[i].calls, 1);
    }
    ck_assert(memcmp(rbuf, wbuf, N * LEN) == 0);
    bdrv_unref(bs);
}
END_TEST

START_TEST(test_errors)
{
    BlockDriverState *bs = open_raw(true);
    BlockDriverState *ro;
    uint8_t buf[512] = { 0 };
    Req r;

    /* a completion's error reaches the caller once */
    dev->fail_complete = -EIO;
    req_init(&r, BDRV_AIO_READ, 0, sizeof(buf), buf);
    ck_assert_int_eq(bdrv_aio_submit(bs, &r.aio), 0);
    device_complete(1);
    ck_assert_int_eq(r.calls, 1);
    ck_assert_int_eq(r.ret, -EIO);
    dev->fail_complete = 0;

    /* a refused submission: the error, no callback, nothing in flight
     * (the drain below would hang otherwise) */
    dev->fail_submit = -ENOSPC;
    req_init(&r, BDRV_AIO_WRITE, 0, sizeof(buf), buf);
    ck_assert_int_eq(bdrv_aio_submit(bs, &r.aio), -ENOSPC);
    ck_assert_int_eq(r.calls, 0);
    bdrv_drained_begin(bs);
    bdrv_drained_end(bs);
    bdrv_drained_begin(bs->file);
    bdrv_drained_end(bs->file);

    /* out of range and empty requests */
    req_init(&r, BDRV_AIO_READ, -1, sizeof(buf), buf);
    ck_assert_int_eq(bdrv_aio_submit(bs, &r.aio), -EINVAL);
    req_init(&r, BDRV_AIO_READ, 0, 0, buf);
    ck_assert_int_eq(bdrv_aio_submit(bs, &r.aio), -ENOTSUP);
    ck_assert_int_eq(r.calls, 0);
    bdrv_unref(bs);

    /* a read-only node refuses writes before the device sees them */
    ro = open_raw(false);
    req_init(&r, BDRV_AIO_WRITE, 0, sizeof(buf), buf);
    ck_assert_int_eq(bdrv_aio_submit(ro, &r.aio), -EPERM);
    ck_assert_int_eq(g_async_queue_length(dev->queue), 0);
    ck_assert_int_eq(r.calls, 0);
    bdrv_unref(ro);
}
END_TEST

typedef struct {
    BlockDriverState *bs;
    gint drained;             /* atomic: the drain has returned */
} Drainer;

static gpointer drain_thread(gpointer opaque)
{
    Drainer *d = opaque;

    bdrv_drained_begin(d->bs);
    g_atomic_int_set(&d->drained, 1);
    bdrv_drained_end(d->bs);
    return NULL;
}

START_TEST(test_drain_waits)
{
    BlockDriverState *bs = open_raw(true);
    uint8_t buf[4096];
    Drainer d = { .bs = bs };
    GThread *t;
    Req r;

    memset(buf, 0xa5, sizeof(buf));
    req_init(&r, BDRV_AIO_WRITE, 8192, sizeof(buf), buf);
    ck_assert_int_eq(bdrv_aio_submit(bs, &r.aio), 0);
    t = g_thread_new("drain", drain_thread, &d);
    /* the request is still in the device: the drain must not return */
    g_usleep(200 * 1000);
    ck_assert_int_eq(g_atomic_int_get(&d.drained), 0);
    device_complete(1);
    g_thread_join(t);
    ck_assert_int_eq(g_atomic_int_get(&d.drained), 1);
    ck_assert_int_eq(r.calls, 1);
    ck_assert(memcmp(dev->data + 8192, buf, sizeof(buf)) == 0);
    bdrv_unref(bs);
}
END_TEST

typedef struct {
    BlockDriverState *bs;
    BlockBackend *blk;
    GMutex lock;
    GCond cond;
    int state;                /* 1: drained, 2: told to end; lock */
} Holder;

static void holder_init(Holder *h, BlockDriverState *bs, BlockBackend *blk)
{
    *h = (Holder) { .bs = bs, .blk = blk };
    g_mutex_init(&h->lock);
    g_cond_init(&h->cond);
}

/* Drains bs (or blk) on its own thread until told to stop. */
static gpointer hold_thread(gpointer opaque)
{
    Holder *h = opaque;

    if (h->blk) {
        blk_drained_begin(h->blk);
    } else {
        bdrv_drained_begin(h->bs);
    }
    g_mutex_lock(&h->lock);
    h->state = 1;
    g_cond_broadcast(&h->cond);
    while (h->state != 2) {
        g_cond_wait(&h->cond, &h->lock);
    }
    g_mutex_unlock(&h->lock);
    if (h->blk) {
        blk_drained_end(h->blk);
    } else {
        bdrv_drained_end(h->bs);
    }
    return NULL;
}

static GThread *hold_start(Holder *h)
{
    GThread *t = g_thread_new("hold", hold_thread, h);

    g_mutex_lock(&h->lock);
    while (h->state != 1) {
        g_cond_wait(&h->cond, &h->lock);
    }
    g_mutex_unlock(&h->lock);
    return t;
}

static void hold_end(Holder *h, GThread *t)
{
    g_mutex_lock(&h->lock);
    h->state = 2;
    g_cond_broadcast(&h->cond);
    g_mutex_unlock(&h->lock);
    g_thread_join(t);
    g_mutex_clear(&h->lock);
    g_cond_clear(&h->cond);
}

/* A drain held by another thread: the submission is turned away at once
 * (the test would hang if it waited), no callback, nothing in flight. */
START_TEST(test_drained_turns_away)
{
    BlockDriverState *bs = open_raw(true);
    uint8_t buf[512];
    Holder h;
    GThread *t;
    Req r;

    holder_init(&h, bs->file, NULL);
    t = hold_start(&h);
    req_init(&r, BDRV_AIO_READ, 0, sizeof(buf), buf);
    ck_assert_int_eq(bdrv_aio_submit(bs, &r.aio), -ENOTSUP);
    ck_assert_int_eq(r.calls, 0);
    hold_end(&h, t);
    /* the raw level unwound too: its own drain does not wait */
    bdrv_drained_begin(bs);
    bdrv_drained_end(bs);
    ck_assert_int_eq(bdrv_aio_submit(bs, &r.aio), 0);
    device_complete(1);
    ck_assert_int_eq(r.calls, 1);
    bdrv_unref(bs);
}
END_TEST

static void count_write(BlockBackend *blk, int64_t offset, int64_t bytes,
                        void *opaque)
{
    (*(int *)opaque)++;
}

START_TEST(test_device)
{
    g_autoptr(BlockDriverState) bs = open_raw(true);
    BlockBackend *blk = blk_new(NULL, bs);
    uint8_t buf[4096], back[4096];
    Holder h;
    GThread *t;
    int notified = 0;
    Req r;

    memset(buf, 0x3c, sizeof(buf));
    req_init(&r, BDRV_AIO_WRITE, 4096, sizeof(buf), buf);
    ck_assert_int_eq(blk_aio_submit(blk, &r.aio), 0);
    ck_assert_int_eq(blk_get_write_count(blk), 0);
    device_complete(1);
    ck_assert_int_eq(r.calls, 1);
    ck_assert_int_eq(blk_get_write_count(blk), 1);
    ck_assert_int_eq(blk_pread(blk, 4096, sizeof(back), back), 0);
    ck_assert(memcmp(back, buf, sizeof(buf)) == 0);

    /* the device's bounds, as blk_pread's */
    req_init(&r, BDRV_AIO_READ, DISK - 100, sizeof(back), back);
    ck_assert_int_eq(blk_aio_submit(blk, &r.aio), -EIO);

    /* write-through and write notifiers need the synchronous path;
     * reads do not */
    blk_set_enable_write_cache(blk, false);
    req_init(&r, BDRV_AIO_WRITE, 0, sizeof(buf), buf);
    ck_assert_int_eq(blk_aio_submit(blk, &r.aio), -ENOTSUP);
    blk_set_enable_write_cache(blk, true);
    blk_add_write_notifier(blk, count_write, &notified);
    ck_assert_int_eq(blk_aio_submit(blk, &r.aio), -ENOTSUP);
    req_init(&r, BDRV_AIO_READ, 0, sizeof(back), back);
    ck_assert_int_eq(blk_aio_submit(blk, &r.aio), 0);
    device_complete(1);
    ck_assert_int_eq(r.calls, 1);
    blk_remove_write_notifier(blk, count_write, &notified);
    ck_assert_int_eq(notified, 0);
    blk_set_copy_on_read(blk, true);
    ck_assert_int_eq(blk_aio_submit(blk, &r.aio), -ENOTSUP);
    blk_set_copy_on_read(blk, false);

    /* a device drained by another thread turns it away at once */
    holder_init(&h, NULL, blk);
    t = hold_start(&h);
    req_init(&r, BDRV_AIO_READ, 0, sizeof(back), back);
    ck_assert_int_eq(blk_aio_submit(blk, &r.aio), -ENOTSUP);
    hold_end(&h, t);
    ck_assert_int_eq(r.calls, 0);

    /* an accepted request holds the device's drain until it completes */
    req_init(&r, BDRV_AIO_WRITE, 0, sizeof(buf), buf);
    ck_assert_int_eq(blk_aio_submit(blk, &r.aio), 0);
    holder_init(&h, NULL, blk);
    t = g_thread_new("hold", hold_thread, &h);
    g_usleep(200 * 1000);
    g_mutex_lock(&h.lock);
    ck_assert_int_eq(h.state, 0);
    g_mutex_unlock(&h.lock);
    device_complete(1);
    g_mutex_lock(&h.lock);
    while (h.state != 1) {
        g_cond_wait(&h.cond, &h.lock);
    }
    g_mutex_unlock(&h.lock);
    hold_end(&h, t);
    ck_assert_int_eq(r.calls, 1);
    blk_unref(blk);
}
END_TEST

/* A node whose driver has no hook (file), and a raw node over it, say
 * no: their callers keep the synchronous calls. */
START_TEST(test_supported)
{
    g_autofree char *dir = g_dir_make_tmp("strata-aio-XXXXXX", NULL);
    g_autofree char *path = g_build_filename(dir, "disk.raw", NULL);
    g_autoptr(GError) err = NULL;
    BlockOpts *o = bdrv_opts_new();
    BlockDriverState *bs;

    ck_assert(g_file_set_contents(path, "", 0, NULL));
    ck_assert_int_eq(truncate(path, DISK), 0);
    bdrv_opts_set(o, "driver", "raw");
    bs = bdrv_open(path, o, BDRV_O_RDWR, &err);
    ck_assert_msg(bs, "open: %s", err ? err->message : "");
    ck_assert(!bdrv_aio_supported(bs));
    ck_assert(!bdrv_aio_supported(bs->file));
    bdrv_unref(bs);
    ck_assert_int_eq(g_unlink(path), 0);
    ck_assert_int_eq(g_rmdir(dir), 0);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("io-aio");
    TCase *tc = tcase_create("aio");
    SRunner *sr;
    int failed;

    bdrv_register_all();
    bdrv_register(&bdrv_aiotest);
    tcase_add_test(tc, test_data_and_callbacks);
    tcase_add_test(tc, test_errors);
    tcase_add_test(tc, test_drain_waits);
    tcase_add_test(tc, test_drained_turns_away);
    tcase_add_test(tc, test_device);
    tcase_add_test(tc, test_supported);
    suite_add_tcase(s, tc);
    sr = srunner_create(s);
    srunner_set_fork_status(sr, CK_NOFORK);
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
