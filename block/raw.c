/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The "raw" format driver: guest bytes are the file's bytes.  It passes
 * everything to its file child; probing picks it when nothing else fits.
 *
 * A raw image whose format was probed is guarded, as in QEMU: whoever
 * writes to it (a guest, an export, a tool) could otherwise put another
 * format's header in block 0, and the next probing open would read the
 * file as that format -- with a backing file of the writer's choosing,
 * any host file.  So a write that would make block 0 probe as anything
 * but raw fails with EPERM, and the node is aligned to whole blocks so
 * that every write touching block 0 carries all of it and concurrent
 * partial writes cannot assemble a header between them.
 */
#include <errno.h>
#include <string.h>

#include "block/block_int.h"
#include "block/drivers.h"
#include "block/filename.h"
#include "block/log.h"

typedef struct BDRVRawState {
    bool probed;                 /* format guessed: block 0 is guarded */
    /* Held while block 0 is vetted and changed, so that what was vetted
     * is what lands (a partial discard reads block 0 to vet the result). */
    GMutex block0_lock;
} BDRVRawState;

static int raw_probe(const uint8_t *buf, int buf_size, const char *filename)
{
    return 1; /* anything is raw, as a last resort */
}

static int raw_open(BlockDriverState *bs, BlockOpts *options, int flags,
                    GError **errp)
{
    BDRVRawState *s = bs->opaque;

    g_mutex_init(&s->block0_lock);
    s->probed = !!(flags & BDRV_O_PROBED);
    if (!s->probed) {
        return 0;
    }
    /* Whole blocks only: the generic layer turns a partial write into a
     * serialised read-modify-write here, so raw_pwrite sees the block 0
     * that would land on disk. */
    bs->request_alignment = MAX(BDRV_PROBE_BUF_SIZE,
                                bs->file->request_alignment);
    if (flags & BDRV_O_RDWR) {
        strata_warning("WARNING: Image format was not specified for '%s' "
                       "and probing guessed raw.", bs->file->filename);
        strata_warning("         Automatically detecting the format is "
                       "dangerous for raw images, write operations on "
                       "block 0 will be restricted.");
        strata_warning("         Specify the 'raw' format explicitly to "
                       "remove the restrictions.");
    }
    return 0;
}

static void raw_close(BlockDriverState *bs)
{
    BDRVRawState *s = bs->opaque;

    g_mutex_clear(&s->block0_lock);
}

/* Whether block 0 may become sector0 (BDRV_PROBE_BUF_SIZE bytes): it
 * must still probe as raw, for us and for QEMU's other formats too (the
 * image may be opened by QEMU next). */
static bool block0_allowed(BlockDriverState *bs, const uint8_t *sector0)
{
    return bdrv_probe_all(sector0, BDRV_PROBE_BUF_SIZE, NULL) == bs->drv &&
           !bdrv_probe_foreign(sector0, BDRV_PROBE_BUF_SIZE);
}

static int raw_pread(BlockDriverState *bs, int64_t offset, int64_t bytes,
                     void *buf)
{
    /* QEMU's raw format announces its data requests to its file child,
     * so blkdebug under it (a qcow2 data file: iotest 289) can fail them. */
    bdrv_debug_event(bs->file, "read_aio");
    return bdrv_pread(bs->file, offset, bytes, buf);
}

/* A probed node vets every write to block 0 against a copy, which an
 * asynchronous pass-through could not do. */
static bool raw_aio_supported(BlockDriverState *bs)
{
    BDRVRawState *s = bs->opaque;

    return !s->probed && bdrv_aio_supported(bs->file);
}

static int raw_aio_submit(BlockDriverState *bs, BdrvAio *aio)
{
    return bdrv_aio_submit(bs->file, aio);
}

/* A write on a probed node that touches block 0: vet it and write from
 * the vetted copy, since the caller's buffer may change under us (a guest
 * can rewrite it while the request is in flight). */
static int raw_pwrite_block0(BlockDriverState *bs, int64_t bytes,
                             const uint8_t *buf)
{
    BDRVRawState *s = bs->opaque;
    uint8_t sector0[BDRV_PROBE_BUF_SIZE];
    int ret;

    /* request_alignment guarantees a write at 0 of whole blocks. */
    if (bytes < BDRV_PROBE_BUF_SIZE) {
        return -EINVAL;
    }
    memcpy(sector0, buf, sizeof(sector0));
    g_mutex_lock(&s->block0_lock);
    ret = block0_allowed(bs, sector0) ?
          bdrv_pwrite(bs->file, 0, sizeof(sector0), sector0) : -EPERM;
    g_mutex_unlock(&s->block0_lock);
    if (ret < 0 || bytes == BDRV_PROBE_BUF_SIZE) {
        return ret;
    }
    return bdrv_pwrite(bs->file, BDRV_PROBE_BUF_SIZE,
                       bytes - BDRV_PROBE_BUF_SIZE,
                       buf + BDRV_PROBE_BUF_SIZE);
}

static int raw_pwrite(BlockDriverState *bs, int64_t offset, int64_t bytes,
                      const void *buf)
{
    BDRVRawState *s = bs->opaque;

    if (s->probed && offset < BDRV_PROBE_BUF_SIZE) {
        if (offset != 0) {
            return -EINVAL;
        }
        bdrv_debug_event(bs->file, "write_aio");
        return raw_pwrite_block0(bs, bytes, buf);
    }
    bdrv_debug_event(bs->file, "write_aio");
    return bdrv_pwrite(bs->file, offset, bytes, buf);
}

/* A zero write reaches the driver in whole blocks (the partial edges
 * come as data writes, vetted above), so on block 0 it leaves an all-zero
 * block 0: allowed as long as that probes as raw. */
static int raw_pwrite_zeroes(BlockDriverState *bs, int64_t offset,
                             int64_t bytes, int flags)
{
    static const uint8_t zero_block[BDRV_PROBE_BUF_SIZE];
    BDRVRawState *s = bs->opaque;

    if (s->probed && offset < BDRV_PROBE_BUF_SIZE &&
        !block0_allowed(bs, zero_block)) {
        return -EPERM;
    }
    return bdrv_pwrite_zeroes(bs->file, offset, bytes, flags);
}

/* A discard of part of block 0 leaves those bytes reading as zeroes
 * (hole punching): the block that results is vetted like a write.
 * Stricter than QEMU, which lets byte-granular discards through unvetted
 * (an NBD client can send those). */
static int raw_pdiscard_block0(BlockDriverState *bs, int64_t offset,
                               int64_t bytes)
{
    BDRVRawState *s = bs->opaque;
    uint8_t sector0[BDRV_PROBE_BUF_SIZE];
    int ret;

    g_mutex_lock(&s->block0_lock);
    ret = bdrv_pread(bs->file, 0, sizeof(sector0), sector0);
    if (ret == 0) {
        memset(sector0 + offset, 0, bytes);
        ret = block0_allowed(bs, sector0) ?
              bdrv_pdiscard(bs->file, offset, bytes) : -EPERM;
    }
    g_mutex_unlock(&s->block0_lock);
    return ret;
}

static int raw_pdiscard(BlockDriverState *bs, int64_t offset, int64_t bytes)
{
    BDRVRawState *s = bs->opaque;

    if (s->probed && offset < BDRV_PROBE_BUF_SIZE) {
        int64_t n = MIN(bytes, BDRV_PROBE_BUF_SIZE - offset);
        int ret = raw_pdiscard_block0(bs, offset, n);
        if (ret < 0 || n == bytes) {
            return ret;
        }
        offset += n;
        bytes -= n;
    }
    return bdrv_pdiscard(bs->file, offset, bytes);
}

/* Like QEMU, a raw image's size is whole sectors: the padding past the
 * end of the file reads as zeroes. */
static int64_t raw_getlength(BlockDriverState *bs)
{
    int64_t len = bdrv_getlength(bs->file);

    return len < 0 ? len : (len + BDRV_SECTOR_SIZE - 1) / BDRV_SECTOR_SIZE *
                           BDRV_SECTOR_SIZE;
}

/* A resize of the raw disk is exact (qemu-img resize asks for exactly
 * that length), so on a device it works only to the device's length. */
static int raw_resize_allowed(BlockDriverState *bs, int64_t size,
                              GError **errp)
{
    if (bs->file->drv->fixed_length && size != bdrv_getlength(bs->file)) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_NOT_SUPPORTED,
                    "Cannot resize device files");
        return -ENOTSUP;
    }
    return 0;
}

static int raw_truncate(BlockDriverState *bs, int64_t size, GError **errp)
{
    int ret = raw_resize_allowed(bs, size, errp);

    return ret < 0 ? ret : bdrv_truncate(bs->file, size, errp);
}

static int raw_truncate_prealloc(BlockDriverState *bs, int64_t size,
                                 int prealloc, GError **errp)
{
    /* a device names the preallocation it cannot do first, as QEMU */
    int ret = prealloc == BDRV_PREALLOC_OFF
              ? raw_resize_allowed(bs, size, errp) : 0;

    return ret < 0 ? ret
                   : bdrv_truncate_prealloc(bs->file, size, prealloc, errp);
}

static int raw_block_status(BlockDriverState *bs, int64_t offset,
                            int64_t bytes, int64_t *pnum, int64_t *map,
                            BlockDriverState **file)
{
    int ret = bdrv_block_status(bs->file, offset, bytes, pnum, map, file);

    if (ret >= 0 && *pnum == 0) {
        /* The padding after a file that ends mid-sector: zeroes, at the
         * same offset in the file (as QEMU maps it). */
        *pnum = bytes;
        *map = offset;
        *file = bs->file;
        return BDRV_BLOCK_ZERO | BDRV_BLOCK_OFFSET_VALID |
               BDRV_BLOCK_ALLOCATED;
    }
    return ret;
}

static int raw_get_info(BlockDriverState *bs, BlockDriverInfo *bdi)
{
    bdi->unallocated_reads_zero = true;
    /* a device keeps what it held: convert must write the zeroes */
    bdi->no_zero_init = bs->file->drv->fixed_length;
    return 0;
}

static bool raw_create(const char *filename, BlockOpts *opts, GError **errp)
{
    uint64_t size;

    if (bdrv_opts_get(opts, "backing_file")) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "Backing file not supported for file format 'raw'");
        return false;
    }
    if (!bdrv_opts_get_size(opts, "size", 0, &size, errp)) {
        return false;
    }
    /* a protocol with its own create (rbd:pool/image) makes the image */
    if (bdrv_filename_has_protocol(filename)) {
        g_autofree char *proto = g_strndup(filename, strcspn(filename, ":"));
        BlockDriver *pdrv = bdrv_find_format(proto);
        if (pdrv && pdrv->is_protocol && pdrv->create && pdrv != &bdrv_file) {
            return pdrv->create(filename, opts, errp);
        }
    }
    return file_create_prealloc(filename, opts, size, errp);
}

BlockDriver bdrv_raw = {
    .format_name = "raw",
    .instance_size = sizeof(BDRVRawState),
    .probe = raw_probe,
    .open = raw_open,
    .close = raw_close,
    .create = raw_create,
    .pread = raw_pread,
    .aio_submit = raw_aio_submit,
    .aio_supported = raw_aio_supported,
    .pwrite = raw_pwrite,
    .pwrite_zeroes = raw_pwrite_zeroes,
    .pdiscard = raw_pdiscard,
    .getlength = raw_getlength,
    .truncate = raw_truncate,
    .truncate_prealloc = raw_truncate_prealloc,
    .block_status = raw_block_status,
    .get_info = raw_get_info,
};
