/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Unit tests of the commit and stream jobs on backing chains: depths 2,
 * 3 and 5, overlays larger and smaller than their backing file, cancel,
 * concurrent writes on the device, and bad arguments.  Content is
 * compared with what the chain read before; images are checked clean.
 */
#include "chaintest.h"

/* ------------------------------------------------------------------ */
/* Commit and stream */

typedef struct ChainCase {
    int depth;
    int64_t sizes[5];
} ChainCase;

static const ChainCase chain_cases[] = {
    { 2, { 4 * MiB, 4 * MiB } },
    { 2, { 4 * MiB, 6 * MiB } },                 /* overlay bigger */
    { 2, { 6 * MiB, 3 * MiB } },                 /* overlay smaller */
    { 3, { 4 * MiB, 3 * MiB, 5 * MiB } },
    { 5, { 2 * MiB, 5 * MiB, 3 * MiB, 4 * MiB, 6 * MiB } },
    { 5, { 6 * MiB, 4 * MiB, 4 * MiB, 2 * MiB, 3 * MiB } },
};

static gpointer run_job_to_end(BlockJob *job, int want)
{
    GError *err = NULL;
    int ret = block_job_wait(job, &err);

    ck_assert_msg(ret == want, "job returned %d (%s), wanted %d", ret,
                  err ? err->message : "", want);
    g_clear_error(&err);
    return NULL;
}

/*
 * Commit layers [top_i, base_i) of a chain; top_i == depth-1 is an active
 * commit.  The device reads the same afterwards, the merged layers are
 * gone, and the files on disk form a chain that reads the same.
 */
static void commit_case(const ChainCase *c, int top_i, int base_i, int seed)
{
    g_autofree char *prefix = g_strdup_printf("cm%d", seed);
    g_autofree char *top_path = make_chain(prefix, c->depth, c->sizes, seed);
    BlockBackend *blk = device_on(top_path);
    int64_t len = blk_getlength(blk);
    g_autofree uint8_t *want = blk_read_all(blk, len);
    g_autofree uint8_t *got = NULL;
    BlockDriverState *root = blk_bs(blk);
    BlockDriverState *top = layer(root, c->depth, top_i);
    BlockDriverState *base = layer(root, c->depth, base_i);
    BlockDriverState *above = top_i + 1 < c->depth ?
                              layer(root, c->depth, top_i + 1) : NULL;
    CommitOptions co = { .auto_complete = true };
    GError *err = NULL;
    BlockJob *job;
    bool active = top_i == c->depth - 1;

    job = commit_start(NULL, blk, top, base, &co, &err);
    ck_assert_msg(job, "%s", err ? err->message : "");
    run_job_to_end(job, 0);
    got = blk_read_all(blk, len);
    assert_same(want, got, len, "device after commit");
    if (active) {
        ck_assert_ptr_eq(blk_bs(blk), base);
        ck_assert(!bdrv_is_read_only(base));
    } else {
        ck_assert_ptr_eq(bdrv_get_backing(above), base);
        ck_assert_int_eq(bdrv_chain_length(blk_bs(blk)),
                         c->depth - 1 - (top_i - base_i));
        ck_assert(bdrv_is_read_only(base));
    }
    blk_unref(blk);

    /* On disk: the chain from the top file reads the same, and so does
     * base alone after an active commit. */
    for (int i = 0; i < c->depth; i++) {
        g_autofree char *p = layer_path(prefix, i);
        check_clean(p);
    }
    {
        g_autofree char *bp = layer_path(prefix, base_i);
        BlockDriverState *bs = open_img(active ? bp : top_path, 0);
        g_autofree uint8_t *disk = read_all(bs, len);
        assert_same(want, disk, len, "chain on disk after commit");
        bdrv_unref(bs);
    }
}

START_TEST(test_commit_active)
{
    const ChainCase *c = &chain_cases[_i];
    commit_case(c, c->depth - 1, 0, 100 + _i);
}
END_TEST

START_TEST(test_commit_intermediate)
{
    const ChainCase *c = &chain_cases[_i];
    if (c->depth < 3) {
        /* top is the layer below the active one, into the bottom */
        return;
    }
    commit_case(c, c->depth - 2, 0, 200 + _i);
    if (c->depth == 5) {
        commit_case(c, 3, 1, 300 + _i);
        commit_case(c, 2, 1, 400 + _i);
    }
}
END_TEST

static void stream_case(const ChainCase *c, int base_i, int seed)
{
    g_autofree char *prefix = g_strdup_printf("st%d", seed);
    g_autofree char *top_path = make_chain(prefix, c->depth, c->sizes, seed);
    BlockBackend *blk = device_on(top_path);
    int64_t len = blk_getlength(blk);
    g_autofree uint8_t *want = blk_read_all(blk, len);
    g_autofree uint8_t *got = NULL;
    BlockDriverState *root = blk_bs(blk);
    BlockDriverState *base = base_i >= 0 ? layer(root, c->depth, base_i)
                                         : NULL;
    GError *err = NULL;
    BlockJob *job;

    job = stream_start(NULL, blk, NULL, base, NULL, &err);
    ck_assert_msg(job, "%s", err ? err->message : "");
    run_job_to_end(job, 0);
    ck_assert_ptr_eq(bdrv_get_backing(root), base);
    got = blk_read_all(blk, len);
    assert_same(want, got, len, "device after stream");
    blk_unref(blk);
    check_clean(top_path);
    {
        BlockDriverState *bs = open_img(top_path, 0);
        g_autofree uint8_t *disk = read_all(bs, len);
        ck_assert_int_eq(bdrv_chain_length(bs), base_i + 1);
        assert_same(want, disk, len, "chain on disk after stream");
        bdrv_unref(bs);
    }
}

START_TEST(test_stream)
{
    const ChainCase *c = &chain_cases[_i];
    stream_case(c, -1, 500 + _i);
    if (c->depth > 2) {
        stream_case(c, 0, 600 + _i);
        stream_case(c, c->depth - 3, 700 + _i);
    }
}
END_TEST

/* Cancel while a slow job runs: the chain still reads the same. */
static void cancel_case(bool commit, bool active)
{
    static const int64_t sizes[] = { 8 * MiB, 6 * MiB, 8 * MiB };
    g_autofree char *prefix = g_strdup_printf("cx%d%d", commit, active);
    g_autofree char *top_path = make_chain(prefix, 3, sizes, 42);
    BlockBackend *blk = device_on(top_path);
    int64_t len = blk_getlength(blk);
    g_autofree uint8_t *want = blk_read_all(blk, len);
    g_autofree uint8_t *got = NULL;
    BlockDriverState *root = blk_bs(blk);
    BlockDriverState *bottom = layer(root, 3, 0);
    BlockJobState info;
    GError *err = NULL;
    BlockJob *job;

    if (commit) {
        CommitOptions co = { .job.speed = 8 * MiB, .auto_complete = true };
        job = commit_start(NULL, blk, active ? root : layer(root, 3, 1),
                           bottom, &co, &err);
    } else {
        StreamOptions so = { .job.speed = 8 * MiB };
        job = stream_start(NULL, blk, NULL, NULL, &so, &err);
    }
    ck_assert_msg(job, "%s", err ? err->message : "");
    /* 8 MiB at 8 MiB/s: a second to catch it in the middle */
    for (int i = 0; i < 500; i++) {
        block_job_get_info(job, &info);
        if (info.offset > 0) {
            break;
        }
        g_usleep(10000);
    }
    ck_assert_int_gt(info.offset, 0);
    ck_assert_int_lt(info.offset, info.len);
    block_job_cancel(job);
    run_job_to_end(job, -ECANCELED);
    ck_assert_ptr_eq(blk_bs(blk), root);
    ck_assert_int_eq(bdrv_chain_length(root), 2);
    ck_assert(bdrv_is_read_only(bottom));
    got = blk_read_all(blk, len);
    assert_same(want, got, len, "device after cancel");
    blk_unref(blk);
    for (int i = 0; i < 3; i++) {
        g_autofree char *p = layer_path(prefix, i);
        check_clean(p);
    }
    {
        BlockDriverState *bs = open_img(top_path, 0);
        g_autofree uint8_t *disk = read_all(bs, len);
        assert_same(want, disk, len, "chain on disk after cancel");
        bdrv_unref(bs);
    }
}

START_TEST(test_cancel)
{
    cancel_case(_i != 0, _i == 2);
}
END_TEST

typedef struct EventLog {
    int ready, completed, cancelled;
    bool progress_done;          /* offset == len when completed */
} EventLog;

static void log_event(BlockJob *job, BlockJobEvent ev, void *opaque)
{
    EventLog *l = opaque;
    BlockJobState info;

    block_job_get_info(job, &info);
    switch (ev) {
    case BLOCK_JOB_EVENT_READY:
        l->ready++;
        break;
    case BLOCK_JOB_EVENT_COMPLETED:
        l->completed++;
        l->progress_done = info.offset == info.len && info.len > 0;
        break;
    case BLOCK_JOB_EVENT_CANCELLED:
        l->cancelled++;
        break;
    }
}

/* A writer thread keeps writing sequenced blocks during an active commit
 * (or a stream); none may be lost. */
static void writer_case(bool commit)
{
    static const int64_t sizes[] = { 16 * MiB, 16 * MiB };
    g_autofree char *prefix = g_strdup_printf("wr%d", commit);
    g_autofree char *top_path = make_chain(prefix, 2, sizes, 9);
    BlockBackend *blk = device_on(top_path);
    int64_t len = blk_getlength(blk);
    g_autofree uint8_t *want = blk_read_all(blk, len);
    g_autofree uint8_t *got = NULL;
    BlockDriverState *root = blk_bs(blk);
    BlockDriverState *bottom = bdrv_get_backing(root);
    SeqWriter w = { .blk = blk };
    EventLog events = { 0 };
    GError *err = NULL;
    BlockJob *job;
    GThread *t;

    t = g_thread_new("writer", seq_writer, &w);
    if (commit) {
        CommitOptions co = { .job = { .speed = 32 * MiB,
                                      .event_cb = log_event,
                                      .opaque = &events } };
        job = commit_start(NULL, blk, NULL, NULL, &co, &err);
    } else {
        StreamOptions so = { .job = { .speed = 32 * MiB,
                                      .event_cb = log_event,
                                      .opaque = &events } };
        job = stream_start(NULL, blk, NULL, NULL, &so, &err);
    }
    ck_assert_msg(job, "%s", err ? err->message : "");
    if (commit) {
        BlockJobState info;
        do {
            g_usleep(10000);
            block_job_get_info(job, &info);
        } while (!info.ready);
        g_usleep(20000);        /* some writes while READY */
        ck_assert(block_job_complete(job, NULL));
    }
    run_job_to_end(job, 0);
    g_thread_join(t);
    ck_assert_int_eq(events.ready, commit ? 1 : 0);
    ck_assert_int_eq(events.completed, 1);
    ck_assert_int_eq(events.cancelled, 0);
    ck_assert(events.progress_done);
    for (int i = 0; i < w.n; i++) {
        memset(want + (int64_t)i * SEQ_STRIDE, 0, 4096);
        snprintf((char *)want + (int64_t)i * SEQ_STRIDE, 4096, "seq %d",
                 i + 1);
    }
    got = blk_read_all(blk, len);
    assert_same(want, got, len, "device after job with writer");
    ck_assert_ptr_eq(blk_bs(blk), commit ? bottom : root);
    blk_unref(blk);
    {
        g_autofree char *p = commit ? layer_path(prefix, 0)
                                    : g_strdup(top_path);
        BlockDriverState *bs = open_img(p, 0);
        g_autofree uint8_t *disk = read_all(bs, len);
        assert_same(want, disk, len, "image on disk after job with writer");
        bdrv_unref(bs);
        check_clean(p);
    }
}

START_TEST(test_job_with_writer)
{
    writer_case(_i == 0);
}
END_TEST

START_TEST(test_job_bad_args)
{
    static const int64_t sizes[] = { 2 * MiB, 2 * MiB, 2 * MiB };
    g_autofree char *top = make_chain("ja", 3, sizes, 5);
    BlockBackend *blk = device_on(top);
    BlockDriverState *root = blk_bs(blk);
    BlockDriverState *mid = bdrv_get_backing(root);
    GError *err = NULL;

    ck_assert_ptr_null(commit_start(NULL, blk, mid, mid, NULL, &err));
    ck_assert_str_eq(err->message, "cannot commit an image into itself");
    g_clear_error(&err);
    ck_assert_ptr_null(commit_start(NULL, blk, mid, root, NULL, &err));
    ck_assert(strstr(err->message, "is not in this backing file chain"));
    g_clear_error(&err);
    ck_assert_ptr_null(stream_start(NULL, blk, mid, root, NULL, &err));
    ck_assert(strstr(err->message, "is not in the backing chain of"));
    g_clear_error(&err);
    {
        BlockJob *job = commit_start("same", blk, mid, NULL, NULL, &err);
        /* another image: the first device's image is locked for writing */
        g_autofree char *other = make_chain("jb", 1, sizes, 5);
        BlockBackend *blk2 = device_on(other);
        ck_assert_ptr_nonnull(job);
        ck_assert_ptr_null(stream_start("same", blk2, NULL, NULL, NULL, &err));
        ck_assert_str_eq(err->message, "Job ID 'same' already in use");
        g_clear_error(&err);
        ck_assert(!block_job_complete(job, &err));
        g_clear_error(&err);
        run_job_to_end(job, 0);
        blk_unref(blk2);
    }
    blk_unref(blk);
}
END_TEST

static Suite *jobs_suite(void)
{
    Suite *s = suite_create("chain-jobs");
    TCase *jobs = tcase_create("jobs");

    tcase_set_timeout(jobs, 240);
    tcase_add_loop_test(jobs, test_commit_active, 0,
                        G_N_ELEMENTS(chain_cases));
    tcase_add_loop_test(jobs, test_commit_intermediate, 0,
                        G_N_ELEMENTS(chain_cases));
    tcase_add_loop_test(jobs, test_stream, 0, G_N_ELEMENTS(chain_cases));
    tcase_add_loop_test(jobs, test_cancel, 0, 3);
    tcase_add_loop_test(jobs, test_job_with_writer, 0, 2);
    tcase_add_test(jobs, test_job_bad_args);
    suite_add_tcase(s, jobs);
    return s;
}

int main(void)
{
    return chaintest_run(jobs_suite());
}
