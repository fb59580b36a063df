/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Unit tests of the public embedding API, linked against libstrata.so
 * and using nothing but <strata/strata.h> (as a hypervisor would):
 * synchronous I/O from several threads, asynchronous I/O reaped by a
 * GMainContext and by the caller's own poll() on the queue's fd, the
 * transaction calls and their pause/resume hooks, QMP and HMP
 * in-process with events, QMP client sessions, and clear errors for bad
 * options.  Images are made by qemu-img (the oracle); without it the
 * test is skipped (exit 77).
 */
#include <check.h>
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <glib/gstdio.h>

#include "strata/strata.h"

#define DISK_SIZE (8 << 20)

static char *tmpdir;

static char *path_of(const char *name)
{
    return g_build_filename(tmpdir, name, NULL);
}

/* A fresh qcow2 image `name` of DISK_SIZE, made by qemu-img. */
static char *make_qcow2(const char *name)
{
    g_autofree char *path = path_of(name);
    g_autofree char *size = g_strdup_printf("%d", DISK_SIZE);
    const char *argv[] = { "qemu-img", "create", "-q", "-f", "qcow2", path,
                           size, NULL };
    int status = -1;

    g_unlink(path);
    ck_assert(g_spawn_sync(NULL, (char **)argv, NULL, G_SPAWN_SEARCH_PATH,
                           NULL, NULL, NULL, NULL, &status, NULL));
    ck_assert_int_eq(status, 0);
    return g_steal_pointer(&path);
}

static StrataDevice *open_qcow2(const char *node, const char *file)
{
    g_autoptr(GError) err = NULL;
    g_autofree char *path = make_qcow2(file);
    g_autofree char *opts = g_strdup_printf(
        "driver=qcow2,node-name=%s,file.driver=file,file.filename=%s",
        node, path);
    StrataDevice *dev = strata_device_open(opts, &err);

    ck_assert_msg(dev, "open %s: %s", opts, err ? err->message : "?");
    return dev;
}

static void close_ok(StrataDevice *dev)
{
    g_autoptr(GError) err = NULL;

    ck_assert_msg(strata_device_close(dev, &err), "close: %s",
                  err ? err->message : "?");
}

/* qemu-img's output for argv (stdout), asserting success. */
static char *qemu_img(const char *const *argv)
{
    char *out = NULL;
    int status = -1;

    ck_assert(g_spawn_sync(NULL, (char **)argv, NULL, G_SPAWN_SEARCH_PATH,
                           NULL, NULL, &out, NULL, &status, NULL));
    ck_assert_msg(status == 0, "qemu-img %s failed", argv[1]);
    return out;
}

/* ---- synchronous I/O from several threads ---- */

#define NTHREADS 4
#define BLOCK 4096
#define PER_THREAD 64

typedef struct Writer {
    StrataDevice *dev;
    int index;
    int errors;
} Writer;

/* Thread i owns blocks i, i + NTHREADS, ...; each block gets a pattern
 * naming its thread and block, written then read back at once. */
static gpointer writer_thread(gpointer opaque)
{
    Writer *w = opaque;
    g_autofree uint8_t *buf = g_malloc(BLOCK);
    g_autofree uint8_t *back = g_malloc(BLOCK);

    for (int k = 0; k < PER_THREAD; k++) {
        int64_t block = (int64_t)k * NTHREADS + w->index;
        memset(buf, (int)(block * 7 + w->index + 1), BLOCK);
        if (strata_device_pwrite(w->dev, block * BLOCK, BLOCK, buf, 0) < 0 ||
            strata_device_pread(w->dev, block * BLOCK, BLOCK, back) < 0 ||
            memcmp(buf, back, BLOCK)) {
            w->errors++;
        }
    }
    return NULL;
}

START_TEST(test_sync_threads)
{
    StrataDevice *dev = open_qcow2("sync0", "sync.qcow2");
    Writer w[NTHREADS];
    GThread *th[NTHREADS];
    g_autofree uint8_t *buf = g_malloc(BLOCK);
    g_autofree char *path = path_of("sync.qcow2");

    ck_assert_int_eq(strata_device_get_length(dev), DISK_SIZE);
    for (int i = 0; i < NTHREADS; i++) {
        w[i] = (Writer) { .dev = dev, .index = i };
        th[i] = g_thread_new("writer", writer_thread, &w[i]);
    }
    for (int i = 0; i < NTHREADS; i++) {
        g_thread_join(th[i]);
        ck_assert_int_eq(w[i].errors, 0);
    }
    /* every block holds its own thread's last pattern */
    for (int64_t b = 0; b < NTHREADS * PER_THREAD; b++) {
        ck_assert_int_eq(strata_device_pread(dev, b * BLOCK, BLOCK, buf), 0);
        ck_assert_int_eq(buf[0], (uint8_t)(b * 7 + b % NTHREADS + 1));
        ck_assert_int_eq(buf[BLOCK - 1], buf[0]);
    }
    /* outside the disk: EIO, as a guest gets it */
    ck_assert_int_eq(strata_device_pread(dev, DISK_SIZE, BLOCK, buf), -EIO);
    ck_assert_int_eq(strata_device_pwrite(dev, DISK_SIZE - 512, BLOCK, buf,
                                          0), -EIO);
    ck_assert_int_eq(strata_device_write_zeroes(dev, 0, BLOCK,
                                                STRATA_IO_MAY_UNMAP), 0);
    ck_assert_int_eq(strata_device_pread(dev, 0, BLOCK, buf), 0);
    ck_assert_int_eq(buf[0], 0);
    ck_assert_int_eq(strata_device_discard(dev, BLOCK, BLOCK), 0);
    ck_assert_int_eq(strata_device_flush(dev), 0);
    close_ok(dev);
    /* what the threads wrote is in the file, as qemu-io sees it */
    {
        g_autofree char *cmd = g_strdup_printf("read -P 0x%02x %d %d",
                                               (unsigned)(uint8_t)(5 * 7 + 1 + 1),
                                               5 * BLOCK, BLOCK);
        const char *argv[] = { "qemu-io", "-f", "qcow2", "-c", cmd, path,
                               NULL };
        g_autofree char *out = qemu_img(argv);
        ck_assert_msg(!strstr(out, "Pattern verification failed"), "%s",
                      out);
    }
}
END_TEST

/* ---- asynchronous I/O ---- */

#define NASYNC 32

typedef struct AsyncState {
    int done;
    int errors;
    GThread *reaper;           /* the thread completions must run in */
    int wrong_thread;
} AsyncState;

static void completed(int ret, void *opaque)
{
    AsyncState *s = opaque;

    s->done++;
    s->errors += ret < 0;
    s->wrong_thread += g_thread_self() != s->reaper;
}

/* NASYNC writes of distinct patterns, then NASYNC reads of them */
static void submit_writes(StrataQueue *q, StrataDevice *dev,
                          uint8_t (*bufs)[BLOCK], AsyncState *s)
{
    for (int i = 0; i < NASYNC; i++) {
        memset(bufs[i], i + 0x40, BLOCK);
        ck_assert(strata_queue_submit(q, dev, STRATA_OP_WRITE,
                                      (int64_t)i * BLOCK, BLOCK, bufs[i], 0,
                                      completed, s, NULL));
    }
}

static void check_reads(StrataQueue *q, StrataDevice *dev,
                        uint8_t (*bufs)[BLOCK], AsyncState *s)
{
    memset(bufs, 0, (size_t)NASYNC * BLOCK);
    for (int i = 0; i < NASYNC; i++) {
        ck_assert(strata_queue_submit(q, dev, STRATA_OP_READ,
                                      (int64_t)i * BLOCK, BLOCK, bufs[i], 0,
                                      completed, s, NULL));
    }
}

START_TEST(test_async_main_context)
{
    StrataDevice *dev = open_qcow2("ctx0", "ctx.qcow2");
    g_autoptr(GMainContext) ctx = g_main_context_new();
    StrataQueue *q = strata_queue_new(4, NULL);
    g_autofree uint8_t (*bufs)[BLOCK] = g_malloc((size_t)NASYNC * BLOCK);
    AsyncState s = { .reaper = g_thread_self() };
    gint64 deadline = g_get_monotonic_time() + 60 * G_USEC_PER_SEC;

    ck_assert_ptr_nonnull(q);
    ck_assert_uint_gt(strata_queue_attach(q, ctx), 0);
    submit_writes(q, dev, bufs, &s);
    /* nothing runs a callback until the context is iterated */
    ck_assert_int_eq(s.done, 0);
    while (s.done < NASYNC && g_get_monotonic_time() < deadline) {
        g_main_context_iteration(ctx, TRUE);
    }
    ck_assert_int_eq(s.done, NASYNC);
    check_reads(q, dev, bufs, &s);
    while (s.done < 2 * NASYNC && g_get_monotonic_time() < deadline) {
        g_main_context_iteration(ctx, TRUE);
    }
    ck_assert_int_eq(s.done, 2 * NASYNC);
    ck_assert_int_eq(s.errors, 0);
    ck_assert_int_eq(s.wrong_thread, 0);
    ck_assert_uint_eq(strata_queue_pending(q), 0);
    for (int i = 0; i < NASYNC; i++) {
        ck_assert_int_eq(bufs[i][0], i + 0x40);
        ck_assert_int_eq(bufs[i][BLOCK - 1], i + 0x40);
    }
    strata_queue_free(q);
    close_ok(dev);
}
END_TEST

/* The caller's own loop: poll() the fd, reap when readable. */
static void poll_until(StrataQueue *q, AsyncState *s, int want)
{
    gint64 deadline = g_get_monotonic_time() + 60 * G_USEC_PER_SEC;

    while (s->done < want && g_get_monotonic_time() < deadline) {
        struct pollfd p = { .fd = strata_queue_get_fd(q), .events = POLLIN };
        /* Reap only when the fd says so: a completion that never made
         * it readable would be left over and fail the count below.  A
         * wake-up may be spurious (reap returns 0), see strata/io.h. */
        if (poll(&p, 1, 1000) == 1) {
            strata_queue_reap(q);
        }
    }
    ck_assert_int_eq(s->done, want);
}

START_TEST(test_async_fd)
{
    StrataDevice *dev = open_qcow2("fd0", "fd.qcow2");
    StrataQueue *q = strata_queue_new(3, NULL);
    g_autofree uint8_t (*bufs)[BLOCK] = g_malloc((size_t)NASYNC * BLOCK);
    AsyncState s = { .reaper = g_thread_self() };
    g_autoptr(GError) err = NULL;

    ck_assert_int_ge(strata_queue_get_fd(q), 0);
    ck_assert_uint_eq(strata_queue_reap(q), 0);      /* never blocks */
    submit_writes(q, dev, bufs, &s);
    ck_assert(strata_queue_submit(q, dev, STRATA_OP_FLUSH, 0, 0, NULL, 0,
                                  completed, &s, NULL));
    poll_until(q, &s, NASYNC + 1);
    check_reads(q, dev, bufs, &s);
    /* a request outside the disk completes with -EIO */
    ck_assert(strata_queue_submit(q, dev, STRATA_OP_READ, DISK_SIZE, BLOCK,
                                  bufs[0] + 0, 0, completed, &s, NULL));
    poll_until(q, &s, 2 * NASYNC + 2);
    ck_assert_int_eq(s.errors, 1);
    ck_assert_int_eq(s.wrong_thread, 0);
    for (int i = 1; i < NASYNC; i++) {
        ck_assert_int_eq(bufs[i][0], i + 0x40);
    }
    /* a bad operation is refused at submit, its callback never runs */
    ck_assert(!strata_queue_submit(q, dev, (StrataOp)99, 0, 0, NULL, 0,
                                   completed, &s, &err));
    ck_assert_ptr_nonnull(err);
    ck_assert_ptr_null(strata_queue_new(0, NULL));
    /* free runs what was not reaped yet */
    ck_assert(strata_queue_submit(q, dev, STRATA_OP_FLUSH, 0, 0, NULL, 0,
                                  completed, &s, NULL));
    strata_queue_free(q);
    ck_assert_int_eq(s.done, 2 * NASYNC + 3);
    close_ok(dev);
}
END_TEST

/* ---- transactions and hooks ---- */

typedef struct HookLog {
    int paused, resumed;
    char *nodes;               /* the names the paused hook saw */
} HookLog;

static void on_paused(const char *const *nodes, size_t count, void *opaque)
{
    HookLog *h = opaque;
    g_autofree char *joined = g_strjoinv(",", (char **)nodes);

    h->paused++;
    ck_assert_uint_eq(count, g_strv_length((char **)nodes));
    g_free(h->nodes);
    h->nodes = g_steal_pointer(&joined);
}

static void on_resumed(const char *const *nodes, size_t count, void *opaque)
{
    ((HookLog *)opaque)->resumed++;
}

static char *snapshot_list(const char *file)
{
    g_autofree char *path = path_of(file);
    const char *argv[] = { "qemu-img", "snapshot", "-l", path, NULL };

    return qemu_img(argv);
}

START_TEST(test_transaction)
{
    StrataDevice *a = open_qcow2("ta", "ta.qcow2");
    StrataDevice *b = open_qcow2("tb", "tb.qcow2");
    StrataTransaction *t = strata_transaction_new();
    HookLog h = { 0 };
    g_autoptr(GError) err = NULL;
    uint8_t buf[512];

    memset(buf, 0x5a, sizeof(buf));
    ck_assert_int_eq(strata_device_pwrite(a, 0, sizeof(buf), buf, 0), 0);
    strata_transaction_set_hooks(on_paused, on_resumed, &h);
    ck_assert(strata_transaction_add_internal_snapshot(t, "ta", "s1", &err));
    ck_assert(strata_transaction_add_internal_snapshot(t, "tb", "s1", &err));
    /* an unknown device is refused at add and leaves the list as it was */
    ck_assert(!strata_transaction_add_internal_snapshot(t, "nosuch", "s1",
                                                        &err));
    ck_assert_str_eq(err->message,
                     "Cannot find device='nosuch' nor node-name='nosuch'");
    g_clear_error(&err);
    ck_assert_uint_eq(strata_transaction_length(t), 2);
    ck_assert_int_eq(h.paused, 0);
    ck_assert_msg(strata_transaction_submit(t, &err), "%s",
                  err ? err->message : "");
    ck_assert_int_eq(h.paused, 1);
    ck_assert_int_eq(h.resumed, 1);
    ck_assert_str_eq(h.nodes, "ta,tb");
    ck_assert_int_ge(strata_transaction_hold_ns(t), 0);
    strata_transaction_free(t);

    /* a second s1 on ta: refused with QEMU's text, nothing happens */
    t = strata_transaction_new();
    ck_assert(!strata_transaction_add_internal_snapshot(t, "ta", "s1", &err));
    ck_assert_msg(strstr(err->message, "already exists"), "%s",
                  err->message);
    g_clear_error(&err);
    strata_transaction_free(t);
    ck_assert_int_eq(h.paused, 1);
    strata_transaction_set_hooks(NULL, NULL, NULL);

    close_ok(a);
    close_ok(b);
    {
        g_autofree char *la = snapshot_list("ta.qcow2");
        g_autofree char *lb = snapshot_list("tb.qcow2");
        ck_assert_msg(strstr(la, " s1 "), "%s", la);
        ck_assert_msg(strstr(lb, " s1 "), "%s", lb);
    }
    g_free(h.nodes);
}
END_TEST

/* ---- the monitor ---- */

typedef struct Events {
    GPtrArray *texts;
} Events;

static void on_event(const char *event, void *opaque)
{
    g_ptr_array_add(((Events *)opaque)->texts, g_strdup(event));
}

static bool events_contain(Events *e, const char *needle)
{
    for (guint i = 0; i < e->texts->len; i++) {
        if (strstr(g_ptr_array_index(e->texts, i), needle)) {
            return true;
        }
    }
    return false;
}

START_TEST(test_monitor)
{
    StrataDevice *dev = open_qcow2("mon0", "mon.qcow2");
    g_autofree char *over = path_of("mon-over.qcow2");
    g_autofree char *req = NULL;
    g_autofree char *r1 = NULL, *r2 = NULL, *r3 = NULL, *r4 = NULL;
    g_autofree char *r5 = NULL, *h1 = NULL, *h2 = NULL;
    Events ev = { g_ptr_array_new_with_free_func(g_free) };
    gint64 deadline = g_get_monotonic_time() + 60 * G_USEC_PER_SEC;
    uint8_t buf[4096];

    strata_monitor_set_event_handler(on_event, &ev);
    r1 = strata_monitor_qmp("{\"execute\": \"query-named-block-nodes\", "
                            "\"id\": 7}");
    ck_assert_msg(strstr(r1, "\"node-name\": \"mon0\"") &&
                  strstr(r1, "\"id\": 7"), "%s", r1);
    r2 = strata_monitor_qmp("{\"execute\": \"no-such-command\"}");
    ck_assert_str_eq(r2, "{\"error\": {\"class\": \"CommandNotFound\", "
                         "\"desc\": \"The command no-such-command has not "
                         "been found\"}}");
    r3 = strata_monitor_qmp("{\"execute\": ");
    ck_assert_msg(strstr(r3, "\"error\"") && strstr(r3, "GenericError"),
                  "%s", r3);

    /* an external snapshot through QMP moves the device to the overlay:
     * the handle's I/O follows it */
    req = g_strdup_printf("{\"execute\": \"blockdev-snapshot-sync\", "
                          "\"arguments\": {\"node-name\": \"mon0\", "
                          "\"snapshot-file\": \"%s\", "
                          "\"snapshot-node-name\": \"over0\"}}", over);
    r4 = strata_monitor_qmp(req);
    ck_assert_str_eq(r4, "{\"return\": {}}");
    memset(buf, 0x77, sizeof(buf));
    ck_assert_int_eq(strata_device_pwrite(dev, 0, sizeof(buf), buf, 0), 0);

    /* a job: its events reach the handler */
    r5 = strata_monitor_qmp("{\"execute\": \"block-stream\", \"arguments\": "
                            "{\"job-id\": \"st\", \"device\": \"over0\"}}");
    ck_assert_str_eq(r5, "{\"return\": {}}");
    while (!events_contain(&ev, "\"status\": \"null\"") &&
           g_get_monotonic_time() < deadline) {
        g_usleep(10000);
        strata_monitor_dispatch_events();
    }
    ck_assert_msg(events_contain(&ev, "\"event\": \"JOB_STATUS_CHANGE\""),
                  "no job event");
    ck_assert(events_contain(&ev, "\"status\": \"null\""));

    /* HMP: text out */
    h1 = strata_monitor_hmp("savevm hs1");
    ck_assert_str_eq(h1, "");
    h2 = strata_monitor_hmp("info snapshots");
    ck_assert_msg(strstr(h2, "hs1"), "%s", h2);
    strata_monitor_set_event_handler(NULL, NULL);
    g_ptr_array_unref(ev.texts);

    /* the stream pulled mon0's data into the overlay and dropped the
     * backing link, so mon0 is nobody's backing any more: close deletes
     * it; strata_shutdown() closes the overlay */
    close_ok(dev);
    strata_shutdown();
    {
        const char *argv[] = { "qemu-img", "check", over, NULL };
        g_autofree char *out = qemu_img(argv);
        (void)out;
    }
}
END_TEST

START_TEST(test_qmp_session)
{
    StrataQmpSession *s = strata_qmp_session_new();
    g_autofree char *g = strata_qmp_session_greeting(s);
    g_autofree char *r1 = strata_qmp_session_handle(s,
                              "{\"execute\": \"query-version\"}");
    g_autofree char *r2 = strata_qmp_session_handle(s,
                              "{\"execute\": \"qmp_capabilities\"}");
    g_autofree char *r3 = strata_qmp_session_handle(s,
                              "{\"execute\": \"query-version\"}");

    ck_assert_msg(g_str_has_prefix(g, "{\"QMP\": {\"version\": "), "%s", g);
    ck_assert_msg(strstr(r1, "Expecting capabilities negotiation"), "%s",
                  r1);
    ck_assert_str_eq(r2, "{\"return\": {}}");
    ck_assert_msg(strstr(r3, "\"qemu\": {\"micro\": 0, \"minor\": 2, "
                         "\"major\": 7}"), "%s", r3);
    ck_assert(strata_qmp_session_negotiated(s));
    strata_qmp_session_free(s);
}
END_TEST

/* ---- errors ---- */

static void open_fails(const char *opts, const char *want)
{
    g_autoptr(GError) err = NULL;

    ck_assert_ptr_null(strata_device_open(opts, &err));
    ck_assert_ptr_nonnull(err);
    ck_assert_msg(strstr(err->message, want), "%s: got '%s', want '%s'",
                  opts, err->message, want);
}

START_TEST(test_errors)
{
    g_autofree char *path = make_qcow2("err.qcow2");
    g_autofree char *missing = path_of("missing.qcow2");
    g_autofree char *o1 = g_strdup_printf(
        "driver=qcow2,file.driver=file,file.filename=%s", path);
    g_autofree char *o2 = g_strdup_printf(
        "driver=qcow2,node-name=e0,file.driver=file,file.filename=%s",
        missing);
    g_autofree char *o3 = g_strdup_printf(
        "driver=qcow2,node-name=e1,file.driver=file,file.filename=%s", path);
    StrataDevice *dev;

    open_fails("{\"driver\": \"qcow2\", ", "JSON parse error");
    open_fails("{\"driver\": \"qcow2\", \"node-name\": \"j\"}",
               "Parameter 'file' is missing");
    open_fails("", "Parameter 'driver' is missing");
    open_fails("driver=nosuch,node-name=x",
               "Parameter 'driver' does not accept value 'nosuch'");
    open_fails("node-name,x", "Expected '=' after parameter 'x'");
    open_fails(o1, "'node-name' must be specified for the root node");
    open_fails(o2, "No such file or directory");
    /* the same name twice: QEMU's text, the first stays usable */
    dev = strata_device_open(o3, NULL);
    ck_assert_ptr_nonnull(dev);
    open_fails(o3, "Duplicate nodes with node-name='e1'");
    ck_assert_int_eq(strata_device_flush(dev), 0);
    close_ok(dev);
    ck_assert_str_eq(strata_version(), STRATA_VERSION_STRING);
}
END_TEST

/* The JSON spelling of the options opens the same way as keyval. */
START_TEST(test_json_options)
{
    g_autofree char *path = make_qcow2("json.qcow2");
    g_autofree char *opts = g_strdup_printf(
        "{\"driver\": \"qcow2\", \"node-name\": \"js0\", "
        "\"cache\": {\"no-flush\": false}, "
        "\"file\": {\"driver\": \"file\", \"filename\": \"%s\"}}", path);
    g_autoptr(GError) err = NULL;
    StrataDevice *dev = strata_device_open(opts, &err);
    uint8_t buf[512];

    ck_assert_msg(dev, "%s", err ? err->message : "");
    ck_assert_str_eq(strata_device_node_name(dev), "js0");
    memset(buf, 0x3c, sizeof(buf));
    strata_device_set_write_cache(dev, false);
    ck_assert_int_eq(strata_device_pwrite(dev, 4096, sizeof(buf), buf,
                                          STRATA_IO_FUA), 0);
    /* a flag the call does not know is refused, nothing written */
    ck_assert_int_eq(strata_device_pwrite(dev, 0, sizeof(buf), buf, 0x80),
                     -EINVAL);
    close_ok(dev);
    {
        const char *argv[] = { "qemu-io", "-f", "qcow2", "-c",
                               "read -P 0x3c 4096 512", "-c",
                               "read -P 0 0 512", path, NULL };
        g_autofree char *out = qemu_img(argv);
        ck_assert_msg(!strstr(out, "Pattern verification failed"), "%s",
                      out);
    }
}
END_TEST

static Suite *api_suite(void)
{
    Suite *s = suite_create("api");
    TCase *tc = tcase_create("api");

    tcase_add_test(tc, test_sync_threads);
    tcase_add_test(tc, test_async_main_context);
    tcase_add_test(tc, test_async_fd);
    tcase_add_test(tc, test_transaction);
    tcase_add_test(tc, test_monitor);
    tcase_add_test(tc, test_qmp_session);
    tcase_add_test(tc, test_errors);
    tcase_add_test(tc, test_json_options);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    g_autofree char *qemu_img_path = g_find_program_in_path("qemu-img");
    SRunner *sr;
    int failed;

    if (!qemu_img_path) {
        fprintf(stderr, "qemu-img not found: skipped\n");
        return 77;
    }
    tmpdir = g_dir_make_tmp("test-api-XXXXXX", NULL);
    strata_log_set_sink(strata_log_to_stderr, NULL);
    sr = srunner_create(api_suite());
    /* one process: the library's state (nodes, hooks) is per process and
     * the cases use distinct node-names */
    srunner_set_fork_status(sr, CK_NOFORK);
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    strata_shutdown();
    {
        g_autofree char *cmd = g_strdup_printf("rm -rf '%s'", tmpdir);
        (void)!system(cmd);
    }
    g_free(tmpdir);
    return failed ? 1 : 0;
}
