/* SPDX-License-Identifier: LGPL-2.1-or-later */
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
#include <check.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "block/blkdebug.h"
#include "block/block.h"
#include "block/qcow2.h"
#include "block/snapshot.h"

#define KiB 1024
#define MiB (1024LL * 1024)

static char *tmpdir;

static char *tmp_path(const char *name)
{
    return g_build_filename(tmpdir, name, NULL);
}

static void make_image(const char *path, const char *size, const char *cs,
                       const char *rb)
{
    BlockOpts *o = bdrv_opts_new();
    GError *err = NULL;

    bdrv_opts_set(o, "size", size);
    bdrv_opts_set(o, "cluster_size", cs);
    bdrv_opts_set(o, "refcount_bits", rb);
    ck_assert_msg(bdrv_create("qcow2", path, o, &err), "create: %s",
                  err ? err->message : "");
    g_hash_table_unref(o);
}

/* Opens with an option string ("" for none) appended to driver=qcow2. */
static BlockDriverState *open_img(const char *path, bool rw,
                                  const char *extra, GError **errp)
{
    BlockOpts *o = bdrv_opts_new();
    GError *err = NULL;

    bdrv_opts_set(o, "driver", "qcow2");
    if (extra && *extra) {
        ck_assert(bdrv_opts_parse(o, extra, NULL, &err));
    }
    return bdrv_open(path, o, rw ? BDRV_O_RDWR : 0, errp);
}

static BlockDriverState *open_ok(const char *path, bool rw, const char *extra)
{
    GError *err = NULL;
    BlockDriverState *bs = open_img(path, rw, extra, &err);

    ck_assert_msg(bs, "open %s: %s", path, err ? err->message : "");
    return bs;
}

static void fill(BlockDriverState *bs, int64_t off, int64_t len, int byte)
{
    uint8_t *buf = g_malloc(len);

    memset(buf, byte, len);
    ck_assert_int_eq(bdrv_pwrite(bs, off, len, buf), 0);
    g_free(buf);
}

static void expect(BlockDriverState *bs, int64_t off, int64_t len, int byte)
{
    uint8_t *buf = g_malloc(len);

    ck_assert_int_eq(bdrv_pread(bs, off, len, buf), 0);
    for (int64_t i = 0; i < len; i++) {
        if (buf[i] != byte) {   /* one assertion: check's are slow */
            ck_abort_msg("byte %" G_GINT64_FORMAT ": got %#x, want %#x",
                         off + i, buf[i], byte);
        }
    }
    g_free(buf);
}

static void assert_clean(BlockDriverState *bs)
{
    BdrvCheckResult res;

    ck_assert_int_eq(bdrv_check(bs, &res, BDRV_FIX_NONE), 0);
    ck_assert_msg(res.corruptions == 0 && res.leaks == 0 &&
                  res.check_errors == 0, "check: %d corruptions, %d leaks, "
                  "%d errors", res.corruptions, res.leaks, res.check_errors);
}

static BdrvSnapshotInfo tmpl_of(const char *name)
{
    BdrvSnapshotInfo t = { .name = (char *)name,
                           .icount = BDRV_SNAPSHOT_NO_ICOUNT };
    return t;
}

static void snap_create(BlockDriverState *bs, const char *name)
{
    BdrvSnapshotInfo t = tmpl_of(name);
    GError *err = NULL;
    int ret = bdrv_snapshot_create(bs, &t, 0, NULL, &err);

    ck_assert_msg(ret == 0, "create %s: %s", name, err ? err->message : "");
}

static void snap_delete(BlockDriverState *bs, const char *name)
{
    GError *err = NULL;
    int ret = bdrv_snapshot_delete(bs, NULL, name, NULL, &err);

    ck_assert_msg(ret == 0, "delete %s: %s", name, err ? err->message : "");
}

static void snap_goto(BlockDriverState *bs, const char *name)
{
    GError *err = NULL;
    int ret = bdrv_snapshot_goto(bs, name, &err);

    ck_assert_msg(ret == 0, "goto %s: %s", name, err ? err->message : "");
}

/* "name1,name2" in table order */
static char *names_of(BlockDriverState *bs)
{
    BdrvSnapshotInfo *l;
    GError *err = NULL;
    int n = bdrv_snapshot_list(bs, &l, &err);
    GString *g = g_string_new("");

    ck_assert_msg(n >= 0, "list: %s", err ? err->message : "");
    for (int i = 0; i < n; i++) {
        g_string_append_printf(g, "%s%s", i ? "," : "", l[i].name);
    }
    bdrv_snapshot_list_free(l, n);
    return g_string_free(g, FALSE);
}

/* Internals, for refcounts and flags. */
static uint64_t l2_entry(BlockDriverState *bs, uint64_t guest, uint64_t *l1e)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t l1i = guest >> (s->cluster_bits + s->l2_bits);
    uint64_t l2i = (guest >> s->cluster_bits) & (s->l2_size - 1);
    uint64_t e;

    *l1e = s->l1_table[l1i];
    ck_assert_int_ne(*l1e & L1E_OFFSET_MASK, 0);
    ck_assert_int_eq(bdrv_pread(bs->file, (*l1e & L1E_OFFSET_MASK) + l2i * 8,
                                8, &e), 0);
    return GUINT64_FROM_BE(e);
}

static uint64_t refcount(BlockDriverState *bs, uint64_t host)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t rc;

    ck_assert_int_eq(qcow2_get_refcount(bs, host >> s->cluster_bits, &rc), 0);
    return rc;
}

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

#define STEP_OK(fn, op)                                                   \
    do {                                                                  \
        GError *e_ = NULL;                                                \
        int r_ = fn(op, &e_);                                             \
        ck_assert_msg(r_ == 0, "%s: %s", #fn, e_ ? e_->message : "");     \
    } while (0)

/* The step is refused with -EBUSY and a message containing `why`. */
#define STEP_REFUSED(fn, op, why)                                         \
    do {                                                                  \
        GError *e_ = NULL;                                                \
        int r_ = fn(op, &e_);                                             \
        ck_assert_msg(r_ == -EBUSY && e_ && strstr(e_->message, why),     \
                      "%s: got %d (%s), want -EBUSY (%s)", #fn, r_,       \
                      e_ ? e_->message : "no error", why);                \
        g_clear_error(&e_);                                               \
    } while (0)

static BdrvSnapshotOp *check_create(BlockDriverState *bs, const char *name)
{
    BdrvSnapshotInfo t = tmpl_of(name);
    GError *err = NULL;
    BdrvSnapshotOp *op = bdrv_snapshot_create_check(bs, &t, 0, &err);

    ck_assert_msg(op, "check create %s: %s", name, err ? err->message : "");
    return op;
}

static BdrvSnapshotOp *check_delete(BlockDriverState *bs, const char *name)
{
    GError *err = NULL;
    BdrvSnapshotOp *op = bdrv_snapshot_delete_check(bs, NULL, name, &err);

    ck_assert_msg(op, "check delete %s: %s", name, err ? err->message : "");
    return op;
}

/* The snapshot names and every content, read through a second node. */
static char *state_of(const char *path);

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

/* ---- fault injection ---- */

static void copy_file(const char *from, const char *to)
{
    gchar *data;
    gsize len;

    ck_assert(g_file_get_contents(from, &data, &len, NULL));
    ck_assert(g_file_set_contents(to, data, len, NULL));
    g_free(data);
}

static char *digest(BlockDriverState *bs)
{
    int64_t len = bdrv_getlength(bs);
    uint8_t *buf = g_malloc(len);
    char *d;

    ck_assert_int_eq(bdrv_pread(bs, 0, len, buf), 0);
    d = g_compute_checksum_for_data(G_CHECKSUM_SHA256, buf, len);
    g_free(buf);
    return d;
}

/* What an image holds: its snapshot names and every content. */
static char *state_of(const char *path)
{
    BlockDriverState *bs = open_ok(path, false, NULL);
    BdrvSnapshotInfo *l;
    int n = bdrv_snapshot_list(bs, &l, NULL);
    GString *g = g_string_new("");
    char *d = digest(bs);

    g_string_append_printf(g, "active=%s", d);
    g_free(d);
    bdrv_unref(bs);
    for (int i = 0; i < n; i++) {
        g_autofree char *o = g_strdup_printf("snapshot.id=%s", l[i].id_str);
        bs = open_ok(path, false, o);
        d = digest(bs);
        g_string_append_printf(g, " %s:%s=%s", l[i].id_str, l[i].name, d);
        g_free(d);
        bdrv_unref(bs);
    }
    bdrv_snapshot_list_free(l, n);
    return g_string_free(g, FALSE);
}

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

static BlockDriverState *open_faulty(const char *path, uint64_t n, bool once)
{
    g_autofree char *o = g_strdup_printf(
        "file.driver=blkdebug,file.inject-error.any=%" G_GUINT64_FORMAT
        ",file.inject-error.once=%s", n, once ? "on" : "off");
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

static void run_faults(FaultOp op, bool once)
{
    g_autofree char *base = tmp_path("fbase.qcow2");
    g_autofree char *work = tmp_path("fwork.qcow2");
    g_autofree char *old_state = NULL, *new_state = NULL;
    BlockDriverState *bs;
    BlkdebugCounts before, after;
    uint64_t first, last, n_old = 0, n_new = 0;

    make_fault_base(base);
    old_state = state_of(base);

    /* the op without faults: its result, and its writes and flushes */
    copy_file(base, work);
    bs = open_faulty(work, 0, true);
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
        bs = open_faulty(work, n, once);
        ret = do_op(bs, op, &err);
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
    bs = open_faulty(work, 0, true);
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
        bs = open_faulty(work, n, once);
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
    run_faults(_i % 3, _i < 3);
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

static void poke(const char *path, uint64_t off, const void *data,
                 size_t len);

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
    bs = open_faulty(work, 0, true);
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
        bs = open_faulty(work, n, false);
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

static void poke(const char *path, uint64_t off, const void *data, size_t len)
{
    FILE *f = fopen(path, "r+b");

    ck_assert_ptr_nonnull(f);
    ck_assert_int_eq(fseek(f, off, SEEK_SET), 0);
    ck_assert_int_eq(fwrite(data, 1, len, f), len);
    fclose(f);
}

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
                     "table entry 0");
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

/* One case per test, so CK_RUN_CASE=name runs one alone. */
static void add_case(Suite *s, const char *name, const TTest *t, int loops)
{
    TCase *tc = tcase_create(name);

    tcase_set_timeout(tc, 300);
    if (loops) {
        tcase_add_loop_test(tc, t, 0, loops);
    } else {
        tcase_add_test(tc, t);
    }
    suite_add_tcase(s, tc);
}

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
    add_case(s, "faults", test_faults, 6);
    add_case(s, "cancel_faults", test_cancel_faults, 6);
    add_case(s, "fault_event", test_fault_event, 0);
    add_case(s, "copied_shared_elsewhere", test_copied_shared_elsewhere, 0);
    add_case(s, "copied_windows", test_copied_windows, 2);
    add_case(s, "bad_tables", test_bad_tables, 0);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(snapshot_suite());
    int failed;

    /* tmpfs when there is one: the fault loops copy images a lot */
    tmpdir = g_mkdtemp(g_build_filename(
        g_file_test("/dev/shm", G_FILE_TEST_IS_DIR) ? "/dev/shm"
                                                     : g_get_tmp_dir(),
        "strata-snap-XXXXXX", NULL));
    g_assert(tmpdir);
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    g_autofree char *cmd = g_strdup_printf("rm -rf '%s'", tmpdir);
    if (system(cmd) != 0) {
        /* best effort */
    }
    g_free(tmpdir);
    return failed ? 1 : 0;
}
