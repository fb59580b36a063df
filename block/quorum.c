/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The "quorum" driver (QEMU's name and options): one node over N children
 * holding the same data.  Writes go to every child and succeed when at
 * least vote-threshold children took them.  Reads, with the default
 * read-pattern=quorum, read every child and return the version that at
 * least vote-threshold children agree on (with rewrite-corrupted=on the
 * others are then written with it); with read-pattern=fifo, the first
 * child that answers.  blkverify=on (two children, threshold two) reports
 * a difference as an I/O error -- QEMU aborts the process instead.
 *
 * The children are options children.0.*, children.1.*, ...; the node has
 * no file child, so names next to it (a qcow2 image's relative backing
 * file) cannot be resolved, as in QEMU.
 */
#include <errno.h>
#include <string.h>

#include "block/block_int.h"
#include "block/drivers.h"
#include "block/log.h"

typedef struct BDRVQuorumState {
    BlockDriverState **children;
    int num_children;
    int threshold;
    bool fifo;
    bool blkverify;
    bool rewrite_corrupted;
} BDRVQuorumState;

static void quorum_close(BlockDriverState *bs)
{
    BDRVQuorumState *s = bs->opaque;

    for (int i = 0; i < s->num_children; i++) {
        bdrv_unref(s->children[i]);
    }
    g_free(s->children);
}

static bool open_children(BlockDriverState *bs, BlockOpts *options,
                          int flags, GError **errp)
{
    BDRVQuorumState *s = bs->opaque;
    GPtrArray *kids = g_ptr_array_new();

    for (int i = 0;; i++) {
        g_autofree char *prefix = g_strdup_printf("children.%d", i);
        BlockOpts *opts = bdrv_opts_extract_prefix(options, prefix);
        BlockDriverState *child;

        if (g_hash_table_size(opts) == 0) {
            g_hash_table_unref(opts);
            break;
        }
        if (!bdrv_opts_get(opts, "driver")) {
            bdrv_opts_set(opts, "driver", "file");
        }
        child = bdrv_open(NULL, opts, flags, errp);
        if (!child) {
            g_ptr_array_add(kids, NULL);
            break;
        }
        g_ptr_array_add(kids, child);
    }
    s->num_children = kids->len;
    s->children = (BlockDriverState **)g_ptr_array_free(kids, FALSE);
    if (s->num_children && !s->children[s->num_children - 1]) {
        s->num_children--;
        return false;
    }
    if (s->num_children < 1) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "Number of provided children must be 1 or more");
        return false;
    }
    return true;
}

static bool open_settings(BDRVQuorumState *s, BlockOpts *options,
                          GError **errp)
{
    g_autofree char *pattern = bdrv_opts_take(options, "read-pattern");
    uint64_t threshold;

    if (!bdrv_opts_get_number(options, "vote-threshold", 0, &threshold,
                              errp) ||
        !bdrv_opts_get_bool(options, "blkverify", false, &s->blkverify,
                            errp) ||
        !bdrv_opts_get_bool(options, "rewrite-corrupted", false,
                            &s->rewrite_corrupted, errp)) {
        return false;
    }
    g_hash_table_remove(options, "vote-threshold");
    g_hash_table_remove(options, "blkverify");
    g_hash_table_remove(options, "rewrite-corrupted");
    if (threshold < 1 || threshold > INT32_MAX) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "Parameter 'vote-threshold' expects a value >= 1");
        return false;
    }
    if (threshold > (uint64_t)s->num_children) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "threshold may not exceed children count");
        return false;
    }
    s->threshold = (int)threshold;
    if (pattern && strcmp(pattern, "quorum") && strcmp(pattern, "fifo")) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "Please set read-pattern as fifo or quorum");
        return false;
    }
    s->fifo = pattern && !strcmp(pattern, "fifo");
    if (s->fifo) {
        s->blkverify = s->rewrite_corrupted = false; /* quorum reads only */
    }
    if (s->blkverify && (s->num_children != 2 || s->threshold != 2)) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "blkverify=on can only be set if there are exactly two "
                    "files and vote-threshold is 2");
        return false;
    }
    if (s->rewrite_corrupted && s->blkverify) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "rewrite-corrupted=on cannot be used with blkverify=on");
        return false;
    }
    return true;
}

static int quorum_open(BlockDriverState *bs, BlockOpts *options, int flags,
                       GError **errp)
{
    if (!open_children(bs, options, flags, errp) ||
        !open_settings(bs->opaque, options, errp)) {
        quorum_close(bs);
        memset(bs->opaque, 0, sizeof(BDRVQuorumState));
        return -EINVAL;
    }
    return 0;
}

/* The children's locks: each child is used the way the node is. */
static int quorum_set_perm(BlockDriverState *bs, uint64_t perm,
                           uint64_t shared, GError **errp)
{
    BDRVQuorumState *s = bs->opaque;

    for (int i = 0; i < s->num_children; i++) {
        BlockDriverState *c = s->children[i];
        if (c->drv->set_perm && c->drv->set_perm(c, perm, shared, errp) < 0) {
            return -EPERM;
        }
    }
    return 0;
}

static int read_fifo(BDRVQuorumState *s, int64_t offset, int64_t bytes,
                     void *buf)
{
    int ret = -EIO;

    for (int i = 0; i < s->num_children && ret < 0; i++) {
        ret = bdrv_pread(s->children[i], offset, bytes, buf);
    }
    return ret;
}

/* Every child read; the version at least `threshold` of them agree on
 * goes to buf; with rewrite_corrupted the others get it written. */
static int quorum_pread(BlockDriverState *bs, int64_t offset, int64_t bytes,
                        void *buf)
{
    BDRVQuorumState *s = bs->opaque;
    int n = s->num_children, best = -1, best_votes = 0;
    g_autofree uint8_t **data = NULL;
    g_autofree int *rets = NULL;

    if (s->fifo) {
        return read_fifo(s, offset, bytes, buf);
    }
    data = g_new0(uint8_t *, n);
    rets = g_new0(int, n);
    for (int i = 0; i < n; i++) {
        data[i] = g_malloc(bytes);
        rets[i] = bdrv_pread(s->children[i], offset, bytes, data[i]);
    }
    for (int i = 0; i < n; i++) {
        int votes = 0;
        for (int j = 0; rets[i] == 0 && j < n; j++) {
            votes += rets[j] == 0 && !memcmp(data[i], data[j], bytes);
        }
        if (votes > best_votes) {
            best = i;
            best_votes = votes;
        }
    }
    if (best >= 0 && best_votes >= s->threshold) {
        memcpy(buf, data[best], bytes);
        for (int i = 0; s->rewrite_corrupted && i < n; i++) {
            if (rets[i] == 0 && memcmp(data[i], data[best], bytes)) {
                bdrv_pwrite(s->children[i], offset, bytes, buf);
            }
        }
    } else if (s->blkverify && best >= 0) {
        strata_error("quorum: offset=%" G_GINT64_FORMAT " bytes=%"
                     G_GINT64_FORMAT " contents mismatch", offset, bytes);
    }
    for (int i = 0; i < n; i++) {
        g_free(data[i]);
    }
    return best >= 0 && best_votes >= s->threshold ? 0 : -EIO;
}

/* A request goes to every child and stands when at least threshold of
 * them did it: one child's answer counted. */
static void count_vote(int ret, int *good, int *first_err)
{
    if (ret == 0) {
        (*good)++;
    } else if (!*first_err) {
        *first_err = ret;
    }
}

static int quorum_pwrite(BlockDriverState *bs, int64_t offset, int64_t bytes,
                         const void *buf)
{
    BDRVQuorumState *s = bs->opaque;
    int good = 0, err = 0;

    for (int i = 0; i < s->num_children; i++) {
        count_vote(bdrv_pwrite(s->children[i], offset, bytes, buf), &good,
                   &err);
    }
    return good >= s->threshold ? 0 : (err ? err : -EIO);
}

static int quorum_pwrite_zeroes(BlockDriverState *bs, int64_t offset,
                                int64_t bytes, int flags)
{
    BDRVQuorumState *s = bs->opaque;
    int good = 0, err = 0;

    for (int i = 0; i < s->num_children; i++) {
        count_vote(bdrv_pwrite_zeroes(s->children[i], offset, bytes, flags),
                   &good, &err);
    }
    return good >= s->threshold ? 0 : (err ? err : -EIO);
}

static int quorum_flush(BlockDriverState *bs)
{
    BDRVQuorumState *s = bs->opaque;
    int good = 0, err = 0;

    for (int i = 0; i < s->num_children; i++) {
        count_vote(bdrv_flush(s->children[i]), &good, &err);
    }
    return good >= s->threshold ? 0 : (err ? err : -EIO);
}

static int64_t quorum_getlength(BlockDriverState *bs)
{
    BDRVQuorumState *s = bs->opaque;

    return bdrv_getlength(s->children[0]);
}

BlockDriver bdrv_quorum = {
    .format_name = "quorum",
    .instance_size = sizeof(BDRVQuorumState),
    .is_protocol = true,      /* opens its children itself */
    .open = quorum_open,
    .close = quorum_close,
    .set_perm = quorum_set_perm,
    .pread = quorum_pread,
    .pwrite = quorum_pwrite,
    .pwrite_zeroes = quorum_pwrite_zeroes,
    .flush = quorum_flush,
    .getlength = quorum_getlength,
};
