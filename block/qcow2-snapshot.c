/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * qcow2 internal snapshots: the snapshot table (reading and validating
 * every entry, writing a new one) and the snapshot operations split into
 * prepare / publish / unpublish / undo / cleanup (include/block/
 * snapshot.h); the walks that share a tree of L2 tables and data clusters
 * or release it live in qcow2-snapshot-tree.c.  Entry layout: QEMU's
 * docs/interop/qcow2.txt, "Snapshots".
 *
 * Write order of each operation; "commit" marks its commit point.
 *
 *   create   prepare: clusters for a copy of the active L1; refcount of
 *                     every L2 table and data cluster of the active tree
 *                     +1 (written, synced); COPIED cleared in the active
 *                     L2 tables, then in the active L1; the L1 copy; the
 *                     new table in new clusters; sync.
 *            publish: header bytes 60..71 (nb_snapshots, snapshots_offset)
 *                     -- commit
 *            cleanup: the old table's clusters freed.
 *   delete   prepare: the new table (without the entry) in new clusters;
 *                     sync.
 *            publish: header bytes 60..71 -- commit
 *            cleanup: old table freed; the snapshot's tree released.
 *   goto     prepare: refcounts of the snapshot's tree +1 (synced); COPIED
 *                     cleared in its L2 tables; the new active L1 (a copy
 *                     of the snapshot's) in new clusters; sync.
 *            publish: header bytes 24..47 (size, crypt method, l1_size,
 *                     l1_table_offset) -- commit
 *            cleanup: the old active tree released, its L1 freed.
 *   release of a tree (delete cleanup; undo of create and goto):
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
 * for a snapshot that was never published): harmless either way, and
 * `qemu-img check -r leaks` (ours too) repairs both.  No order avoids
 * that window: the flag and the count live in different clusters.  Undo
 * puts everything back, leaking nothing when its own writes succeed.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "qcow2.h"
#include "block/log.h"

#define SNAP_HEADER_LEN 40
#define SNAP_EXTRA_KNOWN 24   /* vm_state_size_large, disk_size, icount */
#define WINDOW (64 * 1024)

/* ---------------------------------------------------------------------- */
/* Reading the table */

/* Reads the table through a small window so a huge table costs no memory. */
typedef struct TableReader {
    BlockDriverState *bs;
    uint64_t win_start;
    uint32_t win_len;
    uint8_t buf[WINDOW];
} TableReader;

static int table_read(TableReader *r, uint64_t pos, uint32_t len, void *out)
{
    if (len > WINDOW) {
        return bdrv_pread(r->bs->file, pos, len, out);
    }
    if (pos < r->win_start || pos + len > r->win_start + r->win_len) {
        int ret = bdrv_pread(r->bs->file, pos, WINDOW, r->buf);
        if (ret < 0) {
            return ret;
        }
        r->win_start = pos;
        r->win_len = WINDOW;
    }
    memcpy(out, r->buf + (pos - r->win_start), len);
    return 0;
}

static uint16_t rd16(const uint8_t *b)
{
    uint16_t v;
    memcpy(&v, b, 2);
    return GUINT16_FROM_BE(v);
}

static uint32_t rd32(const uint8_t *b)
{
    uint32_t v;
    memcpy(&v, b, 4);
    return GUINT32_FROM_BE(v);
}

static uint64_t rd64(const uint8_t *b)
{
    uint64_t v;
    memcpy(&v, b, 8);
    return GUINT64_FROM_BE(v);
}

static void wr16(uint8_t *b, uint16_t v)
{
    v = GUINT16_TO_BE(v);
    memcpy(b, &v, 2);
}

static void wr32(uint8_t *b, uint32_t v)
{
    v = GUINT32_TO_BE(v);
    memcpy(b, &v, 4);
}

static void wr64(uint8_t *b, uint64_t v)
{
    v = GUINT64_TO_BE(v);
    memcpy(b, &v, 8);
}

static void snapshot_clear(Qcow2Snapshot *sn)
{
    g_free(sn->id_str);
    g_free(sn->name);
    g_free(sn->unknown_extra);
    memset(sn, 0, sizeof(*sn));
}

static void snapshots_free(Qcow2Snapshot *sn, uint32_t nb)
{
    for (uint32_t i = 0; sn && i < nb; i++) {
        snapshot_clear(&sn[i]);
    }
    g_free(sn);
}

static void snapshot_copy(Qcow2Snapshot *dst, const Qcow2Snapshot *src)
{
    *dst = *src;
    dst->id_str = g_strdup(src->id_str);
    dst->name = g_strdup(src->name);
    dst->unknown_extra = src->unknown_extra_size ?
        g_memdup2(src->unknown_extra, src->unknown_extra_size) : NULL;
}

/* A copy of nb entries with room for `spare` more. */
static Qcow2Snapshot *snapshots_dup(const Qcow2Snapshot *sn, uint32_t nb,
                                    uint32_t spare)
{
    Qcow2Snapshot *d = g_new0(Qcow2Snapshot, (size_t)nb + spare + 1);

    for (uint32_t i = 0; i < nb; i++) {
        snapshot_copy(&d[i], &sn[i]);
    }
    return d;
}

void qcow2_free_snapshots(BDRVQcow2State *s)
{
    snapshots_free(s->snapshots, s->nb_snapshots);
    s->snapshots = NULL;
}

static uint64_t file_end_of(BlockDriverState *bs)
{
    BDRVQcow2State *s = bs->opaque;
    int64_t len = bdrv_getlength(bs->file);

    return len < 0 ? 0 : qcow2_align_up(len, s->cluster_size);
}

/* QEMU's checks of a snapshot's L1 placement (same order and texts),
 * plus: inside the file and not on the header. */
static int snapshot_l1_check(BDRVQcow2State *s, const Qcow2Snapshot *sn,
                             uint64_t file_end, GError **errp)
{
    uint64_t bytes = (uint64_t)sn->l1_size * 8;

    if (bytes > QCOW2_MAX_L1_BYTES) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "Snapshot L1 table too large");
        return -EFBIG;
    }
    if ((sn->l1_table_offset & (s->cluster_size - 1)) ||
        sn->l1_table_offset > INT64_MAX - bytes) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "Snapshot L1 table offset invalid");
        return -EINVAL;
    }
    if (bytes && (sn->l1_table_offset == 0 ||
                  sn->l1_table_offset + bytes > file_end)) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "Snapshot L1 table offset invalid: it lies %s",
                    sn->l1_table_offset ? "past the end of the file"
                                        : "on the image header");
        return -EINVAL;
    }
    return 0;
}

static int read_one(BDRVQcow2State *s, TableReader *r, uint64_t *pos,
                    uint64_t table_end, uint32_t i, Qcow2Snapshot *sn,
                    GError **errp)
{
    uint8_t h[SNAP_HEADER_LEN];
    uint8_t known[SNAP_EXTRA_KNOWN] = { 0 };
    uint16_t id_len, name_len;
    uint32_t extra;
    int ret;

    *pos = qcow2_align_up(*pos, 8);
    if (*pos + SNAP_HEADER_LEN > table_end) {
        goto past_end;
    }
    ret = table_read(r, *pos, SNAP_HEADER_LEN, h);
    if (ret < 0) {
        return ret;
    }
    sn->l1_table_offset = rd64(h);
    sn->l1_size = rd32(h + 8);
    id_len = rd16(h + 12);
    name_len = rd16(h + 14);
    sn->date_sec = rd32(h + 16);
    sn->date_nsec = rd32(h + 20);
    sn->vm_clock_nsec = rd64(h + 24);
    sn->vm_state_size = rd32(h + 32);
    extra = rd32(h + 36);
    sn->extra_data_size = extra;
    *pos += SNAP_HEADER_LEN;
    if (extra > QCOW2_MAX_SNAPSHOT_EXTRA) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "Too much extra metadata in snapshot table entry %u", i);
        return -EFBIG;
    }
    if (*pos + extra + id_len + name_len > table_end) {
        goto past_end;
    }
    ret = table_read(r, *pos, MIN(extra, (uint32_t)SNAP_EXTRA_KNOWN), known);
    if (ret < 0) {
        return ret;
    }
    if (extra >= 8) {
        sn->vm_state_size = rd64(known);
    }
    sn->disk_size = extra >= 16 ? rd64(known + 8) : s->size;
    sn->icount = extra >= 24 ? rd64(known + 16) : UINT64_MAX;
    if (extra > SNAP_EXTRA_KNOWN) {
        sn->unknown_extra_size = extra - SNAP_EXTRA_KNOWN;
        sn->unknown_extra = g_malloc(sn->unknown_extra_size);
        ret = table_read(r, *pos + SNAP_EXTRA_KNOWN, sn->unknown_extra_size,
                         sn->unknown_extra);
        if (ret < 0) {
            return ret;
        }
    }
    *pos += extra;
    sn->id_str = g_malloc0(id_len + 1);
    sn->name = g_malloc0(name_len + 1);
    ret = table_read(r, *pos, id_len, sn->id_str);
    if (ret == 0) {
        ret = table_read(r, *pos + id_len, name_len, sn->name);
    }
    if (ret < 0) {
        return ret;
    }
    *pos += id_len + name_len;
    return 0;

past_end:
    g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                "Snapshot table entry %u extends past the end of the file", i);
    return -EINVAL;
}

typedef struct Range {
    uint64_t start, len;
    const char *what;
    uint32_t sn;       /* snapshot number + 1; 0: not a snapshot L1 */
} Range;

/* Whole clusters of [start, start+len), if len is not 0. */
static void add_range(Range *r, size_t *n, uint64_t cs, uint64_t start,
                      uint64_t len, const char *what, uint32_t sn)
{
    if (len == 0) {
        return;
    }
    r[*n].start = start / cs * cs;
    r[*n].len = qcow2_align_up(start % cs + len, cs);
    r[*n].what = what;
    r[*n].sn = sn;
    (*n)++;
}

static int range_cmp(const void *a, const void *b)
{
    const Range *x = a, *y = b;

    return x->start < y->start ? -1 : x->start > y->start;
}

/*
 * The metadata a snapshot table points at must not overlap the header,
 * the refcount table, the active L1 table, the snapshot table itself or
 * another snapshot's L1 table: deleting one snapshot would free clusters
 * another structure still uses.
 */
static int check_overlaps(BlockDriverState *bs, GError **errp)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t cs = s->cluster_size;
    g_autofree Range *r = g_new(Range, (size_t)s->nb_snapshots + 4);
    size_t n = 0;

    add_range(r, &n, cs, 0, cs, "the image header", 0);
    add_range(r, &n, cs, s->refcount_table_offset,
              (uint64_t)s->refcount_table_size * 8,
              "the reference count table", 0);
    add_range(r, &n, cs, s->l1_table_offset, (uint64_t)s->l1_size * 8,
              "the active L1 table", 0);
    add_range(r, &n, cs, s->snapshots_offset, s->snapshots_size,
              "the snapshot table", 0);
    for (uint32_t i = 0; i < s->nb_snapshots; i++) {
        add_range(r, &n, cs, s->snapshots[i].l1_table_offset,
                  (uint64_t)s->snapshots[i].l1_size * 8,
                  "a snapshot L1 table", i + 1);
    }
    qsort(r, n, sizeof(*r), range_cmp);
    for (size_t i = 1; i < n; i++) {
        if (r[i].start < r[i - 1].start + r[i - 1].len) {
            const Range *a = r[i - 1].sn ? &r[i - 1] : &r[i];
            const Range *b = a == &r[i] ? &r[i - 1] : &r[i];
            if (!a->sn) {
                /* two structures of the header: not ours to report */
                continue;
            }
            g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                        "Snapshot %u (%s): its L1 table at %#" G_GINT64_MODIFIER
                        "x overlaps %s", a->sn, s->snapshots[a->sn - 1].name,
                        a->start, b->sn ? "another snapshot's L1 table"
                                        : b->what);
            return -EINVAL;
        }
    }
    return 0;
}

int qcow2_read_snapshots(BlockDriverState *bs, GError **errp)
{
    BDRVQcow2State *s = bs->opaque;
    int64_t file_len = bdrv_getlength(bs->file);
    /* Where each snapshot's L1 lies matters only to what changes the
     * image: check reports bad placements itself (as QEMU's does), and a
     * read-only open still reads the active image and lists the table; a
     * snapshot whose L1 is bad is refused when it is loaded. */
    bool check_l1s = !(bs->open_flags & BDRV_O_CHECK) &&
                     (bs->open_flags & BDRV_O_RDWR);
    uint64_t file_end, table_end, pos;
    g_autofree TableReader *r = g_new0(TableReader, 1);
    int ret = 0;

    s->snapshots_size = 0;
    if (s->nb_snapshots == 0) {
        return 0;
    }
    if (file_len < 0) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_IO,
                    "Could not determine file size: %s",
                    g_strerror(-file_len));
        return (int)file_len;
    }
    file_end = qcow2_align_up(file_len, s->cluster_size);
    table_end = MIN(file_end, s->snapshots_offset +
                    QCOW2_MAX_SNAPSHOT_TABLE_BYTES + 0ULL);
    r->bs = bs;
    r->win_len = 0;
    s->snapshots = g_new0(Qcow2Snapshot, s->nb_snapshots);
    pos = s->snapshots_offset;
    for (uint32_t i = 0; i < s->nb_snapshots; i++) {
        Qcow2Snapshot *sn = &s->snapshots[i];
        ret = read_one(s, r, &pos, table_end, i, sn, errp);
        if (ret < 0) {
            if (errp && !*errp) {
                g_set_error(errp, BDRV_ERROR, BDRV_ERROR_IO,
                            "Could not read the snapshot table: %s",
                            g_strerror(-ret));
            }
            break;
        }
        if (pos - s->snapshots_offset > QCOW2_MAX_SNAPSHOT_TABLE_BYTES) {
            g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                        "Snapshot table is too big");
            ret = -EFBIG;
            break;
        }
        if (check_l1s) {
            ret = snapshot_l1_check(s, sn, file_end, errp);
            if (ret < 0) {
                g_prefix_error(errp, "Snapshot %u (%s): ", i + 1, sn->name);
                break;
            }
        }
    }
    if (ret == 0) {
        s->snapshots_size = pos - s->snapshots_offset;
        if (check_l1s) {
            ret = check_overlaps(bs, errp);
        }
    }
    if (ret < 0) {
        qcow2_free_snapshots(s);
        s->snapshots_size = 0;
        return ret;
    }
    return 0;
}

/* ---------------------------------------------------------------------- */
/* Writing a table */

static uint32_t entry_extra(const Qcow2Snapshot *sn)
{
    return SNAP_EXTRA_KNOWN + sn->unknown_extra_size;
}

/* Bytes of the table: entries 8-byte aligned, the last one unpadded. */
static uint64_t table_bytes(const Qcow2Snapshot *sn, uint32_t nb)
{
    uint64_t pos = 0;

    for (uint32_t i = 0; i < nb; i++) {
        pos = qcow2_align_up(pos, 8);
        pos += SNAP_HEADER_LEN + entry_extra(&sn[i]) + strlen(sn[i].id_str) +
               strlen(sn[i].name);
    }
    return pos;
}

static void table_serialize(const Qcow2Snapshot *sn, uint32_t nb,
                            uint8_t *buf)
{
    uint64_t pos = 0;

    for (uint32_t i = 0; i < nb; i++) {
        const Qcow2Snapshot *e = &sn[i];
        size_t id_len = strlen(e->id_str), name_len = strlen(e->name);
        uint8_t *p;

        pos = qcow2_align_up(pos, 8);
        p = buf + pos;
        wr64(p, e->l1_table_offset);
        wr32(p + 8, e->l1_size);
        wr16(p + 12, id_len);
        wr16(p + 14, name_len);
        wr32(p + 16, e->date_sec);
        wr32(p + 20, e->date_nsec);
        wr64(p + 24, e->vm_clock_nsec);
        /* old readers see a disk-only snapshot if the size needs 64 bits */
        wr32(p + 32, e->vm_state_size > UINT32_MAX ? 0 : e->vm_state_size);
        wr32(p + 36, entry_extra(e));
        wr64(p + 40, e->vm_state_size);
        wr64(p + 48, e->disk_size);
        wr64(p + 56, e->icount);
        p += SNAP_HEADER_LEN + SNAP_EXTRA_KNOWN;
        if (e->unknown_extra_size) {
            memcpy(p, e->unknown_extra, e->unknown_extra_size);
            p += e->unknown_extra_size;
        }
        memcpy(p, e->id_str, id_len);
        memcpy(p + id_len, e->name, name_len);
        pos += SNAP_HEADER_LEN + entry_extra(e) + id_len + name_len;
    }
}

static uint64_t clusters_for(BDRVQcow2State *s, uint64_t bytes)
{
    return qcow2_align_up(bytes, s->cluster_size) >> s->cluster_bits;
}

/* Allocates clusters for `bytes` (0: none, offset 0). */
static int64_t alloc_bytes(BlockDriverState *bs, uint64_t bytes)
{
    BDRVQcow2State *s = bs->opaque;

    if (bytes == 0) {
        return 0;
    }
    return qcow2_alloc_clusters(bs, clusters_for(s, bytes));
}

/* The refcounts of new clusters are durable before anything points at
 * them. */
static int sync_refcounts(BlockDriverState *bs)
{
    BDRVQcow2State *s = bs->opaque;
    int ret = qcow2_cache_write(bs, s->refcount_cache);

    if (ret == 0) {
        ret = bdrv_flush(bs->file);
    }
    return ret;
}

/*
 * Writes a table to new clusters and makes it durable with the refcounts
 * of its clusters.  Nothing points at it yet; on failure its clusters are
 * given back.
 */
static int write_new_table(BlockDriverState *bs, const Qcow2Snapshot *sn,
                           uint32_t nb, uint64_t *offset, uint64_t *size,
                           GError **errp)
{
    uint64_t bytes = table_bytes(sn, nb);
    g_autofree uint8_t *buf = NULL;
    int64_t off;
    int ret;

    *offset = *size = 0;
    if (bytes > QCOW2_MAX_SNAPSHOT_TABLE_BYTES) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "The snapshot table would be too big (%" G_GUINT64_FORMAT
                    " bytes; at most %d are allowed)", bytes,
                    QCOW2_MAX_SNAPSHOT_TABLE_BYTES);
        return -EFBIG;
    }
    if (nb == 0) {
        return 0;
    }
    buf = g_try_malloc0(bytes);
    if (!buf) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "Could not allocate memory for the snapshot table");
        return -ENOMEM;
    }
    table_serialize(sn, nb, buf);
    off = alloc_bytes(bs, bytes);
    if (off < 0) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_IO,
                    "Could not allocate clusters for the snapshot table: %s",
                    g_strerror(-off));
        return (int)off;
    }
    bdrv_debug_event(bs->file, "snapshot_table_write");
    ret = qcow2_overlap_pwrite(bs, 0, off, bytes, buf); /* overlap check */
    if (ret == 0) {
        ret = sync_refcounts(bs);
    }
    if (ret < 0) {
        qcow2_free_unreferenced(bs, off, bytes);
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_IO,
                    "Could not write the snapshot table: %s",
                    g_strerror(-ret));
        return ret;
    }
    *offset = off;
    *size = bytes;
    return 0;
}

static int write_table_header(BlockDriverState *bs, uint32_t nb,
                              uint64_t offset)
{
    uint8_t hdr[12];

    wr32(hdr, nb);
    wr64(hdr + 4, offset);
    bdrv_debug_event(bs->file, "snapshot_header_update");
    return qcow2_write_header_bytes(bs, QCOW2_HDR_SNAPSHOTS_OFF, hdr, 12);
}

/* Size and active L1 switch together in one write (bytes 24..47; the
 * encryption method in between is 0: encrypted images are not opened). */
static int write_active_header(BlockDriverState *bs, uint64_t size,
                               uint32_t l1_size, uint64_t l1_offset)
{
    uint8_t hdr[24];

    wr64(hdr, size);
    wr32(hdr + 8, 0);
    wr32(hdr + 12, l1_size);
    wr64(hdr + 16, l1_offset);
    bdrv_debug_event(bs->file, "snapshot_header_update");
    return qcow2_write_header_bytes(bs, QCOW2_HDR_SIZE_OFF, hdr, 24);
}

/* Reads a snapshot's L1 into an array of at least min_size entries
 * (zero-padded) and checks every entry. */
static int read_snapshot_l1(BlockDriverState *bs, const Qcow2Snapshot *sn,
                            uint32_t min_size, uint64_t **out,
                            uint32_t *out_size, GError **errp)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t file_end = file_end_of(bs);
    uint32_t n = MAX(sn->l1_size, min_size);
    g_autofree uint64_t *l1 = NULL;
    int ret;

    ret = snapshot_l1_check(s, sn, file_end, errp);
    if (ret < 0) {
        return ret;
    }
    l1 = g_try_new0(uint64_t, MAX(n, 1));
    if (!l1) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "Could not allocate memory for the snapshot L1 table");
        return -ENOMEM;
    }
    if (sn->l1_size) {
        ret = bdrv_pread(bs->file, sn->l1_table_offset,
                         (int64_t)sn->l1_size * 8, l1);
        if (ret < 0) {
            g_set_error(errp, BDRV_ERROR, BDRV_ERROR_IO,
                        "Could not read the snapshot L1 table: %s",
                        g_strerror(-ret));
            return ret;
        }
    }
    for (uint32_t i = 0; i < sn->l1_size; i++) {
        uint64_t e = GUINT64_FROM_BE(l1[i]), off = e & L1E_OFFSET_MASK;
        if ((e & L1E_RESERVED_MASK) || (off & (s->cluster_size - 1)) ||
            off >= file_end) {
            g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                        "Snapshot L1 table entry %u is invalid: %#"
                        G_GINT64_MODIFIER "x", i, e);
            return -EINVAL;
        }
        l1[i] = off;   /* COPIED is recomputed for whoever uses it */
    }
    *out = g_steal_pointer(&l1);
    *out_size = n;
    return 0;
}

/* ---------------------------------------------------------------------- */
/* Operations */

typedef enum { OP_CREATE, OP_DELETE, OP_GOTO } OpKind;

typedef struct Qcow2SnapshotOp {
    OpKind kind;
    bool published;
    /* a failed header write could not be undone: the header may show the
     * new state, so nothing it could point at may be freed */
    bool header_unknown;

    /* create, delete: the table replaced (its header values, and the
     * clusters to free after publishing) and the new one.  While the op
     * is published, `table` holds the array that was published before. */
    uint32_t old_nb;
    uint64_t old_offset, old_size;
    Qcow2Snapshot *table;
    uint32_t nb;
    uint64_t offset, size;

    /* the tree released by undo (create, goto) or by cleanup (delete):
     * its L1 entries and the clusters of its own L1 table */
    uint64_t *tree_l1;
    uint32_t tree_l1_size;
    uint64_t tree_l1_offset;

    /* goto: the new active state; swapped with the old one on publish */
    uint64_t *l1;
    uint32_t l1_size;
    uint64_t l1_offset;
    uint64_t disk_size;
} Qcow2SnapshotOp;

static void op_free(Qcow2SnapshotOp *op)
{
    snapshots_free(op->table, op->nb);
    g_free(op->tree_l1);
    g_free(op->l1);
    g_free(op);
}

static void lock(BDRVQcow2State *s)
{
    g_rw_lock_writer_lock(&s->free_lock);
    g_mutex_lock(&s->lock);
}

static void unlock(BDRVQcow2State *s)
{
    g_mutex_unlock(&s->lock);
    g_rw_lock_writer_unlock(&s->free_lock);
}

static bool goto_pending(BDRVQcow2State *s)
{
    for (guint i = 0; s->snapshot_ops && i < s->snapshot_ops->len; i++) {
        Qcow2SnapshotOp *op = g_ptr_array_index(s->snapshot_ops, i);
        if (op->kind == OP_GOTO) {
            return true;
        }
    }
    return false;
}

/* The table as the next operation sees it: the newest prepared one. */
static void view(BDRVQcow2State *s, const Qcow2Snapshot **sn, uint32_t *nb,
                 uint64_t *offset, uint64_t *size)
{
    for (guint i = s->snapshot_ops ? s->snapshot_ops->len : 0; i > 0; i--) {
        Qcow2SnapshotOp *op = g_ptr_array_index(s->snapshot_ops, i - 1);
        if (op->kind != OP_GOTO && !op->published) {
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
    g_ptr_array_remove(s->snapshot_ops, op);
    if (s->snapshot_ops->len == 0) {
        g_ptr_array_free(s->snapshot_ops, TRUE);
        s->snapshot_ops = NULL;
    }
}

static void to_info(const Qcow2Snapshot *sn, BdrvSnapshotInfo *info)
{
    info->id_str = g_strdup(sn->id_str);
    info->name = g_strdup(sn->name);
    info->vm_state_size = sn->vm_state_size;
    info->date_sec = sn->date_sec;
    info->date_nsec = sn->date_nsec;
    info->vm_clock_nsec = sn->vm_clock_nsec;
    info->icount = sn->icount;
    info->disk_size = sn->disk_size;
}

static int find_entry(const Qcow2Snapshot *sn, uint32_t nb, const char *id,
                      const char *name)
{
    for (uint32_t i = 0; i < nb; i++) {
        if ((!id || !strcmp(sn[i].id_str, id)) &&
            (!name || !strcmp(sn[i].name, name))) {
            return (int)i;
        }
    }
    return -1;
}

static void not_found(const char *id, const char *name, GError **errp)
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

/* QEMU's rule: one more than the highest numeric ID (strtoul). */
static char *next_id(const Qcow2Snapshot *sn, uint32_t nb)
{
    unsigned long max = 0;

    for (uint32_t i = 0; i < nb; i++) {
        unsigned long v = strtoul(sn[i].id_str, NULL, 10);
        max = MAX(max, v);
    }
    return g_strdup_printf("%lu", max + 1);
}

static int pending_conflict(BDRVQcow2State *s, bool is_goto, GError **errp)
{
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

static int start(BlockDriverState *bs, GError **errp)
{
    int ret = qcow2_write_back_metadata(bs);

    if (ret < 0) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_IO,
                    "Could not write back metadata: %s", g_strerror(-ret));
    }
    return ret;
}

int qcow2_snapshot_create_prepare(BlockDriverState *bs,
                                  const BdrvSnapshotInfo *tmpl, int flags,
                                  BdrvSnapshotInfo *info, void **opp,
                                  GError **errp)
{
    BDRVQcow2State *s = bs->opaque;
    const Qcow2Snapshot *cur;
    uint32_t nb;
    uint64_t cur_offset, cur_size;
    Qcow2SnapshotOp *op = NULL;
    Qcow2Snapshot *sn;
    uint64_t l1_bytes = (uint64_t)s->l1_size * 8;
    int64_t copy_off = 0;
    bool refs_taken = false;
    int ret;

    if (tmpl->vm_state_size) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_NOT_SUPPORTED,
                    "Snapshots with VM state are not supported");
        return -ENOTSUP;
    }
    lock(s);
    ret = pending_conflict(s, false, errp);
    if (ret < 0) {
        goto out;
    }
    view(s, &cur, &nb, &cur_offset, &cur_size);
    if (nb >= QCOW2_MAX_SNAPSHOTS) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "Too many snapshots: an image holds at most %d",
                    QCOW2_MAX_SNAPSHOTS);
        ret = -EFBIG;
        goto out;
    }
    if (!(flags & BDRV_SNAPSHOT_ALLOW_DUPLICATE) &&
        find_entry(cur, nb, NULL, tmpl->name) >= 0) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "Snapshot with name '%s' already exists", tmpl->name);
        ret = -EEXIST;
        goto out;
    }
    ret = start(bs, errp);
    if (ret < 0) {
        goto out;
    }

    op = g_new0(Qcow2SnapshotOp, 1);
    op->kind = OP_CREATE;
    op->old_nb = nb;
    op->old_offset = cur_offset;
    op->old_size = cur_size;
    op->table = snapshots_dup(cur, nb, 1);
    op->nb = nb + 1;
    sn = &op->table[nb];
    sn->id_str = next_id(cur, nb);
    sn->name = g_strdup(tmpl->name);
    if (tmpl->date_sec || tmpl->date_nsec) {
        sn->date_sec = tmpl->date_sec;
        sn->date_nsec = tmpl->date_nsec;
    } else {
        int64_t now = g_get_real_time();
        sn->date_sec = now / G_USEC_PER_SEC;
        sn->date_nsec = (now % G_USEC_PER_SEC) * 1000;
    }
    sn->vm_clock_nsec = tmpl->vm_clock_nsec;
    sn->icount = tmpl->icount;
    sn->disk_size = s->size;
    sn->extra_data_size = SNAP_EXTRA_KNOWN;
    /* what the table needs must fit before anything is allocated */
    if (table_bytes(op->table, op->nb) > QCOW2_MAX_SNAPSHOT_TABLE_BYTES) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "The snapshot table would be too big (more than %d "
                    "bytes)", QCOW2_MAX_SNAPSHOT_TABLE_BYTES);
        ret = -EFBIG;
        goto fail;
    }

    /* 1. clusters for the copy of the active L1 */
    copy_off = alloc_bytes(bs, l1_bytes);
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
    ret = sync_refcounts(bs);
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
    ret = write_new_table(bs, op->table, op->nb, &op->offset, &op->size, errp);
    if (ret < 0) {
        goto fail;
    }
    to_info(sn, info);
    push_op(s, op);
    *opp = op;
    goto out;

fail:
    if (refs_taken) {
        g_autoptr(GError) err = NULL;
        if (qcow2_tree_release(bs, op->tree_l1, op->tree_l1_size, copy_off,
                               &err) < 0) {
            strata_error("qcow2: undoing the snapshot failed (clusters "
                    "leak): %s", err->message);
        }
    } else {
        qcow2_free_unreferenced(bs, copy_off, l1_bytes);
        qcow2_cache_write(bs, s->refcount_cache);
    }
    op_free(op);
out:
    unlock(s);
    return ret;
}

int qcow2_snapshot_delete_prepare(BlockDriverState *bs, const char *id,
                                  const char *name, BdrvSnapshotInfo *info,
                                  void **opp, GError **errp)
{
    BDRVQcow2State *s = bs->opaque;
    const Qcow2Snapshot *cur;
    uint32_t nb;
    uint64_t cur_offset, cur_size;
    Qcow2SnapshotOp *op;
    int idx, ret;

    lock(s);
    ret = pending_conflict(s, false, errp);
    if (ret < 0) {
        goto out;
    }
    view(s, &cur, &nb, &cur_offset, &cur_size);
    idx = find_entry(cur, nb, id, name);
    if (idx < 0) {
        not_found(id, name, errp);
        ret = -ENOENT;
        goto out;
    }
    op = g_new0(Qcow2SnapshotOp, 1);
    op->kind = OP_DELETE;
    /* nothing changes if the snapshot's L1 is unusable */
    ret = read_snapshot_l1(bs, &cur[idx], 0, &op->tree_l1, &op->tree_l1_size,
                           errp);
    if (ret == 0) {
        ret = start(bs, errp);
    }
    if (ret < 0) {
        op_free(op);
        goto out;
    }
    op->tree_l1_offset = cur[idx].l1_table_offset;
    op->old_nb = nb;
    op->old_offset = cur_offset;
    op->old_size = cur_size;
    op->table = g_new0(Qcow2Snapshot, nb);
    for (uint32_t i = 0, j = 0; i < nb; i++) {
        if ((int)i != idx) {
            snapshot_copy(&op->table[j++], &cur[i]);
        }
    }
    op->nb = nb - 1;
    ret = write_new_table(bs, op->table, op->nb, &op->offset, &op->size, errp);
    if (ret < 0) {
        op_free(op);
        goto out;
    }
    to_info(&cur[idx], info);
    push_op(s, op);
    *opp = op;
out:
    unlock(s);
    return ret;
}

int qcow2_snapshot_goto_prepare(BlockDriverState *bs, const char *id,
                                const char *name, BdrvSnapshotInfo *info,
                                void **opp, GError **errp)
{
    BDRVQcow2State *s = bs->opaque;
    Qcow2SnapshotOp *op = NULL;
    const Qcow2Snapshot *sn;
    uint64_t needed;
    int64_t l1_off = 0;
    bool refs_taken = false;
    int idx, ret;

    lock(s);
    ret = pending_conflict(s, true, errp);
    if (ret < 0) {
        goto out;
    }
    idx = find_entry(s->snapshots, s->nb_snapshots, id, name);
    if (idx < 0) {
        not_found(id, name, errp);
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
    ret = read_snapshot_l1(bs, sn, needed, &op->l1, &op->l1_size, errp);
    if (ret == 0) {
        ret = start(bs, errp);
    }
    if (ret < 0) {
        goto fail;
    }

    /* 1. the snapshot's tree gains the new active image as owner */
    ret = qcow2_tree_ref(bs, op->l1, op->l1_size, errp);
    if (ret < 0) {
        goto fail;
    }
    refs_taken = true;
    ret = sync_refcounts(bs);
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
    l1_off = alloc_bytes(bs, (uint64_t)op->l1_size * 8);
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
        ret = sync_refcounts(bs);
    }
    if (ret < 0) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_IO,
                    "Could not write the L1 or L2 tables: %s",
                    g_strerror(-ret));
        goto fail;
    }
    op->l1_offset = l1_off;
    to_info(sn, info);
    push_op(s, op);
    *opp = op;
    goto out;

fail:
    if (refs_taken) {
        g_autoptr(GError) err = NULL;
        if (qcow2_tree_release(bs, op->l1, op->l1_size, l1_off, &err) < 0) {
            strata_error("qcow2: undoing the snapshot apply failed "
                    "(clusters leak): %s", err->message);
        }
    }
    if (op) {
        op_free(op);
    }
out:
    unlock(s);
    return ret;
}

static void swap_table(BDRVQcow2State *s, Qcow2SnapshotOp *op)
{
    Qcow2Snapshot *t = s->snapshots;
    uint32_t nb = s->nb_snapshots;
    uint64_t off = s->snapshots_offset, size = s->snapshots_size;

    s->snapshots = op->table;
    s->nb_snapshots = op->nb;
    s->snapshots_offset = op->offset;
    s->snapshots_size = op->size;
    op->table = t;
    op->nb = nb;
    op->offset = off;
    op->size = size;
}

static void swap_active(BDRVQcow2State *s, Qcow2SnapshotOp *op)
{
    uint64_t *l1 = s->l1_table;
    uint32_t l1_size = s->l1_size;
    uint64_t l1_off = s->l1_table_offset, size = s->size;

    s->l1_table = op->l1;
    s->l1_size = op->l1_size;
    s->l1_table_offset = op->l1_offset;
    s->size = op->disk_size;
    op->l1 = l1;
    op->l1_size = l1_size;
    op->l1_offset = l1_off;
    op->disk_size = size;
}

/* The header as it is (published: the op's new state) or as it was. */
static int write_header_state(BlockDriverState *bs, Qcow2SnapshotOp *op,
                              bool new_state)
{
    BDRVQcow2State *s = bs->opaque;

    if (op->kind == OP_GOTO) {
        /* before publish the op holds the new state, after it the old */
        if (new_state == op->published) {
            return write_active_header(bs, s->size, s->l1_size,
                                       s->l1_table_offset);
        }
        return write_active_header(bs, op->disk_size, op->l1_size,
                                   op->l1_offset);
    }
    if (new_state) {
        return write_table_header(bs, op->published ? s->nb_snapshots : op->nb,
                                  op->published ? s->snapshots_offset
                                                : op->offset);
    }
    return write_table_header(bs, op->old_nb, op->old_offset);
}

/* Switches the header; on failure tries to put the old one back, and if
 * even that fails marks the header as unknown. */
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
    op->published = to_new;
    return 0;
}

int qcow2_snapshot_publish(BlockDriverState *bs, void *opaque, GError **errp)
{
    BDRVQcow2State *s = bs->opaque;
    Qcow2SnapshotOp *op = opaque;
    int ret;

    lock(s);
    g_assert(!op->published);
    ret = switch_header(bs, op, true, errp);
    unlock(s);
    return ret;
}

int qcow2_snapshot_unpublish(BlockDriverState *bs, void *opaque,
                             GError **errp)
{
    BDRVQcow2State *s = bs->opaque;
    Qcow2SnapshotOp *op = opaque;
    int ret;

    lock(s);
    g_assert(op->published);
    ret = switch_header(bs, op, false, errp);
    unlock(s);
    return ret;
}

int qcow2_snapshot_undo(BlockDriverState *bs, void *opaque, GError **errp)
{
    BDRVQcow2State *s = bs->opaque;
    Qcow2SnapshotOp *op = opaque;
    int ret = 0;

    lock(s);
    if (op->published) {
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
        ret = qcow2_tree_release(bs, op->tree_l1, op->tree_l1_size,
                                 op->tree_l1_offset, errp);
        qcow2_free_unreferenced(bs, op->offset, op->size);
        break;
    case OP_DELETE:
        ret = qcow2_free_unreferenced(bs, op->offset, op->size);
        break;
    case OP_GOTO:
        ret = qcow2_tree_release(bs, op->l1, op->l1_size, op->l1_offset, errp);
        break;
    }
    if (ret == 0) {
        ret = sync_refcounts(bs);
    }
    if (ret < 0 && errp && !*errp) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_IO,
                    "Could not free the clusters: %s", g_strerror(-ret));
    }
out:
    pop_op(s, op);
    op_free(op);
    unlock(s);
    return ret;
}

int qcow2_snapshot_cleanup(BlockDriverState *bs, void *opaque, GError **errp)
{
    BDRVQcow2State *s = bs->opaque;
    Qcow2SnapshotOp *op = opaque;
    int ret = 0;

    lock(s);
    g_assert(op->published);
    if (op->kind != OP_GOTO) {
        ret = qcow2_free_unreferenced(bs, op->old_offset, op->old_size);
    }
    if (ret == 0 && op->kind == OP_DELETE) {
        ret = qcow2_tree_release(bs, op->tree_l1, op->tree_l1_size,
                                 op->tree_l1_offset, errp);
    } else if (ret == 0 && op->kind == OP_GOTO) {
        /* after publishing, op->l1 is the old active table */
        ret = qcow2_tree_release(bs, op->l1, op->l1_size, op->l1_offset, errp);
    }
    if (ret == 0) {
        ret = sync_refcounts(bs);
    }
    if (ret < 0 && errp && !*errp) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_IO,
                    "Could not free the clusters: %s", g_strerror(-ret));
    }
    pop_op(s, op);
    op_free(op);
    unlock(s);
    return ret;
}

void qcow2_snapshot_close(BlockDriverState *bs)
{
    BDRVQcow2State *s = bs->opaque;

    while (s->snapshot_ops) {
        Qcow2SnapshotOp *op = g_ptr_array_index(s->snapshot_ops,
                                                s->snapshot_ops->len - 1);
        if (op->published) {
            qcow2_snapshot_cleanup(bs, op, NULL);
        } else {
            qcow2_snapshot_undo(bs, op, NULL);
        }
    }
}

/* ---------------------------------------------------------------------- */
/* Check */

int qcow2_snapshot_check_table(BlockDriverState *bs, BdrvCheckResult *res,
                               BdrvCheckMode fix)
{
    BDRVQcow2State *s = bs->opaque;
    bool repair = (fix & BDRV_FIX_ERRORS) && !bs->read_only &&
                  !s->snapshot_ops;
    uint32_t bad = 0;
    uint64_t off, size, old_off = s->snapshots_offset;
    uint64_t old_size = s->snapshots_size;
    g_autoptr(GError) err = NULL;
    int ret;

    if (s->version < 3) {
        return 0;
    }
    for (uint32_t i = 0; i < s->nb_snapshots; i++) {
        if (s->snapshots[i].extra_data_size < 16) {
            strata_error("%s snapshot table entry %u is incomplete",
                    repair ? "Repairing" : "ERROR", i);
            bad++;
        }
    }
    if (!bad) {
        return 0;
    }
    if (!repair) {
        res->corruptions += bad;
        return 0;
    }
    /* every entry is written with the full 24 bytes (disk size as read:
     * the current size; no icount), like QEMU's repair */
    ret = write_new_table(bs, s->snapshots, s->nb_snapshots, &off, &size,
                          &err);
    if (ret == 0) {
        ret = write_table_header(bs, s->nb_snapshots, off);
        if (ret < 0) {
            qcow2_free_unreferenced(bs, off, size);
        }
    }
    if (ret < 0) {
        strata_error("ERROR could not rewrite the snapshot table: %s",
                err ? err->message : g_strerror(-ret));
        res->corruptions += bad;
        return 0;
    }
    s->snapshots_offset = off;
    s->snapshots_size = size;
    for (uint32_t i = 0; i < s->nb_snapshots; i++) {
        s->snapshots[i].extra_data_size =
            MAX(s->snapshots[i].extra_data_size, SNAP_EXTRA_KNOWN);
    }
    qcow2_free_unreferenced(bs, old_off, old_size);
    res->corruptions_fixed += bad;
    return 0;
}

/* ---------------------------------------------------------------------- */
/* List and temporary load */

int qcow2_snapshot_list(BlockDriverState *bs, BdrvSnapshotInfo **list,
                        GError **errp)
{
    BDRVQcow2State *s = bs->opaque;
    BdrvSnapshotInfo *l;
    int n;

    g_mutex_lock(&s->lock);
    n = (int)s->nb_snapshots;
    l = g_new0(BdrvSnapshotInfo, MAX(n, 1));
    for (int i = 0; i < n; i++) {
        to_info(&s->snapshots[i], &l[i]);
    }
    g_mutex_unlock(&s->lock);
    *list = l;
    return n;
}

int qcow2_snapshot_load_tmp(BlockDriverState *bs, const char *id,
                            const char *name, GError **errp)
{
    BDRVQcow2State *s = bs->opaque;
    const Qcow2Snapshot *sn;
    uint64_t *l1 = NULL;
    uint32_t l1_size;
    int idx, ret;

    if (!bs->read_only) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "Device is not readonly");
        return -EINVAL;
    }
    lock(s);
    idx = find_entry(s->snapshots, s->nb_snapshots, id, name);
    if (idx < 0) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_NOT_FOUND,
                    "Can't find snapshot");
        ret = -ENOENT;
        goto out;
    }
    sn = &s->snapshots[idx];
    if (sn->disk_size > (uint64_t)INT64_MAX - s->cluster_size ||
        qcow2_l1_entries_for(s, sn->disk_size) > QCOW2_MAX_L1_BYTES / 8) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "Snapshot '%s' records an invalid disk size", sn->name);
        ret = -EINVAL;
        goto out;
    }
    ret = read_snapshot_l1(bs, sn, qcow2_l1_entries_for(s, sn->disk_size),
                           &l1, &l1_size, errp);
    if (ret < 0) {
        goto out;
    }
    g_free(s->l1_table);
    s->l1_table = l1;
    s->l1_size = l1_size;
    s->l1_table_offset = sn->l1_table_offset;
    s->size = sn->disk_size;
    s->snapshot_loaded = true;
out:
    unlock(s);
    return ret;
}

int qcow2_snapshot_open_options(BlockDriverState *bs, BlockOpts *options,
                                int flags, GError **errp)
{
    g_autofree char *id = bdrv_opts_take(options, "snapshot.id");
    g_autofree char *name = bdrv_opts_take(options, "snapshot.name");
    int ret;

    if (!id && !name) {
        return 0;
    }
    if (flags & BDRV_O_RDWR) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "Options snapshot.id and snapshot.name need a read-only "
                    "image (read-only=on)");
        return -EINVAL;
    }
    ret = qcow2_snapshot_load_tmp(bs, id, name, errp);
    if (ret < 0) {
        g_prefix_error(errp, "Failed to load snapshot: ");
    }
    return ret;
}
