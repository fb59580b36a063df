/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * qcow2 snapshot trees: giving every cluster under an L1 table one more
 * owner (refcounts +1, all or nothing), clearing the COPIED flags of such
 * a shared tree, and releasing a tree nothing points at any more (COPIED
 * preset in the active tree where a count will drop to 1, counts -1, the
 * tree's L1 clusters freed, COPIED recomputed).  The snapshot operations
 * in qcow2-snapshot.c call these under the qcow2 locks; that file's
 * header gives the order of the writes and why it is crash safe.
 *
 * Counting follows qemu-img check: an L2 table counts once per L1 entry
 * pointing at it, a data cluster once per L2 entry (so a table shared by
 * two L1 tables counts its data clusters twice).
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "qcow2.h"
#include "qcow2-snapshot.h"
#include "block/log.h"

/* Frees clusters nothing points at (any more); a failure only leaks. */
int qcow2_free_unreferenced(BlockDriverState *bs, uint64_t offset,
                            uint64_t bytes, Qcow2FreeReason why)
{
    if (!offset || !bytes) {
        return 0;
    }
    /* QEMU's event before each lowering of refcounts (blkdebug rules) */
    bdrv_debug_event(bs->file, "cluster_free");
    return qcow2_free_failed(qcow2_release_range(bs, offset, bytes, why));
}

int qcow2_free_failed(int ret)
{
    if (ret < 0) {
        /* what QEMU prints when one of its frees fails, at the point
         * where it emits cluster_free */
        strata_warning("qcow2_free_clusters failed: %s", g_strerror(-ret));
    }
    return ret;
}

int qcow2_write_l1_at(BlockDriverState *bs, uint64_t offset,
                      const uint64_t *l1, uint32_t n)
{
    g_autofree uint64_t *be = NULL;

    if (n == 0) {
        return 0;
    }
    be = g_try_new(uint64_t, n);
    if (!be) {
        return -ENOMEM;
    }
    for (uint32_t i = 0; i < n; i++) {
        be[i] = GUINT64_TO_BE(l1[i]);
    }
    bdrv_debug_event(bs->file, "snapshot_l1_write");
    /* overlap check (qcow2-overlap.c): only the active L1 may be there */
    return qcow2_overlap_pwrite(bs, offset == ((BDRVQcow2State *)bs->opaque)
                                ->l1_table_offset ? QCOW2_OL_ACTIVE_L1 : 0,
                                offset, (int64_t)n * 8, be);
}

/* The clusters an L2 entry holds a reference to: [*first, *first + *n).
 * -EINVAL for an entry no valid image has. */
int qcow2_entry_clusters(BDRVQcow2State *s, uint64_t e, uint64_t *first,
                         uint64_t *n)
{
    uint64_t off, len;

    *n = 0;
    switch (qcow2_get_cluster_type(e)) {
    case QCOW2_CLUSTER_NORMAL:
    case QCOW2_CLUSTER_ZERO_ALLOC:
        /* data in an external data file has no refcount to hold */
        if (qcow2_has_data_file(s)) {
            return 0;
        }
        off = e & L2E_OFFSET_MASK;
        if (off & (s->cluster_size - 1)) {
            return -EINVAL;
        }
        *first = off >> s->cluster_bits;
        *n = 1;
        return 0;
    case QCOW2_CLUSTER_COMPRESSED:
        qcow2_compressed_range(s, e, &off, &len);
        *first = off >> s->cluster_bits;
        *n = ((off + len - 1) >> s->cluster_bits) - *first + 1;
        return 0;
    default:
        return 0;
    }
}

/* An entry COPIED may apply to (it keeps a cluster of its own).  With
 * an external data file, none: a data cluster there has no refcount and
 * keeps COPIED always (QEMU's check counts it as 1). */
static bool entry_has_cluster(BDRVQcow2State *s, uint64_t e)
{
    Qcow2ClusterType t = qcow2_get_cluster_type(e);

    return (t == QCOW2_CLUSTER_NORMAL || t == QCOW2_CLUSTER_ZERO_ALLOC) &&
           !((e & L2E_OFFSET_MASK) & (s->cluster_size - 1)) &&
           !qcow2_has_data_file(s);
}

static int read_l2_copy(BlockDriverState *bs, uint64_t off, uint64_t *buf)
{
    BDRVQcow2State *s = bs->opaque;
    void *t;
    int ret = qcow2_cache_get(bs, s->l2_cache, off, &t);

    if (ret == 0) {
        memcpy(buf, t, s->cluster_size);
    }
    return ret;
}

/* A failed L2 read is worded alike whichever walk over a tree met it. */
static void set_l2_read_error(GError **errp, uint64_t l2_off, int err)
{
    g_set_error(errp, BDRV_ERROR, BDRV_ERROR_IO,
                "Could not read the L2 table at %#" G_GINT64_MODIFIER "x: %s",
                l2_off, g_strerror(-err));
}

static void set_update_error(GError **errp, uint64_t cluster, int err,
                             int refcount_bits)
{
    if (err == -ERANGE) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "The reference count of cluster %" G_GUINT64_FORMAT
                    " would exceed its maximum (refcount_bits=%d)", cluster,
                    refcount_bits);
    } else {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_IO,
                    "Could not update the reference count of cluster %"
                    G_GUINT64_FORMAT ": %s", cluster, g_strerror(-err));
    }
}

/*
 * Reads refcounts remembering the last refcount block, so a walk over
 * neighbouring clusters costs no cache lookup each.  The remembered table
 * stays valid while nobody else gets a table from the refcount cache
 * (writing it back does not move tables).
 */
typedef struct RcReader {
    uint64_t t;          /* refcount table index of rb */
    const void *rb;      /* NULL: nothing remembered */
} RcReader;

static int rc_get(BlockDriverState *bs, RcReader *r, uint64_t cluster,
                  uint64_t *rc)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t t = cluster >> s->refblock_bits;

    if (!r->rb || r->t != t) {
        uint64_t off;
        void *rb;
        int ret;

        r->rb = NULL;
        if (t >= s->refcount_table_size ||
            !(off = s->refcount_table[t] & REFT_OFFSET_MASK)) {
            *rc = 0;
            return 0;
        }
        ret = qcow2_cache_get(bs, s->refcount_cache, off, &rb);
        if (ret < 0) {
            return ret;
        }
        r->rb = rb;
        r->t = t;
    }
    *rc = qcow2_refblock_get(s, r->rb, cluster & (s->refblock_size - 1));
    return 0;
}

/*
 * Adds addend (+1 or -1) to the refcounts of clusters [first, first + n),
 * one refcount block at a time, with the rules of
 * qcow2_update_cluster_refcount(); *done counts the clusters changed.
 * A cluster whose count reaches 0 goes into punch (if not NULL).
 */
static int update_run(BlockDriverState *bs, uint64_t first, uint64_t n,
                      int addend, uint64_t *done, Qcow2PunchRun *punch)
{
    BDRVQcow2State *s = bs->opaque;

    while (n) {
        uint64_t t = first >> s->refblock_bits, off, idx, m;
        void *rb;
        int ret;

        if (t >= s->refcount_table_size ||
            !(off = s->refcount_table[t] & REFT_OFFSET_MASK)) {
            /* no block: the general function says what is wrong */
            uint64_t rc = 1;

            ret = qcow2_update_cluster_refcount(bs, first, addend, &rc);
            if (ret < 0) {
                return ret;
            }
            if (punch && rc == 0) {
                qcow2_punch_add(bs, punch, first);
            }
            (*done)++;
            first++;
            n--;
            continue;
        }
        ret = qcow2_cache_get(bs, s->refcount_cache, off, &rb);
        if (ret < 0) {
            return ret;
        }
        ret = qcow2_cache_mark_dirty(s->refcount_cache, rb);
        if (ret < 0) {
            return ret;
        }
        idx = first & (s->refblock_size - 1);
        m = MIN(n, s->refblock_size - idx);
        for (uint64_t k = 0; k < m; k++) {
            uint64_t cur = qcow2_refblock_get(s, rb, idx + k);
            if (addend < 0 && cur == 0) {
                qcow2_signal_corruption(bs, "Refcount of cluster %"
                                        G_GUINT64_FORMAT " would drop below "
                                        "zero", first + k);
                return -EIO;
            }
            if (addend > 0 && cur == s->refcount_max) {
                return -ERANGE;
            }
            qcow2_refblock_set(s, rb, idx + k, cur + addend);
            if (cur + addend == 0) {
                uint64_t host = (first + k) << s->cluster_bits;
                qcow2_cache_discard(s->l2_cache, host);
                if (host != off) {
                    qcow2_cache_discard(s->refcount_cache, host);
                }
                s->free_cluster_index = MIN(s->free_cluster_index, first + k);
                if (punch) {
                    qcow2_punch_add(bs, punch, first + k);
                }
            }
            (*done)++;
        }
        first += m;
        n -= m;
    }
    return 0;
}

/* update_run for at most limit - *done clusters, with a message. */
static int apply_run(BlockDriverState *bs, uint64_t first, uint64_t n,
                     int addend, uint64_t limit, uint64_t *done,
                     Qcow2PunchRun *punch, GError **errp)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t before = *done;
    int ret = update_run(bs, first, MIN(n, limit - *done), addend, done,
                         punch);

    if (ret < 0) {
        set_update_error(errp, first + (*done - before), ret,
                         s->refcount_bits);
    }
    return ret;
}

/*
 * Adds addend to the refcount of every cluster the tree under l1 holds:
 * each data cluster once per L2 entry, then each L2 table once per L1
 * entry.  Stops after `limit` updates or at the first error; *done counts
 * the updates made, so a failed pass can be taken back exactly.
 */
static int walk_refs(BlockDriverState *bs, const uint64_t *l1,
                     uint32_t l1_size, int addend, uint64_t limit,
                     uint64_t *done, Qcow2PunchRun *punch, GError **errp)
{
    BDRVQcow2State *s = bs->opaque;
    const uint64_t *l2;
    int ret;

    *done = 0;
    for (uint32_t i = 0; i < l1_size && *done < limit; i++) {
        uint64_t l2_off = l1[i] & L1E_OFFSET_MASK;
        uint64_t run_first = 0, run_n = 0;

        if (!l2_off) {
            continue;
        }
        if (l2_off & (s->cluster_size - 1)) {
            g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                        "L2 table offset %#" G_GINT64_MODIFIER "x in L1 "
                        "entry %u is not cluster aligned", l2_off, i);
            return -EINVAL;
        }
        /* The cached table stays put while only refcounts change: no
         * L2 table is got until the next L1 entry, and a discarded slot
         * keeps its memory. */
        ret = qcow2_cache_get(bs, s->l2_cache, l2_off, (void **)&l2);
        if (ret < 0) {
            set_l2_read_error(errp, l2_off, ret);
            return ret;
        }
        /* consecutive host clusters are counted as one run */
        for (uint32_t j = 0; j < s->l2_size; j++) {
            uint64_t e = qcow2_l2_get(s, l2, j), first, n;
            if (qcow2_entry_clusters(s, e, &first, &n) < 0) {
                g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                            "L2 entry %#" G_GINT64_MODIFIER "x (L2 table %#"
                            G_GINT64_MODIFIER "x, index %u) points at an "
                            "unaligned cluster", e, l2_off, j);
                return -EINVAL;
            }
            if (n == 0) {
                continue;
            }
            if (run_n && first == run_first + run_n) {
                run_n += n;
                continue;
            }
            if (run_n) {
                ret = apply_run(bs, run_first, run_n, addend, limit, done,
                                punch, errp);
                if (ret < 0 || *done == limit) {
                    return ret;
                }
            }
            run_first = first;
            run_n = n;
        }
        if (run_n) {
            ret = apply_run(bs, run_first, run_n, addend, limit, done,
                            punch, errp);
            if (ret < 0 || *done == limit) {
                return ret;
            }
        }
        ret = apply_run(bs, l2_off >> s->cluster_bits, 1, addend, limit, done,
                        punch, errp);
        if (ret < 0) {
            return ret;
        }
    }
    return 0;
}

/* Reads only (what a check may do): the highest refcount among the
 * clusters the tree under l1 holds, and one cluster that has it. */
int qcow2_tree_max_refcount(BlockDriverState *bs, const uint64_t *l1,
                            uint32_t l1_size, uint64_t *max,
                            uint64_t *cluster, GError **errp)
{
    BDRVQcow2State *s = bs->opaque;
    g_autofree uint64_t *l2 = g_malloc(s->cluster_size);
    RcReader rr = { 0 };
    uint64_t rc;
    int ret;

    *max = 0;
    *cluster = 0;
    for (uint32_t i = 0; i < l1_size; i++) {
        uint64_t l2_off = l1[i] & L1E_OFFSET_MASK;

        if (!l2_off || (l2_off & (s->cluster_size - 1))) {
            continue;             /* do reports a misaligned table */
        }
        ret = rc_get(bs, &rr, l2_off >> s->cluster_bits, &rc);
        if (ret == 0) {
            ret = read_l2_copy(bs, l2_off, l2);
        }
        if (ret < 0) {
            set_l2_read_error(errp, l2_off, ret);
            return ret;
        }
        if (rc > *max) {
            *max = rc;
            *cluster = l2_off >> s->cluster_bits;
        }
        for (uint32_t j = 0; j < s->l2_size; j++) {
            uint64_t first, n;
            if (qcow2_entry_clusters(s, qcow2_l2_get(s, l2, j), &first, &n) < 0) {
                continue;
            }
            for (uint64_t k = 0; k < n; k++) {
                ret = rc_get(bs, &rr, first + k, &rc);
                if (ret < 0) {
                    g_set_error(errp, BDRV_ERROR, BDRV_ERROR_IO,
                                "Could not read a reference count: %s",
                                g_strerror(-ret));
                    return ret;
                }
                if (rc > *max) {
                    *max = rc;
                    *cluster = first + k;
                }
            }
        }
    }
    return 0;
}

/* Refcounts of the tree +1; all or nothing (in memory). */
int qcow2_tree_ref(BlockDriverState *bs, const uint64_t *l1, uint32_t l1_size,
                   GError **errp)
{
    uint64_t done = 0, undone;
    int ret;

    bdrv_debug_event(bs->file, "snapshot_refs_up");
    ret = walk_refs(bs, l1, l1_size, 1, UINT64_MAX, &done, NULL, errp);
    if (ret < 0 && done &&
        walk_refs(bs, l1, l1_size, -1, done, &undone, NULL, NULL) < 0) {
        strata_error("qcow2: could not take back %" G_GUINT64_FORMAT
                " reference count increments; clusters leak", done);
    }
    return ret;
}

/* Sets or clears COPIED in a cached active L2 entry; true if changed. */
static bool set_copied(BDRVQcow2State *s, uint64_t *l2, uint32_t j,
                       bool copied)
{
    uint64_t e = qcow2_l2_get(s, l2, j);
    uint64_t ne = copied ? e | QCOW_OFLAG_COPIED : e & ~QCOW_OFLAG_COPIED;

    if (ne == e) {
        return false;
    }
    qcow2_l2_set(s, l2, j, ne);
    return true;
}

/* Clears COPIED in every L2 table of the tree and in the L1 array (after
 * tree_ref: every cluster now has a second owner). */
int qcow2_tree_clear_copied(BlockDriverState *bs, uint64_t *l1,
                            uint32_t l1_size, GError **errp)
{
    BDRVQcow2State *s = bs->opaque;

    for (uint32_t i = 0; i < l1_size; i++) {
        uint64_t l2_off = l1[i] & L1E_OFFSET_MASK, *l2;
        bool dirty = false;
        int ret;

        l1[i] &= ~QCOW_OFLAG_COPIED;
        if (!l2_off) {
            continue;
        }
        ret = qcow2_cache_get(bs, s->l2_cache, l2_off, (void **)&l2);
        if (ret < 0) {
            set_l2_read_error(errp, l2_off, ret);
            return ret;
        }
        for (uint32_t j = 0; j < s->l2_size; j++) {
            dirty |= set_copied(s, l2, j, false);
        }
        if (dirty) {
            ret = qcow2_cache_mark_dirty(s->l2_cache, l2);
            if (ret < 0) {
                return ret;
            }
        }
    }
    return 0;
}

/*
 * Before a tree `rel` is released: sets COPIED in the active entries
 * whose cluster the tree shares at the same index and whose refcount is 2
 * (so 1 afterwards).  Sharing happens at the same guest offset in every
 * image QEMU or we write; anything else is caught by active_fix_copied.
 */
static int active_preset_copied(BlockDriverState *bs, const uint64_t *rel,
                                uint32_t rel_size, uint32_t from, uint32_t to,
                                bool *l1_changed, bool *l2_changed)
{
    BDRVQcow2State *s = bs->opaque;
    g_autofree uint64_t *rl2 = g_malloc(s->cluster_size);
    RcReader rr = { 0 };
    uint32_t n = MIN(MIN(s->l1_size, rel_size), to);
    int ret;

    for (uint32_t i = from; i < n; i++) {
        uint64_t a = s->l1_table[i] & L1E_OFFSET_MASK;
        uint64_t r = rel[i] & L1E_OFFSET_MASK;
        uint64_t rc, *l2;
        bool shared = a == r, dirty = false;

        if (!a || !r || (a & (s->cluster_size - 1))) {
            continue;
        }
        if (shared) {
            ret = rc_get(bs, &rr, a >> s->cluster_bits, &rc);
            if (ret < 0) {
                return ret;
            }
            if (rc == 2 && !(s->l1_table[i] & QCOW_OFLAG_COPIED)) {
                s->l1_table[i] |= QCOW_OFLAG_COPIED;
                *l1_changed = true;
            }
        } else {
            if (r & (s->cluster_size - 1)) {
                continue;
            }
            ret = read_l2_copy(bs, r, rl2);
            if (ret < 0) {
                return ret;
            }
        }
        ret = qcow2_cache_get(bs, s->l2_cache, a, (void **)&l2);
        if (ret < 0) {
            return ret;
        }
        for (uint32_t j = 0; j < s->l2_size; j++) {
            uint64_t e = qcow2_l2_get(s, l2, j);
            if (!entry_has_cluster(s, e) || (e & QCOW_OFLAG_COPIED)) {
                continue;
            }
            if (!shared &&
                (!entry_has_cluster(s, qcow2_l2_get(s, rl2, j)) ||
                 ((qcow2_l2_get(s, rl2, j) ^ e) & L2E_OFFSET_MASK))) {
                continue;
            }
            ret = rc_get(bs, &rr, (e & L2E_OFFSET_MASK) >> s->cluster_bits,
                         &rc);
            if (ret < 0) {
                return ret;
            }
            if (rc == 2) {
                dirty |= set_copied(s, l2, j, true);
            }
        }
        if (dirty) {
            *l2_changed = true;
            ret = qcow2_cache_mark_dirty(s->l2_cache, l2);
            if (ret < 0) {
                return ret;
            }
        }
    }
    return 0;
}

/* COPIED in the active tree's L1 entries [from, to) and their tables set
 * exactly where the refcount is 1. */
static int active_fix_copied(BlockDriverState *bs, uint32_t from, uint32_t to,
                             bool *l1_changed, bool *l2_changed)
{
    BDRVQcow2State *s = bs->opaque;
    RcReader rr = { 0 };

    for (uint32_t i = from; i < MIN(s->l1_size, to); i++) {
        uint64_t a = s->l1_table[i] & L1E_OFFSET_MASK, rc, *l2;
        bool dirty = false;
        int ret;

        if (!a || (a & (s->cluster_size - 1))) {
            continue;
        }
        ret = rc_get(bs, &rr, a >> s->cluster_bits, &rc);
        if (ret < 0) {
            return ret;
        }
        if ((rc == 1) != !!(s->l1_table[i] & QCOW_OFLAG_COPIED)) {
            s->l1_table[i] ^= QCOW_OFLAG_COPIED;
            *l1_changed = true;
        }
        ret = qcow2_cache_get(bs, s->l2_cache, a, (void **)&l2);
        if (ret < 0) {
            return ret;
        }
        for (uint32_t j = 0; j < s->l2_size; j++) {
            uint64_t e = qcow2_l2_get(s, l2, j);
            if (!entry_has_cluster(s, e)) {
                continue;
            }
            ret = rc_get(bs, &rr, (e & L2E_OFFSET_MASK) >> s->cluster_bits,
                         &rc);
            if (ret < 0) {
                return ret;
            }
            dirty |= set_copied(s, l2, j, rc == 1);
        }
        if (dirty) {
            *l2_changed = true;
            ret = qcow2_cache_mark_dirty(s->l2_cache, l2);
            if (ret < 0) {
                return ret;
            }
        }
    }
    return 0;
}

/* Writes dirty L2 tables (their refcounts first) and, if changed, the
 * active L1 in place; then syncs. */
int qcow2_write_active_tree(BlockDriverState *bs, bool l1_changed)
{
    BDRVQcow2State *s = bs->opaque;
    int ret = qcow2_cache_write(bs, s->l2_cache);

    if (ret == 0 && l1_changed) {
        ret = qcow2_write_l1_at(bs, s->l1_table_offset, s->l1_table,
                                s->l1_size);
    }
    if (ret == 0) {
        ret = bdrv_flush(bs->file);
    }
    return ret;
}

/*
 * The refcounts of what the tree under l1 holds -1; with QEMU's
 * pass-discard-snapshot (on by default) the clusters nobody uses any
 * more go back to the host.  Nothing on disk points at the tree (the
 * callers' rule), so a hole can only be in a cluster that is free.
 */
static int release_walk(BlockDriverState *bs, const uint64_t *l1,
                        uint32_t l1_size, GError **errp)
{
    BDRVQcow2State *s = bs->opaque;
    Qcow2PunchRun punch = { 0 };
    uint64_t done;
    int ret;

    bdrv_debug_event(bs->file, "cluster_free"); /* as above */
    ret = qcow2_free_failed(walk_refs(bs, l1, l1_size, -1, UINT64_MAX, &done,
                                      s->rt.discard_snapshot ? &punch : NULL,
                                      errp));

    qcow2_punch_flush(bs, &punch);
    return ret;
}

/*
 * Releases a tree nothing points at any more (or never did): COPIED
 * preset, refcounts -1, the tree's own L1 clusters (l1_offset, may be 0)
 * freed, COPIED recomputed.  A failure leaks clusters, never loses data.
 */
int qcow2_tree_release(BlockDriverState *bs, const uint64_t *l1,
                       uint32_t l1_size, uint64_t l1_offset, GError **errp)
{
    BDRVQcow2State *s = bs->opaque;
    bool l1_changed = false, l2_changed = false;
    int ret;

    ret = active_preset_copied(bs, l1, l1_size, 0, UINT32_MAX, &l1_changed,
                               &l2_changed);
    if (ret == 0) {
        ret = qcow2_write_active_tree(bs, l1_changed);
    }
    if (ret < 0) {
        /* refcounts untouched: at worst COPIED set early, which is what
         * the end state wants anyway; the leak is the whole tree */
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_IO,
                    "Could not update the active L2 tables: %s",
                    g_strerror(-ret));
        return ret;
    }
    bdrv_debug_event(bs->file, "snapshot_refs_down");
    ret = release_walk(bs, l1, l1_size, errp);
    if (ret < 0) {
        return ret;
    }
    ret = qcow2_free_unreferenced(bs, l1_offset, (uint64_t)l1_size * 8,
                                  QCOW2_FREE_SNAPSHOT);
    if (ret == 0) {
        ret = qcow2_cache_write(bs, s->refcount_cache);
    }
    l1_changed = false;
    if (ret == 0) {
        ret = active_fix_copied(bs, 0, UINT32_MAX, &l1_changed, &l2_changed);
    }
    if (ret == 0) {
        ret = qcow2_write_active_tree(bs, l1_changed);
    }
    if (ret < 0) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_IO,
                    "Could not free the clusters: %s", g_strerror(-ret));
    }
    return ret;
}


/* ---- the same in parts (a delete's clean, guest I/O running between) ---- */

uint32_t qcow2_tree_part_entries(BDRVQcow2State *s)
{
    /* about one 64 KiB L2 table's worth of entries per part: a part
     * costs well under a millisecond in memory (plus a sync if it
     * changed COPIED flags) */
    return MAX(1u, QCOW2_RELEASE_PART_L2_ENTRIES / s->l2_size);
}

/*
 * qcow2_tree_release() for the L1 entries [from, to) of the tree: COPIED
 * preset in the active entries at those indexes (written and synced
 * first if any changed), then the refcounts of what those entries hold
 * -1.  Each part leaves the image consistent on its own: what a crash
 * between parts leaves is the unreleased rest of a tree nothing points
 * at (leaks).
 */
int qcow2_tree_release_part(BlockDriverState *bs, const uint64_t *l1,
                            uint32_t l1_size, uint32_t from, uint32_t to,
                            GError **errp)
{
    BDRVQcow2State *s = bs->opaque;
    bool l1_changed = false, l2_changed = false;
    int ret;

    to = MIN(to, l1_size);
    ret = active_preset_copied(bs, l1, l1_size, from, to, &l1_changed,
                               &l2_changed);
    if (ret == 0 && (l1_changed || l2_changed)) {
        ret = qcow2_write_active_tree(bs, l1_changed);
    }
    if (ret < 0) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_IO,
                    "Could not update the active L2 tables: %s",
                    g_strerror(-ret));
        return ret;
    }
    if (from == 0) {
        bdrv_debug_event(bs->file, "snapshot_refs_down");
    }
    if (from < to) {
        ret = release_walk(bs, l1 + from, to - from, errp);
    }
    if (ret == 0) {
        ret = qcow2_cache_write(bs, s->refcount_cache);
        if (ret < 0) {
            g_set_error(errp, BDRV_ERROR, BDRV_ERROR_IO,
                        "Could not free the clusters: %s", g_strerror(-ret));
        }
    }
    return ret;
}

/* After the last part: COPIED recomputed in the active L1 entries
 * [from, to) and their tables, written if it changed. */
int qcow2_active_fix_copied_part(BlockDriverState *bs, uint32_t from,
                                 uint32_t to, GError **errp)
{
    bool l1_changed = false, l2_changed = false;
    int ret = active_fix_copied(bs, from, to, &l1_changed, &l2_changed);

    if (ret == 0 && (l1_changed || l2_changed)) {
        ret = qcow2_write_active_tree(bs, l1_changed);
    }
    if (ret < 0) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_IO,
                    "Could not free the clusters: %s", g_strerror(-ret));
    }
    return ret;
}
