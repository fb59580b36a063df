/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Crash-atomic transactions through the transaction engine (issue 14):
 * with a state directory set, blk_transaction_submit() writes the intent
 * record itself.  A power cut (block/fault-inject.c) after the Nth write
 * of the whole transaction -- image files, overlays, journal -- for every
 * N, in both models of the filter (unflushed writes kept / lost), for
 * transactions of 2 and 4 disks: internal snapshot creates, deletes,
 * external snapshots and a mix.  After the "reboot" and recovery (what
 * strata-daemon does at start: recover every record of the journal; then
 * every image opened read-write), every disk shows the new state or every
 * disk the old one, content intact, every image clean for ours and
 * qemu-img's check (no leak), no extension and no record left.
 *
 * Sizes: 512 KiB images with two snapshots each and a few 64 KiB writes
 * (light_devs_new); one template per scenario, copied for each cut
 * point.
 */
#include <inttypes.h>
#include <glib/gstdio.h>

#include "txntest.h"
#include "block/fault-inject.h"
#include "block/qcow2-intent.h"
#include "blockdev/intent-log.h"

typedef enum { S_CREATE, S_DELETE, S_EXTERNAL, S_MIX } Scenario;

static const char *const scen_names[] = {
    "internal creates", "internal deletes", "external snapshots",
    "mix (create, delete, external, external + create on it)",
};

/* Which device of a scenario gets an external overlay. */
static bool has_overlay(Scenario sc, int i)
{
    return sc == S_EXTERNAL || (sc == S_MIX && (i % 4) >= 2);
}

static char *overlay_path(TxnDevs *d, int i)
{
    return g_strdup_printf("%s/d%d.ovl.qcow2", d->dir, i);
}

static void build(BlkTransactionStates *t, TxnDevs *d, Scenario sc)
{
    for (int i = 0; i < d->n; i++) {
        g_autofree char *dev = g_strdup_printf("d%d", i);
        g_autofree char *ovl = overlay_path(d, i);
        int k = sc == S_MIX ? i % 4 : -1;

        if (sc == S_CREATE || k == 0) {
            txn_add_ok(t, txn_internal(dev, "new"));
        } else if (sc == S_DELETE || k == 1) {
            txn_add_ok(t, txn_delete(dev, NULL, "old1"));
        } else {
            txn_add_ok(t, txn_external(dev, ovl));
            if (k == 3) {
                /* an internal snapshot of the overlay made just before */
                txn_add_ok(t, txn_internal(dev, "new"));
            }
        }
    }
}

#define LIGHT_SIZE (512 * KiB)

/* A few random 64 KiB writes (the images stay small: each cut point
 * copies, recovers, reads and checks all of them). */
static void light_writes(BlockDriverState *bs, GRand *r, int n)
{
    uint8_t *buf = g_malloc(64 * KiB);

    for (int i = 0; i < n; i++) {
        int64_t off = g_rand_int_range(r, 0, LIGHT_SIZE / (64 * KiB)) *
                      64 * KiB;
        memset(buf, g_rand_int_range(r, 1, 256), 64 * KiB);
        ck_assert_int_eq(bdrv_pwrite(bs, off, 64 * KiB, buf), 0);
    }
    g_free(buf);
}

/* Like txn_devs_new (snapshots "old1" and "old2", different content
 * in each and in the active layer), on 512 KiB images. */
static TxnDevs *light_devs_new(const char *tag, int n, unsigned seed)
{
    TxnDevs *d = g_new0(TxnDevs, 1);
    g_autoptr(GRand) r = g_rand_new_with_seed(seed);

    d->n = n;
    d->dir = tmp_path(tag);
    ck_assert_int_eq(g_mkdir_with_parents(d->dir, 0700), 0);
    d->base = g_new0(char *, n + 1);
    d->blk = g_new0(BlockBackend *, n);
    for (int i = 0; i < n; i++) {
        BlockDriverState *bs;

        d->base[i] = g_strdup_printf("%s/d%d.qcow2", d->dir, i);
        create_img(d->base[i], LIGHT_SIZE, NULL, NULL);
        bs = open_img(d->base[i], BDRV_O_RDWR);
        for (int k = 0; k < 3; k++) {
            light_writes(bs, r, 3);
            if (k < 2) {
                BdrvSnapshotInfo tmpl = { .name = k ? "old2" : "old1" };
                GError *err = NULL;
                ck_assert_msg(bdrv_snapshot_create(bs, &tmpl, 0, NULL,
                                                   &err) == 0, "%s",
                              err ? err->message : "");
            }
        }
        bdrv_unref(bs);
    }
    return d;
}

static void run(const char *cmd)
{
    ck_assert_msg(system(cmd) == 0, "%s", cmd);
}

/* Flat directories only.  In-process: a fork of an ASan process is
 * costly, and this runs several times per cut point. */
static void rm_dir(const char *dir)
{
    g_autoptr(GDir) dp = g_dir_open(dir, 0, NULL);
    const char *name;

    while (dp && (name = g_dir_read_name(dp))) {
        g_autofree char *p = g_build_filename(dir, name, NULL);
        ck_assert_int_eq(g_unlink(p), 0);
    }
    if (dp) {
        ck_assert_int_eq(g_rmdir(dir), 0);
    }
}

static void copy_dir(const char *from, const char *to)
{
    g_autoptr(GDir) dp = g_dir_open(from, 0, NULL);
    const char *name;

    ck_assert(dp);
    ck_assert_int_eq(g_mkdir(to, 0700), 0);
    while ((name = g_dir_read_name(dp))) {
        g_autofree char *a = g_build_filename(from, name, NULL);
        g_autofree char *b = g_build_filename(to, name, NULL);
        g_autofree char *data = NULL;
        gsize len;

        ck_assert(g_file_get_contents(a, &data, &len, NULL));
        ck_assert(g_file_set_contents(b, data, len, NULL));
    }
}

/* A fresh copy of the template's images under tag. */
static TxnDevs *clone_devs(TxnDevs *tmpl, const char *tag)
{
    TxnDevs *d = g_new0(TxnDevs, 1);

    d->n = tmpl->n;
    d->dir = tmp_path(tag);
    rm_dir(d->dir);
    copy_dir(tmpl->dir, d->dir);
    d->base = g_new0(char *, d->n + 1);
    d->blk = g_new0(BlockBackend *, d->n);
    for (int i = 0; i < d->n; i++) {
        d->base[i] = g_strdup_printf("%s/d%d.qcow2", d->dir, i);
    }
    return d;
}

static void free_devs(TxnDevs *d)
{
    rm_dir(d->dir);
    txn_devs_free(d);
}

/* Snapshot names of every node of the chain, its file names and the
 * content: what a transaction changes, without the snapshot dates. */
static char *picture(BlockBackend *blk)
{
    GString *s = g_string_new(NULL);
    int64_t len = blk_getlength(blk);
    g_autofree uint8_t *buf = blk_read_all(blk, len);
    g_autofree char *sum = g_compute_checksum_for_data(G_CHECKSUM_SHA1, buf,
                                                       len);

    for (BlockDriverState *p = blk_bs(blk); p; p = bdrv_get_backing(p)) {
        g_autofree char *base = g_path_get_basename(bdrv_get_filename(p));
        BdrvSnapshotInfo *l = NULL;
        int n = bdrv_snapshot_list(p, &l, NULL);

        g_string_append_printf(s, "%s[", base);
        for (int i = 0; i < n; i++) {
            g_string_append_printf(s, "%s%s", i ? "," : "", l[i].name);
        }
        bdrv_snapshot_list_free(l, MAX(n, 0));
        g_string_append(s, "] ");
    }
    g_string_append(s, sum);
    return g_string_free(s, FALSE);
}

/* Opens the devices on their current tops (the overlay where it exists
 * under its name), returns one picture per device. */
static char **pictures(TxnDevs *d, Scenario sc)
{
    char **tops = g_new0(char *, d->n + 1);
    char **pics = g_new0(char *, d->n + 1);

    for (int i = 0; i < d->n; i++) {
        g_autofree char *ovl = overlay_path(d, i);
        if (has_overlay(sc, i) && g_file_test(ovl, G_FILE_TEST_EXISTS)) {
            tops[i] = g_steal_pointer(&ovl);
        }
    }
    txn_devs_open(d, tops);
    for (int i = 0; i < d->n; i++) {
        pics[i] = picture(d->blk[i]);
    }
    txn_devs_close(d);
    for (int i = 0; i < d->n; i++) {
        g_free(tops[i]);        /* NULL between names: not a strv */
    }
    g_free(tops);
    return pics;
}

static int count_records(const char *jdir)
{
    g_autoptr(GDir) dir = g_dir_open(jdir, 0, NULL);
    const char *name;
    int n = 0;

    while (dir && (name = g_dir_read_name(dir))) {
        n += live_record_file(jdir, name);
    }
    return n;
}

/* No image of the directory carries the intent extension any more. */
static void assert_no_extension(TxnDevs *d)
{
    g_autoptr(GDir) dir = g_dir_open(d->dir, 0, NULL);
    const char *name;

    while ((name = g_dir_read_name(dir))) {
        g_autofree char *p = g_build_filename(d->dir, name, NULL);
        BlockDriverState *bs;
        Qcow2IntentInfo info;

        if (!g_str_has_suffix(name, ".qcow2")) {
            continue;
        }
        bs = open_img(p, 0);
        ck_assert(qcow2_intent_query(bs, &info));
        ck_assert_msg(info.state == QCOW2_INTENT_NONE,
                      "%s still carries the extension", name);
        qcow2_intent_info_clear(&info);
        bdrv_unref(bs);
    }
}

/* The restart: every record of the journal recovered (strata-daemon's
 * start), then every image opened read-write (which recovers an image
 * left with the extension: discard, refcounts rebuilt). */
static void recover(TxnDevs *d, const char *jdir)
{
    g_autoptr(IntentLog) log = NULL;
    GError *err = NULL;

    log = intent_log_open(jdir, &err);
    ck_assert_msg(log, "%s", err ? err->message : "");
    ck_assert_msg(intent_log_recover_all(log, &err) >= 0, "%s",
                  err ? err->message : "");
    for (int i = 0; i < d->n; i++) {
        g_autofree char *ovl = overlay_path(d, i);
        BlockDriverState *bs = bdrv_open(d->base[i], NULL,
                                         BDRV_O_RDWR | BDRV_O_NO_BACKING,
                                         &err);
        ck_assert_msg(bs, "%s", err ? err->message : "");
        bdrv_unref(bs);
        if (g_file_test(ovl, G_FILE_TEST_EXISTS)) {
            bs = bdrv_open(ovl, NULL, BDRV_O_RDWR | BDRV_O_NO_BACKING, &err);
            ck_assert_msg(bs, "%s", err ? err->message : "");
            bdrv_unref(bs);
        }
    }
}

/* Hidden files in the directory (a staged overlay's temporary name). */
static int count_hidden(const char *dir)
{
    g_autoptr(GDir) dp = g_dir_open(dir, 0, NULL);
    const char *name;
    int n = 0;

    while (dp && (name = g_dir_read_name(dp))) {
        n += name[0] == '.';
    }
    return n;
}

static bool same_pics(char **a, char **b, int n)
{
    for (int i = 0; i < n; i++) {
        if (strcmp(a[i], b[i])) {
            return false;
        }
    }
    return true;
}

/* 0: all old, 1: all new; fails on anything else. */
static int outcome(char **now, char **old, char **new, int n,
                   const char *what)
{
    if (same_pics(now, old, n)) {
        return 0;
    }
    if (same_pics(now, new, n)) {
        return 1;
    }
    for (int i = 0; i < n; i++) {
        fprintf(stderr, "%s: disk %d\n  now %s\n  old %s\n  new %s\n", what,
                i, now[i], old[i], new[i]);
    }
    ck_abort_msg("%s: neither all old nor all new", what);
    return -1;
}

typedef struct Totals {
    int points, olds, news;
    int64_t lost;
} Totals;

/*
 * One power-cut run, in two halves around building the transaction:
 * cut_begin() opens the devices with the journal jdir (emptied first)
 * and returns the new transaction; cut_end() arms the cut after write
 * `cut` of the given mode, submits, then closes everything as the
 * reboot finds it.  Returns whether the cut fired; *undone gets how many
 * unflushed writes were rolled back.
 */
static BlkTransactionStates *cut_begin(TxnDevs *d, const char *jdir)
{
    rm_dir(jdir);
    ck_assert(blk_transaction_set_state_dir(jdir, NULL));
    txn_devs_open(d, NULL);
    return blk_transaction_new();
}

static bool cut_end(TxnDevs *d, BlkTransactionStates *t, int mode,
                    uint64_t cut, const char *what, int64_t *undone)
{
    GError *err = NULL;
    bool ok, fired;
    int64_t n;

    power_cut_arm(mode, cut);
    ok = blk_transaction_submit(t, &err);
    fired = power_cut_fired();
    ck_assert_msg(ok || fired, "%s: %s", what, err ? err->message : "");
    g_clear_error(&err);
    blk_transaction_free(t);
    txn_devs_close(d);
    n = power_cut_restore();
    ck_assert_int_ge(n, 0);
    ck_assert(blk_transaction_set_state_dir(NULL, NULL));
    if (undone) {
        *undone = n;
    }
    return fired;
}

/* One transaction of the scenario on a copy of tmpl, the power cut
 * after write `cut` (UINT64_MAX: none); returns whether it fired. */
static bool one_run(TxnDevs *tmpl, Scenario sc, PowerCutMode mode,
                    uint64_t cut, Totals *tot, char ***pics_out,
                    char **old, char **new)
{
    TxnDevs *d = clone_devs(tmpl, "case");
    g_autofree char *jdir = tmp_path("case-journal");
    BlkTransactionStates *t;
    g_autofree char *what = g_strdup_printf("%d disks, %s, mode %d, cut "
                                            "after write %" PRIu64, d->n,
                                            scen_names[sc], mode, cut);
    bool fired;
    int64_t undone;
    char **now;

    if (g_getenv("INTENT_VERBOSE")) {
        fprintf(stderr, "%s\n", what);
    }
    t = cut_begin(d, jdir);
    build(t, d, sc);
    fired = cut_end(d, t, mode, cut, what, &undone);

    if (g_getenv("INTENT_KEEP")) {
        /* debugging: the state the reboot found */
        g_autofree char *keep = g_strdup_printf(
            "rm -rf '%s'; mkdir -p '%s' && cp -a '%s' '%s' '%s/'",
            g_getenv("INTENT_KEEP"), g_getenv("INTENT_KEEP"), d->dir, jdir,
            g_getenv("INTENT_KEEP"));
        run(keep);
    }
    recover(d, jdir);
    now = pictures(d, sc);
    if (pics_out) {
        *pics_out = now;
    } else {
        int o = outcome(now, old, new, d->n, what);
        tot->olds += o == 0;
        tot->news += o == 1;
        tot->lost += undone;
        tot->points++;
        g_strfreev(now);
    }
    ck_assert_int_eq(count_records(jdir), 0);
    if (!fired) {
        /* success leaves no temporary overlay behind */
        ck_assert_int_eq(count_hidden(d->dir), 0);
    }
    assert_no_extension(d);
    txn_check_dir_clean(d->dir);
    free_devs(d);
    rm_dir(jdir);
    return fired;
}

static void cut_scenario(int n, Scenario sc, Totals *all)
{
    g_autofree char *tag = g_strdup_printf("tmpl-%d-%d", n, sc);
    TxnDevs *tmpl = light_devs_new(tag, n, 7 + n * 10 + sc);
    char **old, **new = NULL;

    /* the two states: as the template is, and after the transaction */
    old = pictures(tmpl, sc);
    one_run(tmpl, sc, POWER_CUT_KEEP_UNFLUSHED, UINT64_MAX, NULL, &new,
            NULL, NULL);
    ck_assert_msg(!same_pics(old, new, n), "the transaction changed "
                  "nothing");
    for (int mode = 0; mode < 2; mode++) {
        Totals tot = { 0 };
        for (uint64_t cut = 0;; cut++) {
            if (!one_run(tmpl, sc, mode, cut, &tot, NULL, old, new)) {
                break;
            }
        }
        /* the cut points straddle the commit: both outcomes occur */
        ck_assert_int_gt(tot.olds, 0);
        ck_assert_int_gt(tot.news, 0);
        fprintf(stderr, "engine power cut, %d disks, %s, %s: %d cut points "
                "(%d all-old, %d all-new; %" PRId64 " unflushed writes "
                "rolled back)\n", n, scen_names[sc],
                mode ? "unflushed writes lost" : "unflushed kept",
                tot.points, tot.olds, tot.news, tot.lost);
        all->points += tot.points;
        all->olds += tot.olds;
        all->news += tot.news;
    }
    g_strfreev(old);
    g_strfreev(new);
    free_devs(tmpl);
}

/*
 * make check runs 2 disks of creates and 4 of deletes (internal group)
 * and 4 disks of the mix (external group: a create, a delete, an
 * external snapshot, an external snapshot plus a create on its overlay);
 * INTENT_ENGINE_FULL=1 runs every scenario on 2 and 4 disks (about 4x
 * as long).
 */
static bool full(void)
{
    return g_getenv("INTENT_ENGINE_FULL") != NULL;
}

START_TEST(test_engine_cut_internal)
{
    Totals all = { 0 };

    cut_scenario(2, S_CREATE, &all);
    if (full()) {
        cut_scenario(4, S_CREATE, &all);
        cut_scenario(2, S_DELETE, &all);
    }
    cut_scenario(4, S_DELETE, &all);
    fprintf(stderr, "engine power cut (internal): %d cut points in all\n",
            all.points);
}
END_TEST

START_TEST(test_engine_cut_external)
{
    Totals all = { 0 };

    if (full()) {
        cut_scenario(2, S_EXTERNAL, &all);
        cut_scenario(4, S_EXTERNAL, &all);
        cut_scenario(2, S_MIX, &all);
    }
    cut_scenario(4, S_MIX, &all);
    fprintf(stderr, "engine power cut (external, mix): %d cut points in "
            "all\n", all.points);
}
END_TEST

/* Without a state directory the engine writes no record and no
 * extension; with one, a successful transaction leaves neither behind
 * and no hidden temporary overlay. */
START_TEST(test_engine_no_state_dir)
{
    TxnDevs *d = txn_devs_new("nostate", 2, 3);
    g_autofree char *jdir = tmp_path("nostate-journal");
    g_autoptr(BlkTransactionStates) t = NULL;
    g_autofree char *listing = NULL;
    GError *err = NULL;

    ck_assert(blk_transaction_set_state_dir(NULL, NULL));
    ck_assert_ptr_null(blk_transaction_get_state_dir());
    txn_devs_open(d, NULL);
    t = blk_transaction_new();
    build(t, d, S_MIX);
    ck_assert_msg(blk_transaction_submit(t, &err), "%s",
                  err ? err->message : "");
    g_clear_pointer(&t, blk_transaction_free);
    txn_devs_close(d);
    ck_assert(!g_file_test(jdir, G_FILE_TEST_EXISTS));

    ck_assert(blk_transaction_set_state_dir(jdir, NULL));
    ck_assert_ptr_nonnull(blk_transaction_get_state_dir());
    txn_devs_open(d, NULL);
    t = blk_transaction_new();
    txn_add_ok(t, txn_internal("d0", "again"));
    txn_add_ok(t, txn_internal("d1", "again"));
    ck_assert_msg(blk_transaction_submit(t, &err), "%s",
                  err ? err->message : "");
    g_clear_pointer(&t, blk_transaction_free);
    txn_devs_close(d);
    ck_assert(blk_transaction_set_state_dir(NULL, NULL));
    ck_assert_int_eq(count_records(jdir), 0);
    assert_no_extension(d);
    txn_check_dir_clean(d->dir);
    free_devs(d);
}
END_TEST

/*
 * An external-snapshot-only transaction cut at every write: whenever the
 * crash leaves a committed record, opening the first disk's OLD image
 * alone (no recover_all, no other image, no overlay) completes it: every
 * overlay renamed into place, no record, no extension anywhere.  Before
 * the old images were marked, they knew nothing and the overlays stayed
 * hidden until the daemon's start.
 */
START_TEST(test_engine_external_old_image)
{
    TxnDevs *tmpl = light_devs_new("witness-tmpl", 2, 71);
    g_autofree char *jdir = tmp_path("witness-journal");
    int committed = 0, points = 0;

    for (uint64_t cut = 0;; cut++) {
        TxnDevs *d = clone_devs(tmpl, "witness");
        BlkTransactionStates *t;
        GError *err = NULL;
        bool fired;

        t = cut_begin(d, jdir);
        build(t, d, S_EXTERNAL);
        fired = cut_end(d, t, POWER_CUT_LOSE_UNFLUSHED, cut, "external",
                        NULL);
        points++;
        /* committed, some overlay still under its temporary name (a
         * record whose only loss is its unsynced done mark has nothing
         * pending) */
        if (count_records(jdir) == 1 && count_hidden(d->dir) > 0) {
            BlockDriverState *bs;

            committed++;
            bs = bdrv_open(d->base[0], NULL,
                           BDRV_O_RDWR | BDRV_O_NO_BACKING, &err);
            ck_assert_msg(bs, "%s", err ? err->message : "");
            bdrv_unref(bs);
            ck_assert_msg(count_records(jdir) == 0, "cut %" PRIu64 ": "
                          "opening the old image left the record", cut);
            ck_assert_int_eq(count_hidden(d->dir), 0);
            for (int i = 0; i < d->n; i++) {
                g_autofree char *ovl = overlay_path(d, i);
                ck_assert_msg(g_file_test(ovl, G_FILE_TEST_EXISTS),
                              "cut %" PRIu64 ": overlay %d not published",
                              cut, i);
            }
            assert_no_extension(d);
        }
        free_devs(d);
        if (!fired) {
            break;
        }
    }
    fprintf(stderr, "external, old image opened alone: %d cut points, %d "
            "with a committed record and an unpublished overlay\n", points,
            committed);
    ck_assert_int_gt(committed, 0);
    rm_dir(jdir);
    free_devs(tmpl);
}
END_TEST

/*
 * Issue 14, the mix with an action the record does not cover: an
 * internal snapshot of d0 and blockdev-snapshot-sync mode=existing of d1
 * onto an overlay made beforehand (its backing link already set), cut at
 * every write.  The existing overlay is never marked nor written (its
 * publish is the in-memory switch only), so whatever the cut it stays
 * byte for byte what it was; d0 alone follows the record (all or
 * nothing for the logged part), and checks clean after recovery.
 */
START_TEST(test_engine_mix_existing_overlay)
{
    TxnDevs *tmpl = light_devs_new("exist-tmpl", 2, 73);
    g_autofree char *jdir = tmp_path("exist-journal");
    int olds = 0, news = 0;

    {
        g_autofree char *ovl = overlay_path(tmpl, 1);
        /* relative: the clones are copies in other directories */
        create_img(ovl, LIGHT_SIZE, "d1.qcow2", "qcow2");
    }
    for (uint64_t cut = 0;; cut++) {
        TxnDevs *d = clone_devs(tmpl, "exist");
        g_autofree char *ovl = overlay_path(d, 1);
        BlkTransactionStates *t;
        BlkTransactionAction ex = txn_external("d1", ovl);
        gsize blen, alen;
        g_autofree char *before = NULL, *after = NULL;
        g_autofree char *names = NULL;
        BlockDriverState *bs;
        bool fired;

        ck_assert(g_file_get_contents(ovl, &before, &blen, NULL));
        t = cut_begin(d, jdir);
        txn_add_ok(t, txn_internal("d0", "new"));
        ex.u.snapshot_sync.mode_existing = true;
        txn_add_ok(t, ex);
        fired = cut_end(d, t, POWER_CUT_LOSE_UNFLUSHED, cut, "mix", NULL);

        ck_assert(g_file_get_contents(ovl, &after, &alen, NULL));
        ck_assert_msg(alen == blen && memcmp(before, after, blen) == 0,
                      "cut %" PRIu64 ": the existing overlay was written",
                      cut);
        recover(d, jdir);
        ck_assert_int_eq(count_records(jdir), 0);
        bs = open_img(d->base[0], 0);
        names = txn_snapshot_names(bs);
        bdrv_unref(bs);
        if (strstr(names, "new")) {
            news++;
        } else {
            olds++;
        }
        assert_no_extension(d);
        txn_check_dir_clean(d->dir);
        free_devs(d);
        if (!fired) {
            break;
        }
    }
    fprintf(stderr, "mix with an existing overlay: %d cut points (%d old, "
            "%d new on the logged disk)\n", olds + news, olds, news);
    ck_assert_int_gt(olds, 0);
    ck_assert_int_gt(news, 0);
    rm_dir(jdir);
    free_devs(tmpl);
}
END_TEST

static Suite *engine_suite(void)
{
    /* CK_RUN_CASE=internal|external|basic runs one group */
    Suite *s = suite_create("intent-engine");
    TCase *basic = tcase_create("basic");
    TCase *in = tcase_create("internal");
    TCase *ex = tcase_create("external");

    tcase_add_test(basic, test_engine_no_state_dir);
    tcase_add_test(basic, test_engine_external_old_image);
    tcase_add_test(basic, test_engine_mix_existing_overlay);
    tcase_add_test(in, test_engine_cut_internal);
    tcase_add_test(ex, test_engine_cut_external);
    tcase_set_timeout(basic, 300);
    tcase_set_timeout(in, 1200);
    tcase_set_timeout(ex, 1200);
    suite_add_tcase(s, basic);
    suite_add_tcase(s, in);
    suite_add_tcase(s, ex);
    return s;
}

int main(void)
{
    return chaintest_run(engine_suite());
}
