/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * What the built-in action types (blockdev/action-*.c) need from the
 * transaction engine beyond the public interface: the table of types,
 * and the per-device plan that makes several actions on one device act
 * in list order.
 */
#ifndef STRATA_BLOCKDEV_TRANSACTION_INT_H
#define STRATA_BLOCKDEV_TRANSACTION_INT_H

#include "block/external-snapshot.h"
#include "blockdev/registry.h"
#include "blockdev/transaction.h"

G_BEGIN_DECLS

/* The built-in types, one per BlkActionKind (transaction-actions.c). */
extern const BlkActionType blk_action_abort_type;
extern const BlkActionType blk_action_snapshot_internal_type;
extern const BlkActionType blk_action_snapshot_delete_internal_type;
extern const BlkActionType blk_action_apply_internal_type;
extern const BlkActionType blk_action_snapshot_sync_type;
extern const BlkActionType blk_action_snapshot_type;
extern const BlkActionType blk_action_revert_external_type;
const BlkActionType *blk_action_type_of_kind(BlkActionKind kind);

/* Like blk_action_use_device(), and the action must be the only one on
 * the device, before and after it in the list (reverts). */
bool blk_action_use_device_alone(BlkAction *a, BlockBackend *blk,
                                 GError **errp);

/*
 * Actions that put a new top on their device (external snapshots) say so
 * in check: es is their operation, format the new top's, node the new
 * top if it is already open (blockdev-snapshot), else NULL.
 */
void blk_action_set_new_top(BlkAction *a, ExternalSnapshot *es,
                            const char *format, BlockDriverState *node);
/* The last action before a on a's device that puts a new top on it. */
BlkAction *blk_action_top_changer_before(BlkAction *a);
ExternalSnapshot *blk_action_new_top_es(BlkAction *a);
const char *blk_action_new_top_format(BlkAction *a);
BlockDriverState *blk_action_new_top_node(BlkAction *a);

/* The external snapshot targets the list claimed so far. */
ExternalSnapshotTargets *blk_action_external_targets(BlkAction *a);

/* Drains bs for the rest of the hold (ended by the engine at resume, so
 * node-level steps can run on a node no device points at yet). */
void blk_action_drain_node(BlkAction *a, BlockDriverState *bs);

/*
 * The device (with a reference) whose root is the node QEMU's lookup
 * finds.  root_only: blockdev_get_root_bs() semantics (internal
 * snapshots), else blockdev_lookup_bs() with device and node_name.
 */
BlockBackend *blk_action_find_device(const char *device,
                                     const char *node_name, bool root_only,
                                     GError **errp);

/*
 * Crash-atomic transactions (issue 14).  Whether the list being submitted
 * writes an intent record (only meaningful from intent_mark on).
 */
bool blk_action_intent_active(BlkAction *a);
/* The action will write to bs (a qcow2 node): it joins the record and
 * carries the intent extension from now on.  Idempotent per node.  An
 * image that cannot carry it turns the log off for this list (true). */
bool blk_action_intent_mark(BlkAction *a, BlockDriverState *bs,
                            GError **errp);
/* Invalidate will write these bytes at this offset of bs's file (bs
 * marked).  Several calls for one node merge into one compare-and-swap
 * whose old bytes are what the file holds before the first publish.
 * synced: do left its data durable and the publish syncs itself (no
 * flush of the engine needed for this update). */
bool blk_action_intent_header(BlkAction *a, BlockDriverState *bs,
                              uint64_t offset, const uint8_t *new_bytes,
                              uint32_t len, bool synced, GError **errp);
/* bs is not written by the publish but an image opened alone must still
 * find the record (the old top under a new overlay: issue 14): it joins
 * the record with no update and carries the extension until the record
 * is done.  Best effort: an image that cannot carry it is left out. */
void blk_action_intent_witness(BlkAction *a, BlockDriverState *bs);
/* Invalidate will rename bs's file from -> to (bs marked). */
bool blk_action_intent_rename(BlkAction *a, BlockDriverState *bs,
                              const char *from, const char *to,
                              GError **errp);

G_END_DECLS

#endif
