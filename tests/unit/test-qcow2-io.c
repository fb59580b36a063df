/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Unit tests of the qcow2 driver through the generic block API: create,
 * random writes/zero writes/reads against an in-memory shadow, reopen,
 * growth of tables with small clusters, and concurrent writers.
 */
#include <check.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "block/blkdebug.h"
#include "block/block.h"

static char *tmpdir;

static char *tmp_path(const char *name)
{
    return g_build_filename(tmpdir, name, NULL);
}

static BlockDriverState *create_and_open(const char *path, const char *size,
                                         const char *cs, const char *rb)
{
    BlockOpts *o = bdrv_opts_new();
    GError *err = NULL;
    BlockDriverState *bs;

    bdrv_opts_set(o, "size", size);
    bdrv_opts_set(o, "cluster_size", cs);
    bdrv_opts_set(o, "refcount_bits", rb);
    ck_assert_msg(bdrv_create("qcow2", path, o, &err), "create: %s",
                  err ? err->message : "");
    g_hash_table_unref(o);
    o = bdrv_opts_new();
    bdrv_opts_set(o, "driver", "qcow2");
    bs = bdrv_open(path, o, BDRV_O_RDWR, &err);
    ck_assert_msg(bs, "open: %s", err ? err->message : "");
    return bs;
}

static void random_ops(BlockDriverState *bs, uint8_t *shadow, int64_t size,
                       unsigned seed, int nops)
{
    GRand *r = g_rand_new_with_seed(seed);
    uint8_t *buf = g_malloc(1 << 20);

    for (int i = 0; i < nops; i++) {
        int64_t len = g_rand_int_range(r, 1, 200000);
        int64_t off = g_rand_int_range(r, 0, (gint32)(size - len));
        int kind = g_rand_int_range(r, 0, 10);
        if (kind < 5) {
            memset(buf, g_rand_int_range(r, 1, 255), len);
            ck_assert_int_eq(bdrv_pwrite(bs, off, len, buf), 0);
            memcpy(shadow + off, buf, len);
        } else if (kind < 7) {
            ck_assert_int_eq(bdrv_pwrite_zeroes(bs, off, len,
                             kind == 6 ? BDRV_REQ_MAY_UNMAP : 0), 0);
            memset(shadow + off, 0, len);
        } else {
            ck_assert_int_eq(bdrv_pread(bs, off, len, buf), 0);
            ck_assert_msg(memcmp(buf, shadow + off, len) == 0,
                          "mismatch at op %d off %" G_GINT64_FORMAT, i, off);
        }
    }
    g_free(buf);
    g_rand_free(r);
}

static void verify_all(BlockDriverState *bs, const uint8_t *shadow,
                       int64_t size)
{
    uint8_t *buf = g_malloc(size);

    ck_assert_int_eq(bdrv_pread(bs, 0, size, buf), 0);
    ck_assert(memcmp(buf, shadow, size) == 0);
    g_free(buf);
}

static void run_matrix_case(const char *cs, const char *rb, unsigned seed)
{
    const int64_t size = 8 << 20;
    g_autofree char *path = tmp_path("m.qcow2");
    uint8_t *shadow = g_malloc0(size);
    BlockDriverState *bs = create_and_open(path, "8M", cs, rb);
    BdrvCheckResult res;
    BlockOpts *o;
    GError *err = NULL;

    random_ops(bs, shadow, size, seed, 300);
    verify_all(bs, shadow, size);
    bdrv_unref(bs);

    o = bdrv_opts_new();
    bdrv_opts_set(o, "driver", "qcow2");
    bs = bdrv_open(path, o, 0, &err);
    ck_assert_msg(bs, "reopen: %s", err ? err->message : "");
    verify_all(bs, shadow, size);
    ck_assert_int_eq(bdrv_check(bs, &res, BDRV_FIX_NONE), 0);
    ck_assert_int_eq(res.corruptions, 0);
    ck_assert_int_eq(res.leaks, 0);
    bdrv_unref(bs);
    g_free(shadow);
    unlink(path);
}

START_TEST(test_matrix)
{
    static const char *cs[] = { "512", "4096", "65536", "2M" };
    static const char *rb[] = { "1", "16", "64" };

    run_matrix_case(cs[_i / 3], rb[_i % 3], 1000 + _i);
}
END_TEST

typedef struct Writer {
    BlockDriverState *bs;
    int id;
} Writer;

/* Each thread owns interleaved 4 KiB slots; partial clusters race on the
 * same clusters, which the allocation tracking must serialise. */
static gpointer writer_thread(gpointer p)
{
    Writer *w = p;
    uint8_t buf[4096];

    memset(buf, 0x10 + w->id, sizeof(buf));
    for (int i = 0; i < 256; i++) {
        int64_t off = ((int64_t)i * 4 + w->id) * 4096;
        if (bdrv_pwrite(w->bs, off, sizeof(buf), buf) != 0) {
            return GINT_TO_POINTER(1);
        }
    }
    return NULL;
}

START_TEST(test_concurrent_writers)
{
    g_autofree char *path = tmp_path("c.qcow2");
    BlockDriverState *bs = create_and_open(path, "8M", "65536", "16");
    GThread *t[4];
    Writer w[4];
    uint8_t buf[4096];
    BdrvCheckResult res;

    for (int i = 0; i < 4; i++) {
        w[i].bs = bs;
        w[i].id = i;
        t[i] = g_thread_new("w", writer_thread, &w[i]);
    }
    for (int i = 0; i < 4; i++) {
        ck_assert_ptr_null(g_thread_join(t[i]));
    }
    for (int i = 0; i < 1024; i++) {
        ck_assert_int_eq(bdrv_pread(bs, (int64_t)i * 4096, 4096, buf), 0);
        for (int j = 0; j < 4096; j++) {
            ck_assert_int_eq(buf[j], 0x10 + i % 4);
        }
    }
    ck_assert_int_eq(bdrv_flush(bs), 0);
    ck_assert_int_eq(bdrv_check(bs, &res, BDRV_FIX_NONE), 0);
    ck_assert_int_eq(res.corruptions + res.leaks, 0);
    bdrv_unref(bs);
    unlink(path);
}
END_TEST

START_TEST(test_backing_cow)
{
    g_autofree char *base = tmp_path("base.qcow2");
    g_autofree char *top = tmp_path("top.qcow2");
    BlockDriverState *bs = create_and_open(base, "4M", "65536", "16");
    BlockOpts *o = bdrv_opts_new();
    GError *err = NULL;
    uint8_t buf[65536];

    memset(buf, 0xaa, sizeof(buf));
    ck_assert_int_eq(bdrv_pwrite(bs, 0, sizeof(buf), buf), 0);
    bdrv_unref(bs);
    bdrv_opts_set(o, "size", "8M");
    bdrv_opts_set(o, "backing_file", "base.qcow2");
    bdrv_opts_set(o, "backing_fmt", "qcow2");
    ck_assert(bdrv_create("qcow2", top, o, &err));
    g_hash_table_unref(o);
    bs = bdrv_open(top, NULL, BDRV_O_RDWR, &err);
    ck_assert_msg(bs, "%s", err ? err->message : "");
    ck_assert_ptr_nonnull(bdrv_get_backing(bs));
    memset(buf, 0xbb, 512);
    ck_assert_int_eq(bdrv_pwrite(bs, 1024, 512, buf), 0);
    ck_assert_int_eq(bdrv_pread(bs, 0, sizeof(buf), buf), 0);
    ck_assert_int_eq(buf[0], 0xaa);
    ck_assert_int_eq(buf[1024], 0xbb);
    ck_assert_int_eq(buf[1536], 0xaa);
    /* past the backing file's end: zeroes */
    ck_assert_int_eq(bdrv_pread(bs, 6 << 20, 512, buf), 0);
    ck_assert_int_eq(buf[0], 0);
    bdrv_unref(bs);
}
END_TEST

/* A discard then an allocating write: the write takes the discarded
 * clusters (as QEMU's allocator would) instead of growing the file, and
 * the discarded range still reads as zeroes. */
START_TEST(test_discard_then_write_reuses)
{
    g_autofree char *path = tmp_path("reuse.qcow2");
    BlockDriverState *bs = create_and_open(path, "8M", "65536", "16");
    g_autofree uint8_t *buf = g_malloc(1 << 20);
    BdrvCheckResult res;
    struct stat st;
    off_t grown;

    memset(buf, 0x11, 1 << 20);
    ck_assert_int_eq(bdrv_pwrite(bs, 0, 1 << 20, buf), 0);
    memset(buf, 0x22, 1 << 20);
    ck_assert_int_eq(bdrv_pwrite(bs, 1 << 20, 1 << 20, buf), 0);
    ck_assert_int_eq(bdrv_flush(bs), 0);
    ck_assert_int_eq(stat(path, &st), 0);
    grown = st.st_size;

    ck_assert_int_eq(bdrv_pdiscard(bs, 0, 1 << 20), 0);
    memset(buf, 0x33, 1 << 20);
    ck_assert_int_eq(bdrv_pwrite(bs, 4 << 20, 1 << 20, buf), 0);
    ck_assert_int_eq(bdrv_flush(bs), 0);
    ck_assert_int_eq(stat(path, &st), 0);
    ck_assert_int_le(st.st_size, grown);

    ck_assert_int_eq(bdrv_pread(bs, 0, 1 << 20, buf), 0);
    for (int i = 0; i < 1 << 20; i++) {
        ck_assert_int_eq(buf[i], 0);
    }
    ck_assert_int_eq(bdrv_pread(bs, 1 << 20, 1 << 20, buf), 0);
    ck_assert_int_eq(buf[0], 0x22);
    ck_assert_int_eq(buf[(1 << 20) - 1], 0x22);
    ck_assert_int_eq(bdrv_pread(bs, 4 << 20, 1 << 20, buf), 0);
    ck_assert_int_eq(buf[0], 0x33);
    ck_assert_int_eq(buf[(1 << 20) - 1], 0x33);
    ck_assert_int_eq(bdrv_check(bs, &res, BDRV_FIX_NONE), 0);
    ck_assert_int_eq(res.corruptions + res.leaks, 0);
    bdrv_unref(bs);
    unlink(path);
}
END_TEST

static BlkdebugCounts file_counts(BlockDriverState *bs)
{
    BlkdebugCounts c;

    ck_assert(blkdebug_get_counts(bdrv_get_file(bs), &c));
    return c;
}

/* Closes bs and opens its image again over a blkdebug node, which counts
 * the requests that reach the file. */
static BlockDriverState *reopen_counted(BlockDriverState *bs,
                                        const char *path)
{
    BlockOpts *o = bdrv_opts_new();
    GError *err = NULL;

    bdrv_unref(bs);
    bdrv_opts_set(o, "driver", "qcow2");
    bdrv_opts_set(o, "file.driver", "blkdebug");
    bdrv_opts_set(o, "file.filename", path);
    bs = bdrv_open(path, o, BDRV_O_RDWR, &err);
    ck_assert_msg(bs, "open: %s", err ? err->message : "");
    return bs;
}

/* The sync that makes discarded clusters reusable is paid only when a
 * discard queued the frees and the write would grow the file: frees that
 * overwrites queue (compressed clusters rewritten) never cost one. */
START_TEST(test_reclaim_sync_only_after_discards)
{
    g_autofree char *path = tmp_path("reclaim.qcow2");
    BlockDriverState *bs = create_and_open(path, "8M", "65536", "16");
    g_autofree uint8_t *buf = g_malloc(1 << 20);
    uint64_t before;
    int64_t len;

    bs = reopen_counted(bs, path);

    memset(buf, 'x', 1 << 20);
    ck_assert_int_eq(bdrv_pwrite_compressed(bs, 0, 1 << 20, buf), 0);
    ck_assert_int_eq(bdrv_flush(bs), 0);
    before = file_counts(bs).flushes;
    memset(buf, 0x5c, 1 << 20);
    /* the rewrite queues the compressed clusters' frees; the next
     * allocating write grows the file without a sync */
    ck_assert_int_eq(bdrv_pwrite(bs, 0, 1 << 20, buf), 0);
    ck_assert_int_eq(bdrv_pwrite(bs, 2 << 20, 1 << 20, buf), 0);
    ck_assert_int_eq(file_counts(bs).flushes, before);

    ck_assert_int_eq(bdrv_flush(bs), 0);
    len = bdrv_getlength(bdrv_get_file(bs));
    before = file_counts(bs).flushes;
    ck_assert_int_eq(bdrv_pdiscard(bs, 0, 1 << 20), 0);
    ck_assert_int_eq(bdrv_pwrite(bs, 4 << 20, 1 << 20, buf), 0);
    ck_assert_int_eq(file_counts(bs).flushes, before + 1);
    ck_assert_int_eq(bdrv_getlength(bdrv_get_file(bs)), len);
    bdrv_unref(bs);
    unlink(path);
}
END_TEST

/* Zeroing or discarding what already reads as zeroes changes no entry,
 * so nothing is written back (QEMU's iotest 179 relies on it). */
START_TEST(test_repeated_zero_write_writes_nothing)
{
    g_autofree char *path = tmp_path("zeroagain.qcow2");
    BlockDriverState *bs = create_and_open(path, "8M", "65536", "16");
    g_autofree uint8_t *buf = g_malloc(1 << 20);
    uint64_t before;

    memset(buf, 7, 1 << 20);
    ck_assert_int_eq(bdrv_pwrite(bs, 0, 1 << 20, buf), 0);
    bs = reopen_counted(bs, path);
    ck_assert_int_eq(bdrv_pwrite_zeroes(bs, 0, 1 << 20, BDRV_REQ_MAY_UNMAP),
                     0);
    ck_assert_int_eq(bdrv_pwrite_zeroes(bs, 2 << 20, 1 << 20, 0), 0);
    ck_assert_int_eq(bdrv_flush(bs), 0);
    before = file_counts(bs).writes;
    ck_assert_int_eq(bdrv_pwrite_zeroes(bs, 0, 1 << 20, BDRV_REQ_MAY_UNMAP),
                     0);
    ck_assert_int_eq(bdrv_pwrite_zeroes(bs, 0, 1 << 20, 0), 0);
    ck_assert_int_eq(bdrv_pdiscard(bs, 0, 1 << 20), 0);
    ck_assert_int_eq(bdrv_pwrite_zeroes(bs, 2 << 20, 1 << 20, 0), 0);
    ck_assert_int_eq(bdrv_flush(bs), 0);
    ck_assert_int_eq(file_counts(bs).writes, before);
    bdrv_unref(bs);
    unlink(path);
}
END_TEST

static int64_t host_offset(BlockDriverState *bs, int64_t off)
{
    int64_t pnum, map = -1;
    BlockDriverState *file = NULL;
    int st = bdrv_block_status(bs, off, 65536, &pnum, &map, &file);

    ck_assert_int_ge(st, 0);
    ck_assert(st & BDRV_BLOCK_OFFSET_VALID);
    return map;
}

/* Clusters a zero write kept (preallocated zero clusters) take a later
 * write where they are, zero-filled around the data, with the normal
 * cluster before them in the same host write (iotest 066's case). */
START_TEST(test_write_into_preallocated_zero)
{
    g_autofree char *path = tmp_path("zeroalloc.qcow2");
    BlockDriverState *bs = create_and_open(path, "1M", "65536", "16");
    g_autofree uint8_t *buf = g_malloc(4 * 65536);
    int64_t host[4];
    BdrvCheckResult res;

    memset(buf, 0x11, 4 * 65536);
    ck_assert_int_eq(bdrv_pwrite(bs, 0, 4 * 65536, buf), 0);
    for (int i = 0; i < 4; i++) {
        host[i] = host_offset(bs, i * 65536);
    }
    ck_assert_int_eq(bdrv_pwrite_zeroes(bs, 65536, 3 * 65536, 0), 0);
    ck_assert_int_eq(host_offset(bs, 65536), host[1]); /* kept */

    /* from the middle of cluster 0 to the middle of cluster 2 */
    memset(buf, 0x22, 2 * 65536);
    ck_assert_int_eq(bdrv_pwrite(bs, 32768, 2 * 65536, buf), 0);
    for (int i = 0; i < 4; i++) {
        ck_assert_int_eq(host_offset(bs, i * 65536), host[i]);
    }
    ck_assert_int_eq(bdrv_pread(bs, 0, 4 * 65536, buf), 0);
    for (int i = 0; i < 4 * 65536; i++) {
        uint8_t want = i < 32768 ? 0x11 : i < 32768 + 2 * 65536 ? 0x22 : 0;
        ck_assert_msg(buf[i] == want, "byte %d: %#x, want %#x", i, buf[i],
                      want);
    }
    ck_assert_int_eq(bdrv_check(bs, &res, BDRV_FIX_NONE), 0);
    ck_assert_int_eq(res.corruptions + res.leaks, 0);
    bdrv_unref(bs);
    unlink(path);
}
END_TEST

static Suite *qcow2_suite(void)
{
    Suite *s = suite_create("qcow2-io");
    TCase *tc = tcase_create("core");

    tcase_set_timeout(tc, 240);
    tcase_add_loop_test(tc, test_matrix, 0, 12);
    tcase_add_test(tc, test_concurrent_writers);
    tcase_add_test(tc, test_backing_cow);
    tcase_add_test(tc, test_discard_then_write_reuses);
    tcase_add_test(tc, test_write_into_preallocated_zero);
    tcase_add_test(tc, test_reclaim_sync_only_after_discards);
    tcase_add_test(tc, test_repeated_zero_write_writes_nothing);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(qcow2_suite());
    int failed;

    tmpdir = g_dir_make_tmp("strata-unit-XXXXXX", NULL);
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
