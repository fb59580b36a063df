/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The qcow2 snapshot table: reading it (through a small window, every
 * entry and every snapshot L1 placement validated, nothing trusted),
 * writing a new one to fresh clusters, the header fields whose one write
 * makes a table or an active L1 visible, reading one snapshot's L1, lookups, and the
 * check/repair of entries that lack the disk size.  The operations that
 * use all this (create, delete, apply) are in qcow2-snapshot.c.  Entry
 * layout: QEMU's docs/interop/qcow2.txt, "Snapshots".
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "qcow2.h"
#include "byteorder.h"
#include "qcow2-snapshot.h"
#include "block/log.h"

#define SNAP_HEADER_LEN 40
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

void qcow2_sn_clear(Qcow2Snapshot *sn)
{
    g_free(sn->id_str);
    g_free(sn->name);
    g_free(sn->unknown_extra);
    memset(sn, 0, sizeof(*sn));
}

void qcow2_sn_free_array(Qcow2Snapshot *sn, uint32_t nb)
{
    for (uint32_t i = 0; sn && i < nb; i++) {
        qcow2_sn_clear(&sn[i]);
    }
    g_free(sn);
}

void qcow2_sn_copy(Qcow2Snapshot *dst, const Qcow2Snapshot *src)
{
    *dst = *src;
    dst->id_str = g_strdup(src->id_str);
    dst->name = g_strdup(src->name);
    dst->unknown_extra = src->unknown_extra_size ?
        g_memdup2(src->unknown_extra, src->unknown_extra_size) : NULL;
}

/* A copy of nb entries with room for `spare` more. */
Qcow2Snapshot *qcow2_sn_dup_array(const Qcow2Snapshot *sn, uint32_t nb,
                                    uint32_t spare)
{
    Qcow2Snapshot *d = g_new0(Qcow2Snapshot, (size_t)nb + spare + 1);

    for (uint32_t i = 0; i < nb; i++) {
        qcow2_sn_copy(&d[i], &sn[i]);
    }
    return d;
}

void qcow2_free_snapshots(BDRVQcow2State *s)
{
    qcow2_sn_free_array(s->snapshots, s->nb_snapshots);
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

#define HINT_EXTRA "You can force-remove this extra metadata with qemu-img " \
                   "check -r all"
#define HINT_OVERHANG "You can force-remove all %u overhanging snapshots " \
                      "with qemu-img check -r all"
/* strata's own (QEMU reads such entries as zeroes): a truncated file */
#define HINT_PAST_END "You can force-remove all %u snapshots past the end " \
                      "of the file with qemu-img check -r all"

/* What check without -r all says of a table that an open for repair kept
 * only in part: QEMU's first complaint, the hint included. */
static void note_damage(BDRVQcow2State *s, char *text)
{
    if (s->sn_damage) {
        g_free(text);
        return;
    }
    s->sn_damage = text;
}

/* read_one()'s answer, for an open that tolerates damage, when entry i
 * does not lie inside the file (not an errno: an I/O error never drops
 * entries) */
#define SN_PAST_END 1

/*
 * Reads entry i at *pos and moves *pos past it on disk; *len grows by the
 * entry's length once any extra data over the limit is cut (QEMU's
 * measure of the table against its size limit).  A cut entry goes on after
 * all of its extra data, as QEMU's does: its ID and name are where they
 * are, and the table still covers the clusters the cut bytes lie in, so
 * check counts them until the rewritten table replaces it.
 */
static int read_one(BDRVQcow2State *s, TableReader *r, uint64_t *pos,
                    uint64_t *len, uint64_t file_end, uint32_t i,
                    Qcow2Snapshot *sn, bool tolerate, GError **errp)
{
    uint8_t h[SNAP_HEADER_LEN];
    uint8_t known[SNAP_EXTRA_KNOWN] = { 0 };
    uint16_t id_len, name_len;
    uint32_t extra, keep;
    int ret;

    *pos = qcow2_align_up(*pos, 8);
    *len = qcow2_align_up(*len, 8);
    if (*pos + SNAP_HEADER_LEN > file_end) {
        goto past_end;
    }
    ret = table_read(r, *pos, SNAP_HEADER_LEN, h);
    if (ret < 0) {
        return ret;
    }
    sn->l1_table_offset = be64_read(h);
    sn->l1_size = be32_read(h + 8);
    id_len = be16_read(h + 12);
    name_len = be16_read(h + 14);
    sn->date_sec = be32_read(h + 16);
    sn->date_nsec = be32_read(h + 20);
    sn->vm_clock_nsec = be64_read(h + 24);
    sn->vm_state_size = be32_read(h + 32);
    extra = be32_read(h + 36);
    keep = MIN(extra, (uint32_t)QCOW2_MAX_SNAPSHOT_EXTRA);
    sn->extra_data_size = keep;
    *pos += SNAP_HEADER_LEN;
    if (extra > QCOW2_MAX_SNAPSHOT_EXTRA) {
        if (!tolerate) {
            g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                        "Too much extra metadata in snapshot table entry %u"
                        "\n" HINT_EXTRA, i);
            return -EFBIG;
        }
        /* an open for repair keeps the first bytes; check rewrites it */
        note_damage(s, g_strdup_printf("ERROR failed to read the snapshot "
                                       "table: Too much extra metadata in "
                                       "snapshot table entry %u\n"
                                       HINT_EXTRA, i));
        if (s->sn_extra_cut++ < SN_CUT_LOGGED) {
            s->sn_cut_entry[s->sn_extra_cut - 1] = i;
            s->sn_cut_size[s->sn_extra_cut - 1] = extra;
        }
    }
    if (*pos + extra + id_len + name_len > file_end) {
        goto past_end;
    }
    ret = table_read(r, *pos, MIN(keep, (uint32_t)SNAP_EXTRA_KNOWN), known);
    if (ret < 0) {
        return ret;
    }
    if (keep >= 8) {
        sn->vm_state_size = be64_read(known);
    }
    sn->disk_size = keep >= 16 ? be64_read(known + 8) : s->size;
    sn->icount = keep >= 24 ? be64_read(known + 16) : UINT64_MAX;
    if (keep > SNAP_EXTRA_KNOWN) {
        sn->unknown_extra_size = keep - SNAP_EXTRA_KNOWN;
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
    *len += SNAP_HEADER_LEN + keep + id_len + name_len;
    return 0;

past_end:
    if (tolerate) {
        return SN_PAST_END; /* the caller drops it and those after it */
    }
    g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                "Snapshot table entry %u extends past the end of the file\n"
                HINT_PAST_END, i, s->nb_snapshots - i);
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

/* Entries from `first` on are dropped from memory (check drops them from
 * the header before it counts references). */
static void drop_overhanging(BDRVQcow2State *s, uint32_t first)
{
    uint32_t nb = s->nb_snapshots;

    note_damage(s, g_strdup_printf("ERROR failed to read the snapshot "
                                   "table: Snapshot table is too big\n"
                                   HINT_OVERHANG, nb - first));
    for (uint32_t j = first; j < nb; j++) {
        qcow2_sn_clear(&s->snapshots[j]);
    }
    s->sn_discarded = nb - first;
    s->nb_snapshots = first;
}

/* Entries from `first` on do not lie inside the file: the file was cut
 * short (or the table is hostile).  Their content is gone, so check -r
 * all drops them from the header, and check alone reports them. */
static void drop_past_end(BDRVQcow2State *s, uint32_t first)
{
    uint32_t nb = s->nb_snapshots;

    note_damage(s, g_strdup_printf("ERROR snapshot table entry %u extends "
                                   "past the end of the file\n"
                                   HINT_PAST_END, first, nb - first));
    for (uint32_t j = first; j < nb; j++) {
        qcow2_sn_clear(&s->snapshots[j]);
    }
    s->sn_past_end = nb - first;
    s->nb_snapshots = first;
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
    /* check opens a table it must repair (-r all) or report (QEMU's
     * "ERROR failed to read the snapshot table" and its hint); only the
     * read-write check writes anything */
    bool tolerate = bs->open_flags & BDRV_O_CHECK;
    uint64_t file_end, pos, len = 0;
    g_autofree TableReader *r = g_new0(TableReader, 1);
    int ret = 0;

    s->snapshots_size = 0;
    /* Only an open for check gets here with more entries than allowed
     * (the header refuses them otherwise): as QEMU's check, it keeps the
     * first ones, and -r all drops the rest from the header. */
    if (s->nb_snapshots > QCOW2_MAX_SNAPSHOTS) {
        uint32_t over = s->nb_snapshots - QCOW2_MAX_SNAPSHOTS;

        if (!tolerate) {
            g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                        "Snapshot table too large");
            return -EFBIG;
        }
        note_damage(s, g_strdup_printf("ERROR snapshot table too large\n"
                                       HINT_OVERHANG, over));
        s->sn_over_max = over;
        s->nb_snapshots = QCOW2_MAX_SNAPSHOTS;
    }
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
    r->bs = bs;
    r->win_len = 0;
    s->snapshots = g_new0(Qcow2Snapshot, s->nb_snapshots);
    pos = s->snapshots_offset;
    for (uint32_t i = 0; i < s->nb_snapshots; i++) {
        Qcow2Snapshot *sn = &s->snapshots[i];
        uint64_t entry_start = pos;

        ret = read_one(s, r, &pos, &len, file_end, i, sn, tolerate, errp);
        if (ret == SN_PAST_END) {
            drop_past_end(s, i);
            pos = entry_start;
            ret = 0;
            break;
        }
        if (ret < 0) {
            if (errp && !*errp) {
                g_set_error(errp, BDRV_ERROR, BDRV_ERROR_IO,
                            "Could not read the snapshot table: %s",
                            g_strerror(-ret));
            }
            break;
        }
        /* QEMU's limits: the table as it will be written (extra data
         * cut), and the bytes it spans on disk */
        if (len > QCOW2_MAX_SNAPSHOT_TABLE_BYTES ||
            pos - s->snapshots_offset > INT_MAX) {
            if (tolerate) {
                /* an open for repair keeps the entries that fit */
                drop_overhanging(s, i);
                pos = entry_start;
                break;
            }
            g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                        "Snapshot table is too big\n" HINT_OVERHANG,
                        s->nb_snapshots - i);
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

uint64_t qcow2_sn_entry_bytes(size_t id_len, size_t name_len,
                              uint32_t unknown_extra_size)
{
    return SNAP_HEADER_LEN + SNAP_EXTRA_KNOWN + unknown_extra_size + id_len +
           name_len;
}

/* Bytes of the table: entries 8-byte aligned, the last one unpadded. */
uint64_t qcow2_sn_table_bytes(const Qcow2Snapshot *sn, uint32_t nb)
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
        be64_write(p, e->l1_table_offset);
        be32_write(p + 8, e->l1_size);
        be16_write(p + 12, id_len);
        be16_write(p + 14, name_len);
        be32_write(p + 16, e->date_sec);
        be32_write(p + 20, e->date_nsec);
        be64_write(p + 24, e->vm_clock_nsec);
        /* old readers see a disk-only snapshot if the size needs 64 bits */
        be32_write(p + 32, e->vm_state_size > UINT32_MAX ? 0 : e->vm_state_size);
        be32_write(p + 36, entry_extra(e));
        be64_write(p + 40, e->vm_state_size);
        be64_write(p + 48, e->disk_size);
        be64_write(p + 56, e->icount);
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
int64_t qcow2_sn_alloc_bytes(BlockDriverState *bs, uint64_t bytes)
{
    BDRVQcow2State *s = bs->opaque;

    if (bytes == 0) {
        return 0;
    }
    return qcow2_alloc_clusters(bs, clusters_for(s, bytes));
}

/* The refcounts of new clusters are durable before anything points at
 * them. */
int qcow2_sn_sync_refcounts(BlockDriverState *bs)
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
static int write_table(BlockDriverState *bs, const Qcow2Snapshot *sn,
                       uint32_t nb, uint64_t *offset, uint64_t *size,
                       bool sync, GError **errp)
{
    uint64_t bytes = qcow2_sn_table_bytes(sn, nb);
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
    off = qcow2_sn_alloc_bytes(bs, bytes);
    if (off < 0) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_IO,
                    "Could not allocate clusters for the snapshot table: %s",
                    g_strerror(-off));
        return (int)off;
    }
    bdrv_debug_event(bs->file, "snapshot_table_write");
    ret = qcow2_overlap_pwrite(bs, 0, off, bytes, buf);
    if (ret == 0 && sync) {
        ret = qcow2_sn_sync_refcounts(bs);
    }
    if (ret < 0) {
        qcow2_free_unreferenced(bs, off, bytes, QCOW2_FREE_ALWAYS);
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_IO,
                    "Could not write the snapshot table: %s",
                    g_strerror(-ret));
        return ret;
    }
    *offset = off;
    *size = bytes;
    return 0;
}

int qcow2_sn_write_table(BlockDriverState *bs, const Qcow2Snapshot *sn,
                         uint32_t nb, uint64_t *offset, uint64_t *size,
                         GError **errp)
{
    return write_table(bs, sn, nb, offset, size, true, errp);
}

int qcow2_sn_write_table_unsynced(BlockDriverState *bs,
                                  const Qcow2Snapshot *sn, uint32_t nb,
                                  uint64_t *offset, uint64_t *size,
                                  GError **errp)
{
    return write_table(bs, sn, nb, offset, size, false, errp);
}

int qcow2_sn_write_table_at(BlockDriverState *bs, const Qcow2Snapshot *sn,
                            uint32_t nb, uint64_t offset, GError **errp)
{
    uint64_t bytes = qcow2_sn_table_bytes(sn, nb);
    g_autofree uint8_t *buf = g_try_malloc0(MAX(bytes, 1));
    int ret;

    if (!buf) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "Could not allocate memory for the snapshot table");
        return -ENOMEM;
    }
    table_serialize(sn, nb, buf);
    bdrv_debug_event(bs->file, "snapshot_table_write");
    ret = qcow2_overlap_pwrite(bs, 0, offset, bytes, buf);
    if (ret < 0) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_IO,
                    "Could not write the snapshot table: %s",
                    g_strerror(-ret));
    }
    return ret;
}

static int table_header(BlockDriverState *bs, uint32_t nb, uint64_t offset,
                        bool sync)
{
    uint8_t hdr[12];

    be32_write(hdr, nb);
    be64_write(hdr + 4, offset);
    bdrv_debug_event(bs->file, "snapshot_header_update");
    if (!sync) {
        return qcow2_overlap_pwrite(bs, QCOW2_OL_MAIN_HEADER,
                                    QCOW2_HDR_SNAPSHOTS_OFF, 12, hdr);
    }
    return qcow2_write_header_bytes(bs, QCOW2_HDR_SNAPSHOTS_OFF, hdr, 12);
}

int qcow2_sn_write_table_header(BlockDriverState *bs, uint32_t nb,
                                uint64_t offset)
{
    return table_header(bs, nb, offset, true);
}

int qcow2_sn_write_table_header_unsynced(BlockDriverState *bs, uint32_t nb,
                                         uint64_t offset)
{
    return table_header(bs, nb, offset, false);
}

/* Size and active L1 switch together in one write (bytes 24..47; the
 * encryption method in between is 0: encrypted images are not opened). */
int qcow2_sn_write_active_header(BlockDriverState *bs, uint64_t size,
                               uint32_t l1_size, uint64_t l1_offset)
{
    uint8_t hdr[24];

    be64_write(hdr, size);
    be32_write(hdr + 8, 0);
    be32_write(hdr + 12, l1_size);
    be64_write(hdr + 16, l1_offset);
    bdrv_debug_event(bs->file, "snapshot_header_update");
    return qcow2_write_header_bytes(bs, QCOW2_HDR_SIZE_OFF, hdr, 24);
}

/* Reads a snapshot's L1 into an array of at least min_size entries
 * (zero-padded) and checks every entry. */
int qcow2_sn_read_l1(BlockDriverState *bs, const Qcow2Snapshot *sn,
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


void qcow2_sn_to_info(const Qcow2Snapshot *sn, BdrvSnapshotInfo *info)
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

int qcow2_sn_find(const Qcow2Snapshot *sn, uint32_t nb, const char *id,
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


/* ---------------------------------------------------------------------- */
/* Check */

/* QEMU reports these through error_report(): with the program's name */
static void report_damage(const char *text)
{
    const char *prog = g_get_prgname();

    strata_error("%s%s%s", prog ? prog : "", prog ? ": " : "", text);
}

int qcow2_snapshot_check_damage(BlockDriverState *bs, BdrvCheckResult *res,
                                BdrvCheckMode fix)
{
    BDRVQcow2State *s = bs->opaque;
    uint32_t discarded = s->sn_over_max + s->sn_discarded + s->sn_past_end;
    int ret;

    if (!s->sn_damage) {
        return 0;
    }
    if (!(fix & BDRV_FIX_ERRORS)) {
        report_damage(s->sn_damage);
        res->check_errors++;
        return -EFBIG;
    }
    if (s->sn_over_max) {
        strata_error("Discarding %u overhanging snapshots", s->sn_over_max);
    }
    for (uint32_t i = 0; i < MIN(s->sn_extra_cut, SN_CUT_LOGGED); i++) {
        strata_error("Discarding too much extra metadata in snapshot table "
                     "entry %u (%u > %u)", s->sn_cut_entry[i],
                     s->sn_cut_size[i], QCOW2_MAX_SNAPSHOT_EXTRA);
    }
    if (s->sn_discarded) {
        strata_error("Discarding %u overhanging snapshots (snapshot table "
                     "is too big)", s->sn_discarded);
    }
    if (s->sn_past_end) {
        strata_error("Discarding %u snapshots past the end of the file",
                     s->sn_past_end);
    }
    if (discarded) {
        /* the kept entries are the table's first bytes: the shorter
         * count alone publishes them, and what follows becomes a leak;
         * no entry left, no table (its offset may lie past the end) */
        uint8_t ptr[12] = { 0 }; /* nb_snapshots, snapshots_offset */

        be32_write(ptr, s->nb_snapshots);
        ret = qcow2_write_header_bytes(bs, QCOW2_HDR_SNAPSHOTS_OFF, ptr,
                                       s->nb_snapshots ? 4 : 12);
        if (ret == 0) {
            ret = bdrv_flush(bs->file);
        }
        if (ret < 0) {
            strata_error("ERROR could not shorten the snapshot table: %s",
                         g_strerror(-ret));
            res->check_errors++;
            return ret;
        }
        /* each dropped entry is a corruption repaired, as QEMU counts */
        res->corruptions_fixed += discarded;
        s->sn_over_max = 0;
        s->sn_discarded = 0;
        s->sn_past_end = 0;
        if (!s->nb_snapshots) {
            s->snapshots_offset = 0;
        }
    }
    g_clear_pointer(&s->sn_damage, g_free);
    return 0;
}

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

    for (uint32_t i = 0; s->version >= 3 && i < s->nb_snapshots; i++) {
        if (s->snapshots[i].extra_data_size < 16) {
            strata_error("%s snapshot table entry %u is incomplete",
                    repair ? "Repairing" : "ERROR", i);
            bad++;
        }
    }
    /* entries whose extra data an open for repair cut must be rewritten */
    bad += s->sn_extra_cut;
    if (!bad) {
        return 0;
    }
    if (!repair) {
        res->corruptions += bad;
        return 0;
    }
    /* every entry is written with the full 24 bytes (disk size as read:
     * the current size; no icount), like QEMU's repair */
    ret = qcow2_sn_write_table(bs, s->snapshots, s->nb_snapshots, &off, &size,
                          &err);
    if (ret == 0) {
        ret = qcow2_sn_write_table_header(bs, s->nb_snapshots, off);
        if (ret < 0) {
            qcow2_free_unreferenced(bs, off, size, QCOW2_FREE_ALWAYS);
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
    qcow2_free_unreferenced(bs, old_off, old_size, QCOW2_FREE_SNAPSHOT);
    s->sn_extra_cut = 0;
    res->corruptions_fixed += bad;
    return 0;
}
