/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Unit tests of what a device (BlockBackend) does to requests before and
 * after they reach its node: requests outside the device fail with EIO
 * and never reach the node, write-through and FUA flush, discard=ignore
 * drops discards and the unmapping of zero writes, a device without a
 * medium answers ENOMEDIUM.  The node under the device is a raw image on
 * the blkdebug filter, whose counters show what reached the file.
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "block/blkdebug.h"
#include "block/block-backend.h"

#define SIZE (1024 * 1024)

static char *tmpdir;
static char *img;

static void setup(void)
{
    g_autofree char *data = g_malloc(SIZE);
    int fd;

    tmpdir = g_dir_make_tmp("strata-blk-XXXXXX", NULL);
    ck_assert(tmpdir);
    img = g_build_filename(tmpdir, "disk.raw", NULL);
    /* real data everywhere, so that unmapping frees host blocks */
    memset(data, 0x5a, SIZE);
    fd = open(img, O_CREAT | O_WRONLY | O_TRUNC, 0644);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(write(fd, data, SIZE), SIZE);
    ck_assert_int_eq(fsync(fd), 0);
    close(fd);
}

static void teardown(void)
{
    unlink(img);
    rmdir(tmpdir);
    g_clear_pointer(&img, g_free);
    g_clear_pointer(&tmpdir, g_free);
}

static BlockBackend *open_dev(void)
{
    g_autoptr(GError) err = NULL;
    BlockOpts *o = bdrv_opts_new();
    g_autoptr(BlockDriverState) bs = NULL;

    bdrv_opts_set(o, "driver", "raw");
    bdrv_opts_set(o, "file.driver", "blkdebug");
    bdrv_opts_set(o, "file.filename", img);
    bs = bdrv_open(img, o, BDRV_O_RDWR, &err);
    ck_assert_msg(bs, "open: %s", err ? err->message : "");
    return blk_new(NULL, bs);
}

static BlkdebugCounts counts(BlockBackend *blk)
{
    BlkdebugCounts c;

    ck_assert(blkdebug_get_counts(bdrv_get_file(blk_bs(blk)), &c));
    return c;
}

START_TEST(test_bounds)
{
    g_autoptr(BlockBackend) blk = open_dev();
    uint8_t buf[4096];
    BlkdebugCounts before, after;

    before = counts(blk);
    ck_assert_int_eq(blk_check_request(blk, 0, SIZE), 0);
    ck_assert_int_eq(blk_check_request(blk, SIZE, 0), 0);
    ck_assert_int_eq(blk_check_request(blk, SIZE - 1, 2), -EIO);
    ck_assert_int_eq(blk_check_request(blk, SIZE + 1, 0), -EIO);
    ck_assert_int_eq(blk_check_request(blk, -1, 1), -EIO);
    ck_assert_int_eq(blk_check_request(blk, 0, -1), -EIO);
    ck_assert_int_eq(blk_check_request(blk, INT64_MAX, INT64_MAX), -EIO);

    ck_assert_int_eq(blk_pread(blk, SIZE - 512, 1024, buf), -EIO);
    ck_assert_int_eq(blk_pwrite(blk, SIZE - 512, 1024, buf), -EIO);
    ck_assert_int_eq(blk_pwrite_flags(blk, SIZE, 1, buf, BLK_REQ_FUA), -EIO);
    ck_assert_int_eq(blk_pwrite_zeroes(blk, SIZE, 512, 0), -EIO);
    ck_assert_int_eq(blk_pdiscard(blk, SIZE - 4096, 8192), -EIO);
    ck_assert_int_eq(blk_pwrite_compressed(blk, SIZE, 512, buf), -EIO);
    ck_assert_int_eq(blk_pread(blk, -512, 512, buf), -EIO);
    after = counts(blk);
    /* refused above the node: nothing reached the file */
    ck_assert_uint_eq(after.reads, before.reads);
    ck_assert_uint_eq(after.writes, before.writes);
    ck_assert_uint_eq(after.flushes, before.flushes);
    ck_assert_uint_eq(blk_get_write_count(blk), 0);

    /* inside the device, up to its last byte, requests pass */
    ck_assert_int_eq(blk_pread(blk, SIZE - 4096, 4096, buf), 0);
    ck_assert_int_eq(buf[0], 0x5a);
    ck_assert_int_eq(blk_pwrite(blk, SIZE - 4096, 4096, buf), 0);
    ck_assert_int_eq(blk_pread(blk, SIZE, 0, buf), 0);
    ck_assert_int_eq(blk_pwrite_compressed(blk, 0, 512, buf), -ENOTSUP);
    ck_assert_uint_eq(blk_get_write_count(blk), 1);
}
END_TEST

START_TEST(test_write_through_and_fua)
{
    g_autoptr(BlockBackend) blk = open_dev();
    uint8_t buf[512] = { 1 };
    BlkdebugCounts c0, c1, c2, c3, c4;

    ck_assert(blk_enable_write_cache(blk));     /* the default */
    c0 = counts(blk);
    ck_assert_int_eq(blk_pwrite(blk, 0, sizeof(buf), buf), 0);
    ck_assert_int_eq(blk_pwrite_zeroes(blk, 4096, 512, 0), 0);
    c1 = counts(blk);
    ck_assert_uint_eq(c1.flushes, c0.flushes);  /* write-back: no flush */
    ck_assert_uint_eq(c1.writes, c0.writes + 2);

    ck_assert_int_eq(blk_pwrite_flags(blk, 0, sizeof(buf), buf,
                                      BLK_REQ_FUA), 0);
    c2 = counts(blk);
    ck_assert_uint_eq(c2.flushes, c1.flushes + 1);
    ck_assert_int_eq(blk_pwrite_zeroes(blk, 0, 512, BLK_REQ_FUA), 0);
    c3 = counts(blk);
    ck_assert_uint_eq(c3.flushes, c2.flushes + 1);

    blk_set_enable_write_cache(blk, false);     /* write-through */
    ck_assert(!blk_enable_write_cache(blk));
    ck_assert_int_eq(blk_pwrite(blk, 0, sizeof(buf), buf), 0);
    ck_assert_int_eq(blk_pwrite_zeroes(blk, 0, 512, 0), 0);
    ck_assert_int_eq(blk_pread(blk, 0, sizeof(buf), buf), 0);
    c4 = counts(blk);
    ck_assert_uint_eq(c4.flushes, c3.flushes + 2); /* one per write only */
    ck_assert_uint_eq(blk_get_write_count(blk), 6);
}
END_TEST

static int64_t host_blocks(void)
{
    struct stat st;

    ck_assert_int_eq(stat(img, &st), 0);
    return st.st_blocks;
}

/* Can this file system punch holes?  (Decides whether the unmap half of
 * the next test can see anything.) */
static bool can_punch(void)
{
    g_autofree char *probe = g_build_filename(tmpdir, "probe", NULL);
    char buf[65536];
    struct stat st1, st2;
    int fd = open(probe, O_CREAT | O_RDWR | O_TRUNC, 0644);
    bool ok;

    memset(buf, 1, sizeof(buf));
    ck_assert_int_eq(write(fd, buf, sizeof(buf)), sizeof(buf));
    fsync(fd);
    fstat(fd, &st1);
    ok = fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0,
                   sizeof(buf)) == 0;
    fstat(fd, &st2);
    close(fd);
    unlink(probe);
    return ok && st2.st_blocks < st1.st_blocks;
}

START_TEST(test_ignore_discard)
{
    g_autoptr(BlockBackend) blk = open_dev();
    uint8_t buf[4096];
    BlkdebugCounts c0, c1, c2;
    int64_t blocks;

    ck_assert(!blk_ignore_discard(blk));        /* the default */
    blk_set_ignore_discard(blk, true);
    c0 = counts(blk);
    blocks = host_blocks();
    ck_assert_int_eq(blk_pdiscard(blk, 0, 256 * 1024), 0);
    c1 = counts(blk);
    ck_assert_uint_eq(c1.writes, c0.writes);    /* never reached the file */
    ck_assert_uint_eq(blk_get_write_count(blk), 0);
    /* a zero write still zeroes, but may not unmap */
    ck_assert_int_eq(blk_pwrite_zeroes(blk, 256 * 1024, 256 * 1024,
                                       BDRV_REQ_MAY_UNMAP), 0);
    ck_assert_int_eq(blk_pread(blk, 256 * 1024, sizeof(buf), buf), 0);
    ck_assert_int_eq(buf[0], 0);
    ck_assert_int_eq(buf[sizeof(buf) - 1], 0);
    ck_assert_int_eq(host_blocks(), blocks);
    ck_assert_int_eq(blk_pread(blk, 0, sizeof(buf), buf), 0);
    ck_assert_int_eq(buf[0], 0x5a);             /* the discard did nothing */

    /* the same requests with discards honoured */
    blk_set_ignore_discard(blk, false);
    ck_assert_int_eq(blk_pdiscard(blk, 0, 256 * 1024), 0);
    c2 = counts(blk);
    ck_assert_uint_eq(c2.writes, c1.writes + 2);
    if (can_punch()) {
        ck_assert_int_lt(host_blocks(), blocks);
        blocks = host_blocks();
        ck_assert_int_eq(blk_pwrite_zeroes(blk, 512 * 1024, 256 * 1024,
                                           BDRV_REQ_MAY_UNMAP), 0);
        ck_assert_int_lt(host_blocks(), blocks);
    }
}
END_TEST

START_TEST(test_no_medium)
{
    g_autoptr(BlockBackend) blk = blk_new("empty", NULL);
    g_autoptr(GError) err = NULL;
    uint8_t buf[512];

    ck_assert_ptr_null(blk_bs(blk));
    ck_assert_ptr_null(blk_get_root(blk));
    ck_assert_int_eq(blk_check_request(blk, 0, 512), -ENOMEDIUM);
    ck_assert_int_eq(blk_pread(blk, 0, 512, buf), -ENOMEDIUM);
    ck_assert_int_eq(blk_pwrite(blk, 0, 512, buf), -ENOMEDIUM);
    ck_assert_int_eq(blk_pwrite_zeroes(blk, 0, 512, 0), -ENOMEDIUM);
    ck_assert_int_eq(blk_pdiscard(blk, 0, 512), -ENOMEDIUM);
    ck_assert_int_eq(blk_flush(blk), -ENOMEDIUM);
    ck_assert_int_eq(blk_getlength(blk), -ENOMEDIUM);
    ck_assert_int_eq(blk_truncate(blk, 512, &err), -ENOMEDIUM);
}
END_TEST

START_TEST(test_serials_and_root_refs)
{
    g_autoptr(BlockBackend) a = open_dev();
    g_autoptr(BlockBackend) b = blk_new(NULL, NULL);
    BlockDriverState *root;

    ck_assert_uint_gt(blk_get_serial(b), blk_get_serial(a));
    root = blk_get_root(a);
    ck_assert_ptr_eq(root, blk_bs(a));
    /* the reference outlives the device's own */
    blk_set_root(a, NULL);
    ck_assert_int_eq(bdrv_getlength(root), SIZE);
    bdrv_unref(root);
}
END_TEST

static Suite *blk_suite(void)
{
    Suite *s = suite_create("block-backend");
    TCase *tc = tcase_create("device");

    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_bounds);
    tcase_add_test(tc, test_write_through_and_fua);
    tcase_add_test(tc, test_ignore_discard);
    tcase_add_test(tc, test_no_medium);
    tcase_add_test(tc, test_serials_and_root_refs);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(blk_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
