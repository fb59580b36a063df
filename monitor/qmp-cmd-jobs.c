/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The job commands over QMP: block-commit and block-stream (QEMU 7.2's
 * argument checks, in its order and with its texts), query-block-jobs,
 * query-jobs, and the verbs on a job (cancel, pause, resume, set-speed,
 * complete, finalize, dismiss) in their block-job-* and job-* forms.
 *
 * The jobs themselves are the library's (block/blockjob.c); this file
 * turns their status changes and events into QMP events (queued from the
 * job's thread, delivered by the main loop: monitor/qmp-events.c) and
 * frees a job once it has concluded unless auto-dismiss is off.
 *
 * Threads: commands run on the main loop; a job is freed only there
 * (auto-dismiss through the event queue, job-dismiss, shutdown), so a
 * job found by a command stays valid for the whole command.
 */
#include <errno.h>
#include <string.h>

#include "monitor/monitor-int.h"
#include "monitor/qmp-events.h"
#include "blockdev/registry.h"
#include "block/backing.h"
#include "block/blockjob.h"
#include "block/log.h"
#include "qapi-gen.h"
#include "monitor/snapshot-jobs.h"   /* hmp2: snapshot-save/-load/-delete */

/* How long a command that QEMU runs to the end synchronously (finalize,
 * cancel) waits for the job to conclude. */
#define SYNC_WAIT_US (30 * G_USEC_PER_SEC)

/* ---- events ---- */

static JsonNode *status_change_data(const char *id, const char *status)
{
    g_autoptr(JsonBuilder) b = json_builder_new();

    json_builder_begin_object(b);
    json_builder_set_member_name(b, "status");
    json_builder_add_string_value(b, status);
    json_builder_set_member_name(b, "id");
    json_builder_add_string_value(b, id);
    json_builder_end_object(b);
    return json_builder_get_root(b);
}

/* Main loop: a concluded job of auto-dismiss goes away ("null"). */
static void auto_dismiss(void *opaque)
{
    BlockJob *job = opaque;
    g_autofree char *id = g_strdup(block_job_id(job));

    block_job_wait(job, NULL);
    qmp_event_emit("JOB_STATUS_CHANGE", status_change_data(id, "null"));
}

static void emit_block_job_error(const char *id, const char *msg);

/* Job's thread (or the main loop), with the job's lock held. */
static void job_status_changed(BlockJob *job, BlockJobStatus status,
                               void *opaque)
{
    /* QEMU reports the I/O error (on-error "report") before aborting. */
    if (status == BLOCK_JOB_STATUS_ABORTING && job->ret != -ECANCELED &&
        job->error) {
        strata_warning("block job '%s': %s", job->id, job->error->message);
        emit_block_job_error(job->id, job->error->message);
    }
    qmp_event_emit("JOB_STATUS_CHANGE",
                   status_change_data(job->id,
                                      block_job_status_name(status)));
    if (status == BLOCK_JOB_STATUS_PENDING && job->manual_finalize) {
        g_autoptr(JsonBuilder) b = json_builder_new();

        json_builder_begin_object(b);
        json_builder_set_member_name(b, "type");
        json_builder_add_string_value(b, job->driver->job_type);
        json_builder_set_member_name(b, "id");
        json_builder_add_string_value(b, job->id);
        json_builder_end_object(b);
        qmp_event_emit("BLOCK_JOB_PENDING", json_builder_get_root(b));
    }
    if (status == BLOCK_JOB_STATUS_CONCLUDED && !job->manual_dismiss) {
        qmp_event_call(auto_dismiss, job);
    }
}

/* The operation an I/O error of a job happened in, from the job's
 * message (its drivers say "Could not read ..." / "Could not write"). */
static const char *error_operation(const char *msg)
{
    return strstr(msg, "read") && !strstr(msg, "write") ? "read" : "write";
}

static void emit_block_job_error(const char *id, const char *msg)
{
    g_autoptr(JsonBuilder) b = json_builder_new();

    json_builder_begin_object(b);
    json_builder_set_member_name(b, "device");
    json_builder_add_string_value(b, id);
    json_builder_set_member_name(b, "operation");
    json_builder_add_string_value(b, error_operation(msg));
    json_builder_set_member_name(b, "action");
    json_builder_add_string_value(b, "report");
    json_builder_end_object(b);
    qmp_event_emit("BLOCK_JOB_ERROR", json_builder_get_root(b));
}

/* QEMU's text for a job's error: the errno's (the detailed message went
 * to the log). */
static const char *job_error_text(const BlockJobState *info)
{
    return info->ret < 0 ? g_strerror(-info->ret) : NULL;
}

/* Job's thread, without the job's lock. */
static void job_event(BlockJob *job, BlockJobEvent ev, void *opaque)
{
    g_autoptr(JsonBuilder) b = json_builder_new();
    BlockJobState info;
    const char *name = ev == BLOCK_JOB_EVENT_READY ? "BLOCK_JOB_READY"
                       : ev == BLOCK_JOB_EVENT_CANCELLED
                       ? "BLOCK_JOB_CANCELLED" : "BLOCK_JOB_COMPLETED";

    block_job_get_info(job, &info);
    json_builder_begin_object(b);
    json_builder_set_member_name(b, "device");
    json_builder_add_string_value(b, info.id);
    json_builder_set_member_name(b, "len");
    json_builder_add_int_value(b, info.len);
    json_builder_set_member_name(b, "offset");
    json_builder_add_int_value(b, info.offset);
    json_builder_set_member_name(b, "speed");
    json_builder_add_int_value(b, info.speed);
    json_builder_set_member_name(b, "type");
    json_builder_add_string_value(b, info.type);
    if (ev == BLOCK_JOB_EVENT_COMPLETED && job_error_text(&info)) {
        json_builder_set_member_name(b, "error");
        json_builder_add_string_value(b, job_error_text(&info));
    }
    json_builder_end_object(b);
    qmp_event_emit(name, json_builder_get_root(b));
}

static void job_options(BlockJobOptions *o, bool has_speed, int64_t speed,
                        bool has_auto_finalize, bool auto_finalize,
                        bool has_auto_dismiss, bool auto_dismiss)
{
    o->speed = has_speed ? speed : 0;
    o->event_cb = job_event;
    o->status_cb = job_status_changed;
    o->manual_finalize = has_auto_finalize && !auto_finalize;
    o->manual_dismiss = has_auto_dismiss && !auto_dismiss;
}

/* strata's jobs report an I/O error and stop ('report'; 'auto' differs
 * only on a full disk, which is reported too); pausing or ignoring on an
 * error is not implemented, and saying so beats pretending. */
static bool check_on_error(bool has, int on_error, GError **errp)
{
    static const char *const names[] = { "report", "ignore", "enospc",
                                         "stop", "auto" };

    if (!has || on_error == BLOCKDEVONERROR_REPORT ||
        on_error == BLOCKDEVONERROR_AUTO) {
        return true;
    }
    return qmp_fail(errp, "on-error '%s' is not supported by strata (only "
                "'report' and 'auto')", names[on_error]);
}

/*
 * QEMU creates the job (JOB_STATUS_CHANGE "created") before it applies
 * the speed, and so reports a negative speed after a created/null pair.
 */
static void report_refused_speed(const char *id, bool has_speed,
                                 int64_t speed)
{
    if (has_speed && speed < 0) {
        qmp_event_emit("JOB_STATUS_CHANGE", status_change_data(id,
                                                               "created"));
        qmp_event_emit("JOB_STATUS_CHANGE", status_change_data(id, "null"));
    }
}

/* ---- finding devices and jobs ---- */

/* The device whose root is bs (blockdev-add gives every node one), or
 * else one whose chain holds bs; a new reference, or NULL. */
static BlockBackend *device_of(BlockDriverState *bs, bool root_only)
{
    g_autoptr(GPtrArray) devs = blockdev_list_devices();
    BlockBackend *chain = NULL;

    for (guint i = 0; i < devs->len; i++) {
        BlockBackend *blk = g_ptr_array_index(devs, i);

        if (blk_bs(blk) == bs) {
            blk_ref(blk);
            return blk;
        }
        if (!chain && !root_only && blk_bs(blk) &&
            bdrv_chain_contains(blk_bs(blk), bs)) {
            chain = blk;
        }
    }
    if (chain) {
        blk_ref(chain);
    }
    return chain;
}

/* A job a client can see: one of auto-dismiss is gone once concluded
 * (QEMU frees it at once; here the main loop does so a moment later). */
static bool job_visible(BlockJob *job)
{
    BlockJobState info;

    block_job_get_info(job, &info);
    return info.status != BLOCK_JOB_STATUS_CONCLUDED ||
           info.manual_dismiss;
}

static BlockJob *find_block_job(const char *id, GError **errp)
{
    BlockJob *job = block_job_find(id);

    if (!job || !job_visible(job)) {
        g_set_error(errp, MONITOR_ERROR, MONITOR_ERROR_DEVICE_NOT_ACTIVE,
                    "Block job '%s' not found", id);
        return NULL;
    }
    return job;
}

static BlockJob *find_job(const char *id, GError **errp)
{
    BlockJob *job = block_job_find(id);

    if (!job || !job_visible(job)) {
        qmp_fail(errp, "Job not found");
        return NULL;
    }
    return job;
}

/* ---- block-commit ---- */

/* top-node / top, as QEMU resolves them under the device's root bs. */
static bool commit_top(const q_obj_block_commit_arg *a, BlockDriverState *bs,
                       BlockDriverState **top, GError **errp)
{
    if (a->has_top_node && a->has_top) {
        return qmp_fail(errp, "'top-node' and 'top' are mutually exclusive");
    }
    if (a->has_top_node) {
        g_autoptr(BlockDriverState) t = blockdev_lookup_bs(NULL, a->top_node,
                                                           errp);
        if (!t) {
            return false;
        }
        if (!bdrv_chain_contains(bs, t)) {
            return qmp_fail(errp, "'%s' is not in this backing file chain",
                        a->top_node);
        }
        *top = t;               /* the chain holds it */
    } else if (a->has_top) {
        *top = bdrv_is_file(bs, a->top) ? bs
               : bdrv_find_backing_image(bs, a->top);
        if (!*top) {
            return qmp_fail(errp, "Top image file %s not found", a->top);
        }
    } else {
        *top = bs;
    }
    return true;
}

static bool commit_base(const q_obj_block_commit_arg *a,
                        BlockDriverState *top, BlockDriverState **base,
                        GError **errp)
{
    if (a->has_base_node && a->has_base) {
        return qmp_fail(errp, "'base-node' and 'base' are mutually exclusive");
    }
    if (a->has_base_node) {
        g_autoptr(BlockDriverState) b = blockdev_lookup_bs(
            NULL, a->base_node, errp);
        if (!b) {
            return false;
        }
        if (!bdrv_chain_contains(top, b)) {
            return qmp_fail(errp, "'%s' is not in this backing file chain",
                        a->base_node);
        }
        *base = b;
    } else if (a->has_base) {
        *base = bdrv_find_backing_image(top, a->base);
        if (!*base) {
            return qmp_fail(errp, "Can't find '%s' in the backing chain",
                        a->base);
        }
    } else {
        *base = NULL;           /* the bottom of the chain */
    }
    return true;
}

JsonNode *qmp_block_commit(const q_obj_block_commit_arg *a, GError **errp)
{
    g_autoptr(GError) err = NULL;
    g_autoptr(BlockDriverState) bs = blockdev_get_root_bs(a->device, &err);
    g_autoptr(BlockBackend) blk = NULL;
    const char *id = a->has_job_id ? a->job_id : "";
    BlockDriverState *top, *base;
    CommitOptions opts = { 0 };

    if (!bs) {
        g_autoptr(BlockDriverState) any = blockdev_lookup_bs(
            a->device, a->device, NULL);
        if (!any) {
            g_set_error(errp, BLOCKDEV_ERROR, BLOCKDEV_ERROR_DEVICE_NOT_FOUND,
                        "Device '%s' not found", a->device);
        } else {
            g_propagate_error(errp, g_steal_pointer(&err));
        }
        return NULL;
    }
    blk = device_of(bs, true);
    /* QEMU: a running job is a parent of the node, which is then no
     * root any more. */
    if (!blk || blk_get_job(blk)) {
        qmp_fail(errp, "Need a root block node");
        return NULL;
    }
    if (!commit_top(a, bs, &top, errp) || !commit_base(a, top, &base, errp)) {
        return NULL;
    }
    if (top == bs && a->has_backing_file) {
        qmp_fail(errp, "'backing-file' specified, but 'top' is the active "
             "layer");
        return NULL;
    }
    if (!check_on_error(a->has_on_error, a->on_error, errp) ||
        (a->has_filter_node_name &&
         !blockdev_check_node_name(a->filter_node_name, errp))) {
        return NULL;
    }
    job_options(&opts.job, a->has_speed, a->speed, a->has_auto_finalize,
                a->auto_finalize, a->has_auto_dismiss, a->auto_dismiss);
    opts.backing_file = a->has_backing_file ? a->backing_file : NULL;
    if (!commit_start(id, blk, top, base, &opts, &err)) {
        report_refused_speed(id, a->has_speed, a->speed);
        g_propagate_error(errp, g_steal_pointer(&err));
        return NULL;
    }
    return qmp_empty_return();
}

/* ---- block-stream ---- */

static bool stream_base(const q_obj_block_stream_arg *a, BlockDriverState *bs,
                        BlockDriverState **base, GError **errp)
{
    *base = NULL;
    if (a->has_base) {
        *base = bdrv_find_backing_image(bs, a->base);
        if (!*base) {
            return qmp_fail(errp, "Can't find '%s' in the backing chain",
                        a->base);
        }
    }
    if (a->has_base_node) {
        g_autoptr(BlockDriverState) b = blockdev_lookup_bs(
            NULL, a->base_node, errp);
        if (!b) {
            return false;
        }
        if (b == bs || !bdrv_chain_contains(bs, b)) {
            return qmp_fail(errp, "Node '%s' is not a backing image of '%s'",
                        a->base_node, a->device);
        }
        *base = b;
    }
    return true;
}

JsonNode *qmp_block_stream(const q_obj_block_stream_arg *a, GError **errp)
{
    g_autoptr(BlockDriverState) bs = NULL;
    g_autoptr(BlockBackend) blk = NULL;
    g_autoptr(GError) err = NULL;
    const char *id = a->has_job_id ? a->job_id : "";
    BlockDriverState *base;
    StreamOptions opts = { 0 };

    if (a->has_base && a->has_base_node) {
        qmp_fail(errp, "'base' and 'base-node' cannot be specified at the same "
             "time");
        return NULL;
    }
    if (a->has_bottom && (a->has_base || a->has_base_node)) {
        qmp_fail(errp, "'bottom' and '%s' cannot be specified at the same time",
             a->has_base ? "base" : "base-node");
        return NULL;
    }
    bs = blockdev_lookup_bs(a->device, a->device, errp);
    if (!bs || !stream_base(a, bs, &base, errp)) {
        return NULL;
    }
    if (a->has_bottom) {
        /* strata: streams down to a base only (no filters to skip) */
        qmp_fail(errp, "Parameter 'bottom' is not supported by strata; use "
             "'base-node'");
        return NULL;
    }
    if (!base && a->has_backing_file) {
        qmp_fail(errp, "backing file specified, but streaming the entire "
             "chain");
        return NULL;
    }
    if (!check_on_error(a->has_on_error, a->on_error, errp) ||
        (a->has_filter_node_name &&
         !blockdev_check_node_name(a->filter_node_name, errp))) {
        return NULL;
    }
    blk = device_of(bs, false);
    if (!blk) {
        qmp_fail(errp, "Node '%s' is not attached to a device",
             bdrv_get_node_name(bs));
        return NULL;
    }
    job_options(&opts.job, a->has_speed, a->speed, a->has_auto_finalize,
                a->auto_finalize, a->has_auto_dismiss, a->auto_dismiss);
    opts.backing_file = a->has_backing_file ? a->backing_file : NULL;
    if (!stream_start(id, blk, bs, base, &opts, &err)) {
        report_refused_speed(id, a->has_speed, a->speed);
        g_propagate_error(errp, g_steal_pointer(&err));
        return NULL;
    }
    return qmp_empty_return();
}

/* ---- queries ---- */

/* The schema's value of an enum named as the library names it. */
static int enum_value(const QapiType *t, const char *name)
{
    for (int i = 0; t->values[i]; i++) {
        if (!strcmp(t->values[i], name)) {
            return i;
        }
    }
    g_assert_not_reached();
}

static void *block_job_info(BlockJob *job)
{
    BlockJobInfo *r = g_new0(BlockJobInfo, 1);
    BlockJobState st;

    block_job_get_info(job, &st);
    r->type = g_strdup(st.type);
    r->device = g_strdup(st.id);
    r->len = st.len;
    r->offset = st.offset;
    r->busy = st.busy;
    r->paused = st.paused;
    r->speed = st.speed;
    r->io_status = BLOCKDEVICEIOSTATUS_OK;
    r->ready = st.ready;
    r->status = enum_value(&qapi_type_JobStatus,
                           block_job_status_name(st.status));
    r->auto_finalize = !st.manual_finalize;
    r->auto_dismiss = !st.manual_dismiss;
    r->has_error = job_error_text(&st) != NULL;
    r->error = g_strdup(job_error_text(&st));
    return r;
}

static void *job_info(BlockJob *job)
{
    JobInfo *r = g_new0(JobInfo, 1);
    BlockJobState st;

    block_job_get_info(job, &st);
    r->id = g_strdup(st.id);
    r->type = enum_value(&qapi_type_JobType, st.type);
    r->status = enum_value(&qapi_type_JobStatus,
                           block_job_status_name(st.status));
    r->current_progress = st.offset;
    r->total_progress = st.len;
    r->has_error = job_error_text(&st) != NULL;
    r->error = g_strdup(job_error_text(&st));
    return r;
}

/* The visible jobs, each as the result type make_info builds. */
static GPtrArray *list_jobs(void *(*make_info)(BlockJob *job))
{
    g_autoptr(GPtrArray) jobs = block_job_list();
    GPtrArray *out = g_ptr_array_new();

    for (guint i = 0; i < jobs->len; i++) {
        BlockJob *job = g_ptr_array_index(jobs, i);

        if (job_visible(job)) {
            g_ptr_array_add(out, make_info(job));
        }
    }
    return out;
}

JsonNode *qmp_query_block_jobs(GError **errp)
{
    GPtrArray *list = list_jobs(block_job_info);
    JsonNode *ret = qapi_BlockJobInfoList_to_json(list);

    qapi_free_BlockJobInfoList(list);
    return ret;
}

JsonNode *qmp_query_jobs(GError **errp)
{
    GPtrArray *list = list_jobs(job_info);
    JsonNode *ret;

    snapshot_jobs_add_info(list);   /* hmp2: the snapshot jobs, in front */
    ret = qapi_JobInfoList_to_json(list);

    qapi_free_JobInfoList(list);
    return ret;
}

/* ---- verbs ---- */

/* QEMU concludes a cancelled or finalized job before it answers. */
static JsonNode *wait_concluded(BlockJob *job)
{
    block_job_wait_concluded(job, SYNC_WAIT_US);
    return qmp_empty_return();
}

static JsonNode *do_cancel(BlockJob *job, bool force, GError **errp)
{
    if (!job || !block_job_user_cancel(job, force, errp)) {
        return NULL;
    }
    return wait_concluded(job);
}

static JsonNode *do_pause(BlockJob *job, GError **errp)
{
    return job && block_job_pause(job, errp) ? qmp_empty_return() : NULL;
}

static JsonNode *do_resume(BlockJob *job, GError **errp)
{
    return job && block_job_resume(job, errp) ? qmp_empty_return() : NULL;
}

static JsonNode *do_complete(BlockJob *job, GError **errp)
{
    return job && block_job_complete(job, errp) ? qmp_empty_return() : NULL;
}

static JsonNode *do_finalize(BlockJob *job, GError **errp)
{
    if (!job || !block_job_finalize(job, errp)) {
        return NULL;
    }
    return wait_concluded(job);
}

static JsonNode *do_dismiss(BlockJob *job, GError **errp)
{
    g_autofree char *id = job ? g_strdup(block_job_id(job)) : NULL;

    if (!job || !block_job_dismiss(job, errp)) {
        return NULL;
    }
    qmp_event_emit("JOB_STATUS_CHANGE", status_change_data(id, "null"));
    return qmp_empty_return();
}

JsonNode *qmp_block_job_set_speed(const q_obj_block_job_set_speed_arg *a,
                                  GError **errp)
{
    BlockJob *job = find_block_job(a->device, errp);

    return job && block_job_set_speed(job, a->speed, errp)
           ? qmp_empty_return() : NULL;
}

JsonNode *qmp_block_job_cancel(const q_obj_block_job_cancel_arg *a,
                               GError **errp)
{
    return do_cancel(find_block_job(a->device, errp),
                     a->has_force && a->force, errp);
}

JsonNode *qmp_block_job_pause(const q_obj_block_job_pause_arg *a,
                              GError **errp)
{
    return do_pause(find_block_job(a->device, errp), errp);
}

JsonNode *qmp_block_job_resume(const q_obj_block_job_resume_arg *a,
                               GError **errp)
{
    return do_resume(find_block_job(a->device, errp), errp);
}

JsonNode *qmp_block_job_complete(const q_obj_block_job_complete_arg *a,
                                 GError **errp)
{
    return do_complete(find_block_job(a->device, errp), errp);
}

JsonNode *qmp_block_job_dismiss(const q_obj_block_job_dismiss_arg *a,
                                GError **errp)
{
    return do_dismiss(find_block_job(a->id, errp), errp);
}

JsonNode *qmp_block_job_finalize(const q_obj_block_job_finalize_arg *a,
                                 GError **errp)
{
    return do_finalize(find_block_job(a->id, errp), errp);
}

JsonNode *qmp_job_pause(const q_obj_job_pause_arg *a, GError **errp)
{
    return do_pause(find_job(a->id, errp), errp);
}

JsonNode *qmp_job_resume(const q_obj_job_resume_arg *a, GError **errp)
{
    return do_resume(find_job(a->id, errp), errp);
}

/* QEMU's job-cancel always forces. */
JsonNode *qmp_job_cancel(const q_obj_job_cancel_arg *a, GError **errp)
{
    return do_cancel(find_job(a->id, errp), true, errp);
}

JsonNode *qmp_job_complete(const q_obj_job_complete_arg *a, GError **errp)
{
    return do_complete(find_job(a->id, errp), errp);
}

JsonNode *qmp_job_dismiss(const q_obj_job_dismiss_arg *a, GError **errp)
{
    if (snapshot_job_exists(a->id)) {          /* hmp2 */
        return snapshot_job_dismiss(a->id, errp);
    }
    return do_dismiss(find_job(a->id, errp), errp);
}

JsonNode *qmp_job_finalize(const q_obj_job_finalize_arg *a, GError **errp)
{
    return do_finalize(find_job(a->id, errp), errp);
}

/* ---- shutdown ---- */

void monitor_jobs_shutdown(void)
{
    g_autoptr(GPtrArray) jobs = block_job_list();
    g_autoptr(GPtrArray) left = NULL;

    for (guint i = 0; i < jobs->len; i++) {
        block_job_cancel(g_ptr_array_index(jobs, i));
    }
    for (guint i = 0; i < jobs->len; i++) {
        block_job_wait_concluded(g_ptr_array_index(jobs, i),
                                 (int64_t)3600 * G_USEC_PER_SEC);
    }
    /* Their events out, and the auto-dismissed ones freed. */
    qmp_events_flush();
    /* QEMU dismisses the concluded jobs that were kept, too. */
    left = block_job_list();
    for (guint i = 0; i < left->len; i++) {
        BlockJob *job = g_ptr_array_index(left, i);
        g_autofree char *id = g_strdup(block_job_id(job));

        block_job_wait(job, NULL);
        qmp_event_emit("JOB_STATUS_CHANGE", status_change_data(id, "null"));
    }
    snapshot_jobs_shutdown();                  /* hmp2 */
}
