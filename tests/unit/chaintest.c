/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * What the backing-chain unit tests share (test-chain.c and
 * test-chain-jobs.c): images in a per-run directory, chains of a given
 * depth, reading and comparing whole nodes, checking images clean, a
 * device on an image and a sequenced writer on it.
 */
#include <stdio.h>
#include <stdlib.h>

#include "chaintest.h"

char *tmpdir;

char *tmp_path(const char *name)
{
    return g_build_filename(tmpdir, name, NULL);
}

void create_img(const char *path, int64_t size, const char *backing,
                       const char *backing_fmt)
{
    BlockOpts *o = bdrv_opts_new();
    g_autofree char *s = g_strdup_printf("%" G_GINT64_FORMAT, size);
    GError *err = NULL;

    bdrv_opts_set(o, "size", s);
    if (backing) {
        bdrv_opts_set(o, "backing_file", backing);
        bdrv_opts_set(o, "backing_fmt", backing_fmt ? backing_fmt : "qcow2");
    }
    ck_assert_msg(bdrv_create("qcow2", path, o, &err), "create %s: %s", path,
                  err ? err->message : "");
    g_hash_table_unref(o);
}

BlockDriverState *open_img(const char *path, int flags)
{
    GError *err = NULL;
    BlockDriverState *bs = bdrv_open(path, NULL, flags, &err);

    ck_assert_msg(bs, "open %s: %s", path, err ? err->message : "");
    return bs;
}

/* Opening must fail with a message containing `want`. */
void open_fails(const char *path, BlockOpts *o, const char *want)
{
    GError *err = NULL;
    BlockDriverState *bs = bdrv_open(path, o, 0, &err);

    ck_assert_msg(!bs, "opening %s should fail", path);
    ck_assert_msg(strstr(err->message, want), "error '%s' lacks '%s'",
                  err->message, want);
    g_error_free(err);
}

/* Random pattern writes and zero writes through bs (which COWs from its
 * backing chain as a guest write would). */
void fill_random(BlockDriverState *bs, GRand *r, int n)
{
    int64_t len = bdrv_getlength(bs);
    uint8_t *buf = g_malloc(512 * KiB);

    for (int i = 0; i < n; i++) {
        int64_t bytes = g_rand_int_range(r, 1, 512 * KiB);
        int64_t off = g_rand_int_range(r, 0, (gint32)(len - bytes));
        if (g_rand_int_range(r, 0, 5) == 0) {
            ck_assert_int_eq(bdrv_pwrite_zeroes(bs, off, bytes, 0), 0);
        } else {
            memset(buf, g_rand_int_range(r, 1, 256), bytes);
            ck_assert_int_eq(bdrv_pwrite(bs, off, bytes, buf), 0);
        }
    }
    g_free(buf);
}

uint8_t *read_all(BlockDriverState *bs, int64_t len)
{
    uint8_t *buf = g_malloc(len);

    ck_assert_int_eq(bdrv_pread(bs, 0, len, buf), 0);
    return buf;
}

uint8_t *blk_read_all(BlockBackend *blk, int64_t len)
{
    uint8_t *buf = g_malloc(len);

    ck_assert_int_eq(blk_pread(blk, 0, len, buf), 0);
    return buf;
}

/* (Check records every assertion: compare first, assert once.) */
void assert_same(const uint8_t *a, const uint8_t *b, int64_t len,
                        const char *what)
{
    int64_t i = 0;

    if (memcmp(a, b, len) == 0) {
        return;
    }
    while (a[i] == b[i]) {
        i++;
    }
    ck_abort_msg("%s: byte %" G_GINT64_FORMAT " is 0x%02x, expected 0x%02x",
                 what, i, b[i], a[i]);
}

/* Our check, then qemu-img's if it is installed: no corruption, no leak. */
void check_clean(const char *path)
{
    g_autofree char *qemu_img = g_find_program_in_path("qemu-img");
    BlockOpts *o = bdrv_opts_new();
    GError *err = NULL;
    BlockDriverState *bs;
    BdrvCheckResult res;

    bdrv_opts_set(o, "driver", "qcow2");
    bs = bdrv_open(path, o, BDRV_O_NO_BACKING | BDRV_O_CHECK, &err);
    ck_assert_msg(bs, "open %s: %s", path, err ? err->message : "");
    ck_assert_int_eq(bdrv_check(bs, &res, BDRV_FIX_NONE), 0);
    ck_assert_msg(res.corruptions == 0 && res.leaks == 0,
                  "%s: %d corruptions, %d leaks", path, res.corruptions,
                  res.leaks);
    bdrv_unref(bs);
    if (qemu_img) {
        const char *argv[] = { qemu_img, "check", "-q", "-f", "qcow2", path,
                               NULL };
        g_autofree char *out = NULL, *errout = NULL;
        int status = 0;
        ck_assert(g_spawn_sync(NULL, (char **)argv, NULL, 0, NULL, NULL,
                               &out, &errout, &status, NULL));
        ck_assert_msg(g_spawn_check_wait_status(status, NULL),
                      "qemu-img check %s: %s%s", path, out, errout);
    }
}

/*
 * A chain of `depth` images named PREFIX-0 (bottom) .. PREFIX-(depth-1),
 * each recording the one below by a relative name, with random writes
 * made while each image was the top.  Returns the top's path.
 */
char *make_chain(const char *prefix, int depth, const int64_t *sizes,
                        unsigned seed)
{
    GRand *r = g_rand_new_with_seed(seed);
    char *top = NULL;

    for (int i = 0; i < depth; i++) {
        g_autofree char *name = g_strdup_printf("%s-%d.qcow2", prefix, i);
        g_autofree char *below = i ? g_strdup_printf("%s-%d.qcow2", prefix,
                                                     i - 1) : NULL;
        BlockDriverState *bs;

        g_free(top);
        top = tmp_path(name);
        create_img(top, sizes[i], below, "qcow2");
        bs = open_img(top, BDRV_O_RDWR);
        ck_assert_int_eq(bdrv_chain_length(bs), i);
        fill_random(bs, r, 12);
        bdrv_unref(bs);
    }
    g_rand_free(r);
    return top;
}

char *layer_path(const char *prefix, int i)
{
    g_autofree char *name = g_strdup_printf("%s-%d.qcow2", prefix, i);
    return tmp_path(name);
}

/* The node of the chain of top that is layer i of depth. */
BlockDriverState *layer(BlockDriverState *top, int depth, int i)
{
    BlockDriverState *p = top;

    for (int k = depth - 1; k > i; k--) {
        p = bdrv_get_backing(p);
    }
    return p;
}

BlockBackend *device_on(const char *path)
{
    BlockDriverState *bs = open_img(path, BDRV_O_RDWR);
    BlockBackend *blk = blk_new("dev0", bs);

    bdrv_unref(bs);
    return blk;
}

/* Write i puts its sequence number into block i (one per cluster). */
gpointer seq_writer(gpointer opaque)
{
    SeqWriter *w = opaque;
    uint8_t buf[4096];

    while (!g_atomic_int_get(&w->stop) && w->n < SEQ_MAX) {
        memset(buf, 0, sizeof(buf));
        snprintf((char *)buf, sizeof(buf), "seq %d", w->n + 1);
        ck_assert_int_eq(blk_pwrite(w->blk, (int64_t)w->n * SEQ_STRIDE,
                                    sizeof(buf), buf), 0);
        g_atomic_int_inc(&w->n);
        g_usleep(200);
    }
    return NULL;
}

int chaintest_run(Suite *s)
{
    SRunner *sr = srunner_create(s);
    const char *base = g_file_test("/dev/shm", G_FILE_TEST_IS_DIR) ?
                       "/dev/shm" : g_get_tmp_dir();
    g_autofree char *tmpl = g_build_filename(base, "strata-chain-XXXXXX",
                                             NULL);
    int failed;

    tmpdir = g_mkdtemp(g_strdup(tmpl));
    if (!tmpdir) {
        perror("mkdtemp");
        return 1;
    }
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    {
        g_autofree char *cmd = g_strdup_printf("rm -rf '%s'", tmpdir);
        if (system(cmd) != 0) {
            /* best effort */
        }
    }
    g_free(tmpdir);
    return failed ? 1 : 0;
}

/* Whether name in jdir holds an unfinished record: a first-format
 * <txid>.rec, or a slot that starts with the record magic. */
bool live_record_file(const char *jdir, const char *name)
{
    g_autofree char *path = NULL;
    g_autofree char *data = NULL;
    gsize len = 0;

    if (g_str_has_suffix(name, ".rec")) {
        return true;
    }
    if (!g_str_has_prefix(name, "slot-")) {
        return false;
    }
    path = g_build_filename(jdir, name, NULL);
    return g_file_get_contents(path, &data, &len, NULL) && len >= 8 &&
           memcmp(data, "STRATAIR", 8) == 0;
}
