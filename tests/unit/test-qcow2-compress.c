/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Unit tests of qcow2 compressed clusters (block/qcow2-compress.c): the
 * two codecs (round trip, data that does not shrink, damaged input,
 * padding after the stream, a cluster of several zstd frames), the write
 * policy (no compressed write over an allocated cluster, uncompressed
 * fallback), and compressed writers racing on one image, whose clusters
 * share host clusters: every byte reads back and the reference counts
 * check clean.
 */
#include <check.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zstd.h>

#include "block/block.h"
#include "block/qcow2.h"

#define CS 65536

static char *tmpdir;

static void fill_text(uint8_t *buf, size_t len, unsigned seed)
{
    GRand *r = g_rand_new_with_seed(seed);

    for (size_t i = 0; i < len; i++) {
        /* runs of seven of four letters: shrinks well, not trivially */
        buf[i] = i % 7 ? buf[i - 1] : (uint8_t)g_rand_int_range(r, 'a', 'e');
    }
    g_rand_free(r);
}

static void fill_random(uint8_t *buf, size_t len, unsigned seed)
{
    GRand *r = g_rand_new_with_seed(seed);

    for (size_t i = 0; i < len; i++) {
        buf[i] = (uint8_t)g_rand_int(r);
    }
    g_rand_free(r);
}

START_TEST(test_codec_round_trip)
{
    uint8_t type = _i ? QCOW2_COMPRESSION_ZSTD : QCOW2_COMPRESSION_ZLIB;
    g_autofree uint8_t *src = g_malloc(CS);
    g_autofree uint8_t *dst = g_malloc(CS + 1024);
    g_autofree uint8_t *back = g_malloc(CS);
    ssize_t n;

    fill_text(src, CS, 1);
    n = qcow2_compress(type, dst, CS - 1, src, CS);
    ck_assert_int_gt(n, 0);
    ck_assert_int_lt(n, CS / 2);
    /* stored sizes are rounded up to sectors: garbage after the stream */
    memset(dst + n, 0xa5, 1024);
    ck_assert_int_eq(qcow2_decompress(type, back, CS, dst, n + 1024), 0);
    ck_assert(memcmp(src, back, CS) == 0);
    /* a stream cut short cannot fill the cluster */
    ck_assert_int_eq(qcow2_decompress(type, back, CS, dst, n / 2), -EIO);
    /* random data does not shrink: the caller stores it uncompressed */
    fill_random(src, CS, 2);
    ck_assert_int_eq(qcow2_compress(type, dst, CS - 1, src, CS), -ENOMEM);
    /* and an unknown codec is an error, not a crash */
    ck_assert_int_eq(qcow2_compress(7, dst, CS - 1, src, CS), -EIO);
}
END_TEST

/* QEMU's reader accepts a cluster made of several zstd frames. */
START_TEST(test_zstd_frames)
{
    g_autofree uint8_t *src = g_malloc(CS);
    g_autofree uint8_t *dst = g_malloc(2 * CS);
    g_autofree uint8_t *back = g_malloc(CS);
    size_t a, b;

    fill_text(src, CS, 3);
    a = ZSTD_compress(dst, CS, src, CS / 4, 1);
    ck_assert(!ZSTD_isError(a));
    b = ZSTD_compress(dst + a, CS, src + CS / 4, 3 * CS / 4, 1);
    ck_assert(!ZSTD_isError(b));
    ck_assert_int_eq(qcow2_decompress(QCOW2_COMPRESSION_ZSTD, back, CS, dst,
                                      a + b), 0);
    ck_assert(memcmp(src, back, CS) == 0);
    /* one frame holding more than a cluster is damage */
    a = ZSTD_compress(dst, 2 * CS, src, CS, 1);
    ck_assert(!ZSTD_isError(a));
    ck_assert_int_eq(qcow2_decompress(QCOW2_COMPRESSION_ZSTD, back, CS / 2,
                                      dst, a), -EIO);
}
END_TEST

static BlockDriverState *create_and_open(const char *path, const char *ctype)
{
    BlockOpts *o = bdrv_opts_new();
    GError *err = NULL;
    BlockDriverState *bs;

    bdrv_opts_set(o, "size", "64M");
    bdrv_opts_set(o, "compression_type", ctype);
    ck_assert_msg(bdrv_create("qcow2", path, o, &err), "create: %s",
                  err ? err->message : "");
    g_hash_table_unref(o);
    o = bdrv_opts_new();
    bdrv_opts_set(o, "driver", "qcow2");
    bs = bdrv_open(path, o, BDRV_O_RDWR, &err);
    ck_assert_msg(bs, "open: %s", err ? err->message : "");
    return bs;
}

static void check_clean(BlockDriverState *bs, int64_t compressed)
{
    BdrvCheckResult res;

    ck_assert_int_eq(bdrv_flush(bs), 0);
    ck_assert_int_eq(bdrv_check(bs, &res, BDRV_FIX_NONE), 0);
    ck_assert_int_eq(res.corruptions, 0);
    ck_assert_int_eq(res.leaks, 0);
    ck_assert_int_eq(res.check_errors, 0);
    ck_assert_int_eq(res.compressed_clusters, compressed);
}

START_TEST(test_write_policy)
{
    g_autofree char *path = g_build_filename(tmpdir, "policy.qcow2", NULL);
    g_autofree uint8_t *buf = g_malloc(2 * CS);
    g_autofree uint8_t *back = g_malloc(2 * CS);
    BlockDriverState *bs = create_and_open(path, "zlib");

    fill_text(buf, 2 * CS, 4);
    ck_assert_int_eq(bdrv_pwrite_compressed(bs, 0, 2 * CS, buf), 0);
    ck_assert_int_eq(bdrv_pwrite(bs, 4 * CS, 100, buf), 0);
    /* compressed data never replaces what a cluster holds */
    ck_assert_int_eq(bdrv_pwrite_compressed(bs, CS, CS, buf), -EIO);
    ck_assert_int_eq(bdrv_pwrite_compressed(bs, 4 * CS, CS, buf), -EIO);
    /* whole clusters only */
    ck_assert_int_eq(bdrv_pwrite_compressed(bs, 512, CS, buf), -EINVAL);
    ck_assert_int_eq(bdrv_pwrite_compressed(bs, 8 * CS, CS / 2, buf),
                     -EINVAL);
    /* data that does not shrink is written like any write, even over an
     * allocated cluster (as QEMU does) */
    fill_random(buf + CS, CS, 5);
    ck_assert_int_eq(bdrv_pwrite_compressed(bs, 4 * CS, CS, buf + CS), 0);
    ck_assert_int_eq(bdrv_pread(bs, 4 * CS, CS, back), 0);
    ck_assert(memcmp(back, buf + CS, CS) == 0);
    fill_text(buf, 2 * CS, 4);
    ck_assert_int_eq(bdrv_pread(bs, 0, 2 * CS, back), 0);
    ck_assert(memcmp(back, buf, 2 * CS) == 0);
    check_clean(bs, 2);
    bdrv_unref(bs);
}
END_TEST

#define WRITERS 4
#define PER_WRITER 24

typedef struct {
    BlockDriverState *bs;
    int id;
} Writer;

static uint8_t *cluster_data(int index)
{
    uint8_t *buf = g_malloc(CS);

    if (index % 5 == 4) {
        fill_random(buf, CS, 100 + index);   /* stored uncompressed */
    } else {
        fill_text(buf, CS, 100 + index);
    }
    return buf;
}

static gpointer writer_thread(gpointer opaque)
{
    Writer *w = opaque;

    for (int i = 0; i < PER_WRITER; i++) {
        /* interleaved: neighbours come from other threads */
        int index = i * WRITERS + w->id;
        g_autofree uint8_t *buf = cluster_data(index);
        int ret = bdrv_pwrite_compressed(w->bs, (int64_t)index * CS, CS, buf);
        if (ret < 0) {
            return GINT_TO_POINTER(ret);
        }
    }
    return NULL;
}

START_TEST(test_concurrent_writers)
{
    const char *ctype = _i ? "zstd" : "zlib";
    g_autofree char *path = g_build_filename(tmpdir, "race.qcow2", NULL);
    BlockDriverState *bs = create_and_open(path, ctype);
    GThread *th[WRITERS];
    Writer w[WRITERS];
    int n = WRITERS * PER_WRITER, compressed = 0;
    g_autofree uint8_t *back = g_malloc(CS);

    for (int t = 0; t < WRITERS; t++) {
        w[t] = (Writer){ bs, t };
        th[t] = g_thread_new("writer", writer_thread, &w[t]);
    }
    for (int t = 0; t < WRITERS; t++) {
        ck_assert_ptr_null(g_thread_join(th[t]));
    }
    for (int i = 0; i < n; i++) {
        g_autofree uint8_t *want = cluster_data(i);
        ck_assert_int_eq(bdrv_pread(bs, (int64_t)i * CS, CS, back), 0);
        ck_assert_msg(memcmp(back, want, CS) == 0, "cluster %d differs", i);
        compressed += i % 5 != 4;
    }
    check_clean(bs, compressed);
    bdrv_unref(bs);
    unlink(path);
}
END_TEST

static Suite *compress_suite(void)
{
    Suite *s = suite_create("qcow2-compress");
    TCase *tc = tcase_create("core");

    tcase_add_loop_test(tc, test_codec_round_trip, 0, 2);
    tcase_add_test(tc, test_zstd_frames);
    tcase_add_test(tc, test_write_policy);
    tcase_add_loop_test(tc, test_concurrent_writers, 0, 2);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(compress_suite());
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
