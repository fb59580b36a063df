/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Transactions: snapshot actions over any number of devices that take
 * effect all together or not at all, with guest I/O on every device
 * involved held across the switch (a consistent cut: each snapshot set
 * holds, on every disk, exactly the writes completed before the cut).
 * The same engine as QMP's "transaction" command.
 *
 *     StrataTransaction *t = strata_transaction_new();
 *     strata_transaction_add_internal_snapshot(t, "disk0", "s1", &err);
 *     strata_transaction_add_internal_snapshot(t, "disk1", "s1", &err);
 *     strata_transaction_submit(t, &err);
 *     strata_transaction_free(t);
 *
 * Devices are named by the node-name given to strata_device_open() (or
 * to blockdev-add through the monitor).
 *
 * Threads: a transaction object is used by one thread at a time; several
 * transactions may run at once from different threads (devices are
 * drained in one global order, so they cannot deadlock), also alongside
 * guest I/O from any thread and the monitor.  A device belongs to one
 * transaction at a time, from its first add until the object is freed.
 */
#ifndef STRATA_PUBLIC_TRANSACTION_H
#define STRATA_PUBLIC_TRANSACTION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <glib.h>

G_BEGIN_DECLS

typedef struct StrataTransaction StrataTransaction;

/* An empty list; owned by the caller (strata_transaction_free()). */
StrataTransaction *strata_transaction_new(void);

/*
 * The add calls check the action at once against the current state and
 * the actions before it: false with errp set (QEMU's text where QEMU has
 * the case, e.g. "Snapshot with name 's1' already exists") leaves the
 * list unchanged.  Strings are copied.
 */

/* blockdev-snapshot-internal-sync: a qcow2 internal snapshot `name`. */
bool strata_transaction_add_internal_snapshot(StrataTransaction *t,
                                              const char *device,
                                              const char *name,
                                              GError **errp);
/* blockdev-snapshot-delete-internal-sync: by id and/or name (either may
 * be NULL, not both). */
bool strata_transaction_add_delete_internal_snapshot(StrataTransaction *t,
                                                     const char *device,
                                                     const char *id,
                                                     const char *name,
                                                     GError **errp);
/*
 * blockdev-snapshot-sync (mode absolute-paths): a new overlay image
 * snapshot_file is created over the device's current top and becomes
 * the device's root; guest writes go to it from the cut on.
 * snapshot_node_name may be NULL (a generated name); format NULL is
 * "qcow2".
 */
bool strata_transaction_add_external_snapshot(StrataTransaction *t,
                                              const char *device,
                                              const char *snapshot_file,
                                              const char *snapshot_node_name,
                                              const char *format,
                                              GError **errp);

/* Number of actions added. */
unsigned strata_transaction_length(StrataTransaction *t);

/*
 * Runs the list, once: true if every action took effect, false with errp
 * set if none did (the first error; errors of the undo are appended).
 */
bool strata_transaction_submit(StrataTransaction *t, GError **errp);

/* After a submit: how long guest I/O was held, in nanoseconds. */
int64_t strata_transaction_hold_ns(StrataTransaction *t);

/* Frees the list (an unsubmitted one releases its devices).  NULL is
 * ignored. */
void strata_transaction_free(StrataTransaction *t);

/*
 * The pause/resume hook: `paused` is called when every device of a
 * transaction is drained and held (a hypervisor may stop its vCPUs or
 * save device state), `resumed` when they are released; each once per
 * submitted transaction (also QMP's transaction and snapshot commands),
 * from the submitting thread.  nodes are the node-names of the devices'
 * roots at that moment (count of them), valid during the call.  The
 * hooks must not submit transactions nor wait for guest I/O on those
 * devices.  Global; NULL hooks: none.  Set them while no transaction
 * runs.
 */
typedef void StrataPauseHook(const char *const *nodes, size_t count,
                             void *opaque);
void strata_transaction_set_hooks(StrataPauseHook *paused,
                                  StrataPauseHook *resumed, void *opaque);

G_END_DECLS

#endif
