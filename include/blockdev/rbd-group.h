/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The transaction engine's entry to RBD group snapshots
 * (blockdev/rbd-group.c): a list of internal snapshot creates, one per
 * device, may run as one rbd_group_snap_create.
 */
#ifndef STRATA_BLOCKDEV_RBD_GROUP_H
#define STRATA_BLOCKDEV_RBD_GROUP_H

#include "block/block-backend.h"

/* What every action of a transaction is (one action per device) */
typedef enum {
    RBD_GROUP_NONE,              /* anything else */
    RBD_GROUP_CREATE,            /* blockdev-snapshot-internal-sync */
    RBD_GROUP_DELETE,            /* blockdev-snapshot-delete-internal-sync */
    RBD_GROUP_APPLY,             /* the apply-internal extension */
} RBDGroupKind;

/*
 * Called by the engine, under the hold and before any do, with the n
 * devices blks of a transaction whose actions are all of kind (one per
 * device), or RBD_GROUP_NONE.  Creates: when every device qualifies (see
 * rbd-group.c) their operations are joined to one group snapshot;
 * otherwise nothing changes.  Deletes/applies of a strata group snapshot
 * are joined when the devices are exactly the group snapshot's images;
 * any other transaction holding one is refused (false, errp set) before
 * anything changed.  Without the rbd driver it does nothing.
 */
bool rbd_group_plan(BlockBackend *const *blks, guint n, RBDGroupKind kind,
                    GError **errp);

#endif
