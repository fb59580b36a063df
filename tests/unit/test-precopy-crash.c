/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * SIGKILL at every write of an internal snapshot transaction with
 * pre-copy (issue 15).  The test re-runs itself as a child that opens the
 * image through the blkdebug filter, killed just before the Nth write or
 * flush of the image file (inject-error.any=N, action=kill), and runs a
 * transaction taking snapshot "new"; N = 1, 2, ... until a child is not
 * killed at all.  After each kill:
 *   - `qemu-img check` and ours find no error at all (leaks only): the
 *     create that rewrote COPIED flags in place (`--classic` below, the
 *     path without pre-copy) leaves COPIED errors at some kill points;
 *   - the snapshot list is "old" or "old,new";
 *   - the active image and "old" read as before, and "new" (if listed)
 *     exactly as the active image at the drain;
 *   - after `check -r leaks` the image is clean.
 * Kills must land on both sides of the commit point.  Run twice: on a
 * plain image and on one with lazy_refcounts=on (which took the classic
 * path before issue 15's follow-up).
 *
 * Run by hand with `--classic` to see the same kills on a create without
 * pre-copy (bdrv_snapshot_create) fail the check.
 */
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include "txntest.h"

#define K_SIZE (1 * MiB)
#define K_CLUSTER 512

static const char *self_exe;
static bool classic;

/* ---- the child ---- */

static int child(const char *path, const char *n, bool use_classic)
{
    BlockOpts *o = bdrv_opts_new();
    BlockDriverState *bs;
    BlockBackend *blk;
    GError *err = NULL;
    bool ok;

    bdrv_opts_set(o, "driver", "qcow2");
    bdrv_opts_set(o, "file.driver", "blkdebug");
    bdrv_opts_set(o, "file.inject-error.any", n);
    bdrv_opts_set(o, "file.inject-error.action", "kill");
    bs = bdrv_open(path, o, BDRV_O_RDWR, &err);
    if (!bs) {
        fprintf(stderr, "child open: %s\n", err->message);
        return 2;
    }
    if (use_classic) {
        BdrvSnapshotInfo t = { .name = (char *)"new",
                               .icount = BDRV_SNAPSHOT_NO_ICOUNT };
        ok = bdrv_snapshot_create(bs, &t, 0, NULL, &err) == 0;
        bdrv_unref(bs);
    } else {
        BlkTransactionStates *txn = blk_transaction_new();
        BlkTransactionAction a = txn_internal("k0", "new");

        blk = blk_new("k0", bs);
        bdrv_unref(bs);
        if (!blockdev_add_device(blk, &err) ||
            !blk_transaction_add(txn, &a, &err)) {
            fprintf(stderr, "child: %s\n", err->message);
            return 2;
        }
        ok = blk_transaction_submit(txn, &err);
        blk_transaction_free(txn);
        blockdev_remove_all_devices();
        blk_unref(blk);
    }
    if (!ok) {
        fprintf(stderr, "child: %s\n", err->message);
        return 3;
    }
    return 0;
}

/* ---- the parent ---- */

static void run_self(const char *path, uint64_t n, bool *killed)
{
    g_autofree char *ns = g_strdup_printf("%" G_GUINT64_FORMAT, n);
    g_autofree char *err = NULL;
    const char *argv[] = { self_exe, classic ? "--child-classic" : "--child",
                           path, ns, NULL };
    int status = 0;

    ck_assert(g_spawn_sync(NULL, (char **)argv, NULL, 0, NULL, NULL, NULL,
                           &err, &status, NULL));
    *killed = WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL;
    ck_assert_msg(*killed || (WIFEXITED(status) && WEXITSTATUS(status) == 0),
                  "child at %" G_GUINT64_FORMAT ": status %#x\n%s", n, status,
                  err);
}

/* qemu-img check's exit code (0 clean, 2 errors, 3 leaks only); -1
 * without qemu-img. */
static int qemu_check_rc(const char *path, const char *repair, char **out)
{
    g_autofree char *qemu_img = g_find_program_in_path("qemu-img");
    const char *argv[] = { qemu_img, "check", repair ? "-r" : path, repair,
                           repair ? path : NULL, NULL };
    int status = 0;

    if (!qemu_img) {
        return -1;
    }
    ck_assert(g_spawn_sync(NULL, (char **)argv, NULL,
                           G_SPAWN_STDERR_TO_DEV_NULL, NULL, NULL, out,
                           NULL, &status, NULL));
    ck_assert(WIFEXITED(status));
    return WEXITSTATUS(status);
}

static uint8_t *content(const char *path, const char *snap)
{
    BlockDriverState *bs = open_img(path, 0);
    GError *err = NULL;
    uint8_t *buf;

    if (snap) {
        ck_assert_msg(bdrv_snapshot_load_tmp(bs, NULL, snap, &err) == 0,
                      "%s", err ? err->message : "");
    }
    buf = read_all(bs, K_SIZE);
    bdrv_unref(bs);
    return buf;
}

static void make_pristine(const char *path, bool lazy)
{
    BlockOpts *o = bdrv_opts_new();
    g_autofree char *sz = g_strdup_printf("%d", (int)K_SIZE);
    g_autofree char *cs = g_strdup_printf("%d", K_CLUSTER);
    BlockDriverState *bs;
    BdrvSnapshotInfo t = { .name = (char *)"old",
                           .icount = BDRV_SNAPSHOT_NO_ICOUNT };
    GRand *r = g_rand_new_with_seed(5);
    GError *err = NULL;

    bdrv_opts_set(o, "size", sz);
    bdrv_opts_set(o, "cluster_size", cs);
    if (lazy) {
        bdrv_opts_set(o, "lazy_refcounts", "on");
    }
    ck_assert(bdrv_create("qcow2", path, o, &err));
    g_hash_table_unref(o);
    bs = open_img(path, BDRV_O_RDWR);
    fill_random(bs, r, 40);
    ck_assert(bdrv_snapshot_create(bs, &t, 0, NULL, &err) == 0);
    fill_random(bs, r, 15);
    bdrv_unref(bs);
    g_rand_free(r);
}

static void copy_file(const char *from, const char *to)
{
    g_autofree char *data = NULL;
    gsize len;

    ck_assert(g_file_get_contents(from, &data, &len, NULL));
    ck_assert(g_file_set_contents(to, data, len, NULL));
}

/* _i: 1 for an image with lazy_refcounts=on (its create takes the
 * pre-copy too) */
START_TEST(test_kill_every_write)
{
    bool lazy = _i;
    g_autofree char *dir = g_dir_make_tmp("strata-pckill-XXXXXX", NULL);
    g_autofree char *path = g_build_filename(dir, "k.qcow2", NULL);
    g_autofree char *pristine = g_build_filename(dir, "pristine.img", NULL);
    g_autofree uint8_t *active = NULL, *old = NULL;
    unsigned seen_old = 0, seen_new = 0, leaks = 0, errors = 0;
    bool killed = true;
    uint64_t n;

    {
        g_autofree char *qi = g_find_program_in_path("qemu-img");
        if (!qi) {
            printf("qemu-img not found: only our check runs\n");
        }
    }
    make_pristine(pristine, lazy);
    active = content(pristine, NULL);
    old = content(pristine, "old");
    for (n = 1; killed; n++) {
        g_autofree char *names = NULL;
        g_autofree char *out = NULL;
        g_autofree uint8_t *got = NULL;
        BlockDriverState *bs;
        BdrvCheckResult res;
        int rc;

        ck_assert_uint_lt(n, 5000);
        copy_file(pristine, path);
        run_self(path, n, &killed);
        rc = qemu_check_rc(path, NULL, &out);
        if (classic && rc == 2) {
            errors++;
            continue;
        }
        ck_assert_msg(rc == -1 || rc == 0 || rc == 3,
                      "kill at write %" G_GUINT64_FORMAT ": qemu-img check "
                      "exit %d\n%s", n, rc, out);
        leaks += rc == 3;
        bs = open_img(path, 0);
        ck_assert_int_eq(bdrv_check(bs, &res, BDRV_FIX_NONE), 0);
        ck_assert_msg(res.corruptions == 0 && res.check_errors == 0,
                      "kill at write %" G_GUINT64_FORMAT ": %d corruptions",
                      n, res.corruptions);
        names = txn_snapshot_names(bs);
        bdrv_unref(bs);
        ck_assert_msg(!strcmp(names, "old") || !strcmp(names, "old,new"),
                      "kill at write %" G_GUINT64_FORMAT ": snapshots %s", n,
                      names);
        got = content(path, NULL);
        assert_same(got, active, K_SIZE, "active image after a kill");
        g_free(got);
        got = content(path, "old");
        assert_same(got, old, K_SIZE, "snapshot old after a kill");
        if (!strcmp(names, "old,new")) {
            g_free(got);
            got = content(path, "new");
            assert_same(got, active, K_SIZE, "snapshot new after a kill");
            seen_new += killed;
        } else {
            seen_old += killed;
        }
        if (rc == 3) {
            g_autofree char *o2 = NULL;
            ck_assert_int_eq(qemu_check_rc(path, "leaks", &o2), 0);
        }
        if (!killed) {
            ck_assert_str_eq(names, "old,new");
        }
    }
    printf("%s%" G_GUINT64_FORMAT " kill points: %u left the old state, "
           "%u the new one, %u with leaked clusters, %u with errors\n",
           lazy ? "lazy refcounts: " : "", n - 2, seen_old, seen_new, leaks,
           errors);
    ck_assert_uint_eq(errors, 0);
    ck_assert_uint_gt(seen_old, 0);
    ck_assert_uint_gt(seen_new, 0);
    unlink(path);
    unlink(pristine);
    rmdir(dir);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("precopy-crash");
    TCase *tc = tcase_create("kill");

    tcase_set_timeout(tc, 1200);
    tcase_add_loop_test(tc, test_kill_every_write, 0, 2);
    suite_add_tcase(s, tc);
    return s;
}

int main(int argc, char **argv)
{
    strata_log_set_sink(strata_log_to_stderr, NULL);
    if (argc == 4 && (!strcmp(argv[1], "--child") ||
                      !strcmp(argv[1], "--child-classic"))) {
        return child(argv[2], argv[3], !strcmp(argv[1], "--child-classic"));
    }
    self_exe = g_file_test(argv[0], G_FILE_TEST_IS_EXECUTABLE) && argv[0][0] == '/'
               ? argv[0] : g_canonicalize_filename(argv[0], NULL);
    classic = argc == 2 && !strcmp(argv[1], "--classic");
    return chaintest_run(suite());
}
