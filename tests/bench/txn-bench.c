/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * One transaction over N devices, through the library, timed: how long
 * the whole transaction takes (adds with their checks, then submit) and
 * how long guest I/O on the devices was held (first drain to resume).
 * Driven by tests/bench/transaction.py, which compares with QEMU; it is
 * a benchmark, never a test.
 *
 *   txn-bench internal|external IMAGE...
 *
 * Every IMAGE becomes a device; internal: blockdev-snapshot-internal-sync
 * of each; external: blockdev-snapshot-sync of each to IMAGE.ov.qcow2.
 * Prints one JSON object: {"devices": N, "kind": ..., "total_ms": ...,
 * "hold_ms": ...}.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "block/log.h"
#include "blockdev/registry.h"
#include "blockdev/transaction.h"

static BlockBackend *open_device(int i, const char *path)
{
    g_autofree char *name = g_strdup_printf("d%d", i);
    BlockOpts *o = bdrv_opts_new();
    GError *err = NULL;
    BlockDriverState *bs;
    BlockBackend *blk;

    bdrv_opts_set(o, "driver", "qcow2");
    bs = bdrv_open(path, o, BDRV_O_RDWR, &err);
    if (!bs) {
        fprintf(stderr, "txn-bench: %s\n", err->message);
        exit(1);
    }
    blk = blk_new(name, bs);
    bdrv_unref(bs);
    if (!blockdev_add_device(blk, &err)) {
        fprintf(stderr, "txn-bench: %s\n", err->message);
        exit(1);
    }
    return blk;
}

int main(int argc, char **argv)
{
    bool internal;
    int n = argc - 2;
    g_autoptr(GPtrArray) keep = g_ptr_array_new_with_free_func(g_free);
    BlockBackend **devs;
    BlkTransactionStates *t;
    GError *err = NULL;
    gint64 start, end;

    strata_log_set_sink(strata_log_to_stderr, NULL);
    if (argc < 3 || (strcmp(argv[1], "internal") &&
                     strcmp(argv[1], "external"))) {
        fprintf(stderr, "usage: txn-bench internal|external IMAGE...\n");
        return 2;
    }
    internal = !strcmp(argv[1], "internal");
    devs = g_new(BlockBackend *, n);
    for (int i = 0; i < n; i++) {
        devs[i] = open_device(i, argv[i + 2]);
    }

    start = g_get_monotonic_time();
    t = blk_transaction_new();
    for (int i = 0; i < n; i++) {
        BlkTransactionAction a = { 0 };
        char *dev = g_strdup_printf("d%d", i);

        g_ptr_array_add(keep, dev);
        if (internal) {
            a.kind = BLK_ACTION_SNAPSHOT_INTERNAL;
            a.u.snapshot_internal.device = dev;
            a.u.snapshot_internal.name = "bench";
        } else {
            char *file = g_strdup_printf("%s.ov.qcow2", argv[i + 2]);
            g_ptr_array_add(keep, file);
            a.kind = BLK_ACTION_SNAPSHOT_SYNC;
            a.u.snapshot_sync.device = dev;
            a.u.snapshot_sync.snapshot_file = file;
        }
        if (!blk_transaction_add(t, &a, &err)) {
            fprintf(stderr, "txn-bench: %s\n", err->message);
            return 1;
        }
    }
    if (!blk_transaction_submit(t, &err)) {
        fprintf(stderr, "txn-bench: %s\n", err->message);
        return 1;
    }
    end = g_get_monotonic_time();
    printf("{\"devices\": %d, \"kind\": \"%s\", \"total_ms\": %.3f, "
           "\"hold_ms\": %.3f}\n", n, argv[1], (end - start) / 1000.0,
           blk_transaction_hold_ns(t) / 1e6);
    blk_transaction_free(t);
    blockdev_remove_all_devices();
    for (int i = 0; i < n; i++) {
        blk_unref(devs[i]);
    }
    g_free(devs);
    return 0;
}
