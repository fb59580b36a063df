/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Internal snapshots through the generic block layer: list, find, create,
 * delete, apply (goto) and read-only temporary load, whatever format holds
 * them (today: qcow2).
 *
 * Two ways in:
 *  - one call per operation (bdrv_snapshot_create/delete/goto): the node
 *    is drained around it and the phases below run in sequence;
 *  - the phases themselves, for the transaction engine, which drains every
 *    node involved and interleaves the phases of several operations.
 *
 * The phases are the transaction's (../shared/DESIGN.md), the only names
 * for them in strata; QEMU calls the same ideas prepare (our check + do),
 * commit (invalidate), abort (cancel) and clean.
 *
 *   check       validates everything that can be known before writing:
 *               name rules, duplicates (also against the operations
 *               checked before on the node), lookups, read-only node,
 *               format support, refcount width, room in the table, a
 *               block job using the node.  No side effect on the image;
 *               the operation is registered on the node so the next
 *               check sees it.  Needs no drain.
 *   do          may fail (I/O); does all the allocation and refcount work
 *               and writes the new snapshot table to new clusters;
 *               nothing is visible yet (if the process died now the image
 *               reads exactly as before, at worst leaking clusters).  A
 *               failed do has undone itself; only clean is left.
 *   invalidate  may fail only in its one header write: makes the result
 *               visible.
 *   cancel      undoes do; on an invalidated operation it writes the
 *               header back first.  Must not lose data; an error means
 *               clusters may leak.
 *   clean       ends the operation and frees it, on both paths; after
 *               invalidate it frees the clusters nothing uses any more (a
 *               failure here only leaks).  The op pointer is gone after.
 *
 * The rules, enforced (a step that breaks one is refused with an error
 * and changes nothing):
 *  - do, invalidate and cancel need the node drained by the calling
 *    thread (bdrv_drained_begin); check and clean do not (qcow2 excludes
 *    guest I/O itself while it frees clusters);
 *  - a node in use by a block job refuses check, do and invalidate with
 *    QEMU's "Node '<node>' is busy: block device is in use by block job:
 *    <type>";
 *  - several operations on one node: each check sees the ones before it
 *    (a second create gets the next ID, a duplicate name is refused);
 *    they are done and invalidated in the order they were checked, and
 *    cancelled newest first (an operation is cancelled only when no
 *    operation after it on the node is done or invalidated); invalidated
 *    ones are cleaned oldest first;
 *  - an apply (goto) is the only operation on its node;
 *  - each phase runs once, in order: check, do, invalidate, then clean;
 *    or cancel after do or invalidate, then clean.  An operation checked
 *    after one that was then abandoned (cleaned without taking effect, or
 *    cancelled) refuses do: it was validated against a state that will
 *    not exist.
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
/* True if images of the format (by name) can hold internal snapshots. */
bool bdrv_format_can_snapshot(const char *format);

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
/* The error of a lookup by id and/or name that found nothing, in QEMU's
 * words (shared by the generic lookups and the drivers' checks). */
void bdrv_snapshot_not_found(const char *id, const char *name, GError **errp);
bool bdrv_snapshot_find_by_id_and_name(BlockDriverState *bs, const char *id,
                                       const char *name,
                                       BdrvSnapshotInfo *out, GError **errp);

/* The rule for a new snapshot's name: 1..BDRV_SNAPSHOT_NAME_MAX bytes
 * ("Name is empty" otherwise, as QEMU; too long is refused).  0 or
 * -EINVAL with errp set. */
int bdrv_snapshot_check_name(const char *name, GError **errp);

/* Create flags */
#define BDRV_SNAPSHOT_ALLOW_DUPLICATE 0x1  /* what qemu-img -c allows */
/* The caller is alone on the image (no guest I/O until the op is
 * cleaned): a qcow2 create through the phases puts the active image back
 * into its old tables in clean, as an in-place create leaves it. */
#define BDRV_SNAPSHOT_SETTLE          0x2

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

/* The phases (see the top of this file).  A check returns the new
 * operation, or NULL with errp set. */
typedef struct BdrvSnapshotOp BdrvSnapshotOp;

BdrvSnapshotOp *bdrv_snapshot_create_check(BlockDriverState *bs,
                                           const BdrvSnapshotInfo *tmpl,
                                           int flags, GError **errp);
BdrvSnapshotOp *bdrv_snapshot_delete_check(BlockDriverState *bs,
                                           const char *id, const char *name,
                                           GError **errp);
BdrvSnapshotOp *bdrv_snapshot_goto_check(BlockDriverState *bs,
                                         const char *id, const char *name,
                                         GError **errp);
/* The snapshot created, deleted or applied (valid until clean; a
 * create's date and size are final once do has run). */
const BdrvSnapshotInfo *bdrv_snapshot_op_info(BdrvSnapshotOp *op);
BlockDriverState *bdrv_snapshot_op_bs(BdrvSnapshotOp *op);
/* Optional, undrained, before do (issue 15: a create's pre-copy); a
 * driver without it does nothing.  pre_cancel undoes it for an op that
 * will not be done (the op stays checked). */
int bdrv_snapshot_op_pre_do(BdrvSnapshotOp *op, GError **errp);
void bdrv_snapshot_op_pre_cancel(BdrvSnapshotOp *op);
int bdrv_snapshot_op_do(BdrvSnapshotOp *op, GError **errp);
int bdrv_snapshot_op_invalidate(BdrvSnapshotOp *op, GError **errp);
int bdrv_snapshot_op_cancel(BdrvSnapshotOp *op, GError **errp);
/* Ends the op; refused (returns -EBUSY, op kept) if it is done and
 * neither invalidated nor cancelled, or invalidated while an operation
 * before it on the node is not cleaned yet.  Other errors: clusters leak,
 * the op is freed all the same. */
int bdrv_snapshot_op_clean(BdrvSnapshotOp *op, GError **errp);
/* Issue 14: after do, before invalidate: the one write invalidate will
 * make to the image file (offset, length <= BDRV_SNAPSHOT_PUBLISH_MAX,
 * bytes), so a crash-atomic transaction can record it first; *synced:
 * whether do left everything durable and invalidate syncs its write (the
 * transaction then needs no flush of its own).  -ENOTSUP when the driver
 * cannot say. */
#define BDRV_SNAPSHOT_PUBLISH_MAX 64
int bdrv_snapshot_op_publish_bytes(BdrvSnapshotOp *op, uint64_t *offset,
                                   uint32_t *len, uint8_t *new_bytes,
                                   bool *synced);

G_END_DECLS

#endif
