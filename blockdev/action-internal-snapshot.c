/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Transaction actions on internal snapshots: create
 * (blockdev-snapshot-internal-sync), delete
 * (blockdev-snapshot-delete-internal-sync: QEMU has no such action; ours
 * is undoable because do only writes a table without the entry and the
 * clusters are freed in clean, after success) and apply (a strata
 * extension: the device reverts to a snapshot, with every other device
 * of the transaction or with none).
 *
 * Each action drives one generic snapshot operation (block/snapshot.c)
 * through its phases.  The node it works on is the device's image as
 * the actions before it in the list leave it: after an external snapshot
 * of the same device, that is the new overlay, which does not exist yet
 * when the action is checked; then only what can be known is checked at
 * add (name, format) and the operation's own check runs in do.
 */
#include <errno.h>
#include <string.h>

#include "block/log.h"
#include "block/snapshot.h"
#include "blockdev/transaction-int.h"
#include "blockdev/vmstate-int.h"

typedef enum { INT_CREATE, INT_DELETE, INT_APPLY } InternalKind;

static const char *const kind_verbs[] = { "create", "delete", "apply" };

typedef struct InternalState {
    InternalKind kind;
    BlockBackend *blk;           /* a reference */
    char *device;                /* as the caller named it */
    char *id;
    char *name;
    BlkAction *prev;             /* an earlier new top of the device */
    BdrvSnapshotOp *op;
    bool done;                   /* the operation's do succeeded */
} InternalState;

/* ---- check ---- */

/* QEMU's device-level refusals, in its order, for the node the device
 * is on now. */
static bool check_device_node(InternalState *s, BlockDriverState *bs,
                              GError **errp)
{
    if (bdrv_op_is_blocked(bs, errp)) {
        return false;
    }
    if (bdrv_is_read_only(bs)) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "Device '%s' is read only", s->device);
        return false;
    }
    if (!bdrv_can_snapshot(bs)) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "Block format '%s' used by device '%s' does not support "
                    "internal snapshots", bdrv_get_format_name(bs),
                    s->device);
        return false;
    }
    return true;
}

/* The same for a new top that is not open yet: only its format. */
static bool check_new_top_format(InternalState *s, GError **errp)
{
    const char *fmt = blk_action_new_top_format(s->prev);

    if (!bdrv_format_can_snapshot(fmt)) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "Block format '%s' used by device '%s' does not support "
                    "internal snapshots", fmt, s->device);
        return false;
    }
    return true;
}

/* Rewrites the generic layer's node-level lookup errors in QEMU's
 * device-level words. */
static void with_device(InternalState *s, GError *err, GError **errp)
{
    if (g_error_matches(err, BDRV_ERROR, BDRV_ERROR_NOT_FOUND) &&
        s->kind != INT_CREATE) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "Snapshot with id '%s' and name '%s' does not exist on "
                    "device '%s'", s->id ? s->id : "null",
                    s->name ? s->name : "null", s->device);
        g_error_free(err);
        return;
    }
    if (s->kind == INT_CREATE && g_str_has_suffix(err->message,
                                                  "already exists")) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "Snapshot with name '%s' already exists on device '%s'",
                    s->name, s->device);
        g_error_free(err);
        return;
    }
    g_propagate_error(errp, err);
}

/* The generic operation's own check, on the node it will work on. */
static bool check_op(InternalState *s, BlockDriverState *bs, GError **errp)
{
    GError *err = NULL;

    switch (s->kind) {
    case INT_CREATE: {
        /* date 0: stamped in do; no VM, so no VM clock and no icount */
        BdrvSnapshotInfo tmpl = { .name = s->name,
                                  .icount = BDRV_SNAPSHOT_NO_ICOUNT };
        /* savevm with a VM-state handler: the state's size (vmstate.c) */
        tmpl.vm_state_size = blk_vmstate_pending_size(bs);
        s->op = bdrv_snapshot_create_check(bs, &tmpl, 0, &err);
        break;
    }
    case INT_DELETE:
        s->op = bdrv_snapshot_delete_check(bs, s->id, s->name, &err);
        break;
    case INT_APPLY:
        s->op = bdrv_snapshot_goto_check(bs, s->id, s->name, &err);
        break;
    }
    if (!s->op) {
        with_device(s, err, errp);
        return false;
    }
    return true;
}

static bool check_keys(InternalState *s, GError **errp)
{
    if (s->kind == INT_CREATE) {
        if (!s->name || !*s->name) {
            g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                        "Name is empty");
            return false;
        }
        return bdrv_snapshot_check_name(s->name, errp) == 0;
    }
    if (!s->id && !s->name) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "Name or id must be provided");
        return false;
    }
    return true;
}

static bool check_common(BlkAction *a, InternalKind kind, const char *device,
                         const char *id, const char *name, GError **errp)
{
    InternalState *s = blk_action_state(a);
    BlockDriverState *bs;

    s->kind = kind;
    s->device = g_strdup(device ? device : "");
    s->id = g_strdup(id);
    s->name = g_strdup(name);
    s->blk = blk_action_find_device(device, NULL, true, errp);
    if (!s->blk) {
        return false;
    }
    if (kind == INT_APPLY ? !blk_action_use_device_alone(a, s->blk, errp)
                          : !blk_action_use_device(a, s->blk, errp)) {
        return false;
    }
    if (kind == INT_DELETE && !check_keys(s, errp)) {
        return false;           /* QEMU checks the keys first here */
    }
    s->prev = blk_action_top_changer_before(a);
    bs = s->prev ? blk_action_new_top_node(s->prev) : blk_bs(s->blk);
    if (bs && !check_device_node(s, bs, errp)) {
        return false;
    }
    if (!bs && !check_new_top_format(s, errp)) {
        return false;
    }
    if (!check_keys(s, errp)) {
        return false;
    }
    /* a new top not open yet: its operation is checked in do */
    return bs ? check_op(s, bs, errp) : true;
}

static bool create_check(BlkAction *a, const void *params, GError **errp)
{
    const BlkActionSnapshotInternal *p = params;

    return check_common(a, INT_CREATE, p->device, NULL, p->name, errp);
}

static bool delete_check(BlkAction *a, const void *params, GError **errp)
{
    const BlkActionSnapshotDeleteInternal *p = params;

    return check_common(a, INT_DELETE, p->device, p->id, p->name, errp);
}

static bool apply_check(BlkAction *a, const void *params, GError **errp)
{
    const BlkActionApplyInternal *p = params;

    return check_common(a, INT_APPLY, p->device, p->id, p->name, errp);
}

/* ---- do, invalidate, cancel, clean ---- */

/* The node a deferred operation works on: the earlier new top. */
static BlockDriverState *new_top(InternalState *s)
{
    BlockDriverState *bs = blk_action_new_top_node(s->prev);

    return bs ? bs : external_snapshot_get_overlay(
                         blk_action_new_top_es(s->prev));
}

static bool internal_do(BlkAction *a, GError **errp)
{
    InternalState *s = blk_action_state(a);
    GError *err = NULL;

    if (!s->op) {
        BlockDriverState *bs = new_top(s);
        g_assert(bs);
        if (!check_device_node(s, bs, errp) || !check_op(s, bs, errp)) {
            return false;
        }
    }
    blk_action_drain_node(a, bdrv_snapshot_op_bs(s->op));
    if (bdrv_snapshot_op_do(s->op, &err) < 0) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "Failed to %s snapshot '%s' on device '%s': %s",
                    kind_verbs[s->kind],
                    bdrv_snapshot_op_info(s->op)->name, s->device,
                    err->message);
        g_error_free(err);
        return false;
    }
    s->done = true;
    return true;
}

/* A create checked on the device's node runs its pre-copy here, guest
 * I/O still running; an action on a node made earlier in the list (no op
 * yet) has nothing to pre-do. */
static bool internal_pre_do(BlkAction *a, GError **errp)
{
    InternalState *s = blk_action_state(a);
    GError *err = NULL;

    if (!s->op) {
        return true;
    }
    if (bdrv_snapshot_op_pre_do(s->op, &err) < 0) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "Failed to %s snapshot '%s' on device '%s': %s",
                    kind_verbs[s->kind], bdrv_snapshot_op_info(s->op)->name,
                    s->device, err->message);
        g_error_free(err);
        return false;
    }
    return true;
}

static void internal_pre_cancel(BlkAction *a)
{
    InternalState *s = blk_action_state(a);

    if (s->op) {
        bdrv_snapshot_op_pre_cancel(s->op);
    }
}

static bool internal_invalidate(BlkAction *a, GError **errp)
{
    InternalState *s = blk_action_state(a);

    return bdrv_snapshot_op_invalidate(s->op, errp) == 0;
}

static bool internal_cancel(BlkAction *a, GError **errp)
{
    InternalState *s = blk_action_state(a);

    /* a failed do has undone itself */
    if (!s->done) {
        return true;
    }
    s->done = false;
    return bdrv_snapshot_op_cancel(s->op, errp) == 0;
}

static void internal_clean(BlkAction *a)
{
    InternalState *s = blk_action_state(a);
    GError *err = NULL;

    if (s->op && bdrv_snapshot_op_clean(s->op, &err) < 0) {
        /* the operation's outcome stands; at worst clusters leak */
        strata_warning("Cleaning up the snapshot %s on device '%s': %s",
                       kind_verbs[s->kind], s->device, err->message);
        g_error_free(err);
    }
    if (s->blk) {
        blk_unref(s->blk);
    }
    g_free(s->device);
    g_free(s->id);
    g_free(s->name);
}

/* ---- crash-atomic transactions (issue 14) ---- */

/* The image is known at check unless it is a new top made earlier in the
 * list (then it is marked in describe, once it exists). */
static bool internal_intent_mark(BlkAction *a, GError **errp)
{
    InternalState *s = blk_action_state(a);

    return !s->op ||
           blk_action_intent_mark(a, bdrv_snapshot_op_bs(s->op), errp);
}

/* The header write invalidate will make. */
static bool internal_intent_describe(BlkAction *a, GError **errp)
{
    InternalState *s = blk_action_state(a);
    BlockDriverState *bs = bdrv_snapshot_op_bs(s->op);
    uint8_t bytes[BDRV_SNAPSHOT_PUBLISH_MAX];
    uint64_t off;
    uint32_t len;
    bool synced = false;
    int ret;

    if (!blk_action_intent_mark(a, bs, errp)) {
        return false;
    }
    if (!blk_action_intent_active(a)) {
        return true;
    }
    ret = bdrv_snapshot_op_publish_bytes(s->op, &off, &len, bytes, &synced);
    if (ret < 0) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "Could not tell what the snapshot %s on device '%s' "
                    "publishes: %s", kind_verbs[s->kind], s->device,
                    g_strerror(-ret));
        return false;
    }
    return blk_action_intent_header(a, bs, off, bytes, len, synced, errp);
}

const BlkActionType blk_action_snapshot_internal_type = {
    .name = "blockdev-snapshot-internal-sync",
    .state_size = sizeof(InternalState),
    .check = create_check,
    .pre_do = internal_pre_do,
    .pre_cancel = internal_pre_cancel,
    .do_ = internal_do,
    .invalidate = internal_invalidate,
    .cancel = internal_cancel,
    .clean = internal_clean,
    .intent_mark = internal_intent_mark,
    .intent_describe = internal_intent_describe,
};

const BlkActionType blk_action_snapshot_delete_internal_type = {
    .name = "blockdev-snapshot-delete-internal-sync",
    .state_size = sizeof(InternalState),
    .check = delete_check,
    /* issue 15: the new snapshot table written before the drain */
    .pre_do = internal_pre_do,
    .pre_cancel = internal_pre_cancel,
    .do_ = internal_do,
    .invalidate = internal_invalidate,
    .cancel = internal_cancel,
    .clean = internal_clean,
    .intent_mark = internal_intent_mark,
    .intent_describe = internal_intent_describe,
};

const BlkActionType blk_action_apply_internal_type = {
    .name = STRATA_QAPI_PREFIX "blockdev-snapshot-apply-internal",
    .state_size = sizeof(InternalState),
    .check = apply_check,
    .do_ = internal_do,
    .invalidate = internal_invalidate,
    .cancel = internal_cancel,
    .clean = internal_clean,
    .intent_mark = internal_intent_mark,
    .intent_describe = internal_intent_describe,
};
