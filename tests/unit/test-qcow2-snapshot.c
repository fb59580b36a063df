/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Unit tests of qcow2 internal snapshots through include/block/snapshot.h:
 * create / list / find / delete / apply (content, refcounts and COPIED
 * flags), names and IDs, resizing apply, the phases (check, do,
 * invalidate, cancel, clean: several operations on a node, every wrong
 * order refused, check without side effects), read-only load, and a
 * seeded model test with small clusters (cache eviction inside the
 * walks).  Fault injection is in test-qcow2-snapshot-faults.c.
 */
/*
 * Unit tests of qcow2 internal snapshots through include/block/snapshot.h:
 * create / list / find / delete / apply (content, refcounts and COPIED
 * flags), names and IDs, resizing apply, the phases (check, do,
 * invalidate, cancel, clean: several operations on a node, every wrong
 * order refused, check without side effects), read-only load, a seeded model test with
 * small clusters (cache eviction inside the walks), and fault injection
 * through the blkdebug filter at every write and flush an operation does,
 * once and "always" (a disk that dies), checking that the image is left in
 * the old or the new state and checks clean.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "snaptest.h"

START_TEST(test_create_list)
{
    g_autofree char *path = tmp_path("a.qcow2");
    BlockDriverState *bs;
    BdrvSnapshotInfo *l;
    uint64_t l1e, e;
    int n;

    make_image(path, "64M", "65536", "16");
    bs = open_ok(path, true, NULL);
    fill(bs, 0, MiB, 0xaa);
    ck_assert_int_eq(bdrv_flush(bs), 0);
    e = l2_entry(bs, 0, &l1e);
    ck_assert(e & QCOW_OFLAG_COPIED);
    ck_assert(l1e & QCOW_OFLAG_COPIED);
    snap_create(bs, "s1");

    n = bdrv_snapshot_list(bs, &l, NULL);
    ck_assert_int_eq(n, 1);
    ck_assert_str_eq(l[0].id_str, "1");
    ck_assert_str_eq(l[0].name, "s1");
    ck_assert_uint_eq(l[0].disk_size, 64 * MiB);
    ck_assert_uint_eq(l[0].icount, BDRV_SNAPSHOT_NO_ICOUNT);
    ck_assert_uint_eq(l[0].vm_state_size, 0);
    ck_assert_uint_ne(l[0].date_sec, 0);
    bdrv_snapshot_list_free(l, n);

    /* shared now: refcount 2, COPIED off in the active tree */
    e = l2_entry(bs, 0, &l1e);
    ck_assert(!(e & QCOW_OFLAG_COPIED));
    ck_assert(!(l1e & QCOW_OFLAG_COPIED));
    ck_assert_uint_eq(refcount(bs, e & L2E_OFFSET_MASK), 2);
    ck_assert_uint_eq(refcount(bs, l1e & L1E_OFFSET_MASK), 2);
    assert_clean(bs);
    bdrv_unref(bs);

    bs = open_ok(path, false, NULL);
    {
        g_autofree char *names = names_of(bs);
        ck_assert_str_eq(names, "s1");
    }
    assert_clean(bs);
    bdrv_unref(bs);
}
END_TEST

START_TEST(test_cow_and_load_tmp)
{
    g_autofree char *path = tmp_path("b.qcow2");
    BlockDriverState *bs;
    uint64_t l1e, e0, e1, l1e1;
    GError *err = NULL;

    make_image(path, "64M", "65536", "16");
    bs = open_ok(path, true, NULL);
    fill(bs, 0, MiB, 0xaa);
    snap_create(bs, "s1");
    e0 = l2_entry(bs, 0, &l1e);
    fill(bs, 4 * KiB, 512, 0xbb);
    ck_assert_int_eq(bdrv_flush(bs), 0);
    /* the L2 table and the written cluster were copied */
    e1 = l2_entry(bs, 0, &l1e1);
    ck_assert(l1e1 & QCOW_OFLAG_COPIED);
    ck_assert_uint_ne(l1e1 & L1E_OFFSET_MASK, l1e & L1E_OFFSET_MASK);
    ck_assert(e1 & QCOW_OFLAG_COPIED);
    ck_assert_uint_ne(e1 & L2E_OFFSET_MASK, e0 & L2E_OFFSET_MASK);
    ck_assert_uint_eq(refcount(bs, e0 & L2E_OFFSET_MASK), 1);
    ck_assert_uint_eq(refcount(bs, l1e & L1E_OFFSET_MASK), 1);
    expect(bs, 0, 4 * KiB, 0xaa);
    expect(bs, 4 * KiB, 512, 0xbb);
    assert_clean(bs);
    bdrv_unref(bs);

    /* the snapshot still reads the old content, by name or by id */
    bs = open_ok(path, false, "snapshot.name=s1");
    expect(bs, 0, MiB, 0xaa);
    bdrv_unref(bs);
    bs = open_ok(path, false, "snapshot.id=1");
    expect(bs, 0, MiB, 0xaa);
    ck_assert(!bdrv_reopen_set_read_only(bs, false, NULL));
    bdrv_unref(bs);
    bs = open_img(path, false, "snapshot.name=nope", &err);
    ck_assert_ptr_null(bs);
    ck_assert_str_eq(err->message, "Failed to load snapshot: Can't find "
                     "snapshot");
    g_clear_error(&err);
    bs = open_img(path, true, "snapshot.name=s1", &err);
    ck_assert_ptr_null(bs);
    g_clear_error(&err);

    bs = open_ok(path, false, NULL);
    ck_assert_int_eq(bdrv_snapshot_load_tmp_by_id_or_name(bs, "1", NULL), 0);
    expect(bs, 4 * KiB, 512, 0xaa);
    bdrv_unref(bs);
}
END_TEST

START_TEST(test_goto_content)
{
    g_autofree char *path = tmp_path("c.qcow2");
    BlockDriverState *bs;

    make_image(path, "16M", "65536", "16");
    bs = open_ok(path, true, NULL);
    fill(bs, 0, 3 * MiB, 0x0a);
    snap_create(bs, "s1");
    fill(bs, MiB, 3 * MiB, 0x0b);
    snap_create(bs, "s2");
    fill(bs, 0, 512, 0x0c);
    bdrv_pwrite_zeroes(bs, 2 * MiB, MiB, 0);
    assert_clean(bs);

    snap_goto(bs, "s1");
    expect(bs, 0, 3 * MiB, 0x0a);
    expect(bs, 3 * MiB, MiB, 0);
    assert_clean(bs);
    fill(bs, 0, 8 * KiB, 0x0d);
    snap_goto(bs, "s2");
    expect(bs, 0, MiB, 0x0a);
    expect(bs, MiB, 3 * MiB, 0x0b);
    assert_clean(bs);
    snap_goto(bs, "1");          /* by ID */
    expect(bs, 0, 3 * MiB, 0x0a);
    assert_clean(bs);
    snap_delete(bs, "s1");
    snap_delete(bs, "s2");
    expect(bs, 0, 3 * MiB, 0x0a);
    assert_clean(bs);
    bdrv_unref(bs);
    bs = open_ok(path, false, NULL);
    expect(bs, 0, 3 * MiB, 0x0a);
    assert_clean(bs);
    bdrv_unref(bs);
}
END_TEST

START_TEST(test_delete_frees_and_restores_copied)
{
    g_autofree char *path = tmp_path("d.qcow2");
    BlockDriverState *bs;
    uint64_t l1e, e, old_host;

    make_image(path, "8M", "65536", "16");
    bs = open_ok(path, true, NULL);
    fill(bs, 0, 2 * MiB, 0x11);
    snap_create(bs, "keep");
    snap_create(bs, "gone");
    e = l2_entry(bs, 0, &l1e);
    ck_assert_uint_eq(refcount(bs, e & L2E_OFFSET_MASK), 3);
    snap_delete(bs, "gone");
    ck_assert_uint_eq(refcount(bs, e & L2E_OFFSET_MASK), 2);
    e = l2_entry(bs, 0, &l1e);
    ck_assert(!(e & QCOW_OFLAG_COPIED));
    snap_delete(bs, "keep");
    /* nothing shares the clusters any more: COPIED is back */
    e = l2_entry(bs, 0, &l1e);
    ck_assert(e & QCOW_OFLAG_COPIED);
    ck_assert(l1e & QCOW_OFLAG_COPIED);
    ck_assert_uint_eq(refcount(bs, e & L2E_OFFSET_MASK), 1);
    assert_clean(bs);

    /* overwriting everything after a snapshot, then deleting it, frees
     * the old clusters */
    snap_create(bs, "s");
    old_host = l2_entry(bs, 0, &l1e) & L2E_OFFSET_MASK;
    fill(bs, 0, 2 * MiB, 0x22);
    ck_assert_int_eq(bdrv_flush(bs), 0);   /* applies deferred frees */
    ck_assert_uint_eq(refcount(bs, old_host), 1);
    snap_delete(bs, "s");
    ck_assert_uint_eq(refcount(bs, old_host), 0);
    assert_clean(bs);
    expect(bs, 0, 2 * MiB, 0x22);
    bdrv_unref(bs);
}
END_TEST

START_TEST(test_names_and_ids)
{
    g_autofree char *path = tmp_path("e.qcow2");
    g_autofree char *long_name = g_strnfill(256, 'x');
    BlockDriverState *bs;
    BdrvSnapshotInfo t, created = { 0 };
    GError *err = NULL;

    make_image(path, "1M", "65536", "16");
    bs = open_ok(path, true, NULL);
    t = tmpl_of("");
    ck_assert_int_eq(bdrv_snapshot_create(bs, &t, 0, NULL, &err), -EINVAL);
    ck_assert_str_eq(err->message, "Name is empty");
    g_clear_error(&err);
    t = tmpl_of(long_name);
    ck_assert_int_eq(bdrv_snapshot_create(bs, &t, 0, NULL, &err), -EINVAL);
    ck_assert(strstr(err->message, "too long"));
    g_clear_error(&err);
    long_name[255] = 0;
    snap_create(bs, long_name);
    snap_create(bs, "a");
    t = tmpl_of("a");
    ck_assert_int_eq(bdrv_snapshot_create(bs, &t, 0, NULL, &err), -EEXIST);
    ck_assert_str_eq(err->message, "Snapshot with name 'a' already exists");
    g_clear_error(&err);
    ck_assert_int_eq(bdrv_snapshot_create(bs, &t, BDRV_SNAPSHOT_ALLOW_DUPLICATE,
                                          &created, NULL), 0);
    ck_assert_str_eq(created.id_str, "3");
    bdrv_snapshot_info_clear(&created);
    /* deleting the highest ID hands it out again, like QEMU */
    ck_assert_int_eq(bdrv_snapshot_delete(bs, "3", NULL, NULL, NULL), 0);
    t = tmpl_of("b");
    ck_assert_int_eq(bdrv_snapshot_create(bs, &t, 0, &created, NULL), 0);
    ck_assert_str_eq(created.id_str, "3");
    bdrv_snapshot_info_clear(&created);
    ck_assert_int_eq(bdrv_snapshot_delete(bs, "1", NULL, NULL, NULL), 0);
    t = tmpl_of("c");
    ck_assert_int_eq(bdrv_snapshot_create(bs, &t, 0, &created, NULL), 0);
    ck_assert_str_eq(created.id_str, "4");
    bdrv_snapshot_info_clear(&created);
    {
        g_autofree char *names = names_of(bs);
        ck_assert_str_eq(names, "a,b,c");
    }
    /* not found */
    ck_assert_int_eq(bdrv_snapshot_delete(bs, "2", "b", NULL, &err), -ENOENT);
    ck_assert_str_eq(err->message,
                     "Snapshot with id '2' and name 'b' does not exist");
    g_clear_error(&err);
    ck_assert_int_eq(bdrv_snapshot_goto(bs, "zz", &err), -ENOENT);
    g_clear_error(&err);
    assert_clean(bs);
    bdrv_unref(bs);

    /* read-only nodes refuse changes */
    bs = open_ok(path, false, NULL);
    t = tmpl_of("d");
    ck_assert_int_eq(bdrv_snapshot_create(bs, &t, 0, NULL, &err), -EACCES);
    g_clear_error(&err);
    bdrv_unref(bs);
}
END_TEST

START_TEST(test_lookup_semantics)
{
    g_autofree char *path = tmp_path("f.qcow2");
    BlockDriverState *bs;
    BdrvSnapshotInfo sn = { 0 };

    make_image(path, "1M", "65536", "16");
    bs = open_ok(path, true, NULL);
    fill(bs, 0, 4 * KiB, 0xa0);
    snap_create(bs, "A");             /* id 1 */
    fill(bs, 0, 4 * KiB, 0xb0);
    snap_create(bs, "1");             /* id 2, named like the other's id */
    fill(bs, 0, 4 * KiB, 0xc0);
    /* goto: ID first */
    snap_goto(bs, "1");
    expect(bs, 0, 4 * KiB, 0xa0);
    /* find: name only */
    ck_assert(bdrv_snapshot_find(bs, "1", &sn, NULL));
    ck_assert_str_eq(sn.id_str, "2");
    bdrv_snapshot_info_clear(&sn);
    ck_assert(!bdrv_snapshot_find(bs, "2", &sn, NULL));
    ck_assert(bdrv_snapshot_find_by_id_and_name(bs, "1", NULL, &sn, NULL));
    ck_assert_str_eq(sn.name, "A");
    bdrv_snapshot_info_clear(&sn);
    ck_assert(!bdrv_snapshot_find_by_id_and_name(bs, "1", "1", &sn, NULL));
    ck_assert(!bdrv_snapshot_find_by_id_and_name(bs, NULL, NULL, &sn, NULL));
    assert_clean(bs);
    bdrv_unref(bs);
}
END_TEST

START_TEST(test_goto_resizes)
{
    g_autofree char *path = tmp_path("g.qcow2");
    BlockDriverState *bs;

    make_image(path, "1M", "65536", "16");
    bs = open_ok(path, true, NULL);
    fill(bs, 0, MiB, 0x31);
    snap_create(bs, "small");
    ck_assert_int_eq(bdrv_truncate(bs, 3 * 1024 * MiB, NULL), 0);
    fill(bs, 3000 * (int64_t)MiB, 64 * KiB, 0x32);
    snap_create(bs, "big");
    snap_goto(bs, "small");
    ck_assert_int_eq(bdrv_getlength(bs), MiB);
    expect(bs, 0, MiB, 0x31);
    assert_clean(bs);
    snap_goto(bs, "big");
    ck_assert_int_eq(bdrv_getlength(bs), 3 * 1024 * (int64_t)MiB);
    expect(bs, 3000 * (int64_t)MiB, 64 * KiB, 0x32);
    expect(bs, 0, MiB, 0x31);
    assert_clean(bs);
    snap_goto(bs, "small");
    bdrv_unref(bs);
    bs = open_ok(path, false, NULL);
    ck_assert_int_eq(bdrv_getlength(bs), MiB);
    assert_clean(bs);
    bdrv_unref(bs);
}
END_TEST

/* ---- the phases driven by hand ---- */


START_TEST(test_split_steps)
{
    g_autofree char *path = tmp_path("h.qcow2");
    BlockDriverState *bs;
    BdrvSnapshotOp *a, *b, *d, *g;
    BdrvSnapshotInfo t;
    GError *err = NULL;

    make_image(path, "4M", "65536", "16");
    bs = open_ok(path, true, NULL);
    fill(bs, 0, 2 * MiB, 0x41);
    snap_create(bs, "base");

    /* two creates: the second check sees the first (duplicate, next ID);
     * done, then cancelled newest first: nothing changes */
    a = check_create(bs, "a");
    ck_assert_str_eq(bdrv_snapshot_op_info(a)->id_str, "2");
    t = tmpl_of("a");
    ck_assert_ptr_null(bdrv_snapshot_create_check(bs, &t, 0, &err));
    ck_assert_str_eq(err->message, "Snapshot with name 'a' already exists");
    g_clear_error(&err);
    b = check_create(bs, "b");
    ck_assert_str_eq(bdrv_snapshot_op_info(b)->id_str, "3");
    g = bdrv_snapshot_goto_check(bs, NULL, "base", &err);
    ck_assert_ptr_null(g);
    ck_assert_msg(strstr(err->message, "an apply must be the only"), "%s",
                  err->message);
    g_clear_error(&err);
    bdrv_drained_begin(bs);
    STEP_OK(bdrv_snapshot_op_do, a);
    STEP_OK(bdrv_snapshot_op_do, b);
    {
        g_autofree char *names = names_of(bs);
        ck_assert_str_eq(names, "base");     /* nothing visible yet */
    }
    STEP_OK(bdrv_snapshot_op_cancel, b);
    STEP_OK(bdrv_snapshot_op_cancel, a);
    bdrv_drained_end(bs);
    STEP_OK(bdrv_snapshot_op_clean, b);
    STEP_OK(bdrv_snapshot_op_clean, a);
    assert_clean(bs);

    /* done and invalidated in order, cleaned oldest first */
    a = check_create(bs, "a");
    b = check_create(bs, "b");
    bdrv_drained_begin(bs);
    STEP_OK(bdrv_snapshot_op_do, a);
    STEP_OK(bdrv_snapshot_op_do, b);
    STEP_OK(bdrv_snapshot_op_invalidate, a);
    STEP_OK(bdrv_snapshot_op_invalidate, b);
    bdrv_drained_end(bs);
    STEP_OK(bdrv_snapshot_op_clean, a);
    STEP_OK(bdrv_snapshot_op_clean, b);
    {
        g_autofree char *names = names_of(bs);
        ck_assert_str_eq(names, "base,a,b");
    }
    assert_clean(bs);

    /* a delete and a create, invalidated, then cancelled newest first
     * (each cancel writes its header back first) */
    fill(bs, 0, 64 * KiB, 0x42);
    d = check_delete(bs, "a");
    b = check_create(bs, "c");
    bdrv_drained_begin(bs);
    STEP_OK(bdrv_snapshot_op_do, d);
    STEP_OK(bdrv_snapshot_op_do, b);
    STEP_OK(bdrv_snapshot_op_invalidate, d);
    STEP_OK(bdrv_snapshot_op_invalidate, b);
    {
        g_autofree char *names = names_of(bs);
        ck_assert_str_eq(names, "base,b,c");
    }
    STEP_OK(bdrv_snapshot_op_cancel, b);
    STEP_OK(bdrv_snapshot_op_cancel, d);
    bdrv_drained_end(bs);
    STEP_OK(bdrv_snapshot_op_clean, b);
    STEP_OK(bdrv_snapshot_op_clean, d);
    {
        g_autofree char *names = names_of(bs);
        ck_assert_str_eq(names, "base,a,b");
    }
    assert_clean(bs);

    /* a create and the delete of the same snapshot in one go: the delete
     * is checked against the create that is only checked */
    a = check_create(bs, "tmp");
    d = check_delete(bs, "tmp");
    bdrv_drained_begin(bs);
    STEP_OK(bdrv_snapshot_op_do, a);
    STEP_OK(bdrv_snapshot_op_do, d);
    STEP_OK(bdrv_snapshot_op_invalidate, a);
    STEP_OK(bdrv_snapshot_op_invalidate, d);
    bdrv_drained_end(bs);
    STEP_OK(bdrv_snapshot_op_clean, a);
    STEP_OK(bdrv_snapshot_op_clean, d);
    {
        g_autofree char *names = names_of(bs);
        ck_assert_str_eq(names, "base,a,b");
    }
    assert_clean(bs);

    /* an apply, invalidated then cancelled; alone on its node */
    g = bdrv_snapshot_goto_check(bs, NULL, "base", &err);
    ck_assert_msg(g, "%s", err ? err->message : "");
    t = tmpl_of("x");
    ck_assert_ptr_null(bdrv_snapshot_create_check(bs, &t, 0, &err));
    ck_assert_msg(strstr(err->message, "an apply must be the only"), "%s",
                  err->message);
    g_clear_error(&err);
    bdrv_drained_begin(bs);
    STEP_OK(bdrv_snapshot_op_do, g);
    STEP_OK(bdrv_snapshot_op_invalidate, g);
    expect(bs, 0, 64 * KiB, 0x41);
    STEP_OK(bdrv_snapshot_op_cancel, g);
    bdrv_drained_end(bs);
    STEP_OK(bdrv_snapshot_op_clean, g);
    expect(bs, 0, 64 * KiB, 0x42);
    assert_clean(bs);
    bdrv_unref(bs);

    /* an op holds a reference to its node: it outlives our reference */
    bs = open_ok(path, true, NULL);
    a = check_create(bs, "left");
    bdrv_unref(bs);
    bdrv_drained_begin(bdrv_snapshot_op_bs(a));
    STEP_OK(bdrv_snapshot_op_do, a);
    STEP_OK(bdrv_snapshot_op_cancel, a);
    bdrv_drained_end(bdrv_snapshot_op_bs(a));
    STEP_OK(bdrv_snapshot_op_clean, a);
    bs = open_ok(path, false, NULL);
    {
        g_autofree char *names = names_of(bs);
        ck_assert_str_eq(names, "base,a,b");
    }
    assert_clean(bs);
    bdrv_unref(bs);
}
END_TEST

/* What the image holds, read with *bs closed; *bs is reopened. */
static char *state_reopen(BlockDriverState **bs, const char *path)
{
    char *st;

    bdrv_unref(*bs);
    st = state_of(path);
    *bs = open_ok(path, true, NULL);
    return st;
}

/* The image, closed and read again, has not changed, and checks clean;
 * *bs is reopened (one open at a time: images are locked like QEMU's). */
static void assert_unchanged(BlockDriverState **bs, const char *path,
                             const char *before, const char *what)
{
    g_autofree char *now = NULL;

    bdrv_unref(*bs);
    now = state_of(path);
    ck_assert_msg(!strcmp(now, before), "%s changed the image:\n%s\n%s",
                  what, before, now);
    *bs = open_ok(path, true, NULL);
    assert_clean(*bs);
}

/*
 * Every wrong order on one node is refused, and the image is as before:
 * the reproduction from the issue (two creates done, cancelled oldest
 * first) first.
 */
START_TEST(test_wrong_orders)
{
    g_autofree char *path = tmp_path("order.qcow2");
    g_autofree char *before = NULL;
    BlockDriverState *bs;
    BdrvSnapshotOp *a, *b, *g;
    GError *err = NULL;

    make_image(path, "4M", "65536", "16");
    bs = open_ok(path, true, NULL);
    fill(bs, 0, 2 * MiB, 0x51);
    snap_create(bs, "base");
    fill(bs, MiB, 64 * KiB, 0x52);
    before = state_reopen(&bs, path);

    /* the issue: two creates done, cancelled oldest first */
    a = check_create(bs, "a");
    b = check_create(bs, "b");
    bdrv_drained_begin(bs);
    STEP_OK(bdrv_snapshot_op_do, a);
    STEP_OK(bdrv_snapshot_op_do, b);
    STEP_REFUSED(bdrv_snapshot_op_cancel, a, "must be cancelled first");
    /* a step twice, a phase skipped, a done op cleaned */
    STEP_REFUSED(bdrv_snapshot_op_do, b, "it is done");
    STEP_REFUSED(bdrv_snapshot_op_clean, b, "invalidate or cancel it first");
    /* invalidated out of order */
    STEP_REFUSED(bdrv_snapshot_op_invalidate, b, "is done (operations on a "
                 "node are invalidated in the order");
    STEP_OK(bdrv_snapshot_op_invalidate, a);
    STEP_REFUSED(bdrv_snapshot_op_invalidate, a, "it is invalidated");
    STEP_REFUSED(bdrv_snapshot_op_cancel, a, "must be cancelled first");
    STEP_OK(bdrv_snapshot_op_invalidate, b);
    /* cleaned newest first */
    STEP_REFUSED(bdrv_snapshot_op_clean, b, "cleaned oldest first");
    /* the right order puts it all back */
    STEP_OK(bdrv_snapshot_op_cancel, b);
    STEP_REFUSED(bdrv_snapshot_op_cancel, b, "it is cancelled");
    STEP_REFUSED(bdrv_snapshot_op_invalidate, b, "it is cancelled");
    STEP_OK(bdrv_snapshot_op_cancel, a);
    bdrv_drained_end(bs);
    STEP_OK(bdrv_snapshot_op_clean, a);
    STEP_OK(bdrv_snapshot_op_clean, b);
    assert_unchanged(&bs, path, before, "cancelled creates");

    /* phases before do; done out of check order; cancel of a checked op */
    a = check_create(bs, "a");
    b = check_delete(bs, "base");
    bdrv_drained_begin(bs);
    STEP_REFUSED(bdrv_snapshot_op_invalidate, a, "it is checked");
    STEP_REFUSED(bdrv_snapshot_op_cancel, a, "it is checked");
    STEP_REFUSED(bdrv_snapshot_op_do, b, "checked before it, is checked");
    STEP_OK(bdrv_snapshot_op_do, a);
    bdrv_drained_end(bs);
    /* not drained, or drained by nobody: do, invalidate, cancel refuse */
    STEP_REFUSED(bdrv_snapshot_op_do, b, "does not hold the node drained");
    STEP_REFUSED(bdrv_snapshot_op_invalidate, a,
                 "does not hold the node drained");
    STEP_REFUSED(bdrv_snapshot_op_cancel, a, "does not hold the node drained");
    bdrv_drained_begin(bs);
    STEP_OK(bdrv_snapshot_op_cancel, a);
    bdrv_drained_end(bs);
    /* b was checked against a, which will never happen */
    STEP_OK(bdrv_snapshot_op_clean, a);
    bdrv_drained_begin(bs);
    STEP_REFUSED(bdrv_snapshot_op_do, b, "was abandoned");
    bdrv_drained_end(bs);
    STEP_OK(bdrv_snapshot_op_clean, b);
    assert_unchanged(&bs, path, before, "refused phases");

    /* an abandoned check makes the ones after it stale */
    a = check_create(bs, "x");
    b = check_delete(bs, "x");
    STEP_OK(bdrv_snapshot_op_clean, a);
    bdrv_drained_begin(bs);
    STEP_REFUSED(bdrv_snapshot_op_do, b, "was abandoned");
    bdrv_drained_end(bs);
    STEP_OK(bdrv_snapshot_op_clean, b);

    /* an apply is alone, both ways; a failed do leaves only clean */
    g = bdrv_snapshot_goto_check(bs, NULL, "base", &err);
    ck_assert_msg(g, "%s", err ? err->message : "");
    ck_assert_ptr_null(bdrv_snapshot_delete_check(bs, NULL, "base", &err));
    ck_assert_msg(strstr(err->message, "an apply must be the only"), "%s",
                  err->message);
    g_clear_error(&err);
    bdrv_drained_begin(bs);
    STEP_OK(bdrv_snapshot_op_do, g);
    STEP_REFUSED(bdrv_snapshot_op_do, g, "it is done");
    STEP_OK(bdrv_snapshot_op_cancel, g);
    bdrv_drained_end(bs);
    STEP_OK(bdrv_snapshot_op_clean, g);
    assert_unchanged(&bs, path, before, "an apply cancelled");
    bdrv_unref(bs);
}
END_TEST

/*
 * Below the generic layer the order is a programming error, asserted:
 * the qcow2 driver's invalidate of an operation that was only checked
 * must abort (the generic layer never lets it happen; a driver called
 * directly must not write a header for a table it never wrote).
 */
START_TEST(test_driver_asserts_order)
{
    g_autofree char *path = tmp_path("assert.qcow2");
    BlockDriverState *bs;
    BdrvSnapshotInfo t = tmpl_of("x"), info = { 0 };
    void *drv_op = NULL;

    make_image(path, "1M", "65536", "16");
    bs = open_ok(path, true, NULL);
    ck_assert_int_eq(qcow2_snapshot_create_check(bs, &t, 0, &info, &drv_op,
                                                 NULL), 0);
    bdrv_snapshot_info_clear(&info);
    qcow2_snapshot_invalidate(bs, drv_op, NULL);     /* aborts here */
    ck_abort_msg("the driver accepted invalidate before do");
}
END_TEST

/* Two nodes: the rules are per node, the drain is per node. */
START_TEST(test_wrong_orders_two_nodes)
{
    g_autofree char *p1 = tmp_path("n1.qcow2");
    g_autofree char *p2 = tmp_path("n2.qcow2");
    g_autofree char *before1 = NULL, *before2 = NULL;
    BlockDriverState *b1, *b2;
    BdrvSnapshotOp *a1, *c1, *a2, *g2;

    make_image(p1, "4M", "65536", "16");
    make_image(p2, "4M", "4096", "16");
    b1 = open_ok(p1, true, NULL);
    b2 = open_ok(p2, true, NULL);
    fill(b1, 0, MiB, 0x61);
    fill(b2, 0, MiB, 0x62);
    snap_create(b2, "s");
    fill(b2, 0, 4 * KiB, 0x63);
    before1 = state_reopen(&b1, p1);
    before2 = state_reopen(&b2, p2);

    a1 = check_create(b1, "t");
    c1 = check_create(b1, "u");
    a2 = check_create(b2, "t");        /* same name on another node: fine */
    bdrv_drained_begin(b1);
    /* node 1's drain is not node 2's */
    STEP_REFUSED(bdrv_snapshot_op_do, a2, "does not hold the node drained");
    STEP_OK(bdrv_snapshot_op_do, a1);
    bdrv_drained_begin(b2);
    STEP_OK(bdrv_snapshot_op_do, a2);
    STEP_OK(bdrv_snapshot_op_do, c1);
    /* an operation on another node does not order these ... */
    STEP_OK(bdrv_snapshot_op_invalidate, a2);
    STEP_OK(bdrv_snapshot_op_invalidate, a1);
    /* ... but each node keeps its own order */
    STEP_REFUSED(bdrv_snapshot_op_cancel, a1, "must be cancelled first");
    STEP_OK(bdrv_snapshot_op_cancel, a2);
    STEP_OK(bdrv_snapshot_op_cancel, c1);
    STEP_OK(bdrv_snapshot_op_cancel, a1);
    bdrv_drained_end(b2);
    bdrv_drained_end(b1);
    STEP_OK(bdrv_snapshot_op_clean, a1);
    STEP_OK(bdrv_snapshot_op_clean, c1);
    STEP_OK(bdrv_snapshot_op_clean, a2);
    assert_unchanged(&b1, p1, before1, "node 1");
    assert_unchanged(&b2, p2, before2, "node 2");

    /* an apply on node 2 does not make node 1 wait */
    g2 = bdrv_snapshot_goto_check(b2, NULL, "s", NULL);
    ck_assert_ptr_nonnull(g2);
    a1 = check_create(b1, "t");
    bdrv_drained_begin(b1);
    bdrv_drained_begin(b2);
    STEP_OK(bdrv_snapshot_op_do, g2);
    STEP_OK(bdrv_snapshot_op_do, a1);
    STEP_OK(bdrv_snapshot_op_invalidate, a1);
    STEP_OK(bdrv_snapshot_op_cancel, g2);
    STEP_OK(bdrv_snapshot_op_cancel, a1);
    bdrv_drained_end(b2);
    bdrv_drained_end(b1);
    STEP_OK(bdrv_snapshot_op_clean, g2);
    STEP_OK(bdrv_snapshot_op_clean, a1);
    assert_unchanged(&b1, p1, before1, "node 1");
    assert_unchanged(&b2, p2, before2, "node 2");
    bdrv_unref(b1);
    bdrv_unref(b2);
}
END_TEST

/* check writes nothing, also when it refuses, and validates what do
 * would otherwise find out by writing */
START_TEST(test_check_no_side_effects)
{
    g_autofree char *path = tmp_path("chk.qcow2");
    g_autofree char *before = NULL, *file_before = NULL, *file_after = NULL;
    BlockDriverState *bs;
    BdrvSnapshotOp *op[3];
    BdrvSnapshotInfo t;
    GError *err = NULL;
    gsize len;

    make_image(path, "4M", "65536", "2");     /* refcounts up to 3 */
    bs = open_ok(path, true, NULL);
    fill(bs, 0, MiB, 0x71);
    snap_create(bs, "s1");                     /* data clusters at 2 */
    before = state_reopen(&bs, path);
    ck_assert(g_file_get_contents(path, &file_before, &len, NULL));

    op[0] = check_create(bs, "n1");
    op[1] = check_delete(bs, "s1");
    op[2] = bdrv_snapshot_delete_check(bs, NULL, "s1", &err);  /* pending */
    ck_assert_ptr_null(op[2]);
    ck_assert_str_eq(err->message, "Snapshot with name 's1' does not exist");
    g_clear_error(&err);
    t = tmpl_of("n1");
    ck_assert_ptr_null(bdrv_snapshot_create_check(bs, &t, 0, &err));
    g_clear_error(&err);
    /* refcount width: n1 takes them to 3, a fourth owner does not fit */
    t = tmpl_of("n2");
    ck_assert_ptr_null(bdrv_snapshot_create_check(bs, &t, 0, &err));
    ck_assert_msg(strstr(err->message, "refcount_bits=2"), "%s",
                  err->message);
    g_clear_error(&err);
    STEP_OK(bdrv_snapshot_op_clean, op[1]);
    STEP_OK(bdrv_snapshot_op_clean, op[0]);
    ck_assert(g_file_get_contents(path, &file_after, &len, NULL));
    ck_assert(memcmp(file_before, file_after, len) == 0);
    assert_unchanged(&bs, path, before, "checks");
    bdrv_unref(bs);
}
END_TEST

START_TEST(test_refcount_bits_1)
{
    g_autofree char *path = tmp_path("i.qcow2");
    BlockDriverState *bs;
    BdrvSnapshotInfo t = tmpl_of("s");
    GError *err = NULL;

    make_image(path, "4M", "65536", "1");
    bs = open_ok(path, true, NULL);
    fill(bs, 0, MiB, 0x51);
    ck_assert_int_eq(bdrv_snapshot_create(bs, &t, 0, NULL, &err), -ERANGE);
    ck_assert(strstr(err->message, "refcount_bits=1"));
    g_clear_error(&err);
    {
        g_autofree char *names = names_of(bs);
        ck_assert_str_eq(names, "");
    }
    expect(bs, 0, MiB, 0x51);
    assert_clean(bs);          /* QEMU leaks the L1 copy here; we do not */
    bdrv_unref(bs);
}
END_TEST

/* ---- a seeded model: writes, creates, deletes and applies ---- */

typedef struct ModelSnap {
    char *name;
    uint8_t *data;
    int64_t size;
} ModelSnap;

static void model_verify(BlockDriverState *bs, const uint8_t *data,
                         int64_t size)
{
    uint8_t *buf = g_malloc(size);

    ck_assert_int_eq(bdrv_getlength(bs), size);
    ck_assert_int_eq(bdrv_pread(bs, 0, size, buf), 0);
    ck_assert(memcmp(buf, data, size) == 0);
    g_free(buf);
}

static void run_model(const char *cs, const char *rb, int64_t size,
                      unsigned seed, int nops)
{
    g_autofree char *path = tmp_path("model.qcow2");
    g_autofree char *sz = g_strdup_printf("%" G_GINT64_FORMAT, size);
    GRand *r = g_rand_new_with_seed(seed);
    GPtrArray *snaps = g_ptr_array_new();
    uint8_t *active = g_malloc0(size);
    int64_t cur_size = size;
    BlockDriverState *bs;
    int counter = 0, n_create = 0, n_delete = 0, n_goto = 0;

    make_image(path, sz, cs, rb);
    bs = open_ok(path, true, NULL);
    for (int op = 0; op < nops; op++) {
        int kind = g_rand_int_range(r, 0, 100);
        if (kind < 50) {
            int64_t len = g_rand_int_range(r, 1, 3 * 64 * KiB);
            int64_t off;
            int byte = g_rand_int_range(r, 1, 256);
            len = MIN(len, cur_size);
            off = g_rand_int_range(r, 0, (gint32)(cur_size - len + 1));
            if (kind < 8) {
                ck_assert_int_eq(bdrv_pwrite_zeroes(bs, off, len,
                                 kind < 4 ? BDRV_REQ_MAY_UNMAP : 0), 0);
                memset(active + off, 0, len);
            } else {
                fill(bs, off, len, byte);
                memset(active + off, byte, len);
            }
        } else if ((kind < 70 && snaps->len < 8) || snaps->len == 0) {
            ModelSnap *m = g_new0(ModelSnap, 1);
            m->name = g_strdup_printf("m%d", counter++);
            m->data = g_memdup2(active, cur_size);
            m->size = cur_size;
            snap_create(bs, m->name);
            g_ptr_array_add(snaps, m);
            n_create++;
        } else if (kind < 85) {
            guint i = g_rand_int_range(r, 0, snaps->len);
            ModelSnap *m = g_ptr_array_index(snaps, i);
            snap_delete(bs, m->name);
            g_ptr_array_remove_index(snaps, i);
            n_delete++;
            g_free(m->name);
            g_free(m->data);
            g_free(m);
        } else {
            ModelSnap *m = g_ptr_array_index(snaps,
                               g_rand_int_range(r, 0, snaps->len));
            snap_goto(bs, m->name);
            memcpy(active, m->data, m->size);
            cur_size = m->size;
            n_goto++;
        }
        if (op % 5 == 4 || op == nops - 1) {
            model_verify(bs, active, cur_size);
            assert_clean(bs);
        }
    }
    bdrv_unref(bs);
    /* the model exercised what it claims to: each kind many times, and
     * the image ends with snapshots to read back */
    ck_assert_msg(n_create >= nops / 10 && n_delete >= nops / 20 &&
                  n_goto >= nops / 20 && snaps->len > 0,
                  "seed %u: %d creates, %d deletes, %d applies, %u left",
                  seed, n_create, n_delete, n_goto, snaps->len);
    /* every snapshot reads back as the model says */
    for (guint i = 0; i < snaps->len; i++) {
        ModelSnap *m = g_ptr_array_index(snaps, i);
        g_autofree char *o = g_strdup_printf("snapshot.name=%s", m->name);
        bs = open_ok(path, false, o);
        model_verify(bs, m->data, m->size);
        bdrv_unref(bs);
        g_free(m->name);
        g_free(m->data);
        g_free(m);
    }
    bs = open_ok(path, false, NULL);
    model_verify(bs, active, cur_size);
    assert_clean(bs);
    bdrv_unref(bs);
    g_ptr_array_free(snaps, TRUE);
    g_free(active);
    g_rand_free(r);
    unlink(path);
}

START_TEST(test_model)
{
    /* 512-byte clusters: 2 MiB spans 64 L2 tables and the minimum caches
     * hold 16, so every walk evicts dirty tables as it goes */
    static const struct { const char *cs, *rb; int64_t size; } cfg[] = {
        { "512", "16", 2 * MiB },
        { "4096", "64", 4 * MiB },
        { "65536", "8", 8 * MiB },
    };

    run_model(cfg[_i].cs, cfg[_i].rb, cfg[_i].size, 77 + _i, 120);
}
END_TEST

static Suite *snapshot_suite(void)
{
    Suite *s = suite_create("qcow2-snapshot");

    add_case(s, "create_list", test_create_list, 0);
    add_case(s, "cow_and_load_tmp", test_cow_and_load_tmp, 0);
    add_case(s, "goto_content", test_goto_content, 0);
    add_case(s, "delete_frees", test_delete_frees_and_restores_copied, 0);
    add_case(s, "names_and_ids", test_names_and_ids, 0);
    add_case(s, "lookup_semantics", test_lookup_semantics, 0);
    add_case(s, "goto_resizes", test_goto_resizes, 0);
    add_case(s, "split_steps", test_split_steps, 0);
    add_case(s, "wrong_orders", test_wrong_orders, 0);
    add_case(s, "wrong_orders_two_nodes", test_wrong_orders_two_nodes, 0);
    add_case(s, "check_no_side_effects", test_check_no_side_effects, 0);
    {
        TCase *tc = tcase_create("driver_asserts_order");
        tcase_add_test_raise_signal(tc, test_driver_asserts_order, SIGABRT);
        suite_add_tcase(s, tc);
    }
    add_case(s, "refcount_bits_1", test_refcount_bits_1, 0);
    add_case(s, "model", test_model, 3);
    return s;
}

int main(void)
{
    return snaptest_run(snapshot_suite());
}
