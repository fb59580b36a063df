/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * What qcow2-check.c (the walk, the comparison, the repairs) and
 * qcow2-check-rebuild.c (a new refcount structure from scratch) share:
 * the in-memory count of every host cluster's references.
 */
#ifndef STRATA_QCOW2_CHECK_H
#define STRATA_QCOW2_CHECK_H

#include "qcow2.h"

/* More clusters than this and the check refuses: 4 bytes of counts per
 * cluster, so at most 2 GiB.  A 513 TiB file of 2 MiB clusters (iotest
 * 220) needs a little over 2^28. */
#define CHECK_MAX_CLUSTERS (1ULL << 29)

typedef struct CheckState {
    BlockDriverState *bs;
    BDRVQcow2State *s;
    BdrvCheckResult *res;
    uint32_t *counts;       /* computed references per host cluster */
    uint64_t nb_counts;     /* entries of counts[] (>= nb_clusters) */
    uint64_t nb_clusters;   /* clusters the file spans */
    uint64_t file_len;
    uint64_t next_contiguous;
    /* The stored refcount structure cannot be trusted: only a rebuild
     * from counts[] repairs it. */
    bool rebuild;
    /* Clusters that metadata points at past the end of the file (pairs
     * of uint64_t: first, end), reported and not counted; a rebuild
     * counts them, so that it neither puts a refcount block there nor
     * leaves them uncounted once the file reaches them. */
    GArray *beyond;
} CheckState;

/* Makes counts[] hold at least n entries (new ones zero). */
int qcow2_check_counts_grow(CheckState *c, uint64_t n);

/*
 * Writes a new refcount table and refcount blocks describing counts[]
 * into clusters nothing uses (counts[] == 0; the new clusters are
 * counted in counts[] too), then switches the header to them with one
 * write: a crash before that write leaves the old structure in place.
 * The old table and blocks are leaked afterwards (still counted by the
 * new blocks), for the caller's leak repair.  *errp names the step that
 * failed, in QEMU's words.
 */
int qcow2_check_rebuild_refcounts(CheckState *c, GError **errp);

#endif
