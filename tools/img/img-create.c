/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * strata-img create: builds the creation options the way qemu-img does
 * (-o list, size argument, -b/-F), checks the backing file, prints the
 * "Formatting ..." line and calls bdrv_create().
 */
#include <getopt.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "block/backing.h"
#include "img-common.h"
#include "img-create-opts.h"

/* The backing name as the new image will resolve it: relative names are
 * relative to the image's directory; json:{...} and other prefixed names
 * are taken as they are (the library's rule). */
static char *resolve_backing(const char *image, const char *backing)
{
    return bdrv_resolve_backing_name(image, backing);
}

/* Prints "prog: filename: message" and, if any, the hint lines below. */
static void report(const char *filename, const char *msg, const char *hint)
{
    img_error("%s: %s", filename, msg);
    if (hint) {
        fprintf(stderr, "%s\n", hint);
    }
}

/*
 * Everything after argument parsing, in qemu-img's order of checks so the
 * first error reported is the one qemu-img would report.
 */
static bool create_image(const char *filename, const char *fmt,
                         const char *base_filename, const char *base_fmt,
                         const char *options, int64_t img_size, bool no_open,
                         bool quiet)
{
    g_autoptr(GError) err = NULL;
    g_autoptr(ImgCreateOpts) o = img_create_opts_new(fmt, &err);
    g_autoptr(GHashTable) bopts = NULL;
    const char *backing_file, *backing_fmt;
    int64_t size = -1;
    uint64_t v;

    if (!o) {
        report(filename, err->message, NULL);
        return false;
    }
    if (options && !img_create_opts_parse(o, options, &err)) {
        report(filename, err->message, NULL);
        return false;
    }
    if (!img_create_opts_get(o, "size")) {
        if (img_size >= 0) {
            g_autofree char *s = g_strdup_printf("%" G_GINT64_FORMAT, img_size);
            img_create_opts_set(o, "size", s);
        }
    } else if (img_size >= 0) {
        report(filename, "The image size must be specified only once", NULL);
        return false;
    }
    if (base_filename &&
        !img_create_opts_set(o, "backing_file", base_filename)) {
        g_autofree char *m = g_strdup_printf(
            "Backing file not supported for file format '%s'", fmt);
        report(filename, m, NULL);
        return false;
    }
    if (base_fmt && !img_create_opts_set(o, "backing_fmt", base_fmt)) {
        g_autofree char *m = g_strdup_printf(
            "Backing file format not supported for file format '%s'", fmt);
        report(filename, m, NULL);
        return false;
    }

    backing_file = img_create_opts_get(o, "backing_file");
    backing_fmt = img_create_opts_get(o, "backing_fmt");
    if (backing_file) {
        if (!strcmp(filename, backing_file)) {
            report(filename, "Error: Trying to create an image with the same "
                   "filename as the backing file", NULL);
            return false;
        }
        if (!backing_file[0]) {
            report(filename, "Expected backing file name, got empty string",
                   NULL);
            return false;
        }
    }

    if (img_create_opts_get(o, "size") &&
        strata_parse_size(img_create_opts_get(o, "size"), &v)) {
        size = (int64_t)v;
    }

    if (backing_file && !no_open) {
        g_autofree char *full = resolve_backing(filename, backing_file);
        BlockOpts *open_opts = bdrv_opts_new();
        g_autoptr(BlockDriverState) bs = NULL;

        struct stat st;

        if (backing_fmt) {
            bdrv_opts_set(open_opts, "driver", backing_fmt);
        }
        /* the image could not open it as its backing file either */
        if (stat(full, &st) == 0 && !S_ISDIR(st.st_mode) &&
            !bdrv_backing_path_allowed(full, &st, &err)) {
            g_hash_table_unref(open_opts);
            report(filename, err->message, "Could not open backing image.");
            return false;
        }
        /* only its size is needed: no key, no data (as qemu-img) */
        bs = bdrv_open(full, open_opts, BDRV_O_NO_IO, &err);
        if (!bs) {
            report(filename, err->message, "Could not open backing image.");
            return false;
        }
        if (!backing_fmt) {
            g_autofree char *hint = g_strdup_printf(
                "Detected format of %s.", bdrv_get_format_name(bs));
            report(filename, "Backing file specified without backing format",
                   hint);
            return false;
        }
        if (size < 0) {
            int64_t len = bdrv_getlength(bs);
            if (len < 0) {
                g_autofree char *m = g_strdup_printf(
                    "Could not get size of '%s': %s", backing_file,
                    g_strerror(-len));
                report(filename, m, NULL);
                return false;
            }
            size = len;
            g_autofree char *s = g_strdup_printf("%" G_GINT64_FORMAT, size);
            img_create_opts_set(o, "size", s);
        }
    } else if (backing_file && !backing_fmt) {
        report(filename, "Backing file specified without backing format",
               NULL);
        return false;
    }

    if (size < 0) {
        report(filename, "Image creation needs a size parameter", NULL);
        return false;
    }

    if (!quiet) {
        printf("Formatting '%s', fmt=%s", filename, fmt);
        img_create_opts_print(o);
        printf("\n");
        fflush(stdout);
    }

    /* Drivers get whole sectors, as qemu's drivers round up themselves. */
    bopts = img_create_opts_to_block_opts(o);
    {
        g_autofree char *s = g_strdup_printf(
            "%" G_GUINT64_FORMAT,
            ((uint64_t)size + BDRV_SECTOR_SIZE - 1) / BDRV_SECTOR_SIZE *
            BDRV_SECTOR_SIZE);
        bdrv_opts_set(bopts, "size", s);
    }
    if (!bdrv_create(fmt, filename, bopts, &err)) {
        report(filename, err->message, NULL);
        return false;
    }
    return true;
}

int img_create(int argc, char **argv)
{
    static const struct option long_options[] = {
        { "help", no_argument, NULL, 'h' },
        { "object", required_argument, NULL, OPT_OBJECT },
        { NULL, 0, NULL, 0 },
    };
    /* create opens nothing; only -f (default raw), -q and the usage
     * cases of the shared options apply. */
    ImgCommonOpts o = IMG_COMMON_OPTS_INIT(0);
    const char *base_fmt = NULL;
    const char *base_filename = NULL;
    const char *filename;
    g_autofree char *options = NULL;
    int64_t img_size = -1;
    bool no_open = false;
    int c;

    o.fmt = "raw";
    while ((c = getopt_long(argc, argv, ":F:b:f:ho:qu", long_options,
                            NULL)) != -1) {
        switch (c) {
        case 'F':
            base_fmt = optarg;
            break;
        case 'b':
            base_filename = optarg;
            break;
        case 'o':
            if (!img_add_option_list(&options, optarg)) {
                return 1;
            }
            break;
        case 'u':
            no_open = true;
            break;
        default:
            img_common_opt(c, argv, &o);
            break;
        }
    }

    filename = optind < argc ? argv[optind] : NULL;
    if (options && img_has_help_option(options)) {
        return img_print_create_option_help(filename, o.fmt);
    }
    if (optind >= argc) {
        img_error_exit("Expecting image file name");
    }
    optind++;

    if (optind < argc) {
        if (!img_cvtnum("image size", argv[optind++], &img_size)) {
            return 1;
        }
    }
    if (optind != argc) {
        img_error_exit("Unexpected argument: %s", argv[optind]);
    }

    return create_image(filename, o.fmt, base_filename, base_fmt, options,
                        img_size, no_open, o.quiet) ? 0 : 1;
}
