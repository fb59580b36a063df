/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The intent log of crash-atomic transactions (issue 14): records (round
 * trip, torn and corrupt ones), the qcow2 intent extension, recovery on 2
 * and 4 images (roll forward, discard, moved and copied images, missing
 * and corrupt journal), and the power-cut filter run at every write of a
 * transaction and of its recovery, in both of its models.
 *
 * The "engine" here is a model of what the transaction engine will do
 * (see include/blockdev/intent-log.h): per image an internal snapshot
 * through the phase API, the intent extension set before do, the record
 * committed after every do and flush, then publishing, clearing, done.
 */
#include <fcntl.h>
#include <inttypes.h>
#include <glib/gstdio.h>

#include "chaintest.h"
#include "block/fault-inject.h"
#include "block/qcow2-intent.h"
#include "blockdev/intent-log.h"

#define IMG_SIZE (1 * MiB)
#define MAX_IMGS 4

typedef enum {
    STOP_NONE,          /* the whole transaction */
    STOP_AFTER_DO,      /* power cut once every do has run */
    STOP_AFTER_COMMIT,  /* power cut once the record is durable */
    STOP_AFTER_FIRST,   /* power cut once the first image is published */
} StopAt;

typedef struct Case {
    int n;
    char *dir, *jdir;
    char *paths[MAX_IMGS];
    uint8_t *data[MAX_IMGS];        /* the active content, never changes */
    uint8_t hdr_new[MAX_IMGS][12];  /* bytes 60..71 once "s1" is there */
    /* mixed cases: odd images get an external snapshot instead, an
     * overlay created as DIR/dI.tmp and published by renaming it to
     * DIR/dI.ovl.qcow2 */
    bool mixed;
    char *tmp[MAX_IMGS], *ovl[MAX_IMGS];
} Case;

static bool is_external(const Case *c, int i)
{
    return c->mixed && (i & 1);
}

static void write_file(const char *path, const void *buf, size_t len)
{
    GError *err = NULL;

    ck_assert_msg(g_file_set_contents(path, buf, len, &err), "%s",
                  err ? err->message : "");
}

static uint8_t *file_bytes(const char *path, gsize *len)
{
    char *buf = NULL;
    GError *err = NULL;

    ck_assert_msg(g_file_get_contents(path, &buf, len, &err), "%s",
                  err ? err->message : "");
    return (uint8_t *)buf;
}

/* Header bytes 60..71 (nb_snapshots, snapshots_offset) of the file. */
static void hdr_bytes(const char *path, uint8_t *out)
{
    int fd = open(path, O_RDONLY);

    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(pread(fd, out, 12, 60), 12);
    close(fd);
}

/* What "s1" makes of header bytes 60..71 of path, learnt on a copy:
 * allocation is deterministic, and the real run asserts the same bytes. */
static void predict_header(const char *path, uint8_t *out)
{
    g_autofree char *copy = g_strconcat(path, ".predict", NULL);
    gsize len;
    g_autofree uint8_t *bytes = file_bytes(path, &len);
    BdrvSnapshotInfo tmpl = { .name = (char *)"s1" };
    BlockDriverState *bs;
    BdrvSnapshotOp *op;
    GError *err = NULL;

    write_file(copy, bytes, len);
    bs = open_img(copy, BDRV_O_RDWR);
    bdrv_drained_begin(bs);
    op = bdrv_snapshot_create_check(bs, &tmpl, 0, &err);
    ck_assert_msg(op, "%s", err ? err->message : "");
    ck_assert_int_eq(bdrv_snapshot_op_do(op, NULL), 0);
    ck_assert_int_eq(bdrv_snapshot_op_invalidate(op, NULL), 0);
    ck_assert_int_eq(bdrv_snapshot_op_clean(op, NULL), 0);
    bdrv_drained_end(bs);
    bdrv_unref(bs);
    hdr_bytes(copy, out);
    unlink(copy);
}

static Case *case_new_mixed(const char *tag, int n, unsigned seed,
                            bool mixed)
{
    Case *c = g_new0(Case, 1);
    g_autoptr(GRand) r = g_rand_new_with_seed(seed);
    g_autofree char *d = tmp_path(tag);

    c->n = n;
    c->dir = g_build_filename(d, "imgs", NULL);
    c->jdir = g_build_filename(d, "journal", NULL);
    ck_assert_int_eq(g_mkdir_with_parents(c->dir, 0700), 0);
    for (int i = 0; i < n; i++) {
        BlockDriverState *bs;
        c->paths[i] = g_strdup_printf("%s/d%d.qcow2", c->dir, i);
        create_img(c->paths[i], IMG_SIZE, NULL, NULL);
        bs = open_img(c->paths[i], BDRV_O_RDWR);
        fill_random(bs, r, 6);
        c->data[i] = read_all(bs, IMG_SIZE);
        bdrv_unref(bs);
        c->mixed = mixed;
        c->tmp[i] = g_strdup_printf("%s/d%d.tmp", c->dir, i);
        c->ovl[i] = g_strdup_printf("%s/d%d.ovl.qcow2", c->dir, i);
        if (!is_external(c, i)) {
            predict_header(c->paths[i], c->hdr_new[i]);
        }
    }
    return c;
}

static Case *case_new(const char *tag, int n, unsigned seed)
{
    return case_new_mixed(tag, n, seed, false);
}

static void case_free(Case *c)
{
    g_autofree char *cmd = NULL;
    g_autofree char *parent = g_path_get_dirname(c->dir);

    cmd = g_strdup_printf("rm -rf '%s'", parent);
    ck_assert_int_eq(system(cmd), 0);
    for (int i = 0; i < c->n; i++) {
        g_free(c->paths[i]);
        g_free(c->data[i]);
        g_free(c->tmp[i]);
        g_free(c->ovl[i]);
    }
    g_free(c->dir);
    g_free(c->jdir);
    g_free(c);
}

/* A step of the model engine: before the power cut it must succeed;
 * after it the process does not know yet and goes on, errors included. */
#define STEP(expr) do {                                                  \
        GError *err_ = NULL;                                             \
        GError **errp = &err_;                                           \
        int r_ = (expr);                                                 \
        (void)errp;                                                 \
        ck_assert_msg(r_ >= 0 || power_cut_fired(), "%s: %s", #expr,     \
                      err_ ? err_->message : "");                        \
        g_clear_error(&err_);                                            \
    } while (0)

static void maybe_cut(StopAt stop, StopAt here)
{
    if (stop == here) {
        power_cut_now();
    }
}

/* One crash-atomic internal snapshot "s1" of every image. */
static void run_txn(Case *c, StopAt stop)
{
    BlockDriverState *bs[MAX_IMGS];
    BdrvSnapshotOp *op[MAX_IMGS];
    BdrvSnapshotInfo tmpl = { .name = (char *)"s1" };
    g_autoptr(IntentLog) log = NULL;
    g_autoptr(IntentRecord) rec = NULL;
    g_autoptr(Qcow2Intent) ext = NULL;
    GError *err = NULL;

    log = intent_log_open(c->jdir, &err);
    ck_assert_msg(log, "%s", err ? err->message : "");
    rec = intent_record_begin(log);
    ext = intent_record_extension(rec);
    for (int i = 0; i < c->n; i++) {
        if (is_external(c, i)) {
            /* do: the overlay, under its temporary name, marked */
            BlockOpts *o = bdrv_opts_new();
            g_autofree char *sz = g_strdup_printf("%lld", IMG_SIZE);
            bool made;

            bdrv_opts_set(o, "size", sz);
            bdrv_opts_set(o, "backing_file", c->paths[i]);
            bdrv_opts_set(o, "backing_fmt", "qcow2");
            made = bdrv_create("qcow2", c->tmp[i], o, NULL);
            g_hash_table_unref(o);
            ck_assert(made || power_cut_fired());
            bs[i] = bdrv_open(c->tmp[i], NULL,
                              BDRV_O_RDWR | BDRV_O_NO_BACKING, NULL);
            ck_assert(bs[i] || power_cut_fired());
            STEP(intent_record_add_image(rec, c->tmp[i], errp));
            if (bs[i]) {
                STEP(qcow2_intent_set(bs[i], ext, errp));
                /* as the engine: every extension is durable before the
                 * commit (recovery acts only on images carrying it) */
                STEP(bdrv_flush(bs[i]));
            }
            ck_assert(intent_record_add_rename(rec, i, c->tmp[i], c->ovl[i],
                                               NULL) || power_cut_fired());
            op[i] = NULL;
            continue;
        }
        bs[i] = open_img(c->paths[i], BDRV_O_RDWR);
        /* after a cut an overlay before it may be missing from the record
         * (nothing of it reaches the disk any more anyway) */
        ck_assert(intent_record_add_image(rec, c->paths[i], NULL) == i ||
                  power_cut_fired());
        STEP(qcow2_intent_set(bs[i], ext, errp));
        bdrv_drained_begin(bs[i]);
        op[i] = bdrv_snapshot_create_check(bs[i], &tmpl, 0, &err);
        ck_assert_msg(op[i], "%s", err ? err->message : "");
    }
    for (int i = 0; i < c->n; i++) {
        uint8_t old[12];
        if (is_external(c, i)) {
            continue;
        }
        hdr_bytes(c->paths[i], old);
        STEP(bdrv_snapshot_op_do(op[i], errp));
        /* the record says "complete": what it points to must be durable */
        STEP(bdrv_flush(bs[i]));
        ck_assert(intent_record_add_header(rec, i, 60, old, c->hdr_new[i],
                                           12, NULL) || power_cut_fired());
    }
    maybe_cut(stop, STOP_AFTER_DO);
    STEP(intent_record_commit(rec, errp));
    maybe_cut(stop, STOP_AFTER_COMMIT);
    for (int i = 0; i < c->n; i++) {
        uint8_t now[12];
        if (is_external(c, i)) {
            /* publish: the rename, as a directory change the filter
             * counts (the engine will fsync the directory after it) */
            if (!power_cut_dir_op()) {
                ck_assert_int_eq(rename(c->tmp[i], c->ovl[i]), 0);
            }
            maybe_cut(stop, STOP_AFTER_FIRST);
            continue;
        }
        STEP(bdrv_snapshot_op_invalidate(op[i], errp));
        if (!power_cut_fired()) {
            hdr_bytes(c->paths[i], now);
            ck_assert_msg(memcmp(now, c->hdr_new[i], 12) == 0,
                          "the record's header bytes are not what "
                          "invalidate wrote");
        }
        maybe_cut(stop, STOP_AFTER_FIRST);
    }
    for (int i = 0; i < c->n; i++) {
        if (bs[i]) {
            STEP(qcow2_intent_clear(bs[i], errp));
        }
    }
    STEP(intent_record_done(rec, errp));
    for (int i = 0; i < c->n; i++) {
        if (op[i]) {
            STEP(bdrv_snapshot_op_clean(op[i], errp));
            bdrv_drained_end(bs[i]);
        }
        if (bs[i]) {
            bdrv_unref(bs[i]);
        }
    }
}

static bool has_s1(BlockDriverState *bs)
{
    BdrvSnapshotInfo *list = NULL;
    int n = bdrv_snapshot_list(bs, &list, NULL);
    bool found = false;

    ck_assert_int_ge(n, 0);
    for (int i = 0; i < n; i++) {
        found |= strcmp(list[i].name, "s1") == 0;
    }
    ck_assert_int_le(n, 1);
    bdrv_snapshot_list_free(list, n);
    return found;
}

static Qcow2IntentState open_state(const char *path, int flags)
{
    BlockDriverState *bs = open_img(path, flags);
    Qcow2IntentInfo info;
    Qcow2IntentState st;

    ck_assert(qcow2_intent_query(bs, &info));
    st = info.state;
    qcow2_intent_info_clear(&info);
    bdrv_unref(bs);
    return st;
}

/*
 * Opens every image read-write (which recovers), then asserts all or
 * nothing: every image has "s1" or none has, the content is intact, no
 * extension is left, and each checks clean with no leak (ours and
 * qemu-img's).  Returns whether the transaction happened.
 */
static bool record_present(Case *c)
{
    g_autoptr(GDir) d = g_dir_open(c->jdir, 0, NULL);
    const char *name;

    while (d && (name = g_dir_read_name(d))) {
        if (live_record_file(c->jdir, name)) {
            return true;
        }
    }
    return false;
}

static bool assert_all_or_nothing(Case *c, const char *what)
{
    int with = 0;

    for (int i = 0; i < c->n; i++) {
        BlockDriverState *bs;
        g_autofree uint8_t *now = NULL;
        Qcow2IntentInfo info;

        if (is_external(c, i)) {
            if (g_file_test(c->tmp[i], G_FILE_TEST_EXISTS)) {
                /* recovers: renames it (roll forward) or discards */
                BlockDriverState *t = bdrv_open(c->tmp[i], NULL,
                                                BDRV_O_RDWR |
                                                BDRV_O_NO_BACKING, NULL);
                if (t) {
                    bdrv_unref(t);
                } else {
                    /* a torn overlay is only acceptable when no record
                     * could ever publish it */
                    ck_assert_msg(!record_present(c), "%s: overlay %d "
                                  "unreadable with a record", what, i);
                }
            }
            if (!g_file_test(c->ovl[i], G_FILE_TEST_EXISTS)) {
                check_clean(c->paths[i]);
                continue;           /* the old state: no overlay */
            }
            with++;
            bs = open_img(c->ovl[i], BDRV_O_RDWR);
            now = read_all(bs, IMG_SIZE);
            assert_same(c->data[i], now, IMG_SIZE, what);
            bdrv_unref(bs);
            ck_assert_int_eq(open_state(c->ovl[i], 0), QCOW2_INTENT_NONE);
            check_clean(c->ovl[i]);
            check_clean(c->paths[i]);
            continue;
        }
        bs = open_img(c->paths[i], BDRV_O_RDWR);
        now = read_all(bs, IMG_SIZE);
        with += has_s1(bs);
        assert_same(c->data[i], now, IMG_SIZE, what);
        bdrv_unref(bs);
        bs = open_img(c->paths[i], 0);
        ck_assert(qcow2_intent_query(bs, &info));
        ck_assert_msg(info.state == QCOW2_INTENT_NONE,
                      "%s: image %d still carries the extension", what, i);
        qcow2_intent_info_clear(&info);
        bdrv_unref(bs);
        check_clean(c->paths[i]);
    }
    ck_assert_msg(with == 0 || with == c->n,
                  "%s: %d of %d images have the snapshot", what, with, c->n);
    return with == c->n;
}

static int journal_files(Case *c)
{
    g_autoptr(GDir) d = g_dir_open(c->jdir, 0, NULL);
    int n = 0;

    while (d && g_dir_read_name(d)) {
        n++;
    }
    return n;
}

/* ---- records ---- */

START_TEST(test_record_roundtrip)
{
    g_autofree char *jdir = tmp_path("rt-journal");
    g_autofree char *a = tmp_path("rt-a"), *b = tmp_path("rt-b");
    g_autoptr(IntentLog) log = NULL;
    g_autoptr(IntentRecord) rec = NULL, back = NULL, disk = NULL;
    g_autoptr(GBytes) bytes = NULL;
    g_autoptr(GPtrArray) scan = NULL;
    GError *err = NULL;
    uint8_t o[5] = "old!", n[5] = "new!";
    gsize len;
    const void *data;
    struct stat st;

    write_file(a, "a", 1);
    write_file(b, "b", 1);
    log = intent_log_open(jdir, &err);
    ck_assert_msg(log, "%s", err ? err->message : "");
    rec = intent_record_begin(log);
    ck_assert_int_eq(intent_record_add_image(rec, a, NULL), 0);
    ck_assert_int_eq(intent_record_add_image(rec, b, NULL), 1);
    ck_assert_int_eq(intent_record_add_image(rec, a, &err), -EEXIST);
    g_clear_error(&err);
    ck_assert(intent_record_add_header(rec, 0, 60, o, n, 4, NULL));
    ck_assert(intent_record_add_rename(rec, 1, b, "/x/y.qcow2", NULL));
    ck_assert(!intent_record_add_header(rec, 2, 0, o, n, 4, &err));
    g_clear_error(&err);

    bytes = intent_record_serialize(rec);
    data = g_bytes_get_data(bytes, &len);
    back = intent_record_parse(data, len, &err);
    ck_assert_msg(back, "%s", err ? err->message : "");
    ck_assert(memcmp(back->txid, rec->txid, 16) == 0);
    ck_assert(memcmp(back->journal_id, rec->journal_id, 16) == 0);
    ck_assert_int_eq(back->images->len, 2);
    {
        IntentImage *i0 = g_ptr_array_index(back->images, 0);
        IntentImage *i1 = g_ptr_array_index(back->images, 1);
        IntentOp *h = g_ptr_array_index(i0->ops, 0);
        IntentOp *r = g_ptr_array_index(i1->ops, 0);
        ck_assert_int_eq(stat(a, &st), 0);
        ck_assert_uint_eq(i0->dev, st.st_dev);
        ck_assert_uint_eq(i0->ino, st.st_ino);
        ck_assert_str_eq(i0->path, a);
        ck_assert_int_eq(h->type, INTENT_OP_HEADER);
        ck_assert_uint_eq(h->offset, 60);
        ck_assert_uint_eq(h->len, 4);
        ck_assert(memcmp(h->old_bytes, o, 4) == 0);
        ck_assert(memcmp(h->new_bytes, n, 4) == 0);
        ck_assert_int_eq(r->type, INTENT_OP_RENAME);
        ck_assert_str_eq(r->from, b);
        ck_assert_str_eq(r->to, "/x/y.qcow2");
    }

    /* durable, listed, then gone */
    ck_assert_int_eq(intent_record_commit(rec, NULL), 0);
    ck_assert(!intent_record_add_image(rec, b, &err) == 0);
    g_clear_error(&err);
    disk = intent_log_read_record(jdir, rec->txid, &err);
    ck_assert_msg(disk, "%s", err ? err->message : "");
    ck_assert_int_eq(disk->images->len, 2);
    scan = intent_log_scan(log, NULL);
    ck_assert_int_eq(scan->len, 1);
    ck_assert_ptr_nonnull(((IntentScanEntry *)g_ptr_array_index(scan, 0))->rec);
    ck_assert_int_eq(intent_record_done(rec, NULL), 0);
    g_ptr_array_unref(g_steal_pointer(&scan));
    scan = intent_log_scan(log, NULL);
    ck_assert_int_eq(scan->len, 0);
    ck_assert_int_lt(intent_record_done(rec, &err), 0);
    g_clear_error(&err);
}
END_TEST

/* Every flipped byte and every truncation of a record is recognised. */
START_TEST(test_record_corrupt)
{
    g_autofree char *jdir = tmp_path("cor-journal"), *a = tmp_path("cor-a");
    g_autoptr(IntentLog) log = intent_log_open(jdir, NULL);
    g_autoptr(IntentRecord) rec = intent_record_begin(log);
    g_autoptr(GBytes) bytes = NULL;
    uint8_t o[12] = { 0 }, n[12] = { 1 };
    gsize len;
    const uint8_t *data;
    g_autofree uint8_t *buf = NULL;
    int flips = 0;

    write_file(a, "a", 1);
    ck_assert_int_eq(intent_record_add_image(rec, a, NULL), 0);
    ck_assert(intent_record_add_header(rec, 0, 60, o, n, 12, NULL));
    bytes = intent_record_serialize(rec);
    data = g_bytes_get_data(bytes, &len);
    buf = g_memdup2(data, len);
    for (gsize i = 0; i < len; i++) {
        for (int bit = 0; bit < 8; bit += 3) {
            GError *err = NULL;
            buf[i] ^= 1u << bit;
            ck_assert_msg(!intent_record_parse(buf, len, &err),
                          "flip at %zu accepted", i);
            ck_assert(g_error_matches(err, INTENT_LOG_ERROR,
                                      INTENT_LOG_ERROR_CORRUPT));
            g_clear_error(&err);
            buf[i] ^= 1u << bit;
            flips++;
        }
    }
    for (gsize l = 0; l < len; l++) {
        ck_assert_msg(!intent_record_parse(buf, l, NULL),
                      "record cut at %zu accepted", l);
    }
    strata_info("test-intent-log: %d flipped bits and %zu truncations "
                "refused", flips, len);
    {
        /* and the bytes themselves were fine */
        IntentRecord *ok = intent_record_parse(buf, len, NULL);
        ck_assert_ptr_nonnull(ok);
        intent_record_free(ok);
    }
}
END_TEST

/* ---- the extension ---- */

START_TEST(test_extension_roundtrip)
{
    g_autofree char *p = tmp_path("ext.qcow2");
    g_autofree char *bp = tmp_path("backing-name.qcow2");
    g_autofree char *qemu_img = g_find_program_in_path("qemu-img");
    Qcow2Intent in = { .journal_dir = (char *)"/some/journal" };
    BlockDriverState *bs;
    Qcow2IntentInfo info;
    g_autofree uint8_t *hdr = NULL;
    g_autoptr(Qcow2Intent) got = NULL;
    gsize len;

    memset(in.txid, 0xab, 16);
    memset(in.journal_id, 0xcd, 16);
    create_img(bp, IMG_SIZE, NULL, NULL);
    create_img(p, IMG_SIZE, "backing-name.qcow2", "qcow2");
    bs = open_img(p, BDRV_O_RDWR | BDRV_O_NO_BACKING);
    ck_assert_int_eq(qcow2_intent_set(bs, &in, NULL), 0);
    ck_assert(qcow2_intent_query(bs, &info));
    ck_assert_int_eq(info.state, QCOW2_INTENT_PENDING);
    ck_assert_str_eq(info.txid, "abababababababababababababababab");
    qcow2_intent_info_clear(&info);
    bdrv_unref(bs);

    hdr = file_bytes(p, &len);
    ck_assert_int_eq(qcow2_intent_parse(hdr, len, &got, NULL), 1);
    ck_assert(memcmp(got->txid, in.txid, 16) == 0);
    ck_assert(memcmp(got->journal_id, in.journal_id, 16) == 0);
    ck_assert_str_eq(got->journal_dir, "/some/journal");
    /* the backing link survives stripping the extension */
    ck_assert(qcow2_intent_strip(hdr, len, false));
    {
        g_autoptr(Qcow2Intent) none = NULL;
        ck_assert_int_eq(qcow2_intent_parse(hdr, len, &none, NULL), 0);
        ck_assert(!qcow2_intent_strip(hdr, len, false));
    }

    if (qemu_img) {
        /* QEMU keeps ignoring it: check clean, info and snapshot work */
        const char *check[] = { qemu_img, "check", "-f", "qcow2", p, NULL };
        const char *inf[] = { qemu_img, "info", "-f", "qcow2", p, NULL };
        const char *snap[] = { qemu_img, "snapshot", "-l", p, NULL };
        const char **cmds[] = { check, inf, snap };
        for (int i = 0; i < 3; i++) {
            g_autofree char *out = NULL, *errout = NULL;
            int status = 0;
            ck_assert(g_spawn_sync(NULL, (char **)cmds[i], NULL, 0, NULL,
                                   NULL, &out, &errout, &status, NULL));
            ck_assert_msg(g_spawn_check_wait_status(status, NULL),
                          "qemu-img %s: %s%s", cmds[i][1], out, errout);
            if (i == 0) {
                ck_assert_msg(strstr(out, "No errors were found"), "%s", out);
            }
            if (i == 1) {
                ck_assert_msg(strstr(out, "backing file: backing-name.qcow2"),
                              "%s", out);
            }
        }
    }
}
END_TEST

/* ---- recovery ---- */

/* Committed, nothing published: opening ANY image rolls every one
 * forward, and the record goes. */
static void roll_forward_case(int n, StopAt stop, int opened)
{
    Case *c = case_new(stop == STOP_AFTER_COMMIT ? "rf" : "rf1", n, 7 + n);

    power_cut_arm(POWER_CUT_KEEP_UNFLUSHED, UINT64_MAX);
    run_txn(c, stop);
    ck_assert(power_cut_fired());
    ck_assert_int_ge(power_cut_restore(), 0);
    /* journal-id + slot-0, which holds the record */
    ck_assert_int_eq(journal_files(c), 2);
    ck_assert(record_present(c));
    ck_assert_int_eq(open_state(c->paths[opened], BDRV_O_RDWR),
                     QCOW2_INTENT_ROLLED_FORWARD);
    ck_assert_int_eq(journal_files(c), 2);
    ck_assert(!record_present(c));               /* record done */
    for (int i = 0; i < n; i++) {
        ck_assert_int_eq(open_state(c->paths[i], 0), QCOW2_INTENT_NONE);
    }
    ck_assert(assert_all_or_nothing(c, "roll forward"));
    case_free(c);
}

START_TEST(test_roll_forward)
{
    roll_forward_case(2, STOP_AFTER_COMMIT, 1);
    roll_forward_case(4, STOP_AFTER_COMMIT, 2);
    roll_forward_case(4, STOP_AFTER_FIRST, 3);
}
END_TEST

/* Every do ran, no record: each image discards on its own open, and the
 * prepared clusters are reclaimed. */
START_TEST(test_discard)
{
    for (int n = 2; n <= 4; n += 2) {
        Case *c = case_new("disc", n, 11 + n);
        power_cut_arm(POWER_CUT_LOSE_UNFLUSHED, UINT64_MAX);
        run_txn(c, STOP_AFTER_DO);
        ck_assert_int_ge(power_cut_restore(), 0);
        for (int i = 0; i < n; i++) {
            /* read-only: reported, nothing written */
            ck_assert_int_eq(open_state(c->paths[i], 0),
                             QCOW2_INTENT_PENDING);
        }
        ck_assert_int_eq(open_state(c->paths[0], BDRV_O_RDWR),
                         QCOW2_INTENT_DISCARDED);
        ck_assert_int_eq(open_state(c->paths[1], 0), QCOW2_INTENT_PENDING);
        ck_assert(!assert_all_or_nothing(c, "discard"));
        case_free(c);
    }
}
END_TEST

/* Images moved together to another directory (same inodes), and images
 * copied there (new inodes; they carry the transaction's extension). */
START_TEST(test_moved_images)
{
    for (int copy = 0; copy <= 1; copy++) {
        Case *c = case_new(copy ? "copied" : "moved", 4, 21);
        g_autofree char *parent = g_path_get_dirname(c->dir);
        g_autofree char *to = g_build_filename(parent, "elsewhere", NULL);

        power_cut_arm(POWER_CUT_KEEP_UNFLUSHED, UINT64_MAX);
        run_txn(c, STOP_AFTER_COMMIT);
        ck_assert_int_ge(power_cut_restore(), 0);
        ck_assert_int_eq(g_mkdir(to, 0700), 0);
        for (int i = 0; i < c->n; i++) {
            g_autofree char *base = g_path_get_basename(c->paths[i]);
            g_autofree char *np = g_build_filename(to, base, NULL);
            if (copy) {
                gsize len;
                g_autofree uint8_t *b = file_bytes(c->paths[i], &len);
                write_file(np, b, len);
                ck_assert_int_eq(unlink(c->paths[i]), 0);
            } else {
                ck_assert_int_eq(rename(c->paths[i], np), 0);
            }
            g_free(c->paths[i]);
            c->paths[i] = g_steal_pointer(&np);
        }
        ck_assert_int_eq(open_state(c->paths[3], BDRV_O_RDWR),
                         QCOW2_INTENT_ROLLED_FORWARD);
        ck_assert(!record_present(c));
        ck_assert(assert_all_or_nothing(c, copy ? "copied" : "moved"));
        case_free(c);
    }
}
END_TEST

/* A missing or corrupt journal: a read-write open fails with a clear
 * error and writes nothing; a read-only open shows the image as is. */
START_TEST(test_bad_journal)
{
    Case *c = case_new("badj", 2, 31);
    g_autofree char *away = g_strconcat(c->jdir, ".away", NULL);
    g_autofree uint8_t *before = NULL, *after = NULL;
    g_autoptr(GDir) d = NULL;
    g_autofree char *recpath = NULL;
    gsize blen, alen;
    GError *err = NULL;
    const char *name;

    power_cut_arm(POWER_CUT_KEEP_UNFLUSHED, UINT64_MAX);
    run_txn(c, STOP_AFTER_COMMIT);
    ck_assert_int_ge(power_cut_restore(), 0);
    before = file_bytes(c->paths[0], &blen);

    /* missing */
    ck_assert_int_eq(rename(c->jdir, away), 0);
    ck_assert(!bdrv_open(c->paths[0], NULL, BDRV_O_RDWR, &err));
    ck_assert_msg(strstr(err->message, "unfinished transaction") &&
                  strstr(err->message, "cannot be read"), "%s",
                  err->message);
    g_clear_error(&err);
    ck_assert_int_eq(open_state(c->paths[0], 0), QCOW2_INTENT_PENDING);

    /* another journal at the same path is not taken for it */
    {
        g_autoptr(IntentLog) other = intent_log_open(c->jdir, NULL);
        ck_assert_ptr_nonnull(other);
    }
    ck_assert(!bdrv_open(c->paths[0], NULL, BDRV_O_RDWR, &err));
    ck_assert_msg(strstr(err->message, "is not journal"), "%s",
                  err->message);
    g_clear_error(&err);
    /* ... unless the search directory holds the right one */
    intent_log_set_search_dir(away);
    after = file_bytes(c->paths[0], &alen);
    ck_assert(alen == blen && memcmp(before, after, blen) == 0);
    g_clear_pointer(&after, g_free);

    /* corrupt record */
    d = g_dir_open(away, 0, NULL);
    while ((name = g_dir_read_name(d))) {
        if (live_record_file(away, name)) {
            recpath = g_build_filename(away, name, NULL);
        }
    }
    ck_assert_ptr_nonnull(recpath);
    {
        gsize len;
        g_autofree uint8_t *b = file_bytes(recpath, &len);
        /* a journal-id byte: inside the record, txid intact */
        b[40] ^= 0x10;
        write_file(recpath, b, len);
        ck_assert(!bdrv_open(c->paths[1], NULL, BDRV_O_RDWR, &err));
        ck_assert_msg(strstr(err->message, "is corrupt"), "%s", err->message);
        g_clear_error(&err);
        after = file_bytes(c->paths[0], &alen);
        ck_assert(alen == blen && memcmp(before, after, blen) == 0);
        b[40] ^= 0x10;
        write_file(recpath, b, len);
    }
    /* repaired journal found through the search directory */
    ck_assert_int_eq(open_state(c->paths[1], BDRV_O_RDWR),
                     QCOW2_INTENT_ROLLED_FORWARD);
    intent_log_set_search_dir(NULL);
    ck_assert(assert_all_or_nothing(c, "bad journal"));
    case_free(c);
}
END_TEST

/* An overlay created under a temporary name: publishing renames it.
 * Recovery renames it whether it is opened under the temporary name
 * (crash before the rename) or the final one (crash after it). */
START_TEST(test_rename_roll_forward)
{
    for (int renamed = 0; renamed <= 1; renamed++) {
        g_autofree char *jdir = tmp_path(renamed ? "rn-j1" : "rn-j0");
        g_autofree char *tmp = tmp_path(renamed ? "rn1.tmp" : "rn0.tmp");
        g_autofree char *fin = tmp_path(renamed ? "rn1.qcow2" : "rn0.qcow2");
        g_autoptr(IntentLog) log = intent_log_open(jdir, NULL);
        g_autoptr(IntentRecord) rec = intent_record_begin(log);
        g_autoptr(Qcow2Intent) ext = intent_record_extension(rec);
        BlockDriverState *bs;

        create_img(tmp, IMG_SIZE, NULL, NULL);
        bs = open_img(tmp, BDRV_O_RDWR);
        ck_assert_int_eq(qcow2_intent_set(bs, ext, NULL), 0);
        bdrv_unref(bs);
        ck_assert_int_eq(intent_record_add_image(rec, tmp, NULL), 0);
        ck_assert(intent_record_add_rename(rec, 0, tmp, fin, NULL));
        ck_assert_int_eq(intent_record_commit(rec, NULL), 0);
        if (renamed) {
            ck_assert_int_eq(rename(tmp, fin), 0);
        }
        ck_assert_int_eq(open_state(renamed ? fin : tmp, BDRV_O_RDWR),
                         QCOW2_INTENT_ROLLED_FORWARD);
        ck_assert(!g_file_test(tmp, G_FILE_TEST_EXISTS));
        ck_assert_int_eq(open_state(fin, 0), QCOW2_INTENT_NONE);
        ck_assert(!intent_log_read_record(jdir, rec->txid, NULL));
        check_clean(fin);
    }
}
END_TEST

/* Image 0 was published and lost its extension before the crash, then
 * got another snapshot (no recovery runs for it: it is not pending).
 * Recovery from image 1 must not write image 0's recorded header bytes
 * over the newer table (the compare-and-swap). */
START_TEST(test_published_then_changed)
{
    Case *c = case_new("pubchg", 2, 41);
    BdrvSnapshotInfo tmpl = { .name = (char *)"s2" };
    BlockDriverState *bs;
    gsize len;
    g_autofree uint8_t *hdr = NULL;
    BdrvSnapshotInfo *list = NULL;
    int n;

    power_cut_arm(POWER_CUT_KEEP_UNFLUSHED, UINT64_MAX);
    run_txn(c, STOP_AFTER_COMMIT);
    ck_assert_int_ge(power_cut_restore(), 0);
    /* what publishing and clearing image 0 would have written */
    hdr = file_bytes(c->paths[0], &len);
    memcpy(hdr + 60, c->hdr_new[0], 12);
    ck_assert(qcow2_intent_strip(hdr, MIN(len, 65536), false));
    {
        /* in place: the inode is the image's identity */
        int fd = open(c->paths[0], O_WRONLY);
        ck_assert_int_ge(fd, 0);
        ck_assert_int_eq(pwrite(fd, hdr, 65536, 0), 65536);
        close(fd);
    }
    ck_assert_int_eq(open_state(c->paths[0], 0), QCOW2_INTENT_NONE);
    bs = open_img(c->paths[0], BDRV_O_RDWR);
    ck_assert_int_eq(bdrv_snapshot_create(bs, &tmpl, 0, NULL, NULL), 0);
    bdrv_unref(bs);

    ck_assert_int_eq(open_state(c->paths[1], BDRV_O_RDWR),
                     QCOW2_INTENT_ROLLED_FORWARD);
    ck_assert_msg(!record_present(c), "image 0 was not found");
    bs = open_img(c->paths[0], 0);
    n = bdrv_snapshot_list(bs, &list, NULL);
    ck_assert_int_eq(n, 2);
    ck_assert_str_eq(list[0].name, "s1");
    ck_assert_str_eq(list[1].name, "s2");
    bdrv_snapshot_list_free(list, n);
    bdrv_unref(bs);
    check_clean(c->paths[0]);
    check_clean(c->paths[1]);
    case_free(c);
}
END_TEST

/* ---- record slots: one synced write per transaction ---- */

/* Commit is one fdatasync of a slot that exists already (made at open):
 * no file created, no directory synced; done syncs nothing. */
START_TEST(test_commit_one_sync)
{
    g_autofree char *jdir = tmp_path("sync-journal");
    g_autofree char *a = tmp_path("sync-a.qcow2");
    g_autoptr(IntentLog) log = NULL;
    g_autoptr(IntentRecord) rec = NULL;
    uint8_t o[4] = { 0 }, n[4] = { 1, 2, 3, 4 };
    uint64_t f0, w0;
    int files;

    create_img(a, IMG_SIZE, NULL, NULL);
    log = intent_log_open(jdir, NULL);
    ck_assert_ptr_nonnull(log);
    for (int round = 0; round < 3; round++) {
        Case c = { .jdir = jdir };
        g_clear_pointer(&rec, intent_record_free);
        rec = intent_record_begin(log);
        ck_assert_int_eq(intent_record_add_image(rec, a, NULL), 0);
        ck_assert(intent_record_add_header(rec, 0, 60, o, n, 4, NULL));
        files = journal_files(&c);
        /* armed so it counts; request UINT64_MAX is never reached */
        fault_inject_arm(FAULT_READ, UINT64_MAX);
        f0 = fault_inject_count(FAULT_FLUSH);
        power_cut_arm(POWER_CUT_KEEP_UNFLUSHED, UINT64_MAX);
        ck_assert_int_eq(intent_record_commit(rec, NULL), 0);
        w0 = power_cut_writes();
        ck_assert_int_ge(power_cut_restore(), 0);
        ck_assert_uint_eq(fault_inject_count(FAULT_FLUSH) - f0, 1);
        ck_assert_uint_eq(w0, 1);    /* one write: no create, no rename */
        ck_assert_int_eq(journal_files(&c), files);
        ck_assert(record_present(&c));
        f0 = fault_inject_count(FAULT_FLUSH);
        ck_assert_int_eq(intent_record_done(rec, NULL), 0);
        ck_assert_uint_eq(fault_inject_count(FAULT_FLUSH) - f0, 0);
        fault_inject_disarm();
        ck_assert(!record_present(&c));
        ck_assert(!intent_log_read_record(jdir, rec->txid, NULL));
    }
    g_autofree char *cmd = g_strdup_printf("rm -rf '%s' '%s'", jdir, a);
    ck_assert_int_eq(system(cmd), 0);
}
END_TEST

/* Two records in flight take two slots (locked); a finished one's slot
 * is reused, so the journal does not grow. */
START_TEST(test_slots_concurrent)
{
    g_autofree char *jdir = tmp_path("slots-journal");
    g_autofree char *a = tmp_path("slots-a.qcow2");
    g_autoptr(IntentLog) log = NULL;
    IntentRecord *r[3];
    uint8_t o[4] = { 0 }, n[4] = { 9, 9, 9, 9 };
    g_autoptr(IntentRecord) d0 = NULL, d1 = NULL;

    create_img(a, IMG_SIZE, NULL, NULL);
    log = intent_log_open(jdir, NULL);
    ck_assert_ptr_nonnull(log);
    for (int i = 0; i < 3; i++) {
        r[i] = intent_record_begin(log);
        ck_assert_int_eq(intent_record_add_image(r[i], a, NULL), 0);
        ck_assert(intent_record_add_header(r[i], 0, 60, o, n, 4, NULL));
    }
    ck_assert_int_eq(intent_record_commit(r[0], NULL), 0);
    ck_assert_int_eq(intent_record_commit(r[1], NULL), 0);
    ck_assert_str_ne(r[0]->slot, r[1]->slot);
    d0 = intent_log_read_record(jdir, r[0]->txid, NULL);
    d1 = intent_log_read_record(jdir, r[1]->txid, NULL);
    ck_assert_ptr_nonnull(d0);
    ck_assert_ptr_nonnull(d1);
    /* a record in flight (its slot locked) is not recovery's to
     * complete: the daemon's start-up scan leaves it alone */
    ck_assert_int_eq(intent_log_recover_all(log, NULL), 0);
    {
        g_autoptr(IntentRecord) still =
            intent_log_read_record(jdir, r[1]->txid, NULL);
        ck_assert_ptr_nonnull(still);
    }
    ck_assert_int_eq(intent_record_done(r[0], NULL), 0);
    ck_assert_int_eq(intent_record_commit(r[2], NULL), 0);
    ck_assert_str_eq(r[2]->slot, d0->slot);      /* reused */
    ck_assert_int_eq(intent_record_done(r[1], NULL), 0);
    ck_assert_int_eq(intent_record_done(r[2], NULL), 0);
    {
        Case c = { .jdir = jdir };
        ck_assert_int_eq(journal_files(&c), 3);  /* journal-id, 2 slots */
        ck_assert(!record_present(&c));
    }
    for (int i = 0; i < 3; i++) {
        intent_record_free(r[i]);
    }
    g_autofree char *cmd = g_strdup_printf("rm -rf '%s' '%s'", jdir, a);
    ck_assert_int_eq(system(cmd), 0);
}
END_TEST

/* A finished record whose unsynced done mark a power cut lost comes back
 * live; image 0 has since gone back to the old header bytes (s1
 * deleted).  Recovery must not publish the old transaction over it:
 * the image no longer carries that transaction's extension. */
START_TEST(test_lost_done_mark)
{
    Case *c = case_new("lostdone", 2, 61);
    g_autoptr(IntentLog) log = NULL;
    BlockDriverState *bs;
    GError *err = NULL;

    power_cut_arm(POWER_CUT_LOSE_UNFLUSHED, UINT64_MAX);
    run_txn(c, STOP_NONE);
    ck_assert_int_ge(power_cut_restore(), 1);
    ck_assert_msg(record_present(c), "the done mark survived the cut");
    for (int i = 0; i < c->n; i++) {
        ck_assert_int_eq(open_state(c->paths[i], 0), QCOW2_INTENT_NONE);
    }
    bs = open_img(c->paths[0], BDRV_O_RDWR);
    ck_assert(has_s1(bs));
    ck_assert_int_eq(bdrv_snapshot_delete(bs, NULL, "s1", NULL, NULL), 0);
    bdrv_unref(bs);

    log = intent_log_open(c->jdir, &err);
    ck_assert_msg(log, "%s", err ? err->message : "");
    ck_assert_int_eq(intent_log_recover_all(log, &err), 1);
    ck_assert(!record_present(c));
    bs = open_img(c->paths[0], 0);
    ck_assert_msg(!has_s1(bs), "a finished record was published again");
    bdrv_unref(bs);
    bs = open_img(c->paths[1], 0);
    ck_assert(has_s1(bs));
    bdrv_unref(bs);
    check_clean(c->paths[0]);
    check_clean(c->paths[1]);
    case_free(c);
}
END_TEST

/* Start-up (the daemon's): every complete record is rolled forward
 * without opening any image; a torn .tmp is listed and left alone. */
START_TEST(test_recover_all)
{
    Case *c = case_new("all", 4, 51);
    g_autoptr(IntentLog) log = NULL;
    g_autoptr(GPtrArray) scan = NULL;
    g_autofree char *torn = NULL;
    GError *err = NULL;

    power_cut_arm(POWER_CUT_KEEP_UNFLUSHED, UINT64_MAX);
    run_txn(c, STOP_AFTER_COMMIT);
    ck_assert_int_ge(power_cut_restore(), 0);
    torn = g_build_filename(c->jdir, "00112233445566778899aabbccddeeff.rec.tmp",
                            NULL);
    write_file(torn, "STRATAIR", 8);
    log = intent_log_open(c->jdir, &err);
    ck_assert_msg(log, "%s", err ? err->message : "");
    scan = intent_log_scan(log, NULL);
    ck_assert_int_eq(scan->len, 2);
    ck_assert_int_eq(intent_log_recover_all(log, &err), 1);
    ck_assert(!record_present(c));
    ck_assert(g_file_test(torn, G_FILE_TEST_EXISTS));
    for (int i = 0; i < c->n; i++) {
        ck_assert_int_eq(open_state(c->paths[i], 0), QCOW2_INTENT_NONE);
    }
    ck_assert(assert_all_or_nothing(c, "recover all"));
    case_free(c);
}
END_TEST

/* ---- power cuts ---- */

/* The transaction with the power cut after its nth write, for every n,
 * in one model of the filter; returns how many cut points ran. */
static int cut_everywhere(int n, bool mixed, PowerCutMode mode, int *olds,
                          int *news, int64_t *lost)
{
    int points = 0;

    for (uint64_t cut = 0;; cut++) {
        Case *c = case_new_mixed("cut", n, 100 + (unsigned)cut, mixed);
        g_autofree char *what = g_strdup_printf("%d images, mode %d, cut "
                                                "after write %" PRIu64,
                                                n, mode, cut);
        bool fired;

        power_cut_arm(mode, cut);
        run_txn(c, STOP_NONE);
        fired = power_cut_fired();
        {
            int64_t undone = power_cut_restore();
            ck_assert_int_ge(undone, 0);
            *lost += undone;
        }
        if (assert_all_or_nothing(c, what)) {
            (*news)++;
        } else {
            (*olds)++;
        }
        case_free(c);
        points++;
        if (!fired) {
            return points;
        }
    }
}

START_TEST(test_power_cut)
{
    int total = 0;

    /* 2 and 4 internal snapshots; 4 images with 2 internal and 2
     * external snapshots */
    for (int k = 0; k < 3; k++) {
        int n = k == 0 ? 2 : 4;
        bool mixed = k == 2;
        for (int mode = 0; mode < 2; mode++) {
            int olds = 0, news = 0;
            int64_t lost = 0;
            int points = cut_everywhere(n, mixed, mode, &olds, &news, &lost);
            /* both outcomes occur: the cut points straddle the commit */
            ck_assert_int_gt(olds, 0);
            ck_assert_int_gt(news, 0);
            fprintf(stderr, "power cut, %d images%s, %s: %d cut points "
                    "(%d all-old, %d all-new; %" PRId64 " unflushed writes "
                    "rolled back)\n", n, mixed ? " (2 external)" : "",
                    mode ? "unflushed writes lost" : "unflushed kept",
                    points, olds, news, lost);
            total += points;
        }
    }
    fprintf(stderr, "power cut: %d cut points in all\n", total);
}
END_TEST

/* A crash during recovery, at every write of it, recovers the same way. */
START_TEST(test_recovery_cut)
{
    int points = 0;

    for (int mode = 0; mode < 2; mode++) {
        for (uint64_t cut = 0;; cut++) {
            Case *c = case_new("rcut", 4, 300);
            bool fired;
            BlockDriverState *bs;
            GError *err = NULL;

            power_cut_arm(mode, UINT64_MAX);
            run_txn(c, STOP_AFTER_FIRST);
            ck_assert_int_ge(power_cut_restore(), 0);

            power_cut_arm(mode, cut);
            bs = bdrv_open(c->paths[2], NULL, BDRV_O_RDWR, &err);
            if (bs) {
                bdrv_unref(bs);
            }
            g_clear_error(&err);
            fired = power_cut_fired();
            ck_assert_int_ge(power_cut_restore(), 0);
            ck_assert_msg(assert_all_or_nothing(c, "recovery cut"),
                          "a committed transaction was lost");
            case_free(c);
            points++;
            if (!fired) {
                break;
            }
        }
    }
    fprintf(stderr, "recovery cut: %d cut points\n", points);
}
END_TEST

/* The filter itself: writes after the nth never land; in the second
 * model unflushed writes before the cut are rolled back too. */
START_TEST(test_filter_models)
{
    g_autofree char *p = tmp_path("pc.raw");
    BlockOpts *o;
    BlockDriverState *bs;
    uint8_t buf[512];

    for (int mode = 0; mode < 2; mode++) {
        write_file(p, "", 0);
        o = bdrv_opts_new();
        bdrv_opts_set(o, "driver", "file");
        bs = bdrv_open(p, o, BDRV_O_RDWR, NULL);
        ck_assert_ptr_nonnull(bs);
        power_cut_arm(mode, 3);
        memset(buf, 'A', sizeof(buf));
        ck_assert_int_eq(bdrv_pwrite(bs, 0, 512, buf), 0);      /* 1 */
        ck_assert_int_eq(bdrv_flush(bs), 0);
        memset(buf, 'B', sizeof(buf));
        ck_assert_int_eq(bdrv_pwrite(bs, 0, 512, buf), 0);      /* 2 */
        ck_assert_int_eq(bdrv_pwrite(bs, 512, 512, buf), 0);    /* 3 */
        ck_assert(!power_cut_fired());
        memset(buf, 'C', sizeof(buf));
        ck_assert_int_eq(bdrv_pwrite(bs, 1024, 512, buf), 0);   /* dropped */
        ck_assert(power_cut_fired());
        ck_assert_int_eq(bdrv_flush(bs), 0);                    /* dropped */
        ck_assert_int_eq(power_cut_restore(), mode ? 2 : 0);
        bdrv_unref(bs);
        {
            gsize len;
            g_autofree uint8_t *b = file_bytes(p, &len);
            if (mode == POWER_CUT_KEEP_UNFLUSHED) {
                ck_assert_uint_eq(len, 1024);
                ck_assert(b[0] == 'B' && b[512] == 'B');
            } else {
                /* back to the state of the one sync: 'A', 512 bytes */
                ck_assert_uint_eq(len, 512);
                ck_assert(b[0] == 'A' && b[511] == 'A');
            }
        }
    }
}
END_TEST

static Suite *intent_suite(void)
{
    /* CK_RUN_CASE=records|recovery|powercut runs one group */
    Suite *s = suite_create("intent-log");
    TCase *rec = tcase_create("records");
    TCase *recov = tcase_create("recovery");
    TCase *cut = tcase_create("powercut");

    tcase_add_test(rec, test_filter_models);
    tcase_add_test(rec, test_record_roundtrip);
    tcase_add_test(rec, test_record_corrupt);
    tcase_add_test(rec, test_extension_roundtrip);
    tcase_add_test(recov, test_roll_forward);
    tcase_add_test(recov, test_discard);
    tcase_add_test(recov, test_moved_images);
    tcase_add_test(recov, test_bad_journal);
    tcase_add_test(recov, test_rename_roll_forward);
    tcase_add_test(recov, test_published_then_changed);
    tcase_add_test(recov, test_recover_all);
    tcase_add_test(rec, test_commit_one_sync);
    tcase_add_test(rec, test_slots_concurrent);
    tcase_add_test(recov, test_lost_done_mark);
    tcase_add_test(cut, test_recovery_cut);
    tcase_add_test(cut, test_power_cut);
    tcase_set_timeout(rec, 300);
    tcase_set_timeout(recov, 600);
    tcase_set_timeout(cut, 2400);
    suite_add_tcase(s, rec);
    suite_add_tcase(s, recov);
    suite_add_tcase(s, cut);
    return s;
}

int main(void)
{
    return chaintest_run(intent_suite());
}
