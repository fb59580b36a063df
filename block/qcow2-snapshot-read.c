/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Reading a qcow2 image's internal snapshots: the list, and the
 * temporary read-only load of one (qemu-img convert -l, the
 * snapshot.id= / snapshot.name= open options).  The operations that
 * change them are in qcow2-snapshot.c.
 */
#include <errno.h>
#include <stdint.h>

#include "qcow2.h"
#include "qcow2-snapshot.h"

/*
 * QEMU keeps internal snapshots away from images with an external data
 * file (the data file has no refcounts to share clusters with): every
 * snapshot operation fails with ENOTSUP, which qemu-img reports as the
 * bare errno, "-95 (Operation not supported)".
 */
int qcow2_sn_refuse_data_file(BDRVQcow2State *s, GError **errp)
{
    if (qcow2_has_data_file(s)) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_NOT_SUPPORTED,
                    "%d (%s)", -ENOTSUP, g_strerror(ENOTSUP));
        return -ENOTSUP;
    }
    return 0;
}

int qcow2_snapshot_list(BlockDriverState *bs, BdrvSnapshotInfo **list,
                        GError **errp)
{
    BDRVQcow2State *s = bs->opaque;
    BdrvSnapshotInfo *l;
    int n = qcow2_sn_refuse_data_file(s, errp);

    if (n < 0) {
        return n;
    }
    g_mutex_lock(&s->lock);
    n = (int)s->nb_snapshots;
    l = g_new0(BdrvSnapshotInfo, MAX(n, 1));
    for (int i = 0; i < n; i++) {
        qcow2_sn_to_info(&s->snapshots[i], &l[i]);
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
    int idx, ret = qcow2_sn_refuse_data_file(s, errp);

    if (ret < 0) {
        return ret;
    }
    if (!bs->read_only) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "Device is not readonly");
        return -EINVAL;
    }
    qcow2_sn_lock(s);
    idx = qcow2_sn_find(s->snapshots, s->nb_snapshots, id, name);
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
    ret = qcow2_sn_read_l1(bs, sn, qcow2_l1_entries_for(s, sn->disk_size),
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
    qcow2_sn_unlock(s);
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
