/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The registry: devices (BlockBackends) by name and nodes by node-name,
 * looked up the way QEMU 7.2's monitor commands look them up and refused
 * with QEMU's error texts; and the one global order in which devices are
 * drained, so that two threads draining overlapping sets of devices cannot
 * deadlock.
 *
 * Devices and node-names share one namespace, as in QEMU: a device may not
 * take a name some node has, nor a node a device's name.  Nodes themselves
 * are tracked by block/block.c (every open node, whoever opened it); the
 * registry adds the device table and the rules across the two.
 *
 * Thread-safe: jobs run in threads, and a lookup may race with a removal;
 * every lookup therefore returns a new reference that the caller drops.
 */
#ifndef STRATA_BLOCKDEV_REGISTRY_H
#define STRATA_BLOCKDEV_REGISTRY_H

#include "block/block.h"
#include "block/block-backend.h"

G_BEGIN_DECLS

/* Error domain of blockdev/; codes map to QMP error classes. */
#define BLOCKDEV_ERROR blockdev_error_quark()
GQuark blockdev_error_quark(void);
typedef enum {
    BLOCKDEV_ERROR_GENERIC,           /* QMP GenericError */
    BLOCKDEV_ERROR_DEVICE_NOT_FOUND,  /* QMP DeviceNotFound */
} BlockdevErrorCode;

/*
 * QEMU's rule for user-given ids (device names and node-names): a letter
 * first, then letters, digits, '-', '.' and '_'.  Names the block layer
 * makes up ("#block001") fail it on purpose.
 */
bool blockdev_id_wellformed(const char *id);

/* ---- Devices ---- */

/*
 * Registers blk under its name (blk_name()) and takes a reference.
 * Refused: "Invalid device name", "Device with id '%s' already exists",
 * "Device name '%s' conflicts with an existing node name".
 * A device without a name (blk_name() empty) is anonymous: accepted,
 * listed by blockdev_list_devices() (so transactions find it by its root
 * node), but never found by name nor conflicting with any name.  This is
 * how strata-daemon, which like qemu-storage-daemon has nodes and no
 * named devices, gives each top-level node a device.
 */
bool blockdev_add_device(BlockBackend *blk, GError **errp);
/* Unregisters a device and drops the registry's reference.
 * Refused (DeviceNotFound): "Device '%s' not found". */
bool blockdev_remove_device(const char *name, GError **errp);
/* Unregisters blk itself (the way to drop an anonymous device); false if
 * it was not registered. */
bool blockdev_remove_device_blk(BlockBackend *blk);
/* Drops every device (for a program's exit and for tests). */
void blockdev_remove_all_devices(void);

/* The device called name, with a reference, or NULL. */
BlockBackend *blockdev_find_device(const char *name);
/* Same; when absent, DeviceNotFound "Device '%s' not found". */
BlockBackend *blockdev_get_device(const char *name, GError **errp);
/* Every device, with a reference each, in drain order (increasing
 * serial); the array drops the references when freed. */
GPtrArray *blockdev_list_devices(void);

/* ---- Nodes ---- */

/* The node called node_name, with a reference, or NULL. */
BlockDriverState *blockdev_find_node(const char *node_name);
/* Every open node, oldest first, with a reference each. */
GPtrArray *blockdev_list_nodes(void);

/*
 * QEMU's bdrv_lookup_bs(): the root of the device called device, else the
 * node called node_name (either may be NULL).  Errors: "Device '%s' has no
 * medium" for a device without a root; "Cannot find device='%s' nor
 * node-name='%s'" (an absent argument printed as an empty string).
 * Returns a new reference.
 */
BlockDriverState *blockdev_lookup_bs(const char *device,
                                     const char *node_name, GError **errp);
/*
 * QEMU's qmp_get_root_bs(): name as a device or a node-name, which must be
 * a root (no node above it): "Need a root block node" otherwise.  Errors of
 * blockdev_lookup_bs() otherwise.  Returns a new reference.
 */
BlockDriverState *blockdev_get_root_bs(const char *name, GError **errp);
/*
 * name as a device or a node-name, with QEMU's shorter message for
 * commands that take a "node" argument: "Node '%s' not found".
 */
BlockDriverState *blockdev_get_node(const char *name, GError **errp);

/*
 * Whether name may become a new node's node-name, in QEMU's order:
 * "Invalid node-name: '%s'", "node-name=%s is conflicting with a device
 * id", "Duplicate nodes with node-name='%s'", "Node name too long" (31
 * bytes at most).
 */
bool blockdev_check_node_name(const char *name, GError **errp);
/*
 * bdrv_open() with every node-name in options ("node-name",
 * "file.node-name", "backing.node-name", ...) checked first by
 * blockdev_check_node_name(), and with no device able to take one of
 * those names while the open runs.  options is consumed, as by
 * bdrv_open().  Nodes opened with bdrv_open() directly (the tools, jobs,
 * an external snapshot's overlay) get only block.c's checks, which do not
 * know device names: code that gives a node a user's name should open it
 * here or call blockdev_check_node_name() first.
 */
BlockDriverState *blockdev_open_node(const char *filename, BlockOpts *options,
                                     int flags, GError **errp);

/* ---- The global drain order ---- */

/*
 * A set of devices held drained.  blockdev_drain_begin() drains them in
 * increasing blk_get_serial() order whatever order they are given in
 * (duplicates count once), blockdev_drain_end() releases them in the
 * reverse order and frees the set.  A thread must not already hold a
 * device drained outside the set when it calls blockdev_drain_begin():
 * that could wait against the global order.
 */
typedef struct BlockdevDrainSet BlockdevDrainSet;
BlockdevDrainSet *blockdev_drain_begin(BlockBackend *const *devices,
                                       size_t count);
void blockdev_drain_end(BlockdevDrainSet *set);
/* The devices of the set, in the order they were drained. */
BlockBackend *const *blockdev_drain_set_devices(BlockdevDrainSet *set,
                                                size_t *count);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(BlockdevDrainSet, blockdev_drain_end)

G_END_DECLS

#endif
