/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * strata-img compare: compares the guest-visible content of two images
 * (each with its backing chain), skipping ranges both report as zero and
 * reading only what is allocated somewhere.  Exit status as qemu-img:
 * 0 identical, 1 different, 2 open error, 3 allocation query error,
 * 4 read error.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "img-common.h"

#define IO_BUF_SIZE (2 * 1024 * 1024)

enum {
    CMP_IDENTICAL = 0,
    CMP_DIFFERENT = 1,
    CMP_OPEN_ERROR = 2,
    CMP_STATUS_ERROR = 3,
    CMP_READ_ERROR = 4,
};

/* Offset of the first 512-byte sector (from buf's start) holding a
 * non-zero byte, or -1 if buf is all zero. */
static int64_t find_nonzero(const uint8_t *buf, int64_t n)
{
    for (int64_t i = 0; i < n; i += BDRV_SECTOR_SIZE) {
        if (!img_buffer_is_zero(buf + i, MIN(BDRV_SECTOR_SIZE, n - i))) {
            return i;
        }
    }
    return -1;
}

/* Offset of the first 512-byte sector where a and b differ, or -1. */
static int64_t find_mismatch(const uint8_t *a, const uint8_t *b, int64_t n)
{
    if (!memcmp(a, b, n)) {
        return -1;
    }
    for (int64_t i = 0; i < n; i += BDRV_SECTOR_SIZE) {
        if (memcmp(a + i, b + i, MIN(BDRV_SECTOR_SIZE, n - i))) {
            return i;
        }
    }
    return -1;
}

static int read_at(BlockDriverState *bs, const char *filename, int64_t offset,
                   int64_t bytes, uint8_t *buf)
{
    int ret = bdrv_pread(bs, offset, bytes, buf);

    if (ret < 0) {
        img_error("Error while reading offset %" G_GINT64_FORMAT " of %s: %s",
                  offset, filename, g_strerror(-ret));
        return CMP_READ_ERROR;
    }
    return 0;
}

/* Content present in one image only must read as zeroes. */
static int check_empty_sectors(BlockDriverState *bs, int64_t offset,
                               int64_t bytes, const char *filename,
                               uint8_t *buf, bool quiet)
{
    int64_t idx;
    int ret = read_at(bs, filename, offset, bytes, buf);

    if (ret) {
        return ret;
    }
    idx = find_nonzero(buf, bytes);
    if (idx >= 0) {
        img_qprintf(quiet, "Content mismatch at offset %" G_GINT64_FORMAT
                    "!\n", offset + idx);
        return CMP_DIFFERENT;
    }
    return 0;
}

static int compare_images(BlockDriverState *bs1, const char *filename1,
                          BlockDriverState *bs2, const char *filename2,
                          bool strict, bool quiet)
{
    g_autofree uint8_t *buf1 = g_malloc(IO_BUF_SIZE);
    g_autofree uint8_t *buf2 = g_malloc(IO_BUF_SIZE);
    int64_t total_size1, total_size2, total_size, offset, chunk;
    int ret;

    total_size1 = bdrv_getlength(bs1);
    if (total_size1 < 0) {
        img_error("Can't get size of %s: %s", filename1,
                  g_strerror(-total_size1));
        return CMP_READ_ERROR;
    }
    total_size2 = bdrv_getlength(bs2);
    if (total_size2 < 0) {
        img_error("Can't get size of %s: %s", filename2,
                  g_strerror(-total_size2));
        return CMP_READ_ERROR;
    }
    total_size = MIN(total_size1, total_size2);

    if (strict && total_size1 != total_size2) {
        img_qprintf(quiet, "Strict mode: Image size mismatch!\n");
        return CMP_DIFFERENT;
    }

    img_progress_print(0, 100);
    for (offset = 0; offset < total_size; offset += chunk) {
        int64_t pnum1, pnum2;
        int status1, status2;
        bool allocated1, allocated2;

        status1 = bdrv_block_status_above(bs1, offset, total_size1 - offset,
                                          &pnum1, NULL, NULL, NULL);
        if (status1 < 0) {
            img_error("Sector allocation test failed for %s", filename1);
            return CMP_STATUS_ERROR;
        }
        status2 = bdrv_block_status_above(bs2, offset, total_size2 - offset,
                                          &pnum2, NULL, NULL, NULL);
        if (status2 < 0) {
            img_error("Sector allocation test failed for %s", filename2);
            return CMP_STATUS_ERROR;
        }
        if (pnum1 <= 0 || pnum2 <= 0) {
            img_error("Sector allocation test failed for %s",
                      pnum1 <= 0 ? filename1 : filename2);
            return CMP_STATUS_ERROR;
        }
        allocated1 = status1 & BDRV_BLOCK_ALLOCATED;
        allocated2 = status2 & BDRV_BLOCK_ALLOCATED;
        chunk = MIN(pnum1, pnum2);
        chunk = MIN(chunk, total_size - offset);

        if (strict && status1 != status2) {
            img_qprintf(quiet, "Strict mode: Offset %" G_GINT64_FORMAT
                        " block status mismatch!\n", offset);
            return CMP_DIFFERENT;
        }
        if ((status1 & BDRV_BLOCK_ZERO) && (status2 & BDRV_BLOCK_ZERO)) {
            /* both read as zeroes */
        } else if (allocated1 == allocated2) {
            if (allocated1) {
                int64_t at;

                chunk = MIN(chunk, IO_BUF_SIZE);
                ret = read_at(bs1, filename1, offset, chunk, buf1);
                if (!ret) {
                    ret = read_at(bs2, filename2, offset, chunk, buf2);
                }
                if (ret) {
                    return ret;
                }
                at = find_mismatch(buf1, buf2, chunk);
                if (at >= 0) {
                    img_qprintf(quiet, "Content mismatch at offset %"
                                G_GINT64_FORMAT "!\n", offset + at);
                    return CMP_DIFFERENT;
                }
            }
        } else {
            chunk = MIN(chunk, IO_BUF_SIZE);
            if (allocated1) {
                ret = check_empty_sectors(bs1, offset, chunk, filename1, buf1,
                                          quiet);
            } else {
                ret = check_empty_sectors(bs2, offset, chunk, filename2, buf1,
                                          quiet);
            }
            if (ret) {
                return ret;
            }
        }
        img_progress_print(((float)chunk / total_size) * 100, 100);
    }

    if (total_size1 != total_size2) {
        BlockDriverState *bs_over = total_size1 > total_size2 ? bs1 : bs2;
        const char *filename_over =
            total_size1 > total_size2 ? filename1 : filename2;
        int64_t total_size_over = MAX(total_size1, total_size2);

        img_qprintf(quiet, "Warning: Image size mismatch!\n");
        for (offset = total_size; offset < total_size_over; offset += chunk) {
            int status = bdrv_block_status_above(bs_over, offset,
                                                 total_size_over - offset,
                                                 &chunk, NULL, NULL, NULL);
            if (status < 0 || chunk <= 0) {
                img_error("Sector allocation test failed for %s",
                          filename_over);
                return CMP_STATUS_ERROR;
            }
            if ((status & BDRV_BLOCK_ALLOCATED) &&
                !(status & BDRV_BLOCK_ZERO)) {
                chunk = MIN(chunk, IO_BUF_SIZE);
                ret = check_empty_sectors(bs_over, offset, chunk,
                                          filename_over, buf1, quiet);
                if (ret) {
                    return ret;
                }
            }
            img_progress_print(((float)chunk / total_size) * 100, 100);
        }
    }

    img_qprintf(quiet, "Images are identical.\n");
    return CMP_IDENTICAL;
}

int img_compare(int argc, char **argv)
{
    static const struct option long_options[] = {
        { "help", no_argument, NULL, 'h' },
        { "object", required_argument, NULL, OPT_OBJECT },
        { "image-opts", no_argument, NULL, OPT_IMAGE_OPTS },
        { "force-share", no_argument, NULL, 'U' },
        { NULL, 0, NULL, 0 },
    };
    /* -f (o.fmt) names the first image's format, -F the second's. */
    ImgCommonOpts o = IMG_COMMON_OPTS_INIT(0);
    const char *fmt2 = NULL;
    const char *filename1, *filename2;
    bool progress = false, strict = false;
    g_autoptr(BlockDriverState) bs1 = NULL;
    g_autoptr(BlockDriverState) bs2 = NULL;
    int ret, c;

    o.object_status = CMP_OPEN_ERROR;
    while ((c = getopt_long(argc, argv, ":hf:F:T:pqsU", long_options,
                            NULL)) != -1) {
        switch (c) {
        case 'F':
            fmt2 = optarg;
            break;
        case 'p':
            progress = true;
            break;
        case 's':
            strict = true;
            break;
        default:
            img_common_opt(c, argv, &o);
            break;
        }
    }
    /* Progress output would only get in the way of quiet mode. */
    if (o.quiet) {
        progress = false;
    }
    if (optind != argc - 2) {
        img_error_exit("Expecting two image file names");
    }
    filename1 = argv[optind++];
    filename2 = argv[optind++];

    if (!img_common_apply_cache(&o, "source cache")) {
        return CMP_OPEN_ERROR;
    }
    /* Two formats: either one conflicts with --image-opts. */
    if (o.image_opts && (o.fmt || fmt2)) {
        img_error("--image-opts and --format are mutually exclusive");
        return CMP_OPEN_ERROR;
    }

    bs1 = img_open_common(&o, filename1, 0);
    if (!bs1) {
        return CMP_OPEN_ERROR;
    }
    bs2 = img_open(o.image_opts, filename2, fmt2, o.flags, o.quiet);
    if (!bs2) {
        return CMP_OPEN_ERROR;
    }

    img_progress_init(progress, 2.0);
    ret = compare_images(bs1, filename1, bs2, filename2, strict, o.quiet);
    img_progress_end();
    return ret;
}
