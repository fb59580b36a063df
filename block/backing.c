/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Backing chains once they are open: walking them, which layer decides a
 * range, graph changes (the backing link in memory) and header changes
 * (the backing link on disk), emptying a layer, and the names we write.
 * Opening a chain from the headers lives in block/block.c.
 */
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "block/backing.h"
#include "block/log.h"
#include "block/block_int.h"
#include "block/filename.h"

bool bdrv_chain_contains(BlockDriverState *top, BlockDriverState *bs)
{
    for (BlockDriverState *p = top; p; p = p->backing) {
        if (p == bs) {
            return true;
        }
    }
    return false;
}

BlockDriverState *bdrv_find_overlay(BlockDriverState *active,
                                    BlockDriverState *bs)
{
    for (BlockDriverState *p = active; p; p = p->backing) {
        if (p->backing == bs) {
            return p;
        }
    }
    return NULL;
}

BlockDriverState *bdrv_find_base(BlockDriverState *bs)
{
    while (bs && bs->backing) {
        bs = bs->backing;
    }
    return bs;
}

int bdrv_chain_length(BlockDriverState *bs)
{
    int n = 0;

    for (BlockDriverState *p = bs->backing; p; p = p->backing) {
        n++;
    }
    return n;
}

static bool stat_node(BlockDriverState *bs, struct stat *st)
{
    const char *name = bs->filename;

    if ((!name || !*name) && bs->file) {
        name = bs->file->filename;
    }
    return name && *name && stat(name, st) == 0;
}

bool bdrv_same_file(BlockDriverState *a, BlockDriverState *b)
{
    struct stat sa, sb;

    if (a == b) {
        return true;
    }
    return stat_node(a, &sa) && stat_node(b, &sb) &&
           sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

bool bdrv_is_file(BlockDriverState *bs, const char *path)
{
    struct stat sa, sb;

    return stat_node(bs, &sa) && stat(path, &sb) == 0 &&
           sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

/*
 * As QEMU looks a name up (qemu-img commit -b, block-commit's top/base):
 * layer by layer, the layer below `cur` matches when the name is what
 * cur's header records, or -- for plain file names -- when the name,
 * taken relative to cur's directory, is that layer's file.  A relative
 * name is never taken relative to the working directory.
 */
BlockDriverState *bdrv_find_backing_image(BlockDriverState *bs,
                                          const char *name)
{
    if (!bs || !name || !*name) {
        return NULL;
    }
    for (BlockDriverState *cur = bs; cur->backing; cur = cur->backing) {
        BlockDriverState *below = cur->backing;
        g_autofree char *resolved = NULL;

        if (cur->backing_file && !strcmp(cur->backing_file, name)) {
            return below;
        }
        if (bdrv_filename_has_protocol(name) ||
            bdrv_filename_has_protocol(cur->filename)) {
            if (!strcmp(below->filename, name)) {
                return below;
            }
            continue;
        }
        resolved = bdrv_resolve_backing_name(cur->filename, name);
        if (!strcmp(below->filename, resolved) ||
            bdrv_is_file(below, resolved)) {
            return below;
        }
    }
    return NULL;
}

int bdrv_block_status_between(BlockDriverState *top, BlockDriverState *base,
                              int64_t offset, int64_t bytes, int64_t *pnum,
                              BlockDriverState **decider)
{
    BlockDriverState *p = top;
    int ret;

    *pnum = 0;
    *decider = NULL;
    if (top == base) {
        *pnum = bytes;          /* nothing above base */
        return 0;
    }
    for (;;) {
        int64_t len = bdrv_getlength(p);
        int64_t n = 0;

        if (len < 0) {
            return (int)len;
        }
        if (offset >= len) {
            /* past the end of a shorter layer: it decides, zeroes */
            *pnum = bytes;
            *decider = p;
            return BDRV_BLOCK_ZERO | BDRV_BLOCK_ALLOCATED;
        }
        bytes = MIN(bytes, len - offset);
        ret = bdrv_block_status(p, offset, bytes, &n, NULL, NULL);
        if (ret < 0) {
            return ret;
        }
        if (n <= 0) {
            return -EIO;
        }
        bytes = n;
        if (ret & BDRV_BLOCK_ALLOCATED) {
            *pnum = bytes;
            *decider = p;
            return ret;
        }
        if (!p->backing) {
            *pnum = bytes;
            return BDRV_BLOCK_ZERO;
        }
        if (p->backing == base) {
            *pnum = bytes;
            return 0;
        }
        p = p->backing;
    }
}

void bdrv_set_backing(BlockDriverState *bs, BlockDriverState *backing)
{
    BlockDriverState *old;

    if (backing) {
        bdrv_ref(backing);
    }
    bdrv_drained_begin(bs);
    old = bs->backing;
    bs->backing = backing;
    bdrv_drained_end(bs);
    if (old) {
        bdrv_unref(old);
    }
}

bool bdrv_change_backing_file(BlockDriverState *bs, const char *name,
                              const char *fmt, GError **errp)
{
    bool was_ro = bs->read_only;
    bool ok = true;
    int ret;

    if (!bs->drv || !bs->drv->change_backing_file) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_NOT_SUPPORTED,
                    "Block format '%s' used by node '%s' does not support "
                    "backing files",
                    bs->drv ? bs->drv->format_name : "", bs->node_name);
        return false;
    }
    if (was_ro && !bdrv_reopen_set_read_only(bs, false, errp)) {
        return false;
    }
    bdrv_drained_begin(bs);
    ret = bs->drv->change_backing_file(bs, name && *name ? name : NULL,
                                       name && *name ? fmt : NULL, errp);
    bdrv_drained_end(bs);
    if (ret < 0) {
        ok = false;
    }
    if (was_ro) {
        g_autoptr(GError) local_err = NULL;
        /* Best effort: the header is written either way. */
        if (!bdrv_reopen_set_read_only(bs, true, &local_err)) {
            strata_warning("Could not reopen '%s' read-only: %s", bs->filename,
                      local_err->message);
        }
    }
    return ok;
}

bool bdrv_make_empty(BlockDriverState *bs, GError **errp)
{
    int ret;

    if (!bs->drv || !bs->drv->make_empty) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_NOT_SUPPORTED,
                    "Block format '%s' does not support emptying the image",
                    bs->drv ? bs->drv->format_name : "");
        return false;
    }
    if (bs->read_only) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "Cannot empty read-only image '%s'", bs->filename);
        return false;
    }
    bdrv_drained_begin(bs);
    ret = bs->drv->make_empty(bs, errp);
    bdrv_drained_end(bs);
    return ret == 0;
}

char *bdrv_get_absolute_filename(BlockDriverState *bs)
{
    const char *name = bs->filename;
    char *real;

    if ((!name || !*name) && bs->file) {
        name = bs->file->filename;
    }
    real = realpath(name, NULL);
    if (real) {
        char *ret = g_strdup(real);
        free(real);
        return ret;
    }
    return g_canonicalize_filename(name, NULL);
}

bool bdrv_backing_name_is_relative(const char *name)
{
    const char *colon = strchr(name, ':');
    const char *slash = strchr(name, '/');

    if (g_path_is_absolute(name)) {
        return false;
    }
    /* "proto:..." (a colon before any slash) is a protocol name */
    return !(colon && (!slash || colon < slash));
}

/* The path of `target` relative to directory `dir` (both absolute). */
static char *relative_path(const char *dir, const char *target)
{
    g_auto(GStrv) d = g_strsplit(dir, "/", -1);
    g_auto(GStrv) t = g_strsplit(target, "/", -1);
    GString *out = g_string_new(NULL);
    guint nd = g_strv_length(d), nt = g_strv_length(t), i = 0;

    /* both start with "" (the root); the last of t is the file name */
    while (i < nd && i + 1 < nt && !strcmp(d[i], t[i])) {
        i++;
    }
    for (guint j = i; j < nd; j++) {
        if (*d[j]) {
            g_string_append(out, "../");
        }
    }
    for (guint j = i; j < nt; j++) {
        g_string_append(out, t[j]);
        if (j + 1 < nt) {
            g_string_append_c(out, '/');
        }
    }
    return g_string_free(out, FALSE);
}

char *bdrv_backing_name_for(BlockDriverState *overlay,
                            BlockDriverState *backing, bool relative)
{
    g_autofree char *target = bdrv_get_absolute_filename(backing);
    g_autofree char *ov = NULL;
    g_autofree char *dir = NULL;

    if (!relative) {
        return g_steal_pointer(&target);
    }
    ov = bdrv_get_absolute_filename(overlay);
    dir = g_path_get_dirname(ov);
    return relative_path(dir, target);
}
