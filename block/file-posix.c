/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The "file" protocol driver: a POSIX regular file, optionally with
 * O_DIRECT (cache.direct=on), flushed with fdatasync.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "block/block_int.h"
#include "block/drivers.h"

typedef struct BDRVFileState {
    int fd;
    bool direct;
    bool no_flush;
} BDRVFileState;

static int file_open_fd(const char *filename, bool rw, bool direct,
                        GError **errp)
{
    int flags = (rw ? O_RDWR : O_RDONLY) | O_CLOEXEC | (direct ? O_DIRECT : 0);
    struct stat st = { 0 };
    int fd = open(filename, flags);

    if (fd < 0) {
        int err = errno;
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_IO, "Could not open '%s': %s",
                    filename, g_strerror(err));
        return -err;
    }
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        /* Directories and device nodes are not image files. */
        close(fd);
        if (S_ISDIR(st.st_mode)) {
            g_set_error(errp, BDRV_ERROR, BDRV_ERROR_IO,
                        "Could not open '%s': Is a directory", filename);
            return -EISDIR;
        }
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "The 'file' driver requires '%s' to be a regular file",
                    filename);
        return -EINVAL;
    }
    return fd;
}

/* The smallest O_DIRECT alignment the file accepts (512..4096). */
static uint32_t probe_direct_alignment(int fd)
{
    void *buf = NULL;
    uint32_t found = 4096;

    if (posix_memalign(&buf, 4096, 4096) != 0) {
        return 4096;
    }
    for (uint32_t al = 512; al <= 4096; al *= 2) {
        if (pread(fd, buf, al, 0) >= 0) {
            found = al;
            break;
        }
    }
    free(buf);
    return found;
}

static int file_open(BlockDriverState *bs, BlockOpts *options, int flags,
                     GError **errp)
{
    BDRVFileState *s = bs->opaque;
    g_autofree char *fname = bdrv_opts_take(options, "filename");
    int fd;

    if (fname && !*bs->filename) {
        g_free(bs->filename);
        bs->filename = g_strdup(fname);
    }
    if (!*bs->filename) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "Parameter 'filename' is missing");
        return -EINVAL;
    }
    s->direct = !!(flags & BDRV_O_NOCACHE);
    s->no_flush = !!(flags & BDRV_O_NO_FLUSH);
    fd = file_open_fd(bs->filename, !!(flags & BDRV_O_RDWR), s->direct, errp);
    if (fd < 0) {
        return fd;
    }
    s->fd = fd;
    if (s->direct) {
        bs->request_alignment = probe_direct_alignment(fd);
        bs->buf_alignment = bs->request_alignment;
    }
    return 0;
}

static void file_close(BlockDriverState *bs)
{
    BDRVFileState *s = bs->opaque;

    if (s->fd >= 0) {
        close(s->fd);
        s->fd = -1;
    }
}

static int file_reopen(BlockDriverState *bs, bool read_only, GError **errp)
{
    BDRVFileState *s = bs->opaque;
    int fd = file_open_fd(bs->filename, !read_only, s->direct, errp);

    if (fd < 0) {
        return fd;
    }
    close(s->fd);
    s->fd = fd;
    return 0;
}

static int file_pread(BlockDriverState *bs, int64_t offset, int64_t bytes,
                      void *buf)
{
    BDRVFileState *s = bs->opaque;
    uint8_t *p = buf;

    while (bytes > 0) {
        ssize_t n = pread(s->fd, p, bytes, offset);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            return -errno;
        }
        if (n == 0) {
            /* past the end of the file reads as zeroes */
            memset(p, 0, bytes);
            break;
        }
        p += n;
        offset += n;
        bytes -= n;
    }
    return 0;
}

static int file_pwrite(BlockDriverState *bs, int64_t offset, int64_t bytes,
                       const void *buf)
{
    BDRVFileState *s = bs->opaque;
    const uint8_t *p = buf;

    while (bytes > 0) {
        ssize_t n = pwrite(s->fd, p, bytes, offset);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            return -errno;
        }
        p += n;
        offset += n;
        bytes -= n;
    }
    return 0;
}

static int file_pwrite_zeroes(BlockDriverState *bs, int64_t offset,
                              int64_t bytes, int flags)
{
    BDRVFileState *s = bs->opaque;
    struct stat st;

    if (fstat(s->fd, &st) < 0) {
        return -errno;
    }
    if ((flags & BDRV_REQ_MAY_UNMAP) && offset + bytes <= st.st_size &&
        fallocate(s->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                  offset, bytes) == 0) {
        return 0;
    }
    if (fallocate(s->fd, FALLOC_FL_ZERO_RANGE, offset, bytes) == 0) {
        return 0;
    }
    if (offset >= st.st_size) {
        /* beyond EOF: extending the file yields zeroes */
        return ftruncate(s->fd, offset + bytes) < 0 ? -errno : 0;
    }
    return -ENOTSUP;
}

static int file_pdiscard(BlockDriverState *bs, int64_t offset, int64_t bytes)
{
    BDRVFileState *s = bs->opaque;

    if (fallocate(s->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                  offset, bytes) < 0 && errno != EOPNOTSUPP) {
        return -errno;
    }
    return 0;
}

static int file_flush(BlockDriverState *bs)
{
    BDRVFileState *s = bs->opaque;

    if (s->no_flush) {
        return 0;
    }
    return fdatasync(s->fd) < 0 ? -errno : 0;
}

static int64_t file_getlength(BlockDriverState *bs)
{
    BDRVFileState *s = bs->opaque;
    struct stat st;

    if (fstat(s->fd, &st) < 0) {
        return -errno;
    }
    return st.st_size;
}

static int64_t file_get_allocated_file_size(BlockDriverState *bs)
{
    BDRVFileState *s = bs->opaque;
    struct stat st;

    if (fstat(s->fd, &st) < 0) {
        return -errno;
    }
    return (int64_t)st.st_blocks * 512;
}

static int file_truncate(BlockDriverState *bs, int64_t size, GError **errp)
{
    BDRVFileState *s = bs->opaque;

    if (ftruncate(s->fd, size) < 0) {
        int err = errno;
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_IO,
                    "Failed to resize the file: %s", g_strerror(err));
        return -err;
    }
    return 0;
}

static int file_block_status(BlockDriverState *bs, int64_t offset,
                             int64_t bytes, int64_t *pnum, int64_t *map,
                             BlockDriverState **file)
{
    BDRVFileState *s = bs->opaque;
    off_t data = lseek(s->fd, offset, SEEK_DATA);
    int ret;

    *map = offset;
    *file = bs;
    if (data < 0 && errno == ENXIO) {
        /* trailing hole */
        *pnum = bytes;
        return BDRV_BLOCK_ZERO | BDRV_BLOCK_OFFSET_VALID | BDRV_BLOCK_ALLOCATED;
    }
    if (data < 0) {
        *pnum = bytes;
        return BDRV_BLOCK_DATA | BDRV_BLOCK_OFFSET_VALID | BDRV_BLOCK_ALLOCATED;
    }
    if (data > offset) {
        *pnum = MIN(bytes, data - offset);
        return BDRV_BLOCK_ZERO | BDRV_BLOCK_OFFSET_VALID | BDRV_BLOCK_ALLOCATED;
    }
    off_t hole = lseek(s->fd, offset, SEEK_HOLE);
    *pnum = hole > offset ? MIN(bytes, hole - offset) : bytes;
    ret = BDRV_BLOCK_DATA | BDRV_BLOCK_OFFSET_VALID | BDRV_BLOCK_ALLOCATED;
    return ret;
}

/* Creates (or truncates) a host file of the given size. */
bool file_create_with_size(const char *filename, uint64_t size,
                           GError **errp)
{
    int fd = open(filename, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);

    if (fd < 0) {
        int err = errno;
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_IO, "Could not create '%s': %s",
                    filename, g_strerror(err));
        return false;
    }
    if (ftruncate(fd, (off_t)size) < 0) {
        int err = errno;
        close(fd);
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_IO,
                    "Could not resize file: %s", g_strerror(err));
        return false;
    }
    close(fd);
    return true;
}

static bool file_create(const char *filename, BlockOpts *opts, GError **errp)
{
    uint64_t size;

    if (!bdrv_opts_get_size(opts, "size", 0, &size, errp)) {
        return false;
    }
    return file_create_with_size(filename, size, errp);
}

BlockDriver bdrv_file = {
    .format_name = "file",
    .instance_size = sizeof(BDRVFileState),
    .is_protocol = true,
    .open = file_open,
    .close = file_close,
    .reopen = file_reopen,
    .create = file_create,
    .pread = file_pread,
    .pwrite = file_pwrite,
    .pwrite_zeroes = file_pwrite_zeroes,
    .pdiscard = file_pdiscard,
    .flush = file_flush,
    .truncate = file_truncate,
    .getlength = file_getlength,
    .get_allocated_file_size = file_get_allocated_file_size,
    .block_status = file_block_status,
};
