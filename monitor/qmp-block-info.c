/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * query-named-block-nodes: a BlockDeviceInfo per open node, with its
 * ImageInfo (snapshots, backing names, qcow2's format-specific facts,
 * the backing image's info nested unless "flat"), named and typed as
 * QEMU 7.2's.  strata has no I/O throttling and no write threshold:
 * those members are the zeroes QEMU shows when they are off.
 */
#include "monitor/monitor-int.h"
#include "block/snapshot.h"
#include "blockdev/registry.h"
#include "qapi-gen.h"

static JsonNode *snapshot_list(BlockDriverState *bs)
{
    BdrvSnapshotInfo *list = NULL;
    int n = bdrv_snapshot_list(bs, &list, NULL);
    JsonArray *arr;

    if (n <= 0) {
        bdrv_snapshot_list_free(list, n > 0 ? n : 0);
        return NULL;            /* omitted when empty, as QEMU */
    }
    arr = json_array_new();
    for (int i = 0; i < n; i++) {
        JsonObject *o = json_object_new();
        const BdrvSnapshotInfo *sn = &list[i];

        json_object_set_string_member(o, "id", sn->id_str);
        json_object_set_string_member(o, "name", sn->name);
        json_object_set_int_member(o, "vm-state-size", sn->vm_state_size);
        json_object_set_int_member(o, "date-sec", sn->date_sec);
        json_object_set_int_member(o, "date-nsec", sn->date_nsec);
        json_object_set_int_member(o, "vm-clock-sec",
                                   sn->vm_clock_nsec / 1000000000);
        json_object_set_int_member(o, "vm-clock-nsec",
                                   sn->vm_clock_nsec % 1000000000);
        if (sn->icount != BDRV_SNAPSHOT_NO_ICOUNT) {
            json_object_set_int_member(o, "icount", sn->icount);
        }
        json_array_add_object_element(arr, o);
    }
    bdrv_snapshot_list_free(list, n);
    return json_node_init_array(json_node_alloc(), arr);
}

static JsonObject *format_specific(BlockDriverState *bs)
{
    BlockSpecificInfo si = { 0 };
    JsonObject *data, *out;

    bdrv_get_specific_info(bs, &si);
    if (!si.type) {
        return NULL;
    }
    data = json_object_new();
    json_object_set_string_member(data, "compat", si.compat);
    json_object_set_string_member(data, "compression-type",
                                  si.compression_type);
    json_object_set_boolean_member(data, "lazy-refcounts", si.lazy_refcounts);
    json_object_set_int_member(data, "refcount-bits", si.refcount_bits);
    json_object_set_boolean_member(data, "corrupt", si.corrupt);
    json_object_set_boolean_member(data, "extended-l2", si.extended_l2);
    out = json_object_new();
    json_object_set_string_member(out, "type", si.type);
    json_object_set_object_member(out, "data", data);
    return out;
}

static JsonNode *image_info(BlockDriverState *bs, bool flat)
{
    JsonObject *o = json_object_new();
    BlockDriverInfo bdi = { 0 };
    const char *backing = bdrv_get_backing_filename(bs);
    JsonNode *snaps = snapshot_list(bs);
    JsonObject *fs = format_specific(bs);
    int64_t actual = bdrv_get_allocated_file_size(bs);

    bdrv_get_info(bs, &bdi);
    json_object_set_string_member(o, "filename", bdrv_get_filename(bs));
    json_object_set_string_member(o, "format", bdrv_get_format_name(bs));
    json_object_set_boolean_member(o, "dirty-flag", bdi.is_dirty);
    if (actual >= 0) {
        json_object_set_int_member(o, "actual-size", actual);
    }
    /* QEMU counts lengths in whole sectors: a file of odd size shows
     * rounded up (qemu-img info shows the same) */
    json_object_set_int_member(o, "virtual-size",
                               (bdrv_getlength(bs) + BDRV_SECTOR_SIZE - 1) &
                               ~(int64_t)(BDRV_SECTOR_SIZE - 1));
    if (bdi.cluster_size) {
        json_object_set_int_member(o, "cluster-size", bdi.cluster_size);
    }
    if (backing) {
        g_autofree char *full = bdrv_get_full_backing_filename(bs);

        json_object_set_string_member(o, "backing-filename", backing);
        if (full) {
            json_object_set_string_member(o, "full-backing-filename", full);
        }
        if (bdrv_get_backing_format(bs)) {
            json_object_set_string_member(o, "backing-filename-format",
                                          bdrv_get_backing_format(bs));
        }
    }
    if (snaps) {
        json_object_set_member(o, "snapshots", snaps);
    }
    if (fs) {
        json_object_set_object_member(o, "format-specific", fs);
    }
    if (!flat && bdrv_get_backing(bs)) {
        json_object_set_member(o, "backing-image",
                               image_info(bdrv_get_backing(bs), false));
    }
    return json_node_init_object(json_node_alloc(), o);
}

JsonNode *qmp_block_device_info(BlockDriverState *bs, bool flat)
{
    static const char *const zero_members[] = {
        "bps", "bps_rd", "bps_wr", "iops", "iops_rd", "iops_wr",
        "write_threshold",
    };
    JsonObject *o = json_object_new();
    JsonObject *cache = json_object_new();
    const char *backing = bdrv_get_backing_filename(bs);
    int depth = 0;

    for (BlockDriverState *b = bdrv_get_backing(bs); b;
         b = bdrv_get_backing(b)) {
        depth++;
    }
    json_object_set_string_member(o, "file", bdrv_get_filename(bs));
    json_object_set_string_member(o, "node-name", bdrv_get_node_name(bs));
    json_object_set_boolean_member(o, "ro", bdrv_is_read_only(bs));
    json_object_set_string_member(o, "drv", bdrv_get_format_name(bs));
    if (backing && bdrv_get_backing(bs)) {
        json_object_set_string_member(o, "backing_file", backing);
    }
    json_object_set_int_member(o, "backing_file_depth", depth);
    json_object_set_boolean_member(o, "encrypted", false);
    json_object_set_string_member(o, "detect_zeroes", "off");
    for (size_t i = 0; i < G_N_ELEMENTS(zero_members); i++) {
        json_object_set_int_member(o, zero_members[i], 0);
    }
    json_object_set_boolean_member(cache, "writeback", true);
    json_object_set_boolean_member(cache, "direct", false);
    json_object_set_boolean_member(cache, "no-flush", false);
    json_object_set_object_member(o, "cache", cache);
    json_object_set_member(o, "image", image_info(bs, flat));
    return json_node_init_object(json_node_alloc(), o);
}

JsonNode *qmp_query_named_block_nodes(
    const q_obj_query_named_block_nodes_arg *args, GError **errp)
{
    g_autoptr(GPtrArray) nodes = blockdev_list_nodes();
    JsonArray *arr = json_array_new();
    bool flat = args->has_flat && args->flat;

    /* newest first, as QEMU lists them */
    for (guint i = nodes->len; i > 0; i--) {
        json_array_add_element(arr, qmp_block_device_info(
                                   g_ptr_array_index(nodes, i - 1), flat));
    }
    return json_node_init_array(json_node_alloc(), arr);
}
