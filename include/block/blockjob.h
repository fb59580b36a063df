/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Block jobs: long-running operations on a device's chain (commit,
 * stream) that run in their own thread while the device stays usable.
 * A job reports progress, can be cancelled, and emits events (what QMP
 * will turn into BLOCK_JOB_READY / _COMPLETED / _CANCELLED).
 *
 * Life cycle: *_start() validates and creates the job (errors are
 * reported there, before anything changes), starts its thread and marks
 * the device busy; the owner may cancel it, complete it once READY (jobs
 * that need a pivot, i.e. active commit), and must finally call
 * block_job_wait(), which joins the thread, returns the outcome and frees
 * the job.
 */
#ifndef STRATA_BLOCKJOB_H
#define STRATA_BLOCKJOB_H

#include "block/block.h"
#include "block/block-backend.h"

G_BEGIN_DECLS

typedef enum {
    BLOCK_JOB_STATUS_CREATED,
    BLOCK_JOB_STATUS_RUNNING,
    BLOCK_JOB_STATUS_READY,      /* may be completed (pivot) */
    BLOCK_JOB_STATUS_CONCLUDED,
} BlockJobStatus;

typedef enum {
    BLOCK_JOB_EVENT_READY,
    BLOCK_JOB_EVENT_COMPLETED,   /* success or failure: see info.error */
    BLOCK_JOB_EVENT_CANCELLED,
} BlockJobEvent;

/* A snapshot of a job's state (QMP query-block-jobs). */
typedef struct BlockJobInfo {
    const char *id;
    const char *type;            /* "commit", "stream" */
    const char *device;
    BlockJobStatus status;
    int64_t offset;              /* progress: bytes done ... */
    int64_t len;                 /* ... of this many (may grow) */
    int64_t speed;               /* bytes/s, 0: unlimited */
    bool cancelled;
    bool ready;
} BlockJobInfo;

/* Called in the job's thread; must not wait for the job. */
typedef void BlockJobEventFunc(BlockJob *job, BlockJobEvent event,
                               void *opaque);

/* Common options of every job. */
typedef struct BlockJobOptions {
    int64_t speed;               /* bytes/s, 0: unlimited */
    BlockJobEventFunc *event_cb;
    void *opaque;
} BlockJobOptions;

const char *block_job_id(BlockJob *job);
void block_job_get_info(BlockJob *job, BlockJobInfo *info);
/* The job with this id, or NULL. */
BlockJob *block_job_find(const char *id);

/* Asks the job to stop; it undoes nothing that is visible (a cancelled
 * commit or stream leaves a chain that reads the same). */
void block_job_cancel(BlockJob *job);
/* Asks a READY job to finish (pivot). */
bool block_job_complete(BlockJob *job, GError **errp);
bool block_job_set_speed(BlockJob *job, int64_t speed, GError **errp);
/* Waits up to timeout_us for the job to conclude; true if it has. */
bool block_job_wait_concluded(BlockJob *job, int64_t timeout_us);
/*
 * Waits for the job to end, frees it and returns 0 on success,
 * -ECANCELED if it was cancelled, or -errno with *errp set.
 */
int block_job_wait(BlockJob *job, GError **errp);

/* ------------------------------------------------------------------ */
/* For job drivers (block/commit.c, block/stream.c). */

typedef struct BlockJobDriver {
    const char *job_type;
    size_t instance_size;        /* bytes of the driver's struct, which
                                  * starts with a BlockJob */
    /* The work, in the job's thread: 0, -ECANCELED, or -errno + errp.
     * Includes the final graph change on success. */
    int (*run)(BlockJob *job, GError **errp);
    /* After run failed or was cancelled: undo what is not visible. */
    void (*abort)(BlockJob *job);
    /* Always, last: release what the job holds. */
    void (*clean)(BlockJob *job);
} BlockJobDriver;

struct BlockJob {
    const BlockJobDriver *driver;
    char *id;
    BlockBackend *blk;
    GThread *thread;

    GMutex lock;                 /* the fields below */
    GCond cond;
    BlockJobStatus status;
    bool cancelled;
    bool complete_requested;
    int64_t progress_done;
    int64_t progress_total;
    int64_t speed;
    int64_t rate_slice_start;    /* monotonic us */
    int64_t rate_slice_bytes;

    BlockJobEventFunc *event_cb;
    void *opaque;
    int ret;
    GError *error;

    /* The nodes of the device's chain, busy while the job lives (QEMU's
     * op blocker text; references held), and why. */
    char *blocker;
    GPtrArray *blocked_nodes;
};

/*
 * Creates a job of drv on blk (fails if the device is busy or the id is
 * taken; a NULL id uses the device name, or the job type).  The driver
 * fills its part, then calls block_job_start().
 */
void *block_job_create(const char *job_id, const BlockJobDriver *drv,
                       BlockBackend *blk, const BlockJobOptions *opts,
                       GError **errp);
void block_job_start(BlockJob *job);
/* Frees a job that was created but not started. */
void block_job_discard(BlockJob *job);

bool block_job_is_cancelled(BlockJob *job);
bool block_job_complete_requested(BlockJob *job);
void block_job_progress_set_total(BlockJob *job, int64_t total);
void block_job_progress_add(BlockJob *job, int64_t done);
void block_job_progress_add_total(BlockJob *job, int64_t more);
/* Sleeps as long as the speed limit needs after `bytes` more were
 * processed; returns early when the job is cancelled. */
void block_job_rate_limit(BlockJob *job, int64_t bytes);
/* Enters READY (once) and emits the event. */
void block_job_set_ready(BlockJob *job);
/* Waits up to timeout_us or until cancelled / completion requested /
 * block_job_kick(). */
void block_job_wait_event(BlockJob *job, int64_t timeout_us);
void block_job_kick(BlockJob *job);

/* ------------------------------------------------------------------ */
/* The jobs. */

/*
 * Commit (block/commit.c): merges the images from top down to just above
 * base into base.  top may be the device's active image (active commit:
 * the device keeps writing to top meanwhile, and those writes follow; once
 * READY, block_job_complete() -- or auto_complete -- drains the device,
 * copies what is left and switches the device to base), or an image below
 * it (the image above top is then rewritten to name base as its backing
 * file, and the merged images leave the chain).  base is grown if top is
 * larger.  Cancel at any point leaves a chain that reads the same.
 */
typedef struct CommitOptions {
    BlockJobOptions job;
    /* Name to record in the image above top; NULL: base's path, relative
     * if that image's current backing name is relative. */
    const char *backing_file;
    bool auto_complete;
} CommitOptions;
BlockJob *commit_start(const char *job_id, BlockBackend *blk,
                       BlockDriverState *top, BlockDriverState *base,
                       const CommitOptions *opts, GError **errp);

/*
 * Stream (block/stream.c): copies into top (NULL: the device's active
 * image) what the images between top and base (NULL: the whole chain)
 * hold, then makes base top's backing file (none if NULL).  The device
 * stays usable; cancel leaves a chain that reads the same.
 */
typedef struct StreamOptions {
    BlockJobOptions job;
    const char *backing_file;    /* as for commit */
} StreamOptions;
BlockJob *stream_start(const char *job_id, BlockBackend *blk,
                       BlockDriverState *top, BlockDriverState *base,
                       const StreamOptions *opts, GError **errp);

G_END_DECLS

/* The top node a commit/stream job starts from: `top`, or the device's
 * root when NULL; fails if the device is empty or top is not in its chain. */
BlockDriverState *block_job_resolve_top(BlockBackend *blk,
                                        BlockDriverState *top, GError **errp);

#endif
