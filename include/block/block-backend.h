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
 *
 * The device also owns what a guest, an export or strata-io expects of a
 * disk, whatever node is under it: requests outside the device fail with
 * EIO before they reach a node, a device without write cache (write-
 * through) or a request with BLK_REQ_FUA is on stable storage when the
 * call returns, and a device set to ignore discards drops them (and the
 * unmapping of zero writes).
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
/*
 * A number no other device of this process has or will have, increasing
 * with creation.  Devices are always drained in increasing serial order
 * (see blockdev/registry.h), so two threads draining overlapping sets
 * cannot wait for each other in a circle.
 */
uint64_t blk_get_serial(BlockBackend *blk);
/* The current root; stable while the caller holds the device drained
 * (or is the only user). */
BlockDriverState *blk_bs(BlockBackend *blk);
/* The current root with a reference taken (NULL: no medium); safe
 * against a concurrent blk_set_root(). */
BlockDriverState *blk_get_root(BlockBackend *blk);
/*
 * Switches the device to new_root (a reference is taken; the one to the
 * old root is dropped).  Drains the device around the switch: requests
 * in flight finish on the old root, later ones go to the new one.
 */
void blk_set_root(BlockBackend *blk, BlockDriverState *new_root);

/*
 * Write cache: enabled (the default) means a completed write may still sit
 * in a volatile cache until blk_flush(); disabled (write-through, what
 * qemu-io and a guest without a cache use) flushes after every write.
 */
void blk_set_enable_write_cache(BlockBackend *blk, bool enable);
bool blk_enable_write_cache(BlockBackend *blk);
/*
 * discard=ignore: discards succeed without reaching the node, and zero
 * writes never unmap.  Off by default.
 */
/* copy-on-read (qemu-io -C): reads copy what the top node lacks up from
 * its backing chain, whole clusters at a time.  Off by default. */
void blk_set_copy_on_read(BlockBackend *blk, bool enable);
void blk_set_ignore_discard(BlockBackend *blk, bool ignore);
bool blk_ignore_discard(BlockBackend *blk);

/*
 * The check every request passes first: 0 if [offset, offset + bytes)
 * lies inside the device, -EIO if not (or if either is negative),
 * -ENOMEDIUM without a root, or the error of reading the length.
 */
int blk_check_request(BlockBackend *blk, int64_t offset, int64_t bytes);

/* The write is on stable storage when the call returns (Force Unit
 * Access).  A flag of the device layer: never passed to a node. */
#define BLK_REQ_FUA 0x8000

/*
 * I/O on the current root; same contract as bdrv_pread() etc., after
 * blk_check_request() and with the device's settings above applied.
 * flags: BLK_REQ_FUA for writes; BDRV_REQ_* and BLK_REQ_FUA for zeroes.
 */
int blk_pread(BlockBackend *blk, int64_t offset, int64_t bytes, void *buf);
int blk_pwrite(BlockBackend *blk, int64_t offset, int64_t bytes,
               const void *buf);
int blk_pwrite_flags(BlockBackend *blk, int64_t offset, int64_t bytes,
                     const void *buf, int flags);
int blk_pwrite_zeroes(BlockBackend *blk, int64_t offset, int64_t bytes,
                      int flags);
/*
 * bdrv_aio_submit on the current root (same contract: 0 and aio->cb once
 * later, or -errno and no cb; -ENOTSUP: use blk_pread/blk_pwrite).  Only
 * what needs nothing after the data moved goes this way: not with
 * copy-on-read, write notifiers or write-through, nor while another
 * thread drains the device; the device counts the request in flight
 * until cb, so a drain waits for it.
 */
int blk_aio_submit(BlockBackend *blk, BdrvAio *aio);
/* Compressed writes are not in the block API yet: -ENOTSUP once the
 * request passed its check. */
int blk_pwrite_compressed(BlockBackend *blk, int64_t offset, int64_t bytes,
                          const void *buf);
int blk_pdiscard(BlockBackend *blk, int64_t offset, int64_t bytes);
int blk_flush(BlockBackend *blk);
int64_t blk_getlength(BlockBackend *blk);
int blk_truncate(BlockBackend *blk, int64_t size, GError **errp);

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
