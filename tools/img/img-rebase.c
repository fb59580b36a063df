/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * strata-img rebase: gives an image a new backing file.  Safe mode (the
 * default) first copies into the image every range it does not hold
 * itself where the old and the new backing chains read differently, so
 * the image reads the same afterwards; -u only rewrites the header.
 *
 * Work is skipped wherever it can be proven unnecessary without reading:
 * ranges the image holds, ranges both chains report as zeroes, and --
 * when the new backing file is an image of the old chain -- ranges
 * decided at or below it.  Everything is checked before the first write:
 * bad input writes nothing.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "img-common.h"
#include "block/backing.h"

#define REBASE_CHUNK (2 * 1024 * 1024)

typedef struct RebaseState {
    BlockDriverState *bs;        /* the image */
    BlockDriverState *old;       /* its current backing node, or NULL */
    BlockDriverState *new_bs;    /* the new backing node, or NULL */
    BlockDriverState *common;    /* node of the old chain = new backing */
    int64_t len;
    int64_t old_len, new_len;
    uint32_t granule;            /* comparison unit: the image's cluster */
    uint8_t *old_buf, *new_buf;
} RebaseState;

/* Whether chain `top` (may be NULL) reads zeroes over the whole range;
 * *pnum says how far the answer holds. */
static int chain_zero(BlockDriverState *top, int64_t len, int64_t off,
                      int64_t bytes, int64_t *pnum, bool *zero)
{
    int ret;

    if (!top || off >= len) {
        *pnum = bytes;
        *zero = true;
        return 0;
    }
    bytes = MIN(bytes, len - off);
    ret = bdrv_block_status_above(top, off, bytes, pnum, NULL, NULL, NULL);
    if (ret < 0) {
        return ret;
    }
    if (*pnum <= 0) {
        *pnum = bytes;
    }
    *zero = !!(ret & BDRV_BLOCK_ZERO);
    return 0;
}

static int read_chain(BlockDriverState *top, int64_t len, int64_t off,
                      int64_t bytes, uint8_t *buf)
{
    int64_t n = 0;

    if (top && off < len) {
        n = MIN(bytes, len - off);
        int ret = bdrv_pread(top, off, n, buf);
        if (ret < 0) {
            return ret;
        }
    }
    memset(buf + n, 0, bytes - n);
    return 0;
}

/* Compares [off, off+bytes) of both chains and writes the old content
 * into the image for each granule that differs. */
static int rebase_compare(RebaseState *s, int64_t off, int64_t bytes,
                          bool old_zero, bool new_zero)
{
    int ret;

    if (old_zero) {
        memset(s->old_buf, 0, bytes);
    } else if ((ret = read_chain(s->old, s->old_len, off, bytes,
                                 s->old_buf)) < 0) {
        return ret;
    }
    if (new_zero) {
        memset(s->new_buf, 0, bytes);
    } else if ((ret = read_chain(s->new_bs, s->new_len, off, bytes,
                                 s->new_buf)) < 0) {
        return ret;
    }
    int64_t run = -1;          /* start of a run of differing granules */
    /* chain_zero never lets a range straddle the old end */
    bool past_old_end = !s->old || off >= s->old_len;

    for (int64_t pos = 0; pos <= bytes;) {
        int64_t n = MIN(bytes - pos, s->granule - (off + pos) % s->granule);
        bool differ = pos < bytes &&
                      memcmp(s->old_buf + pos, s->new_buf + pos, n) != 0;

        if (differ && run < 0) {
            run = pos;
        } else if (!differ && run >= 0) {
            /* Past the old backing file's end the old content is zeroes
             * by definition: written as zeroes, as qemu-img does, so a
             * qcow2 v3 image gets zero clusters rather than data ones. */
            ret = past_old_end ?
                  bdrv_pwrite_zeroes(s->bs, off + run, pos - run, 0) :
                  bdrv_pwrite(s->bs, off + run, pos - run, s->old_buf + run);
            if (ret < 0) {
                return ret;
            }
            run = -1;
        }
        if (pos == bytes) {
            break;
        }
        pos += n;
    }
    return 0;
}

static int rebase_range(RebaseState *s, int64_t off, int64_t bytes)
{
    while (bytes > 0) {
        BlockDriverState *decider = NULL;
        int64_t n = bytes, m;
        bool old_zero, new_zero;
        int ret;

        if (s->common && s->old) {
            /* Decided at or below the new backing file: identical. */
            ret = bdrv_block_status_between(s->old, s->common, off, bytes,
                                            &n, &decider);
            if (ret < 0) {
                return ret;
            }
            if (!decider) {
                off += n;
                bytes -= n;
                continue;
            }
        }
        ret = chain_zero(s->old, s->old_len, off, n, &m, &old_zero);
        if (ret < 0) {
            return ret;
        }
        n = m;
        ret = chain_zero(s->new_bs, s->new_len, off, n, &m, &new_zero);
        if (ret < 0) {
            return ret;
        }
        n = m;
        if (!(old_zero && new_zero)) {
            ret = rebase_compare(s, off, n, old_zero, new_zero);
            if (ret < 0) {
                return ret;
            }
        }
        off += n;
        bytes -= n;
    }
    return 0;
}

static int rebase_copy(RebaseState *s, bool progress)
{
    int64_t n = 0;

    for (int64_t off = 0; off < s->len; off += n) {
        int ret = bdrv_block_status(s->bs, off,
                                    MIN(REBASE_CHUNK, s->len - off), &n,
                                    NULL, NULL);
        if (ret < 0) {
            return ret;
        }
        if (n <= 0) {
            return -EIO;
        }
        if (!(ret & BDRV_BLOCK_ALLOCATED)) {
            ret = rebase_range(s, off, n);
            if (ret < 0) {
                return ret;
            }
        }
        if (progress) {
            img_progress_print((float)(off + n) * 100 / s->len, 0);
        }
    }
    return bdrv_flush(s->bs);
}

/* The node of the old chain whose file is the new backing file's. */
static BlockDriverState *find_common(BlockDriverState *old,
                                     BlockDriverState *new_bs)
{
    for (BlockDriverState *p = old; p; p = bdrv_get_backing(p)) {
        if (bdrv_same_file(p, new_bs) &&
            !strcmp(bdrv_get_format_name(p), bdrv_get_format_name(new_bs))) {
            return p;
        }
    }
    return NULL;
}

/* True (with a message) if the chain of top uses the image's file. */
static bool chain_uses(BlockDriverState *top, BlockDriverState *image,
                       const char *name)
{
    for (BlockDriverState *p = top; p; p = bdrv_get_backing(p)) {
        if (bdrv_same_file(p, image)) {
            img_error("Could not change the backing file to '%s': it would "
                      "create a loop (its chain uses '%s')", name,
                      bdrv_get_filename(image));
            return true;
        }
    }
    return false;
}

int img_rebase(int argc, char **argv)
{
    static const struct option long_options[] = {
        { "help", no_argument, NULL, 'h' },
        { "object", required_argument, NULL, OPT_OBJECT },
        { "image-opts", no_argument, NULL, OPT_IMAGE_OPTS },
        { "force-share", no_argument, NULL, 'U' },
        { NULL, 0, NULL, 0 },
    };
    /*
     * The shared options describe the image being rebased, whose cache
     * letter is -t; -T and -U apply to the backing files it reads, so
     * rebase keeps those two itself (src_cache, src_flags).
     */
    ImgCommonOpts opts = IMG_COMMON_OPTS_INIT(BDRV_O_RDWR);
    const char *out_basefmt = NULL, *out_baseimg = NULL;
    const char *src_cache = IMG_DEFAULT_CACHE;
    bool progress = false, unsafe = false;
    g_autoptr(BlockDriverState) bs = NULL;
    g_autoptr(BlockDriverState) new_bs = NULL;
    g_autoptr(GError) err = NULL;
    g_autofree uint8_t *buf1 = NULL, *buf2 = NULL;
    const char *filename;
    int src_flags = 0;
    int c, ret;

    while ((c = getopt_long(argc, argv, ":hf:F:b:upt:T:qU", long_options,
                            NULL)) != -1) {
        switch (c) {
        case 'F':
            out_basefmt = optarg;
            break;
        case 'b':
            out_baseimg = optarg;
            break;
        case 'u':
            unsafe = true;
            break;
        case 'p':
            progress = true;
            break;
        case 't':
            opts.cache = optarg;
            break;
        case 'T':
            src_cache = optarg;
            break;
        case 'U':
            src_flags |= BDRV_O_FORCE_SHARE;
            break;
        default:
            img_common_opt(c, argv, &opts);
            break;
        }
    }
    if (opts.quiet) {
        progress = false;
    }
    if (!unsafe && !out_baseimg) {
        img_error_exit("Must specify backing file (-b) or use unsafe mode "
                       "(-u)");
    }
    filename = img_one_filename(argc, argv);
    if (!img_common_check_format(&opts)) {
        return 1;
    }
    if (out_baseimg && !*out_baseimg) {
        out_baseimg = NULL;       /* "" removes the backing file */
    }
    if (!img_common_apply_cache(&opts, "cache")) {
        return 1;
    }
    if (!img_parse_cache_mode(src_cache, &src_flags, NULL)) {
        img_error("Invalid source cache option: %s", src_cache);
        return 1;
    }
    if (out_baseimg && !out_basefmt) {
        /* Checked before anything is written (qemu-img fails here only
         * after the copy). */
        img_error("Could not change the backing file to '%s': backing "
                  "format must be specified", out_baseimg);
        return 1;
    }

    img_progress_init(progress, 2.0);
    img_progress_print(0, 100);
    bs = img_open_common(&opts, filename, unsafe ? BDRV_O_NO_BACKING : 0);
    if (!bs) {
        return 1;
    }

    /*
     * Unsafe mode writes the name it is given, as qemu-img does: the new
     * file is not opened, so a name that makes a loop is written too (an
     * open of such a chain fails with a loop error, and a second rebase -u
     * mends it).  Safe mode reads through the new chain, so it must not
     * contain the image itself.
     */
    if (out_baseimg && !unsafe) {
        g_autofree char *full = bdrv_resolve_backing_name(
            bdrv_get_filename(bs), out_baseimg);
        BlockOpts *o = bdrv_opts_new();

        bdrv_opts_set(o, "driver", out_basefmt);
        new_bs = bdrv_open(full, o, src_flags & ~BDRV_O_RDWR, &err);
        if (!new_bs) {
            img_error("Could not open new backing file '%s': %s",
                      out_baseimg, err->message);
            return 1;
        }
        if (chain_uses(new_bs, bs, out_baseimg)) {
            return 1;
        }
    }

    if (!unsafe) {
        RebaseState s = {
            .bs = bs,
            .old = bdrv_get_backing(bs),
            .new_bs = new_bs,
            .len = bdrv_getlength(bs),
        };
        BlockDriverInfo bdi;

        s.old_len = s.old ? bdrv_getlength(s.old) : 0;
        s.new_len = new_bs ? bdrv_getlength(new_bs) : 0;
        if (s.len < 0 || s.old_len < 0 || s.new_len < 0) {
            img_error("Could not get the size of the images: %s",
                      g_strerror(-(int)MIN(MIN(s.len, s.old_len), s.new_len)));
            return 1;
        }
        s.granule = bdrv_get_info(bs, &bdi) == 0 && bdi.cluster_size > 0 ?
                    bdi.cluster_size : 65536;
        s.granule = MIN(s.granule, REBASE_CHUNK);
        s.common = new_bs ? find_common(s.old, new_bs) : NULL;
        s.old_buf = buf1 = g_malloc(REBASE_CHUNK);
        s.new_buf = buf2 = g_malloc(REBASE_CHUNK);
        ret = rebase_copy(&s, progress);
        if (ret < 0) {
            img_error("Error while rebasing the image: %s", g_strerror(-ret));
            return 1;
        }
    }

    if (!bdrv_change_backing_file(bs, out_baseimg,
                                  out_baseimg ? out_basefmt : NULL, &err)) {
        if (out_baseimg) {
            img_error("Could not change the backing file to '%s': %s",
                      out_baseimg, err->message);
        } else {
            img_error("Could not remove the backing file: %s", err->message);
        }
        return 1;
    }
    img_progress_print(100, 0);
    img_progress_end();
    return 0;
}
