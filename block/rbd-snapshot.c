/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Internal snapshots of an rbd node, in the generic phases of
 * include/block/snapshot.h (check, do, invalidate, cancel, clean).
 *
 * An RBD snapshot is one atomic operation on the cluster, visible to every
 * client at once, so "do" cannot simply create it: something outside the
 * transaction would see it before invalidate.  Each operation therefore
 * works under a hidden name and publishes with one rename:
 *
 *   create  do: snapshot under ".strata-new.<name>" (the cut is taken
 *           here, under the drain); invalidate: rename it to <name>;
 *           cancel: remove it (under whichever name it has).
 *   delete  invalidate: rename <name> to ".strata-del.<name>" (it is gone
 *           from every list); cancel: rename it back; clean after
 *           invalidate: remove it (a failure there only leaks it).
 *           A delete followed by a create of the same name in one
 *           transaction (savevm over an existing tag) replaces it: the
 *           delete's rename comes first, the create's second.
 *   apply   do: snapshot the current content as ".strata-undo.<name>"
 *           (so the rollback can be undone); invalidate: roll back to
 *           <name>; cancel: roll back to the undo snapshot; clean: remove
 *           the undo snapshot.
 *
 * A process killed between phases leaves at most a hidden snapshot behind
 * (space, never a wrong image content or a half-named snapshot); names
 * with the ".strata-" prefix are left out of the lists.
 *
 * Snapshot IDs are the names (QEMU's rbd driver does the same: RBD has no
 * user-visible IDs).  Snapshots in librbd's group and trash namespaces are
 * not the image's own and are left out too (a group snapshot shows on each
 * member image as ".group.<pool>_<group>_<snap>").  A delete or apply of
 * a strata group snapshot (listed under the user's name) is marked at
 * check; blockdev/rbd-group.c joins it to a whole-group operation, and
 * its do refuses it when nothing joined it (part of the group).
 */
#include <errno.h>
#include <string.h>
#include <time.h>

#include "block/log.h"
#include "block/rbd-int.h"

#define HIDDEN_PREFIX ".strata-"

typedef enum { RBD_OP_CREATE, RBD_OP_DELETE, RBD_OP_GOTO } RBDOpKind;

struct RBDSnapOp {
    RBDOpKind kind;
    char *name;                  /* the user's name */
    char *hidden;                /* the hidden name this op uses */
    bool done, invalidated, cancelled;
    bool rolled;                 /* an apply's rollback was started */
    bool whole_group;            /* a delete/apply of a group snapshot:
                                  * only the whole group can do it */
    RBDGroupTxn *group;          /* joined to a group operation */
};

static void rbd_snap_op_free(gpointer p)
{
    RBDSnapOp *op = p;

    if (op->group) {
        rbd_group_unref(op->group);
    }
    g_free(op->name);
    g_free(op->hidden);
    g_free(op);
}

void rbd_snapshot_state_init(BDRVRBDState *s)
{
    g_mutex_init(&s->lock);
    s->pending = g_ptr_array_new();
}

void rbd_snapshot_state_clear(BDRVRBDState *s)
{
    /* ops are freed by their clean; an unclean one is a caller bug */
    g_ptr_array_unref(s->pending);
    g_mutex_clear(&s->lock);
}

/* ---- listing ---- */

/* The snapshot info of an RBD snapshot, as the generic layer wants it. */
static void fill_info(BdrvSnapshotInfo *sn, const char *name, uint64_t size)
{
    memset(sn, 0, sizeof(*sn));
    sn->id_str = g_strdup(name);
    sn->name = g_strdup(name);
    sn->disk_size = size;
    sn->icount = 0;             /* as QEMU lists them */
}

int rbd_user_snap_list(rbd_image_t image, BdrvSnapshotInfo **list)
{
    g_autofree rbd_snap_info_t *snaps = NULL;
    int max = 16, n;
    GArray *out;

    do {
        g_free(snaps);
        snaps = g_new0(rbd_snap_info_t, max);
        n = rbd_snap_list(image, snaps, &max);
    } while (n == -ERANGE);
    *list = NULL;
    if (n < 0) {
        return n;
    }
    out = g_array_new(FALSE, TRUE, sizeof(BdrvSnapshotInfo));
    for (int i = 0; i < n; i++) {
        rbd_snap_namespace_type_t type = RBD_SNAP_NAMESPACE_TYPE_USER;
        BdrvSnapshotInfo sn;

        g_autofree char *group_name = NULL;

        if (rbd_snap_get_namespace_type(image, snaps[i].id, &type) < 0) {
            continue;
        }
        /* a strata transaction's group snapshot shows under the name
         * the user gave it (blockdev/rbd-group.c) */
        if (type == RBD_SNAP_NAMESPACE_TYPE_GROUP) {
            group_name = rbd_group_listed_name(image, snaps[i].id);
        }
        if ((type != RBD_SNAP_NAMESPACE_TYPE_USER && !group_name) ||
            g_str_has_prefix(snaps[i].name, HIDDEN_PREFIX)) {
            continue;
        }
        fill_info(&sn, group_name ? group_name : snaps[i].name,
                  snaps[i].size);
        g_array_append_val(out, sn);
    }
    rbd_snap_list_end(snaps);
    n = out->len;
    *list = (BdrvSnapshotInfo *)g_array_free(out, n == 0);
    return n;
}

int rbd_snap_list_node(BlockDriverState *bs, BdrvSnapshotInfo **list,
                              GError **errp)
{
    BDRVRBDState *s = bs->opaque;
    int n = rbd_user_snap_list(s->image, list);

    if (n < 0) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_IO,
                    "Could not list the snapshots of %s: %s", s->image_name,
                    g_strerror(-n));
    }
    return n;
}

/* Whether the image has a snapshot called name: one of any namespace
 * with that name, or a group snapshot listed under it. */
static int snap_exists(BDRVRBDState *s, const char *name, bool *exists)
{
    BdrvSnapshotInfo *list = NULL;
    int r = rbd_snap_exists(s->image, name, exists);
    int n;

    if (r < 0 || *exists) {
        return r;
    }
    n = rbd_user_snap_list(s->image, &list);
    if (n < 0) {
        return n;
    }
    for (int i = 0; i < n; i++) {
        *exists |= !strcmp(list[i].name, name);
    }
    bdrv_snapshot_list_free(list, n);
    return 0;
}

/* A pending (checked, not cleaned) op on the node about name, or NULL.
 * Under s->lock. */
static RBDSnapOp *pending_op(BDRVRBDState *s, const char *name)
{
    for (guint i = 0; i < s->pending->len; i++) {
        RBDSnapOp *op = s->pending->pdata[i];
        if (!strcmp(op->name, name) && !op->cancelled) {
            return op;
        }
    }
    return NULL;
}

/*
 * Whether a create of name may join the ops pending on the node: when
 * none is about name, or the only one is a delete of it on this image
 * alone (HMP savevm over an existing tag: the delete is an earlier action
 * of the same transaction, so its invalidate renames the old snapshot
 * away before the create's renames the new one to name, and cancel, in
 * reverse, puts them back).  *replacing says it is the second case.
 * Under s->lock.
 */
static bool create_may_join(BDRVRBDState *s, const char *name,
                            bool *replacing)
{
    guint deletes = 0, others = 0;

    for (guint i = 0; i < s->pending->len; i++) {
        RBDSnapOp *op = s->pending->pdata[i];
        if (!strcmp(op->name, name) && !op->cancelled) {
            if (op->kind == RBD_OP_DELETE && !op->whole_group) {
                deletes++;
            } else {
                others++;
            }
        }
    }
    *replacing = deletes == 1 && others == 0;
    return others == 0 && deletes <= 1;
}

static RBDSnapOp *new_op(BDRVRBDState *s, RBDOpKind kind, const char *name)
{
    static const char *const prefix[] = {
        HIDDEN_PREFIX "new.", HIDDEN_PREFIX "del.", HIDDEN_PREFIX "undo."
    };
    RBDSnapOp *op = g_new0(RBDSnapOp, 1);

    op->kind = kind;
    op->name = g_strdup(name);
    op->hidden = g_strconcat(prefix[kind], name, NULL);
    g_mutex_lock(&s->lock);
    g_ptr_array_add(s->pending, op);
    g_mutex_unlock(&s->lock);
    return op;
}

/* ---- check ---- */

int rbd_snap_create_check(BlockDriverState *bs,
                                 const BdrvSnapshotInfo *tmpl, int flags,
                                 BdrvSnapshotInfo *info, void **opp,
                                 GError **errp)
{
    BDRVRBDState *s = bs->opaque;
    uint64_t size = 0;
    bool exists = false, may_join, replacing;
    int r;

    /* RBD snapshot names are their IDs (as QEMU's rbd driver) */
    if (tmpl->id_str && *tmpl->id_str && strcmp(tmpl->id_str, tmpl->name)) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "rbd do not support snapshot id, it should be NULL or "
                    "equal to snapshot name");
        return -EINVAL;
    }
    if (g_str_has_prefix(tmpl->name, HIDDEN_PREFIX)) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "Snapshot names starting with '" HIDDEN_PREFIX
                    "' are reserved on rbd");
        return -EINVAL;
    }
    r = snap_exists(s, tmpl->name, &exists);
    if (r < 0) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_IO,
                    "Could not look up snapshot '%s': %s", tmpl->name,
                    g_strerror(-r));
        return r;
    }
    g_mutex_lock(&s->lock);
    may_join = create_may_join(s, tmpl->name, &replacing);
    g_mutex_unlock(&s->lock);
    /* RBD has one snapshot per name: duplicates are refused whatever the
     * flags (qemu-img -c gets -EEXIST from librbd in QEMU), unless the
     * same transaction deletes the old one first */
    if ((exists && !replacing) || !may_join) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "Snapshot with name '%s' already exists", tmpl->name);
        return -EEXIST;
    }
    rbd_get_size(s->image, &size);
    fill_info(info, tmpl->name, size);
    info->vm_clock_nsec = tmpl->vm_clock_nsec;
    info->icount = tmpl->icount;
    *opp = new_op(s, RBD_OP_CREATE, tmpl->name);
    return 0;
}

/* The user snapshot matching id and/or name (IDs are names). */
static int find_user_snap(BDRVRBDState *s, const char *id, const char *name,
                          BdrvSnapshotInfo *out, GError **errp)
{
    BdrvSnapshotInfo *list = NULL;
    int n, found = -1;

    if (id && name && strcmp(id, name)) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "rbd do not support snapshot id, it should be NULL or "
                    "equal to snapshot name");
        return -EINVAL;
    }
    n = rbd_user_snap_list(s->image, &list);
    if (n < 0) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_IO,
                    "Could not list the snapshots of %s: %s", s->image_name,
                    g_strerror(-n));
        return n;
    }
    for (int i = 0; i < n && found < 0; i++) {
        if (!strcmp(list[i].name, name ? name : id)) {
            found = i;
        }
    }
    if (found >= 0) {
        bdrv_snapshot_info_copy(out, &list[found]);
    }
    bdrv_snapshot_list_free(list, n);
    if (found < 0) {
        bdrv_snapshot_not_found(id, name, errp);
        return -ENOENT;
    }
    return 0;
}

/* A group snapshot is listed under the user's name but has no user
 * snapshot of that name: librbd can neither roll back nor remove it on
 * one image, only for the whole group (rbd-group.c joins such ops). */
static bool is_group_snap(BDRVRBDState *s, const char *name)
{
    bool user = false;

    return rbd_snap_exists(s->image, name, &user) == 0 && !user;
}

void rbd_refuse_group_snap(GError **errp, const char *name,
                           const char *image)
{
    g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                "Snapshot '%s' of %s is part of an RBD group snapshot; "
                "it can only be removed or rolled back for the whole group "
                "(rbd group snap rm/rollback)", name, image);
}

int rbd_snap_delete_check(BlockDriverState *bs, const char *id,
                                 const char *name, BdrvSnapshotInfo *info,
                                 void **opp, GError **errp)
{
    BDRVRBDState *s = bs->opaque;
    bool busy;
    RBDSnapOp *op;
    int r = find_user_snap(s, id, name, info, errp);

    if (r < 0) {
        return r;
    }
    g_mutex_lock(&s->lock);
    busy = pending_op(s, info->name) != NULL;
    g_mutex_unlock(&s->lock);
    if (busy) {
        bdrv_snapshot_info_clear(info);
        bdrv_snapshot_not_found(id, name, errp);
        return -ENOENT;
    }
    op = new_op(s, RBD_OP_DELETE, info->name);
    op->whole_group = is_group_snap(s, info->name);
    *opp = op;
    return 0;
}

int rbd_snap_goto_check(BlockDriverState *bs, const char *id,
                               const char *name, BdrvSnapshotInfo *info,
                               void **opp, GError **errp)
{
    BDRVRBDState *s = bs->opaque;
    RBDSnapOp *op;
    int r = find_user_snap(s, id, name, info, errp);

    if (r < 0) {
        return r;
    }
    op = new_op(s, RBD_OP_GOTO, info->name);
    op->whole_group = is_group_snap(s, info->name);
    *opp = op;
    return 0;
}

/* ---- do, invalidate, cancel, clean ---- */

static int fail(GError **errp, int r, const char *what, const char *name)
{
    g_set_error(errp, BDRV_ERROR, BDRV_ERROR_IO, "%s '%s': %s", what, name,
                g_strerror(-r));
    return r;
}

static void fill_date(BdrvSnapshotInfo *info)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    info->date_sec = ts.tv_sec;
    info->date_nsec = ts.tv_nsec;
}

int rbd_snap_do(BlockDriverState *bs, void *opaque,
                       BdrvSnapshotInfo *info, GError **errp)
{
    BDRVRBDState *s = bs->opaque;
    RBDSnapOp *op = opaque;
    int r = 0;

    if (op->whole_group && !op->group) {
        /* not joined by the engine's plan: one image of a group alone */
        rbd_refuse_group_snap(errp, op->name, s->image_name);
        return -ENOTSUP;
    }
    if (op->group) {
        /* the first member's do works for every image */
        r = rbd_group_do(op->group, errp);
        if (r < 0) {
            return r;
        }
        if (op->kind == RBD_OP_CREATE) {
            fill_date(info);
        }
        op->done = true;
        return 0;
    }
    switch (op->kind) {
    case RBD_OP_CREATE:
    case RBD_OP_GOTO:
        /* what guests wrote so far belongs in the snapshot (or, for an
         * apply, in the undo snapshot) */
        r = rbd_flush(s->image);
        if (r == 0) {
            r = rbd_snap_create(s->image, op->hidden);
        }
        if (r < 0) {
            return fail(errp, r, "Failed to create snapshot", op->name);
        }
        if (op->kind == RBD_OP_CREATE) {
            fill_date(info);
        }
        break;
    case RBD_OP_DELETE:
        break;                   /* all of it is in invalidate and clean */
    }
    op->done = true;
    return 0;
}

int rbd_snap_invalidate(BlockDriverState *bs, void *opaque,
                               GError **errp)
{
    BDRVRBDState *s = bs->opaque;
    RBDSnapOp *op = opaque;
    int r = 0;

    if (op->group) {
        /* the first member's call publishes for every image */
        r = rbd_group_invalidate(op->group, errp);
        if (r < 0) {
            return r;
        }
        op->invalidated = true;
        return 0;
    }
    switch (op->kind) {
    case RBD_OP_CREATE:
        r = rbd_snap_rename(s->image, op->hidden, op->name);
        break;
    case RBD_OP_DELETE:
        r = rbd_snap_rename(s->image, op->name, op->hidden);
        break;
    case RBD_OP_GOTO:
        op->rolled = true;
        r = rbd_snap_rollback(s->image, op->name);
        break;
    }
    if (r < 0) {
        return fail(errp, r, op->kind == RBD_OP_GOTO
                    ? "Failed to roll back to snapshot"
                    : "Failed to publish snapshot", op->name);
    }
    op->invalidated = true;
    return 0;
}

int rbd_snap_cancel(BlockDriverState *bs, void *opaque, GError **errp)
{
    BDRVRBDState *s = bs->opaque;
    RBDSnapOp *op = opaque;
    int r = 0;

    if (op->group) {
        op->cancelled = true;
        return rbd_group_cancel(op->group, errp);
    }
    switch (op->kind) {
    case RBD_OP_CREATE:
        r = rbd_snap_remove(s->image,
                            op->invalidated ? op->name : op->hidden);
        break;
    case RBD_OP_DELETE:
        if (op->invalidated) {
            r = rbd_snap_rename(s->image, op->hidden, op->name);
        }
        break;
    case RBD_OP_GOTO:
        /* a rollback that failed half-way is undone too; one never
         * started has nothing to undo (a rollback copies every object) */
        r = op->rolled ? rbd_snap_rollback(s->image, op->hidden) : 0;
        if (r == 0) {
            r = rbd_snap_remove(s->image, op->hidden);
        }
        break;
    }
    op->cancelled = true;
    if (r < 0) {
        return fail(errp, r, "Failed to cancel the operation on snapshot",
                    op->name);
    }
    return 0;
}

int rbd_snap_clean(BlockDriverState *bs, void *opaque, GError **errp)
{
    BDRVRBDState *s = bs->opaque;
    RBDSnapOp *op = opaque;
    int r = 0;

    if (op->group) {
        /* the whole group's garbage, once (a delete's hidden snapshot) */
        rbd_group_clean(op->group);
    } else if (op->invalidated && !op->cancelled && op->kind != RBD_OP_CREATE) {
        r = rbd_snap_remove(s->image, op->hidden);
    } else if (op->done && !op->invalidated && !op->cancelled &&
               op->kind != RBD_OP_DELETE) {
        /* done and abandoned without cancel: not reached through the
         * generic layer, which refuses that; removed all the same */
        r = rbd_snap_remove(s->image, op->hidden);
    }
    g_mutex_lock(&s->lock);
    g_ptr_array_remove(s->pending, op);
    g_mutex_unlock(&s->lock);
    if (r < 0) {
        strata_warning("rbd: could not remove snapshot '%s' of %s: %s",
                       op->hidden, s->image_name, g_strerror(-r));
    }
    rbd_snap_op_free(op);
    return 0;
}

/* ---- joining a group snapshot (blockdev/rbd-group.c) ---- */

RBDSnapOp *rbd_sole_pending_op(BDRVRBDState *s)
{
    RBDSnapOp *op = NULL;

    g_mutex_lock(&s->lock);
    if (s->pending->len == 1) {
        op = s->pending->pdata[0];
        if (op->done || op->group) {
            op = NULL;
        }
    }
    g_mutex_unlock(&s->lock);
    return op;
}

char *rbd_whole_group_op_name(BDRVRBDState *s)
{
    char *name = NULL;

    g_mutex_lock(&s->lock);
    for (guint i = 0; i < s->pending->len && !name; i++) {
        RBDSnapOp *op = s->pending->pdata[i];
        if (op->whole_group && !op->group && !op->done) {
            name = g_strdup(op->name);
        }
    }
    g_mutex_unlock(&s->lock);
    return name;
}

int rbd_snap_op_kind(RBDSnapOp *op)
{
    return op->kind == RBD_OP_CREATE ? RBD_GROUP_CREATE
         : op->kind == RBD_OP_DELETE ? RBD_GROUP_DELETE : RBD_GROUP_APPLY;
}

bool rbd_snap_op_whole_group(RBDSnapOp *op)
{
    return op->whole_group;
}

const char *rbd_snap_op_name(RBDSnapOp *op)
{
    return op->name;
}

void rbd_snap_op_set_group(RBDSnapOp *op, RBDGroupTxn *g)
{
    op->group = g;
}

int rbd_snap_set_group(rbd_image_t image, const char *name)
{
    g_autofree rbd_snap_info_t *snaps = NULL;
    int max = 16, n, r = -ENOENT;

    do {
        g_free(snaps);
        snaps = g_new0(rbd_snap_info_t, max);
        n = rbd_snap_list(image, snaps, &max);
    } while (n == -ERANGE);
    if (n < 0) {
        return n;
    }
    for (int i = 0; i < n && r == -ENOENT; i++) {
        g_autofree char *listed = rbd_group_listed_name(image, snaps[i].id);
        if (listed && !strcmp(listed, name)) {
            r = rbd_snap_set_by_id(image, snaps[i].id);
        }
    }
    rbd_snap_list_end(snaps);
    return r;
}
