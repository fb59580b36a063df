/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Unit tests of backing chains: opening them (relative names, the
 * explicit "backing" option, read-only backing nodes, bad input), the
 * external snapshot phases and every cancel path (also under a concurrent
 * writer; the phases refused out of order, targets in use, I/O errors
 * inside a cancel).  The commit and stream jobs are in test-chain-jobs.c.
 * Content is compared with what the chain read before; images are
 * checked with our own check and, when it is installed, qemu-img check.
 */
#include "chaintest.h"

/* ------------------------------------------------------------------ */
/* Opening chains */

START_TEST(test_open_chain_relative)
{
    static const int64_t sizes[] = { 4 * MiB, 6 * MiB, 2 * MiB };
    g_autofree char *top = make_chain("rel", 3, sizes, 1);
    g_autofree char *sub = tmp_path("moved");
    g_autofree char *moved_top = NULL;
    BlockDriverState *bs = open_img(top, BDRV_O_RDWR);
    g_autofree uint8_t *before = read_all(bs, 2 * MiB);
    g_autofree uint8_t *after = NULL;

    /* backing nodes are read-only, the top is not */
    ck_assert(!bdrv_is_read_only(bs));
    for (BlockDriverState *p = bdrv_get_backing(bs); p;
         p = bdrv_get_backing(p)) {
        ck_assert(bdrv_is_read_only(p));
        ck_assert_int_eq(bdrv_pwrite(p, 0, 1, "x"), -EPERM);
    }
    ck_assert_str_eq(bdrv_get_backing_filename(bs), "rel-1.qcow2");
    bdrv_unref(bs);

    /* Relative names keep working when the whole chain moves. */
    ck_assert_int_eq(mkdir(sub, 0700), 0);
    for (int i = 0; i < 3; i++) {
        g_autofree char *from = layer_path("rel", i);
        g_autofree char *name = g_strdup_printf("moved/rel-%d.qcow2", i);
        g_autofree char *to = tmp_path(name);
        ck_assert_int_eq(rename(from, to), 0);
    }
    moved_top = tmp_path("moved/rel-2.qcow2");
    bs = open_img(moved_top, 0);
    after = read_all(bs, 2 * MiB);
    assert_same(before, after, 2 * MiB, "moved chain");
    bdrv_unref(bs);
}
END_TEST

START_TEST(test_open_backing_option)
{
    g_autofree char *base = tmp_path("opt-base.qcow2");
    g_autofree char *top = tmp_path("opt-top.qcow2");
    g_autofree char *other = tmp_path("opt-other.qcow2");
    BlockDriverState *bs, *o;
    BlockOpts *opts;
    uint8_t buf[512];

    create_img(base, 1 * MiB, NULL, NULL);
    bs = open_img(base, BDRV_O_RDWR);
    memset(buf, 0x11, sizeof(buf));
    ck_assert_int_eq(bdrv_pwrite(bs, 0, sizeof(buf), buf), 0);
    bdrv_unref(bs);
    create_img(top, 1 * MiB, "opt-base.qcow2", "qcow2");
    create_img(other, 1 * MiB, NULL, NULL);

    /* backing=null: no backing node, unallocated reads zeroes */
    opts = bdrv_opts_new();
    bdrv_opts_set(opts, "backing", "null");
    bs = bdrv_open(top, opts, 0, NULL);
    ck_assert_ptr_nonnull(bs);
    ck_assert_ptr_null(bdrv_get_backing(bs));
    ck_assert_int_eq(bdrv_pread(bs, 0, sizeof(buf), buf), 0);
    ck_assert_int_eq(buf[0], 0);
    bdrv_unref(bs);

    /* backing=<node-name>: that node, not the header's */
    opts = bdrv_opts_new();
    bdrv_opts_set(opts, "node-name", "other");
    o = bdrv_open(other, opts, 0, NULL);
    ck_assert_ptr_nonnull(o);
    opts = bdrv_opts_new();
    bdrv_opts_set(opts, "backing", "other");
    bs = bdrv_open(top, opts, 0, NULL);
    ck_assert_ptr_eq(bdrv_get_backing(bs), o);
    bdrv_unref(bs);
    bdrv_unref(o);

    opts = bdrv_opts_new();
    bdrv_opts_set(opts, "backing", "nosuchnode");
    open_fails(top, opts, "Cannot find device='' nor node-name='nosuchnode'");
    opts = bdrv_opts_new();
    bdrv_opts_set(opts, "node-name", "me");
    bdrv_opts_set(opts, "backing", "me");
    open_fails(top, opts, "cannot be its own backing node");
}
END_TEST

/* Sets the backing name recorded in path without opening its backing. */
static void set_backing_name(const char *path, const char *name,
                             const char *fmt)
{
    BlockOpts *o = bdrv_opts_new();
    GError *err = NULL;
    BlockDriverState *bs;

    bdrv_opts_set(o, "driver", "qcow2");
    bs = bdrv_open(path, o, BDRV_O_RDWR | BDRV_O_NO_BACKING, &err);
    ck_assert_msg(bs, "%s", err ? err->message : "");
    ck_assert_msg(bdrv_change_backing_file(bs, name, fmt, &err), "%s",
                  err ? err->message : "");
    bdrv_unref(bs);
}

START_TEST(test_open_bad_chains)
{
    g_autofree char *a = tmp_path("bad-a.qcow2");
    g_autofree char *b = tmp_path("bad-b.qcow2");
    g_autofree char *dir = tmp_path("bad-dir");
    g_autofree char *fifo = tmp_path("bad-fifo");
    g_autofree char *raw = tmp_path("bad.raw");
    struct stat st0, st1;

    create_img(a, 1 * MiB, NULL, NULL);
    create_img(b, 1 * MiB, "bad-a.qcow2", "qcow2");
    ck_assert_int_eq(mkdir(dir, 0700), 0);
    ck_assert_int_eq(mkfifo(fifo, 0600), 0);
    ck_assert(g_file_set_contents(raw, "not an image", -1, NULL));

    /* missing */
    set_backing_name(b, "nosuch.qcow2", "qcow2");
    ck_assert_int_eq(stat(b, &st0), 0);
    open_fails(b, NULL, "Could not open backing file: Could not open");
    /* wrong format given */
    set_backing_name(b, "bad.raw", "qcow2");
    open_fails(b, NULL, "Image is not in qcow2 format");
    /* a directory, a FIFO (must not block), a device node */
    set_backing_name(b, "bad-dir", "qcow2");
    open_fails(b, NULL, "is a directory");
    set_backing_name(b, "bad-fifo", "qcow2");
    open_fails(b, NULL, "is not a regular file");
    set_backing_name(b, "/dev/null", "raw");
    open_fails(b, NULL, "is not a regular file");
    /* a loop: a -> b -> a, and b -> b */
    set_backing_name(b, "bad-a.qcow2", "qcow2");
    set_backing_name(a, "bad-b.qcow2", "qcow2");
    open_fails(b, NULL, "backing chain loop");
    set_backing_name(b, "bad-b.qcow2", "qcow2");
    open_fails(b, NULL, "backing chain loop");
    /* failed opens (read-write too) wrote nothing */
    ck_assert_int_eq(stat(b, &st1), 0);
    ck_assert_int_eq(st0.st_size, st1.st_size);
    {
        GError *err = NULL;
        ck_assert_ptr_null(bdrv_open(b, NULL, BDRV_O_RDWR, &err));
        g_error_free(err);
    }
}
END_TEST

START_TEST(test_open_too_deep)
{
    const int n = 65;   /* one more than BDRV_MAX_CHAIN_DEPTH */
    g_autofree char *top = NULL;
    BlockDriverState *bs;
    GError *err = NULL;

    for (int i = 0; i < n; i++) {
        g_autofree char *name = g_strdup_printf("deep-%d.qcow2", i);
        g_autofree char *below = i ? g_strdup_printf("deep-%d.qcow2", i - 1)
                                   : NULL;
        g_free(top);
        top = tmp_path(name);
        create_img(top, 64 * KiB, below, "qcow2");
    }
    bs = bdrv_open(top, NULL, 0, &err);
    ck_assert_ptr_null(bs);
    /* one clear message, not one prefix per level */
    ck_assert_str_eq(err->message, "Could not open backing file: backing "
                     "chain is deeper than 64 images");
    g_error_free(err);
    /* the image one above the bottom opens: 64 images */
    {
        g_autofree char *ok = tmp_path("deep-63.qcow2");
        bs = open_img(ok, 0);
        ck_assert_int_eq(bdrv_chain_length(bs), 63);
        bdrv_unref(bs);
    }
}
END_TEST

START_TEST(test_change_backing_and_names)
{
    g_autofree char *base = tmp_path("cb-base.qcow2");
    g_autofree char *top = tmp_path("cb-top.qcow2");
    g_autofree char *dir = tmp_path("cb-sub");
    g_autofree char *deep = tmp_path("cb-sub/deep.qcow2");
    BlockDriverState *bs, *b;
    char *name;

    create_img(base, 1 * MiB, NULL, NULL);
    create_img(top, 1 * MiB, "cb-base.qcow2", "qcow2");
    ck_assert_int_eq(mkdir(dir, 0700), 0);
    create_img(deep, 1 * MiB, "../cb-base.qcow2", "qcow2");

    bs = open_img(deep, 0);
    b = bdrv_get_backing(bs);
    name = bdrv_backing_name_for(bs, b, true);
    ck_assert_str_eq(name, "../cb-base.qcow2");
    g_free(name);
    name = bdrv_backing_name_for(bs, b, false);
    ck_assert(g_path_is_absolute(name));
    ck_assert(bdrv_is_file(b, name));
    g_free(name);
    ck_assert_ptr_eq(bdrv_find_backing_image(bs, "../cb-base.qcow2"), b);
    ck_assert_ptr_eq(bdrv_find_backing_image(bs, base), b);
    ck_assert_ptr_null(bdrv_find_backing_image(bs, "nosuch"));
    /* a read-only node is reopened for the header write and back */
    ck_assert(bdrv_is_read_only(b));
    ck_assert(bdrv_change_backing_file(b, "x.qcow2", "raw", NULL));
    ck_assert(bdrv_is_read_only(b));
    ck_assert_str_eq(bdrv_get_backing_filename(b), "x.qcow2");
    ck_assert(bdrv_change_backing_file(b, NULL, NULL, NULL));
    ck_assert_ptr_null(bdrv_get_backing_filename(b));
    bdrv_unref(bs);
    check_clean(base);
    ck_assert(!bdrv_backing_name_is_relative("/a"));
    ck_assert(!bdrv_backing_name_is_relative("nbd:x"));
    ck_assert(bdrv_backing_name_is_relative("dir/a:b"));
}
END_TEST

START_TEST(test_make_empty)
{
    static const int64_t sizes[] = { 4 * MiB, 4 * MiB };
    g_autofree char *top = make_chain("empty", 2, sizes, 7);
    g_autofree char *base = layer_path("empty", 0);
    BlockDriverState *bs = open_img(top, BDRV_O_RDWR);
    BlockDriverState *b = open_img(base, 0);
    g_autofree uint8_t *want = read_all(b, 4 * MiB);
    g_autofree uint8_t *got = NULL;
    int64_t pnum;

    ck_assert(bdrv_make_empty(bs, NULL));
    ck_assert_int_eq(bdrv_block_status(bs, 0, 4 * MiB, &pnum, NULL, NULL), 0);
    ck_assert_int_eq(pnum, 4 * MiB);
    got = read_all(bs, 4 * MiB);
    assert_same(want, got, 4 * MiB, "emptied image");
    bdrv_unref(bs);
    bdrv_unref(b);
    check_clean(top);
}
END_TEST

/* ------------------------------------------------------------------ */
/* External snapshots */


START_TEST(test_snapshot_basic)
{
    g_autofree char *base = tmp_path("es-base.qcow2");
    g_autofree char *ov = tmp_path("es-ov.qcow2");
    g_autofree char *abs_base = NULL;
    BlockBackend *blk;
    BlockDriverState *old, *top;
    ExternalSnapshotParams p = { .snapshot_file = ov,
                                 .snapshot_node_name = "ov1" };
    GError *err = NULL;
    uint8_t buf[4096];

    create_img(base, 2 * MiB, NULL, NULL);
    blk = device_on(base);
    memset(buf, 0x55, sizeof(buf));
    ck_assert_int_eq(blk_pwrite(blk, 0, sizeof(buf), buf), 0);
    old = blk_bs(blk);
    ck_assert_msg(external_snapshot_run(blk, &p, &err), "%s",
                  err ? err->message : "");
    top = blk_bs(blk);
    ck_assert_ptr_ne(top, old);
    ck_assert_str_eq(bdrv_get_node_name(top), "ov1");
    ck_assert_ptr_eq(bdrv_get_backing(top), old);
    ck_assert(bdrv_is_read_only(old));
    ck_assert_int_eq(bdrv_getlength(top), 2 * MiB);
    /* absolute path and format of the old image recorded */
    abs_base = bdrv_get_absolute_filename(old);
    ck_assert_str_eq(bdrv_get_backing_filename(top), abs_base);
    ck_assert_str_eq(bdrv_get_backing_format(top), "qcow2");
    memset(buf, 0x66, sizeof(buf));
    ck_assert_int_eq(blk_pwrite(blk, 4096, sizeof(buf), buf), 0);
    blk_unref(blk);

    /* on disk: the old image has the first write only */
    top = open_img(base, 0);
    ck_assert_int_eq(bdrv_pread(top, 0, sizeof(buf), buf), 0);
    ck_assert_int_eq(buf[0], 0x55);
    ck_assert_int_eq(bdrv_pread(top, 4096, sizeof(buf), buf), 0);
    ck_assert_int_eq(buf[0], 0);
    bdrv_unref(top);
    top = open_img(ov, 0);
    ck_assert_int_eq(bdrv_pread(top, 0, sizeof(buf), buf), 0);
    ck_assert_int_eq(buf[0], 0x55);
    ck_assert_int_eq(bdrv_pread(top, 4096, sizeof(buf), buf), 0);
    ck_assert_int_eq(buf[0], 0x66);
    bdrv_unref(top);
    check_clean(base);
    check_clean(ov);
}
END_TEST


/* Whether `bs` itself (not its backing) holds write i. */
static bool holds_write(BlockDriverState *bs, int i)
{
    char buf[64] = { 0 }, want[64];
    int64_t pnum;
    int ret = bdrv_block_status(bs, (int64_t)i * SEQ_STRIDE, 4096, &pnum,
                                NULL, NULL);

    ck_assert_int_ge(ret, 0);
    if (!(ret & BDRV_BLOCK_ALLOCATED)) {
        return false;
    }
    ck_assert_int_eq(bdrv_pread(bs, (int64_t)i * SEQ_STRIDE, sizeof(buf) - 1,
                                buf), 0);
    snprintf(want, sizeof(want), "seq %d", i + 1);
    return !strcmp(buf, want);
}

START_TEST(test_snapshot_concurrent_writer)
{
    g_autofree char *base = tmp_path("cw-base.qcow2");
    g_autofree char *ov = tmp_path("cw-ov.qcow2");
    ExternalSnapshotParams p = { .snapshot_file = ov };
    SeqWriter w = { 0 };
    BlockBackend *blk;
    BlockDriverState *old, *top;
    GThread *t;
    GError *err = NULL;
    int before, after, cut = -1;

    create_img(base, SEQ_MAX * SEQ_STRIDE, NULL, NULL);
    blk = device_on(base);
    w.blk = blk;
    t = g_thread_new("writer", seq_writer, &w);
    while (g_atomic_int_get(&w.n) < SEQ_MAX / 4) {
        g_usleep(1000);
    }
    before = g_atomic_int_get(&w.n);
    ck_assert_msg(external_snapshot_run(blk, &p, &err), "%s",
                  err ? err->message : "");
    after = g_atomic_int_get(&w.n);
    g_thread_join(t);
    ck_assert_int_eq(w.n, SEQ_MAX);
    top = blk_bs(blk);
    old = bdrv_get_backing(top);

    /* A prefix of the writes is in the old image only, the rest in the
     * overlay only; the cut lies where the switch happened. */
    for (int i = 0; i < SEQ_MAX; i++) {
        bool in_old = holds_write(old, i), in_top = holds_write(top, i);
        ck_assert_msg(in_old != in_top, "write %d: old %d, overlay %d", i,
                      in_old, in_top);
        if (in_top && cut < 0) {
            cut = i;
        }
        ck_assert_msg(cut < 0 || in_top, "write %d in the old image after "
                      "write %d went to the overlay", i, cut);
    }
    ck_assert_int_ge(cut, before);
    ck_assert_int_le(cut, after + 1);
    blk_unref(blk);
    check_clean(base);
    check_clean(ov);
}
END_TEST

static char *file_digest(const char *path)
{
    g_autofree char *data = NULL;
    gsize len = 0;

    ck_assert(g_file_get_contents(path, &data, &len, NULL));
    return g_compute_checksum_for_data(G_CHECKSUM_SHA256, (guchar *)data,
                                       len);
}

static int count_files(void)
{
    GDir *d = g_dir_open(tmpdir, 0, NULL);
    int n = 0;

    while (g_dir_read_name(d)) {
        n++;
    }
    g_dir_close(d);
    return n;
}

/* After a cancel: the device writes to the old image, which is writable. */
static void assert_device_on(BlockBackend *blk, BlockDriverState *old)
{
    uint8_t buf[512];

    ck_assert_ptr_eq(blk_bs(blk), old);
    ck_assert(!bdrv_is_read_only(old));
    ck_assert_ptr_null(bdrv_get_backing(old));
    memset(buf, 0x77, sizeof(buf));
    ck_assert_int_eq(blk_pwrite(blk, 0, sizeof(buf), buf), 0);
}

/*
 * Cancel after each phase, for a new file, an existing file replaced at the
 * commit point, and mode existing without a backing link.
 * phase: 0 = after check, 1 = after do, 2 = after invalidate.
 */
static void es_cancel_case(int kind, int phase)
{
    g_autofree char *bname = g_strdup_printf("ud%d%d-base.qcow2", kind, phase);
    g_autofree char *oname = g_strdup_printf("ud%d%d-ov.qcow2", kind, phase);
    g_autofree char *base = tmp_path(bname);
    g_autofree char *ov = tmp_path(oname);
    g_autofree char *digest = NULL;
    ExternalSnapshotParams p = { .snapshot_file = ov };
    BlockBackend *blk;
    BlockDriverState *old;
    ExternalSnapshot *es;
    GError *err = NULL;
    int files;

    create_img(base, 1 * MiB, NULL, NULL);
    if (kind == 1) {
        ck_assert(g_file_set_contents(ov, "precious", -1, NULL));
    } else if (kind == 2) {
        create_img(ov, 1 * MiB, NULL, NULL);
        p.mode = EXTERNAL_SNAPSHOT_MODE_EXISTING;
    }
    digest = kind ? file_digest(ov) : NULL;
    files = count_files();
    blk = device_on(base);
    old = blk_bs(blk);
    es = external_snapshot_new(blk, &p);
    ck_assert(external_snapshot_check(es, NULL, &err));
    if (phase >= 1) {
        ck_assert_msg(external_snapshot_do(es, &err), "%s",
                      err ? err->message : "");
        ck_assert_ptr_eq(blk_bs(blk), old);
        if (kind == 1) {
            /* the existing file is untouched until the commit point */
            g_autofree char *d = file_digest(ov);
            ck_assert_str_eq(d, digest);
        }
    }
    if (phase >= 2) {
        ck_assert_msg(external_snapshot_invalidate(es, &err), "%s",
                      err ? err->message : "");
        ck_assert_ptr_ne(blk_bs(blk), old);
        /* read-only only once cleaned (see external_snapshot_clean) */
        ck_assert(!bdrv_is_read_only(old));
        if (kind == 2) {
            BlockDriverState *top = blk_bs(blk);
            ck_assert_ptr_nonnull(bdrv_get_backing_filename(top));
        }
    }
    if (phase == 0) {
        /* cancel undoes a do: there is none */
        ck_assert(!external_snapshot_cancel(es, &err));
        ck_assert_msg(strstr(err->message, "it is checked"), "%s",
                      err->message);
        g_clear_error(&err);
    } else {
        ck_assert(external_snapshot_cancel(es, &err));
    }
    external_snapshot_clean(es);
    assert_device_on(blk, old);
    blk_unref(blk);
    ck_assert_int_eq(count_files(), files);
    if (kind == 0) {
        ck_assert(!g_file_test(ov, G_FILE_TEST_EXISTS));
    } else {
        g_autofree char *d = file_digest(ov);
        ck_assert_str_eq(d, digest);
    }
    check_clean(base);
}

START_TEST(test_snapshot_cancel_each_phase)
{
    es_cancel_case(_i / 3, _i % 3);
}
END_TEST

START_TEST(test_snapshot_replace_existing)
{
    g_autofree char *base = tmp_path("rp-base.qcow2");
    g_autofree char *ov = tmp_path("rp-ov.qcow2");
    ExternalSnapshotParams p = { .snapshot_file = ov };
    BlockBackend *blk;
    GError *err = NULL;
    int files;

    create_img(base, 1 * MiB, NULL, NULL);
    ck_assert(g_file_set_contents(ov, "old content", -1, NULL));
    files = count_files();
    blk = device_on(base);
    ck_assert_msg(external_snapshot_run(blk, &p, &err), "%s",
                  err ? err->message : "");
    ck_assert_str_eq(bdrv_get_filename(blk_bs(blk)), ov);
    ck_assert_int_eq(blk_pwrite(blk, 0, 3, "abc"), 0);
    blk_unref(blk);
    /* replaced, and no hidden file left behind */
    ck_assert_int_eq(count_files(), files);
    check_clean(ov);
}
END_TEST

START_TEST(test_snapshot_bad_input)
{
    g_autofree char *base = tmp_path("bi-base.qcow2");
    g_autofree char *small = tmp_path("bi-small.qcow2");
    g_autofree char *other = tmp_path("bi-other.qcow2");
    g_autofree char *wrong = tmp_path("bi-wrong.qcow2");
    g_autofree char *good = tmp_path("bi-good.qcow2");
    g_autofree char *dir = tmp_path("bi-dir");
    g_autofree char *missing = tmp_path("bi-missing.qcow2");
    BlockBackend *blk;
    BlockDriverState *old;
    GError *err = NULL;
    struct {
        const char *file;
        ExternalSnapshotMode mode;
        const char *format;
        const char *want;
    } cases[] = {
        { small, EXTERNAL_SNAPSHOT_MODE_EXISTING, NULL, "is smaller" },
        { wrong, EXTERNAL_SNAPSHOT_MODE_EXISTING, NULL,
          "is not the current image of device 'dev0'" },
        { missing, EXTERNAL_SNAPSHOT_MODE_EXISTING, NULL,
          "No such file or directory" },
        { dir, EXTERNAL_SNAPSHOT_MODE_ABSOLUTE_PATHS, NULL,
          "is not a regular file" },
        { base, EXTERNAL_SNAPSHOT_MODE_ABSOLUTE_PATHS, NULL,
          "The overlay is already in use" },
        { base, EXTERNAL_SNAPSHOT_MODE_EXISTING, NULL,
          "The overlay is already in use" },
        { good, EXTERNAL_SNAPSHOT_MODE_ABSOLUTE_PATHS, "raw",
          "Backing file not supported for file format 'raw'" },
        { good, EXTERNAL_SNAPSHOT_MODE_ABSOLUTE_PATHS, "nosuchfmt",
          "Unknown file format 'nosuchfmt'" },
        { "", EXTERNAL_SNAPSHOT_MODE_ABSOLUTE_PATHS, NULL,
          "Parameter 'snapshot-file' is missing" },
    };
    int files;

    create_img(base, 2 * MiB, NULL, NULL);
    create_img(small, 1 * MiB, NULL, NULL);
    create_img(other, 2 * MiB, NULL, NULL);
    create_img(wrong, 2 * MiB, "bi-other.qcow2", "qcow2");
    ck_assert_int_eq(mkdir(dir, 0700), 0);
    files = count_files();
    blk = device_on(base);
    old = blk_bs(blk);
    for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
        ExternalSnapshotParams p = { .snapshot_file = cases[i].file,
                                     .mode = cases[i].mode,
                                     .format = cases[i].format };
        ck_assert(!external_snapshot_run(blk, &p, &err));
        ck_assert_msg(strstr(err->message, cases[i].want),
                      "case %zu: '%s' lacks '%s'", i, err->message,
                      cases[i].want);
        g_clear_error(&err);
        assert_device_on(blk, old);
    }
    /* the node name is taken */
    {
        ExternalSnapshotParams p = { .snapshot_file = good,
                                     .snapshot_node_name =
                                         bdrv_get_node_name(old) };
        ck_assert(!external_snapshot_run(blk, &p, &err));
        ck_assert_str_eq(err->message, "New overlay node-name already in use");
        g_clear_error(&err);
    }
    ck_assert_int_eq(count_files(), files);
    blk_unref(blk);
}
END_TEST

START_TEST(test_snapshot_existing_with_link)
{
    g_autofree char *base = tmp_path("ex-base.qcow2");
    g_autofree char *ov = tmp_path("ex-ov.qcow2");
    ExternalSnapshotParams p = { .snapshot_file = ov,
                                 .mode = EXTERNAL_SNAPSHOT_MODE_EXISTING };
    BlockBackend *blk;
    GError *err = NULL;

    create_img(base, 2 * MiB, NULL, NULL);
    /* larger than the device, recording it by a relative name */
    create_img(ov, 4 * MiB, "ex-base.qcow2", "qcow2");
    blk = device_on(base);
    ck_assert_msg(external_snapshot_run(blk, &p, &err), "%s",
                  err ? err->message : "");
    ck_assert_str_eq(bdrv_get_backing_filename(blk_bs(blk)), "ex-base.qcow2");
    ck_assert_int_eq(blk_getlength(blk), 4 * MiB);
    blk_unref(blk);
}
END_TEST

START_TEST(test_snapshot_busy_device)
{
    static const int64_t sizes[] = { 4 * MiB, 4 * MiB };
    g_autofree char *top = make_chain("busy", 2, sizes, 3);
    g_autofree char *ov = tmp_path("busy-ov.qcow2");
    BlockBackend *blk = device_on(top);
    CommitOptions co = { .job.speed = 1 * MiB };
    ExternalSnapshotParams p = { .snapshot_file = ov };
    GError *err = NULL;
    BlockJob *job;

    BlockDriverState *root = blk_bs(blk), *below = bdrv_get_backing(root);
    BdrvSnapshotInfo t = { .name = (char *)"s",
                           .icount = BDRV_SNAPSHOT_NO_ICOUNT };
    g_autofree char *want_root = g_strdup_printf(
        "Node '%s' is busy: block device is in use by block job: commit",
        bdrv_get_node_name(root));
    g_autofree char *want_below = g_strdup_printf(
        "Node '%s' is busy: block device is in use by block job: commit",
        bdrv_get_node_name(below));
    BdrvSnapshotOp *op;

    /* an internal snapshot checked before the job starts */
    op = bdrv_snapshot_create_check(root, &t, 0, &err);
    ck_assert_msg(op, "%s", err ? err->message : "");
    job = commit_start("job0", blk, NULL, NULL, &co, &err);
    ck_assert_ptr_nonnull(job);
    ck_assert(!external_snapshot_run(blk, &p, &err));
    ck_assert_msg(strstr(err->message, "is busy: block device is in use by "
                         "block job: commit"), "%s", err->message);
    g_clear_error(&err);
    ck_assert_ptr_null(commit_start("job1", blk, NULL, NULL, &co, &err));
    g_clear_error(&err);
    /* internal snapshots on any node of the chain: QEMU's text */
    ck_assert_int_eq(bdrv_snapshot_create(root, &t, 0, NULL, &err), -EBUSY);
    ck_assert_str_eq(err->message, want_root);
    g_clear_error(&err);
    ck_assert_ptr_null(bdrv_snapshot_delete_check(below, NULL, "s", &err));
    ck_assert_str_eq(err->message, want_below);
    g_clear_error(&err);
    bdrv_drained_begin(root);
    ck_assert_int_eq(bdrv_snapshot_op_do(op, &err), -EBUSY);
    bdrv_drained_end(root);
    ck_assert_str_eq(err->message, want_root);
    g_clear_error(&err);
    ck_assert_int_eq(bdrv_snapshot_op_clean(op, NULL), 0);
    block_job_cancel(job);
    ck_assert_int_eq(block_job_wait(job, NULL), -ECANCELED);
    /* free again once the job is over */
    ck_assert_msg(bdrv_snapshot_create(blk_bs(blk), &t, 0, NULL, &err) == 0,
                  "%s", err ? err->message : "");
    {
        BdrvSnapshotInfo *l;
        int n = bdrv_snapshot_list(blk_bs(blk), &l, NULL);
        ck_assert_int_eq(n, 1);
        bdrv_snapshot_list_free(l, n);
    }
    blk_unref(blk);
}
END_TEST

static gint cmp_names(gconstpointer a, gconstpointer b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Digests of every file in the scratch directory, sorted by name. */
static char *dir_digest(void)
{
    GDir *d = g_dir_open(tmpdir, 0, NULL);
    GPtrArray *names = g_ptr_array_new_with_free_func(g_free);
    GString *g = g_string_new("");
    const char *n;

    while ((n = g_dir_read_name(d))) {
        g_ptr_array_add(names, g_strdup(n));
    }
    g_dir_close(d);
    g_ptr_array_sort(names, cmp_names);
    for (guint i = 0; i < names->len; i++) {
        const char *name = g_ptr_array_index(names, i);
        g_autofree char *path = tmp_path(name);
        if (g_file_test(path, G_FILE_TEST_IS_REGULAR)) {
            g_autofree char *dg = file_digest(path);
            g_string_append_printf(g, "%s=%s\n", name, dg);
        } else {
            g_string_append_printf(g, "%s\n", name);
        }
    }
    g_ptr_array_unref(names);
    return g_string_free(g, FALSE);
}

/*
 * A target that is an image open anywhere in this process -- another
 * device's image, a backing file of another chain, by another name -- or
 * a target named twice in one set of operations: refused by check, and
 * no file changes (none renamed, created or unlinked).
 */
START_TEST(test_snapshot_target_in_use)
{
    g_autofree char *a = tmp_path("iu-a.qcow2");
    g_autofree char *bbase = tmp_path("iu-b-base.qcow2");
    g_autofree char *btop = tmp_path("iu-b-top.qcow2");
    g_autofree char *blink = tmp_path("iu-b-link.qcow2");
    g_autofree char *spare = tmp_path("iu-spare.qcow2");
    g_autofree char *x = tmp_path("iu-x.qcow2");
    g_autofree char *x_other = g_strdup_printf("%s/./iu-x.qcow2", tmpdir);
    g_autofree char *f = tmp_path("iu-f.qcow2");
    g_autofree char *flink = tmp_path("iu-f-link.qcow2");
    g_autofree char *before = NULL, *after = NULL;
    BlockBackend *dev0, *dev1;
    BlockDriverState *old0, *old1, *loose;
    GError *err = NULL;
    struct {
        const char *file;
        ExternalSnapshotMode mode;
        const char *want;
    } cases[] = {
        { btop, EXTERNAL_SNAPSHOT_MODE_ABSOLUTE_PATHS, "is in use: node" },
        { btop, EXTERNAL_SNAPSHOT_MODE_EXISTING, "is in use: node" },
        { bbase, EXTERNAL_SNAPSHOT_MODE_ABSOLUTE_PATHS, "is in use: node" },
        { bbase, EXTERNAL_SNAPSHOT_MODE_EXISTING, "is in use: node" },
        { blink, EXTERNAL_SNAPSHOT_MODE_ABSOLUTE_PATHS, "is in use: node" },
        { spare, EXTERNAL_SNAPSHOT_MODE_ABSOLUTE_PATHS, "is in use: node" },
    };

    create_img(a, 2 * MiB, NULL, NULL);
    create_img(bbase, 2 * MiB, NULL, NULL);
    create_img(btop, 2 * MiB, "iu-b-base.qcow2", "qcow2");
    create_img(spare, 2 * MiB, NULL, NULL);
    ck_assert_int_eq(link(btop, blink), 0);
    ck_assert(g_file_set_contents(f, "keep me", -1, NULL));
    ck_assert_int_eq(link(f, flink), 0);
    dev0 = device_on(a);
    dev1 = blk_new("dev1", open_img(btop, BDRV_O_RDWR));
    bdrv_unref(blk_bs(dev1));
    loose = open_img(spare, 0);       /* a node of no device */
    old0 = blk_bs(dev0);
    old1 = blk_bs(dev1);
    before = dir_digest();
    for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
        ExternalSnapshotParams p = { .snapshot_file = cases[i].file,
                                     .mode = cases[i].mode };
        ck_assert(!external_snapshot_run(dev0, &p, &err));
        ck_assert_msg(strstr(err->message, cases[i].want),
                      "case %zu: '%s' lacks '%s'", i, err->message,
                      cases[i].want);
        g_clear_error(&err);
        /* (no write: the files are compared at the end) */
        ck_assert_ptr_eq(blk_bs(dev0), old0);
        ck_assert(!bdrv_is_read_only(old0));
    }

    /* one set of operations naming one target twice, by two names */
    {
        ExternalSnapshotTargets *set = external_snapshot_targets_new();
        ExternalSnapshotParams p0 = { .snapshot_file = x };
        ExternalSnapshotParams p1 = { .snapshot_file = x_other };
        ExternalSnapshot *e0 = external_snapshot_new(dev0, &p0);
        ExternalSnapshot *e1 = external_snapshot_new(dev1, &p1);

        ck_assert_msg(external_snapshot_check(e0, set, &err), "%s",
                      err ? err->message : "");
        ck_assert(!external_snapshot_check(e1, set, &err));
        ck_assert_msg(strstr(err->message, "is named twice"), "%s",
                      err->message);
        g_clear_error(&err);
        /* a refused check leaves only clean */
        ck_assert(!external_snapshot_do(e1, &err));
        g_clear_error(&err);
        external_snapshot_clean(e1);
        external_snapshot_clean(e0);
        external_snapshot_targets_free(set);
    }
    /* an existing file twice (through a hard link) */
    {
        ExternalSnapshotTargets *set = external_snapshot_targets_new();
        ExternalSnapshotParams p0 = { .snapshot_file = f };
        ExternalSnapshotParams p1 = { .snapshot_file = flink };
        ExternalSnapshot *e0, *e1;

        e0 = external_snapshot_new(dev0, &p0);
        e1 = external_snapshot_new(dev1, &p1);
        ck_assert(external_snapshot_check(e0, set, &err));
        ck_assert(!external_snapshot_check(e1, set, &err));
        ck_assert_msg(strstr(err->message, "is named twice"), "%s",
                      err->message);
        g_clear_error(&err);
        external_snapshot_clean(e1);
        external_snapshot_clean(e0);
        external_snapshot_targets_free(set);
    }
    after = dir_digest();
    if (strcmp(before, after)) {
        g_auto(GStrv) b = g_strsplit(before, "\n", -1);
        g_auto(GStrv) c = g_strsplit(after, "\n", -1);
        for (int i = 0; b[i] && c[i]; i++) {
            ck_assert_msg(!strcmp(b[i], c[i]), "changed: %.60s -> %.60s",
                          b[i], c[i]);
        }
        ck_abort_msg("files appeared or went away");
    }
    assert_device_on(dev0, old0);
    ck_assert_ptr_eq(blk_bs(dev1), old1);
    bdrv_unref(loose);
    blk_unref(dev0);
    blk_unref(dev1);
    check_clean(a);
    check_clean(btop);
    check_clean(bbase);
}
END_TEST

/* Each phase once, in order; anything else is refused and changes
 * nothing. */
START_TEST(test_snapshot_phase_order)
{
    g_autofree char *base = tmp_path("po-base.qcow2");
    g_autofree char *ov = tmp_path("po-ov.qcow2");
    ExternalSnapshotParams p = { .snapshot_file = ov };
    BlockBackend *blk;
    BlockDriverState *old;
    ExternalSnapshot *es;
    GError *err = NULL;
    int files;

    create_img(base, 1 * MiB, NULL, NULL);
    files = count_files();
    blk = device_on(base);
    old = blk_bs(blk);
    es = external_snapshot_new(blk, &p);
#define REFUSED(call, why)                                                \
    do {                                                                  \
        ck_assert(!(call));                                               \
        ck_assert_msg(err && strstr(err->message, why), "%s: %s", #call,  \
                      err ? err->message : "no error");                   \
        g_clear_error(&err);                                              \
    } while (0)
    REFUSED(external_snapshot_do(es, &err), "it is not checked");
    REFUSED(external_snapshot_invalidate(es, &err), "it is not checked");
    REFUSED(external_snapshot_cancel(es, &err), "it is not checked");
    ck_assert(external_snapshot_check(es, NULL, &err));
    REFUSED(external_snapshot_check(es, NULL, &err), "it is checked");
    REFUSED(external_snapshot_invalidate(es, &err), "it is checked");
    REFUSED(external_snapshot_cancel(es, &err), "it is checked");
    ck_assert_int_eq(count_files(), files);
    ck_assert(external_snapshot_do(es, &err));
    REFUSED(external_snapshot_do(es, &err), "it is done");
    ck_assert(external_snapshot_invalidate(es, &err));
    REFUSED(external_snapshot_invalidate(es, &err), "it is invalidated");
    REFUSED(external_snapshot_do(es, &err), "it is invalidated");
    ck_assert(external_snapshot_cancel(es, &err));
    REFUSED(external_snapshot_cancel(es, &err), "it is cancelled");
    REFUSED(external_snapshot_invalidate(es, &err), "it is cancelled");
#undef REFUSED
    external_snapshot_clean(es);
    assert_device_on(blk, old);
    blk_unref(blk);
    ck_assert_int_eq(count_files(), files);
    ck_assert(!g_file_test(ov, G_FILE_TEST_EXISTS));
    check_clean(base);
}
END_TEST

static void capture_log(StrataLogLevel level, const char *msg, void *opaque)
{
    g_string_append_printf(opaque, "%d:%s\n", level, msg);
}

/*
 * Cancel after invalidate with an I/O error at each write and flush the
 * cancel makes (blockdev-snapshot of an overlay node, whose backing link
 * invalidate wrote and cancel takes back): the cancel reports it, the
 * device is back on its old image all the same, the error the caller
 * already held stays exactly as it was, and the cancel error is logged.
 */
START_TEST(test_snapshot_cancel_faults)
{
    g_autofree char *base = tmp_path("cf-base.qcow2");
    g_autofree char *ov = tmp_path("cf-ov.qcow2");
    uint64_t at_invalidate = 0, at_end = 0, tried = 0;

    create_img(base, 1 * MiB, NULL, NULL);
    for (uint64_t n = 0;; n++) {
        g_autofree char *o = NULL;
        g_autoptr(GString) log = g_string_new("");
        BlockOpts *opts;
        BlockBackend *blk;
        BlockDriverState *old, *node;
        ExternalSnapshot *es;
        ExternalSnapshotParams p = { 0 };
        BlkdebugCounts c;
        StrataLogFunc *prev;
        GError *err = NULL;
        bool ok;

        if (n > 0 && at_invalidate + n > at_end) {
            break;
        }
        create_img(ov, 1 * MiB, NULL, NULL);
        opts = bdrv_opts_new();
        bdrv_opts_set(opts, "driver", "qcow2");
        bdrv_opts_set(opts, "file.driver", "blkdebug");
        if (n > 0) {
            o = g_strdup_printf("%" G_GUINT64_FORMAT, at_invalidate + n);
            bdrv_opts_set(opts, "file.inject-error.any", o);
        }
        node = bdrv_open(ov, opts, BDRV_O_RDWR, &err);
        ck_assert_msg(node, "%s", err ? err->message : "");
        p.overlay = node;
        blk = device_on(base);
        old = blk_bs(blk);
        es = external_snapshot_new(blk, &p);
        ck_assert(external_snapshot_check(es, NULL, &err));
        ck_assert(external_snapshot_do(es, &err));
        ck_assert_msg(external_snapshot_invalidate(es, &err), "%s",
                      err ? err->message : "");
        ck_assert(blkdebug_get_counts(bdrv_get_file(node), &c));
        if (n == 0) {
            at_invalidate = c.writes + c.flushes;
        }
        ck_assert_str_eq(bdrv_get_backing_filename(node), base);
        /* the error that made the caller cancel */
        g_set_error(&err, BDRV_ERROR, BDRV_ERROR_GENERIC, "the first error");
        prev = strata_log_set_sink(capture_log, log);
        ok = external_snapshot_cancel(es, &err);
        strata_log_set_sink(prev, NULL);
        ck_assert_str_eq(err->message, "the first error");
        g_clear_error(&err);
        ck_assert(blkdebug_get_counts(bdrv_get_file(node), &c));
        if (n == 0) {
            ck_assert(ok);
            at_end = c.writes + c.flushes;
            ck_assert_uint_gt(at_end, at_invalidate);   /* cancel writes */
        } else {
            ck_assert_msg(!ok && c.injected, "fault %" G_GUINT64_FORMAT
                          " of the cancel not reported", n);
            ck_assert_msg(strstr(log->str, "external snapshot cancel"),
                          "not logged: %s", log->str);
            tried++;
        }
        external_snapshot_clean(es);
        assert_device_on(blk, old);
        blk_unref(blk);
        bdrv_unref(node);
        check_clean(base);
    }
    ck_assert_uint_gt(tried, 0);
}
END_TEST

static Suite *chain_suite(void)
{
    Suite *s = suite_create("chain");
    TCase *open = tcase_create("open");
    TCase *snap = tcase_create("external-snapshot");

    tcase_add_test(open, test_open_chain_relative);
    tcase_add_test(open, test_open_backing_option);
    tcase_add_test(open, test_open_bad_chains);
    tcase_add_test(open, test_open_too_deep);
    tcase_add_test(open, test_change_backing_and_names);
    tcase_add_test(open, test_make_empty);
    suite_add_tcase(s, open);

    tcase_add_test(snap, test_snapshot_basic);
    tcase_add_test(snap, test_snapshot_concurrent_writer);
    tcase_add_loop_test(snap, test_snapshot_cancel_each_phase, 0, 9);
    tcase_add_test(snap, test_snapshot_replace_existing);
    tcase_add_test(snap, test_snapshot_bad_input);
    tcase_add_test(snap, test_snapshot_existing_with_link);
    tcase_add_test(snap, test_snapshot_busy_device);
    tcase_add_test(snap, test_snapshot_target_in_use);
    tcase_add_test(snap, test_snapshot_phase_order);
    tcase_add_test(snap, test_snapshot_cancel_faults);
    suite_add_tcase(s, snap);
    return s;
}

int main(void)
{
    return chaintest_run(chain_suite());
}
