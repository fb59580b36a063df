/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Transactions: a list of actions over any number of devices that takes
 * effect all together or not at all (../shared/DESIGN.md, "The
 * transaction").
 *
 * Use:
 *     BlkTransactionStates *t = blk_transaction_new();
 *     blk_transaction_add(t, &action, &err);   -- checks it at once
 *     ...
 *     blk_transaction_submit(t, &err);         -- all or nothing
 *     blk_transaction_free(t);
 *
 * The phases are the ones every snapshot step in strata uses.  QEMU's
 * names for them, for readers coming from blockdev.c: our check plus do
 * is QEMU's prepare, invalidate is its commit, cancel its abort, and
 * clean is clean.
 *
 *   check       when the action is added: validates it against the
 *               current state and the actions before it in the list; no
 *               side effect on any image.  A failed add leaves the list
 *               as it was.
 *   pre_do      (optional) at submit, before the devices are flushed and
 *               drained, guest I/O still running: work that does not have
 *               to be held (a pre-copy), invisible and undoable; in list
 *               order.  A failure ends the transaction with nothing
 *               drained.
 *   do          after every device involved is drained: the work, undoable
 *               and invisible; in list order.  An asynchronous action's do
 *               only starts the work, and the engine waits for it.
 *   invalidate  publishes each action (its one publishing write), in list
 *               order.
 *   cancel      after the first failure of a do or an invalidate: every
 *               action whose do was called, newest first (it undoes the
 *               pre_do too).
 *   pre_cancel  (optional) after a failure: every action whose pre_do was
 *               called but whose do was not, newest first, once the
 *               devices run again.
 *   clean       every action, in list order, after the devices resumed.
 *
 * Guarantees: the first error is the one returned; errors during cancel
 * are logged and appended to its message.  I/O on every device involved
 * is held from before the first do until after the last invalidate or
 * cancel (a consistent cut); waiting requests are neither failed nor
 * reordered.  Devices are drained in one global order, so two
 * transactions cannot deadlock; a device belongs to at most one list at a
 * time (from its first add until the list is freed).
 *
 * Several actions on one device act as if applied one after the other in
 * list order: a second external snapshot goes on top of the first one's
 * overlay, an internal snapshot after an external one is taken in the new
 * overlay.  A revert (internal apply, external revert) must be the only
 * action on its device.
 */
#ifndef STRATA_BLOCKDEV_TRANSACTION_H
#define STRATA_BLOCKDEV_TRANSACTION_H

#include "block/block.h"
#include "block/block-backend.h"

G_BEGIN_DECLS

/* QAPI's prefix for strata's own names (QAPI's rule for downstream
 * extensions: "__" + reverse domain name + "_"). */
#define STRATA_QAPI_PREFIX "__org.strata_"

typedef enum BlkActionKind {
    BLK_ACTION_ABORT,                     /* abort */
    BLK_ACTION_SNAPSHOT_INTERNAL,         /* blockdev-snapshot-internal-sync */
    BLK_ACTION_SNAPSHOT_DELETE_INTERNAL,  /* blockdev-snapshot-delete-internal-sync */
    BLK_ACTION_SNAPSHOT_SYNC,             /* blockdev-snapshot-sync */
    BLK_ACTION_SNAPSHOT,                  /* blockdev-snapshot */
    BLK_ACTION_APPLY_INTERNAL,            /* __org.strata_blockdev-snapshot-apply-internal */
    BLK_ACTION_REVERT_EXTERNAL,           /* __org.strata_blockdev-snapshot-revert */
    BLK_ACTION__MAX,
} BlkActionKind;

/* The QMP name of an action kind. */
const char *blk_action_kind_name(BlkActionKind kind);
/* The kind of a QMP name; false if none. */
bool blk_action_kind_from_name(const char *name, BlkActionKind *kind);

typedef struct BlkActionSnapshotInternal {
    const char *device;        /* device name or root node-name */
    const char *name;
} BlkActionSnapshotInternal;

typedef struct BlkActionSnapshotDeleteInternal {
    const char *device;
    const char *id;            /* id and/or name */
    const char *name;
} BlkActionSnapshotDeleteInternal;

typedef struct BlkActionSnapshotSync {
    const char *device;        /* device and/or node_name */
    const char *node_name;
    const char *snapshot_file;
    const char *snapshot_node_name;
    const char *format;        /* NULL: qcow2 */
    bool mode_existing;        /* mode "existing"; else "absolute-paths" */
} BlkActionSnapshotSync;

typedef struct BlkActionSnapshot {
    const char *node;          /* the device (or its root node) */
    const char *overlay;       /* node-name of an open image */
} BlkActionSnapshot;

typedef struct BlkActionApplyInternal {
    const char *device;
    const char *id;            /* id and/or name, as the delete */
    const char *name;
} BlkActionApplyInternal;

typedef struct BlkActionRevertExternal {
    const char *device;
    const char *node;          /* node-name of a node of the device's chain */
    const char *snapshot_file; /* the new overlay, created over node */
    const char *snapshot_node_name;
    const char *format;        /* NULL: qcow2 */
} BlkActionRevertExternal;

typedef struct BlkTransactionAction {
    BlkActionKind kind;
    union {
        BlkActionSnapshotInternal snapshot_internal;
        BlkActionSnapshotDeleteInternal snapshot_delete_internal;
        BlkActionSnapshotSync snapshot_sync;
        BlkActionSnapshot snapshot;
        BlkActionApplyInternal apply_internal;
        BlkActionRevertExternal revert_external;
    } u;
} BlkTransactionAction;

typedef struct BlkTransactionStates BlkTransactionStates;
typedef struct BlkAction BlkAction;

BlkTransactionStates *blk_transaction_new(void);
/*
 * Adds an action and runs its check; the strings are copied.  On error
 * the list is unchanged (the error names what is wrong, in QEMU's words
 * where QEMU has the case).  Refused after submit.
 */
bool blk_transaction_add(BlkTransactionStates *t,
                         const BlkTransactionAction *action, GError **errp);
/* Runs the list; true if every action took effect, false (errp set) if
 * none did.  Once per list. */
bool blk_transaction_submit(BlkTransactionStates *t, GError **errp);
/* Cleans the actions of a list never submitted, releases its devices. */
void blk_transaction_free(BlkTransactionStates *t);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(BlkTransactionStates, blk_transaction_free)

/* Number of actions in the list. */
guint blk_transaction_length(BlkTransactionStates *t);
/* After submit: how long I/O was held (first drain to resume), in ns. */
int64_t blk_transaction_hold_ns(BlkTransactionStates *t);

/* ---- Action types ---- */

/*
 * An action type: its phase callbacks and the size of its state (zeroed
 * memory the engine gives every action of the type, blk_action_state()).
 * check gets the caller's parameters; it copies what it keeps.  do,
 * invalidate and cancel run with every device of the list drained; the
 * devices an action touches are the ones its check declared with
 * blk_action_use_device().  cancel is called for every action whose do
 * was called, also a do that failed: it must undo whatever part ran.
 * Errors of cancel are appended, never replace the first error.
 *
 * An asynchronous type's do starts the work and returns; the work calls
 * blk_action_completed() once from any thread, and the engine waits for
 * every started action before it invalidates or cancels.
 */
typedef struct BlkActionType {
    const char *name;
    size_t state_size;
    bool async;
    bool (*check)(BlkAction *a, const void *params, GError **errp);
    /* Optional: runs undrained before the hold; pre_cancel undoes it for
     * an action that never reached do (also when pre_do itself failed);
     * once do was called, cancel owns what pre_do left. */
    bool (*pre_do)(BlkAction *a, GError **errp);
    void (*pre_cancel)(BlkAction *a);
    bool (*do_)(BlkAction *a, GError **errp);
    bool (*invalidate)(BlkAction *a, GError **errp);
    bool (*cancel)(BlkAction *a, GError **errp);
    void (*clean)(BlkAction *a);
    /*
     * Optional, crash-atomic transactions (issue 14; only called when a
     * state directory is set): intent_mark runs at submit before any
     * pre_do and names the images the action will write
     * (blk_action_intent_mark in transaction-int.h); intent_describe runs
     * after every do succeeded, still held, and says what its invalidate
     * will change.  A type without them takes part in the transaction as
     * before, outside the intent record.
     */
    bool (*intent_mark)(BlkAction *a, GError **errp);
    bool (*intent_describe)(BlkAction *a, GError **errp);
} BlkActionType;

/* Adds an action of a type of the caller's own (a hypervisor's device
 * state, a test); same contract as blk_transaction_add(). */
bool blk_transaction_add_custom(BlkTransactionStates *t,
                                const BlkActionType *type,
                                const void *params, GError **errp);

void *blk_action_state(BlkAction *a);
const BlkActionType *blk_action_type(BlkAction *a);
/* Position in the list (0 = first). */
guint blk_action_index(BlkAction *a);
/* Declares in check that the action works on blk: the device is claimed
 * for the list and drained with the others. */
bool blk_action_use_device(BlkAction *a, BlockBackend *blk, GError **errp);
/* For asynchronous actions: the work started by do is over (err NULL:
 * success; else the engine takes it). */
void blk_action_completed(BlkAction *a, GError *err);

/* ---- Telling the embedding program ---- */

/*
 * paused: every device of a transaction is drained and held (a
 * hypervisor may stop its vCPUs or save device state now); resumed: they
 * are released.  Called from the thread that submits, once each per
 * submit.  NULL hooks: nothing is called.
 */
typedef void BlkTransactionHook(BlockBackend *const *devices, size_t count,
                                void *opaque);
void blk_transaction_set_hooks(BlkTransactionHook *paused,
                               BlkTransactionHook *resumed, void *opaque);

/* ---- Crash-atomic transactions (issue 14) ---- */

/*
 * The journal directory of the intent log (blockdev/intent-log.h),
 * created when missing; NULL turns the log off (the default).  With a
 * directory set, every transaction whose actions are internal snapshot
 * creates, deletes, applies and new external overlays is all or nothing
 * also across a crash or power cut: recovery at the next open of any of
 * its qcow2 (v3) images completes it or drops it.  A transaction with an
 * image that cannot carry the intent extension (qcow2 v2, another format)
 * runs as without the log, and says so in the log.  Call it before
 * transactions run (not concurrently with a submit).
 */
bool blk_transaction_set_state_dir(const char *dir, GError **errp);
/* The directory set, or NULL. */
const char *blk_transaction_get_state_dir(void);

G_END_DECLS

#endif
