/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * qcow2 zero writes and discards: whole clusters become zero or
 * unallocated entries (per subcluster with extended L2 entries, by QEMU's
 * rules), partial ones are written as zeroed data; discards release what
 * the entries held, and a shrink unmaps the clusters past the new end.
 * Mapping, table loading and releasing are qcow2-cluster.c's.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "qcow2.h"

/*
 * zero_clusters for entry i of an extended table: every subcluster reads
 * as zeroes; the host cluster stays unless the write may unmap it (a
 * compressed one always goes), as QEMU does.  True if it changed.
 */
static bool zero_ext_cluster(BlockDriverState *bs, uint64_t *l2, uint64_t i,
                             bool unmap)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t e = qcow2_l2_get(s, l2, i);
    Qcow2ClusterType t = qcow2_entry_type(s, e);
    bool drop = t == QCOW2_CLUSTER_COMPRESSED ||
                (unmap && t != QCOW2_CLUSTER_UNALLOCATED);
    uint64_t ne = drop ? 0 : e;

    if (ne == e && qcow2_l2_bitmap(s, l2, i) == QCOW_L2_BITMAP_ALL_ZEROES) {
        return false;
    }
    qcow2_l2_set(s, l2, i, ne);
    qcow2_l2_set_bitmap(s, l2, i, QCOW_L2_BITMAP_ALL_ZEROES);
    if (drop) {
        qcow2_release_unmapped(bs, e);
    }
    return true;
}

/* Sets full clusters [off, off+bytes) to read as zeroes (v3), or drops
 * them (v2 without backing). */
static int zero_clusters(BlockDriverState *bs, uint64_t off, uint64_t bytes,
                         int flags)
{
    BDRVQcow2State *s = bs->opaque;
    bool unmap = !!(flags & BDRV_REQ_MAY_UNMAP), changed;
    int ret = 0;

    /* A raw data file must read what the guest reads: zeroes there
     * first, then the entries. */
    if (qcow2_data_file_raw(s)) {
        ret = bdrv_pwrite_zeroes(s->data_file, off,
                                 MIN(bytes, s->size - off), flags);
        if (ret < 0) {
            return ret;
        }
    }
    g_mutex_lock(&s->lock);
    while (bytes > 0) {
        uint64_t l1i, l2i, *l2, n;
        qcow2_split_offset(s, off, &l1i, &l2i);
        n = MIN(bytes >> s->cluster_bits, s->l2_size - l2i);
        if (qcow2_inflight_overlaps(s, off, off + (n << s->cluster_bits))) {
            qcow2_inflight_wait(s);
            continue;
        }
        if (s->version < 3 && (l1i >= s->l1_size || !s->l1_table[l1i])) {
            off += n << s->cluster_bits;   /* nothing allocated: zeroes */
            bytes -= n << s->cluster_bits;
            continue;
        }
        ret = qcow2_l2_load(bs, l1i, true, &l2);
        if (ret < 0) {
            break;
        }
        changed = false;
        for (uint64_t i = 0; i < n && qcow2_has_subclusters(s); i++) {
            changed |= zero_ext_cluster(bs, l2, l2i + i, unmap);
        }
        for (uint64_t i = 0; i < n && !qcow2_has_subclusters(s); i++) {
            uint64_t e = qcow2_l2_get(s, l2, l2i + i);
            Qcow2ClusterType t = qcow2_entry_type(s, e);
            uint64_t ne;
            if (s->version < 3) {
                ne = 0;
            } else if ((t == QCOW2_CLUSTER_NORMAL ||
                        t == QCOW2_CLUSTER_ZERO_ALLOC) &&
                       (e & QCOW_OFLAG_COPIED) && !unmap) {
                ne = e | QCOW_OFLAG_ZERO; /* keep the cluster, read zeroes */
            } else {
                ne = QCOW_OFLAG_ZERO;
            }
            if (ne == e) {
                continue;
            }
            if ((ne & L2E_OFFSET_MASK) == 0) {
                qcow2_release_unmapped(bs, e);
            }
            qcow2_l2_set(s, l2, l2i + i, ne);
            changed = true;
        }
        /* a table that already said all this is not written again */
        ret = changed ? qcow2_cache_mark_dirty(s->l2_cache, l2) : 0;
        if (ret < 0) {
            break;
        }
        off += n << s->cluster_bits;
        bytes -= n << s->cluster_bits;
    }
    g_mutex_unlock(&s->lock);
    return ret;
}

static int write_zero_bytes(BlockDriverState *bs, uint64_t off, uint64_t n)
{
    g_autofree uint8_t *z = g_malloc0(n);

    return qcow2_pwrite(bs, off, n, z);
}

/*
 * QEMU's policy for a zero write that covers only part of a cluster: if
 * the cluster reads as zeroes already (unallocated without a backing
 * file, or a zero cluster), the whole cluster becomes a zero cluster (v3;
 * v2 leaves it unallocated) instead of a new data cluster of zero bytes.
 * *done false: the cluster holds other data, zero bytes must be written.
 */
/* The backing chain reads as zeroes over [off, off + len). */
static bool backing_reads_zero(BlockDriverState *bs, int64_t off, int64_t len)
{
    int64_t blen = bdrv_getlength(bs->backing);

    if (blen < 0) {
        return false;
    }
    len = off >= blen ? 0 : MIN(len, blen - off);
    while (len > 0) {
        int64_t pnum = 0, map = 0;
        BlockDriverState *file = NULL;
        int depth = 0;
        int st = bdrv_block_status_above(bs->backing, off, len, &pnum, &map,
                                         &file, &depth);
        if (st < 0 || !(st & BDRV_BLOCK_ZERO) || pnum <= 0) {
            return false;
        }
        off += pnum;
        len -= pnum;
    }
    return true;
}

static int zero_partial_cluster(BlockDriverState *bs, uint64_t off,
                                uint64_t n, bool *done)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t cstart = qcow2_cluster_start(s, off);
    uint64_t cend = cstart + s->cluster_size;
    uint64_t e = 0, run, l1i, l2i, *l2;
    Qcow2ClusterType t;
    int ret;

    *done = false;
    g_mutex_lock(&s->lock);
    while (qcow2_inflight_overlaps(s, cstart, cstart + s->cluster_size)) {
        qcow2_inflight_wait(s);
    }
    ret = qcow2_cluster_lookup(bs, cstart, s->cluster_size, true, &e, &run);
    t = qcow2_entry_type(s, e);
    /* With a backing file, only the rest of the cluster (outside the
     * zeroed part) must read as zeroes there, as QEMU asks. */
    if (ret == 0 && (t == QCOW2_CLUSTER_ZERO_PLAIN ||
                     t == QCOW2_CLUSTER_ZERO_ALLOC ||
                     (t == QCOW2_CLUSTER_UNALLOCATED &&
                      (!bs->backing ||
                       (s->version >= 3 &&
                        backing_reads_zero(bs, cstart, off - cstart) &&
                        backing_reads_zero(bs, off + n, cend - off - n)))))) {
        *done = true;
        /* the guest reads zeroes in all of it: so must a raw data file */
        if (qcow2_data_file_raw(s)) {
            ret = bdrv_pwrite_zeroes(s->data_file, cstart,
                                     MIN(cend, s->size) - cstart, 0);
        }
        if (ret == 0 && t == QCOW2_CLUSTER_UNALLOCATED && s->version >= 3) {
            qcow2_split_offset(s, cstart, &l1i, &l2i);
            ret = qcow2_l2_load(bs, l1i, true, &l2);
            if (ret == 0) {
                l2[l2i] = GUINT64_TO_BE(QCOW_OFLAG_ZERO);
                ret = qcow2_cache_mark_dirty(s->l2_cache, l2);
            }
        }
    }
    g_mutex_unlock(&s->lock);
    return ret;
}

/* Zeroes [off, off + n) inside one cluster. */
static int zero_partial(BlockDriverState *bs, uint64_t off, uint64_t n)
{
    bool done;
    int ret = zero_partial_cluster(bs, off, n, &done);

    if (ret < 0 || done) {
        return ret;
    }
    return write_zero_bytes(bs, off, n);
}

/* ---- Zero writes with extended entries: per subcluster, as QEMU ---- */

/* Under s->lock: subclusters [a, b) of one cluster (a subcluster aligned,
 * b too or the cluster's end) read as zeroes.  -ENOTSUP for a compressed
 * cluster, whose bitmap must stay 0. */
static int zero_subclusters(BlockDriverState *bs, uint64_t a, uint64_t b)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t cstart = qcow2_cluster_start(s, a), l1i, l2i, *l2, bm, bits;
    int ret;

    qcow2_split_offset(s, a, &l1i, &l2i);
    ret = qcow2_l2_load(bs, l1i, true, &l2);
    if (ret < 0) {
        return ret;
    }
    if (qcow2_entry_type(s, qcow2_l2_get(s, l2, l2i)) ==
        QCOW2_CLUSTER_COMPRESSED) {
        return -ENOTSUP;
    }
    bm = qcow2_l2_bitmap(s, l2, l2i);
    bits = qcow2_sc_range_bits((a - cstart) >> s->subcluster_bits,
                         qcow2_sc_ceil(s, b - cstart) >> s->subcluster_bits);
    if (((bm | (bits << 32)) & ~bits) == bm) {
        return 0;
    }
    qcow2_l2_set_bitmap(s, l2, l2i, (bm | (bits << 32)) & ~bits);
    return qcow2_cache_mark_dirty(s->l2_cache, l2);
}

/*
 * Zeroes [a, b): whole subclusters (b may be the last cluster's end).  A
 * compressed cluster it covers only partly makes it write zero bytes over
 * the whole range instead, as QEMU falls back for the whole request.
 */
static int zero_aligned(BlockDriverState *bs, uint64_t a, uint64_t b,
                        int flags)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t cs = s->cluster_size, start = a;
    int ret = 0;

    while (a < b && ret == 0) {
        uint64_t cstart = qcow2_cluster_start(s, a), pe;
        if (a == cstart && b - a >= cs) {
            pe = a + (b - a) / cs * cs;
            ret = zero_clusters(bs, a, pe - a, flags);
            a = pe;
            continue;
        }
        pe = MIN(b, cstart + cs);
        if (qcow2_data_file_raw(s)) {
            ret = bdrv_pwrite_zeroes(s->data_file, a, MIN(pe, s->size) - a,
                                     flags);
            if (ret < 0) {
                break;
            }
        }
        g_mutex_lock(&s->lock);
        while (qcow2_inflight_overlaps(s, cstart, cstart + cs)) {
            qcow2_inflight_wait(s);
        }
        ret = zero_subclusters(bs, a, pe);
        g_mutex_unlock(&s->lock);
        if (ret == -ENOTSUP) {
            return write_zero_bytes(bs, start, MIN(b, s->size) - start);
        }
        a = pe;
    }
    return ret;
}

/*
 * Zeroes [off, off + n) inside one subcluster.  QEMU's rule: if the rest
 * of the subcluster reads as zeroes already and it does not read from the
 * host cluster, the whole subcluster becomes a zero one; otherwise zero
 * bytes are written.
 */
static int zero_sc_piece(BlockDriverState *bs, uint64_t off, uint64_t n)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t scs = 1ULL << s->subcluster_bits;
    uint64_t sc = qcow2_sc_floor(s, off), end = off + n;
    uint64_t cstart = qcow2_cluster_start(s, off);
    uint64_t tail = end == s->size ? 0 : sc + scs - end;
    uint64_t e = 0, run;
    Qcow2ClusterType t;
    bool whole = false;
    int ret;

    g_mutex_lock(&s->lock);
    while (qcow2_inflight_overlaps(s, cstart, cstart + s->cluster_size)) {
        qcow2_inflight_wait(s);
    }
    ret = qcow2_cluster_lookup(bs, sc, scs, true, &e, &run);
    t = qcow2_view_type(s, e);
    if (ret == 0 &&
        (t == QCOW2_CLUSTER_ZERO_PLAIN || t == QCOW2_CLUSTER_ZERO_ALLOC ||
         (t == QCOW2_CLUSTER_UNALLOCATED &&
          (!bs->backing || (backing_reads_zero(bs, sc, off - sc) &&
                            backing_reads_zero(bs, end, tail)))))) {
        whole = true;
        if (qcow2_data_file_raw(s)) {
            ret = bdrv_pwrite_zeroes(s->data_file, sc,
                                     MIN(sc + scs, s->size) - sc, 0);
        }
        if (ret == 0) {
            ret = zero_subclusters(bs, sc, MIN(sc + scs,
                                               cstart + s->cluster_size));
        }
    }
    g_mutex_unlock(&s->lock);
    if (ret < 0 || whole) {
        return ret;
    }
    return write_zero_bytes(bs, off, n);
}

static int zero_ext(BlockDriverState *bs, uint64_t offset, uint64_t bytes,
                    int flags)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t scs = 1ULL << s->subcluster_bits, end = offset + bytes;
    uint64_t a = qcow2_sc_ceil(s, offset);
    /* the last subcluster counts as whole when the image ends inside it
     * (not the last cluster: QEMU zeroes per subcluster there too) */
    uint64_t b = end == s->size ? qcow2_sc_ceil(s, end)
                                : qcow2_sc_floor(s, end);
    int ret = 0;

    if (a >= b) {
        if (offset / scs == (end - 1) / scs) {
            return zero_sc_piece(bs, offset, bytes);
        }
        ret = zero_sc_piece(bs, offset, a - offset);
        return ret < 0 ? ret : zero_sc_piece(bs, a, end - a);
    }
    if (offset < a) {
        ret = zero_sc_piece(bs, offset, a - offset);
    }
    if (ret == 0) {
        ret = zero_aligned(bs, a, b, flags);
    }
    if (ret == 0 && end > b) {
        ret = zero_sc_piece(bs, b, end - b);
    }
    return ret;
}

int qcow2_pwrite_zeroes(BlockDriverState *bs, int64_t offset, int64_t bytes,
                        int flags)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t cs = s->cluster_size;
    uint64_t end = offset + bytes;
    uint64_t a, b;
    int ret;

    if (end > s->size || qcow2_data_unavailable(s)) {
        return -EIO;
    }
    if (s->version < 3 && bs->backing) {
        return -ENOTSUP;  /* v2 cannot mask backing data: write zeroes */
    }
    if (qcow2_has_subclusters(s)) {
        return zero_ext(bs, offset, bytes, flags);
    }
    /* The last cluster counts as whole when the image ends inside it. */
    a = qcow2_align_up(offset, cs);
    b = end == s->size ? qcow2_align_up(end, cs) : end / cs * cs;
    if (a >= b) {
        /* no whole cluster: one piece, or a head and a tail */
        if ((uint64_t)offset / cs == (end - 1) / cs) {
            return zero_partial(bs, offset, bytes);
        }
        ret = zero_partial(bs, offset, a - offset);
        return ret < 0 ? ret : zero_partial(bs, a, end - a);
    }
    if ((uint64_t)offset < a) {
        ret = zero_partial(bs, offset, a - offset);
        if (ret < 0) {
            return ret;
        }
    }
    ret = zero_clusters(bs, a, b - a, flags);
    if (ret == 0 && end > b) {
        ret = zero_partial(bs, b, end - b);
    }
    return ret;
}

int qcow2_pdiscard(BlockDriverState *bs, int64_t offset, int64_t bytes)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t cs = s->cluster_size;
    uint64_t end = MIN((uint64_t)offset + bytes, s->size);
    uint64_t a = qcow2_align_up(offset, cs);
    uint64_t b = end == s->size ? qcow2_align_up(end, cs) : end / cs * cs;
    int ret = 0;

    if (s->data_file_skipped) {
        return -EIO;
    }
    if (a >= b) {
        return 0; /* discard is advisory: partial clusters are kept */
    }
    if (s->version < 3 && bs->backing) {
        return 0;
    }
    /* Discarded clusters read zeroes (v3): a raw data file must agree
     * (data-file-raw promises a consistent raw image). */
    if (qcow2_data_file_raw(s)) {
        ret = bdrv_pwrite_zeroes(s->data_file, a, MIN(b, s->size) - a, 0);
        if (ret < 0) {
            return ret;
        }
    }
    g_mutex_lock(&s->lock);
    while (a < b) {
        uint64_t l1i, l2i, *l2, n;
        qcow2_split_offset(s, a, &l1i, &l2i);
        n = MIN((b - a) >> s->cluster_bits, s->l2_size - l2i);
        if (qcow2_inflight_overlaps(s, a, a + (n << s->cluster_bits))) {
            qcow2_inflight_wait(s);
            continue;
        }
        /* v3 with a backing file must mask the backing data even where
         * no L2 table exists yet; otherwise only existing tables change. */
        if ((l1i < s->l1_size && s->l1_table[l1i]) ||
            (s->version >= 3 && bs->backing)) {
            ret = qcow2_l2_load(bs, l1i, true, &l2);
            if (ret < 0) {
                break;
            }
            bool changed = false;
            for (uint64_t i = 0; i < n; i++) {
                uint64_t e = qcow2_l2_get(s, l2, l2i + i);
                uint64_t bm = qcow2_l2_bitmap(s, l2, l2i + i);
                /* like QEMU: v3 marks discarded clusters as zero unless
                 * they were unallocated with nothing below to mask */
                uint64_t ne = (s->version >= 3 &&
                               (bs->backing || e != 0)) ? QCOW_OFLAG_ZERO : 0;
                uint64_t nbm = bm;
                if (qcow2_has_subclusters(s)) {
                    /* the bitmap says it; an entry reading from nothing
                     * below stays as it is */
                    ne = 0;
                    if (bs->backing || qcow2_entry_has_data(s, e)) {
                        nbm = QCOW_L2_BITMAP_ALL_ZEROES;
                    } else {
                        ne = e;
                    }
                }
                if (e != ne || bm != nbm) {
                    qcow2_release_unmapped(bs, e);
                    qcow2_l2_set(s, l2, l2i + i, ne);
                    if (qcow2_has_subclusters(s)) {
                        qcow2_l2_set_bitmap(s, l2, l2i + i, nbm);
                    }
                    changed = true;
                }
            }
            ret = changed ? qcow2_cache_mark_dirty(s->l2_cache, l2) : 0;
            if (ret < 0) {
                break;
            }
        }
        a += n << s->cluster_bits;
    }
    g_mutex_unlock(&s->lock);
    return ret;
}

/*
 * For a shrink (qcow2-resize.c): the entries of [offset, offset+bytes),
 * cluster aligned, become unallocated and what they held is released
 * (deferred); a missing L2 table stays missing, a shared one is copied
 * first.  Under s->lock.
 */
int qcow2_discard_unmap(BlockDriverState *bs, uint64_t offset, uint64_t bytes)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t end = offset + bytes;

    while (offset < end) {
        uint64_t l1i, l2i, *l2, n;
        int ret;

        qcow2_split_offset(s, offset, &l1i, &l2i);
        n = MIN((end - offset) >> s->cluster_bits, s->l2_size - l2i);
        if (l1i < s->l1_size && (s->l1_table[l1i] & L1E_OFFSET_MASK)) {
            ret = qcow2_l2_load(bs, l1i, true, &l2);
            if (ret < 0) {
                return ret;
            }
            for (uint64_t i = 0; i < n; i++) {
                qcow2_release_entry(bs, qcow2_l2_get(s, l2, l2i + i));
                qcow2_l2_set(s, l2, l2i + i, 0);
                if (qcow2_has_subclusters(s)) {
                    qcow2_l2_set_bitmap(s, l2, l2i + i, 0);
                }
            }
            ret = qcow2_cache_mark_dirty(s->l2_cache, l2);
            if (ret < 0) {
                return ret;
            }
        }
        offset += n << s->cluster_bits;
    }
    return 0;
}
