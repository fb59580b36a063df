/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The cost of the intent log (issue 14), a benchmark, never a test: an
 * internal snapshot of N qcow2 images through the snapshot phases
 * (check, do, flush, invalidate, clean), timed with and without the
 * intent steps the engine will add (extension set before do, record
 * commit before the first invalidate, extension cleared and record done
 * after the last), alternating the two kinds round by round.
 *
 *   intent-bench DIR N ROUNDS
 *
 * Prints one JSON object: {"images": N, "rounds": R, "plain_ms": median,
 * "intent_ms": median, "commit_ms": median of commit + done alone,
 * "image_syncs_plain": fdatasyncs of the images per round,
 * "image_syncs_intent": ..., "journal_syncs": fsyncs and fdatasyncs of
 * the record's commit + done per round}.
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "block/fault-inject.h"
#include "block/log.h"
#include "block/qcow2-intent.h"
#include "block/snapshot.h"
#include "blockdev/intent-log.h"

static void die(const char *what, GError *err)
{
    fprintf(stderr, "intent-bench: %s: %s\n", what, err ? err->message : "");
    exit(1);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
    qsort(v, n, sizeof(*v), cmp_double);
    return v[n / 2];
}

/* One transaction; returns its wall time in ms (*commit_ms: commit +
 * done alone). */
static uint64_t journal_syncs;   /* fsync/fdatasync of commit + done */

static double one_round(BlockDriverState **bs, char **paths, int n, int round,
                        IntentLog *log, double *commit_ms)
{
    g_autofree BdrvSnapshotOp **op = g_new0(BdrvSnapshotOp *, n);
    g_autofree char *name = g_strdup_printf("s%d", round);
    BdrvSnapshotInfo tmpl = { .name = name };
    g_autoptr(IntentRecord) rec = log ? intent_record_begin(log) : NULL;
    g_autoptr(Qcow2Intent) ext = rec ? intent_record_extension(rec) : NULL;
    GError *err = NULL;
    gint64 t0 = g_get_monotonic_time(), c0, c1 = 0;

    for (int i = 0; i < n; i++) {
        if (rec && (intent_record_add_image(rec, paths[i], &err) < 0 ||
                    qcow2_intent_set(bs[i], ext, &err) < 0)) {
            die("prepare", err);
        }
        bdrv_drained_begin(bs[i]);
        op[i] = bdrv_snapshot_create_check(bs[i], &tmpl, 0, &err);
        if (!op[i] || bdrv_snapshot_op_do(op[i], &err) < 0 ||
            bdrv_flush(bs[i]) < 0) {
            die("do", err);
        }
        if (rec) {
            /* 12 bytes per image, as an internal snapshot's publish */
            uint8_t old[12] = { 0 };
            int fd = open(paths[i], O_RDONLY);
            if (fd < 0 || pread(fd, old, 12, 60) != 12) {
                die("read header", NULL);
            }
            close(fd);
            intent_record_add_header(rec, i, 60, old, old, 12, NULL);
        }
    }
    c0 = g_get_monotonic_time();
    uint64_t f0 = fault_inject_count(FAULT_FLUSH);
    if (rec && intent_record_commit(rec, &err) < 0) {
        die("commit", err);
    }
    journal_syncs += fault_inject_count(FAULT_FLUSH) - f0;
    c1 = g_get_monotonic_time() - c0;
    for (int i = 0; i < n; i++) {
        if (bdrv_snapshot_op_invalidate(op[i], &err) < 0) {
            die("invalidate", err);
        }
    }
    for (int i = 0; rec && i < n; i++) {
        if (qcow2_intent_clear(bs[i], &err) < 0) {
            die("clear", err);
        }
    }
    c0 = g_get_monotonic_time();
    f0 = fault_inject_count(FAULT_FLUSH);
    if (rec && intent_record_done(rec, &err) < 0) {
        die("done", err);
    }
    journal_syncs += fault_inject_count(FAULT_FLUSH) - f0;
    c1 += g_get_monotonic_time() - c0;
    for (int i = 0; i < n; i++) {
        bdrv_snapshot_op_clean(op[i], NULL);
        bdrv_drained_end(bs[i]);
    }
    *commit_ms = c1 / 1000.0;
    return (g_get_monotonic_time() - t0) / 1000.0;
}

int main(int argc, char **argv)
{
    int n, rounds;
    g_autofree BlockDriverState **bs = NULL;
    g_autofree char **paths = NULL;
    g_autofree double *plain = NULL, *intent = NULL, *commit = NULL;
    g_autoptr(IntentLog) log = NULL;
    g_autofree char *jdir = NULL;
    uint64_t syncs_plain = 0, syncs_intent = 0;
    GError *err = NULL;

    strata_log_set_sink(strata_log_to_stderr, NULL);
    if (argc != 4 || (n = atoi(argv[2])) < 1 || (rounds = atoi(argv[3])) < 1) {
        fprintf(stderr, "usage: intent-bench DIR N ROUNDS\n");
        return 2;
    }
    jdir = g_build_filename(argv[1], "journal", NULL);
    log = intent_log_open(jdir, &err);
    if (!log) {
        die("journal", err);
    }
    bs = g_new0(BlockDriverState *, n);
    paths = g_new0(char *, n + 1);
    for (int i = 0; i < n; i++) {
        BlockOpts *o = bdrv_opts_new();
        paths[i] = g_strdup_printf("%s/b%d.qcow2", argv[1], i);
        bdrv_opts_set(o, "size", "1048576");
        if (!bdrv_create("qcow2", paths[i], o, &err)) {
            die("create", err);
        }
        g_hash_table_unref(o);
        bs[i] = bdrv_open(paths[i], NULL, BDRV_O_RDWR, &err);
        if (!bs[i]) {
            die("open", err);
        }
    }
    /* armed so that it counts the journal's syncs; never fires */
    fault_inject_arm(FAULT_READ, UINT64_MAX);
    plain = g_new0(double, rounds);
    intent = g_new0(double, rounds);
    commit = g_new0(double, rounds);
    for (int r = 0; r < rounds; r++) {
        double unused;
        uint64_t s0 = fault_inject_syncs();
        plain[r] = one_round(bs, paths, n, 2 * r, NULL, &unused);
        syncs_plain += fault_inject_syncs() - s0;
        s0 = fault_inject_syncs();
        intent[r] = one_round(bs, paths, n, 2 * r + 1, log, &commit[r]);
        syncs_intent += fault_inject_syncs() - s0;
    }
    printf("{\"images\": %d, \"rounds\": %d, \"plain_ms\": %.3f, "
           "\"intent_ms\": %.3f, \"commit_ms\": %.3f, "
           "\"image_syncs_plain\": %.1f, \"image_syncs_intent\": %.1f, "
           "\"journal_syncs\": %.1f}\n",
           n, rounds, median(plain, rounds), median(intent, rounds),
           median(commit, rounds), (double)syncs_plain / rounds,
           (double)syncs_intent / rounds, (double)journal_syncs / rounds);
    for (int i = 0; i < n; i++) {
        bdrv_unref(bs[i]);
        g_free(paths[i]);
    }
    return 0;
}
