/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Request serialisation in the generic I/O path (block/io.c) under load:
 * many threads issue overlapping unaligned reads, writes and zero writes
 * on one node, on O_DIRECT nodes (read-modify-write of shared blocks) and
 * buffered ones, raw and qcow2.  The final content is determined because
 * every byte has one owner thread: the region is cut into runs of 1 to
 * 1500 bytes dealt round robin to the threads, so neighbours share
 * 512-byte sectors (and qcow2 clusters) but never bytes.  Each thread keeps
 * the model of its own bytes, checks them in every read (whatever range
 * the read covers) and the main thread checks the whole image at the end
 * and after a reopen.  A watchdog fails the test if the threads do not
 * finish within a bound instead of letting a deadlock hang it.  Also the
 * block-0 guard of a probed raw node against two racing half-headers.
 *
 * Run with "direct" or "buffered": with "direct", exit status 77 (a
 * counted skip) when neither $TMPDIR nor /tmp accepts O_DIRECT.
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "block/block.h"

#define REGION (256 * 1024)
#define NTHREADS 8
#define OPS_PER_THREAD 1000
#define MAX_RUN 1500
#define WATCHDOG_SECONDS 90

static char *tmpdir;
static bool use_direct;

typedef struct Layout {
    uint8_t owner[REGION];     /* thread owning each byte */
    int64_t *run_start[NTHREADS];
    int64_t *run_len[NTHREADS];
    int nruns[NTHREADS];
} Layout;

typedef struct Worker {
    BlockDriverState *bs;
    const Layout *layout;
    uint8_t *model;            /* shared array; a thread touches only its bytes */
    int id;
    unsigned seed;
    char *failure;             /* first mismatch or I/O error, or NULL */
} Worker;

typedef struct Run {
    GMutex lock;
    GCond cond;
    int finished;
} Run;

typedef struct WorkerStart {
    Worker *w;
    Run *run;
} WorkerStart;

static void layout_init(Layout *l, unsigned seed)
{
    GRand *r = g_rand_new_with_seed(seed);
    GArray *starts[NTHREADS], *lens[NTHREADS];
    int64_t off = 0;
    int t = 0;

    for (int i = 0; i < NTHREADS; i++) {
        starts[i] = g_array_new(FALSE, FALSE, sizeof(int64_t));
        lens[i] = g_array_new(FALSE, FALSE, sizeof(int64_t));
    }
    while (off < REGION) {
        /* Mostly short runs so several threads share each sector. */
        int64_t len = g_rand_int_range(r, 0, 4) ? g_rand_int_range(r, 1, 300)
                                                : g_rand_int_range(r, 300,
                                                                   MAX_RUN);
        len = MIN(len, REGION - off);
        memset(l->owner + off, t, len);
        g_array_append_val(starts[t], off);
        g_array_append_val(lens[t], len);
        off += len;
        t = (t + 1) % NTHREADS;
    }
    for (int i = 0; i < NTHREADS; i++) {
        l->nruns[i] = starts[i]->len;
        l->run_start[i] = (int64_t *)g_array_free(starts[i], FALSE);
        l->run_len[i] = (int64_t *)g_array_free(lens[i], FALSE);
    }
    g_rand_free(r);
}

static void layout_free(Layout *l)
{
    for (int i = 0; i < NTHREADS; i++) {
        g_free(l->run_start[i]);
        g_free(l->run_len[i]);
    }
}

static void worker_fail(Worker *w, char *msg)
{
    if (!w->failure) {
        w->failure = msg;
    } else {
        g_free(msg);
    }
}

/* Checks this thread's bytes in buf, read from [off, off+len). */
static bool check_own_bytes(Worker *w, int64_t off, int64_t len,
                            const uint8_t *buf, const char *what)
{
    for (int64_t i = 0; i < len; i++) {
        if (w->layout->owner[off + i] == w->id &&
            buf[i] != w->model[off + i]) {
            worker_fail(w, g_strdup_printf(
                "thread %d, %s: byte %" G_GINT64_FORMAT " is 0x%02x, "
                "expected 0x%02x", w->id, what, off + i, buf[i],
                w->model[off + i]));
            return false;
        }
    }
    return true;
}

static bool worker_op(Worker *w, GRand *r, uint8_t *buf, int op)
{
    const Layout *l = w->layout;
    int k = g_rand_int_range(r, 0, l->nruns[w->id]);
    int64_t rs = l->run_start[w->id][k], rl = l->run_len[w->id][k];
    int64_t a = g_rand_int_range(r, 0, rl);
    int64_t b = g_rand_int_range(r, a + 1, rl + 1);
    int kind = g_rand_int_range(r, 0, 20);
    int ret;

    if (kind < 9) {
        /* a fresh value each time, never zero, so a lost write shows */
        uint8_t v = (uint8_t)(1 + (w->id * 31 + op) % 255);
        memset(buf, v, b - a);
        ret = bdrv_pwrite(w->bs, rs + a, b - a, buf);
        if (ret < 0) {
            worker_fail(w, g_strdup_printf("thread %d: write failed: %s",
                                           w->id, g_strerror(-ret)));
            return false;
        }
        memset(w->model + rs + a, v, b - a);
    } else if (kind < 12) {
        ret = bdrv_pwrite_zeroes(w->bs, rs + a, b - a,
                                 kind == 11 ? BDRV_REQ_MAY_UNMAP : 0);
        if (ret < 0) {
            worker_fail(w, g_strdup_printf("thread %d: zero write failed: "
                                           "%s", w->id, g_strerror(-ret)));
            return false;
        }
        memset(w->model + rs + a, 0, b - a);
    } else {
        /* A read anywhere, across other threads' bytes and sectors. */
        int64_t len = g_rand_int_range(r, 1, 3 * 512);
        int64_t off = g_rand_int_range(r, 0, REGION - len);
        ret = bdrv_pread(w->bs, off, len, buf);
        if (ret < 0) {
            worker_fail(w, g_strdup_printf("thread %d: read failed: %s",
                                           w->id, g_strerror(-ret)));
            return false;
        }
        return check_own_bytes(w, off, len, buf, "concurrent read");
    }
    return true;
}

static gpointer worker_thread(gpointer p)
{
    WorkerStart *ws = p;
    Worker *w = ws->w;
    GRand *r = g_rand_new_with_seed(w->seed);
    uint8_t *buf = g_malloc(MAX_RUN * 2);

    for (int op = 0; op < OPS_PER_THREAD && worker_op(w, r, buf, op); op++) {
        /* every op checked inside worker_op */
    }
    g_free(buf);
    g_rand_free(r);
    g_mutex_lock(&ws->run->lock);
    ws->run->finished++;
    g_cond_broadcast(&ws->run->cond);
    g_mutex_unlock(&ws->run->lock);
    return NULL;
}

/* Starts the workers and waits for them at most WATCHDOG_SECONDS.  On a
 * hang the test fails here; the stuck threads end with the test process
 * (Check runs each test in a child). */
static void run_workers(Worker *w, const char *label)
{
    Run run = { 0 };
    WorkerStart ws[NTHREADS];
    GThread *t[NTHREADS];
    gint64 deadline = g_get_monotonic_time() +
                      WATCHDOG_SECONDS * G_TIME_SPAN_SECOND;
    gint64 started = g_get_monotonic_time();
    bool hung = false;

    g_mutex_init(&run.lock);
    g_cond_init(&run.cond);
    for (int i = 0; i < NTHREADS; i++) {
        ws[i] = (WorkerStart){ &w[i], &run };
        t[i] = g_thread_new("io", worker_thread, &ws[i]);
    }
    g_mutex_lock(&run.lock);
    while (run.finished < NTHREADS && !hung) {
        hung = !g_cond_wait_until(&run.cond, &run.lock, deadline) &&
               run.finished < NTHREADS;
    }
    g_mutex_unlock(&run.lock);
    ck_assert_msg(!hung, "%s: %d of %d threads still running after %d s "
                  "(requests waiting on each other?)", label,
                  NTHREADS - run.finished, NTHREADS, WATCHDOG_SECONDS);
    for (int i = 0; i < NTHREADS; i++) {
        g_thread_join(t[i]);
    }
    g_print("%s: %d threads x %d ops in %.2f s\n", label, NTHREADS,
            OPS_PER_THREAD,
            (g_get_monotonic_time() - started) / (double)G_TIME_SPAN_SECOND);
}

static BlockDriverState *open_node(const char *path, const char *driver,
                                   bool rw)
{
    BlockOpts *o = bdrv_opts_new();
    GError *err = NULL;
    BlockDriverState *bs;
    int flags = (rw ? BDRV_O_RDWR : 0) | (use_direct ? BDRV_O_NOCACHE : 0);

    if (driver) {
        bdrv_opts_set(o, "driver", driver);
    }
    bs = bdrv_open(path, o, flags, &err);
    ck_assert_msg(bs, "open %s: %s", path, err ? err->message : "");
    return bs;
}

static void verify_image(BlockDriverState *bs, const uint8_t *model,
                         const char *label)
{
    uint8_t *buf = g_malloc(REGION);

    ck_assert_int_eq(bdrv_pread(bs, 0, REGION, buf), 0);
    /* memcmp first: a Check assertion per byte is slow (each one marks
     * its position through a pipe). */
    bool differs = memcmp(buf, model, REGION) != 0;
    for (int64_t i = 0; differs && i < REGION; i++) {
        ck_assert_msg(buf[i] == model[i], "%s: byte %" G_GINT64_FORMAT
                      " is 0x%02x, model says 0x%02x", label, i, buf[i],
                      model[i]);
    }
    g_free(buf);
}

/*
 * fmt: format to create; driver: the driver option to open with (NULL:
 * probe, which for raw restricts block 0 and aligns the raw node itself
 * to 512 bytes, so the read-modify-write happens one layer higher).
 */
static void run_case(const char *fmt, const char *driver, const char *csize,
                     unsigned seed)
{
    g_autofree char *label = g_strdup_printf("%s%s%s%s %s", fmt,
                                             csize ? " cluster " : "",
                                             csize ? csize : "",
                                             driver ? "" : " (probed)",
                                             use_direct ? "O_DIRECT"
                                                        : "buffered");
    g_autofree char *path = g_build_filename(tmpdir, "img", NULL);
    BlockOpts *o = bdrv_opts_new();
    GError *err = NULL;
    Layout *layout = g_new0(Layout, 1);
    uint8_t *model = g_malloc0(REGION);
    Worker w[NTHREADS];
    BlockDriverState *bs;

    unlink(path);
    bdrv_opts_set(o, "size", "1M");
    if (csize) {
        bdrv_opts_set(o, "cluster_size", csize);
    }
    ck_assert_msg(bdrv_create(fmt, path, o, &err), "create: %s",
                  err ? err->message : "");
    g_hash_table_unref(o);
    layout_init(layout, seed);

    bs = open_node(path, driver, true);
    for (int i = 0; i < NTHREADS; i++) {
        w[i] = (Worker){ .bs = bs, .layout = layout, .model = model,
                         .id = i, .seed = seed * 1000 + i };
    }
    run_workers(w, label);
    for (int i = 0; i < NTHREADS; i++) {
        ck_assert_msg(!w[i].failure, "%s: %s", label, w[i].failure);
    }
    verify_image(bs, model, label);
    ck_assert_int_eq(bdrv_flush(bs), 0);
    bdrv_unref(bs);

    /* What reached the file, not only what a cache holds. */
    bs = open_node(path, driver, false);
    verify_image(bs, model, label);
    bdrv_unref(bs);

    layout_free(layout);
    g_free(layout);
    g_free(model);
    unlink(path);
}

START_TEST(test_raw)
{
    run_case("raw", "raw", NULL, 11);
}
END_TEST

START_TEST(test_raw_probed)
{
    run_case("raw", NULL, NULL, 12);
}
END_TEST

START_TEST(test_qcow2_64k)
{
    run_case("qcow2", "qcow2", "65536", 13);
}
END_TEST

/* Small clusters: neighbours allocate clusters concurrently too. */
START_TEST(test_qcow2_4k)
{
    run_case("qcow2", "qcow2", "4096", 14);
}
END_TEST

START_TEST(test_qcow2_512)
{
    run_case("qcow2", NULL, "512", 15);
}
END_TEST

/*
 * The block-0 guard under concurrency: on a probed raw node one thread
 * keeps writing a qcow2 magic into bytes 0..3 and clearing it, another a
 * version into bytes 4..7 and clearing it.  Each write alone is harmless;
 * together they are a qcow2 header.  Whichever completes the header must
 * be refused (EPERM), so a reader never sees magic and version at once.
 */
typedef struct Block0Race {
    BlockDriverState *bs;
    int half;                  /* 0: magic, 1: version */
    int refused;
    int done;
    gint *ready;               /* start together, or one may finish first */
    gint *refused_total;       /* refusals of both */
    char *failure;
} Block0Race;

static gpointer block0_writer(gpointer p)
{
    Block0Race *r = p;
    static const uint8_t magic[4] = { 'Q', 'F', 'I', 0xfb };
    static const uint8_t version[4] = { 0, 0, 0, 3 };
    static const uint8_t zero[4];

    g_atomic_int_inc(r->ready);
    while (g_atomic_int_get(r->ready) < 2) {
        g_thread_yield();
    }
    /* 1000 set-and-clear rounds; on a loaded machine the two threads may
     * take turns instead of overlapping, so they go on (up to 200 times
     * as long) until one of them has been refused */
    for (int i = 0; (i < 2000 || !g_atomic_int_get(r->refused_total)) &&
                    i < 400000 && !r->failure; i++) {
        const uint8_t *data = i % 2 ? zero : (r->half ? version : magic);
        int ret = bdrv_pwrite(r->bs, r->half * 4, 4, data);
        if (ret == -EPERM && data != zero) {
            r->refused++;
            g_atomic_int_inc(r->refused_total);
        } else if (ret < 0) {
            r->failure = g_strdup_printf("half %d: write failed: %s",
                                         r->half, g_strerror(-ret));
        }
    }
    if (!r->failure && bdrv_pwrite(r->bs, r->half * 4, 4, zero) < 0) {
        r->failure = g_strdup_printf("half %d: the last clear failed",
                                     r->half);
    }
    g_atomic_int_set(&r->done, 1);
    return NULL;
}

START_TEST(test_block0_race)
{
    g_autofree char *path = g_build_filename(tmpdir, "b0", NULL);
    BlockOpts *o = bdrv_opts_new();
    GError *err = NULL;
    Block0Race r[2];
    GThread *t[2];
    gint64 deadline = g_get_monotonic_time() +
                      WATCHDOG_SECONDS * G_TIME_SPAN_SECOND;
    int headers_seen = 0, reads = 0;
    gint ready = 0, refused_total = 0;
    uint8_t buf[8];
    BlockDriverState *bs;

    unlink(path);
    bdrv_opts_set(o, "size", "64K");
    ck_assert_msg(bdrv_create("raw", path, o, &err), "create: %s",
                  err ? err->message : "");
    g_hash_table_unref(o);
    bs = open_node(path, NULL, true);
    ck_assert_str_eq(bdrv_get_format_name(bs), "raw");
    for (int i = 0; i < 2; i++) {
        r[i] = (Block0Race){ .bs = bs, .half = i, .ready = &ready,
                             .refused_total = &refused_total };
        t[i] = g_thread_new("b0", block0_writer, &r[i]);
    }
    while (!g_atomic_int_get(&r[0].done) || !g_atomic_int_get(&r[1].done)) {
        ck_assert_msg(g_get_monotonic_time() < deadline,
                      "block-0 writers still running after %d s",
                      WATCHDOG_SECONDS);
        ck_assert_int_eq(bdrv_pread(bs, 0, 8, buf), 0);
        reads++;
        if (!memcmp(buf, "QFI\xfb", 4) && buf[7] == 3) {
            headers_seen++;
        }
    }
    for (int i = 0; i < 2; i++) {
        g_thread_join(t[i]);
        ck_assert_msg(!r[i].failure, "%s", r[i].failure);
    }
    ck_assert_int_eq(bdrv_pread(bs, 0, 8, buf), 0);
    ck_assert_msg(headers_seen == 0 && !(!memcmp(buf, "QFI\xfb", 4) &&
                                         buf[7] == 3),
                  "a qcow2 header appeared in block 0 (%d of %d reads)",
                  headers_seen, reads);
    /* Otherwise the writers never overlapped and nothing was tested. */
    ck_assert_int_gt(r[0].refused + r[1].refused, 0);
    g_print("block-0 race%s: %d + %d writes refused, %d reads\n",
            use_direct ? " O_DIRECT" : "", r[0].refused, r[1].refused,
            reads);
    bdrv_unref(bs);
    unlink(path);
}
END_TEST

/* A directory under base where O_DIRECT works (or, for buffered runs,
 * any directory); NULL if none. */
static char *make_tmpdir(const char *base)
{
    g_autofree char *tmpl = g_build_filename(base, "strata-serialise-XXXXXX",
                                             NULL);
    char *dir = g_mkdtemp(g_strdup(tmpl));
    g_autofree char *probe = NULL;
    int fd;

    if (!dir || !use_direct) {
        return dir;
    }
    probe = g_build_filename(dir, "probe", NULL);
    fd = open(probe, O_RDWR | O_CREAT | O_DIRECT, 0600);
    if (fd >= 0) {
        close(fd);
        unlink(probe);
        return dir;
    }
    rmdir(dir);
    g_free(dir);
    return NULL;
}

int main(int argc, char **argv)
{
    const char *tdir = g_getenv("TMPDIR");
    Suite *s;
    TCase *tc;
    SRunner *sr;
    int failed;

    if (argc != 2 || (strcmp(argv[1], "direct") && strcmp(argv[1],
                                                          "buffered"))) {
        g_printerr("usage: %s direct|buffered\n", argv[0]);
        return 2;
    }
    use_direct = !strcmp(argv[1], "direct");
    if (tdir && *tdir) {
        tmpdir = make_tmpdir(tdir);
    }
    if (!tmpdir) {
        tmpdir = make_tmpdir("/tmp");
    }
    if (!tmpdir) {
        g_print("SKIP: neither $TMPDIR nor /tmp accepts %s\n",
                use_direct ? "O_DIRECT" : "a temporary directory");
        return 77;
    }

    s = suite_create(use_direct ? "io-serialise-direct"
                                : "io-serialise-buffered");
    tc = tcase_create("threads");
    /* Backstop only: the watchdog in run_workers fails first. */
    tcase_set_timeout(tc, WATCHDOG_SECONDS * 3);
    tcase_add_test(tc, test_raw);
    tcase_add_test(tc, test_raw_probed);
    tcase_add_test(tc, test_qcow2_64k);
    tcase_add_test(tc, test_qcow2_4k);
    tcase_add_test(tc, test_qcow2_512);
    tcase_add_test(tc, test_block0_race);
    suite_add_tcase(s, tc);
    sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    {
        g_autofree char *cmd = g_strdup_printf("rm -rf '%s'", tmpdir);
        if (system(cmd) != 0) {
            g_printerr("could not remove %s\n", tmpdir);
        }
    }
    g_free(tmpdir);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
