/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The "file" protocol driver: a POSIX regular file, optionally with
 * O_DIRECT (cache.direct=on), flushed with fdatasync, and locked the way
 * QEMU 7.2's file-posix driver locks it (see "Image locks" below).
 * Its two siblings, "host_device" and "host_cdrom", open a block or
 * character device instead (an LVM volume, a disk, /dev/null): same I/O,
 * but the device's size is fixed, zeroes and discards go through the
 * block-device ioctls, and nothing reports holes.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/cdrom.h>
#include <linux/fs.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "block/block_int.h"
#include "block/drivers.h"
#include "block/fault-inject.h"
#include "block/log.h"

typedef struct BDRVFileState {
    int fd;
    bool device;                /* host_device or host_cdrom */
    bool direct;
    bool no_flush;
    /* Writes completed (a counter) and how far a finished fdatasync
     * covers them: a flush with nothing new to sync costs nothing.  The
     * first flush of an open always syncs (other opens may have written). */
    _Atomic uint64_t write_gen;
    _Atomic uint64_t synced_gen;
    bool use_lock;              /* file.locking: on, or auto with OFD locks */
    uint64_t perm;              /* what our user holds (BLK_PERM_*) */
    uint64_t shared;            /* what it lets others hold */
    uint64_t locked_perm;       /* bits whose byte 100 + bit is locked on fd */
    uint64_t locked_unshared;   /* bits whose byte 200 + bit is locked on fd */
} BDRVFileState;

/*
 * Image locks, compatible with QEMU's: for each permission bit b held, a
 * shared (read) lock on byte 100 + b of the file; for each bit NOT shared
 * with others, a shared lock on byte 200 + b.  Before holding b we test
 * that nobody locked 200 + b (nobody refuses it to us), and before
 * refusing b that nobody locked 100 + b (nobody holds it).  The locks are
 * open file description (OFD) locks, so they belong to our descriptor:
 * two opens of one file in one process conflict like two processes, and
 * closing the descriptor releases them.  All of this happens at open,
 * reopen and close, never per request.
 */
#define LOCK_PERM_BASE   100
#define LOCK_SHARED_BASE 200
#define LOCK_BITS        4      /* BLK_PERM_ALL has four bits in QEMU 7.2 */

static int lock_cmd_set = F_OFD_SETLK;
static int lock_cmd_get = F_OFD_GETLK;

/* True if the kernel has OFD locks (Linux 3.15+); probed once. */
static bool have_ofd_locks(void)
{
    static gsize done;
    static bool have;

    if (g_once_init_enter(&done)) {
        int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
        struct flock fl = { .l_whence = SEEK_SET, .l_start = 0, .l_len = 0,
                            .l_type = F_RDLCK };

        have = fd >= 0 && fcntl(fd, F_OFD_GETLK, &fl) == 0;
        if (fd >= 0) {
            close(fd);
        }
        g_once_init_leave(&done, 1);
    }
    return have;
}

static int lock_byte(int fd, int offset, bool lock)
{
    struct flock fl = { .l_whence = SEEK_SET, .l_start = offset, .l_len = 1,
                        .l_type = lock ? F_RDLCK : F_UNLCK };

    return fcntl(fd, lock_cmd_set, &fl) < 0 ? -errno : 0;
}

/* 0 if no other descriptor holds a lock on the byte, -EAGAIN if one does. */
static int test_byte(int fd, int offset)
{
    struct flock fl = { .l_whence = SEEK_SET, .l_start = offset, .l_len = 1,
                        .l_type = F_WRLCK };

    if (fcntl(fd, lock_cmd_get, &fl) < 0) {
        return -errno;
    }
    return fl.l_type == F_UNLCK ? 0 : -EAGAIN;
}

/* QEMU words a byte someone else holds without an errno. */
static void set_lock_error(GError **errp, int err, const char *msg)
{
    if (err == EAGAIN || err == EACCES) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC, "%s", msg);
    } else {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_IO, "%s: %s", msg,
                    g_strerror(err));
    }
}

/*
 * Makes the locks on s->fd those of (perm_bits, unshared_bits); with
 * release false, locks are only added.  s->locked_* follow what succeeded.
 */
static int apply_locks(BDRVFileState *s, uint64_t perm_bits,
                       uint64_t unshared_bits, bool release, GError **errp)
{
    struct {
        int base;
        uint64_t want;
        uint64_t *have;
    } sets[2] = {
        { LOCK_PERM_BASE, perm_bits, &s->locked_perm },
        { LOCK_SHARED_BASE, unshared_bits, &s->locked_unshared },
    };

    for (int k = 0; k < 2; k++) {
        for (int i = 0; i < LOCK_BITS; i++) {
            uint64_t bit = 1ULL << i;
            bool want = sets[k].want & bit, have = *sets[k].have & bit;
            int off = sets[k].base + i, ret;
            g_autofree char *msg = NULL;

            if (want == have || (!want && !release)) {
                continue;
            }
            ret = lock_byte(s->fd, off, want);
            if (ret < 0) {
                msg = g_strdup_printf("Failed to %s byte %d",
                                      want ? "lock" : "unlock", off);
                set_lock_error(errp, -ret, msg);
                return ret;
            }
            *sets[k].have ^= bit;
        }
    }
    return 0;
}

/* Refuses perm if someone refuses it to us, and ~shared if someone holds
 * part of it, with QEMU's texts. */
static int check_locks(int fd, uint64_t perm, uint64_t shared, GError **errp)
{
    for (int i = 0; i < LOCK_BITS; i++) {
        uint64_t bit = 1ULL << i;
        int ret = (perm & bit) ? test_byte(fd, LOCK_SHARED_BASE + i) : 0;

        if (ret < 0) {
            g_autofree char *msg = g_strdup_printf("Failed to get \"%s\" lock",
                                                   bdrv_perm_name(bit));
            set_lock_error(errp, -ret, msg);
            return ret;
        }
    }
    for (int i = 0; i < LOCK_BITS; i++) {
        uint64_t bit = 1ULL << i;
        int ret = !(shared & bit) ? test_byte(fd, LOCK_PERM_BASE + i) : 0;

        if (ret < 0) {
            g_autofree char *msg =
                g_strdup_printf("Failed to get shared \"%s\" lock",
                                bdrv_perm_name(bit));
            set_lock_error(errp, -ret, msg);
            return ret;
        }
    }
    return 0;
}

/*
 * Moves s->fd's locks to (perm, shared).  New rights are locked first
 * (the old ones kept), then checked against other descriptors; only then
 * is what is no longer needed released.  On failure the old set is back.
 */
static int update_locks(BDRVFileState *s, const char *filename,
                        uint64_t perm, uint64_t shared, GError **errp)
{
    g_autoptr(GError) local_err = NULL;
    int ret;

    if (!s->use_lock) {
        goto done;
    }
    if ((perm & ~s->perm) == 0 && (s->shared & ~shared) == 0) {
        /* Giving up rights cannot conflict with anyone. */
        if (apply_locks(s, perm, ~shared, true, &local_err) < 0) {
            strata_warning("%s", local_err->message);
        }
        goto done;
    }
    ret = apply_locks(s, s->perm | perm, ~s->shared | ~shared, false, errp);
    if (ret == 0) {
        ret = check_locks(s->fd, perm, shared, &local_err);
        if (ret == 0) {
            apply_locks(s, perm, ~shared, true, NULL);
            goto done;
        }
        /* QEMU's hint, on the line after the error */
        g_set_error(errp, local_err->domain, local_err->code,
                    "%s\nIs another process using the image [%s]?",
                    local_err->message, filename);
        g_clear_error(&local_err);
    }
    if (apply_locks(s, s->perm, ~s->shared, true, &local_err) < 0) {
        strata_warning("%s", local_err->message);
    }
    return ret;

done:
    s->perm = perm;
    s->shared = shared;
    return 0;
}

static int file_set_perm(BlockDriverState *bs, uint64_t perm, uint64_t shared,
                         GError **errp)
{
    return update_locks(bs->opaque, bs->filename, perm, shared, errp);
}

/* file.locking=on|off|auto (QEMU's default: auto, on where OFD locks work). */
static bool parse_locking(BlockOpts *options, bool *use_lock, GError **errp)
{
    g_autofree char *mode = bdrv_opts_take(options, "locking");

    if (!mode || !strcmp(mode, "auto")) {
        *use_lock = have_ofd_locks();
    } else if (!strcmp(mode, "on")) {
        *use_lock = true;
        if (!have_ofd_locks()) {
            /* Process-wide POSIX locks: closing any descriptor of the file
             * drops them all, as QEMU warns. */
            lock_cmd_set = F_SETLK;
            lock_cmd_get = F_GETLK;
            strata_warning("File lock requested but OFD locking syscall is "
                           "unavailable, falling back to POSIX file locks");
        }
    } else if (!strcmp(mode, "off")) {
        *use_lock = false;
    } else {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "invalid parameter value: %s", mode);
        return false;
    }
    return true;
}

/*
 * QEMU's I/O engine options: aio=threads|native|io_uring, aio-max-batch,
 * drop-cache, x-check-cache-dropped.  strata has one engine (its request
 * threads), so they are checked as QEMU checks them and change nothing;
 * they are accepted because libvirt passes them (aio=native with
 * cache=none).
 */
static bool parse_engine_options(BlockOpts *options, int flags,
                                 GError **errp)
{
    g_autofree char *aio = bdrv_opts_take(options, "aio");
    g_autofree char *batch = bdrv_opts_take(options, "aio-max-batch");
    bool unused;

    if (aio && strcmp(aio, "threads") && strcmp(aio, "native") &&
        strcmp(aio, "io_uring")) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "invalid parameter value: %s", aio);
        return false;
    }
    if (aio && !strcmp(aio, "native") && !(flags & BDRV_O_NOCACHE)) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "aio=native was specified, but it requires "
                    "cache.direct=on, which was not specified.");
        return false;
    }
    if (batch) {
        char *end;
        errno = 0;
        (void)g_ascii_strtoll(batch, &end, 10);
        if (errno || end == batch || *end) {
            g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                        "Parameter 'aio-max-batch' expects a number");
            return false;
        }
    }
    if (!bdrv_opts_get_bool(options, "drop-cache", true, &unused, errp) ||
        !bdrv_opts_get_bool(options, "x-check-cache-dropped", false, &unused,
                            errp)) {
        return false;
    }
    g_hash_table_remove(options, "drop-cache");
    g_hash_table_remove(options, "x-check-cache-dropped");
    return true;
}

static bool is_device_node(const struct stat *st)
{
    return S_ISBLK(st->st_mode) || S_ISCHR(st->st_mode);
}

/* A block device switched read-only (blockdev --setro) still opens for
 * writing; its writes fail with EPERM.  Refused at open instead, as QEMU
 * refuses it. */
static int device_writable(int fd, const struct stat *st)
{
    int ro = 0;

    if (!S_ISBLK(st->st_mode)) {
        return 0;
    }
    if (ioctl(fd, BLKROGET, &ro) < 0) {
        return -errno;
    }
    return ro ? -EACCES : 0;
}

/*
 * Opens the node's file the way QEMU's file-posix does, in its order and
 * with its texts: the open first (so a read-only open of a directory gets
 * as far as the type check, a read-write one fails with EISDIR), then the
 * type the driver needs: a regular file for "file", a block or character
 * device for the two device drivers.
 */
static int file_open_fd(BlockDriverState *bs, bool rw, bool direct,
                        GError **errp)
{
    BDRVFileState *s = bs->opaque;
    const char *filename = bs->filename;
    const char *drv = bs->drv->format_name;
    int flags = (rw ? O_RDWR : O_RDONLY) | O_CLOEXEC | (direct ? O_DIRECT : 0);
    struct stat st = { 0 };
    int fd, ret;

    /* a drive without a disc must still open */
    fd = open(filename, flags | (bs->drv == &bdrv_host_cdrom ? O_NONBLOCK : 0));
    if (fd < 0) {
        int err = errno;
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_IO, "Could not open '%s': %s",
                    filename, g_strerror(err));
        return -err;
    }
    if (fstat(fd, &st) < 0) {
        ret = -errno;
        close(fd);
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_IO,
                    "Could not stat '%s': %s", filename, g_strerror(-ret));
        return ret;
    }
    if (!s->device && !S_ISREG(st.st_mode)) {
        close(fd);
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "'%s' driver requires '%s' to be a regular file",
                    drv, filename);
        return -EINVAL;
    }
    if (s->device && !is_device_node(&st)) {
        close(fd);
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "'%s' driver requires '%s' to be either a character or "
                    "block device", drv, filename);
        return -EINVAL;
    }
    ret = rw ? device_writable(fd, &st) : 0;
    if (ret < 0) {
        close(fd);
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_IO,
                    "The device is not writable: %s", g_strerror(-ret));
        return ret;
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
    uint64_t perm, shared;
    int fd, ret;

    if (fname && !*bs->filename) {
        g_free(bs->filename);
        bs->filename = g_strdup(fname);
    }
    if (!*bs->filename) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "Parameter 'filename' is missing");
        return -EINVAL;
    }
    s->device = bs->drv != &bdrv_file;
    s->direct = !!(flags & BDRV_O_NOCACHE);
    s->no_flush = !!(flags & BDRV_O_NO_FLUSH);
    atomic_init(&s->write_gen, 1);
    atomic_init(&s->synced_gen, 0);
    s->fd = -1;
    if (!parse_locking(options, &s->use_lock, errp) ||
        !parse_engine_options(options, flags, errp)) {
        return -EINVAL;
    }
    fd = file_open_fd(bs, !!(flags & BDRV_O_RDWR), s->direct, errp);
    if (fd < 0) {
        return fd;
    }
    s->fd = fd;
    /* Nothing held yet; then what our user asks (a format above us
     * adjusts it before it reads or writes anything). */
    s->perm = 0;
    s->shared = BLK_PERM_ALL;
    bdrv_perm_for_user(flags, &perm, &shared);
    ret = update_locks(s, bs->filename, perm, shared, errp);
    if (ret < 0) {
        close(fd);
        s->fd = -1;
        return ret;
    }
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
    BDRVFileState moved = *s;
    int fd = file_open_fd(bs, !read_only, s->direct, errp);
    int ret;

    if (fd < 0) {
        return fd;
    }
    /* The new descriptor takes over the locks as they stand: the generic
     * layer checked any new right before (and drops old ones after). */
    if (s->use_lock) {
        moved.fd = fd;
        moved.locked_perm = moved.locked_unshared = 0;
        ret = apply_locks(&moved, s->locked_perm, s->locked_unshared, false,
                          errp);
        if (ret < 0) {
            close(fd);
            return ret;
        }
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

    if (fault_inject_hit(FAULT_READ) < 0) {
        return -EIO;
    }

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

static int pwrite_all(BlockDriverState *bs, int64_t offset, int64_t bytes,
                      const void *buf)
{
    BDRVFileState *s = bs->opaque;
    const uint8_t *p = buf;

    if (fault_inject_hit(FAULT_WRITE) < 0) {
        return -EIO;
    }
    if (power_cut_write(s->fd, offset, bytes)) {
        return 0;   /* power-cut filter: the write never reaches the file */
    }

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

/* The errors that mean "this device cannot do that" (QEMU's list). */
static int device_errno(int err)
{
    return err == EINVAL || err == ENODEV || err == ENOSYS ||
           err == EOPNOTSUPP || err == ENOTTY ? -ENOTSUP : -err;
}

/* A block device zeroes (BLKZEROOUT) or discards (BLKDISCARD) a range
 * itself; anything else, or a range it cannot take, is -ENOTSUP: the
 * caller then writes zeroes, and a discard is dropped. */
static int device_range_ioctl(int fd, unsigned long req, int64_t offset,
                              int64_t bytes)
{
    uint64_t range[2] = { (uint64_t)offset, (uint64_t)bytes };
    struct stat st;

    if (fstat(fd, &st) < 0) {
        return -errno;
    }
    if (!S_ISBLK(st.st_mode)) {
        return -ENOTSUP;
    }
    return ioctl(fd, req, range) == 0 ? 0 : device_errno(errno);
}

static int write_zeroes(BlockDriverState *bs, int64_t offset, int64_t bytes,
                        int flags)
{
    BDRVFileState *s = bs->opaque;
    struct stat st;

    if (fault_inject_hit(FAULT_WRITE) < 0) {
        return -EIO;
    }
    if (power_cut_write(s->fd, offset, bytes)) {
        return 0;   /* power-cut filter */
    }

    if (s->device) {
        return device_range_ioctl(s->fd, BLKZEROOUT, offset, bytes);
    }
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

static int punch_hole(BlockDriverState *bs, int64_t offset, int64_t bytes)
{
    BDRVFileState *s = bs->opaque;

    if (fault_inject_hit(FAULT_WRITE) < 0) {
        return -EIO;
    }
    if (power_cut_write(s->fd, offset, bytes)) {
        return 0;   /* power-cut filter */
    }
    if (s->device) {
        int ret = device_range_ioctl(s->fd, BLKDISCARD, offset, bytes);
        return ret == -ENOTSUP ? 0 : ret;   /* a discard is only advice */
    }

    if (fallocate(s->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                  offset, bytes) < 0 && errno != EOPNOTSUPP) {
        return -errno;
    }
    return 0;
}

/*
 * Every request that may have changed the file counts once it is over
 * (also when it failed half way): a flush that starts afterwards must
 * sync it, and one that finds nothing counted since the last completed
 * sync need not call fdatasync at all.
 */
static int truncate_file(BlockDriverState *bs, int64_t size, GError **errp);

static int counted(BlockDriverState *bs, int ret)
{
    BDRVFileState *s = bs->opaque;

    atomic_fetch_add(&s->write_gen, 1);
    return ret;
}

static int file_pwrite(BlockDriverState *bs, int64_t offset, int64_t bytes,
                       const void *buf)
{
    return counted(bs, pwrite_all(bs, offset, bytes, buf));
}

static int file_pwrite_zeroes(BlockDriverState *bs, int64_t offset,
                              int64_t bytes, int flags)
{
    return counted(bs, write_zeroes(bs, offset, bytes, flags));
}

static int file_pdiscard(BlockDriverState *bs, int64_t offset, int64_t bytes)
{
    return counted(bs, punch_hole(bs, offset, bytes));
}

static int file_truncate(BlockDriverState *bs, int64_t size, GError **errp)
{
    return counted(bs, truncate_file(bs, size, errp));
}

static int file_flush(BlockDriverState *bs)
{
    BDRVFileState *s = bs->opaque;
    uint64_t gen, synced;

    if (fault_inject_hit(FAULT_FLUSH) < 0) {
        return -EIO;
    }

    if (s->no_flush) {
        return 0;
    }
    gen = atomic_load(&s->write_gen);
    if (gen == atomic_load(&s->synced_gen)) {
        return 0;
    }
    if (power_cut_flush(s->fd)) {
        return 0;   /* power-cut filter: nothing more becomes durable */
    }
    if (fdatasync(s->fd) < 0) {
        return -errno;
    }
    fault_inject_note_sync();
    /* covers every write counted before gen was read; never go back */
    synced = atomic_load(&s->synced_gen);
    while (synced < gen &&
           !atomic_compare_exchange_weak(&s->synced_gen, &synced, gen)) {
    }
    return 0;
}

static int64_t file_getlength(BlockDriverState *bs)
{
    BDRVFileState *s = bs->opaque;
    struct stat st;

    if (s->device) {
        /* st_size is 0 for device nodes; their end is their size */
        off_t end = lseek(s->fd, 0, SEEK_END);
        return end < 0 ? -errno : end;
    }
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

/*
 * As QEMU's file driver: a file that grows from empty gets its first
 * block written (zeroes), so its start is allocated -- QEMU does it to
 * probe O_DIRECT alignment; measure and map then see that block as
 * data, and strata's files must look the same.
 */
static int allocate_first_block(int fd, int64_t size)
{
    char buf[4096] = { 0 };
    size_t n = size < (int64_t)sizeof(buf) ? 512 : sizeof(buf);
    ssize_t done;

    do {
        done = pwrite(fd, buf, n, 0);
    } while (done < 0 && errno == EINTR);
    return done < 0 ? -errno : 0;
}

/* A device keeps its size: a "truncate" within it changes nothing (as
 * QEMU's inexact truncate), one beyond it is refused. */
static int device_truncate(BlockDriverState *bs, int64_t size, GError **errp)
{
    int64_t len = file_getlength(bs);

    if (len < 0) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_IO,
                    "Failed to get the device's length: %s",
                    g_strerror((int)-len));
        return (int)len;
    }
    if (size > len) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "Cannot grow device files");
        return -EINVAL;
    }
    return 0;
}

static int truncate_file(BlockDriverState *bs, int64_t size, GError **errp)
{
    BDRVFileState *s = bs->opaque;
    struct stat st;

    if (fault_inject_hit(FAULT_WRITE) < 0) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_IO,
                    "Failed to resize the file: %s", g_strerror(EIO));
        return -EIO;
    }
    if (power_cut_write(s->fd, size, -1)) {
        return 0;   /* power-cut filter */
    }
    if (s->device) {
        return device_truncate(bs, size, errp);
    }
    if (fstat(s->fd, &st) < 0) {
        st.st_size = -1;
    }
    if (ftruncate(s->fd, size) < 0) {
        int err = errno;
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_IO,
                    "Failed to resize the file: %s", g_strerror(err));
        return -err;
    }
    if (st.st_size == 0 && size > 0) {
        /* best effort, as QEMU's: the file has its size either way */
        allocate_first_block(s->fd, size);
    }
    return 0;
}

/* Writes zeroes over [from, to) of fd: preallocation=full. */
static int file_write_zeroes_to(int fd, int64_t from, int64_t to)
{
    g_autofree char *buf = g_malloc0(65536);

    while (from < to) {
        ssize_t n = pwrite(fd, buf, MIN(to - from, 65536), from);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0) {
            return -errno;
        }
        from += n;
    }
    return fsync(fd) < 0 ? -errno : 0;
}

/*
 * qemu-img resize --preallocation on a plain file: falloc reserves the
 * new area, full writes zeroes over it; a failure puts the old length
 * back so nothing changed.  QEMU's texts.
 */
static int file_truncate_prealloc(BlockDriverState *bs, int64_t size,
                                  int prealloc, GError **errp)
{
    BDRVFileState *s = bs->opaque;
    struct stat st;
    int ret = 0;

    if (prealloc == BDRV_PREALLOC_OFF) {
        return file_truncate(bs, size, errp);
    }
    if (s->device) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_NOT_SUPPORTED,
                    "Preallocation mode '%s' unsupported for this "
                    "non-regular file", bdrv_prealloc_name(prealloc));
        return -ENOTSUP;
    }
    if (fstat(s->fd, &st) < 0) {
        ret = -errno;
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_IO,
                    "Could not stat file: %s", g_strerror(-ret));
        return ret;
    }
    if (st.st_size > size) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_NOT_SUPPORTED,
                    "Cannot use preallocation for shrinking files");
        return -ENOTSUP;
    }
    if (prealloc == BDRV_PREALLOC_FALLOC) {
        if (size != st.st_size) {
            ret = -posix_fallocate(s->fd, st.st_size, size - st.st_size);
        }
        if (ret < 0) {
            g_set_error(errp, BDRV_ERROR, BDRV_ERROR_IO,
                        "Could not preallocate new data: %s",
                        g_strerror(-ret));
        }
    } else if (prealloc == BDRV_PREALLOC_FULL) {
        if (ftruncate(s->fd, size) < 0) {
            ret = -errno;
            g_set_error(errp, BDRV_ERROR, BDRV_ERROR_IO,
                        "Could not resize file: %s", g_strerror(-ret));
            return ret;
        }
        ret = file_write_zeroes_to(s->fd, st.st_size, size);
        if (ret < 0) {
            g_set_error(errp, BDRV_ERROR, BDRV_ERROR_IO,
                        "Could not write zeros for preallocation: %s",
                        g_strerror(-ret));
        }
    } else {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_NOT_SUPPORTED,
                    "Unsupported preallocation mode: %s",
                    bdrv_prealloc_name(prealloc));
        return -ENOTSUP;
    }
    if (ret < 0 && ftruncate(s->fd, st.st_size) < 0) {
        strata_error("Failed to restore old file length: %s",
                     g_strerror(errno));
    }
    return ret;
}

static int file_block_status(BlockDriverState *bs, int64_t offset,
                             int64_t bytes, int64_t *pnum, int64_t *map,
                             BlockDriverState **file)
{
    BDRVFileState *s = bs->opaque;
    off_t data;
    int ret;

    *map = offset;
    *file = bs;
    if (s->device) {
        /* a device tells no holes: all of it is data */
        *pnum = bytes;
        return BDRV_BLOCK_DATA | BDRV_BLOCK_OFFSET_VALID | BDRV_BLOCK_ALLOCATED;
    }
    data = lseek(s->fd, offset, SEEK_DATA);
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

/* True if the block device at filename is a CD-ROM drive (QEMU's test:
 * the drive-status ioctl works on it).  Only block devices are opened to
 * ask: opening some character devices has effects of its own (a
 * watchdog starts counting). */
static bool is_cdrom(const char *filename, const struct stat *st)
{
    int fd;
    bool cd;

    if (!S_ISBLK(st->st_mode)) {
        return false;
    }
    fd = open(filename, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) {
        return false;
    }
    cd = ioctl(fd, CDROM_DRIVE_STATUS, CDSL_CURRENT) >= 0;
    close(fd);
    return cd;
}

const char *file_protocol_for(const char *filename)
{
    struct stat st;

    if (stat(filename, &st) < 0 || !is_device_node(&st)) {
        return "file";
    }
    return is_cdrom(filename, &st) ? "host_cdrom" : "host_device";
}

/*
 * "Creating" an image on a device, as QEMU does it: the device must
 * already be at least as large as asked, and its first sector is zeroed
 * so that no earlier image header is probed there.  Nothing else on the
 * device is touched.
 */
static bool device_prepare(const char *filename, uint64_t size, GError **errp)
{
    static const uint8_t zero[512];
    BDRVFileState s = { .device = true, .shared = BLK_PERM_ALL,
                        .use_lock = have_ofd_locks() };
    int fd = open(filename, O_RDWR | O_CLOEXEC);
    off_t len;
    bool ok = false;

    if (fd < 0) {
        int err = errno;
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_IO,
                    "Protocol driver 'host_device' does not support image "
                    "creation, and opening the image failed: Could not open "
                    "'%s': %s", filename, g_strerror(err));
        return false;
    }
    s.fd = fd;
    if (update_locks(&s, filename, BLK_PERM_WRITE, BLK_PERM_ALL, errp) < 0) {
        goto out;
    }
    len = lseek(fd, 0, SEEK_END);
    if (len < 0 || (uint64_t)len < size) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    len < 0 ? "Failed to inquire the new image file's length"
                            : "Cannot grow device files");
        goto out;
    }
    if (len > 0 && device_range_ioctl(fd, BLKZEROOUT, 0, 512) < 0 &&
        pwrite(fd, zero, MIN(len, 512), 0) < 0) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_IO,
                    "Failed to clear the new image's first sector: %s",
                    g_strerror(errno));
        goto out;
    }
    ok = fdatasync(fd) == 0 || errno == EINVAL;
    if (!ok) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_IO,
                    "Failed to clear the new image's first sector: %s",
                    g_strerror(errno));
    }
out:
    close(fd);
    return ok;
}

/*
 * Creates (or empties) a host file of the given size.  An existing file is
 * emptied only after its locks show that nobody, in this process or
 * another, has it open: `convert -O qcow2 x x` must not wipe x.  On a
 * device, see device_prepare.
 */
bool file_create_with_size(const char *filename, uint64_t size,
                           GError **errp)
{
    BDRVFileState s = { .shared = BLK_PERM_ALL,
                        .use_lock = have_ofd_locks() };
    struct stat st;
    bool existed;
    int fd;

    if (strcmp(file_protocol_for(filename), "file")) {
        return device_prepare(filename, size, errp);
    }
    existed = lstat(filename, &st) == 0;
    fd = open(filename, O_RDWR | O_CREAT | O_CLOEXEC, 0644);

    if (fd < 0) {
        int err = errno;
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_IO, "Could not create '%s': %s",
                    filename, g_strerror(err));
        return false;
    }
    /* As QEMU: we write and resize; others may not resize meanwhile. */
    s.fd = fd;
    if (update_locks(&s, filename, BLK_PERM_WRITE | BLK_PERM_RESIZE,
                     BLK_PERM_ALL & ~BLK_PERM_RESIZE, errp) < 0) {
        close(fd);
        return false;
    }
    /* A file that cannot grow that far (EFBIG) fails before it is
     * emptied: its old contents stay when the create fails. */
    if ((existed && fstat(fd, &st) == 0 && st.st_size < (off_t)size &&
         ftruncate(fd, (off_t)size) < 0) ||
        ftruncate(fd, 0) < 0 || ftruncate(fd, (off_t)size) < 0) {
        int err = errno;
        close(fd);
        if (!existed) {
            unlink(filename);   /* a failed create leaves nothing behind */
        }
        g_set_error(errp, BDRV_ERROR,
                    err == EFBIG ? BDRV_ERROR_TOO_LARGE : BDRV_ERROR_IO,
                    "Could not resize file: %s", g_strerror(err));
        return false;
    }
    if (size > 0) {
        allocate_first_block(fd, (int64_t)size);
    }
    close(fd);
    return true;
}

/* Writes zeroes over [off, off + len) of fd, in 1 MiB pieces. */
static int write_zeroes_fd(int fd, off_t off, off_t len)
{
    const size_t chunk = 1024 * 1024;
    g_autofree uint8_t *zero = g_malloc0(chunk);

    while (len > 0) {
        ssize_t n = pwrite(fd, zero, MIN((off_t)chunk, len), off);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            return -errno;
        }
        off += n;
        len -= n;
    }
    return 0;
}

/*
 * falloc from start to len: the holes below the end of the file one by
 * one, then the rest by growing the file from its end, in one call, as
 * QEMU's falloc does.  ext4 places a range inside the file's length, and
 * a range that begins on data, in pieces, whose extents then cost it a
 * block of extent tree when the data is written (iotest 125 measures
 * that).
 */
static int falloc_range(int fd, off_t start, off_t len)
{
    struct stat st;
    off_t off = start, eof;
    int err = 0;

    if (fstat(fd, &st) < 0) {
        return -errno;
    }
    eof = MIN(st.st_size, len);
    while (!err && off < eof) {
        off_t hole = lseek(fd, off, SEEK_HOLE);
        off_t data;

        if (hole < 0 || hole >= eof) {
            break;
        }
        data = lseek(fd, hole, SEEK_DATA);
        if (data < 0 || data > eof) {
            data = eof;
        }
        err = posix_fallocate(fd, hole, data - hole);
        off = data;
    }
    if (!err && st.st_size < len) {
        err = posix_fallocate(fd, st.st_size, len - st.st_size);
    }
    return -err;
}

int file_preallocate(BlockDriverState *bs, int64_t start, int64_t len,
                     bool full)
{
    BDRVFileState *s = bs->opaque;
    off_t off = start;

    if (bs->drv != &bdrv_file) {
        return -ENOTSUP;
    }
    /* What was written so far gets its place on disk first, so the
     * reserved range follows it (QEMU's order: it syncs its metadata
     * before it allocates the data area) and the file keeps few extents
     * -- more would cost the file system another block when the data
     * is written (iotest 125 measures that). */
    if (fdatasync(s->fd) < 0) {
        return -errno;
    }
    if (!full) {
        return falloc_range(s->fd, start, len);
    }
    /* Only the holes: the range may already hold metadata (qcow2). */
    while (off < len) {
        off_t hole = lseek(s->fd, off, SEEK_HOLE);
        off_t data;
        int ret;

        if (hole < 0 || hole >= len) {
            break;
        }
        data = lseek(s->fd, hole, SEEK_DATA);
        if (data < 0 || data > len) {
            data = len;
        }
        ret = write_zeroes_fd(s->fd, hole, data - hole);
        if (ret < 0) {
            return ret;
        }
        off = data;
    }
    return fdatasync(s->fd) < 0 ? -errno : 0;
}

bool file_parse_prealloc(BlockOpts *opts, bool *on, bool *full,
                         GError **errp)
{
    const char *v = bdrv_opts_get(opts, "preallocation");

    *on = *full = false;
    if (!v || !strcmp(v, "off")) {
        return true;
    }
    if (!strcmp(v, "falloc") || !strcmp(v, "full")) {
        *on = true;
        *full = !strcmp(v, "full");
        return true;
    }
    if (!strcmp(v, "metadata")) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "Unsupported preallocation mode: %s", v);
    } else {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "invalid parameter value: %s", v);
    }
    return false;
}

/* A new host file of `size`, preallocated as opts say. */
bool file_create_prealloc(const char *filename, BlockOpts *opts,
                          uint64_t size, GError **errp)
{
    g_autoptr(BlockDriverState) bs = NULL;
    BlockOpts *fopts;
    bool on, full;
    int ret;

    if (!file_parse_prealloc(opts, &on, &full, errp)) {
        return false;
    }
    if (on && (strcmp(file_protocol_for(filename), "file") ||
               !bdrv_create_target_is_host_file(filename))) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_NOT_SUPPORTED,
                    "Unsupported preallocation mode '%s'",
                    bdrv_opts_get(opts, "preallocation"));
        return false;
    }
    if (!bdrv_create_target(filename, size, errp)) {
        return false;
    }
    if (!on || !size) {
        return true;
    }
    fopts = bdrv_opts_new();
    bdrv_opts_set(fopts, "driver", file_protocol_for(filename));
    bs = bdrv_open(filename, fopts, BDRV_O_RDWR, errp);
    if (!bs) {
        return false;
    }
    ret = file_preallocate(bs, 0, (int64_t)size, full);
    if (ret < 0) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_IO,
                    "Could not preallocate data for the new file: %s",
                    g_strerror(-ret));
        return false;
    }
    return true;
}

static bool file_create(const char *filename, BlockOpts *opts, GError **errp)
{
    uint64_t size;

    if (!bdrv_opts_get_size(opts, "size", 0, &size, errp)) {
        return false;
    }
    return file_create_prealloc(filename, opts, size, errp);
}

#define FILE_POSIX_CALLS                                        \
    .instance_size = sizeof(BDRVFileState),                     \
    .is_protocol = true,                                        \
    .open = file_open,                                          \
    .close = file_close,                                        \
    .reopen = file_reopen,                                      \
    .set_perm = file_set_perm,                                  \
    .create = file_create,                                      \
    .pread = file_pread,                                        \
    .pwrite = file_pwrite,                                      \
    .pwrite_zeroes = file_pwrite_zeroes,                        \
    .pdiscard = file_pdiscard,                                  \
    .flush = file_flush,                                        \
    .truncate = file_truncate,                                  \
    .truncate_prealloc = file_truncate_prealloc,                \
    .getlength = file_getlength,                                \
    .get_allocated_file_size = file_get_allocated_file_size,    \
    .block_status = file_block_status

BlockDriver bdrv_file = {
    .format_name = "file",
    FILE_POSIX_CALLS,
};

BlockDriver bdrv_host_device = {
    .format_name = "host_device",
    .fixed_length = true,
    FILE_POSIX_CALLS,
};

BlockDriver bdrv_host_cdrom = {
    .format_name = "host_cdrom",
    .fixed_length = true,
    FILE_POSIX_CALLS,
};
