/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * qcow2 runtime options, with QEMU 7.2's names, rules and error texts:
 * cache-size, l2-cache-size, l2-cache-entry-size, refcount-cache-size,
 * cache-clean-interval, lazy-refcounts, pass-discard-request,
 * pass-discard-snapshot, pass-discard-other, and the overlap-check family
 * (parsed by qcow2-overlap.c).  (discard-no-unref came with QEMU 8.1 and
 * is not a 7.2 option.)
 *
 * Everything is validated before anything changes, so a bad option at
 * reopen leaves the node as it was.  A reopen merges the new options into
 * the ones in force by QEMU's rules: a new overlap-check or
 * overlap-check.template replaces every old overlap option, a new
 * cache-size replaces the old l2-/refcount-cache-size, and an old
 * cache-size is dropped when any cache size option remains and the
 * total is not new.
 *
 * Our caches hold whole tables (a cluster each); l2-cache-entry-size is
 * validated as QEMU does and the L2 cache then gets as many whole tables
 * as the requested memory holds, never fewer than two.
 */
#include <errno.h>
#include <string.h>
#include <sys/sysinfo.h>

#include "qcow2.h"

/* Without cache options: cover up to 32 MiB of L2 tables (QEMU's default
 * on Linux), at least 16 tables. */
#define QCOW2_L2_CACHE_MAX_BYTES (32 * 1024 * 1024)
#define QCOW2_MIN_CACHE_TABLES 16
/* QEMU's floors when sizes are given (tables / refcount blocks). */
#define QCOW2_MIN_L2_TABLES 2
#define QCOW2_MIN_REFCOUNT_TABLES 4
/* Our cache keeps one descriptor per slot up front: whatever a user asks
 * for, no cache gets more slots than 256 MiB of tables. */
#define QCOW2_MAX_CACHE_BYTES (256 * 1024 * 1024)
#define QCOW2_DEFAULT_L2_SETTING (32 * 1024 * 1024)

static const char *const rt_keys[] = {
    "cache-size", "l2-cache-size", "l2-cache-entry-size",
    "refcount-cache-size", "cache-clean-interval", "lazy-refcounts",
    "pass-discard-request", "pass-discard-snapshot", "pass-discard-other",
};

static bool is_overlap_key(const char *k)
{
    return !strcmp(k, "overlap-check") || g_str_has_prefix(k, "overlap-check.");
}

static bool is_rt_key(const char *k)
{
    for (size_t i = 0; i < G_N_ELEMENTS(rt_keys); i++) {
        if (!strcmp(k, rt_keys[i])) {
            return true;
        }
    }
    return is_overlap_key(k);
}

/* Moves the runtime keys out of `from` into a new set. */
static BlockOpts *take_rt_keys(BlockOpts *from)
{
    BlockOpts *mine = bdrv_opts_new();
    GHashTableIter it;
    gpointer k, v;

    if (!from) {
        return mine;
    }
    g_hash_table_iter_init(&it, from);
    while (g_hash_table_iter_next(&it, &k, &v)) {
        if (is_rt_key(k)) {
            bdrv_opts_set(mine, k, v);
            g_hash_table_iter_remove(&it);
        }
    }
    return mine;
}

static BlockOpts *copy_opts(BlockOpts *from, bool overlap_only)
{
    BlockOpts *copy = bdrv_opts_new();
    GHashTableIter it;
    gpointer k, v;

    if (from) {
        g_hash_table_iter_init(&it, from);
        while (g_hash_table_iter_next(&it, &k, &v)) {
            if (!overlap_only || is_overlap_key(k)) {
                bdrv_opts_set(copy, k, v);
            }
        }
    }
    return copy;
}

static bool get_size(BlockOpts *o, const char *key, uint64_t def,
                     uint64_t *out, GError **errp)
{
    const char *v = bdrv_opts_get(o, key);

    if (!v) {
        *out = def;
        return true;
    }
    if (!strata_parse_size(v, out)) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "Parameter '%s' expects a non-negative number below 2^64\n"
                    "Optional suffix k, M, G, T, P or E means kilo-, mega-, "
                    "giga-, tera-, peta-\nand exabytes, respectively.", key);
        return false;
    }
    return true;
}

/* Sizes in bytes from the three cache options, QEMU's rules and texts. */
static bool read_cache_sizes(BDRVQcow2State *s, BlockOpts *o,
                             uint64_t *l2_bytes, uint64_t *entry_size,
                             uint64_t *rc_bytes, GError **errp)
{
    uint64_t cs = s->cluster_size;
    uint64_t max_l2 = qcow2_align_up((s->size + cs - 1) / cs * 8, cs);
    uint64_t min_rc = QCOW2_MIN_REFCOUNT_TABLES * cs;
    bool has_total = bdrv_opts_get(o, "cache-size") != NULL;
    bool has_l2 = bdrv_opts_get(o, "l2-cache-size") != NULL;
    bool has_rc = bdrv_opts_get(o, "refcount-cache-size") != NULL;
    bool has_es = bdrv_opts_get(o, "l2-cache-entry-size") != NULL;
    uint64_t total, l2_setting;

    if (!get_size(o, "cache-size", 0, &total, errp) ||
        !get_size(o, "l2-cache-size", QCOW2_DEFAULT_L2_SETTING, &l2_setting,
                  errp) ||
        !get_size(o, "refcount-cache-size", 0, rc_bytes, errp) ||
        !get_size(o, "l2-cache-entry-size", cs, entry_size, errp)) {
        return false;
    }
    *l2_bytes = MIN(max_l2, l2_setting);
    if (has_total) {
        if (has_l2 && has_rc) {
            g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                        "cache-size, l2-cache-size and refcount-cache-size "
                        "may not be set at the same time");
            return false;
        }
        if (has_l2 && l2_setting > total) {
            g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                        "l2-cache-size may not exceed cache-size");
            return false;
        }
        if (*rc_bytes > total) {
            g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                        "refcount-cache-size may not exceed cache-size");
            return false;
        }
        if (has_l2) {
            *rc_bytes = total - *l2_bytes;
        } else if (has_rc) {
            *l2_bytes = total - *rc_bytes;
        } else if (total >= max_l2 + min_rc) {
            /* As much as the whole disk needs to L2, the rest refcounts. */
            *l2_bytes = max_l2;
            *rc_bytes = total - max_l2;
        } else {
            *rc_bytes = MIN(total, min_rc);
            *l2_bytes = total - *rc_bytes;
        }
    }
    /* A cache too small for the whole disk uses small entries in QEMU. */
    if (*l2_bytes < max_l2 && !has_es) {
        *entry_size = MIN(cs, 4096);
    }
    if (*entry_size < (1U << QCOW2_MIN_CLUSTER_BITS) || *entry_size > cs ||
        (*entry_size & (*entry_size - 1))) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "L2 cache entry size must be a power of two between %d "
                    "and the cluster size (%u)", 1 << QCOW2_MIN_CLUSTER_BITS,
                    s->cluster_size);
        return false;
    }
    return true;
}

/*
 * QEMU allocates each cache whole at open, so a size larger than the
 * machine could ever give (Linux's default overcommit rule: more than
 * its RAM and swap together in one allocation) fails there.  strata's
 * caches fill on demand and are capped, but refuse such a size alike:
 * the same option gives the same answer on both.
 */
static bool cache_fits_memory(uint64_t bytes)
{
    struct sysinfo si;

    if (sysinfo(&si) < 0) {
        return true;
    }
    return bytes / si.mem_unit <= (uint64_t)si.totalram + si.totalswap;
}

static int cap_tables(BDRVQcow2State *s, uint64_t n, uint64_t min)
{
    uint64_t max = MAX(QCOW2_MAX_CACHE_BYTES / s->cluster_size, min);

    return (int)CLAMP(n, min, max);
}

/* Our default: refcount blocks for every cluster the L2 tables can map,
 * plus a few for metadata, so a walk over the whole image reads each
 * block once instead of cycling through too small an LRU. */
static void default_cache_tables(BDRVQcow2State *s, int *l2, int *rc)
{
    uint64_t l2_tables = qcow2_l1_entries_for(s, s->size);
    uint64_t max_tables = QCOW2_L2_CACHE_MAX_BYTES / s->cluster_size;
    int n = (int)CLAMP(l2_tables, QCOW2_MIN_CACHE_TABLES, max_tables);
    int nr = (int)MIN((uint64_t)n * s->refcount_bits / 64 + 4,
                      (uint64_t)max_tables);

    *l2 = n;
    *rc = MAX(nr, QCOW2_MIN_CACHE_TABLES);
}

/* Validates the runtime options in o (not the overlap ones) into *r. */
static int parse_rt(BlockDriverState *bs, BlockOpts *o, int flags,
                    Qcow2RuntimeOpts *r, GError **errp)
{
    BDRVQcow2State *s = bs->opaque;
    bool sizes_given = bdrv_opts_get(o, "cache-size") ||
                       bdrv_opts_get(o, "l2-cache-size") ||
                       bdrv_opts_get(o, "refcount-cache-size");
    uint64_t l2_bytes, es, rc_bytes, l2_entries, rc_blocks;

    memset(r, 0, sizeof(*r));
    if (!read_cache_sizes(s, o, &l2_bytes, &es, &rc_bytes, errp)) {
        return -EINVAL;
    }
    l2_entries = MAX(l2_bytes / es, QCOW2_MIN_L2_TABLES);
    if (l2_entries > INT_MAX) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "L2 cache size too big");
        return -EINVAL;
    }
    rc_blocks = MAX(rc_bytes / s->cluster_size, QCOW2_MIN_REFCOUNT_TABLES);
    if (rc_blocks > INT_MAX) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "Refcount cache size too big");
        return -EINVAL;
    }
    if (!cache_fits_memory(l2_entries * es) ||
        !cache_fits_memory(rc_blocks * s->cluster_size)) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "Could not allocate metadata caches");
        return -ENOMEM;
    }
    r->l2_entry_size = (uint32_t)es;
    if (sizes_given) {
        /* The memory QEMU would spend, in whole tables. */
        uint64_t tables = (l2_entries * es + s->cluster_size - 1) /
                          s->cluster_size;
        r->l2_tables = cap_tables(s, tables, QCOW2_MIN_L2_TABLES);
        r->refcount_tables = cap_tables(s, rc_blocks,
                                        QCOW2_MIN_REFCOUNT_TABLES);
    } else {
        default_cache_tables(s, &r->l2_tables, &r->refcount_tables);
    }
    if (!bdrv_opts_get_number(o, "cache-clean-interval", 600,
                    &r->cache_clean_interval, errp)) {
        return -EINVAL;
    }
    if (r->cache_clean_interval > UINT_MAX) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "Cache clean interval too big");
        return -EINVAL;
    }
    if (!bdrv_opts_get_bool(o, "lazy-refcounts",
                            !!(s->compatible_features &
                               QCOW2_COMPAT_LAZY_REFCOUNTS),
                            &r->lazy_refcounts, errp) ||
        !bdrv_opts_get_bool(o, "pass-discard-request",
                            !(flags & (BDRV_O_CHECK | BDRV_O_IGNORE_DISCARD)),
                            &r->discard_request,
                            errp) ||
        !bdrv_opts_get_bool(o, "pass-discard-snapshot", true,
                            &r->discard_snapshot, errp) ||
        !bdrv_opts_get_bool(o, "pass-discard-other", false,
                            &r->discard_other, errp)) {
        return -EINVAL;
    }
    if (r->lazy_refcounts && s->version < 3) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "Lazy refcounts require a qcow2 image with at least "
                    "qemu 1.1 compatibility level");
        return -EINVAL;
    }
    return 0;
}

/* The overlap options are validated on a scratch state: nothing of the
 * node's own protection changes. */
static int validate_overlap(BlockDriverState *bs, BlockOpts *o, GError **errp)
{
    BDRVQcow2State *s = bs->opaque;
    g_autoptr(GHashTable) ol = copy_opts(o, true);
    Qcow2Overlap *keep = s->overlap;
    int ret;

    s->overlap = NULL;
    ret = qcow2_overlap_open_options(bs, ol, errp);
    qcow2_overlap_free(s);
    s->overlap = keep;
    return ret;
}

static void make_caches(BDRVQcow2State *s, const Qcow2RuntimeOpts *r)
{
    s->l2_cache = qcow2_cache_new(r->l2_tables, s->cluster_size,
                                  qcow2_before_l2_write);
    s->refcount_cache = qcow2_cache_new(r->refcount_tables, s->cluster_size,
                                        qcow2_before_refblock_write);
    qcow2_cache_set_overlap_type(s->l2_cache, QCOW2_OL_ACTIVE_L2);
    qcow2_cache_set_overlap_type(s->refcount_cache, QCOW2_OL_REFCOUNT_BLOCK);
    qcow2_cache_set_clean_interval(s->l2_cache, r->cache_clean_interval);
    qcow2_cache_set_clean_interval(s->refcount_cache,
                                   r->cache_clean_interval);
}

int qcow2_runtime_opts_open(BlockDriverState *bs, BlockOpts *options,
                            int flags, GError **errp)
{
    BDRVQcow2State *s = bs->opaque;
    g_autoptr(GHashTable) mine = take_rt_keys(options);
    g_autoptr(GHashTable) ol = copy_opts(mine, true);
    Qcow2RuntimeOpts r;
    int ret;

    ret = parse_rt(bs, mine, flags, &r, errp);
    if (ret < 0) {
        return ret;
    }
    ret = qcow2_overlap_open_options(bs, ol, errp);
    if (ret < 0) {
        return ret;
    }
    s->rt = r;
    make_caches(s, &r);
    s->rt_opts = g_steal_pointer(&mine);
    return 0;
}

/* QEMU's rules for merging reopen options into the ones in force. */
static BlockOpts *join_opts(BlockOpts *old, BlockOpts *new_opts)
{
    BlockOpts *merged = copy_opts(new_opts, false);
    g_autoptr(GHashTable) prev = copy_opts(old, false);
    bool new_overlap = bdrv_opts_get(new_opts, "overlap-check") ||
                       bdrv_opts_get(new_opts, "overlap-check.template");
    bool new_total = bdrv_opts_get(new_opts, "cache-size") != NULL;
    GHashTableIter it;
    gpointer k, v;

    g_hash_table_iter_init(&it, prev);
    while (g_hash_table_iter_next(&it, &k, &v)) {
        if ((new_overlap && is_overlap_key(k)) ||
            (new_total && (!strcmp(k, "l2-cache-size") ||
                           !strcmp(k, "refcount-cache-size")))) {
            continue;
        }
        if (!bdrv_opts_get(merged, k)) {
            bdrv_opts_set(merged, k, v);
        }
    }
    if (!new_total && (bdrv_opts_get(merged, "cache-size") ||
                       bdrv_opts_get(merged, "l2-cache-size") ||
                       bdrv_opts_get(merged, "refcount-cache-size"))) {
        g_hash_table_remove(merged, "cache-size");
    }
    return merged;
}

/* Under the locks: switches the node to r (and the overlap options in
 * merged).  Only the write-back of the old caches can fail. */
static int apply_reopen(BlockDriverState *bs, BlockOpts *merged,
                        const Qcow2RuntimeOpts *r, GError **errp)
{
    BDRVQcow2State *s = bs->opaque;
    g_autoptr(GHashTable) ol = copy_opts(merged, true);
    int ret;

    if (s->rt.lazy_refcounts && !r->lazy_refcounts) {
        ret = qcow2_mark_clean(bs);
        if (ret < 0) {
            g_set_error(errp, BDRV_ERROR, BDRV_ERROR_IO,
                        "Failed to disable lazy refcounts: %s",
                        g_strerror(-ret));
            return ret;
        }
    }
    ret = qcow2_write_back_metadata(bs);
    if (ret < 0) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_IO,
                    "Failed to flush the L2 table cache: %s",
                    g_strerror(-ret));
        return ret;
    }
    /* Validated already: this cannot fail. */
    ret = qcow2_overlap_open_options(bs, ol, errp);
    if (ret < 0) {
        return ret;
    }
    qcow2_cache_destroy(s->l2_cache);
    qcow2_cache_destroy(s->refcount_cache);
    make_caches(s, r);
    s->rt = *r;
    return 0;
}

int qcow2_runtime_opts_reopen(BlockDriverState *bs, BlockOpts *opts,
                              bool commit, GError **errp)
{
    BDRVQcow2State *s = bs->opaque;
    g_autoptr(GHashTable) given = take_rt_keys(opts);
    g_autoptr(GHashTable) merged = join_opts(s->rt_opts, given);
    Qcow2RuntimeOpts r;
    int ret;

    ret = parse_rt(bs, merged, bs->open_flags, &r, errp);
    if (ret == 0) {
        ret = validate_overlap(bs, merged, errp);
    }
    if (ret < 0 || !commit) {
        return ret;
    }
    g_rw_lock_writer_lock(&s->free_lock);
    g_mutex_lock(&s->lock);
    ret = apply_reopen(bs, merged, &r, errp);
    g_mutex_unlock(&s->lock);
    g_rw_lock_writer_unlock(&s->free_lock);
    if (ret == 0) {
        g_clear_pointer(&s->rt_opts, g_hash_table_unref);
        s->rt_opts = g_steal_pointer(&merged);
    }
    return ret;
}

void qcow2_runtime_opts_free(BDRVQcow2State *s)
{
    g_clear_pointer(&s->rt_opts, g_hash_table_unref);
}
