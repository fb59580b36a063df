/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * qcow2 metadata overlap protection (QEMU's `overlap-check` option): the
 * driver asks here before every write it issues to its file, and before
 * it hands out clusters, whether the target overlaps metadata.  A hit
 * marks the image corrupt and fails with EIO before anything changed.
 *
 * Which metadata is checked follows the option: none, constant (header,
 * active L1, refcount table, snapshot table), cached (plus active L2
 * tables, refcount blocks, inactive L1 tables; the default) or all (plus
 * inactive L2 tables, read from the snapshots' L1 tables), and per type
 * with overlap-check.<type>=on|off.
 *
 * The check must be cheap on the data path, so the metadata is kept as an
 * index: a hash from host cluster number to how many times each type of
 * metadata lives there (one byte per type, saturating), behind a bit
 * filter that answers "no metadata here" for most clusters with one load.
 * A write tests each cluster it touches once: O(1) per cluster, never a
 * walk over the tables.  The index follows the in-memory tables two ways:
 *  - frequent changes (an L1 entry pointing at a new L2 table, a new
 *    refcount block) are applied incrementally by their callers;
 *  - wholesale changes (a new L1 or refcount table, a new snapshot table,
 *    a snapshot applied, a repair) are noticed by comparing a "layout"
 *    (table pointers, offsets, sizes) with the one the index was built
 *    from, and the index is rebuilt before the next check.  So the
 *    snapshot code needs no calls into this file to keep the index
 *    right; its own writes (snapshot table, L1 tables) only go through
 *    qcow2_overlap_pwrite like every other write.
 * Allocation asks too: a cluster whose refcount says "free" but that the
 * index knows as metadata is never handed out, and a refcount never drops
 * to 0 on a cluster that still holds metadata.
 */
#include <errno.h>
#include <string.h>

#include "qcow2.h"
#include "block/log.h"

G_STATIC_ASSERT(sizeof(gpointer) >= sizeof(uint64_t));
G_STATIC_ASSERT(QCOW2_OL_MAX_BITNR <= 8);

/* What the index was built from; any difference means "rebuild". */
typedef struct Qcow2Layout {
    const void *l1_table;
    uint64_t l1_table_offset;
    uint32_t l1_size;
    const void *refcount_table;
    uint64_t refcount_table_offset;
    uint32_t refcount_table_size;
    const void *snapshots;
    uint32_t nb_snapshots;
    uint64_t snapshots_offset;
    uint64_t snapshots_size;
} Qcow2Layout;

struct Qcow2Overlap {
    uint32_t checks;       /* QCOW2_OL_* types that are checked */
    GHashTable *index;     /* cluster number -> packed per-type counts */
    /* A one-bit-per-slot filter in front of the index: clear bit = no
     * metadata in any cluster hashing there (cluster number modulo the
     * filter size).  Most data writes stop here, at one memory load. */
    uint64_t *filter;
    uint64_t filter_mask;  /* filter size in bits - 1 */
    bool stale;
    Qcow2Layout layout;
    /* Clean verdicts on clusters that are metadata of the type being
     * written (a refcount block updated again and again, the L2 table of
     * a sequential writer): valid while gen is unchanged. */
    uint64_t gen;          /* bumped on every change of the index */
    struct { uint64_t cluster, gen; uint32_t ign; } memo[4];
};

#define OL_FILTER_MIN_BITS (1 << 16)

/* QEMU's names, in its bit order: they appear in the messages. */
static const char *const ol_names[QCOW2_OL_MAX_BITNR] = {
    [QCOW2_OL_MAIN_HEADER_BITNR] = "qcow2_header",
    [QCOW2_OL_ACTIVE_L1_BITNR] = "active L1 table",
    [QCOW2_OL_ACTIVE_L2_BITNR] = "active L2 table",
    [QCOW2_OL_REFCOUNT_TABLE_BITNR] = "refcount table",
    [QCOW2_OL_REFCOUNT_BLOCK_BITNR] = "refcount block",
    [QCOW2_OL_SNAPSHOT_TABLE_BITNR] = "snapshot table",
    [QCOW2_OL_INACTIVE_L1_BITNR] = "inactive L1 table",
    [QCOW2_OL_INACTIVE_L2_BITNR] = "inactive L2 table",
};

/* The option keys, overlap-check.<key>. */
static const char *const ol_keys[QCOW2_OL_MAX_BITNR] = {
    [QCOW2_OL_MAIN_HEADER_BITNR] = "main-header",
    [QCOW2_OL_ACTIVE_L1_BITNR] = "active-l1",
    [QCOW2_OL_ACTIVE_L2_BITNR] = "active-l2",
    [QCOW2_OL_REFCOUNT_TABLE_BITNR] = "refcount-table",
    [QCOW2_OL_REFCOUNT_BLOCK_BITNR] = "refcount-block",
    [QCOW2_OL_SNAPSHOT_TABLE_BITNR] = "snapshot-table",
    [QCOW2_OL_INACTIVE_L1_BITNR] = "inactive-l1",
    [QCOW2_OL_INACTIVE_L2_BITNR] = "inactive-l2",
};

#define OL_CONSTANT (QCOW2_OL_MAIN_HEADER | QCOW2_OL_ACTIVE_L1 | \
                     QCOW2_OL_REFCOUNT_TABLE | QCOW2_OL_SNAPSHOT_TABLE)
#define OL_CACHED (OL_CONSTANT | QCOW2_OL_ACTIVE_L2 | \
                   QCOW2_OL_REFCOUNT_BLOCK | QCOW2_OL_INACTIVE_L1)
#define OL_ALL (OL_CACHED | QCOW2_OL_INACTIVE_L2)

static bool parse_mode(const char *v, uint32_t *mask)
{
    static const struct { const char *name; uint32_t mask; } modes[] = {
        { "none", 0 }, { "constant", OL_CONSTANT },
        { "cached", OL_CACHED }, { "all", OL_ALL },
    };

    for (size_t i = 0; i < G_N_ELEMENTS(modes); i++) {
        if (!strcmp(v, modes[i].name)) {
            *mask = modes[i].mask;
            return true;
        }
    }
    return false;
}

int qcow2_overlap_open_options(BlockDriverState *bs, BlockOpts *options,
                               GError **errp)
{
    BDRVQcow2State *s = bs->opaque;
    g_autofree char *mode = bdrv_opts_take(options, "overlap-check");
    g_autofree char *tmpl = bdrv_opts_take(options, "overlap-check.template");
    const char *m;
    uint32_t mask = OL_CACHED;

    if (mode && tmpl && strcmp(mode, tmpl)) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "Conflicting values for qcow2 options 'overlap-check' "
                    "('%s') and 'overlap-check.template' ('%s')", mode, tmpl);
        return -EINVAL;
    }
    m = mode ? mode : tmpl;
    if (m && !parse_mode(m, &mask)) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "Unsupported value '%s' for qcow2 option 'overlap-check'."
                    " Allowed are any of the following: none, constant, "
                    "cached, all", m);
        return -EINVAL;
    }
    for (int bit = 0; bit < QCOW2_OL_MAX_BITNR; bit++) {
        g_autofree char *key = g_strconcat("overlap-check.", ol_keys[bit],
                                           NULL);
        bool on;
        if (!bdrv_opts_get_bool(options, key, !!(mask & (1U << bit)), &on,
                                errp)) {
            return -EINVAL;
        }
        g_hash_table_remove(options, key);
        mask = on ? mask | (1U << bit) : mask & ~(1U << bit);
    }
    qcow2_overlap_free(s);
    s->overlap = g_new0(Qcow2Overlap, 1);
    s->overlap->checks = mask;
    s->overlap->index = g_hash_table_new(NULL, NULL);  /* direct keys */
    s->overlap->filter = g_new0(uint64_t, OL_FILTER_MIN_BITS / 64);
    s->overlap->filter_mask = OL_FILTER_MIN_BITS - 1;
    s->overlap->stale = true;
    return 0;
}

void qcow2_overlap_free(BDRVQcow2State *s)
{
    if (s->overlap) {
        g_hash_table_destroy(s->overlap->index);
        g_free(s->overlap->filter);
        g_free(s->overlap);
        s->overlap = NULL;
    }
}

void qcow2_overlap_invalidate(BDRVQcow2State *s)
{
    if (s->overlap) {
        s->overlap->stale = true;
    }
}

static void layout_of(BDRVQcow2State *s, Qcow2Layout *l)
{
    memset(l, 0, sizeof(*l));
    l->l1_table = s->l1_table;
    l->l1_table_offset = s->l1_table_offset;
    l->l1_size = s->l1_size;
    l->refcount_table = s->refcount_table;
    l->refcount_table_offset = s->refcount_table_offset;
    l->refcount_table_size = s->refcount_table_size;
    l->snapshots = s->snapshots;
    l->nb_snapshots = s->nb_snapshots;
    l->snapshots_offset = s->snapshots_offset;
    l->snapshots_size = s->snapshots_size;
}

static bool layout_changed(BDRVQcow2State *s)
{
    const Qcow2Layout *l = &s->overlap->layout;

    return l->l1_table != s->l1_table ||
           l->l1_table_offset != s->l1_table_offset ||
           l->l1_size != s->l1_size ||
           l->refcount_table != s->refcount_table ||
           l->refcount_table_offset != s->refcount_table_offset ||
           l->refcount_table_size != s->refcount_table_size ||
           l->snapshots != s->snapshots ||
           l->nb_snapshots != s->nb_snapshots ||
           l->snapshots_offset != s->snapshots_offset ||
           l->snapshots_size != s->snapshots_size;
}

/* Adds (delta 1) or removes (-1) one type on the clusters of a range.  A
 * count that reached 255 stays there: the cluster stays protected until
 * the next rebuild (only broken or very shared images get there). */
static void index_update(BDRVQcow2State *s, int bit, uint64_t offset,
                         uint64_t bytes, int delta)
{
    Qcow2Overlap *o = s->overlap;
    uint64_t first, last;

    if (!o || !(o->checks & (1U << bit)) || bytes == 0) {
        return;
    }
    first = offset >> s->cluster_bits;
    last = (offset + bytes - 1) >> s->cluster_bits;
    for (uint64_t c = first; c <= last; c++) {
        gpointer key = (gpointer)(uintptr_t)c;
        uint64_t v = (uint64_t)(uintptr_t)g_hash_table_lookup(o->index, key);
        uint64_t n = (v >> (8 * bit)) & 0xff;

        if (delta > 0 && n < 0xff) {
            n++;
        } else if (delta < 0 && n > 0 && n < 0xff) {
            n--;
        } else {
            continue;
        }
        v = (v & ~(0xffULL << (8 * bit))) | (n << (8 * bit));
        o->gen++;
        /* bits are only set here; a removal leaves a stale bit (a
         * false positive the index answers) until the next rebuild */
        o->filter[(c & o->filter_mask) >> 6] |= 1ULL << (c & 63);
        if (v) {
            g_hash_table_insert(o->index, key, (gpointer)(uintptr_t)v);
        } else {
            g_hash_table_remove(o->index, key);
        }
    }
}

void qcow2_overlap_add(BDRVQcow2State *s, uint32_t type, uint64_t offset,
                       uint64_t bytes)
{
    index_update(s, __builtin_ctz(type), offset, bytes, 1);
}

void qcow2_overlap_remove(BDRVQcow2State *s, uint32_t type, uint64_t offset,
                          uint64_t bytes)
{
    index_update(s, __builtin_ctz(type), offset, bytes, -1);
}

/* L2 tables an L1 table points at (entries as they are in memory). */
static void add_l2_tables(BDRVQcow2State *s, int bit, const uint64_t *l1,
                          uint32_t n, bool big_endian)
{
    for (uint32_t i = 0; i < n; i++) {
        uint64_t e = big_endian ? GUINT64_FROM_BE(l1[i]) : l1[i];
        uint64_t off = e & L1E_OFFSET_MASK;
        if (off) {
            index_update(s, bit, qcow2_cluster_start(s, off), 1, 1);
        }
    }
}

/* Inactive L2 tables: only in mode "all", read from the snapshots' L1
 * tables on disk (QEMU does the same on every check; we do it once per
 * layout change). */
static int add_inactive_l2(BlockDriverState *bs)
{
    BDRVQcow2State *s = bs->opaque;

    for (uint32_t i = 0; i < s->nb_snapshots; i++) {
        const Qcow2Snapshot *sn = &s->snapshots[i];
        g_autofree uint64_t *l1 = NULL;
        int ret;

        if (!sn->l1_size || sn->l1_size > QCOW2_MAX_L1_BYTES / 8) {
            continue;
        }
        l1 = g_try_new(uint64_t, sn->l1_size);
        if (!l1) {
            return -ENOMEM;
        }
        ret = bdrv_pread(bs->file, sn->l1_table_offset,
                         (int64_t)sn->l1_size * 8, l1);
        if (ret < 0) {
            return ret;
        }
        add_l2_tables(s, QCOW2_OL_INACTIVE_L2_BITNR, l1, sn->l1_size, true);
    }
    return 0;
}

/* Sized for about one metadata cluster in 16 slots, so that few data
 * clusters share a slot with metadata. */
static void rebuild_filter(Qcow2Overlap *o)
{
    uint64_t bits = OL_FILTER_MIN_BITS;
    GHashTableIter it;
    gpointer key;

    while (bits < 16 * (uint64_t)g_hash_table_size(o->index) &&
           bits < (1ULL << 30)) {
        bits <<= 1;
    }
    g_free(o->filter);
    o->filter = g_new0(uint64_t, bits / 64);
    o->filter_mask = bits - 1;
    g_hash_table_iter_init(&it, o->index);
    while (g_hash_table_iter_next(&it, &key, NULL)) {
        uint64_t c = (uint64_t)(uintptr_t)key;
        o->filter[(c & o->filter_mask) >> 6] |= 1ULL << (c & 63);
    }
}

static int rebuild(BlockDriverState *bs)
{
    BDRVQcow2State *s = bs->opaque;
    Qcow2Overlap *o = s->overlap;
    int ret = 0;

    g_hash_table_remove_all(o->index);
    index_update(s, QCOW2_OL_MAIN_HEADER_BITNR, 0, s->cluster_size, 1);
    index_update(s, QCOW2_OL_ACTIVE_L1_BITNR, s->l1_table_offset,
                 (uint64_t)s->l1_size * 8, 1);
    index_update(s, QCOW2_OL_REFCOUNT_TABLE_BITNR, s->refcount_table_offset,
                 (uint64_t)s->refcount_table_size * 8, 1);
    index_update(s, QCOW2_OL_SNAPSHOT_TABLE_BITNR, s->snapshots_offset,
                 s->snapshots_size, 1);
    if (o->checks & QCOW2_OL_ACTIVE_L2) {
        add_l2_tables(s, QCOW2_OL_ACTIVE_L2_BITNR, s->l1_table, s->l1_size,
                      false);
    }
    if (o->checks & QCOW2_OL_REFCOUNT_BLOCK) {
        for (uint32_t i = 0; i < s->refcount_table_size; i++) {
            uint64_t off = s->refcount_table[i] & REFT_OFFSET_MASK;
            if (off) {
                index_update(s, QCOW2_OL_REFCOUNT_BLOCK_BITNR,
                             qcow2_cluster_start(s, off), 1, 1);
            }
        }
    }
    for (uint32_t i = 0; i < s->nb_snapshots; i++) {
        uint64_t off = s->snapshots[i].l1_table_offset;
        uint64_t bytes = (uint64_t)s->snapshots[i].l1_size * 8;

        /* An open for check keeps entries that check then reports as
         * corrupt (misaligned or oversized L1); nothing reads them as a
         * table, and indexing gigabytes of "L1" would cost gigabytes of
         * memory, so they are left out. */
        if ((off & (s->cluster_size - 1)) || bytes > QCOW2_MAX_L1_BYTES) {
            continue;
        }
        index_update(s, QCOW2_OL_INACTIVE_L1_BITNR, off, bytes, 1);
    }
    if (o->checks & QCOW2_OL_INACTIVE_L2) {
        ret = add_inactive_l2(bs);
    }
    rebuild_filter(o);
    o->gen++;
    if (ret == 0) {
        layout_of(s, &o->layout);
        o->stale = false;
    }
    return ret;
}

int qcow2_overlap_find(BlockDriverState *bs, uint32_t ign, uint64_t offset,
                       uint64_t bytes)
{
    BDRVQcow2State *s = bs->opaque;
    Qcow2Overlap *o = s->overlap;
    uint64_t want = 0, first, last;
    uint32_t chk;

    if (!o || !(chk = o->checks & ~ign) || bytes == 0) {
        return 0;
    }
    if (o->stale || layout_changed(s)) {
        int ret = rebuild(bs);
        if (ret < 0) {
            return ret;
        }
    }
    first = offset >> s->cluster_bits;
    last = (offset + bytes - 1) >> s->cluster_bits;
    for (uint64_t c = first; c <= last; c++) {
        uint64_t v;
        unsigned slot = c & (G_N_ELEMENTS(o->memo) - 1);
        if (!(o->filter[(c & o->filter_mask) >> 6] & (1ULL << (c & 63)))) {
            continue;
        }
        if (o->memo[slot].cluster == c && o->memo[slot].ign == ign &&
            o->memo[slot].gen == o->gen) {
            continue;
        }
        if (!want) {
            for (uint32_t m = chk; m; m &= m - 1) {
                want |= 0xffULL << (8 * __builtin_ctz(m));
            }
        }
        v = (uint64_t)(uintptr_t)
            g_hash_table_lookup(o->index, (gpointer)(uintptr_t)c) & want;
        if (v) {
            return 1 << (__builtin_ctzll(v) / 8);
        }
        o->memo[slot].cluster = c;
        o->memo[slot].ign = ign;
        o->memo[slot].gen = o->gen;
    }
    return 0;
}

int qcow2_overlap_check(BlockDriverState *bs, uint32_t ign, uint64_t offset,
                        uint64_t bytes)
{
    BDRVQcow2State *s = bs->opaque;
    int ret;

    if (s->broken) {
        return -EIO;
    }
    ret = qcow2_overlap_find(bs, ign, offset, bytes);
    if (ret <= 0) {
        return ret;
    }
    qcow2_signal_corruption(bs, "Preventing invalid write on metadata "
                            "(overlaps with %s)",
                            ol_names[__builtin_ctz(ret)]);
    return -EIO;
}

int qcow2_overlap_pwrite(BlockDriverState *bs, uint32_t ign, int64_t offset,
                         int64_t bytes, const void *buf)
{
    int ret = qcow2_overlap_check(bs, ign, offset, bytes);

    return ret < 0 ? ret : bdrv_pwrite(bs->file, offset, bytes, buf);
}
