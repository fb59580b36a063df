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

/*
 * The power-cut filter.  Armed with n, the first n write requests of the
 * process (any file: images, overlays being created, the intent journal)
 * reach their files and every later one is dropped: it returns success
 * and changes nothing, as if the machine had lost power and the process
 * did not know it yet.  Flushes after the cut are dropped too.
 *
 * POWER_CUT_KEEP_UNFLUSHED: what was written before the cut survives,
 * flushed or not (the best case of a real power cut).
 * POWER_CUT_LOSE_UNFLUSHED: in addition, every write before the cut that
 * no later fdatasync of the same file (device + inode) covered is lost
 * (the worst case the page cache allows).  The filter keeps, per write,
 * the bytes and the size it overwrote (an undo record); an fdatasync of
 * the file forgets that file's undo records; power_cut_restore() applies
 * the remaining ones newest first, which gives exactly the state of the
 * files as of their last sync plus nothing after.  A subset of unflushed
 * writes surviving (reordering in the disk cache) is not modelled.
 *
 * Directory entries (create, rename, unlink) are not undone: a caller
 * that needs them durable fsyncs the directory, as the journal does.
 */
typedef enum {
    POWER_CUT_KEEP_UNFLUSHED,
    POWER_CUT_LOSE_UNFLUSHED,
} PowerCutMode;

/* Starts counting writes; writes after the nth are dropped (n = 0: every
 * write is dropped). */
void power_cut_arm(PowerCutMode mode, uint64_t n);
/* Cuts the power now: every later write is dropped (a test reaching a
 * chosen phase of an operation). */
void power_cut_now(void);
/* Write requests seen since the arm (dropped ones included). */
uint64_t power_cut_writes(void);
/* Whether a write has been dropped since the arm. */
bool power_cut_fired(void);
/* "Reboot": stops the filter; in POWER_CUT_LOSE_UNFLUSHED mode rolls back
 * every unflushed write made before the cut.  Returns how many writes
 * were rolled back, or -errno if a rollback write failed. */
int64_t power_cut_restore(void);

/* Hooks, called just before the request touches fd.  power_cut_write:
 * a write of len bytes at off (len < 0: a truncate to off); true means
 * "drop it".  power_cut_flush: true means "drop it"; otherwise the file's
 * undo records are forgotten (the sync is about to make them durable).
 * power_cut_dir_op: a create, rename or unlink; true means "drop it". */
bool power_cut_write(int fd, int64_t off, int64_t len);
bool power_cut_flush(int fd);
bool power_cut_dir_op(void);

G_END_DECLS

#endif
