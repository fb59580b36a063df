/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * One transaction over N devices, through the library, timed: how long
 * the whole transaction takes (adds with their checks, then submit) and
 * how long guest I/O on the devices was held (first drain to resume).
 * Driven by tests/bench/transaction.py, which compares with QEMU; it is
 * a benchmark, never a test.
 *
 *   txn-bench internal|external|internal-load IMAGE...
 *
 * Every IMAGE becomes a device; internal: blockdev-snapshot-internal-sync
 * of each; external: blockdev-snapshot-sync of each to IMAGE.ov.qcow2.
 * internal-load: internal, while one thread per device keeps 4 KiB
 * random writes going on it (a guest; from 200 ms before the transaction
 * to 200 ms after), and reports their latency during the transaction.
 * delete-load (issue 15): the same internal snapshot taken first (not
 * measured), then, with the writers running, a transaction deleting it
 * is measured the same way (its clean frees the whole tree).
 * TXN_BENCH_DIRECT=1 in the environment opens the images with
 * cache.direct=on; TXN_BENCH_STATE_DIR=DIR makes the transaction
 * crash-atomic with DIR as the intent log's journal (issue 14).
 * Prints one JSON object: {"devices": N, "kind": ..., "total_ms": ...,
 * "hold_ms": ...} (+ "writes", "p99_ms", "max_ms" with load).
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
    if (g_getenv("TXN_BENCH_DIRECT")) {
        /* what hypervisors use (cache=none): guest data bypasses the
         * host's page cache */
        bdrv_opts_set(o, "cache.direct", "on");
    }
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

/* ---- the load: 4 KiB random writes per device ---- */

typedef struct Writer {
    BlockBackend *blk;
    int64_t size;
    GThread *th;
    GArray *start_us;        /* gint64 per write */
    GArray *lat_us;          /* gint64 per write */
} Writer;

static gint stop_writers;

static gpointer writer_main(gpointer opaque)
{
    Writer *w = opaque;
    GRand *r = g_rand_new();
    uint8_t buf[4096];

    memset(buf, 0x5a, sizeof(buf));
    while (!g_atomic_int_get(&stop_writers)) {
        int64_t off = (int64_t)(g_rand_double(r) * (w->size / 4096)) * 4096;
        gint64 t0 = g_get_monotonic_time(), t1;
        if (blk_pwrite(w->blk, off, sizeof(buf), buf) < 0) {
            fprintf(stderr, "txn-bench: a guest write failed\n");
            exit(1);
        }
        t1 = g_get_monotonic_time();
        t1 -= t0;
        g_array_append_val(w->start_us, t0);
        g_array_append_val(w->lat_us, t1);
    }
    g_rand_free(r);
    return NULL;
}

static gint cmp_i64(gconstpointer a, gconstpointer b)
{
    gint64 x = *(const gint64 *)a, y = *(const gint64 *)b;

    return x < y ? -1 : x > y;
}

/* Latencies of the writes in flight at any time in [from, to]. */
static void report_load(Writer *w, int n, gint64 from, gint64 to)
{
    g_autoptr(GArray) lat = g_array_new(FALSE, FALSE, sizeof(gint64));

    for (int i = 0; i < n; i++) {
        for (guint k = 0; k < w[i].lat_us->len; k++) {
            gint64 s = g_array_index(w[i].start_us, gint64, k);
            gint64 l = g_array_index(w[i].lat_us, gint64, k);
            if (s <= to && s + l >= from) {
                g_array_append_val(lat, l);
            }
        }
    }
    g_array_sort(lat, cmp_i64);
    printf(", \"writes\": %u, \"p99_ms\": %.3f, \"max_ms\": %.3f", lat->len,
           lat->len ? g_array_index(lat, gint64, (lat->len * 99) / 100) / 1e3
                    : 0.0,
           lat->len ? g_array_index(lat, gint64, lat->len - 1) / 1e3 : 0.0);
}

int main(int argc, char **argv)
{
    bool internal, load = false;
    Writer *w = NULL;
    int n = argc - 2;
    g_autoptr(GPtrArray) keep = g_ptr_array_new_with_free_func(g_free);
    BlockBackend **devs;
    BlkTransactionStates *t;
    GError *err = NULL;
    gint64 start, end;

    strata_log_set_sink(strata_log_to_stderr, NULL);
    if (argc < 3 || (strcmp(argv[1], "internal") &&
                     strcmp(argv[1], "external") &&
                     strcmp(argv[1], "internal-load") &&
                     strcmp(argv[1], "delete-load"))) {
        fprintf(stderr, "usage: txn-bench internal|external|internal-load"
                "|delete-load IMAGE...\n");
        return 2;
    }
    /* issue 14: TXN_BENCH_STATE_DIR=DIR runs it with the intent log */
    if (g_getenv("TXN_BENCH_STATE_DIR") &&
        !blk_transaction_set_state_dir(g_getenv("TXN_BENCH_STATE_DIR"),
                                       &err)) {
        fprintf(stderr, "txn-bench: %s\n", err->message);
        return 1;
    }
    load = !strcmp(argv[1], "internal-load") ||
           !strcmp(argv[1], "delete-load");
    internal = strcmp(argv[1], "external") != 0;
    devs = g_new(BlockBackend *, n);
    for (int i = 0; i < n; i++) {
        devs[i] = open_device(i, argv[i + 2]);
    }
    if (load) {
        w = g_new0(Writer, n);
        for (int i = 0; i < n; i++) {
            w[i].blk = devs[i];
            w[i].size = blk_getlength(devs[i]);
            w[i].start_us = g_array_new(FALSE, FALSE, sizeof(gint64));
            w[i].lat_us = g_array_new(FALSE, FALSE, sizeof(gint64));
            w[i].th = g_thread_new("writer", writer_main, &w[i]);
        }
        g_usleep(200 * 1000);
    }

    if (!strcmp(argv[1], "delete-load")) {
        /* the snapshot to delete, taken before the measured part */
        t = blk_transaction_new();
        for (int i = 0; i < n; i++) {
            char *dev = g_strdup_printf("d%d", i);
            BlkTransactionAction a = {
                .kind = BLK_ACTION_SNAPSHOT_INTERNAL,
                .u.snapshot_internal = { .device = dev, .name = "bench" },
            };
            g_ptr_array_add(keep, dev);
            if (!blk_transaction_add(t, &a, &err)) {
                fprintf(stderr, "txn-bench: %s\n", err->message);
                return 1;
            }
        }
        if (!blk_transaction_submit(t, &err)) {
            fprintf(stderr, "txn-bench: %s\n", err->message);
            return 1;
        }
        blk_transaction_free(t);
        g_usleep(200 * 1000);
    }
    start = g_get_monotonic_time();
    t = blk_transaction_new();
    for (int i = 0; i < n; i++) {
        BlkTransactionAction a = { 0 };
        char *dev = g_strdup_printf("d%d", i);

        g_ptr_array_add(keep, dev);
        if (!strcmp(argv[1], "delete-load")) {
            a.kind = BLK_ACTION_SNAPSHOT_DELETE_INTERNAL;
            a.u.snapshot_delete_internal.device = dev;
            a.u.snapshot_delete_internal.name = "bench";
        } else if (internal) {
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
    if (load) {
        g_usleep(200 * 1000);
        g_atomic_int_set(&stop_writers, 1);
        for (int i = 0; i < n; i++) {
            g_thread_join(w[i].th);
        }
    }
    printf("{\"devices\": %d, \"kind\": \"%s\", \"total_ms\": %.3f, "
           "\"hold_ms\": %.3f", n, argv[1], (end - start) / 1000.0,
           blk_transaction_hold_ns(t) / 1e6);
    if (load) {
        report_load(w, n, start, end);
        for (int i = 0; i < n; i++) {
            g_array_unref(w[i].start_us);
            g_array_unref(w[i].lat_us);
        }
        g_free(w);
    }
    printf("}\n");
    blk_transaction_free(t);
    blockdev_remove_all_devices();
    for (int i = 0; i < n; i++) {
        blk_unref(devs[i]);
    }
    g_free(devs);
    return 0;
}
