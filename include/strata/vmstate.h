/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * VM state for whole-machine snapshots (HMP savevm / loadvm, QMP
 * snapshot-save / snapshot-load): the hypervisor's own bytes (CPU and
 * device state, RAM), stored in the qcow2 vm-state area of the snapshot
 * on the "vmstate" device, where QEMU keeps its own; qemu-img lists and
 * deletes such snapshots as QEMU's.
 *
 * Without a handler, savevm stores a disk-only snapshot (vm-state-size
 * 0) and loadvm refuses a snapshot that has VM state.
 *
 * Threads: the handler is called from the thread running the savevm /
 * loadvm, while every device involved is drained (the guest's disks are
 * paused).  Set or clear it while no savevm/loadvm runs.
 */
#ifndef STRATA_PUBLIC_VMSTATE_H
#define STRATA_PUBLIC_VMSTATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <glib.h>

G_BEGIN_DECLS

/* A sequential stream into / out of one snapshot's VM state; valid
 * during the handler's call only. */
typedef struct StrataVmStateWriter StrataVmStateWriter;
typedef struct StrataVmStateReader StrataVmStateReader;

typedef struct StrataVmStateHandler {
    /* Writes the whole state with strata_vmstate_write(); the bytes
     * written become the snapshot's vm-state-size.  false + errp makes
     * the whole savevm fail (no snapshot on any device). */
    bool (*save)(StrataVmStateWriter *w, void *opaque, GError **errp);
    /* Reads the state back with strata_vmstate_read(); size is the
     * recorded vm-state-size.  Called after every disk was reverted. */
    bool (*load)(StrataVmStateReader *r, uint64_t size, void *opaque,
                 GError **errp);
} StrataVmStateHandler;

/* Installs h (copied) with opaque; NULL clears the handler. */
void strata_vmstate_set_handler(const StrataVmStateHandler *h,
                                void *opaque);
/* Appends len bytes at the writer's position. */
bool strata_vmstate_write(StrataVmStateWriter *w, const void *buf,
                          size_t len, GError **errp);
/* Reads len bytes at the reader's position; past the recorded size is
 * an error. */
bool strata_vmstate_read(StrataVmStateReader *r, void *buf, size_t len,
                         GError **errp);

G_END_DECLS

#endif
