/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * qcow2 reference counts: reading and changing them, allocating clusters
 * (new refcount blocks and a larger refcount table when needed), deferred
 * frees, and the crash-safe order in which metadata is written back.
 *
 * The ordering rules (DESIGN.md, rule 5):
 *  - a refcount increment reaches the disk before anything points at the
 *    cluster: dirty L2 tables are written only after the refcount blocks,
 *    with an fdatasync in between (qcow2_before_l2_write);
 *  - a decrement reaches the disk only after nothing points at the cluster
 *    any more: frees are queued and applied by qcow2_write_back_metadata
 *    after the L2 tables are written and synced;
 *  - a larger refcount table, and the blocks that cover it, are written
 *    and synced before the one header write that switches to it; the old
 *    table is freed right after that (synced) write.
 * A crash in between leaves leaked clusters at worst, never a cluster that
 * is in use with a refcount too low.
 *
 * Where new blocks and tables go follows QEMU 7.2 (make_refblock), so
 * that an image grown by strata is laid out as QEMU's would be.
 */
#include <errno.h>
#include <string.h>

#include "qcow2.h"

static uint64_t rb_get(BDRVQcow2State *s, const void *rb, uint64_t i)
{
    const uint8_t *p = rb;

    switch (s->refcount_order) {
    case 0: return (p[i / 8] >> (i % 8)) & 1;
    case 1: return (p[i / 4] >> (2 * (i % 4))) & 3;
    case 2: return (p[i / 2] >> (4 * (i % 2))) & 15;
    case 3: return p[i];
    case 4: return GUINT16_FROM_BE(((const uint16_t *)rb)[i]);
    case 5: return GUINT32_FROM_BE(((const uint32_t *)rb)[i]);
    default: return GUINT64_FROM_BE(((const uint64_t *)rb)[i]);
    }
}

static void rb_set(BDRVQcow2State *s, void *rb, uint64_t i, uint64_t v)
{
    uint8_t *p = rb;

    switch (s->refcount_order) {
    case 0:
        p[i / 8] = (p[i / 8] & ~(1 << (i % 8))) | (v << (i % 8));
        break;
    case 1:
        p[i / 4] = (p[i / 4] & ~(3 << (2 * (i % 4)))) | (v << (2 * (i % 4)));
        break;
    case 2:
        p[i / 2] = (p[i / 2] & ~(15 << (4 * (i % 2)))) | (v << (4 * (i % 2)));
        break;
    case 3: p[i] = v; break;
    case 4: ((uint16_t *)rb)[i] = GUINT16_TO_BE(v); break;
    case 5: ((uint32_t *)rb)[i] = GUINT32_TO_BE(v); break;
    default: ((uint64_t *)rb)[i] = GUINT64_TO_BE(v); break;
    }
}

/* Public helpers so check and create can lay out blocks themselves. */
uint64_t qcow2_refblock_get(BDRVQcow2State *s, const void *rb, uint64_t i)
{
    return rb_get(s, rb, i);
}

void qcow2_refblock_set(BDRVQcow2State *s, void *rb, uint64_t i, uint64_t v)
{
    rb_set(s, rb, i, v);
}

void qcow2_signal_unaligned_table(BlockDriverState *bs, uint32_t ol_type,
                                  uint64_t offset)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t t = 0;

    if (ol_type != QCOW2_OL_REFCOUNT_BLOCK) {
        /* L2 offsets are checked when the L1 table is read */
        qcow2_signal_corruption(bs, "Table offset %#" G_GINT64_MODIFIER
                                "x unaligned", offset);
        return;
    }
    while (t < s->refcount_table_size &&
           (s->refcount_table[t] & REFT_OFFSET_MASK) != offset) {
        t++;
    }
    qcow2_signal_corruption(bs, "Refblock offset %#" G_GINT64_MODIFIER
                            "x unaligned (reftable index: %#"
                            G_GINT64_MODIFIER "x)", offset, t);
}

int qcow2_get_refcount(BlockDriverState *bs, uint64_t cluster_index,
                       uint64_t *refcount)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t t = cluster_index >> s->refblock_bits;
    uint64_t off;
    void *rb;
    int ret;

    *refcount = 0;
    if (t >= s->refcount_table_size) {
        return 0;
    }
    off = s->refcount_table[t] & REFT_OFFSET_MASK;
    if (!off) {
        return 0;
    }
    ret = qcow2_cache_get(bs, s->refcount_cache, off, &rb);
    if (ret < 0) {
        return ret;
    }
    *refcount = rb_get(s, rb, cluster_index & (s->refblock_size - 1));
    return 0;
}

static int write_reftable_entry(BlockDriverState *bs, uint64_t t)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t be = GUINT64_TO_BE(s->refcount_table[t]);

    bdrv_debug_event(bs->file, "refblock_alloc_hookup");
    return qcow2_overlap_pwrite(bs, QCOW2_OL_REFCOUNT_TABLE,
                                s->refcount_table_offset + t * 8, 8, &be);
}

/*
 * Hooks the new refcount block `rb` (in the cache for cluster `off`) into
 * table entry t.  The block is written and synced before the entry points
 * at it, so a crash never leaves the table naming a block of garbage; on
 * failure the entry and the cache are as they were before.
 */
static int install_refblock(BlockDriverState *bs, uint64_t t, uint64_t off,
                            void *rb)
{
    BDRVQcow2State *s = bs->opaque;
    int ret;

    bdrv_debug_event(bs->file, "refblock_alloc_write");
    ret = qcow2_cache_mark_dirty(s->refcount_cache, rb);
    if (ret == 0) {
        ret = qcow2_cache_write(bs, s->refcount_cache);
    }
    if (ret == 0) {
        ret = bdrv_flush(bs->file);
    }
    if (ret < 0) {
        qcow2_cache_discard(s->refcount_cache, off);
        return ret;
    }
    s->refcount_table[t] = off;
    qcow2_overlap_add(s, QCOW2_OL_REFCOUNT_BLOCK, off, s->cluster_size);
    ret = write_reftable_entry(bs, t);
    if (ret < 0) {
        s->refcount_table[t] = 0;
        qcow2_overlap_remove(s, QCOW2_OL_REFCOUNT_BLOCK, off, s->cluster_size);
        qcow2_cache_discard(s->refcount_cache, off);
    }
    return ret;
}

static bool block_missing(BDRVQcow2State *s, uint64_t t)
{
    return t >= s->refcount_table_size ||
           !(s->refcount_table[t] & REFT_OFFSET_MASK);
}

/* Finds n free clusters from free_cluster_index; clusters whose refcount
 * block does not exist yet count as free. */
static int64_t find_free_run(BlockDriverState *bs, uint64_t n)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t idx = s->free_cluster_index, run_start = idx, run_len = 0;
    /* The block of the previous cluster: the scan after an open crosses
     * every allocated cluster, one cache lookup per block is enough. */
    uint64_t rb_t = UINT64_MAX;
    void *rb = NULL;

    while (run_len < n) {
        uint64_t rc = 0, t = idx >> s->refblock_bits;
        if (((idx + 1) << s->cluster_bits) > QCOW2_MAX_HOST_OFFSET) {
            return -EFBIG;
        }
        if (!block_missing(s, t)) {
            if (t != rb_t) {
                int ret = qcow2_cache_get(bs, s->refcount_cache,
                                          s->refcount_table[t] &
                                          REFT_OFFSET_MASK, &rb);
                if (ret < 0) {
                    return ret;
                }
                rb_t = t;
            }
            rc = rb_get(s, rb, idx & (s->refblock_size - 1));
        }
        idx++;
        if (rc == 0) {
            run_len++;
        } else {
            run_start = idx;
            run_len = 0;
        }
    }
    return (int64_t)run_start;
}

int64_t qcow2_alloc_clusters(BlockDriverState *bs, uint64_t nb_clusters)
{
    return qcow2_alloc_clusters_for(bs, nb_clusters, NULL);
}

/* The header is never free, whatever its refcount says (and the caches
 * take offset 0 for "no table"), even with overlap-check=none. */
static int refuse_offset_0(BlockDriverState *bs, int64_t start,
                           const char *what)
{
    if (start != 0) {
        return 0;
    }
    qcow2_signal_corruption(bs, "Preventing invalid allocation of %s at "
                            "offset 0", what);
    return -EIO;
}

static uint64_t div_up(uint64_t a, uint64_t b)
{
    return (a + b - 1) / b;
}

/*
 * How many refcount blocks a file of `clusters` clusters needs once the
 * blocks and their table are counted too, with room for the table to be
 * half as large again (QEMU's qcow2_refcount_metadata_size with its
 * generous increase: the same number, so a grown image matches QEMU's).
 * The blocks are counted as if all of them were new, which is more than
 * needed; that is QEMU's figure and ours.
 */
static uint64_t refblocks_to_cover(BDRVQcow2State *s, uint64_t clusters)
{
    uint64_t per_table_cluster = s->cluster_size / 8;
    uint64_t blocks = 0, table = 0, n = 0, last;
    bool headroom = true;

    do {
        last = n;
        blocks = div_up(clusters + table + blocks, s->refblock_size);
        table = div_up(blocks, per_table_cluster);
        n = clusters + blocks + table;
        if (n == last && headroom) {
            clusters += div_up(table, 2);
            headroom = false;
            n = 0;
        }
    } while (n != last);
    return blocks;
}

/*
 * Grows the refcount table past entry t, whose new block already sits
 * (written and synced, counted) at new_block.  Where everything goes is
 * QEMU 7.2's choice, so an image grown by either matches the other's:
 * from cluster `meta` (a block boundary past everything in use) come the
 * new blocks for every entry from meta's on, then the table; they count
 * themselves, so the area is in use from the start.  The table has half
 * as many entries again as the blocks need.
 *
 * Order of writes: blocks and table, one sync; then the commit point, one
 * 12-byte header write (synced), after which nothing points at the old
 * table, so it is freed at once (its clusters are reused first, as in
 * QEMU).  A crash before the header write leaves the old table in force
 * and the area merely past its coverage.
 */
static int grow_refcount_table(BlockDriverState *bs, uint64_t meta,
                               uint64_t t, uint64_t new_block)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t E = s->refblock_size;
    uint64_t cs = s->cluster_size;
    uint64_t old_entries = s->refcount_table_size;
    uint64_t old_offset = s->refcount_table_offset;
    uint64_t old_clusters = div_up(old_entries * 8, cs);
    uint64_t total = refblocks_to_cover(s, meta);
    uint64_t first = meta / E;
    uint64_t entries, table_clusters, nb_blocks, table_at, end;
    g_autofree uint64_t *new_table = NULL;
    g_autofree uint8_t *blocks = NULL;
    uint8_t hdr[12];
    int ret;

    g_assert(meta % E == 0 && t < first && t >= old_entries);
    bdrv_debug_event(bs->file, "reftable_grow");
    entries = qcow2_align_up(total + div_up(total, 2), cs / 8);
    table_clusters = entries * 8 / cs;
    if (table_clusters * cs > QCOW2_MAX_REFTABLE_BYTES) {
        return -EFBIG;
    }
    /* Entries from `first` on are past the old table: all are new. */
    nb_blocks = total - first;
    table_at = meta + nb_blocks;
    end = table_at + table_clusters;
    if (end * cs > QCOW2_MAX_HOST_OFFSET) {
        return -EFBIG;
    }
    g_assert((end - 1) / E < total);
    /* The area counts as free only if no refcount describes it. */
    ret = qcow2_overlap_check(bs, 0, meta * cs, (end - meta) * cs);
    if (ret < 0) {
        return ret;
    }

    blocks = g_malloc0(nb_blocks * cs);
    for (uint64_t c = meta; c < end; c++) {
        rb_set(s, blocks + (c / E - first) * cs, c % E, 1);
    }
    new_table = g_malloc0(entries * 8);
    for (uint64_t i = 0; i < old_entries; i++) {
        new_table[i] = GUINT64_TO_BE(s->refcount_table[i]);
    }
    new_table[t] = GUINT64_TO_BE(new_block);
    for (uint64_t k = 0; k < nb_blocks; k++) {
        new_table[first + k] = GUINT64_TO_BE((meta + k) * cs);
    }
    bdrv_debug_event(bs->file, "refblock_alloc_write_blocks");
    ret = qcow2_overlap_pwrite(bs, 0, meta * cs, nb_blocks * cs, blocks);
    bdrv_debug_event(bs->file, "refblock_alloc_write_table");
    if (ret == 0) {
        ret = qcow2_overlap_pwrite(bs, 0, table_at * cs, entries * 8,
                                   new_table);
    }
    if (ret == 0) {
        ret = bdrv_flush(bs->file);
    }
    if (ret < 0) {
        return ret;
    }
    /* The commit point. */
    uint64_t be_off = GUINT64_TO_BE(table_at * cs);
    uint32_t be_clusters = GUINT32_TO_BE((uint32_t)table_clusters);
    memcpy(hdr, &be_off, 8);
    memcpy(hdr + 8, &be_clusters, 4);
    bdrv_debug_event(bs->file, "refblock_alloc_switch_table");
    ret = qcow2_write_header_bytes(bs, QCOW2_HDR_REFTABLE_OFF, hdr, 12);
    if (ret < 0) {
        return ret;
    }
    for (uint64_t i = 0; i < entries; i++) {
        new_table[i] = GUINT64_FROM_BE(new_table[i]);
    }
    g_free(s->refcount_table);
    s->refcount_table = g_steal_pointer(&new_table);
    s->refcount_table_size = entries;
    s->refcount_table_offset = table_at * cs;
    /* The header no longer names the old table (the write above was
     * synced): its counts may drop now.  A failure only leaks it. */
    for (uint64_t c = 0; c < old_clusters; c++) {
        qcow2_update_cluster_refcount(bs, (old_offset >> s->cluster_bits) + c,
                                      -1, NULL);
    }
    return 0;
}

/*
 * Makes refcount block t, which must count cluster `need`.  The block
 * goes where QEMU 7.2 puts it, so both grow an image alike: in the first
 * free cluster F from free_cluster_index.  F inside block t's own range
 * counts itself; otherwise F's own block counts it, and if that block is
 * missing too it is made first (after F) and F stays free for t next
 * time.  A t past the table grows the table (grow_refcount_table), with
 * its area from the block boundary after both `need` and F.
 *
 * Returns 1 when something was made: the caller searches again from its
 * run's start (QEMU's -EAGAIN), since a block may now sit in the run or
 * a freed old table may offer room lower down; -errno on failure.
 */
static int make_refblock(BlockDriverState *bs, uint64_t t, uint64_t need,
                         int depth)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t f, ft, off, meta;
    int64_t found;
    void *rb;
    int ret;

    /* Each level moves to the next block's range: a few at most. */
    if (depth > 8) {
        return -EIO;
    }
    found = find_free_run(bs, 1);
    if (found < 0) {
        return (int)found;
    }
    f = (uint64_t)found;
    ft = f >> s->refblock_bits;
    off = f << s->cluster_bits;
    s->free_cluster_index = f + 1;
    ret = refuse_offset_0(bs, (int64_t)off, "refcount block");
    if (ret == 0) {
        /* "free" may only mean uncounted: not if it is in use */
        ret = qcow2_overlap_check(bs, 0, off, s->cluster_size);
    }
    if (ret < 0) {
        return ret;
    }
    if (ft != t) {
        if (block_missing(s, ft)) {
            return make_refblock(bs, ft, f, depth + 1);
        }
        ret = qcow2_update_cluster_refcount(bs, f, 1, NULL);
        if (ret < 0) {
            return ret;
        }
    }
    ret = qcow2_cache_get_empty(bs, s->refcount_cache, off, &rb);
    if (ret < 0) {
        return ret;
    }
    if (ft == t) {
        rb_set(s, rb, f & (s->refblock_size - 1), 1);
    }
    if (t < s->refcount_table_size) {
        ret = install_refblock(bs, t, off, rb);
        return ret < 0 ? ret : 1;
    }
    /* Written and synced before the new table names it. */
    bdrv_debug_event(bs->file, "refblock_alloc_write");
    ret = qcow2_cache_mark_dirty(s->refcount_cache, rb);
    if (ret == 0) {
        ret = qcow2_cache_write(bs, s->refcount_cache);
    }
    if (ret == 0) {
        ret = bdrv_flush(bs->file);
    }
    meta = qcow2_align_up(MAX(need, f) + 1, s->refblock_size);
    if (ret == 0) {
        ret = grow_refcount_table(bs, meta, t, off);
    }
    if (ret < 0) {
        qcow2_cache_discard(s->refcount_cache, off);
        return ret;
    }
    return 1;
}

int qcow2_update_cluster_refcount(BlockDriverState *bs, uint64_t cluster_index,
                                  int addend, uint64_t *new_refcount)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t t = cluster_index >> s->refblock_bits;
    uint64_t off, cur, nv;
    void *rb;
    int ret;

    bdrv_debug_event(bs->file, "refblock_alloc");  /* where QEMU finds the block */
    if (t >= s->refcount_table_size ||
        !(off = s->refcount_table[t] & REFT_OFFSET_MASK)) {
        if (addend <= 0) {
            qcow2_signal_corruption(bs, "Refcount of cluster %" G_GUINT64_FORMAT
                                    " would drop below zero", cluster_index);
            return -EIO;
        }
        /* Callers allocate through qcow2_alloc_clusters, which makes sure
         * blocks exist; reaching here means a raw increment elsewhere. */
        return -EINVAL;
    }
    bdrv_debug_event(bs->file, "refblock_load");
    /* A block that is other metadata too must not change at all. */
    ret = qcow2_overlap_check(bs, QCOW2_OL_REFCOUNT_BLOCK, off,
                              s->cluster_size);
    if (ret < 0) {
        return ret;
    }
    ret = qcow2_cache_get(bs, s->refcount_cache, off, &rb);
    if (ret < 0) {
        return ret;
    }
    cur = rb_get(s, rb, cluster_index & (s->refblock_size - 1));
    if (addend < 0 && cur < (uint64_t)-addend) {
        qcow2_signal_corruption(bs, "Refcount of cluster %" G_GUINT64_FORMAT
                                " would drop below zero", cluster_index);
        return -EIO;
    }
    if (addend > 0 && s->refcount_max - cur < (uint64_t)addend) {
        return -ERANGE;
    }
    nv = cur + addend;
    if (nv == 0) {
        /* Freeing what is still metadata would hand it out again. */
        int hit = qcow2_overlap_find(bs, 0, cluster_index << s->cluster_bits,
                                     s->cluster_size);
        if (hit < 0) {
            return hit;
        }
        if (hit > 0) {
            qcow2_signal_corruption(bs, "Preventing invalid free of "
                                    "cluster %#" G_GINT64_MODIFIER "x: it "
                                    "holds metadata",
                                    (uint64_t)cluster_index <<
                                    s->cluster_bits);
            return -EIO;
        }
    }
    ret = qcow2_cache_mark_dirty(s->refcount_cache, rb);
    if (ret < 0) {
        return ret;
    }
    rb_set(s, rb, cluster_index & (s->refblock_size - 1), nv);
    if (nv == 0) {
        uint64_t host = cluster_index << s->cluster_bits;
        qcow2_cache_discard(s->l2_cache, host);
        qcow2_cache_discard(s->refcount_cache, host);
        if (cluster_index < s->free_cluster_index) {
            s->free_cluster_index = cluster_index;
        }
        /* no more compressed data goes into a cluster given back */
        if ((s->free_byte_offset >> s->cluster_bits) == cluster_index) {
            s->free_byte_offset = 0;
        }
    }
    if (new_refcount) {
        *new_refcount = nv;
    }
    return 0;
}

int qcow2_update_refcount_range(BlockDriverState *bs, uint64_t offset,
                                uint64_t length, int addend)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t first, last;

    if (length == 0) {
        return 0;
    }
    first = offset >> s->cluster_bits;
    last = (offset + length - 1) >> s->cluster_bits;
    for (uint64_t c = first; c <= last; c++) {
        int ret = qcow2_update_cluster_refcount(bs, c, addend, NULL);
        if (ret < 0) {
            return ret;
        }
    }
    return 0;
}


/*
 * Counts the free run of n clusters from `start` as in use, one cluster
 * after the other as QEMU does, so a refcount block that turns out to be
 * missing goes to the first cluster that is still free: past the part of
 * the run counted so far.  Then what was counted is given back and 1
 * returned: the caller looks for its run again (the block may sit in the
 * run, or a table the growth freed may offer room lower down), from no
 * further than `start` (QEMU's -EAGAIN).  0 when counted, -errno on
 * failure (with nothing counted).
 */
static int count_run(BlockDriverState *bs, int64_t start, uint64_t n)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t first = (uint64_t)start, c;
    int ret = 0;

    for (c = first; c < first + n; c++) {
        if (block_missing(s, c >> s->refblock_bits)) {
            ret = make_refblock(bs, c >> s->refblock_bits, c, 0);
            break;
        }
        ret = qcow2_update_cluster_refcount(bs, c, 1, NULL);
        if (ret < 0) {
            break;
        }
    }
    if (c == first + n) {
        return 0;
    }
    /* undo what we counted: nothing points at these yet */
    for (uint64_t u = first; u < c; u++) {
        qcow2_update_cluster_refcount(bs, u, -1, NULL);
    }
    if (ret > 0) {
        s->free_cluster_index = MIN(s->free_cluster_index, first);
    }
    return ret;
}

int64_t qcow2_alloc_clusters_for(BlockDriverState *bs, uint64_t nb_clusters,
                                 const char *what)
{
    BDRVQcow2State *s = bs->opaque;
    int64_t start;
    int ret;

    g_assert(nb_clusters > 0);
    bdrv_debug_event(bs->file, "cluster_alloc");
again:
    start = find_free_run(bs, nb_clusters);
    if (start < 0) {
        return start;
    }
    /* A named allocation (an L2 table...) says so first, as QEMU does;
     * for data the overlap check below names the header. */
    ret = what ? refuse_offset_0(bs, start, what) : 0;
    if (ret < 0) {
        return ret;
    }
    /* Refcount 0 on metadata in use (a corrupt image) must not hand it
     * out: refused before any refcount changes. */
    ret = qcow2_overlap_check(bs, 0, (uint64_t)start << s->cluster_bits,
                              nb_clusters << s->cluster_bits);
    if (ret == 0) {
        ret = refuse_offset_0(bs, start, "cluster");
    }
    if (ret < 0) {
        return ret;
    }
    /* Metadata for the run goes after it; holes too small for this
     * request are skipped until a free lowers the index again. */
    s->free_cluster_index = start + nb_clusters;
    ret = count_run(bs, start, nb_clusters);
    if (ret < 0) {
        return ret;
    }
    if (ret > 0) {
        goto again;
    }
    return start << s->cluster_bits;
}

int64_t qcow2_alloc_clusters_at(BlockDriverState *bs, uint64_t offset,
                                uint64_t nb_clusters)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t first = offset >> s->cluster_bits, n, rc;
    int ret;

    g_assert(!(offset & (s->cluster_size - 1)));
again:
    for (n = 0; n < nb_clusters; n++) {
        if (((first + n + 1) << s->cluster_bits) > QCOW2_MAX_HOST_OFFSET) {
            break;
        }
        ret = qcow2_get_refcount(bs, first + n, &rc);
        if (ret < 0) {
            return ret;
        }
        if (rc != 0) {
            break;
        }
    }
    if (n == 0) {
        return 0;
    }
    ret = qcow2_overlap_check(bs, 0, offset, n << s->cluster_bits);
    if (ret == 0) {
        ret = refuse_offset_0(bs, (int64_t)first, "cluster");
    }
    if (ret == 0) {
        ret = count_run(bs, (int64_t)first, n);
    }
    if (ret < 0) {
        return ret;
    }
    if (ret > 0) {
        goto again;
    }
    return (int64_t)n;
}

void qcow2_free_deferred(BlockDriverState *bs, uint64_t host_cluster,
                         bool punch)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t v = host_cluster | (punch ? QCOW2_FREE_PUNCH : 0);

    /* bit 0 is free for the tag: host clusters are at least 512 bytes */
    g_assert(!(host_cluster & QCOW2_FREE_PUNCH));
    g_array_append_val(s->pending_frees, v);
}

void qcow2_free_cluster_deferred(BlockDriverState *bs, uint64_t host_cluster)
{
    qcow2_free_deferred(bs, host_cluster, false);
}

bool qcow2_discard_passes(BlockDriverState *bs, Qcow2FreeReason why)
{
    BDRVQcow2State *s = bs->opaque;

    switch (why) {
    case QCOW2_FREE_ALWAYS:
        return true;
    case QCOW2_FREE_SNAPSHOT:
        return s->rt.discard_snapshot;
    case QCOW2_FREE_OTHER:
        return s->rt.discard_other;
    default:
        return false;
    }
}

void qcow2_free_cluster_for(BlockDriverState *bs, uint64_t host_cluster,
                            Qcow2FreeReason why)
{
    qcow2_free_deferred(bs, host_cluster, qcow2_discard_passes(bs, why));
}

int qcow2_release_range(BlockDriverState *bs, uint64_t offset,
                        uint64_t bytes, Qcow2FreeReason why)
{
    BDRVQcow2State *s = bs->opaque;
    bool punch = qcow2_discard_passes(bs, why);

    if (bytes == 0) {
        return 0;
    }
    for (uint64_t c = offset >> s->cluster_bits;
         c <= (offset + bytes - 1) >> s->cluster_bits; c++) {
        uint64_t rc = 1;
        int ret = qcow2_update_cluster_refcount(bs, c, -1, &rc);
        if (ret < 0) {
            return ret;
        }
        /* punched only after the next sync: the caller's pointer
         * removal may not be durable yet */
        if (punch && rc == 0) {
            g_array_append_val(s->pending_punches, c);
        }
    }
    return 0;
}

void qcow2_punch_pending(BlockDriverState *bs)
{
    BDRVQcow2State *s = bs->opaque;
    Qcow2PunchRun punch = { 0 };

    if (s->pending_punches->len == 0) {
        return;
    }
    /* The pointers' removal durable before any hole (see qcow2_punch_add);
     * on failure the clusters stay queued for the next sync. */
    if (bdrv_flush(bs->file) < 0) {
        return;
    }
    for (guint i = 0; i < s->pending_punches->len; i++) {
        uint64_t c = g_array_index(s->pending_punches, uint64_t, i), rc = 1;
        /* handed out again since (the lock was let go): not ours */
        if (qcow2_get_refcount(bs, c, &rc) == 0 && rc == 0) {
            qcow2_punch_add(bs, &punch, c);
        }
    }
    qcow2_punch_flush(bs, &punch);
    g_array_set_size(s->pending_punches, 0);
}

void qcow2_free_compressed_deferred(BlockDriverState *bs, uint64_t l2_entry,
                                    bool punch)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t off, len;

    qcow2_compressed_range(s, l2_entry, &off, &len);
    for (uint64_t c = qcow2_cluster_start(s, off); c < off + len;
         c += s->cluster_size) {
        qcow2_free_deferred(bs, c, punch);
    }
}

/*
 * Safe only for a cluster whose count reached 0 after every pointer to
 * it had gone from the disk (the rule every decrement here keeps): a
 * crash can then leave a leak whose contents are gone, never a live
 * cluster that reads zeroes.  The caller holds s->lock, so the cluster
 * cannot be handed out again before its hole is punched.
 */
void qcow2_punch_add(BlockDriverState *bs, Qcow2PunchRun *r, uint64_t cluster)
{
    if (r->n && cluster == r->first + r->n) {
        r->n++;
        return;
    }
    qcow2_punch_flush(bs, r);
    r->first = cluster;
    r->n = 1;
}

void qcow2_punch_flush(BlockDriverState *bs, Qcow2PunchRun *r)
{
    BDRVQcow2State *s = bs->opaque;

    if (r->n) {
        bdrv_pdiscard(bs->file, (int64_t)(r->first << s->cluster_bits),
                      (int64_t)(r->n << s->cluster_bits));
    }
    r->n = 0;
}

/*
 * Under s->lock, before an allocation of nb_clusters for guest data: true
 * when a discard (or an unmapping zero write) has queued frees since the
 * last sync, at least nb_clusters frees are queued, and the allocation
 * would otherwise grow the file.  Then one sync (qcow2_reclaim_frees)
 * makes the freed clusters reusable, so a guest that discards and writes
 * keeps its image the size QEMU's would be, and its clusters where QEMU's
 * are (QEMU reuses a freed cluster at once, unsynced).  The sync is paid
 * for the discards: once one is due, the frees that overwrites queued
 * (compressed clusters rewritten) count too, but overwrites alone never
 * cost a sync here.
 */
bool qcow2_reclaim_pays(BlockDriverState *bs, uint64_t nb_clusters)
{
    BDRVQcow2State *s = bs->opaque;
    int64_t start, file_len;
    bool grows;

    if (s->unmapped_frees == 0 || s->pending_frees->len < nb_clusters) {
        return false;
    }
    start = find_free_run(bs, nb_clusters);
    file_len = bdrv_getlength(bs->file);
    if (start < 0 || file_len < 0) {
        return false;
    }
    grows = ((uint64_t)start + nb_clusters) << s->cluster_bits >
            (uint64_t)file_len;
    if (!grows) {
        /* The allocation that follows, under the same lock, would scan
         * to the same run: it starts there (holes below it are too small
         * for this request, as qcow2_alloc_clusters lets them be). */
        s->free_cluster_index = (uint64_t)start;
    }
    return grows;
}

/* L2 cache hook: refcounts must be durable before an L2 table points at a
 * cluster they count. */
int qcow2_before_l2_write(BlockDriverState *bs)
{
    BDRVQcow2State *s = bs->opaque;
    int ret;

    /* Lazy refcounts: once the dirty bit is on disk, the next open
     * repairs the counts, so L2 tables need not wait for them. */
    if (s->rt.lazy_refcounts && qcow2_mark_dirty(bs) == 0) {
        return 0;
    }
    if (qcow2_cache_has_dirty(s->refcount_cache)) {
        ret = qcow2_cache_write(bs, s->refcount_cache);
        if (ret < 0) {
            return ret;
        }
        s->refcounts_unsynced = true;
    }
    if (s->refcounts_unsynced) {
        ret = bdrv_flush(bs->file);
        if (ret < 0) {
            return ret;
        }
        s->refcounts_unsynced = false;
    }
    return 0;
}

/* Refcount cache hook: written blocks are not durable until a sync. */
int qcow2_before_refblock_write(BlockDriverState *bs)
{
    BDRVQcow2State *s = bs->opaque;

    s->refcounts_unsynced = true;
    return 0;
}

static int apply_pending_frees(BlockDriverState *bs)
{
    BDRVQcow2State *s = bs->opaque;
    int first_err = 0;

    Qcow2PunchRun punch = { 0 };

    bdrv_debug_event(bs->file, "cluster_free");
    for (guint i = 0; i < s->pending_frees->len; i++) {
        uint64_t v = g_array_index(s->pending_frees, uint64_t, i);
        uint64_t cluster = (v & ~QCOW2_FREE_PUNCH) >> s->cluster_bits, rc = 1;
        int ret = qcow2_update_cluster_refcount(bs, cluster, -1, &rc);
        if (ret < 0 && !first_err) {
            first_err = ret; /* a failed decrement only leaks */
        }
        if (ret == 0 && rc == 0 && (v & QCOW2_FREE_PUNCH)) {
            qcow2_punch_add(bs, &punch, cluster);
        }
    }
    qcow2_punch_flush(bs, &punch);
    g_array_set_size(s->pending_frees, 0);
    s->unmapped_frees = 0;
    return qcow2_free_failed(first_err);
}

int qcow2_write_back_metadata(BlockDriverState *bs)
{
    BDRVQcow2State *s = bs->opaque;
    int ret;

    ret = qcow2_cache_write(bs, s->refcount_cache);
    if (ret == 0) {
        ret = qcow2_cache_write(bs, s->l2_cache);
    }
    if (ret < 0) {
        return ret;
    }
    if (s->pending_frees->len == 0) {
        return 0;
    }
    /* Pointers are gone on disk before the counts go down. */
    ret = bdrv_flush(bs->file);
    if (ret < 0) {
        return ret;
    }
    ret = apply_pending_frees(bs);
    if (ret == 0) {
        ret = qcow2_cache_write(bs, s->refcount_cache);
    }
    return ret;
}
