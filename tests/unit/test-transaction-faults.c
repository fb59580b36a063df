/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * All or nothing, by exhaustion: one transaction over six devices with
 * every action type (internal create, two internal creates on a device,
 * an external snapshot followed by an internal one in its overlay, a
 * snapshot replaced by delete + create, an internal apply, an external
 * revert, blockdev-snapshot) is run
 *  - with an abort action inserted at every position,
 *  - with a refused action inserted at every position (the add fails and
 *    the list is dropped, as the monitor does),
 *  - with the Nth read, the Nth write and the Nth flush of any image file
 *    (the file driver's fault injector: also the overlays the transaction
 *    creates) failing, for N = 1, 2, ... until the transaction succeeds.
 * After every failure the transaction's error is the injected one, every
 * device has the chain, snapshot lists and content it had, the directory
 * holds the files it held, and every image checks clean with no leaks
 * (ours and qemu-img's check).  The number of cases is printed.
 */
#include "block/fault-inject.h"
#include "txntest.h"

#define NDEV 6

/* d4 has an overlay whose base is the revert target; d5's overlay for
 * blockdev-snapshot is an empty image opened as node "ovnode". */
static TxnDevs *make_pristine(const char *tag)
{
    TxnDevs *d = txn_devs_new(tag, NDEV, 4242);
    g_autofree char *ov4 = g_build_filename(d->dir, "d4-top.qcow2", NULL);
    g_autofree char *node5 = g_build_filename(d->dir, "d5-node.qcow2", NULL);
    BlockDriverState *bs;
    GRand *r = g_rand_new_with_seed(4);

    create_img(ov4, TXN_IMG_SIZE, "d4.qcow2", "qcow2");
    bs = open_img(ov4, BDRV_O_RDWR);
    fill_random(bs, r, 4);
    bdrv_unref(bs);
    g_rand_free(r);
    create_img(node5, TXN_IMG_SIZE, NULL, NULL);
    return d;
}

typedef struct Case {
    TxnDevs *d;
    char **tops;
    BlockDriverState *node5;
    char *ov1, *rv4;
} Case;

static void case_open(Case *c)
{
    BlockOpts *o = bdrv_opts_new();
    g_autofree char *node5 = g_build_filename(c->d->dir, "d5-node.qcow2",
                                              NULL);
    GError *err = NULL;

    txn_devs_open(c->d, c->tops);
    bdrv_opts_set(o, "node-name", "ovnode");
    c->node5 = blockdev_open_node(node5, o, BDRV_O_RDWR, &err);
    ck_assert_msg(c->node5, "%s", err ? err->message : "");
}

static void case_close(Case *c)
{
    g_clear_pointer(&c->node5, bdrv_unref);
    txn_devs_close(c->d);
}

/* The transaction, with `extra` (if non-NULL) inserted at position pos.
 * Returns the list, or NULL if an add failed (errp set). */
static BlkTransactionStates *build(Case *c, const BlkTransactionAction *extra,
                                   guint pos, GError **errp)
{
    BlkTransactionAction rev = { .kind = BLK_ACTION_REVERT_EXTERNAL };
    BlkTransactionAction bds = { .kind = BLK_ACTION_SNAPSHOT };
    BlkTransactionAction list[12];
    BlkTransactionStates *t = blk_transaction_new();
    guint n = 0;

    rev.u.revert_external.device = "d4";
    rev.u.revert_external.node =
        bdrv_get_node_name(bdrv_get_backing(blk_bs(c->d->blk[4])));
    rev.u.revert_external.snapshot_file = c->rv4;
    bds.u.snapshot.node = "d5";
    bds.u.snapshot.overlay = "ovnode";
    list[n++] = txn_internal("d0", "f1");
    list[n++] = txn_external("d1", c->ov1);
    list[n++] = txn_internal("d1", "f1");
    list[n++] = txn_delete("d2", NULL, "old1");
    list[n++] = txn_internal("d0", "f2");
    list[n++] = txn_internal("d2", "old1");
    list[n++] = txn_apply("d3", NULL, "old2");
    list[n++] = rev;
    list[n++] = bds;
    for (guint i = 0; i <= n; i++) {
        if (extra && i == pos &&
            !blk_transaction_add(t, extra, errp)) {
            blk_transaction_free(t);
            return NULL;
        }
        if (i < n && !blk_transaction_add(t, &list[i], errp)) {
            blk_transaction_free(t);
            return NULL;
        }
    }
    return t;
}

#define NACTIONS 9

static char *strip_dates(const char *s)
{
    g_autoptr(GRegex) re = g_regex_new("@[0-9]+", 0, 0, NULL);

    return g_regex_replace(re, s, -1, 0, "", 0, NULL);
}

/* After a failed run: nothing changed, nothing left, no leak. */
static void assert_unchanged(Case *c, const TxnPicture *before,
                             const char *what)
{
    TxnPicture *after = txn_picture(c->d);

    txn_picture_assert_same(before, after, what);
    txn_picture_free(after);
    ck_assert_msg(!bdrv_get_backing_filename(c->node5) ||
                  !*bdrv_get_backing_filename(c->node5),
                  "%s: d5's unused overlay records a backing file", what);
    case_close(c);
    txn_check_dir_clean(c->d->dir);
    case_open(c);
}

static Case *case_new(const char *tag)
{
    Case *c = g_new0(Case, 1);

    c->d = make_pristine(tag);
    c->tops = g_new0(char *, NDEV + 1);
    c->tops[4] = g_build_filename(c->d->dir, "d4-top.qcow2", NULL);
    c->ov1 = g_build_filename(c->d->dir, "d1-ov1.qcow2", NULL);
    c->rv4 = g_build_filename(c->d->dir, "d4-rv.qcow2", NULL);
    case_open(c);
    return c;
}

static void case_free(Case *c)
{
    case_close(c);
    txn_devs_free(c->d);
    /* (mostly NULL: not a NULL-terminated vector) */
    for (int i = 0; i < NDEV; i++) {
        g_free(c->tops[i]);
    }
    g_free(c->tops);
    g_free(c->ov1);
    g_free(c->rv4);
    g_free(c);
}

START_TEST(test_abort_everywhere)
{
    Case *c = case_new("abort");
    TxnPicture *before = txn_picture(c->d);
    BlkTransactionAction ab = txn_abort();
    int cases = 0;

    for (guint k = 0; k <= NACTIONS; k++) {
        g_autofree char *what = g_strdup_printf("abort at %u", k);
        GError *err = NULL;
        BlkTransactionStates *t = build(c, &ab, k, &err);

        ck_assert_msg(t, "%s", err ? err->message : "");
        ck_assert(!blk_transaction_submit(t, &err));
        ck_assert_str_eq(err->message,
                         "Transaction aborted using Abort action");
        g_clear_error(&err);
        blk_transaction_free(t);
        assert_unchanged(c, before, what);
        cases++;
    }
    printf("abort: %d positions rolled back\n", cases);
    txn_picture_free(before);
    case_free(c);
}
END_TEST

START_TEST(test_refused_everywhere)
{
    Case *c = case_new("refused");
    TxnPicture *before = txn_picture(c->d);
    BlkTransactionAction bad[] = {
        txn_internal("nodev", "x"),
        txn_internal("d0", ""),
        txn_delete("d2", NULL, "no-such-snapshot"),
    };
    static const char *const want[] = {
        "Cannot find device='nodev' nor node-name='nodev'",
        "Name is empty",
        "Snapshot with id 'null' and name 'no-such-snapshot' does not "
        "exist on device 'd2'",
    };
    int cases = 0;

    for (guint b = 0; b < G_N_ELEMENTS(bad); b++) {
        for (guint k = 0; k <= NACTIONS; k++) {
            g_autofree char *what = g_strdup_printf("refused %u at %u", b, k);
            GError *err = NULL;
            BlkTransactionStates *t = build(c, &bad[b], k, &err);

            ck_assert_msg(!t, "%s: accepted", what);
            ck_assert_msg(!strcmp(err->message, want[b]), "%s: '%s'", what,
                          err->message);
            g_clear_error(&err);
            assert_unchanged(c, before, what);
            cases++;
        }
    }
    printf("refused: %d cases, nothing changed\n", cases);
    txn_picture_free(before);
    case_free(c);
}
END_TEST

static const char *const kind_names[] = { "read", "write", "flush" };

START_TEST(test_io_error_everywhere)
{
    FaultKind kind = _i;
    g_autofree char *tag = g_strdup_printf("io-%s", kind_names[kind]);
    Case *c = case_new(tag);
    TxnPicture *before = txn_picture(c->d);
    int failures = 0;

    for (uint64_t n = 1;; n++) {
        g_autofree char *what = g_strdup_printf("%s %" G_GUINT64_FORMAT,
                                                kind_names[kind], n);
        GError *err = NULL;
        BlkTransactionStates *t = build(c, NULL, 0, &err);
        bool ok, fired;

        ck_assert_msg(t, "%s", err ? err->message : "");
        fault_inject_arm(kind, n);
        ok = blk_transaction_submit(t, &err);
        fired = fault_inject_disarm();
        blk_transaction_free(t);
        if (ok) {
            /* the Nth request is past what the transaction needs (or in a
             * clean, which only leaks): the end of the enumeration */
            TxnPicture *after = txn_picture(c->d);
            g_autofree char *d1 = strip_dates(after->dev[1]);
            ck_assert_msg(strstr(d1, "d1-ov1.qcow2[1:f1] <- d1.qcow2(ro)"),
                          "%s: %s", what, d1);
            txn_picture_free(after);
            printf("%s errors: %d injected, each rolled back; the "
                   "transaction succeeds from the %s number %" G_GUINT64_FORMAT
                   " on%s\n", kind_names[kind], failures, kind_names[kind],
                   n, fired ? " (that one failed in a clean)" : "");
            break;
        }
        ck_assert_msg(fired, "%s: failed without the injected error: %s",
                      what, err->message);
        ck_assert_msg(!strstr(err->message, "while rolling back"),
                      "%s: rollback failed: %s", what, err->message);
        g_clear_error(&err);
        assert_unchanged(c, before, what);
        failures++;
        ck_assert_msg(n < 5000, "no success after 5000 %s errors",
                      kind_names[kind]);
    }
    ck_assert_int_gt(failures, 0);
    txn_picture_free(before);
    case_free(c);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("transaction-faults");
    TCase *tc = tcase_create("faults");

    tcase_set_timeout(tc, 1800);
    tcase_add_test(tc, test_abort_everywhere);
    tcase_add_test(tc, test_refused_everywhere);
    tcase_add_loop_test(tc, test_io_error_everywhere, 0, FAULT__MAX);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    strata_log_set_sink(strata_log_to_stderr, NULL);
    return chaintest_run(suite());
}
