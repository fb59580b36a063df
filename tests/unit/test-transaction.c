/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The transaction engine (blockdev/transaction.c) and its built-in
 * actions: successful transactions over 1, 2, 8 and 64 devices mixing
 * every action type with several actions per device, each result checked
 * through the library and with qemu-img; reverts; blockdev-snapshot;
 * asynchronous actions; the pause/resume hooks; one list per device.
 * Failures and rollback: test-transaction-faults.c; the consistent cut
 * under load: test-transaction-cut.c.
 */
#include "txntest.h"

/* What a device of the mixed transaction does, by i % 4. */
enum { ROLE_INTERNAL3, ROLE_EXT_THEN_INT, ROLE_REPLACE, ROLE_EXT2 };

static char *ov_path(TxnDevs *d, int i, int k)
{
    g_autofree char *name = g_strdup_printf("d%d-ov%d.qcow2", i, k);
    return g_build_filename(d->dir, name, NULL);
}

static void add_mixed(BlkTransactionStates *t, TxnDevs *d, int i,
                      GPtrArray *keep)
{
    char *dev = g_strdup_printf("d%d", i);
    char *ov1 = ov_path(d, i, 1), *ov2 = ov_path(d, i, 2);

    g_ptr_array_add(keep, dev);
    g_ptr_array_add(keep, ov1);
    g_ptr_array_add(keep, ov2);
    switch (i % 4) {
    case ROLE_INTERNAL3:       /* iotest 057: three in one transaction */
        txn_add_ok(t, txn_internal(dev, "t1"));
        txn_add_ok(t, txn_internal(dev, "t2"));
        txn_add_ok(t, txn_internal(dev, "t3"));
        break;
    case ROLE_EXT_THEN_INT:    /* the internal one lands in the overlay */
        txn_add_ok(t, txn_external(dev, ov1));
        txn_add_ok(t, txn_internal(dev, "t1"));
        break;
    case ROLE_REPLACE:         /* old1 replaced: delete, then create */
        txn_add_ok(t, txn_delete(dev, NULL, "old1"));
        txn_add_ok(t, txn_internal(dev, "t1"));
        txn_add_ok(t, txn_internal(dev, "old1"));
        break;
    case ROLE_EXT2:            /* a two-deep chain in one go */
        txn_add_ok(t, txn_external(dev, ov1));
        txn_add_ok(t, txn_external(dev, ov2));
        break;
    }
}

/* Expected (top file, chain from the top, snapshots of the top, of the
 * base) for device i. */
static void expected(int i, char **top, char **chain, char **top_snaps,
                     char **base_snaps)
{
    g_autofree char *b = g_strdup_printf("d%d.qcow2", i);
    g_autofree char *o1 = g_strdup_printf("d%d-ov1.qcow2", i);
    g_autofree char *o2 = g_strdup_printf("d%d-ov2.qcow2", i);

    switch (i % 4) {
    case ROLE_INTERNAL3:
        *top = g_strdup(b);
        *chain = g_strdup(b);
        *top_snaps = g_strdup("old1,old2,t1,t2,t3");
        *base_snaps = g_strdup(*top_snaps);
        break;
    case ROLE_EXT_THEN_INT:
        *top = g_strdup(o1);
        *chain = g_strdup_printf("%s,%s", o1, b);
        *top_snaps = g_strdup("t1");
        *base_snaps = g_strdup("old1,old2");
        break;
    case ROLE_REPLACE:
        *top = g_strdup(b);
        *chain = g_strdup(b);
        *top_snaps = g_strdup("old2,t1,old1");
        *base_snaps = g_strdup(*top_snaps);
        break;
    default:
        *top = g_strdup(o2);
        *chain = g_strdup_printf("%s,%s,%s", o2, o1, b);
        *top_snaps = g_strdup("");
        *base_snaps = g_strdup("old1,old2");
        break;
    }
}

/* The snapshot's content, read from a fresh read-only open. */
static void assert_snapshot_content(const char *path, const char *name,
                                    const uint8_t *want)
{
    BlockDriverState *bs = open_img(path, 0);
    GError *err = NULL;
    g_autofree uint8_t *got = NULL;

    ck_assert_msg(bdrv_snapshot_load_tmp(bs, NULL, name, &err) == 0,
                  "%s: %s", path, err ? err->message : "");
    got = read_all(bs, TXN_IMG_SIZE);
    assert_same(want, got, TXN_IMG_SIZE, name);
    bdrv_unref(bs);
}

static void run_mixed(int n)
{
    g_autofree char *tag = g_strdup_printf("mixed%d", n);
    TxnDevs *d = txn_devs_new(tag, n, 100 + n);
    g_autoptr(GPtrArray) keep = g_ptr_array_new_with_free_func(g_free);
    g_autoptr(GPtrArray) content = g_ptr_array_new_with_free_func(g_free);
    BlkTransactionStates *t;
    GError *err = NULL;

    txn_devs_open(d, NULL);
    t = blk_transaction_new();
    for (int i = 0; i < n; i++) {
        g_autofree char *raw = g_strdup_printf("%s.d%d.raw", d->dir, i);
        uint8_t *buf = blk_read_all(d->blk[i], TXN_IMG_SIZE);
        ck_assert(g_file_set_contents(raw, (char *)buf, TXN_IMG_SIZE, NULL));
        g_ptr_array_add(content, buf);
        add_mixed(t, d, i, keep);
    }
    ck_assert_msg(blk_transaction_submit(t, &err), "%s",
                  err ? err->message : "");
    blk_transaction_free(t);

    /* through the library, devices still open */
    for (int i = 0; i < n; i++) {
        g_autofree char *top = NULL, *chain = NULL, *ts = NULL, *bsn = NULL;
        g_autofree char *got_top = NULL, *got_snaps = NULL;
        g_autofree uint8_t *now = blk_read_all(d->blk[i], TXN_IMG_SIZE);

        expected(i, &top, &chain, &ts, &bsn);
        got_top = g_path_get_basename(bdrv_get_filename(blk_bs(d->blk[i])));
        ck_assert_str_eq(got_top, top);
        got_snaps = txn_snapshot_names(blk_bs(d->blk[i]));
        ck_assert_str_eq(got_snaps, ts);
        assert_same(g_ptr_array_index(content, i), now, TXN_IMG_SIZE,
                    "device content");
        for (BlockDriverState *p = bdrv_get_backing(blk_bs(d->blk[i])); p;
             p = bdrv_get_backing(p)) {
            ck_assert(bdrv_is_read_only(p));
        }
    }
    txn_devs_close(d);

    /* and with qemu-img, devices closed */
    for (int i = 0; i < n; i++) {
        g_autofree char *top = NULL, *chain = NULL, *ts = NULL, *bsn = NULL;
        g_autofree char *top_path = NULL, *raw = NULL;
        g_autofree char *q_chain = NULL, *q_top = NULL, *q_base = NULL;

        expected(i, &top, &chain, &ts, &bsn);
        top_path = g_build_filename(d->dir, top, NULL);
        raw = g_strdup_printf("%s.d%d.raw", d->dir, i);
        q_chain = qemu_chain_files(top_path);
        if (q_chain) {
            q_top = qemu_snapshot_names(top_path);
            q_base = qemu_snapshot_names(d->base[i]);
            ck_assert_str_eq(q_chain, chain);
            ck_assert_str_eq(q_top, ts);
            ck_assert_str_eq(q_base, bsn);
            ck_assert_msg(qemu_same_content(top_path, raw),
                          "qemu-img compare: d%d differs", i);
        }
        if (n <= 8 && i % 4 == ROLE_INTERNAL3) {
            assert_snapshot_content(top_path, "t3",
                                    g_ptr_array_index(content, i));
        }
        if (n <= 8 && i % 4 == ROLE_EXT_THEN_INT) {
            assert_snapshot_content(top_path, "t1",
                                    g_ptr_array_index(content, i));
        }
        unlink(raw);
    }
    txn_check_dir_clean(d->dir);
    txn_devs_free(d);
}

START_TEST(test_mixed)
{
    static const int sizes[] = { 1, 2, 8, 64 };

    run_mixed(sizes[_i]);
}
END_TEST

/* Internal apply and external revert, each alone on its device, with an
 * internal snapshot of a third device. */
START_TEST(test_reverts)
{
    TxnDevs *d = txn_devs_new("reverts", 3, 7);
    g_autofree char *ov = g_build_filename(d->dir, "d1-ov.qcow2", NULL);
    g_autofree char *rv = g_build_filename(d->dir, "d1-rv.qcow2", NULL);
    g_autofree uint8_t *old1 = NULL, *base1 = NULL, *top1 = NULL;
    BlkTransactionStates *t;
    BlkTransactionAction rev = { .kind = BLK_ACTION_REVERT_EXTERNAL };
    BlockDriverState *base_node;
    GError *err = NULL;

    txn_devs_open(d, NULL);
    /* d1 gets an overlay first, so there is a chain to revert in */
    t = blk_transaction_new();
    txn_add_ok(t, txn_external("d1", ov));
    ck_assert(blk_transaction_submit(t, &err));
    blk_transaction_free(t);
    base_node = bdrv_get_backing(blk_bs(d->blk[1]));
    base1 = blk_read_all(d->blk[1], TXN_IMG_SIZE);
    {
        uint8_t buf[4096];
        memset(buf, 0xee, sizeof(buf));
        ck_assert_int_eq(blk_pwrite(d->blk[1], 0, sizeof(buf), buf), 0);
    }
    top1 = blk_read_all(d->blk[1], TXN_IMG_SIZE);
    bdrv_ref(base_node);

    rev.u.revert_external.device = "d1";
    rev.u.revert_external.snapshot_file = rv;
    /* a node of another device's chain is refused */
    rev.u.revert_external.node = bdrv_get_node_name(blk_bs(d->blk[0]));
    t = blk_transaction_new();
    ck_assert(!blk_transaction_add(t, &rev, &err));
    {
        g_autofree char *want = g_strdup_printf(
            "Node '%s' is not in the backing chain of device 'd1'",
            bdrv_get_node_name(blk_bs(d->blk[0])));
        ck_assert_str_eq(err->message, want);
    }
    g_clear_error(&err);
    blk_transaction_free(t);
    rev.u.revert_external.node = bdrv_get_node_name(base_node);
    t = blk_transaction_new();
    txn_add_ok(t, txn_apply("d0", NULL, "old1"));
    txn_add_ok(t, rev);
    txn_add_ok(t, txn_internal("d2", "t1"));
    ck_assert_msg(blk_transaction_submit(t, &err), "%s",
                  err ? err->message : "");
    blk_transaction_free(t);

    /* d0 reads what old1 holds */
    {
        BlockDriverState *bs = open_img(d->base[0], BDRV_O_FORCE_SHARE);
        ck_assert(bdrv_snapshot_load_tmp(bs, NULL, "old1", NULL) == 0);
        old1 = read_all(bs, TXN_IMG_SIZE);
        bdrv_unref(bs);
    }
    {
        g_autofree uint8_t *now = blk_read_all(d->blk[0], TXN_IMG_SIZE);
        assert_same(old1, now, TXN_IMG_SIZE, "d0 after apply");
    }
    /* d1 reads what its base holds, on a new overlay; the old top kept */
    {
        g_autofree uint8_t *now = blk_read_all(d->blk[1], TXN_IMG_SIZE);
        assert_same(base1, now, TXN_IMG_SIZE, "d1 after revert");
        ck_assert_ptr_eq(bdrv_get_backing(blk_bs(d->blk[1])), base_node);
        ck_assert(bdrv_is_file(blk_bs(d->blk[1]), rv));
    }
    bdrv_unref(base_node);
    txn_devs_close(d);
    {
        g_autofree char *q = qemu_chain_files(rv);
        if (q) {
            ck_assert_str_eq(q, "d1-rv.qcow2,d1.qcow2");
        }
        /* the old top still holds the write made before the revert */
        BlockDriverState *bs = open_img(ov, 0);
        g_autofree uint8_t *kept = read_all(bs, TXN_IMG_SIZE);
        assert_same(top1, kept, TXN_IMG_SIZE, "old top kept");
        bdrv_unref(bs);
    }
    txn_check_dir_clean(d->dir);
    txn_devs_free(d);
}
END_TEST

/* blockdev-snapshot: an overlay opened beforehand as a node. */
START_TEST(test_blockdev_snapshot)
{
    TxnDevs *d = txn_devs_new("bdsnap", 2, 9);
    g_autofree char *ov = g_build_filename(d->dir, "d0-node.qcow2", NULL);
    BlkTransactionAction a = { .kind = BLK_ACTION_SNAPSHOT };
    BlkTransactionStates *t;
    BlockDriverState *node;
    BlockOpts *o = bdrv_opts_new();
    GError *err = NULL;

    create_img(ov, TXN_IMG_SIZE, NULL, NULL);
    txn_devs_open(d, NULL);
    bdrv_opts_set(o, "node-name", "ovnode");
    node = blockdev_open_node(ov, o, BDRV_O_RDWR, &err);
    ck_assert_msg(node, "%s", err ? err->message : "");
    a.u.snapshot.node = "d0";
    a.u.snapshot.overlay = "ovnode";
    t = blk_transaction_new();
    txn_add_ok(t, a);
    txn_add_ok(t, txn_internal("d0", "in-node"));  /* lands in ovnode */
    txn_add_ok(t, txn_internal("d1", "x"));
    ck_assert_msg(blk_transaction_submit(t, &err), "%s",
                  err ? err->message : "");
    blk_transaction_free(t);
    ck_assert_ptr_eq(blk_bs(d->blk[0]), node);
    {
        g_autofree char *s = txn_snapshot_names(node);
        ck_assert_str_eq(s, "in-node");
    }
    bdrv_unref(node);
    txn_devs_close(d);
    {
        g_autofree char *q = qemu_chain_files(ov);
        if (q) {
            ck_assert_str_eq(q, "d0-node.qcow2,d0.qcow2");
        }
    }
    txn_check_dir_clean(d->dir);
    txn_devs_free(d);
}
END_TEST

/* ---- an asynchronous action ---- */

typedef struct AsyncState {
    gint64 completed_at;
    gint64 invalidated_at;
    bool fail;
    GThread *thread;
} AsyncState;

typedef struct AsyncParams {
    bool fail;
} AsyncParams;

static AsyncState *last_async;

static bool async_check(BlkAction *a, const void *params, GError **errp)
{
    AsyncState *s = blk_action_state(a);

    s->fail = ((const AsyncParams *)params)->fail;
    last_async = s;
    return true;
}

static gpointer async_work(gpointer opaque)
{
    BlkAction *a = opaque;
    AsyncState *s = blk_action_state(a);

    g_usleep(100 * 1000);
    s->completed_at = g_get_monotonic_time();
    blk_action_completed(a, s->fail ? g_error_new(BDRV_ERROR,
                                                  BDRV_ERROR_GENERIC,
                                                  "async work failed")
                                    : NULL);
    return NULL;
}

static bool async_do(BlkAction *a, GError **errp)
{
    AsyncState *s = blk_action_state(a);

    s->thread = g_thread_new("async", async_work, a);
    return true;
}

static bool async_invalidate(BlkAction *a, GError **errp)
{
    AsyncState *s = blk_action_state(a);

    s->invalidated_at = g_get_monotonic_time();
    return true;
}

static bool async_cancel(BlkAction *a, GError **errp)
{
    return true;
}

static void async_clean(BlkAction *a)
{
    AsyncState *s = blk_action_state(a);

    if (s->thread) {
        g_thread_join(s->thread);
    }
}

static const BlkActionType async_type = {
    .name = "test-async",
    .state_size = sizeof(AsyncState),
    .async = true,
    .check = async_check,
    .do_ = async_do,
    .invalidate = async_invalidate,
    .cancel = async_cancel,
    .clean = async_clean,
};

START_TEST(test_async)
{
    TxnDevs *d = txn_devs_new("async", 2, 11);
    AsyncParams ok = { false }, bad = { true };
    BlkTransactionStates *t;
    TxnPicture *before;
    GError *err = NULL;

    txn_devs_open(d, NULL);
    /* success: invalidate only after the work completed */
    t = blk_transaction_new();
    txn_add_ok(t, txn_internal("d0", "a1"));
    ck_assert(blk_transaction_add_custom(t, &async_type, &ok, &err));
    txn_add_ok(t, txn_internal("d1", "a1"));
    ck_assert_msg(blk_transaction_submit(t, &err), "%s",
                  err ? err->message : "");
    ck_assert(last_async->completed_at > 0);
    ck_assert(last_async->invalidated_at >= last_async->completed_at);
    blk_transaction_free(t);

    /* failure of the work: the other actions are rolled back */
    before = txn_picture(d);
    t = blk_transaction_new();
    txn_add_ok(t, txn_internal("d0", "a2"));
    ck_assert(blk_transaction_add_custom(t, &async_type, &bad, &err));
    txn_add_ok(t, txn_internal("d1", "a2"));
    ck_assert(!blk_transaction_submit(t, &err));
    ck_assert_str_eq(err->message, "async work failed");
    g_clear_error(&err);
    ck_assert_int_eq(last_async->invalidated_at, 0);
    blk_transaction_free(t);
    {
        TxnPicture *after = txn_picture(d);
        txn_picture_assert_same(before, after, "after a failed async");
        txn_picture_free(after);
    }
    txn_picture_free(before);
    txn_devs_close(d);
    txn_check_dir_clean(d->dir);
    txn_devs_free(d);
}
END_TEST

/* ---- an error while rolling back ---- */

static bool badcancel_check(BlkAction *a, const void *params, GError **errp)
{
    return true;
}

static bool badcancel_do(BlkAction *a, GError **errp)
{
    return true;
}

static bool badcancel_cancel(BlkAction *a, GError **errp)
{
    g_set_error(errp, BDRV_ERROR, BDRV_ERROR_IO, "cannot undo");
    return false;
}

static const BlkActionType badcancel_type = {
    .name = "test-bad-cancel",
    .check = badcancel_check,
    .do_ = badcancel_do,
    .cancel = badcancel_cancel,
};

static GString *captured;

static void capture(StrataLogLevel level, const char *msg, void *opaque)
{
    g_string_append_printf(captured, "%s\n", msg);
}

START_TEST(test_cancel_error_appended)
{
    TxnDevs *d = txn_devs_new("badcancel", 1, 17);
    BlkTransactionStates *t;
    TxnPicture *before;
    GError *err = NULL;

    txn_devs_open(d, NULL);
    before = txn_picture(d);
    captured = g_string_new(NULL);
    strata_log_set_sink(capture, NULL);
    t = blk_transaction_new();
    txn_add_ok(t, txn_internal("d0", "x"));
    ck_assert(blk_transaction_add_custom(t, &badcancel_type, NULL, &err));
    txn_add_ok(t, txn_abort());
    ck_assert(!blk_transaction_submit(t, &err));
    /* the first error first, the cancel's after it, and in the log */
    ck_assert_str_eq(err->message, "Transaction aborted using Abort action; "
                     "while rolling back, action 1 (test-bad-cancel) "
                     "failed: cannot undo");
    ck_assert_msg(strstr(captured->str, "cannot undo"), "log: %s",
                  captured->str);
    g_clear_error(&err);
    blk_transaction_free(t);
    strata_log_set_sink(strata_log_to_stderr, NULL);
    g_string_free(captured, TRUE);
    {
        /* the internal snapshot before it was still cancelled */
        TxnPicture *after = txn_picture(d);
        txn_picture_assert_same(before, after, "after a failed cancel");
        txn_picture_free(after);
    }
    txn_picture_free(before);
    txn_devs_close(d);
    txn_check_dir_clean(d->dir);
    txn_devs_free(d);
}
END_TEST

/* ---- the hooks ---- */

typedef struct HookLog {
    int paused, resumed;
    size_t count;
    gint64 paused_at, resumed_at;
    BlockBackend *dev;          /* written to by the racing thread */
    gint64 write_done_at;
} HookLog;

static gpointer racing_write(gpointer opaque)
{
    HookLog *h = opaque;
    uint8_t buf[512] = { 1 };

    ck_assert_int_eq(blk_pwrite(h->dev, 0, sizeof(buf), buf), 0);
    h->write_done_at = g_get_monotonic_time();
    return NULL;
}

static void on_paused(BlockBackend *const *devs, size_t n, void *opaque)
{
    HookLog *h = opaque;
    GThread *th;

    h->paused++;
    h->count = n;
    h->paused_at = g_get_monotonic_time();
    /* a guest write now must wait for the resume */
    th = g_thread_new("racer", racing_write, h);
    g_usleep(50 * 1000);
    ck_assert_int_eq(h->write_done_at, 0);
    g_thread_unref(th);
}

static void on_resumed(BlockBackend *const *devs, size_t n, void *opaque)
{
    HookLog *h = opaque;

    h->resumed++;
    h->resumed_at = g_get_monotonic_time();
}

START_TEST(test_hooks)
{
    TxnDevs *d = txn_devs_new("hooks", 3, 13);
    HookLog h = { 0 };
    BlkTransactionStates *t;
    GError *err = NULL;

    txn_devs_open(d, NULL);
    h.dev = d->blk[2];
    blk_transaction_set_hooks(on_paused, on_resumed, &h);
    t = blk_transaction_new();
    txn_add_ok(t, txn_internal("d2", "h1"));
    txn_add_ok(t, txn_internal("d0", "h1"));
    ck_assert(blk_transaction_submit(t, &err));
    blk_transaction_free(t);
    blk_transaction_set_hooks(NULL, NULL, NULL);
    ck_assert_int_eq(h.paused, 1);
    ck_assert_int_eq(h.resumed, 1);
    ck_assert_int_eq(h.count, 2);
    /* the held write completed only after the hold ended */
    while (!g_atomic_int_get((gint *)&h.write_done_at)) {
        g_usleep(1000);
    }
    ck_assert(h.write_done_at >= h.paused_at + 50 * 1000);
    txn_devs_close(d);
    txn_devs_free(d);
}
END_TEST

/* One list per device at a time; an empty list succeeds. */
START_TEST(test_claims)
{
    TxnDevs *d = txn_devs_new("claims", 2, 15);
    BlkTransactionStates *t1, *t2;
    BlkTransactionAction a = txn_internal("d0", "c");
    GError *err = NULL;

    txn_devs_open(d, NULL);
    t1 = blk_transaction_new();
    t2 = blk_transaction_new();
    txn_add_ok(t1, a);
    ck_assert(!blk_transaction_add(t2, &a, &err));
    ck_assert_str_eq(err->message,
                     "Device 'd0' is already part of another transaction");
    g_clear_error(&err);
    txn_add_ok(t2, txn_internal("d1", "c"));
    blk_transaction_free(t1);
    txn_add_ok(t2, a);                 /* released with t1 */
    ck_assert(blk_transaction_submit(t2, &err));
    ck_assert(!blk_transaction_submit(t2, &err));   /* once per list */
    g_clear_error(&err);
    ck_assert(!blk_transaction_add(t2, &a, &err));
    g_clear_error(&err);
    blk_transaction_free(t2);
    t1 = blk_transaction_new();
    ck_assert(blk_transaction_submit(t1, &err));
    blk_transaction_free(t1);
    txn_devs_close(d);
    txn_devs_free(d);
}
END_TEST

/* ---- bad input ---- */

typedef struct BadCase {
    BlkTransactionAction first[2];   /* accepted first (kind ABORT: none) */
    int nfirst;
    BlkTransactionAction bad;
    const char *want;                /* the add's error, or a part of it */
    bool exact;
} BadCase;

static BlockBackend *extra_device(const char *name, const char *path,
                                  const char *driver, int flags)
{
    BlockOpts *o = bdrv_opts_new();
    GError *err = NULL;
    BlockDriverState *bs;
    BlockBackend *blk;

    bdrv_opts_set(o, "driver", driver);
    bs = bdrv_open(path, o, flags, &err);
    ck_assert_msg(bs, "%s", err ? err->message : "");
    blk = blk_new(name, bs);
    bdrv_unref(bs);
    ck_assert(blockdev_add_device(blk, &err));
    return blk;
}

START_TEST(test_bad_input)
{
    TxnDevs *d = txn_devs_new("bad", 2, 21);
    g_autofree char *ro_img = g_build_filename(d->dir, "ro.qcow2", NULL);
    g_autofree char *raw_img = g_build_filename(d->dir, "r0.raw", NULL);
    g_autofree char *jb_base = g_build_filename(d->dir, "jb-base.qcow2",
                                                NULL);
    g_autofree char *jb_top = g_build_filename(d->dir, "jb-top.qcow2", NULL);
    g_autofree char *f = g_build_filename(d->dir, "new.qcow2", NULL);
    g_autofree char *nodir = g_build_filename(d->dir, "no-such-dir",
                                              "ov.qcow2", NULL);
    g_autofree char *long_name = g_strnfill(256, 'n');
    g_autofree char *want_nodir = g_strdup_printf(
        "Could not create '%s': No such file or directory", nodir);
    g_autofree char *want_twice = g_strdup_printf(
        "The snapshot file '%s' is named twice in the same set of "
        "operations", f);
    g_autofree char *want_open = g_strdup_printf(
        "The snapshot file '%s' is in use", d->base[1]);
    BlockBackend *ro, *r0, *jb;
    BlockJob *job;
    StreamOptions so = { .job.speed = 1 };
    TxnPicture *before;
    GError *err = NULL;
    BadCase cases[] = {
        { .bad = txn_internal("nodev", "x"), .exact = true,
          .want = "Cannot find device='nodev' nor node-name='nodev'" },
        { .bad = txn_external("nodev", f), .exact = true,
          .want = "Cannot find device='nodev' nor node-name=''" },
        { .bad = txn_internal("ro", "x"), .exact = true,
          .want = "Device 'ro' is read only" },
        { .bad = txn_internal("r0", "x"), .exact = true,
          .want = "Block format 'raw' used by device 'r0' does not support "
                  "internal snapshots" },
        { .bad = txn_internal("d0", ""), .exact = true,
          .want = "Name is empty" },
        { .bad = txn_internal("d0", long_name), .exact = true,
          .want = "Snapshot name is too long (256 bytes; at most 255 are "
                  "allowed)" },
        { .bad = txn_internal("d0", "old1"), .exact = true,
          .want = "Snapshot with name 'old1' already exists on device 'd0'" },
        { .bad = txn_delete("d0", NULL, NULL), .exact = true,
          .want = "Name or id must be provided" },
        { .bad = txn_external("d0", nodir), .exact = true,
          .want = want_nodir },
        { .bad = txn_external("d0", d->base[1]), .want = want_open },
        { .bad = txn_external("d0", d->base[0]), .exact = true,
          .want = "The overlay is already in use" },
        { .bad = txn_internal("jb", "x"),
          .want = "is busy: block device is in use by block job: stream" },
        { .bad = txn_external("jb", f),
          .want = "is busy: block device is in use by block job: stream" },
        /* one device twice, in ways that cannot both happen */
        { .first = { txn_apply("d0", NULL, "old1") }, .nfirst = 1,
          .bad = txn_internal("d0", "x"), .exact = true,
          .want = "Device 'd0' is reverted earlier in this transaction; a "
                  "revert must be the only action on its device" },
        { .first = { txn_internal("d0", "x") }, .nfirst = 1,
          .bad = txn_apply("d0", NULL, "old1"), .exact = true,
          .want = "Device 'd0' has other actions in this transaction; a "
                  "revert must be the only action on its device" },
        { .first = { txn_internal("d1", "same") }, .nfirst = 1,
          .bad = txn_internal("d1", "same"), .exact = true,
          .want = "Snapshot with name 'same' already exists on device 'd1'" },
        { .first = { txn_delete("d0", NULL, "old1") }, .nfirst = 1,
          .bad = txn_delete("d0", NULL, "old1"), .exact = true,
          .want = "Snapshot with id 'null' and name 'old1' does not exist "
                  "on device 'd0'" },
        { .first = { txn_external("d0", f) }, .nfirst = 1,
          .bad = txn_external("d1", f), .exact = true, .want = want_twice },
    };

    create_img(ro_img, TXN_IMG_SIZE, NULL, NULL);
    ck_assert(g_file_set_contents(raw_img, "", 0, NULL));
    ck_assert_int_eq(truncate(raw_img, TXN_IMG_SIZE), 0);
    create_img(jb_base, TXN_IMG_SIZE, NULL, NULL);
    create_img(jb_top, TXN_IMG_SIZE, "jb-base.qcow2", "qcow2");
    txn_devs_open(d, NULL);
    ro = extra_device("ro", ro_img, "qcow2", 0);
    r0 = extra_device("r0", raw_img, "raw", BDRV_O_RDWR);
    jb = extra_device("jb", jb_top, "qcow2", BDRV_O_RDWR);
    job = stream_start(NULL, jb, NULL, NULL, &so, &err);
    ck_assert_msg(job, "%s", err ? err->message : "");

    before = txn_picture(d);
    for (guint i = 0; i < G_N_ELEMENTS(cases); i++) {
        BlkTransactionStates *t = blk_transaction_new();
        TxnPicture *after;

        for (int k = 0; k < cases[i].nfirst; k++) {
            txn_add_ok(t, cases[i].first[k]);
        }
        ck_assert_msg(!blk_transaction_add(t, &cases[i].bad, &err),
                      "case %u accepted", i);
        ck_assert_msg(cases[i].exact ? !strcmp(err->message, cases[i].want)
                                     : !!strstr(err->message, cases[i].want),
                      "case %u: '%s', expected '%s'", i, err->message,
                      cases[i].want);
        g_clear_error(&err);
        ck_assert_uint_eq(blk_transaction_length(t), cases[i].nfirst);
        blk_transaction_free(t);
        after = txn_picture(d);
        txn_picture_assert_same(before, after, "after a refused add");
        txn_picture_free(after);
    }
    txn_picture_free(before);
    block_job_cancel(job);
    block_job_wait(job, NULL);
    blk_unref(ro);
    blk_unref(r0);
    blk_unref(jb);
    txn_devs_close(d);
    check_clean(d->base[0]);
    check_clean(d->base[1]);
    txn_devs_free(d);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("transaction");
    TCase *tc = tcase_create("core");

    tcase_set_timeout(tc, 1200);
    tcase_add_loop_test(tc, test_mixed, 0, 4);
    tcase_add_test(tc, test_reverts);
    tcase_add_test(tc, test_blockdev_snapshot);
    tcase_add_test(tc, test_async);
    tcase_add_test(tc, test_hooks);
    tcase_add_test(tc, test_claims);
    tcase_add_test(tc, test_bad_input);
    tcase_add_test(tc, test_cancel_error_appended);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    strata_log_set_sink(strata_log_to_stderr, NULL);
    return chaintest_run(suite());
}
