/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The generic internal-snapshot API (include/block/snapshot.h): argument
 * checks, lookups by ID and/or name with QEMU's per-entry-point semantics,
 * and the one-call operations, each of which drains the node and runs the
 * driver's prepare / publish / cleanup steps in sequence (undo on failure).
 * The driver does the work; nothing here knows a format.
 */
#include <errno.h>
#include <string.h>

#include "block/block_int.h"
#include "block/snapshot.h"

struct BdrvSnapshotOp {
    BlockDriverState *bs;
    void *drv_op;
    BdrvSnapshotInfo info;
    bool published;
};

void bdrv_snapshot_info_clear(BdrvSnapshotInfo *sn)
{
    g_free(sn->id_str);
    g_free(sn->name);
    memset(sn, 0, sizeof(*sn));
}

void bdrv_snapshot_info_copy(BdrvSnapshotInfo *dst, const BdrvSnapshotInfo *src)
{
    *dst = *src;
    dst->id_str = g_strdup(src->id_str);
    dst->name = g_strdup(src->name);
}

void bdrv_snapshot_list_free(BdrvSnapshotInfo *list, int n)
{
    for (int i = 0; list && i < n; i++) {
        bdrv_snapshot_info_clear(&list[i]);
    }
    g_free(list);
}

bool bdrv_can_snapshot(BlockDriverState *bs)
{
    return bs && bs->drv && bs->drv->snapshot_list &&
           bs->drv->snapshot_create_prepare;
}

static int no_medium(GError **errp)
{
    g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC, "No medium inserted");
    return -ENOMEDIUM;
}

static int not_supported(BlockDriverState *bs, GError **errp)
{
    g_set_error(errp, BDRV_ERROR, BDRV_ERROR_NOT_SUPPORTED,
                "Block format '%s' used by node '%s' does not support "
                "internal snapshots", bs->drv->format_name, bs->node_name);
    return -ENOTSUP;
}

/* Checks common to every operation that writes. */
static int check_writable(BlockDriverState *bs, bool (*has_op)(BlockDriver *),
                          GError **errp)
{
    if (!bs->drv) {
        return no_medium(errp);
    }
    if (!has_op(bs->drv)) {
        return not_supported(bs, errp);
    }
    if (bs->read_only) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "Node '%s' is read only", bs->node_name);
        return -EACCES;
    }
    return 0;
}

static bool has_create(BlockDriver *drv)
{
    return drv->snapshot_create_prepare;
}

static bool has_delete(BlockDriver *drv)
{
    return drv->snapshot_delete_prepare;
}

static bool has_goto(BlockDriver *drv)
{
    return drv->snapshot_goto_prepare;
}

int bdrv_snapshot_list(BlockDriverState *bs, BdrvSnapshotInfo **list,
                       GError **errp)
{
    *list = NULL;
    if (!bs->drv) {
        return no_medium(errp);
    }
    if (!bs->drv->snapshot_list) {
        return not_supported(bs, errp);
    }
    return bs->drv->snapshot_list(bs, list, errp);
}

/* Finds in the list: by id (if non-NULL) and by name (if non-NULL). */
static bool find_in_list(BlockDriverState *bs, const char *id,
                         const char *name, BdrvSnapshotInfo *out,
                         GError **errp)
{
    BdrvSnapshotInfo *list;
    int n = bdrv_snapshot_list(bs, &list, errp);
    bool found = false;

    if (n < 0) {
        return false;
    }
    for (int i = 0; i < n; i++) {
        if ((!id || !strcmp(list[i].id_str, id)) &&
            (!name || !strcmp(list[i].name, name))) {
            if (out) {
                bdrv_snapshot_info_copy(out, &list[i]);
            }
            found = true;
            break;
        }
    }
    bdrv_snapshot_list_free(list, n);
    if (!found) {
        if (id && name) {
            g_set_error(errp, BDRV_ERROR, BDRV_ERROR_NOT_FOUND,
                        "Snapshot with id '%s' and name '%s' does not exist",
                        id, name);
        } else if (id) {
            g_set_error(errp, BDRV_ERROR, BDRV_ERROR_NOT_FOUND,
                        "Snapshot with id '%s' does not exist", id);
        } else {
            g_set_error(errp, BDRV_ERROR, BDRV_ERROR_NOT_FOUND,
                        "Snapshot with name '%s' does not exist", name);
        }
    }
    return found;
}

bool bdrv_snapshot_find(BlockDriverState *bs, const char *name,
                        BdrvSnapshotInfo *out, GError **errp)
{
    return find_in_list(bs, NULL, name, out, errp);
}

bool bdrv_snapshot_find_by_id(BlockDriverState *bs, const char *id,
                              BdrvSnapshotInfo *out, GError **errp)
{
    return find_in_list(bs, id, NULL, out, errp);
}

bool bdrv_snapshot_find_by_id_and_name(BlockDriverState *bs, const char *id,
                                       const char *name,
                                       BdrvSnapshotInfo *out, GError **errp)
{
    if (!id && !name) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "Name or id must be provided");
        return false;
    }
    return find_in_list(bs, id, name, out, errp);
}

/* ---- the steps ---- */

static BdrvSnapshotOp *op_new(BlockDriverState *bs, void *drv_op,
                              BdrvSnapshotInfo *info)
{
    BdrvSnapshotOp *op = g_new0(BdrvSnapshotOp, 1);

    bdrv_ref(bs);
    op->bs = bs;
    op->drv_op = drv_op;
    op->info = *info;
    return op;
}

static void op_free(BdrvSnapshotOp *op)
{
    bdrv_snapshot_info_clear(&op->info);
    bdrv_unref(op->bs);
    g_free(op);
}

static int check_name(const char *name, GError **errp)
{
    size_t len = name ? strlen(name) : 0;

    if (len == 0) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC, "Name is empty");
        return -EINVAL;
    }
    if (len > BDRV_SNAPSHOT_NAME_MAX) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "Snapshot name is too long (%zu bytes; at most %d are "
                    "allowed)", len, BDRV_SNAPSHOT_NAME_MAX);
        return -EINVAL;
    }
    return 0;
}

static int create_prepare(BlockDriverState *bs, const BdrvSnapshotInfo *tmpl,
                          int flags, BdrvSnapshotOp **out, GError **errp)
{
    BdrvSnapshotInfo info = { 0 };
    void *drv_op = NULL;
    int ret;

    *out = NULL;
    ret = check_writable(bs, has_create, errp);
    if (ret == 0) {
        ret = check_name(tmpl->name, errp);
    }
    if (ret == 0) {
        ret = bs->drv->snapshot_create_prepare(bs, tmpl, flags, &info,
                                               &drv_op, errp);
    }
    if (ret == 0) {
        *out = op_new(bs, drv_op, &info);
    }
    return ret;
}

static int delete_prepare(BlockDriverState *bs, const char *id,
                          const char *name, BdrvSnapshotOp **out,
                          GError **errp)
{
    BdrvSnapshotInfo info = { 0 };
    void *drv_op = NULL;
    int ret;

    *out = NULL;
    if (!id && !name) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "Name or id must be provided");
        return -EINVAL;
    }
    ret = check_writable(bs, has_delete, errp);
    if (ret == 0) {
        ret = bs->drv->snapshot_delete_prepare(bs, id, name, &info, &drv_op,
                                               errp);
    }
    if (ret == 0) {
        *out = op_new(bs, drv_op, &info);
    }
    return ret;
}

static int goto_prepare(BlockDriverState *bs, const char *id,
                        const char *name, BdrvSnapshotOp **out, GError **errp)
{
    BdrvSnapshotInfo info = { 0 };
    void *drv_op = NULL;
    int ret;

    *out = NULL;
    if (!id && !name) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "Name or id must be provided");
        return -EINVAL;
    }
    ret = check_writable(bs, has_goto, errp);
    if (ret == 0) {
        ret = bs->drv->snapshot_goto_prepare(bs, id, name, &info, &drv_op,
                                             errp);
    }
    if (ret == 0) {
        *out = op_new(bs, drv_op, &info);
    }
    return ret;
}

BdrvSnapshotOp *bdrv_snapshot_create_prepare(BlockDriverState *bs,
                                             const BdrvSnapshotInfo *tmpl,
                                             int flags, GError **errp)
{
    BdrvSnapshotOp *op;

    create_prepare(bs, tmpl, flags, &op, errp);
    return op;
}

BdrvSnapshotOp *bdrv_snapshot_delete_prepare(BlockDriverState *bs,
                                             const char *id,
                                             const char *name,
                                             GError **errp)
{
    BdrvSnapshotOp *op;

    delete_prepare(bs, id, name, &op, errp);
    return op;
}

BdrvSnapshotOp *bdrv_snapshot_goto_prepare(BlockDriverState *bs,
                                           const char *id, const char *name,
                                           GError **errp)
{
    BdrvSnapshotOp *op;

    goto_prepare(bs, id, name, &op, errp);
    return op;
}

const BdrvSnapshotInfo *bdrv_snapshot_op_info(BdrvSnapshotOp *op)
{
    return &op->info;
}

BlockDriverState *bdrv_snapshot_op_bs(BdrvSnapshotOp *op)
{
    return op->bs;
}

int bdrv_snapshot_op_publish(BdrvSnapshotOp *op, GError **errp)
{
    int ret;

    g_assert(!op->published);
    ret = op->bs->drv->snapshot_publish(op->bs, op->drv_op, errp);
    if (ret == 0) {
        op->published = true;
    }
    return ret;
}

int bdrv_snapshot_op_unpublish(BdrvSnapshotOp *op, GError **errp)
{
    int ret;

    g_assert(op->published);
    ret = op->bs->drv->snapshot_unpublish(op->bs, op->drv_op, errp);
    if (ret == 0) {
        op->published = false;
    }
    return ret;
}

int bdrv_snapshot_op_undo(BdrvSnapshotOp *op, GError **errp)
{
    /* The driver unpublishes a published op itself (it knows whether
     * the header can still be trusted). */
    int ret = op->bs->drv->snapshot_undo(op->bs, op->drv_op, errp);

    op_free(op);
    return ret;
}

int bdrv_snapshot_op_cleanup(BdrvSnapshotOp *op, GError **errp)
{
    int ret;

    g_assert(op->published);
    ret = op->bs->drv->snapshot_cleanup(op->bs, op->drv_op, errp);
    op_free(op);
    return ret;
}

/*
 * Publish, then clean up; undo if publishing fails.  A clean-up failure
 * is reported (the operation took effect, but clusters may leak), with
 * `what` saying what took effect.
 */
static int run_op(BdrvSnapshotOp *op, const char *what, GError **errp)
{
    g_autoptr(GError) local = NULL;
    g_autofree char *done = g_strdup_printf("Snapshot '%s' was %s",
                                            op->info.name, what);
    int ret = bdrv_snapshot_op_publish(op, errp);

    if (ret < 0) {
        bdrv_snapshot_op_undo(op, NULL);
        return ret;
    }
    ret = bdrv_snapshot_op_cleanup(op, &local);
    if (ret < 0) {
        g_set_error(errp, BDRV_ERROR, local->code,
                    "%s, but freeing the clusters it no longer uses failed "
                    "(they leak): %s", done, local->message);
    }
    return ret;
}

int bdrv_snapshot_create(BlockDriverState *bs, const BdrvSnapshotInfo *tmpl,
                         int flags, BdrvSnapshotInfo *created, GError **errp)
{
    BdrvSnapshotOp *op;
    int ret;

    BdrvSnapshotInfo info = { 0 };

    bdrv_drained_begin(bs);
    ret = create_prepare(bs, tmpl, flags, &op, errp);
    if (ret == 0) {
        bdrv_snapshot_info_copy(&info, &op->info);
        ret = run_op(op, "created", errp);
    }
    bdrv_drained_end(bs);
    if (ret == 0 && created) {
        *created = info;
    } else {
        bdrv_snapshot_info_clear(&info);
    }
    return ret;
}

int bdrv_snapshot_delete(BlockDriverState *bs, const char *id,
                         const char *name, BdrvSnapshotInfo *deleted,
                         GError **errp)
{
    BdrvSnapshotOp *op;
    int ret;

    BdrvSnapshotInfo info = { 0 };

    bdrv_drained_begin(bs);
    ret = delete_prepare(bs, id, name, &op, errp);
    if (ret == 0) {
        bdrv_snapshot_info_copy(&info, &op->info);
        ret = run_op(op, "deleted", errp);
    }
    bdrv_drained_end(bs);
    if (ret == 0 && deleted) {
        *deleted = info;
    } else {
        bdrv_snapshot_info_clear(&info);
    }
    return ret;
}

int bdrv_snapshot_goto_by_id_and_name(BlockDriverState *bs, const char *id,
                                      const char *name, GError **errp)
{
    BdrvSnapshotOp *op;
    int ret;

    bdrv_drained_begin(bs);
    ret = goto_prepare(bs, id, name, &op, errp);
    if (ret == 0) {
        ret = run_op(op, "applied", errp);
    }
    bdrv_drained_end(bs);
    return ret;
}

/* QEMU's goto lookup: the ID first, then the name. */
static bool resolve_id_or_name(BlockDriverState *bs, const char *key,
                               BdrvSnapshotInfo *out, int *ret, GError **errp)
{
    BdrvSnapshotInfo *list;
    int n = bdrv_snapshot_list(bs, &list, errp);

    *ret = n < 0 ? n : 0;
    if (n < 0) {
        return false;
    }
    for (int pass = 0; pass < 2; pass++) {
        for (int i = 0; i < n; i++) {
            if (!strcmp(pass == 0 ? list[i].id_str : list[i].name, key)) {
                bdrv_snapshot_info_copy(out, &list[i]);
                bdrv_snapshot_list_free(list, n);
                return true;
            }
        }
    }
    bdrv_snapshot_list_free(list, n);
    *ret = -ENOENT;
    return false;
}

int bdrv_snapshot_goto(BlockDriverState *bs, const char *snapshot_id,
                       GError **errp)
{
    BdrvSnapshotInfo sn = { 0 };
    int ret;

    if (!resolve_id_or_name(bs, snapshot_id, &sn, &ret, errp)) {
        if (ret == -ENOENT) {
            g_set_error(errp, BDRV_ERROR, BDRV_ERROR_NOT_FOUND,
                        "Failed to load snapshot: %s", g_strerror(ENOENT));
        }
        return ret;
    }
    ret = bdrv_snapshot_goto_by_id_and_name(bs, sn.id_str, sn.name, errp);
    bdrv_snapshot_info_clear(&sn);
    return ret;
}

int bdrv_snapshot_load_tmp(BlockDriverState *bs, const char *id,
                           const char *name, GError **errp)
{
    if (!bs->drv) {
        return no_medium(errp);
    }
    if (!bs->drv->snapshot_load_tmp) {
        return not_supported(bs, errp);
    }
    if (!id && !name) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "Name or id must be provided");
        return -EINVAL;
    }
    if (!bs->read_only) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "Device is not readonly");
        return -EINVAL;
    }
    return bs->drv->snapshot_load_tmp(bs, id, name, errp);
}

int bdrv_snapshot_load_tmp_by_id_or_name(BlockDriverState *bs,
                                         const char *id_or_name,
                                         GError **errp)
{
    BdrvSnapshotInfo sn = { 0 };
    int ret;

    if (!bs->drv) {
        return no_medium(errp);
    }
    if (!bs->drv->snapshot_load_tmp) {
        return not_supported(bs, errp);
    }
    if (!resolve_id_or_name(bs, id_or_name, &sn, &ret, errp)) {
        if (ret == -ENOENT) {
            g_set_error(errp, BDRV_ERROR, BDRV_ERROR_NOT_FOUND,
                        "Can't find snapshot");
        }
        return ret;
    }
    ret = bdrv_snapshot_load_tmp(bs, sn.id_str, sn.name, errp);
    bdrv_snapshot_info_clear(&sn);
    return ret;
}
