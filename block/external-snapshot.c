/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * External snapshots in transaction phases; the contract and where we
 * differ from QEMU are described in include/block/external-snapshot.h.
 *
 * Order of effects and the commit point:
 *   do:         overlay file created (fresh name, or a temporary name
 *               beside an existing file), flushed, opened without backing
 *   invalidate: the one commit-point write -- rename of the temporary
 *               file over the existing one, or the backing link written
 *               into an existing overlay that lacks it -- then the
 *               in-memory switch (cannot fail)
 *   cancel:     the same steps backwards
 *   clean:      after success, the old top (now a backing file) reopened
 *               read-only.  Not in invalidate: other actions of the same
 *               transaction on the old top (an internal snapshot's clean
 *               frees the clusters of its replaced table) still write to
 *               it after every invalidate, and nothing else can, since
 *               the device no longer points at it.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "block/fault-inject.h"
#include "block/backing.h"
#include "block/log.h"
#include "block/block_int.h"
#include "block/blockjob.h"
#include "block/external-snapshot.h"

typedef enum {
    ES_NEW,
    ES_CHECKED,
    ES_FAILED,           /* check failed: only clean is left */
    ES_DONE,             /* do ran (do_failed: it failed; cancel undoes) */
    ES_INVALIDATED,
    ES_CANCELLED,
} ExternalSnapshotState;

static const char *const es_state_names[] = {
    [ES_NEW] = "not checked",
    [ES_CHECKED] = "checked",
    [ES_FAILED] = "refused by its check",
    [ES_DONE] = "done",
    [ES_INVALIDATED] = "invalidated",
    [ES_CANCELLED] = "cancelled",
};

struct ExternalSnapshot {
    BlockBackend *blk;
    char *snapshot_file;
    char *format;
    ExternalSnapshotMode mode;
    char *node_name;
    BlockDriverState *given_overlay;
    BlockDriverState *revert_to;  /* a node of the chain, or NULL */
    BlockDriverState *set_base;   /* external_snapshot_set_base() */
    char *set_base_name;

    /* references, from do on: the node under the overlay, and the
     * device's root the switch replaces (the same node unless reverting) */
    BlockDriverState *old_top;
    BlockDriverState *old_root;
    BlockDriverState *overlay;
    char *created_file;          /* a file we created: removed on cancel */
    bool replace_target;         /* created_file is a temporary name */
    char *backup_file;           /* link to the replaced file, until clean */
    bool needs_backing_link;     /* existing overlay records no backing */
    bool wrote_backing_link;
    bool switched;               /* the device is on the overlay */
    ExternalSnapshotState state;
    bool do_failed;
    bool staged;                 /* external_snapshot_set_staged() */
};

/* What one set of operations (a transaction) has claimed as targets:
 * files that exist by device and inode, new ones by their absolute name
 * in a canonical directory. */
struct ExternalSnapshotTargets {
    GHashTable *ids;             /* char * -> NULL */
};

ExternalSnapshotTargets *external_snapshot_targets_new(void)
{
    ExternalSnapshotTargets *t = g_new0(ExternalSnapshotTargets, 1);

    t->ids = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
    return t;
}

void external_snapshot_targets_free(ExternalSnapshotTargets *t)
{
    if (t) {
        g_hash_table_unref(t->ids);
        g_free(t);
    }
}

/* The identity of a target: "ino:DEV:INO" if it exists, else
 * "new:<real directory>/<base name>". */
static char *target_id(const char *path)
{
    g_autofree char *dir = g_path_get_dirname(path);
    g_autofree char *base = g_path_get_basename(path);
    g_autofree char *real = NULL;
    struct stat st;

    if (stat(path, &st) == 0) {
        return g_strdup_printf("ino:%ju:%ju", (uintmax_t)st.st_dev,
                               (uintmax_t)st.st_ino);
    }
    real = realpath(dir, NULL);
    return g_strdup_printf("new:%s/%s", real ? real : dir, base);
}

ExternalSnapshot *external_snapshot_new(BlockBackend *blk,
                                        const ExternalSnapshotParams *p)
{
    ExternalSnapshot *es = g_new0(ExternalSnapshot, 1);

    blk_ref(blk);
    es->blk = blk;
    es->snapshot_file = g_strdup(p->snapshot_file);
    es->format = g_strdup(p->format ? p->format : "qcow2");
    es->mode = p->mode;
    es->node_name = g_strdup(p->snapshot_node_name);
    es->given_overlay = p->overlay;
    if (p->overlay) {
        bdrv_ref(p->overlay);
    }
    es->revert_to = p->revert_to;
    if (p->revert_to) {
        bdrv_ref(p->revert_to);
    }
    return es;
}

void external_snapshot_set_base(ExternalSnapshot *es, BlockDriverState *base,
                                const char *base_filename)
{
    g_assert(es->state == ES_CHECKED && !es->revert_to && !es->set_base);
    bdrv_ref(base);
    es->set_base = base;
    es->set_base_name = g_strdup(base_filename);
}

char *external_snapshot_get_final_filename(ExternalSnapshot *es)
{
    if (es->given_overlay) {
        return bdrv_get_absolute_filename(es->given_overlay);
    }
    if (g_path_is_absolute(es->snapshot_file)) {
        return g_strdup(es->snapshot_file);
    }
    return g_canonicalize_filename(es->snapshot_file, NULL);
}

/* The name the overlay records for the node under it. */
static char *base_filename(ExternalSnapshot *es)
{
    if (es->set_base_name) {
        return g_strdup(es->set_base_name);
    }
    return bdrv_get_absolute_filename(es->old_top);
}

BlockDriverState *external_snapshot_get_overlay(ExternalSnapshot *es)
{
    return es->overlay;
}

BlockDriverState *external_snapshot_get_old_top(ExternalSnapshot *es)
{
    return es->old_top;
}

BlockDriverState *external_snapshot_get_witness(ExternalSnapshot *es)
{
    if (es->mode == EXTERNAL_SNAPSHOT_MODE_EXISTING || es->given_overlay ||
        es->revert_to || es->set_base || es->old_top) {
        return NULL;
    }
    return blk_bs(es->blk);
}

/* ---- crash-atomic transactions (issue 14) ---- */

void external_snapshot_set_staged(ExternalSnapshot *es)
{
    g_assert(es->state == ES_CHECKED);
    es->staged = true;
}

const char *external_snapshot_get_staged_file(ExternalSnapshot *es)
{
    return es->replace_target ? es->created_file : NULL;
}

static const char *device_name(ExternalSnapshot *es)
{
    BlockDriverState *root = blk_bs(es->blk);

    if (*blk_name(es->blk)) {
        return blk_name(es->blk);
    }
    return root ? bdrv_get_node_name(root) : "";
}

/* True if path is the file of an image in the device's chain. */
static bool in_device_chain(ExternalSnapshot *es, const char *path)
{
    for (BlockDriverState *p = blk_bs(es->blk); p; p = bdrv_get_backing(p)) {
        if (bdrv_is_file(p, path)) {
            return true;
        }
    }
    return false;
}

static bool check_overlay_node(ExternalSnapshot *es, BlockDriverState *ov,
                               GError **errp)
{
    if (bdrv_chain_contains(blk_bs(es->blk), ov)) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "The overlay is already in use");
        return false;
    }
    if (bdrv_get_backing(ov)) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "The overlay already has a backing image");
        return false;
    }
    if (!ov->drv || !ov->drv->supports_backing) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "The overlay does not support backing images");
        return false;
    }
    if (bdrv_is_read_only(ov)) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "The overlay '%s' is read-only", bdrv_get_node_name(ov));
        return false;
    }
    return true;
}

/* Refuses a phase called out of order; the operation is left as is. */
static bool refuse(ExternalSnapshot *es, const char *phase, GError **errp)
{
    g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                "Cannot %s the external snapshot of device '%s': it is %s%s",
                phase, device_name(es), es_state_names[es->state],
                es->do_failed ? " (and its do failed)" : "");
    return false;
}

typedef struct InUse {
    dev_t dev;
    ino_t ino;
    char *node;                  /* the node found */
} InUse;

static bool node_uses_file(BlockDriverState *bs, void *opaque)
{
    InUse *u = opaque;
    const char *name = bdrv_get_filename(bs);
    struct stat st;

    if (!name || !*name || stat(name, &st) < 0 ||
        st.st_dev != u->dev || st.st_ino != u->ino) {
        return false;
    }
    u->node = g_strdup(bdrv_get_node_name(bs));
    return true;
}

/*
 * An existing target must not be an image open anywhere in this process
 * (another device's image, a backing file of any chain, any node): it
 * would be renamed over or written as an overlay while its user still
 * writes to it.
 */
static bool check_not_open(ExternalSnapshot *es, const struct stat *st,
                           GError **errp)
{
    InUse u = { st->st_dev, st->st_ino, NULL };

    if (in_device_chain(es, es->snapshot_file)) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "The overlay is already in use");
        return false;
    }
    if (bdrv_any_node(node_uses_file, &u)) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "The snapshot file '%s' is in use: node '%s' has it "
                    "open", es->snapshot_file, u.node);
        g_free(u.node);
        return false;
    }
    return true;
}

/* The target must not be named twice in one set of operations. */
static bool claim_target(ExternalSnapshot *es,
                         ExternalSnapshotTargets *claimed, const char *path,
                         GError **errp)
{
    char *id;

    if (!claimed || !path || !*path) {
        return true;
    }
    id = target_id(path);
    if (g_hash_table_contains(claimed->ids, id)) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "The snapshot file '%s' is named twice in the same "
                    "set of operations", path);
        g_free(id);
        return false;
    }
    g_hash_table_add(claimed->ids, id);
    return true;
}

/* A new overlay file needs a directory it can be created in; found
 * here so that do never fails for it. */
static bool check_new_file_dir(ExternalSnapshot *es, GError **errp)
{
    g_autofree char *dir = g_path_get_dirname(es->snapshot_file);
    struct stat st;
    int err = 0;

    if (stat(dir, &st) < 0) {
        err = errno;
    } else if (!S_ISDIR(st.st_mode)) {
        err = ENOTDIR;
    } else if (access(dir, W_OK | X_OK) < 0) {
        err = errno;
    }
    if (err) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_IO,
                    "Could not create '%s': %s", es->snapshot_file,
                    g_strerror(err));
        return false;
    }
    return true;
}

static bool check_file(ExternalSnapshot *es, GError **errp)
{
    BlockDriver *drv;
    struct stat st;

    if (!es->snapshot_file || !*es->snapshot_file) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "Parameter 'snapshot-file' is missing");
        return false;
    }
    if (es->node_name && bdrv_find_node(es->node_name)) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "New overlay node-name already in use");
        return false;
    }
    drv = bdrv_find_format(es->format);
    if (!drv || drv->is_protocol) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "Unknown file format '%s'", es->format);
        return false;
    }
    if (!drv->supports_backing) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    es->mode == EXTERNAL_SNAPSHOT_MODE_EXISTING ?
                    "The overlay does not support backing images" :
                    "Backing file not supported for file format '%s'",
                    es->format);
        return false;
    }
    if (stat(es->snapshot_file, &st) < 0) {
        int err = errno;
        if (es->mode == EXTERNAL_SNAPSHOT_MODE_EXISTING || err != ENOENT) {
            g_set_error(errp, BDRV_ERROR, BDRV_ERROR_IO,
                        "Could not open '%s': %s", es->snapshot_file,
                        g_strerror(err));
            return false;
        }
        return check_new_file_dir(es, errp);
    }
    if (!check_not_open(es, &st, errp)) {
        return false;
    }
    if (!S_ISREG(st.st_mode)) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    es->mode == EXTERNAL_SNAPSHOT_MODE_EXISTING ?
                    "Could not open '%s': not a regular file" :
                    "Could not create '%s': it exists and is not a "
                    "regular file", es->snapshot_file);
        return false;
    }
    return true;
}

static bool check(ExternalSnapshot *es, ExternalSnapshotTargets *claimed,
                  GError **errp)
{
    BlockDriverState *root = blk_bs(es->blk);
    BlockJob *job = blk_get_job(es->blk);

    if (!root) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "Device '%s' has no medium", device_name(es));
        return false;
    }
    if (job) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "Node '%s' is busy: block device is in use by block "
                    "job: %s", bdrv_get_node_name(root),
                    job->driver->job_type);
        return false;
    }
    if (es->revert_to && !bdrv_chain_contains(root, es->revert_to)) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "Node '%s' is not in the backing chain of device '%s'",
                    bdrv_get_node_name(es->revert_to), device_name(es));
        return false;
    }
    if (es->given_overlay) {
        return check_overlay_node(es, es->given_overlay, errp) &&
               claim_target(es, claimed,
                            bdrv_get_filename(es->given_overlay), errp);
    }
    return check_file(es, errp) &&
           claim_target(es, claimed, es->snapshot_file, errp);
}

bool external_snapshot_check(ExternalSnapshot *es,
                             ExternalSnapshotTargets *claimed, GError **errp)
{
    if (es->state != ES_NEW) {
        return refuse(es, "check", errp);
    }
    es->state = check(es, claimed, errp) ? ES_CHECKED : ES_FAILED;
    return es->state == ES_CHECKED;
}

/* A free name beside path: "DIR/.BASE.TAG.PID.N". */
static char *sibling_name(const char *path, const char *tag)
{
    g_autofree char *dir = g_path_get_dirname(path);
    g_autofree char *base = g_path_get_basename(path);
    static gint counter;

    for (;;) {
        char *name = g_strdup_printf("%s/.%s.%s.%d.%d", dir, base, tag,
                                     (int)getpid(),
                                     g_atomic_int_add(&counter, 1));
        if (access(name, F_OK) < 0 && errno == ENOENT) {
            return name;
        }
        g_free(name);
    }
}

static bool create_overlay(ExternalSnapshot *es, GError **errp)
{
    g_autoptr(GHashTable) opts = bdrv_opts_new();
    g_autofree char *backing = base_filename(es);
    g_autofree char *size = NULL;
    int64_t len = bdrv_getlength(es->old_top);
    const char *path = es->snapshot_file;
    struct stat st;

    if (len < 0) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_IO,
                    "Could not get the size of device '%s': %s",
                    device_name(es), g_strerror((int)-len));
        return false;
    }
    if (stat(es->snapshot_file, &st) == 0 || es->staged) {
        /* Never destroy an existing file before the commit point (and a
         * staged overlay appears only at it). */
        es->replace_target = true;
        es->created_file = sibling_name(es->snapshot_file, "new");
        path = es->created_file;
    } else {
        es->created_file = g_strdup(es->snapshot_file);
    }
    size = g_strdup_printf("%" G_GINT64_FORMAT, len);
    bdrv_opts_set(opts, "size", size);
    bdrv_opts_set(opts, "backing_file", backing);
    bdrv_opts_set(opts, "backing_fmt", bdrv_get_format_name(es->old_top));
    if (!bdrv_create(es->format, path, opts, errp)) {
        unlink(path);
        g_clear_pointer(&es->created_file, g_free);
        return false;
    }
    return true;
}

/* The overlay takes over the old top's cache modes and discard choice,
 * as QEMU's blockdev-snapshot-sync opens it with the old top's flags. */
#define OVERLAY_INHERITED_FLAGS \
    (BDRV_O_NOCACHE | BDRV_O_NO_FLUSH | BDRV_O_IGNORE_DISCARD)

static BlockDriverState *open_overlay(ExternalSnapshot *es, const char *path,
                                      GError **errp)
{
    BlockOpts *o = bdrv_opts_new();
    int inherited = bdrv_get_open_flags(es->old_top) & OVERLAY_INHERITED_FLAGS;

    bdrv_opts_set(o, "driver", es->format);
    bdrv_opts_set(o, "backing", "null");
    if (es->node_name) {
        bdrv_opts_set(o, "node-name", es->node_name);
    }
    return bdrv_open(path, o, BDRV_O_RDWR | inherited, errp);
}

/* Two names of one file: the same canonical absolute path, or the same
 * inode once both exist. */
static bool same_file_name(const char *a, const char *b)
{
    g_autofree char *ca = g_canonicalize_filename(a, NULL);
    g_autofree char *cb = g_canonicalize_filename(b, NULL);
    struct stat sa, sb;

    if (!strcmp(ca, cb)) {
        return true;
    }
    return stat(a, &sa) == 0 && stat(b, &sb) == 0 &&
           sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

/* mode existing / overlay node: size and recorded backing file. */
static bool check_existing_overlay(ExternalSnapshot *es, GError **errp)
{
    int64_t dev_len = bdrv_getlength(es->old_top);
    int64_t ov_len = bdrv_getlength(es->overlay);
    const char *recorded = bdrv_get_backing_filename(es->overlay);
    const char *rec_fmt = bdrv_get_backing_format(es->overlay);
    const char *fmt = bdrv_get_format_name(es->old_top);

    if (dev_len < 0 || ov_len < 0) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_IO,
                    "Could not get the size of the overlay or the device: "
                    "%s", g_strerror((int)-(dev_len < 0 ? dev_len : ov_len)));
        return false;
    }
    if (!es->overlay->drv->supports_backing) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "The overlay does not support backing images");
        return false;
    }
    if (ov_len < dev_len) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "The overlay '%s' is smaller (%" G_GINT64_FORMAT
                    " bytes) than device '%s' (%" G_GINT64_FORMAT " bytes)",
                    bdrv_get_filename(es->overlay), ov_len, device_name(es),
                    dev_len);
        return false;
    }
    if (recorded && *recorded) {
        g_autofree char *full =
            bdrv_get_full_backing_filename(es->overlay);
        g_autofree char *want = base_filename(es);
        if (es->set_base_name ? !same_file_name(full, want)
                              : !bdrv_is_file(es->old_top, full)) {
            g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                        "The overlay's backing file '%s' is not the current "
                        "image of device '%s' ('%s')", recorded,
                        device_name(es), want);
            return false;
        }
        if (rec_fmt && *rec_fmt && strcmp(rec_fmt, fmt)) {
            g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                        "The overlay's backing format '%s' does not match "
                        "the format '%s' of device '%s'", rec_fmt, fmt,
                        device_name(es));
            return false;
        }
    } else {
        es->needs_backing_link = true;
    }
    return true;
}

static bool do_(ExternalSnapshot *es, GError **errp)
{
    BlockDriverState *root = blk_bs(es->blk);
    int ret;

    g_assert(root && !es->old_top);
    /* What the device will be on when invalidate runs: its root now, or
     * the overlay of an earlier external snapshot in the transaction. */
    es->old_root = es->set_base ? es->set_base : root;
    bdrv_ref(es->old_root);
    es->old_top = es->revert_to ? es->revert_to : es->old_root;
    bdrv_ref(es->old_top);
    if (!bdrv_is_read_only(root)) {
        ret = bdrv_flush(root);
        if (ret < 0) {
            g_set_error(errp, BDRV_ERROR, BDRV_ERROR_IO,
                        "Could not flush device '%s': %s", device_name(es),
                        g_strerror(-ret));
            return false;
        }
    }
    if (es->given_overlay) {
        es->overlay = es->given_overlay;
        bdrv_ref(es->overlay);
        return check_existing_overlay(es, errp);
    }
    if (es->mode == EXTERNAL_SNAPSHOT_MODE_ABSOLUTE_PATHS) {
        if (!create_overlay(es, errp)) {
            return false;
        }
        es->overlay = open_overlay(es, es->created_file, errp);
        return es->overlay != NULL;   /* cancel removes the file */
    }
    es->overlay = open_overlay(es, es->snapshot_file, errp);
    if (!es->overlay) {
        return false;
    }
    return check_existing_overlay(es, errp);
}

/* The overlay node now lives under the final name. */
static void rename_node(BlockDriverState *bs, const char *name)
{
    g_free(bs->filename);
    bs->filename = g_strdup(name);
    if (bs->file) {
        g_free(bs->file->filename);
        bs->file->filename = g_strdup(name);
    }
}

/* Puts the replaced file back under its name (our overlay's file goes). */
static bool restore_replaced(ExternalSnapshot *es, GError **errp)
{
    if (rename(es->backup_file, es->snapshot_file) < 0) {
        int err = errno;
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_IO,
                    "Could not put '%s' back as '%s': %s", es->backup_file,
                    es->snapshot_file, g_strerror(err));
        return false;
    }
    g_clear_pointer(&es->backup_file, g_free);
    rename_node(es->overlay, es->created_file);
    return true;
}

/* A staged overlay with nothing under its name: the rename alone is the
 * commit point; from then on the final name is the file cancel removes. */
static bool publish_staged(ExternalSnapshot *es, GError **errp)
{
    /* (power_cut_dir_op: the power-cut filter of the tests, issue 14) */
    if (!power_cut_dir_op() &&
        rename(es->created_file, es->snapshot_file) < 0) {
        int err = errno;
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_IO,
                    "Could not rename '%s' to '%s': %s", es->created_file,
                    es->snapshot_file, g_strerror(err));
        return false;
    }
    g_free(es->created_file);
    es->created_file = g_strdup(es->snapshot_file);
    rename_node(es->overlay, es->snapshot_file);
    return true;
}

/* The commit point: rename over the existing file. */
static bool replace_target(ExternalSnapshot *es, GError **errp)
{
    int err;

    if (es->staged && access(es->snapshot_file, F_OK) < 0 &&
        errno == ENOENT) {
        return publish_staged(es, errp);
    }
    es->backup_file = sibling_name(es->snapshot_file, "replaced");
    if (link(es->snapshot_file, es->backup_file) < 0) {
        err = errno;
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_IO,
                    "Could not keep a link to '%s' before replacing it: %s",
                    es->snapshot_file, g_strerror(err));
        g_clear_pointer(&es->backup_file, g_free);
        return false;
    }
    if (rename(es->created_file, es->snapshot_file) < 0) {
        err = errno;
        unlink(es->backup_file);
        g_clear_pointer(&es->backup_file, g_free);
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_IO,
                    "Could not replace '%s': %s", es->snapshot_file,
                    g_strerror(err));
        return false;
    }
    rename_node(es->overlay, es->snapshot_file);
    return true;
}

static bool invalidate(ExternalSnapshot *es, GError **errp)
{
    bool ok = false;

    blk_drained_begin(es->blk);
    if (blk_bs(es->blk) != es->old_root) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "Device '%s' changed between do and invalidate",
                    device_name(es));
        goto out;
    }
    if (es->replace_target && !replace_target(es, errp)) {
        goto out;
    }
    if (es->needs_backing_link) {
        g_autofree char *name = base_filename(es);
        if (!bdrv_change_backing_file(es->overlay, name,
                                      bdrv_get_format_name(es->old_top),
                                      errp)) {
            if (es->backup_file) {
                restore_replaced(es, NULL);
            }
            goto out;
        }
        es->wrote_backing_link = true;
    }
    bdrv_set_backing(es->overlay, es->old_top);
    blk_set_root(es->blk, es->overlay);
    es->switched = true;
    ok = true;
out:
    blk_drained_end(es->blk);
    return ok;
}

/*
 * A cancel-time error: every one is logged; the first goes to errp if
 * errp holds none yet.  An error already in errp (the one that made the
 * caller cancel, or an earlier cancel error) is never rewritten: the
 * first error is the one reported (DESIGN.md, rule 3), and the engine
 * adds the log's lines after it in its result.
 */
static void add_error(GError **errp, GError *err)
{
    if (!err) {
        return;
    }
    strata_warning("external snapshot cancel: %s", err->message);
    if (errp && !*errp) {
        g_propagate_error(errp, err);
    } else {
        g_error_free(err);
    }
}

static bool cancel(ExternalSnapshot *es, GError **errp)
{
    GError *err = NULL;
    bool ok = true;
    if (es->switched) {
        blk_drained_begin(es->blk);
        blk_set_root(es->blk, es->old_root);
        bdrv_set_backing(es->overlay, NULL);
        if (es->wrote_backing_link &&
            !bdrv_change_backing_file(es->overlay, NULL, NULL, &err)) {
            /* The overlay is removed below if we created it. */
            add_error(errp, err);
            err = NULL;
            ok = false;
        }
        if (es->backup_file && !restore_replaced(es, &err)) {
            add_error(errp, err);
            err = NULL;
            ok = false;
        }
        es->switched = false;
        blk_drained_end(es->blk);
    }
    if (es->overlay) {
        bdrv_unref(es->overlay);
        es->overlay = NULL;
    }
    if (es->created_file) {
        if (!power_cut_dir_op() &&
            unlink(es->created_file) < 0 && errno != ENOENT) {
            int e = errno;
            g_set_error(&err, BDRV_ERROR, BDRV_ERROR_IO,
                        "Could not remove '%s': %s", es->created_file,
                        g_strerror(e));
            add_error(errp, err);
            err = NULL;
            ok = false;
        }
        g_clear_pointer(&es->created_file, g_free);
    }
    return ok;
}

bool external_snapshot_do(ExternalSnapshot *es, GError **errp)
{
    if (es->state != ES_CHECKED) {
        return refuse(es, "do", errp);
    }
    es->state = ES_DONE;
    es->do_failed = !do_(es, errp);
    return !es->do_failed;
}

bool external_snapshot_invalidate(ExternalSnapshot *es, GError **errp)
{
    if (es->state != ES_DONE || es->do_failed) {
        return refuse(es, "invalidate", errp);
    }
    if (!invalidate(es, errp)) {
        return false;           /* undone: still done, cancel next */
    }
    es->state = ES_INVALIDATED;
    return true;
}

bool external_snapshot_cancel(ExternalSnapshot *es, GError **errp)
{
    if (es->state != ES_DONE && es->state != ES_INVALIDATED) {
        return refuse(es, "cancel", errp);
    }
    es->state = ES_CANCELLED;
    return cancel(es, errp);
}

/* After success: the old top is a backing file now, and nothing writes
 * to it any more; a failure costs nothing but the write lock it keeps. */
static void make_old_top_read_only(ExternalSnapshot *es)
{
    GError *err = NULL;

    if (es->old_top != es->old_root || bdrv_is_read_only(es->old_top)) {
        return;
    }
    if (!bdrv_reopen_set_read_only(es->old_top, true, &err)) {
        strata_warning("Could not reopen '%s' read-only after the external "
                       "snapshot of device '%s': %s",
                       bdrv_get_filename(es->old_top), device_name(es),
                       err->message);
        g_error_free(err);
    }
}

void external_snapshot_clean(ExternalSnapshot *es)
{
    if (es->state == ES_INVALIDATED && es->switched) {
        make_old_top_read_only(es);
    }
    if (es->backup_file && es->switched) {
        unlink(es->backup_file);
    }
    if (es->overlay) {
        bdrv_unref(es->overlay);
    }
    if (es->old_top) {
        bdrv_unref(es->old_top);
    }
    if (es->old_root) {
        bdrv_unref(es->old_root);
    }
    if (es->given_overlay) {
        bdrv_unref(es->given_overlay);
    }
    if (es->revert_to) {
        bdrv_unref(es->revert_to);
    }
    if (es->set_base) {
        bdrv_unref(es->set_base);
    }
    g_free(es->set_base_name);
    blk_unref(es->blk);
    g_free(es->snapshot_file);
    g_free(es->format);
    g_free(es->node_name);
    g_free(es->created_file);
    g_free(es->backup_file);
    g_free(es);
}

bool external_snapshot_run(BlockBackend *blk, const ExternalSnapshotParams *p,
                           GError **errp)
{
    ExternalSnapshot *es = external_snapshot_new(blk, p);
    bool ok = external_snapshot_check(es, NULL, errp);

    if (ok) {
        blk_drained_begin(blk);
        ok = external_snapshot_do(es, errp) &&
             external_snapshot_invalidate(es, errp);
        if (!ok) {
            external_snapshot_cancel(es, NULL);
        }
        blk_drained_end(blk);
    }
    external_snapshot_clean(es);
    return ok;
}
