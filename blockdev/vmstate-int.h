/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Inside the VM-state support (blockdev/vmstate.c): what savevm / loadvm
 * (HMP) and snapshot-save / snapshot-load (QMP jobs) call around their
 * transaction, and what the internal-snapshot action asks while it
 * checks a create.  Not part of the embedding interface (vmstate.h).
 *
 * Threads: the main loop only (one savevm / loadvm at a time).
 */
#ifndef STRATA_BLOCKDEV_VMSTATE_INT_H
#define STRATA_BLOCKDEV_VMSTATE_INT_H

#include <glib.h>

#include "block/block.h"
#include "blockdev/vmstate.h"

G_BEGIN_DECLS

/* Runs the transaction of a savevm / loadvm; false + errp on failure. */
typedef gboolean BlkVmStateRunFunc(void *opaque, GError **errp);

/*
 * savevm: with a handler installed and vm_bs not NULL, the handler writes
 * the state into vm_bs's vm-state area first (vm_bs drained meanwhile),
 * then run() executes the transaction, whose create on vm_bs records the
 * number of bytes as its vm-state-size.  Without a handler: run() alone.
 * A failed save runs nothing.
 */
gboolean blk_vmstate_save_around(BlockDriverState *vm_bs,
                                 BlkVmStateRunFunc *run, void *opaque,
                                 GError **errp);

/*
 * Whether loading tag (whose vm-state-size on the vmstate disk is
 * vm_size) is allowed: without a handler only a disk-only snapshot
 * (strata-daemon's rule), with one only a snapshot with state (QEMU's).
 * False + errp (the message names tag and device) otherwise.
 */
gboolean blk_vmstate_check_load(const char *tag, const char *device,
                                uint64_t vm_size, GError **errp);

/*
 * loadvm: run() reverts every disk; then, with a handler and vm_size != 0,
 * the handler reads the state back from vm_bs's vm-state area.
 */
gboolean blk_vmstate_load_around(BlockDriverState *vm_bs, uint64_t vm_size,
                                 BlkVmStateRunFunc *run, void *opaque,
                                 GError **errp);

/* For the internal-snapshot create action: the vm-state-size of a create
 * on bs during the save in progress (0: none, or not the vmstate disk). */
uint64_t blk_vmstate_pending_size(BlockDriverState *bs);

G_END_DECLS

#endif
