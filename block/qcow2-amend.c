/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * qemu-img amend for qcow2: compat (0.10 <-> 1.1), lazy_refcounts, size,
 * and the options QEMU accepts only unchanged (backing_file, backing_fmt,
 * data_file, data_file_raw).  QEMU 7.2's order and texts
 * (block/qcow2.c: qcow2_amend_options, qcow2_upgrade, qcow2_downgrade):
 * upgrade first, then the header, backing check, lazy refcounts, size,
 * and the downgrade last.
 *
 * Each change is published by one header write (cluster 0 rewritten in
 * one piece), after everything it needs is durable: an upgrade writes the
 * version 3 snapshot table to new clusters first; a downgrade turns
 * every zero cluster of the active image into data (or, without a
 * backing file, into unallocated clusters, which read zeroes too), in
 * the snapshots' trees too, before
 * the header says version 2 (each table rewritten in place after its new
 * clusters are durable: every tree sharing it reads the same).  A
 * refcount_bits change writes complete
 * new refcount structures (blocks and table) past the end of the file,
 * where the old structures count nothing, switches to them with the one
 * header write, and only then frees the old ones in the new structures:
 * a crash before the switch leaves unused space past the end, after it
 * at worst leaked old blocks.
 */
#include <errno.h>
#include <string.h>

#include "block/log.h"
#include "qcow2.h"
#include "qcow2-bitmap.h"
#include "qcow2-snapshot.h"

/* What was asked for, parsed. */
typedef struct AmendRequest {
    int version;
    bool lazy_refcounts;
    uint64_t refcount_bits;
    uint64_t size;                 /* 0: unchanged */
    const char *backing_file;
    const char *backing_fmt;
    bool backing_given;
    const char *data_file;         /* NULL: unchanged; "": no name */
    bool data_file_raw;
} AmendRequest;

static bool parse_compat(const char *compat, int *version, GError **errp)
{
    if (!strcmp(compat, "0.10") || !strcmp(compat, "v2")) {
        *version = 2;
    } else if (!strcmp(compat, "1.1") || !strcmp(compat, "v3")) {
        *version = 3;
    } else {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "Unknown compatibility level %s", compat);
        return false;
    }
    return true;
}

static bool parse_request(BlockDriverState *bs, BlockOpts *opts,
                          AmendRequest *r, GError **errp)
{
    BDRVQcow2State *s = bs->opaque;
    const char *v;

    r->version = s->version;
    r->lazy_refcounts = !!(s->compatible_features &
                           QCOW2_COMPAT_LAZY_REFCOUNTS);
    r->refcount_bits = s->refcount_bits;
    if ((v = bdrv_opts_get(opts, "compat")) &&
        !parse_compat(v, &r->version, errp)) {
        return false;
    }
    if (!bdrv_opts_get_size(opts, "size", 0, &r->size, errp)) {
        return false;
    }
    r->backing_file = bdrv_opts_get(opts, "backing_file");
    r->backing_fmt = bdrv_opts_get(opts, "backing_fmt");
    r->backing_given = r->backing_file || r->backing_fmt;
    if (!bdrv_opts_get_bool(opts, "lazy_refcounts", r->lazy_refcounts,
                            &r->lazy_refcounts, errp)) {
        return false;
    }
    if ((v = bdrv_opts_get(opts, "refcount_bits"))) {
        r->refcount_bits = g_ascii_strtoull(v, NULL, 10);
        if (r->refcount_bits == 0 || r->refcount_bits > 64 ||
            (r->refcount_bits & (r->refcount_bits - 1))) {
            g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                        "Refcount width must be a power of two and may not "
                        "exceed 64 bits");
            return false;
        }
    }
    /* The data file's name may change (the data stays where it is);
     * data_file_raw may be cleared, or kept, but not newly set: nothing
     * guarantees the data file reads as the disk does. */
    r->data_file = bdrv_opts_get(opts, "data_file");
    if (r->data_file && !qcow2_has_data_file(s)) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "data-file can only be set for images that use an "
                    "external data file");
        return false;
    }
    if (!bdrv_opts_get_bool(opts, "data_file_raw", qcow2_data_file_raw(s),
                            &r->data_file_raw, errp)) {
        return false;
    }
    if (r->data_file_raw && !qcow2_data_file_raw(s)) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "data-file-raw cannot be set on existing images");
        return false;
    }
    return true;
}

/* Under s->lock. */
static int rewrite_header(BlockDriverState *bs, GError **errp)
{
    GError *err = NULL;
    int ret = qcow2_write_header(bs, &err);

    if (ret < 0) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_IO,
                    "Failed to update the image header: %s", err->message);
        g_clear_error(&err);
    }
    return ret;
}

/* Under s->lock.  Version 3 wants every snapshot's 64-bit VM state size and disk size:
 * a table of shorter entries is rewritten (new clusters) first. */
static int upgrade(BlockDriverState *bs, GError **errp)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t old_off = s->snapshots_offset, old_size = s->snapshots_size;
    uint64_t new_off = old_off, new_size = old_size;
    bool rewrite = false;
    int ret;

    for (uint32_t i = 0; i < s->nb_snapshots; i++) {
        rewrite |= s->snapshots[i].extra_data_size < 16;
    }
    if (rewrite) {
        ret = qcow2_sn_write_table(bs, s->snapshots, s->nb_snapshots,
                                   &new_off, &new_size, errp);
        if (ret < 0) {
            g_prefix_error(errp, "Failed to update the snapshot table: ");
            return ret;
        }
    }
    s->version = 3;
    s->snapshots_offset = new_off;
    ret = rewrite_header(bs, errp);
    if (ret < 0) {
        s->version = 2;
        s->snapshots_offset = old_off;
        if (rewrite) {
            qcow2_free_unreferenced(bs, new_off, new_size, QCOW2_FREE_ALWAYS);
        }
        return ret;
    }
    if (rewrite) {
        s->snapshots_size = new_size;
        for (uint32_t i = 0; i < s->nb_snapshots; i++) {
            s->snapshots[i].extra_data_size =
                MAX(s->snapshots[i].extra_data_size, 24);
        }
        /* The old table is unreferenced now: a failure only leaks. */
        qcow2_free_unreferenced(bs, old_off, old_size, QCOW2_FREE_SNAPSHOT);
        if (qcow2_write_back_metadata(bs) < 0) {
            strata_warning("Could not free the old snapshot table");
        }
        qcow2_overlap_invalidate(s);
    }
    return 0;
}

/* Progress over the walks an amend makes (a refcount width change: a
 * scan of the old refcounts, then the new blocks written; a downgrade:
 * the zero-cluster expansion), each given an equal share, as QEMU
 * shares it: done of total in the current walk, `walk` of `walks`. */
typedef struct AmendProgress {
    BdrvAmendStatusCB *cb;
    void *opaque;
    int64_t done, total;
    int walk, walks;
} AmendProgress;

static void progress_report(BlockDriverState *bs, AmendProgress *p)
{
    if (p->cb && p->total > 0 && p->walks > 0) {
        p->cb(bs, p->walk * p->total + p->done, p->walks * p->total,
              p->opaque);
    }
}

/* The next walk begins, of `total` steps. */
static void progress_walk(AmendProgress *p, int64_t total)
{
    if (p->total > 0) {
        p->walk++;
    }
    p->done = 0;
    p->total = total;
}

static void progress_step(BlockDriverState *bs, AmendProgress *p)
{
    p->done++;
    progress_report(bs, p);
}

/* A reference the expansion dropped: applied once the table that no
 * longer points there is on disk. */
typedef struct DroppedRef {
    uint64_t cluster;
    uint64_t count;
} DroppedRef;

/*
 * One zero entry of a table that l2_refcount trees share becomes data:
 * a new cluster of zeroes (counted once per sharing tree) or, for a
 * preallocated cluster only these trees reach, that cluster zeroed.  A
 * preallocated cluster that other tables reach too (a snapshot taken
 * before the zero write) is left alone and its references from this
 * table are dropped later: QEMU 7.2 zeroes it in place, which changes
 * the snapshot's data and leaves a wrong refcount.  Without a backing
 * file a plain zero entry just becomes unallocated.  *e in host order.
 */
static int expand_entry(BlockDriverState *bs, uint64_t *e, uint64_t l2_refcount,
                        GArray *dropped)
{
    BDRVQcow2State *s = bs->opaque;
    bool plain = qcow2_get_cluster_type(*e) == QCOW2_CLUSTER_ZERO_PLAIN;
    int64_t off = *e & L2E_OFFSET_MASK;
    bool fresh = plain;
    uint64_t data_refcount = 0;
    int ret;

    if (plain && !bs->backing) {
        *e = 0;
        return 0;
    }
    if (!plain) {
        ret = qcow2_get_refcount(bs, off >> s->cluster_bits, &data_refcount);
        if (ret < 0) {
            return ret;
        }
        fresh = data_refcount > l2_refcount;
    }
    if (fresh) {
        DroppedRef d = { (uint64_t)off >> s->cluster_bits, l2_refcount };
        off = qcow2_alloc_clusters(bs, 1);
        if (off < 0) {
            return (int)off;
        }
        if (l2_refcount > 1) {
            ret = qcow2_update_cluster_refcount(bs, off >> s->cluster_bits,
                                                (int)(l2_refcount - 1), NULL);
            if (ret < 0) {
                qcow2_free_cluster_deferred(bs, off);
                return ret;
            }
        }
        if (!plain) {
            g_array_append_val(dropped, d);
        }
    }
    ret = qcow2_overlap_check(bs, 0, off, s->cluster_size);
    if (ret == 0) {
        ret = bdrv_pwrite_zeroes(bs->file, off, s->cluster_size, 0);
    }
    if (ret < 0) {
        return ret;   /* a new cluster leaks: nothing points at it */
    }
    *e = off | (l2_refcount == 1 ? QCOW_OFLAG_COPIED : 0);
    return 0;
}

/*
 * The zero entries of the L2 table at l2_off, changed in a copy; the
 * new clusters' counts and zeroes are durable before the table is
 * written over in place (the change reads the same to every tree that
 * shares it), and references it dropped go down only after that.
 * Under s->lock, with the caches written back.
 */
static int expand_table(BlockDriverState *bs, uint64_t l2_off)
{
    BDRVQcow2State *s = bs->opaque;
    g_autofree uint64_t *t = g_malloc(s->cluster_size);
    g_autoptr(GArray) dropped = g_array_new(FALSE, FALSE, sizeof(DroppedRef));
    uint64_t l2_refcount;
    bool dirty = false;
    void *cached;
    int ret = qcow2_cache_get(bs, s->l2_cache, l2_off, &cached);

    if (ret < 0) {
        return ret;
    }
    memcpy(t, cached, s->cluster_size);
    ret = qcow2_get_refcount(bs, l2_off >> s->cluster_bits, &l2_refcount);
    for (uint32_t j = 0; ret == 0 && j < s->l2_size; j++) {
        uint64_t e = qcow2_l2_get(s, t, j);
        Qcow2ClusterType type = qcow2_get_cluster_type(e);

        if (type != QCOW2_CLUSTER_ZERO_PLAIN &&
            type != QCOW2_CLUSTER_ZERO_ALLOC) {
            continue;
        }
        ret = expand_entry(bs, &e, l2_refcount, dropped);
        qcow2_l2_set(s, t, j, e);
        dirty = true;
    }
    if (ret < 0 || !dirty) {
        return ret;
    }
    ret = qcow2_cache_write(bs, s->refcount_cache);
    if (ret == 0) {
        ret = bdrv_flush(bs->file);
    }
    if (ret == 0) {
        ret = qcow2_overlap_pwrite(bs, QCOW2_OL_ACTIVE_L2 |
                                   QCOW2_OL_INACTIVE_L2, l2_off,
                                   s->cluster_size, t);
    }
    qcow2_cache_discard(s->l2_cache, l2_off);
    if (ret == 0 && dropped->len) {
        ret = bdrv_flush(bs->file);
    }
    for (guint i = 0; ret == 0 && i < dropped->len; i++) {
        DroppedRef *d = &g_array_index(dropped, DroppedRef, i);
        ret = qcow2_update_cluster_refcount(bs, d->cluster, -(int)d->count,
                                            NULL);
    }
    return ret;
}

static int expand_l1(BlockDriverState *bs, const uint64_t *l1, uint32_t n,
                     AmendProgress *p)
{
    for (uint32_t i = 0; i < n; i++) {
        uint64_t l2_off = l1[i] & L1E_OFFSET_MASK;
        int ret = l2_off ? expand_table(bs, l2_off) : 0;

        if (ret < 0) {
            return ret;
        }
        progress_step(bs, p);
    }
    return 0;
}

/*
 * Version 2 has no zero flag: every zero entry of the active image and
 * of every snapshot becomes a data cluster of zeroes (or, with nothing
 * below, an unallocated one), as QEMU's qcow2_expand_zero_clusters.
 */
static int expand_zero_clusters(BlockDriverState *bs, AmendProgress *p)
{
    BDRVQcow2State *s = bs->opaque;
    int ret;

    int64_t total = s->l1_size;

    for (uint32_t i = 0; i < s->nb_snapshots; i++) {
        total += s->snapshots[i].l1_size;
    }
    progress_walk(p, total);
    g_mutex_lock(&s->lock);
    ret = qcow2_write_back_metadata(bs);
    if (ret == 0) {
        ret = expand_l1(bs, s->l1_table, s->l1_size, p);
    }
    for (uint32_t i = 0; ret == 0 && i < s->nb_snapshots; i++) {
        g_autofree uint64_t *l1 = NULL;
        uint32_t n = 0;

        ret = qcow2_sn_read_l1(bs, &s->snapshots[i], 0, &l1, &n, NULL);
        if (ret == 0) {
            ret = expand_l1(bs, l1, s->snapshots[i].l1_size, p);
        }
    }
    if (ret == 0) {
        ret = qcow2_write_back_metadata(bs);
    }
    if (ret == 0) {
        ret = bdrv_flush(bs->file);
    }
    qcow2_overlap_invalidate(s);
    g_mutex_unlock(&s->lock);
    return ret;
}

static int downgrade_checks(BlockDriverState *bs, GError **errp)
{
    BDRVQcow2State *s = bs->opaque;

    if (s->refcount_order != 4) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_NOT_SUPPORTED,
                    "compat=0.10 requires refcount_bits=16");
        return -ENOTSUP;
    }
    if (qcow2_has_data_file(s)) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_NOT_SUPPORTED,
                    "Cannot downgrade an image with a data file");
        return -ENOTSUP;
    }
    /* strata: QEMU writes them into the version 2 image, where nothing
     * can ever trust them again; we refuse instead of losing them. */
    if (qcow2_bitmaps_present(s)) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_NOT_SUPPORTED,
                    "Cannot downgrade an image with persistent bitmaps "
                    "(remove them with qemu-img bitmap --remove first)");
        return -ENOTSUP;
    }
    for (uint32_t i = 0; i < s->nb_snapshots; i++) {
        if (s->snapshots[i].vm_state_size > UINT32_MAX ||
            s->snapshots[i].disk_size != s->size) {
            g_set_error(errp, BDRV_ERROR, BDRV_ERROR_NOT_SUPPORTED,
                        "Internal snapshots prevent downgrade of image");
            return -ENOTSUP;
        }
    }
    if (s->incompatible_features & ~QCOW2_INCOMPAT_COMPRESSION) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_NOT_SUPPORTED,
                    "Cannot downgrade an image with incompatible features "
                    "0x%" G_GINT64_MODIFIER "x set",
                    (guint64)(s->incompatible_features &
                              ~QCOW2_INCOMPAT_COMPRESSION));
        return -ENOTSUP;
    }
    if (s->incompatible_features & QCOW2_INCOMPAT_COMPRESSION) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_NOT_SUPPORTED,
                    "Cannot downgrade an image with zstd compression type "
                    "and existing compressed clusters");
        return -ENOTSUP;
    }
    return 0;
}

static int downgrade(BlockDriverState *bs, AmendProgress *p, GError **errp)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t compat = s->compatible_features, autoclear = s->autoclear_features;
    int ret = downgrade_checks(bs, errp);

    if (ret < 0) {
        return ret;
    }
    ret = expand_zero_clusters(bs, p);
    if (ret < 0) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_IO,
                    "Failed to turn zero into data clusters: %s",
                    g_strerror(-ret));
        return ret;
    }
    g_mutex_lock(&s->lock);
    s->version = 2;
    s->compatible_features = 0;
    s->autoclear_features = 0;
    ret = rewrite_header(bs, errp);
    g_mutex_unlock(&s->lock);
    if (ret < 0) {
        s->version = 3;
        s->compatible_features = compat;
        s->autoclear_features = autoclear;
    }
    return ret;
}

static int set_lazy_refcounts(BlockDriverState *bs, const AmendRequest *r,
                              GError **errp)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t old = s->compatible_features;
    int ret;

    if (r->lazy_refcounts == !!(old & QCOW2_COMPAT_LAZY_REFCOUNTS)) {
        return 0;
    }
    if (r->lazy_refcounts && r->version < 3) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "Lazy refcounts only supported with compatibility level "
                    "1.1 and above (use compat=1.1 or greater)");
        return -EINVAL;
    }
    if (!r->lazy_refcounts &&
        (s->incompatible_features & QCOW2_INCOMPAT_DIRTY)) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_NOT_SUPPORTED,
                    "Failed to make the image clean: %s",
                    g_strerror(ENOTSUP));
        return -ENOTSUP;
    }
    g_mutex_lock(&s->lock);
    s->compatible_features ^= QCOW2_COMPAT_LAZY_REFCOUNTS;
    ret = rewrite_header(bs, errp);
    g_mutex_unlock(&s->lock);
    if (ret < 0) {
        s->compatible_features = old;
    }
    return ret;
}

/* ---- refcount_bits: new refcount structures ---- */

/* The old refcounts are read twice through the refcount cache (once to
 * check them against the new width, once as each new block is filled),
 * never held all at once: one per cluster would cost 8 bytes per
 * cluster of the image (1 GiB for 64 GiB in 512-byte clusters). */
typedef struct RefcountRewrite {
    uint64_t nb_clusters;      /* clusters the old refcounts cover */
    int order;                 /* the new refcount_order */
    uint64_t block_entries;    /* refcounts per new block */
    uint64_t first;            /* cluster index of the first new block */
    uint64_t nb_blocks;
    uint64_t table_clusters;
    uint64_t *table;           /* new refcount table, host order */
} RefcountRewrite;

static void rewrite_free(RefcountRewrite *r)
{
    g_free(r->table);
}

/* Checks every old refcount against the new width (QEMU's text for the
 * first that does not fit); *used: one past the last cluster in use. */
static int scan_old_counts(BlockDriverState *bs, RefcountRewrite *r,
                           uint64_t nb, uint64_t *used, AmendProgress *p,
                           GError **errp)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t max = r->order == 6 ? UINT64_MAX : (1ULL << (1 << r->order)) - 1;

    *used = 0;
    /* one step per old refcount block's worth of clusters */
    progress_walk(p, (nb + s->refblock_size - 1) >> s->refblock_bits);
    for (uint64_t i = 0; i < nb; i++) {
        uint64_t count;
        int ret;

        if (i && !(i & (s->refblock_size - 1))) {
            progress_step(bs, p);
        }
        ret = qcow2_get_refcount(bs, i, &count);
        if (ret < 0) {
            g_set_error(errp, BDRV_ERROR, BDRV_ERROR_IO,
                        "Failed to read the refcounts: %s", g_strerror(-ret));
            return ret;
        }
        if (count > max) {
            g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                        "Cannot decrease refcount entry width to %i bits: "
                        "Cluster at offset %#" G_GINT64_MODIFIER "x has a "
                        "refcount of %" G_GUINT64_FORMAT, 1 << r->order,
                        (guint64)(i << s->cluster_bits), count);
            return -EINVAL;
        }
        if (count) {
            *used = i + 1;
        }
    }
    if (nb) {
        progress_step(bs, p);
    }
    return 0;
}

/* The new refcount of cluster idx: the old one, or 1 for the new
 * structures themselves. */
static int new_count(BlockDriverState *bs, const RefcountRewrite *r,
                     uint64_t idx, uint64_t *count)
{
    if (idx < r->nb_clusters) {
        return qcow2_get_refcount(bs, idx, count);
    }
    *count = idx >= r->first;
    return 0;
}

/* Where the new blocks and table go (past everything in use and the
 * file's end), found as a fixed point: they count themselves too. */
static void plan_layout(BDRVQcow2State *s, RefcountRewrite *r, uint64_t end)
{
    uint64_t blocks = 0, table = 0, total, last = 0;

    r->block_entries = (uint64_t)s->cluster_size * 8 >> r->order;
    r->first = end;
    for (;;) {
        total = end + blocks + table;
        blocks = (total + r->block_entries - 1) / r->block_entries;
        table = (blocks * 8 + s->cluster_size - 1) / s->cluster_size;
        if (end + blocks + table == last) {
            break;
        }
        last = end + blocks + table;
    }
    r->nb_blocks = blocks;
    r->table_clusters = table;
}

/* Writes the new blocks and table; durable before the header switch. */
static int write_new_structures(BlockDriverState *bs, RefcountRewrite *r,
                                AmendProgress *p)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t cs = s->cluster_size;
    uint64_t total = r->first + r->nb_blocks + r->table_clusters;
    g_autofree BDRVQcow2State *layout = g_new0(BDRVQcow2State, 1);
    g_autofree uint8_t *block = g_malloc(cs);
    g_autofree uint64_t *be = NULL;
    int ret;

    layout->refcount_order = r->order;   /* qcow2_refblock_set's width */
    r->table = g_new0(uint64_t, r->table_clusters * cs / 8);
    progress_walk(p, r->nb_blocks);
    for (uint64_t b = 0; b < r->nb_blocks; b++) {
        uint64_t off = (r->first + b) * cs;
        memset(block, 0, cs);
        for (uint64_t i = 0; i < r->block_entries; i++) {
            uint64_t idx = b * r->block_entries + i, count;
            if (idx >= total) {
                break;
            }
            ret = new_count(bs, r, idx, &count);
            if (ret < 0) {
                return ret;
            }
            qcow2_refblock_set(layout, block, i, count);
        }
        ret = bdrv_pwrite(bs->file, off, cs, block);
        if (ret < 0) {
            return ret;
        }
        r->table[b] = off;
        progress_step(bs, p);
    }
    be = g_new0(uint64_t, r->table_clusters * cs / 8);
    for (uint64_t t = 0; t < r->nb_blocks; t++) {
        be[t] = GUINT64_TO_BE(r->table[t]);
    }
    ret = bdrv_pwrite(bs->file, (r->first + r->nb_blocks) * cs,
                      r->table_clusters * cs, be);
    return ret < 0 ? ret : bdrv_flush(bs->file);
}

/* After the switch: the old blocks and table are counted by nothing. */
static void free_old_structures(BlockDriverState *bs, uint64_t *old_table,
                                uint64_t old_size, uint64_t old_offset)
{
    BDRVQcow2State *s = bs->opaque;
    int ret = 0;

    for (uint64_t t = 0; t < old_size && ret == 0; t++) {
        if (old_table[t] & REFT_OFFSET_MASK) {
            ret = qcow2_release_range(bs, old_table[t] & REFT_OFFSET_MASK,
                                      s->cluster_size, QCOW2_FREE_OTHER);
        }
    }
    if (ret == 0) {
        ret = qcow2_release_range(bs, old_offset, old_size * 8,
                                  QCOW2_FREE_OTHER);
    }
    if (ret == 0) {
        ret = qcow2_write_back_metadata(bs);
    }
    if (ret < 0) {
        strata_warning("Could not free the old refcount structures "
                       "(leaked clusters): %s", g_strerror(-ret));
    }
}

/* The switch: one rewrite of the header, then the state follows it. */
static int switch_structures(BlockDriverState *bs, RefcountRewrite *r,
                             GError **errp)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t *old_table = s->refcount_table;
    uint64_t old_size = s->refcount_table_size;
    uint64_t old_offset = s->refcount_table_offset;
    int old_order = s->refcount_order;
    int ret;

    /* the table goes in with its size: the header write's overlap
     * check walks the refcount table by refcount_table_size (it read
     * past the old, shorter table when the new one is longer) */
    s->refcount_order = r->order;
    s->refcount_table_offset = (r->first + r->nb_blocks) * s->cluster_size;
    s->refcount_table_size = r->table_clusters * s->cluster_size / 8;
    s->refcount_table = r->table;
    qcow2_overlap_invalidate(s);
    ret = rewrite_header(bs, errp);
    if (ret < 0) {
        s->refcount_order = old_order;
        s->refcount_table_offset = old_offset;
        s->refcount_table_size = old_size;
        s->refcount_table = old_table;
        qcow2_overlap_invalidate(s);
        return ret;
    }
    r->table = NULL;   /* s->refcount_table now */
    qcow2_cache_discard_all(s->refcount_cache);
    s->refcount_bits = 1 << r->order;
    s->refcount_max = s->refcount_bits == 64 ? UINT64_MAX :
                      (1ULL << s->refcount_bits) - 1;
    s->refblock_bits = s->cluster_bits + 3 - r->order;
    s->refblock_size = 1U << s->refblock_bits;
    s->free_cluster_index = 0;
    qcow2_overlap_invalidate(s);
    free_old_structures(bs, old_table, old_size, old_offset);
    g_free(old_table);
    return 0;
}

/* Under s->lock. */
static int change_refcount_order(BlockDriverState *bs, int order,
                                 AmendProgress *p, GError **errp)
{
    BDRVQcow2State *s = bs->opaque;
    int64_t file_len;
    uint64_t nb = 0, end, used;
    RefcountRewrite r = { .order = order };
    int ret = qcow2_write_back_metadata(bs);

    file_len = bdrv_getlength(bs->file);
    if (ret == 0 && file_len < 0) {
        ret = (int)file_len;
    }
    if (ret < 0) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_IO,
                    "Failed to write back metadata: %s", g_strerror(-ret));
        return ret;
    }
    /* Every block in the table, not only those inside the file. */
    for (uint64_t t = 0; t < s->refcount_table_size; t++) {
        if (s->refcount_table[t] & REFT_OFFSET_MASK) {
            nb = (t + 1) << s->refblock_bits;
        }
    }
    end = qcow2_align_up(file_len, s->cluster_size) >> s->cluster_bits;
    ret = scan_old_counts(bs, &r, nb, &used, p, errp);
    if (ret == 0) {
        /* refcounts past the file's end matter only up to the last one
         * in use */
        if (nb > end) {
            nb = MAX(end, used);
        }
        r.nb_clusters = nb;
        plan_layout(s, &r, MAX(nb, end));
        ret = write_new_structures(bs, &r, p);
        if (ret < 0) {
            g_set_error(errp, BDRV_ERROR, BDRV_ERROR_IO,
                        "Failed to write the new refcount structures: %s",
                        g_strerror(-ret));
        }
    }
    if (ret == 0) {
        ret = switch_structures(bs, &r, errp);
    }
    rewrite_free(&r);
    return ret;
}

int qcow2_amend(BlockDriverState *bs, BlockOpts *opts, bool force,
                BdrvAmendStatusCB *status_cb, void *cb_opaque, GError **errp)
{
    AmendProgress progress = { status_cb, cb_opaque, 0, 0, 0, 0 };
    BDRVQcow2State *s = bs->opaque;
    AmendRequest r = { 0 };
    int old_version = s->version;
    int ret;

    if (!parse_request(bs, opts, &r, errp)) {
        return -EINVAL;
    }
    progress.walks = (r.refcount_bits != (uint64_t)s->refcount_bits ? 2 : 0) +
                     (r.version < old_version);
    if (r.version > old_version) {
        g_mutex_lock(&s->lock);
        ret = upgrade(bs, errp);
        g_mutex_unlock(&s->lock);
        if (ret < 0) {
            return ret;
        }
    }
    /* QEMU's order: the key slots after an upgrade, before the rest */
    if (qcow2_crypto_amend_requested(opts)) {
        ret = qcow2_crypto_amend(bs, opts, force, errp);
        if (ret < 0) {
            return ret;
        }
    }
    if (r.refcount_bits != (uint64_t)s->refcount_bits) {
        if (r.version < 3 && r.refcount_bits != 16) {
            g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                        "Refcount widths other than 16 bits require "
                        "compatibility level 1.1 or above (use compat=1.1 "
                        "or greater)");
            return -EINVAL;
        }
        g_mutex_lock(&s->lock);
        ret = change_refcount_order(bs, __builtin_ctzll(r.refcount_bits),
                                    &progress, errp);
        g_mutex_unlock(&s->lock);
        if (ret < 0) {
            return ret;
        }
    }
    /* QEMU's place for the data file options: after the refcount
     * width, before the backing file check; one header write. */
    if (r.data_file || r.data_file_raw != qcow2_data_file_raw(s)) {
        g_autofree char *old_name = NULL;
        uint64_t old_autoclear = s->autoclear_features;

        g_mutex_lock(&s->lock);
        if (!r.data_file_raw) {
            s->autoclear_features &= ~QCOW2_AUTOCLEAR_DATA_FILE_RAW;
        }
        if (r.data_file) {
            old_name = s->data_file_name;
            s->data_file_name = *r.data_file ? g_strdup(r.data_file) : NULL;
        }
        ret = rewrite_header(bs, errp);
        if (ret < 0) {
            s->autoclear_features = old_autoclear;
            if (r.data_file) {
                g_free(s->data_file_name);
                s->data_file_name = g_steal_pointer(&old_name);
            }
        }
        g_mutex_unlock(&s->lock);
        if (ret < 0) {
            return ret;
        }
    }
    if (r.backing_given &&
        (g_strcmp0(r.backing_file, bs->backing_file) ||
         g_strcmp0(r.backing_fmt, bs->backing_format))) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "Cannot amend the backing file\n"
                    "You can use 'qemu-img rebase' instead.");
        return -EINVAL;
    }
    ret = set_lazy_refcounts(bs, &r, errp);
    if (ret < 0) {
        return ret;
    }
    if (r.size && r.size != s->size &&
        (ret = qcow2_truncate_prealloc(bs, (int64_t)r.size,
                                       BDRV_PREALLOC_OFF, errp)) < 0) {
        return ret;
    }
    if (r.version < old_version) {
        return downgrade(bs, &progress, errp);
    }
    return 0;
}
