/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The human monitor's commands, each a thin layer over a QMP command:
 * the snapshot_blkdev* commands call the QMP snapshot commands, and
 * savevm, loadvm and delvm build ONE QMP transaction over every disk, so
 * each is all or nothing (QEMU's are not: its savevm can leave the
 * snapshot on some disks, its loadvm can revert some disks and fail).
 *
 * "Every disk" is QEMU's set: the root node of every device that is
 * writable (read-only ones are skipped).  VM state (blockdev/vmstate.c):
 * without a handler (strata-daemon) savevm stores none (vm-state-size 0,
 * a disk-only snapshot), loadvm reverts disk-only snapshots and refuses
 * one that carries VM state; with an embedder's handler, savevm stores
 * the state on the first disk and loadvm reads it back (QEMU's rules).
 */
#include <errno.h>
#include <string.h>

#include "monitor/hmp-int.h"
#include "monitor/monitor.h"
#include "monitor/qmp-export.h"
#include "blockdev/registry.h"
#include "block/snapshot.h"
#include "block/block-backend.h"
#include "blockdev/vmstate-int.h"
#include "block/backing.h"
#include "block/blockjob.h"
#include "block/log.h"

/* Runs a QMP command and prints its error, if any; true on success. */
static bool run_qmp(GString *out, const char *command, JsonObject *args)
{
    g_autoptr(GError) err = NULL;
    g_autoptr(JsonNode) ret = hmp_call_qmp(command, args, &err);

    if (!ret) {
        hmp_print_error(out, err);
        return false;
    }
    return true;
}

void hmp_quit(GString *out, GHashTable *args)
{
    monitor_request_quit();
}

void hmp_snapshot_blkdev(GString *out, GHashTable *args)
{
    JsonObject *a = json_object_new();
    const char *file = g_hash_table_lookup(args, "snapshot-file");
    const char *format = g_hash_table_lookup(args, "format");
    bool reuse = g_hash_table_contains(args, "reuse");

    json_object_set_string_member(a, "device",
                                  g_hash_table_lookup(args, "device"));
    /* Without a file QMP's own check answers ("Parameter
     * 'snapshot-file' is missing"), as in QEMU. */
    if (file) {
        json_object_set_string_member(a, "snapshot-file", file);
    }
    json_object_set_string_member(a, "format", format ? format : "qcow2");
    json_object_set_string_member(a, "mode", reuse ? "existing"
                                                   : "absolute-paths");
    run_qmp(out, "blockdev-snapshot-sync", a);
}

void hmp_object_add(GString *out, GHashTable *args)
{
    g_autoptr(GError) err = NULL;

    if (!monitor_object_add_text(g_hash_table_lookup(args, "object"),
                                 &err)) {
        hmp_print_error(out, err);
    }
}

void hmp_object_del(GString *out, GHashTable *args)
{
    JsonObject *a = json_object_new();

    json_object_set_string_member(a, "id", g_hash_table_lookup(args, "id"));
    run_qmp(out, "object-del", a);
}

void hmp_snapshot_blkdev_internal(GString *out, GHashTable *args)
{
    JsonObject *a = json_object_new();

    json_object_set_string_member(a, "device",
                                  g_hash_table_lookup(args, "device"));
    json_object_set_string_member(a, "name",
                                  g_hash_table_lookup(args, "name"));
    run_qmp(out, "blockdev-snapshot-internal-sync", a);
}

void hmp_snapshot_delete_blkdev_internal(GString *out, GHashTable *args)
{
    JsonObject *a = json_object_new();
    const char *id = g_hash_table_lookup(args, "id");

    json_object_set_string_member(a, "device",
                                  g_hash_table_lookup(args, "device"));
    json_object_set_string_member(a, "name",
                                  g_hash_table_lookup(args, "name"));
    if (id) {
        json_object_set_string_member(a, "id", id);
    }
    run_qmp(out, "blockdev-snapshot-delete-internal-sync", a);
}

/* ---- the disks of savevm, loadvm, delvm, info snapshots ---- */

static GPtrArray *device_roots(bool writable_only)
{
    g_autoptr(GPtrArray) devs = blockdev_list_devices();
    GPtrArray *disks = g_ptr_array_new_with_free_func(
        (GDestroyNotify)bdrv_unref);

    for (guint i = 0; i < devs->len; i++) {
        BlockDriverState *bs = blk_get_root(g_ptr_array_index(devs, i));

        if (!bs) {
            continue;
        }
        if ((writable_only && bdrv_is_read_only(bs)) ||
            g_ptr_array_find(disks, bs, NULL)) {
            bdrv_unref(bs);
            continue;
        }
        g_ptr_array_add(disks, bs);
    }
    return disks;
}

GPtrArray *hmp_snapshot_disks(void)
{
    return device_roots(true);
}

GPtrArray *hmp_snapshot_disks_all(void)
{
    return device_roots(false);
}

/* The disks, all able to hold snapshots; NULL with errp set (QEMU's
 * texts) when one cannot or there is none. */
static GPtrArray *usable_disks(GError **errp)
{
    g_autoptr(GPtrArray) disks = hmp_snapshot_disks();

    for (guint i = 0; i < disks->len; i++) {
        BlockDriverState *bs = g_ptr_array_index(disks, i);
        if (!bdrv_can_snapshot(bs)) {
            g_set_error(errp, BLOCKDEV_ERROR, BLOCKDEV_ERROR_GENERIC,
                        "Device '%s' is writable but does not support "
                        "snapshots", hmp_disk_name(bs));
            return NULL;
        }
    }
    if (!disks->len) {
        g_set_error(errp, BLOCKDEV_ERROR, BLOCKDEV_ERROR_GENERIC,
                    "no block device can store vmstate for snapshot");
        return NULL;
    }
    return g_steal_pointer(&disks);
}

const char *hmp_disk_name(BlockDriverState *bs)
{
    g_autoptr(GPtrArray) devs = blockdev_list_devices();

    for (guint i = 0; i < devs->len; i++) {
        BlockBackend *blk = g_ptr_array_index(devs, i);
        if (blk_bs(blk) == bs && *blk_name(blk)) {
            /* the registry keeps the name while the device exists */
            return blk_name(blk);
        }
    }
    return bdrv_get_node_name(bs);
}

void hmp_add_snapshot_action(JsonArray *actions, const char *type,
                             const char *device, const char *name,
                             const char *id)
{
    JsonObject *action = json_object_new();
    JsonObject *data = json_object_new();

    json_object_set_string_member(data, "device", device);
    json_object_set_string_member(data, "name", name);
    if (id) {
        json_object_set_string_member(data, "id", id);
    }
    json_object_set_string_member(action, "type", type);
    json_object_set_object_member(action, "data", data);
    json_array_add_object_element(actions, action);
}

/* savevm replaces and delvm removes a snapshot of the name on every
 * disk that has one: the same delete action in both. */
static void add_delete_if_found(JsonArray *actions, BlockDriverState *bs,
                                const char *tag)
{
    BdrvSnapshotInfo sn = { 0 };

    if (bdrv_snapshot_find(bs, tag, &sn, NULL)) {
        hmp_add_snapshot_action(actions,
                                "blockdev-snapshot-delete-internal-sync",
                                hmp_disk_name(bs), tag, sn.id_str);
        bdrv_snapshot_info_clear(&sn);
    }
}

static bool run_transaction(GString *out, JsonArray *actions)
{
    JsonObject *a = json_object_new();

    json_object_set_array_member(a, "actions", actions);
    return run_qmp(out, "transaction", a);
}

gboolean hmp_run_transaction(void *actions, GError **errp)
{
    JsonObject *a = json_object_new();
    g_autoptr(JsonNode) ret = NULL;

    json_object_set_array_member(a, "actions", json_array_ref(actions));
    ret = hmp_call_qmp("transaction", a, errp);
    return ret != NULL;
}

/* Runs actions (taken) around the VM state's save (load: vm_size the
 * state's size) on the vmstate disk vm_bs; prints the error, if any. */
static void run_with_vmstate(GString *out, JsonArray *actions,
                             BlockDriverState *vm_bs, bool load,
                             uint64_t vm_size)
{
    g_autoptr(GError) err = NULL;
    gboolean ok;

    ok = load ? blk_vmstate_load_around(vm_bs, vm_size, hmp_run_transaction,
                                        actions, &err)
              : blk_vmstate_save_around(vm_bs, hmp_run_transaction, actions,
                                        &err);
    json_array_unref(actions);
    if (!ok) {
        hmp_print_error(out, err);
    }
}

/* QEMU's name for a savevm without a tag: the local time to the second. */
static char *default_tag(void)
{
    g_autoptr(GDateTime) now = g_date_time_new_now_local();

    return g_date_time_format(now, "vm-%Y%m%d%H%M%S");
}

void hmp_savevm(GString *out, GHashTable *args)
{
    g_autoptr(GError) err = NULL;
    g_autoptr(GPtrArray) disks = usable_disks(&err);
    g_autofree char *tag = NULL;
    JsonArray *actions;

    if (!disks) {
        hmp_print_error(out, err);
        return;
    }
    tag = g_strdup(g_hash_table_lookup(args, "name"));
    if (!tag) {
        tag = default_tag();
    }
    /* An existing snapshot of that name is replaced on every disk: its
     * delete is an action of the same transaction, undone if any
     * create fails (QEMU deletes first, for good). */
    actions = json_array_new();
    for (guint i = 0; i < disks->len; i++) {
        BlockDriverState *bs = g_ptr_array_index(disks, i);

        add_delete_if_found(actions, bs, tag);
        hmp_add_snapshot_action(actions, "blockdev-snapshot-internal-sync",
                                hmp_disk_name(bs), tag, NULL);
    }
    /* QEMU's vmstate disk: the first one that can hold snapshots */
    run_with_vmstate(out, actions, g_ptr_array_index(disks, 0), false, 0);
}

/* The snapshot called tag on every disk (name-only lookup, as QEMU's
 * check); fills infos[i].  False with errp set if one lacks it. */
static bool find_on_all(GPtrArray *disks, const char *tag,
                        BdrvSnapshotInfo *infos, GError **errp)
{
    for (guint i = 0; i < disks->len; i++) {
        if (!bdrv_snapshot_find(g_ptr_array_index(disks, i), tag, &infos[i],
                                NULL)) {
            g_set_error(errp, BLOCKDEV_ERROR, BLOCKDEV_ERROR_GENERIC,
                        "Snapshot '%s' does not exist in one or more "
                        "devices", tag);
            return false;
        }
    }
    return true;
}

/* The state lives on the vmstate disk, the first one (QEMU's rule);
 * without a handler state found on any disk refuses the load. */
static bool check_vm_state(GPtrArray *disks, const char *tag,
                           const BdrvSnapshotInfo *infos, GError **errp)
{
    for (guint i = 0; i < disks->len; i++) {
        if ((i == 0 || !blk_vmstate_has_handler()) &&
            !blk_vmstate_check_load(tag,
                                    hmp_disk_name(g_ptr_array_index(disks, i)),
                                    infos[i].vm_state_size, errp)) {
            return false;
        }
    }
    return true;
}

void hmp_loadvm(GString *out, GHashTable *args)
{
    const char *tag = g_hash_table_lookup(args, "name");
    g_autoptr(GError) err = NULL;
    g_autoptr(GPtrArray) disks = usable_disks(&err);
    g_autofree BdrvSnapshotInfo *infos = NULL;
    JsonArray *actions;
    bool ok;

    if (!disks) {
        hmp_print_error(out, err);
        return;
    }
    infos = g_new0(BdrvSnapshotInfo, disks->len);
    ok = find_on_all(disks, tag, infos, &err) &&
         check_vm_state(disks, tag, infos, &err);
    if (ok) {
        /* The entry the check found, by its ID and name: QEMU reverts by
         * ID first, which picks another snapshot when the tag is some
         * other snapshot's ID. */
        actions = json_array_new();
        for (guint i = 0; i < disks->len; i++) {
            hmp_add_snapshot_action(
                actions, "__org.strata_blockdev-snapshot-apply-internal",
                hmp_disk_name(g_ptr_array_index(disks, i)), infos[i].name,
                infos[i].id_str);
        }
        run_with_vmstate(out, actions, g_ptr_array_index(disks, 0), true,
                         infos[0].vm_state_size);
    } else {
        hmp_print_error(out, err);
    }
    for (guint i = 0; i < disks->len; i++) {
        bdrv_snapshot_info_clear(&infos[i]);
    }
}

void hmp_delvm(GString *out, GHashTable *args)
{
    const char *tag = g_hash_table_lookup(args, "name");
    g_autoptr(GPtrArray) disks = hmp_snapshot_disks();
    JsonArray *actions;

    /* QEMU's check that every disk can hold snapshots; no disk at all
     * is not an error here (the tag exists nowhere, below). */
    for (guint i = 0; i < disks->len; i++) {
        if (!bdrv_can_snapshot(g_ptr_array_index(disks, i))) {
            g_string_append_printf(out, "Error: Device '%s' is writable but "
                                   "does not support snapshots\n",
                                   hmp_disk_name(g_ptr_array_index(disks,
                                                                   i)));
            return;
        }
    }
    actions = json_array_new();
    for (guint i = 0; i < disks->len; i++) {
        add_delete_if_found(actions, g_ptr_array_index(disks, i), tag);
    }
    if (!json_array_get_length(actions)) {
        /* QEMU accepts this silently; a typo should not look like a
         * successful delete.  qemu-img's words for the same case. */
        json_array_unref(actions);
        g_string_append_printf(out, "Error: Could not delete snapshot "
                               "'%s': snapshot not found\n", tag);
        return;
    }
    run_transaction(out, actions);
}

/* ---- commit ---- */

/*
 * QEMU's HMP commit (its bdrv_commit): the device's image is merged into
 * its backing file and then emptied, the device staying on it.  The merge
 * is the library's commit job, run to the end on a private backend on the
 * image (so the device is not switched to the base, as block-commit
 * would), then the image is emptied, as qemu-img commit does.  0 or
 * -errno (-ENOTSUP without a backing file, as QEMU).
 */
static int commit_image(BlockDriverState *top, GError **errp)
{
    BlockDriverState *base = bdrv_get_backing(top);
    CommitOptions copts = { .auto_complete = true };
    BlockBackend *tmp;
    BlockJob *job;
    int ret;

    if (!base) {
        return -ENOTSUP;
    }
    tmp = blk_new(NULL, top);
    job = commit_start("strata-hmp-commit", tmp, top, base, &copts, errp);
    ret = job ? block_job_wait(job, errp) : -EBUSY;
    blk_unref(tmp);
    if (ret == 0 && !bdrv_make_empty(top, errp)) {
        ret = -EIO;
    }
    return ret;
}

static void commit_one(GString *out, const char *device,
                       BlockDriverState *bs)
{
    g_autoptr(GError) err = NULL;
    int ret = commit_image(bs, &err);

    if (ret < 0) {
        /* QEMU's text names the errno only; the detail is logged */
        if (err) {
            strata_warning("commit of '%s': %s", device, err->message);
        }
        g_string_append_printf(out, "'commit' error for '%s': %s\n", device,
                               g_strerror(-ret));
    }
}

void hmp_commit(GString *out, GHashTable *args)
{
    const char *device = g_hash_table_lookup(args, "device");
    g_autoptr(GPtrArray) disks = hmp_snapshot_disks_all();

    if (!strcmp(device, "all")) {
        /* every device with a backing file, silently (QEMU's rule) */
        for (guint i = 0; i < disks->len; i++) {
            BlockDriverState *bs = g_ptr_array_index(disks, i);
            if (bdrv_get_backing(bs)) {
                commit_one(out, hmp_disk_name(bs), bs);
            }
        }
        return;
    }
    for (guint i = 0; i < disks->len; i++) {
        BlockDriverState *bs = g_ptr_array_index(disks, i);
        if (!strcmp(hmp_disk_name(bs), device)) {
            commit_one(out, device, bs);
            return;
        }
    }
    /* QEMU prints this one without "Error: " */
    g_string_append_printf(out, "Device '%s' not found\n", device);
}
