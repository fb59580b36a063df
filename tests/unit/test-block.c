/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Unit tests of the generic block layer: option strings, sizes, the raw
 * and file drivers, read-modify-write under O_DIRECT alignment, reopen
 * read-only/read-write, drain holding other threads' requests, and probing.
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "block/block_int.h"
#include "block/fault-inject.h"
#include "block/log.h"

static char *tmpdir;

START_TEST(test_opts_parse)
{
    BlockOpts *o = bdrv_opts_new();
    GError *err = NULL;

    ck_assert(bdrv_opts_parse(o, "a.qcow2,driver=qcow2,file.x=1,,2", "filename",
                              &err));
    ck_assert_str_eq(bdrv_opts_get(o, "filename"), "a.qcow2");
    ck_assert_str_eq(bdrv_opts_get(o, "driver"), "qcow2");
    ck_assert_str_eq(bdrv_opts_get(o, "file.x"), "1,2");
    BlockOpts *sub = bdrv_opts_extract_prefix(o, "file");
    ck_assert_str_eq(bdrv_opts_get(sub, "x"), "1,2");
    ck_assert_ptr_null(bdrv_opts_get(o, "file.x"));
    ck_assert(!bdrv_opts_check_empty(o, &err));
    ck_assert_str_eq(err->message, "Invalid parameter 'driver'");
    g_clear_error(&err);
    ck_assert(!bdrv_opts_parse(o, "=x", NULL, &err));
    g_clear_error(&err);
    g_hash_table_unref(sub);
    g_hash_table_unref(o);
}
END_TEST

START_TEST(test_parse_size)
{
    uint64_t v;

    ck_assert(strata_parse_size("512", &v) && v == 512);
    ck_assert(strata_parse_size("64M", &v) && v == 64ULL << 20);
    ck_assert(strata_parse_size("1.5k", &v) && v == 1536);
    ck_assert(strata_parse_size("2G", &v) && v == 2ULL << 30);
    ck_assert(!strata_parse_size("12x", &v));
    ck_assert(!strata_parse_size("", &v));
    ck_assert(!strata_parse_size("-1", &v));
    ck_assert(!strata_parse_size("1.5", &v));
    ck_assert(!strata_parse_size("99999E", &v));
}
END_TEST

static char *make_raw(const char *dir, const char *name, uint64_t size)
{
    char *path = g_build_filename(dir, name, NULL);
    BlockOpts *o = bdrv_opts_new();
    GError *err = NULL;

    bdrv_opts_set(o, "size", "0");
    g_autofree char *sz = g_strdup_printf("%" G_GUINT64_FORMAT, size);
    bdrv_opts_set(o, "size", sz);
    ck_assert_msg(bdrv_create("raw", path, o, &err), "%s",
                  err ? err->message : "");
    g_hash_table_unref(o);
    return path;
}

/* O_DIRECT needs a file system that supports it: tmpfs does not. */
START_TEST(test_unaligned_direct)
{
    g_autofree char *dir = g_dir_make_tmp("strata-direct-XXXXXX", NULL);
    g_autofree char *path = NULL;
    BlockOpts *o;
    BlockDriverState *bs;
    GError *err = NULL;
    uint8_t buf[3000], chk[3000];

    ck_assert_ptr_nonnull(dir);
    path = make_raw(dir, "d.raw", 1 << 20);
    int fd = open(path, O_RDONLY | O_DIRECT);
    if (fd < 0) {
        unlink(path);
        rmdir(dir);
        return; /* no O_DIRECT here: nothing to test */
    }
    close(fd);
    o = bdrv_opts_new();
    bdrv_opts_set(o, "driver", "raw");
    bdrv_opts_set(o, "cache.direct", "on");
    bs = bdrv_open(path, o, BDRV_O_RDWR, &err);
    ck_assert_msg(bs, "%s", err ? err->message : "");
    ck_assert_uint_gt(bdrv_get_file(bs)->request_alignment, 1);
    for (int i = 0; i < 3000; i++) {
        buf[i] = i * 7;
    }
    /* unaligned offset, length and buffer */
    ck_assert_int_eq(bdrv_pwrite(bs, 1001, 2999, buf + 1), 0);
    ck_assert_int_eq(bdrv_pread(bs, 1001, 2999, chk + 1), 0);
    ck_assert(memcmp(buf + 1, chk + 1, 2999) == 0);
    ck_assert_int_eq(bdrv_pread(bs, 0, 1001, chk), 0);
    for (int i = 0; i < 1001; i++) {
        ck_assert_int_eq(chk[i], 0);
    }
    bdrv_unref(bs);
    unlink(path);
    rmdir(dir);
}
END_TEST

START_TEST(test_reopen_ro_rw)
{
    g_autofree char *path = make_raw(tmpdir, "r.raw", 65536);
    GError *err = NULL;
    BlockDriverState *bs = bdrv_open(path, NULL, BDRV_O_RDWR, &err);
    uint8_t buf[512] = { 1 };

    ck_assert_ptr_nonnull(bs);
    ck_assert_str_eq(bdrv_get_format_name(bs), "raw");
    ck_assert_int_eq(bdrv_pwrite(bs, 0, 512, buf), 0);
    ck_assert(bdrv_reopen_set_read_only(bs, true, &err));
    ck_assert(bdrv_is_read_only(bs));
    ck_assert_int_eq(bdrv_pwrite(bs, 0, 512, buf), -EPERM);
    ck_assert(bdrv_reopen_set_read_only(bs, false, &err));
    ck_assert_int_eq(bdrv_pwrite(bs, 0, 512, buf), 0);
    bdrv_unref(bs);
}
END_TEST

typedef struct DrainCtx {
    BlockDriverState *bs;
    gint done;
} DrainCtx;

static gpointer drain_writer(gpointer p)
{
    DrainCtx *c = p;
    uint8_t buf[512] = { 2 };

    bdrv_pwrite(c->bs, 512, 512, buf);
    g_atomic_int_set(&c->done, 1);
    return NULL;
}

START_TEST(test_drain_holds_requests)
{
    g_autofree char *path = make_raw(tmpdir, "dr.raw", 65536);
    GError *err = NULL;
    BlockDriverState *bs = bdrv_open(path, NULL, BDRV_O_RDWR, &err);
    DrainCtx c = { bs, 0 };
    uint8_t buf[512];
    GThread *t;

    ck_assert_ptr_nonnull(bs);
    bdrv_drained_begin(bs);
    t = g_thread_new("w", drain_writer, &c);
    g_usleep(200 * 1000);
    /* held while drained; the drainer itself still gets through */
    ck_assert_int_eq(g_atomic_int_get(&c.done), 0);
    ck_assert_int_eq(bdrv_pread(bs, 512, 512, buf), 0);
    ck_assert_int_eq(buf[0], 0);
    bdrv_drained_end(bs);
    g_thread_join(t);
    ck_assert_int_eq(g_atomic_int_get(&c.done), 1);
    ck_assert_int_eq(bdrv_pread(bs, 512, 512, buf), 0);
    ck_assert_int_eq(buf[0], 2);
    bdrv_unref(bs);
}
END_TEST

/* A flush syncs exactly when something was written (or truncated) since
 * the last sync: qcow2 create and the transaction engine flush often and
 * count on repeated flushes being free. */
START_TEST(test_flush_syncs_only_after_writes)
{
    g_autofree char *path = make_raw(tmpdir, "fl.raw", 65536);
    GError *err = NULL;
    BlockDriverState *bs = bdrv_open(path, NULL, BDRV_O_RDWR, &err);
    uint8_t buf[512] = { 3 };
    uint64_t before;

    ck_assert_ptr_nonnull(bs);
    ck_assert_int_eq(bdrv_pwrite(bs, 0, 512, buf), 0);
    before = fault_inject_syncs();
    ck_assert_int_eq(bdrv_flush(bs), 0);
    ck_assert_uint_eq(fault_inject_syncs(), before + 1);
    ck_assert_int_eq(bdrv_flush(bs), 0);
    ck_assert_int_eq(bdrv_flush(bs), 0);
    ck_assert_uint_eq(fault_inject_syncs(), before + 1);
    ck_assert_int_eq(bdrv_pread(bs, 0, 512, buf), 0);
    ck_assert_int_eq(bdrv_flush(bs), 0);
    ck_assert_uint_eq(fault_inject_syncs(), before + 1);
    ck_assert_int_eq(bdrv_pwrite(bs, 512, 512, buf), 0);
    ck_assert_int_eq(bdrv_flush(bs), 0);
    ck_assert_uint_eq(fault_inject_syncs(), before + 2);
    ck_assert_int_eq(bdrv_truncate(bs, 131072, &err), 0);
    ck_assert_int_eq(bdrv_flush(bs), 0);
    ck_assert_uint_eq(fault_inject_syncs(), before + 3);
    bdrv_unref(bs);
}
END_TEST

START_TEST(test_open_errors)
{
    GError *err = NULL;
    g_autofree char *missing = g_build_filename(tmpdir, "nope", NULL);
    BlockOpts *o = bdrv_opts_new();

    ck_assert_ptr_null(bdrv_open(missing, NULL, 0, &err));
    ck_assert(strstr(err->message, "No such file or directory"));
    g_clear_error(&err);
    /* QEMU's order: a read-only open of a directory gets as far as the
     * type check, a read-write one fails in open(2) */
    ck_assert_ptr_null(bdrv_open(tmpdir, NULL, 0, &err));
    ck_assert(strstr(err->message, "'file' driver requires"));
    ck_assert(strstr(err->message, "to be a regular file"));
    g_clear_error(&err);
    ck_assert_ptr_null(bdrv_open(tmpdir, NULL, BDRV_O_RDWR, &err));
    ck_assert(strstr(err->message, "Is a directory"));
    g_clear_error(&err);
    bdrv_opts_set(o, "driver", "nosuch");
    ck_assert_ptr_null(bdrv_open(missing, o, 0, &err));
    ck_assert_str_eq(err->message, "Unknown driver 'nosuch'");
    g_clear_error(&err);
    o = bdrv_opts_new();
    bdrv_opts_set(o, "bogus", "1");
    g_autofree char *path = make_raw(tmpdir, "b.raw", 4096);
    ck_assert_ptr_null(bdrv_open(path, o, 0, &err));
    ck_assert_str_eq(err->message, "Invalid parameter 'bogus'");
    g_clear_error(&err);
}
END_TEST


static void capture_log(StrataLogLevel level, const char *msg, void *opaque)
{
    g_ptr_array_add(opaque, g_strdup(msg));
}

/* The library reports through the sink only: nothing reaches a sink that
 * is not installed, and an installed one gets whole lines. */
START_TEST(test_log_sink)
{
    g_autoptr(GPtrArray) lines = g_ptr_array_new_with_free_func(g_free);
    g_autofree char *path = g_build_filename(tmpdir, "log.raw", NULL);
    GError *err = NULL;

    ck_assert(g_file_set_contents(path, "0123456789abcdef", 16, NULL));
    for (int with_sink = 0; with_sink < 2; with_sink++) {
        if (with_sink) {
            strata_log_set_sink(capture_log, lines);
        }
        BlockOpts *o = bdrv_opts_new();
        bdrv_opts_set(o, "driver", "raw");
        bdrv_opts_set(o, "file.driver", "blkdebug");
        bdrv_opts_set(o, "file.print-counts", "on");
        BlockDriverState *bs = bdrv_open(path, o, 0, &err);
        ck_assert_msg(bs, "%s", err ? err->message : "");
        char buf[4];
        ck_assert_int_eq(bdrv_pread(bs, 0, 4, buf), 0);
        bdrv_unref(bs);
        ck_assert_uint_eq(lines->len, with_sink);
    }
    ck_assert_ptr_eq(strata_log_set_sink(NULL, NULL), capture_log);
    ck_assert_str_eq(g_ptr_array_index(lines, 0),
                     "blkdebug: reads=1 writes=0 flushes=0 injected=0");
}
END_TEST

static Suite *block_suite(void)
{
    Suite *s = suite_create("block");
    TCase *tc = tcase_create("core");

    tcase_add_test(tc, test_opts_parse);
    tcase_add_test(tc, test_parse_size);
    tcase_add_test(tc, test_unaligned_direct);
    tcase_add_test(tc, test_reopen_ro_rw);
    tcase_add_test(tc, test_drain_holds_requests);
    tcase_add_test(tc, test_flush_syncs_only_after_writes);
    tcase_add_test(tc, test_open_errors);
    tcase_add_test(tc, test_log_sink);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(block_suite());
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
