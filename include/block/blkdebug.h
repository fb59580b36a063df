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

G_END_DECLS

#endif
