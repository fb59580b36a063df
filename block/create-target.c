/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Where a format's create writes its image: a host file, or a node a
 * protocol reaches (an NBD export, `qemu-img convert -O qcow2 SRC
 * nbd+unix:///exp?socket=S`, the way an image is written straight into an
 * OVA file).  A protocol that cannot make images of its own is "created"
 * as QEMU does it for such protocols: the node must already exist and be
 * at least as long as asked, and its first sector is zeroed so that an
 * earlier image's header is not probed there.
 */

#include "block/block.h"
#include "block/block_int.h"
#include "block/drivers.h"
#include "block/filename.h"

#include <errno.h>

/* The protocol driver a prefixed name picks, when that one makes no
 * images of its own; NULL otherwise (a host file). */
static BlockDriver *open_only_protocol(const char *filename)
{
    BlockOpts *o = bdrv_opts_new();
    BlockDriver *drv = NULL;
    const char *name;

    if (bdrv_filename_has_protocol(filename) &&
        bdrv_filename_pick_protocol(filename, o, NULL) &&
        (name = bdrv_opts_get(o, "driver")) != NULL) {
        drv = bdrv_find_format(name);
    }
    g_hash_table_unref(o);
    return drv && drv->creates_in_place ? drv : NULL;
}

static bool prepare_existing(BlockDriver *drv, const char *filename,
                             uint64_t size, GError **errp)
{
    static const uint8_t zero[512];
    BlockDriverState *bs;
    int64_t len;
    int ret = 0;

    bs = bdrv_create_target_open(filename, BDRV_O_RDWR, errp);
    if (!bs) {
        g_prefix_error(errp, "Protocol driver '%s' does not support image "
                       "creation, and opening the image failed: ",
                       drv->format_name);
        return false;
    }
    len = bdrv_getlength(bs);
    if (len < 0) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_IO,
                    "Failed to inquire the new image file's length: %s",
                    g_strerror((int)-len));
        ret = -EIO;
    } else if ((uint64_t)len < size) {
        bdrv_create_target_cannot_grow(filename, errp);
        ret = -EINVAL;
    } else if (len > 0) {
        ret = bdrv_pwrite(bs, 0, MIN(len, (int64_t)sizeof(zero)), zero);
        if (ret >= 0) {
            ret = bdrv_flush(bs);
        }
        if (ret < 0) {
            g_set_error(errp, BDRV_ERROR, BDRV_ERROR_IO,
                        "Failed to clear the new image's first sector: %s",
                        g_strerror(-ret));
        }
    }
    bdrv_unref(bs);
    return ret >= 0;
}

bool bdrv_create_target(const char *filename, uint64_t size, GError **errp)
{
    BlockDriver *drv = open_only_protocol(filename);

    if (drv) {
        return prepare_existing(drv, filename, size, errp);
    }
    return file_create_with_size(filename, size, errp);
}

bool bdrv_create_target_is_host_file(const char *filename)
{
    return !open_only_protocol(filename);
}

void bdrv_create_target_cannot_grow(const char *filename, GError **errp)
{
    BlockDriver *drv = open_only_protocol(filename);
    g_autofree char *upper = g_ascii_strup(drv ? drv->format_name : "file",
                                           -1);

    g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                "Cannot grow %s nodes", upper);   /* QEMU's text */
}

BlockDriverState *bdrv_create_target_open(const char *filename, int flags,
                                          GError **errp)
{
    BlockOpts *o = bdrv_opts_new();

    if (bdrv_filename_has_protocol(filename) &&
        open_only_protocol(filename)) {
        if (!bdrv_filename_pick_protocol(filename, o, errp)) {
            g_hash_table_unref(o);
            return NULL;
        }
    } else {
        bdrv_opts_set(o, "driver", file_protocol_for(filename));
    }
    return bdrv_open(filename, o, flags, errp);
}
