/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * qcow2 consistency check (qemu-img check): recount every reference from
 * the header, the active and snapshot L1/L2 trees, the snapshot table, the
 * refcount table and the refcount blocks; compare with the stored counts;
 * verify the COPIED flags of the active tree; optionally repair leaks (and,
 * with -r all, counts that are too low).  Problem lines go to the log sink with
 * QEMU's wording so scripts that read qemu-img's output read ours.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "qcow2.h"
#include "block/log.h"

/* More clusters than this and the check refuses (memory for the counts). */
#define CHECK_MAX_CLUSTERS (1ULL << 28)


typedef struct CheckState {
    BlockDriverState *bs;
    BDRVQcow2State *s;
    BdrvCheckResult *res;
    uint32_t *counts;       /* computed references per host cluster */
    uint64_t nb_clusters;   /* clusters the file spans */
    uint64_t file_len;
    uint64_t next_contiguous;
} CheckState;

/* Counts one reference to each cluster of [offset, offset+size). */
static void inc_refs(CheckState *c, uint64_t offset, uint64_t size)
{
    uint64_t cs = c->s->cluster_size;

    if (size == 0) {
        return;
    }
    if (offset + size > c->nb_clusters * cs + cs - 1 ||
        offset + size < offset) {
        strata_error("ERROR: counting reference for region exceeding the "
                "end of the file by one cluster or more: offset %#"
                G_GINT64_MODIFIER "x size %#" G_GINT64_MODIFIER "x",
                offset, size);
        c->res->corruptions++;
        return;
    }
    for (uint64_t k = offset / cs; k <= (offset + size - 1) / cs; k++) {
        if (k >= c->nb_clusters) {
            continue; /* within the tolerated last partial cluster */
        }
        if (c->counts[k] != UINT32_MAX) {
            c->counts[k]++;
        }
    }
}

static int check_l2(CheckState *c, uint64_t l2_off, bool active)
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
        uint64_t e = GUINT64_FROM_BE(l2[i]);
        uint64_t off = e & L2E_OFFSET_MASK;
        switch (qcow2_get_cluster_type(e)) {
        case QCOW2_CLUSTER_COMPRESSED: {
            uint64_t coff, clen;
            if (e & QCOW_OFLAG_COPIED) {
                strata_error("ERROR: coffset=%#" G_GINT64_MODIFIER "x: "
                        "copied flag must never be set for compressed "
                        "clusters", e & s->coffset_mask);
                c->res->corruptions++;
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
            if (e & L2E_RESERVED_MASK) {
                strata_error("ERROR found l2 entry with reserved bits set: "
                        "%" G_GINT64_MODIFIER "x", e);
                c->res->corruptions++;
            }
            if (off & (s->cluster_size - 1)) {
                strata_error("ERROR offset=%" G_GINT64_MODIFIER "x: Data "
                        "cluster is not properly aligned; L2 entry "
                        "corrupted.", off);
                c->res->corruptions++;
                break;
            }
            if (active) {
                c->res->allocated_clusters++;
                if (c->next_contiguous && off != c->next_contiguous) {
                    c->res->fragmented_clusters++;
                }
                c->next_contiguous = off + s->cluster_size;
            }
            inc_refs(c, off, s->cluster_size);
            break;
        default:
            break;
        }
    }
    return 0;
}

/* Walks one L1 table (the active one from memory, snapshots from disk). */
static int check_l1(CheckState *c, uint64_t l1_off, uint32_t l1_size,
                    const uint64_t *mem_l1, bool active)
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
        if (!off) {
            continue;
        }
        if (active && (e & L1E_RESERVED_MASK)) {
            strata_error("ERROR found L1 entry with reserved bits set: %"
                    G_GINT64_MODIFIER "x", e);
            c->res->corruptions++;
        }
        if (off & (s->cluster_size - 1)) {
            strata_error("ERROR l2_offset=%" G_GINT64_MODIFIER "x: Table "
                    "is not cluster aligned; L1 entry corrupted", off);
            c->res->corruptions++;
            continue;
        }
        inc_refs(c, off, s->cluster_size);
        if (off >= c->file_len) {
            continue; /* reported by inc_refs if far past the end */
        }
        int ret = check_l2(c, off, active);
        if (ret < 0) {
            return ret;
        }
    }
    return 0;
}

static int set_refcount(CheckState *c, uint64_t k, uint64_t want)
{
    uint64_t cur;
    int ret = qcow2_get_refcount(c->bs, k, &cur);

    if (ret < 0) {
        return ret;
    }
    while (ret == 0 && cur != want) {
        int step = cur < want ? 1 : -1;
        ret = qcow2_update_cluster_refcount(c->bs, k, step, &cur);
    }
    return ret;
}

/* Compares computed and stored counts; repairs what `fix` allows. */
static int compare_refcounts(CheckState *c, BdrvCheckMode fix,
                             uint64_t *highest)
{
    *highest = 0;
    for (uint64_t k = 0; k < c->nb_clusters; k++) {
        uint64_t stored;
        uint64_t want = c->counts[k];
        int ret = qcow2_get_refcount(c->bs, k, &stored);
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
        bool leak = stored > want;
        bool repair = leak ? (fix & BDRV_FIX_LEAKS) : (fix & BDRV_FIX_ERRORS);
        strata_error("%s cluster %" G_GUINT64_FORMAT " refcount=%"
                G_GUINT64_FORMAT " reference=%" G_GUINT64_FORMAT "",
                repair ? "Repairing" : leak ? "Leaked" : "ERROR",
                k, stored, want);
        if (repair && (set_refcount(c, k, want) == 0)) {
            if (leak) {
                c->res->leaks_fixed++;
            } else {
                c->res->corruptions_fixed++;
            }
            continue;
        }
        if (leak) {
            c->res->leaks++;
        } else {
            c->res->corruptions++;
        }
    }
    return 0;
}

/*
 * COPIED must be set exactly where the refcount is 1 (active tree only).
 * Like QEMU, -r leaks repairs COPIED too when nothing else is wrong: the
 * refcounts are right then, and a crash in the middle of a snapshot
 * operation leaves COPIED flags that only a leaked reference made wrong.
 */
static int check_copied(CheckState *c, BdrvCheckMode fix)
{
    BDRVQcow2State *s = c->s;
    g_autofree uint64_t *l2 = g_malloc(s->cluster_size);

    if ((fix & BDRV_FIX_LEAKS) && !c->res->corruptions && !c->res->leaks &&
        !c->res->check_errors) {
        fix |= BDRV_FIX_ERRORS;
    }

    for (uint32_t i = 0; i < s->l1_size; i++) {
        uint64_t e = s->l1_table[i], off = e & L1E_OFFSET_MASK, rc;
        bool dirty = false;
        if (!off || (off & (s->cluster_size - 1)) || off >= c->file_len) {
            continue;
        }
        if (qcow2_get_refcount(c->bs, off >> s->cluster_bits, &rc) < 0) {
            continue;
        }
        if ((rc == 1) != !!(e & QCOW_OFLAG_COPIED)) {
            strata_error("%s OFLAG_COPIED L2 cluster: l1_index=%u "
                    "l1_entry=%" G_GINT64_MODIFIER "x refcount=%"
                    G_GUINT64_FORMAT "",
                    (fix & BDRV_FIX_ERRORS) ? "Repairing" : "ERROR", i, e, rc);
            if (fix & BDRV_FIX_ERRORS) {
                uint64_t ne = rc == 1 ? e | QCOW_OFLAG_COPIED
                                      : e & ~QCOW_OFLAG_COPIED;
                uint64_t be = GUINT64_TO_BE(ne);
                if (bdrv_pwrite(c->bs->file, s->l1_table_offset + i * 8ULL,
                                8, &be) == 0) {
                    s->l1_table[i] = ne;
                    c->res->corruptions_fixed++;
                } else {
                    c->res->corruptions++;
                }
            } else {
                c->res->corruptions++;
            }
        }
        /* Through the cache, so repairs and cached writes agree. */
        uint64_t *t;
        if (qcow2_cache_get(c->bs, s->l2_cache, off, (void **)&t) < 0) {
            continue;
        }
        memcpy(l2, t, s->cluster_size);
        for (uint32_t j = 0; j < s->l2_size; j++) {
            uint64_t le = GUINT64_FROM_BE(l2[j]);
            Qcow2ClusterType ty = qcow2_get_cluster_type(le);
            uint64_t doff = le & L2E_OFFSET_MASK;
            if ((ty != QCOW2_CLUSTER_NORMAL && ty != QCOW2_CLUSTER_ZERO_ALLOC) ||
                (doff & (s->cluster_size - 1))) {
                continue;
            }
            if (qcow2_get_refcount(c->bs, doff >> s->cluster_bits, &rc) < 0) {
                continue;
            }
            if ((rc == 1) != !!(le & QCOW_OFLAG_COPIED)) {
                strata_error("%s OFLAG_COPIED data cluster: l2_entry=%"
                        G_GINT64_MODIFIER "x refcount=%" G_GUINT64_FORMAT "",
                        (fix & BDRV_FIX_ERRORS) ? "Repairing" : "ERROR", le, rc);
                if (fix & BDRV_FIX_ERRORS) {
                    le = rc == 1 ? le | QCOW_OFLAG_COPIED
                                 : le & ~QCOW_OFLAG_COPIED;
                    l2[j] = GUINT64_TO_BE(le);
                    dirty = true;
                    c->res->corruptions_fixed++;
                } else {
                    c->res->corruptions++;
                }
            }
        }
        if (dirty) {
            if (qcow2_cache_get(c->bs, s->l2_cache, off, (void **)&t) == 0) {
                memcpy(t, l2, s->cluster_size);
                qcow2_cache_mark_dirty(s->l2_cache, t);
            }
        }
    }
    return 0;
}

int qcow2_check(BlockDriverState *bs, BdrvCheckResult *res, BdrvCheckMode fix)
{
    BDRVQcow2State *s = bs->opaque;
    int64_t file_len = bdrv_getlength(bs->file);
    CheckState c = { .bs = bs, .s = s, .res = res };
    uint64_t highest = 0;
    int ret;

    if (file_len < 0) {
        return (int)file_len;
    }
    if (bs->read_only) {
        fix = BDRV_FIX_NONE;
    }
    c.file_len = file_len;
    c.nb_clusters = qcow2_align_up(file_len, s->cluster_size) >> s->cluster_bits;
    if (c.nb_clusters > CHECK_MAX_CLUSTERS) {
        return -ENOMEM;
    }
    c.counts = g_try_new0(uint32_t, MAX(c.nb_clusters, 1));
    if (!c.counts) {
        return -ENOMEM;
    }

    g_rw_lock_writer_lock(&s->free_lock);
    g_mutex_lock(&s->lock);
    /* Work from the on-disk state. */
    ret = qcow2_write_back_metadata(bs);
    if (ret < 0) {
        goto out;
    }
    res->total_clusters = qcow2_align_up(s->size, s->cluster_size) >>
                          s->cluster_bits;
    res->has_allocation_info = true;

    ret = qcow2_snapshot_check_table(bs, res, fix);
    if (ret < 0) {
        goto out;
    }
    inc_refs(&c, 0, s->cluster_size);
    ret = check_l1(&c, s->l1_table_offset, s->l1_size, s->l1_table, true);
    for (uint32_t i = 0; ret == 0 && i < s->nb_snapshots; i++) {
        Qcow2Snapshot *sn = &s->snapshots[i];
        if ((sn->l1_table_offset & (s->cluster_size - 1))) {
            strata_error("ERROR snapshot %s (%s) l1_offset=%#"
                    G_GINT64_MODIFIER "x: L1 table is not cluster aligned; "
                    "snapshot table entry corrupted", sn->id_str, sn->name,
                    sn->l1_table_offset);
            res->corruptions++;
            continue;
        }
        if ((uint64_t)sn->l1_size * 8 > QCOW2_MAX_L1_BYTES) {
            strata_error("ERROR snapshot %s (%s) l1_size=%#x: L1 table is "
                    "too large; snapshot table entry corrupted",
                    sn->id_str, sn->name, sn->l1_size);
            res->corruptions++;
            continue;
        }
        ret = check_l1(&c, sn->l1_table_offset, sn->l1_size, NULL, false);
    }
    if (ret < 0) {
        goto out;
    }
    inc_refs(&c, s->snapshots_offset, s->snapshots_size);
    inc_refs(&c, s->refcount_table_offset,
             (uint64_t)s->refcount_table_size * 8);
    for (uint32_t i = 0; i < s->refcount_table_size; i++) {
        uint64_t off = s->refcount_table[i] & REFT_OFFSET_MASK;
        if (!off) {
            continue;
        }
        if (off & (s->cluster_size - 1)) {
            strata_error("ERROR refcount block %u is not cluster aligned; "
                    "refcount table entry corrupted", i);
            res->corruptions++;
            continue;
        }
        if ((off >> s->cluster_bits) >= c.nb_clusters) {
            strata_error("ERROR refcount block %u is outside image", i);
            res->corruptions++;
            continue;
        }
        inc_refs(&c, off, s->cluster_size);
    }
    ret = compare_refcounts(&c, fix, &highest);
    if (ret == 0) {
        ret = check_copied(&c, fix);
    }
    if (ret == 0 && fix) {
        ret = qcow2_write_back_metadata(bs);
    }
    res->image_end_offset = (int64_t)(highest + 1) << s->cluster_bits;

out:
    g_mutex_unlock(&s->lock);
    g_rw_lock_writer_unlock(&s->free_lock);
    g_free(c.counts);
    return ret < 0 ? ret : 0;
}
