/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Transactions of the public API: the engine of blockdev/transaction.h
 * with the actions a hypervisor takes (internal snapshot, its deletion,
 * external snapshot), and its pause/resume hooks handed on with node-
 * names instead of the engine's device pointers.
 */
#include "api-int.h"
#include "blockdev/transaction.h"

struct StrataTransaction {
    BlkTransactionStates *states;
};

StrataTransaction *strata_transaction_new(void)
{
    StrataTransaction *t = g_new0(StrataTransaction, 1);

    t->states = blk_transaction_new();
    return t;
}

bool strata_transaction_add_internal_snapshot(StrataTransaction *t,
                                              const char *device,
                                              const char *name,
                                              GError **errp)
{
    BlkTransactionAction a = { .kind = BLK_ACTION_SNAPSHOT_INTERNAL };

    a.u.snapshot_internal.device = device;
    a.u.snapshot_internal.name = name;
    return blk_transaction_add(t->states, &a, errp);
}

bool strata_transaction_add_delete_internal_snapshot(StrataTransaction *t,
                                                     const char *device,
                                                     const char *id,
                                                     const char *name,
                                                     GError **errp)
{
    BlkTransactionAction a = {
        .kind = BLK_ACTION_SNAPSHOT_DELETE_INTERNAL
    };

    a.u.snapshot_delete_internal.device = device;
    a.u.snapshot_delete_internal.id = id;
    a.u.snapshot_delete_internal.name = name;
    return blk_transaction_add(t->states, &a, errp);
}

bool strata_transaction_add_external_snapshot(StrataTransaction *t,
                                              const char *device,
                                              const char *snapshot_file,
                                              const char *snapshot_node_name,
                                              const char *format,
                                              GError **errp)
{
    BlkTransactionAction a = { .kind = BLK_ACTION_SNAPSHOT_SYNC };

    /* device is a node-name here (strata's devices from the API are
     * anonymous), which blockdev-snapshot-sync takes as node-name */
    a.u.snapshot_sync.node_name = device;
    a.u.snapshot_sync.snapshot_file = snapshot_file;
    a.u.snapshot_sync.snapshot_node_name = snapshot_node_name;
    a.u.snapshot_sync.format = format;
    return blk_transaction_add(t->states, &a, errp);
}

unsigned strata_transaction_length(StrataTransaction *t)
{
    return blk_transaction_length(t->states);
}

bool strata_transaction_submit(StrataTransaction *t, GError **errp)
{
    return blk_transaction_submit(t->states, errp);
}

int64_t strata_transaction_hold_ns(StrataTransaction *t)
{
    return blk_transaction_hold_ns(t->states);
}

void strata_transaction_free(StrataTransaction *t)
{
    if (t) {
        blk_transaction_free(t->states);
        g_free(t);
    }
}

/* ---- the hooks ---- */

typedef struct Hooks {
    StrataPauseHook *paused, *resumed;
    void *opaque;
} Hooks;

static Hooks hooks;

static void call_hook(StrataPauseHook *fn, BlockBackend *const *devices,
                      size_t count)
{
    g_autofree const char **names = g_new0(const char *, count + 1);

    for (size_t i = 0; i < count; i++) {
        /* stable: the device is drained, its root cannot change */
        BlockDriverState *bs = blk_bs(devices[i]);
        names[i] = bs ? bdrv_get_node_name(bs) : "";
    }
    fn(names, count, hooks.opaque);
}

static void engine_paused(BlockBackend *const *devices, size_t count,
                          void *opaque)
{
    if (hooks.paused) {
        call_hook(hooks.paused, devices, count);
    }
}

static void engine_resumed(BlockBackend *const *devices, size_t count,
                           void *opaque)
{
    if (hooks.resumed) {
        call_hook(hooks.resumed, devices, count);
    }
}

void strata_transaction_set_hooks(StrataPauseHook *paused,
                                  StrataPauseHook *resumed, void *opaque)
{
    hooks = (Hooks) { paused, resumed, opaque };
    if (paused || resumed) {
        blk_transaction_set_hooks(engine_paused, engine_resumed, NULL);
    } else {
        blk_transaction_set_hooks(NULL, NULL, NULL);
    }
}
