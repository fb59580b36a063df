/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Extended L2 entries: what a cluster's subcluster bitmap says (validity,
 * the standard entry a subcluster reads like, runs of alike subclusters)
 * and QEMU's rules for the bitmap and copy range of a write.  The I/O
 * that uses them is in qcow2-cluster.c.
 */
#include "qcow2.h"

int qcow2_sc_kind(uint64_t bitmap, unsigned sc)
{
    if (bitmap & (1ULL << sc)) {
        return QCOW2_SC_DATA;
    }
    return (bitmap & (1ULL << (32 + sc))) ? QCOW2_SC_ZERO : QCOW2_SC_BACKING;
}

/* The bitmap of a cluster whose subclusters all read as `kind`. */
static uint64_t uniform_bitmap(int kind)
{
    return kind == QCOW2_SC_DATA ? QCOW_L2_BITMAP_ALL_ALLOC :
           kind == QCOW2_SC_ZERO ? QCOW_L2_BITMAP_ALL_ZEROES : 0;
}

/* Bits of subclusters [from, to) of one cluster: allocation bits (the
 * zero bits are these shifted by 32). */
uint64_t qcow2_sc_range_bits(unsigned from, unsigned to)
{
    return to > from ? (((1ULL << (to - from)) - 1) << from) : 0;
}

/* A subcluster marked both data and zeroes, or data without a host
 * cluster: QEMU's "invalid" entry.  A compressed cluster's bitmap is
 * ignored (check reports one that is not 0), as by QEMU. */
bool qcow2_sc_bitmap_valid(BDRVQcow2State *s, uint64_t d, uint64_t bitmap)
{
    Qcow2ClusterType t = qcow2_entry_type(s, d);

    if (t == QCOW2_CLUSTER_COMPRESSED) {
        return true;
    }
    if (t == QCOW2_CLUSTER_UNALLOCATED &&
        (bitmap & QCOW_L2_BITMAP_ALL_ALLOC)) {
        return false;
    }
    return !(bitmap & (bitmap >> 32) & QCOW_L2_BITMAP_ALL_ALLOC);
}

static uint64_t sc_view(uint64_t d, int kind)
{
    d &= ~QCOW2_VIEW_BACKING;
    switch (kind) {
    case QCOW2_SC_DATA:
        return d;
    case QCOW2_SC_ZERO:
        return d | QCOW_OFLAG_ZERO;
    default:
        return (d & L2E_OFFSET_MASK) ?
               (d & L2E_OFFSET_MASK) | QCOW2_VIEW_BACKING : 0;
    }
}

/* How a view entry reads: a subcluster over the backing file reads as
 * an unallocated cluster, whatever its host cluster. */
Qcow2ClusterType qcow2_view_type(BDRVQcow2State *s, uint64_t e)
{
    /* (bit 1 of a compressed descriptor is part of its offset) */
    if (qcow2_has_subclusters(s) && (e & QCOW2_VIEW_BACKING) &&
        !(e & QCOW_OFLAG_COMPRESSED)) {
        return QCOW2_CLUSTER_UNALLOCATED;
    }
    return qcow2_entry_type(s, e);
}

/* Entry k clusters after `first` maps the same way: same type, and for
 * clusters with a host cluster the next one there with the same COPIED. */
static bool same_mapping(BDRVQcow2State *s, uint64_t first, uint64_t e,
                         uint64_t k)
{
    Qcow2ClusterType t = qcow2_entry_type(s, first);

    if (qcow2_entry_type(s, e) != t || t == QCOW2_CLUSTER_COMPRESSED) {
        return false;
    }
    if (!(first & L2E_OFFSET_MASK) && t != QCOW2_CLUSTER_NORMAL) {
        return !(e & L2E_OFFSET_MASK);
    }
    return (e & L2E_OFFSET_MASK) ==
           (first & L2E_OFFSET_MASK) + (k << s->cluster_bits) &&
           (e & QCOW_OFLAG_COPIED) == (first & QCOW_OFLAG_COPIED);
}

/*
 * lookup's reader view with extended entries: the first cluster's entry
 * `first` (valid) at l2i, off's place in it; the view entry of off's
 * subcluster and how many bytes from off (up to bytes, max_clusters
 * clusters) read the same way.
 */
void qcow2_view_run(BDRVQcow2State *s, const uint64_t *l2, uint64_t l2i,
                     uint64_t in_cluster, uint64_t max_clusters,
                     uint64_t bytes, uint64_t first, uint64_t *entry,
                     uint64_t *run)
{
    unsigned sc0 = in_cluster >> s->subcluster_bits;
    uint64_t bitmap = qcow2_l2_bitmap(s, l2, l2i);
    uint64_t limit = max_clusters * QCOW2_SUBCLUSTERS, n;
    int kind;

    if (qcow2_entry_type(s, first) == QCOW2_CLUSTER_COMPRESSED) {
        *entry = first;
        *run = MIN(bytes, s->cluster_size - in_cluster);
        return;
    }
    kind = qcow2_sc_kind(bitmap, sc0);
    *entry = sc_view(first, kind);
    for (n = sc0 + 1; n < limit; n++) {
        uint64_t k = n / QCOW2_SUBCLUSTERS;
        if (n % QCOW2_SUBCLUSTERS == 0) {
            uint64_t e = qcow2_l2_get(s, l2, l2i + k);
            bitmap = qcow2_l2_bitmap(s, l2, l2i + k);
            if (!qcow2_sc_bitmap_valid(s, e, bitmap) ||
                !same_mapping(s, first, e, k)) {
                break;
            }
            if (bitmap == uniform_bitmap(kind)) {
                n += QCOW2_SUBCLUSTERS - 1;
                continue;
            }
        }
        if (qcow2_sc_kind(bitmap, n % QCOW2_SUBCLUSTERS) != kind) {
            break;
        }
    }
    n = MIN(n, limit);
    *run = MIN(bytes, (n << s->subcluster_bits) - in_cluster);
}

uint64_t qcow2_sc_floor(BDRVQcow2State *s, uint64_t off)
{
    return off & ~((1ULL << s->subcluster_bits) - 1);
}

uint64_t qcow2_sc_ceil(BDRVQcow2State *s, uint64_t off)
{
    return qcow2_align_up(off, 1ULL << s->subcluster_bits);
}

/*
 * The bitmap of the cluster at guest offset cstart after a write that
 * filled guest bytes [ws, we) of it: those subclusters read from the
 * host cluster now, the others keep what they said.
 */
uint64_t qcow2_sc_written_bitmap(BDRVQcow2State *s, uint64_t bitmap,
                               uint64_t cstart, uint64_t ws, uint64_t we)
{
    uint64_t from = ws > cstart ? ws - cstart : 0;
    uint64_t to = MIN(we - cstart, (uint64_t)s->cluster_size);
    uint64_t bits = qcow2_sc_range_bits(from >> s->subcluster_bits,
                                  qcow2_sc_ceil(s, to) >> s->subcluster_bits);

    return (bitmap | bits) & ~(bits << 32);
}

/* The cluster of a descriptor holds data of its own (a host cluster or
 * compressed data). */
bool qcow2_entry_has_data(BDRVQcow2State *s, uint64_t d)
{
    return qcow2_entry_type(s, d) != QCOW2_CLUSTER_UNALLOCATED;
}

/*
 * With extended entries, where the copy into a new cluster begins for a
 * write from guest offset off into a cluster whose entry is (d, bitmap):
 * a compressed cluster is copied whole; one with a host cluster from its
 * first allocated subcluster if that comes before off's; otherwise from
 * off's subcluster (QEMU's rule, so the bitmaps match).
 */
uint64_t qcow2_sc_cow_start(BDRVQcow2State *s, uint64_t d, uint64_t bitmap,
                          uint64_t off)
{
    uint64_t cstart = qcow2_cluster_start(s, off);
    uint32_t alloc = bitmap & QCOW_L2_BITMAP_ALL_ALLOC;
    unsigned sc = (off - cstart) >> s->subcluster_bits;

    switch (qcow2_entry_type(s, d)) {
    case QCOW2_CLUSTER_COMPRESSED:
        return cstart;
    case QCOW2_CLUSTER_UNALLOCATED:
        return qcow2_sc_floor(s, off);
    default:
        if (alloc) {
            sc = MIN(sc, (unsigned)__builtin_ctz(alloc));
        }
        return cstart + ((uint64_t)sc << s->subcluster_bits);
    }
}

/* The same for where it ends, for a write ending at guest offset end. */
uint64_t qcow2_sc_cow_end(BDRVQcow2State *s, uint64_t d, uint64_t bitmap,
                        uint64_t end)
{
    uint64_t cstart = qcow2_cluster_start(s, end - 1);
    uint32_t alloc = bitmap & QCOW_L2_BITMAP_ALL_ALLOC;
    unsigned sc = ((end - 1 - cstart) >> s->subcluster_bits) + 1;

    switch (qcow2_entry_type(s, d)) {
    case QCOW2_CLUSTER_COMPRESSED:
        return cstart + s->cluster_size;
    case QCOW2_CLUSTER_UNALLOCATED:
        return qcow2_sc_ceil(s, end);
    default:
        if (alloc) {
            sc = MAX(sc, 32u - (unsigned)__builtin_clz(alloc));
        }
        return cstart + ((uint64_t)sc << s->subcluster_bits);
    }
}
