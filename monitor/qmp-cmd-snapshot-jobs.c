/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * QMP's snapshot-save, snapshot-load and snapshot-delete (QEMU 7.2's
 * whole-machine snapshot jobs): the command checks the job ID and
 * returns {} at once; the work runs right after on the main loop, with
 * QEMU's checks in its order and texts, then ONE transaction over
 * `devices` (creates, reverts or deletes), so each job is all or nothing
 * where QEMU's is not.  VM state goes through blockdev/vmstate.c.
 *
 * The jobs are not block jobs (no device is busy while they run, and
 * they never show in query-block-jobs); they live here, with QEMU's
 * states and JOB_STATUS_CHANGE events (created, running, then waiting,
 * pending, concluded or aborting, concluded), stay concluded until
 * job-dismiss (QEMU creates them with manual dismiss) and are dismissed
 * at shutdown.  Main loop only.
 */
#include <string.h>

#include "monitor/monitor-int.h"
#include "monitor/hmp-int.h"
#include "monitor/qmp-events.h"
#include "monitor/snapshot-jobs.h"
#include "blockdev/registry.h"
#include "blockdev/vmstate-int.h"
#include "block/blockjob.h"
#include "block/snapshot.h"
#include "qapi-gen.h"

typedef enum { SJ_SAVE, SJ_LOAD, SJ_DELETE } SnapJobKind;

static const char *const kind_types[] = {
    "snapshot-save", "snapshot-load", "snapshot-delete",
};

typedef struct SnapJob {
    SnapJobKind kind;
    char *id;
    char *tag;
    char *vmstate;              /* NULL for delete */
    GStrv devices;
    const char *status;         /* QEMU's name */
    bool done;                  /* progress 1 of 1 */
    char *error;
} SnapJob;

/* newest first, as QEMU's query-jobs lists them */
static GList *jobs;

static void snap_job_free(SnapJob *j)
{
    g_free(j->id);
    g_free(j->tag);
    g_free(j->vmstate);
    g_strfreev(j->devices);
    g_free(j->error);
    g_free(j);
}

static SnapJob *find(const char *id)
{
    for (GList *l = jobs; l; l = l->next) {
        if (!strcmp(((SnapJob *)l->data)->id, id)) {
            return l->data;
        }
    }
    return NULL;
}

static void set_status(SnapJob *j, const char *status)
{
    g_autoptr(JsonBuilder) b = json_builder_new();

    j->status = status;
    json_builder_begin_object(b);
    json_builder_set_member_name(b, "status");
    json_builder_add_string_value(b, status);
    json_builder_set_member_name(b, "id");
    json_builder_add_string_value(b, j->id);
    json_builder_end_object(b);
    qmp_event_emit("JOB_STATUS_CHANGE", json_builder_get_root(b));
}

/* ---- QEMU's checks, in its order ---- */

/* The nodes named by devices (node-names, QEMU's bdrv_find_node), each
 * writable one able to hold snapshots, with references the array drops;
 * NULL + errp otherwise. */
static GPtrArray *job_nodes(SnapJob *j, GError **errp)
{
    g_autoptr(GPtrArray) nodes = g_ptr_array_new_with_free_func(
        (GDestroyNotify)bdrv_unref);

    if (!j->devices[0]) {
        g_set_error(errp, BLOCKDEV_ERROR, BLOCKDEV_ERROR_GENERIC,
                    "At least one device is required for snapshot");
        return NULL;
    }
    for (int i = 0; j->devices[i]; i++) {
        BlockDriverState *bs = blockdev_find_node(j->devices[i]);

        if (!bs) {
            g_set_error(errp, BLOCKDEV_ERROR, BLOCKDEV_ERROR_GENERIC,
                        "No block device node '%s'", j->devices[i]);
            return NULL;
        }
        g_ptr_array_add(nodes, bs);
    }
    for (guint i = 0; i < nodes->len; i++) {
        BlockDriverState *bs = g_ptr_array_index(nodes, i);

        if (!bdrv_is_read_only(bs) && !bdrv_can_snapshot(bs)) {
            g_set_error(errp, BLOCKDEV_ERROR, BLOCKDEV_ERROR_GENERIC,
                        "Device '%s' is writable but does not support "
                        "snapshots", j->devices[i]);
            return NULL;
        }
    }
    return g_steal_pointer(&nodes);
}

/* How many of the nodes hold a snapshot named tag (QEMU's name-only
 * lookup). */
static guint count_with_tag(GPtrArray *nodes, const char *tag)
{
    guint n = 0;

    for (guint i = 0; i < nodes->len; i++) {
        n += bdrv_can_snapshot(g_ptr_array_index(nodes, i)) &&
             bdrv_snapshot_find(g_ptr_array_index(nodes, i), tag, NULL,
                                NULL);
    }
    return n;
}

/* The vmstate node: one of devices, able to hold snapshots. */
static BlockDriverState *vmstate_node(SnapJob *j, GPtrArray *nodes,
                                      GError **errp)
{
    for (guint i = 0; i < nodes->len; i++) {
        BlockDriverState *bs = g_ptr_array_index(nodes, i);

        if (strcmp(j->devices[i], j->vmstate)) {
            continue;
        }
        if (!bdrv_can_snapshot(bs)) {
            g_set_error(errp, BLOCKDEV_ERROR, BLOCKDEV_ERROR_GENERIC,
                        "vmstate block device '%s' does not support "
                        "snapshots", j->vmstate);
            return NULL;
        }
        return bs;
    }
    g_set_error(errp, BLOCKDEV_ERROR, BLOCKDEV_ERROR_GENERIC,
                "vmstate block device '%s' does not exist", j->vmstate);
    return NULL;
}

/* ---- the transaction ---- */

static bool do_save(SnapJob *j, GPtrArray *nodes, GError **errp)
{
    g_autoptr(JsonArray) actions = json_array_new();
    BlockDriverState *vm_bs;

    if (count_with_tag(nodes, j->tag)) {
        g_set_error(errp, BLOCKDEV_ERROR, BLOCKDEV_ERROR_GENERIC,
                    "Snapshot '%s' already exists in one or more devices",
                    j->tag);
        return false;
    }
    vm_bs = vmstate_node(j, nodes, errp);
    if (!vm_bs) {
        return false;
    }
    for (guint i = 0; i < nodes->len; i++) {
        hmp_add_snapshot_action(actions, "blockdev-snapshot-internal-sync",
                                j->devices[i], j->tag, NULL);
    }
    return blk_vmstate_save_around(vm_bs, hmp_run_transaction, actions,
                                   errp);
}

static bool do_load(SnapJob *j, GPtrArray *nodes, GError **errp)
{
    g_autoptr(JsonArray) actions = json_array_new();
    BlockDriverState *vm_bs;
    uint64_t vm_size = 0;

    if (count_with_tag(nodes, j->tag) != nodes->len) {
        g_set_error(errp, BLOCKDEV_ERROR, BLOCKDEV_ERROR_GENERIC,
                    "Snapshot '%s' does not exist in one or more devices",
                    j->tag);
        return false;
    }
    vm_bs = vmstate_node(j, nodes, errp);
    if (!vm_bs) {
        return false;
    }
    /* every device's entry, checked before anything is reverted: the
     * state is on vm_bs; without a handler state anywhere refuses */
    for (guint i = 0; i < nodes->len; i++) {
        BlockDriverState *bs = g_ptr_array_index(nodes, i);
        BdrvSnapshotInfo sn = { 0 };
        bool ok;

        bdrv_snapshot_find(bs, j->tag, &sn, NULL);
        if (bs == vm_bs) {
            vm_size = sn.vm_state_size;
        }
        ok = (bs != vm_bs && blk_vmstate_has_handler()) ||
             blk_vmstate_check_load(j->tag, j->devices[i], sn.vm_state_size,
                                    errp);
        /* the entry found, by ID and name (not QEMU's ID-first goto) */
        hmp_add_snapshot_action(
            actions, "__org.strata_blockdev-snapshot-apply-internal",
            j->devices[i], sn.name, sn.id_str);
        bdrv_snapshot_info_clear(&sn);
        if (!ok) {
            return false;
        }
    }
    return blk_vmstate_load_around(vm_bs, vm_size, hmp_run_transaction,
                                   actions, errp);
}

static bool do_delete(SnapJob *j, GPtrArray *nodes, GError **errp)
{
    g_autoptr(JsonArray) actions = json_array_new();

    for (guint i = 0; i < nodes->len; i++) {
        BlockDriverState *bs = g_ptr_array_index(nodes, i);
        BdrvSnapshotInfo sn = { 0 };

        if (bdrv_can_snapshot(bs) &&
            bdrv_snapshot_find(bs, j->tag, &sn, NULL)) {
            hmp_add_snapshot_action(actions,
                                    "blockdev-snapshot-delete-internal-sync",
                                    j->devices[i], j->tag, sn.id_str);
            bdrv_snapshot_info_clear(&sn);
        }
    }
    /* a tag that exists nowhere: nothing to do, as QEMU */
    return !json_array_get_length(actions) ||
           hmp_run_transaction(actions, errp);
}

/* Main loop, after the command answered and the first events went out. */
static void run_job(void *opaque)
{
    SnapJob *j = opaque;
    g_autoptr(GError) err = NULL;
    g_autoptr(GPtrArray) nodes = job_nodes(j, &err);
    bool ok = false;

    if (nodes) {
        switch (j->kind) {
        case SJ_SAVE:
            ok = do_save(j, nodes, &err);
            break;
        case SJ_LOAD:
            ok = do_load(j, nodes, &err);
            break;
        case SJ_DELETE:
            ok = do_delete(j, nodes, &err);
            break;
        }
    }
    j->done = true;
    if (ok) {
        set_status(j, "waiting");
        set_status(j, "pending");
    } else {
        j->error = g_strdup(err->message);
        set_status(j, "aborting");
    }
    set_status(j, "concluded");
}

static JsonNode *start(SnapJobKind kind, const char *id, const char *tag,
                       const char *vmstate, GPtrArray *devices,
                       GError **errp)
{
    SnapJob *j;

    if (!blockdev_id_wellformed(id)) {
        g_set_error(errp, BLOCKDEV_ERROR, BLOCKDEV_ERROR_GENERIC,
                    "Invalid job ID '%s'", id);
        return NULL;
    }
    if (find(id) || block_job_find(id)) {
        g_set_error(errp, BLOCKDEV_ERROR, BLOCKDEV_ERROR_GENERIC,
                    "Job ID '%s' already in use", id);
        return NULL;
    }
    j = g_new0(SnapJob, 1);
    j->kind = kind;
    j->id = g_strdup(id);
    j->tag = g_strdup(tag);
    j->vmstate = g_strdup(vmstate);
    j->devices = g_new0(char *, devices->len + 1);
    for (guint i = 0; i < devices->len; i++) {
        j->devices[i] = g_strdup(g_ptr_array_index(devices, i));
    }
    jobs = g_list_prepend(jobs, j);
    set_status(j, "created");
    set_status(j, "running");
    qmp_event_call(run_job, j);
    return qmp_empty_return();
}

JsonNode *qmp_snapshot_save(const q_obj_snapshot_save_arg *a, GError **errp)
{
    return start(SJ_SAVE, a->job_id, a->tag, a->vmstate, a->devices, errp);
}

JsonNode *qmp_snapshot_load(const q_obj_snapshot_load_arg *a, GError **errp)
{
    return start(SJ_LOAD, a->job_id, a->tag, a->vmstate, a->devices, errp);
}

JsonNode *qmp_snapshot_delete(const q_obj_snapshot_delete_arg *a,
                              GError **errp)
{
    return start(SJ_DELETE, a->job_id, a->tag, NULL, a->devices, errp);
}

/* ---- as generic jobs ---- */

bool snapshot_job_exists(const char *id)
{
    return find(id) != NULL;
}

static int enum_index(const QapiType *t, const char *name)
{
    for (int i = 0; t->values[i]; i++) {
        if (!strcmp(t->values[i], name)) {
            return i;
        }
    }
    g_assert_not_reached();
}

void snapshot_jobs_add_info(GPtrArray *list)
{
    guint at = 0;

    for (GList *l = jobs; l; l = l->next) {
        SnapJob *j = l->data;
        JobInfo *r = g_new0(JobInfo, 1);

        r->id = g_strdup(j->id);
        r->type = enum_index(&qapi_type_JobType, kind_types[j->kind]);
        r->status = enum_index(&qapi_type_JobStatus, j->status);
        r->current_progress = j->done;
        r->total_progress = 1;
        r->has_error = j->error != NULL;
        r->error = g_strdup(j->error);
        g_ptr_array_insert(list, at++, r);
    }
}

static void dismiss(SnapJob *j)
{
    jobs = g_list_remove(jobs, j);
    set_status(j, "null");
    snap_job_free(j);
}

JsonNode *snapshot_job_dismiss(const char *id, GError **errp)
{
    SnapJob *j = find(id);

    g_assert(j);
    if (strcmp(j->status, "concluded")) {
        g_set_error(errp, BLOCKDEV_ERROR, BLOCKDEV_ERROR_GENERIC,
                    "Job '%s' in state '%s' cannot accept command verb "
                    "'dismiss'", id, j->status);
        return NULL;
    }
    dismiss(j);
    return qmp_empty_return();
}

void snapshot_jobs_shutdown(void)
{
    /* a job still queued runs first */
    qmp_events_flush();
    while (jobs) {
        dismiss(jobs->data);
    }
    qmp_events_flush();
}
