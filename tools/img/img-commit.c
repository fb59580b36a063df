/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * strata-img commit: merges an image into its backing file (or, with -b,
 * into an image further down its chain) with the library's commit job,
 * like qemu-img commit: the image is the device's active layer, the job
 * pivots to the base when done, and the committed image is emptied
 * afterwards unless -d (or -b) is given.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "img-common.h"
#include "block/backing.h"
#include "block/blockjob.h"

#define PROGRESS_POLL_US 100000

/* Runs the job to its end, printing progress; returns its outcome. */
static int run_job(BlockJob *job, bool progress, GError **errp)
{
    BlockJobState info;
    int ret;

    while (!block_job_wait_concluded(job, PROGRESS_POLL_US)) {
        block_job_get_info(job, &info);
        if (progress && info.len > 0) {
            img_progress_print((float)info.offset * 100 / info.len, 0);
        }
    }
    /* qemu-img names only the errno of a failed job */
    ret = block_job_wait(job, NULL);
    if (ret < 0) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_IO, "Block job failed: %s",
                    g_strerror(-ret));
    }
    return ret;
}

int img_commit(int argc, char **argv)
{
    static const struct option long_options[] = {
        { "help", no_argument, NULL, 'h' },
        { "object", required_argument, NULL, OPT_OBJECT },
        { "image-opts", no_argument, NULL, OPT_IMAGE_OPTS },
        { NULL, 0, NULL, 0 },
    };
    /* commit's cache letter is -t: it sets o.cache below. */
    ImgCommonOpts o = IMG_COMMON_OPTS_INIT(BDRV_O_RDWR);
    const char *base = NULL, *filename;
    bool progress = false, drop = false;
    g_autoptr(BlockDriverState) bs = NULL;
    g_autoptr(BlockBackend) blk = NULL;
    g_autoptr(GError) err = NULL;
    BlockDriverState *base_bs;
    CommitOptions copts = { .auto_complete = true };
    BlockJob *job;
    int64_t rate = 0;
    int c, ret;

    while ((c = getopt_long(argc, argv, ":f:ht:b:dpqr:", long_options,
                            NULL)) != -1) {
        switch (c) {
        case 't':
            o.cache = optarg;
            break;
        case 'b':
            base = optarg;
            /* -b implies -d: the image may still be in use above base */
            drop = true;
            break;
        case 'd':
            drop = true;
            break;
        case 'p':
            progress = true;
            break;
        case 'r':
            if (!img_cvtnum("rate limit", optarg, &rate)) {
                return 1;
            }
            break;
        default:
            img_common_opt(c, argv, &o);
            break;
        }
    }
    if (o.quiet) {
        progress = false;
    }
    filename = img_one_filename(argc, argv);
    if (!img_common_check_format(&o) ||
        !img_common_apply_cache(&o, "cache")) {
        return 1;
    }

    bs = img_open_common(&o, filename, 0);
    if (!bs) {
        return 1;
    }
    if (base) {
        base_bs = bdrv_find_backing_image(bs, base);
        if (!base_bs) {
            img_error("Did not find '%s' in the backing chain of '%s'", base,
                      filename);
            return 1;
        }
    } else {
        base_bs = bdrv_get_backing(bs);
        if (!base_bs) {
            img_error("Image does not have a backing file");
            return 1;
        }
    }

    img_progress_init(progress, 1.f);
    img_progress_print(0.f, 100);
    blk = blk_new(NULL, bs);
    copts.job.speed = rate;
    job = commit_start("commit", blk, bs, base_bs, &copts, &err);
    ret = job ? run_job(job, progress, &err) : -EINVAL;
    if (ret == 0) {
        img_progress_print(100.f, 0);
    }
    /* The device now points at base; empty what was committed. */
    if (ret == 0 && !drop && !bdrv_make_empty(bs, &err)) {
        if (g_error_matches(err, BDRV_ERROR, BDRV_ERROR_NOT_SUPPORTED)) {
            g_clear_error(&err);
        } else {
            ret = -EIO;
        }
    }
    img_progress_end();
    if (ret < 0) {
        img_error("%s", err ? err->message : g_strerror(-ret));
        return 1;
    }
    img_qprintf(o.quiet, "Image committed.\n");
    return 0;
}
