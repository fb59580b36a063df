/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * qcow2 guest I/O: mapping guest offsets through L1/L2 tables, reads
 * (including compressed clusters and the backing chain), allocating writes
 * with copy-on-write, block status, L1 growth and metadata preallocation.
 * Zero writes and discards, built on the mapping here, are in
 * qcow2-zero.c.
 *
 * Locking: s->lock covers metadata; data I/O to clusters already allocated
 * runs without it.  An allocating write reserves its guest clusters in
 * s->inflight, drops the lock for the data write, then retakes it to point
 * the L2 entries at the new clusters.  Every data request holds free_lock
 * for reading so freed clusters are not reused under it.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "qcow2.h"

/* Upper bound of one allocating chunk (bounce buffer size). */
#define QCOW2_MAX_ALLOC_CHUNK (4 * 1024 * 1024)

Qcow2ClusterType qcow2_get_cluster_type(uint64_t e)
{
    if (e & QCOW_OFLAG_COMPRESSED) {
        return QCOW2_CLUSTER_COMPRESSED;
    }
    if (e & QCOW_OFLAG_ZERO) {
        return (e & L2E_OFFSET_MASK) ? QCOW2_CLUSTER_ZERO_ALLOC
                                     : QCOW2_CLUSTER_ZERO_PLAIN;
    }
    if (!(e & L2E_OFFSET_MASK)) {
        return QCOW2_CLUSTER_UNALLOCATED;
    }
    return QCOW2_CLUSTER_NORMAL;
}

Qcow2ClusterType qcow2_entry_type(BDRVQcow2State *s, uint64_t e)
{
    /* Every data-file cluster has refcount 1 in QEMU's model, so COPIED
     * tells offset 0 of the data file from an empty entry. */
    if (qcow2_has_data_file(s) && e == QCOW_OFLAG_COPIED) {
        return QCOW2_CLUSTER_NORMAL;
    }
    return qcow2_get_cluster_type(e);
}

void qcow2_compressed_range(BDRVQcow2State *s, uint64_t l2_entry,
                            uint64_t *offset, uint64_t *length)
{
    uint64_t nsec = ((l2_entry >> s->csize_shift) & s->csize_mask) + 1;

    *offset = l2_entry & s->coffset_mask;
    *length = nsec * 512 - (*offset & 511);
}

int qcow2_decompress_cluster(BlockDriverState *bs, uint64_t l2_entry,
                             uint8_t *out)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t off, len;
    g_autofree uint8_t *in = NULL;
    int ret;

    qcow2_compressed_range(s, l2_entry, &off, &len);
    len = MIN(len, 2 * (uint64_t)s->cluster_size);
    in = g_malloc(len);
    bdrv_debug_event(bs->file, "read_compressed");
    ret = bdrv_pread(bs->file, off, len, in);
    if (ret < 0) {
        return ret;
    }
    return qcow2_decompress(s->compression_type, out, s->cluster_size,
                            in, len);
}

static bool l2_entry_offset_valid(BDRVQcow2State *s, uint64_t e)
{
    return ((e & L2E_OFFSET_MASK) & (s->cluster_size - 1)) == 0;
}

/* Marks the image corrupt for the invalid extended entry l2i of the L2
 * table of l1i, in QEMU's words: its read path's text has two spaces,
 * its write path's one (scripts compare them).  -EIO. */
static int invalid_entry(BlockDriverState *bs, uint64_t l1i, uint64_t l2i,
                         bool read)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t l2_off = s->l1_table[l1i] & L1E_OFFSET_MASK;

    qcow2_signal_corruption(bs, "Invalid cluster entry found%s(L2 offset: "
                            "%#" G_GINT64_MODIFIER "x, L2 index: %#x)",
                            read ? "  " : " ", l2_off, (unsigned)l2i);
    return -EIO;
}

/*
 * Loads the L2 table of l1_index under s->lock.  With for_write, a
 * missing table is allocated and a shared one (COPIED clear) is copied, so
 * the returned table is owned by the active image alone.  *l2 is NULL for
 * an unallocated table when !for_write.
 */
int qcow2_l2_load(BlockDriverState *bs, uint64_t l1_index, bool for_write,
                  uint64_t **l2)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t l1e = s->l1_table[l1_index];
    uint64_t old = l1e & L1E_OFFSET_MASK;
    g_autofree uint64_t *copy = NULL;
    uint64_t be;
    int64_t new_off;
    void *t;
    int ret;

    *l2 = NULL;
    if (old & (s->cluster_size - 1)) {
        qcow2_signal_corruption(bs, "L2 table offset %#" G_GINT64_MODIFIER
                                "x unaligned (L1 index: %#" G_GINT64_MODIFIER
                                "x)", old, l1_index);
        return -EIO;
    }
    /* A table about to change, or to be copied and released, must not be
     * other metadata too: refuse before anything (a refcount, a data
     * cluster) changes for it. */
    if (old && for_write) {
        ret = qcow2_overlap_check(bs, QCOW2_OL_ACTIVE_L2 |
                                  ((l1e & QCOW_OFLAG_COPIED) ? 0 :
                                   QCOW2_OL_INACTIVE_L2),
                                  old, s->cluster_size);
        if (ret < 0) {
            return ret;
        }
    }
    if (old && (!for_write || (l1e & QCOW_OFLAG_COPIED))) {
        ret = qcow2_cache_get(bs, s->l2_cache, old, &t);
        *l2 = t;
        return ret;
    }
    if (!for_write) {
        return 0;
    }
    new_off = qcow2_alloc_clusters_for(bs, 1, "L2 table");
    if (new_off < 0) {
        return (int)new_off;
    }
    if (old) {
        /* QEMU's order, which fault-injection rules see: the new table's
         * count is written before the shared table is read */
        ret = qcow2_cache_write(bs, s->refcount_cache);
        if (ret == 0) {
            bdrv_debug_event(bs->file, "l2_alloc_cow_read");
            ret = qcow2_cache_get(bs, s->l2_cache, old, &t);
        }
        if (ret < 0) {
            goto undo;
        }
        copy = g_memdup2(t, s->cluster_size);
    }
    ret = qcow2_cache_get_empty(bs, s->l2_cache, new_off, &t);
    if (ret < 0) {
        goto undo;
    }
    if (copy) {
        memcpy(t, copy, s->cluster_size);
    }
    bdrv_debug_event(bs->file, "l2_alloc_write");
    ret = qcow2_cache_mark_dirty(s->l2_cache, t);
    /* Lazy refcounts skip only data clusters' counts: a new table's own
     * count is written first, as QEMU does. */
    if (ret == 0 && s->rt.lazy_refcounts) {
        ret = qcow2_cache_write(bs, s->refcount_cache);
    }
    /* The table must be on disk before the L1 entry points at it. */
    if (ret == 0) {
        ret = qcow2_cache_write_table(bs, s->l2_cache, new_off);
    }
    if (ret < 0) {
        qcow2_cache_discard(s->l2_cache, new_off);
        goto undo;
    }
    be = GUINT64_TO_BE((uint64_t)new_off | QCOW_OFLAG_COPIED);
    bdrv_debug_event(bs->file, "l1_update");
    ret = qcow2_overlap_pwrite(bs, QCOW2_OL_ACTIVE_L1,
                               s->l1_table_offset + l1_index * 8, 8, &be);
    if (ret < 0) {
        qcow2_cache_discard(s->l2_cache, new_off);
        goto undo;
    }
    s->l1_table[l1_index] = (uint64_t)new_off | QCOW_OFLAG_COPIED;
    qcow2_overlap_add(s, QCOW2_OL_ACTIVE_L2, new_off, s->cluster_size);
    if (old) {
        qcow2_overlap_remove(s, QCOW2_OL_ACTIVE_L2, old, s->cluster_size);
        qcow2_free_cluster_for(bs, old, QCOW2_FREE_OTHER);
    }
    ret = qcow2_cache_get(bs, s->l2_cache, new_off, &t);
    *l2 = t;
    return ret;

undo:
    qcow2_free_cluster_for(bs, new_off, QCOW2_FREE_ALWAYS);
    return ret;
}

void qcow2_split_offset(BDRVQcow2State *s, uint64_t off, uint64_t *l1_index,
                        uint64_t *l2_index)
{
    *l1_index = off >> (s->cluster_bits + s->l2_bits);
    *l2_index = (off >> s->cluster_bits) & (s->l2_size - 1);
}

/*
 * Looks up the entry for guest offset `off` and how many bytes from `off`
 * (up to `bytes`) map the same way: same type and, for data clusters,
 * contiguous on the host.  Under s->lock.
 */
int qcow2_cluster_lookup(BlockDriverState *bs, uint64_t off, uint64_t bytes,
                         bool view, uint64_t *entry, uint64_t *run)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t l1i, l2i, *l2, first, in_cluster = off & (s->cluster_size - 1);
    uint64_t max_clusters, n = 1;
    Qcow2ClusterType type;
    int ret;

    qcow2_split_offset(s, off, &l1i, &l2i);
    max_clusters = MIN(s->l2_size - l2i,
                       (in_cluster + bytes + s->cluster_size - 1) >>
                       s->cluster_bits);
    if (l1i >= s->l1_size) {
        *entry = 0;
        *run = MIN(bytes, (max_clusters << s->cluster_bits) - in_cluster);
        return 0;
    }
    ret = qcow2_l2_load(bs, l1i, false, &l2);
    if (ret < 0) {
        return ret;
    }
    if (!l2) {
        *entry = 0;
        *run = MIN(bytes, (max_clusters << s->cluster_bits) - in_cluster);
        return 0;
    }
    first = qcow2_l2_get(s, l2, l2i);
    type = qcow2_entry_type(s, first);
    if (s->version < 3 && (type == QCOW2_CLUSTER_ZERO_PLAIN ||
                           type == QCOW2_CLUSTER_ZERO_ALLOC)) {
        /* version 2 has no zero flag: reading zeroes would hide data */
        qcow2_signal_corruption(bs, "Zero cluster entry found in pre-v3 "
                                "image (L2 offset: %#" G_GINT64_MODIFIER
                                "x, L2 index: %#x)",
                                (uint64_t)(s->l1_table[l1i] & L1E_OFFSET_MASK),
                                (unsigned)l2i);
        return -EIO;
    }
    if ((type == QCOW2_CLUSTER_NORMAL || type == QCOW2_CLUSTER_ZERO_ALLOC) &&
        !l2_entry_offset_valid(s, first)) {
        qcow2_signal_corruption(bs, "Cluster allocation offset %#"
                                G_GINT64_MODIFIER "x unaligned (L2 offset: %#"
                                G_GINT64_MODIFIER "x, L2 index: %#"
                                G_GINT64_MODIFIER "x)",
                                (uint64_t)(first & L2E_OFFSET_MASK),
                                (uint64_t)(s->l1_table[l1i] & L1E_OFFSET_MASK),
                                l2i);
        return -EIO;
    }
    if (qcow2_has_data_file(s) && type == QCOW2_CLUSTER_COMPRESSED) {
        qcow2_signal_corruption(bs, "Compressed cluster entry found in image "
                                "with external data file (L2 offset: %#"
                                G_GINT64_MODIFIER "x, L2 index: %#x)",
                                (uint64_t)(s->l1_table[l1i] & L1E_OFFSET_MASK),
                                (unsigned)l2i);
        return -EIO;
    }
    /* A data file maps each guest cluster to the same offset there: any
     * other offset is corruption (QEMU's text, its odd parenthesis too). */
    if (qcow2_has_data_file(s) &&
        (type == QCOW2_CLUSTER_NORMAL || type == QCOW2_CLUSTER_ZERO_ALLOC) &&
        (first & L2E_OFFSET_MASK) != qcow2_cluster_start(s, off)) {
        qcow2_signal_corruption(bs, "External data file host cluster offset %#"
                                G_GINT64_MODIFIER "x does not match guest "
                                "cluster offset: %#" G_GINT64_MODIFIER
                                "x, L2 index: %#x)",
                                (uint64_t)(first & L2E_OFFSET_MASK),
                                qcow2_cluster_start(s, off), (unsigned)l2i);
        return -EIO;
    }
    if (qcow2_has_subclusters(s) &&
        !qcow2_sc_bitmap_valid(s, first, qcow2_l2_bitmap(s, l2, l2i))) {
        return invalid_entry(bs, l1i, l2i, view);
    }
    if (view && qcow2_has_subclusters(s)) {
        qcow2_view_run(s, l2, l2i, in_cluster, max_clusters, bytes, first,
                       entry, run);
        return 0;
    }
    if (type != QCOW2_CLUSTER_COMPRESSED) {
        for (; n < max_clusters; n++) {
            uint64_t e = qcow2_l2_get(s, l2, l2i + n);
            if (qcow2_entry_type(s, e) != type) {
                break;
            }
            if (type == QCOW2_CLUSTER_NORMAL &&
                ((e & L2E_OFFSET_MASK) != (first & L2E_OFFSET_MASK) +
                 (n << s->cluster_bits) ||
                 (e & QCOW_OFLAG_COPIED) != (first & QCOW_OFLAG_COPIED))) {
                break;
            }
        }
    }
    /* A write covers these clusters: QEMU refuses it whole if any of
     * them is invalid. */
    for (uint64_t k = 1; !view && qcow2_has_subclusters(s) && k < n; k++) {
        if (!qcow2_sc_bitmap_valid(s, qcow2_l2_get(s, l2, l2i + k),
                          qcow2_l2_bitmap(s, l2, l2i + k))) {
            return invalid_entry(bs, l1i, l2i + k, false);
        }
    }
    *entry = first;
    *run = MIN(bytes, (n << s->cluster_bits) - in_cluster);
    return 0;
}

/* Reads guest bytes that this layer does not hold: backing or zeroes. */
static int read_backing(BlockDriverState *bs, uint64_t off, uint64_t bytes,
                        uint8_t *buf)
{
    int64_t blen;
    uint64_t n = 0;

    if (bs->backing) {
        bdrv_debug_event(bs->file, "read_backing_aio");
        blen = bdrv_getlength(bs->backing);
        if (blen < 0) {
            return (int)blen;
        }
        if ((int64_t)off < blen) {
            n = MIN(bytes, (uint64_t)blen - off);
            int ret = bdrv_pread(bs->backing, off, n, buf);
            if (ret < 0) {
                return ret;
            }
        }
    }
    memset(buf + n, 0, bytes - n);
    return 0;
}

static int read_compressed(BlockDriverState *bs, uint64_t entry, uint64_t off,
                           uint64_t bytes, uint8_t *buf)
{
    BDRVQcow2State *s = bs->opaque;
    g_autofree uint8_t *cl = g_malloc(s->cluster_size);
    int ret = qcow2_decompress_cluster(bs, entry, cl);

    if (ret == 0) {
        memcpy(buf, cl + (off & (s->cluster_size - 1)), bytes);
    }
    return ret;
}

static int read_run(BlockDriverState *bs, uint64_t entry, uint64_t off,
                    uint64_t n, uint8_t *buf)
{
    BDRVQcow2State *s = bs->opaque;

    switch (qcow2_view_type(s, entry)) {
    case QCOW2_CLUSTER_UNALLOCATED:
        return read_backing(bs, off, n, buf);
    case QCOW2_CLUSTER_ZERO_PLAIN:
    case QCOW2_CLUSTER_ZERO_ALLOC:
        memset(buf, 0, n);
        return 0;
    case QCOW2_CLUSTER_COMPRESSED:
        return read_compressed(bs, entry, off, n, buf);
    case QCOW2_CLUSTER_NORMAL:
    default:
        bdrv_debug_event(bs->file, "read_aio");
        return qcow2_data_pread(bs, (entry & L2E_OFFSET_MASK) +
                                (off & (s->cluster_size - 1)), off, n, buf);
    }
}

int qcow2_pread(BlockDriverState *bs, int64_t offset, int64_t bytes,
                void *buf)
{
    BDRVQcow2State *s = bs->opaque;

    if ((uint64_t)offset + bytes > s->size) {
        return -EIO;
    }
    return qcow2_pread_any(bs, offset, bytes, buf);
}

int qcow2_pread_any(BlockDriverState *bs, int64_t offset, int64_t bytes,
                    void *buf)
{
    BDRVQcow2State *s = bs->opaque;
    uint8_t *p = buf;
    int ret = 0;

    if (qcow2_data_unavailable(s)) {
        return -EIO;   /* opened to describe it: no data file or key */
    }
    g_rw_lock_reader_lock(&s->free_lock);
    while (bytes > 0) {
        uint64_t entry, n;
        g_mutex_lock(&s->lock);
        ret = qcow2_cluster_lookup(bs, offset, bytes, true, &entry, &n);
        g_mutex_unlock(&s->lock);
        if (ret < 0) {
            break;
        }
        ret = read_run(bs, entry, offset, n, p);
        if (ret < 0) {
            break;
        }
        offset += n;
        bytes -= n;
        p += n;
    }
    g_rw_lock_reader_unlock(&s->free_lock);
    return ret;
}

static bool inflight_overlaps(BDRVQcow2State *s, uint64_t start, uint64_t end)
{
    for (Qcow2InflightAlloc *a = s->inflight; a; a = a->next) {
        if (a->guest_start < end && start < a->guest_end) {
            return true;
        }
    }
    return false;
}

/* Waits for an in-flight allocation to finish; under s->lock. */
static void wait_inflight(BDRVQcow2State *s)
{
    s->alloc_waiters++;
    g_cond_wait(&s->alloc_cond, &s->lock);
    s->alloc_waiters--;
}

static void inflight_remove(BDRVQcow2State *s, Qcow2InflightAlloc *a)
{
    Qcow2InflightAlloc **pp = &s->inflight;

    while (*pp != a) {
        pp = &(*pp)->next;
    }
    *pp = a->next;
    if (s->alloc_waiters) {
        g_cond_broadcast(&s->alloc_cond);
    }
}

/* Fills one whole guest cluster with what it read before the write. */
static int cow_fill(BlockDriverState *bs, uint64_t old_entry,
                    uint64_t guest_cluster, uint8_t *cl)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t n = MIN((uint64_t)s->cluster_size, s->size - guest_cluster);
    int ret;

    bdrv_debug_event(bs->file, "cow_read");
    ret = read_run(bs, old_entry, guest_cluster, n, cl);
    memset(cl + n, 0, s->cluster_size - n);
    return ret;
}

/* Drops the active image's reference to what an L2 entry pointed at
 * (punch: the host space goes back once nothing uses it). */
static void release_entry(BlockDriverState *bs, uint64_t e, bool punch)
{
    BDRVQcow2State *s = bs->opaque;

    /* Data-file clusters have no refcount: nothing to give back.  (A
     * compressed entry there is corruption that lookup refuses.) */
    if (qcow2_has_data_file(s)) {
        return;
    }
    switch (qcow2_entry_type(s, e)) {
    case QCOW2_CLUSTER_NORMAL:
    case QCOW2_CLUSTER_ZERO_ALLOC:
        qcow2_free_deferred(bs, e & L2E_OFFSET_MASK, punch);
        break;
    case QCOW2_CLUSTER_COMPRESSED:
        qcow2_free_compressed_deferred(bs, e, punch);
        break;
    default:
        break;
    }
}

void qcow2_release_entry(BlockDriverState *bs, uint64_t e)
{
    release_entry(bs, e, false);
}

/* release_entry for an entry a discard or an unmapping zero write drops:
 * the freed cluster counts towards qcow2_reclaim_pays. */
void qcow2_release_unmapped(BlockDriverState *bs, uint64_t e)
{
    BDRVQcow2State *s = bs->opaque;
    Qcow2ClusterType t = qcow2_entry_type(s, e);

    if (qcow2_has_data_file(s)) {
        /* Nothing to free; the data file hears of it only when guest
         * discards pass through (pass-discard-request), as with QEMU. */
        if ((t == QCOW2_CLUSTER_NORMAL || t == QCOW2_CLUSTER_ZERO_ALLOC) &&
            s->rt.discard_request) {
            bdrv_pdiscard(s->data_file, e & L2E_OFFSET_MASK, s->cluster_size);
        }
        return;
    }
    if (t == QCOW2_CLUSTER_NORMAL || t == QCOW2_CLUSTER_ZERO_ALLOC ||
        t == QCOW2_CLUSTER_COMPRESSED) {
        s->unmapped_frees++;
    }
    /* QEMU's pass-discard-request: what the guest discards (or zeroes
     * with unmap) goes back to the host once no snapshot holds it */
    release_entry(bs, e, s->rt.discard_request);
}

/* Under s->lock: the nb L2 entries from guest cluster gstart (one table,
 * loaded for writing if for_write) into old[] and their subcluster
 * bitmaps into old_bm[], and where they are. */
static int load_entries(BlockDriverState *bs, uint64_t gstart, uint64_t nb,
                        bool for_write, uint64_t *l1i, uint64_t *l2i,
                        uint64_t *old, uint64_t *old_bm)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t *l2;
    int ret;

    qcow2_split_offset(s, gstart, l1i, l2i);
    ret = qcow2_l2_load(bs, *l1i, for_write, &l2);
    if (ret < 0) {
        return ret;
    }
    for (uint64_t i = 0; i < nb; i++) {
        old[i] = qcow2_l2_get(s, l2, *l2i + i);
        old_bm[i] = qcow2_l2_bitmap(s, l2, *l2i + i);
    }
    return 0;
}

/*
 * Reads guest bytes as a reader sees them, for copy-on-write with
 * extended entries.  Called without s->lock; the caller holds free_lock
 * for reading and has the clusters reserved.
 */
static int read_view(BlockDriverState *bs, uint64_t off, uint64_t n,
                     uint8_t *buf)
{
    BDRVQcow2State *s = bs->opaque;

    while (n > 0) {
        uint64_t entry, run;
        int ret;
        g_mutex_lock(&s->lock);
        ret = qcow2_cluster_lookup(bs, off, n, true, &entry, &run);
        g_mutex_unlock(&s->lock);
        if (ret == 0) {
            ret = read_run(bs, entry, off, run, buf);
        }
        if (ret < 0) {
            return ret;
        }
        off += run;
        n -= run;
        buf += run;
    }
    return 0;
}

/*
 * Allocating write of [off, off+*n) lying in clusters that all need new
 * host clusters.  Called and returns with s->lock held; drops it for the
 * data write.  *next_host (0: none) is where the request's previous run
 * ended: the run goes on there if the clusters are free, shortened (*n)
 * to those that are, as QEMU's allocation does; else it is allocated
 * afresh.  On success *next_host is the end of this run.
 */
static int write_allocating(BlockDriverState *bs, uint64_t off, uint64_t *n,
                            const uint8_t *buf, uint64_t *next_host)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t cs = s->cluster_size;
    uint64_t bytes = *n;
    uint64_t gstart = qcow2_cluster_start(s, off);
    uint64_t gend = qcow2_align_up(off + bytes, cs);
    uint64_t nb = (gend - gstart) / cs;
    uint64_t l1i, l2i, *l2, ws, we;
    g_autofree uint64_t *old = g_new(uint64_t, nb);
    g_autofree uint64_t *old_bm = g_new(uint64_t, nb);
    Qcow2InflightAlloc me = { gstart, gend, NULL };
    int64_t host;
    uint8_t *bounce = NULL;
    const uint8_t *src = buf;
    int ret;

    ret = load_entries(bs, gstart, nb, true, &l1i, &l2i, old, old_bm);
    if (ret < 0) {
        return ret;
    }
    if (qcow2_has_data_file(s)) {
        /* The data file's cluster is the guest's own: nothing to
         * allocate, and no qcow2 metadata can be there. */
        host = (int64_t)gstart;
    } else {
        host = 0;
        if (*next_host) {
            int64_t k = qcow2_alloc_clusters_at(bs, *next_host, nb);
            if (k < 0) {
                return (int)k;
            }
            if (k > 0) {
                host = (int64_t)*next_host;
                nb = (uint64_t)k;
                gend = MIN(gend, gstart + nb * cs);
                bytes = MIN(bytes, gend - off);
            }
        }
        if (host == 0) {
            host = qcow2_alloc_clusters(bs, nb);
        }
        if (host < 0) {
            return (int)host;
        }
        *next_host = host + nb * cs;
        *n = bytes;
        /* Checked under the lock, before the data write that drops it. */
        ret = qcow2_overlap_check(bs, 0, host, nb * cs);
        if (ret < 0) {
            return ret;
        }
    }
    me.guest_end = gend;
    me.next = s->inflight;
    s->inflight = &me;
    g_mutex_unlock(&s->lock);

    /* The host write: whole clusters; with extended entries, a cluster
     * with no data of its own gets only the subclusters the data
     * touches (the others keep reading from below). */
    ws = gstart;
    we = gend;
    if (qcow2_has_subclusters(s)) {
        ws = qcow2_sc_cow_start(s, old[0], old_bm[0], off);
        we = qcow2_sc_cow_end(s, old[nb - 1], old_bm[nb - 1], off + bytes);
    }
    if (qcow2_has_subclusters(s) && (ws != off || we != off + bytes)) {
        /* completed from what readers see there now */
        if (posix_memalign((void **)&bounce, 4096, we - ws) != 0) {
            bounce = NULL;
            ret = -ENOMEM;
        }
        if (bounce) {
            bdrv_debug_event(bs->file, "cow_read");
            ret = read_view(bs, ws, off - ws, bounce);
        }
        if (bounce && ret == 0) {
            ret = read_view(bs, off + bytes, we - (off + bytes),
                            bounce + (off + bytes - ws));
        }
        if (ret == 0) {
            memcpy(bounce + (off - ws), buf, bytes);
            src = bounce;
        }
    } else if (!qcow2_has_subclusters(s) &&
               (off != gstart || off + bytes != gend)) {
        /* Partial clusters at either end are completed from the old
         * content. */
        if (posix_memalign((void **)&bounce, 4096, nb * cs) != 0) {
            bounce = NULL;
            ret = -ENOMEM;
        }
        if (bounce && off != gstart) {
            ret = cow_fill(bs, old[0], gstart, bounce);
        }
        if (bounce && ret == 0 && off + bytes != gend &&
            !(off != gstart && nb == 1)) {
            ret = cow_fill(bs, old[nb - 1], gend - cs,
                           bounce + (nb - 1) * cs);
        }
        if (ret == 0) {
            memcpy(bounce + (off - gstart), buf, bytes);
            src = bounce;
        }
    }
    if (ret == 0) {
        bdrv_debug_event(bs->file, "write_aio");
        bdrv_debug_event(bs->file, src != buf ? "cow_write" : NULL);
        ret = qcow2_data_pwrite(bs, host + (ws - gstart), ws, we - ws, src);
    }
    free(bounce);

    g_mutex_lock(&s->lock);
    if (ret == 0) {
        ret = qcow2_l2_load(bs, l1i, true, &l2);
    }
    if (ret < 0) {
        /* Nothing points at the new clusters: give them back. */
        for (uint64_t i = 0; i < nb && !qcow2_has_data_file(s); i++) {
            qcow2_free_cluster_deferred(bs, host + i * cs);
        }
        inflight_remove(s, &me);
        return ret;
    }
    for (uint64_t i = 0; i < nb; i++) {
        /* re-read: a zero write may have changed the entry meanwhile */
        uint64_t cur = qcow2_l2_get(s, l2, l2i + i);
        qcow2_l2_set(s, l2, l2i + i, (host + i * cs) | QCOW_OFLAG_COPIED);
        if (qcow2_has_subclusters(s)) {
            uint64_t bm = qcow2_l2_bitmap(s, l2, l2i + i);
            qcow2_l2_set_bitmap(s, l2, l2i + i,
                                qcow2_sc_written_bitmap(s, bm, gstart + i * cs,
                                               ws, we));
        }
        qcow2_release_entry(bs, cur);
    }
    ret = qcow2_cache_mark_dirty(s->l2_cache, l2);
    inflight_remove(s, &me);
    return ret;
}

/* A data cluster the active image alone owns (COPIED), normal or
 * preallocated zero: a write may fill it where it is. */
static bool entry_writable_in_place(BDRVQcow2State *s, uint64_t e)
{
    Qcow2ClusterType t = qcow2_entry_type(s, e);

    return (t == QCOW2_CLUSTER_NORMAL || t == QCOW2_CLUSTER_ZERO_ALLOC) &&
           (e & QCOW_OFLAG_COPIED);
}

/*
 * Under s->lock, `entry` (the one for off) being writable in place: how
 * many bytes from off (up to `bytes`, one L2 table) lie in clusters that
 * are writable in place and follow each other on the host, whatever mix
 * of normal and preallocated zero clusters they are -- so one host write
 * covers them, as with QEMU.  *zeroed: whether any of them reads as
 * zeroes.
 */
static int in_place_run(BlockDriverState *bs, uint64_t off, uint64_t bytes,
                        uint64_t entry, uint64_t *run, bool *zeroed)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t l1i, l2i, *l2, n = 1, max_clusters;
    uint64_t in_cluster = off & (s->cluster_size - 1);
    uint64_t host = entry & L2E_OFFSET_MASK;
    int ret;

    qcow2_split_offset(s, off, &l1i, &l2i);
    max_clusters = MIN(s->l2_size - l2i,
                       (in_cluster + bytes + s->cluster_size - 1) >>
                       s->cluster_bits);
    ret = qcow2_l2_load(bs, l1i, false, &l2);
    if (ret < 0) {
        return ret;
    }
    /* With extended entries, "zeroed" is any subcluster not yet reading
     * from the host cluster: the write must mark it (and complete it). */
    *zeroed = qcow2_has_subclusters(s) ?
              l2 && qcow2_l2_bitmap(s, l2, l2i) != QCOW_L2_BITMAP_ALL_ALLOC :
              !!(entry & QCOW_OFLAG_ZERO);
    for (; l2 && n < max_clusters; n++) {
        uint64_t e = qcow2_l2_get(s, l2, l2i + n);
        if (!entry_writable_in_place(s, e) ||
            (e & L2E_OFFSET_MASK) != host + (n << s->cluster_bits)) {
            break;
        }
        *zeroed |= qcow2_has_subclusters(s) ?
                   qcow2_l2_bitmap(s, l2, l2i + n) != QCOW_L2_BITMAP_ALL_ALLOC :
                   !!(e & QCOW_OFLAG_ZERO);
    }
    *run = MIN(bytes, (n << s->cluster_bits) - in_cluster);
    return 0;
}

/*
 * Writes [off, off+bytes) into host clusters from `host` (the cluster of
 * off) that in_place_run found, some of them preallocated zero clusters.
 * Those the write covers only partly get zeroes around the data, then
 * their entries lose the zero flag.  The guest clusters are reserved in
 * s->inflight meanwhile, so no other request fills or changes them.
 * Called and returns with s->lock held; drops it for the data write.
 */
static int write_zeroed_in_place(BlockDriverState *bs, uint64_t off,
                                 uint64_t bytes, uint64_t host,
                                 const uint8_t *buf)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t cs = s->cluster_size;
    uint64_t gstart = qcow2_cluster_start(s, off);
    uint64_t gend = qcow2_align_up(off + bytes, cs);
    uint64_t nb = (gend - gstart) / cs;
    uint64_t l1i, l2i, *l2, head, tail, wstart, wlen;
    uint64_t end = off + bytes, sc_mask = (1ULL << s->subcluster_bits) - 1;
    g_autofree uint64_t *old = g_new(uint64_t, nb);
    g_autofree uint64_t *old_bm = g_new(uint64_t, nb);
    g_autofree uint8_t *bounce = NULL;
    Qcow2InflightAlloc me = { gstart, gend, NULL };
    const uint8_t *src = buf;
    bool ext = qcow2_has_subclusters(s);
    int ret;

    ret = load_entries(bs, gstart, nb, false, &l1i, &l2i, old, old_bm);
    if (ret < 0) {
        return ret;
    }
    if (ext) {
        /* the rest of a subcluster the data touches and that does not
         * read from the host cluster yet: what readers see there now */
        unsigned first_sc = (off & (s->cluster_size - 1)) >>
                            s->subcluster_bits;
        unsigned last_sc = ((end - 1) & (s->cluster_size - 1)) >>
                           s->subcluster_bits;
        head = qcow2_sc_kind(old_bm[0], first_sc) != QCOW2_SC_DATA ?
               off & sc_mask : 0;
        tail = qcow2_sc_kind(old_bm[nb - 1], last_sc) != QCOW2_SC_DATA ?
               MIN(qcow2_sc_ceil(s, end), gend) - end : 0;
    } else {
        /* zeroes before and after the data, in clusters reading zeroes */
        head = (old[0] & QCOW_OFLAG_ZERO) ? off - gstart : 0;
        tail = (old[nb - 1] & QCOW_OFLAG_ZERO) ? gend - end : 0;
    }
    wstart = host + (off - gstart) - head;
    wlen = head + bytes + tail;
    ret = qcow2_has_data_file(s) ? 0 :
          qcow2_overlap_check(bs, 0, wstart, wlen);
    if (ret < 0) {
        return ret;
    }
    if (head || tail) {
        bounce = g_malloc0(wlen);
        memcpy(bounce + head, buf, bytes);
        src = bounce;
    }
    me.next = s->inflight;
    s->inflight = &me;
    g_mutex_unlock(&s->lock);

    ret = 0;
    if (ext && head) {
        ret = read_view(bs, off - head, head, bounce);
    }
    if (ext && tail && ret == 0) {
        ret = read_view(bs, end, tail, bounce + head + bytes);
    }
    if (ret == 0) {
        bdrv_debug_event(bs->file, "write_aio");
        ret = qcow2_data_pwrite(bs, wstart, off - head, wlen, src);
    }

    g_mutex_lock(&s->lock);
    if (ret == 0) {
        ret = qcow2_l2_load(bs, l1i, true, &l2);
    }
    if (ret == 0) {
        for (uint64_t i = 0; i < nb; i++) {
            /* The reservation keeps other requests off these entries; one
             * that changed anyway keeps its change (its cluster cannot be
             * reused while this request holds free_lock). */
            if (qcow2_l2_get(s, l2, l2i + i) != old[i]) {
                continue;
            }
            if (ext) {
                uint64_t bm = qcow2_l2_bitmap(s, l2, l2i + i);
                qcow2_l2_set_bitmap(s, l2, l2i + i,
                                    qcow2_sc_written_bitmap(s, bm,
                                                            gstart + i * cs,
                                                            off - head,
                                                            end + tail));
            } else {
                qcow2_l2_set(s, l2, l2i + i, old[i] & ~QCOW_OFLAG_ZERO);
            }
        }
        ret = qcow2_cache_mark_dirty(s->l2_cache, l2);
    }
    inflight_remove(s, &me);
    return ret;
}

/* Under s->lock: how many bytes from off need allocation (same L2 table). */
static int alloc_run(BlockDriverState *bs, uint64_t off, uint64_t bytes,
                     uint64_t *run)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t l1i, l2i, *l2, n = 0, max;
    uint64_t in_cluster = off & (s->cluster_size - 1);
    int ret;

    qcow2_split_offset(s, off, &l1i, &l2i);
    max = MIN(s->l2_size - l2i, (in_cluster + bytes + s->cluster_size - 1) >>
                                s->cluster_bits);
    max = MIN(max, MAX(1, QCOW2_MAX_ALLOC_CHUNK / s->cluster_size));
    ret = qcow2_l2_load(bs, l1i, false, &l2);
    if (ret < 0) {
        return ret;
    }
    if (!l2) {
        n = max;
    } else if (!(s->l1_table[l1i] & QCOW_OFLAG_COPIED)) {
        n = max;  /* shared table: every entry is shared too */
    } else {
        while (n < max &&
               !entry_writable_in_place(s, qcow2_l2_get(s, l2, l2i + n))) {
            n++;
        }
    }
    *run = MIN(bytes, (n << s->cluster_bits) - in_cluster);
    return 0;
}

int qcow2_pwrite(BlockDriverState *bs, int64_t offset, int64_t bytes,
                 const void *buf)
{
    BDRVQcow2State *s = bs->opaque;

    if ((uint64_t)offset + bytes > s->size) {
        return -EIO;
    }
    return qcow2_pwrite_any(bs, offset, bytes, buf);
}

int qcow2_pwrite_any(BlockDriverState *bs, int64_t offset, int64_t bytes,
                     const void *buf)
{
    BDRVQcow2State *s = bs->opaque;
    const uint8_t *p = buf;
    uint64_t next_host = 0;  /* where the last run ended on the host */
    int ret = 0;

    if (qcow2_data_unavailable(s)) {
        return -EIO;
    }
    g_rw_lock_reader_lock(&s->free_lock);
    g_mutex_lock(&s->lock);
    while (bytes > 0) {
        uint64_t entry, n;
        bool continue_run = false;
        ret = qcow2_cluster_lookup(bs, offset, bytes, false, &entry, &n);
        if (ret < 0) {
            break;
        }
        bool zeroed = false;
        if (entry_writable_in_place(s, entry) &&
            (s->l1_table[offset >> (s->cluster_bits + s->l2_bits)] &
             QCOW_OFLAG_COPIED)) {
            ret = in_place_run(bs, offset, bytes, entry, &n, &zeroed);
        }
        if (ret < 0) {
            break;
        }
        if (entry_writable_in_place(s, entry) &&
            (s->l1_table[offset >> (s->cluster_bits + s->l2_bits)] &
             QCOW_OFLAG_COPIED)) {
            /* an allocation right after goes on from here, as QEMU's */
            next_host = (entry & L2E_OFFSET_MASK) +
                        qcow2_align_up((offset & (s->cluster_size - 1)) + n,
                                       s->cluster_size);
            continue_run = true;
        }
        if (zeroed) {
            uint64_t gs = qcow2_cluster_start(s, offset);
            if (inflight_overlaps(s, gs, qcow2_align_up(offset + n,
                                                        s->cluster_size))) {
                wait_inflight(s);
                continue; /* the mapping may have changed: look again */
            }
            ret = write_zeroed_in_place(bs, offset, n,
                                        entry & L2E_OFFSET_MASK, p);
            if (ret < 0) {
                break;
            }
        } else if (entry_writable_in_place(s, entry) &&
            (s->l1_table[offset >> (s->cluster_bits + s->l2_bits)] &
             QCOW_OFLAG_COPIED)) {
            uint64_t host = (entry & L2E_OFFSET_MASK) +
                            (offset & (s->cluster_size - 1));
            /* Guest data over metadata: the entry is corrupt.  (The
             * data file holds no metadata.) */
            ret = qcow2_has_data_file(s) ? 0 :
                  qcow2_overlap_check(bs, 0, host, n);
            if (ret < 0) {
                break;
            }
            g_mutex_unlock(&s->lock);
            bdrv_debug_event(bs->file, "write_aio");
            ret = qcow2_data_pwrite(bs, host, offset, n, p);
            g_mutex_lock(&s->lock);
            if (ret < 0) {
                break;
            }
        } else {
            uint64_t gs = qcow2_cluster_start(s, offset);
            ret = alloc_run(bs, offset, bytes, &n);
            if (ret < 0) {
                break;
            }
            if (inflight_overlaps(s, gs, qcow2_align_up(offset + n,
                                                        s->cluster_size))) {
                wait_inflight(s);
                continue; /* the mapping may have changed: look again */
            }
            if (qcow2_reclaim_pays(bs, (qcow2_align_up(offset + n,
                                                       s->cluster_size) -
                                        gs) >> s->cluster_bits)) {
                g_mutex_unlock(&s->lock);
                g_rw_lock_reader_unlock(&s->free_lock);
                ret = qcow2_reclaim_frees(bs);
                g_rw_lock_reader_lock(&s->free_lock);
                g_mutex_lock(&s->lock);
                if (ret < 0) {
                    break;
                }
                continue; /* same reason */
            }
            ret = write_allocating(bs, offset, &n, p, &next_host);
            if (ret < 0) {
                break;
            }
            continue_run = true;
        }
        if (!continue_run) {
            next_host = 0;
        }
        offset += n;
        bytes -= n;
        p += n;
    }
    g_mutex_unlock(&s->lock);
    g_rw_lock_reader_unlock(&s->free_lock);
    return ret;
}

int qcow2_block_status(BlockDriverState *bs, int64_t offset, int64_t bytes,
                       int64_t *pnum, int64_t *map, BlockDriverState **file)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t entry, n;
    int ret;

    if (s->data_file_skipped) {
        return -EIO;
    }
    g_mutex_lock(&s->lock);
    ret = qcow2_cluster_lookup(bs, offset, bytes, true, &entry, &n);
    g_mutex_unlock(&s->lock);
    if (ret < 0) {
        return ret;
    }
    *pnum = n;
    switch (qcow2_view_type(s, entry)) {
    case QCOW2_CLUSTER_UNALLOCATED:
        if ((entry & L2E_OFFSET_MASK) && !s->crypt_method) {
            /* a subcluster of a host cluster that reads from below: QEMU
             * names the place it would take without calling it ours */
            *map = (entry & L2E_OFFSET_MASK) +
                   (offset & (s->cluster_size - 1));
            *file = qcow2_data(bs);
            return BDRV_BLOCK_OFFSET_VALID;
        }
        return 0;
    case QCOW2_CLUSTER_ZERO_PLAIN:
        return BDRV_BLOCK_ZERO | BDRV_BLOCK_ALLOCATED;
    case QCOW2_CLUSTER_ZERO_ALLOC:
        if (s->crypt_method) {
            /* as QEMU: the file's bytes there are not the guest's */
            return BDRV_BLOCK_ZERO | BDRV_BLOCK_ALLOCATED;
        }
        *map = (entry & L2E_OFFSET_MASK) + (offset & (s->cluster_size - 1));
        *file = qcow2_data(bs);
        return BDRV_BLOCK_ZERO | BDRV_BLOCK_ALLOCATED | BDRV_BLOCK_OFFSET_VALID;
    case QCOW2_CLUSTER_COMPRESSED:
        return BDRV_BLOCK_DATA | BDRV_BLOCK_ALLOCATED | BDRV_BLOCK_COMPRESSED;
    case QCOW2_CLUSTER_NORMAL:
    default:
        if (s->crypt_method) {
            return BDRV_BLOCK_DATA | BDRV_BLOCK_ALLOCATED;
        }
        *map = (entry & L2E_OFFSET_MASK) + (offset & (s->cluster_size - 1));
        *file = qcow2_data(bs);
        return BDRV_BLOCK_DATA | BDRV_BLOCK_ALLOCATED | BDRV_BLOCK_OFFSET_VALID;
    }
}

/*
 * Grows the active L1 table to min_size entries: the new table goes to new
 * clusters, then one 12-byte header write switches to it; the old table is
 * freed afterwards.  Under s->lock.
 */
int qcow2_grow_l1_table(BlockDriverState *bs, uint64_t min_size)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t bytes = min_size * 8;
    uint64_t old_off = s->l1_table_offset;
    uint64_t old_clusters = qcow2_align_up((uint64_t)s->l1_size * 8,
                                           s->cluster_size) / s->cluster_size;
    g_autofree uint64_t *t = NULL;
    uint8_t hdr[12];
    int64_t new_off;
    int ret;

    if (min_size <= s->l1_size) {
        return 0;
    }
    if (bytes > QCOW2_MAX_L1_BYTES) {
        return -EFBIG;
    }
    bdrv_debug_event(bs->file, "l1_grow_alloc_table");
    new_off = qcow2_alloc_clusters(bs, qcow2_align_up(bytes, s->cluster_size) /
                                   s->cluster_size);
    if (new_off < 0) {
        return (int)new_off;
    }
    t = g_malloc0(bytes);
    for (uint32_t i = 0; i < s->l1_size; i++) {
        t[i] = GUINT64_TO_BE(s->l1_table[i]);
    }
    bdrv_debug_event(bs->file, "l1_grow_write_table");
    ret = qcow2_overlap_pwrite(bs, 0, new_off, bytes, t);
    if (ret == 0) {
        ret = qcow2_cache_write(bs, s->refcount_cache);
    }
    if (ret == 0) {
        ret = bdrv_flush(bs->file);
    }
    if (ret < 0) {
        goto fail;
    }
    uint32_t be_size = GUINT32_TO_BE((uint32_t)min_size);
    uint64_t be_off = GUINT64_TO_BE((uint64_t)new_off);
    memcpy(hdr, &be_size, 4);
    memcpy(hdr + 4, &be_off, 8);
    bdrv_debug_event(bs->file, "l1_grow_activate_table");
    ret = qcow2_write_header_bytes(bs, QCOW2_HDR_L1_OFF, hdr, 12);
    if (ret < 0) {
        goto fail;
    }
    for (uint64_t i = 0; i < min_size; i++) {
        t[i] = GUINT64_FROM_BE(t[i]);
    }
    g_free(s->l1_table);
    s->l1_table = g_steal_pointer(&t);
    s->l1_size = min_size;
    s->l1_table_offset = new_off;
    for (uint64_t c = 0; c < old_clusters && old_off; c++) {
        qcow2_free_cluster_for(bs, old_off + c * s->cluster_size,
                               QCOW2_FREE_OTHER);
    }
    return 0;

fail:
    for (uint64_t c = 0; c < qcow2_align_up(bytes, s->cluster_size) /
         s->cluster_size; c++) {
        qcow2_free_cluster_deferred(bs, new_off + c * s->cluster_size);
    }
    return ret;
}

/* Allocates L2 tables and data clusters for [offset, offset+bytes) without
 * writing data (preallocation=metadata), and grows the file to hold them;
 * with file_end, leaves the file as it is and says where it must end (the
 * caller reserves the space: see preallocate_data in qcow2-create.c).
 * Under s->lock. */
int qcow2_preallocate_metadata(BlockDriverState *bs, uint64_t offset,
                               uint64_t bytes, uint64_t *file_end)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t cs = s->cluster_size;
    uint64_t end = qcow2_align_up(offset + bytes, cs);
    uint64_t req_end = offset + bytes;
    uint64_t host_end = 0;
    int ret;

    offset = qcow2_cluster_start(s, offset);
    while (offset < end) {
        uint64_t l1i, l2i, *l2, n;
        int64_t host;
        qcow2_split_offset(s, offset, &l1i, &l2i);
        n = MIN((end - offset) / cs, s->l2_size - l2i);
        ret = qcow2_l2_load(bs, l1i, true, &l2);
        if (ret < 0) {
            return ret;
        }
        /* only the entries still empty get a cluster: an allocated one
         * (the old end's, on a resize) keeps its own */
        uint64_t need = 0, k = 0;
        for (uint64_t i = 0; i < n; i++) {
            need += qcow2_l2_get(s, l2, l2i + i) == 0;
        }
        if (!need) {
            offset += n * cs;
            continue;
        }
        if (qcow2_has_data_file(s)) {
            /* each guest cluster maps to itself in the data file */
            for (uint64_t i = 0; i < n; i++) {
                if (qcow2_l2_get(s, l2, l2i + i) == 0) {
                    qcow2_l2_set(s, l2, l2i + i,
                                 (offset + i * cs) | QCOW_OFLAG_COPIED);
                }
            }
            ret = qcow2_cache_mark_dirty(s->l2_cache, l2);
            if (ret < 0) {
                return ret;
            }
            host_end = MAX(host_end, offset + n * cs);
            offset += n * cs;
            continue;
        }
        host = qcow2_alloc_clusters(bs, need);
        if (host < 0) {
            return (int)host;
        }
        /* the table may have been evicted while allocating */
        ret = qcow2_l2_load(bs, l1i, true, &l2);
        if (ret < 0) {
            return ret;
        }
        for (uint64_t i = 0; i < n; i++) {
            /* (with extended entries the bitmap stays: the cluster is
             * reserved, its subclusters read as before, as in QEMU) */
            if (qcow2_l2_get(s, l2, l2i + i) == 0 && k < need) {
                uint64_t e = (host + k * cs) | QCOW_OFLAG_COPIED;
                qcow2_l2_set(s, l2, l2i + i, e);
                k++;
            }
        }
        while (k < need) {
            qcow2_free_cluster_deferred(bs, host + k++ * cs);
        }
        ret = qcow2_cache_mark_dirty(s->l2_cache, l2);
        if (ret < 0) {
            return ret;
        }
        host_end = MAX(host_end, host + need * cs);
        /* With extended entries QEMU extends the file only to the end of
         * the subcluster holding the request's last byte, when that
         * cluster is the one allocated last here. */
        if (qcow2_has_subclusters(s) && offset + n * cs == end &&
            host_end == host + need * cs &&
            qcow2_l2_get(s, l2, l2i + n - 1) ==
            ((host + (need - 1) * cs) | QCOW_OFLAG_COPIED)) {
            uint64_t sc = 1ULL << s->subcluster_bits;
            host_end -= cs - qcow2_align_up(req_end - (end - cs), sc);
        }
        offset += n * cs;
    }
    /* A last cluster that was allocated already (a grow inside it): with
     * extended entries the file must still reach the end of the
     * subcluster holding the request's last byte, as QEMU's does. */
    if (qcow2_has_subclusters(s) && !qcow2_has_data_file(s) && req_end) {
        uint64_t e, cstart = qcow2_cluster_start(s, req_end - 1);
        ret = qcow2_l2_entry_get(bs, req_end - 1, false, &e, NULL);
        if (ret < 0) {
            return ret;
        }
        if (qcow2_entry_type(s, e) == QCOW2_CLUSTER_NORMAL) {
            host_end = MAX(host_end, (e & L2E_OFFSET_MASK) +
                                     qcow2_sc_ceil(s, req_end - cstart));
        }
    }
    /* The data file ends at the disk's end, not at a cluster's. */
    if (qcow2_has_data_file(s)) {
        host_end = MIN(host_end, req_end);
    }
    if (file_end) {
        *file_end = host_end;
    } else if (host_end &&
               (int64_t)host_end > bdrv_getlength(qcow2_data(bs))) {
        GError *err = NULL;
        ret = bdrv_truncate(qcow2_data(bs), host_end, &err);
        g_clear_error(&err);
        if (ret < 0) {
            return ret;
        }
    }
    return qcow2_write_back_metadata(bs);
}

/* ---- For qcow2-compress.c: one L2 entry and the in-flight list ---- */

int qcow2_l2_entry_get(BlockDriverState *bs, uint64_t off, bool for_write,
                       uint64_t *entry, uint64_t *bitmap)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t l1i, l2i, *l2, run;
    int ret;

    if (!for_write) {
        g_assert(!bitmap);
        return qcow2_cluster_lookup(bs, off, 1, false, entry, &run);
    }
    qcow2_split_offset(s, off, &l1i, &l2i);
    ret = qcow2_l2_load(bs, l1i, true, &l2);
    if (ret == 0) {
        *entry = qcow2_l2_get(s, l2, l2i);
        if (bitmap) {
            *bitmap = qcow2_l2_bitmap(s, l2, l2i);
        }
    }
    return ret;
}

int qcow2_l2_entry_set(BlockDriverState *bs, uint64_t off, uint64_t entry,
                       uint64_t bitmap)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t l1i, l2i, *l2, old;
    int ret;

    qcow2_split_offset(s, off, &l1i, &l2i);
    ret = qcow2_l2_load(bs, l1i, true, &l2);
    if (ret < 0) {
        return ret;
    }
    old = qcow2_l2_get(s, l2, l2i);
    qcow2_l2_set(s, l2, l2i, entry);
    if (qcow2_has_subclusters(s)) {
        qcow2_l2_set_bitmap(s, l2, l2i, bitmap);
    }
    qcow2_release_entry(bs, old);
    return qcow2_cache_mark_dirty(s->l2_cache, l2);
}

bool qcow2_inflight_overlaps(BDRVQcow2State *s, uint64_t start, uint64_t end)
{
    return inflight_overlaps(s, start, end);
}

void qcow2_inflight_wait(BDRVQcow2State *s)
{
    wait_inflight(s);
}

void qcow2_inflight_remove(BDRVQcow2State *s, Qcow2InflightAlloc *a)
{
    inflight_remove(s, a);
}
