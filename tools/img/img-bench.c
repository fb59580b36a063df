/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * strata-img bench: qemu-img bench's request pattern and output.  Queue
 * depth N is N threads, each with its own slice of one buffer, issuing
 * synchronous requests on the shared node; request i goes to the offset
 * qemu-img gives its i-th request (start, then advancing by the step
 * modulo the image size), handed out by an atomic counter.  With
 * --flush-interval, requests run in batches separated by a drained flush
 * (or, with --no-drain, a flush issued alongside the requests).
 *
 * Where the node takes asynchronous requests (rbd: bdrv_aio_submit), N > 1
 * and no flushes are asked for, one thread keeps the N requests in flight
 * instead, as qemu-img's event loop does, and takes their completions in
 * batches: N blocked threads cost a wake-up per request each.
 */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include "block/futex.h"
#include "img-common.h"

typedef struct {
    BlockDriverState *bs;
    int64_t image_size;
    int64_t start;            /* offset of request 0 */
    uint64_t wrap;            /* later offsets are taken modulo this; 0: 0 */
    int64_t step;
    int bufsize;
    int count;
    int depth;
    bool write;
    bool writethrough;
    int flush_interval;
    bool drain_on_flush;
    uint8_t *buf;

    /* hot path: one atomic per request */
    atomic_int next;          /* next request index to issue */
    atomic_int batch_end;     /* requests below this may be issued */

    /* batch hand-over (flush intervals only) and the start gate */
    GMutex lock;
    GCond cond;
    int arrived;              /* workers done with the current batch */
    unsigned generation;
    bool started;
    bool finished;
} BenchState;

static int64_t request_offset(const BenchState *b, int i)
{
    if (i == 0) {
        return b->start;
    }
    if (!b->wrap) {
        return 0;
    }
    return (int64_t)(((unsigned __int128)b->start +
                      (unsigned __int128)i * (uint64_t)b->step) % b->wrap);
}

static void fail_request(int ret, bool flush)
{
    img_error(flush ? "Failed flush request: %s" : "Failed request: %s",
              g_strerror(-ret));
    exit(EXIT_FAILURE);
}

/* Claims the next request index below the batch end, or -1. */
static int claim_request(BenchState *b)
{
    int i = atomic_load_explicit(&b->next, memory_order_relaxed);

    for (;;) {
        if (i >= atomic_load_explicit(&b->batch_end, memory_order_acquire)) {
            return -1;
        }
        if (atomic_compare_exchange_weak_explicit(&b->next, &i, i + 1,
                                                  memory_order_relaxed,
                                                  memory_order_relaxed)) {
            return i;
        }
    }
}

static void do_request(BenchState *b, uint8_t *buf, int i)
{
    int64_t offset = request_offset(b, i);
    int ret;

    /* Like a BlockBackend, refuse what lies beyond the end. */
    if (!img_request_in_bounds(offset, b->bufsize, b->image_size)) {
        fail_request(-EIO, false);
    }
    if (b->write) {
        ret = bdrv_pwrite(b->bs, offset, b->bufsize, buf);
        if (ret == 0 && b->writethrough) {
            ret = bdrv_flush(b->bs);
        }
    } else {
        ret = bdrv_pread(b->bs, offset, b->bufsize, buf);
    }
    if (ret < 0) {
        fail_request(ret, false);
    }
}

/* --no-drain: the request at a flush point also sends a flush, without
 * waiting for the others. */
static bool undrained_flush_due(const BenchState *b, int i)
{
    return b->flush_interval && !b->drain_on_flush && i >= b->depth &&
           (b->count - i) % b->flush_interval == 0;
}

typedef struct {
    BenchState *b;
    uint8_t *buf;
} BenchWorker;

static gpointer bench_worker(gpointer opaque)
{
    BenchWorker *w = opaque;
    BenchState *b = w->b;
    unsigned gen;

    g_mutex_lock(&b->lock);
    while (!b->started) {
        g_cond_wait(&b->cond, &b->lock);
    }
    gen = b->generation;
    g_mutex_unlock(&b->lock);

    for (;;) {
        int i;

        while ((i = claim_request(b)) >= 0) {
            if (undrained_flush_due(b, i)) {
                int ret = bdrv_flush(b->bs);
                if (ret < 0) {
                    fail_request(ret, true);
                }
            }
            do_request(b, w->buf, i);
        }
        /* End of a batch: report in, wait for the next one (or the end). */
        g_mutex_lock(&b->lock);
        b->arrived++;
        g_cond_broadcast(&b->cond);
        while (b->generation == gen && !b->finished) {
            g_cond_wait(&b->cond, &b->lock);
        }
        gen = b->generation;
        if (b->finished) {
            g_mutex_unlock(&b->lock);
            return NULL;
        }
        g_mutex_unlock(&b->lock);
    }
}

/*
 * Where qemu-img drains and flushes: after the k-th request whenever the
 * number of requests not yet issued is a multiple of the interval, the
 * first such point no earlier than one full queue.  The flush after the
 * last request is not timed by qemu-img, so it is left to close.
 */
static int next_flush_point(const BenchState *b, int done)
{
    int first = MIN(b->depth, b->count);
    int p = MAX(done + 1, first);

    if (p >= b->count) {
        return b->count;
    }
    return p + (b->count - p) % b->flush_interval;
}

/* Runs the requests; t1/t2 bracket the requests, not thread start-up. */
static void run_bench(BenchState *b, int nthreads, struct timeval *t1,
                      struct timeval *t2)
{
    g_autofree BenchWorker *workers = g_new(BenchWorker, nthreads);
    g_autofree GThread **threads = g_new(GThread *, nthreads);
    bool drained = b->flush_interval && b->drain_on_flush;
    int end = drained ? MIN(next_flush_point(b, 0), b->count) : b->count;

    atomic_store(&b->next, 0);
    atomic_store(&b->batch_end, end);
    for (int i = 0; i < nthreads; i++) {
        workers[i].b = b;
        workers[i].buf = b->buf + (size_t)i * b->bufsize;
        threads[i] = g_thread_new("bench", bench_worker, &workers[i]);
    }

    g_mutex_lock(&b->lock);
    gettimeofday(t1, NULL);
    b->started = true;
    g_cond_broadcast(&b->cond);
    for (;;) {
        while (b->arrived < nthreads) {
            g_cond_wait(&b->cond, &b->lock);
        }
        if (end >= b->count) {
            gettimeofday(t2, NULL);
            break;
        }
        /* Every request of the batch has completed: flush, next batch. */
        int ret = bdrv_flush(b->bs);
        if (ret < 0) {
            fail_request(ret, false);
        }
        end = MIN(next_flush_point(b, end), b->count);
        b->arrived = 0;
        atomic_store(&b->batch_end, end);
        b->generation++;
        g_cond_broadcast(&b->cond);
    }
    b->finished = true;
    g_cond_broadcast(&b->cond);
    g_mutex_unlock(&b->lock);

    for (int i = 0; i < nthreads; i++) {
        g_thread_join(threads[i]);
    }
}

/* ---- one thread, N asynchronous requests ---- */

typedef struct AioBench AioBench;

typedef struct {
    BdrvAio aio;
    AioBench *ab;
    int index;                /* which buffer slice is this slot's */
} BenchSlot;

struct AioBench {
    BenchState *b;
    BenchSlot *slots;
    GMutex lock;
    int *done;                /* slots completed, not yet taken; lock */
    int ndone;
    int error;                /* first failure; lock */
    bool waiting;             /* the issuing thread sleeps; lock */
    atomic_uint seq;          /* completions so far: the futex word */
};

/* Any thread (librbd's): the woken thread finds the lock free, and the
 * wake after the unlock touches ab only in the kernel (block/futex.h),
 * so the issuing thread may return as soon as it took the last slot. */
static void bench_aio_done(BdrvAio *aio, int ret)
{
    BenchSlot *slot = aio->opaque;
    AioBench *ab = slot->ab;
    bool wake;

    g_mutex_lock(&ab->lock);
    if (ret < 0 && !ab->error) {
        ab->error = ret;
    }
    ab->done[ab->ndone++] = slot->index;
    atomic_fetch_add_explicit(&ab->seq, 1, memory_order_relaxed);
    wake = ab->waiting;
    g_mutex_unlock(&ab->lock);
    if (wake) {
        strata_futex_wake(&ab->seq);
    }
}

static void bench_aio_issue(AioBench *ab, BenchSlot *slot, int i)
{
    BenchState *b = ab->b;
    uint8_t *buf = b->buf + (size_t)slot->index * b->bufsize;
    int64_t offset = request_offset(b, i);
    int ret;

    if (!img_request_in_bounds(offset, b->bufsize, b->image_size)) {
        fail_request(-EIO, false);
    }
    slot->aio = (BdrvAio) {
        .op = b->write ? BDRV_AIO_WRITE : BDRV_AIO_READ,
        .offset = offset, .bytes = b->bufsize, .buf = buf,
        .cb = bench_aio_done, .opaque = slot,
    };
    ret = bdrv_aio_submit(b->bs, &slot->aio);
    if (ret == -ENOTSUP) {
        /* this request cannot go asynchronously: done here and now */
        do_request(b, buf, i);
        bench_aio_done(&slot->aio, 0);
    } else if (ret < 0) {
        fail_request(ret, false);
    }
}

/* Takes the completed slots (waiting for at least one); returns how many
 * were copied to out. */
static int bench_aio_reap(AioBench *ab, int *out)
{
    int n, error;

    g_mutex_lock(&ab->lock);
    while (ab->ndone == 0) {
        unsigned seen = atomic_load_explicit(&ab->seq, memory_order_relaxed);

        ab->waiting = true;
        g_mutex_unlock(&ab->lock);
        strata_futex_wait(&ab->seq, seen);
        g_mutex_lock(&ab->lock);
        ab->waiting = false;
    }
    n = ab->ndone;
    memcpy(out, ab->done, n * sizeof(*out));
    ab->ndone = 0;
    error = ab->error;
    g_mutex_unlock(&ab->lock);
    if (error) {
        fail_request(error, false);
    }
    return n;
}

static void run_bench_aio(BenchState *b, int nslots, struct timeval *t1,
                          struct timeval *t2)
{
    AioBench ab = { .b = b };
    g_autofree int *ready = g_new(int, nslots);
    int issued = 0, completed = 0;

    ab.slots = g_new0(BenchSlot, nslots);
    ab.done = g_new(int, nslots);
    g_mutex_init(&ab.lock);
    for (int s = 0; s < nslots; s++) {
        ab.slots[s].ab = &ab;
        ab.slots[s].index = s;
    }

    gettimeofday(t1, NULL);
    while (issued < nslots) {
        bench_aio_issue(&ab, &ab.slots[issued], issued);
        issued++;
    }
    while (completed < b->count) {
        int n = bench_aio_reap(&ab, ready);

        completed += n;
        for (int k = 0; k < n && issued < b->count; k++) {
            bench_aio_issue(&ab, &ab.slots[ready[k]], issued++);
        }
    }
    gettimeofday(t2, NULL);

    g_mutex_clear(&ab.lock);
    g_free(ab.done);
    g_free(ab.slots);
}

/* A non-negative C int in any base, as qemu_strtoi. */
static bool parse_int(const char *s, int *out)
{
    long long v;

    if (!img_parse_long(s, INT_MIN, INT_MAX, &v) || v < 0) {
        return false;
    }
    *out = (int)v;
    return true;
}

int img_bench(int argc, char **argv)
{
    static const struct option long_options[] = {
        { "help", no_argument, NULL, 'h' },
        { "flush-interval", required_argument, NULL, OPT_FLUSH_INTERVAL },
        { "image-opts", no_argument, NULL, OPT_IMAGE_OPTS },
        { "pattern", required_argument, NULL, OPT_PATTERN },
        { "no-drain", no_argument, NULL, OPT_NO_DRAIN },
        { "force-share", no_argument, NULL, 'U' },
        { NULL, 0, NULL, 0 },
    };
    BenchState b = {
        .count = 75000,
        .depth = 64,
        .bufsize = 4096,
        .drain_on_flush = true,
    };
    /* -t (not -T) is bench's cache mode, parsed at once below. */
    ImgCommonOpts o = IMG_COMMON_OPTS_INIT(0);
    const char *filename;
    bool native_aio = false;
    int64_t sval;
    long long lval;
    int pattern = 0;
    int step = 0;
    int nthreads;
    struct timeval t1, t2;
    size_t buf_size;
    g_autoptr(BlockDriverState) bs = NULL;
    int c;

    if (!img_parse_cache_mode(IMG_DEFAULT_CACHE, &o.flags, &b.writethrough)) {
        return 1;
    }
    while ((c = getopt_long(argc, argv, ":hc:d:f:ni:o:qs:S:t:wU",
                            long_options, NULL)) != -1) {
        switch (c) {
        case 'c':
            if (!parse_int(optarg, &b.count)) {
                img_error("Invalid request count specified");
                return 1;
            }
            break;
        case 'd':
            /* qemu-img hangs on depth 0; we refuse it. */
            if (!parse_int(optarg, &b.depth) || b.depth < 1) {
                img_error("Invalid queue depth specified");
                return 1;
            }
            break;
        case 'n':
            native_aio = true;
            break;
        case 'i':
            if (!strcmp(optarg, "native")) {
                native_aio = true;
            } else if (!strcmp(optarg, "threads") ||
                       !strcmp(optarg, "io_uring")) {
                native_aio = false;
            } else {
                img_error("Invalid aio option: %s", optarg);
                return 1;
            }
            break;
        case 'o':
            if (!img_cvtnum("offset", optarg, &b.start)) {
                return 1;
            }
            break;
        case 's':
            if (!img_cvtnum_full("buffer size", optarg, 0, INT_MAX, &sval)) {
                return 1;
            }
            b.bufsize = (int)sval;
            break;
        case 'S':
            if (!img_cvtnum_full("step_size", optarg, 0, INT_MAX, &sval)) {
                return 1;
            }
            step = (int)sval;
            break;
        case 't':
            if (!img_parse_cache_mode(optarg, &o.flags, &b.writethrough)) {
                img_error("Invalid cache mode");
                return 1;
            }
            break;
        case 'w':
            o.flags |= BDRV_O_RDWR;
            b.write = true;
            break;
        case OPT_FLUSH_INTERVAL:
            if (!parse_int(optarg, &b.flush_interval)) {
                img_error("Invalid flush interval specified");
                return 1;
            }
            break;
        case OPT_PATTERN:
            if (!img_parse_long(optarg, 0, 0xff, &lval)) {
                img_error("Invalid pattern byte specified");
                return 1;
            }
            pattern = (int)lval;
            break;
        case OPT_NO_DRAIN:
            b.drain_on_flush = false;
            break;
        default:
            img_common_opt(c, argv, &o);
            break;
        }
    }
    filename = img_one_filename(argc, argv);

    if (!b.write && b.flush_interval) {
        img_error("--flush-interval is only available in write tests");
        return 1;
    }
    if (b.flush_interval && b.flush_interval < b.depth) {
        img_error("Flush interval can't be smaller than depth");
        return 1;
    }
    if (native_aio && !(o.flags & BDRV_O_NOCACHE)) {
        img_error("Could not open '%s': aio=native was specified, but it "
                  "requires cache.direct=on, which was not specified.",
                  filename);
        return 1;
    }
    if (!img_common_check_format(&o)) {
        return 1;
    }

    bs = img_open_common(&o, filename, 0);
    if (!bs) {
        return 1;
    }
    b.bs = bs;
    b.image_size = bdrv_getlength(bs);
    if (b.image_size < 0) {
        img_error("Could not get image size: %s", g_strerror(-b.image_size));
        return 1;
    }
    b.step = step ? step : b.bufsize;
    /* qemu-img wraps offsets at the image size itself, so a request may
     * straddle the end and fail, as it does there. */
    b.wrap = (uint64_t)b.image_size;

    printf("Sending %d %s requests, %d bytes each, %d in parallel "
           "(starting at offset %" G_GINT64_FORMAT ", step size %d)\n",
           b.count, b.write ? "write" : "read", b.bufsize, b.depth, b.start,
           (int)b.step);
    if (b.flush_interval) {
        printf("Sending flush every %d requests\n", b.flush_interval);
    }

    /* A first request beyond the end fails before anything is allocated
     * (the buffers could be huge then). */
    if (b.count > 0 &&
        !img_request_in_bounds(b.start, b.bufsize, b.image_size)) {
        fail_request(-EIO, false);
    }

    /* No point in more threads than requests. */
    nthreads = MIN(b.depth, b.count);
    buf_size = (size_t)nthreads * b.bufsize;
    if (posix_memalign((void **)&b.buf, 4096, MAX(buf_size, 1))) {
        img_error("Could not allocate %zu bytes for the buffers", buf_size);
        return 1;
    }
    memset(b.buf, pattern, buf_size);
    g_mutex_init(&b.lock);
    g_cond_init(&b.cond);

    /* depth 1: one blocked thread costs no more than one event loop */
    if (nthreads > 1 && !b.flush_interval && !b.writethrough &&
        bdrv_aio_supported(bs)) {
        run_bench_aio(&b, nthreads, &t1, &t2);
    } else if (nthreads > 0) {
        run_bench(&b, nthreads, &t1, &t2);
    } else {
        gettimeofday(&t1, NULL);
        t2 = t1;
    }

    printf("Run completed in %3.3f seconds.\n",
           (t2.tv_sec - t1.tv_sec) + (double)(t2.tv_usec - t1.tv_usec) / 1e6);

    g_mutex_clear(&b.lock);
    g_cond_clear(&b.cond);
    free(b.buf);
    return 0;
}
