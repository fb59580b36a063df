/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Private to the qcow2 snapshot files: what the operations
 * (qcow2-snapshot.c) use of the snapshot table (qcow2-snapshot-table.c).
 * Everything here runs under the qcow2 locks.
 */
#ifndef STRATA_QCOW2_SNAPSHOT_H
#define STRATA_QCOW2_SNAPSHOT_H

#include "qcow2.h"

#define SNAP_EXTRA_KNOWN 24   /* vm_state_size_large, disk_size, icount */

void qcow2_sn_clear(Qcow2Snapshot *sn);
void qcow2_sn_free_array(Qcow2Snapshot *sn, uint32_t nb);
void qcow2_sn_copy(Qcow2Snapshot *dst, const Qcow2Snapshot *src);
/* A copy of nb entries with room for `spare` more. */
Qcow2Snapshot *qcow2_sn_dup_array(const Qcow2Snapshot *sn, uint32_t nb,
                                  uint32_t spare);

/* Bytes one entry takes as we write it (before the 8-byte padding). */
uint64_t qcow2_sn_entry_bytes(size_t id_len, size_t name_len,
                              uint32_t unknown_extra_size);
/* Bytes of a whole table: entries 8-byte aligned, the last unpadded. */
uint64_t qcow2_sn_table_bytes(const Qcow2Snapshot *sn, uint32_t nb);

/* Clusters for `bytes` (0: none, offset 0), or -errno. */
int64_t qcow2_sn_alloc_bytes(BlockDriverState *bs, uint64_t bytes);
/* Refcount cache written and the file synced: new clusters' counts are
 * durable before anything points at them. */
int qcow2_sn_sync_refcounts(BlockDriverState *bs);
/* Writes a table to new clusters, durable with their refcounts; nothing
 * points at it yet; on failure its clusters are given back. */
int qcow2_sn_write_table(BlockDriverState *bs, const Qcow2Snapshot *sn,
                         uint32_t nb, uint64_t *offset, uint64_t *size,
                         GError **errp);
/* The same, not synced: for a caller that syncs once for several writes
 * before anything points at them (the pre-copy's seal). */
int qcow2_sn_write_table_unsynced(BlockDriverState *bs,
                                  const Qcow2Snapshot *sn, uint32_t nb,
                                  uint64_t *offset, uint64_t *size,
                                  GError **errp);
/* Writes a table into clusters already allocated (not synced). */
int qcow2_sn_write_table_at(BlockDriverState *bs, const Qcow2Snapshot *sn,
                            uint32_t nb, uint64_t offset, GError **errp);
/* The commit-point writes: header bytes 60..71, or 24..47 (size and
 * active L1 together). */
int qcow2_sn_write_table_header(BlockDriverState *bs, uint32_t nb,
                                uint64_t offset);
/* The same bytes 60..71, not synced: the caller syncs before it frees
 * anything the old header points at (a pre-done delete's clean). */
int qcow2_sn_write_table_header_unsynced(BlockDriverState *bs, uint32_t nb,
                                         uint64_t offset);
int qcow2_sn_write_active_header(BlockDriverState *bs, uint64_t size,
                                 uint32_t l1_size, uint64_t l1_offset);
/* A snapshot's L1 (placement and every entry checked), zero-padded to at
 * least min_size entries, COPIED stripped. */
int qcow2_sn_read_l1(BlockDriverState *bs, const Qcow2Snapshot *sn,
                     uint32_t min_size, uint64_t **out, uint32_t *out_size,
                     GError **errp);

/* qcow2-snapshot-tree.c: reads only.  The highest refcount among the
 * clusters of the tree under l1, and a cluster that has it. */
int qcow2_tree_max_refcount(BlockDriverState *bs, const uint64_t *l1,
                            uint32_t l1_size, uint64_t *max,
                            uint64_t *cluster, GError **errp);

/* qcow2-snapshot-tree.c: qcow2_tree_release() in parts, so that a
 * delete's clean can let guest requests in between them (the caller
 * holds the qcow2 locks for each part, and calls the fix for every
 * range of the active L1 once every part of the tree is released). */
#define QCOW2_RELEASE_PART_L2_ENTRIES 8192

/* For tests (qcow2-snapshot.c): called between the parts of a delete's
 * frees with no lock held (guest requests may run in it); part_entries,
 * if not 0, sets the L1 entries per part.  NULL: no hook. */
typedef void Qcow2FreeHook(BlockDriverState *bs, unsigned part,
                           void *opaque);
void qcow2_snapshot_set_free_hook(Qcow2FreeHook *hook, void *opaque,
                                  uint32_t part_entries);
uint32_t qcow2_tree_part_entries(BDRVQcow2State *s);
int qcow2_tree_release_part(BlockDriverState *bs, const uint64_t *l1,
                            uint32_t l1_size, uint32_t from, uint32_t to,
                            GError **errp);
int qcow2_active_fix_copied_part(BlockDriverState *bs, uint32_t from,
                                 uint32_t to, GError **errp);

/* The clusters an L2 entry holds a reference to: [*first, *first + *n)
 * (0 for none); -EINVAL for an entry no valid image has. */
int qcow2_entry_clusters(BDRVQcow2State *s, uint64_t e, uint64_t *first,
                         uint64_t *n);

void qcow2_sn_to_info(const Qcow2Snapshot *sn, BdrvSnapshotInfo *info);
/* The first entry matching id (if non-NULL) and name (if non-NULL), or -1. */
int qcow2_sn_find(const Qcow2Snapshot *sn, uint32_t nb, const char *id,
                  const char *name);

/* The locks a snapshot operation holds: free_lock for writing (no data
 * request is in flight, so a cluster it frees cannot be in use), then
 * s->lock. */
static inline void qcow2_sn_lock(BDRVQcow2State *s)
{
    g_rw_lock_writer_lock(&s->free_lock);
    g_mutex_lock(&s->lock);
}

static inline void qcow2_sn_unlock(BDRVQcow2State *s)
{
    g_mutex_unlock(&s->lock);
    g_rw_lock_writer_unlock(&s->free_lock);
}

/* 0, or -ENOTSUP with QEMU's text for an image with a data file. */
int qcow2_sn_refuse_data_file(BDRVQcow2State *s, GError **errp);

#endif
