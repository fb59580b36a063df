/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * strata-img resize: grows or shrinks an image's virtual disk, like
 * qemu-img resize: [+|-]SIZE, --shrink to allow shrinking, and
 * --preallocation for the area a grow adds; qemu-img's checks, order
 * and texts.
 */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "img-common.h"

enum { OPT_PREALLOCATION = 512, OPT_SHRINK };

/* qemu-img's error for a size the "size" option cannot take. */
static bool parse_resize_size(const char *str, int64_t *out)
{
    uint64_t v;

    if (!strata_parse_size(str, &v) || v > (uint64_t)INT64_MAX) {
        img_error("Parameter 'size' expects a non-negative number below 2^64\n"
                  "Optional suffix k, M, G, T, P or E means kilo-, mega-, "
                  "giga-, tera-, peta-\nand exabytes, respectively.");
        return false;
    }
    *out = (int64_t)v;
    return true;
}

/* The checks qemu-img makes once it knows the current length. */
static bool resize_allowed(int64_t current, int64_t total, int prealloc,
                           bool shrink)
{
    if (total <= 0) {
        img_error("New image size must be positive");
        return false;
    }
    if (total <= current && prealloc != BDRV_PREALLOC_OFF) {
        img_error("Preallocation can only be used for growing images");
        return false;
    }
    if (total < current && !shrink) {
        img_error("Use the --shrink option to perform a shrink operation.");
        fprintf(stderr, "%s: warning: Shrinking an image will delete all "
                "data beyond the shrunken image's end. Before performing "
                "such an operation, make sure there is no important data "
                "there.\n", img_progname);
        return false;
    }
    return true;
}

int img_resize(int argc, char **argv)
{
    static const struct option long_options[] = {
        { "help", no_argument, NULL, 'h' },
        { "object", required_argument, NULL, OPT_OBJECT },
        { "image-opts", no_argument, NULL, OPT_IMAGE_OPTS },
        { "preallocation", required_argument, NULL, OPT_PREALLOCATION },
        { "shrink", no_argument, NULL, OPT_SHRINK },
        { NULL, 0, NULL, 0 },
    };
    ImgCommonOpts o = IMG_COMMON_OPTS_INIT(BDRV_O_RDWR);
    g_autoptr(BlockDriverState) bs = NULL;
    g_autoptr(GError) err = NULL;
    const char *size;
    int64_t n, current, total;
    int relative = 0, prealloc = BDRV_PREALLOC_OFF;
    bool shrink = false;
    int c;

    /* The size is taken off first so that "-1G" is no option. */
    if (argc < 3) {
        img_error_exit("Not enough arguments");
    }
    size = argv[--argc];
    while ((c = getopt_long(argc, argv, ":f:hq", long_options,
                            NULL)) != -1) {
        switch (c) {
        case OPT_PREALLOCATION:
            prealloc = bdrv_prealloc_parse(optarg);
            if (prealloc < 0) {
                img_error("Invalid preallocation mode '%s'", optarg);
                return 1;
            }
            break;
        case OPT_SHRINK:
            shrink = true;
            break;
        default:
            img_common_opt(c, argv, &o);
            break;
        }
    }
    if (optind != argc - 1) {
        img_error_exit("Expecting image file name and size");
    }
    if (size[0] == '+' || size[0] == '-') {
        relative = size[0] == '+' ? 1 : -1;
        size++;
    }
    if (!parse_resize_size(size, &n)) {
        return 1;
    }
    bs = img_open_common(&o, argv[optind], 0);
    if (!bs) {
        return 1;
    }
    current = bdrv_getlength(bs);
    if (current < 0) {
        img_error("Failed to inquire current image length: %s",
                  g_strerror((int)-current));
        return 1;
    }
    total = relative ? current + n * relative : n;
    if (!resize_allowed(current, total, prealloc, shrink)) {
        return 1;
    }
    if (bdrv_truncate_prealloc(bs, total, prealloc, &err) < 0) {
        img_error("%s", err->message);
        return 1;
    }
    img_qprintf(o.quiet, "Image resized.\n");
    return 0;
}
