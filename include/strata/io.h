/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Asynchronous guest I/O: requests are submitted to a queue, run on the
 * queue's worker threads, and their completions are delivered in the
 * thread that reaps them, either
 *   - a GLib main context: strata_queue_attach() (completions run as a
 *     source of that context), or
 *   - the caller's own event loop: poll strata_queue_get_fd() for
 *     readability and call strata_queue_reap() when it is readable.
 * Both may be used on one queue; a completion runs exactly once.
 *
 * Requests on one queue may complete in any order (they run in parallel
 * on the workers, as a guest's queue of a disk does).  Reads and writes
 * without flags on a device whose driver queues requests itself (rbd
 * under raw or alone, with the write cache on and nothing watching its
 * writes) skip the workers: they go to the driver from the submitting
 * thread and its completion goes to the reaper; the contract is the same.
 */
#ifndef STRATA_PUBLIC_IO_H
#define STRATA_PUBLIC_IO_H

#include "strata/device.h"

G_BEGIN_DECLS

typedef struct StrataQueue StrataQueue;

typedef enum {
    STRATA_OP_READ,
    STRATA_OP_WRITE,
    STRATA_OP_WRITE_ZEROES,
    STRATA_OP_DISCARD,
    STRATA_OP_FLUSH,
} StrataOp;

/* One completed request: ret is what the synchronous call would have
 * returned (0 or a negative errno).  Runs in the reaping thread. */
typedef void StrataCompletionFunc(int ret, void *opaque);

/*
 * A queue with `workers` threads (1..64).  NULL with errp set for a bad
 * count or when the notification descriptor cannot be made.  The caller
 * owns it (strata_queue_free()).
 */
StrataQueue *strata_queue_new(unsigned workers, GError **errp);

/*
 * Waits for every submitted request, runs the completions not reaped yet
 * (in the calling thread), detaches the queue from any main context and
 * frees it.  Not from a completion callback.
 */
void strata_queue_free(StrataQueue *q);

/*
 * Submits a request; it runs on a worker (or in the driver, above) as
 * the synchronous call of the same name would (strata/device.h), then
 * cb(ret, opaque) is queued for the reaper.  Never waits for the request
 * nor for a drain of the device.  buf (READ: bytes to fill; WRITE: bytes to write; unused
 * otherwise) and dev must stay valid until the callback ran.  flags as
 * the synchronous calls.  Any thread.  Returns false with errp set only
 * for a bad op (the request was not submitted, cb will not run).
 */
bool strata_queue_submit(StrataQueue *q, StrataDevice *dev, StrataOp op,
                         int64_t offset, size_t bytes, void *buf,
                         unsigned flags, StrataCompletionFunc *cb,
                         void *opaque, GError **errp);

/*
 * A descriptor that is readable while completions wait to be reaped
 * (an eventfd).  Owned by the queue: do not read or close it.  A wake-up
 * can be spurious (a completion that became ready while a reap ran is
 * reaped by it and still marks the fd readable): then the next
 * strata_queue_reap() returns 0.  No completion is ever left unsignalled.
 */
int strata_queue_get_fd(StrataQueue *q);

/*
 * Runs the callbacks of every completion ready now, in the calling
 * thread, and returns their number (0 if none: never blocks).  Callbacks
 * may submit new requests.  One reaping thread at a time per queue.
 */
unsigned strata_queue_reap(StrataQueue *q);

/*
 * Reaps completions from ctx (NULL: the global default context) as soon
 * as they are ready; the callbacks then run in the thread that iterates
 * ctx.  Returns the source's id in ctx.  The source lives until
 * strata_queue_free().
 */
unsigned strata_queue_attach(StrataQueue *q, GMainContext *ctx);

/* Number of requests submitted whose callback has not run yet. */
unsigned strata_queue_pending(StrataQueue *q);

G_END_DECLS

#endif
