/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The block commands: blockdev-add and blockdev-del (the nodes the
 * monitor owns, each with an anonymous device so that the transaction
 * engine, which works on devices, finds it by its root node), the
 * stand-alone snapshot commands (one-action transactions, as in QEMU)
 * and transaction.
 *
 * Deliberate limits, named where they apply: "file" may name an existing
 * node only if it is a protocol node (file, host_device...) that no other
 * node uses as its file (QEMU's permission conflict); "auto-read-only" is
 * accepted and has no effect (strata opens read-write or fails).
 */
#include <string.h>

#include "monitor/monitor-int.h"
#include "blockdev/registry.h"
#include "blockdev/transaction.h"
#include "block/log.h"
#include "block/snapshot.h"
#include "qapi-gen.h"
#include "nbd/server.h"          /* nbd_node_in_use (issue 13) */

/* A node blockdev-add made, by node-name. */
typedef struct OwnedNode {
    BlockDriverState *bs;        /* a reference */
    BlockBackend *blk;           /* its anonymous device, a reference */
} OwnedNode;

static GHashTable *owned;        /* node-name -> OwnedNode * */

static void owned_free(gpointer p)
{
    OwnedNode *o = p;

    blockdev_remove_device_blk(o->blk);
    blk_unref(o->blk);
    bdrv_unref(o->bs);
    g_free(o);
}

/* ---- blockdev-add: BlockdevOptions to bdrv_open()'s flat options ---- */

/* Who holds a node (blockdev-add's references, blockdev-del). */
typedef struct Parent {
    BlockDriverState *child;
    char *backing_of;             /* name of a node it is the backing of */
    bool file_of;                 /* some node's file child */
    char *file_parent;            /* name of that node */
    bool data_of;                 /* another child (a qcow2 data file) */
} Parent;

static bool find_parent(BlockDriverState *bs, void *opaque)
{
    Parent *p = opaque;

    if (bdrv_get_backing(bs) == p->child) {
        p->backing_of = g_strdup(bdrv_get_node_name(bs));
        return true;
    }
    if (bdrv_get_file(bs) == p->child && !p->file_of) {
        p->file_of = true;
        p->file_parent = g_strdup(bdrv_get_node_name(bs));
    }
    p->data_of |= bdrv_get_file(bs) != p->child &&
                  bdrv_has_data_child(bs, p->child);
    return false;
}

static bool flatten_options(const BlockdevOptions *o, const char *prefix,
                            bool keyval, BlockOpts *opts, GError **errp);

static void set_opt(BlockOpts *opts, const char *prefix, const char *key,
                    const char *value)
{
    g_autofree char *k = g_strconcat(prefix, key, NULL);

    bdrv_opts_set(opts, k, value);
}

/* A child given as a definition or, for "file", as the name of an
 * existing protocol node (new_node: the node being added, for QEMU's
 * text when that node already has a parent). */
static bool flatten_child(JsonNode *ref, const char *child, bool keyval,
                          BlockOpts *opts, const char *prefix,
                          const char *new_node, GError **errp)
{
    g_autofree char *p = g_strdup_printf("%s%s.", prefix, child);
    BlockdevOptions *sub;
    bool ok;

    if (JSON_NODE_HOLDS_OBJECT(ref)) {
        sub = qapi_input(&qapi_type_BlockdevOptions, ref, keyval, errp);
        if (!sub) {
            return false;
        }
        ok = flatten_options(sub, p, keyval, opts, errp);
        qapi_free(&qapi_type_BlockdevOptions, sub);
        return ok;
    }
    {
        const char *name = json_node_get_string(ref);
        g_autoptr(BlockDriverState) bs = blockdev_find_node(name);
        Parent holders = { .child = bs };
        g_autofree char *holder = NULL;

        if (!bs) {
            return qmp_fail(errp, "Cannot find device='%s' nor node-name='%s'",
                        name, name);
        }
        /* one format node per file node: QEMU's permission conflict */
        bdrv_any_node(find_parent, &holders);
        g_free(holders.backing_of);
        holder = holders.file_parent;
        if (holders.file_of) {
            return qmp_fail(errp, "Permission conflict on node '%s': "
                            "permissions 'write, resize' are both required "
                            "by node '%s' (uses node '%s' as '%s' child) and "
                            "unshared by node '%s' (uses node '%s' as '%s' "
                            "child).", name, holder, name, child,
                            new_node ? new_node : "", name, child);
        }
        set_opt(opts, prefix, child, name);
        return true;
    }
}

static bool flatten_backing(JsonNode *ref, bool keyval, BlockOpts *opts,
                            const char *prefix, GError **errp)
{
    const char *name;

    if (JSON_NODE_HOLDS_NULL(ref)) {
        set_opt(opts, prefix, "backing", "");
        return true;
    }
    if (JSON_NODE_HOLDS_OBJECT(ref)) {
        return flatten_child(ref, "backing", keyval, opts, prefix, NULL,
                             errp);
    }
    name = json_node_get_string(ref);
    if (!*name) {
        strata_warning("Use of \"backing\": \"\" is deprecated; use "
                       "\"backing\": null instead");
        set_opt(opts, prefix, "backing", "");
        return true;
    }
    {
        g_autoptr(BlockDriverState) bs = blockdev_find_node(name);
        if (!bs || !strcmp(name, "null")) {
            return qmp_fail(errp, "Could not open backing file: Cannot find "
                        "device='%s' nor node-name='%s'", name, name);
        }
    }
    set_opt(opts, prefix, "backing", name);
    return true;
}

/* qcow2's external data file: a definition, or a node shared with
 * whoever else holds it (the qcow2 driver takes a reference). */
static bool flatten_data_file(JsonNode *ref, bool keyval, BlockOpts *opts,
                              const char *prefix, GError **errp)
{
    const char *name;

    if (JSON_NODE_HOLDS_OBJECT(ref)) {
        return flatten_child(ref, "data-file", keyval, opts, prefix, NULL,
                             errp);
    }
    name = json_node_get_string(ref);
    {
        g_autoptr(BlockDriverState) bs = blockdev_find_node(name);
        if (!bs) {
            return qmp_fail(errp, "Cannot find device='%s' nor "
                            "node-name='%s'", name, name);
        }
    }
    set_opt(opts, prefix, "data-file", name);
    return true;
}

/* issue 13 (api): driver=nbd's server address and export */
static void flatten_nbd(const BlockdevOptionsNbd *n, const char *prefix,
                        BlockOpts *opts)
{
    const NbdClientAddress *a = n->server;

    set_opt(opts, prefix, "server.type",
            qapi_type_NbdClientAddressType.values[a->type]);
    if (a->type == NBDCLIENTADDRESSTYPE_UNIX) {
        set_opt(opts, prefix, "server.path",
                ((const NbdClientUnix *)a->u)->path);
    } else {
        set_opt(opts, prefix, "server.host",
                ((const NbdClientInet *)a->u)->host);
        set_opt(opts, prefix, "server.port",
                ((const NbdClientInet *)a->u)->port);
    }
    if (n->has_export) {
        set_opt(opts, prefix, "export", n->export);
    }
}

/* driver=rbd: the members as block/rbd.c reads them (server.N.host...) */
static bool flatten_rbd(const BlockdevOptionsRbd *r, const char *prefix,
                        BlockOpts *opts)
{
    set_opt(opts, prefix, "pool", r->pool);
    set_opt(opts, prefix, "image", r->image);
    if (r->has_namespace) {
        set_opt(opts, prefix, "namespace", r->namespace);
    }
    if (r->has_conf) {
        set_opt(opts, prefix, "conf", r->conf);
    }
    if (r->has_snapshot) {
        set_opt(opts, prefix, "snapshot", r->snapshot);
    }
    if (r->has_user) {
        set_opt(opts, prefix, "user", r->user);
    }
    if (r->has_key_secret) {
        set_opt(opts, prefix, "key-secret", r->key_secret);
    }
    for (guint i = 0; r->has_auth_client_required &&
         i < r->auth_client_required->len; i++) {
        g_autofree char *k = g_strdup_printf("auth-client-required.%u", i);
        int mode = GPOINTER_TO_INT(r->auth_client_required->pdata[i]);
        set_opt(opts, prefix, k, qapi_type_RbdAuthMode.values[mode]);
    }
    for (guint i = 0; r->has_server && i < r->server->len; i++) {
        const InetSocketAddressBase *a = r->server->pdata[i];
        g_autofree char *h = g_strdup_printf("server.%u.host", i);
        g_autofree char *p = g_strdup_printf("server.%u.port", i);
        set_opt(opts, prefix, h, a->host);
        set_opt(opts, prefix, p, a->port);
    }
    return true;
}

/* qcow2's encrypt member: encrypt.format and encrypt.key-secret. */
static void flatten_encrypt(const BlockdevQcow2Encryption *e,
                            const char *prefix, BlockOpts *opts)
{
    const char *key = NULL;

    if (e->format == BLOCKDEVQCOW2ENCRYPTIONFORMAT_AES) {
        const QCryptoBlockOptionsQCow *a = e->u;
        key = a && a->has_key_secret ? a->key_secret : NULL;
    } else {
        const QCryptoBlockOptionsLUKS *l = e->u;
        key = l && l->has_key_secret ? l->key_secret : NULL;
    }
    set_opt(opts, prefix, "encrypt.format",
            qapi_type_BlockdevQcow2EncryptionFormat.values[e->format]);
    if (key) {
        set_opt(opts, prefix, "encrypt.key-secret", key);
    }
}

/* A JSON scalar as the option string the driver parses ("on"/"off" for
 * booleans, as keyval writes them). */
static char *scalar_text(JsonNode *n)
{
    if (json_node_get_value_type(n) == G_TYPE_BOOLEAN) {
        return g_strdup(json_node_get_boolean(n) ? "on" : "off");
    }
    if (json_node_get_value_type(n) == G_TYPE_INT64) {
        return g_strdup_printf("%" G_GINT64_FORMAT, json_node_get_int(n));
    }
    return g_strdup(json_node_get_string(n));
}

/* overlap-check: a mode, or flags (template and per-structure keys);
 * the schema has checked it. */
static void flatten_overlap_check(JsonNode *n, const char *prefix,
                                  BlockOpts *opts)
{
    JsonObject *o;
    GList *keys;

    if (!JSON_NODE_HOLDS_OBJECT(n)) {
        set_opt(opts, prefix, "overlap-check", json_node_get_string(n));
        return;
    }
    o = json_node_get_object(n);
    keys = json_object_get_members(o);
    for (GList *k = keys; k; k = k->next) {
        g_autofree char *key = g_strconcat("overlap-check.", k->data, NULL);
        g_autofree char *v = scalar_text(json_object_get_member(o, k->data));
        set_opt(opts, prefix, key, v);
    }
    g_list_free(keys);
}

static void set_int_opt(BlockOpts *opts, const char *prefix, const char *key,
                        bool has, int64_t v)
{
    if (has) {
        g_autofree char *s = g_strdup_printf("%" G_GINT64_FORMAT, v);
        set_opt(opts, prefix, key, s);
    }
}

static void set_bool_opt(BlockOpts *opts, const char *prefix, const char *key,
                         bool has, bool v)
{
    if (has) {
        set_opt(opts, prefix, key, v ? "on" : "off");
    }
}

/* The qcow2 runtime options, for block/qcow2-options.c to check. */
static void flatten_qcow2_runtime(const BlockdevOptionsQcow2 *q,
                                  const char *prefix, BlockOpts *opts)
{
    set_bool_opt(opts, prefix, "lazy-refcounts", q->has_lazy_refcounts,
                 q->lazy_refcounts);
    set_bool_opt(opts, prefix, "pass-discard-request",
                 q->has_pass_discard_request, q->pass_discard_request);
    set_bool_opt(opts, prefix, "pass-discard-snapshot",
                 q->has_pass_discard_snapshot, q->pass_discard_snapshot);
    set_bool_opt(opts, prefix, "pass-discard-other",
                 q->has_pass_discard_other, q->pass_discard_other);
    set_int_opt(opts, prefix, "cache-size", q->has_cache_size,
                q->cache_size);
    set_int_opt(opts, prefix, "l2-cache-size", q->has_l2_cache_size,
                q->l2_cache_size);
    set_int_opt(opts, prefix, "l2-cache-entry-size",
                q->has_l2_cache_entry_size, q->l2_cache_entry_size);
    set_int_opt(opts, prefix, "refcount-cache-size",
                q->has_refcount_cache_size, q->refcount_cache_size);
    set_int_opt(opts, prefix, "cache-clean-interval",
                q->has_cache_clean_interval, q->cache_clean_interval);
    if (q->has_overlap_check) {
        flatten_overlap_check(q->overlap_check, prefix, opts);
    }
}

static bool flatten_options(const BlockdevOptions *o, const char *prefix,
                            bool keyval, BlockOpts *opts, GError **errp)
{
    const char *name = o->has_node_name ? o->node_name : NULL;

    set_opt(opts, prefix, "driver", qapi_type_BlockdevDriver.values[o->driver]);
    if (o->has_node_name) {
        set_opt(opts, prefix, "node-name", o->node_name);
    }
    if (o->has_read_only) {
        set_opt(opts, prefix, "read-only", o->read_only ? "on" : "off");
    }
    if (o->has_force_share) {
        set_opt(opts, prefix, "force-share", o->force_share ? "on" : "off");
    }
    /* QEMU's blockdev-add ignores discards unless told to unmap; the
     * children opened with the node inherit its choice unless they make
     * their own. */
    if (o->has_discard || !*prefix) {
        set_opt(opts, prefix, "discard", o->has_discard ?
                qapi_type_BlockdevDiscardOptions.values[o->discard] :
                "ignore");
    }
    if (o->has_detect_zeroes) {
        set_opt(opts, prefix, "detect-zeroes",
                qapi_type_BlockdevDetectZeroesOptions.values[o->detect_zeroes]);
    }
    if (o->has_cache && o->cache->has_direct) {
        set_opt(opts, prefix, "cache.direct", o->cache->direct ? "on" : "off");
    }
    if (o->has_cache && o->cache->has_no_flush) {
        set_opt(opts, prefix, "cache.no-flush",
                o->cache->no_flush ? "on" : "off");
    }
    switch (o->driver) {
    case BLOCKDEVDRIVER_FILE:
    case BLOCKDEVDRIVER_HOST_CDROM:
    case BLOCKDEVDRIVER_HOST_DEVICE: {
        const BlockdevOptionsFile *f = o->u;
        set_opt(opts, prefix, "filename", f->filename);
        if (f->has_locking) {
            set_opt(opts, prefix, "locking",
                    qapi_type_OnOffAuto.values[f->locking]);
        }
        if (f->has_aio) {
            set_opt(opts, prefix, "aio",
                    qapi_type_BlockdevAioOptions.values[f->aio]);
        }
        set_int_opt(opts, prefix, "aio-max-batch", f->has_aio_max_batch,
                    f->aio_max_batch);
        set_bool_opt(opts, prefix, "drop-cache", f->has_drop_cache,
                     f->drop_cache);
        set_bool_opt(opts, prefix, "x-check-cache-dropped",
                     f->has_x_check_cache_dropped, f->x_check_cache_dropped);
        return true;
    }
    case BLOCKDEVDRIVER_QCOW2: {
        const BlockdevOptionsQcow2 *q = o->u;
        if (q->has_encrypt) {
            flatten_encrypt(q->encrypt, prefix, opts);
        }
        flatten_qcow2_runtime(q, prefix, opts);
        return flatten_child(q->file, "file", keyval, opts, prefix,
                             name, errp) &&
               (!q->has_backing ||
                flatten_backing(q->backing, keyval, opts, prefix, errp)) &&
               (!q->has_data_file ||
                flatten_data_file(q->data_file, keyval, opts, prefix, errp));
    }
    case BLOCKDEVDRIVER_RAW: {
        const BlockdevOptionsGenericFormat *r = o->u;
        return flatten_child(r->file, "file", keyval, opts, prefix,
                             name, errp);
    }
    case BLOCKDEVDRIVER_LUKS: {
        const BlockdevOptionsLUKS *l = o->u;
        if (l->has_key_secret) {
            set_opt(opts, prefix, "key-secret", l->key_secret);
        }
        return flatten_child(l->file, "file", keyval, opts, prefix,
                             name, errp);
    }
    case BLOCKDEVDRIVER_NBD:   /* issue 13 (api): the NBD client */
        flatten_nbd(o->u, prefix, opts);
        return true;
    case BLOCKDEVDRIVER_RBD:
        return flatten_rbd(o->u, prefix, opts);
    default:
        return qmp_fail(errp, "Driver '%s' is not supported",
                    qapi_type_BlockdevDriver.values[o->driver]);
    }
}

/*
 * A node the monitor added that another of its nodes uses as its file is
 * no root: its device leaves the registry while that lasts, so that
 * savevm, info block and the transaction engine, which see devices, see
 * roots only (QEMU's "monitor-owned nodes without parents").
 */
static OwnedNode *owned_file_of(BlockDriverState *bs)
{
    BlockDriverState *file = bdrv_get_file(bs);
    OwnedNode *f = file && owned ?
        g_hash_table_lookup(owned, bdrv_get_node_name(file)) : NULL;

    return f && f->bs == file ? f : NULL;
}

static bool add_node(const BlockdevOptions *o, bool keyval, GError **errp)
{
    g_autoptr(GHashTable) opts = bdrv_opts_new();
    g_autoptr(BlockDriverState) bs = NULL;
    OwnedNode *on;

    if (!o->has_node_name) {
        return qmp_fail(errp, "'node-name' must be specified for the root node");
    }
    if (!flatten_options(o, "", keyval, opts, errp)) {
        return false;
    }
    bs = blockdev_open_node(NULL, g_steal_pointer(&opts), BDRV_O_RDWR, errp);
    if (!bs) {
        return false;
    }
    on = g_new0(OwnedNode, 1);
    on->blk = blk_new(NULL, bs);
    if (!blockdev_add_device(on->blk, errp)) {
        blk_unref(on->blk);
        g_free(on);
        return false;
    }
    on->bs = g_steal_pointer(&bs);
    if (!owned) {
        owned = g_hash_table_new_full(g_str_hash, g_str_equal, g_free,
                                      owned_free);
    }
    g_hash_table_insert(owned, g_strdup(o->node_name), on);
    if (owned_file_of(on->bs)) {
        blockdev_remove_device_blk(owned_file_of(on->bs)->blk);
    }
    return true;
}

bool monitor_blockdev_add(JsonNode *options, bool keyval, GError **errp)
{
    BlockdevOptions *o = qapi_input(&qapi_type_BlockdevOptions, options,
                                    keyval, errp);
    bool ok;

    if (!o) {
        return false;
    }
    ok = add_node(o, keyval, errp);
    qapi_free(&qapi_type_BlockdevOptions, o);
    return ok;
}

void monitor_blockdev_close_all(void)
{
    /* Devices first (each drops its root), then the monitor's own
     * references: the last one flushes and closes each image. */
    g_clear_pointer(&owned, g_hash_table_unref);
}

JsonNode *qmp_blockdev_add(const BlockdevOptions *args, GError **errp)
{
    return add_node(args, false, errp) ? qmp_empty_return() : NULL;
}

/* ---- blockdev-del ---- */

/*
 * The devices other than the node's own that show it: blockdev-snapshot
 * put it on top of another node's device.  QEMU has no device there (the
 * overlay has no parent but the monitor), so deleting the overlay is
 * allowed and leaves the old node alone again: the device goes back to
 * the overlay's backing node.  False ("in use") if some device cannot.
 */
static bool release_other_devices(OwnedNode *on, bool apply)
{
    g_autoptr(GPtrArray) devs = blockdev_list_devices();
    BlockDriverState *below = bdrv_get_backing(on->bs);

    for (guint i = 0; i < devs->len; i++) {
        BlockBackend *blk = g_ptr_array_index(devs, i);

        if (blk == on->blk || blk_bs(blk) != on->bs) {
            continue;
        }
        if (*blk_name(blk) || !below) {
            return false;       /* a named device really uses it */
        }
        if (apply) {
            blk_set_root(blk, below);
        }
    }
    return true;
}

JsonNode *qmp_blockdev_del(const q_obj_blockdev_del_arg *args, GError **errp)
{
    OwnedNode *on = owned ? g_hash_table_lookup(owned, args->node_name)
                          : NULL;
    OwnedNode *file;
    Parent p = { 0 };
    bool busy;

    if (!on) {
        g_autoptr(BlockDriverState) bs = blockdev_find_node(args->node_name);
        if (bs) {
            qmp_fail(errp, "Node %s is not owned by the monitor",
                 args->node_name);
        } else {
            qmp_fail(errp, "Failed to find node with node-name='%s'",
                 args->node_name);
        }
        return NULL;
    }
    if (nbd_node_in_use(on->bs)) {      /* an NBD export's (issue 13) */
        qmp_fail(errp, "Node %s is in use", args->node_name);
        return NULL;
    }
    p.child = on->bs;
    busy = bdrv_any_node(find_parent, &p);
    g_free(p.file_parent);
    if (busy) {
        qmp_fail(errp, "Node '%s' is busy: node is used as backing hd of '%s'",
             args->node_name, p.backing_of);
        g_free(p.backing_of);
        return NULL;
    }
    /* QEMU's text for a node another node holds a reference to */
    if (p.data_of || p.file_of) {
        qmp_fail(errp, "Block device %s is in use", args->node_name);
        return NULL;
    }
    if (!release_other_devices(on, false)) {
        qmp_fail(errp, "Node %s is in use", args->node_name);
        return NULL;
    }
    release_other_devices(on, true);
    file = owned_file_of(on->bs);
    g_hash_table_remove(owned, args->node_name);
    if (file) {
        /* a root again: its device comes back */
        blockdev_add_device(file->blk, NULL);
    }
    return qmp_empty_return();
}

/* ---- transactions ---- */

/*
 * After blockdev-snapshot an overlay blockdev-add made is the root of
 * the device it was put on: its own anonymous device would show the same
 * node twice, so it is dropped (the older device stays).
 */
static void drop_duplicate_devices(void)
{
    g_autoptr(GPtrArray) devs = blockdev_list_devices();

    for (guint i = 1; i < devs->len; i++) {
        BlockBackend *blk = g_ptr_array_index(devs, i);
        if (*blk_name(blk)) {
            continue;
        }
        for (guint j = 0; j < i; j++) {
            if (blk_bs(g_ptr_array_index(devs, j)) == blk_bs(blk)) {
                blockdev_remove_device_blk(blk);
                break;
            }
        }
    }
}

/* QEMU refuses an overlay that is the node itself by the graph cycle it
 * would make, before its other checks. */
static bool check_not_own_overlay(const BlkTransactionAction *a,
                                  GError **errp)
{
    g_autoptr(BlockDriverState) node = NULL;
    g_autoptr(BlockDriverState) overlay = NULL;

    if (a->kind != BLK_ACTION_SNAPSHOT) {
        return true;
    }
    node = blockdev_lookup_bs(a->u.snapshot.node, a->u.snapshot.node, NULL);
    overlay = blockdev_lookup_bs(a->u.snapshot.overlay,
                                 a->u.snapshot.overlay, NULL);
    if (node && node == overlay) {
        return qmp_fail(errp, "Making '%s' a backing child of '%s' would "
                    "create a cycle", bdrv_get_node_name(node),
                    bdrv_get_node_name(node));
    }
    return true;
}

static bool run_actions(const BlkTransactionAction *actions, guint n,
                        GError **errp)
{
    g_autoptr(BlkTransactionStates) t = blk_transaction_new();
    bool ok;

    for (guint i = 0; i < n; i++) {
        if (!check_not_own_overlay(&actions[i], errp) ||
            !blk_transaction_add(t, &actions[i], errp)) {
            return false;
        }
    }
    ok = blk_transaction_submit(t, errp);
    drop_duplicate_devices();
    return ok;
}

static void fill_snapshot_sync(BlkActionSnapshotSync *d,
                               const BlockdevSnapshotSync *a)
{
    d->device = a->has_device ? a->device : NULL;
    d->node_name = a->has_node_name ? a->node_name : NULL;
    d->snapshot_file = a->snapshot_file;
    d->snapshot_node_name = a->has_snapshot_node_name ? a->snapshot_node_name
                                                       : NULL;
    d->format = a->has_format ? a->format : NULL;
    d->mode_existing = a->has_mode && a->mode == NEWIMAGEMODE_EXISTING;
}

JsonNode *qmp_blockdev_snapshot_internal_sync(
    const BlockdevSnapshotInternal *args, GError **errp)
{
    BlkTransactionAction a = { .kind = BLK_ACTION_SNAPSHOT_INTERNAL };

    a.u.snapshot_internal.device = args->device;
    a.u.snapshot_internal.name = args->name;
    return run_actions(&a, 1, errp) ? qmp_empty_return() : NULL;
}

JsonNode *qmp_blockdev_snapshot_sync(const BlockdevSnapshotSync *args,
                                     GError **errp)
{
    BlkTransactionAction a = { .kind = BLK_ACTION_SNAPSHOT_SYNC };

    fill_snapshot_sync(&a.u.snapshot_sync, args);
    return run_actions(&a, 1, errp) ? qmp_empty_return() : NULL;
}

JsonNode *qmp_blockdev_snapshot(const BlockdevSnapshot *args, GError **errp)
{
    BlkTransactionAction a = { .kind = BLK_ACTION_SNAPSHOT };

    a.u.snapshot.node = args->node;
    a.u.snapshot.overlay = args->overlay;
    return run_actions(&a, 1, errp) ? qmp_empty_return() : NULL;
}

JsonNode *qmp_blockdev_snapshot_delete_internal_sync(
    const q_obj_blockdev_snapshot_delete_internal_sync_arg *args,
    GError **errp)
{
    const char *id = args->has_id ? args->id : NULL;
    const char *name = args->has_name ? args->name : NULL;
    g_autoptr(BlockDriverState) bs = blockdev_get_root_bs(args->device, errp);
    BdrvSnapshotInfo sn = { 0 };
    BlkTransactionAction a = { .kind = BLK_ACTION_SNAPSHOT_DELETE_INTERNAL };
    BdrvSnapshotInfo *list = NULL;
    JsonNode *ret = NULL;
    int n;

    if (!bs) {
        return NULL;
    }
    if (!id && !name) {
        qmp_fail(errp, "Name or id must be provided");
        return NULL;
    }
    /* The entry as it is before the delete: the command returns it. */
    n = bdrv_snapshot_list(bs, &list, NULL);
    bdrv_snapshot_list_free(list, n > 0 ? n : 0);
    if (n < 0) {
        qmp_fail(errp, "Failed to get a snapshot list: %s", g_strerror(-n));
        return NULL;
    }
    if (!bdrv_snapshot_find_by_id_and_name(bs, id, name, &sn, NULL)) {
        qmp_fail(errp, "Snapshot with id '%s' and name '%s' does not exist on "
             "device '%s'", id ? id : "null", name ? name : "null",
             args->device);
        return NULL;
    }
    a.u.snapshot_delete_internal.device = args->device;
    a.u.snapshot_delete_internal.id = id;
    a.u.snapshot_delete_internal.name = name;
    if (run_actions(&a, 1, errp)) {
        g_autoptr(SnapshotInfo) info = qmp_snapshot_info(&sn);

        ret = qapi_SnapshotInfo_to_json(info);
    }
    bdrv_snapshot_info_clear(&sn);
    return ret;
}

/* One schema action to the engine's; the strings stay the caller's. */
static void fill_action(const TransactionAction *ta, BlkTransactionAction *a)
{
    const char *kind = qapi_type_TransactionActionKind.values[ta->type];

    g_assert(blk_action_kind_from_name(kind, &a->kind));
    switch (a->kind) {
    case BLK_ACTION_ABORT:
        break;
    case BLK_ACTION_SNAPSHOT_INTERNAL: {
        const BlockdevSnapshotInternal *d =
            ((BlockdevSnapshotInternalWrapper *)ta->u)->data;
        a->u.snapshot_internal.device = d->device;
        a->u.snapshot_internal.name = d->name;
        break;
    }
    case BLK_ACTION_SNAPSHOT_DELETE_INTERNAL: {
        const BlockdevSnapshotDeleteInternal *d =
            ((BlockdevSnapshotDeleteInternalWrapper *)ta->u)->data;
        a->u.snapshot_delete_internal.device = d->device;
        a->u.snapshot_delete_internal.id = d->has_id ? d->id : NULL;
        a->u.snapshot_delete_internal.name = d->has_name ? d->name : NULL;
        break;
    }
    case BLK_ACTION_SNAPSHOT_SYNC:
        fill_snapshot_sync(&a->u.snapshot_sync,
                           ((BlockdevSnapshotSyncWrapper *)ta->u)->data);
        break;
    case BLK_ACTION_SNAPSHOT: {
        const BlockdevSnapshot *d = ((BlockdevSnapshotWrapper *)ta->u)->data;
        a->u.snapshot.node = d->node;
        a->u.snapshot.overlay = d->overlay;
        break;
    }
    case BLK_ACTION_APPLY_INTERNAL: {
        const __org_strata_BlockdevSnapshotApplyInternal *d =
            ((BlockdevSnapshotApplyInternalWrapper *)ta->u)->data;
        a->u.apply_internal.device = d->device;
        a->u.apply_internal.id = d->has_id ? d->id : NULL;
        a->u.apply_internal.name = d->has_name ? d->name : NULL;
        break;
    }
    case BLK_ACTION_REVERT_EXTERNAL: {
        const __org_strata_BlockdevSnapshotRevert *d =
            ((BlockdevSnapshotRevertWrapper *)ta->u)->data;
        a->u.revert_external.device = d->device;
        a->u.revert_external.node = d->node;
        a->u.revert_external.snapshot_file = d->snapshot_file;
        a->u.revert_external.snapshot_node_name =
            d->has_snapshot_node_name ? d->snapshot_node_name : NULL;
        a->u.revert_external.format = d->has_format ? d->format : NULL;
        break;
    }
    default:
        g_assert_not_reached();
    }
}

JsonNode *qmp_transaction(const q_obj_transaction_arg *args, GError **errp)
{
    guint n = args->actions->len;
    g_autofree BlkTransactionAction *actions = g_new0(BlkTransactionAction,
                                                      n ? n : 1);
    bool grouped = args->has_properties &&
                   args->properties->has_completion_mode &&
                   args->properties->completion_mode ==
                       ACTIONCOMPLETIONMODE_GROUPED;

    for (guint i = 0; i < n; i++) {
        fill_action(args->actions->pdata[i], &actions[i]);
        /* QEMU: only backup actions take part in a grouped completion;
         * every other action refuses it in its prepare (abort fails
         * first with its own message). */
        if (grouped && actions[i].kind != BLK_ACTION_ABORT) {
            qmp_fail(errp, "Action '%s' does not support Transaction property "
                 "completion-mode = grouped",
                 blk_action_kind_name(actions[i].kind));
            return NULL;
        }
        if (grouped) {
            break;
        }
    }
    return run_actions(actions, n, errp) ? qmp_empty_return() : NULL;
}
