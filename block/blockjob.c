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
#include "block/log.h"

static GMutex jobs_lock;
static GList *jobs;             /* BlockJob *, under jobs_lock */

#define RATE_SLICE_US 100000    /* speed accounting window: 100 ms */

static const char *const status_names[] = {
    [BLOCK_JOB_STATUS_CREATED] = "created",
    [BLOCK_JOB_STATUS_RUNNING] = "running",
    [BLOCK_JOB_STATUS_PAUSED] = "paused",
    [BLOCK_JOB_STATUS_READY] = "ready",
    [BLOCK_JOB_STATUS_STANDBY] = "standby",
    [BLOCK_JOB_STATUS_WAITING] = "waiting",
    [BLOCK_JOB_STATUS_PENDING] = "pending",
    [BLOCK_JOB_STATUS_ABORTING] = "aborting",
    [BLOCK_JOB_STATUS_CONCLUDED] = "concluded",
    [BLOCK_JOB_STATUS_NULL] = "null",
};

const char *block_job_status_name(BlockJobStatus status)
{
    return status < G_N_ELEMENTS(status_names) ? status_names[status]
                                               : "undefined";
}

typedef enum {
    VERB_CANCEL, VERB_PAUSE, VERB_RESUME, VERB_SET_SPEED, VERB_COMPLETE,
    VERB_FINALIZE, VERB_DISMISS,
} JobVerb;

static const char *const verb_names[] = {
    "cancel", "pause", "resume", "set-speed", "complete", "finalize",
    "dismiss",
};

/* Which verb each state accepts: QEMU's table (job.c), which management
 * tools rely on, in our enum's order. */
static const bool verb_allowed[][BLOCK_JOB_STATUS_NULL + 1] = {
    /*                C  R  P  Y  S  W  D  X  E  N */
    [VERB_CANCEL]  = {1, 1, 1, 1, 1, 1, 1, 1, 0, 0},
    [VERB_PAUSE]   = {1, 1, 1, 1, 1, 0, 0, 0, 0, 0},
    [VERB_RESUME]  = {1, 1, 1, 1, 1, 0, 0, 0, 0, 0},
    [VERB_SET_SPEED] = {1, 1, 1, 1, 1, 0, 0, 0, 0, 0},
    [VERB_COMPLETE] = {0, 0, 0, 1, 1, 0, 0, 0, 0, 0},
    [VERB_FINALIZE] = {0, 0, 0, 0, 0, 0, 1, 0, 0, 0},
    [VERB_DISMISS] = {0, 0, 0, 0, 0, 0, 0, 0, 1, 0},
};

/* Under job->lock. */
static bool verb_check_locked(BlockJob *job, JobVerb verb, GError **errp)
{
    if (verb_allowed[verb][job->status]) {
        return true;
    }
    g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                "Job '%s' in state '%s' cannot accept command verb '%s'",
                job->id, block_job_status_name(job->status),
                verb_names[verb]);
    return false;
}

/* Under job->lock: the status changes and the owner hears of it. */
static void set_status_locked(BlockJob *job, BlockJobStatus status)
{
    if (job->status == status) {
        return;
    }
    job->status = status;
    if (job->status_cb) {
        job->status_cb(job, status, job->opaque);
    }
    g_cond_broadcast(&job->cond);
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

/* QEMU's rule for ids a user gives: a letter, then letters, digits,
 * '-', '.' and '_'. */
static bool job_id_wellformed(const char *id)
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
    } else if (!job_id_wellformed(id)) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "Invalid job ID '%s'", id);
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
    if (opts && opts->speed < 0) {
        g_mutex_unlock(&jobs_lock);
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "Parameter 'speed' expects a non-negative value");
        return NULL;
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
        job->status_cb = opts->status_cb;
        job->opaque = opts->opaque;
        job->manual_finalize = opts->manual_finalize;
        job->manual_dismiss = opts->manual_dismiss;
    }
    jobs = g_list_append(jobs, job);
    g_mutex_unlock(&jobs_lock);
    if (job->status_cb) {
        g_mutex_lock(&job->lock);
        job->status_cb(job, BLOCK_JOB_STATUS_CREATED, job->opaque);
        g_mutex_unlock(&job->lock);
    }
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

/*
 * After run() succeeded: waiting, pending, and (manual_finalize) the wait
 * for block_job_finalize(); then the driver's prepare() makes the result
 * visible.  A cancel before that point still cancels.
 */
static int block_job_finish(BlockJob *job, GError **errp)
{
    bool cancelled;

    g_mutex_lock(&job->lock);
    set_status_locked(job, BLOCK_JOB_STATUS_WAITING);
    set_status_locked(job, BLOCK_JOB_STATUS_PENDING);
    job->sleeping = true;
    while (job->manual_finalize && !job->finalize_requested &&
           !job->cancelled) {
        g_cond_wait(&job->cond, &job->lock);
    }
    job->sleeping = false;
    cancelled = job->cancelled;
    g_mutex_unlock(&job->lock);
    if (cancelled) {
        return -ECANCELED;
    }
    return job->driver->prepare ? job->driver->prepare(job, errp) : 0;
}

static gpointer block_job_thread(gpointer opaque)
{
    BlockJob *job = opaque;
    GError *err = NULL;
    int ret;

    ret = job->driver->run(job, &err);
    if (ret == 0) {
        ret = block_job_finish(job, &err);
    }
    if (ret < 0 && ret != -ECANCELED && !err) {
        g_set_error(&err, BDRV_ERROR, BDRV_ERROR_IO, "%s",
                    g_strerror(-ret));
    }
    if (ret < 0) {
        /* The outcome is known before "aborting" is reported, so that
         * the owner can tell an error from a cancel there. */
        g_mutex_lock(&job->lock);
        job->ret = ret;
        job->error = g_steal_pointer(&err);
        set_status_locked(job, BLOCK_JOB_STATUS_ABORTING);
        g_mutex_unlock(&job->lock);
        if (job->driver->abort) {
            job->driver->abort(job);
        }
    }
    if (job->driver->clean) {
        job->driver->clean(job);
    }
    /* The device is free again before anyone hears the job ended. */
    unblock_nodes(job);
    blk_set_job(job->blk, NULL);
    g_mutex_lock(&job->lock);
    job->ret = ret;
    if (err) {
        job->error = err;
    }
    g_mutex_unlock(&job->lock);
    /* QEMU's order: the event, then the status. */
    emit(job, ret == -ECANCELED ? BLOCK_JOB_EVENT_CANCELLED
                                : BLOCK_JOB_EVENT_COMPLETED);
    g_mutex_lock(&job->lock);
    set_status_locked(job, BLOCK_JOB_STATUS_CONCLUDED);
    g_mutex_unlock(&job->lock);
    return NULL;
}

void block_job_start(BlockJob *job)
{
    g_assert(job->status == BLOCK_JOB_STATUS_CREATED);
    g_mutex_lock(&job->lock);
    set_status_locked(job, BLOCK_JOB_STATUS_RUNNING);
    g_mutex_unlock(&job->lock);
    job->rate_slice_start = g_get_monotonic_time();
    job->thread = g_thread_new(job->driver->job_type, block_job_thread, job);
}

const char *block_job_id(BlockJob *job)
{
    return job->id;
}

void block_job_get_info(BlockJob *job, BlockJobState *info)
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
    info->ready = job->status == BLOCK_JOB_STATUS_READY ||
                  job->status == BLOCK_JOB_STATUS_STANDBY;
    info->paused = job->pause_count > 0;
    /* A ready job only follows the device's writes: idle, as QEMU's. */
    info->busy = !job->sleeping &&
                 job->status != BLOCK_JOB_STATUS_READY &&
                 job->status != BLOCK_JOB_STATUS_CONCLUDED &&
                 job->status != BLOCK_JOB_STATUS_PAUSED &&
                 job->status != BLOCK_JOB_STATUS_STANDBY;
    info->manual_finalize = job->manual_finalize;
    info->manual_dismiss = job->manual_dismiss;
    info->ret = job->ret;
    info->error = NULL;
    if (job->ret < 0) {
        info->error = job->error ? job->error->message
                                 : g_strerror(-job->ret);
    }
    g_mutex_unlock(&job->lock);
}

BlockJobStatus block_job_get_status(BlockJob *job)
{
    BlockJobStatus s;

    g_mutex_lock(&job->lock);
    s = job->status;
    g_mutex_unlock(&job->lock);
    return s;
}

GPtrArray *block_job_list(void)
{
    GPtrArray *list = g_ptr_array_new();

    g_mutex_lock(&jobs_lock);
    for (GList *l = jobs; l; l = l->next) {
        g_ptr_array_add(list, l->data);
    }
    g_mutex_unlock(&jobs_lock);
    return list;
}

void block_job_cancel(BlockJob *job)
{
    g_mutex_lock(&job->lock);
    job->cancelled = true;
    g_cond_broadcast(&job->cond);
    g_mutex_unlock(&job->lock);
}

bool block_job_user_cancel(BlockJob *job, bool force, GError **errp)
{
    bool ok;

    g_mutex_lock(&job->lock);
    ok = verb_check_locked(job, VERB_CANCEL, errp);
    if (ok && !force && (job->status == BLOCK_JOB_STATUS_READY ||
                         job->status == BLOCK_JOB_STATUS_STANDBY)) {
        /* QEMU: a synced mirror (active commit) "cancelled" without force
         * completes and leaves the device where it is. */
        job->skip_pivot = true;
        job->complete_requested = true;
        job->pause_count = 0;
    } else if (ok) {
        job->cancelled = true;
    }
    g_cond_broadcast(&job->cond);
    g_mutex_unlock(&job->lock);
    return ok;
}

bool block_job_pause(BlockJob *job, GError **errp)
{
    bool ok;

    g_mutex_lock(&job->lock);
    ok = verb_check_locked(job, VERB_PAUSE, errp);
    if (ok && job->pause_count > 0) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "Job is already paused");
        ok = false;
    }
    if (ok) {
        job->pause_count++;
        g_cond_broadcast(&job->cond);
    }
    g_mutex_unlock(&job->lock);
    return ok;
}

bool block_job_resume(BlockJob *job, GError **errp)
{
    bool ok;

    g_mutex_lock(&job->lock);
    ok = verb_check_locked(job, VERB_RESUME, errp);
    if (ok && job->pause_count == 0) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "Can't resume a job that was not paused");
        ok = false;
    }
    if (ok) {
        job->pause_count--;
        /* A resume starts a new speed window: the pause is not paid
         * back by a burst. */
        job->rate_slice_start = g_get_monotonic_time();
        job->rate_slice_bytes = 0;
        g_cond_broadcast(&job->cond);
    }
    g_mutex_unlock(&job->lock);
    return ok;
}

bool block_job_finalize(BlockJob *job, GError **errp)
{
    bool ok;

    g_mutex_lock(&job->lock);
    ok = verb_check_locked(job, VERB_FINALIZE, errp);
    if (ok) {
        job->finalize_requested = true;
        g_cond_broadcast(&job->cond);
    }
    g_mutex_unlock(&job->lock);
    return ok;
}

bool block_job_dismiss(BlockJob *job, GError **errp)
{
    bool ok;

    g_mutex_lock(&job->lock);
    ok = verb_check_locked(job, VERB_DISMISS, errp);
    g_mutex_unlock(&job->lock);
    if (ok) {
        block_job_wait(job, NULL);
    }
    return ok;
}

bool block_job_complete(BlockJob *job, GError **errp)
{
    bool ok;

    g_mutex_lock(&job->lock);
    ok = verb_check_locked(job, VERB_COMPLETE, errp);
    if (ok && job->cancelled) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "Job '%s' has been cancelled", job->id);
        ok = false;
    }
    if (ok) {
        job->complete_requested = true;
        g_cond_broadcast(&job->cond);
    }
    g_mutex_unlock(&job->lock);
    return ok;
}

bool block_job_set_speed(BlockJob *job, int64_t speed, GError **errp)
{
    g_mutex_lock(&job->lock);
    if (!verb_check_locked(job, VERB_SET_SPEED, errp)) {
        g_mutex_unlock(&job->lock);
        return false;
    }
    if (speed < 0) {
        g_mutex_unlock(&job->lock);
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "Parameter 'speed' expects a non-negative value");
        return false;
    }
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

/* Under job->lock: waits while a pause is asked for (and the job is not
 * cancelled), as paused (or standby when ready), then back. */
static void pause_point_locked(BlockJob *job)
{
    while (job->pause_count > 0 && !job->cancelled) {
        BlockJobStatus was = job->status;

        set_status_locked(job, was == BLOCK_JOB_STATUS_READY
                               ? BLOCK_JOB_STATUS_STANDBY
                               : BLOCK_JOB_STATUS_PAUSED);
        job->sleeping = true;
        while (job->pause_count > 0 && !job->cancelled) {
            g_cond_wait(&job->cond, &job->lock);
        }
        job->sleeping = false;
        set_status_locked(job, was);
    }
}

void block_job_pause_point(BlockJob *job)
{
    g_mutex_lock(&job->lock);
    pause_point_locked(job);
    g_mutex_unlock(&job->lock);
}

bool block_job_should_pivot(BlockJob *job)
{
    bool pivot;

    g_mutex_lock(&job->lock);
    pivot = !job->skip_pivot;
    g_mutex_unlock(&job->lock);
    return pivot;
}

void block_job_rate_limit(BlockJob *job, int64_t bytes)
{
    g_mutex_lock(&job->lock);
    job->rate_slice_bytes += bytes;
    for (;;) {
        int64_t now, allowed, wait_us;

        pause_point_locked(job);
        if (job->speed <= 0 || job->cancelled) {
            break;
        }
        now = g_get_monotonic_time();
        allowed = job->speed * (now - job->rate_slice_start) /
                  G_USEC_PER_SEC;
        if (job->rate_slice_bytes <= allowed) {
            break;
        }
        wait_us = (job->rate_slice_bytes - allowed) * G_USEC_PER_SEC /
                  job->speed;
        job->sleeping = true;
        g_cond_wait_until(&job->cond, &job->lock,
                          now + MIN(MAX(wait_us, 1), RATE_SLICE_US));
        job->sleeping = false;
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
        set_status_locked(job, BLOCK_JOB_STATUS_READY);
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
    pause_point_locked(job);
    if (!job->cancelled && !job->complete_requested) {
        job->sleeping = true;
        g_cond_wait_until(&job->cond, &job->lock, end);
        job->sleeping = false;
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

int64_t block_job_node_length(BlockDriverState *bs, GError **errp)
{
    int64_t len = bdrv_getlength(bs);

    if (len < 0) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_IO,
                    "Could not get the size of '%s': %s",
                    bdrv_get_filename(bs), g_strerror((int)-len));
    }
    return len;
}

bool block_job_make_writable(BlockDriverState *bs, bool *made_rw,
                             GError **errp)
{
    if (!bdrv_is_read_only(bs)) {
        return true;
    }
    if (!bdrv_reopen_set_read_only(bs, false, errp)) {
        return false;
    }
    *made_rw = true;
    return true;
}

void block_job_restore_read_only(BlockJob *job, BlockDriverState *bs)
{
    g_autoptr(GError) err = NULL;

    if (!bdrv_reopen_set_read_only(bs, true, &err)) {
        strata_warning("%s: could not reopen '%s' read-only: %s",
                       job->driver->job_type, bdrv_get_filename(bs),
                       err->message);
    }
}
