/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * strata-img check: runs the driver's consistency check (and repair),
 * then prints qemu-img's summary, human or JSON, and exits with
 * qemu-img's status: 0 clean, 1 check failed, 2 corruptions, 3 leaks
 * only, 63 format without checks.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "img-common.h"
#include "img-json.h"

#define EXIT_NO_CHECK 63

/* qemu's ImageCheck: the driver's result plus names. */
typedef struct {
    const char *filename;
    const char *format;
    BdrvCheckResult r;
    BlockDriverState *bs;       /* for strata's pending-transaction line */
} ImageCheck;

static int collect_image_check(BlockDriverState *bs, ImageCheck *check,
                               const char *filename, BdrvCheckMode fix)
{
    int ret = bdrv_check(bs, &check->r, fix);

    if (ret < 0) {
        return ret;
    }
    check->filename = filename;
    check->format = bdrv_get_format_name(bs);
    check->bs = bs;
    if (!check->r.has_allocation_info) {
        check->r.total_clusters = 0;
        check->r.allocated_clusters = 0;
        check->r.fragmented_clusters = 0;
        check->r.compressed_clusters = 0;
    }
    return 0;
}

static void dump_human_image_check(const ImageCheck *check, bool quiet)
{
    const BdrvCheckResult *r = &check->r;

    if (!(r->corruptions || r->leaks || r->check_errors)) {
        img_qprintf(quiet, "No errors were found on the image.\n");
    } else {
        if (r->corruptions) {
            img_qprintf(quiet, "\n%d errors were found on the image.\n"
                        "Data may be corrupted, or further writes to the "
                        "image may corrupt it.\n", r->corruptions);
        }
        if (r->leaks) {
            img_qprintf(quiet, "\n%d leaked clusters were found on the "
                        "image.\nThis means waste of disk space, but no harm "
                        "to data.\n", r->leaks);
        }
        if (r->check_errors) {
            img_qprintf(quiet, "\n%d internal errors have occurred during "
                        "the check.\n", r->check_errors);
        }
    }
    if (r->total_clusters != 0 && r->allocated_clusters != 0) {
        img_qprintf(quiet, "%" G_GINT64_FORMAT "/%" G_GINT64_FORMAT
                    " = %0.2f%% allocated, %0.2f%% fragmented, %0.2f%% "
                    "compressed clusters\n",
                    r->allocated_clusters, r->total_clusters,
                    r->allocated_clusters * 100.0 / r->total_clusters,
                    r->fragmented_clusters * 100.0 / r->allocated_clusters,
                    r->compressed_clusters * 100.0 / r->allocated_clusters);
    }
    if (r->image_end_offset) {
        img_qprintf(quiet, "Image end offset: %" G_GINT64_FORMAT "\n",
                    r->image_end_offset);
    }
    /* strata: an unfinished crash-atomic transaction (issue 14) */
    {
        g_autofree char *intent = img_intent_sentence(check->bs);
        if (intent) {
            img_qprintf(quiet, "%s\n", intent);
        }
    }
}

/* Zero counters are left out, as qemu leaves out its optional members;
 * check-errors, filename and format are always there. */
static void dump_json_image_check(const ImageCheck *check, bool quiet)
{
    const BdrvCheckResult *r = &check->r;
    g_autoptr(JsonBuilder) b = json_builder_new();
    g_autoptr(JsonNode) root = NULL;
    const struct {
        const char *key;
        int64_t value;
    } optional[] = {
        { "image-end-offset", r->image_end_offset },
        { "corruptions", r->corruptions },
        { "leaks", r->leaks },
        { "corruptions-fixed", r->corruptions_fixed },
        { "leaks-fixed", r->leaks_fixed },
        { "total-clusters", r->total_clusters },
        { "allocated-clusters", r->allocated_clusters },
        { "fragmented-clusters", r->fragmented_clusters },
        { "compressed-clusters", r->compressed_clusters },
    };

    json_builder_begin_object(b);
    json_builder_set_member_name(b, "filename");
    json_builder_add_string_value(b, check->filename);
    json_builder_set_member_name(b, "format");
    json_builder_add_string_value(b, check->format);
    json_builder_set_member_name(b, "check-errors");
    json_builder_add_int_value(b, r->check_errors);
    for (size_t i = 0; i < G_N_ELEMENTS(optional); i++) {
        if (optional[i].value) {
            json_builder_set_member_name(b, optional[i].key);
            json_builder_add_int_value(b, optional[i].value);
        }
    }
    img_json_add_intent(b, check->bs);   /* strata: issue 14 */
    json_builder_end_object(b);
    root = json_builder_get_root(b);
    if (!quiet) {
        img_json_print(root);
    }
}

int img_check(int argc, char **argv)
{
    static const struct option long_options[] = {
        { "help", no_argument, NULL, 'h' },
        { "format", required_argument, NULL, 'f' },
        { "repair", required_argument, NULL, 'r' },
        { "output", required_argument, NULL, OPT_OUTPUT },
        { "object", required_argument, NULL, OPT_OBJECT },
        { "image-opts", no_argument, NULL, OPT_IMAGE_OPTS },
        { "force-share", no_argument, NULL, 'U' },
        { NULL, 0, NULL, 0 },
    };
    ImgCommonOpts o = IMG_COMMON_OPTS_INIT(BDRV_O_CHECK);
    const char *filename;
    ImgOutputFormat output_format;
    int fix = BDRV_FIX_NONE;
    g_autoptr(BlockDriverState) bs = NULL;
    ImageCheck check = { 0 };
    int ret, c;

    while ((c = getopt_long(argc, argv, ":hf:r:T:qU", long_options,
                            NULL)) != -1) {
        switch (c) {
        case 'r':
            o.flags |= BDRV_O_RDWR;
            if (!strcmp(optarg, "leaks")) {
                fix = BDRV_FIX_LEAKS;
            } else if (!strcmp(optarg, "all")) {
                fix = BDRV_FIX_LEAKS | BDRV_FIX_ERRORS;
            } else {
                img_error_exit("Unknown option value for -r "
                               "(expecting 'leaks' or 'all'): %s", optarg);
            }
            break;
        default:
            img_common_opt(c, argv, &o);
            break;
        }
    }
    filename = img_one_filename(argc, argv);

    if (!img_parse_output_format(o.output, &output_format) ||
        !img_common_apply_cache(&o, "source cache") ||
        !img_common_check_format(&o)) {
        return 1;
    }

    bs = img_open_common(&o, filename, 0);
    if (!bs) {
        return 1;
    }

    ret = collect_image_check(bs, &check, filename, fix);
    if (ret == -ENOTSUP) {
        img_error("This image format does not support checks");
        return EXIT_NO_CHECK;
    }

    if (ret == 0 && (check.r.corruptions_fixed || check.r.leaks_fixed)) {
        int corruptions_fixed = check.r.corruptions_fixed;
        int leaks_fixed = check.r.leaks_fixed;

        if (output_format == OFORMAT_HUMAN) {
            img_qprintf(o.quiet,
                        "The following inconsistencies were found and "
                        "repaired:\n\n"
                        "    %d leaked clusters\n"
                        "    %d corruptions\n\n"
                        "Double checking the fixed image now...\n",
                        leaks_fixed, corruptions_fixed);
        }
        /* Report the state after repair, with what the repair did. */
        memset(&check, 0, sizeof(check));
        ret = collect_image_check(bs, &check, filename, BDRV_FIX_NONE);
        check.r.leaks_fixed = leaks_fixed;
        check.r.corruptions_fixed = corruptions_fixed;
    }

    if (ret == 0) {
        if (output_format == OFORMAT_HUMAN) {
            dump_human_image_check(&check, o.quiet);
        } else {
            dump_json_image_check(&check, o.quiet);
        }
    }
    if (ret < 0 || check.r.check_errors) {
        if (ret < 0) {
            img_error("Check failed: %s", g_strerror(-ret));
        } else {
            img_error("Check failed");
        }
        return 1;
    }
    if (check.r.corruptions) {
        return 2;
    }
    if (check.r.leaks) {
        return 3;
    }
    return 0;
}
