/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Filenames the way QEMU accepts them (block/filename.c): "json:{...}"
 * option objects, protocol prefixes ("file:", "blkdebug:CONFIG:IMAGE")
 * and QEMU's "Unknown protocol" refusal of the others.
 */
#ifndef STRATA_BLOCK_FILENAME_H
#define STRATA_BLOCK_FILENAME_H

#include "block/block.h"

G_BEGIN_DECLS

/* QEMU's rule: a name has a protocol prefix if a ':' comes before any
 * '/' ("a:b", "nbd:x"; not "./a:b"). */
bool bdrv_filename_has_protocol(const char *name);
/* Whether drvname is a protocol driver that opens a host path ("file",
 * "host_device", "host_cdrom"). */
bool bdrv_is_local_driver(const char *drvname);
/* The length of such a driver's "NAME:" prefix at the start of name, 0
 * without one. */
size_t bdrv_local_prefix_len(const char *name);
/* The host path a local name stands for, its prefix taken off ("./"
 * put before a rest that would read as prefixed again); free it. */
char *bdrv_local_path(const char *filename);

/* A JSON object of block options as flat dotted keys ({"file":
 * {"filename": "x"}} -> file.filename=x; arrays -> key.0, key.1).  NULL
 * with QEMU's message if text is not one JSON object. */
BlockOpts *bdrv_json_to_opts(const char *text, GError **errp);

/* filename is "json:{...}": its options join options, those already in
 * options win. */
bool bdrv_filename_merge_json(const char *filename, BlockOpts *options,
                              GError **errp);

/* For a protocol node opened from filename without a "driver": sets the
 * driver its prefix names ("file" without a prefix), or fails with
 * "Unknown protocol 'x'". */
bool bdrv_filename_pick_protocol(const char *filename, BlockOpts *options,
                                 GError **errp);

/* What protocol driver drvname opens of filename (*out, to free):
 * "file:X" -> X for file, "blkdebug:CONFIG:IMAGE" -> IMAGE and
 * config=CONFIG for blkdebug; other names unchanged. */
bool bdrv_filename_strip_protocol(const char *drvname, const char *filename,
                                  BlockOpts *options, char **out,
                                  GError **errp);

/* The host path inside a name with protocol prefixes strata opens
 * ("blkdebug::/a/b" -> "/a/b"), for resolving relative backing names. */
const char *bdrv_filename_plain(const char *name);

G_END_DECLS

#endif
