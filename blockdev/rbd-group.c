/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Transactions as one RBD group snapshot (issue 16).
 *
 * When a transaction holds only internal snapshot creates, at least two,
 * one per device, every device an rbd image (under raw or alone) of one
 * pool and namespace of one cluster, and all of them with the same name,
 * the engine (blockdev/transaction.c) hands its devices to
 * rbd_group_plan().  The per-image phases of block/rbd-snapshot.c then
 * call in here instead of snapshotting their own image:
 *
 *   do          (the first action's; the others share its result) flush
 *               every image, create the group ".strata-g.<random>", add
 *               every image, one rbd_group_snap_create under the hidden
 *               name ".strata-new.<name>" (librbd quiesces and cuts every
 *               image at once), then remove every image from the group
 *               again: an image belongs to one group at a time, and
 *               librbd leaves the group snapshot on an image that leaves
 *               the group (checked with Pacific's rbd).
 *   invalidate  one rbd_group_snap_rename from the hidden name to <name>:
 *               a single update of the group's header object, so the
 *               snapshot appears on every image at once or on none.
 *   cancel      remove the group snapshot (librbd removes it from every
 *               image it recorded, members or not) and the group.
 *
 * Every failure inside do undoes what do did, so a failed transaction
 * leaves no group and no snapshot.  The group that holds a published
 * snapshot stays (empty): removing it would remove the snapshot.
 *
 * The per-image list (rbd_user_snap_list) shows a group-namespace
 * snapshot under its group snapshot's name when the group is one of
 * strata's and that name is not hidden; so strata-img snapshot -l, QMP
 * and `@name` opens see the user's name.  `rbd snap ls --all` shows it as
 * "group (pool/.strata-g.X@name)" and qemu-img as ".group.<ids>".
 *
 * A process killed inside do leaves at most a group whose snapshot is
 * hidden (never listed) and possibly images still in it; the next plan
 * that meets such an image takes it out of the stale group and removes
 * the group when none of its snapshots is published.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "blockdev/rbd-group.h"

#ifdef CONFIG_RBD

#include "block/log.h"
#include "block/rbd-int.h"

#define GROUP_PREFIX ".strata-g."
#define HIDDEN_NEW ".strata-new."

struct RBDGroupTxn {
    int refs;
    rados_ioctx_t io;            /* the first member's (alive while used) */
    char *group;
    char *name;                  /* the user's */
    char *hidden;
    GPtrArray *members;          /* BDRVRBDState *, no references */
    bool tried;                  /* do ran (its result is in do_ret) */
    int do_ret;
    char *do_msg;
    bool published, cancelled;
};

/*
 * Test hook: STRATA_RBD_GROUP_FAULT=<step> makes that step fail with EIO
 * as librbd could ("create", "add:K", "snap", "remove:K", "rename"), so
 * a test can check that each failure leaves nothing behind.
 * STRATA_RBD_GROUP=off turns the group path off (the per-image path's
 * tests and the benchmark's comparison).
 */
static bool fault(const char *step, int k)
{
    const char *f = getenv("STRATA_RBD_GROUP_FAULT");
    g_autofree char *want = k < 0 ? g_strdup(step)
                                  : g_strdup_printf("%s:%d", step, k);

    return f && !strcmp(f, want);
}

static BDRVRBDState *rbd_state_of(BlockDriverState *bs)
{
    /* raw over rbd passes snapshots down (block/snapshot.c's snap_node) */
    if (bs && bs->drv && strcmp(bs->drv->format_name, "rbd") &&
        !bs->drv->snapshot_list && bs->file && !bs->backing) {
        bs = bs->file;
    }
    if (!bs || !bs->drv || strcmp(bs->drv->format_name, "rbd")) {
        return NULL;
    }
    return bs->opaque;
}

static bool same_place(BDRVRBDState *a, BDRVRBDState *b)
{
    char fa[64] = "", fb[64] = "";

    if (rados_cluster_fsid(a->cluster, fa, sizeof(fa)) < 0 ||
        rados_cluster_fsid(b->cluster, fb, sizeof(fb)) < 0) {
        return false;
    }
    return !strcmp(fa, fb) &&
           rados_ioctx_get_id(a->io) == rados_ioctx_get_id(b->io) &&
           !g_strcmp0(a->namespace ? a->namespace : "",
                      b->namespace ? b->namespace : "");
}

/* An image left in one of strata's groups by a killed process leaves it;
 * the group goes too when it holds no published snapshot.  Returns
 * whether the image is now free of groups. */
static bool free_image(BDRVRBDState *s)
{
    rbd_group_info_t gi = { 0 };
    bool is_free;

    if (rbd_get_group(s->image, &gi, sizeof(gi)) < 0) {
        return false;
    }
    if (gi.pool < 0 || !gi.name || !*gi.name) {
        rbd_group_info_cleanup(&gi, sizeof(gi));
        return true;
    }
    is_free = false;
    if (g_str_has_prefix(gi.name, GROUP_PREFIX) &&
        gi.pool == rados_ioctx_get_id(s->io)) {
        rbd_group_snap_info_t snaps[64];
        size_t n = G_N_ELEMENTS(snaps);
        bool published = false;

        strata_warning("rbd: taking %s out of the stale group %s",
                       s->image_name, gi.name);
        is_free = rbd_group_image_remove(s->io, gi.name, s->io,
                                         s->image_name) == 0;
        if (rbd_group_snap_list(s->io, gi.name, snaps, sizeof(snaps[0]),
                                &n) == 0) {
            for (size_t i = 0; i < n; i++) {
                published |= !g_str_has_prefix(snaps[i].name, ".strata-");
            }
            rbd_group_snap_list_cleanup(snaps, sizeof(snaps[0]), n);
            if (!published) {
                rbd_group_remove(s->io, gi.name);
            }
        }
    }
    rbd_group_info_cleanup(&gi, sizeof(gi));
    return is_free;
}

void rbd_group_plan(BlockBackend *const *blks, guint n)
{
    g_autoptr(GPtrArray) members = g_ptr_array_new();
    g_autoptr(GPtrArray) ops = g_ptr_array_new();
    const char *name = NULL;
    RBDGroupTxn *g;
    const char *off = getenv("STRATA_RBD_GROUP");

    if (n < 2 || (off && !strcmp(off, "off"))) {
        return;
    }
    for (guint i = 0; i < n; i++) {
        BDRVRBDState *s = rbd_state_of(blk_bs(blks[i]));
        RBDSnapOp *op = s ? rbd_sole_pending_create(s) : NULL;

        if (!op || s->ro_handle || s->snap ||
            (name && strcmp(name, rbd_snap_op_name(op))) ||
            (i > 0 && !same_place(members->pdata[0], s)) ||
            !free_image(s)) {
            return;              /* the per-image path */
        }
        name = rbd_snap_op_name(op);
        g_ptr_array_add(members, s);
        g_ptr_array_add(ops, op);
    }
    g = g_new0(RBDGroupTxn, 1);
    g->io = ((BDRVRBDState *)members->pdata[0])->io;
    g->group = g_strdup_printf(GROUP_PREFIX "%08x%08x", g_random_int(),
                               g_random_int());
    g->name = g_strdup(name);
    g->hidden = g_strconcat(HIDDEN_NEW, name, NULL);
    g->members = g_ptr_array_ref(members);
    for (guint i = 0; i < ops->len; i++) {
        g->refs++;
        rbd_snap_op_set_group(ops->pdata[i], g);
    }
}

static int step_fail(RBDGroupTxn *g, int r, const char *what)
{
    g->do_ret = r;
    g->do_msg = g_strdup_printf("Failed to create group snapshot '%s' "
                                "(%s): %s", g->name, what, g_strerror(-r));
    return r;
}

/* Removes the group snapshot (under the name it has) and the group;
 * the images were taken out by do already.  0 or -errno. */
static int remove_all(RBDGroupTxn *g, bool snapped, guint in_group)
{
    int r = 0, r2;

    for (guint i = 0; i < in_group; i++) {
        BDRVRBDState *s = g->members->pdata[i];
        r2 = rbd_group_image_remove(g->io, g->group, s->io, s->image_name);
        r = r ? r : r2;
    }
    if (snapped) {
        r2 = rbd_group_snap_remove(g->io, g->group,
                                   g->published ? g->name : g->hidden);
        r = r ? r : r2;
    }
    r2 = rbd_group_remove(g->io, g->group);
    return r ? r : r2;
}

static int group_do(RBDGroupTxn *g)
{
    guint added = 0, i;
    int r;

    for (i = 0; i < g->members->len; i++) {
        BDRVRBDState *s = g->members->pdata[i];
        r = rbd_flush(s->image);
        if (r < 0) {
            return step_fail(g, r, "flush");
        }
    }
    r = fault("create", -1) ? -EIO : rbd_group_create(g->io, g->group);
    if (r < 0) {
        return step_fail(g, r, "group create");
    }
    for (i = 0; i < g->members->len; i++) {
        BDRVRBDState *s = g->members->pdata[i];
        r = fault("add", i) ? -EIO
            : rbd_group_image_add(g->io, g->group, s->io, s->image_name);
        if (r < 0) {
            remove_all(g, false, added);
            return step_fail(g, r, "image add");
        }
        added++;
    }
    r = fault("snap", -1) ? -EIO
        : rbd_group_snap_create(g->io, g->group, g->hidden);
    if (r < 0) {
        remove_all(g, false, added);
        return step_fail(g, r, "group snap create");
    }
    for (i = 0; i < g->members->len; i++) {
        BDRVRBDState *s = g->members->pdata[i];
        r = fault("remove", i) ? -EIO
            : rbd_group_image_remove(g->io, g->group, s->io, s->image_name);
        if (r < 0) {
            /* images i.. are still members */
            for (guint j = i; j < g->members->len; j++) {
                BDRVRBDState *m = g->members->pdata[j];
                rbd_group_image_remove(g->io, g->group, m->io,
                                       m->image_name);
            }
            remove_all(g, true, 0);
            return step_fail(g, r, "image remove");
        }
    }
    return 0;
}

int rbd_group_do(RBDGroupTxn *g, GError **errp)
{
    if (!g->tried) {
        g->tried = true;
        g->do_ret = group_do(g);
    }
    if (g->do_ret < 0) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_IO, "%s", g->do_msg);
    }
    return g->do_ret;
}

int rbd_group_invalidate(RBDGroupTxn *g, GError **errp)
{
    int r;

    if (g->published) {
        return 0;
    }
    r = fault("rename", -1) ? -EIO
        : rbd_group_snap_rename(g->io, g->group, g->hidden, g->name);
    if (r < 0) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_IO,
                    "Failed to publish group snapshot '%s': %s", g->name,
                    g_strerror(-r));
        return r;
    }
    g->published = true;
    return 0;
}

int rbd_group_cancel(RBDGroupTxn *g, GError **errp)
{
    int r;

    if (g->cancelled || !g->tried || g->do_ret < 0) {
        g->cancelled = true;     /* a failed do undid itself */
        return 0;
    }
    g->cancelled = true;
    r = remove_all(g, true, 0);
    if (r < 0) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_IO,
                    "Failed to remove group snapshot '%s' (group %s): %s",
                    g->name, g->group, g_strerror(-r));
    }
    return r;
}

void rbd_group_unref(RBDGroupTxn *g)
{
    if (--g->refs > 0) {
        return;
    }
    g_ptr_array_unref(g->members);
    g_free(g->group);
    g_free(g->name);
    g_free(g->hidden);
    g_free(g->do_msg);
    g_free(g);
}

char *rbd_group_listed_name(rbd_image_t image, uint64_t snap_id)
{
    rbd_snap_group_namespace_t ns = { 0 };
    char *name = NULL;

    if (rbd_snap_get_group_namespace(image, snap_id, &ns, sizeof(ns)) < 0) {
        return NULL;
    }
    if (ns.group_name && g_str_has_prefix(ns.group_name, GROUP_PREFIX) &&
        ns.group_snap_name &&
        !g_str_has_prefix(ns.group_snap_name, ".strata-")) {
        name = g_strdup(ns.group_snap_name);
    }
    rbd_snap_group_namespace_cleanup(&ns, sizeof(ns));
    return name;
}

#else /* !CONFIG_RBD */

void rbd_group_plan(BlockBackend *const *blks, guint n)
{
    (void)blks;
    (void)n;
}

#endif
