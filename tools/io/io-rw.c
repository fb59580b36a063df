/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * strata-io's data commands: read, readv, write, writev, aio_read,
 * aio_write, aio_flush and discard, with the part of a BlockBackend that
 * qemu-io relies on: requests reaching past the end of the image fail
 * with EIO, write-through mode (qemu-io's default) flushes after every
 * write, and discard=ignore drops discards.  Names, options, messages
 * and output are qemu-io's (QEMU 7.2).  Requests are synchronous; the
 * aio_* commands only hold back what they print (see below).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "io-cmds.h"
#include "io-util.h"

/* ---- The BlockBackend layer qemu-io has above the node ---- */

static int check_byte_request(IoState *s, int64_t offset, int64_t bytes)
{
    int64_t len;

    if (bytes < 0 || offset < 0) {
        return -EIO;
    }
    len = bdrv_getlength(s->bs);
    if (len < 0) {
        return (int)len;
    }
    if (offset > len || len - offset < bytes) {
        return -EIO;
    }
    return 0;
}

static int do_pread(IoState *s, void *buf, int64_t offset, int64_t bytes)
{
    int ret = check_byte_request(s, offset, bytes);

    return ret < 0 ? ret : bdrv_pread(s->bs, offset, bytes, buf);
}

/* Write-through (and -f, FUA) is a flush after the write. */
static int finish_write(IoState *s, int ret, bool fua)
{
    if (ret == 0 && (fua || s->writethrough)) {
        ret = bdrv_flush(s->bs);
    }
    return ret;
}

static int do_pwrite(IoState *s, const void *buf, int64_t offset,
                     int64_t bytes, bool fua)
{
    int ret = check_byte_request(s, offset, bytes);

    if (ret < 0) {
        return ret;
    }
    return finish_write(s, bdrv_pwrite(s->bs, offset, bytes, buf), fua);
}

static int do_pwrite_zeroes(IoState *s, int64_t offset, int64_t bytes,
                            int flags, bool fua)
{
    int ret = check_byte_request(s, offset, bytes);

    if (ret < 0) {
        return ret;
    }
    if (s->discard_ignore) {
        flags &= ~BDRV_REQ_MAY_UNMAP;
    }
    return finish_write(s, bdrv_pwrite_zeroes(s->bs, offset, bytes, flags),
                        fua);
}

static int do_pdiscard(IoState *s, int64_t offset, int64_t bytes)
{
    int ret = check_byte_request(s, offset, bytes);

    if (ret < 0 || s->discard_ignore) {
        return ret;
    }
    return bdrv_pdiscard(s->bs, offset, bytes);
}

/* 1 if this layer (not a backing file) decides the content, 0 if not. */
static void now(struct timespec *t)
{
    clock_gettime(CLOCK_MONOTONIC, t);
}

/* Bytes all equal to pattern? */
static bool matches_pattern(const uint8_t *buf, int64_t len, int pattern)
{
    for (int64_t i = 0; i < len; i++) {
        if (buf[i] != pattern) {
            return false;
        }
    }
    return true;
}

/*
 * The lengths of readv/writev/aio_*: their sum into *total.  Prints
 * qemu-io's message and returns false on a bad one.
 */
static bool parse_lengths(char **argv, int n, int64_t *total)
{
    int64_t count = 0;

    for (int i = 0; i < n; i++) {
        int64_t len = io_cvtnum(argv[i]);

        if (len < 0) {
            io_print_cvtnum_err(len, argv[i]);
            return false;
        }
        if (len > IO_REQUEST_MAX_BYTES) {
            printf("Argument '%s' exceeds maximum size %" PRIu64 "\n",
                   argv[i], (uint64_t)IO_REQUEST_MAX_BYTES);
            return false;
        }
        if (count > IO_REQUEST_MAX_BYTES - len) {
            printf("The total number of bytes exceed the maximum size %"
                   PRIu64 "\n", (uint64_t)IO_REQUEST_MAX_BYTES);
            return false;
        }
        count += len;
    }
    *total = count;
    return true;
}

/* ---- read ---- */

static void read_help(void)
{
    printf(
"\n"
" reads a range of bytes from the given offset\n"
"\n"
" Example:\n"
" 'read -v 512 1k' - dumps 1 kilobyte read from 512 bytes into the file\n"
"\n"
" Reads a segment of the currently open file, optionally dumping it to the\n"
" standard output stream (with -v option) for subsequent inspection.\n"
" -b, -- read from the VM state rather than the virtual disk\n"
" -C, -- report statistics in a machine parsable format\n"
" -l, -- length for pattern verification (only with -P)\n"
" -p, -- ignored for backwards compatibility\n"
" -P, -- use a pattern to verify read data\n"
" -q, -- quiet mode, do not show I/O statistics\n"
" -s, -- start offset for pattern verification (only with -P)\n"
" -v, -- dump buffer to standard output\n"
"\n");
}

static int read_f(IoState *s, int argc, char **argv);

static const IoCmd read_cmd = {
    .name = "read",
    .altname = "r",
    .func = read_f,
    .argmin = 2,
    .argmax = -1,
    .args = "[-abCqv] [-P pattern [-s off] [-l len]] off len",
    .oneline = "reads a number of bytes at a specified offset",
    .help = read_help,
};

static int read_f(IoState *s, int argc, char **argv)
{
    bool cflag = false, qflag = false, vflag = false;
    bool pflag = false, sflag = false, lflag = false, bflag = false;
    int64_t offset, count, poff = 0, pcount = 0;
    int c, ret, pattern = 0;
    struct timespec t1, t2;
    char *buf;

    while ((c = getopt(argc, argv, "bCl:pP:qs:v")) != -1) {
        switch (c) {
        case 'b':
            bflag = true;
            break;
        case 'C':
            cflag = true;
            break;
        case 'l':
            lflag = true;
            pcount = io_cvtnum(optarg);
            if (pcount < 0) {
                io_print_cvtnum_err(pcount, optarg);
                return (int)pcount;
            }
            break;
        case 'p':
            break; /* ignored, as in qemu-io */
        case 'P':
            pflag = true;
            pattern = io_parse_pattern(optarg);
            if (pattern < 0) {
                return -EINVAL;
            }
            break;
        case 'q':
            qflag = true;
            break;
        case 's':
            sflag = true;
            poff = io_cvtnum(optarg);
            if (poff < 0) {
                io_print_cvtnum_err(poff, optarg);
                return (int)poff;
            }
            break;
        case 'v':
            vflag = true;
            break;
        default:
            io_command_usage(&read_cmd);
            return -EINVAL;
        }
    }
    if (optind != argc - 2) {
        io_command_usage(&read_cmd);
        return -EINVAL;
    }
    offset = io_cvtnum(argv[optind]);
    if (offset < 0) {
        io_print_cvtnum_err(offset, argv[optind]);
        return (int)offset;
    }
    optind++;
    count = io_cvtnum(argv[optind]);
    if (count < 0) {
        io_print_cvtnum_err(count, argv[optind]);
        return (int)count;
    } else if (count > IO_REQUEST_MAX_BYTES) {
        printf("length cannot exceed %" PRIu64 ", given %s\n",
               (uint64_t)IO_REQUEST_MAX_BYTES, argv[optind]);
        return -EINVAL;
    }
    if (!pflag && (lflag || sflag)) {
        io_command_usage(&read_cmd);
        return -EINVAL;
    }
    if (!lflag) {
        pcount = count - poff;
    }
    if (pcount < 0 || pcount + poff > count) {
        printf("pattern verification range exceeds end of read data\n");
        return -EINVAL;
    }
    if (bflag) {
        if (offset % BDRV_SECTOR_SIZE) {
            printf("%" PRId64 " is not a sector-aligned value for 'offset'\n",
                   offset);
            return -EINVAL;
        }
        if (count % BDRV_SECTOR_SIZE) {
            printf("%" PRId64 " is not a sector-aligned value for 'count'\n",
                   count);
            return -EINVAL;
        }
    }

    buf = io_alloc(count, 0xab);
    now(&t1);
    /* No VM state area in strata images. */
    ret = bflag ? -ENOTSUP : do_pread(s, buf, offset, count);
    now(&t2);
    if (ret < 0) {
        printf("read failed: %s\n", strerror(-ret));
        goto out;
    }
    ret = 0;
    if (pflag && !matches_pattern((uint8_t *)buf + poff, pcount, pattern)) {
        printf("Pattern verification failed at offset %" PRId64 ", %"
               PRId64 " bytes\n", offset + poff, pcount);
        ret = -EINVAL;
    }
    if (qflag) {
        goto out;
    }
    if (vflag) {
        io_dump_buffer(stdout, buf, offset, count);
    }
    t2 = io_tsub(t2, t1);
    io_print_report(stdout, "read", &t2, offset, count, count, 1, cflag);
out:
    io_free(buf);
    return ret;
}

/* ---- readv ---- */

static void readv_help(void)
{
    printf(
"\n"
" reads a range of bytes from the given offset into multiple buffers\n"
"\n"
" Example:\n"
" 'readv -v 512 1k 1k ' - dumps 2 kilobytes read from 512 bytes into the file\n"
"\n"
" Reads a segment of the currently open file, optionally dumping it to the\n"
" standard output stream (with -v option) for subsequent inspection.\n"
" Uses multiple iovec buffers if more than one byte range is specified.\n"
" -C, -- report statistics in a machine parsable format\n"
" -P, -- use a pattern to verify read data\n"
" -v, -- dump buffer to standard output\n"
" -q, -- quiet mode, do not show I/O statistics\n"
"\n");
}

static int readv_f(IoState *s, int argc, char **argv);

static const IoCmd readv_cmd = {
    .name = "readv",
    .func = readv_f,
    .argmin = 2,
    .argmax = -1,
    .args = "[-Cqv] [-P pattern] off len [len..]",
    .oneline = "reads a number of bytes at a specified offset",
    .help = readv_help,
};

static int readv_f(IoState *s, int argc, char **argv)
{
    bool cflag = false, qflag = false, vflag = false, pflag = false;
    int c, ret, pattern = 0;
    int64_t offset, size;
    struct timespec t1, t2;
    char *buf;

    while ((c = getopt(argc, argv, "CP:qv")) != -1) {
        switch (c) {
        case 'C':
            cflag = true;
            break;
        case 'P':
            pflag = true;
            pattern = io_parse_pattern(optarg);
            if (pattern < 0) {
                return -EINVAL;
            }
            break;
        case 'q':
            qflag = true;
            break;
        case 'v':
            vflag = true;
            break;
        default:
            io_command_usage(&readv_cmd);
            return -EINVAL;
        }
    }
    if (optind > argc - 2) {
        io_command_usage(&readv_cmd);
        return -EINVAL;
    }
    offset = io_cvtnum(argv[optind]);
    if (offset < 0) {
        io_print_cvtnum_err(offset, argv[optind]);
        return (int)offset;
    }
    optind++;
    if (!parse_lengths(&argv[optind], argc - optind, &size)) {
        return -EINVAL;
    }

    buf = io_alloc(size, 0xab);
    now(&t1);
    ret = do_pread(s, buf, offset, size);
    now(&t2);
    if (ret < 0) {
        printf("readv failed: %s\n", strerror(-ret));
        goto out;
    }
    ret = 0;
    if (pflag && !matches_pattern((uint8_t *)buf, size, pattern)) {
        printf("Pattern verification failed at offset %" PRId64 ", %"
               PRId64 " bytes\n", offset, size);
        ret = -EINVAL;
    }
    if (qflag) {
        goto out;
    }
    if (vflag) {
        io_dump_buffer(stdout, buf, offset, size);
    }
    t2 = io_tsub(t2, t1);
    io_print_report(stdout, "read", &t2, offset, size, size, 1, cflag);
out:
    io_free(buf);
    return ret;
}

/* ---- write ---- */

static void write_help(void)
{
    printf(
"\n"
" writes a range of bytes from the given offset\n"
"\n"
" Example:\n"
" 'write 512 1k' - writes 1 kilobyte at 512 bytes into the open file\n"
"\n"
" Writes into a segment of the currently open file, using a buffer\n"
" filled with a set pattern (0xcdcdcdcd).\n"
" -b, -- write to the VM state rather than the virtual disk\n"
" -c, -- write compressed data with blk_write_compressed\n"
" -f, -- use Force Unit Access semantics\n"
" -n, -- with -z, don't allow slow fallback\n"
" -p, -- ignored for backwards compatibility\n"
" -P, -- use different pattern to fill file\n"
" -s, -- use a pattern file to fill the write buffer\n"
" -C, -- report statistics in a machine parsable format\n"
" -q, -- quiet mode, do not show I/O statistics\n"
" -u, -- with -z, allow unmapping\n"
" -z, -- write zeroes using blk_co_pwrite_zeroes\n"
"\n");
}

static int write_f(IoState *s, int argc, char **argv);

static const IoCmd write_cmd = {
    .name = "write",
    .altname = "w",
    .func = write_f,
    .argmin = 2,
    .argmax = -1,
    .flags = IO_CMD_WRITE,
    .args = "[-bcCfnquz] [-P pattern | -s source_file] off len",
    .oneline = "writes a number of bytes at a specified offset",
    .help = write_help,
};

/*
 * A buffer of len bytes holding the file's content, repeated as often as
 * needed to fill it (write -s).
 */
static char *alloc_from_file(size_t len, const char *name)
{
    FILE *f = fopen(name, "r");
    size_t n;
    char *buf;

    if (!f) {
        perror(name);
        return NULL;
    }
    buf = io_alloc(len, 0);
    n = fread(buf, 1, len, f);
    if (ferror(f)) {
        perror(name);
        goto fail;
    }
    if (n == 0) {
        fprintf(stderr, "%s: file is empty\n", name);
        goto fail;
    }
    fclose(f);
    for (size_t pos = n; pos < len; pos += n) {
        memcpy(buf + pos, buf, MIN(n, len - pos));
    }
    return buf;

fail:
    io_free(buf);
    fclose(f);
    return NULL;
}

static int write_f(IoState *s, int argc, char **argv)
{
    bool cflag = false, qflag = false, bflag = false, fua = false;
    bool pflag = false, zflag = false, compress = false, sflag = false;
    int zero_flags = 0;
    int64_t offset, count;
    int c, ret, pattern = 0xcd;
    const char *file_name = NULL;
    struct timespec t1, t2;
    char *buf = NULL;

    while ((c = getopt(argc, argv, "bcCfnpP:qs:uz")) != -1) {
        switch (c) {
        case 'b':
            bflag = true;
            break;
        case 'c':
            compress = true;
            break;
        case 'C':
            cflag = true;
            break;
        case 'f':
            fua = true;
            break;
        case 'n':
            zero_flags |= BDRV_REQ_NO_FALLBACK;
            break;
        case 'p':
            break; /* ignored, as in qemu-io */
        case 'P':
            pflag = true;
            pattern = io_parse_pattern(optarg);
            if (pattern < 0) {
                return -EINVAL;
            }
            break;
        case 'q':
            qflag = true;
            break;
        case 's':
            sflag = true;
            file_name = optarg;
            break;
        case 'u':
            zero_flags |= BDRV_REQ_MAY_UNMAP;
            break;
        case 'z':
            zflag = true;
            break;
        default:
            io_command_usage(&write_cmd);
            return -EINVAL;
        }
    }
    if (optind != argc - 2) {
        io_command_usage(&write_cmd);
        return -EINVAL;
    }
    if (bflag && zflag) {
        printf("-b and -z cannot be specified at the same time\n");
        return -EINVAL;
    }
    if (fua && (bflag || compress)) {
        printf("-f and -b or -c cannot be specified at the same time\n");
        return -EINVAL;
    }
    if ((zero_flags & BDRV_REQ_NO_FALLBACK) && !zflag) {
        printf("-n requires -z to be specified\n");
        return -EINVAL;
    }
    if ((zero_flags & BDRV_REQ_MAY_UNMAP) && !zflag) {
        printf("-u requires -z to be specified\n");
        return -EINVAL;
    }
    if (zflag + pflag + sflag > 1) {
        printf("Only one of -z, -P, and -s "
               "can be specified at the same time\n");
        return -EINVAL;
    }
    offset = io_cvtnum(argv[optind]);
    if (offset < 0) {
        io_print_cvtnum_err(offset, argv[optind]);
        return (int)offset;
    }
    optind++;
    count = io_cvtnum(argv[optind]);
    if (count < 0) {
        io_print_cvtnum_err(count, argv[optind]);
        return (int)count;
    } else if (count > IO_REQUEST_MAX_BYTES &&
               !(zero_flags & BDRV_REQ_NO_FALLBACK)) {
        printf("length cannot exceed %" PRIu64 " without -n, given %s\n",
               (uint64_t)IO_REQUEST_MAX_BYTES, argv[optind]);
        return -EINVAL;
    }
    if (bflag || compress) {
        if (offset % BDRV_SECTOR_SIZE) {
            printf("%" PRId64 " is not a sector-aligned value for 'offset'\n",
                   offset);
            return -EINVAL;
        }
        if (count % BDRV_SECTOR_SIZE) {
            printf("%" PRId64 " is not a sector-aligned value for 'count'\n",
                   count);
            return -EINVAL;
        }
    }
    if (!zflag) {
        if (sflag) {
            buf = alloc_from_file(count, file_name);
            if (!buf) {
                return -EINVAL;
            }
        } else {
            buf = io_alloc(count, pattern);
        }
    }

    now(&t1);
    if (bflag) {
        ret = -ENOTSUP;         /* no VM state area */
    } else if (zflag) {
        ret = do_pwrite_zeroes(s, offset, count, zero_flags, fua);
    } else if (compress) {
        /* The block API has no compressed write. */
        ret = check_byte_request(s, offset, count);
        ret = ret < 0 ? ret : -ENOTSUP;
    } else {
        ret = do_pwrite(s, buf, offset, count, fua);
    }
    now(&t2);
    if (ret < 0) {
        printf("write failed: %s\n", strerror(-ret));
        goto out;
    }
    ret = 0;
    if (qflag) {
        goto out;
    }
    t2 = io_tsub(t2, t1);
    io_print_report(stdout, "wrote", &t2, offset, count, count, 1, cflag);
out:
    io_free(buf);
    return ret;
}

/* ---- writev ---- */

static void writev_help(void)
{
    printf(
"\n"
" writes a range of bytes from the given offset source from multiple buffers\n"
"\n"
" Example:\n"
" 'writev 512 1k 1k' - writes 2 kilobytes at 512 bytes into the open file\n"
"\n"
" Writes into a segment of the currently open file, using a buffer\n"
" filled with a set pattern (0xcdcdcdcd).\n"
" -P, -- use different pattern to fill file\n"
" -C, -- report statistics in a machine parsable format\n"
" -f, -- use Force Unit Access semantics\n"
" -q, -- quiet mode, do not show I/O statistics\n"
"\n");
}

static int writev_f(IoState *s, int argc, char **argv);

static const IoCmd writev_cmd = {
    .name = "writev",
    .func = writev_f,
    .argmin = 2,
    .argmax = -1,
    .flags = IO_CMD_WRITE,
    .args = "[-Cfq] [-P pattern] off len [len..]",
    .oneline = "writes a number of bytes at a specified offset",
    .help = writev_help,
};

static int writev_f(IoState *s, int argc, char **argv)
{
    bool cflag = false, qflag = false, fua = false;
    int c, ret, pattern = 0xcd;
    int64_t offset, size;
    struct timespec t1, t2;
    char *buf;

    while ((c = getopt(argc, argv, "CfqP:")) != -1) {
        switch (c) {
        case 'C':
            cflag = true;
            break;
        case 'f':
            fua = true;
            break;
        case 'q':
            qflag = true;
            break;
        case 'P':
            pattern = io_parse_pattern(optarg);
            if (pattern < 0) {
                return -EINVAL;
            }
            break;
        default:
            io_command_usage(&writev_cmd);
            return -EINVAL;
        }
    }
    if (optind > argc - 2) {
        io_command_usage(&writev_cmd);
        return -EINVAL;
    }
    offset = io_cvtnum(argv[optind]);
    if (offset < 0) {
        io_print_cvtnum_err(offset, argv[optind]);
        return (int)offset;
    }
    optind++;
    if (!parse_lengths(&argv[optind], argc - optind, &size)) {
        return -EINVAL;
    }

    buf = io_alloc(size, pattern);
    now(&t1);
    ret = do_pwrite(s, buf, offset, size, fua);
    now(&t2);
    if (ret < 0) {
        printf("writev failed: %s\n", strerror(-ret));
        goto out;
    }
    ret = 0;
    if (qflag) {
        goto out;
    }
    t2 = io_tsub(t2, t1);
    io_print_report(stdout, "wrote", &t2, offset, size, size, 1, cflag);
out:
    io_free(buf);
    return ret;
}

/* ---- aio_read / aio_write / aio_flush ---- */

/*
 * The I/O of an aio_* command is done at once, but what it prints is
 * held back until a point where qemu-io would have seen the request
 * complete: aio_flush, closing the image, or exit.  Output then comes
 * in the same order as qemu-io's for the usual "aio_...; aio_flush".
 */
static GString *aio_pending;
static char *aio_text;
static size_t aio_text_len;

/*
 * Where the completion of a request reports.  One that fails its bounds
 * check never reaches the disk; qemu-io completes those at its next
 * poll, which is as good as now.
 */
static FILE *aio_completion_begin(IoState *s, int64_t offset, int64_t bytes)
{
    FILE *f;

    if (check_byte_request(s, offset, bytes) < 0) {
        return stdout;
    }
    f = open_memstream(&aio_text, &aio_text_len);
    return f ? f : stdout;
}

static void aio_completion_end(FILE *f)
{
    if (f == stdout) {
        return;
    }
    fclose(f);
    if (!aio_pending) {
        aio_pending = g_string_new(NULL);
    }
    g_string_append_len(aio_pending, aio_text, aio_text_len);
    free(aio_text);
    aio_text = NULL;
}

void io_aio_drain(void)
{
    if (aio_pending && aio_pending->len) {
        fwrite(aio_pending->str, 1, aio_pending->len, stdout);
        g_string_truncate(aio_pending, 0);
    }
}


static void aio_read_help(void)
{
    printf(
"\n"
" asynchronously reads a range of bytes from the given offset\n"
"\n"
" Example:\n"
" 'aio_read -v 512 1k 1k ' - dumps 2 kilobytes read from 512 bytes into the file\n"
"\n"
" Reads a segment of the currently open file, optionally dumping it to the\n"
" standard output stream (with -v option) for subsequent inspection.\n"
" The read is performed asynchronously and the aio_flush command must be\n"
" used to ensure all outstanding aio requests have been completed.\n"
" Note that due to its asynchronous nature, this command will be\n"
" considered successful once the request is submitted, independently\n"
" of potential I/O errors or pattern mismatches.\n"
" -C, -- report statistics in a machine parsable format\n"
" -P, -- use a pattern to verify read data\n"
" -i, -- treat request as invalid, for exercising stats\n"
" -v, -- dump buffer to standard output\n"
" -q, -- quiet mode, do not show I/O statistics\n"
"\n");
}

static int aio_read_f(IoState *s, int argc, char **argv);

static const IoCmd aio_read_cmd = {
    .name = "aio_read",
    .func = aio_read_f,
    .argmin = 2,
    .argmax = -1,
    .args = "[-Ciqv] [-P pattern] off len [len..]",
    .oneline = "asynchronously reads a number of bytes",
    .help = aio_read_help,
};

/* Like readv, except that a failed request does not fail the command:
 * qemu-io only learns about it after the command has returned. */
static int aio_read_f(IoState *s, int argc, char **argv)
{
    bool cflag = false, qflag = false, vflag = false, pflag = false;
    int c, ret, pattern = 0;
    int64_t offset, size;
    struct timespec t1, t2;
    FILE *out;
    char *buf;

    while ((c = getopt(argc, argv, "CP:iqv")) != -1) {
        switch (c) {
        case 'C':
            cflag = true;
            break;
        case 'P':
            pflag = true;
            pattern = io_parse_pattern(optarg);
            if (pattern < 0) {
                return -EINVAL;
            }
            break;
        case 'i':
            printf("injecting invalid read request\n");
            return 0;
        case 'q':
            qflag = true;
            break;
        case 'v':
            vflag = true;
            break;
        default:
            io_command_usage(&aio_read_cmd);
            return -EINVAL;
        }
    }
    if (optind > argc - 2) {
        io_command_usage(&aio_read_cmd);
        return -EINVAL;
    }
    offset = io_cvtnum(argv[optind]);
    if (offset < 0) {
        io_print_cvtnum_err(offset, argv[optind]);
        return (int)offset;
    }
    optind++;
    if (!parse_lengths(&argv[optind], argc - optind, &size)) {
        return -EINVAL;
    }

    buf = io_alloc(size, 0xab);
    now(&t1);
    ret = do_pread(s, buf, offset, size);
    now(&t2);
    out = aio_completion_begin(s, offset, size);
    if (ret < 0) {
        fprintf(out, "readv failed: %s\n", strerror(-ret));
        goto out;
    }
    if (pflag && !matches_pattern((uint8_t *)buf, size, pattern)) {
        fprintf(out, "Pattern verification failed at offset %" PRId64 ", %"
                PRId64 " bytes\n", offset, size);
    }
    if (qflag) {
        goto out;
    }
    if (vflag) {
        io_dump_buffer(out, buf, offset, size);
    }
    t2 = io_tsub(t2, t1);
    io_print_report(out, "read", &t2, offset, size, size, 1, cflag);
out:
    aio_completion_end(out);
    io_free(buf);
    return 0;
}

static void aio_write_help(void)
{
    printf(
"\n"
" asynchronously writes a range of bytes from the given offset source\n"
" from multiple buffers\n"
"\n"
" Example:\n"
" 'aio_write 512 1k 1k' - writes 2 kilobytes at 512 bytes into the open file\n"
"\n"
" Writes into a segment of the currently open file, using a buffer\n"
" filled with a set pattern (0xcdcdcdcd).\n"
" The write is performed asynchronously and the aio_flush command must be\n"
" used to ensure all outstanding aio requests have been completed.\n"
" Note that due to its asynchronous nature, this command will be\n"
" considered successful once the request is submitted, independently\n"
" of potential I/O errors or pattern mismatches.\n"
" -P, -- use different pattern to fill file\n"
" -C, -- report statistics in a machine parsable format\n"
" -f, -- use Force Unit Access semantics\n"
" -i, -- treat request as invalid, for exercising stats\n"
" -q, -- quiet mode, do not show I/O statistics\n"
" -u, -- with -z, allow unmapping\n"
" -z, -- write zeroes using blk_aio_pwrite_zeroes\n"
"\n");
}

static int aio_write_f(IoState *s, int argc, char **argv);

static const IoCmd aio_write_cmd = {
    .name = "aio_write",
    .func = aio_write_f,
    .argmin = 2,
    .argmax = -1,
    .flags = IO_CMD_WRITE,
    .args = "[-Cfiquz] [-P pattern] off len [len..]",
    .oneline = "asynchronously writes a number of bytes",
    .help = aio_write_help,
};

static int aio_write_f(IoState *s, int argc, char **argv)
{
    bool cflag = false, qflag = false, zflag = false, fua = false;
    int zero_flags = 0;
    int c, ret, pattern = 0xcd;
    int64_t offset, size;
    struct timespec t1, t2;
    FILE *out;
    char *buf = NULL;

    while ((c = getopt(argc, argv, "CfiqP:uz")) != -1) {
        switch (c) {
        case 'C':
            cflag = true;
            break;
        case 'f':
            fua = true;
            break;
        case 'q':
            qflag = true;
            break;
        case 'u':
            zero_flags |= BDRV_REQ_MAY_UNMAP;
            break;
        case 'P':
            pattern = io_parse_pattern(optarg);
            if (pattern < 0) {
                return -EINVAL;
            }
            break;
        case 'i':
            printf("injecting invalid write request\n");
            return 0;
        case 'z':
            zflag = true;
            break;
        default:
            io_command_usage(&aio_write_cmd);
            return -EINVAL;
        }
    }
    if (optind > argc - 2) {
        io_command_usage(&aio_write_cmd);
        return -EINVAL;
    }
    if (zflag && optind != argc - 2) {
        printf("-z supports only a single length parameter\n");
        return -EINVAL;
    }
    if ((zero_flags & BDRV_REQ_MAY_UNMAP) && !zflag) {
        printf("-u requires -z to be specified\n");
        return -EINVAL;
    }
    offset = io_cvtnum(argv[optind]);
    if (offset < 0) {
        io_print_cvtnum_err(offset, argv[optind]);
        return (int)offset;
    }
    optind++;
    if (zflag) {
        size = io_cvtnum(argv[optind]);
        if (size < 0) {
            io_print_cvtnum_err(size, argv[optind]);
            return (int)size;
        }
        now(&t1);
        ret = do_pwrite_zeroes(s, offset, size, zero_flags, fua);
        now(&t2);
    } else {
        if (!parse_lengths(&argv[optind], argc - optind, &size)) {
            return -EINVAL;
        }
        buf = io_alloc(size, pattern);
        now(&t1);
        ret = do_pwrite(s, buf, offset, size, fua);
        now(&t2);
    }
    out = aio_completion_begin(s, offset, size);
    if (ret < 0) {
        fprintf(out, "aio_write failed: %s\n", strerror(-ret));
        goto out;
    }
    if (qflag) {
        goto out;
    }
    t2 = io_tsub(t2, t1);
    io_print_report(out, "wrote", &t2, offset, size, size, 1, cflag);
out:
    aio_completion_end(out);
    io_free(buf);
    return 0;
}

static int aio_flush_f(IoState *s, int argc, char **argv)
{
    io_aio_drain();
    return 0;
}

static const IoCmd aio_flush_cmd = {
    .name = "aio_flush",
    .func = aio_flush_f,
    .oneline = "completes all outstanding aio requests",
};

/* ---- discard ---- */

static void discard_help(void)
{
    printf(
"\n"
" discards a range of bytes from the given offset\n"
"\n"
" Example:\n"
" 'discard 512 1k' - discards 1 kilobyte from 512 bytes into the file\n"
"\n"
" Discards a segment of the currently open file.\n"
" -C, -- report statistics in a machine parsable format\n"
" -q, -- quiet mode, do not show I/O statistics\n"
"\n");
}

static int discard_f(IoState *s, int argc, char **argv);

static const IoCmd discard_cmd = {
    .name = "discard",
    .altname = "d",
    .func = discard_f,
    .argmin = 2,
    .argmax = -1,
    .flags = IO_CMD_WRITE,
    .args = "[-Cq] off len",
    .oneline = "discards a number of bytes at a specified offset",
    .help = discard_help,
};

static int discard_f(IoState *s, int argc, char **argv)
{
    bool cflag = false, qflag = false;
    int64_t offset, bytes;
    struct timespec t1, t2;
    int c, ret;

    while ((c = getopt(argc, argv, "Cq")) != -1) {
        switch (c) {
        case 'C':
            cflag = true;
            break;
        case 'q':
            qflag = true;
            break;
        default:
            io_command_usage(&discard_cmd);
            return -EINVAL;
        }
    }
    if (optind != argc - 2) {
        io_command_usage(&discard_cmd);
        return -EINVAL;
    }
    offset = io_cvtnum(argv[optind]);
    if (offset < 0) {
        io_print_cvtnum_err(offset, argv[optind]);
        return (int)offset;
    }
    optind++;
    bytes = io_cvtnum(argv[optind]);
    if (bytes < 0) {
        io_print_cvtnum_err(bytes, argv[optind]);
        return (int)bytes;
    } else if (bytes > IO_REQUEST_MAX_BYTES) {
        printf("length cannot exceed %" PRIu64 ", given %s\n",
               (uint64_t)IO_REQUEST_MAX_BYTES, argv[optind]);
        return -EINVAL;
    }

    now(&t1);
    ret = do_pdiscard(s, offset, bytes);
    now(&t2);
    if (ret < 0) {
        printf("discard failed: %s\n", strerror(-ret));
        return ret;
    }
    if (!qflag) {
        t2 = io_tsub(t2, t1);
        io_print_report(stdout, "discard", &t2, offset, bytes, bytes, 1, cflag);
    }
    return 0;
}

void io_rw_init_commands(void)
{
    static const IoCmd *const cmds[] = {
        &read_cmd, &readv_cmd, &write_cmd, &writev_cmd, &aio_read_cmd,
        &aio_write_cmd, &aio_flush_cmd, &discard_cmd,
    };

    for (size_t i = 0; i < G_N_ELEMENTS(cmds); i++) {
        io_add_command(cmds[i]);
    }
}
