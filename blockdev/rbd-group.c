/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Transactions as one RBD group snapshot, and whole-group delete and
 * apply of those (issue 16).
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
 * Whole-group delete and apply: a delete or apply of a snapshot listed
 * under the user's name that is a strata group snapshot passes its check
 * (rbd-snapshot.c marks it), and the plan joins the transaction's ops
 * when every action is such a delete (or every one such an apply) of one
 * name, one per device, and the devices are exactly the images the group
 * snapshot recorded; otherwise it refuses the transaction before any do.
 *
 *   delete      invalidate: rename <name> to ".strata-del.<name>" (one
 *               header update: gone from every image at once); cancel:
 *               rename back; clean: remove the group snapshot, and the
 *               group with the stale ones.
 *   apply       do: flush every image; invalidate: one
 *               rbd_group_snap_rollback (librbd 16 rolls back every image
 *               the snapshot recorded, members of the group or not, sizes
 *               too), then every handle drops its cache.  The rollback is
 *               the last step that can fail and cannot be undone.
 *
 * A process killed inside do leaves at most a group whose snapshot is
 * hidden (never listed) and possibly images still in it; the next plan
 * that meets such an image takes it out of the stale group and removes
 * the group when none of its snapshots is published.  After every group
 * operation (clean) the pool's strata groups with no image and no
 * published snapshot are removed.
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
#define HIDDEN_DEL ".strata-del."

struct RBDGroupTxn {
    RBDGroupKind kind;
    int refs;
    rados_ioctx_t io;            /* the first member's (alive while used) */
    char *group;
    char *name;                  /* the user's */
    char *hidden;
    GPtrArray *members;          /* BDRVRBDState *, no references */
    bool tried;                  /* do ran (its result is in do_ret) */
    int do_ret;
    char *do_msg;
    bool published, cancelled, cleaned;
    bool rolled;                 /* an apply's rollback was started */
};

/*
 * Test hook: STRATA_RBD_GROUP_FAULT=<step> makes that step fail with EIO
 * as librbd could ("create", "add:K", "snap", "remove:K", "rename"; for a
 * whole-group delete "del-rename" (publishing) and "del-remove" (clean);
 * for an apply "rollback"; a comma-separated list fails each), so a
 * test can check what each failure leaves.  STRATA_RBD_GROUP_FAULT_FILE
 * names a file holding the same, read at every step.
 * STRATA_RBD_GROUP=off turns the group path off (the per-image path's
 * tests and the benchmark's comparison).
 */
static bool fault(const char *step, int k)
{
    const char *f = getenv("STRATA_RBD_GROUP_FAULT");
    const char *path = getenv("STRATA_RBD_GROUP_FAULT_FILE");
    g_autofree char *want = k < 0 ? g_strdup(step)
                                  : g_strdup_printf("%s:%d", step, k);
    g_autofree char *text = NULL;
    g_auto(GStrv) steps = NULL;

    /* the file is read at every step, so one process can be made to
     * fail now and then not (fewer daemon starts in the tests) */
    if (!f && path && g_file_get_contents(path, &text, NULL, NULL)) {
        f = g_strstrip(text);
    }
    if (!f) {
        return false;
    }
    /* a comma-separated list: several steps fail */
    steps = g_strsplit(f, ",", -1);
    return g_strv_contains((const char *const *)steps, want);
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

/* Whether the group has no image and no published snapshot (a killed
 * process's leftover, or one whose last snapshot went) */
static bool group_is_stale(rados_ioctx_t io, const char *group)
{
    rbd_group_image_info_t imgs[4];
    rbd_group_snap_info_t snaps[64];
    size_t ni = G_N_ELEMENTS(imgs), ns = G_N_ELEMENTS(snaps);
    bool published = false;

    if (rbd_group_image_list(io, group, imgs, sizeof(imgs[0]), &ni) < 0) {
        return false;            /* too many images counts as in use */
    }
    rbd_group_image_list_cleanup(imgs, sizeof(imgs[0]), ni);
    if (ni > 0 ||
        rbd_group_snap_list(io, group, snaps, sizeof(snaps[0]), &ns) < 0) {
        return false;
    }
    for (size_t i = 0; i < ns; i++) {
        published |= !g_str_has_prefix(snaps[i].name, ".strata-");
    }
    rbd_group_snap_list_cleanup(snaps, sizeof(snaps[0]), ns);
    return !published;
}

/* Removes the pool's stale strata groups but own (their hidden
 * snapshots go with them: no image lists those). */
static void remove_stale_groups(rados_ioctx_t io, const char *own)
{
    g_autofree char *names = NULL;
    size_t size = 1024;
    int r;

    do {
        g_free(names);
        names = g_malloc0(size + 1);
        r = rbd_group_list(io, names, &size);
    } while (r == -ERANGE);
    for (char *p = names; r > 0 && p < names + r && *p;
         p += strlen(p) + 1) {
        if (g_str_has_prefix(p, GROUP_PREFIX) && strcmp(p, own) &&
            group_is_stale(io, p)) {
            strata_info("rbd: removing the stale group %s", p);
            rbd_group_remove(io, p);
        }
    }
}

/* Creates: joined when every device qualifies; otherwise the per-image
 * path, unchanged. */
static void plan_creates(BDRVRBDState *const *st, guint n)
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
        BDRVRBDState *s = st[i];
        RBDSnapOp *op = s ? rbd_sole_pending_op(s) : NULL;

        if (!op || rbd_snap_op_kind(op) != RBD_GROUP_CREATE ||
            s->ro_handle || s->snap ||
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
    g->kind = RBD_GROUP_CREATE;
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

/* The strata group whose published snapshot `name` the image holds
 * (newly allocated), or NULL. */
static char *group_of(BDRVRBDState *s, const char *name)
{
    g_autofree rbd_snap_info_t *snaps = NULL;
    int max = 16, n;
    char *group = NULL;

    do {
        g_free(snaps);
        snaps = g_new0(rbd_snap_info_t, max);
        n = rbd_snap_list(s->image, snaps, &max);
    } while (n == -ERANGE);
    for (int i = 0; i < n && !group; i++) {
        rbd_snap_group_namespace_t ns = { 0 };

        if (rbd_snap_get_group_namespace(s->image, snaps[i].id, &ns,
                                         sizeof(ns)) < 0) {
            continue;
        }
        if (ns.group_pool == rados_ioctx_get_id(s->io) &&
            ns.group_name && g_str_has_prefix(ns.group_name, GROUP_PREFIX) &&
            ns.group_snap_name && !strcmp(ns.group_snap_name, name)) {
            group = g_strdup(ns.group_name);
        }
        rbd_snap_group_namespace_cleanup(&ns, sizeof(ns));
    }
    if (n >= 0) {
        rbd_snap_list_end(snaps);
    }
    return group;
}

static bool is_member(GPtrArray *members, const char *image)
{
    for (guint i = 0; i < members->len; i++) {
        if (!strcmp(((BDRVRBDState *)members->pdata[i])->image_name,
                    image)) {
            return true;
        }
    }
    return false;
}

/*
 * librbd 16 keeps a group snapshot's images in the group's header but
 * has no call that lists them, and rbd_group_snap_rollback/_remove act on
 * every recorded image whatever the transaction named.  So the pool's
 * other images are looked at: the name of one that holds the group
 * snapshot too (newly allocated), NULL when there is none, or an error.
 */
static int other_holder(rados_ioctx_t io, const char *group,
                        const char *name, GPtrArray *members, char **holder)
{
    g_autofree rbd_image_spec_t *specs = NULL;
    size_t max = 64;
    int r;

    *holder = NULL;
    do {
        g_free(specs);
        specs = g_new0(rbd_image_spec_t, max);
        r = rbd_list2(io, specs, &max);
    } while (r == -ERANGE);
    if (r < 0) {
        return r;
    }
    for (size_t i = 0; i < max && !*holder; i++) {
        BDRVRBDState probe = { .io = io };
        g_autofree char *in = NULL;

        if (is_member(members, specs[i].name) ||
            rbd_open_read_only(io, specs[i].name, &probe.image, NULL) < 0) {
            continue;            /* gone meanwhile: it holds nothing */
        }
        in = group_of(&probe, name);
        if (in && !strcmp(in, group)) {
            *holder = g_strdup(specs[i].name);
        }
        rbd_close(probe.image);
    }
    rbd_image_spec_list_cleanup(specs, max);
    return 0;
}

/* Deletes/applies of a group snapshot: joined when the transaction is
 * exactly the whole group, refused (nothing changed) otherwise. */
static bool plan_whole(BDRVRBDState *const *st, guint n, RBDGroupKind kind,
                       GError **errp)
{
    g_autoptr(GPtrArray) members = g_ptr_array_new();
    g_autoptr(GPtrArray) ops = g_ptr_array_new();
    g_autofree char *group = NULL;
    g_autofree char *holder = NULL;
    g_autofree char *first = NULL;
    const char *name = NULL, *image = NULL;
    RBDGroupTxn *g;
    bool joinable = true;
    int r;

    /* the refusal names the first image holding a group snapshot op */
    for (guint i = 0; i < n && !image; i++) {
        first = st[i] ? rbd_whole_group_op_name(st[i]) : NULL;
        image = first ? st[i]->image_name : NULL;
    }
    name = first;
    for (guint i = 0; i < n && joinable; i++) {
        BDRVRBDState *s = st[i];
        RBDSnapOp *op = s ? rbd_sole_pending_op(s) : NULL;
        g_autofree char *gi = NULL;

        if (!op || !rbd_snap_op_whole_group(op) ||
            rbd_snap_op_kind(op) != (int)kind ||
            (kind != RBD_GROUP_DELETE && kind != RBD_GROUP_APPLY) ||
            strcmp(name, rbd_snap_op_name(op)) ||
            (i > 0 && !same_place(members->pdata[0], s)) ||
            is_member(members, s->image_name) ||
            !(gi = group_of(s, name)) || (group && strcmp(group, gi))) {
            joinable = false;
            break;
        }
        if (!group) {
            group = g_steal_pointer(&gi);
        }
        g_ptr_array_add(members, s);
        g_ptr_array_add(ops, op);
    }
    if (joinable) {
        r = other_holder(st[0]->io, group, name, members, &holder);
        if (r < 0) {
            g_set_error(errp, BDRV_ERROR, BDRV_ERROR_IO,
                        "Could not list the images of pool %s: %s",
                        st[0]->pool, g_strerror(-r));
            return false;
        }
    }
    if (!joinable || holder) {
        rbd_refuse_group_snap(errp, name, image);
        return false;
    }
    g = g_new0(RBDGroupTxn, 1);
    g->kind = kind;
    g->io = st[0]->io;
    g->group = g_steal_pointer(&group);
    g->name = g_strdup(name);
    g->hidden = g_strconcat(HIDDEN_DEL, name, NULL);
    g->members = g_ptr_array_ref(members);
    for (guint i = 0; i < ops->len; i++) {
        g->refs++;
        rbd_snap_op_set_group(ops->pdata[i], g);
    }
    return true;
}

bool rbd_group_plan(BlockBackend *const *blks, guint n, RBDGroupKind kind,
                    GError **errp)
{
    g_autofree BDRVRBDState **st = g_new0(BDRVRBDState *, n);
    bool whole = false;

    for (guint i = 0; i < n; i++) {
        g_autofree char *w = NULL;

        st[i] = rbd_state_of(blk_bs(blks[i]));
        w = st[i] ? rbd_whole_group_op_name(st[i]) : NULL;
        whole |= w != NULL;
    }
    if (whole) {
        return plan_whole(st, n, kind, errp);
    }
    if (kind == RBD_GROUP_CREATE) {
        plan_creates(st, n);
    }
    return true;
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

/* A whole-group apply: what the guests wrote goes to the cluster, so the
 * rollback (in invalidate) replaces all of it; a delete has no do. */
static int whole_do(RBDGroupTxn *g)
{
    for (guint i = 0; g->kind == RBD_GROUP_APPLY && i < g->members->len;
         i++) {
        BDRVRBDState *s = g->members->pdata[i];
        int r = rbd_flush(s->image);
        if (r < 0) {
            g->do_ret = r;
            g->do_msg = g_strdup_printf("Failed to flush %s: %s",
                                        s->image_name, g_strerror(-r));
            return r;
        }
    }
    return 0;
}

int rbd_group_do(RBDGroupTxn *g, GError **errp)
{
    if (!g->tried) {
        g->tried = true;
        g->do_ret = g->kind == RBD_GROUP_CREATE ? group_do(g) : whole_do(g);
    }
    if (g->do_ret < 0) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_IO, "%s", g->do_msg);
    }
    return g->do_ret;
}

/* The rollback of every image (librbd rolls back each image the group
 * snapshot recorded, in turn), then each handle drops what it cached:
 * content and size may differ now. */
static int whole_rollback(RBDGroupTxn *g, GError **errp)
{
    int r;

    g->rolled = true;
    r = fault("rollback", -1) ? -EIO
        : rbd_group_snap_rollback(g->io, g->group, g->name);
    for (guint i = 0; i < g->members->len; i++) {
        BDRVRBDState *s = g->members->pdata[i];
        int r2 = rbd_invalidate_cache(s->image);
        if (r2 < 0) {
            strata_warning("rbd: could not drop the cache of %s: %s",
                           s->image_name, g_strerror(-r2));
        }
    }
    if (r < 0) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_IO,
                    "Failed to roll back to group snapshot '%s' (group %s): "
                    "%s", g->name, g->group, g_strerror(-r));
    }
    return r;
}

int rbd_group_invalidate(RBDGroupTxn *g, GError **errp)
{
    int r;

    if (g->published) {
        return 0;
    }
    switch (g->kind) {
    case RBD_GROUP_APPLY:
        r = whole_rollback(g, errp);
        g->published = r == 0;
        return r;
    case RBD_GROUP_DELETE:
        /* one update of the group's header: gone from every list */
        r = fault("del-rename", -1) ? -EIO
            : rbd_group_snap_rename(g->io, g->group, g->name, g->hidden);
        break;
    default:
        r = fault("rename", -1) ? -EIO
            : rbd_group_snap_rename(g->io, g->group, g->hidden, g->name);
        break;
    }
    if (r < 0) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_IO,
                    "Failed to %s group snapshot '%s': %s",
                    g->kind == RBD_GROUP_DELETE ? "remove" : "publish",
                    g->name, g_strerror(-r));
        return r;
    }
    g->published = true;
    return 0;
}

/* A whole-group delete's cancel renames the snapshot back; an apply's has
 * nothing to undo unless librbd's rollback failed part way, which cannot
 * be undone (said in the error). */
static int whole_cancel(RBDGroupTxn *g, GError **errp)
{
    int r = 0;

    if (g->kind == RBD_GROUP_DELETE && g->published) {
        r = rbd_group_snap_rename(g->io, g->group, g->hidden, g->name);
        if (r < 0) {
            g_set_error(errp, BDRV_ERROR, BDRV_ERROR_IO,
                        "Failed to restore group snapshot '%s' (group %s): "
                        "%s", g->name, g->group, g_strerror(-r));
        }
    } else if (g->kind == RBD_GROUP_APPLY && g->rolled) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_IO,
                    "The rollback to group snapshot '%s' (group %s) "
                    "failed; some images may be rolled back", g->name,
                    g->group);
        r = -EIO;
    }
    g->published = false;
    return r;
}

int rbd_group_cancel(RBDGroupTxn *g, GError **errp)
{
    int r;

    if (g->cancelled || !g->tried || g->do_ret < 0) {
        g->cancelled = true;     /* a failed do undid itself */
        return 0;
    }
    g->cancelled = true;
    if (g->kind != RBD_GROUP_CREATE) {
        return whole_cancel(g, errp);
    }
    r = remove_all(g, true, 0);
    if (r < 0) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_IO,
                    "Failed to remove group snapshot '%s' (group %s): %s",
                    g->name, g->group, g_strerror(-r));
    }
    return r;
}

void rbd_group_clean(RBDGroupTxn *g)
{
    int r;

    if (g->cleaned) {
        return;
    }
    g->cleaned = true;
    if (g->kind == RBD_GROUP_DELETE && g->published && !g->cancelled) {
        /* a failure here only leaks: the name is gone already, and the
         * group, left without a published snapshot, is stale */
        r = fault("del-remove", -1) ? -EIO
            : rbd_group_snap_remove(g->io, g->group, g->hidden);
        if (r < 0) {
            strata_warning("rbd: could not remove group snapshot '%s' "
                           "(group %s): %s", g->hidden, g->group,
                           g_strerror(-r));
        }
    }
    /* after the devices resumed: the pool's stale groups (this delete's
     * now empty one too) */
    remove_stale_groups(g->io, g->kind == RBD_GROUP_DELETE ? "" : g->group);
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

bool rbd_group_plan(BlockBackend *const *blks, guint n, RBDGroupKind kind,
                    GError **errp)
{
    (void)blks;
    (void)n;
    (void)kind;
    (void)errp;
    return true;
}

#endif
