/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Pre-copy for internal snapshot create (issue 15): what qcow2-snapshot.c
 * uses of qcow2-precopy.c.  The file's header says how it works and why
 * every crash point leaves leaks at most.
 */
#ifndef STRATA_QCOW2_PRECOPY_H
#define STRATA_QCOW2_PRECOPY_H

#include "qcow2.h"

typedef struct Qcow2Precopy Qcow2Precopy;

/* Phase 1, guest I/O running: takes s->lock for one step at a time (one
 * L2 table, one refcount block).  area_bytes: room for the snapshot table
 * phase 2 will write (allocated now).  On failure *out is still set:
 * qcow2_precopy_discard() gives back what it allocated. */
int qcow2_precopy_start(BlockDriverState *bs, uint64_t area_bytes,
                        Qcow2Precopy **out, GError **errp);
/* Phase 2: the area allocated in phase 1 for a table of `bytes`, if it
 * has exactly the clusters they need (then it is the caller's). */
bool qcow2_precopy_take_area(BlockDriverState *bs, Qcow2Precopy *pc,
                             uint64_t bytes, uint64_t *offset);

/*
 * Phase 2, drained, under the qcow2 locks, metadata written back:
 * redoes the L2 copies the guest changed, then writes the snapshot's L1
 * (a copy of the active one, COPIED stripped) to new clusters; its
 * offset and size go into the snapshot entry.
 */
int qcow2_precopy_prepare(BlockDriverState *bs, Qcow2Precopy *pc,
                          uint64_t *sn_l1_offset, uint32_t *sn_l1_size,
                          GError **errp);
/*
 * After the last allocation of the create (the new snapshot table):
 * the new refcount blocks and table and the new active L1, written and
 * synced.  Nothing live points at any of it yet.
 */
int qcow2_precopy_seal(BlockDriverState *bs, Qcow2Precopy *pc,
                       GError **errp);
/* The one publishing write: header bytes 36..71 (active L1, refcount
 * table, snapshot table) switch together; then the in-memory state. */
int qcow2_precopy_publish(BlockDriverState *bs, Qcow2Precopy *pc,
                          uint32_t nb_snapshots, uint64_t snapshots_offset);
/* The same write back to the state before (cancel after publish). */
int qcow2_precopy_unpublish(BlockDriverState *bs, Qcow2Precopy *pc,
                            uint32_t nb_snapshots, uint64_t snapshots_offset);
/* Not published (or unpublished): every cluster it allocated is given
 * back; a failure only leaks.  Also stops the dirty log. */
void qcow2_precopy_discard(BlockDriverState *bs, Qcow2Precopy *pc);
/* Published for good: the active L1 and refcount structures it replaced
 * are freed (a failure only leaks). */
/* After publish: frees what the switch replaced; with `settle`, first
 * moves the active image back into it (qcow2-precopy-settle.c) and frees
 * the copies instead. */
int qcow2_precopy_free_replaced(BlockDriverState *bs, Qcow2Precopy *pc,
                                bool settle);
int qcow2_precopy_settle(BlockDriverState *bs, Qcow2Precopy *pc);
void qcow2_precopy_free(Qcow2Precopy *pc);
/* The 36 bytes qcow2_precopy_publish() will write at header offset 36
 * (issue 14: the intent record names them before they are written). */
void qcow2_precopy_publish_bytes(Qcow2Precopy *pc, uint32_t nb_snapshots,
                                 uint64_t snapshots_offset, uint8_t *out);

/* For tests: called between the steps of phase 1, without any lock, with
 * the number of the step about to run; it may do guest I/O on bs. */
typedef void Qcow2PrecopyHook(BlockDriverState *bs, unsigned step,
                              void *opaque);
void qcow2_precopy_set_step_hook(Qcow2PrecopyHook *hook, void *opaque);

#endif
