/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Unit tests of the job state machine (block/blockjob.c) as QMP sees it:
 * the status sequence of a job that waits for finalize, that the chain
 * does not change before finalize and does not change at all when the
 * pending job is cancelled, pause and resume (no progress while paused),
 * QEMU's refusal texts for verbs in the wrong state, and a cancel without
 * force of a ready active commit that completes without the pivot.
 */
#include "chaintest.h"

typedef struct StatusLog {
    GMutex lock;
    BlockJobStatus seen[32];
    int n;
} StatusLog;

/* Called with the job's lock held: only records. */
static void log_status(BlockJob *job, BlockJobStatus st, void *opaque)
{
    StatusLog *l = opaque;

    g_mutex_lock(&l->lock);
    if (l->n < (int)G_N_ELEMENTS(l->seen)) {
        l->seen[l->n++] = st;
    }
    g_mutex_unlock(&l->lock);
}

static void wait_status(BlockJob *job, BlockJobStatus st)
{
    for (int i = 0; i < 1000 && block_job_get_status(job) != st; i++) {
        g_usleep(10000);
    }
    ck_assert_str_eq(block_job_status_name(block_job_get_status(job)),
                     block_job_status_name(st));
}

static void assert_sequence(StatusLog *l, const BlockJobStatus *want, int n)
{
    g_mutex_lock(&l->lock);
    ck_assert_int_eq(l->n, n);
    for (int i = 0; i < n; i++) {
        ck_assert_str_eq(block_job_status_name(l->seen[i]),
                         block_job_status_name(want[i]));
    }
    g_mutex_unlock(&l->lock);
}

static const int64_t sizes[] = { 4 * MiB, 4 * MiB, 4 * MiB };

/* A stream of the whole chain that waits for finalize: nothing visible
 * changes before it; finalize makes top stand alone; or a cancel in
 * pending leaves the chain as it was. */
static void finalize_case(bool cancel)
{
    g_autofree char *prefix = g_strdup_printf("fin%d", cancel);
    g_autofree char *top_path = make_chain(prefix, 3, sizes, 7);
    BlockBackend *blk = device_on(top_path);
    int64_t len = blk_getlength(blk);
    g_autofree uint8_t *want = blk_read_all(blk, len);
    g_autofree uint8_t *got = NULL;
    StatusLog log = { 0 };
    StreamOptions so = { .job = { .status_cb = log_status, .opaque = &log,
                                  .manual_finalize = true } };
    GError *err = NULL;
    BlockJob *job;

    g_mutex_init(&log.lock);
    job = stream_start("s", blk, NULL, NULL, &so, &err);
    ck_assert_msg(job, "%s", err ? err->message : "");
    wait_status(job, BLOCK_JOB_STATUS_PENDING);
    /* still the whole chain: the backing change waits for finalize */
    ck_assert_int_eq(bdrv_chain_length(blk_bs(blk)), 2);
    ck_assert(!block_job_dismiss(job, &err));
    ck_assert_str_eq(err->message, "Job 's' in state 'pending' cannot "
                     "accept command verb 'dismiss'");
    g_clear_error(&err);
    if (cancel) {
        ck_assert(block_job_user_cancel(job, false, NULL));
    } else {
        ck_assert(block_job_finalize(job, NULL));
    }
    ck_assert(block_job_wait_concluded(job, 30 * G_USEC_PER_SEC));
    ck_assert(!block_job_finalize(job, &err));
    ck_assert_str_eq(err->message, "Job 's' in state 'concluded' cannot "
                     "accept command verb 'finalize'");
    g_clear_error(&err);
    {
        static const BlockJobStatus ok_seq[] = {
            BLOCK_JOB_STATUS_CREATED, BLOCK_JOB_STATUS_RUNNING,
            BLOCK_JOB_STATUS_WAITING, BLOCK_JOB_STATUS_PENDING,
            BLOCK_JOB_STATUS_CONCLUDED,
        };
        static const BlockJobStatus cancel_seq[] = {
            BLOCK_JOB_STATUS_CREATED, BLOCK_JOB_STATUS_RUNNING,
            BLOCK_JOB_STATUS_WAITING, BLOCK_JOB_STATUS_PENDING,
            BLOCK_JOB_STATUS_ABORTING, BLOCK_JOB_STATUS_CONCLUDED,
        };
        if (cancel) {
            assert_sequence(&log, cancel_seq, G_N_ELEMENTS(cancel_seq));
        } else {
            assert_sequence(&log, ok_seq, G_N_ELEMENTS(ok_seq));
        }
    }
    ck_assert(block_job_dismiss(job, NULL));     /* frees it */
    ck_assert_int_eq(bdrv_chain_length(blk_bs(blk)), cancel ? 2 : 0);
    got = blk_read_all(blk, len);
    assert_same(want, got, len, "device after the job");
    blk_unref(blk);
    for (int i = 0; i < 3; i++) {
        g_autofree char *p = layer_path(prefix, i);
        check_clean(p);
    }
    g_mutex_clear(&log.lock);
}

START_TEST(test_finalize)
{
    finalize_case(false);
}
END_TEST

START_TEST(test_cancel_pending)
{
    finalize_case(true);
}
END_TEST

/* Pause stops the copy; resume goes on; QEMU's texts for double pause
 * and resume. */
START_TEST(test_pause_resume)
{
    g_autofree char *top_path = make_chain("pause", 3, sizes, 8);
    BlockBackend *blk = device_on(top_path);
    StreamOptions so = { .job.speed = 1 };
    BlockJobState a, b;
    GError *err = NULL;
    BlockJob *job = stream_start("p", blk, NULL, NULL, &so, &err);

    ck_assert_msg(job, "%s", err ? err->message : "");
    ck_assert(!block_job_complete(job, &err));
    ck_assert_str_eq(err->message, "Job 'p' in state 'running' cannot "
                     "accept command verb 'complete'");
    g_clear_error(&err);
    ck_assert(!block_job_resume(job, &err));
    ck_assert_str_eq(err->message, "Can't resume a job that was not paused");
    g_clear_error(&err);
    ck_assert(block_job_pause(job, NULL));
    ck_assert(!block_job_pause(job, &err));
    ck_assert_str_eq(err->message, "Job is already paused");
    g_clear_error(&err);
    wait_status(job, BLOCK_JOB_STATUS_PAUSED);
    /* even at full speed, a paused job copies nothing */
    ck_assert(block_job_set_speed(job, 0, NULL));
    block_job_get_info(job, &a);
    g_usleep(300000);
    block_job_get_info(job, &b);
    ck_assert(a.paused && !a.busy);
    ck_assert_int_eq(a.offset, b.offset);
    ck_assert_int_lt(b.offset, b.len);
    ck_assert(block_job_resume(job, NULL));
    ck_assert(block_job_wait_concluded(job, 30 * G_USEC_PER_SEC));
    ck_assert_int_eq(block_job_wait(job, NULL), 0);
    ck_assert_int_eq(bdrv_chain_length(blk_bs(blk)), 0);
    blk_unref(blk);
}
END_TEST

/* QEMU's block-job-cancel without force on a ready mirror: completes,
 * the device stays on top. */
START_TEST(test_soft_cancel_ready)
{
    g_autofree char *top_path = make_chain("soft", 3, sizes, 9);
    BlockBackend *blk = device_on(top_path);
    BlockDriverState *root = blk_bs(blk);
    CommitOptions co = { 0 };
    GError *err = NULL;
    BlockJob *job = commit_start("c", blk, NULL, NULL, &co, &err);

    ck_assert_msg(job, "%s", err ? err->message : "");
    wait_status(job, BLOCK_JOB_STATUS_READY);
    ck_assert(block_job_user_cancel(job, false, NULL));
    ck_assert_int_eq(block_job_wait(job, NULL), 0);
    ck_assert_ptr_eq(blk_bs(blk), root);
    ck_assert_int_eq(bdrv_chain_length(root), 2);
    blk_unref(blk);
}
END_TEST

static Suite *states_suite(void)
{
    Suite *s = suite_create("chain-job-states");
    TCase *t = tcase_create("states");

    tcase_set_timeout(t, 240);
    tcase_add_test(t, test_finalize);
    tcase_add_test(t, test_cancel_pending);
    tcase_add_test(t, test_pause_resume);
    tcase_add_test(t, test_soft_cancel_ready);
    suite_add_tcase(s, t);
    return s;
}

int main(void)
{
    return chaintest_run(states_suite());
}
