/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The table of built-in transaction action types (one row per
 * BlkActionKind; a new type is its own file plus one row here), the
 * lookup of the device an action names, and the abort action.
 */
#include <string.h>

#include "blockdev/transaction-int.h"

/* ---- abort: fails in do, so a test can roll a transaction back ---- */

static bool abort_check(BlkAction *a, const void *params, GError **errp)
{
    return true;
}

static bool abort_do(BlkAction *a, GError **errp)
{
    g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                "Transaction aborted using Abort action");
    return false;
}

const BlkActionType blk_action_abort_type = {
    .name = "abort",
    .check = abort_check,
    .do_ = abort_do,
};

/* ---- the table ---- */

static const BlkActionType *const types[BLK_ACTION__MAX] = {
    [BLK_ACTION_ABORT] = &blk_action_abort_type,
    [BLK_ACTION_SNAPSHOT_INTERNAL] = &blk_action_snapshot_internal_type,
    [BLK_ACTION_SNAPSHOT_DELETE_INTERNAL] =
        &blk_action_snapshot_delete_internal_type,
    [BLK_ACTION_SNAPSHOT_SYNC] = &blk_action_snapshot_sync_type,
    [BLK_ACTION_SNAPSHOT] = &blk_action_snapshot_type,
    [BLK_ACTION_APPLY_INTERNAL] = &blk_action_apply_internal_type,
    [BLK_ACTION_REVERT_EXTERNAL] = &blk_action_revert_external_type,
};

const BlkActionType *blk_action_type_of_kind(BlkActionKind kind)
{
    return (unsigned)kind < BLK_ACTION__MAX ? types[kind] : NULL;
}

const char *blk_action_kind_name(BlkActionKind kind)
{
    const BlkActionType *t = blk_action_type_of_kind(kind);

    return t ? t->name : NULL;
}

bool blk_action_kind_from_name(const char *name, BlkActionKind *kind)
{
    for (int i = 0; i < BLK_ACTION__MAX; i++) {
        if (!strcmp(types[i]->name, name)) {
            *kind = i;
            return true;
        }
    }
    return false;
}

/* ---- which device an action names ---- */

static BlockBackend *device_of_root(BlockDriverState *bs, GError **errp)
{
    g_autoptr(GPtrArray) devs = blockdev_list_devices();

    for (guint i = 0; i < devs->len; i++) {
        BlockBackend *blk = g_ptr_array_index(devs, i);
        if (blk_bs(blk) == bs) {
            blk_ref(blk);
            return blk;
        }
    }
    /* a node no device shows: nothing to drain or switch for a guest
     * (the daemon's exports will be devices) */
    g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                "Node '%s' is not attached to a device",
                bdrv_get_node_name(bs));
    return NULL;
}

BlockBackend *blk_action_find_device(const char *device,
                                     const char *node_name, bool root_only,
                                     GError **errp)
{
    BlockDriverState *bs;
    BlockBackend *blk;

    if (root_only) {
        bs = blockdev_get_root_bs(device ? device : "", errp);
    } else {
        bs = blockdev_lookup_bs(device, node_name, errp);
    }
    if (!bs) {
        return NULL;
    }
    blk = device_of_root(bs, errp);
    bdrv_unref(bs);
    return blk;
}
