/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Settling a published pre-copy, for a caller alone on the image
 * (`strata-img snapshot -c`).
 *
 * The pre-copy leaves the active image on copies: a new active L1, a
 * copy of each of its L2 tables, a new refcount table and copies of the
 * refcount blocks that gained references.  The originals are counted
 * and unreferenced until clean frees them.  Settling moves the active
 * image back into the originals before they are freed, so the image
 * ends up laid out as a create that updates everything in place leaves
 * it (qemu-img's): the L1 table and the refcount structures where they
 * were and the active image sharing its L2 tables with the new snapshot.
 * The copies are freed (punched); the file is not cut after them, as
 * qemu-img's never is here, and the next allocations reuse them.
 *
 * It is a second commit point of the publish's kind.  The originals are
 * written while nothing points at them (an L2 original is the snapshot's
 * own table: its new contents differ only in COPIED flags, which a
 * snapshot's tables do not use, so even a torn write leaves it right),
 * the counts the shared tables gain are durable, then one header write
 * switches the L1 and refcount tables back, and only after that sync
 * are the copies freed.  A crash at any point leaves one of the two
 * states and leaks at most.
 *
 * Under a guest it is not done: it rewrites whole tables under the lock,
 * where the pre-copy exists to keep the hold short.
 */
#include <errno.h>
#include <string.h>

#include "qcow2.h"
#include "byteorder.h"
#include "qcow2-precopy.h"
#include "qcow2-precopy-int.h"

/* Whether `copy` is `orig` with COPIED cleared in every entry: what the
 * pre-copy wrote, unchanged since (nothing else may have written it). */
static bool copy_of(BDRVQcow2State *s, const uint64_t *orig,
                    const uint64_t *copy)
{
    g_autofree uint64_t *want = g_memdup2(orig, s->cluster_size);

    for (uint32_t j = 0; j < s->l2_size; j++) {
        qcow2_l2_set(s, want, j, qcow2_l2_get(s, orig, j) & ~QCOW_OFLAG_COPIED);
    }
    return memcmp(want, copy, s->cluster_size) == 0;
}

/*
 * Index i's L2 copy goes: its original (the new snapshot's table) takes
 * the copy's contents and one more reference, and *entry becomes the
 * active L1 entry for it.  Leaves *entry alone (the copy stays) when the
 * copy is not exactly the original's, or when the original's count is
 * at its maximum (refcount_bits=1: the copy is why such a create works).
 */
static int share_original(BlockDriverState *bs, Qcow2Precopy *pc,
                          uint32_t i, uint64_t *entry)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t orig = pc->seen[i], copy = pc->copy_off[i], count = 0;
    g_autofree uint64_t *o = g_malloc(s->cluster_size);
    g_autofree uint64_t *c = g_malloc(s->cluster_size);
    int ret;

    if (!orig || !copy || (*entry & L1E_OFFSET_MASK) != copy) {
        return 0;
    }
    ret = qcow2_get_refcount(bs, orig >> s->cluster_bits, &count);
    if (ret < 0 || count >= s->refcount_max) {
        return ret;
    }
    ret = bdrv_pread(bs->file, orig, s->cluster_size, o);
    if (ret == 0) {
        ret = bdrv_pread(bs->file, copy, s->cluster_size, c);
    }
    if (ret < 0 || !copy_of(s, o, c)) {
        return ret;
    }
    qcow2_cache_discard(s->l2_cache, orig);
    ret = qcow2_overlap_pwrite(bs, QCOW2_OL_INACTIVE_L2, orig,
                               s->cluster_size, c);
    if (ret == 0) {
        ret = qcow2_update_cluster_refcount(bs, orig >> s->cluster_bits, 1,
                                            NULL);
    }
    if (ret == 0) {
        /* shared from now on: no COPIED */
        *entry = orig;
    }
    return ret;
}

/* The active L1 as it will be at home: every L2 copy that can be given
 * up replaced by its original.  NULL (and 0) when the L1 cannot go home:
 * the table grew, so its old clusters are too small. */
static int home_l1(BlockDriverState *bs, Qcow2Precopy *pc, uint64_t **out)
{
    BDRVQcow2State *s = bs->opaque;
    g_autofree uint64_t *l1 = NULL;
    int ret = 0;

    *out = NULL;
    if (!pc->old_l1_off || pc->old_l1_size != s->l1_size) {
        return 0;
    }
    l1 = g_memdup2(s->l1_table, (size_t)s->l1_size * 8);
    for (uint32_t i = 0; ret == 0 && i < MIN(pc->n, s->l1_size); i++) {
        ret = share_original(bs, pc, i, &l1[i]);
    }
    if (ret == 0) {
        *out = g_steal_pointer(&l1);
    }
    return ret;
}

static bool rb_goes_home(BDRVQcow2State *s, uint64_t r, const RbCopy *rb)
{
    return rb->copy_off && rb->seen && r < s->refcount_table_size &&
           s->refcount_table[r] == rb->copy_off;
}

/* Writes each refcount block copy's current contents over its original
 * and returns the refcount table pointing at the originals; NULL when
 * the table cannot go home (it grew).  The caches must be written back:
 * the copies on disk are read as the counts. */
static int home_refcounts(BlockDriverState *bs, Qcow2Precopy *pc,
                          uint64_t **out)
{
    BDRVQcow2State *s = bs->opaque;
    g_autofree uint64_t *rt = NULL;
    g_autofree void *buf = g_malloc(s->cluster_size);
    GHashTableIter it;
    gpointer k, v;

    *out = NULL;
    if (!pc->old_rt_off || pc->old_rt_size != s->refcount_table_size) {
        return 0;
    }
    rt = g_memdup2(s->refcount_table, s->refcount_table_size * 8);
    g_hash_table_iter_init(&it, pc->rbs);
    while (g_hash_table_iter_next(&it, &k, &v)) {
        uint64_t r = GPOINTER_TO_SIZE(k) - 1;
        RbCopy *rb = v;
        int ret;

        if (!rb_goes_home(s, r, rb)) {
            continue;
        }
        ret = bdrv_pread(bs->file, rb->copy_off, s->cluster_size, buf);
        if (ret == 0) {
            ret = qcow2_overlap_pwrite(bs, 0, rb->seen, s->cluster_size, buf);
        }
        if (ret < 0) {
            return ret;
        }
        rt[r] = rb->seen;
    }
    *out = g_steal_pointer(&rt);
    return 0;
}

static int write_table(BlockDriverState *bs, uint64_t off,
                       const uint64_t *t, uint64_t n)
{
    g_autofree uint64_t *be = g_new(uint64_t, n);

    for (uint64_t i = 0; i < n; i++) {
        be[i] = GUINT64_TO_BE(t[i]);
    }
    return qcow2_overlap_pwrite(bs, 0, off, n * 8, be);
}

/* Header bytes 36..59: the L1 table and the refcount table in one
 * write, synced. */
static int write_home_header(BlockDriverState *bs, uint64_t l1_off,
                             uint64_t rt_off)
{
    BDRVQcow2State *s = bs->opaque;
    uint8_t h[24];

    be32_write(h, s->l1_size);
    be64_write(h + 4, l1_off);
    be64_write(h + 12, rt_off);
    be32_write(h + 20, qcow2_align_up(s->refcount_table_size * 8,
                                      s->cluster_size) >> s->cluster_bits);
    bdrv_debug_event(bs->file, "snapshot_header_update");
    return qcow2_write_header_bytes(bs, QCOW2_HDR_L1_OFF, h, sizeof(h));
}

/* After the switch: memory follows the header, the L2 copies given up
 * are freed, and the fields clean frees from name the other copies now
 * (the originals are live again). */
static void take_home(BlockDriverState *bs, Qcow2Precopy *pc,
                      uint64_t *l1, uint64_t l1_off, uint64_t *rt,
                      uint64_t rt_off)
{
    BDRVQcow2State *s = bs->opaque;
    g_autofree uint64_t *was = NULL;
    GHashTableIter it;
    gpointer k, v;

    if (rt) {
        g_hash_table_iter_init(&it, pc->rbs);
        while (g_hash_table_iter_next(&it, &k, &v)) {
            RbCopy *rb = v;
            if (rb_goes_home(s, GPOINTER_TO_SIZE(k) - 1, rb)) {
                rb->seen = rb->copy_off;
            }
        }
        g_free(s->refcount_table);
        s->refcount_table = rt;
        qcow2_cache_discard_all(s->refcount_cache);
        pc->old_rt_off = s->refcount_table_offset;
        s->refcount_table_offset = rt_off;
    }
    if (l1) {
        was = s->l1_table;
        s->l1_table = l1;
        pc->old_l1_off = s->l1_table_offset;
        s->l1_table_offset = l1_off;
    }
    /* before any free: the overlap check must not see the copies as
     * live metadata any more */
    qcow2_overlap_invalidate(s);
    for (uint32_t i = 0; was && i < MIN(pc->n, s->l1_size); i++) {
        if (l1[i] != was[i]) {
            qcow2_cache_discard(s->l2_cache, pc->copy_off[i]);
            qcow2_free_unreferenced(bs, pc->copy_off[i], s->cluster_size,
                                    QCOW2_FREE_SNAPSHOT);
            pc->copy_off[i] = 0;
        }
    }
}

int qcow2_precopy_settle(BlockDriverState *bs, Qcow2Precopy *pc)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t *l1 = NULL, *rt = NULL;
    uint64_t l1_off, rt_off;
    int ret;

    g_assert(pc->published);
    ret = qcow2_write_back_metadata(bs);
    if (ret == 0) {
        ret = home_l1(bs, pc, &l1);
    }
    /* the counts the originals gained reach the block copies first */
    if (ret == 0) {
        ret = qcow2_write_back_metadata(bs);
    }
    if (ret == 0) {
        ret = home_refcounts(bs, pc, &rt);
    }
    l1_off = l1 ? pc->old_l1_off : s->l1_table_offset;
    rt_off = rt ? pc->old_rt_off : s->refcount_table_offset;
    if (ret == 0 && l1) {
        ret = write_table(bs, l1_off, l1, s->l1_size);
    }
    if (ret == 0 && rt) {
        ret = write_table(bs, rt_off, rt, s->refcount_table_size);
    }
    /* what the new header points at, durable before it */
    if (ret == 0 && (l1 || rt)) {
        ret = bdrv_flush(bs->file);
        if (ret == 0) {
            ret = write_home_header(bs, l1_off, rt_off);
        }
        if (ret < 0) {
            /* the header may have switched: back to what memory says
             * (if that fails too, the next open finds one state or the
             * other, both whole) */
            write_home_header(bs, s->l1_table_offset,
                              s->refcount_table_offset);
        }
    }
    if (ret < 0 || (!l1 && !rt)) {
        g_free(l1);
        g_free(rt);
        return ret;
    }
    take_home(bs, pc, l1, l1_off, rt, rt_off);
    return 0;
}
