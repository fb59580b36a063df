/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The rbd driver's private state, shared by block/rbd.c (connection, I/O,
 * create, resize) and block/rbd-snapshot.c (internal snapshots).
 */
#ifndef STRATA_BLOCK_RBD_INT_H
#define STRATA_BLOCK_RBD_INT_H

/* librados/librbd, through the table that loads them on first use */
#include "block/rbd-lib.h"

#include "block/block_int.h"
#include "blockdev/rbd-group.h"

typedef struct BDRVRBDState {
    rados_t cluster;
    rados_ioctx_t io;
    rbd_image_t image;
    char *pool;
    char *namespace;
    char *image_name;
    char *snap;                  /* open on this snapshot (read-only) */
    bool ro_handle;              /* image opened with rbd_open_read_only */

    /* Snapshot operations checked and not yet cleaned on this node:
     * a later check must see them (duplicate names).  Under lock. */
    GMutex lock;
    GPtrArray *pending;          /* of RBDSnapOp * */
} BDRVRBDState;

/* rbd-snapshot.c: the driver's snapshot callbacks (see block_int.h) */
int rbd_snap_list_node(BlockDriverState *bs, BdrvSnapshotInfo **list,
                       GError **errp);
int rbd_snap_create_check(BlockDriverState *bs, const BdrvSnapshotInfo *tmpl,
                          int flags, BdrvSnapshotInfo *info, void **opp,
                          GError **errp);
int rbd_snap_delete_check(BlockDriverState *bs, const char *id,
                          const char *name, BdrvSnapshotInfo *info,
                          void **opp, GError **errp);
int rbd_snap_goto_check(BlockDriverState *bs, const char *id,
                        const char *name, BdrvSnapshotInfo *info, void **opp,
                        GError **errp);
int rbd_snap_do(BlockDriverState *bs, void *op, BdrvSnapshotInfo *info,
                GError **errp);
int rbd_snap_invalidate(BlockDriverState *bs, void *op, GError **errp);
int rbd_snap_cancel(BlockDriverState *bs, void *op, GError **errp);
int rbd_snap_clean(BlockDriverState *bs, void *op, GError **errp);
void rbd_snapshot_state_init(BDRVRBDState *s);
void rbd_snapshot_state_clear(BDRVRBDState *s);

/* The snapshots of the image in the user namespace (those a user made;
 * group and trash snapshots are not the image's own).  Returns how many,
 * or -errno. */
int rbd_user_snap_list(rbd_image_t image, BdrvSnapshotInfo **list);

/* Group snapshots (blockdev/rbd-group.c): the per-image phases of a
 * create joined to a group call these instead of snapshotting alone. */
typedef struct RBDSnapOp RBDSnapOp;
typedef struct RBDGroupTxn RBDGroupTxn;
/* The node's only pending op when it is not done nor joined, or NULL */
RBDSnapOp *rbd_sole_pending_op(BDRVRBDState *s);
/* The name of a pending delete/apply of a group snapshot waiting to be
 * joined (newly allocated), or NULL */
char *rbd_whole_group_op_name(BDRVRBDState *s);
int rbd_snap_op_kind(RBDSnapOp *op);          /* an RBDGroupKind */
bool rbd_snap_op_whole_group(RBDSnapOp *op);
const char *rbd_snap_op_name(RBDSnapOp *op);
void rbd_snap_op_set_group(RBDSnapOp *op, RBDGroupTxn *g);
int rbd_group_do(RBDGroupTxn *g, GError **errp);
int rbd_group_invalidate(RBDGroupTxn *g, GError **errp);
int rbd_group_cancel(RBDGroupTxn *g, GError **errp);
/* After the transaction (each member's clean; runs once) */
void rbd_group_clean(RBDGroupTxn *g);
/* The refusal of a group snapshot's delete/apply on part of the group */
void rbd_refuse_group_snap(GError **errp, const char *name,
                           const char *image);
void rbd_group_unref(RBDGroupTxn *g);
/* The name under which a group-namespace snapshot is listed (a strata
 * group's published snapshot), or NULL when it is not listed. */
char *rbd_group_listed_name(rbd_image_t image, uint64_t snap_id);
/* Sets an image opened without a snapshot to the group snapshot listed
 * as name (rbd-snapshot.c); 0 or -errno (-ENOENT: none). */
int rbd_snap_set_group(rbd_image_t image, const char *name);

#endif
