/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Fault injection into qcow2 internal snapshots: an I/O error through the
 * blkdebug filter at every write and flush of create, delete and apply,
 * and of a cancel after invalidate, once and "always" (a disk that
 * dies), leaving the image in the old or the new state and clean; the
 * COPIED flags when a tree is released; malformed snapshot tables.
 */
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "snaptest.h"

/* ---- fault injection ---- */

typedef enum { F_CREATE, F_DELETE, F_GOTO } FaultOp;

static int do_op(BlockDriverState *bs, FaultOp op, GError **errp)
{
    BdrvSnapshotInfo t = tmpl_of("new");

    switch (op) {
    case F_CREATE:
        return bdrv_snapshot_create(bs, &t, 0, NULL, errp);
    case F_DELETE:
        return bdrv_snapshot_delete(bs, NULL, "s1", NULL, errp);
    default:
        return bdrv_snapshot_goto(bs, "s1", errp);
    }
}

/* discards: freed clusters are given back to the file (QEMU's
 * pass-discard-* defaults); off, only metadata writes and flushes
 * remain, each of which the operation must not survive. */
static BlockDriverState *open_faulty(const char *path, uint64_t n, bool once,
                                     bool discards)
{
    g_autofree char *o = g_strdup_printf(
        "%sfile.driver=blkdebug,file.inject-error.any=%" G_GUINT64_FORMAT
        ",file.inject-error.once=%s",
        discards ? "" : "pass-discard-snapshot=off,pass-discard-request=off,",
        n, once ? "on" : "off");
    return open_ok(path, true, o);
}

/* The image checks clean, or (leaks_ok) clean once its leaks are repaired
 * (a repair of leaks only, which also settles COPIED flags that disagreed
 * only because of a leaked reference). */
static void check_after_fault(const char *path, bool leaks_ok, const char *why)
{
    BlockDriverState *bs = open_ok(path, true, NULL);
    BdrvCheckResult res;

    ck_assert_int_eq(bdrv_check(bs, &res, leaks_ok ? BDRV_FIX_LEAKS
                                                   : BDRV_FIX_NONE), 0);
    ck_assert_msg(res.corruptions == 0 && res.check_errors == 0 &&
                  (leaks_ok || res.leaks == 0),
                  "%s: %d corruptions, %d leaks", why, res.corruptions,
                  res.leaks);
    assert_clean(bs);
    bdrv_unref(bs);
}

/* 4 KiB clusters, 4 MiB: two L2 tables, a few refcount blocks; two
 * snapshots and data written around them */
static void make_fault_base(const char *base)
{
    BlockDriverState *bs;

    make_image(base, "4M", "4096", "16");
    bs = open_ok(base, true, NULL);
    fill(bs, 0, 1536 * KiB, 0x61);
    snap_create(bs, "s1");
    fill(bs, MiB, 1536 * KiB, 0x62);
    snap_create(bs, "s2");
    fill(bs, 3 * MiB, 512 * KiB, 0x63);
    bdrv_unref(bs);
}

/*
 * A fault at every write and flush of op.  With discards on, a fault
 * may also hit the discard that gives a freed cluster back: that is
 * advice, so the operation succeeds, the image in its new state, clean
 * and without leaks (the cluster is free, only not punched); at least
 * one such fault must occur, or no discard was issued.
 */
static void run_faults(FaultOp op, bool once, bool discards)
{
    g_autofree char *base = tmp_path("fbase.qcow2");
    g_autofree char *work = tmp_path("fwork.qcow2");
    g_autofree char *old_state = NULL, *new_state = NULL;
    BlockDriverState *bs;
    BlkdebugCounts before, after;
    uint64_t first, last, n_old = 0, n_new = 0, n_advice = 0;

    make_fault_base(base);
    old_state = state_of(base);

    /* the op without faults: its result, and its writes and flushes */
    copy_file(base, work);
    bs = open_faulty(work, 0, true, discards);
    ck_assert(blkdebug_get_counts(bdrv_get_file(bs), &before));
    ck_assert_int_eq(do_op(bs, op, NULL), 0);
    ck_assert(blkdebug_get_counts(bdrv_get_file(bs), &after));
    bdrv_unref(bs);
    new_state = state_of(work);
    ck_assert_str_ne(old_state, new_state);
    first = before.writes + before.flushes + 1;
    last = after.writes + after.flushes;
    ck_assert_uint_gt(last, first);

    for (uint64_t n = first; n <= last; n++) {
        g_autofree char *why = g_strdup_printf("op %d, %s fault at %"
                                               G_GUINT64_FORMAT, op,
                                               once ? "once" : "always", n);
        g_autofree char *st = NULL;
        GError *err = NULL;
        int ret;

        copy_file(base, work);
        bs = open_faulty(work, n, once, discards);
        ret = do_op(bs, op, &err);
        if (discards && once && ret == 0) {
            bdrv_unref(bs);
            st = state_of(work);
            ck_assert_msg(!strcmp(st, new_state), "%s: succeeded, but not "
                          "in the new state", why);
            check_after_fault(work, false, why);
            n_advice++;
            continue;
        }
        ck_assert_msg(ret < 0, "%s: the operation succeeded", why);
        ck_assert_msg(err && *err->message, "%s: no message", why);
        g_clear_error(&err);
        bdrv_unref(bs);
        st = state_of(work);
        ck_assert_msg(!strcmp(st, old_state) || !strcmp(st, new_state),
                      "%s: state in between:\n%s\nold %s\nnew %s", why, st,
                      old_state, new_state);
        /* once: a cancelled operation leaks nothing; a visible one may
         * leak what the failed write was to free.  always: the disk died
         * in the middle, like a crash. */
        check_after_fault(work, !once || !strcmp(st, new_state), why);
        if (!strcmp(st, old_state)) {
            n_old++;
        } else {
            n_new++;
        }
    }
    /* faults landed on both sides of the commit point */
    ck_assert_msg(n_old > 0 && n_new > 0, "old %" G_GUINT64_FORMAT
                  ", new %" G_GUINT64_FORMAT, n_old, n_new);
    ck_assert_msg(!discards || !once || n_advice > 0,
                  "op %d: no fault hit a discard", op);
}

/* check, do and invalidate of op, by hand (the node drained). */
static BdrvSnapshotOp *op_to_invalidated(BlockDriverState *bs, FaultOp op)
{
    BdrvSnapshotOp *o;
    GError *err = NULL;

    switch (op) {
    case F_CREATE:
        o = check_create(bs, "new");
        break;
    case F_DELETE:
        o = check_delete(bs, "s1");
        break;
    default:
        o = bdrv_snapshot_goto_check(bs, NULL, "s1", &err);
        ck_assert_msg(o, "%s", err ? err->message : "");
        break;
    }
    STEP_OK(bdrv_snapshot_op_do, o);
    STEP_OK(bdrv_snapshot_op_invalidate, o);
    return o;
}

/*
 * Cancel after invalidate, with a fault at each write and flush the
 * cancel makes: the cancel reports it, and the image is the old one (the
 * header went back; at worst what the release was to free leaks) or the
 * new one (the header could not be written back), never in between, and
 * never corrupt.
 */
static void run_cancel_faults(FaultOp op, bool once)
{
    g_autofree char *base = tmp_path("cbase.qcow2");
    g_autofree char *work = tmp_path("cwork.qcow2");
    g_autofree char *old_state = NULL, *new_state = NULL;
    BlockDriverState *bs;
    BdrvSnapshotOp *o;
    BlkdebugCounts c;
    uint64_t at_inv, at_end, n_old = 0, n_new = 0;

    make_fault_base(base);
    old_state = state_of(base);

    /* without faults: cancel puts everything back, leaking nothing */
    copy_file(base, work);
    bs = open_faulty(work, 0, true, false);
    bdrv_drained_begin(bs);
    o = op_to_invalidated(bs, op);
    ck_assert(blkdebug_get_counts(bdrv_get_file(bs), &c));
    at_inv = c.writes + c.flushes;
    STEP_OK(bdrv_snapshot_op_cancel, o);
    ck_assert(blkdebug_get_counts(bdrv_get_file(bs), &c));
    at_end = c.writes + c.flushes;
    bdrv_drained_end(bs);
    STEP_OK(bdrv_snapshot_op_clean, o);
    bdrv_unref(bs);
    {
        g_autofree char *st = state_of(work);
        ck_assert_str_eq(st, old_state);
    }
    check_after_fault(work, false, "cancel without faults");
    ck_assert_uint_gt(at_end, at_inv);

    /* the state the operation leaves when it takes effect */
    copy_file(base, work);
    bs = open_ok(work, true, NULL);
    ck_assert_int_eq(do_op(bs, op, NULL), 0);
    bdrv_unref(bs);
    new_state = state_of(work);

    for (uint64_t n = at_inv + 1; n <= at_end; n++) {
        g_autofree char *why = g_strdup_printf(
            "op %d, %s fault at I/O %" G_GUINT64_FORMAT " (cancel: %"
            G_GUINT64_FORMAT "..%" G_GUINT64_FORMAT ")", op,
            once ? "once" : "always", n, at_inv + 1, at_end);
        g_autofree char *st = NULL;
        GError *err = NULL;
        int ret;

        copy_file(base, work);
        bs = open_faulty(work, n, once, false);
        bdrv_drained_begin(bs);
        o = op_to_invalidated(bs, op);
        ret = bdrv_snapshot_op_cancel(o, &err);
        ck_assert_msg(ret < 0 && err && *err->message,
                      "%s: the cancel did not report the fault", why);
        g_clear_error(&err);
        bdrv_drained_end(bs);
        bdrv_snapshot_op_clean(o, NULL);
        bdrv_unref(bs);
        st = state_of(work);
        ck_assert_msg(!strcmp(st, old_state) || !strcmp(st, new_state),
                      "%s: state in between:\n%s\nold %s\nnew %s", why, st,
                      old_state, new_state);
        check_after_fault(work, true, why);
        if (!strcmp(st, old_state)) {
            n_old++;
        } else {
            n_new++;
        }
    }
    /* a fault at the header write-back leaves the new state; later ones
     * the old */
    ck_assert_msg(n_old > 0 && n_new > 0, "old %" G_GUINT64_FORMAT
                  ", new %" G_GUINT64_FORMAT, n_old, n_new);
}

START_TEST(test_cancel_faults)
{
    run_cancel_faults(_i % 3, _i < 3);
}
END_TEST

START_TEST(test_faults)
{
    run_faults(_i % 3, _i < 3, false);
}
END_TEST

/* delete and apply free clusters, which then go back to the file */
START_TEST(test_discard_faults)
{
    run_faults(_i ? F_GOTO : F_DELETE, true, true);
}
END_TEST

START_TEST(test_fault_event)
{
    g_autofree char *path = tmp_path("ev.qcow2");
    g_autofree char *before = NULL, *after = NULL;
    BlockDriverState *bs;
    BdrvSnapshotInfo t = tmpl_of("x");
    GError *err = NULL;

    make_image(path, "4M", "65536", "16");
    bs = open_ok(path, true, NULL);
    fill(bs, 0, MiB, 0x71);
    snap_create(bs, "s1");
    bdrv_unref(bs);
    before = state_of(path);
    bs = open_ok(path, true, "file.driver=blkdebug,"
                 "file.inject-error.event=snapshot_header_update");
    ck_assert_int_lt(bdrv_snapshot_create(bs, &t, 0, NULL, &err), 0);
    ck_assert(strstr(err->message, "header"));
    g_clear_error(&err);
    bdrv_unref(bs);
    after = state_of(path);
    ck_assert_str_eq(before, after);
    check_after_fault(path, false, "event");
}
END_TEST

/* ---- COPIED flags when a tree is released ---- */


/* Every active L1 and L2 entry that holds a cluster of its own has COPIED
 * exactly when the cluster's refcount is 1 (or, !exact, at least when it
 * is 1: a crash may leave COPIED set on a cluster whose count is too
 * high, never missing on one whose count is right). */
static void assert_copied(BlockDriverState *bs, bool exact, const char *why)
{
    BDRVQcow2State *s = bs->opaque;
    g_autofree uint64_t *l2 = g_malloc(s->cluster_size);

    for (uint32_t i = 0; i < s->l1_size; i++) {
        uint64_t t = s->l1_table[i] & L1E_OFFSET_MASK;
        if (!t) {
            continue;
        }
        bool copied = s->l1_table[i] & QCOW_OFLAG_COPIED;
        bool one = refcount(bs, t) == 1;
        ck_assert_msg(exact ? copied == one : copied || !one,
                      "%s: L1 entry %u: COPIED %d, refcount %"
                      G_GUINT64_FORMAT, why, i, copied, refcount(bs, t));
        ck_assert_int_eq(bdrv_pread(bs->file, t, s->cluster_size, l2), 0);
        for (uint32_t j = 0; j < s->l2_size; j++) {
            uint64_t e = GUINT64_FROM_BE(l2[j]), h = e & L2E_OFFSET_MASK;
            if (!h) {
                continue;
            }
            bool c2 = e & QCOW_OFLAG_COPIED, one2 = refcount(bs, h) == 1;
            ck_assert_msg(exact ? c2 == one2 : c2 || !one2,
                          "%s: L2 entry %u/%u: COPIED %d, refcount %"
                          G_GUINT64_FORMAT, why, i, j, c2, refcount(bs, h));
        }
    }
}

/*
 * A snapshot that shares the active image's L2 tables at other L1
 * indices (legal qcow2, though neither QEMU nor we write it): deleting it
 * drops every shared cluster to one owner, and only the recomputation of
 * COPIED from the refcounts after the release (active L1 and active L2
 * entries) can set their flags; the preset before the release compares
 * same-index entries only.
 */
START_TEST(test_copied_shared_elsewhere)
{
    g_autofree char *path = tmp_path("swap.qcow2");
    BlockDriverState *bs;
    uint64_t sn_l1, swapped[2];

    /* 512-byte clusters: 64 entries per L2 table, two tables for 64 KiB */
    make_image(path, "64K", "512", "16");
    bs = open_ok(path, true, NULL);
    fill(bs, 0, 64 * KiB, 0x91);
    snap_create(bs, "s");
    {
        BDRVQcow2State *s = bs->opaque;
        ck_assert_uint_eq(s->l1_size, 2);
        sn_l1 = s->snapshots[0].l1_table_offset;
        swapped[0] = GUINT64_TO_BE(s->l1_table[1] & L1E_OFFSET_MASK);
        swapped[1] = GUINT64_TO_BE(s->l1_table[0] & L1E_OFFSET_MASK);
    }
    bdrv_unref(bs);
    poke(path, sn_l1, swapped, sizeof(swapped));
    bs = open_ok(path, true, NULL);
    assert_clean(bs);            /* the swap keeps every count right */
    assert_copied(bs, true, "after");
    snap_delete(bs, "s");
    assert_copied(bs, true, "after");     /* all back to one owner, COPIED set */
    assert_clean(bs);
    expect(bs, 0, 64 * KiB, 0x91);
    bdrv_unref(bs);
}
END_TEST

/*
 * Deleting the last snapshot, or cancelling a create, drops shared
 * clusters back to one owner.  A fault that kills the disk at each write
 * and flush of it ("always", like a crash there) must leave COPIED right
 * or set only where a leaked reference keeps the count above 1, never
 * missing where the count is 1 (which `check -r leaks` repairs, but a
 * plain check calls corruption): that is what setting COPIED before the
 * refcounts go down is for.
 */
static void run_copied_windows(bool cancel_create)
{
    g_autofree char *base = tmp_path("wbase.qcow2");
    g_autofree char *work = tmp_path("wwork.qcow2");
    BlockDriverState *bs;
    BlkdebugCounts c0, c1;
    uint64_t first, last;

    make_image(base, "256K", "512", "16");
    bs = open_ok(base, true, NULL);
    fill(bs, 0, 256 * KiB, 0xa1);
    if (!cancel_create) {
        snap_create(bs, "last");
        fill(bs, 0, 8 * KiB, 0xa2);        /* some clusters unshared */
    }
    bdrv_unref(bs);

    copy_file(base, work);
    bs = open_faulty(work, 0, true, false);
    ck_assert(blkdebug_get_counts(bdrv_get_file(bs), &c0));
    if (cancel_create) {
        BdrvSnapshotOp *o;
        bdrv_drained_begin(bs);
        o = check_create(bs, "gone");
        STEP_OK(bdrv_snapshot_op_do, o);
        STEP_OK(bdrv_snapshot_op_invalidate, o);
        ck_assert(blkdebug_get_counts(bdrv_get_file(bs), &c0));
        STEP_OK(bdrv_snapshot_op_cancel, o);
        bdrv_drained_end(bs);
        STEP_OK(bdrv_snapshot_op_clean, o);
    } else {
        snap_delete(bs, "last");
    }
    ck_assert(blkdebug_get_counts(bdrv_get_file(bs), &c1));
    assert_copied(bs, true, "after");
    bdrv_unref(bs);
    first = c0.writes + c0.flushes + 1;
    last = c1.writes + c1.flushes;
    ck_assert_uint_gt(last, first);

    for (uint64_t n = first; n <= last; n++) {
        g_autofree char *why = g_strdup_printf(
            "%s, disk dead from I/O %" G_GUINT64_FORMAT " of %"
            G_GUINT64_FORMAT, cancel_create ? "cancel create" : "delete",
            n, last);
        GError *err = NULL;

        copy_file(base, work);
        bs = open_faulty(work, n, false, false);
        if (cancel_create) {
            BdrvSnapshotOp *o;
            bdrv_drained_begin(bs);
            o = check_create(bs, "gone");
            STEP_OK(bdrv_snapshot_op_do, o);
            STEP_OK(bdrv_snapshot_op_invalidate, o);
            ck_assert_int_lt(bdrv_snapshot_op_cancel(o, &err), 0);
            bdrv_drained_end(bs);
            bdrv_snapshot_op_clean(o, NULL);
        } else {
            ck_assert_int_lt(bdrv_snapshot_delete(bs, NULL, "last", NULL,
                                                  &err), 0);
        }
        g_clear_error(&err);
        bdrv_unref(bs);
        bs = open_ok(work, false, NULL);
        assert_copied(bs, false, why);
        bdrv_unref(bs);
        check_after_fault(work, true, why);
    }
}

START_TEST(test_copied_windows)
{
    run_copied_windows(_i == 1);
}
END_TEST

/* ---- malformed tables ---- */


static uint64_t table_offset(const char *path)
{
    BlockDriverState *bs = open_ok(path, false, NULL);
    BDRVQcow2State *s = bs->opaque;
    uint64_t off = s->snapshots_offset;

    bdrv_unref(bs);
    return off;
}

START_TEST(test_bad_tables)
{
    g_autofree char *path = tmp_path("bad.qcow2");
    g_autofree char *copy = tmp_path("bad2.qcow2");
    uint64_t t, be;
    uint16_t be16;
    uint32_t be32;
    GError *err = NULL;
    BlockDriverState *bs;

    make_image(path, "4M", "65536", "16");
    bs = open_ok(path, true, NULL);
    fill(bs, 0, MiB, 0x81);
    snap_create(bs, "s1");
    snap_create(bs, "s2");
    bdrv_unref(bs);
    t = table_offset(path);

    /* second snapshot's L1 on top of the first's */
    copy_file(path, copy);
    {
        bs = open_ok(copy, false, NULL);
        BDRVQcow2State *s = bs->opaque;
        be = GUINT64_TO_BE(s->snapshots[0].l1_table_offset);
        bdrv_unref(bs);
    }
    poke(copy, t + qcow2_align_up(40 + 24 + 1 + 2, 8), &be, 8);
    ck_assert_ptr_null(open_img(copy, true, NULL, &err));
    ck_assert_msg(strstr(err->message, "overlaps another snapshot's L1"),
                  "%s", err->message);
    g_clear_error(&err);

    /* L1 copy past the end of the file: refused for writing; a read-only
     * open still reads the image, and refuses to load that snapshot */
    copy_file(path, copy);
    be = GUINT64_TO_BE(1ULL << 40);
    poke(copy, t, &be, 8);
    ck_assert_ptr_null(open_img(copy, true, NULL, &err));
    ck_assert_msg(strstr(err->message, "Snapshot 1 (s1): Snapshot L1 table "
                         "offset invalid"), "%s", err->message);
    g_clear_error(&err);
    bs = open_ok(copy, false, NULL);
    expect(bs, 0, MiB, 0x81);
    ck_assert_int_lt(bdrv_snapshot_load_tmp(bs, NULL, "s1", &err), 0);
    ck_assert(strstr(err->message, "Snapshot L1 table offset invalid"));
    g_clear_error(&err);
    bdrv_unref(bs);

    /* name length running past the end of the file */
    copy_file(path, copy);
    be16 = GUINT16_TO_BE(0xffff);
    poke(copy, t + qcow2_align_up(40 + 24 + 1 + 2, 8) + 14, &be16, 2);
    ck_assert_ptr_null(open_img(copy, false, NULL, &err));
    ck_assert_msg(strstr(err->message, "entry 1 extends past the end"), "%s",
                  err->message);
    g_clear_error(&err);

    /* too much extra data */
    copy_file(path, copy);
    be32 = GUINT32_TO_BE(2000);
    poke(copy, t + 36, &be32, 4);
    ck_assert_ptr_null(open_img(copy, false, NULL, &err));
    ck_assert_str_eq(err->message, "Too much extra metadata in snapshot "
                     "table entry 0\nYou can force-remove this extra "
                     "metadata with qemu-img check -r all");
    g_clear_error(&err);

    /* too many snapshots */
    copy_file(path, copy);
    be32 = GUINT32_TO_BE(65537);
    poke(copy, 60, &be32, 4);
    ck_assert_ptr_null(open_img(copy, false, NULL, &err));
    ck_assert_str_eq(err->message, "Snapshot table too large");
    g_clear_error(&err);

    /* the original still opens: nothing above was written back */
    bs = open_ok(path, true, NULL);
    assert_clean(bs);
    bdrv_unref(bs);
}
END_TEST

static Suite *faults_suite(void)
{
    Suite *s = suite_create("qcow2-snapshot-faults");

    add_case(s, "faults", test_faults, 6);
    add_case(s, "discard_faults", test_discard_faults, 2);
    add_case(s, "cancel_faults", test_cancel_faults, 6);
    add_case(s, "fault_event", test_fault_event, 0);
    add_case(s, "copied_shared_elsewhere", test_copied_shared_elsewhere, 0);
    add_case(s, "copied_windows", test_copied_windows, 2);
    add_case(s, "bad_tables", test_bad_tables, 0);
    return s;
}

int main(void)
{
    return snaptest_run(faults_suite());
}
