/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * What tests can ask a blkdebug node (block/blkdebug.c, the fault-injection
 * filter): how many requests passed it and whether it failed one.
 */
#ifndef STRATA_BLOCK_BLKDEBUG_H
#define STRATA_BLOCK_BLKDEBUG_H

#include "block/block.h"

G_BEGIN_DECLS

typedef struct BlkdebugCounts {
    uint64_t reads;
    uint64_t writes;      /* writes, zero writes, discards, truncates */
    uint64_t flushes;
    bool injected;        /* an error was returned */
} BlkdebugCounts;

/* false if bs is not a blkdebug node. */
bool blkdebug_get_counts(BlockDriverState *bs, BlkdebugCounts *out);

/*
 * Breakpoints (qemu-io's break, resume, remove_break, wait_break), on the
 * blkdebug node at or under bs: -ENOTSUP without one.  A breakpoint holds
 * the next request that reaches its event (QEMU's event names, -ENOENT
 * for others) until blkdebug_resume names the tag; it is used up then.
 * The request waits in the thread that issued it, so a breakpoint on an
 * event announced under the format's lock also holds the node's other
 * requests.  blkdebug_resume returns once the request has gone on;
 * blkdebug_wait_suspended waits until a request waits under tag.
 */
int blkdebug_break(BlockDriverState *bs, const char *event, const char *tag);
int blkdebug_remove_break(BlockDriverState *bs, const char *tag);
int blkdebug_resume(BlockDriverState *bs, const char *tag);
int blkdebug_wait_suspended(BlockDriverState *bs, const char *tag);
/* Whether a breakpoint is set or a request waits at one. */
bool blkdebug_has_breakpoints(BlockDriverState *bs);

/* Told (from the waiting request's thread) when a request stops at a
 * breakpoint and when it goes on: the tools print QEMU's lines. */
typedef void BlkdebugSuspendNotify(const char *tag, bool suspended);
void blkdebug_set_suspend_notify(BlkdebugSuspendNotify *fn);

G_END_DECLS

#endif
