/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The registry of devices by name, the lookups across devices and
 * node-names with QEMU 7.2's rules and texts, and the global drain order.
 * Nodes are not listed twice: block/block.c already tracks every open
 * node, so node lookups ask it and only the device table lives here.
 *
 * Two locks.  names_lock is held by whatever gives out a name (adding a
 * device, opening nodes with node-names), so the check "is the name free
 * in both namespaces" and the taking of it are one step; it may be held
 * for as long as an open takes.  devices_lock guards the table itself and
 * is only held for a moment, so lookups never wait for an open.  Order:
 * names_lock, then devices_lock, then block.c's node lock.
 */
#include <string.h>

#include "blockdev/registry.h"

G_DEFINE_QUARK(strata-blockdev-error-quark, blockdev_error)

/* QEMU keeps node-names in a 32-byte array: 31 bytes and the NUL. */
#define NODE_NAME_MAX 31

static GMutex names_lock;
static GMutex devices_lock;
static GPtrArray *devices;       /* BlockBackend *, one reference each */

bool blockdev_id_wellformed(const char *id)
{
    if (!g_ascii_isalpha(id[0])) {
        return false;
    }
    for (const char *p = id + 1; *p; p++) {
        if (!g_ascii_isalnum(*p) && !strchr("-._", *p)) {
            return false;
        }
    }
    return true;
}

/* ---- Devices ---- */

/* The device called name; devices_lock held.  No reference taken. */
static BlockBackend *device_by_name_locked(const char *name, guint *index)
{
    if (!devices) {
        return NULL;
    }
    if (!*name) {
        return NULL;    /* anonymous devices are not in the namespace */
    }
    for (guint i = 0; i < devices->len; i++) {
        BlockBackend *blk = g_ptr_array_index(devices, i);
        if (!strcmp(blk_name(blk), name)) {
            if (index) {
                *index = i;
            }
            return blk;
        }
    }
    return NULL;
}

BlockBackend *blockdev_find_device(const char *name)
{
    BlockBackend *blk;

    g_mutex_lock(&devices_lock);
    blk = device_by_name_locked(name, NULL);
    if (blk) {
        blk_ref(blk);
    }
    g_mutex_unlock(&devices_lock);
    return blk;
}

static bool device_name_taken(const char *name)
{
    g_autoptr(BlockBackend) blk = blockdev_find_device(name);

    return blk != NULL;
}

BlockBackend *blockdev_get_device(const char *name, GError **errp)
{
    BlockBackend *blk = blockdev_find_device(name);

    if (!blk) {
        g_set_error(errp, BLOCKDEV_ERROR, BLOCKDEV_ERROR_DEVICE_NOT_FOUND,
                    "Device '%s' not found", name);
    }
    return blk;
}

bool blockdev_add_device(BlockBackend *blk, GError **errp)
{
    const char *name = blk_name(blk);
    g_autoptr(BlockDriverState) node = NULL;
    bool ok = false;

    g_mutex_lock(&names_lock);
    if (!*name) {
        goto add;       /* anonymous: takes no name, conflicts with none */
    }
    if (!blockdev_id_wellformed(name)) {
        g_set_error(errp, BLOCKDEV_ERROR, BLOCKDEV_ERROR_GENERIC,
                    "Invalid device name");
        goto out;
    }
    if (device_name_taken(name)) {
        g_set_error(errp, BLOCKDEV_ERROR, BLOCKDEV_ERROR_GENERIC,
                    "Device with id '%s' already exists", name);
        goto out;
    }
    node = blockdev_find_node(name);
    if (node) {
        g_set_error(errp, BLOCKDEV_ERROR, BLOCKDEV_ERROR_GENERIC,
                    "Device name '%s' conflicts with an existing node name",
                    name);
        goto out;
    }
add:
    g_mutex_lock(&devices_lock);
    if (!devices) {
        devices = g_ptr_array_new();
    }
    blk_ref(blk);
    g_ptr_array_add(devices, blk);
    g_mutex_unlock(&devices_lock);
    ok = true;
out:
    g_mutex_unlock(&names_lock);
    return ok;
}

bool blockdev_remove_device(const char *name, GError **errp)
{
    BlockBackend *blk;
    guint index;

    g_mutex_lock(&devices_lock);
    blk = device_by_name_locked(name, &index);
    if (blk) {
        g_ptr_array_remove_index(devices, index);
    }
    g_mutex_unlock(&devices_lock);
    if (!blk) {
        g_set_error(errp, BLOCKDEV_ERROR, BLOCKDEV_ERROR_DEVICE_NOT_FOUND,
                    "Device '%s' not found", name);
        return false;
    }
    /* Outside the lock: the last reference may close a whole chain. */
    blk_unref(blk);
    return true;
}

bool blockdev_remove_device_blk(BlockBackend *blk)
{
    bool found;

    g_mutex_lock(&devices_lock);
    found = devices && g_ptr_array_remove(devices, blk);
    g_mutex_unlock(&devices_lock);
    if (found) {
        blk_unref(blk);     /* outside the lock, as above */
    }
    return found;
}

void blockdev_remove_all_devices(void)
{
    g_autoptr(GPtrArray) old = NULL;

    g_mutex_lock(&devices_lock);
    old = g_steal_pointer(&devices);
    g_mutex_unlock(&devices_lock);
    if (old) {
        g_ptr_array_set_free_func(old, (GDestroyNotify)blk_unref);
    }
}

static gint compare_serial(gconstpointer a, gconstpointer b)
{
    uint64_t sa = blk_get_serial(*(BlockBackend *const *)a);
    uint64_t sb = blk_get_serial(*(BlockBackend *const *)b);

    return sa < sb ? -1 : sa > sb;
}

GPtrArray *blockdev_list_devices(void)
{
    GPtrArray *out = g_ptr_array_new_with_free_func((GDestroyNotify)blk_unref);

    g_mutex_lock(&devices_lock);
    for (guint i = 0; devices && i < devices->len; i++) {
        BlockBackend *blk = g_ptr_array_index(devices, i);
        blk_ref(blk);
        g_ptr_array_add(out, blk);
    }
    g_mutex_unlock(&devices_lock);
    g_ptr_array_sort(out, compare_serial);
    return out;
}

/* ---- Nodes ---- */

GPtrArray *blockdev_list_nodes(void)
{
    return bdrv_list_nodes();
}

/* bdrv_find_node() hands out no reference; a listing does, safely. */
BlockDriverState *blockdev_find_node(const char *node_name)
{
    g_autoptr(GPtrArray) nodes = bdrv_list_nodes();

    for (guint i = 0; i < nodes->len; i++) {
        BlockDriverState *bs = g_ptr_array_index(nodes, i);
        if (!strcmp(bdrv_get_node_name(bs), node_name)) {
            bdrv_ref(bs);
            return bs;
        }
    }
    return NULL;
}

BlockDriverState *blockdev_lookup_bs(const char *device,
                                     const char *node_name, GError **errp)
{
    BlockDriverState *bs;

    if (device) {
        g_autoptr(BlockBackend) blk = blockdev_find_device(device);

        if (blk) {
            bs = blk_get_root(blk);
            if (!bs) {
                g_set_error(errp, BLOCKDEV_ERROR, BLOCKDEV_ERROR_GENERIC,
                            "Device '%s' has no medium", device);
            }
            return bs;
        }
    }
    if (node_name) {
        bs = blockdev_find_node(node_name);
        if (bs) {
            return bs;
        }
    }
    g_set_error(errp, BLOCKDEV_ERROR, BLOCKDEV_ERROR_GENERIC,
                "Cannot find device='%s' nor node-name='%s'",
                device ? device : "", node_name ? node_name : "");
    return NULL;
}

/* A root has no node above it: it is no node's file nor backing child.
 * (A device above it is fine: that is what a device's root is.) */
static bool is_root_node(BlockDriverState *bs)
{
    g_autoptr(GPtrArray) nodes = bdrv_list_nodes();

    for (guint i = 0; i < nodes->len; i++) {
        BlockDriverState *parent = g_ptr_array_index(nodes, i);
        if (bdrv_get_file(parent) == bs || bdrv_get_backing(parent) == bs) {
            return false;
        }
    }
    return true;
}

BlockDriverState *blockdev_get_root_bs(const char *name, GError **errp)
{
    g_autoptr(BlockDriverState) bs = blockdev_lookup_bs(name, name, errp);

    if (!bs) {
        return NULL;
    }
    if (!is_root_node(bs)) {
        g_set_error(errp, BLOCKDEV_ERROR, BLOCKDEV_ERROR_GENERIC,
                    "Need a root block node");
        return NULL;
    }
    return g_steal_pointer(&bs);
}

BlockDriverState *blockdev_get_node(const char *name, GError **errp)
{
    BlockDriverState *bs = blockdev_lookup_bs(name, name, NULL);

    if (!bs) {
        g_set_error(errp, BLOCKDEV_ERROR, BLOCKDEV_ERROR_GENERIC,
                    "Node '%s' not found", name);
    }
    return bs;
}

bool blockdev_check_node_name(const char *name, GError **errp)
{
    g_autoptr(BlockDriverState) other = NULL;

    if (!blockdev_id_wellformed(name)) {
        g_set_error(errp, BLOCKDEV_ERROR, BLOCKDEV_ERROR_GENERIC,
                    "Invalid node-name: '%s'", name);
        return false;
    }
    if (device_name_taken(name)) {
        g_set_error(errp, BLOCKDEV_ERROR, BLOCKDEV_ERROR_GENERIC,
                    "node-name=%s is conflicting with a device id", name);
        return false;
    }
    other = blockdev_find_node(name);
    if (other) {
        g_set_error(errp, BLOCKDEV_ERROR, BLOCKDEV_ERROR_GENERIC,
                    "Duplicate nodes with node-name='%s'", name);
        return false;
    }
    if (strlen(name) > NODE_NAME_MAX) {
        g_set_error(errp, BLOCKDEV_ERROR, BLOCKDEV_ERROR_GENERIC,
                    "Node name too long");
        return false;
    }
    return true;
}

/* The node-name keys of options, the top node's first, then by depth, so
 * that the error reported does not depend on hash table order. */
static gint compare_option_depth(gconstpointer a, gconstpointer b)
{
    const char *ka = *(const char *const *)a, *kb = *(const char *const *)b;
    int da = 0, db = 0;

    for (const char *p = ka; *p; p++) {
        da += *p == '.';
    }
    for (const char *p = kb; *p; p++) {
        db += *p == '.';
    }
    return da != db ? da - db : strcmp(ka, kb);
}

static bool check_option_node_names(BlockOpts *options, GError **errp)
{
    g_autoptr(GPtrArray) keys = g_ptr_array_new();
    GHashTableIter it;
    gpointer key;

    g_hash_table_iter_init(&it, options);
    while (g_hash_table_iter_next(&it, &key, NULL)) {
        if (!strcmp(key, "node-name") ||
            g_str_has_suffix(key, ".node-name")) {
            g_ptr_array_add(keys, key);
        }
    }
    g_ptr_array_sort(keys, compare_option_depth);
    for (guint i = 0; i < keys->len; i++) {
        const char *name = bdrv_opts_get(options, g_ptr_array_index(keys, i));
        if (!blockdev_check_node_name(name, errp)) {
            return false;
        }
    }
    return true;
}

BlockDriverState *blockdev_open_node(const char *filename, BlockOpts *options,
                                     int flags, GError **errp)
{
    BlockDriverState *bs = NULL;

    g_mutex_lock(&names_lock);
    if (options && !check_option_node_names(options, errp)) {
        g_hash_table_unref(options);
    } else {
        bs = bdrv_open(filename, options, flags, errp);
    }
    g_mutex_unlock(&names_lock);
    return bs;
}

/* ---- The global drain order ---- */

struct BlockdevDrainSet {
    GPtrArray *devices;          /* referenced, increasing serial */
};

BlockdevDrainSet *blockdev_drain_begin(BlockBackend *const *list,
                                       size_t count)
{
    BlockdevDrainSet *set = g_new0(BlockdevDrainSet, 1);
    GPtrArray *devs = g_ptr_array_new_with_free_func((GDestroyNotify)blk_unref);

    for (size_t i = 0; i < count; i++) {
        g_ptr_array_add(devs, list[i]);
    }
    g_ptr_array_sort(devs, compare_serial);
    /* Drop repeats (now neighbours), reference the rest, drain in order. */
    for (guint i = 0; i < devs->len;) {
        if (i > 0 && devs->pdata[i] == devs->pdata[i - 1]) {
            devs->pdata[i] = NULL;          /* not referenced: no unref */
            g_ptr_array_remove_index(devs, i);
            continue;
        }
        blk_ref(devs->pdata[i]);
        blk_drained_begin(devs->pdata[i]);
        i++;
    }
    set->devices = devs;
    return set;
}

void blockdev_drain_end(BlockdevDrainSet *set)
{
    if (!set) {
        return;
    }
    for (guint i = set->devices->len; i > 0; i--) {
        blk_drained_end(g_ptr_array_index(set->devices, i - 1));
    }
    g_ptr_array_unref(set->devices);
    g_free(set);
}

BlockBackend *const *blockdev_drain_set_devices(BlockdevDrainSet *set,
                                                size_t *count)
{
    *count = set->devices->len;
    return (BlockBackend *const *)set->devices->pdata;
}
