/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * strata-img dd: copies an image into a new one in dd(1) style, like
 * qemu-img dd (if=, of=, bs=, count=, skip=; -f, -O, -U).  As in qemu-img,
 * count limits where reading ends (count * bs) rather than how much is
 * copied after skip, and a skip past the end gives an empty image.
 */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "img-common.h"

typedef struct {
    const char *in, *out;
    int64_t bsz;
    int64_t count;
    int64_t skip;
    bool has_count, has_skip;
} DdArgs;

/* One "name=value" operand; false after qemu-img's message. */
static bool dd_operand(const char *arg, DdArgs *a)
{
    g_autofree char *name = g_strdup(arg);
    char *val = strchr(name, '=');

    if (!val) {
        img_error("unrecognized operand %s", arg);
        return false;
    }
    *val++ = '\0';
    if (!strcmp(name, "bs")) {
        return img_cvtnum_full("bs", val, 1, G_MAXINT, &a->bsz);
    } else if (!strcmp(name, "count")) {
        a->has_count = true;
        return img_cvtnum("count", val, &a->count);
    } else if (!strcmp(name, "if")) {
        a->in = arg + (val - name);
    } else if (!strcmp(name, "of")) {
        a->out = arg + (val - name);
    } else if (!strcmp(name, "skip")) {
        a->has_skip = true;
        return img_cvtnum("skip", val, &a->skip);
    } else {
        img_error("unrecognized operand %s", name);
        return false;
    }
    return true;
}

static bool skip_past_end(const DdArgs *a, int64_t size)
{
    return a->has_skip && (a->skip > INT64_MAX / a->bsz ||
                           size < a->skip * a->bsz);
}

static int dd_copy(BlockDriverState *src, BlockDriverState *dst,
                   const DdArgs *a, int64_t size)
{
    g_autofree uint8_t *buf = g_malloc(a->bsz);
    int64_t in_pos, out_pos = 0;

    if (skip_past_end(a, size)) {
        img_error("%s: cannot skip to specified offset", a->in);
        in_pos = size;
    } else {
        in_pos = a->skip * a->bsz;
    }
    while (in_pos < size) {
        int64_t n = MIN(a->bsz, size - in_pos);
        int ret = bdrv_pread(src, in_pos, n, buf);
        if (ret < 0) {
            img_error("error while reading from input image file: %s",
                      g_strerror(-ret));
            return 1;
        }
        ret = bdrv_pwrite(dst, out_pos, n, buf);
        if (ret < 0) {
            img_error("error while writing to output image file: %s",
                      g_strerror(-ret));
            return 1;
        }
        in_pos += n;
        out_pos += n;
    }
    return 0;
}

int img_dd(int argc, char **argv)
{
    static const struct option long_options[] = {
        { "help", no_argument, NULL, 'h' },
        { "object", required_argument, NULL, OPT_OBJECT },
        { "image-opts", no_argument, NULL, OPT_IMAGE_OPTS },
        { "force-share", no_argument, NULL, 'U' },
        { NULL, 0, NULL, 0 },
    };
    ImgCommonOpts o = IMG_COMMON_OPTS_INIT(0);
    const char *out_fmt = "raw";
    DdArgs a = { .bsz = 512 };
    g_autoptr(BlockDriverState) src = NULL;
    g_autoptr(BlockDriverState) dst = NULL;
    g_autoptr(GHashTable) copts = NULL;
    g_autoptr(GError) err = NULL;
    g_autofree char *size_str = NULL;
    int64_t size;
    int c;

    while ((c = getopt_long(argc, argv, ":hf:O:U", long_options,
                            NULL)) != -1) {
        if (c == 'O') {
            out_fmt = optarg;
        } else {
            img_common_opt(c, argv, &o);
        }
    }
    for (int i = optind; i < argc; i++) {
        if (!dd_operand(argv[i], &a)) {
            return 1;
        }
    }
    if (!a.in || !a.out) {
        img_error("Must specify both input and output files");
        return 1;
    }
    src = img_open_common(&o, a.in, 0);
    if (!src) {
        return 1;
    }
    if (!bdrv_find_format(out_fmt)) {
        img_error("Unknown file format");
        return 1;
    }
    size = bdrv_getlength(src);
    if (size < 0) {
        img_error("Failed to get size for '%s'", a.in);
        return 1;
    }
    if (a.has_count && a.count <= INT64_MAX / a.bsz &&
        a.count * a.bsz < size) {
        size = a.count * a.bsz;
    }
    size_str = g_strdup_printf("%" G_GINT64_FORMAT, skip_past_end(&a, size) ?
                               (int64_t)0 : size - a.bsz * a.skip);
    copts = bdrv_opts_new();
    bdrv_opts_set(copts, "size", size_str);
    if (!bdrv_create(out_fmt, a.out, copts, &err)) {
        img_error("%s: error while creating output image: %s", a.out,
                  err->message);
        return 1;
    }
    dst = img_open(false, a.out, out_fmt, BDRV_O_RDWR, false);
    if (!dst) {
        return 1;
    }
    return dd_copy(src, dst, &a, size);
}
