/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * strata-img bitmap: adds, removes, clears, enables, disables and merges
 * the persistent dirty bitmaps of a qcow2 image, like qemu-img bitmap.
 * The actions run in the order given, on the image opened read-write
 * without its backing chain; the first that fails ends the command
 * (what the earlier ones did stays).  The format stores the bitmaps
 * when the image is closed.
 */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "img-common.h"
#include "block/dirty-bitmap.h"

enum {
    OPT_ADD = 512, OPT_REMOVE, OPT_CLEAR, OPT_ENABLE, OPT_DISABLE, OPT_MERGE,
};

typedef struct BitmapAction {
    BdrvBitmapOp op;
    const char *src;          /* --merge SOURCE */
} BitmapAction;

static const char *op_name(BdrvBitmapOp op)
{
    static const char *const names[] = {
        [BDRV_BITMAP_ADD] = "add", [BDRV_BITMAP_REMOVE] = "remove",
        [BDRV_BITMAP_CLEAR] = "clear", [BDRV_BITMAP_ENABLE] = "enable",
        [BDRV_BITMAP_DISABLE] = "disable", [BDRV_BITMAP_MERGE] = "merge",
    };
    return names[op];
}

static void add_action(GArray *actions, BdrvBitmapOp op, const char *src)
{
    BitmapAction a = { op, src };
    g_array_append_val(actions, a);
}

/* qemu-img's checks of the option combination, in its order. */
static bool options_valid(GArray *actions, int64_t granularity,
                          const char *src_file, const char *src_fmt,
                          bool add, bool merge)
{
    if (actions->len == 0) {
        img_error("Need at least one of --add, --remove, --clear, --enable, "
                  "--disable, or --merge");
        return false;
    }
    if (granularity && !add) {
        img_error("granularity only supported with --add");
        return false;
    }
    if (src_fmt && !src_file) {
        img_error("-F only supported with -b");
        return false;
    }
    if (src_file && !merge) {
        img_error("Merge bitmap source file only supported with --merge");
        return false;
    }
    return true;
}

int img_bitmap(int argc, char **argv)
{
    static const struct option long_options[] = {
        { "help", no_argument, NULL, 'h' },
        { "object", required_argument, NULL, OPT_OBJECT },
        { "image-opts", no_argument, NULL, OPT_IMAGE_OPTS },
        { "add", no_argument, NULL, OPT_ADD },
        { "remove", no_argument, NULL, OPT_REMOVE },
        { "clear", no_argument, NULL, OPT_CLEAR },
        { "enable", no_argument, NULL, OPT_ENABLE },
        { "disable", no_argument, NULL, OPT_DISABLE },
        { "merge", required_argument, NULL, OPT_MERGE },
        { "granularity", required_argument, NULL, 'g' },
        { "source-file", required_argument, NULL, 'b' },
        { "source-format", required_argument, NULL, 'F' },
        { NULL, 0, NULL, 0 },
    };
    ImgCommonOpts o = IMG_COMMON_OPTS_INIT(BDRV_O_RDWR | BDRV_O_NO_BACKING);
    g_autoptr(GArray) actions = g_array_new(FALSE, FALSE,
                                            sizeof(BitmapAction));
    g_autoptr(BlockDriverState) bs = NULL;
    g_autoptr(BlockDriverState) src = NULL;
    const char *src_file = NULL, *src_fmt = NULL, *name;
    int64_t granularity = 0;
    bool add = false, merge = false;
    int c;

    while ((c = getopt_long(argc, argv, ":b:f:F:g:h", long_options,
                            NULL)) != -1) {
        switch (c) {
        case 'b':
            src_file = optarg;
            break;
        case 'F':
            src_fmt = optarg;
            break;
        case 'g':
            if (!img_cvtnum("granularity", optarg, &granularity)) {
                return 1;
            }
            break;
        case OPT_ADD:
            add_action(actions, BDRV_BITMAP_ADD, NULL);
            add = true;
            break;
        case OPT_REMOVE:
            add_action(actions, BDRV_BITMAP_REMOVE, NULL);
            break;
        case OPT_CLEAR:
            add_action(actions, BDRV_BITMAP_CLEAR, NULL);
            break;
        case OPT_ENABLE:
            add_action(actions, BDRV_BITMAP_ENABLE, NULL);
            break;
        case OPT_DISABLE:
            add_action(actions, BDRV_BITMAP_DISABLE, NULL);
            break;
        case OPT_MERGE:
            add_action(actions, BDRV_BITMAP_MERGE, optarg);
            merge = true;
            break;
        default:
            img_common_opt(c, argv, &o);
            break;
        }
    }
    if (!options_valid(actions, granularity, src_file, src_fmt, add,
                       merge)) {
        return 1;
    }
    if (optind != argc - 2) {
        img_error("Expecting filename and bitmap name");
        return 1;
    }
    if (!img_common_check_format(&o)) {
        return 1;
    }
    name = argv[optind + 1];
    bs = img_open_common(&o, argv[optind], 0);
    if (!bs) {
        return 1;
    }
    if (src_file) {
        src = img_open(false, src_file, src_fmt, BDRV_O_NO_BACKING, false);
        if (!src) {
            return 1;
        }
    }
    for (guint i = 0; i < actions->len; i++) {
        BitmapAction *a = &g_array_index(actions, BitmapAction, i);
        BdrvBitmapRequest req = {
            .op = a->op, .name = name,
            /* --add --disable: two actions, as in qemu-img */
            .granularity = (uint32_t)MIN(granularity, (int64_t)UINT32_MAX),
            .src_bs = src ? src : bs, .src_name = a->src,
        };
        g_autoptr(GError) err = NULL;
        g_autofree char *hint = NULL;

        if (!bdrv_bitmap_modify(bs, &req, &hint, &err)) {
            img_error("Operation %s on bitmap %s failed: %s",
                      op_name(a->op), name, err->message);
            if (hint) {
                fprintf(stderr, "%s\n", hint);
            }
            return 1;
        }
    }
    return 0;
}
