/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * qcow2 resize (qemu-img resize, block_resize): growing, with QEMU's
 * preallocation modes for the added area, and shrinking, which frees
 * every cluster past the new end and gives the file's unused tail back.
 * QEMU 7.2's rules and texts (block/qcow2.c: qcow2_co_truncate).
 *
 * Order of the writes of a shrink, so a crash leaves an openable image
 * that at worst leaks clusters:
 *   1. the cut entries of the last partial L2 table are cleared (table
 *      written), then their clusters' refcounts go down;
 *   2. the L1 entries past the new end are zeroed (L1 written and
 *      synced), then the trees they held are released;
 *   3. the header's size field: the commit point of the new size;
 *   4. refcount blocks that count nothing but themselves are dropped
 *      from the refcount table, the file's tail cut and the host space
 *      of free clusters inside it punched out.
 */
#include <errno.h>
#include <string.h>

#include "block/log.h"
#include "qcow2.h"
#include "qcow2-bitmap.h"

static int write_size_field(BlockDriverState *bs, uint64_t size)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t be = GUINT64_TO_BE(size);
    int ret = qcow2_write_header_bytes(bs, QCOW2_HDR_SIZE_OFF, &be, 8);

    if (ret == 0) {
        s->size = size;
    }
    return ret;
}

/* Step 2: L1 entries from new_l1 on point at nothing; their trees go. */
static int drop_l1_tail(BlockDriverState *bs, uint32_t new_l1, GError **errp)
{
    BDRVQcow2State *s = bs->opaque;
    uint32_t n = s->l1_size - new_l1;
    g_autofree uint64_t *cut = NULL;
    bool any = false;
    int ret;

    if (new_l1 >= s->l1_size) {
        return 0;
    }
    cut = g_new0(uint64_t, n);
    for (uint32_t i = 0; i < n; i++) {
        cut[i] = s->l1_table[new_l1 + i];
        any |= (cut[i] & L1E_OFFSET_MASK) != 0;
        s->l1_table[new_l1 + i] = 0;
    }
    if (!any) {
        return 0;
    }
    ret = qcow2_write_l1_at(bs, s->l1_table_offset, s->l1_table, s->l1_size);
    if (ret == 0) {
        ret = bdrv_flush(bs->file);
    }
    if (ret < 0) {
        memcpy(s->l1_table + new_l1, cut, n * sizeof(uint64_t));
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_IO,
                    "Failed to reduce the number of L2 tables: %s",
                    g_strerror(-ret));
        return ret;
    }
    for (uint32_t i = 0; i < n; i++) {
        if (cut[i] & L1E_OFFSET_MASK) {
            qcow2_cache_discard(s->l2_cache, cut[i] & L1E_OFFSET_MASK);
        }
    }
    qcow2_overlap_invalidate(s);
    /* Pointers are gone on disk: what only they held may go now. */
    return qcow2_tree_release(bs, cut, n, 0, errp);
}

/*
 * A refcount block whose entries are all zero but, maybe, its own:
 * nothing else needs it, as QEMU's qcow2_shrink_reftable decides.
 */
static int refblock_unused(BlockDriverState *bs, uint64_t t, bool *unused)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t off = s->refcount_table[t] & REFT_OFFSET_MASK;
    uint64_t self = off >> s->cluster_bits;
    void *rb;
    int ret = qcow2_cache_get(bs, s->refcount_cache, off, &rb);

    if (ret < 0) {
        return ret;
    }
    *unused = true;
    for (uint64_t i = 0; i < s->refblock_size && *unused; i++) {
        uint64_t idx = (t << s->refblock_bits) + i;
        uint64_t v = qcow2_refblock_get(s, rb, i);
        *unused = v == 0 || (idx == self && v == 1);
    }
    return 0;
}

/* Step 4a: refcount table entries of unused blocks zeroed (one write of
 * the table), then those blocks' own clusters released. */
static int shrink_reftable(BlockDriverState *bs)
{
    BDRVQcow2State *s = bs->opaque;
    g_autofree uint64_t *freed = g_new0(uint64_t, s->refcount_table_size);
    g_autofree uint64_t *be = NULL;
    uint32_t nfreed = 0;
    int ret;

    for (uint64_t t = 0; t < s->refcount_table_size; t++) {
        uint64_t off = s->refcount_table[t] & REFT_OFFSET_MASK;
        bool unused;

        if (!off) {
            continue;
        }
        ret = refblock_unused(bs, t, &unused);
        if (ret < 0) {
            return ret;
        }
        if (unused) {
            freed[nfreed++] = off;
            s->refcount_table[t] = 0;
        }
    }
    if (!nfreed) {
        return 0;
    }
    be = g_new(uint64_t, s->refcount_table_size);
    for (uint64_t t = 0; t < s->refcount_table_size; t++) {
        be[t] = GUINT64_TO_BE(s->refcount_table[t]);
    }
    ret = qcow2_overlap_pwrite(bs, QCOW2_OL_REFCOUNT_TABLE,
                               s->refcount_table_offset,
                               (int64_t)s->refcount_table_size * 8, be);
    if (ret == 0) {
        ret = bdrv_flush(bs->file);
    }
    for (uint32_t i = 0; i < nfreed; i++) {
        qcow2_cache_discard(s->refcount_cache, freed[i]);
    }
    qcow2_overlap_invalidate(s);
    /* A block counted by itself vanished with its table entry; one
     * counted in another (still used) block is released there, as QEMU
     * does -- kept, it would stay in the table describing nothing. */
    for (uint32_t i = 0; i < nfreed && ret == 0; i++) {
        uint64_t c = freed[i] >> s->cluster_bits;

        if (s->refcount_table[c >> s->refblock_bits]) {
            ret = qcow2_update_cluster_refcount(bs, c, -1, NULL);
        }
    }
    if (ret == 0) {
        ret = qcow2_write_back_metadata(bs);
    }
    return ret;
}

/*
 * Step 4c: the host space of clusters nothing uses is given back (QEMU
 * discards the clusters a shrink frees; a free cluster holds nothing,
 * so punching every one is as safe).  Advisory: failures are ignored.
 */
static void punch_free_clusters(BlockDriverState *bs)
{
    BDRVQcow2State *s = bs->opaque;
    int64_t file_len = bdrv_getlength(bs->file);
    int64_t n = file_len < 0 ? 0 : file_len / s->cluster_size;
    int64_t run_start = -1;

    for (int64_t i = 1; i <= n; i++) {
        uint64_t rc = 1;
        if (i < n && qcow2_get_refcount(bs, i, &rc) < 0) {
            return;
        }
        if (rc == 0 && run_start < 0) {
            run_start = i;
        } else if (rc != 0 && run_start >= 0) {
            bdrv_pdiscard(bs->file, run_start * (int64_t)s->cluster_size,
                          (i - run_start) * (int64_t)s->cluster_size);
            run_start = -1;
        }
    }
}

/* Step 4b (and the end of commit's make_empty): the file ends after its
 * last cluster in use.  The lowered counts must be durable first: a
 * count > 0 past the end would be a cluster that is gone. */
void qcow2_cut_free_tail(BlockDriverState *bs)
{
    BDRVQcow2State *s = bs->opaque;
    int64_t file_len = bdrv_getlength(bs->file);
    int64_t last = -1;
    GError *err = NULL;

    if (file_len < 0) {
        return;
    }
    for (int64_t i = (file_len + s->cluster_size - 1) / s->cluster_size - 1;
         i >= 0; i--) {
        uint64_t rc = 0;
        if (qcow2_get_refcount(bs, i, &rc) < 0) {
            return;
        }
        if (rc) {
            last = i;
            break;
        }
    }
    if (last >= 0 && (last + 1) * (int64_t)s->cluster_size < file_len &&
        bdrv_truncate(bs->file, (last + 1) * (int64_t)s->cluster_size,
                      &err) < 0) {
        strata_warning("Failed to truncate the tail of the image: %s",
                       err->message);
        g_clear_error(&err);
    }
}

static int do_shrink(BlockDriverState *bs, uint64_t size, GError **errp)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t cs = s->cluster_size;
    uint64_t l2_span = cs * s->l2_size;
    uint32_t new_l1 = (uint32_t)qcow2_l1_entries_for(s, size);
    uint64_t from = qcow2_align_up(size, cs);
    uint64_t to = MIN(qcow2_align_up(s->size, cs), (uint64_t)new_l1 * l2_span);
    int ret;

    ret = qcow2_write_back_metadata(bs);
    if (ret == 0 && from < to) {
        ret = qcow2_discard_unmap(bs, from, to - from);
        if (ret == 0) {
            ret = qcow2_write_back_metadata(bs);
        }
    }
    if (ret < 0) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_IO,
                    "Failed to discard cropped clusters: %s",
                    g_strerror(-ret));
        return ret;
    }
    ret = drop_l1_tail(bs, new_l1, errp);
    if (ret < 0) {
        return ret;
    }
    ret = write_size_field(bs, size);
    if (ret < 0) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_IO,
                    "Failed to update the image size: %s", g_strerror(-ret));
        return ret;
    }
    ret = qcow2_write_back_metadata(bs);
    if (ret == 0) {
        ret = shrink_reftable(bs);
    }
    if (ret < 0) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_IO,
                    "Failed to discard unused refblocks: %s",
                    g_strerror(-ret));
        return ret;
    }
    qcow2_cut_free_tail(bs);
    punch_free_clusters(bs);
    return 0;
}

/*
 * falloc / full: the file is first grown (reserved or zero-filled) by
 * exactly the clusters the new area needs -- its data clusters, from the
 * one the old end lies in (see move_tail_cluster), and the L2 tables
 * still missing -- so that what the metadata preallocation hands out
 * next lies in space already taken.  *area: where that space begins.
 * Under s->lock.
 */
static int reserve_file_space(BlockDriverState *bs, uint64_t old_size,
                              uint64_t size, int prealloc, uint64_t *area,
                              GError **errp)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t cs = s->cluster_size;
    uint64_t span = cs * s->l2_size;
    uint64_t first = qcow2_cluster_start(s, old_size);
    uint64_t end = qcow2_align_up(size, cs);
    uint64_t clusters = end > first ? (end - first) / cs : 0;
    int64_t file_len = bdrv_getlength(bs->file);
    int ret;

    for (uint64_t i = first / span; clusters && i < (end + span - 1) / span;
         i++) {
        clusters += i >= s->l1_size || !(s->l1_table[i] & L1E_OFFSET_MASK);
    }
    if (file_len < 0) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_IO,
                    "Failed to inquire current file length: %s",
                    g_strerror((int)-file_len));
        return (int)file_len;
    }
    *area = qcow2_align_up(file_len, cs);
    if (!clusters) {
        return 0;
    }
    ret = bdrv_truncate_prealloc(bs->file, (int64_t)(*area + clusters * cs),
                                 prealloc, errp);
    if (ret < 0) {
        g_prefix_error(errp, "Failed to resize underlying file: ");
    }
    return ret;
}

/*
 * The cluster the old end lies in, read before the locks are taken: a
 * falloc/full grow moves it (QEMU's way), whatever it held -- this
 * layer's data, the backing file's, zeroes; a metadata grow gives it a
 * cluster of its own if only the backing file fills it, so that the
 * preallocation does not hide the backing data (QEMU copies it then).
 */
typedef struct TailCluster {
    uint64_t start;            /* guest offset of the cluster */
    uint64_t len;              /* bytes of it inside the old disk */
    uint8_t *head;             /* those bytes; NULL: nothing to move */
} TailCluster;

/* Does this layer map the cluster at guest offset start?  Unlocked. */
static bool tail_allocated(BlockDriverState *bs, uint64_t start)
{
    int64_t pnum, map;
    BlockDriverState *file;
    int st = qcow2_block_status(bs, start, 1, &pnum, &map, &file);

    return st > 0 && (st & BDRV_BLOCK_ALLOCATED);
}

static int read_tail_cluster(BlockDriverState *bs, uint64_t size,
                             int prealloc, TailCluster *t)
{
    BDRVQcow2State *s = bs->opaque;

    t->head = NULL;
    if (prealloc == BDRV_PREALLOC_OFF || size <= s->size ||
        s->size % s->cluster_size == 0) {
        return 0;
    }
    t->start = qcow2_cluster_start(s, s->size);
    /* With a data file the cluster keeps its place (its guest offset
     * there), so only backing data under an unmapped one is to copy:
     * the preallocation maps it, and it must not read zeroes then. */
    if ((prealloc == BDRV_PREALLOC_METADATA || qcow2_has_data_file(s)) &&
        (!bs->backing || tail_allocated(bs, t->start))) {
        return 0;
    }
    t->len = s->size - t->start;
    t->head = g_malloc(t->len);
    return qcow2_pread(bs, t->start, t->len, t->head);
}

/*
 * As QEMU's preallocating grow: the new data area begins with the
 * cluster the old end lies in.  It gets the first cluster of the
 * reserved space, its head is written there and its entry switched; the
 * cluster it had (if any) is released.  So the whole tail cluster is
 * preallocated space, and the file is laid out as QEMU's (later writes
 * there do not grow it: iotest 125).  Under s->lock.
 */
static int move_tail_cluster(BlockDriverState *bs, const TailCluster *t,
                             uint64_t area)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t old = 0, bitmap = 0;
    int64_t host = 0, k;
    int ret;

    /* area 0: nothing was reserved (metadata): any free cluster */
    k = area ? qcow2_alloc_clusters_at(bs, area, 1) : 0;
    if (k < 0) {
        return (int)k;
    }
    host = k > 0 ? (int64_t)area : qcow2_alloc_clusters(bs, 1);
    if (host < 0) {
        return (int)host;
    }
    ret = qcow2_data_pwrite(bs, host, t->start, t->len, t->head);
    if (ret == 0) {
        ret = qcow2_l2_entry_get(bs, t->start, true, &old, &bitmap);
    }
    if (ret == 0) {
        /* With extended entries the subclusters read as before (QEMU
         * keeps the bitmap) unless a backing file could show through;
         * a compressed cluster's bitmap 0 would lose its data. */
        if (bs->backing ||
            qcow2_entry_type(s, old) == QCOW2_CLUSTER_COMPRESSED) {
            bitmap = QCOW_L2_BITMAP_ALL_ALLOC;
        }
        ret = qcow2_l2_entry_set(bs, t->start, host | QCOW_OFLAG_COPIED,
                                 bitmap);
    }
    if (ret < 0) {
        qcow2_free_cluster_deferred(bs, host);
    }
    return ret;
}

static int do_grow(BlockDriverState *bs, uint64_t size, int prealloc,
                   const TailCluster *tail, GError **errp)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t old_size = s->size;
    uint64_t area = 0;
    int ret;

    ret = qcow2_grow_l1_table(bs, qcow2_l1_entries_for(s, size));
    if (ret < 0) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_IO,
                    "Failed to grow the L1 table: %s", g_strerror(-ret));
        return ret;
    }
    /* A raw data file stays mapped one to one over the whole disk. */
    if (qcow2_data_file_raw(s) && prealloc == BDRV_PREALLOC_OFF) {
        prealloc = BDRV_PREALLOC_METADATA;
    }
    if (qcow2_has_data_file(s)) {
        /* The data file grows with the disk (reserved or written for
         * falloc/full); the qcow2 file gets metadata only. */
        int64_t dlen = bdrv_getlength(s->data_file);
        if (dlen < 0) {
            g_set_error(errp, BDRV_ERROR, BDRV_ERROR_IO,
                        "Failed to inquire current file length: %s",
                        g_strerror((int)-dlen));
            return (int)dlen;
        }
        if ((uint64_t)dlen < size) {
            ret = bdrv_truncate_prealloc(s->data_file, (int64_t)size,
                                         prealloc == BDRV_PREALLOC_METADATA ?
                                         BDRV_PREALLOC_OFF : prealloc, errp);
            if (ret < 0) {
                return ret;
            }
        }
    } else if (prealloc == BDRV_PREALLOC_FALLOC ||
               prealloc == BDRV_PREALLOC_FULL) {
        ret = reserve_file_space(bs, old_size, size, prealloc, &area, errp);
        if (ret < 0) {
            return ret;
        }
    }
    if (tail->head && qcow2_has_data_file(s)) {
        /* into the data file before the preallocation maps the cluster */
        ret = qcow2_data_pwrite(bs, tail->start, tail->start, tail->len,
                                tail->head);
    } else if (tail->head) {
        ret = move_tail_cluster(bs, tail, area);
    }
    if (ret < 0) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_IO,
                    "Failed to update L2 tables: %s", g_strerror(-ret));
        return ret;
    }
    if (prealloc != BDRV_PREALLOC_OFF && size > old_size) {
        ret = qcow2_preallocate_metadata(bs, old_size, size - old_size,
                                         NULL);
        if (ret < 0) {
            g_set_error(errp, BDRV_ERROR, BDRV_ERROR_IO,
                        "Could not preallocate metadata: %s",
                        g_strerror(-ret));
            return ret;
        }
    }
    ret = write_size_field(bs, size);
    if (ret < 0) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_IO,
                    "Failed to grow the image: %s", g_strerror(-ret));
    }
    return ret;
}

/* What QEMU refuses before touching anything. */
static bool truncate_allowed(BlockDriverState *bs, int64_t size, int prealloc,
                             GError **errp)
{
    BDRVQcow2State *s = bs->opaque;

    if (prealloc < BDRV_PREALLOC_OFF || prealloc > BDRV_PREALLOC_FULL) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_NOT_SUPPORTED,
                    "Unsupported preallocation mode '%s'",
                    bdrv_prealloc_name(prealloc));
        return false;
    }
    if (size % BDRV_SECTOR_SIZE) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "The new size must be a multiple of 512");
        return false;
    }
    if (s->version < 3 && s->nb_snapshots) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_NOT_SUPPORTED,
                    "Can't resize a v2 image which has snapshots");
        return false;
    }
    if ((uint64_t)size < s->size && prealloc != BDRV_PREALLOC_OFF) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "Preallocation can't be used for shrinking an image");
        return false;
    }
    if ((uint64_t)size > s->size &&
        qcow2_l1_entries_for(s, size) > QCOW2_MAX_L1_BYTES / 8) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "Failed to grow the L1 table: %s", g_strerror(EFBIG));
        return false;
    }
    if (s->broken) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_IO,
                    "Image is corrupt; cannot be opened read/write");
        return false;
    }
    return true;
}

int qcow2_truncate_prealloc(BlockDriverState *bs, int64_t size, int prealloc,
                            GError **errp)
{
    BDRVQcow2State *s = bs->opaque;
    TailCluster tail = { 0 };
    int ret;

    if (!truncate_allowed(bs, size, prealloc, errp)) {
        return -EINVAL;
    }
    /* the bitmaps must be able to follow the new size */
    ret = qcow2_bitmaps_can_resize(bs, errp);
    if (ret < 0) {
        return ret;
    }
    ret = read_tail_cluster(bs, (uint64_t)size, prealloc, &tail);
    if (ret < 0) {
        g_free(tail.head);
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_IO,
                    "Could not preallocate metadata: %s", g_strerror(-ret));
        return ret;
    }
    g_rw_lock_writer_lock(&s->free_lock);
    g_mutex_lock(&s->lock);
    if ((uint64_t)size < s->size) {
        ret = do_shrink(bs, size, errp);
        /* The data file shrinks with the disk, as QEMU resizes it. */
        if (ret == 0 && qcow2_has_data_file(s) && s->data_file) {
            ret = bdrv_truncate(s->data_file, size, errp);
        }
    } else {
        ret = do_grow(bs, size, prealloc, &tail, errp);
    }
    g_mutex_unlock(&s->lock);
    g_rw_lock_writer_unlock(&s->free_lock);
    g_free(tail.head);
    if (ret == 0) {
        qcow2_bitmaps_resized(bs);
    }
    return ret;
}
