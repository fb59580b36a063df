/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * qcow2 internal snapshot operations -- create, delete, apply -- in the
 * phases of include/block/snapshot.h (check, do, invalidate, cancel,
 * clean); list and the temporary read-only load are in
 * qcow2-snapshot-read.c.  The table itself
 * (read, validate, write) is in qcow2-snapshot-table.c; the walks that
 * share a tree of L2 tables and data clusters or release it are in
 * qcow2-snapshot-tree.c.  The generic layer (block/snapshot.c) enforces
 * the order of the phases; this file keeps per image the operations
 * between check and clean, oldest first, so a check sees what the ones
 * before it will do.
 *
 * check writes nothing.  Write order of each operation; "commit" marks
 * its commit point.
 *
 *   create   do:         clusters for a copy of the active L1; refcount of
 *                        every L2 table and data cluster of the active tree
 *                        +1 (written, synced); COPIED cleared in the active
 *                        L2 tables, then in the active L1; the L1 copy; the
 *                        new table in new clusters; sync.
 *            invalidate: header bytes 60..71 (nb_snapshots,
 *                        snapshots_offset) -- commit
 *            clean:      the old table's clusters freed.
 *   delete   do:         the new table (without the entry) in new
 *                        clusters; sync.
 *            invalidate: header bytes 60..71 -- commit
 *            clean:      old table freed; the snapshot's tree released.
 *   delete with pre_do (a delete alone on its image in a transaction):
 *            pre_do, guest running: the new table in new clusters; sync.
 *            do: nothing (no write-back of the guests' metadata either).
 *            invalidate: header bytes 60..71, synced only if an intent
 *                        record asked for them -- commit
 *            clean:      sync (the header durable); then as above.
 *   apply    do:         refcounts of the snapshot's tree +1 (synced);
 *                        COPIED cleared in its L2 tables; the new active L1
 *                        (a copy of the snapshot's) in new clusters; sync.
 *            invalidate: header bytes 24..47 (size, crypt method, l1_size,
 *                        l1_table_offset) -- commit
 *            clean:      the old active tree released, its L1 freed.
 *   create with a pre-copy (pre_do ran; a create alone on its image in a
 *            transaction): see qcow2-precopy.c -- the active L1, the
 *            refcount table and the snapshot table switch with ONE write
 *            of header bytes 36..71; nothing live is written before it.
 *   cancel:  after invalidate, the old header bytes written back first;
 *            then what do wrote is released (create, apply: the tree's
 *            new references; create, delete: the new table's clusters).
 *   release of a tree (delete clean; cancel of create and apply):
 *            COPIED set first where an active cluster's refcount will
 *            drop to 1 (written, synced); then the tree's refcounts -1
 *            and its L1 clusters freed; then COPIED recomputed from the
 *            refcounts (a no-op unless the image shares clusters in ways
 *            QEMU never does).
 *
 * So a crash between any two writes leaves the old or the new snapshot
 * list and content, and every refcount right or too high (a leak).  A
 * COPIED flag can be wrong only on a cluster whose refcount is too high
 * (set while the count still includes the leaked reference, or cleared
 * for a snapshot that never became visible): harmless either way, and
 * `qemu-img check -r leaks` (ours too) repairs both.  No order avoids
 * that window: the flag and the count live in different clusters.
 * Cancel puts everything back, leaking nothing when its own writes
 * succeed.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "qcow2.h"
#include "qcow2-bitmap.h"
#include "qcow2-snapshot.h"
#include "qcow2-precopy.h"
#include "byteorder.h"
#include "block/log.h"

typedef enum { OP_CREATE, OP_DELETE, OP_GOTO } OpKind;

/* Cancelled operations leave the image's list; nothing else needs a
 * state for them here. */
typedef enum { ST_CHECKED, ST_DONE, ST_INVALIDATED, ST_CANCELLED } OpState;

typedef struct Qcow2SnapshotOp {
    OpKind kind;
    OpState state;
    /* a failed header write could not be undone: the header may show the
     * new state, so nothing it could point at may be freed */
    bool header_unknown;

    /* From check.  create: the new entry (id, name, times; do adds the L1
     * and the disk size); delete, apply: the target's id and name. */
    Qcow2Snapshot entry;
    bool date_now;               /* create: date taken when do runs */

    /* create, delete: the table replaced (its header values, and the
     * clusters to free after invalidate) and the new one.  While the op
     * is invalidated, `table` holds the array that was visible before. */
    uint32_t old_nb;
    uint64_t old_offset, old_size;
    Qcow2Snapshot *table;
    uint32_t nb;
    uint64_t offset, size;

    /* the tree released by cancel (create) or by clean (delete): its L1
     * entries and the clusters of its own L1 table.  delete: read by
     * check when the target is on disk already, by do when the target is
     * created by an earlier operation on the image. */
    uint64_t *tree_l1;
    uint32_t tree_l1_size;
    uint64_t tree_l1_offset;

    /* apply: the new active state (its L1 read by check); swapped with
     * the old one by invalidate */
    uint64_t *l1;
    uint32_t l1_size;
    uint64_t l1_offset;
    uint64_t disk_size;

    /* create with a pre-copy (pre_do ran): do, invalidate, cancel and
     * clean go through qcow2-precopy.c, which switches the active L1,
     * the refcount table and the snapshot table in one header write */
    Qcow2Precopy *pc;
    bool settle;          /* BDRV_SNAPSHOT_SETTLE */

    /* delete alone on its image: pre_do wrote the new table (in new
     * clusters, synced) before the drain, so do under the drain only
     * checks that the table it replaces is still the visible one */
    bool predone;
    /* a pre-done delete's header write is synced only if an intent
     * record asked for its bytes (the record relies on it); otherwise
     * clean syncs before it frees anything the old header points at */
    bool publish_synced;
    bool header_unsynced;        /* published, not yet synced */
} Qcow2SnapshotOp;

static void op_free(Qcow2SnapshotOp *op)
{
    qcow2_precopy_free(op->pc);
    qcow2_sn_clear(&op->entry);
    qcow2_sn_free_array(op->table, op->nb);
    g_free(op->tree_l1);
    g_free(op->l1);
    g_free(op);
}

static guint n_ops(BDRVQcow2State *s)
{
    return s->snapshot_ops ? s->snapshot_ops->len : 0;
}

static Qcow2SnapshotOp *op_at(BDRVQcow2State *s, guint i)
{
    return g_ptr_array_index(s->snapshot_ops, i);
}

static bool goto_pending(BDRVQcow2State *s)
{
    for (guint i = 0; i < n_ops(s); i++) {
        if (op_at(s, i)->kind == OP_GOTO) {
            return true;
        }
    }
    return false;
}

/* The table as the next do sees it: the newest one done and not yet
 * invalidated (invalidates run in order, so nothing newer is visible),
 * else the visible one. */
static void view(BDRVQcow2State *s, const Qcow2Snapshot **sn, uint32_t *nb,
                 uint64_t *offset, uint64_t *size)
{
    for (guint i = n_ops(s); i > 0; i--) {
        Qcow2SnapshotOp *op = op_at(s, i - 1);
        if (op->kind != OP_GOTO && op->state == ST_DONE) {
            *sn = op->table;
            *nb = op->nb;
            *offset = op->offset;
            *size = op->size;
            return;
        }
    }
    *sn = s->snapshots;
    *nb = s->nb_snapshots;
    *offset = s->snapshots_offset;
    *size = s->snapshots_size;
}

static void push_op(BDRVQcow2State *s, Qcow2SnapshotOp *op)
{
    if (!s->snapshot_ops) {
        s->snapshot_ops = g_ptr_array_new();
    }
    g_ptr_array_add(s->snapshot_ops, op);
}

static void pop_op(BDRVQcow2State *s, Qcow2SnapshotOp *op)
{
    if (!s->snapshot_ops) {
        return;
    }
    g_ptr_array_remove(s->snapshot_ops, op);
    if (s->snapshot_ops->len == 0) {
        g_ptr_array_free(s->snapshot_ops, TRUE);
        s->snapshot_ops = NULL;
    }
}

/* ---------------------------------------------------------------------- */
/* check: what the table will hold once every operation checked so far
 * has been done, validated without writing anything */

typedef struct VEntry {
    const char *id, *name;
    uint64_t bytes;               /* as written, before padding */
    const Qcow2Snapshot *sn;      /* on disk (or in a done table); NULL:
                                   * created by a pending operation */
} VEntry;

static VEntry ventry_of(const Qcow2Snapshot *sn)
{
    VEntry v = { sn->id_str, sn->name,
                 qcow2_sn_entry_bytes(strlen(sn->id_str), strlen(sn->name),
                                      sn->unknown_extra_size), sn };
    return v;
}

static int vfind(GArray *v, const char *id, const char *name)
{
    for (guint i = 0; i < v->len; i++) {
        VEntry *e = &g_array_index(v, VEntry, i);
        if ((!id || !strcmp(e->id, id)) && (!name || !strcmp(e->name, name))) {
            return (int)i;
        }
    }
    return -1;
}

/* The done view, then the effect of every operation only checked. */
static GArray *logical_view(BDRVQcow2State *s)
{
    const Qcow2Snapshot *cur;
    uint32_t nb;
    uint64_t off, size;
    GArray *v;

    view(s, &cur, &nb, &off, &size);
    v = g_array_sized_new(FALSE, FALSE, sizeof(VEntry), nb + 1);
    for (uint32_t i = 0; i < nb; i++) {
        VEntry e = ventry_of(&cur[i]);
        g_array_append_val(v, e);
    }
    for (guint i = 0; i < n_ops(s); i++) {
        Qcow2SnapshotOp *op = op_at(s, i);
        if (op->state != ST_CHECKED) {
            continue;
        }
        if (op->kind == OP_CREATE) {
            VEntry e = ventry_of(&op->entry);
            e.sn = NULL;
            g_array_append_val(v, e);
        } else if (op->kind == OP_DELETE) {
            int idx = vfind(v, op->entry.id_str, op->entry.name);
            g_assert(idx >= 0);   /* its own check found it */
            g_array_remove_index(v, idx);
        }
    }
    return v;
}

static uint64_t vbytes(GArray *v)
{
    uint64_t total = 0;

    for (guint i = 0; i < v->len; i++) {
        total = qcow2_align_up(total, 8) +
                g_array_index(v, VEntry, i).bytes;
    }
    return total;
}

/* QEMU's rule: one more than the highest numeric ID (strtoul). */
static char *next_id(GArray *v)
{
    unsigned long max = 0;

    for (guint i = 0; i < v->len; i++) {
        unsigned long n = strtoul(g_array_index(v, VEntry, i).id, NULL, 10);
        max = MAX(max, n);
    }
    return g_strdup_printf("%lu", max + 1);
}

static int conflicts(BDRVQcow2State *s, bool is_goto, GError **errp)
{
    int ret = qcow2_sn_refuse_data_file(s, errp);

    if (ret < 0) {
        return ret;
    }
    if ((is_goto && s->snapshot_ops) || goto_pending(s)) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "Another snapshot operation is in progress on this "
                    "image; applying a snapshot must be the only one");
        return -EBUSY;
    }
    if (s->snapshot_loaded) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "A snapshot is loaded read-only in place of the image");
        return -EBUSY;
    }
    return 0;
}

/*
 * One more owner for every cluster of a tree must fit the refcount
 * width.  A cluster has at most one reference per tree in any image QEMU
 * or we write, so with `owners` trees (snapshots + active) and room for
 * owners + 1 nothing can overflow; otherwise the tree is read to find
 * its highest count, to which `extra` references taken before this one
 * (creates checked earlier) are added.  The walk reads through the
 * metadata caches, so it may write back a table they already held dirty:
 * the image's content and refcounts do not change.  (An image that
 * breaks the rule still fails cleanly in do, which takes the references
 * all or nothing.)
 */
static int check_refcount_room(BlockDriverState *bs, const uint64_t *l1,
                               uint32_t l1_size, uint64_t owners,
                               uint64_t extra, GError **errp)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t max = 0, cluster = 0;
    int ret;

    if (owners + 1 <= s->refcount_max) {
        return 0;
    }
    ret = qcow2_tree_max_refcount(bs, l1, l1_size, &max, &cluster, errp);
    if (ret < 0) {
        return ret;
    }
    if (max + extra >= s->refcount_max) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "The reference count of cluster %" G_GUINT64_FORMAT
                    " would exceed its maximum (refcount_bits=%d)", cluster,
                    s->refcount_bits);
        return -ERANGE;
    }
    return 0;
}

int qcow2_snapshot_create_check(BlockDriverState *bs,
                                const BdrvSnapshotInfo *tmpl, int flags,
                                BdrvSnapshotInfo *info, void **opp,
                                GError **errp)
{
    BDRVQcow2State *s = bs->opaque;
    g_autoptr(GArray) v = NULL;
    Qcow2SnapshotOp *op;
    Qcow2Snapshot *sn;
    uint64_t bytes;
    int ret;

    qcow2_sn_lock(s);
    ret = conflicts(s, false, errp);
    if (ret < 0) {
        goto out;
    }
    v = logical_view(s);
    if (v->len >= QCOW2_MAX_SNAPSHOTS) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "Too many snapshots: an image holds at most %d",
                    QCOW2_MAX_SNAPSHOTS);
        ret = -EFBIG;
        goto out;
    }
    if (!(flags & BDRV_SNAPSHOT_ALLOW_DUPLICATE) &&
        vfind(v, NULL, tmpl->name) >= 0) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "Snapshot with name '%s' already exists", tmpl->name);
        ret = -EEXIST;
        goto out;
    }
    op = g_new0(Qcow2SnapshotOp, 1);
    op->kind = OP_CREATE;
    op->settle = flags & BDRV_SNAPSHOT_SETTLE;
    sn = &op->entry;
    sn->id_str = next_id(v);
    sn->name = g_strdup(tmpl->name);
    sn->date_sec = tmpl->date_sec;
    sn->date_nsec = tmpl->date_nsec;
    op->date_now = !tmpl->date_sec && !tmpl->date_nsec;
    sn->vm_clock_nsec = tmpl->vm_clock_nsec;
    sn->icount = tmpl->icount;
    /* the state itself was written to the vm-state area beforehand
     * (blockdev/vmstate.c); the L1 copy in do maps it */
    sn->vm_state_size = tmpl->vm_state_size;
    sn->disk_size = s->size;
    sn->extra_data_size = SNAP_EXTRA_KNOWN;
    bytes = qcow2_align_up(vbytes(v), 8) +
            qcow2_sn_entry_bytes(strlen(sn->id_str), strlen(sn->name), 0);
    if (bytes > QCOW2_MAX_SNAPSHOT_TABLE_BYTES) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "The snapshot table would be too big (%" G_GUINT64_FORMAT
                    " bytes; at most %d are allowed)", bytes,
                    QCOW2_MAX_SNAPSHOT_TABLE_BYTES);
        ret = -EFBIG;
    }
    if (ret == 0) {
        uint64_t creates = 0;
        for (guint i = 0; i < n_ops(s); i++) {
            creates += op_at(s, i)->kind == OP_CREATE &&
                       op_at(s, i)->state == ST_CHECKED;
        }
        ret = check_refcount_room(bs, s->l1_table, s->l1_size,
                                  s->nb_snapshots + n_ops(s) + 1, creates,
                                  errp);
    }
    if (ret < 0) {
        op_free(op);
        goto out;
    }
    qcow2_sn_to_info(sn, info);
    push_op(s, op);
    *opp = op;
out:
    qcow2_sn_unlock(s);
    return ret;
}

int qcow2_snapshot_delete_check(BlockDriverState *bs, const char *id,
                                const char *name, BdrvSnapshotInfo *info,
                                void **opp, GError **errp)
{
    BDRVQcow2State *s = bs->opaque;
    g_autoptr(GArray) v = NULL;
    Qcow2SnapshotOp *op;
    const VEntry *e;
    int idx, ret;

    qcow2_sn_lock(s);
    ret = conflicts(s, false, errp);
    if (ret < 0) {
        goto out;
    }
    v = logical_view(s);
    idx = vfind(v, id, name);
    if (idx < 0) {
        bdrv_snapshot_not_found(id, name, errp);
        ret = -ENOENT;
        goto out;
    }
    e = &g_array_index(v, VEntry, idx);
    op = g_new0(Qcow2SnapshotOp, 1);
    op->kind = OP_DELETE;
    if (e->sn) {
        /* nothing changes if the snapshot's L1 is unusable */
        ret = qcow2_sn_read_l1(bs, e->sn, 0, &op->tree_l1,
                               &op->tree_l1_size, errp);
        if (ret < 0) {
            op_free(op);
            goto out;
        }
        op->tree_l1_offset = e->sn->l1_table_offset;
        qcow2_sn_copy(&op->entry, e->sn);
    } else {
        /* made by an earlier create on this image: found again by do */
        op->entry.id_str = g_strdup(e->id);
        op->entry.name = g_strdup(e->name);
    }
    qcow2_sn_to_info(&op->entry, info);
    push_op(s, op);
    *opp = op;
out:
    qcow2_sn_unlock(s);
    return ret;
}

int qcow2_snapshot_goto_check(BlockDriverState *bs, const char *id,
                              const char *name, BdrvSnapshotInfo *info,
                              void **opp, GError **errp)
{
    BDRVQcow2State *s = bs->opaque;
    Qcow2SnapshotOp *op = NULL;
    const Qcow2Snapshot *sn;
    uint64_t needed;
    int idx, ret;

    qcow2_sn_lock(s);
    ret = conflicts(s, true, errp);
    if (ret < 0) {
        goto out;
    }
    idx = qcow2_sn_find(s->snapshots, s->nb_snapshots, id, name);
    if (idx < 0) {
        bdrv_snapshot_not_found(id, name, errp);
        ret = -ENOENT;
        goto out;
    }
    sn = &s->snapshots[idx];
    needed = sn->disk_size > (uint64_t)INT64_MAX - s->cluster_size ? UINT64_MAX
             : qcow2_l1_entries_for(s, sn->disk_size);
    if (sn->disk_size % BDRV_SECTOR_SIZE || needed > QCOW2_MAX_L1_BYTES / 8) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "Snapshot '%s' records an invalid disk size (%"
                    G_GUINT64_FORMAT ")", sn->name, sn->disk_size);
        ret = -EINVAL;
        goto out;
    }
    op = g_new0(Qcow2SnapshotOp, 1);
    op->kind = OP_GOTO;
    op->disk_size = sn->disk_size;
    qcow2_sn_copy(&op->entry, sn);
    ret = qcow2_sn_read_l1(bs, sn, needed, &op->l1, &op->l1_size, errp);
    if (ret == 0) {
        ret = check_refcount_room(bs, op->l1, op->l1_size,
                                  s->nb_snapshots + 1, 0, errp);
    }
    if (ret < 0) {
        op_free(op);
        goto out;
    }
    qcow2_sn_to_info(sn, info);
    push_op(s, op);
    *opp = op;
out:
    qcow2_sn_unlock(s);
    return ret;
}

/* ---------------------------------------------------------------------- */
/* do */

static int start(BlockDriverState *bs, GError **errp)
{
    int ret = qcow2_write_back_metadata(bs);

    if (ret < 0) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_IO,
                    "Could not write back metadata: %s", g_strerror(-ret));
    }
    return ret;
}

/* The table a create writes: the current one (its place remembered for
 * cancel) plus the new entry, dated now unless the caller dated it. */
static Qcow2Snapshot *table_with_new_entry(BDRVQcow2State *s,
                                           Qcow2SnapshotOp *op)
{
    const Qcow2Snapshot *cur;
    uint32_t nb;
    uint64_t cur_offset, cur_size;
    Qcow2Snapshot *sn;

    view(s, &cur, &nb, &cur_offset, &cur_size);
    op->old_nb = nb;
    op->old_offset = cur_offset;
    op->old_size = cur_size;
    op->table = qcow2_sn_dup_array(cur, nb, 1);
    op->nb = nb + 1;
    sn = &op->table[nb];
    qcow2_sn_copy(sn, &op->entry);
    if (op->date_now) {
        int64_t now = g_get_real_time();
        sn->date_sec = now / G_USEC_PER_SEC;
        sn->date_nsec = (now % G_USEC_PER_SEC) * 1000;
    }
    sn->disk_size = s->size;
    return sn;
}

static int create_do(BlockDriverState *bs, Qcow2SnapshotOp *op,
                     GError **errp)
{
    BDRVQcow2State *s = bs->opaque;
    Qcow2Snapshot *sn;
    uint64_t l1_bytes = (uint64_t)s->l1_size * 8;
    int64_t copy_off = 0;
    bool refs_taken = false;
    int ret;

    sn = table_with_new_entry(s, op);

    /* 1. clusters for the copy of the active L1 */
    copy_off = qcow2_sn_alloc_bytes(bs, l1_bytes);
    if (copy_off < 0) {
        ret = (int)copy_off;
        copy_off = 0;
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_IO,
                    "Could not allocate clusters for the L1 copy: %s",
                    g_strerror(-ret));
        goto fail;
    }
    op->tree_l1_offset = copy_off;
    op->tree_l1_size = s->l1_size;
    op->tree_l1 = g_memdup2(s->l1_table, MAX(l1_bytes, 8));

    /* 2. every cluster of the active tree gains the snapshot as owner;
     * the counts are durable before anything shows the sharing */
    ret = qcow2_tree_ref(bs, op->tree_l1, op->tree_l1_size, errp);
    if (ret < 0) {
        goto fail;
    }
    refs_taken = true;
    ret = qcow2_sn_sync_refcounts(bs);
    if (ret < 0) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_IO,
                    "Could not write the reference counts: %s",
                    g_strerror(-ret));
        goto fail;
    }

    /* 3. COPIED off in the active tree, then the L1 copy */
    ret = qcow2_tree_clear_copied(bs, s->l1_table, s->l1_size, errp);
    if (ret < 0) {
        goto fail;
    }
    memcpy(op->tree_l1, s->l1_table, l1_bytes);
    ret = qcow2_write_active_tree(bs, true);
    if (ret == 0) {
        ret = qcow2_write_l1_at(bs, copy_off, op->tree_l1, op->tree_l1_size);
    }
    if (ret < 0) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_IO,
                    "Could not write the L1 or L2 tables: %s",
                    g_strerror(-ret));
        goto fail;
    }
    sn->l1_table_offset = copy_off;
    sn->l1_size = s->l1_size;

    /* 4. the new table, in new clusters (synced) */
    ret = qcow2_sn_write_table(bs, op->table, op->nb, &op->offset, &op->size,
                               errp);
    if (ret < 0) {
        goto fail;
    }
    return 0;

fail:
    if (refs_taken) {
        g_autoptr(GError) err = NULL;
        if (qcow2_tree_release(bs, op->tree_l1, op->tree_l1_size, copy_off,
                               &err) < 0) {
            strata_error("qcow2: undoing the snapshot failed (clusters "
                         "leak): %s", err->message);
        }
    } else {
        qcow2_free_unreferenced(bs, copy_off, l1_bytes, QCOW2_FREE_ALWAYS);
        qcow2_cache_write(bs, s->refcount_cache);
    }
    /* back to what check left */
    qcow2_sn_free_array(op->table, op->nb);
    op->table = NULL;
    op->nb = 0;
    g_clear_pointer(&op->tree_l1, g_free);
    op->tree_l1_size = 0;
    op->tree_l1_offset = 0;
    return ret;
}

/*
 * create with a pre-copy: phase 2 (qcow2-precopy.c) around the new table.
 * Write order: dirty L2 copies, the snapshot's and the new active L1,
 * the new snapshot table, the refcount block copies and the new refcount
 * table, sync; invalidate then switches all of it with one header write.
 */
static int create_do_precopy(BlockDriverState *bs, Qcow2SnapshotOp *op,
                             GError **errp)
{
    BDRVQcow2State *s = bs->opaque;
    Qcow2Snapshot *sn;
    int ret;

    sn = table_with_new_entry(s, op);
    ret = qcow2_precopy_prepare(bs, op->pc, &sn->l1_table_offset,
                                &sn->l1_size, errp);
    if (ret == 0) {
        /* in the clusters phase 1 set aside if it fits (nothing
         * allocated under the hold); seal syncs it with the rest */
        uint64_t bytes = qcow2_sn_table_bytes(op->table, op->nb);
        uint64_t at;
        if (qcow2_precopy_take_area(bs, op->pc, bytes, &at)) {
            ret = qcow2_sn_write_table_at(bs, op->table, op->nb, at, errp);
            op->offset = at;
            op->size = bytes;
        } else {
            ret = qcow2_sn_write_table_unsynced(bs, op->table, op->nb,
                                                &op->offset, &op->size,
                                                errp);
        }
        if (ret == 0) {
            ret = qcow2_precopy_seal(bs, op->pc, errp);
        }
    }
    if (ret < 0) {
        /* the table's clusters and everything the pre-copy allocated go
         * back now */
        qcow2_free_unreferenced(bs, op->offset, op->size, QCOW2_FREE_ALWAYS);
        qcow2_precopy_discard(bs, op->pc);
        g_clear_pointer(&op->pc, qcow2_precopy_free);
        qcow2_sn_free_array(op->table, op->nb);
        op->table = NULL;
        op->nb = 0;
        op->offset = op->size = 0;
    }
    return ret;
}

/* The table without entry idx of cur (nb entries), written to new
 * clusters and synced; the replaced one remembered for cancel and clean.
 * On failure the op holds no table. */
static int write_table_without(BlockDriverState *bs, Qcow2SnapshotOp *op,
                               const Qcow2Snapshot *cur, uint32_t nb,
                               uint64_t cur_offset, uint64_t cur_size,
                               int idx, GError **errp)
{
    int ret;

    op->old_nb = nb;
    op->old_offset = cur_offset;
    op->old_size = cur_size;
    op->table = g_new0(Qcow2Snapshot, MAX(nb, 1));
    for (uint32_t i = 0, j = 0; i < nb; i++) {
        if ((int)i != idx) {
            qcow2_sn_copy(&op->table[j++], &cur[i]);
        }
    }
    op->nb = nb - 1;
    ret = qcow2_sn_write_table(bs, op->table, op->nb, &op->offset, &op->size,
                               errp);
    if (ret < 0) {
        qcow2_sn_free_array(op->table, op->nb);
        op->table = NULL;
        op->nb = 0;
    }
    return ret;
}

static int delete_do(BlockDriverState *bs, Qcow2SnapshotOp *op,
                     GError **errp)
{
    BDRVQcow2State *s = bs->opaque;
    const Qcow2Snapshot *cur;
    uint32_t nb;
    uint64_t cur_offset, cur_size;
    bool read_tree = false;
    int idx, ret;

    view(s, &cur, &nb, &cur_offset, &cur_size);
    idx = qcow2_sn_find(cur, nb, op->entry.id_str, op->entry.name);
    /* check found it, and every operation before this one is done */
    g_assert(idx >= 0);
    if (!op->tree_l1) {
        /* a snapshot an earlier create on this image made: our own L1 */
        ret = qcow2_sn_read_l1(bs, &cur[idx], 0, &op->tree_l1,
                               &op->tree_l1_size, errp);
        if (ret < 0) {
            return ret;
        }
        op->tree_l1_offset = cur[idx].l1_table_offset;
        read_tree = true;
    }
    ret = write_table_without(bs, op, cur, nb, cur_offset, cur_size, idx,
                              errp);
    if (ret < 0 && read_tree) {
        g_clear_pointer(&op->tree_l1, g_free);
    }
    return ret;
}

/* A pre-done delete's table given back (cancel before do, or a table
 * that is no longer current): nothing points at its clusters. */
static void delete_discard_predone(BlockDriverState *bs, Qcow2SnapshotOp *op)
{
    int ret = qcow2_free_unreferenced(bs, op->offset, op->size,
                                      QCOW2_FREE_ALWAYS);

    if (ret == 0) {
        ret = qcow2_sn_sync_refcounts(bs);
    }
    if (ret < 0) {
        strata_warning("qcow2: giving back a snapshot table written "
                       "before the drain failed (clusters leak): %s",
                       g_strerror(-ret));
    }
    qcow2_sn_free_array(op->table, op->nb);
    op->table = NULL;
    op->nb = 0;
    op->offset = op->size = 0;
    op->predone = false;
}

/* Under the drain: the table written by pre_do still replaces the
 * visible one (nothing else runs on the image while the op is alone on
 * it, but a stale table must never be published). */
static bool delete_predone_current(BDRVQcow2State *s, Qcow2SnapshotOp *op)
{
    return op->predone && n_ops(s) == 1 &&
           s->nb_snapshots == op->old_nb &&
           s->snapshots_offset == op->old_offset &&
           s->snapshots_size == op->old_size;
}

static int goto_do(BlockDriverState *bs, Qcow2SnapshotOp *op, GError **errp)
{
    BDRVQcow2State *s = bs->opaque;
    int64_t l1_off = 0;
    int ret;

    /* strata: the whole disk may change, so every enabled bitmap says so
     * (QEMU refuses to apply a snapshot while the image has bitmaps) */
    qcow2_bitmaps_mark_all(bs);
    /* 1. the snapshot's tree gains the new active image as owner */
    ret = qcow2_tree_ref(bs, op->l1, op->l1_size, errp);
    if (ret < 0) {
        return ret;
    }
    ret = qcow2_sn_sync_refcounts(bs);
    if (ret < 0) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_IO,
                    "Could not write the reference counts: %s",
                    g_strerror(-ret));
        goto fail;
    }
    /* 2. COPIED off in its tables; the new active L1 in new clusters */
    ret = qcow2_tree_clear_copied(bs, op->l1, op->l1_size, errp);
    if (ret < 0) {
        goto fail;
    }
    l1_off = qcow2_sn_alloc_bytes(bs, (uint64_t)op->l1_size * 8);
    if (l1_off < 0) {
        ret = (int)l1_off;
        l1_off = 0;
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_IO,
                    "Could not allocate clusters for the L1 table: %s",
                    g_strerror(-ret));
        goto fail;
    }
    ret = qcow2_cache_write(bs, s->l2_cache);
    if (ret == 0) {
        ret = qcow2_write_l1_at(bs, l1_off, op->l1, op->l1_size);
    }
    if (ret == 0) {
        ret = qcow2_sn_sync_refcounts(bs);
    }
    if (ret < 0) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_IO,
                    "Could not write the L1 or L2 tables: %s",
                    g_strerror(-ret));
        goto fail;
    }
    op->l1_offset = l1_off;
    return 0;

fail:
    {
        g_autoptr(GError) err = NULL;
        if (qcow2_tree_release(bs, op->l1, op->l1_size, l1_off, &err) < 0) {
            strata_error("qcow2: undoing the snapshot apply failed "
                         "(clusters leak): %s", err->message);
        }
    }
    return ret;
}

int qcow2_snapshot_do(BlockDriverState *bs, void *opaque,
                      BdrvSnapshotInfo *info, GError **errp)
{
    BDRVQcow2State *s = bs->opaque;
    Qcow2SnapshotOp *op = opaque;
    int ret;

    qcow2_sn_lock(s);
    g_assert(op->state == ST_CHECKED);
    if (op->predone && !delete_predone_current(s, op)) {
        delete_discard_predone(bs, op);
    }
    /* A pre-done delete has nothing left to write before its header:
     * the metadata the guests dirtied is theirs to write back (their
     * flushes, the image's), not the hold's. */
    ret = op->predone ? 0 : start(bs, errp);
    if (ret == 0) {
        switch (op->kind) {
        case OP_CREATE:
            ret = op->pc ? create_do_precopy(bs, op, errp)
                         : create_do(bs, op, errp);
            break;
        case OP_DELETE:
            ret = op->predone ? 0 : delete_do(bs, op, errp);
            break;
        case OP_GOTO:
            ret = goto_do(bs, op, errp);
            break;
        }
    }
    if (ret == 0) {
        op->state = ST_DONE;
        if (op->kind == OP_CREATE) {
            /* the date and size as taken */
            bdrv_snapshot_info_clear(info);
            qcow2_sn_to_info(&op->table[op->nb - 1], info);
        }
    }
    qcow2_sn_unlock(s);
    return ret;
}

/* ---------------------------------------------------------------------- */
/* pre_do: a create that is the only operation on its image copies its
 * metadata before the drain (qcow2-precopy.c); a delete that is the only
 * one writes its new table (see delete_pre_do); any other operation does
 * all of its work in do */

/*
 * A delete's do, guest I/O running: the table without the entry goes to
 * new clusters and is synced, so the drained do writes nothing and,
 * above all, need not write back the metadata the guests dirtied (with
 * busy guests on a snapshotted image: every copy-on-write's L2 update
 * and its deferred refcount drop, whose refcount blocks spread over the
 * whole disk -- the part of the hold that grew with the data).  Guest
 * writes after it change L2 tables and refcounts, never the snapshot
 * table or the tree being deleted (it is not the active tree), so the
 * table stays right; a crash leaves the old header and the new table's
 * clusters counted but unused: a leak.
 */
static int delete_pre_do(BlockDriverState *bs, Qcow2SnapshotOp *op,
                         GError **errp)
{
    BDRVQcow2State *s = bs->opaque;
    int idx = qcow2_sn_find(s->snapshots, s->nb_snapshots,
                            op->entry.id_str, op->entry.name);
    int ret;

    if (idx < 0 || !op->tree_l1) {
        return 0;   /* not on disk yet: do does it all */
    }
    ret = write_table_without(bs, op, s->snapshots, s->nb_snapshots,
                              s->snapshots_offset, s->snapshots_size, idx,
                              errp);
    op->predone = ret == 0;
    return ret;
}

int qcow2_snapshot_pre_do(BlockDriverState *bs, void *opaque, GError **errp)
{
    BDRVQcow2State *s = bs->opaque;
    Qcow2SnapshotOp *op = opaque;
    Qcow2Precopy *pc = NULL;
    uint64_t area = 0;
    bool eligible;
    int ret;

    if (op->kind == OP_DELETE) {
        qcow2_sn_lock(s);
        g_assert(op->state == ST_CHECKED && !op->predone);
        ret = n_ops(s) == 1 && !s->snapshot_loaded && !s->broken &&
              !bs->read_only ? delete_pre_do(bs, op, errp) : 0;
        qcow2_sn_unlock(s);
        return ret;
    }
    g_mutex_lock(&s->lock);
    g_assert(op->state == ST_CHECKED && !op->pc);
    /* Lazy refcounts need nothing else: the pre-copy reads every
     * refcount block through the cache, whose counts are exact (only the
     * on-disk blocks may lag, under the dirty bit), and seal writes all
     * of the cache back and syncs before the publishing write, so the
     * structures the header switches to are exact on disk too. */
    eligible = op->kind == OP_CREATE && n_ops(s) == 1 &&
               !s->snapshot_loaded &&
               !s->broken && !bs->read_only;
    if (eligible) {
        /* the table the create will write: the one visible plus its
         * entry (nothing else is pending on the image) */
        Qcow2Snapshot *t = qcow2_sn_dup_array(s->snapshots, s->nb_snapshots,
                                              1);
        qcow2_sn_copy(&t[s->nb_snapshots], &op->entry);
        area = qcow2_sn_table_bytes(t, s->nb_snapshots + 1);
        qcow2_sn_free_array(t, s->nb_snapshots + 1);
    }
    g_mutex_unlock(&s->lock);
    if (!eligible) {
        return 0;
    }
    ret = qcow2_precopy_start(bs, area, &pc, errp);
    qcow2_sn_lock(s);
    if (ret < 0) {
        qcow2_precopy_discard(bs, pc);
        qcow2_precopy_free(pc);
    } else {
        op->pc = pc;
    }
    qcow2_sn_unlock(s);
    return ret;
}

void qcow2_snapshot_pre_cancel(BlockDriverState *bs, void *opaque)
{
    BDRVQcow2State *s = bs->opaque;
    Qcow2SnapshotOp *op = opaque;

    qcow2_sn_lock(s);
    if (op->state == ST_CHECKED && op->pc) {
        qcow2_precopy_discard(bs, op->pc);
        g_clear_pointer(&op->pc, qcow2_precopy_free);
    }
    if (op->state == ST_CHECKED && op->predone) {
        delete_discard_predone(bs, op);
    }
    qcow2_sn_unlock(s);
}

/* ---------------------------------------------------------------------- */
/* invalidate, cancel, clean */

/* Exchanges two lvalues of one type: the op keeps whichever state the
 * image is not showing, so invalidate and cancel are the same swap. */
#define SWAP(a, b) \
    do { \
        __typeof__(a) swap_tmp_ = (a); \
        (a) = (b); \
        (b) = swap_tmp_; \
    } while (0)

static void swap_table(BDRVQcow2State *s, Qcow2SnapshotOp *op)
{
    SWAP(s->snapshots, op->table);
    SWAP(s->nb_snapshots, op->nb);
    SWAP(s->snapshots_offset, op->offset);
    SWAP(s->snapshots_size, op->size);
}

static void swap_active(BDRVQcow2State *s, Qcow2SnapshotOp *op)
{
    SWAP(s->l1_table, op->l1);
    SWAP(s->l1_size, op->l1_size);
    SWAP(s->l1_table_offset, op->l1_offset);
    SWAP(s->size, op->disk_size);
}

/* The header in the op's new state or in the state before it. */
static int write_header_state(BlockDriverState *bs, Qcow2SnapshotOp *op,
                              bool new_state)
{
    BDRVQcow2State *s = bs->opaque;
    bool invalidated = op->state == ST_INVALIDATED;

    if (op->pc) {
        /* the active L1 and refcount table switch with the table */
        if (new_state) {
            return qcow2_precopy_publish(
                bs, op->pc, invalidated ? s->nb_snapshots : op->nb,
                invalidated ? s->snapshots_offset : op->offset);
        }
        return qcow2_precopy_unpublish(bs, op->pc, op->old_nb,
                                       op->old_offset);
    }
    if (op->kind == OP_GOTO) {
        /* before invalidate the op holds the new state, after it the old */
        if (new_state == invalidated) {
            return qcow2_sn_write_active_header(bs, s->size, s->l1_size,
                                                s->l1_table_offset);
        }
        return qcow2_sn_write_active_header(bs, op->disk_size, op->l1_size,
                                            op->l1_offset);
    }
    if (new_state && !invalidated && op->predone && !op->publish_synced) {
        /* a sync fewer under the hold (see delete_free_parts) */
        int ret = qcow2_sn_write_table_header_unsynced(bs, op->nb,
                                                       op->offset);
        op->header_unsynced = ret == 0;
        return ret;
    }
    if (new_state) {
        return qcow2_sn_write_table_header(
            bs, invalidated ? s->nb_snapshots : op->nb,
            invalidated ? s->snapshots_offset : op->offset);
    }
    return qcow2_sn_write_table_header(bs, op->old_nb, op->old_offset);
}

/* Switches the header; on failure tries to put the other state back,
 * and if even that fails marks the header as unknown. */
static int switch_header(BlockDriverState *bs, Qcow2SnapshotOp *op,
                         bool to_new, GError **errp)
{
    int ret = write_header_state(bs, op, to_new);

    if (ret < 0) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_IO,
                    "Could not update the image header: %s",
                    g_strerror(-ret));
        if (write_header_state(bs, op, !to_new) < 0) {
            op->header_unknown = true;
        }
        return ret;
    }
    if (op->kind == OP_GOTO) {
        swap_active(bs->opaque, op);
    } else {
        swap_table(bs->opaque, op);
    }
    op->state = to_new ? ST_INVALIDATED : ST_DONE;
    return 0;
}

int qcow2_snapshot_invalidate(BlockDriverState *bs, void *opaque,
                              GError **errp)
{
    BDRVQcow2State *s = bs->opaque;
    Qcow2SnapshotOp *op = opaque;
    int ret;

    qcow2_sn_lock(s);
    g_assert(op->state == ST_DONE);
    ret = switch_header(bs, op, true, errp);
    qcow2_sn_unlock(s);
    return ret;
}

/* Issue 14: what write_header_state(bs, op, true) will write, for a done
 * op (the intent record holds it before it is written). */
int qcow2_snapshot_publish_bytes(BlockDriverState *bs, void *opaque,
                                 uint64_t *offset, uint32_t *len,
                                 uint8_t *out, bool *synced)
{
    BDRVQcow2State *s = bs->opaque;
    Qcow2SnapshotOp *op = opaque;

    qcow2_sn_lock(s);
    if (op->state != ST_DONE) {
        qcow2_sn_unlock(s);
        return -EINVAL;
    }
    /* the classic paths end do with a sync and write the header with
     * qcow2_write_header_bytes (synced); the pre-copy's switch is not */
    *synced = !op->pc;
    /* the record counts on the publish being durable when it is written */
    op->publish_synced = true;
    if (op->pc) {
        qcow2_precopy_publish_bytes(op->pc, op->nb, op->offset, out);
        *offset = QCOW2_HDR_L1_OFF;
        *len = 36;
    } else if (op->kind == OP_GOTO) {
        be64_write(out, op->disk_size);
        be32_write(out + 8, 0);
        be32_write(out + 12, op->l1_size);
        be64_write(out + 16, op->l1_offset);
        *offset = QCOW2_HDR_SIZE_OFF;
        *len = 24;
    } else {
        be32_write(out, op->nb);
        be64_write(out + 4, op->offset);
        *offset = QCOW2_HDR_SNAPSHOTS_OFF;
        *len = 12;
    }
    qcow2_sn_unlock(s);
    return 0;
}

/*
 * The common end of freeing an op's clusters: the new refcounts made
 * durable only when every free went well, and a failure that no step
 * described reported the way the user sees any failed free.
 */
static int finish_free(BlockDriverState *bs, int ret, GError **errp)
{
    if (ret == 0) {
        ret = qcow2_sn_sync_refcounts(bs);
    }
    if (ret < 0 && errp && !*errp) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_IO,
                    "Could not free the clusters: %s", g_strerror(-ret));
    }
    return ret;
}

int qcow2_snapshot_cancel(BlockDriverState *bs, void *opaque, GError **errp)
{
    BDRVQcow2State *s = bs->opaque;
    Qcow2SnapshotOp *op = opaque;
    int ret = 0;

    qcow2_sn_lock(s);
    g_assert(op->state == ST_DONE || op->state == ST_INVALIDATED);
    if (op->state == ST_INVALIDATED) {
        ret = switch_header(bs, op, false, errp);
    }
    if (ret < 0 || op->header_unknown) {
        /* The header may still point at what this op wrote: keep it all
         * (a leak at worst). */
        if (ret == 0) {
            g_set_error(errp, BDRV_ERROR, BDRV_ERROR_IO,
                        "The image header could not be restored; the "
                        "operation's clusters are kept (they may leak)");
            ret = -EIO;
        }
        goto out;
    }
    switch (op->kind) {
    case OP_CREATE:
        if (op->pc) {
            /* nothing live changed: what it allocated goes back */
            qcow2_precopy_discard(bs, op->pc);
            g_clear_pointer(&op->pc, qcow2_precopy_free);
            ret = qcow2_free_unreferenced(bs, op->offset, op->size,
                                          QCOW2_FREE_ALWAYS);
            break;
        }
        ret = qcow2_tree_release(bs, op->tree_l1, op->tree_l1_size,
                                 op->tree_l1_offset, errp);
        qcow2_free_unreferenced(bs, op->offset, op->size, QCOW2_FREE_ALWAYS);
        break;
    case OP_DELETE:
        ret = qcow2_free_unreferenced(bs, op->offset, op->size,
                                      QCOW2_FREE_ALWAYS);
        break;
    case OP_GOTO:
        ret = qcow2_tree_release(bs, op->l1, op->l1_size, op->l1_offset, errp);
        break;
    }
    ret = finish_free(bs, ret, errp);
out:
    pop_op(s, op);
    op->state = ST_CANCELLED;
    qcow2_sn_unlock(s);
    return ret;
}

/* For tests: called between the parts of a delete's frees, without any
 * lock; part_entries, if not 0, replaces the L1 entries per part. */
static Qcow2FreeHook *free_hook;
static void *free_hook_opaque;
static uint32_t free_hook_part_entries;

void qcow2_snapshot_set_free_hook(Qcow2FreeHook *hook, void *opaque,
                                  uint32_t part_entries)
{
    free_hook = hook;
    free_hook_opaque = opaque;
    free_hook_part_entries = part_entries;
}

/* Between two parts: the qcow2 locks let go, so guest requests waiting
 * for them run. */
static void let_guests_in(BlockDriverState *bs, unsigned *n)
{
    BDRVQcow2State *s = bs->opaque;

    qcow2_sn_unlock(s);
    if (free_hook) {
        free_hook(bs, (*n)++, free_hook_opaque);
    } else {
        g_thread_yield();
    }
    qcow2_sn_lock(s);
}

/*
 * A delete's clean, after the resume: its old snapshot table and the
 * deleted tree freed.  The tree goes in parts of a bounded number of L1
 * entries (qcow2_tree_part_entries), each under the qcow2 locks, which
 * are let go between parts so a guest request waits for one part at
 * most, not the whole tree.  Called and returns with the locks held.
 *
 * Why parts are safe: nothing points at the tree any more (the header
 * without it is synced), so a part only lowers counts nobody else uses
 * and presets COPIED where a count is about to reach 1; a guest write
 * between parts that copies a cluster still shared with the tree drops
 * the active image's reference, and the tree's own goes with its part.
 * COPIED in the whole active tree is recomputed once every part is done
 * (again in parts), for sharing at other indexes.  A crash between parts
 * leaves the rest of the tree counted: leaks.
 */
static int delete_free_parts(BlockDriverState *bs, Qcow2SnapshotOp *op,
                             GError **errp)
{
    BDRVQcow2State *s = bs->opaque;
    uint32_t per = free_hook_part_entries ? free_hook_part_entries
                                          : qcow2_tree_part_entries(s);
    unsigned n = 0;
    /* a pre-done delete's header was not synced by invalidate: durable
     * before anything the old header points at is freed (and reused) */
    int ret = op->header_unsynced ? bdrv_flush(bs->file) : 0;

    if (ret == 0) {
        op->header_unsynced = false;
        ret = qcow2_free_unreferenced(bs, op->old_offset, op->old_size,
                                      QCOW2_FREE_SNAPSHOT);
    }

    for (uint32_t from = 0; ret == 0 && from < op->tree_l1_size;
         from += per) {
        if (from) {
            let_guests_in(bs, &n);
        }
        ret = qcow2_tree_release_part(bs, op->tree_l1, op->tree_l1_size,
                                      from, from + per, errp);
    }
    if (ret == 0) {
        ret = qcow2_free_unreferenced(bs, op->tree_l1_offset,
                                      (uint64_t)op->tree_l1_size * 8,
                                      QCOW2_FREE_SNAPSHOT);
    }
    if (ret == 0) {
        ret = qcow2_cache_write(bs, s->refcount_cache);
    }
    /* s->l1_size is read again each time: the lock was let go */
    for (uint32_t from = 0; ret == 0 && from < s->l1_size; from += per) {
        let_guests_in(bs, &n);
        ret = qcow2_active_fix_copied_part(bs, from, from + per, errp);
    }
    ret = finish_free(bs, ret, errp);
    return ret;
}

/* A delete's frees failed after it took effect: QEMU's words for it (the
 * snapshot is gone, what it held leaks). */
static int delete_free_failed(int ret, GError **errp)
{
    if (ret < 0) {
        g_clear_error(errp);
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_IO,
                    "Failed to free the cluster and L1 table: %s",
                    g_strerror(-ret));
    }
    return ret;
}

/* After invalidate: frees what nobody uses any more. */
static int free_replaced(BlockDriverState *bs, Qcow2SnapshotOp *op,
                         GError **errp)
{
    int ret = 0;

    if (op->kind != OP_GOTO) {
        ret = qcow2_free_unreferenced(bs, op->old_offset, op->old_size,
                                      QCOW2_FREE_SNAPSHOT);
    }
    if (ret == 0 && op->pc) {
        ret = qcow2_precopy_free_replaced(bs, op->pc, op->settle);
    }
    if (ret == 0 && op->kind == OP_DELETE) {
        ret = qcow2_tree_release(bs, op->tree_l1, op->tree_l1_size,
                                 op->tree_l1_offset, errp);
    } else if (ret == 0 && op->kind == OP_GOTO) {
        /* after invalidate, op->l1 is the old active table */
        ret = qcow2_tree_release(bs, op->l1, op->l1_size, op->l1_offset, errp);
    }
    ret = finish_free(bs, ret, errp);
    return ret;
}

int qcow2_snapshot_clean(BlockDriverState *bs, void *opaque, GError **errp)
{
    BDRVQcow2State *s = bs->opaque;
    Qcow2SnapshotOp *op = opaque;
    int ret = 0;

    qcow2_sn_lock(s);
    /* a done op is invalidated or cancelled first */
    g_assert(op->state != ST_DONE);
    if (op->state == ST_INVALIDATED && op->kind == OP_DELETE && !op->pc) {
        ret = delete_free_failed(delete_free_parts(bs, op, errp), errp);
    } else if (op->state == ST_INVALIDATED && op->kind == OP_DELETE) {
        ret = delete_free_failed(free_replaced(bs, op, errp), errp);
    } else if (op->state == ST_INVALIDATED) {
        ret = free_replaced(bs, op, errp);
    } else if (op->pc && op->state == ST_CHECKED) {
        /* pre-done, never done */
        qcow2_precopy_discard(bs, op->pc);
    } else if (op->predone && op->state == ST_CHECKED) {
        delete_discard_predone(bs, op);
    }
    if (op->pc) {
        qcow2_cache_set_dirty_log(s->l2_cache, NULL);
        qcow2_cache_set_dirty_log(s->refcount_cache, NULL);
    }
    pop_op(s, op);
    op_free(op);
    qcow2_sn_unlock(s);
    return ret;
}

void qcow2_snapshot_close(BlockDriverState *bs)
{
    BDRVQcow2State *s = bs->opaque;

    /* newest first: what was done is cancelled, what took effect is
     * cleaned (the generic layer holds a reference to the node while an
     * operation lives, so this only meets operations driven directly) */
    while (s->snapshot_ops) {
        Qcow2SnapshotOp *op = op_at(s, s->snapshot_ops->len - 1);
        if (op->state == ST_DONE) {
            qcow2_snapshot_cancel(bs, op, NULL);
        }
        qcow2_snapshot_clean(bs, op, NULL);
    }
}
