/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * qcow2 internal snapshots: the snapshot table (reading and validating
 * every entry).  Entry layout: QEMU's docs/interop/qcow2.txt, "Snapshots".
 */
#include <errno.h>
#include <string.h>

#include "qcow2.h"

#define SNAP_HEADER_LEN 40
#define WINDOW (64 * 1024)

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

static uint32_t rd32(const uint8_t *b) { uint32_t v; memcpy(&v, b, 4); return GUINT32_FROM_BE(v); }
static uint64_t rd64(const uint8_t *b) { uint64_t v; memcpy(&v, b, 8); return GUINT64_FROM_BE(v); }
static uint16_t rd16(const uint8_t *b) { uint16_t v; memcpy(&v, b, 2); return GUINT16_FROM_BE(v); }

void qcow2_free_snapshots(BDRVQcow2State *s)
{
    for (uint32_t i = 0; s->snapshots && i < s->nb_snapshots; i++) {
        g_free(s->snapshots[i].id_str);
        g_free(s->snapshots[i].name);
        g_free(s->snapshots[i].unknown_extra);
    }
    g_free(s->snapshots);
    s->snapshots = NULL;
}

static bool snapshot_l1_valid(BDRVQcow2State *s, const Qcow2Snapshot *sn,
                              uint64_t file_end, GError **errp)
{
    if ((uint64_t)sn->l1_size * 8 > QCOW2_MAX_L1_BYTES) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "Snapshot L1 table too large");
        return false;
    }
    if ((sn->l1_table_offset & (s->cluster_size - 1)) ||
        (sn->l1_size && (sn->l1_table_offset == 0 ||
                         sn->l1_table_offset + sn->l1_size * 8ULL > file_end))) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "Snapshot L1 table offset invalid");
        return false;
    }
    return true;
}

static int read_one(BDRVQcow2State *s, TableReader *r, uint64_t *pos,
                    uint64_t table_end, uint32_t i, Qcow2Snapshot *sn,
                    GError **errp)
{
    uint8_t h[SNAP_HEADER_LEN];
    uint8_t known[24] = { 0 };
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
    ret = table_read(r, *pos, MIN(extra, 24U), known);
    if (ret < 0) {
        return ret;
    }
    if (extra >= 8) {
        sn->vm_state_size = rd64(known);
    }
    sn->disk_size = extra >= 16 ? rd64(known + 8) : s->size;
    sn->icount = extra >= 24 ? rd64(known + 16) : UINT64_MAX;
    if (extra > 24) {
        sn->unknown_extra_size = extra - 24;
        sn->unknown_extra = g_malloc(sn->unknown_extra_size);
        ret = table_read(r, *pos + 24, sn->unknown_extra_size,
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

int qcow2_read_snapshots(BlockDriverState *bs, GError **errp)
{
    BDRVQcow2State *s = bs->opaque;
    int64_t file_len = bdrv_getlength(bs->file);
    uint64_t file_end, table_end, pos;
    g_autofree TableReader *r = g_new0(TableReader, 1);
    int ret = 0;

    s->snapshots_size = 0;
    if (s->nb_snapshots == 0) {
        return 0;
    }
    if (file_len < 0) {
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
            break;
        }
        if (pos - s->snapshots_offset > QCOW2_MAX_SNAPSHOT_TABLE_BYTES) {
            g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                        "Snapshot table is too big");
            ret = -EFBIG;
            break;
        }
        if (!snapshot_l1_valid(s, sn, file_end, errp)) {
            g_prefix_error(errp, "Snapshot %u (%s): ", i + 1, sn->name);
            ret = -EINVAL;
            break;
        }
    }
    if (ret < 0) {
        qcow2_free_snapshots(s);
        return ret;
    }
    s->snapshots_size = pos - s->snapshots_offset;
    return 0;
}
