/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The pre-copy's state, shared by the files that implement it
 * (qcow2-precopy.c, qcow2-precopy-settle.c) and by nobody else.
 */
#ifndef STRATA_QCOW2_PRECOPY_INT_H
#define STRATA_QCOW2_PRECOPY_INT_H

#include <glib.h>
#include <stdbool.h>
#include <stdint.h>

/* One refcount block that gains references. */
typedef struct RbCopy {
    /* references added, per entry: a byte each while every count fits
     * (nearly always 0 or 1: a cluster the active tree maps once), four
     * once one does not; one of the two is set */
    uint8_t *inc8;
    uint32_t *inc32;
    uint64_t copy_off;    /* its copy (0: none yet) */
    uint64_t seen;        /* the live block's offset when copied */
    bool stale;           /* inc changed since the copy was written */
} RbCopy;

struct Qcow2Precopy {
    GHashTable *dirty;    /* offsets the caches marked dirty (g_int64) */

    /* per active L1 index: the table copied, its copy, and whether the
     * references the copy holds are in the counts.  The copy on disk is
     * what was counted (a failed write takes its references back), so
     * a copy made again reads the old one to take them back: no table
     * is kept in memory (8 bytes per cluster of the disk). */
    uint32_t n;
    uint64_t *seen;
    uint64_t *copy_off;
    bool *counted;
    uint32_t *copy_crc;   /* CRC-32 of the copy as written */

    GHashTable *rbs;      /* refblock index -> RbCopy * */

    /* Allocated and written in phase 1, so that phase 2 allocates
     * nothing (an allocation dirties a refcount block, whose copy must
     * then be written again) and rewrites only what changed since. */
    uint64_t area_off;    /* clusters for the caller's snapshot table */
    uint64_t area_bytes;
    uint64_t *sn_l1_written;  /* what the snapshot's L1 holds */
    uint64_t *a_written;      /* what the new active L1 holds */
    uint64_t *rt_written;     /* what the new refcount table holds */

    /* phase 2 */
    uint64_t sn_l1_off;   /* the snapshot's L1 */
    uint64_t a_off;       /* the new active L1 */
    uint32_t l1_size;
    uint64_t *new_l1;     /* host order */
    uint64_t rt_off;      /* the new refcount table */
    uint32_t rt_clusters;
    uint64_t *new_rt;     /* host order, rt_clusters worth of entries */
    bool sealed;

    /* published: the state it replaced, to free or to go back to */
    bool published;
    uint64_t *old_l1;
    uint32_t old_l1_size;
    uint64_t old_l1_off;
    uint64_t *old_rt;
    uint64_t old_rt_size;
    uint64_t old_rt_off;
};

#endif
