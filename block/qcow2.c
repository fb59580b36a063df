/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The qcow2 format driver: open/close, flush, resize, information, and the
 * BlockDriver table.  The format's pieces live in qcow2-header.c (cluster
 * 0), qcow2-cluster.c (guest I/O), qcow2-refcount.c (allocation),
 * qcow2-cache.c, qcow2-snapshot.c, qcow2-check.c and qcow2-create.c.
 */
#include <errno.h>
#include <string.h>

#include "block/log.h"
#include "qcow2.h"
#include "qcow2-bitmap.h"
#include "byteorder.h"
#include "block/drivers.h"


/* Like QEMU: the magic and any version from 2 up (all 32 bits of it), so
 * an unsupported version is refused by open instead of probing as raw. */
static int qcow2_probe(const uint8_t *buf, int buf_size, const char *filename)
{
    if (buf_size >= 8 && be32_read(buf) == QCOW_MAGIC &&
        be32_read(buf + 4) >= 2) {
        return 100;
    }
    return 0;
}

static void qcow2_free_state(BlockDriverState *bs, BDRVQcow2State *s)
{
    qcow2_intent_close(bs);
    qcow2_cache_destroy(s->l2_cache);
    qcow2_cache_destroy(s->refcount_cache);
    s->l2_cache = s->refcount_cache = NULL;
    qcow2_free_snapshots(s);
    g_clear_pointer(&s->sn_damage, g_free);
    qcow2_overlap_free(s);
    qcow2_runtime_opts_free(s);
    if (s->data_file) {
        bdrv_unref(s->data_file);
        s->data_file = NULL;
    }
    g_clear_pointer(&s->data_file_name, g_free);
    qcow2_bitmaps_free(s);
    qcow2_crypto_close(s);
    g_free(s->l1_table);
    g_free(s->refcount_table);
    g_free(s->unknown_header_fields);
    if (s->unknown_exts) {
        g_ptr_array_free(s->unknown_exts, TRUE);
    }
    if (s->pending_frees) {
        g_array_free(s->pending_frees, TRUE);
    }
    if (s->pending_punches) {
        g_array_free(s->pending_punches, TRUE);
    }
    g_mutex_clear(&s->lock);
    g_rw_lock_clear(&s->free_lock);
    g_cond_clear(&s->alloc_cond);
}

static bool has_keys_under(BlockOpts *options, const char *prefix)
{
    g_autofree char *dot = g_strdup_printf("%s.", prefix);
    GHashTableIter it;
    gpointer k, v;

    g_hash_table_iter_init(&it, options);
    while (g_hash_table_iter_next(&it, &k, &v)) {
        if (g_str_has_prefix(k, dot)) {
            return true;
        }
    }
    return false;
}

/*
 * The external data file, with QEMU 7.2's rules and texts: the
 * "data-file" option (a node name, else a file name; or data-file.*
 * keys) wins over the name the header records.  The data file is a
 * plain file opened in the image's mode.  An image without incompatible
 * bit 2 takes no data file and must not claim a raw one.
 */
static int qcow2_open_data_file(BlockDriverState *bs, BlockOpts *options,
                                int flags, GError **errp)
{
    BDRVQcow2State *s = bs->opaque;
    g_autofree char *ref = g_strdup(bdrv_opts_get(options, "data-file"));
    bool sub = has_keys_under(options, "data-file");
    int cflags = flags & ~(BDRV_O_CHECK | BDRV_O_PROBED);

    g_hash_table_remove(options, "data-file");
    /* As QEMU: a describe-only open (info) leaves the data file alone,
     * so no error about it either. */
    if (flags & BDRV_O_NO_IO) {
        g_autoptr(GHashTable) sub_opts =
            bdrv_opts_extract_prefix(options, "data-file");
        s->data_file_skipped = qcow2_has_data_file(s);
        return 0;
    }
    if (!qcow2_has_data_file(s)) {
        if (ref || sub) {
            g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                        "'data-file' can only be set for images with an "
                        "external data file");
            return -EINVAL;
        }
        if (s->autoclear_features & QCOW2_AUTOCLEAR_DATA_FILE_RAW) {
            g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                        "data-file-raw requires a data file");
            return -EINVAL;
        }
        return 0;
    }
    if (ref && *ref) {
        BlockDriverState *node = bdrv_find_node(ref);
        if (node) {
            bdrv_ref(node);
            s->data_file = node;
            return 0;
        }
        s->data_file = bdrv_open_named_child(ref, options, "data-file",
                                             cflags, errp);
    } else if (sub) {
        s->data_file = bdrv_open_named_child(NULL, options, "data-file",
                                             cflags, errp);
    } else if (s->data_file_name) {
        /* As QEMU 7.2 opens it: the name as recorded, so a relative one
         * is relative to the current directory (iotest 061 shows it). */
        s->data_file = bdrv_open_named_child(s->data_file_name, options,
                                             "data-file", cflags, errp);
    } else {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "'data-file' is required for this image");
        return -EINVAL;
    }
    return s->data_file ? 0 : -EINVAL;
}

static int qcow2_open(BlockDriverState *bs, BlockOpts *options, int flags,
                      GError **errp)
{
    BDRVQcow2State *s = bs->opaque;
    int ret;

    g_mutex_init(&s->lock);
    g_rw_lock_init(&s->free_lock);
    g_cond_init(&s->alloc_cond);
    s->pending_frees = g_array_new(FALSE, FALSE, sizeof(uint64_t));
    s->pending_punches = g_array_new(FALSE, FALSE, sizeof(uint64_t));

    /* A pending crash-atomic transaction is completed (or dropped) first:
     * recovery may rewrite the header the rest of the open reads. */
    ret = qcow2_intent_open(bs, flags, errp);
    if (ret < 0) {
        goto fail;
    }
    ret = qcow2_read_header(bs, flags, errp);
    if (ret < 0) {
        goto fail;
    }
    ret = qcow2_open_data_file(bs, options, flags, errp);
    if (ret < 0) {
        goto fail;
    }
    ret = qcow2_crypto_open(bs, options, flags, errp);
    if (ret < 0) {
        goto fail;
    }
    ret = qcow2_runtime_opts_open(bs, options, flags, errp);
    if (ret < 0) {
        goto fail;
    }
    ret = qcow2_read_snapshots(bs, errp);
    if (ret < 0) {
        goto fail;
    }
    ret = qcow2_snapshot_open_options(bs, options, flags, errp);
    if (ret < 0) {
        goto fail;
    }
    /* Autoclear bits we do not maintain must be cleared once we write;
     * data_file_raw we keep true (zero writes reach the data file), the
     * bitmaps bit too (qcow2-bitmap.c keeps them up to date).  A stale
     * bitmaps extension is dropped, as QEMU does. */
    uint64_t keep = (qcow2_has_data_file(s) ? QCOW2_AUTOCLEAR_DATA_FILE_RAW
                                            : 0) |
                    qcow2_bitmaps_autoclear(s);
    if ((flags & BDRV_O_RDWR) && ((s->autoclear_features & ~keep) ||
                                  qcow2_bitmaps_ext_dropped(s))) {
        s->autoclear_features &= keep;
        ret = qcow2_write_header(bs, errp);
        if (ret < 0) {
            goto fail;
        }
    }
    ret = qcow2_bitmaps_open(bs, flags, errp);
    if (ret < 0) {
        goto fail;
    }
    ret = qcow2_repair_dirty(bs, flags, errp);
    if (ret < 0) {
        goto fail;
    }
    return 0;

fail:
    qcow2_free_state(bs, s);
    return ret;
}

/* guest: a guest's flush (lazy refcounts may keep refcount blocks back);
 * otherwise everything is written and a dirty bit we set is cleared. */
static int qcow2_flush_metadata(BlockDriverState *bs, bool guest)
{
    BDRVQcow2State *s = bs->opaque;
    int ret;

    /* free_lock first: applying frees must not race data requests. */
    g_rw_lock_writer_lock(&s->free_lock);
    g_mutex_lock(&s->lock);
    ret = guest ? qcow2_lazy_write_back(bs) : qcow2_write_back_metadata(bs);
    if (ret == 0 && !guest) {
        ret = qcow2_mark_clean(bs);
    }
    if (ret == 0) {
        qcow2_punch_pending(bs);
    }
    g_mutex_unlock(&s->lock);
    g_rw_lock_writer_unlock(&s->free_lock);
    return ret;
}

/*
 * The close's report, in QEMU's words and order: QEMU's close writes each
 * cache (L2 tables first) and syncs the file after each, and names every
 * cache whose write or sync failed.  The write-back already happened
 * (err is its result); a cache that still holds dirty entries failed
 * with err, a clean one gets its sync here.  A sync with nothing written
 * since the last one costs nothing (file-posix), so a clean close pays
 * at most one fdatasync more, which QEMU's close pays too.
 */
static void close_sync_and_report(BlockDriverState *bs, int err)
{
    BDRVQcow2State *s = bs->opaque;
    const char *prog = g_get_prgname();
    g_autofree char *prefix = g_strdup_printf("%s%s", prog ? prog : "",
                                              prog ? ": " : "");
    int l2_err = qcow2_cache_has_dirty(s->l2_cache) ? err : 0;
    int rb_err;

    if (l2_err == 0) {
        l2_err = bdrv_flush(bs->file);
    }
    rb_err = qcow2_cache_has_dirty(s->refcount_cache) ? err : 0;
    if (rb_err == 0) {
        rb_err = bdrv_flush(bs->file);
    }
    if (l2_err < 0) {
        strata_error("%sFailed to flush the L2 table cache: %s", prefix,
                     g_strerror(-l2_err));
    }
    if (rb_err < 0) {
        strata_error("%sFailed to flush the refcount block cache: %s",
                     prefix, g_strerror(-rb_err));
    }
}

/* Bitmaps that cannot be stored stay "in use" on disk: inconsistent,
 * never stale.  Said as QEMU says it. */
static void store_bitmaps(BlockDriverState *bs)
{
    g_autoptr(GError) err = NULL;

    if (qcow2_bitmaps_store(bs, &err) < 0) {
        const char *prog = g_get_prgname();
        strata_error("%s%sLost persistent bitmaps during inactivation of "
                     "node '%s': %s", prog ? prog : "", prog ? ": " : "",
                     bdrv_get_node_name(bs), err ? err->message : "");
    }
}

static void qcow2_close(BlockDriverState *bs)
{
    BDRVQcow2State *s = bs->opaque;
    int ret;

    qcow2_snapshot_close(bs);
    /* An image marked corrupt takes no more writes, the close's included
     * (QEMU drops the driver): its bitmaps stay in use, and what the
     * caches hold is not written, nor is its loss reported again. */
    if (!bs->read_only && !s->broken) {
        store_bitmaps(bs);
        ret = qcow2_flush_metadata(bs, false);
        close_sync_and_report(bs, ret);
    }
    qcow2_free_state(bs, s);
}

/* Without s->lock or free_lock: applies the queued frees the way a guest
 * flush does (the pointers' removal synced first). */
int qcow2_reclaim_frees(BlockDriverState *bs)
{
    return qcow2_flush_metadata(bs, true);
}

static int qcow2_flush(BlockDriverState *bs)
{
    BDRVQcow2State *s = bs->opaque;
    int ret = 0;

    /* Data before the metadata that points at it. */
    if (s->data_file) {
        ret = bdrv_flush(s->data_file);
        if (ret < 0) {
            return ret;
        }
    }
    ret = qcow2_flush_metadata(bs, true);

    /* The generic layer syncs the file right after this.  Syncing here,
     * under the lock, lets the refcount bookkeeping know, so the next L2
     * write does not sync again (and the generic sync finds nothing new
     * to sync). */
    g_mutex_lock(&s->lock);
    if (ret == 0 && s->refcounts_unsynced) {
        ret = bdrv_flush(bs->file);
        if (ret == 0) {
            s->refcounts_unsynced = false;
        }
    }
    g_mutex_unlock(&s->lock);
    return ret;
}

static int qcow2_reopen(BlockDriverState *bs, bool read_only, GError **errp)
{
    BDRVQcow2State *s = bs->opaque;
    int ret = 0;

    if (!read_only && s->snapshot_loaded) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "Cannot make the image writable: a snapshot is loaded "
                    "in place of it");
        return -EINVAL;
    }

    if (read_only) {
        ret = qcow2_bitmaps_store(bs, errp);
        if (ret == 0) {
            ret = qcow2_flush_metadata(bs, false);
            if (ret < 0) {
                g_set_error(errp, BDRV_ERROR, BDRV_ERROR_IO,
                            "Could not write back metadata: %s",
                            g_strerror(-ret));
            }
        }
    }
    /* The data file follows the image's mode. */
    if (ret == 0 && s->data_file &&
        !bdrv_reopen_set_read_only(s->data_file, read_only, errp)) {
        ret = -EACCES;
    }
    /* Writable (again, if going read-only failed): the bitmaps are
     * loaded and marked in use, the file already being writable. */
    if (!read_only && ret == 0) {
        ret = qcow2_bitmaps_open(bs, bs->open_flags | BDRV_O_RDWR, errp);
    } else if (read_only && ret < 0) {
        qcow2_bitmaps_open(bs, bs->open_flags | BDRV_O_RDWR, NULL);
    }
    return ret;
}

static int64_t qcow2_getlength(BlockDriverState *bs)
{
    BDRVQcow2State *s = bs->opaque;

    return (int64_t)s->size;
}

/* Grow or shrink without preallocation (qcow2-resize.c). */
int qcow2_truncate(BlockDriverState *bs, int64_t size, GError **errp)
{
    return qcow2_truncate_prealloc(bs, size, BDRV_PREALLOC_OFF, errp);
}

/*
 * QEMU's guess that an image was preallocated with holes in its file:
 * qcow2 counts clearly more clusters in use than the file has allocated
 * (at least max(10/9 of them, 2 more)).  qemu-img map then asks the file
 * whether data clusters read zeroes; we report the same guess so that
 * strata-img map prints the same map.
 */
static bool qcow2_data_may_be_sparse(BlockDriverState *bs)
{
    BDRVQcow2State *s = bs->opaque;
    int64_t file_len = bdrv_getlength(bs->file);
    int64_t real = bdrv_get_allocated_file_size(bs->file);
    int64_t real_clusters, threshold, end, used = 0;

    if (file_len < 0 || real < 0) {
        return false;
    }
    real_clusters = real / s->cluster_size;
    threshold = MAX(real_clusters * 10 / 9, real_clusters + 2);
    end = (file_len + s->cluster_size - 1) / s->cluster_size;
    g_mutex_lock(&s->lock);
    for (int64_t i = 0; i < end && used < threshold; i++) {
        uint64_t t = (uint64_t)i >> s->refblock_bits;
        uint64_t refcount = 0;

        /* Only clusters with a refcount block can count, so the walk
         * costs what the refcount structure holds, not the file's length
         * (a guest write through a bad L2 entry can make a sparse file
         * of petabytes). */
        if (t >= s->refcount_table_size || end - i < threshold - used) {
            break;
        }
        if (!(s->refcount_table[t] & REFT_OFFSET_MASK)) {
            i = (int64_t)(((t + 1) << s->refblock_bits) - 1);
            continue;
        }
        if (qcow2_get_refcount(bs, i, &refcount) < 0) {
            break;
        }
        used += refcount != 0;
    }
    g_mutex_unlock(&s->lock);
    return used >= threshold;
}

static int qcow2_get_info(BlockDriverState *bs, BlockDriverInfo *bdi)
{
    BDRVQcow2State *s = bs->opaque;

    bdi->cluster_size = s->cluster_size;
    bdi->is_dirty = !!(s->incompatible_features & QCOW2_INCOMPAT_DIRTY);
    bdi->unallocated_reads_zero = !bs->backing;
    bdi->data_may_be_sparse = qcow2_data_may_be_sparse(bs);
    /* As QEMU's guess: preallocation maps every L2 table, so the first
     * one tells; its clusters hold zeroes that decrypt to garbage. */
    bdi->no_zero_init = s->crypt_method && s->l1_size > 0 &&
                        s->l1_table[0] != 0;
    return 0;
}

static void qcow2_get_specific_info(BlockDriverState *bs,
                                    BlockSpecificInfo *info)
{
    BDRVQcow2State *s = bs->opaque;

    info->type = "qcow2";
    info->compat = s->version >= 3 ? "1.1" : "0.10";
    info->compression_type = s->compression_type ? "zstd" : "zlib";
    info->lazy_refcounts =
        !!(s->compatible_features & QCOW2_COMPAT_LAZY_REFCOUNTS);
    info->refcount_bits = s->refcount_bits;
    info->corrupt = !!(s->incompatible_features & QCOW2_INCOMPAT_CORRUPT);
    info->extended_l2 = qcow2_has_subclusters(s);
    info->has_data_file_raw = qcow2_has_data_file(s);
    info->data_file = qcow2_has_data_file(s) ? s->data_file_name : NULL;
    info->data_file_raw = qcow2_data_file_raw(s);
    info->encrypt_format = s->crypt_method == QCOW2_CRYPT_AES ? "aes" :
                           s->crypt_method == QCOW2_CRYPT_LUKS ? "luks" : NULL;
    info->luks = qcow2_crypto_luks_info(bs);
    if (s->key_secret_id) {
        info->key_secret_opt = "encrypt.key-secret";
        info->key_secret = s->key_secret_id;
    }
}

/*
 * Backing file name and format live in cluster 0: the new values go into
 * the in-memory state and the whole header cluster is rewritten in one
 * write (the commit point); on failure the old values are restored.
 */
static int qcow2_change_backing_file(BlockDriverState *bs,
                                     const char *backing_file,
                                     const char *backing_fmt, GError **errp)
{
    BDRVQcow2State *s = bs->opaque;
    char *old_file = bs->backing_file;
    char *old_fmt = bs->backing_format;
    int ret;

    if (backing_file && strlen(backing_file) > QCOW2_MAX_BACKING_NAME) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "Backing file name too long (more than %d bytes)",
                    QCOW2_MAX_BACKING_NAME);
        return -EINVAL;
    }
    if (backing_fmt && strlen(backing_fmt) >= 16) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "Backing format name '%s' too long", backing_fmt);
        return -EINVAL;
    }
    g_mutex_lock(&s->lock);
    bs->backing_file = backing_file && *backing_file ?
                       g_strdup(backing_file) : NULL;
    bs->backing_format = bs->backing_file && backing_fmt && *backing_fmt ?
                         g_strdup(backing_fmt) : NULL;
    ret = qcow2_write_header(bs, errp);
    if (ret < 0) {
        g_free(bs->backing_file);
        g_free(bs->backing_format);
        bs->backing_file = old_file;
        bs->backing_format = old_fmt;
    } else {
        g_free(old_file);
        g_free(old_fmt);
    }
    g_mutex_unlock(&s->lock);
    return ret;
}

/*
 * Empties the active layer: every L1 entry is cleared, so reads go to the
 * backing file.  Every data cluster the active tree reaches loses the
 * active tree's reference; so does every L2 table (freed if only we had
 * it, kept for the internal snapshots that share it otherwise).
 * Order: metadata written back first (so no dirty table is dropped), the
 * clusters to free are collected without changing anything, then the L1
 * table is written without pointers (the commit point), and only then do
 * the refcounts go down.  A failure before the L1 write changes nothing.
 */
static int qcow2_make_empty(BlockDriverState *bs, GError **errp)
{
    BDRVQcow2State *s = bs->opaque;
    g_autoptr(GArray) frees = g_array_new(FALSE, FALSE, sizeof(uint64_t));
    g_autoptr(GArray) owned_l2 = g_array_new(FALSE, FALSE, sizeof(uint64_t));
    g_autofree uint64_t *l1 = NULL;
    int ret;

    /* the whole disk now reads from the backing file */
    qcow2_bitmaps_mark_all(bs);
    g_rw_lock_writer_lock(&s->free_lock);
    g_mutex_lock(&s->lock);
    ret = qcow2_write_back_metadata(bs);
    for (uint32_t i = 0; ret == 0 && i < s->l1_size; i++) {
        uint64_t l2_off = s->l1_table[i] & L1E_OFFSET_MASK;
        uint64_t refcount = 0;
        uint64_t *l2;

        if (!l2_off) {
            continue;
        }
        g_array_append_val(frees, l2_off);
        ret = qcow2_get_refcount(bs, l2_off >> s->cluster_bits, &refcount);
        if (ret < 0) {
            break;
        }
        /* The active tree counts once on every data cluster it reaches,
         * even through a table shared with a snapshot: drop all those. */
        ret = qcow2_cache_get(bs, s->l2_cache, l2_off, (void **)&l2);
        if (ret < 0) {
            break;
        }
        if (refcount == 1) {
            g_array_append_val(owned_l2, l2_off);
        }
        for (uint32_t j = 0; j < s->l2_size; j++) {
            uint64_t e = qcow2_l2_get(s, l2, j);
            uint64_t off, len;
            switch (qcow2_get_cluster_type(e)) {
                case QCOW2_CLUSTER_NORMAL:
            case QCOW2_CLUSTER_ZERO_ALLOC:
                /* data file clusters have no refcount to drop */
                if (qcow2_has_data_file(s)) {
                    break;
                }
                off = e & L2E_OFFSET_MASK;
                g_array_append_val(frees, off);
                break;
            case QCOW2_CLUSTER_COMPRESSED:
                qcow2_compressed_range(s, e, &off, &len);
                for (uint64_t c = qcow2_cluster_start(s, off); c < off + len;
                     c += s->cluster_size) {
                    g_array_append_val(frees, c);
                }
                break;
            default:
                break;
            }
        }
    }
    if (ret == 0) {
        l1 = g_new0(uint64_t, MAX(s->l1_size, 1));
        bdrv_debug_event(bs->file, "l1_update");
        ret = qcow2_overlap_pwrite(bs, QCOW2_OL_ACTIVE_L1, s->l1_table_offset,
                                   (int64_t)s->l1_size * 8, l1);
    }
    if (ret == 0) {
        ret = bdrv_flush(bs->file);
    }
    if (ret == 0) {
        memset(s->l1_table, 0, (size_t)s->l1_size * 8);
        qcow2_overlap_invalidate(s);
        for (guint i = 0; i < owned_l2->len; i++) {
            qcow2_cache_discard(s->l2_cache,
                                g_array_index(owned_l2, uint64_t, i));
        }
        /* QEMU discards them as a snapshot operation's leftovers */
        for (guint i = 0; i < frees->len; i++) {
            qcow2_free_cluster_for(bs, g_array_index(frees, uint64_t, i),
                                   QCOW2_FREE_SNAPSHOT);
        }
        ret = qcow2_write_back_metadata(bs);
    }
    /* and truncates a file left with nothing else in use; here the free
     * tail goes, once the lowered counts are durable */
    if (ret == 0 && bdrv_flush(bs->file) == 0) {
        qcow2_cut_free_tail(bs);
    }
    g_mutex_unlock(&s->lock);
    g_rw_lock_writer_unlock(&s->free_lock);
    if (ret < 0) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_IO,
                    "Failed to empty %s: %s", bdrv_get_filename(bs),
                    g_strerror(-ret));
    }
    return ret;
}

static bool qcow2_has_child(BlockDriverState *bs, BlockDriverState *node)
{
    BDRVQcow2State *s = bs->opaque;

    return s->data_file == node;
}

/* A repair may change any table in place: the overlap index follows. */
static int qcow2_check_and_reindex(BlockDriverState *bs, BdrvCheckResult *res,
                                   BdrvCheckMode fix)
{
    BDRVQcow2State *s = bs->opaque;
    int ret = qcow2_check(bs, res, fix);

    g_mutex_lock(&s->lock);
    qcow2_overlap_invalidate(s);
    s->free_byte_offset = 0;   /* a repair may have freed its cluster */
    g_mutex_unlock(&s->lock);
    return ret;
}

/* Version 2 has no autoclear bits to say bitmaps can be trusted. */
static bool qcow2_supports_bitmaps(BlockDriverState *bs)
{
    BDRVQcow2State *s = bs->opaque;

    return s->version >= 3;
}

/* Guest writes in all their forms mark the enabled bitmaps first: a
 * write that fails half way may still have changed the disk. */
static int qcow2_pwrite_marked(BlockDriverState *bs, int64_t offset,
                               int64_t bytes, const void *buf)
{
    qcow2_bitmaps_mark(bs, offset, bytes);
    return qcow2_pwrite(bs, offset, bytes, buf);
}

static int qcow2_pwrite_zeroes_marked(BlockDriverState *bs, int64_t offset,
                                      int64_t bytes, int flags)
{
    qcow2_bitmaps_mark(bs, offset, bytes);
    return qcow2_pwrite_zeroes(bs, offset, bytes, flags);
}

static int qcow2_pwrite_compressed_marked(BlockDriverState *bs,
                                          int64_t offset, int64_t bytes,
                                          const void *buf)
{
    qcow2_bitmaps_mark(bs, offset, bytes);
    return qcow2_pwrite_compressed(bs, offset, bytes, buf);
}

static int qcow2_pdiscard_marked(BlockDriverState *bs, int64_t offset,
                                 int64_t bytes)
{
    qcow2_bitmaps_mark(bs, offset, bytes);
    return qcow2_pdiscard(bs, offset, bytes);
}

BlockDriver bdrv_qcow2 = {
    .format_name = "qcow2",
    .instance_size = sizeof(BDRVQcow2State),
    .supports_backing = true,
    .probe = qcow2_probe,
    .open = qcow2_open,
    .close = qcow2_close,
    .create = qcow2_create,
    .reopen = qcow2_reopen,
    .reopen_options = qcow2_runtime_opts_reopen,
    .save_vmstate = qcow2_save_vmstate,
    .load_vmstate = qcow2_load_vmstate,
    .pread = qcow2_pread,
    .pwrite = qcow2_pwrite_marked,
    .pwrite_zeroes = qcow2_pwrite_zeroes_marked,
    .pwrite_compressed = qcow2_pwrite_compressed_marked,
    .pdiscard = qcow2_pdiscard_marked,
    .flush = qcow2_flush,
    .truncate = qcow2_truncate,
    .truncate_prealloc = qcow2_truncate_prealloc,
    .amend = qcow2_amend,
    .getlength = qcow2_getlength,
    .block_status = qcow2_block_status,
    .get_info = qcow2_get_info,
    .get_specific_info = qcow2_get_specific_info,
    .check = qcow2_check_and_reindex,
    .has_child = qcow2_has_child,
    .snapshot_list = qcow2_snapshot_list,
    .snapshot_create_check = qcow2_snapshot_create_check,
    .snapshot_delete_check = qcow2_snapshot_delete_check,
    .snapshot_goto_check = qcow2_snapshot_goto_check,
    .snapshot_pre_do = qcow2_snapshot_pre_do,
    .snapshot_pre_cancel = qcow2_snapshot_pre_cancel,
    .snapshot_do = qcow2_snapshot_do,
    .snapshot_invalidate = qcow2_snapshot_invalidate,
    .snapshot_cancel = qcow2_snapshot_cancel,
    .snapshot_clean = qcow2_snapshot_clean,
    .snapshot_publish_bytes = qcow2_snapshot_publish_bytes,
    .snapshot_load_tmp = qcow2_snapshot_load_tmp,
    .change_backing_file = qcow2_change_backing_file,
    .make_empty = qcow2_make_empty,
    .bitmap_list = qcow2_bitmap_list,
    .bitmap_modify = qcow2_bitmap_modify,
    .bitmaps_size = qcow2_bitmaps_size,
    .supports_bitmaps = qcow2_supports_bitmaps,
};
