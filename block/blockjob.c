/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The block job framework: a registry of jobs by id, one thread per job,
 * progress, speed limit, cancel, READY/complete, and events.  What a job
 * does is its driver's business (block/commit.c, block/stream.c).
 */
#include <errno.h>
#include <string.h>

#include "block/backing.h"
#include "block/blockjob.h"

static GMutex jobs_lock;
static GList *jobs;             /* BlockJob *, under jobs_lock */

#define RATE_SLICE_US 100000    /* speed accounting window: 100 ms */

static const char *status_name(BlockJobStatus s)
{
    switch (s) {
    case BLOCK_JOB_STATUS_CREATED: return "created";
    case BLOCK_JOB_STATUS_RUNNING: return "running";
    case BLOCK_JOB_STATUS_READY: return "ready";
    default: return "concluded";
    }
}

BlockJob *block_job_find(const char *id)
{
    BlockJob *found = NULL;

    g_mutex_lock(&jobs_lock);
    for (GList *l = jobs; l; l = l->next) {
        BlockJob *job = l->data;
        if (!strcmp(job->id, id)) {
            found = job;
            break;
        }
    }
    g_mutex_unlock(&jobs_lock);
    return found;
}

/* Every node of the device's chain refuses snapshots while the job runs
 * (QEMU blocks the nodes a job uses; a superset here). */
static void block_nodes(BlockJob *job)
{
    job->blocker = g_strdup_printf("block device is in use by block job: %s",
                                   job->driver->job_type);
    job->blocked_nodes = g_ptr_array_new();
    for (BlockDriverState *p = blk_bs(job->blk); p; p = bdrv_get_backing(p)) {
        bdrv_ref(p);
        bdrv_op_block(p, job->blocker);
        g_ptr_array_add(job->blocked_nodes, p);
    }
}

static void unblock_nodes(BlockJob *job)
{
    for (guint i = 0; job->blocked_nodes && i < job->blocked_nodes->len;
         i++) {
        BlockDriverState *p = g_ptr_array_index(job->blocked_nodes, i);
        bdrv_op_unblock(p, job->blocker);
        bdrv_unref(p);
    }
    g_clear_pointer(&job->blocked_nodes, g_ptr_array_unref);
    g_clear_pointer(&job->blocker, g_free);
}

void *block_job_create(const char *job_id, const BlockJobDriver *drv,
                       BlockBackend *blk, const BlockJobOptions *opts,
                       GError **errp)
{
    BlockJob *job;
    BlockJob *busy = blk_get_job(blk);
    const char *id = job_id;

    g_assert(drv->instance_size >= sizeof(BlockJob));
    if (busy) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "Node '%s' is busy: block device is in use by block "
                    "job: %s", blk_bs(blk) ? bdrv_get_node_name(blk_bs(blk))
                                           : blk_name(blk),
                    busy->driver->job_type);
        return NULL;
    }
    if (!id) {
        id = *blk_name(blk) ? blk_name(blk) : drv->job_type;
    }
    if (opts && opts->speed < 0) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "Parameter 'speed' expects a non-negative value");
        return NULL;
    }
    g_mutex_lock(&jobs_lock);
    for (GList *l = jobs; l; l = l->next) {
        if (!strcmp(((BlockJob *)l->data)->id, id)) {
            g_mutex_unlock(&jobs_lock);
            g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                        "Job ID '%s' already in use", id);
            return NULL;
        }
    }
    job = g_malloc0(drv->instance_size);
    job->driver = drv;
    job->id = g_strdup(id);
    job->blk = blk;
    blk_ref(blk);
    g_mutex_init(&job->lock);
    g_cond_init(&job->cond);
    job->status = BLOCK_JOB_STATUS_CREATED;
    if (opts) {
        job->speed = opts->speed;
        job->event_cb = opts->event_cb;
        job->opaque = opts->opaque;
    }
    jobs = g_list_prepend(jobs, job);
    g_mutex_unlock(&jobs_lock);
    blk_set_job(blk, job);
    block_nodes(job);
    return job;
}

static void block_job_free(BlockJob *job)
{
    g_mutex_lock(&jobs_lock);
    jobs = g_list_remove(jobs, job);
    g_mutex_unlock(&jobs_lock);
    if (blk_get_job(job->blk) == job) {
        blk_set_job(job->blk, NULL);
    }
    unblock_nodes(job);
    blk_unref(job->blk);
    g_clear_error(&job->error);
    g_mutex_clear(&job->lock);
    g_cond_clear(&job->cond);
    g_free(job->id);
    g_free(job);
}

void block_job_discard(BlockJob *job)
{
    g_assert(job->status == BLOCK_JOB_STATUS_CREATED);
    if (job->driver->clean) {
        job->driver->clean(job);
    }
    block_job_free(job);
}

static void emit(BlockJob *job, BlockJobEvent ev)
{
    if (job->event_cb) {
        job->event_cb(job, ev, job->opaque);
    }
}

static gpointer block_job_thread(gpointer opaque)
{
    BlockJob *job = opaque;
    GError *err = NULL;
    int ret;

    /* A cancel that comes after run() did its final graph change is too
     * late: the job counts as completed. */
    ret = job->driver->run(job, &err);
    if (ret < 0 && ret != -ECANCELED && !err) {
        g_set_error(&err, BDRV_ERROR, BDRV_ERROR_IO, "%s",
                    g_strerror(-ret));
    }
    if (ret < 0 && job->driver->abort) {
        job->driver->abort(job);
    }
    if (job->driver->clean) {
        job->driver->clean(job);
    }
    /* The device is free again before anyone hears the job ended. */
    unblock_nodes(job);
    blk_set_job(job->blk, NULL);
    g_mutex_lock(&job->lock);
    job->ret = ret;
    job->error = err;
    job->status = BLOCK_JOB_STATUS_CONCLUDED;
    g_cond_broadcast(&job->cond);
    g_mutex_unlock(&job->lock);
    emit(job, ret == -ECANCELED ? BLOCK_JOB_EVENT_CANCELLED
                                : BLOCK_JOB_EVENT_COMPLETED);
    return NULL;
}

void block_job_start(BlockJob *job)
{
    g_assert(job->status == BLOCK_JOB_STATUS_CREATED);
    job->status = BLOCK_JOB_STATUS_RUNNING;
    job->rate_slice_start = g_get_monotonic_time();
    job->thread = g_thread_new(job->driver->job_type, block_job_thread, job);
}

const char *block_job_id(BlockJob *job)
{
    return job->id;
}

void block_job_get_info(BlockJob *job, BlockJobInfo *info)
{
    g_mutex_lock(&job->lock);
    info->id = job->id;
    info->type = job->driver->job_type;
    info->device = blk_name(job->blk);
    info->status = job->status;
    info->offset = job->progress_done;
    info->len = MAX(job->progress_total, job->progress_done);
    info->speed = job->speed;
    info->cancelled = job->cancelled;
    info->ready = job->status == BLOCK_JOB_STATUS_READY;
    g_mutex_unlock(&job->lock);
}

void block_job_cancel(BlockJob *job)
{
    g_mutex_lock(&job->lock);
    job->cancelled = true;
    g_cond_broadcast(&job->cond);
    g_mutex_unlock(&job->lock);
}

bool block_job_complete(BlockJob *job, GError **errp)
{
    bool ok;

    g_mutex_lock(&job->lock);
    ok = job->status == BLOCK_JOB_STATUS_READY && !job->cancelled;
    if (ok) {
        job->complete_requested = true;
        g_cond_broadcast(&job->cond);
    }
    g_mutex_unlock(&job->lock);
    if (!ok) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "Job '%s' in state '%s' cannot accept command verb "
                    "'complete'", job->id, status_name(job->status));
    }
    return ok;
}

bool block_job_set_speed(BlockJob *job, int64_t speed, GError **errp)
{
    if (speed < 0) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "Parameter 'speed' expects a non-negative value");
        return false;
    }
    g_mutex_lock(&job->lock);
    job->speed = speed;
    g_cond_broadcast(&job->cond);
    g_mutex_unlock(&job->lock);
    return true;
}

bool block_job_wait_concluded(BlockJob *job, int64_t timeout_us)
{
    int64_t end = g_get_monotonic_time() + timeout_us;
    bool done;

    g_mutex_lock(&job->lock);
    while (job->status != BLOCK_JOB_STATUS_CONCLUDED &&
           g_cond_wait_until(&job->cond, &job->lock, end)) {
    }
    done = job->status == BLOCK_JOB_STATUS_CONCLUDED;
    g_mutex_unlock(&job->lock);
    return done;
}

int block_job_wait(BlockJob *job, GError **errp)
{
    int ret;

    if (job->thread) {
        g_thread_join(job->thread);
        job->thread = NULL;
    }
    ret = job->ret;
    if (job->error) {
        g_propagate_error(errp, g_steal_pointer(&job->error));
    }
    block_job_free(job);
    return ret;
}

bool block_job_is_cancelled(BlockJob *job)
{
    bool c;

    g_mutex_lock(&job->lock);
    c = job->cancelled;
    g_mutex_unlock(&job->lock);
    return c;
}

bool block_job_complete_requested(BlockJob *job)
{
    bool c;

    g_mutex_lock(&job->lock);
    c = job->complete_requested;
    g_mutex_unlock(&job->lock);
    return c;
}

void block_job_progress_set_total(BlockJob *job, int64_t total)
{
    g_mutex_lock(&job->lock);
    job->progress_total = total;
    g_mutex_unlock(&job->lock);
}

void block_job_progress_add(BlockJob *job, int64_t done)
{
    g_mutex_lock(&job->lock);
    job->progress_done += done;
    g_mutex_unlock(&job->lock);
}

void block_job_progress_add_total(BlockJob *job, int64_t more)
{
    g_mutex_lock(&job->lock);
    job->progress_total += more;
    g_mutex_unlock(&job->lock);
}

void block_job_rate_limit(BlockJob *job, int64_t bytes)
{
    g_mutex_lock(&job->lock);
    job->rate_slice_bytes += bytes;
    while (job->speed > 0 && !job->cancelled) {
        int64_t now = g_get_monotonic_time();
        int64_t allowed = job->speed * (now - job->rate_slice_start) /
                          G_USEC_PER_SEC;
        int64_t wait_us;

        if (job->rate_slice_bytes <= allowed) {
            break;
        }
        wait_us = (job->rate_slice_bytes - allowed) * G_USEC_PER_SEC /
                  job->speed;
        g_cond_wait_until(&job->cond, &job->lock,
                          now + MIN(MAX(wait_us, 1), RATE_SLICE_US));
    }
    /* Start a new window now and then so a pause is not paid back. */
    if (g_get_monotonic_time() - job->rate_slice_start > 10 * RATE_SLICE_US) {
        job->rate_slice_start = g_get_monotonic_time();
        job->rate_slice_bytes = 0;
    }
    g_mutex_unlock(&job->lock);
}

void block_job_set_ready(BlockJob *job)
{
    bool changed;

    g_mutex_lock(&job->lock);
    changed = job->status == BLOCK_JOB_STATUS_RUNNING;
    if (changed) {
        job->status = BLOCK_JOB_STATUS_READY;
    }
    g_mutex_unlock(&job->lock);
    if (changed) {
        emit(job, BLOCK_JOB_EVENT_READY);
    }
}

void block_job_wait_event(BlockJob *job, int64_t timeout_us)
{
    int64_t end = g_get_monotonic_time() + timeout_us;

    g_mutex_lock(&job->lock);
    if (!job->cancelled && !job->complete_requested) {
        g_cond_wait_until(&job->cond, &job->lock, end);
    }
    g_mutex_unlock(&job->lock);
}

void block_job_kick(BlockJob *job)
{
    g_mutex_lock(&job->lock);
    g_cond_broadcast(&job->cond);
    g_mutex_unlock(&job->lock);
}

BlockDriverState *block_job_resolve_top(BlockBackend *blk,
                                        BlockDriverState *top, GError **errp)
{
    BlockDriverState *root = blk_bs(blk);

    if (!root) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "Device '%s' has no medium", blk_name(blk));
        return NULL;
    }
    if (!top) {
        return root;
    }
    if (!bdrv_chain_contains(root, top)) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "'%s' is not in this backing file chain",
                    bdrv_get_node_name(top));
        return NULL;
    }
    return top;
}
