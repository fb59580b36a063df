/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Internal snapshot create with pre-copy (issue 15; block/qcow2-precopy.c)
 * through the transaction engine.
 *
 * model: a randomized test against a model.  A qcow2 image with 512-byte
 *   clusters (so many L2 tables and refcount blocks), random data, an
 *   older snapshot (so some clusters are shared and some L2 tables too)
 *   and writes after it.  A transaction takes snapshot "new"; between
 *   every two steps of phase 1 the step hook runs guest operations --
 *   writes to clusters whose table is already copied or not yet, writes
 *   to unallocated areas (new clusters, new L2 tables), discards, zero
 *   writes with and without unmap -- on a model too.  After it: the
 *   snapshot reads exactly as the model did at the drain, the older
 *   snapshot as before, the active image as the model after more writes,
 *   qemu-img reads the snapshot the same (convert -l), and the image
 *   checks clean with no leaks (ours and qemu-img's).
 *   Seeds 6..8 do the same on images with lazy_refcounts=on.
 * delete_model: a delete's clean frees the tree in parts with guest
 *   operations between them (see the test).
 * delete_pre_do: a delete's pre_do writes its table before the drain;
 *   guest operations run between pre_do and do; then do, invalidate,
 *   clean (seeds 0..3), or cancel after pre_do (4..7: pre_cancel and
 *   clean, never done; 8..11: done, then cancelled under the drain).
 *   See the test.
 * faults: the Nth read, write or flush of the image fails, for every N
 *   until the transaction succeeds: each failure leaves the snapshot
 *   list and the content as they were and the image clean with no leak.
 * copy_changed: L2 copies overwritten behind the pre-copy's back are
 *   found when read back (their CRC), and the snapshot fails cleanly.
 */
#include "block/fault-inject.h"
#include "block/qcow2-precopy.h"
#include "block/qcow2-snapshot.h"
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "txntest.h"

#define P_SIZE (2 * MiB)
#define P_CLUSTER 512

typedef struct Guest {
    BlockBackend *blk;
    uint8_t *model;
    GRand *r;
    unsigned steps;
    unsigned ops;
    int per_step;
} Guest;

/* Seeds from this one on use an image with lazy_refcounts=on. */
#define LAZY_FROM 6

static void make_image(const char *path, bool lazy)
{
    BlockOpts *o = bdrv_opts_new();
    g_autofree char *sz = g_strdup_printf("%d", (int)P_SIZE);
    g_autofree char *cs = g_strdup_printf("%d", P_CLUSTER);
    GError *err = NULL;

    bdrv_opts_set(o, "size", sz);
    bdrv_opts_set(o, "cluster_size", cs);
    if (lazy) {
        bdrv_opts_set(o, "lazy_refcounts", "on");
    }
    ck_assert_msg(bdrv_create("qcow2", path, o, &err), "create: %s",
                  err ? err->message : "");
    g_hash_table_unref(o);
}

/* One random guest operation on the device and the model. */
static void guest_op(Guest *g)
{
    int kind = g_rand_int_range(g->r, 0, 10);
    int64_t len = g_rand_int_range(g->r, 1, 5) * P_CLUSTER;
    int64_t off = g_rand_int_range(g->r, 0, (P_SIZE - len) / P_CLUSTER) *
                  (int64_t)P_CLUSTER;

    if (kind < 6) {
        /* sub-cluster offsets and lengths too: COW inside clusters */
        uint8_t *buf;
        int64_t o2 = off + g_rand_int_range(g->r, 0, P_CLUSTER);
        int64_t l2 = MIN(len, P_SIZE - o2);
        buf = g_malloc(l2);
        for (int64_t i = 0; i < l2; i++) {
            buf[i] = g_rand_int(g->r);
        }
        ck_assert_int_eq(blk_pwrite(g->blk, o2, l2, buf), 0);
        memcpy(g->model + o2, buf, l2);
        g_free(buf);
    } else if (kind < 8) {
        ck_assert_int_eq(blk_pdiscard(g->blk, off, len), 0);
        memset(g->model + off, 0, len);
    } else {
        ck_assert_int_eq(blk_pwrite_zeroes(g->blk, off, len,
                                           kind == 8 ? BDRV_REQ_MAY_UNMAP
                                                     : 0), 0);
        memset(g->model + off, 0, len);
    }
    g->ops++;
}

static void step_hook(BlockDriverState *bs, unsigned step, void *opaque)
{
    Guest *g = opaque;

    g->steps++;
    for (int i = 0; i < g->per_step; i++) {
        guest_op(g);
    }
}

static void snapshot_content(const char *path, const char *name,
                             uint8_t **out)
{
    BlockDriverState *bs = open_img(path, 0);
    GError *err = NULL;

    if (name) {
        ck_assert_msg(bdrv_snapshot_load_tmp(bs, NULL, name, &err) == 0,
                      "load %s: %s", name, err ? err->message : "");
    }
    *out = read_all(bs, P_SIZE);
    bdrv_unref(bs);
}

/* qemu-img's reading of snapshot name equals want (skipped without
 * qemu-img). */
static void qemu_snapshot_equals(const char *path, const char *name,
                                 const uint8_t *want)
{
    g_autofree char *qemu_img = g_find_program_in_path("qemu-img");
    g_autofree char *raw = g_strconcat(path, ".", name, ".raw", NULL);
    g_autofree char *opt = g_strconcat("snapshot.name=", name, NULL);
    g_autofree char *got = NULL;
    gsize len = 0;
    int status = 0;
    const char *argv[] = { qemu_img, "convert", "-U", "-f", "qcow2", "-O",
                           "raw", "-l", opt, path, raw, NULL };

    if (!qemu_img) {
        return;
    }
    ck_assert(g_spawn_sync(NULL, (char **)argv, NULL, 0, NULL, NULL, NULL,
                           NULL, &status, NULL));
    ck_assert_msg(status == 0, "qemu-img convert -l %s failed", name);
    ck_assert(g_file_get_contents(raw, &got, &len, NULL));
    ck_assert_int_eq(len, P_SIZE);
    assert_same((const uint8_t *)got, want, P_SIZE, "qemu-img's snapshot");
    unlink(raw);
}

static BlockBackend *open_device(const char *path, const char *name)
{
    BlockDriverState *bs = open_img(path, BDRV_O_RDWR);
    BlockBackend *blk = blk_new(name, bs);
    GError *err = NULL;

    bdrv_unref(bs);
    ck_assert_msg(blockdev_add_device(blk, &err), "%s",
                  err ? err->message : "");
    return blk;
}

static void close_device(BlockBackend *blk)
{
    blockdev_remove_all_devices();
    blk_unref(blk);
}

/* Random data, snapshot "old", more writes: some clusters and tables
 * shared with "old", some not. */
static void prepare(const char *path, Guest *g, uint8_t **old_model,
                    bool lazy)
{
    BlkTransactionStates *t;
    GError *err = NULL;

    make_image(path, lazy);
    g->blk = open_device(path, "p0");
    g->model = g_malloc0(P_SIZE);
    for (int i = 0; i < 150; i++) {
        guest_op(g);
    }
    t = blk_transaction_new();
    txn_add_ok(t, txn_internal("p0", "old"));
    ck_assert_msg(blk_transaction_submit(t, &err), "%s",
                  err ? err->message : "");
    blk_transaction_free(t);
    *old_model = g_memdup2(g->model, P_SIZE);
    for (int i = 0; i < 60; i++) {
        guest_op(g);
    }
}

START_TEST(test_model)
{
    g_autofree char *dir = g_dir_make_tmp("strata-precopy-XXXXXX", NULL);
    g_autofree char *path = g_build_filename(dir, "p.qcow2", NULL);
    g_autofree uint8_t *old_model = NULL, *at_drain = NULL;
    g_autofree uint8_t *got = NULL;
    Guest g = { .r = g_rand_new_with_seed(1000 + _i), .per_step = 1 + _i % 3 };
    BlkTransactionStates *t;
    GError *err = NULL;

    prepare(path, &g, &old_model, _i >= LAZY_FROM);
    qcow2_precopy_set_step_hook(step_hook, &g);
    t = blk_transaction_new();
    txn_add_ok(t, txn_internal("p0", "new"));
    ck_assert_msg(blk_transaction_submit(t, &err), "%s",
                  err ? err->message : "");
    blk_transaction_free(t);
    qcow2_precopy_set_step_hook(NULL, NULL);
    /* the pre-copy ran (the hook is called only there), with the guest
     * busy between its steps: more steps than L2 tables in the image
     * (lazy refcounts included: they took the classic path before) */
    ck_assert_uint_ge(g.steps, P_SIZE / P_CLUSTER / (P_CLUSTER / 8));
    at_drain = g_memdup2(g.model, P_SIZE);
    for (int i = 0; i < 80; i++) {
        guest_op(&g);
    }
    got = blk_read_all(g.blk, P_SIZE);
    assert_same(got, g.model, P_SIZE, "active image");
    g_clear_pointer(&got, g_free);
    close_device(g.blk);

    snapshot_content(path, "new", &got);
    assert_same(got, at_drain, P_SIZE, "snapshot new (the drain)");
    g_clear_pointer(&got, g_free);
    snapshot_content(path, "old", &got);
    assert_same(got, old_model, P_SIZE, "snapshot old");
    g_clear_pointer(&got, g_free);
    snapshot_content(path, NULL, &got);
    assert_same(got, g.model, P_SIZE, "active image reopened");
    qemu_snapshot_equals(path, "new", at_drain);
    qemu_snapshot_equals(path, "old", old_model);
    check_clean(path);
    printf("seed %d%s: %u phase-1 steps, %u guest operations\n", _i,
           _i >= LAZY_FROM ? " (lazy refcounts)" : "", g.steps, g.ops);
    g_free(g.model);
    g_rand_free(g.r);
    unlink(path);
    rmdir(dir);
}
END_TEST

/* ---- delete: the frees in parts, guest operations between them ---- */

static void free_hook(BlockDriverState *bs, unsigned part, void *opaque)
{
    step_hook(bs, part, opaque);
}

/*
 * A transaction deletes "old" (which shares clusters and tables with the
 * active image and with "mid"); its clean frees the tree in parts of 2
 * L1 entries, and between every two parts the hook runs guest writes,
 * discards and zero writes (on clusters still shared with the tree being
 * freed, already freed, and new ones).  Afterwards: the frees were cut
 * into parts (the hook ran), the active image reads as the model, "mid"
 * as when it was taken, and both checks find no error and no leak (a
 * count freed twice, or a cluster a guest got while the tree still held
 * it, would show).
 */
START_TEST(test_delete_model)
{
    g_autofree char *dir = g_dir_make_tmp("strata-precopy-XXXXXX", NULL);
    g_autofree char *path = g_build_filename(dir, "p.qcow2", NULL);
    g_autofree uint8_t *old_model = NULL, *mid_model = NULL;
    g_autofree uint8_t *got = NULL;
    bool lazy = _i % 2;
    Guest g = { .r = g_rand_new_with_seed(2000 + _i), .per_step = 1 + _i % 3 };
    BlkTransactionStates *t;
    GError *err = NULL;

    prepare(path, &g, &old_model, lazy);
    t = blk_transaction_new();
    txn_add_ok(t, txn_internal("p0", "mid"));
    ck_assert_msg(blk_transaction_submit(t, &err), "%s",
                  err ? err->message : "");
    blk_transaction_free(t);
    mid_model = g_memdup2(g.model, P_SIZE);
    for (int i = 0; i < 60; i++) {
        guest_op(&g);
    }
    g.steps = 0;
    qcow2_snapshot_set_free_hook(free_hook, &g, 2);
    t = blk_transaction_new();
    txn_add_ok(t, txn_delete("p0", NULL, "old"));
    ck_assert_msg(blk_transaction_submit(t, &err), "%s",
                  err ? err->message : "");
    blk_transaction_free(t);
    qcow2_snapshot_set_free_hook(NULL, NULL, 0);
    /* the tree's 64 L1 entries in parts of 2, then the active tree's
     * COPIED fix in parts of 2: the guest ran between them */
    ck_assert_uint_ge(g.steps, P_SIZE / P_CLUSTER / (P_CLUSTER / 8) / 2);
    {
        g_autofree char *names = txn_snapshot_names(blk_bs(g.blk));
        ck_assert_str_eq(names, "mid");
    }
    for (int i = 0; i < 40; i++) {
        guest_op(&g);
    }
    got = blk_read_all(g.blk, P_SIZE);
    assert_same(got, g.model, P_SIZE, "active image");
    g_clear_pointer(&got, g_free);
    close_device(g.blk);
    snapshot_content(path, "mid", &got);
    assert_same(got, mid_model, P_SIZE, "snapshot mid");
    g_clear_pointer(&got, g_free);
    snapshot_content(path, NULL, &got);
    assert_same(got, g.model, P_SIZE, "active image reopened");
    qemu_snapshot_equals(path, "mid", mid_model);
    check_clean(path);
    printf("delete seed %d%s: %u parts with guest operations between, "
           "%u guest operations\n", _i, lazy ? " (lazy refcounts)" : "",
           g.steps, g.ops);
    g_free(g.model);
    g_rand_free(g.r);
    unlink(path);
    rmdir(dir);
}
END_TEST

/* How the delete_pre_do seeds end (seed / 4). */
enum { PD_PUBLISH, PD_PRE_CANCEL, PD_CANCEL };

static void step_ok(int ret, GError **err, const char *what)
{
    ck_assert_msg(ret == 0, "%s: %s", what, *err ? (*err)->message : "");
}

/*
 * "old" (sharing clusters and tables with the active image and "mid") is
 * deleted through the generic steps on the device's node, the way the
 * engine drives them: pre_do with the guest running, then 30 random
 * guest operations (writes -- copy-on-write of clusters shared with
 * "old" and "mid" --, new clusters, discards, zero writes) on the device
 * and a model, then the drained part.
 *
 * PD_PUBLISH: do under the drain leaves the L2 tables the guest dirtied
 * dirty (before issue 15's delete pre_do, do wrote all the metadata back
 * first: the hold that grew with the data); afterwards the list is
 * "mid", "mid" reads as taken, the active image as the model.
 * PD_PRE_CANCEL / PD_CANCEL: the list is still "old,mid", "old" and
 * "mid" read as taken, the active image as the model.
 * Always: the image is clean with no leak and no error (ours and
 * qemu-img's), and qemu-img reads "mid" as we do.
 */
START_TEST(test_delete_pre_do)
{
    g_autofree char *dir = g_dir_make_tmp("strata-precopy-XXXXXX", NULL);
    g_autofree char *path = g_build_filename(dir, "p.qcow2", NULL);
    g_autofree uint8_t *old_model = NULL, *mid_model = NULL;
    g_autofree uint8_t *got = NULL;
    int end = _i / 4;
    bool lazy = _i % 2;
    Guest g = { .r = g_rand_new_with_seed(3000 + _i) };
    BlkTransactionStates *t;
    BlockDriverState *bs;
    BdrvSnapshotOp *op;
    GError *err = NULL;

    prepare(path, &g, &old_model, lazy);
    t = blk_transaction_new();
    txn_add_ok(t, txn_internal("p0", "mid"));
    ck_assert_msg(blk_transaction_submit(t, &err), "%s",
                  err ? err->message : "");
    blk_transaction_free(t);
    mid_model = g_memdup2(g.model, P_SIZE);
    for (int i = 0; i < 20; i++) {
        guest_op(&g);
    }
    bs = blk_bs(g.blk);
    op = bdrv_snapshot_delete_check(bs, NULL, "old", &err);
    ck_assert_msg(op, "%s", err ? err->message : "");
    step_ok(bdrv_snapshot_op_pre_do(op, &err), &err, "pre_do");
    for (int i = 0; i < 30; i++) {
        guest_op(&g);
    }
    if (end == PD_PRE_CANCEL) {
        bdrv_snapshot_op_pre_cancel(op);
    } else {
        BDRVQcow2State *s = bs->opaque;
        /* the random operations may all have hit COPIED clusters (no
         * metadata change): a discard and a write of the last cluster
         * allocate it anew, so its L2 table is dirty for sure */
        uint8_t buf[P_CLUSTER];
        memset(buf, 0x5a, sizeof(buf));
        ck_assert_int_eq(blk_pdiscard(g.blk, P_SIZE - P_CLUSTER,
                                      P_CLUSTER), 0);
        ck_assert_int_eq(blk_pwrite(g.blk, P_SIZE - P_CLUSTER, P_CLUSTER,
                                    buf), 0);
        memcpy(g.model + P_SIZE - P_CLUSTER, buf, P_CLUSTER);
        ck_assert(qcow2_cache_has_dirty(s->l2_cache) ||
                  qcow2_cache_has_dirty(s->refcount_cache));
        bdrv_drained_begin(bs);
        step_ok(bdrv_snapshot_op_do(op, &err), &err, "do");
        /* the drained do wrote back nothing of the guest's */
        ck_assert_msg(qcow2_cache_has_dirty(s->l2_cache) ||
                      qcow2_cache_has_dirty(s->refcount_cache),
                      "the delete's do wrote the guest's metadata back "
                      "under the drain");
        if (end == PD_PUBLISH) {
            step_ok(bdrv_snapshot_op_invalidate(op, &err), &err,
                    "invalidate");
        } else {
            step_ok(bdrv_snapshot_op_cancel(op, &err), &err, "cancel");
        }
        bdrv_drained_end(bs);
    }
    step_ok(bdrv_snapshot_op_clean(op, &err), &err, "clean");
    {
        g_autofree char *names = txn_snapshot_names(bs);
        ck_assert_str_eq(names, end == PD_PUBLISH ? "mid" : "old,mid");
    }
    for (int i = 0; i < 20; i++) {
        guest_op(&g);
    }
    got = blk_read_all(g.blk, P_SIZE);
    assert_same(got, g.model, P_SIZE, "active image");
    g_clear_pointer(&got, g_free);
    close_device(g.blk);
    snapshot_content(path, "mid", &got);
    assert_same(got, mid_model, P_SIZE, "snapshot mid");
    g_clear_pointer(&got, g_free);
    if (end != PD_PUBLISH) {
        snapshot_content(path, "old", &got);
        assert_same(got, old_model, P_SIZE, "snapshot old");
        g_clear_pointer(&got, g_free);
        qemu_snapshot_equals(path, "old", old_model);
    }
    snapshot_content(path, NULL, &got);
    assert_same(got, g.model, P_SIZE, "active image reopened");
    qemu_snapshot_equals(path, "mid", mid_model);
    check_clean(path);
    g_free(g.model);
    g_rand_free(g.r);
    unlink(path);
    rmdir(dir);
}
END_TEST

/* ---- faults ---- */

static const char *const kind_names[] = { "read", "write", "flush" };

/* qemu-img check: no corruption; leaks only if allowed (exit 3). */
static void qemu_check(const char *path, bool leaks_ok)
{
    g_autofree char *qemu_img = g_find_program_in_path("qemu-img");
    g_autofree char *out = NULL;
    const char *argv[] = { qemu_img, "check", "-U", path, NULL };
    int status = 0;

    if (!qemu_img) {
        return;
    }
    ck_assert(g_spawn_sync(NULL, (char **)argv, NULL, G_SPAWN_STDERR_TO_DEV_NULL,
                           NULL, NULL, &out, NULL, &status, NULL));
    ck_assert_msg(WIFEXITED(status) && (WEXITSTATUS(status) == 0 ||
                  (leaks_ok && WEXITSTATUS(status) == 3)),
                  "qemu-img check %s: exit %d\n%s", path,
                  WEXITSTATUS(status), out);
}

static void copy_file(const char *from, const char *to)
{
    g_autofree char *data = NULL;
    gsize len;

    ck_assert(g_file_get_contents(from, &data, &len, NULL));
    ck_assert(g_file_set_contents(to, data, len, NULL));
}

/* _i: a fault kind, plus FAULT__MAX for the same on a lazy-refcount
 * image */
START_TEST(test_faults)
{
    FaultKind kind = _i % FAULT__MAX;
    bool lazy = _i >= FAULT__MAX;
    g_autofree char *dir = g_dir_make_tmp("strata-precopy-XXXXXX", NULL);
    g_autofree char *path = g_build_filename(dir, "p.qcow2", NULL);
    g_autofree char *pristine = g_build_filename(dir, "pristine.img", NULL);
    g_autofree uint8_t *old_model = NULL;
    Guest g = { .r = g_rand_new_with_seed(77) };
    unsigned failures = 0, late = 0;
    bool done = false, injected = true;

    prepare(path, &g, &old_model, lazy);
    close_device(g.blk);
    copy_file(path, pristine);
    for (uint64_t n = 1; !done || injected; n++) {
        g_autofree char *names = NULL;
        g_autofree uint8_t *got = NULL;
        BlkTransactionStates *t;
        BlockDriverState *bs;
        GError *err = NULL;

        ck_assert_uint_lt(n, 20000);
        copy_file(pristine, path);
        g.blk = open_device(path, "p0");
        t = blk_transaction_new();
        txn_add_ok(t, txn_internal("p0", "new"));
        fault_inject_arm(kind, n);
        done = blk_transaction_submit(t, &err);
        blk_transaction_free(t);   /* clean may still do I/O here */
        injected = fault_inject_disarm();
        ck_assert(done || injected);
        if (done) {
            ck_assert_msg(!err, "%s", err->message);
            /* a fault after the publishing write, freeing what it
             * replaced: the snapshot stands, clusters may leak */
            late += injected;
        } else {
            ck_assert_msg(err, "failed without an error");
            g_clear_error(&err);
            failures++;
        }
        bs = blk_bs(g.blk);
        names = txn_snapshot_names(bs);
        ck_assert_str_eq(names, done ? "old,new" : "old");
        got = blk_read_all(g.blk, P_SIZE);
        assert_same(got, g.model, P_SIZE, "active image after a fault");
        close_device(g.blk);
        if (done && injected) {
            qemu_check(path, true);
        } else {
            check_clean(path);
        }
    }
    ck_assert_uint_gt(failures, 0);
    {
        g_autofree uint8_t *got = NULL;
        snapshot_content(path, "new", &got);
        assert_same(got, g.model, P_SIZE, "snapshot new");
    }
    printf("%s faults%s: %u failed transactions, %u faults after the "
           "commit, then success\n", kind_names[kind],
           lazy ? " (lazy refcounts)" : "", failures, late);
    g_free(g.model);
    g_rand_free(g.r);
    unlink(path);
    rmdir(dir);
}
END_TEST

/* ---- a copy changed behind the pre-copy's back ---- */

typedef struct Tamper {
    Guest *g;
    const char *path;
    off_t start;       /* the file's end when phase 1 began */
    unsigned at;       /* the step that tampers */
    bool done;
} Tamper;

/* At step `at`, every byte written past `start` (the L2 copies made so
 * far: the image has no free cluster, so they went there) is
 * overwritten, then one zero write per L2 table's range makes every
 * copied table dirty, so the pre-copy copies it again and reads the old
 * copy back to take its references out of the counts. */
static void tamper_hook(BlockDriverState *bs, unsigned step, void *opaque)
{
    Tamper *tp = opaque;
    struct stat st;

    if (step == 0) {
        ck_assert_int_eq(stat(tp->path, &st), 0);
        tp->start = st.st_size;
    }
    if (step != tp->at) {
        return;
    }
    {
        int fd = open(tp->path, O_WRONLY);
        g_autofree uint8_t *junk = NULL;
        size_t n;

        ck_assert_int_ge(fd, 0);
        ck_assert_int_eq(fstat(fd, &st), 0);
        ck_assert_int_gt(st.st_size, tp->start);
        n = st.st_size - tp->start;
        junk = g_malloc(n);
        memset(junk, 0xa5, n);
        ck_assert_int_eq(pwrite(fd, junk, n, tp->start), (ssize_t)n);
        close(fd);
    }
    for (int64_t off = 0; off < P_SIZE; off += P_CLUSTER * (P_CLUSTER / 8)) {
        ck_assert_int_eq(blk_pwrite_zeroes(tp->g->blk, off, P_CLUSTER, 0), 0);
        memset(tp->g->model + off, 0, P_CLUSTER);
    }
    tp->done = true;
}

/*
 * The file changes under the pre-copy (another program writing it
 * despite the lock): the copies it reads back no longer hold what it
 * counted, so the snapshot fails with that said, instead of writing
 * refcounts from a skewed count.  Nothing live changed: the active
 * image reads as written and checks clean, and no snapshot was added.
 */
START_TEST(test_copy_changed)
{
    g_autofree char *dir = g_dir_make_tmp("strata-precopy-XXXXXX", NULL);
    g_autofree char *path = g_build_filename(dir, "p.qcow2", NULL);
    g_autofree uint8_t *got = NULL;
    g_autofree char *names = NULL;
    Guest g = { .r = g_rand_new_with_seed(5) };
    Tamper tp = { .g = &g, .path = path, .at = 8 };
    BlkTransactionStates *t;
    GError *err = NULL;
    bool ok;

    make_image(path, false);
    g.blk = open_device(path, "p0");
    g.model = g_malloc(P_SIZE);
    for (int64_t i = 0; i < P_SIZE; i++) {
        g.model[i] = g_rand_int(g.r);
    }
    ck_assert_int_eq(blk_pwrite(g.blk, 0, P_SIZE, g.model), 0);
    ck_assert_int_eq(blk_flush(g.blk), 0);
    qcow2_precopy_set_step_hook(tamper_hook, &tp);
    t = blk_transaction_new();
    txn_add_ok(t, txn_internal("p0", "new"));
    ok = blk_transaction_submit(t, &err);
    blk_transaction_free(t);
    qcow2_precopy_set_step_hook(NULL, NULL);
    ck_assert(tp.done);
    ck_assert_msg(!ok && err && strstr(err->message, "changed under the "
                                                     "snapshot"),
                  "wanted the copy refused, got %s",
                  err ? err->message : "success");
    g_clear_error(&err);
    names = txn_snapshot_names(blk_bs(g.blk));
    ck_assert_str_eq(names, "");
    got = blk_read_all(g.blk, P_SIZE);
    assert_same(got, g.model, P_SIZE, "active image");
    close_device(g.blk);
    check_clean(path);
    g_free(g.model);
    g_rand_free(g.r);
    unlink(path);
    rmdir(dir);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("precopy");
    TCase *tc = tcase_create("core");

    tcase_set_timeout(tc, 1200);
    tcase_add_loop_test(tc, test_model, 0, LAZY_FROM + 3);
    tcase_add_loop_test(tc, test_delete_model, 0, 4);
    tcase_add_loop_test(tc, test_delete_pre_do, 0, 12);
    tcase_add_loop_test(tc, test_faults, FAULT_READ, 2 * FAULT__MAX);
    tcase_add_test(tc, test_copy_changed);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    strata_log_set_sink(strata_log_to_stderr, NULL);
    return chaintest_run(suite());
}
