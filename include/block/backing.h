/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Backing chains: walking a chain, asking which layer decides the content
 * of a range, changing the backing link in memory and on disk, and the
 * names written into headers.  Opening a chain from the images' headers
 * is bdrv_open()'s job (block/block.c); external snapshots, commit and
 * stream build on what is here.
 */
#ifndef STRATA_BLOCK_BACKING_H
#define STRATA_BLOCK_BACKING_H

#include "block/block.h"

G_BEGIN_DECLS

/* True if bs is top or one of the images below it. */
bool bdrv_chain_contains(BlockDriverState *top, BlockDriverState *bs);
/* The image directly above bs in the chain of active, or NULL (also
 * when bs == active or bs is not in the chain). */
BlockDriverState *bdrv_find_overlay(BlockDriverState *active,
                                    BlockDriverState *bs);
/* The bottom image of the chain. */
BlockDriverState *bdrv_find_base(BlockDriverState *bs);
/* Number of images below bs (0: no backing file). */
int bdrv_chain_length(BlockDriverState *bs);
/*
 * The image below bs whose file is `name`: compared as given, then as
 * resolved against bs's directory (like a backing name), then by file
 * identity.  NULL if none is.
 */
BlockDriverState *bdrv_find_backing_image(BlockDriverState *bs,
                                          const char *name);
/* True if the two nodes' files are the same host file. */
bool bdrv_same_file(BlockDriverState *a, BlockDriverState *b);
/* True if `path` names the host file of bs. */
bool bdrv_is_file(BlockDriverState *bs, const char *path);

/*
 * Which layer of [top, base) decides the content of [offset,
 * offset+bytes): returns BDRV_BLOCK_* flags valid for *pnum bytes and sets
 * *decider to that layer, or to NULL when no layer above base does (the
 * content comes from base and below; with base == NULL, the range is
 * unallocated everywhere and reads as zeroes, flagged BDRV_BLOCK_ZERO).
 * A range past the end of a shorter layer is decided by that layer and
 * reads as zeroes.  Returns -errno on failure.
 */
int bdrv_block_status_between(BlockDriverState *top, BlockDriverState *base,
                              int64_t offset, int64_t bytes, int64_t *pnum,
                              BlockDriverState **decider);

/*
 * Graph change: makes `backing` (may be NULL) the backing node of bs,
 * taking a reference to it and dropping the one to the previous backing
 * node.  bs is drained around the switch, so no request of bs sees half
 * of it.  Nothing is written to the image: see bdrv_change_backing_file.
 */
void bdrv_set_backing(BlockDriverState *bs, BlockDriverState *backing);

/*
 * Records a new backing file name and format in bs's header (NULL or ""
 * name: none), with one header write.  A read-only node is reopened
 * read-write for the write and read-only again afterwards.
 */
bool bdrv_change_backing_file(BlockDriverState *bs, const char *name,
                              const char *fmt, GError **errp);

/* Drops all data of bs's active layer (reads then go to its backing). */
bool bdrv_make_empty(BlockDriverState *bs, GError **errp);

/* The absolute, symlink-free path of bs's file (or of its filename if it
 * cannot be resolved). */
char *bdrv_get_absolute_filename(BlockDriverState *bs);
/*
 * The name to record in overlay's header for backing: relative to
 * overlay's directory if `relative` (and both paths can be resolved),
 * else absolute.
 */
char *bdrv_backing_name_for(BlockDriverState *overlay,
                            BlockDriverState *backing, bool relative);
/* A backing name resolved against the overlay's directory, like QEMU
 * (also declared in block_int.h for drivers). */
char *bdrv_resolve_backing_name(const char *overlay_filename,
                                const char *backing_name);
/* True if a backing name is relative (neither absolute nor protocol:). */
bool bdrv_backing_name_is_relative(const char *name);

/* The rule for a backing file's path (st: its stat): a regular file,
 * so never a directory, FIFO or device node; QEMU's texts otherwise. */
struct stat;
bool bdrv_backing_path_allowed(const char *path, const struct stat *st,
                               GError **errp);

G_END_DECLS

#endif
