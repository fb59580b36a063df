/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * A process-wide fault injector in the file driver, for tests that must
 * fail the Nth I/O request of ANY image file, including files an
 * operation creates while it runs (a blkdebug node sees only the image
 * it sits on).  Private: not installed.  Disarmed it costs one atomic
 * load per request.
 */
#ifndef STRATA_BLOCK_FAULT_INJECT_H
#define STRATA_BLOCK_FAULT_INJECT_H

#include <glib.h>
#include <stdbool.h>
#include <stdint.h>

G_BEGIN_DECLS

typedef enum {
    FAULT_READ,
    FAULT_WRITE,        /* writes, zero writes, discards, truncates */
    FAULT_FLUSH,
    FAULT__MAX,
} FaultKind;

/* From now on, the nth request of kind (from 1) fails with -EIO, once.
 * Counting restarts at every arm. */
void fault_inject_arm(FaultKind kind, uint64_t n);
/* Stops injecting; returns whether the armed request failed. */
bool fault_inject_disarm(void);
/* Requests of kind seen since the last arm (armed or not). */
uint64_t fault_inject_count(FaultKind kind);

/* Called by the file driver first thing in each request: -EIO if this
 * is the request to fail, else 0. */
int fault_inject_hit(FaultKind kind);

/*
 * fdatasync calls the file driver really made, since the process started
 * (armed or not).  Lets tests prove that a flush with nothing written
 * since the last completed sync costs no sync.
 */
uint64_t fault_inject_syncs(void);
/* Called by the file driver after each fdatasync it makes. */
void fault_inject_note_sync(void);

G_END_DECLS

#endif
