/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * What the qcow2 snapshot unit tests share (test-qcow2-snapshot.c and
 * test-qcow2-snapshot-faults.c): images in a per-run directory, opening,
 * filling and checking content, the snapshot calls that must succeed,
 * and a whole image's state (snapshot names and every content) to
 * compare before and after.
 */
#include <stdio.h>
#include <stdlib.h>

#include "snaptest.h"

char *tmpdir;

char *tmp_path(const char *name)
{
    return g_build_filename(tmpdir, name, NULL);
}

void make_image(const char *path, const char *size, const char *cs,
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
BlockDriverState *open_img(const char *path, bool rw,
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

BlockDriverState *open_ok(const char *path, bool rw, const char *extra)
{
    GError *err = NULL;
    BlockDriverState *bs = open_img(path, rw, extra, &err);

    ck_assert_msg(bs, "open %s: %s", path, err ? err->message : "");
    return bs;
}

void fill(BlockDriverState *bs, int64_t off, int64_t len, int byte)
{
    uint8_t *buf = g_malloc(len);

    memset(buf, byte, len);
    ck_assert_int_eq(bdrv_pwrite(bs, off, len, buf), 0);
    g_free(buf);
}

void expect(BlockDriverState *bs, int64_t off, int64_t len, int byte)
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

void assert_clean(BlockDriverState *bs)
{
    BdrvCheckResult res;

    ck_assert_int_eq(bdrv_check(bs, &res, BDRV_FIX_NONE), 0);
    ck_assert_msg(res.corruptions == 0 && res.leaks == 0 &&
                  res.check_errors == 0, "check: %d corruptions, %d leaks, "
                  "%d errors", res.corruptions, res.leaks, res.check_errors);
}

BdrvSnapshotInfo tmpl_of(const char *name)
{
    BdrvSnapshotInfo t = { .name = (char *)name,
                           .icount = BDRV_SNAPSHOT_NO_ICOUNT };
    return t;
}

void snap_create(BlockDriverState *bs, const char *name)
{
    BdrvSnapshotInfo t = tmpl_of(name);
    GError *err = NULL;
    int ret = bdrv_snapshot_create(bs, &t, 0, NULL, &err);

    ck_assert_msg(ret == 0, "create %s: %s", name, err ? err->message : "");
}

void snap_delete(BlockDriverState *bs, const char *name)
{
    GError *err = NULL;
    int ret = bdrv_snapshot_delete(bs, NULL, name, NULL, &err);

    ck_assert_msg(ret == 0, "delete %s: %s", name, err ? err->message : "");
}

void snap_goto(BlockDriverState *bs, const char *name)
{
    GError *err = NULL;
    int ret = bdrv_snapshot_goto(bs, name, &err);

    ck_assert_msg(ret == 0, "goto %s: %s", name, err ? err->message : "");
}

/* "name1,name2" in table order */
char *names_of(BlockDriverState *bs)
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
uint64_t l2_entry(BlockDriverState *bs, uint64_t guest, uint64_t *l1e)
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

uint64_t refcount(BlockDriverState *bs, uint64_t host)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t rc;

    ck_assert_int_eq(qcow2_get_refcount(bs, host >> s->cluster_bits, &rc), 0);
    return rc;
}

BdrvSnapshotOp *check_create(BlockDriverState *bs, const char *name)
{
    BdrvSnapshotInfo t = tmpl_of(name);
    GError *err = NULL;
    BdrvSnapshotOp *op = bdrv_snapshot_create_check(bs, &t, 0, &err);

    ck_assert_msg(op, "check create %s: %s", name, err ? err->message : "");
    return op;
}

BdrvSnapshotOp *check_delete(BlockDriverState *bs, const char *name)
{
    GError *err = NULL;
    BdrvSnapshotOp *op = bdrv_snapshot_delete_check(bs, NULL, name, &err);

    ck_assert_msg(op, "check delete %s: %s", name, err ? err->message : "");
    return op;
}

void copy_file(const char *from, const char *to)
{
    gchar *data;
    gsize len;

    ck_assert(g_file_get_contents(from, &data, &len, NULL));
    ck_assert(g_file_set_contents(to, data, len, NULL));
    g_free(data);
}

char *digest(BlockDriverState *bs)
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
char *state_of(const char *path)
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

void poke(const char *path, uint64_t off, const void *data, size_t len)
{
    FILE *f = fopen(path, "r+b");

    ck_assert_ptr_nonnull(f);
    ck_assert_int_eq(fseek(f, off, SEEK_SET), 0);
    ck_assert_int_eq(fwrite(data, 1, len, f), len);
    fclose(f);
}

/* One case per test, so CK_RUN_CASE=name runs one alone. */
void add_case(Suite *s, const char *name, const TTest *t, int loops)
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

int snaptest_run(Suite *s)
{
    SRunner *sr = srunner_create(s);
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
