/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Transaction actions that put a new overlay on top of a device:
 * blockdev-snapshot-sync (a new or existing image file), blockdev-snapshot
 * (an image already open as a node) and the external revert (a strata
 * extension: the new overlay goes over a node further down the device's
 * chain, so the device reads what that node holds; the old top stays on
 * disk untouched).  Each drives one ExternalSnapshot
 * (block/external-snapshot.c) through its phases.
 *
 * A second external snapshot of the same device in one list goes on top
 * of the first one's overlay, as if the two ran one after the other.
 */
#include <string.h>

#include "blockdev/transaction-int.h"

typedef struct ExternalState {
    BlockBackend *blk;           /* a reference */
    ExternalSnapshot *es;
    BlockDriverState *overlay;   /* blockdev-snapshot's, a reference */
    BlockDriverState *revert_to; /* a reference */
    BlkAction *prev;             /* an earlier new top of the device */
} ExternalState;

/* QEMU's refusals for the device's current image before the overlay's. */
static bool check_old_node(BlockBackend *blk, GError **errp)
{
    BlockDriverState *bs = blk_bs(blk);

    if (!bs) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "Device '%s' has no medium", blk_name(blk));
        return false;
    }
    return !bdrv_op_is_blocked(bs, errp);
}

/* The checks every variant ends with; the operation is claimed in the
 * list's set of targets and, when it succeeds, becomes the device's
 * planned new top. */
static bool check_es(BlkAction *a, ExternalState *s,
                     const ExternalSnapshotParams *p, GError **errp)
{
    s->prev = blk_action_top_changer_before(a);
    s->es = external_snapshot_new(s->blk, p);
    if (!external_snapshot_check(s->es, blk_action_external_targets(a),
                                 errp)) {
        return false;
    }
    blk_action_set_new_top(a, s->es, p->format ? p->format : "qcow2",
                           p->overlay);
    return true;
}

static bool sync_check(BlkAction *a, const void *params, GError **errp)
{
    const BlkActionSnapshotSync *q = params;
    ExternalState *s = blk_action_state(a);
    ExternalSnapshotParams p = {
        .snapshot_file = q->snapshot_file,
        .format = q->format,
        .mode = q->mode_existing ? EXTERNAL_SNAPSHOT_MODE_EXISTING
                                 : EXTERNAL_SNAPSHOT_MODE_ABSOLUTE_PATHS,
        .snapshot_node_name = q->snapshot_node_name,
    };

    s->blk = blk_action_find_device(q->device, q->node_name, false, errp);
    if (!s->blk || !blk_action_use_device(a, s->blk, errp) ||
        !check_old_node(s->blk, errp)) {
        return false;
    }
    if (q->node_name && !q->snapshot_node_name) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "New overlay node-name missing");
        return false;
    }
    if (q->snapshot_node_name &&
        !blockdev_check_node_name(q->snapshot_node_name, NULL)) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "New overlay node-name already in use");
        return false;
    }
    return check_es(a, s, &p, errp);
}

static bool snapshot_check(BlkAction *a, const void *params, GError **errp)
{
    const BlkActionSnapshot *q = params;
    ExternalState *s = blk_action_state(a);
    ExternalSnapshotParams p = { 0 };

    s->blk = blk_action_find_device(q->node, q->node, false, errp);
    if (!s->blk || !blk_action_use_device(a, s->blk, errp) ||
        !check_old_node(s->blk, errp)) {
        return false;
    }
    s->overlay = blockdev_lookup_bs(q->overlay, q->overlay, errp);
    if (!s->overlay) {
        return false;
    }
    p.overlay = s->overlay;
    p.format = bdrv_get_format_name(s->overlay);
    return check_es(a, s, &p, errp);
}

static bool revert_check(BlkAction *a, const void *params, GError **errp)
{
    const BlkActionRevertExternal *q = params;
    ExternalState *s = blk_action_state(a);
    ExternalSnapshotParams p = {
        .snapshot_file = q->snapshot_file,
        .format = q->format,
        .mode = EXTERNAL_SNAPSHOT_MODE_ABSOLUTE_PATHS,
        .snapshot_node_name = q->snapshot_node_name,
    };

    s->blk = blk_action_find_device(q->device, NULL, true, errp);
    if (!s->blk || !blk_action_use_device_alone(a, s->blk, errp) ||
        !check_old_node(s->blk, errp)) {
        return false;
    }
    if (!q->node || !*q->node) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "Parameter 'node' is missing");
        return false;
    }
    s->revert_to = blockdev_get_node(q->node, errp);
    if (!s->revert_to) {
        return false;
    }
    if (q->snapshot_node_name &&
        !blockdev_check_node_name(q->snapshot_node_name, NULL)) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "New overlay node-name already in use");
        return false;
    }
    p.revert_to = s->revert_to;
    return check_es(a, s, &p, errp);
}

static bool external_do(BlkAction *a, GError **errp)
{
    ExternalState *s = blk_action_state(a);

    if (s->prev) {
        /* on top of the earlier overlay, under its final name */
        ExternalSnapshot *pes = blk_action_new_top_es(s->prev);
        g_autofree char *name = external_snapshot_get_final_filename(pes);
        external_snapshot_set_base(s->es, external_snapshot_get_overlay(pes),
                                   name);
    }
    if (blk_action_intent_active(a)) {
        /* the overlay appears under its name only at invalidate */
        external_snapshot_set_staged(s->es);
    }
    return external_snapshot_do(s->es, errp);
}

/* Issue 14: the device's image under a new overlay carries the record's
 * extension too, so opening it alone completes the transaction; marked
 * before the devices' flush, which makes it durable at no extra sync. */
static bool external_intent_mark(BlkAction *a, GError **errp)
{
    ExternalState *s = blk_action_state(a);

    if (!s->prev && !s->revert_to) {
        blk_action_intent_witness(a, external_snapshot_get_witness(s->es));
    }
    return true;
}

/* A created overlay: it joins the record, its publish is the rename from
 * the temporary name (an existing overlay is not written by publish
 * except for a missing backing link, which the record does not cover). */
static bool external_intent_describe(BlkAction *a, GError **errp)
{
    ExternalState *s = blk_action_state(a);
    const char *tmp = external_snapshot_get_staged_file(s->es);
    BlockDriverState *ov = external_snapshot_get_overlay(s->es);
    g_autofree char *final = NULL;

    if (!tmp || !ov) {
        return true;
    }
    if (!blk_action_intent_mark(a, ov, errp)) {
        return false;
    }
    /* issue 14: opening the old image alone must find the record too */
    blk_action_intent_witness(a, external_snapshot_get_old_top(s->es));
    final = external_snapshot_get_final_filename(s->es);
    return blk_action_intent_rename(a, ov, tmp, final, errp);
}

static bool external_invalidate(BlkAction *a, GError **errp)
{
    ExternalState *s = blk_action_state(a);

    return external_snapshot_invalidate(s->es, errp);
}

static bool external_cancel(BlkAction *a, GError **errp)
{
    ExternalState *s = blk_action_state(a);

    return external_snapshot_cancel(s->es, errp);
}

static void external_clean(BlkAction *a)
{
    ExternalState *s = blk_action_state(a);

    if (s->es) {
        external_snapshot_clean(s->es);
    }
    if (s->overlay) {
        bdrv_unref(s->overlay);
    }
    if (s->revert_to) {
        bdrv_unref(s->revert_to);
    }
    if (s->blk) {
        blk_unref(s->blk);
    }
}

const BlkActionType blk_action_snapshot_sync_type = {
    .name = "blockdev-snapshot-sync",
    .state_size = sizeof(ExternalState),
    .check = sync_check,
    .do_ = external_do,
    .invalidate = external_invalidate,
    .cancel = external_cancel,
    .clean = external_clean,
    .intent_mark = external_intent_mark,
    .intent_describe = external_intent_describe,
};

const BlkActionType blk_action_snapshot_type = {
    .name = "blockdev-snapshot",
    .state_size = sizeof(ExternalState),
    .check = snapshot_check,
    .do_ = external_do,
    .invalidate = external_invalidate,
    .cancel = external_cancel,
    .clean = external_clean,
    .intent_describe = external_intent_describe,
};

const BlkActionType blk_action_revert_external_type = {
    .name = STRATA_QAPI_PREFIX "blockdev-snapshot-revert",
    .state_size = sizeof(ExternalState),
    .check = revert_check,
    .do_ = external_do,
    .invalidate = external_invalidate,
    .cancel = external_cancel,
    .clean = external_clean,
    .intent_describe = external_intent_describe,
};
