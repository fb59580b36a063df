/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * BlockBackend: the guest-facing handle of a device.  I/O on it goes to
 * its current root node (the top of a backing chain); the root can be
 * switched under drain, so an external snapshot or the end of an active
 * commit moves the device to another node without the guest noticing and
 * without any request seeing half of the switch.
 *
 * Write notifiers let a block job see every write that completed on the
 * device (active commit tracks dirty areas with them).
 */
#ifndef STRATA_BLOCK_BACKEND_H
#define STRATA_BLOCK_BACKEND_H

#include "block/block.h"

G_BEGIN_DECLS

typedef struct BlockBackend BlockBackend;
typedef struct BlockJob BlockJob;

/* A device on root (may be NULL: no medium); takes a reference to it.
 * name may be NULL (an anonymous device, e.g. in strata-img). */
BlockBackend *blk_new(const char *name, BlockDriverState *root);
void blk_ref(BlockBackend *blk);
void blk_unref(BlockBackend *blk);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(BlockBackend, blk_unref)

const char *blk_name(BlockBackend *blk);
/* The current root; stable while the caller holds the device drained
 * (or is the only user). */
BlockDriverState *blk_bs(BlockBackend *blk);
/*
 * Switches the device to new_root (a reference is taken; the one to the
 * old root is dropped).  Drains the device around the switch: requests
 * in flight finish on the old root, later ones go to the new one.
 */
void blk_set_root(BlockBackend *blk, BlockDriverState *new_root);

/*
 * I/O on the current root; same contract as bdrv_pread() etc.  Returns
 * -ENOMEDIUM when the device has no root.
 */
int blk_pread(BlockBackend *blk, int64_t offset, int64_t bytes, void *buf);
int blk_pwrite(BlockBackend *blk, int64_t offset, int64_t bytes,
               const void *buf);
int blk_pwrite_zeroes(BlockBackend *blk, int64_t offset, int64_t bytes,
                      int flags);
int blk_pdiscard(BlockBackend *blk, int64_t offset, int64_t bytes);
int blk_flush(BlockBackend *blk);
int64_t blk_getlength(BlockBackend *blk);

/*
 * Drain: waits for every request in flight on the device and holds new
 * ones (from other threads) until the matching drained_end.  Nests.
 */
void blk_drained_begin(BlockBackend *blk);
void blk_drained_end(BlockBackend *blk);

/* Number of writes (write, zeroes, discard) completed on the device. */
uint64_t blk_get_write_count(BlockBackend *blk);

/*
 * Called after each successful write, zero write or discard, with the
 * range it changed, before the request counts as completed (so a drain
 * also waits for notifiers).  Runs in the writer's thread.
 */
typedef void BlkWriteNotifyFunc(BlockBackend *blk, int64_t offset,
                                int64_t bytes, void *opaque);
void blk_add_write_notifier(BlockBackend *blk, BlkWriteNotifyFunc *fn,
                            void *opaque);
void blk_remove_write_notifier(BlockBackend *blk, BlkWriteNotifyFunc *fn,
                               void *opaque);

/* The block job working on this device, if any (an operation blocker:
 * snapshots and other jobs refuse a busy device). */
BlockJob *blk_get_job(BlockBackend *blk);
void blk_set_job(BlockBackend *blk, BlockJob *job);

G_END_DECLS

#endif
