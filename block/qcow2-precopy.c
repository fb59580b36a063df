/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Pre-copy for internal snapshot create (issue 15): the work a snapshot
 * costs in proportion to the data is done while the guest runs, and the
 * drained part only redoes what the guest changed meanwhile.
 *
 * The snapshot keeps the active tree's L2 tables as they are; the active
 * image moves to copies of them.  Nothing live is modified before the
 * publishing write:
 *
 *   phase 1 (guest running, qcow2_precopy_start): every active L2 table
 *     is copied to a new cluster with COPIED cleared (after the snapshot
 *     every cluster it maps is shared); the references the copies add
 *     are counted per refcount block, and each refcount block that
 *     gains references is copied to a new cluster with them added.  The
 *     snapshot's L1 (the active one, COPIED stripped), the new active L1
 *     (pointing at the copies, COPIED set: they have one owner), clusters
 *     for the new snapshot table and a new refcount table (pointing at
 *     the block copies, sharing every block that gains nothing) are
 *     allocated and written too, so phase 2 allocates nothing.  A dirty
 *     log (the metadata caches report every table they mark dirty)
 *     records the L2 tables and refcount blocks changed after they were
 *     read.
 *   phase 2 (drained; prepare, then the caller writes the new snapshot
 *     table, then seal): L2 tables that are dirty, new or gone copied
 *     again; the L1s, refcount-block copies and refcount table rewritten
 *     only where they changed; one sync.
 *   publish: ONE write of header bytes 36..71 -- active L1 size and
 *     offset, refcount table offset and size, snapshot count and offset
 *     -- switches everything at once (commit point).  Not synced under
 *     the hold: clean syncs it before anything it replaced is freed, so
 *     nothing the old header points at is reused before the new header
 *     is durable (and a guest flush after the resume syncs it too).
 *   clean: the old active L1, the old refcount table and the refcount
 *     blocks that were copied are freed through the new structures.
 *
 * A crash before the header write leaves the old image untouched apart
 * from clusters allocated in the old refcount structures that nothing
 * points at: leaks.  After it, the new structures count every reference
 * exactly, and COPIED in the active tree matches them (the copies were
 * written with the flags the new counts need); what was replaced is
 * counted but unreferenced until clean frees it: leaks.  So `qemu-img
 * check` finds leaks at most at any crash point, and never the COPIED
 * errors a create that rewrites live tables in place can leave.
 *
 * Every step of phase 1 can be redone: a table the guest changes after
 * its copy is copied again in phase 2, its old contribution to the
 * counts taken back first.  Compressed clusters add one reference to
 * each host cluster they touch, as qemu-img check counts them.
 */
#include <errno.h>
#include <string.h>

#include <zlib.h>

#include "qcow2.h"
#include "byteorder.h"
#include "qcow2-precopy.h"
#include "qcow2-precopy-int.h"
#include "qcow2-snapshot.h"
#include "block/log.h"

static int refresh_tables(BlockDriverState *bs, Qcow2Precopy *pc,
                          GError **errp);
static int write_l1s(BlockDriverState *bs, Qcow2Precopy *pc, GError **errp);
static int alloc_l1(BlockDriverState *bs, uint32_t l1_size, uint64_t *off,
                    GError **errp);
static int write_refcounts(BlockDriverState *bs, Qcow2Precopy *pc,
                           GError **errp);

static Qcow2PrecopyHook *step_hook;
static void *step_opaque;

void qcow2_precopy_set_step_hook(Qcow2PrecopyHook *hook, void *opaque)
{
    step_hook = hook;
    step_opaque = opaque;
}

static void rb_free(gpointer p)
{
    RbCopy *rb = p;

    g_free(rb->inc8);
    g_free(rb->inc32);
    g_free(rb);
}

static bool take_dirty(Qcow2Precopy *pc, uint64_t off)
{
    return g_hash_table_remove(pc->dirty, &off);
}

static bool is_dirty(Qcow2Precopy *pc, uint64_t off)
{
    return g_hash_table_contains(pc->dirty, &off);
}

/* `clusters` new clusters: their offset, or < 0 with errp saying what
 * they were for (`what`, worded to follow "Could not allocate"). */
static int64_t alloc_for(BlockDriverState *bs, uint64_t clusters,
                         const char *what, GError **errp)
{
    int64_t off = qcow2_alloc_clusters(bs, clusters);

    if (off < 0) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_IO,
                    "Could not allocate %s: %s", what, g_strerror((int)-off));
    }
    return off;
}

/* ---- counting ---- */

static RbCopy *rb_of(BDRVQcow2State *s, Qcow2Precopy *pc, uint64_t r)
{
    RbCopy *rb = g_hash_table_lookup(pc->rbs, GSIZE_TO_POINTER(r + 1));

    if (!rb) {
        rb = g_new0(RbCopy, 1);
        rb->inc8 = g_new0(uint8_t, s->refblock_size);
        g_hash_table_insert(pc->rbs, GSIZE_TO_POINTER(r + 1), rb);
    }
    return rb;
}

static uint32_t rb_inc(const RbCopy *rb, uint32_t k)
{
    return rb->inc32 ? rb->inc32[k] : rb->inc8[k];
}

/* Entry k of rb gains (sign 1) or gives back (-1) one reference. */
static void rb_add(BDRVQcow2State *s, RbCopy *rb, uint32_t k, int sign)
{
    /* only what was added is ever taken back */
    g_assert(sign > 0 || rb_inc(rb, k) > 0);
    if (!rb->inc32 && sign > 0 && rb->inc8[k] == UINT8_MAX) {
        rb->inc32 = g_new(uint32_t, s->refblock_size);
        for (uint32_t j = 0; j < s->refblock_size; j++) {
            rb->inc32[j] = rb->inc8[j];
        }
        g_clear_pointer(&rb->inc8, g_free);
    }
    if (rb->inc32) {
        rb->inc32[k] += sign;
    } else {
        rb->inc8[k] += sign;
    }
    rb->stale = true;
}

/* The references one L2 table's entries hold, added or taken back. */
static int count_table(BDRVQcow2State *s, Qcow2Precopy *pc,
                       const uint64_t *l2, int sign)
{
    for (uint32_t j = 0; j < s->l2_size; j++) {
        uint64_t first, n;

        if (qcow2_entry_clusters(s, l2[j], &first, &n) < 0) {
            return -EINVAL;
        }
        for (uint64_t c = first; c < first + n; c++) {
            rb_add(s, rb_of(s, pc, c >> s->refblock_bits),
                   c & (s->refblock_size - 1), sign);
        }
    }
    return 0;
}

/* ---- L2 copies ---- */

static void grow_l1_arrays(Qcow2Precopy *pc, uint32_t n)
{
    if (n <= pc->n) {
        return;
    }
    pc->seen = g_renew(uint64_t, pc->seen, n);
    pc->copy_off = g_renew(uint64_t, pc->copy_off, n);
    pc->counted = g_renew(bool, pc->counted, n);
    pc->copy_crc = g_renew(uint32_t, pc->copy_crc, n);
    for (uint32_t i = pc->n; i < n; i++) {
        pc->seen[i] = pc->copy_off[i] = 0;
        pc->counted[i] = false;
        pc->copy_crc[i] = 0;
    }
    pc->n = n;
}

/* Takes the references of index i's copy (as counted) out of the
 * counts, reading the copy back from the file. */
static int uncount_copy(BlockDriverState *bs, Qcow2Precopy *pc, uint32_t i,
                        GError **errp)
{
    BDRVQcow2State *s = bs->opaque;
    g_autofree uint64_t *old = g_malloc(s->cluster_size);
    g_autofree uint64_t *host = g_new(uint64_t, s->l2_size);
    int ret = bdrv_pread(bs->file, pc->copy_off[i], s->cluster_size, old);

    if (ret < 0) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_IO,
                    "Could not read back an L2 copy: %s", g_strerror(-ret));
        return ret;
    }
    /* nothing else writes there (the cluster is ours and the image
     * locked), but a file changed behind the lock must not skew counts */
    if (crc32(0, (const Bytef *)old, s->cluster_size) != pc->copy_crc[i]) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_IO,
                    "The L2 copy at %#" G_GINT64_MODIFIER "x changed under "
                    "the snapshot", pc->copy_off[i]);
        return -EIO;
    }
    for (uint32_t j = 0; j < s->l2_size; j++) {
        host[j] = qcow2_l2_get(s, old, j);
    }
    if (count_table(s, pc, host, -1) < 0) {
        g_assert_not_reached(); /* these very entries were counted once */
    }
    pc->counted[i] = false;
    return 0;
}

/* Copies the active L2 table of index i (again), under s->lock. */
static int copy_table(BlockDriverState *bs, Qcow2Precopy *pc, uint32_t i,
                      GError **errp)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t t = i < s->l1_size ? s->l1_table[i] & L1E_OFFSET_MASK : 0;
    g_autofree uint64_t *be = NULL;
    g_autofree uint64_t *host = NULL;
    void *live;
    int ret;

    grow_l1_arrays(pc, i + 1);
    if (pc->counted[i]) {
        /* its old contribution goes; the new one comes below */
        ret = uncount_copy(bs, pc, i, errp);
        if (ret < 0) {
            return ret;
        }
    }
    pc->seen[i] = t;
    if (!t) {
        if (pc->copy_off[i]) {
            qcow2_free_unreferenced(bs, pc->copy_off[i], s->cluster_size,
                                    QCOW2_FREE_ALWAYS);
            pc->copy_off[i] = 0;
        }
        return 0;
    }
    take_dirty(pc, t);
    ret = qcow2_cache_get(bs, s->l2_cache, t, &live);
    if (ret < 0) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_IO,
                    "Could not read L2 table at %#" G_GINT64_MODIFIER "x: %s",
                    t, g_strerror(-ret));
        return ret;
    }
    /* host[]: the descriptors; be: the whole table (with any subcluster
     * bitmaps) as the copy goes to disk */
    host = g_new(uint64_t, s->l2_size);
    be = g_memdup2(live, s->cluster_size);
    for (uint32_t j = 0; j < s->l2_size; j++) {
        /* every cluster is shared once the snapshot exists */
        host[j] = qcow2_l2_get(s, live, j) & ~QCOW_OFLAG_COPIED;
        qcow2_l2_set(s, be, j, host[j]);
    }
    if (count_table(s, pc, host, 1) < 0) {
        count_table(s, pc, host, -1);
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "L2 table at %#" G_GINT64_MODIFIER "x holds an invalid "
                    "entry", t);
        return -EINVAL;
    }
    if (!pc->copy_off[i]) {
        int64_t off = alloc_for(bs, 1, "a cluster for an L2 copy", errp);
        if (off < 0) {
            count_table(s, pc, host, -1);
            return (int)off;
        }
        pc->copy_off[i] = off;
    }
    ret = qcow2_overlap_pwrite(bs, 0, pc->copy_off[i], s->cluster_size, be);
    if (ret < 0) {
        /* the copy on disk is unknown: its references are not counted */
        count_table(s, pc, host, -1);
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_IO,
                    "Could not write an L2 copy: %s", g_strerror(-ret));
        return ret;
    }
    pc->counted[i] = true;
    pc->copy_crc[i] = crc32(0, (const Bytef *)be, s->cluster_size);
    return 0;
}

/* ---- refcount block copies ---- */

/* Writes the copy of refcount block r: the live block plus what it
 * gains.  Under s->lock; the block's copy cluster is allocated. */
static int write_rb_copy(BlockDriverState *bs, Qcow2Precopy *pc, uint64_t r,
                         RbCopy *rb, GError **errp)
{
    BDRVQcow2State *s = bs->opaque;
    g_autofree void *buf = NULL;
    uint64_t live_off;
    void *live;
    int ret;

    if (r >= s->refcount_table_size ||
        !(live_off = s->refcount_table[r] & REFT_OFFSET_MASK)) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "A cluster in use has no refcount block (refcount "
                    "table index %" G_GUINT64_FORMAT ")", r);
        return -EIO;
    }
    take_dirty(pc, live_off);
    ret = qcow2_cache_get(bs, s->refcount_cache, live_off, &live);
    if (ret < 0) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_IO,
                    "Could not read a refcount block: %s", g_strerror(-ret));
        return ret;
    }
    buf = g_memdup2(live, s->cluster_size);
    for (uint32_t k = 0; k < s->refblock_size; k++) {
        uint64_t v;
        uint32_t inc = rb_inc(rb, k);

        if (!inc) {
            continue;
        }
        v = qcow2_refblock_get(s, buf, k);
        if (s->refcount_max - v < inc) {
            g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                        "The reference count of cluster %" G_GUINT64_FORMAT
                        " would exceed its maximum (refcount_bits=%d)",
                        (r << s->refblock_bits) + k, s->refcount_bits);
            return -ERANGE;
        }
        qcow2_refblock_set(s, buf, k, v + inc);
    }
    ret = qcow2_overlap_pwrite(bs, 0, rb->copy_off, s->cluster_size, buf);
    if (ret < 0) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_IO,
                    "Could not write a refcount block copy: %s",
                    g_strerror(-ret));
        return ret;
    }
    rb->seen = live_off;
    rb->stale = false;
    return 0;
}

static bool rb_needs_write(BDRVQcow2State *s, Qcow2Precopy *pc, uint64_t r,
                           RbCopy *rb)
{
    uint64_t live_off = r < s->refcount_table_size ?
                        s->refcount_table[r] & REFT_OFFSET_MASK : 0;

    return rb->stale || rb->seen != live_off || is_dirty(pc, live_off);
}

/* The refcount blocks in index order (deterministic I/O order). */
static GArray *rb_indices(Qcow2Precopy *pc)
{
    GArray *a = g_array_new(FALSE, FALSE, sizeof(uint64_t));
    GHashTableIter it;
    gpointer k;

    g_hash_table_iter_init(&it, pc->rbs);
    while (g_hash_table_iter_next(&it, &k, NULL)) {
        uint64_t r = GPOINTER_TO_SIZE(k) - 1;
        g_array_append_val(a, r);
    }
    return a;
}

static gint cmp_u64(gconstpointer a, gconstpointer b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

    return x < y ? -1 : x > y;
}

static GArray *sorted_rbs(Qcow2Precopy *pc)
{
    GArray *a = rb_indices(pc);

    g_array_sort(a, cmp_u64);
    return a;
}

/* Allocates copies for refcount blocks that gain references and have
 * none; true in *allocated if it did. */
static int alloc_rb_copies(BlockDriverState *bs, Qcow2Precopy *pc,
                           bool *allocated, GError **errp)
{
    g_autoptr(GArray) idx = sorted_rbs(pc);

    *allocated = false;
    for (guint i = 0; i < idx->len; i++) {
        RbCopy *rb = g_hash_table_lookup(
            pc->rbs, GSIZE_TO_POINTER(g_array_index(idx, uint64_t, i) + 1));
        int64_t off;
        if (rb->copy_off) {
            continue;
        }
        off = alloc_for(bs, 1, "a refcount block copy", errp);
        if (off < 0) {
            return (int)off;
        }
        rb->copy_off = off;
        rb->stale = true;
        *allocated = true;
    }
    return 0;
}

/* ---- phase 1 ---- */

static void step(BlockDriverState *bs, unsigned *n)
{
    if (step_hook) {
        step_hook(bs, (*n)++, step_opaque);
    }
}

int qcow2_precopy_start(BlockDriverState *bs, uint64_t area_bytes,
                        Qcow2Precopy **out, GError **errp)
{
    BDRVQcow2State *s = bs->opaque;
    Qcow2Precopy *pc = g_new0(Qcow2Precopy, 1);
    unsigned steps = 0;
    uint32_t n;
    int ret = 0;

    pc->dirty = g_hash_table_new_full(g_int64_hash, g_int64_equal, g_free,
                                      NULL);
    pc->rbs = g_hash_table_new_full(NULL, NULL, NULL, rb_free);
    *out = pc;
    g_mutex_lock(&s->lock);
    qcow2_cache_set_dirty_log(s->l2_cache, pc->dirty);
    qcow2_cache_set_dirty_log(s->refcount_cache, pc->dirty);
    n = s->l1_size;
    /* The snapshot's L1, then its table, first: where qemu-img's create
     * puts them (the clusters after the image's end), so images keep
     * QEMU's layout where scripts expect it. */
    pc->l1_size = s->l1_size;
    ret = alloc_l1(bs, pc->l1_size, &pc->sn_l1_off, errp);
    if (ret == 0 && area_bytes) {
        int64_t off = alloc_for(bs, qcow2_align_up(area_bytes,
                                                   s->cluster_size) >>
                                        s->cluster_bits,
                                "the snapshot table", errp);
        if (off < 0) {
            ret = (int)off;
        } else {
            pc->area_off = off;
            pc->area_bytes = area_bytes;
        }
    }
    g_mutex_unlock(&s->lock);

    for (uint32_t i = 0; i < n && ret == 0; i++) {
        step(bs, &steps);
        g_mutex_lock(&s->lock);
        if (i < s->l1_size) {
            ret = copy_table(bs, pc, i, errp);
        }
        g_mutex_unlock(&s->lock);
    }
    /* what phase 2 would otherwise allocate: the active L1, the refcount
     * copies; then the refcount copies written */
    if (ret == 0) {
        step(bs, &steps);
        g_mutex_lock(&s->lock);
        ret = refresh_tables(bs, pc, errp);
        if (ret == 0) {
            ret = write_l1s(bs, pc, errp);
        }
        g_mutex_unlock(&s->lock);
    }
    if (ret == 0) {
        bool allocated = false;
        g_autoptr(GArray) idx = NULL;

        step(bs, &steps);
        g_mutex_lock(&s->lock);
        ret = alloc_rb_copies(bs, pc, &allocated, errp);
        g_mutex_unlock(&s->lock);
        idx = sorted_rbs(pc);
        for (guint i = 0; i < idx->len && ret == 0; i++) {
            uint64_t r = g_array_index(idx, uint64_t, i);
            step(bs, &steps);
            g_mutex_lock(&s->lock);
            ret = write_rb_copy(bs, pc, r,
                                g_hash_table_lookup(pc->rbs,
                                                    GSIZE_TO_POINTER(r + 1)),
                                errp);
            g_mutex_unlock(&s->lock);
        }
    }
    if (ret == 0) {
        /* what those allocations changed, the table */
        step(bs, &steps);
        g_mutex_lock(&s->lock);
        ret = qcow2_write_back_metadata(bs);
        if (ret < 0) {
            g_set_error(errp, BDRV_ERROR, BDRV_ERROR_IO,
                        "Could not write back metadata: %s",
                        g_strerror(-ret));
        } else {
            ret = write_refcounts(bs, pc, errp);
        }
        g_mutex_unlock(&s->lock);
    }
    step(bs, &steps);
    return ret;
}

/* ---- phase 2 ---- */

static int alloc_l1(BlockDriverState *bs, uint32_t l1_size, uint64_t *off,
                    GError **errp)
{
    BDRVQcow2State *s = bs->opaque;
    int64_t r;

    *off = 0;
    if (!l1_size) {
        return 0;
    }
    r = alloc_for(bs, qcow2_align_up((uint64_t)l1_size * 8,
                                     s->cluster_size) >> s->cluster_bits,
                  "clusters for an L1 table", errp);
    if (r < 0) {
        return (int)r;
    }
    *off = r;
    return 0;
}

/* Copies again the L2 tables that changed, appeared or went away. */
static int refresh_tables(BlockDriverState *bs, Qcow2Precopy *pc,
                          GError **errp)
{
    BDRVQcow2State *s = bs->opaque;
    uint32_t n = MAX(s->l1_size, pc->n);

    for (uint32_t i = 0; i < n; i++) {
        uint64_t t = i < s->l1_size ? s->l1_table[i] & L1E_OFFSET_MASK : 0;
        int ret;
        if (i < pc->n && t == pc->seen[i] && (!t || !is_dirty(pc, t))) {
            continue;
        }
        ret = copy_table(bs, pc, i, errp);
        if (ret < 0) {
            return ret;
        }
    }
    return 0;
}

/* Writes an L1 table (n entries) at off unless it already holds it. */
static int write_l1_if_changed(BlockDriverState *bs, uint64_t off,
                               const uint64_t *l1, uint32_t n,
                               uint64_t **written, GError **errp)
{
    int ret;

    if (*written && !memcmp(*written, l1, (size_t)n * 8)) {
        return 0;
    }
    ret = qcow2_write_l1_at(bs, off, l1, n);
    if (ret < 0) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_IO,
                    "Could not write an L1 table: %s", g_strerror(-ret));
        return ret;
    }
    g_free(*written);
    *written = g_memdup2(l1, MAX((size_t)n * 8, 8));
    return 0;
}

/* The snapshot's L1 (the active one, COPIED stripped) and the new active
 * L1 (the copies, COPIED set: they have one owner), written where they
 * changed; their clusters (re)allocated if the L1 size changed. */
static int write_l1s(BlockDriverState *bs, Qcow2Precopy *pc, GError **errp)
{
    BDRVQcow2State *s = bs->opaque;
    g_autofree uint64_t *sn_l1 = NULL;
    uint64_t l1_bytes = (uint64_t)pc->l1_size * 8;
    int ret;

    if (pc->l1_size != s->l1_size) {
        qcow2_free_unreferenced(bs, pc->sn_l1_off, l1_bytes,
                                QCOW2_FREE_ALWAYS);
        qcow2_free_unreferenced(bs, pc->a_off, l1_bytes, QCOW2_FREE_ALWAYS);
        pc->sn_l1_off = pc->a_off = 0;
        g_clear_pointer(&pc->sn_l1_written, g_free);
        g_clear_pointer(&pc->a_written, g_free);
        pc->l1_size = s->l1_size;
        l1_bytes = (uint64_t)pc->l1_size * 8;
    }
    /* the snapshot's L1 comes from phase 1's start (or again after a
     * resize), the active one is allocated the first time here */
    ret = pc->sn_l1_off ? 0 : alloc_l1(bs, pc->l1_size, &pc->sn_l1_off, errp);
    if (ret == 0 && !pc->a_off) {
        ret = alloc_l1(bs, pc->l1_size, &pc->a_off, errp);
    }
    if (ret < 0) {
        return ret;
    }
    sn_l1 = g_new0(uint64_t, MAX(pc->l1_size, 1));
    g_free(pc->new_l1);
    pc->new_l1 = g_new0(uint64_t, MAX(pc->l1_size, 1));
    for (uint32_t i = 0; i < pc->l1_size; i++) {
        sn_l1[i] = s->l1_table[i] & ~QCOW_OFLAG_COPIED;
        if (s->l1_table[i] & L1E_OFFSET_MASK) {
            pc->new_l1[i] = pc->copy_off[i] | QCOW_OFLAG_COPIED;
        }
    }
    if (!pc->l1_size) {
        return 0;
    }
    ret = write_l1_if_changed(bs, pc->sn_l1_off, sn_l1, pc->l1_size,
                              &pc->sn_l1_written, errp);
    if (ret == 0) {
        ret = write_l1_if_changed(bs, pc->a_off, pc->new_l1, pc->l1_size,
                                  &pc->a_written, errp);
    }
    return ret;
}

int qcow2_precopy_prepare(BlockDriverState *bs, Qcow2Precopy *pc,
                          uint64_t *sn_l1_offset, uint32_t *sn_l1_size,
                          GError **errp)
{
    int ret = refresh_tables(bs, pc, errp);

    if (ret == 0) {
        ret = write_l1s(bs, pc, errp);
    }
    if (ret < 0) {
        return ret;
    }
    *sn_l1_offset = pc->sn_l1_off;
    *sn_l1_size = pc->l1_size;
    return 0;
}

bool qcow2_precopy_take_area(BlockDriverState *bs, Qcow2Precopy *pc,
                             uint64_t bytes, uint64_t *offset)
{
    BDRVQcow2State *s = bs->opaque;

    if (!pc->area_off || !bytes ||
        qcow2_align_up(bytes, s->cluster_size) !=
        qcow2_align_up(pc->area_bytes, s->cluster_size)) {
        return false;
    }
    *offset = pc->area_off;
    pc->area_off = 0;
    pc->area_bytes = 0;
    return true;
}

/* The new refcount table's clusters, sized for the live table; false in
 * *allocated if the ones it has fit. */
static int alloc_rt(BlockDriverState *bs, Qcow2Precopy *pc, bool *allocated,
                    GError **errp)
{
    BDRVQcow2State *s = bs->opaque;
    uint32_t need = qcow2_align_up((uint64_t)s->refcount_table_size * 8,
                                   s->cluster_size) >> s->cluster_bits;
    int64_t off;

    *allocated = false;
    if (pc->rt_off && pc->rt_clusters == need) {
        return 0;
    }
    if (pc->rt_off) {
        qcow2_free_unreferenced(bs, pc->rt_off,
                                (uint64_t)pc->rt_clusters << s->cluster_bits,
                                QCOW2_FREE_ALWAYS);
        pc->rt_off = 0;
        g_clear_pointer(&pc->rt_written, g_free);
    }
    off = alloc_for(bs, need, "the new refcount table", errp);
    if (off < 0) {
        return (int)off;
    }
    pc->rt_off = off;
    pc->rt_clusters = need;
    *allocated = true;
    return 0;
}

static int write_rt(BlockDriverState *bs, Qcow2Precopy *pc, GError **errp)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t entries = ((uint64_t)pc->rt_clusters << s->cluster_bits) / 8;
    g_autofree uint64_t *be = g_new0(uint64_t, entries);
    GHashTableIter it;
    gpointer k, v;
    int ret;

    g_free(pc->new_rt);
    pc->new_rt = g_new0(uint64_t, entries);
    memcpy(pc->new_rt, s->refcount_table,
           MIN(entries, s->refcount_table_size) * 8);
    g_hash_table_iter_init(&it, pc->rbs);
    while (g_hash_table_iter_next(&it, &k, &v)) {
        RbCopy *rb = v;
        pc->new_rt[GPOINTER_TO_SIZE(k) - 1] = rb->copy_off;
    }
    if (pc->rt_written && !memcmp(pc->rt_written, pc->new_rt, entries * 8)) {
        return 0;
    }
    for (uint64_t i = 0; i < entries; i++) {
        be[i] = GUINT64_TO_BE(pc->new_rt[i]);
    }
    g_clear_pointer(&pc->rt_written, g_free);
    ret = qcow2_overlap_pwrite(bs, 0, pc->rt_off, entries * 8, be);
    if (ret == 0) {
        pc->rt_written = g_memdup2(pc->new_rt, entries * 8);
    }
    if (ret < 0) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_IO,
                    "Could not write the new refcount table: %s",
                    g_strerror(-ret));
    }
    return ret;
}

/* The refcount side: copies for every block that gains references and
 * a table, allocated until nothing more is needed; then the blocks that
 * changed copied again and the table written if it changed. */
static int write_refcounts(BlockDriverState *bs, Qcow2Precopy *pc,
                           GError **errp)
{
    BDRVQcow2State *s = bs->opaque;
    g_autoptr(GArray) idx = NULL;
    bool more = true;
    int ret;

    /* Allocating changes live refcount blocks (and may grow the live
     * table): allocate until nothing new is needed, then compute. */
    for (int rounds = 0; more; rounds++) {
        bool a1 = false, a2 = false;
        if (rounds > 8) {
            g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                        "The refcount structures kept growing");
            return -EIO;
        }
        ret = alloc_rb_copies(bs, pc, &a1, errp);
        if (ret == 0) {
            ret = alloc_rt(bs, pc, &a2, errp);
        }
        if (ret < 0) {
            return ret;
        }
        more = a1 || a2;
    }
    /* deferred frees applied now, so the live blocks are final */
    ret = qcow2_write_back_metadata(bs);
    if (ret < 0) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_IO,
                    "Could not write back metadata: %s", g_strerror(-ret));
        return ret;
    }
    idx = sorted_rbs(pc);
    for (guint i = 0; i < idx->len; i++) {
        uint64_t r = g_array_index(idx, uint64_t, i);
        RbCopy *rb = g_hash_table_lookup(pc->rbs, GSIZE_TO_POINTER(r + 1));
        if (r >= ((uint64_t)pc->rt_clusters << s->cluster_bits) / 8) {
            g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                        "A cluster in use lies past the refcount table");
            return -EIO;
        }
        if (rb_needs_write(s, pc, r, rb)) {
            ret = write_rb_copy(bs, pc, r, rb, errp);
            if (ret < 0) {
                return ret;
            }
        }
    }
    return write_rt(bs, pc, errp);
}

int qcow2_precopy_seal(BlockDriverState *bs, Qcow2Precopy *pc,
                       GError **errp)
{
    int ret = write_refcounts(bs, pc, errp);

    if (ret == 0) {
        /* the caches hold what the live structures say: on disk too */
        ret = qcow2_write_back_metadata(bs);
        if (ret == 0) {
            ret = bdrv_flush(bs->file);
        }
        if (ret < 0) {
            g_set_error(errp, BDRV_ERROR, BDRV_ERROR_IO,
                        "Could not sync the image: %s", g_strerror(-ret));
        }
    }
    if (ret == 0) {
        pc->sealed = true;
    }
    return ret;
}

/* ---- publish ---- */

/* Header bytes 36..71: the L1 table, the refcount table and the snapshot
 * table, contiguous so that one write switches all three. */
static void switch_bytes(uint8_t *out, uint32_t l1_size, uint64_t l1_off,
                         uint64_t rt_off, uint32_t rt_clusters, uint32_t nb,
                         uint64_t sn_off)
{
    be32_write(out, l1_size);
    be64_write(out + 4, l1_off);
    be64_write(out + 12, rt_off);
    be32_write(out + 20, rt_clusters);
    be32_write(out + 24, nb);
    be64_write(out + 28, sn_off);
}

static int write_switch(BlockDriverState *bs, uint32_t l1_size,
                        uint64_t l1_off, uint64_t rt_off,
                        uint32_t rt_clusters, uint32_t nb, uint64_t sn_off,
                        bool sync)
{
    uint8_t h[36];

    switch_bytes(h, l1_size, l1_off, rt_off, rt_clusters, nb, sn_off);
    bdrv_debug_event(bs->file, "snapshot_header_update");
    if (!sync) {
        return qcow2_overlap_pwrite(bs, QCOW2_OL_MAIN_HEADER,
                                    QCOW2_HDR_L1_OFF, sizeof(h), h);
    }
    return qcow2_write_header_bytes(bs, QCOW2_HDR_L1_OFF, h, sizeof(h));
}

void qcow2_precopy_publish_bytes(Qcow2Precopy *pc, uint32_t nb_snapshots,
                                 uint64_t snapshots_offset, uint8_t *out)
{
    switch_bytes(out, pc->l1_size, pc->a_off, pc->rt_off, pc->rt_clusters,
                 nb_snapshots, snapshots_offset);
}

/* The header switch rewritten, synced, from the state live in memory:
 * after a publish or unpublish failed, memory kept its state and the
 * header may not match it. */
static int write_live_switch(BlockDriverState *bs, uint32_t nb_snapshots,
                             uint64_t snapshots_offset)
{
    BDRVQcow2State *s = bs->opaque;
    uint32_t rt_clusters = qcow2_align_up(s->refcount_table_size * 8,
                                          s->cluster_size) >> s->cluster_bits;

    return write_switch(bs, s->l1_size, s->l1_table_offset,
                        s->refcount_table_offset, rt_clusters, nb_snapshots,
                        snapshots_offset, true);
}

/* The tables the caches hold belong to the other state now. */
static void forget_cached(BlockDriverState *bs)
{
    BDRVQcow2State *s = bs->opaque;

    qcow2_cache_discard_all(s->l2_cache);
    qcow2_cache_discard_all(s->refcount_cache);
    /* free_cluster_index stays: no cluster below it is free in the new
     * counts either (they only add references), and going back it at
     * worst skips a hole; a reset would make the next allocation scan
     * every refcount block of the image */
    qcow2_overlap_invalidate(s);
}

int qcow2_precopy_publish(BlockDriverState *bs, Qcow2Precopy *pc,
                          uint32_t nb_snapshots, uint64_t snapshots_offset)
{
    BDRVQcow2State *s = bs->opaque;
    int ret;

    if (pc->published) {
        /* a failed unpublish putting the new state back */
        return write_live_switch(bs, nb_snapshots, snapshots_offset);
    }
    g_assert(pc->sealed);
    g_assert(!qcow2_cache_has_dirty(s->l2_cache) &&
             !qcow2_cache_has_dirty(s->refcount_cache));
    /* Not synced here: the hold would pay one more sync per image.  The
     * old structures stay allocated until qcow2_precopy_free_replaced(),
     * which syncs first, so nothing the old header points at is reused
     * before the new header is durable; a guest flush syncs it too. */
    ret = write_switch(bs, pc->l1_size, pc->a_off, pc->rt_off,
                       pc->rt_clusters, nb_snapshots, snapshots_offset, false);
    if (ret < 0) {
        return ret;
    }
    qcow2_cache_set_dirty_log(s->l2_cache, NULL);
    qcow2_cache_set_dirty_log(s->refcount_cache, NULL);
    pc->old_l1 = s->l1_table;
    pc->old_l1_size = s->l1_size;
    pc->old_l1_off = s->l1_table_offset;
    pc->old_rt = s->refcount_table;
    pc->old_rt_size = s->refcount_table_size;
    pc->old_rt_off = s->refcount_table_offset;
    s->l1_table = g_steal_pointer(&pc->new_l1);
    s->l1_size = pc->l1_size;
    s->l1_table_offset = pc->a_off;
    s->refcount_table = g_steal_pointer(&pc->new_rt);
    s->refcount_table_size = ((uint64_t)pc->rt_clusters << s->cluster_bits) / 8;
    s->refcount_table_offset = pc->rt_off;
    forget_cached(bs);
    pc->published = true;
    return 0;
}

int qcow2_precopy_unpublish(BlockDriverState *bs, Qcow2Precopy *pc,
                            uint32_t nb_snapshots, uint64_t snapshots_offset)
{
    BDRVQcow2State *s = bs->opaque;
    int ret;

    if (!pc->published) {
        /* a failed publish: the old state, live in memory, back */
        return write_live_switch(bs, nb_snapshots, snapshots_offset);
    }
    ret = qcow2_write_back_metadata(bs);
    if (ret == 0) {
        ret = write_switch(bs, pc->old_l1_size, pc->old_l1_off,
                           pc->old_rt_off,
                           qcow2_align_up(pc->old_rt_size * 8,
                                          s->cluster_size) >> s->cluster_bits,
                           nb_snapshots, snapshots_offset, true);
    }
    if (ret < 0) {
        return ret;
    }
    pc->new_l1 = s->l1_table;
    pc->new_rt = s->refcount_table;
    s->l1_table = g_steal_pointer(&pc->old_l1);
    s->l1_size = pc->old_l1_size;
    s->l1_table_offset = pc->old_l1_off;
    s->refcount_table = g_steal_pointer(&pc->old_rt);
    s->refcount_table_size = pc->old_rt_size;
    s->refcount_table_offset = pc->old_rt_off;
    forget_cached(bs);
    pc->published = false;
    return 0;
}

/* ---- the end ---- */

void qcow2_precopy_discard(BlockDriverState *bs, Qcow2Precopy *pc)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t l1_bytes = (uint64_t)pc->l1_size * 8;
    GHashTableIter it;
    gpointer v;
    int ret = 0;

    g_assert(!pc->published);
    qcow2_cache_set_dirty_log(s->l2_cache, NULL);
    qcow2_cache_set_dirty_log(s->refcount_cache, NULL);
    for (uint32_t i = 0; i < pc->n; i++) {
        if (pc->copy_off[i]) {
            ret |= qcow2_free_unreferenced(bs, pc->copy_off[i],
                                           s->cluster_size, QCOW2_FREE_ALWAYS);
            pc->copy_off[i] = 0;
        }
    }
    g_hash_table_iter_init(&it, pc->rbs);
    while (g_hash_table_iter_next(&it, NULL, &v)) {
        RbCopy *rb = v;
        if (rb->copy_off) {
            ret |= qcow2_free_unreferenced(bs, rb->copy_off,
                                           s->cluster_size, QCOW2_FREE_ALWAYS);
            rb->copy_off = 0;
        }
    }
    ret |= qcow2_free_unreferenced(bs, pc->rt_off,
                                   (uint64_t)pc->rt_clusters <<
                                   s->cluster_bits, QCOW2_FREE_ALWAYS);
    ret |= qcow2_free_unreferenced(bs, pc->sn_l1_off, l1_bytes,
                                   QCOW2_FREE_ALWAYS);
    ret |= qcow2_free_unreferenced(bs, pc->a_off, l1_bytes, QCOW2_FREE_ALWAYS);
    ret |= qcow2_free_unreferenced(bs, pc->area_off, pc->area_bytes,
                                   QCOW2_FREE_ALWAYS);
    pc->rt_off = pc->sn_l1_off = pc->a_off = pc->area_off = 0;
    if (ret == 0) {
        ret = qcow2_write_back_metadata(bs);
    }
    if (ret < 0) {
        strata_warning("qcow2: giving back the snapshot pre-copy's clusters "
                       "failed (they leak)");
    }
}

int qcow2_precopy_free_replaced(BlockDriverState *bs, Qcow2Precopy *pc,
                                bool settle)
{
    BDRVQcow2State *s = bs->opaque;
    GHashTableIter it;
    gpointer v;
    int ret;

    g_assert(pc->published);
    /* the publishing header durable before what it replaced is reused */
    ret = bdrv_flush(bs->file);
    if (ret == 0 && settle) {
        ret = qcow2_precopy_settle(bs, pc);
    }
    if (ret < 0) {
        return ret;
    }
    ret = qcow2_free_unreferenced(bs, pc->old_l1_off,
                                  (uint64_t)pc->old_l1_size * 8,
                                  QCOW2_FREE_SNAPSHOT);
    if (ret == 0) {
        /* a table area the snapshot table did not fit */
        ret = qcow2_free_unreferenced(bs, pc->area_off, pc->area_bytes,
                                      QCOW2_FREE_SNAPSHOT);
    }
    g_hash_table_iter_init(&it, pc->rbs);
    while (ret == 0 && g_hash_table_iter_next(&it, NULL, &v)) {
        RbCopy *rb = v;
        ret = qcow2_free_unreferenced(bs, rb->seen, s->cluster_size,
                                      QCOW2_FREE_SNAPSHOT);
    }
    if (ret == 0) {
        ret = qcow2_free_unreferenced(bs, pc->old_rt_off,
                                      pc->old_rt_size * 8,
                                      QCOW2_FREE_SNAPSHOT);
    }
    if (ret == 0) {
        ret = qcow2_write_back_metadata(bs);
    }
    return ret;
}

void qcow2_precopy_free(Qcow2Precopy *pc)
{
    if (!pc) {
        return;
    }
    g_free(pc->counted);
    g_free(pc->copy_crc);
    g_free(pc->seen);
    g_free(pc->copy_off);
    g_hash_table_destroy(pc->rbs);
    g_hash_table_destroy(pc->dirty);
    g_free(pc->new_l1);
    g_free(pc->new_rt);
    g_free(pc->old_l1);
    g_free(pc->old_rt);
    g_free(pc->sn_l1_written);
    g_free(pc->a_written);
    g_free(pc->rt_written);
    g_free(pc);
}
