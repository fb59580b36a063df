/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The transaction engine: owns the order of the phases, the drain of every
 * device involved, the first error and the freeing of actions.  Action
 * types (blockdev/action-*.c) only fill in their phase callbacks; no type
 * has its own copy of the loop or of the error handling.  The contract is
 * in include/blockdev/transaction.h.
 */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

#include "block/log.h"
#include "block/qcow2-intent.h"
#include "blockdev/intent-log.h"
#include "blockdev/transaction-int.h"
#include "blockdev/rbd-group.h"   /* issue 16 */

/* One image of an intent record (issue 14). */
typedef struct IntentNode {
    BlockDriverState *bs;        /* a reference */
    int index;                   /* in the record */
    /* header bytes invalidate will write: [lo, hi) of new_bytes */
    uint32_t lo, hi;
    uint8_t new_bytes[128];
    bool set[128];               /* which of new_bytes were given */
    char *rename_from, *rename_to;
    /* every update of it is durable without an engine flush (see
     * blk_action_intent_header); a rename or an unsynced one clears it */
    bool self_synced;
    /* blk_action_intent_witness: no update, extension only */
    bool witness;
} IntentNode;

/* The intent record of one submitted list. */
typedef struct TxnIntent {
    IntentRecord *rec;
    Qcow2Intent *ext;
    GPtrArray *nodes;            /* IntentNode * */
    bool committed;
    bool marking;                /* in intent_begin: before the flush */
} TxnIntent;

typedef enum {
    A_CHECKED,
    A_PRE_DONE,      /* pre_do was called (and may have failed) */
    A_DO_CALLED,     /* do was called (and may have failed) */
    A_INVALIDATED,
    A_CANCELLED,
} ActionPhase;

struct BlkAction {
    BlkTransactionStates *t;
    const BlkActionType *type;
    guint index;
    void *state;
    ActionPhase phase;
    bool do_failed;
    GPtrArray *devices;          /* BlockBackend *, no references */

    /* an external snapshot's new top (blk_action_set_new_top) */
    bool changes_top;
    ExternalSnapshot *new_top_es;
    char *new_top_format;
    BlockDriverState *new_top_node;

    /* asynchronous do: guarded by the list's lock */
    bool started;
    bool completed;
    GError *async_err;
};

/* What one list does to one device. */
typedef struct TxnDevice {
    BlockBackend *blk;           /* a reference */
    GPtrArray *actions;          /* BlkAction *, list order */
    bool alone;                  /* it holds a revert */
} TxnDevice;

struct BlkTransactionStates {
    GPtrArray *actions;          /* BlkAction *, list order */
    GPtrArray *devices;          /* TxnDevice *, order of first use */
    GPtrArray *drained_nodes;    /* nodes drained by actions, a ref each */
    ExternalSnapshotTargets *targets;
    bool submitted;
    int64_t hold_ns;
    TxnIntent *intent;           /* NULL: no intent record */
    GMutex lock;
    GCond cond;
};

/* Which list claims each device: one list per device at a time. */
static GMutex claims_lock;
static GHashTable *claims;       /* BlockBackend * -> BlkTransactionStates * */

static struct {
    BlkTransactionHook *paused;
    BlkTransactionHook *resumed;
    void *opaque;
} hooks;

void blk_transaction_set_hooks(BlkTransactionHook *paused,
                               BlkTransactionHook *resumed, void *opaque)
{
    hooks.paused = paused;
    hooks.resumed = resumed;
    hooks.opaque = opaque;
}

static const char *device_name(BlockBackend *blk)
{
    BlockDriverState *bs = blk_bs(blk);

    if (*blk_name(blk)) {
        return blk_name(blk);
    }
    return bs ? bdrv_get_node_name(bs) : "";
}

/* ---- Devices ---- */

static TxnDevice *find_txn_device(BlkTransactionStates *t, BlockBackend *blk)
{
    for (guint i = 0; i < t->devices->len; i++) {
        TxnDevice *d = g_ptr_array_index(t->devices, i);
        if (d->blk == blk) {
            return d;
        }
    }
    return NULL;
}

static bool claim(BlkTransactionStates *t, BlockBackend *blk, GError **errp)
{
    BlkTransactionStates *owner;
    bool ok = true;

    g_mutex_lock(&claims_lock);
    if (!claims) {
        claims = g_hash_table_new(NULL, NULL);
    }
    owner = g_hash_table_lookup(claims, blk);
    if (owner && owner != t) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "Device '%s' is already part of another transaction",
                    device_name(blk));
        ok = false;
    } else {
        g_hash_table_insert(claims, blk, t);
    }
    g_mutex_unlock(&claims_lock);
    return ok;
}

static void unclaim(BlockBackend *blk)
{
    g_mutex_lock(&claims_lock);
    g_hash_table_remove(claims, blk);
    g_mutex_unlock(&claims_lock);
}

static bool use_device(BlkAction *a, BlockBackend *blk, bool alone,
                       GError **errp)
{
    BlkTransactionStates *t = a->t;
    TxnDevice *d = find_txn_device(t, blk);

    if (d && d->alone) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "Device '%s' is reverted earlier in this transaction; "
                    "a revert must be the only action on its device",
                    device_name(blk));
        return false;
    }
    if (d && alone && d->actions->len > 0) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "Device '%s' has other actions in this transaction; a "
                    "revert must be the only action on its device",
                    device_name(blk));
        return false;
    }
    if (!d) {
        if (!claim(t, blk, errp)) {
            return false;
        }
        d = g_new0(TxnDevice, 1);
        blk_ref(blk);
        d->blk = blk;
        d->actions = g_ptr_array_new();
        g_ptr_array_add(t->devices, d);
    }
    if (!g_ptr_array_find(d->actions, a, NULL)) {
        g_ptr_array_add(d->actions, a);
        g_ptr_array_add(a->devices, blk);
    }
    d->alone |= alone;
    return true;
}

bool blk_action_use_device(BlkAction *a, BlockBackend *blk, GError **errp)
{
    return use_device(a, blk, false, errp);
}

bool blk_action_use_device_alone(BlkAction *a, BlockBackend *blk,
                                 GError **errp)
{
    return use_device(a, blk, true, errp);
}

static void txn_device_free(TxnDevice *d)
{
    unclaim(d->blk);
    blk_unref(d->blk);
    g_ptr_array_unref(d->actions);
    g_free(d);
}

/* A refused add: the action leaves every device it declared; a device
 * no other action uses leaves the list. */
static void forget_action(BlkAction *a)
{
    BlkTransactionStates *t = a->t;

    for (guint i = 0; i < a->devices->len; i++) {
        TxnDevice *d = find_txn_device(t, g_ptr_array_index(a->devices, i));
        g_ptr_array_remove(d->actions, a);
        if (d->actions->len == 0) {
            g_ptr_array_remove(t->devices, d);
            txn_device_free(d);
        }
    }
}

/* ---- The new-top plan ---- */

void blk_action_set_new_top(BlkAction *a, ExternalSnapshot *es,
                            const char *format, BlockDriverState *node)
{
    g_assert(a->devices->len == 1 && !a->changes_top);
    a->changes_top = true;
    a->new_top_es = es;
    a->new_top_format = g_strdup(format);
    a->new_top_node = node;
}

BlkAction *blk_action_top_changer_before(BlkAction *a)
{
    TxnDevice *d;
    BlkAction *found = NULL;

    g_assert(a->devices->len >= 1);
    d = find_txn_device(a->t, g_ptr_array_index(a->devices, 0));
    for (guint i = 0; i < d->actions->len; i++) {
        BlkAction *o = g_ptr_array_index(d->actions, i);
        if (o == a) {
            break;
        }
        if (o->changes_top) {
            found = o;
        }
    }
    return found;
}

ExternalSnapshot *blk_action_new_top_es(BlkAction *a)
{
    return a->new_top_es;
}

const char *blk_action_new_top_format(BlkAction *a)
{
    return a->new_top_format;
}

BlockDriverState *blk_action_new_top_node(BlkAction *a)
{
    return a->new_top_node;
}

ExternalSnapshotTargets *blk_action_external_targets(BlkAction *a)
{
    if (!a->t->targets) {
        a->t->targets = external_snapshot_targets_new();
    }
    return a->t->targets;
}

void blk_action_drain_node(BlkAction *a, BlockDriverState *bs)
{
    bdrv_ref(bs);
    bdrv_drained_begin(bs);
    g_ptr_array_add(a->t->drained_nodes, bs);
}

/* ---- Lists and actions ---- */

BlkTransactionStates *blk_transaction_new(void)
{
    BlkTransactionStates *t = g_new0(BlkTransactionStates, 1);

    t->actions = g_ptr_array_new();
    t->devices = g_ptr_array_new();
    t->drained_nodes = g_ptr_array_new();
    g_mutex_init(&t->lock);
    g_cond_init(&t->cond);
    return t;
}

guint blk_transaction_length(BlkTransactionStates *t)
{
    return t->actions->len;
}

int64_t blk_transaction_hold_ns(BlkTransactionStates *t)
{
    return t->hold_ns;
}

void *blk_action_state(BlkAction *a)
{
    return a->state;
}

const BlkActionType *blk_action_type(BlkAction *a)
{
    return a->type;
}

guint blk_action_index(BlkAction *a)
{
    return a->index;
}

static void action_free(BlkAction *a)
{
    if (a->async_err) {
        g_error_free(a->async_err);
    }
    g_ptr_array_unref(a->devices);
    g_free(a->new_top_format);
    g_free(a->state);
    g_free(a);
}

bool blk_transaction_add_custom(BlkTransactionStates *t,
                                const BlkActionType *type,
                                const void *params, GError **errp)
{
    BlkAction *a;

    if (t->submitted) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "The transaction was submitted already; start a new "
                    "one");
        return false;
    }
    a = g_new0(BlkAction, 1);
    a->t = t;
    a->type = type;
    a->index = t->actions->len;
    a->state = g_malloc0(MAX(type->state_size, 1));
    a->devices = g_ptr_array_new();
    a->phase = A_CHECKED;
    if (!type->check(a, params, errp)) {
        forget_action(a);
        if (type->clean) {
            type->clean(a);
        }
        action_free(a);
        return false;
    }
    g_ptr_array_add(t->actions, a);
    return true;
}

bool blk_transaction_add(BlkTransactionStates *t,
                         const BlkTransactionAction *action, GError **errp)
{
    const BlkActionType *type = blk_action_type_of_kind(action->kind);

    if (!type) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "Unknown transaction action type %d", (int)action->kind);
        return false;
    }
    return blk_transaction_add_custom(t, type, &action->u, errp);
}

void blk_action_completed(BlkAction *a, GError *err)
{
    BlkTransactionStates *t = a->t;

    g_mutex_lock(&t->lock);
    g_assert(a->started && !a->completed);
    a->completed = true;
    a->async_err = err;
    g_cond_broadcast(&t->cond);
    g_mutex_unlock(&t->lock);
}

/* ---- Crash-atomic transactions (issue 14) ---- */

static GMutex intent_lock;
static IntentLog *intent_log;    /* the journal, NULL: off */

bool blk_transaction_set_state_dir(const char *dir, GError **errp)
{
    IntentLog *log = NULL;

    if (dir) {
        log = intent_log_open(dir, errp);
        if (!log) {
            return false;
        }
    }
    g_mutex_lock(&intent_lock);
    if (intent_log) {
        intent_log_close(intent_log);
    }
    intent_log = log;
    /* an image whose journal moved is looked for here too */
    intent_log_set_search_dir(log ? intent_log_dir(log) : NULL);
    g_mutex_unlock(&intent_lock);
    return true;
}

const char *blk_transaction_get_state_dir(void)
{
    return intent_log ? intent_log_dir(intent_log) : NULL;
}

static void intent_node_free(gpointer p)
{
    IntentNode *n = p;

    bdrv_unref(n->bs);
    g_free(n->rename_from);
    g_free(n->rename_to);
    g_free(n);
}

static void intent_free(TxnIntent *in)
{
    if (!in) {
        return;
    }
    g_ptr_array_unref(in->nodes);
    intent_record_free(in->rec);
    qcow2_intent_free(in->ext);
    g_free(in);
}

bool blk_action_intent_active(BlkAction *a)
{
    return a->t->intent != NULL;
}

static IntentNode *intent_node(TxnIntent *in, BlockDriverState *bs)
{
    for (guint i = 0; i < in->nodes->len; i++) {
        IntentNode *n = g_ptr_array_index(in->nodes, i);
        if (n->bs == bs) {
            return n;
        }
    }
    return NULL;
}

/* Removes the extension from every image marked so far (no sync: an
 * extension left without a record only makes the next open rebuild the
 * refcounts) and ends the record without writing it. */
static void intent_drop(BlkTransactionStates *t)
{
    TxnIntent *in = t->intent;

    if (!in) {
        return;
    }
    for (guint i = 0; i < in->nodes->len; i++) {
        IntentNode *n = g_ptr_array_index(in->nodes, i);
        GError *err = NULL;
        if (qcow2_intent_clear(n->bs, &err) < 0) {
            strata_warning("Could not remove the intent extension of '%s': "
                           "%s", bdrv_get_filename(n->bs), err->message);
            g_error_free(err);
        }
    }
    intent_free(in);
    t->intent = NULL;
}

bool blk_action_intent_mark(BlkAction *a, BlockDriverState *bs,
                            GError **errp)
{
    TxnIntent *in = a->t->intent;
    GError *err = NULL;
    IntentNode *n;
    int idx;

    if (!in || intent_node(in, bs)) {
        return true;
    }
    /* The record names images by inode and path: only an image in a
     * local file can be found again after a crash (not one over NBD) */
    if (!bdrv_get_file(bs) ||
        g_strcmp0(bdrv_get_format_name(bdrv_get_file(bs)), "file")) {
        BlockDriverState *proto = bdrv_get_file(bs) ? bdrv_get_file(bs) : bs;

        if (!g_strcmp0(bdrv_get_format_name(proto), "rbd")) {
            /* not "not crash-atomic": a transaction of RBD snapshots
             * alone is one Ceph group snapshot (blockdev/rbd-group.c) */
            strata_info("Transaction runs without the intent log: node "
                        "'%s' is an RBD image", bdrv_get_node_name(bs));
        } else {
            strata_info("Transaction runs without the intent log (not "
                        "crash-atomic): '%s' is not in a local file",
                        bdrv_get_filename(bs));
        }
        intent_drop(a->t);
        return true;
    }
    if (qcow2_intent_set(bs, in->ext, &err) < 0) {
        if (g_error_matches(err, BDRV_ERROR, BDRV_ERROR_NOT_SUPPORTED)) {
            strata_info("Transaction runs without the intent log (not "
                        "crash-atomic): '%s': %s", bdrv_get_filename(bs),
                        err->message);
            g_error_free(err);
            intent_drop(a->t);
            return true;
        }
        g_propagate_prefixed_error(errp, err, "Could not mark '%s' for the "
                                   "intent log: ", bdrv_get_filename(bs));
        return false;
    }
    n = g_new0(IntentNode, 1);
    bdrv_ref(bs);
    n->bs = bs;
    n->self_synced = true;
    g_ptr_array_add(in->nodes, n);
    idx = intent_record_add_image(in->rec,
                                  bdrv_get_filename(bdrv_get_file(bs)),
                                  errp);
    if (idx < 0) {
        return false;
    }
    n->index = idx;
    return true;
}

bool blk_action_intent_header(BlkAction *a, BlockDriverState *bs,
                              uint64_t offset, const uint8_t *new_bytes,
                              uint32_t len, bool synced, GError **errp)
{
    TxnIntent *in = a->t->intent;
    IntentNode *n = in ? intent_node(in, bs) : NULL;

    if (!in) {
        return true;
    }
    if (!n || offset + len > sizeof(n->new_bytes)) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "Intent log: header update of '%s' outside what a "
                    "record can hold", bdrv_get_filename(bs));
        return false;
    }
    memcpy(n->new_bytes + offset, new_bytes, len);
    memset(n->set + offset, 1, len);
    n->self_synced &= synced;
    if (n->hi == 0) {
        n->lo = offset;
        n->hi = offset + len;
    } else {
        n->lo = MIN(n->lo, (uint32_t)offset);
        n->hi = MAX(n->hi, (uint32_t)(offset + len));
    }
    return true;
}

bool blk_action_intent_rename(BlkAction *a, BlockDriverState *bs,
                              const char *from, const char *to,
                              GError **errp)
{
    TxnIntent *in = a->t->intent;
    IntentNode *n = in ? intent_node(in, bs) : NULL;

    if (!in) {
        return true;
    }
    if (!n || n->rename_from) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "Intent log: rename of '%s' not recordable", from);
        return false;
    }
    n->rename_from = g_strdup(from);
    n->rename_to = g_strdup(to);
    n->self_synced = false;
    return true;
}

void blk_action_intent_witness(BlkAction *a, BlockDriverState *bs)
{
    TxnIntent *in = a->t->intent;
    GError *err = NULL;
    IntentNode *n;
    int idx;

    if (!in || !bs || intent_node(in, bs)) {
        return;
    }
    if (!bdrv_get_file(bs) || bdrv_is_read_only(bs) ||
        g_strcmp0(bdrv_get_format_name(bdrv_get_file(bs)), "file")) {
        return;
    }
    if (qcow2_intent_set(bs, in->ext, &err) < 0) {
        /* not qcow2 v3: it is found only through the others, as before */
        g_error_free(err);
        return;
    }
    idx = intent_record_add_image(in->rec,
                                  bdrv_get_filename(bdrv_get_file(bs)),
                                  &err);
    if (idx < 0) {
        strata_warning("Intent log: '%s' left out of the record: %s",
                       bdrv_get_filename(bs), err->message);
        g_error_free(err);
        qcow2_intent_clear(bs, NULL);
        return;
    }
    n = g_new0(IntentNode, 1);
    bdrv_ref(bs);
    n->bs = bs;
    n->index = idx;
    n->witness = true;
    /* marked before the devices' flush, which makes its extension
     * durable; later, the commit flushes it */
    n->self_synced = in->marking;
    g_ptr_array_add(in->nodes, n);
}

/* At submit, before any pre_do: a record is begun and every action
 * names the images it will write (they get the extension now, so a
 * crash from here on is recovered at their next open). */
static bool intent_begin(BlkTransactionStates *t, GError **errp)
{
    TxnIntent *in;

    g_mutex_lock(&intent_lock);
    if (!intent_log) {
        g_mutex_unlock(&intent_lock);
        return true;
    }
    in = g_new0(TxnIntent, 1);
    in->rec = intent_record_begin(intent_log);
    g_mutex_unlock(&intent_lock);
    in->ext = intent_record_extension(in->rec);
    in->nodes = g_ptr_array_new_with_free_func(intent_node_free);
    t->intent = in;
    in->marking = true;
    for (guint i = 0; i < t->actions->len && t->intent; i++) {
        BlkAction *a = g_ptr_array_index(t->actions, i);
        if (a->type->intent_mark && !a->type->intent_mark(a, errp)) {
            return false;
        }
    }
    if (t->intent) {
        t->intent->marking = false;
    }
    return true;
}

/* fsync of the directory holding path (a rename's both ends), once per
 * directory and pass: synced (NULL: always) remembers the ones done, so
 * N overlays beside each other cost one fsync, not N. */
static int sync_dir_of(const char *path, GHashTable *synced)
{
    g_autofree char *dir = g_path_get_dirname(path);
    int fd;
    int ret = 0;

    if (synced && g_hash_table_contains(synced, dir)) {
        return 0;
    }
    fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) {
        return -errno;
    }
    if (synced) {
        g_hash_table_add(synced, g_strdup(dir));
    }
    if (fsync(fd) < 0) {
        ret = -errno;
    }
    close(fd);
    return ret;
}

/* The bytes [lo, hi) of bs's file as they are now (before publish). */
static int read_file_bytes(BlockDriverState *bs, uint32_t lo, uint32_t hi,
                           uint8_t *out)
{
    int fd = open(bdrv_get_filename(bdrv_get_file(bs)), O_RDONLY | O_CLOEXEC);
    ssize_t r;

    if (fd < 0) {
        return -errno;
    }
    r = pread(fd, out, hi - lo, lo);
    close(fd);
    return r == (ssize_t)(hi - lo) ? 0 : r < 0 ? -errno : -EIO;
}

/* What one image's publish changes, into the record. */
static bool intent_describe_node(TxnIntent *in, IntentNode *n, GError **errp)
{
    if (n->hi > n->lo) {
        uint8_t old[sizeof(n->new_bytes)];
        int ret = read_file_bytes(n->bs, n->lo, n->hi, old);
        if (ret < 0) {
            g_set_error(errp, BDRV_ERROR, BDRV_ERROR_IO,
                        "Could not read the header of '%s': %s",
                        bdrv_get_filename(n->bs), g_strerror(-ret));
            return false;
        }
        /* bytes between two ranges stay what they are */
        for (uint32_t i = n->lo; i < n->hi; i++) {
            if (!n->set[i]) {
                n->new_bytes[i] = old[i - n->lo];
            }
        }
        if (!intent_record_add_header(in->rec, n->index, n->lo, old,
                                      n->new_bytes + n->lo, n->hi - n->lo,
                                      errp)) {
            return false;
        }
    }
    if (n->rename_from &&
        !intent_record_add_rename(in->rec, n->index, n->rename_from,
                                  n->rename_to, errp)) {
        return false;
    }
    return true;
}

/* After every do: what each publish changes goes into the record; every
 * image is flushed (what the record points at must be durable, the
 * extensions too) and the record committed.  From here a crash rolls the
 * transaction forward. */
static bool intent_commit(BlkTransactionStates *t, GError **errp)
{
    TxnIntent *in;
    int ret;

    for (guint i = 0; i < t->actions->len && t->intent; i++) {
        BlkAction *a = g_ptr_array_index(t->actions, i);
        if (a->type->intent_describe && !a->type->intent_describe(a, errp)) {
            return false;
        }
    }
    in = t->intent;
    if (!in || in->nodes->len == 0) {
        return true;
    }
    g_autoptr(GHashTable) dirs = g_hash_table_new_full(g_str_hash,
                                                       g_str_equal, g_free,
                                                       NULL);
    for (guint i = 0; i < in->nodes->len; i++) {
        IntentNode *n = g_ptr_array_index(in->nodes, i);
        /* the extension was written before do, whose own sync covers it
         * when self_synced (a witness's: the devices' flush) */
        ret = n->self_synced ? 0 : bdrv_flush(n->bs);
        if (ret == 0 && n->rename_from) {
            ret = sync_dir_of(n->rename_from, dirs);
        }
        if (ret < 0) {
            g_set_error(errp, BDRV_ERROR, BDRV_ERROR_IO,
                        "Could not flush '%s': %s", bdrv_get_filename(n->bs),
                        g_strerror(-ret));
            return false;
        }
        if (!intent_describe_node(in, n, errp)) {
            return false;
        }
    }
    if (intent_record_commit(in->rec, errp) < 0) {
        return false;
    }
    in->committed = true;
    return true;
}

/* Every image published: renames made durable, the record removed.  The
 * extensions stay until after clean (intent_end), so a crash while clean
 * frees what the old state used leaves images that rebuild their
 * refcounts at the next open instead of leaking. */
static void intent_done(BlkTransactionStates *t)
{
    TxnIntent *in = t->intent;
    GError *err = NULL;

    if (!in || !in->committed) {
        return;
    }
    g_autoptr(GHashTable) dirs = g_hash_table_new_full(g_str_hash,
                                                       g_str_equal, g_free,
                                                       NULL);
    for (guint i = 0; i < in->nodes->len; i++) {
        IntentNode *n = g_ptr_array_index(in->nodes, i);
        /* a publish not yet durable (the pre-copy's header switch is not
         * synced) must not outlive the record: else a power cut could
         * lose it after the record is gone, and that image alone would
         * come back old */
        int ret = n->self_synced || n->witness ? 0 : bdrv_flush(n->bs);
        if (ret == 0 && n->rename_to) {
            ret = sync_dir_of(n->rename_to, dirs);
        }
        if (ret < 0) {
            /* the record stays: the next open rolls forward */
            strata_warning("Could not make the publish of '%s' durable "
                           "(%s); the intent record is kept",
                           bdrv_get_filename(n->bs), g_strerror(-ret));
            in->committed = false;
            return;
        }
    }
    if (intent_record_done(in->rec, &err) < 0) {
        /* published everywhere: a roll forward finds nothing to do */
        strata_warning("Could not remove the intent record: %s",
                       err->message);
        g_error_free(err);
    }
    in->committed = false;
    /* witnesses lose the extension now: clean may reopen them read-only
     * (an external snapshot's old top), and nothing of theirs is freed */
    for (guint i = 0; i < in->nodes->len; i++) {
        IntentNode *n = g_ptr_array_index(in->nodes, i);
        if (n->witness && qcow2_intent_clear(n->bs, &err) < 0) {
            strata_warning("Could not remove the intent extension of '%s': "
                           "%s", bdrv_get_filename(n->bs), err->message);
            g_clear_error(&err);
        }
    }
}

/* An invalidate failed after the commit: the record goes before cancel
 * frees what it points at, so a crash during the rollback cannot roll
 * forward onto freed clusters (the images then discard at their next
 * open, each keeping the state the rollback left it in). */
static void intent_withdraw(BlkTransactionStates *t)
{
    TxnIntent *in = t->intent;
    GError *err = NULL;

    if (!in || !in->committed) {
        return;
    }
    /* synced, unlike done: the rollback is about to free clusters the
     * record points at, and the images still carry the extension */
    if (intent_record_withdraw(in->rec, &err) < 0) {
        strata_error("Could not withdraw the intent record: %s",
                     err->message);
        g_error_free(err);
    }
    in->committed = false;
}

/* ---- Submit ---- */

/* An error met while cancelling: logged, and appended to the first. */
static void append_cancel_error(GError **first, BlkAction *a, GError *err)
{
    strata_warning("transaction rollback: %s (action %u) failed to cancel: "
                   "%s", a->type->name, a->index, err->message);
    if (first && *first) {
        char *m = g_strdup_printf("%s; while rolling back, action %u (%s) "
                                  "failed: %s", (*first)->message, a->index,
                                  a->type->name, err->message);
        g_free((*first)->message);
        (*first)->message = m;
        g_error_free(err);
    } else {
        g_propagate_error(first, err);
    }
}

/* Waits for every asynchronous do that started; the first failure among
 * them becomes the transaction's error if it has none yet. */
static bool wait_async(BlkTransactionStates *t, GError **errp)
{
    bool ok = true;

    g_mutex_lock(&t->lock);
    for (guint i = 0; i < t->actions->len; i++) {
        BlkAction *a = g_ptr_array_index(t->actions, i);
        while (a->started && !a->completed) {
            g_cond_wait(&t->cond, &t->lock);
        }
        if (a->async_err) {
            a->do_failed = true;
            if (ok && errp && !*errp) {
                g_propagate_error(errp, a->async_err);
            } else {
                g_error_free(a->async_err);
            }
            a->async_err = NULL;
            ok = false;
        }
    }
    g_mutex_unlock(&t->lock);
    return ok;
}

static bool run_do(BlkTransactionStates *t, GError **errp)
{
    for (guint i = 0; i < t->actions->len; i++) {
        BlkAction *a = g_ptr_array_index(t->actions, i);
        a->phase = A_DO_CALLED;
        if (a->type->async) {
            g_mutex_lock(&t->lock);
            a->started = true;
            g_mutex_unlock(&t->lock);
        }
        if (!a->type->do_(a, errp)) {
            a->do_failed = true;
            if (a->type->async) {
                g_mutex_lock(&t->lock);
                a->started = false;   /* it never started */
                g_mutex_unlock(&t->lock);
            }
            return false;
        }
    }
    return true;
}

static bool run_invalidate(BlkTransactionStates *t, GError **errp)
{
    for (guint i = 0; i < t->actions->len; i++) {
        BlkAction *a = g_ptr_array_index(t->actions, i);
        if (a->type->invalidate && !a->type->invalidate(a, errp)) {
            return false;
        }
        a->phase = A_INVALIDATED;
    }
    return true;
}

static void run_cancel(BlkTransactionStates *t, GError **errp)
{
    for (guint i = t->actions->len; i > 0; i--) {
        BlkAction *a = g_ptr_array_index(t->actions, i - 1);
        GError *err = NULL;

        if (a->phase != A_DO_CALLED && a->phase != A_INVALIDATED) {
            continue;
        }
        if (a->type->cancel && !a->type->cancel(a, &err)) {
            append_cancel_error(errp, a, err ? err :
                g_error_new(BDRV_ERROR, BDRV_ERROR_GENERIC,
                            "cancel failed without a message"));
        } else if (err) {
            append_cancel_error(errp, a, err);
        }
        a->phase = A_CANCELLED;
    }
}

/* pre_do of every action that has one, undrained, in list order. */
static bool run_pre_do(BlkTransactionStates *t, GError **errp)
{
    for (guint i = 0; i < t->actions->len; i++) {
        BlkAction *a = g_ptr_array_index(t->actions, i);
        if (!a->type->pre_do) {
            continue;
        }
        a->phase = A_PRE_DONE;
        if (!a->type->pre_do(a, errp)) {
            return false;
        }
    }
    return true;
}

/* Actions pre-done that never reached do, newest first (what a do
 * consumed is its cancel's). */
static void run_pre_cancel(BlkTransactionStates *t)
{
    for (guint i = t->actions->len; i > 0; i--) {
        BlkAction *a = g_ptr_array_index(t->actions, i - 1);
        if (a->phase != A_PRE_DONE) {
            continue;
        }
        if (a->type->pre_cancel) {
            a->type->pre_cancel(a);
        }
        a->phase = A_CANCELLED;
    }
}

static void run_clean(BlkTransactionStates *t)
{
    for (guint i = 0; i < t->actions->len; i++) {
        BlkAction *a = g_ptr_array_index(t->actions, i);
        if (a->type->clean) {
            a->type->clean(a);
        }
    }
}

/* What the guests wrote so far goes to disk before the hold, so the
 * flushes under it write only what arrives in between (DESIGN rule 6). */
static bool flush_devices(BlkTransactionStates *t, GError **errp)
{
    for (guint i = 0; i < t->devices->len; i++) {
        TxnDevice *d = g_ptr_array_index(t->devices, i);
        int ret = blk_bs(d->blk) ? blk_flush(d->blk) : 0;
        if (ret < 0) {
            g_set_error(errp, BDRV_ERROR, BDRV_ERROR_IO,
                        "Could not flush device '%s': %s",
                        device_name(d->blk), g_strerror(-ret));
            return false;
        }
    }
    return true;
}

static void release_nodes(BlkTransactionStates *t)
{
    for (guint i = t->drained_nodes->len; i > 0; i--) {
        BlockDriverState *bs = g_ptr_array_index(t->drained_nodes, i - 1);
        bdrv_drained_end(bs);
        bdrv_unref(bs);
    }
    g_ptr_array_set_size(t->drained_nodes, 0);
}

/* The held part: do, invalidate, or cancel. */
static bool run_held(BlkTransactionStates *t, GError **errp)
{
    GError *err = NULL;
    bool ok = run_do(t, &err);

    if (!wait_async(t, &err)) {
        ok = false;
    }
    if (ok) {
        ok = intent_commit(t, &err);
    }
    if (ok) {
        ok = run_invalidate(t, &err);
        if (!ok) {
            intent_withdraw(t);
        }
        /* on success the record goes after the resume (intent_done):
         * what is published stays whatever happens, the guests need not
         * wait for that */
    }
    if (!ok) {
        run_cancel(t, &err);
        g_propagate_error(errp, err);
    }
    return ok;
}

/* Issue 16: a list of internal snapshot creates (or deletes, or applies),
 * one per device, may run as one RBD group operation (rbd-group.c
 * decides; it refuses a delete/apply of part of a group snapshot). */
static bool plan_rbd_group(BlkTransactionStates *t, BlockBackend **devs,
                           GError **errp)
{
    const BlkActionType *type = NULL;
    RBDGroupKind kind = RBD_GROUP_NONE;

    for (guint i = 0; i < t->actions->len; i++) {
        BlkAction *a = g_ptr_array_index(t->actions, i);
        type = i == 0 || a->type == type ? a->type : NULL;
        if (!type) {
            break;
        }
    }
    if (t->actions->len == t->devices->len) {
        kind = type == &blk_action_snapshot_internal_type ? RBD_GROUP_CREATE
             : type == &blk_action_snapshot_delete_internal_type
               ? RBD_GROUP_DELETE
             : type == &blk_action_apply_internal_type ? RBD_GROUP_APPLY
             : RBD_GROUP_NONE;
    }
    return rbd_group_plan(devs, t->devices->len, kind, errp);
}

bool blk_transaction_submit(BlkTransactionStates *t, GError **errp)
{
    g_autofree BlockBackend **devs = NULL;
    BlockdevDrainSet *set;
    int64_t start;
    bool ok;

    if (t->submitted) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "The transaction was submitted already");
        return false;
    }
    t->submitted = true;
    if (t->actions->len == 0) {
        return true;
    }
    if (!intent_begin(t, errp) || !run_pre_do(t, errp) ||
        !flush_devices(t, errp)) {
        run_pre_cancel(t);
        run_clean(t);
        intent_drop(t);
        return false;
    }
    devs = g_new(BlockBackend *, t->devices->len);
    for (guint i = 0; i < t->devices->len; i++) {
        devs[i] = ((TxnDevice *)g_ptr_array_index(t->devices, i))->blk;
    }
    start = g_get_monotonic_time();
    set = blockdev_drain_begin(devs, t->devices->len);
    if (hooks.paused) {
        hooks.paused(devs, t->devices->len, hooks.opaque);
    }
    ok = plan_rbd_group(t, devs, errp) && run_held(t, errp); /* issue 16 */
    release_nodes(t);
    blockdev_drain_end(set);
    t->hold_ns = (g_get_monotonic_time() - start) * 1000;
    if (hooks.resumed) {
        hooks.resumed(devs, t->devices->len, hooks.opaque);
    }
    if (!ok) {
        /* outside the hold: the guests run again */
        run_pre_cancel(t);
    } else {
        intent_done(t);
    }
    run_clean(t);
    intent_drop(t);
    return ok;
}

void blk_transaction_free(BlkTransactionStates *t)
{
    if (!t) {
        return;
    }
    if (!t->submitted) {
        /* never run: abandoned, newest first */
        for (guint i = t->actions->len; i > 0; i--) {
            BlkAction *a = g_ptr_array_index(t->actions, i - 1);
            if (a->type->clean) {
                a->type->clean(a);
            }
        }
    }
    for (guint i = 0; i < t->actions->len; i++) {
        action_free(g_ptr_array_index(t->actions, i));
    }
    for (guint i = 0; i < t->devices->len; i++) {
        txn_device_free(g_ptr_array_index(t->devices, i));
    }
    g_assert(t->drained_nodes->len == 0);
    external_snapshot_targets_free(t->targets);
    g_ptr_array_unref(t->actions);
    g_ptr_array_unref(t->devices);
    g_ptr_array_unref(t->drained_nodes);
    g_mutex_clear(&t->lock);
    g_cond_clear(&t->cond);
    g_free(t);
}
