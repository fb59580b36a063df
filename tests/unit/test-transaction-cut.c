/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * A consistent cut under load.  Three threads write sequenced records to
 * four devices: record s (a global sequence number) goes to device s % 4,
 * and is written only once record s - 1 has completed, so the records
 * have one global order.  Meanwhile transactions snapshot all four
 * devices again and again, alternating internal snapshots and external
 * ones.  For every snapshot set, the records found in the four snapshots
 * must be exactly the records 1..M for some M: a set holding a record
 * without one written before it would be a torn cut.  Internal snapshots
 * pre-copy their metadata before the drain (issue 15): a hook slows each
 * pre-copy step down so that the writers demonstrably complete records
 * while phase 1 runs, and the cut must hold all the same.
 */
#include <inttypes.h>

#include "block/qcow2-precopy.h"
#include "txntest.h"
#include "blockdev/cut-record.h"

#define NDEV 4
#define NWRITERS 3
#define ROUNDS 12
#define REC_SIZE 512

typedef struct Load {
    TxnDevs *d;
    GMutex lock;
    GCond cond;
    uint64_t claimed;           /* last sequence number handed out */
    uint64_t completed;         /* last record whose write completed */
    uint64_t max_seq;
    uint64_t limit;             /* records released so far (see below) */
    gint stop;
} Load;

/* The record format is shared with strata-daemon's test writers. */
static int64_t slot_offset(uint64_t s)
{
    return cut_record_offset(s, NDEV, REC_SIZE);
}

static gpointer writer(gpointer opaque)
{
    Load *l = opaque;
    uint8_t buf[REC_SIZE];

    for (;;) {
        uint64_t s;

        g_mutex_lock(&l->lock);
        while (!g_atomic_int_get(&l->stop) && l->claimed >= l->limit &&
               l->claimed < l->max_seq) {
            g_cond_wait(&l->cond, &l->lock);
        }
        if (g_atomic_int_get(&l->stop) || l->claimed >= l->max_seq) {
            g_mutex_unlock(&l->lock);
            return NULL;
        }
        s = ++l->claimed;
        while (l->completed != s - 1) {
            g_cond_wait(&l->cond, &l->lock);
        }
        g_mutex_unlock(&l->lock);

        cut_record_make(s, buf, REC_SIZE);
        ck_assert_int_eq(blk_pwrite(l->d->blk[s % NDEV], slot_offset(s),
                                    REC_SIZE, buf), 0);

        g_mutex_lock(&l->lock);
        l->completed = s;
        g_cond_broadcast(&l->cond);
        g_mutex_unlock(&l->lock);
    }
}

/* Records completed while some pre-copy step ran (issue 15). */
static uint64_t during_phase1;
static uint64_t phase1_mark;

static void precopy_step(BlockDriverState *bs, unsigned step, void *opaque)
{
    Load *l = opaque;
    uint64_t now;

    g_mutex_lock(&l->lock);
    now = l->completed;
    g_mutex_unlock(&l->lock);
    if (step > 0) {
        during_phase1 += now - phase1_mark;
    }
    g_usleep(100);
    g_mutex_lock(&l->lock);
    phase1_mark = l->completed;
    g_mutex_unlock(&l->lock);
}

static char *file_of(TxnDevs *d, int i, int round)
{
    g_autofree char *name = round < 0 ? g_strdup_printf("d%d.qcow2", i)
                                      : g_strdup_printf("d%d-c%d.qcow2", i,
                                                        round);
    return g_build_filename(d->dir, name, NULL);
}

static void snapshot_all(TxnDevs *d, int round)
{
    BlkTransactionStates *t = blk_transaction_new();
    g_autofree char *name = g_strdup_printf("c%d", round);
    GError *err = NULL;
    char *files[NDEV] = { 0 };
    char devs[NDEV][8];

    for (int i = 0; i < NDEV; i++) {
        snprintf(devs[i], sizeof(devs[i]), "d%d", i);
        if (round % 2) {
            files[i] = file_of(d, i, round);
            txn_add_ok(t, txn_external(devs[i], files[i]));
        } else {
            txn_add_ok(t, txn_internal(devs[i], name));
        }
    }
    ck_assert_msg(blk_transaction_submit(t, &err), "round %d: %s", round,
                  err ? err->message : "");
    blk_transaction_free(t);
    for (int i = 0; i < NDEV; i++) {
        g_free(files[i]);
    }
}

/* The image that was each device's top while round r ran. */
static char *top_during(TxnDevs *d, int i, int r)
{
    int last_ext = -1;

    for (int k = 1; k < r; k += 2) {
        last_ext = k;
    }
    return file_of(d, i, last_ext);
}

/* The records of one device's view of set r. */
static void collect(TxnDevs *d, int i, int r, GHashTable *present)
{
    g_autofree char *path = top_during(d, i, r);
    BlockDriverState *bs = open_img(path, 0);
    g_autofree uint8_t *all = NULL;
    g_autofree char *name = g_strdup_printf("c%d", r);

    if (r % 2 == 0) {
        GError *err = NULL;
        ck_assert_msg(bdrv_snapshot_load_tmp(bs, NULL, name, &err) == 0,
                      "%s: %s", path, err ? err->message : "");
    }
    /* (an external set is the old top's active content, frozen since) */
    all = read_all(bs, TXN_IMG_SIZE);
    for (int64_t off = 0; off < TXN_IMG_SIZE; off += REC_SIZE) {
        uint64_t s = cut_record_parse(all + off, REC_SIZE);
        if (s) {
            ck_assert_int_eq(s % NDEV, i);
            ck_assert_int_eq(slot_offset(s), off);
            g_hash_table_add(present, GSIZE_TO_POINTER(s));
        }
    }
    bdrv_unref(bs);
}

START_TEST(test_consistent_cut)
{
    Load l = { 0 };
    GThread *th[NWRITERS];
    uint64_t prev_m = 0;
    int distinct = 0;

    l.d = txn_devs_new("cut", NDEV, 77);
    l.max_seq = (TXN_IMG_SIZE / REC_SIZE) * NDEV - 1;
    g_mutex_init(&l.lock);
    g_cond_init(&l.cond);
    /* records only: no random data that could look like one */
    txn_devs_open(l.d, NULL);
    for (int i = 0; i < NDEV; i++) {
        ck_assert_int_eq(blk_pwrite_zeroes(l.d->blk[i], 0, TXN_IMG_SIZE, 0),
                         0);
    }
    qcow2_precopy_set_step_hook(precopy_step, &l);
    for (int k = 0; k < NWRITERS; k++) {
        th[k] = g_thread_new("writer", writer, &l);
    }
    for (int r = 0; r < ROUNDS; r++) {
        g_usleep(20 * 1000);
        /* Records are released one share per round, as its transaction
         * starts: the writers run during every transaction (its pre-copy
         * included) and cannot use up the image's record slots before the
         * last rounds on a machine where transactions are slow. */
        g_mutex_lock(&l.lock);
        l.limit = MIN(l.max_seq, (r + 1) * (l.max_seq / ROUNDS + 1));
        g_cond_broadcast(&l.cond);
        g_mutex_unlock(&l.lock);
        snapshot_all(l.d, r);
    }
    g_mutex_lock(&l.lock);
    g_atomic_int_set(&l.stop, 1);
    g_cond_broadcast(&l.cond);
    g_mutex_unlock(&l.lock);
    for (int k = 0; k < NWRITERS; k++) {
        g_thread_join(th[k]);
    }
    qcow2_precopy_set_step_hook(NULL, NULL);
    /* the writers ran during the pre-copies, not only between rounds */
    printf("%" G_GUINT64_FORMAT " records completed while pre-copies "
           "ran\n", during_phase1);
    ck_assert_uint_gt(during_phase1, 0);
    txn_devs_close(l.d);

    for (int r = 0; r < ROUNDS; r++) {
        g_autoptr(GHashTable) present = g_hash_table_new(NULL, NULL);
        uint64_t m = 0;

        for (int i = 0; i < NDEV; i++) {
            collect(l.d, i, r, present);
        }
        m = g_hash_table_size(present);
        for (uint64_t s = 1; s <= m; s++) {
            ck_assert_msg(g_hash_table_contains(present, GSIZE_TO_POINTER(s)),
                          "set %d (%s) holds %" G_GUINT64_FORMAT " records "
                          "but not record %" G_GUINT64_FORMAT ": a torn cut",
                          r, r % 2 ? "external" : "internal", m, s);
        }
        ck_assert_msg(m >= prev_m, "set %d has fewer records than the one "
                      "before", r);
        distinct += m > prev_m;
        prev_m = m;
        printf("set %2d (%s): records 1..%" G_GUINT64_FORMAT "\n", r,
               r % 2 ? "external" : "internal", m);
    }
    /* the writers really ran during the snapshots */
    ck_assert_int_ge(distinct, ROUNDS / 2);
    printf("%d sets, %" G_GUINT64_FORMAT " records written in all\n",
           ROUNDS, l.completed);
    txn_check_dir_clean(l.d->dir);
    txn_devs_free(l.d);
    g_mutex_clear(&l.lock);
    g_cond_clear(&l.cond);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("transaction-cut");
    TCase *tc = tcase_create("cut");

    tcase_set_timeout(tc, 1200);
    tcase_add_test(tc, test_consistent_cut);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    strata_log_set_sink(strata_log_to_stderr, NULL);
    return chaintest_run(suite());
}
