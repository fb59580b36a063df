/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The generic internal-snapshot API (include/block/snapshot.h): argument
 * checks, lookups by ID and/or name with QEMU's per-entry-point semantics,
 * the phases of an operation with their rules enforced (order on a node,
 * drain, busy node, an apply alone), and the one-call operations, each of
 * which drains the node and runs check, do, invalidate and clean (cancel
 * on failure).  The driver does the work; nothing here knows a format.
 */
#include <errno.h>
#include <stdarg.h>
#include <string.h>

#include "block/block_int.h"
#include "block/snapshot.h"

typedef enum {
    OP_CHECKED,
    OP_DONE,
    OP_INVALIDATED,
    OP_CANCELLED,
    OP_FAILED,           /* do failed and undid itself: only clean is left */
} OpState;

struct BdrvSnapshotOp {
    BlockDriverState *bs;
    BlockDriverState *dbs;   /* whose driver holds the snapshots (snap_node) */
    void *drv_op;
    BdrvSnapshotInfo info;
    const char *what;    /* "create", "delete", "apply" */
    OpState state;
    /* checked after an operation that was then abandoned: what it was
     * validated against will not exist */
    bool stale;
};

/* Per node, the operations between check and clean, oldest first. */
static GMutex ops_lock;
static GHashTable *node_ops;    /* BlockDriverState * -> GPtrArray * */

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

/* As QEMU's fallback: a node whose format has no snapshots of its own
 * (raw) passes them to its only child when that one has them (rbd). */
static BlockDriverState *snap_node(BlockDriverState *bs)
{
    if (bs && bs->drv && !bs->drv->snapshot_list && bs->file &&
        !bs->backing && bs->file->drv && bs->file->drv->snapshot_list) {
        return bs->file;
    }
    return bs;
}

bool bdrv_can_snapshot(BlockDriverState *bs)
{
    bs = snap_node(bs);
    return bs && bs->drv && bs->drv->snapshot_list &&
           bs->drv->snapshot_create_check;
}

bool bdrv_format_can_snapshot(const char *format)
{
    BlockDriver *drv = format ? bdrv_find_format(format) : NULL;

    return drv && drv->snapshot_list && drv->snapshot_create_check;
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
    /* QEMU's order: operation blockers before read-only and format */
    if (bdrv_op_is_blocked(bs, errp)) {
        return -EBUSY;
    }
    if (!has_op(snap_node(bs)->drv)) {
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
    return drv->snapshot_create_check;
}

static bool has_delete(BlockDriver *drv)
{
    return drv->snapshot_delete_check;
}

static bool has_goto(BlockDriver *drv)
{
    return drv->snapshot_goto_check;
}

int bdrv_snapshot_list(BlockDriverState *bs, BdrvSnapshotInfo **list,
                       GError **errp)
{
    *list = NULL;
    if (!bs->drv) {
        return no_medium(errp);
    }
    if (!snap_node(bs)->drv->snapshot_list) {
        return not_supported(bs, errp);
    }
    return snap_node(bs)->drv->snapshot_list(snap_node(bs), list, errp);
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
        bdrv_snapshot_not_found(id, name, errp);
    }
    return found;
}

void bdrv_snapshot_not_found(const char *id, const char *name, GError **errp)
{
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

/* ---- the phases and their rules ---- */

static const char *const state_names[] = {
    [OP_CHECKED] = "checked",
    [OP_DONE] = "done",
    [OP_INVALIDATED] = "invalidated",
    [OP_CANCELLED] = "cancelled",
    [OP_FAILED] = "failed in do",
};

/* The node's list (created on demand), under ops_lock. */
static GPtrArray *ops_of(BlockDriverState *bs)
{
    GPtrArray *l;

    if (!node_ops) {
        node_ops = g_hash_table_new(NULL, NULL);
    }
    l = g_hash_table_lookup(node_ops, bs);
    if (!l) {
        l = g_ptr_array_new();
        g_hash_table_insert(node_ops, bs, l);
    }
    return l;
}

static guint index_of(GPtrArray *l, BdrvSnapshotOp *op)
{
    guint i;

    g_assert(g_ptr_array_find(l, op, &i));   /* an op that lives */
    return i;
}

static BdrvSnapshotOp *op_at(GPtrArray *l, guint i)
{
    return g_ptr_array_index(l, i);
}

/* Refuses `step` on op, saying why; the operation is left as it was. */
G_GNUC_PRINTF(4, 5)
static int refuse(BdrvSnapshotOp *op, const char *step, GError **errp,
                  const char *fmt, ...)
{
    g_autofree char *why = NULL;
    va_list ap;

    va_start(ap, fmt);
    why = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                "Cannot %s the %s of snapshot '%s' on node '%s': %s", step,
                op->what, op->info.name ? op->info.name : "",
                bdrv_get_node_name(op->bs), why);
    return -EBUSY;
}

static int refuse_state(BdrvSnapshotOp *op, const char *step, GError **errp)
{
    return refuse(op, step, errp, "it is %s", state_names[op->state]);
}

static int need_drained(BdrvSnapshotOp *op, const char *step, GError **errp)
{
    if (!bdrv_is_drained(op->bs)) {
        return refuse(op, step, errp, "the caller does not hold the node "
                      "drained");
    }
    return 0;
}

/* do and invalidate change what the image shows: only with the node
 * drained by the caller and no blocker (a job) on it. */
static int may_change_image(BdrvSnapshotOp *op, const char *step,
                            GError **errp)
{
    if (need_drained(op, step, errp) < 0) {
        return -EBUSY;
    }
    if (bdrv_op_is_blocked(op->bs, errp)) {
        return -EBUSY;
    }
    return 0;
}

/* Operations checked after op were validated against what op would do;
 * op will not do it now. */
static void mark_newer_stale(GPtrArray *l, guint idx)
{
    for (guint i = idx + 1; i < l->len; i++) {
        if (op_at(l, i)->state == OP_CHECKED) {
            op_at(l, i)->stale = true;
        }
    }
}

static void op_free(BdrvSnapshotOp *op)
{
    GPtrArray *l = ops_of(op->bs);

    g_ptr_array_remove(l, op);
    if (l->len == 0) {
        g_hash_table_remove(node_ops, op->bs);
        g_ptr_array_unref(l);
    }
    bdrv_snapshot_info_clear(&op->info);
    bdrv_unref(op->bs);
    g_free(op);
}

int bdrv_snapshot_check_name(const char *name, GError **errp)
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

static int check_keys(const char *id, const char *name, GError **errp)
{
    if (!id && !name) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "Name or id must be provided");
        return -EINVAL;
    }
    return 0;
}

/* An apply is the only operation on its node. */
static int check_alone(BlockDriverState *bs, bool is_goto, const char *what,
                       const char *name, GError **errp)
{
    GPtrArray *l = ops_of(bs);

    for (guint i = 0; i < l->len; i++) {
        if (is_goto || !strcmp(op_at(l, i)->what, "apply")) {
            g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                        "Cannot check the %s of snapshot '%s' on node '%s': "
                        "the %s of snapshot '%s' is in progress there, and "
                        "an apply must be the only snapshot operation on "
                        "its node", what, name ? name : "",
                        bdrv_get_node_name(bs), op_at(l, i)->what,
                        op_at(l, i)->info.name);
            return -EBUSY;
        }
    }
    return 0;
}

typedef enum { K_CREATE, K_DELETE, K_GOTO } Kind;

static int op_check(BlockDriverState *bs, Kind kind,
                    const BdrvSnapshotInfo *tmpl, int flags, const char *id,
                    const char *name, BdrvSnapshotOp **out, GError **errp)
{
    static const char *const whats[] = { "create", "delete", "apply" };
    static bool (*const has[])(BlockDriver *) = {
        has_create, has_delete, has_goto
    };
    BdrvSnapshotInfo info = { 0 };
    BdrvSnapshotOp *op = NULL;
    BlockDriverState *dbs;
    void *drv_op = NULL;
    int ret;

    ret = kind == K_CREATE ? 0 : check_keys(id, name, errp);
    if (ret == 0) {
        ret = check_writable(bs, has[kind], errp);
    }
    if (ret == 0 && kind == K_CREATE) {
        ret = bdrv_snapshot_check_name(tmpl->name, errp);
    }
    *out = NULL;
    if (ret < 0) {
        return ret;
    }
    dbs = snap_node(bs);
    g_mutex_lock(&ops_lock);
    ret = check_alone(bs, kind == K_GOTO, whats[kind],
                      kind == K_CREATE ? tmpl->name : name ? name : id,
                      errp);
    if (ret == 0) {
        switch (kind) {
        case K_CREATE:
            ret = dbs->drv->snapshot_create_check(dbs, tmpl, flags, &info,
                                              &drv_op, errp);
            break;
        case K_DELETE:
            ret = dbs->drv->snapshot_delete_check(dbs, id, name, &info,
                                              &drv_op, errp);
            break;
        case K_GOTO:
            ret = dbs->drv->snapshot_goto_check(dbs, id, name, &info, &drv_op,
                                            errp);
            break;
        }
    }
    if (ret == 0) {
        op = g_new0(BdrvSnapshotOp, 1);
        bdrv_ref(bs);
        op->bs = bs;
        op->dbs = dbs;
        op->drv_op = drv_op;
        op->info = info;
        op->what = whats[kind];
        op->state = OP_CHECKED;
        g_ptr_array_add(ops_of(bs), op);
        *out = op;
    }
    g_mutex_unlock(&ops_lock);
    return ret;
}

BdrvSnapshotOp *bdrv_snapshot_create_check(BlockDriverState *bs,
                                           const BdrvSnapshotInfo *tmpl,
                                           int flags, GError **errp)
{
    BdrvSnapshotOp *op;

    op_check(bs, K_CREATE, tmpl, flags, NULL, NULL, &op, errp);
    return op;
}

BdrvSnapshotOp *bdrv_snapshot_delete_check(BlockDriverState *bs,
                                           const char *id, const char *name,
                                           GError **errp)
{
    BdrvSnapshotOp *op;

    op_check(bs, K_DELETE, NULL, 0, id, name, &op, errp);
    return op;
}

BdrvSnapshotOp *bdrv_snapshot_goto_check(BlockDriverState *bs,
                                         const char *id, const char *name,
                                         GError **errp)
{
    BdrvSnapshotOp *op;

    op_check(bs, K_GOTO, NULL, 0, id, name, &op, errp);
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

static int may_do(BdrvSnapshotOp *op, GPtrArray *l, GError **errp)
{
    guint idx = index_of(l, op);

    if (op->state != OP_CHECKED) {
        return refuse_state(op, "do", errp);
    }
    if (op->stale) {
        return refuse(op, "do", errp, "an operation checked before it on "
                      "the node was abandoned; check it again");
    }
    for (guint i = 0; i < idx; i++) {
        BdrvSnapshotOp *o = op_at(l, i);
        if (o->state != OP_DONE && o->state != OP_INVALIDATED) {
            return refuse(op, "do", errp, "the %s of snapshot '%s', checked "
                          "before it, is %s (operations on a node are done "
                          "in the order they were checked)", o->what,
                          o->info.name, state_names[o->state]);
        }
    }
    return may_change_image(op, "do", errp);
}

/* pre_do (issue 15): no drain needed, so no ops_lock held while the
 * driver copies; the state is checked under it. */
int bdrv_snapshot_op_pre_do(BdrvSnapshotOp *op, GError **errp)
{
    int ret = 0;

    g_mutex_lock(&ops_lock);
    if (op->state != OP_CHECKED || op->stale) {
        ret = refuse_state(op, "pre_do", errp);
    }
    g_mutex_unlock(&ops_lock);
    if (ret == 0 && op->dbs->drv->snapshot_pre_do) {
        ret = op->dbs->drv->snapshot_pre_do(op->dbs, op->drv_op, errp);
    }
    return ret;
}

void bdrv_snapshot_op_pre_cancel(BdrvSnapshotOp *op)
{
    if (op->dbs->drv->snapshot_pre_cancel) {
        op->dbs->drv->snapshot_pre_cancel(op->dbs, op->drv_op);
    }
}

int bdrv_snapshot_op_do(BdrvSnapshotOp *op, GError **errp)
{
    GPtrArray *l;
    int ret;

    g_mutex_lock(&ops_lock);
    l = ops_of(op->bs);
    ret = may_do(op, l, errp);
    if (ret == 0) {
        ret = op->dbs->drv->snapshot_do(op->dbs, op->drv_op, &op->info, errp);
        if (ret == 0) {
            op->state = OP_DONE;
        } else {
            op->state = OP_FAILED;
            mark_newer_stale(l, index_of(l, op));
        }
    }
    g_mutex_unlock(&ops_lock);
    return ret;
}

static int may_invalidate(BdrvSnapshotOp *op, GPtrArray *l, GError **errp)
{
    guint idx = index_of(l, op);

    if (op->state != OP_DONE) {
        return refuse_state(op, "invalidate", errp);
    }
    for (guint i = 0; i < idx; i++) {
        BdrvSnapshotOp *o = op_at(l, i);
        if (o->state != OP_INVALIDATED) {
            return refuse(op, "invalidate", errp, "the %s of snapshot '%s', "
                          "done before it, is %s (operations on a node are "
                          "invalidated in the order they were done)",
                          o->what, o->info.name, state_names[o->state]);
        }
    }
    return may_change_image(op, "invalidate", errp);
}

int bdrv_snapshot_op_invalidate(BdrvSnapshotOp *op, GError **errp)
{
    int ret;

    g_mutex_lock(&ops_lock);
    ret = may_invalidate(op, ops_of(op->bs), errp);
    if (ret == 0) {
        ret = op->dbs->drv->snapshot_invalidate(op->dbs, op->drv_op, errp);
        if (ret == 0) {
            op->state = OP_INVALIDATED;
        }
    }
    g_mutex_unlock(&ops_lock);
    return ret;
}

int bdrv_snapshot_op_publish_bytes(BdrvSnapshotOp *op, uint64_t *offset,
                                   uint32_t *len, uint8_t *new_bytes,
                                   bool *synced)
{
    int ret = -ENOTSUP;

    g_mutex_lock(&ops_lock);
    if (op->state == OP_DONE && op->bs->drv->snapshot_publish_bytes) {
        ret = op->bs->drv->snapshot_publish_bytes(op->bs, op->drv_op, offset,
                                                  len, new_bytes, synced);
    }
    g_mutex_unlock(&ops_lock);
    return ret;
}

static int may_cancel(BdrvSnapshotOp *op, GPtrArray *l, GError **errp)
{
    guint idx = index_of(l, op);

    if (op->state != OP_DONE && op->state != OP_INVALIDATED) {
        return refuse_state(op, "cancel", errp);
    }
    for (guint i = l->len; i > idx + 1; i--) {
        BdrvSnapshotOp *o = op_at(l, i - 1);
        if (o->state == OP_DONE || o->state == OP_INVALIDATED) {
            return refuse(op, "cancel", errp, "the %s of snapshot '%s', "
                          "done after it, is %s and must be cancelled first "
                          "(operations on a node are cancelled newest first)",
                          o->what, o->info.name, state_names[o->state]);
        }
    }
    return need_drained(op, "cancel", errp);
}

int bdrv_snapshot_op_cancel(BdrvSnapshotOp *op, GError **errp)
{
    GPtrArray *l;
    int ret;

    g_mutex_lock(&ops_lock);
    l = ops_of(op->bs);
    ret = may_cancel(op, l, errp);
    if (ret == 0) {
        /* the driver writes the header back first if invalidated */
        ret = op->dbs->drv->snapshot_cancel(op->dbs, op->drv_op, errp);
        op->state = OP_CANCELLED;
        mark_newer_stale(l, index_of(l, op));
    }
    g_mutex_unlock(&ops_lock);
    return ret;
}

int bdrv_snapshot_op_clean(BdrvSnapshotOp *op, GError **errp)
{
    GPtrArray *l;
    guint idx;
    int ret;

    g_mutex_lock(&ops_lock);
    l = ops_of(op->bs);
    idx = index_of(l, op);
    if (op->state == OP_DONE) {
        ret = refuse(op, "clean", errp, "it is done; invalidate or cancel "
                     "it first");
        goto out;
    }
    if (op->state == OP_INVALIDATED && idx > 0) {
        BdrvSnapshotOp *o = op_at(l, 0);
        ret = refuse(op, "clean", errp, "the %s of snapshot '%s' before it "
                     "is not cleaned yet (invalidated operations on a node "
                     "are cleaned oldest first)", o->what, o->info.name);
        goto out;
    }
    if (op->state != OP_INVALIDATED) {
        mark_newer_stale(l, idx);   /* abandoned */
    }
    ret = op->dbs->drv->snapshot_clean(op->dbs, op->drv_op, errp);
    op_free(op);
out:
    g_mutex_unlock(&ops_lock);
    return ret;
}

/*
 * do, invalidate, clean; cancel and clean if do or invalidate fails.  A
 * clean failure is reported (the operation took effect, but clusters may
 * leak).  *out (if non-NULL) gets the snapshot's description.
 */
static int run_op(BdrvSnapshotOp *op, BdrvSnapshotInfo *out, GError **errp)
{
    g_autoptr(GError) local = NULL;
    BdrvSnapshotInfo info = { 0 };
    const char *what;
    int ret = bdrv_snapshot_op_do(op, errp);

    if (ret == 0) {
        ret = bdrv_snapshot_op_invalidate(op, errp);
        if (ret < 0) {
            bdrv_snapshot_op_cancel(op, NULL);
        }
    }
    if (ret < 0) {
        bdrv_snapshot_op_clean(op, NULL);
        return ret;
    }
    bdrv_snapshot_info_copy(&info, &op->info);
    what = op->what;
    ret = bdrv_snapshot_op_clean(op, &local);
    if (ret < 0 && !strcmp(what, "delete")) {
        /* a delete's driver says it in QEMU's words, which have no
         * prefix (the snapshot is gone all the same, as in QEMU) */
        g_propagate_error(errp, g_steal_pointer(&local));
    } else if (ret < 0) {
        g_set_error(errp, BDRV_ERROR, local->code,
                    "The snapshot %s of '%s' took effect, but freeing the "
                    "clusters it no longer uses failed (they leak): %s",
                    what, info.name, local->message);
    }
    if (ret == 0 && out) {
        *out = info;
    } else {
        bdrv_snapshot_info_clear(&info);
    }
    return ret;
}

static int run(BlockDriverState *bs, Kind kind, const BdrvSnapshotInfo *tmpl,
               int flags, const char *id, const char *name,
               BdrvSnapshotInfo *out, GError **errp)
{
    BdrvSnapshotOp *op;
    int ret;

    bdrv_drained_begin(bs);
    ret = op_check(bs, kind, tmpl, flags, id, name, &op, errp);
    if (ret == 0) {
        ret = run_op(op, out, errp);
    }
    /* for fault injection: every I/O of the operation is behind us (a
     * crash test kills only before this point) */
    bdrv_debug_event(bs->file, "snapshot_done");
    bdrv_drained_end(bs);
    return ret;
}

int bdrv_snapshot_create(BlockDriverState *bs, const BdrvSnapshotInfo *tmpl,
                         int flags, BdrvSnapshotInfo *created, GError **errp)
{
    return run(bs, K_CREATE, tmpl, flags, NULL, NULL, created, errp);
}

int bdrv_snapshot_delete(BlockDriverState *bs, const char *id,
                         const char *name, BdrvSnapshotInfo *deleted,
                         GError **errp)
{
    return run(bs, K_DELETE, NULL, 0, id, name, deleted, errp);
}

int bdrv_snapshot_goto_by_id_and_name(BlockDriverState *bs, const char *id,
                                      const char *name, GError **errp)
{
    return run(bs, K_GOTO, NULL, 0, id, name, NULL, errp);
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
        } else if (ret == -ENOTSUP) {
            /* A node that cannot list snapshots cannot load one either;
             * QEMU's driver says so in its goto. */
            g_clear_error(errp);
            g_set_error(errp, BDRV_ERROR, BDRV_ERROR_NOT_SUPPORTED,
                        "Failed to load snapshot: %s", g_strerror(ENOTSUP));
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
