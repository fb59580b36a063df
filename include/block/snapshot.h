/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Internal snapshots through the generic block layer: list, find, create,
 * delete, apply (goto) and read-only temporary load, whatever format holds
 * them (today: qcow2).
 *
 * Two ways in:
 *  - one call per operation (bdrv_snapshot_create/delete/goto): the node
 *    is drained around it and the steps below run in sequence;
 *  - the steps themselves, for the transaction engine, which drains every
 *    node involved first and interleaves the steps of several nodes:
 *
 *      prepare   may fail; does all the allocation and reference-count
 *                work and writes the new snapshot table to new clusters;
 *                nothing is visible yet (the image, if the process died
 *                now, reads exactly as before, at worst leaking clusters)
 *      publish   may fail only in its one header write: makes the result
 *                visible
 *      unpublish writes the header back as it was before publish
 *      undo      cancels a prepared operation (unpublishing it first if
 *                it was published); must not lose data
 *      cleanup   after a successful publish: frees what nobody uses any
 *                more; a failure here only leaks clusters
 *
 *    undo and cleanup end the operation and free it.  Several operations
 *    may be prepared on one node; each sees the ones prepared before it
 *    (a second create gets the next ID, a duplicate name is refused).
 *    Publish and clean them up in the order they were prepared; undo them
 *    newest first.  An apply (goto) must be the only prepared operation
 *    on its node.
 *
 * Lookup semantics follow QEMU's (they differ per entry point on purpose):
 * bdrv_snapshot_find() is name-only (qemu-img snapshot -d, delvm),
 * bdrv_snapshot_find_by_id_and_name() matches the keys given (QMP delete),
 * bdrv_snapshot_goto() tries the ID first, then the name (qemu-img -a,
 * loadvm), as does bdrv_snapshot_load_tmp_by_id_or_name() (convert -l).
 */
#ifndef STRATA_BLOCK_SNAPSHOT_H
#define STRATA_BLOCK_SNAPSHOT_H

#include "block/block.h"

G_BEGIN_DECLS

/* Longest name we create (QEMU keeps 255 bytes and silently truncates;
 * we refuse).  Longer names read from an image are kept and shown whole. */
#define BDRV_SNAPSHOT_NAME_MAX 255
#define BDRV_SNAPSHOT_NO_ICOUNT UINT64_MAX

typedef struct BdrvSnapshotInfo {
    char *id_str;
    char *name;
    uint64_t vm_state_size;    /* 0: disk-only snapshot */
    uint32_t date_sec;
    uint32_t date_nsec;
    uint64_t vm_clock_nsec;
    uint64_t icount;           /* BDRV_SNAPSHOT_NO_ICOUNT: none */
    uint64_t disk_size;        /* virtual size when the snapshot was taken */
} BdrvSnapshotInfo;

void bdrv_snapshot_info_clear(BdrvSnapshotInfo *sn);
void bdrv_snapshot_info_copy(BdrvSnapshotInfo *dst,
                             const BdrvSnapshotInfo *src);
void bdrv_snapshot_list_free(BdrvSnapshotInfo *list, int n);

/* True if the node's format can hold internal snapshots. */
bool bdrv_can_snapshot(BlockDriverState *bs);

/*
 * The node's snapshots in table order: returns how many (>= 0) with
 * *list (free with bdrv_snapshot_list_free), or -errno with errp set
 * (-ENOTSUP if the format has no internal snapshots).
 */
int bdrv_snapshot_list(BlockDriverState *bs, BdrvSnapshotInfo **list,
                       GError **errp);

/* Lookups into the list; on success *out is filled (clear it after). */
bool bdrv_snapshot_find(BlockDriverState *bs, const char *name,
                        BdrvSnapshotInfo *out, GError **errp);
bool bdrv_snapshot_find_by_id(BlockDriverState *bs, const char *id,
                              BdrvSnapshotInfo *out, GError **errp);
/* id and/or name (at least one); the first entry matching all given. */
bool bdrv_snapshot_find_by_id_and_name(BlockDriverState *bs, const char *id,
                                       const char *name,
                                       BdrvSnapshotInfo *out, GError **errp);

/* Create flags */
#define BDRV_SNAPSHOT_ALLOW_DUPLICATE 0x1  /* what qemu-img -c allows */

/*
 * Creates a snapshot of the node's current content named tmpl->name.
 * From tmpl also date_sec/date_nsec (both 0: now), vm_clock_nsec and
 * icount (QEMU: -1 from QMP, 0 from qemu-img); the ID is assigned like
 * QEMU (one more than the highest numeric ID), disk_size is the current
 * virtual size.  On success *created (if non-NULL) describes the new
 * snapshot.  Names must be 1..255 bytes; a duplicate is refused unless
 * flags has BDRV_SNAPSHOT_ALLOW_DUPLICATE.
 */
int bdrv_snapshot_create(BlockDriverState *bs, const BdrvSnapshotInfo *tmpl,
                         int flags, BdrvSnapshotInfo *created, GError **errp);
/* Deletes the first snapshot matching id and/or name (as
 * find_by_id_and_name); *deleted (if non-NULL) describes it. */
int bdrv_snapshot_delete(BlockDriverState *bs, const char *id,
                         const char *name, BdrvSnapshotInfo *deleted,
                         GError **errp);
/* Reverts the active image to the snapshot whose ID, else whose name, is
 * snapshot_id, including its virtual size. */
int bdrv_snapshot_goto(BlockDriverState *bs, const char *snapshot_id,
                       GError **errp);
/* Same with the exact keys given (id and/or name). */
int bdrv_snapshot_goto_by_id_and_name(BlockDriverState *bs, const char *id,
                                      const char *name, GError **errp);

/*
 * Makes a read-only node read the snapshot's content instead of the
 * active image's, until it is closed (qemu-img convert -l).  The same is
 * reached at open with the qcow2 options snapshot.id= / snapshot.name=.
 */
int bdrv_snapshot_load_tmp(BlockDriverState *bs, const char *id,
                           const char *name, GError **errp);
int bdrv_snapshot_load_tmp_by_id_or_name(BlockDriverState *bs,
                                         const char *id_or_name,
                                         GError **errp);

/* The split steps (see the top of this file). */
typedef struct BdrvSnapshotOp BdrvSnapshotOp;

BdrvSnapshotOp *bdrv_snapshot_create_prepare(BlockDriverState *bs,
                                             const BdrvSnapshotInfo *tmpl,
                                             int flags, GError **errp);
BdrvSnapshotOp *bdrv_snapshot_delete_prepare(BlockDriverState *bs,
                                             const char *id,
                                             const char *name,
                                             GError **errp);
BdrvSnapshotOp *bdrv_snapshot_goto_prepare(BlockDriverState *bs,
                                           const char *id, const char *name,
                                           GError **errp);
/* The snapshot created, deleted or applied (valid until the op ends). */
const BdrvSnapshotInfo *bdrv_snapshot_op_info(BdrvSnapshotOp *op);
BlockDriverState *bdrv_snapshot_op_bs(BdrvSnapshotOp *op);
int bdrv_snapshot_op_publish(BdrvSnapshotOp *op, GError **errp);
int bdrv_snapshot_op_unpublish(BdrvSnapshotOp *op, GError **errp);
/* End the op (and free it); errors are only worth logging. */
int bdrv_snapshot_op_undo(BdrvSnapshotOp *op, GError **errp);
int bdrv_snapshot_op_cleanup(BdrvSnapshotOp *op, GError **errp);

G_END_DECLS

#endif
