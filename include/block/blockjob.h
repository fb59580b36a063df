/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Block jobs: long-running operations on a device's chain (commit,
 * stream) that run in their own thread while the device stays usable.
 * A job reports progress, can be cancelled, and emits events (what QMP
 * will turn into BLOCK_JOB_READY / _COMPLETED / _CANCELLED).
 *
 * Life cycle: *_start() validates and creates the job (errors are
 * reported there, before anything changes), starts its thread and marks
 * the device busy; the owner may cancel it, pause and resume it, complete
 * it once READY (jobs that need a pivot, i.e. active commit), finalize it
 * when it asked for manual finalization, and must finally call
 * block_job_wait(), which joins the thread, returns the outcome and frees
 * the job (QMP's "dismiss").
 *
 * The states are QEMU's as a management tool sees them:
 *   created -> running <-> paused, running -> ready <-> standby,
 *   running/ready -> waiting -> pending -> concluded (success: the driver's
 *   prepare() makes the result visible between pending and concluded),
 *   any -> aborting -> concluded (error or cancel).
 * "null" is what QMP reports once the owner has freed the job.
 */
#ifndef STRATA_BLOCKJOB_H
#define STRATA_BLOCKJOB_H

#include "block/block.h"
#include "block/block-backend.h"

G_BEGIN_DECLS

typedef enum {
    BLOCK_JOB_STATUS_CREATED,
    BLOCK_JOB_STATUS_RUNNING,
    BLOCK_JOB_STATUS_PAUSED,
    BLOCK_JOB_STATUS_READY,      /* may be completed (pivot) */
    BLOCK_JOB_STATUS_STANDBY,    /* paused while ready */
    BLOCK_JOB_STATUS_WAITING,    /* work done, before pending */
    BLOCK_JOB_STATUS_PENDING,    /* waits for finalize (manual_finalize) */
    BLOCK_JOB_STATUS_ABORTING,
    BLOCK_JOB_STATUS_CONCLUDED,
    BLOCK_JOB_STATUS_NULL,       /* only for the owner's reports */
} BlockJobStatus;

/* QEMU's name of a status ("running", "concluded", ...). */
const char *block_job_status_name(BlockJobStatus status);

typedef enum {
    BLOCK_JOB_EVENT_READY,
    BLOCK_JOB_EVENT_COMPLETED,   /* success or failure: see info.error */
    BLOCK_JOB_EVENT_CANCELLED,
} BlockJobEvent;

/* A snapshot of a job's state (QMP query-block-jobs). */
typedef struct BlockJobState {
    const char *id;
    const char *type;            /* "commit", "stream" */
    const char *device;
    BlockJobStatus status;
    int64_t offset;              /* progress: bytes done ... */
    int64_t len;                 /* ... of this many (may grow) */
    int64_t speed;               /* bytes/s, 0: unlimited */
    bool cancelled;
    bool ready;
    bool paused;                 /* paused, or asked to pause */
    bool busy;                   /* not sleeping (QEMU's "busy") */
    bool manual_finalize;
    bool manual_dismiss;
    const char *error;           /* after an error or cancel, else NULL */
    int ret;                     /* 0, or the -errno it ended with */
} BlockJobState;

/* Called in the job's thread; must not wait for the job. */
typedef void BlockJobEventFunc(BlockJob *job, BlockJobEvent event,
                               void *opaque);

/* Called in whichever thread changes the status, with the job's lock
 * held: must not call block_job_* functions; copy what it needs. */
typedef void BlockJobStatusFunc(BlockJob *job, BlockJobStatus status,
                                void *opaque);

/* Common options of every job. */
typedef struct BlockJobOptions {
    int64_t speed;               /* bytes/s, 0: unlimited */
    BlockJobEventFunc *event_cb;
    BlockJobStatusFunc *status_cb;   /* every status change (optional) */
    void *opaque;                /* for both callbacks */
    /* Stop in PENDING until block_job_finalize() (QMP auto-finalize
     * false): the result is made visible only then. */
    bool manual_finalize;
    /* Recorded for the owner's reports (QMP auto-dismiss false); the
     * library never frees a job by itself either way. */
    bool manual_dismiss;
} BlockJobOptions;

const char *block_job_id(BlockJob *job);
void block_job_get_info(BlockJob *job, BlockJobState *info);
/* The job with this id, or NULL. */
BlockJob *block_job_find(const char *id);

/* Asks the job to stop; it undoes nothing that is visible (a cancelled
 * commit or stream leaves a chain that reads the same). */
void block_job_cancel(BlockJob *job);
/*
 * QEMU's block-job-cancel: without force, a READY job that would pivot
 * (active commit) completes without the pivot instead (the device stays
 * on top, which reads the same); everything else is block_job_cancel().
 * Refused on a concluded job, with QEMU's text.
 */
bool block_job_user_cancel(BlockJob *job, bool force, GError **errp);
/* Pause at the job's next pause point / resume (QEMU's texts when the job
 * is already paused, not paused, or past the point where it can). */
bool block_job_pause(BlockJob *job, GError **errp);
bool block_job_resume(BlockJob *job, GError **errp);
/* Lets a PENDING job of manual_finalize make its result visible. */
bool block_job_finalize(BlockJob *job, GError **errp);
/* block_job_wait() for a CONCLUDED job (QEMU's text otherwise): frees it. */
bool block_job_dismiss(BlockJob *job, GError **errp);
/* Every job, oldest first (no references: a job lives until its owner
 * calls block_job_wait(), so only the owner's thread may use the list). */
GPtrArray *block_job_list(void);
BlockJobStatus block_job_get_status(BlockJob *job);
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
    /* Optional, after run() succeeded and once the job may finalize:
     * makes the result visible (the graph change); 0 or -errno + errp. */
    int (*prepare)(BlockJob *job, GError **errp);
    /* After run or prepare failed or was cancelled: undo what is not
     * visible. */
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
    bool skip_pivot;             /* cancel of a READY job without force */
    int pause_count;
    bool finalize_requested;
    bool manual_finalize;
    bool manual_dismiss;
    bool sleeping;
    int64_t progress_done;
    int64_t progress_total;
    int64_t speed;
    int64_t rate_slice_start;    /* monotonic us */
    int64_t rate_slice_bytes;

    BlockJobEventFunc *event_cb;
    BlockJobStatusFunc *status_cb;
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
/* Where the job may pause: waits while a pause is requested (unless
 * cancelled), reporting paused/standby and back. */
void block_job_pause_point(BlockJob *job);
/* For a driver's prepare(): false when a cancel of a READY job without
 * force asked to finish without the pivot. */
bool block_job_should_pivot(BlockJob *job);

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

/* The size of the node a commit/stream job copies; < 0 with errp set. */
int64_t block_job_node_length(BlockDriverState *bs, GError **errp);

/* Reopens a read-only node read-write for the job that writes into it;
 * *made_rw tells the job's clean to give the node back read-only. */
bool block_job_make_writable(BlockDriverState *bs, bool *made_rw,
                             GError **errp);

/* The undo of block_job_make_writable() at the job's clean; a failure
 * is only a warning, as the job's work is already done or dropped. */
void block_job_restore_read_only(BlockJob *job, BlockDriverState *bs);

#endif
