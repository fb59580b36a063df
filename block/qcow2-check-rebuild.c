/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * qcow2 check -r all: a new refcount structure built from scratch, for
 * when the stored one cannot be trusted (a refcount-table entry outside
 * the file or unaligned, a refcount block that is also something else, a
 * used cluster whose stored count is 0).
 *
 * Order of the writes (DESIGN.md, rule 5): the new refcount blocks and
 * the new table go to clusters that nothing references, the file is
 * synced, and one 12-byte header write (table offset and size) publishes
 * them.  Until that write the old structure is the image's; the clusters
 * written before it were unreferenced, so a crash loses nothing.  The old
 * table and blocks are counted by the new blocks and become leaks, which
 * the caller's leak repair then frees, as QEMU's rebuild does.
 */
#include <errno.h>
#include <string.h>

#include "qcow2-check.h"
#include "block/log.h"

int qcow2_check_counts_grow(CheckState *c, uint64_t n)
{
    uint32_t *p;

    if (n <= c->nb_counts) {
        return 0;
    }
    if (n > CHECK_MAX_CLUSTERS) {
        return -EFBIG;
    }
    /* Room for a few more so that allocating one cluster at a time at
     * the end does not reallocate each time. */
    n = MIN(CHECK_MAX_CLUSTERS, n + n / 8 + 16);
    if (!c->counts) {
        p = g_try_new0(uint32_t, n);   /* calloc: untouched until used */
    } else {
        p = g_try_renew(uint32_t, c->counts, n);
        if (p) {
            memset(p + c->nb_counts, 0, (n - c->nb_counts) * sizeof(*p));
        }
    }
    if (!p) {
        return -ENOMEM;
    }
    c->counts = p;
    c->nb_counts = n;
    return 0;
}

/* The layout being built: which cluster holds each refcount block, and
 * where the table goes. */
typedef struct Layout {
    uint64_t *blocks;        /* cluster index per table entry, 0: none */
    uint64_t nb_entries;     /* entries of blocks[] in use */
    uint64_t table_at;       /* first cluster of the table, 0: not placed */
    uint64_t table_clusters;
    uint64_t first_free;     /* where the search for free clusters resumes */
    uint64_t end;            /* clusters below this may be in use */
} Layout;

/* The first run of n clusters at or after first_free that nothing uses
 * (cluster 0 is the header and never free); counted as used. */
static int64_t alloc_run(CheckState *c, Layout *l, uint64_t n)
{
    uint64_t k = MAX(l->first_free, 1), run = 0;

    while (run < n) {
        if (k + 1 > CHECK_MAX_CLUSTERS) {
            return -EFBIG;
        }
        if (k >= c->nb_counts || c->counts[k] == 0) {
            run++;
        } else {
            run = 0;
        }
        k++;
    }
    int ret = qcow2_check_counts_grow(c, k);
    if (ret < 0) {
        return ret;
    }
    for (uint64_t i = k - n; i < k; i++) {
        c->counts[i] = 1;
    }
    if (n == 1 || l->first_free == k - n) {
        l->first_free = k;
    }
    l->end = MAX(l->end, k);
    return (int64_t)(k - n);
}

static bool block_in_use(CheckState *c, uint64_t b, uint64_t end)
{
    uint64_t E = c->s->refblock_size;

    for (uint64_t k = b * E; k < MIN((b + 1) * E, end); k++) {
        if (c->counts[k]) {
            return true;
        }
    }
    return false;
}

/*
 * Places a refcount block for every block range that has a used cluster,
 * and the table, until nothing new is needed: a block or the table placed
 * in a range without a block needs one more block, a table that must
 * grow is placed anew (nothing is written yet, so its old place is simply
 * free again).  Ends because each round only adds; the table grows by a
 * cluster at most once per cluster's worth of blocks.
 */
static int plan_layout(CheckState *c, Layout *l)
{
    BDRVQcow2State *s = c->s;
    uint64_t E = s->refblock_size;
    uint64_t per_table_cluster = s->cluster_size / 8;

    for (;;) {
        bool changed = false;
        uint64_t nb_blocks = (l->end + E - 1) / E;

        if (nb_blocks > l->nb_entries) {
            l->blocks = g_renew(uint64_t, l->blocks, nb_blocks);
            memset(l->blocks + l->nb_entries, 0,
                   (nb_blocks - l->nb_entries) * sizeof(uint64_t));
            l->nb_entries = nb_blocks;
        }
        for (uint64_t b = 0; b < nb_blocks; b++) {
            if (l->blocks[b] || !block_in_use(c, b, l->end)) {
                continue;
            }
            int64_t at = alloc_run(c, l, 1);
            if (at < 0) {
                return (int)at;
            }
            l->blocks[b] = at;
            changed = true;
            nb_blocks = MAX(nb_blocks, (l->end + E - 1) / E);
            if (nb_blocks > l->nb_entries) {
                break; /* the outer round grows blocks[] */
            }
        }
        uint64_t last = 0;
        for (uint64_t b = 0; b < l->nb_entries; b++) {
            if (l->blocks[b]) {
                last = b + 1;
            }
        }
        uint64_t want = MAX(1, (last + per_table_cluster - 1) /
                               per_table_cluster);
        if (want * s->cluster_size > QCOW2_MAX_REFTABLE_BYTES) {
            return -EFBIG;
        }
        if (!l->table_at || want > l->table_clusters) {
            for (uint64_t i = 0; l->table_at && i < l->table_clusters; i++) {
                c->counts[l->table_at + i] = 0;
            }
            int64_t at = alloc_run(c, l, want);
            if (at < 0) {
                return (int)at;
            }
            l->table_at = at;
            l->table_clusters = want;
            changed = true;
        }
        if (!changed) {
            return 0;
        }
    }
}

/* Writes every planned refcount block: each is the slice of counts[] it
 * covers, in the image's refcount width. */
static int write_blocks(CheckState *c, Layout *l)
{
    BDRVQcow2State *s = c->s;
    uint64_t E = s->refblock_size;
    g_autofree uint8_t *rb = g_malloc(s->cluster_size);

    for (uint64_t b = 0; b < l->nb_entries; b++) {
        if (!l->blocks[b]) {
            continue;
        }
        memset(rb, 0, s->cluster_size);
        for (uint64_t i = 0; i < E; i++) {
            uint64_t k = b * E + i;
            uint64_t v = k < c->nb_counts ? c->counts[k] : 0;
            if (v) {
                qcow2_refblock_set(s, rb, i, MIN(v, s->refcount_max));
            }
        }
        int ret = bdrv_pwrite(c->bs->file, l->blocks[b] << s->cluster_bits,
                              s->cluster_size, rb);
        if (ret < 0) {
            return ret;
        }
    }
    return 0;
}

/*
 * Counts the clusters referenced past the end of the file (see
 * CheckState.beyond) that the rebuild could reach: it allocates at most
 * a refcount block per refblock_size clusters (64 at the least) and a
 * table, so nothing further than this window can be taken; references
 * beyond it stay uncounted (and reported).  Returns the end of the
 * furthest counted, in clusters.
 */
static int64_t count_beyond(CheckState *c)
{
    uint64_t window = c->nb_clusters + c->nb_clusters / 32 + 1024;
    uint64_t far = 0;

    for (guint i = 0; c->beyond && i + 1 < c->beyond->len; i += 2) {
        uint64_t first = g_array_index(c->beyond, uint64_t, i);
        uint64_t end = g_array_index(c->beyond, uint64_t, i + 1);
        int ret;

        if (end > window) {
            continue;
        }
        ret = qcow2_check_counts_grow(c, end);
        if (ret < 0) {
            return ret;
        }
        for (uint64_t k = first; k < end; k++) {
            if (c->counts[k] < c->s->refcount_max) {
                c->counts[k]++;
            }
        }
        far = MAX(far, end);
    }
    return (int64_t)far;
}

int qcow2_check_rebuild_refcounts(CheckState *c, GError **errp)
{
    BDRVQcow2State *s = c->s;
    Layout l = { .end = c->nb_counts, .first_free = 1 };
    g_autofree uint64_t *table = NULL;
    uint64_t entries;
    uint8_t hdr[12];
    int64_t far;
    int ret;

    /* Nothing dirty may be lost: the check wrote everything back first
     * and has changed no refcount since. */
    g_assert(!qcow2_cache_has_dirty(s->refcount_cache));

    far = count_beyond(c);
    if (far < 0) {
        ret = (int)far;
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "ERROR allocating refblock: %s", g_strerror(-ret));
        goto out;
    }
    l.end = MAX(l.end, (uint64_t)far);
    ret = plan_layout(c, &l);
    if (ret < 0) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "ERROR allocating refblock: %s", g_strerror(-ret));
        goto out;
    }
    ret = write_blocks(c, &l);
    if (ret < 0) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_IO,
                    "ERROR writing refblock: %s", g_strerror(-ret));
        goto out;
    }
    entries = l.table_clusters * s->cluster_size / 8;
    table = g_new0(uint64_t, entries);
    for (uint64_t b = 0; b < l.nb_entries; b++) {
        table[b] = GUINT64_TO_BE(l.blocks[b] << s->cluster_bits);
    }
    ret = bdrv_pwrite(c->bs->file, l.table_at << s->cluster_bits,
                      entries * 8, table);
    /* The clusters metadata points at past the end are counted now: the
     * file reaches them (as zeroes), so they stop being out of range. */
    if (ret == 0 && bdrv_getlength(c->bs->file) <
                    (int64_t)((uint64_t)far << s->cluster_bits)) {
        ret = bdrv_truncate(c->bs->file,
                            (int64_t)((uint64_t)far << s->cluster_bits),
                            NULL);
    }
    if (ret == 0) {
        ret = bdrv_flush(c->bs->file);
    }
    if (ret < 0) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_IO,
                    "ERROR writing reftable: %s", g_strerror(-ret));
        goto out;
    }

    /* The commit point. */
    uint64_t be_off = GUINT64_TO_BE(l.table_at << s->cluster_bits);
    uint32_t be_clusters = GUINT32_TO_BE((uint32_t)l.table_clusters);
    memcpy(hdr, &be_off, 8);
    memcpy(hdr + 8, &be_clusters, 4);
    ret = qcow2_write_header_bytes(c->bs, QCOW2_HDR_REFTABLE_OFF, hdr, 12);
    if (ret < 0) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_IO,
                    "ERROR setting reftable: %s", g_strerror(-ret));
        goto out;
    }

    for (uint64_t i = 0; i < entries; i++) {
        table[i] = GUINT64_FROM_BE(table[i]);
    }
    g_free(s->refcount_table);
    s->refcount_table = g_steal_pointer(&table);
    s->refcount_table_size = entries;
    s->refcount_table_offset = l.table_at << s->cluster_bits;
    qcow2_cache_discard_all(s->refcount_cache);
    s->free_cluster_index = 0;
out:
    g_free(l.blocks);
    return ret;
}
