/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The transaction engine's entry to RBD group snapshots
 * (blockdev/rbd-group.c): a list of internal snapshot creates, one per
 * device, may run as one rbd_group_snap_create.
 */
#ifndef STRATA_BLOCKDEV_RBD_GROUP_H
#define STRATA_BLOCKDEV_RBD_GROUP_H

#include "block/block-backend.h"

/*
 * Called by the engine, under the hold and before any do, for a list of
 * n internal snapshot creates on the n devices blks (in that order).
 * When every device qualifies (see rbd-group.c) their operations are
 * joined to one group snapshot; otherwise nothing changes.  Without the
 * rbd driver it does nothing.
 */
void rbd_group_plan(BlockBackend *const *blks, guint n);

#endif
