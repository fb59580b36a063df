/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * VM state for whole-machine snapshots (savevm / loadvm, snapshot-save /
 * snapshot-load): the embedding hypervisor's own bytes, stored where QEMU
 * keeps VM state in qcow2 (the vm-state area past the guest-visible disk
 * of one device, the "vmstate" device) and recorded in that device's
 * snapshot entry as vm-state-size, so qemu-img lists, checks and deletes
 * such snapshots as it does QEMU's.
 *
 * strata-daemon registers no handler: its savevm stores no state (size 0,
 * a disk-only snapshot).  Without a handler, loading a snapshot whose
 * vm-state-size is not 0 is refused; it is never silently loaded disk-only.
 *
 * Threads: the handler is global and is called from the thread that runs
 * the savevm / loadvm, while every device of the operation is drained
 * (the guest is paused).  Set or clear it while no savevm/loadvm runs.
 */
#ifndef STRATA_BLOCKDEV_VMSTATE_H
#define STRATA_BLOCKDEV_VMSTATE_H

#include <glib.h>
#include <stdint.h>

G_BEGIN_DECLS

/* A sequential stream into (or out of) one snapshot's vm-state area. */
typedef struct BlkVmStateWriter BlkVmStateWriter;
typedef struct BlkVmStateReader BlkVmStateReader;

typedef struct BlkVmStateHandler {
    /* Writes the whole VM state with blk_vmstate_write(); the number of
     * bytes written becomes the snapshot's vm-state-size.  false + errp
     * makes the whole savevm fail (no snapshot on any device). */
    gboolean (*save)(BlkVmStateWriter *w, void *opaque, GError **errp);
    /* Reads the state back with blk_vmstate_read(); size is the recorded
     * vm-state-size.  Called after every device was reverted; false +
     * errp makes loadvm report the error (the disks stay reverted, as a
     * guest can not run on a half-loaded state anyway). */
    gboolean (*load)(BlkVmStateReader *r, uint64_t size, void *opaque,
                     GError **errp);
} BlkVmStateHandler;

/* Installs h (copied) with opaque, or clears the handler when h is NULL. */
void blk_vmstate_set_handler(const BlkVmStateHandler *h, void *opaque);
/* Whether a handler is installed. */
gboolean blk_vmstate_has_handler(void);

/* Appends len bytes at the writer's position. */
gboolean blk_vmstate_write(BlkVmStateWriter *w, const void *buf, size_t len,
                           GError **errp);
/* Reads len bytes at the reader's position; reading past the recorded
 * size is an error. */
gboolean blk_vmstate_read(BlkVmStateReader *r, void *buf, size_t len,
                          GError **errp);

G_END_DECLS

#endif
