/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * qcow2 consistency check (qemu-img check): recount every reference from
 * the header, the active and snapshot L1/L2 trees, the snapshot table, the
 * refcount table, the persistent bitmaps and the refcount blocks; compare
 * with the stored counts; verify the COPIED flags of the active tree.
 * Repairs, in QEMU's order: -r leaks sets counts that are too high, -r all
 * also those too low (each in one write of the whole difference); when
 * the structure itself cannot be trusted (a refcount block that is
 * unaligned, outside the file or also used as something else, a used
 * cluster counted 0), -r all builds a new one (qcow2-check-rebuild.c).
 * Problem lines go to the log sink with QEMU's wording so scripts that
 * read qemu-img's output read ours.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "qcow2-check.h"
#include "qcow2-bitmap.h"
#include "block/log.h"

/* Counts one reference to each cluster of [offset, offset+size). */
static void inc_refs(CheckState *c, uint64_t offset, uint64_t size)
{
    uint64_t cs = c->s->cluster_size;

    if (size == 0) {
        return;
    }
    /* QEMU's tolerance: up to (not including) a whole cluster past the
     * file's length as it is, whether or not that is cluster aligned */
    if (offset + size < offset || offset + size >= c->file_len + cs) {
        strata_error("ERROR: counting reference for region exceeding the "
                "end of the file by one cluster or more: offset %#"
                G_GINT64_MODIFIER "x size %#" G_GINT64_MODIFIER "x",
                offset, size);
        c->res->corruptions++;
        if (offset + size > offset &&
            (offset + size - 1) / cs < CHECK_MAX_CLUSTERS) {
            uint64_t range[2] = { offset / cs, (offset + size - 1) / cs + 1 };
            if (!c->beyond) {
                c->beyond = g_array_new(FALSE, FALSE, sizeof(uint64_t));
            }
            g_array_append_vals(c->beyond, range, 2);
        }
        return;
    }
    for (uint64_t k = offset / cs; k <= (offset + size - 1) / cs; k++) {
        /* Within the tolerance but past the file's last cluster: counted
         * like any other, as QEMU does (its count array grows), so the
         * comparison reports it and the image end includes it. */
        if (k >= c->nb_clusters) {
            if (qcow2_check_counts_grow(c, k + 1) < 0) {
                c->res->check_errors++;
                return;
            }
            c->nb_clusters = k + 1;
        }
        /* One more reference than the width can store: QEMU's verdict
         * (the count stays at the maximum). */
        if (c->counts[k] >= c->s->refcount_max) {
            strata_error("ERROR: overflow cluster offset=%#"
                    G_GINT64_MODIFIER "x", k * cs);
            strata_error("Use qemu-img amend to increase the refcount entry "
                    "width or qemu-img convert to create a clean copy if the "
                    "image cannot be opened for writing");
            c->res->corruptions++;
            continue;
        }
        if (c->counts[k] != UINT32_MAX) {
            c->counts[k]++;
        }
    }
}

static void inc_refs_cb(void *opaque, uint64_t offset, uint64_t size)
{
    inc_refs(opaque, offset, size);
}

/*
 * The stored refcount of cluster k.  A refcount-table entry that is
 * unaligned or beyond any file size is not followed (QEMU fails such a
 * lookup with EIO too; the caller reports it); a block past the end of
 * the file reads as zeros.
 */
static int stored_block(CheckState *c, uint64_t t, void **rb)
{
    BDRVQcow2State *s = c->s;
    uint64_t off;

    *rb = NULL;
    if (t >= s->refcount_table_size) {
        return 0;
    }
    off = s->refcount_table[t] & REFT_OFFSET_MASK;
    if (!off) {
        return 0;
    }
    if ((off & (s->cluster_size - 1)) ||
        off > (uint64_t)INT64_MAX - s->cluster_size) {
        if (c->bs->read_only) {
            /* said as a read-only open's use of it says it (QEMU's check
             * reads through the same path); a repair goes on instead */
            qcow2_signal_unaligned_table(c->bs, QCOW2_OL_REFCOUNT_BLOCK, off);
        }
        return -EIO;
    }
    if (off >= c->file_len) {
        return 0; /* reads as zeros, as in QEMU */
    }
    return qcow2_cache_get(c->bs, s->refcount_cache, off, rb);
}

static int stored_refcount(CheckState *c, uint64_t k, uint64_t *rc)
{
    void *rb;
    int ret = stored_block(c, k >> c->s->refblock_bits, &rb);

    *rc = ret == 0 && rb ? qcow2_refblock_get(c->s, rb, k &
                                              (c->s->refblock_size - 1)) : 0;
    return ret;
}

static bool overlap(uint64_t a, uint64_t alen, uint64_t b, uint64_t blen)
{
    return alen && blen && a < b + blen && b < a + alen;
}

/*
 * Whether a repair may write [off, off+len): not on the header, the
 * active L1 table, the refcount table or the snapshot table, whatever
 * damaged pointer led there (QEMU asks its overlap check the same).
 */
static bool repair_may_write(CheckState *c, uint64_t off, uint64_t len)
{
    BDRVQcow2State *s = c->s;

    return !overlap(off, len, 0, s->cluster_size) &&
           !overlap(off, len, s->l1_table_offset, (uint64_t)s->l1_size * 8) &&
           !overlap(off, len, s->refcount_table_offset,
                    (uint64_t)s->refcount_table_size * 8) &&
           !overlap(off, len, s->snapshots_offset, s->snapshots_size);
}

/*
 * -r all: an entry whose offset is unaligned but which holds no data (a
 * preallocated zero cluster; with extended entries, one with no
 * subcluster allocated) becomes, like QEMU, an entry without a cluster
 * that reads the same (one write of the entry) rather than count a
 * cluster nobody can use.
 */
static int fix_l2_entry_by_zero(CheckState *c, const uint64_t *l2,
                                uint64_t l2_off, uint32_t i)
{
    BDRVQcow2State *s = c->s;
    uint64_t be[2] = { GUINT64_TO_BE(QCOW_OFLAG_ZERO), 0 };
    uint64_t len = 8ULL << s->l2_entry_shift;
    uint64_t at = l2_off + i * len;
    int ret;

    if (qcow2_has_subclusters(s)) {
        /* No host cluster any more: what read as data reads as zeroes,
         * what read as zeroes or from the backing file still does. */
        uint64_t bitmap = qcow2_l2_bitmap(s, l2, i);
        bitmap = (bitmap | bitmap << 32) & QCOW_L2_BITMAP_ALL_ZEROES;
        be[0] = 0;
        be[1] = GUINT64_TO_BE(bitmap);
    }
    if ((l2_off & (s->cluster_size - 1)) ||
        !repair_may_write(c, at, len)) {
        strata_error("ERROR: Overlap check failed");
        c->res->check_errors++;
        return -EIO;
    }
    ret = bdrv_pwrite(c->bs->file, at, len, be);

    if (ret == 0) {
        ret = bdrv_flush(c->bs->file);
    }
    /* A cached copy of the table is stale now. */
    qcow2_cache_discard(s->l2_cache, l2_off);
    if (ret < 0) {
        strata_error("ERROR: Failed to overwrite L2 table entry: %s",
                g_strerror(-ret));
        c->res->check_errors++;
        return ret;
    }
    c->res->corruptions--;
    c->res->corruptions_fixed++;
    return 0;
}

/*
 * Entry i's descriptor as stored.  With extended entries the accessors
 * hide bit 0 (reserved there); the messages print, and the COPIED repair
 * keeps, the stored value, as QEMU's check does.
 */
static uint64_t l2_stored(BDRVQcow2State *s, const uint64_t *l2, uint32_t i)
{
    return GUINT64_FROM_BE(l2[(uint64_t)i << s->l2_entry_shift]);
}

/* Whether an entry whose offset is unaligned maps any data (else it only
 * reserved the cluster: QEMU's check then drops the offset under -r). */
static bool entry_has_data(BDRVQcow2State *s, Qcow2ClusterType type,
                           uint64_t bitmap)
{
    if (qcow2_has_subclusters(s)) {
        return bitmap & QCOW_L2_BITMAP_ALL_ALLOC;
    }
    return type == QCOW2_CLUSTER_NORMAL;
}

static int check_l2(CheckState *c, uint64_t l2_off, bool active,
                    BdrvCheckMode fix)
{
    BDRVQcow2State *s = c->s;
    g_autofree uint64_t *l2 = g_malloc(s->cluster_size);
    int ret = bdrv_pread(c->bs->file, l2_off, s->cluster_size, l2);

    c->next_contiguous = 0; /* fragmentation is counted per L2 table */
    if (ret < 0) {
        strata_error("ERROR: I/O error in check_refcounts_l2");
        c->res->check_errors++;
        return ret;
    }
    for (uint32_t i = 0; i < s->l2_size; i++) {
        uint64_t e = l2_stored(s, l2, i);
        uint64_t bitmap = qcow2_l2_bitmap(s, l2, i);
        uint64_t off = e & L2E_OFFSET_MASK;
        Qcow2ClusterType type = qcow2_entry_type(s, qcow2_l2_get(s, l2, i));

        if (type != QCOW2_CLUSTER_COMPRESSED && (e & L2E_RESERVED_MASK)) {
            strata_error("ERROR found l2 entry with reserved bits set: "
                    "%" G_GINT64_MODIFIER "x", e);
            c->res->corruptions++;
        }
        switch (type) {
        case QCOW2_CLUSTER_COMPRESSED: {
            uint64_t coff, clen;
            if (e & QCOW_OFLAG_COPIED) {
                strata_error("ERROR: coffset=%#" G_GINT64_MODIFIER "x: "
                        "copied flag must never be set for compressed "
                        "clusters", e & s->coffset_mask);
                c->res->corruptions++;
                e &= ~QCOW_OFLAG_COPIED;    /* later messages omit it */
            }
            if (qcow2_has_data_file(s)) {
                strata_error("ERROR compressed cluster %u with data file, "
                             "entry=%#" G_GINT64_MODIFIER "x", i, e);
                c->res->corruptions++;
                break;
            }
            /* Not counted either, as in QEMU: its clusters show up as
             * leaked. */
            if (bitmap) {
                strata_error("ERROR compressed cluster %u with non-zero "
                             "subcluster allocation bitmap, entry=%#"
                             G_GINT64_MODIFIER "x", i, e);
                c->res->corruptions++;
                break;
            }
            qcow2_compressed_range(s, e, &coff, &clen);
            inc_refs(c, coff, clen);
            if (active) {
                /* like QEMU: compressed clusters count as fragmented */
                c->res->allocated_clusters++;
                c->res->compressed_clusters++;
                c->res->fragmented_clusters++;
            }
            break;
        }
        case QCOW2_CLUSTER_NORMAL:
        case QCOW2_CLUSTER_ZERO_ALLOC:
            /* a subcluster cannot be both data and zeroes */
            if ((bitmap >> 32) & bitmap) {
                c->res->corruptions++;
                strata_error("ERROR offset=%" G_GINT64_MODIFIER "x: "
                             "Allocated cluster has corrupted subcluster "
                             "allocation bitmap", off);
            }
            if (off & (s->cluster_size - 1)) {
                c->res->corruptions++;
                if (entry_has_data(s, type, bitmap)) {
                    strata_error("ERROR offset=%" G_GINT64_MODIFIER "x: Data "
                            "cluster is not properly aligned; L2 entry "
                            "corrupted.", off);
                } else {
                    bool repair = fix & BDRV_FIX_ERRORS;
                    strata_error("%s offset=%" G_GINT64_MODIFIER "x: "
                            "Preallocated cluster is not properly aligned; "
                            "L2 entry corrupted.",
                            repair ? "Repairing" : "ERROR", off);
                    if (repair &&
                        fix_l2_entry_by_zero(c, l2, l2_off, i) == 0) {
                        continue; /* nothing to count any more */
                    }
                }
            }
            /* Counted even when unaligned, as QEMU counts it. */
            if (active) {
                c->res->allocated_clusters++;
                if (c->next_contiguous && off != c->next_contiguous) {
                    c->res->fragmented_clusters++;
                }
                c->next_contiguous = off + s->cluster_size;
            }
            /* data-file clusters have no refcount */
            if (!qcow2_has_data_file(s)) {
                inc_refs(c, off, s->cluster_size);
            }
            break;
        case QCOW2_CLUSTER_UNALLOCATED:
            /* no host cluster for subclusters to read from (QEMU's check
             * reports it and leaves it) */
            if (bitmap & QCOW_L2_BITMAP_ALL_ALLOC) {
                c->res->corruptions++;
                strata_error("ERROR: Unallocated cluster has non-zero "
                             "subcluster allocation map");
            }
            break;
        default:
            break;
        }
    }
    return 0;
}

/* Walks one L1 table (the active one from memory, snapshots from disk). */
static int check_l1(CheckState *c, uint64_t l1_off, uint32_t l1_size,
                    const uint64_t *mem_l1, bool active, BdrvCheckMode fix)
{
    BDRVQcow2State *s = c->s;
    g_autofree uint64_t *disk_l1 = NULL;
    const uint64_t *l1 = mem_l1;

    inc_refs(c, l1_off, (uint64_t)l1_size * 8);
    if (!l1) {
        disk_l1 = g_new(uint64_t, MAX(l1_size, 1));
        int ret = bdrv_pread(c->bs->file, l1_off, (int64_t)l1_size * 8, disk_l1);
        if (ret < 0) {
            strata_error("ERROR: I/O error in check_refcounts_l1");
            c->res->check_errors++;
            return ret;
        }
        for (uint32_t i = 0; i < l1_size; i++) {
            disk_l1[i] = GUINT64_FROM_BE(disk_l1[i]);
        }
        l1 = disk_l1;
    }
    for (uint32_t i = 0; i < l1_size; i++) {
        uint64_t e = l1[i], off = e & L1E_OFFSET_MASK;
        if (!e) {
            continue;
        }
        if (e & L1E_RESERVED_MASK) {
            strata_error("ERROR found L1 entry with reserved bits set: %"
                    G_GINT64_MODIFIER "x", e);
            c->res->corruptions++;
        }
        /* QEMU's order: count the table, then complain about it. */
        inc_refs(c, off, s->cluster_size);
        if (off & (s->cluster_size - 1)) {
            strata_error("ERROR l2_offset=%" G_GINT64_MODIFIER "x: Table "
                    "is not cluster aligned; L1 entry corrupted", off);
            c->res->corruptions++;
        }
        /* An entry with flags but offset 0 makes QEMU read the header as
         * an L2 table; so do we, so that both count the same. */
        if (off >= c->file_len) {
            continue; /* reported by inc_refs if far past the end */
        }
        int ret = check_l2(c, off, active, fix);
        if (ret < 0) {
            return ret;
        }
    }
    return 0;
}

/*
 * Stores `want` as cluster k's refcount in one step (QEMU too repairs a
 * count by its whole difference: stepping from 2^64-1 would never end).
 * Only called where the stored count is non-zero, so k's refcount block
 * exists and was just read.
 */
static int set_refcount(CheckState *c, uint64_t k, uint64_t want)
{
    BDRVQcow2State *s = c->s;
    uint64_t off = s->refcount_table[k >> s->refblock_bits] & REFT_OFFSET_MASK;
    void *rb;
    int ret = qcow2_cache_get(c->bs, s->refcount_cache, off, &rb);

    if (ret < 0) {
        return ret;
    }
    qcow2_refblock_set(s, rb, k & (s->refblock_size - 1), want);
    ret = qcow2_cache_mark_dirty(s->refcount_cache, rb);
    if (ret < 0) {
        return ret;
    }
    if (want == 0) {
        /* Freed: no cached copy of it may be written back over whatever
         * the allocator puts there next. */
        qcow2_cache_discard(s->l2_cache, k << s->cluster_bits);
        qcow2_cache_discard(s->refcount_cache, k << s->cluster_bits);
        if (k < s->free_cluster_index) {
            s->free_cluster_index = k;
        }
    }
    return 0;
}

/*
 * Compares computed and stored counts; repairs what `fix` allows.  A used
 * cluster whose stored count is 0 cannot be repaired by setting a count
 * (its refcount block may be missing or be something else): it asks for
 * a rebuild instead, as in QEMU.
 */
static void compare_refcounts(CheckState *c, BdrvCheckMode fix,
                              uint64_t *highest)
{
    /* the block of the previous cluster: a walk of 2^28 clusters (iotest
     * 220) looked each one up in the cache before */
    uint64_t block_t = UINT64_MAX;
    void *rb = NULL;
    int block_ret = 0;

    *highest = 0;
    for (uint64_t k = 0; k < c->nb_clusters; k++) {
        uint64_t stored = 0;
        uint64_t want = MIN((uint64_t)c->counts[k], c->s->refcount_max);
        int *num_fixed = NULL;
        int ret;

        if (k >> c->s->refblock_bits != block_t) {
            block_t = k >> c->s->refblock_bits;
            block_ret = stored_block(c, block_t, &rb);
        }
        ret = block_ret;
        if (ret == 0 && rb) {
            stored = qcow2_refblock_get(c->s, rb,
                                        k & (c->s->refblock_size - 1));
        }
        if (ret < 0) {
            strata_error("Can't get refcount for cluster %" G_GUINT64_FORMAT
                    ": %s", k, g_strerror(-ret));
            c->res->check_errors++;
            continue;
        }
        if (want || stored) {
            *highest = k;
        }
        if (stored == want) {
            continue;
        }
        if (stored == 0) {
            c->rebuild = true;
        } else if (stored > want && (fix & BDRV_FIX_LEAKS)) {
            num_fixed = &c->res->leaks_fixed;
        } else if (stored < want && (fix & BDRV_FIX_ERRORS)) {
            num_fixed = &c->res->corruptions_fixed;
        }
        strata_error("%s cluster %" G_GUINT64_FORMAT " refcount=%"
                G_GUINT64_FORMAT " reference=%" G_GUINT64_FORMAT "",
                num_fixed ? "Repairing" : stored < want ? "ERROR" : "Leaked",
                k, stored, want);
        /* a repair may load or write other blocks: look this one up
         * again afterwards */
        block_t = num_fixed ? UINT64_MAX : block_t;
        if (num_fixed && set_refcount(c, k, want) == 0) {
            (*num_fixed)++;
            continue;
        }
        if (stored < want) {
            c->res->corruptions++;
        } else {
            c->res->leaks++;
        }
    }
}

/*
 * COPIED must be set exactly where the refcount is 1 (active tree only).
 * Like QEMU, -r leaks repairs COPIED too when nothing else is wrong: the
 * refcounts are right then, and a crash in the middle of a snapshot
 * operation leaves COPIED flags that only a leaked reference made wrong.
 * Every non-zero entry is looked at, aligned or not, as QEMU does (an
 * offset past every refcount block has refcount 0).
 */
static int check_copied(CheckState *c, BdrvCheckMode fix)
{
    BDRVQcow2State *s = c->s;
    g_autofree uint64_t *l2 = g_malloc(s->cluster_size);
    bool repair = (fix & BDRV_FIX_ERRORS) ||
                  ((fix & BDRV_FIX_LEAKS) && !c->res->corruptions &&
                   !c->res->leaks && !c->res->check_errors);

    for (uint32_t i = 0; i < s->l1_size; i++) {
        uint64_t e = s->l1_table[i], off = e & L1E_OFFSET_MASK, rc;
        /* Only a real table is rewritten: one that is unaligned or past
         * the end of the file would overlap something else. */
        bool table_ok = !(off & (s->cluster_size - 1)) && off < c->file_len &&
                        repair_may_write(c, off, s->cluster_size);
        bool dirty = false;
        if (!off) {
            continue;
        }
        if (stored_refcount(c, off >> s->cluster_bits, &rc) < 0) {
            continue;
        }
        if ((rc == 1) != !!(e & QCOW_OFLAG_COPIED)) {
            strata_error("%s OFLAG_COPIED L2 cluster: l1_index=%u "
                    "l1_entry=%" G_GINT64_MODIFIER "x refcount=%"
                    G_GUINT64_FORMAT "", repair ? "Repairing" : "ERROR",
                    i, e, rc);
            c->res->corruptions++;
            if (repair) {
                uint64_t ne = rc == 1 ? e | QCOW_OFLAG_COPIED
                                      : e & ~QCOW_OFLAG_COPIED;
                uint64_t be = GUINT64_TO_BE(ne);
                if (bdrv_pwrite(c->bs->file, s->l1_table_offset + i * 8ULL,
                                8, &be) < 0) {
                    c->res->check_errors++;
                    return 0;
                }
                s->l1_table[i] = ne;
                c->res->corruptions--;
                c->res->corruptions_fixed++;
            }
        }
        if (table_ok) {
            /* Through the cache, so repairs and cached writes agree. */
            uint64_t *t;
            if (qcow2_cache_get(c->bs, s->l2_cache, off, (void **)&t) < 0) {
                strata_error("ERROR: Could not read L2 table: %s",
                        g_strerror(EIO));
                c->res->check_errors++;
                return 0;
            }
            memcpy(l2, t, s->cluster_size);
        } else if (bdrv_pread(c->bs->file, off, s->cluster_size, l2) < 0) {
            strata_error("ERROR: Could not read L2 table: %s",
                    g_strerror(EIO));
            c->res->check_errors++;
            return 0;
        }
        for (uint32_t j = 0; j < s->l2_size; j++) {
            uint64_t le = l2_stored(s, l2, j);
            Qcow2ClusterType ty = qcow2_entry_type(s, qcow2_l2_get(s, l2, j));
            uint64_t doff = le & L2E_OFFSET_MASK;
            if (ty != QCOW2_CLUSTER_NORMAL && ty != QCOW2_CLUSTER_ZERO_ALLOC) {
                continue;
            }
            /* a data-file cluster counts as owned by the active image */
            if (qcow2_has_data_file(s)) {
                rc = 1;
            } else if (stored_refcount(c, doff >> s->cluster_bits, &rc) < 0) {
                continue;
            }
            if ((rc == 1) != !!(le & QCOW_OFLAG_COPIED)) {
                bool fix_it = repair && table_ok;
                strata_error("%s OFLAG_COPIED data cluster: l2_entry=%"
                        G_GINT64_MODIFIER "x refcount=%" G_GUINT64_FORMAT "",
                        fix_it ? "Repairing" : "ERROR", le, rc);
                if (fix_it) {
                    le = rc == 1 ? le | QCOW_OFLAG_COPIED
                                 : le & ~QCOW_OFLAG_COPIED;
                    qcow2_l2_set(s, l2, j, le);
                    dirty = true;
                    c->res->corruptions_fixed++;
                } else {
                    c->res->corruptions++;
                }
            }
        }
        if (dirty) {
            uint64_t *t;
            if (qcow2_cache_get(c->bs, s->l2_cache, off, (void **)&t) < 0) {
                c->res->check_errors++;
                return 0;
            }
            memcpy(t, l2, s->cluster_size);
            if (qcow2_cache_mark_dirty(s->l2_cache, t) < 0) {
                c->res->check_errors++;
                return 0;
            }
        }
    }
    return 0;
}

/*
 * Accounts for each refcount block (each must be referenced exactly
 * once: by the table).  Entries that cannot be followed make the
 * structure untrustworthy; -r all rebuilds it.
 */
static void check_refblocks(CheckState *c, BdrvCheckMode fix)
{
    BDRVQcow2State *s = c->s;

    for (uint32_t i = 0; i < s->refcount_table_size; i++) {
        uint64_t e = s->refcount_table[i], off = e & REFT_OFFSET_MASK;
        uint64_t k = off >> s->cluster_bits;

        if (e & REFT_RESERVED_MASK) {
            strata_error("ERROR refcount table entry %u has reserved bits "
                    "set", i);
            c->res->corruptions++;
            c->rebuild = true;
            continue;
        }
        if (off & (s->cluster_size - 1)) {
            strata_error("ERROR refcount block %u is not cluster aligned; "
                    "refcount table entry corrupted", i);
            c->res->corruptions++;
            c->rebuild = true;
            continue;
        }
        if (k >= c->nb_clusters) {
            /* QEMU grows the file to cover the block, whose zeros then
             * ask for a rebuild; the rebuild alone replaces the entry. */
            strata_error("%s refcount block %u is outside image",
                    (fix & BDRV_FIX_ERRORS) ? "Repairing" : "ERROR", i);
            c->res->corruptions++;
            c->rebuild = true;
            continue;
        }
        if (!off) {
            continue;
        }
        inc_refs(c, off, s->cluster_size);
        if (c->counts[k] != 1) {
            strata_error("ERROR refcount block %u refcount=%" G_GUINT32_FORMAT,
                    i, c->counts[k]);
            c->res->corruptions++;
            c->rebuild = true;
        }
    }
}

/* Counts every reference the image makes, into a zeroed counts[]. */
static int calculate_refcounts(CheckState *c, BdrvCheckMode fix)
{
    BDRVQcow2State *s = c->s;
    int ret;

    inc_refs(c, 0, s->cluster_size);
    ret = check_l1(c, s->l1_table_offset, s->l1_size, s->l1_table, true,
                   fix);
    if (ret == 0 && qcow2_has_data_file(s) && s->nb_snapshots) {
        strata_error("ERROR %u snapshots in image with data file",
                     s->nb_snapshots);
        c->res->corruptions++;
    }
    for (uint32_t i = 0; ret == 0 && i < s->nb_snapshots; i++) {
        Qcow2Snapshot *sn = &s->snapshots[i];
        if ((sn->l1_table_offset & (s->cluster_size - 1))) {
            strata_error("ERROR snapshot %s (%s) l1_offset=%#"
                    G_GINT64_MODIFIER "x: L1 table is not cluster aligned; "
                    "snapshot table entry corrupted", sn->id_str, sn->name,
                    sn->l1_table_offset);
            c->res->corruptions++;
            continue;
        }
        if ((uint64_t)sn->l1_size * 8 > QCOW2_MAX_L1_BYTES) {
            strata_error("ERROR snapshot %s (%s) l1_size=%#x: L1 table is "
                    "too large; snapshot table entry corrupted",
                    sn->id_str, sn->name, sn->l1_size);
            c->res->corruptions++;
            continue;
        }
        ret = check_l1(c, sn->l1_table_offset, sn->l1_size, NULL, false,
                       fix);
    }
    if (ret < 0) {
        return ret;
    }
    inc_refs(c, s->snapshots_offset, s->snapshots_size);
    inc_refs(c, s->refcount_table_offset,
             (uint64_t)s->refcount_table_size * 8);
    if (s->has_crypto_hdr) {
        inc_refs(c, s->crypto_hdr_offset, s->crypto_hdr_length);
    }
    ret = qcow2_bitmaps_count_refs(c->bs, inc_refs_cb, c,
                                   &c->res->corruptions);
    if (ret < 0) {
        return ret;
    }
    check_refblocks(c, fix);
    return 0;
}

/* (Re)sizes counts[] to the file and zeroes it. */
static int reset_counts(CheckState *c)
{
    int64_t file_len = bdrv_getlength(c->bs->file);
    int ret;

    if (file_len < 0) {
        return (int)file_len;
    }
    c->file_len = file_len;
    if (c->beyond) {
        g_array_set_size(c->beyond, 0);   /* the walk records them again */
    }
    c->nb_clusters = qcow2_align_up(file_len, c->s->cluster_size) >>
                     c->s->cluster_bits;
    if (c->nb_clusters > CHECK_MAX_CLUSTERS) {
        return -ENOMEM;
    }
    /* Fresh zeroed memory rather than a memset: pages of clusters
     * nothing references are never touched (a huge sparse file). */
    g_clear_pointer(&c->counts, g_free);
    c->nb_counts = 0;
    ret = qcow2_check_counts_grow(c, MAX(c->nb_clusters, 1));
    return ret < 0 ? ret : 0;
}

/*
 * -r all on a structure that cannot be trusted: rebuild it, count again,
 * free the old structure (now leaked) and account for what the rebuild
 * fixed, the way QEMU reports it.
 */
static int rebuild_and_recount(CheckState *c, BdrvCheckMode fix,
                               uint64_t *highest)
{
    BdrvCheckResult *res = c->res;
    BdrvCheckResult old_res = *res;
    g_autoptr(GError) err = NULL;
    int fresh_leaks = 0;
    int ret;

    strata_error("Rebuilding refcount structure");
    ret = qcow2_check_rebuild_refcounts(c, &err);
    if (ret < 0) {
        strata_error("%s", err->message);
        res->check_errors++;
        return ret;
    }
    res->corruptions = 0;
    res->leaks = 0;
    c->rebuild = false;
    ret = reset_counts(c);
    if (ret < 0) {
        return ret;
    }
    ret = calculate_refcounts(c, BDRV_FIX_NONE);
    /* The second walk counted the guest clusters again. */
    res->allocated_clusters = old_res.allocated_clusters;
    res->fragmented_clusters = old_res.fragmented_clusters;
    res->compressed_clusters = old_res.compressed_clusters;
    if (ret < 0) {
        return ret;
    }
    if (fix & BDRV_FIX_LEAKS) {
        BdrvCheckResult saved = *res;
        *res = (BdrvCheckResult){ 0 };
        compare_refcounts(c, BDRV_FIX_LEAKS, highest);
        if (c->rebuild) {
            strata_error("ERROR rebuilt refcount structure is still broken");
        }
        /* Leaks that remain came from the rebuild itself. */
        fresh_leaks = res->leaks;
        *res = saved;
    }
    if (res->corruptions < old_res.corruptions) {
        res->corruptions_fixed += old_res.corruptions - res->corruptions;
    }
    if (res->leaks < old_res.leaks) {
        res->leaks_fixed += old_res.leaks - res->leaks;
    }
    res->leaks += fresh_leaks;
    return 0;
}

/* The refcount part of the check, QEMU's order: count, compare without
 * repairing, then either rebuild or compare again repairing. */
static int check_refcounts(CheckState *c, BdrvCheckMode fix)
{
    BdrvCheckResult *res = c->res;
    BdrvCheckResult pre_compare;
    uint64_t highest = 0;
    int ret;

    ret = reset_counts(c);
    if (ret < 0) {
        res->check_errors++;
        return ret;
    }
    ret = calculate_refcounts(c, fix);
    if (ret < 0) {
        return ret;
    }
    pre_compare = *res;
    compare_refcounts(c, BDRV_FIX_NONE, &highest);

    if (c->rebuild && (fix & BDRV_FIX_ERRORS)) {
        ret = rebuild_and_recount(c, fix, &highest);
        if (ret < 0) {
            return ret;
        }
    } else if (fix) {
        if (c->rebuild) {
            strata_error("ERROR need to rebuild refcount structures");
            res->check_errors++;
            return -EIO;
        }
        if (res->leaks || res->corruptions) {
            *res = pre_compare;
            compare_refcounts(c, fix, &highest);
        }
    }
    ret = check_copied(c, fix);
    if (ret < 0) {
        return ret;
    }
    res->image_end_offset = (int64_t)(highest + 1) << c->s->cluster_bits;
    return 0;
}

/* After a repair that left nothing wrong, the image is neither dirty nor
 * corrupt any more (QEMU clears both bits the same way). */
static int mark_consistent(BlockDriverState *bs)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t bits = QCOW2_INCOMPAT_CORRUPT | QCOW2_INCOMPAT_DIRTY;
    uint64_t be;
    int ret;

    if (s->version < 3 || !(s->incompatible_features & bits)) {
        return 0;
    }
    be = GUINT64_TO_BE(s->incompatible_features & ~bits);
    ret = qcow2_write_header_bytes(bs, QCOW2_HDR_INCOMPAT_OFF, &be, 8);
    if (ret == 0) {
        s->incompatible_features &= ~bits;
        s->corrupt_reported = false;
    }
    return ret;
}

static void add_result(BdrvCheckResult *to, const BdrvCheckResult *from)
{
    to->corruptions += from->corruptions;
    to->leaks += from->leaks;
    to->check_errors += from->check_errors;
    to->corruptions_fixed += from->corruptions_fixed;
    to->leaks_fixed += from->leaks_fixed;
}

/*
 * The snapshot table's repair wrote it elsewhere and gave its old
 * clusters back.  A hostile image may have shared those with data, so
 * refcounts and COPIED flags changed under the first pass: they are
 * checked (and repaired) once more, and what this pass finds is added.
 */
static int recount_after_table_moved(CheckState *c, BdrvCheckMode fix)
{
    BdrvCheckResult *res = c->res, again = { 0 };
    int ret = qcow2_write_back_metadata(c->bs);

    if (ret < 0) {
        return ret;
    }
    c->res = &again;
    c->rebuild = false;
    ret = check_refcounts(c, fix);
    c->res = res;
    add_result(res, &again);
    if (again.image_end_offset) {
        res->image_end_offset = again.image_end_offset;
    }
    return ret;
}

int qcow2_check(BlockDriverState *bs, BdrvCheckResult *res, BdrvCheckMode fix)
{
    BDRVQcow2State *s = bs->opaque;
    BdrvCheckResult snap_res = { 0 };
    CheckState c = { .bs = bs, .s = s, .res = res };
    int ret;

    if (bs->read_only) {
        fix = BDRV_FIX_NONE;
    }

    g_rw_lock_writer_lock(&s->free_lock);
    g_mutex_lock(&s->lock);
    /* A snapshot table the open for repair kept only in part: refused
     * without -r all, else shortened before anything is counted. */
    ret = qcow2_snapshot_check_damage(bs, &snap_res, fix);
    if (ret < 0) {
        add_result(res, &snap_res);
        goto out;
    }
    /* Work from the on-disk state. */
    ret = qcow2_write_back_metadata(bs);
    if (ret < 0) {
        goto out;
    }
    res->total_clusters = qcow2_align_up(s->size, s->cluster_size) >>
                          s->cluster_bits;
    res->has_allocation_info = true;

    /* Reported first; repaired only once the refcounts can be trusted,
     * since rewriting the table allocates clusters. */
    if (!fix) {
        ret = qcow2_snapshot_check_table(bs, &snap_res, fix);
        if (ret < 0) {
            goto out;
        }
    }
    ret = check_refcounts(&c, fix);
    if (ret == 0 && fix) {
        ret = qcow2_write_back_metadata(bs);
    }
    if (ret == 0 && fix) {
        uint64_t table_at = s->snapshots_offset;
        ret = qcow2_snapshot_check_table(bs, &snap_res, fix);
        if (ret == 0 && s->snapshots_offset != table_at) {
            ret = recount_after_table_moved(&c, fix);
        }
    }
    add_result(res, &snap_res);
    if (ret == 0 && fix) {
        ret = qcow2_write_back_metadata(bs);
    }
    if (ret == 0 && fix && !res->check_errors && !res->corruptions) {
        ret = mark_consistent(bs);
    }

out:
    g_mutex_unlock(&s->lock);
    g_rw_lock_writer_unlock(&s->free_lock);
    g_free(c.counts);
    if (c.beyond) {
        g_array_free(c.beyond, TRUE);
    }
    return ret < 0 ? ret : 0;
}
