/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Who may use an image at the same time.  Each node is given the
 * permissions its user holds on it (read, write...) and the ones that user
 * lets others hold; a node passes them on to its file child, adding what a
 * format needs for its metadata.  At the bottom the file driver turns them
 * into the byte-range locks QEMU 7.2 takes (block/file-posix.c), so strata
 * and QEMU processes refuse each other's conflicting writers.
 *
 * This is QEMU's permission model reduced to strata's graphs: one user per
 * node (a tool, a device, or the overlay of a backing node), and the
 * permission sets QEMU's qemu-img and qemu-io end up with.
 */
#include <string.h>

#include "block/block_int.h"

const char *bdrv_perm_name(uint64_t one_perm)
{
    switch (one_perm) {
    case BLK_PERM_CONSISTENT_READ: return "consistent read";
    case BLK_PERM_WRITE: return "write";
    case BLK_PERM_WRITE_UNCHANGED: return "write unchanged";
    case BLK_PERM_RESIZE: return "resize";
    default: return "unknown";
    }
}

bool bdrv_perm_parse_options(BlockOpts *options, int *flags, GError **errp)
{
    bool force_share;

    if (!bdrv_opts_get_bool(options, "force-share",
                            !!(*flags & BDRV_O_FORCE_SHARE), &force_share,
                            errp)) {
        return false;
    }
    g_hash_table_remove(options, "force-share");
    *flags = force_share ? (*flags | BDRV_O_FORCE_SHARE)
                         : (*flags & ~BDRV_O_FORCE_SHARE);
    /* Sharing everything while writing would let two writers in. */
    if (force_share && (*flags & BDRV_O_RDWR)) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "force-share=on can only be used with read-only images");
        return false;
    }
    return true;
}

void bdrv_perm_for_user(int flags, uint64_t *perm, uint64_t *shared)
{
    *perm = BLK_PERM_CONSISTENT_READ |
            ((flags & BDRV_O_RDWR) ? BLK_PERM_WRITE : 0);
    if (flags & BDRV_O_FORCE_SHARE) {
        *shared = BLK_PERM_ALL;
    } else if (flags & BDRV_O_NO_SHARE) {
        *shared = BLK_PERM_CONSISTENT_READ | BLK_PERM_WRITE_UNCHANGED;
    } else {
        *shared = BLK_PERM_ALL;
    }
}

/*
 * A format that can have a backing file keeps its metadata in its file
 * (qcow2); raw and filters such as blkdebug pass their file through.
 */
static bool keeps_metadata(const BlockDriver *drv)
{
    return drv && !drv->is_protocol && drv->supports_backing;
}

/* What bs, used with (perm, shared) and opened with flags, asks of its
 * file child. */
static void file_child_perms(BlockDriverState *bs, int flags,
                             uint64_t *perm, uint64_t *shared)
{
    if (keeps_metadata(bs->drv)) {
        /* Metadata is read even when the user reads nothing, written when
         * the node is writable, and must not change under the format. */
        *perm |= BLK_PERM_CONSISTENT_READ;
        if (flags & BDRV_O_RDWR) {
            *perm |= BLK_PERM_WRITE | BLK_PERM_RESIZE;
        }
        *shared &= ~(BLK_PERM_WRITE | BLK_PERM_RESIZE);
    }
    if (bs->file->open_flags & BDRV_O_FORCE_SHARE) {
        *shared = BLK_PERM_ALL;
    }
}

static bool node_set_perm(BlockDriverState *bs, uint64_t perm,
                          uint64_t shared, int flags, GError **errp)
{
    if (bs->drv && bs->drv->set_perm) {
        return bs->drv->set_perm(bs, perm, shared, errp) >= 0;
    }
    if (!bs->file) {
        return true;
    }
    file_child_perms(bs, flags, &perm, &shared);
    return node_set_perm(bs->file, perm, shared, flags, errp);
}

bool bdrv_perm_apply(BlockDriverState *bs, int flags, GError **errp)
{
    uint64_t perm, shared;

    bdrv_perm_for_user(flags, &perm, &shared);
    return node_set_perm(bs, perm, shared, flags, errp);
}
