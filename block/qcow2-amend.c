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
 * backing file, into unallocated clusters, which read zeroes too) before
 * the header says version 2.  refcount_bits changes are refused.
 */
#include <errno.h>
#include <string.h>

#include "block/log.h"
#include "qcow2.h"
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
    if (bdrv_opts_get(opts, "data_file")) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "data-file can only be set for images that use an "
                    "external data file");
        return false;
    }
    if ((v = bdrv_opts_get(opts, "data_file_raw")) &&
        (!strcmp(v, "on") || !strcmp(v, "true"))) {
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
            qcow2_free_unreferenced(bs, new_off, new_size);
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
        qcow2_free_unreferenced(bs, old_off, old_size);
        if (qcow2_write_back_metadata(bs) < 0) {
            strata_warning("Could not free the old snapshot table");
        }
        qcow2_overlap_invalidate(s);
    }
    return 0;
}

/* Is any entry of the L2 table at l2_off a zero cluster? */
static int l2_has_zero(BlockDriverState *bs, uint64_t l2_off, bool *found)
{
    BDRVQcow2State *s = bs->opaque;
    void *t;
    int ret = qcow2_cache_get(bs, s->l2_cache, l2_off, &t);

    if (ret < 0) {
        return ret;
    }
    *found = false;
    for (uint32_t i = 0; i < s->l2_size && !*found; i++) {
        uint64_t e = GUINT64_FROM_BE(((uint64_t *)t)[i]);
        Qcow2ClusterType type = qcow2_get_cluster_type(e);
        *found = type == QCOW2_CLUSTER_ZERO_PLAIN ||
                 type == QCOW2_CLUSTER_ZERO_ALLOC;
    }
    return 0;
}

/*
 * Internal snapshots whose trees hold zero clusters would read wrong
 * data under version 2; QEMU expands those too, strata refuses.
 */
static int snapshots_have_zero(BlockDriverState *bs, bool *found,
                               GError **errp)
{
    BDRVQcow2State *s = bs->opaque;
    int ret = 0;

    *found = false;
    for (uint32_t i = 0; i < s->nb_snapshots && !*found && ret == 0; i++) {
        g_autofree uint64_t *l1 = NULL;
        uint32_t n;

        ret = qcow2_sn_read_l1(bs, &s->snapshots[i], 0, &l1, &n, errp);
        for (uint32_t j = 0; ret == 0 && j < n && !*found; j++) {
            if (l1[j] & L1E_OFFSET_MASK) {
                ret = l2_has_zero(bs, l1[j] & L1E_OFFSET_MASK, found);
            }
        }
    }
    return ret;
}

/* The guest offset of the first zero cluster of the active image at or
 * after *pos; *pos = UINT64_MAX when there is none. */
static int next_zero_cluster(BlockDriverState *bs, uint64_t *pos)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t span = (uint64_t)s->cluster_size * s->l2_size;

    while (*pos < s->size) {
        uint64_t l1i = *pos / span, l2_off;
        void *t;
        int ret;

        l2_off = l1i < s->l1_size ? s->l1_table[l1i] & L1E_OFFSET_MASK : 0;
        if (!l2_off) {
            *pos = (l1i + 1) * span;
            continue;
        }
        ret = qcow2_cache_get(bs, s->l2_cache, l2_off, &t);
        if (ret < 0) {
            return ret;
        }
        for (uint64_t i = (*pos % span) >> s->cluster_bits; i < s->l2_size;
             i++) {
            uint64_t e = GUINT64_FROM_BE(((uint64_t *)t)[i]);
            Qcow2ClusterType type = qcow2_get_cluster_type(e);
            if (type == QCOW2_CLUSTER_ZERO_PLAIN ||
                type == QCOW2_CLUSTER_ZERO_ALLOC) {
                *pos = l1i * span + (i << s->cluster_bits);
                return *pos < s->size ? 0 : (*pos = UINT64_MAX, 0);
            }
        }
        *pos = (l1i + 1) * span;
    }
    *pos = UINT64_MAX;
    return 0;
}

/*
 * Version 2 has no zero flag: each zero cluster becomes unallocated
 * (nothing below it, so it still reads zeroes) or, over a backing file,
 * a data cluster of zeroes.  Called without the locks.
 */
static int expand_zero_clusters(BlockDriverState *bs)
{
    BDRVQcow2State *s = bs->opaque;
    g_autofree uint8_t *zeroes = g_malloc0(s->cluster_size);
    uint64_t pos = 0;
    int ret = 0;

    for (;;) {
        g_mutex_lock(&s->lock);
        ret = next_zero_cluster(bs, &pos);
        if (ret == 0 && pos != UINT64_MAX && !bs->backing) {
            ret = qcow2_discard_unmap(bs, pos, s->cluster_size);
        }
        g_mutex_unlock(&s->lock);
        if (ret < 0 || pos == UINT64_MAX) {
            break;
        }
        if (bs->backing) {
            ret = qcow2_pwrite(bs, pos, MIN(s->cluster_size, s->size - pos),
                               zeroes);
            if (ret < 0) {
                break;
            }
        }
        pos += s->cluster_size;
    }
    g_mutex_lock(&s->lock);
    if (ret == 0) {
        ret = qcow2_write_back_metadata(bs);
    }
    if (ret == 0) {
        ret = bdrv_flush(bs->file);
    }
    g_mutex_unlock(&s->lock);
    return ret;
}

static int downgrade_checks(BlockDriverState *bs, GError **errp)
{
    BDRVQcow2State *s = bs->opaque;
    bool zero = false;
    int ret;

    if (s->refcount_order != 4) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_NOT_SUPPORTED,
                    "compat=0.10 requires refcount_bits=16");
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
    g_mutex_lock(&s->lock);
    ret = snapshots_have_zero(bs, &zero, errp);
    g_mutex_unlock(&s->lock);
    if (ret == 0 && zero) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_NOT_SUPPORTED,
                    "Cannot downgrade: internal snapshots hold zero "
                    "clusters (not supported by strata)");
        ret = -ENOTSUP;
    }
    return ret;
}

static int downgrade(BlockDriverState *bs, GError **errp)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t compat = s->compatible_features, autoclear = s->autoclear_features;
    int ret = downgrade_checks(bs, errp);

    if (ret < 0) {
        return ret;
    }
    ret = expand_zero_clusters(bs);
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

int qcow2_amend(BlockDriverState *bs, BlockOpts *opts, bool force,
                GError **errp)
{
    BDRVQcow2State *s = bs->opaque;
    AmendRequest r = { 0 };
    int old_version = s->version;
    int ret;

    (void)force;   /* only LUKS options, which strata refuses, use it */
    if (!parse_request(bs, opts, &r, errp)) {
        return -EINVAL;
    }
    if (r.version > old_version) {
        g_mutex_lock(&s->lock);
        ret = upgrade(bs, errp);
        g_mutex_unlock(&s->lock);
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
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_NOT_SUPPORTED,
                    "Changing refcount_bits of an existing image is not "
                    "supported by strata");
        return -ENOTSUP;
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
        return downgrade(bs, errp);
    }
    return 0;
}
