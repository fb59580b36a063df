/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The human monitor's "info" commands and their tables, in QEMU 7.2's
 * formats: info version, info block [-n] [-v] [device] (from QMP's
 * query-version and the nodes' BlockDeviceInfo; -v with the whole
 * backing chain's images), info snapshots (the snapshots present on all
 * disks, then each disk's partial ones), info block-jobs (from
 * query-block-jobs) and info jobs (query-jobs; QEMU 7.2 has no such
 * command, the format is ours).
 *
 * Where QEMU names a BlockBackend, strata-daemon's devices have no name
 * (they are the nodes --blockdev/blockdev-add made), so the node-name is
 * shown: QEMU -M none shows '' in "List of partial ... snapshots on ''",
 * and its plain "info block" lists nothing (no BlockBackends) where ours
 * lists every device's root node.
 */
#include <string.h>

#include "monitor/hmp-int.h"
#include "monitor/monitor-int.h"
#include "qapi-gen.h"
#include "blockdev/registry.h"
#include "block/block-backend.h"
#include "block/snapshot.h"

const HmpCommand hmp_info_cmds[] = {
    { "block", "nodes:-n,verbose:-v,device:B?", "[-n] [-v] [device]",
      "show info of one block device or all block devices (-n: show named "
      "nodes; -v: show details)", hmp_info_block, NULL },
    { "block-jobs", "", "", "show progress of ongoing block device "
      "operations", hmp_info_block_jobs, NULL },
    /* not in QEMU 7.2's human monitor: query-jobs as text */
    { "jobs", "", "", "show the jobs (query-jobs)", hmp_info_jobs, NULL },
    { "snapshots", "", "", "show the currently saved VM snapshots",
      hmp_info_snapshots, NULL },
    { "version", "", "", "show the version of QEMU", hmp_info_version,
      NULL },
    { NULL },
};

/* QEMU's size_to_str: three significant digits, IEC units, switching
 * unit at 1000 of the smaller one ("0 B", "765 B", "1e+03 B" never). */
static char *size_to_str(uint64_t val)
{
    static const char *const units[] = { "", "Ki", "Mi", "Gi", "Ti", "Pi",
                                         "Ei" };
    int i = 0;

    while (i < 6 && (double)val * 1.024 >= (double)(1ULL << (10 * (i + 1)))) {
        i++;
    }
    return g_strdup_printf("%0.3g %sB", (double)val / (double)(1ULL << (10 * i)),
                           units[i]);
}

void hmp_snapshot_row(GString *out, const char *id,
                      const BdrvSnapshotInfo *sn)
{
    g_autoptr(GDateTime) date = NULL;
    g_autofree char *when = NULL;
    g_autofree char *size = NULL;
    g_autofree char *clock = NULL;
    g_autofree char *icount = NULL;
    uint64_t secs;

    if (!sn) {
        g_string_append_printf(out, "%-10s%-17s%8s%20s%13s%11s", "ID", "TAG",
                               "VM SIZE", "DATE", "VM CLOCK", "ICOUNT");
        return;
    }
    date = g_date_time_new_from_unix_local(sn->date_sec);
    when = date ? g_date_time_format(date, "%Y-%m-%d %H:%M:%S") : g_strdup("");
    secs = sn->vm_clock_nsec / 1000000000;
    clock = g_strdup_printf("%02d:%02d:%02d.%03d", (int)(secs / 3600),
                            (int)(secs / 60 % 60), (int)(secs % 60),
                            (int)(sn->vm_clock_nsec / 1000000 % 1000));
    size = size_to_str(sn->vm_state_size);
    icount = sn->icount == BDRV_SNAPSHOT_NO_ICOUNT
             ? g_strdup("") : g_strdup_printf("%" G_GUINT64_FORMAT, sn->icount);
    g_string_append_printf(out, "%-9s %-16s %8s%20s%13s%11s",
                           id ? id : sn->id_str, sn->name, size, when, clock,
                           icount);
}

void hmp_info_version(GString *out, GHashTable *args)
{
    g_autoptr(GError) err = NULL;
    g_autoptr(JsonNode) v = hmp_call_qmp("query-version", NULL, &err);
    JsonObject *o, *q;

    if (!v) {
        hmp_print_error(out, err);
        return;
    }
    o = json_node_get_object(v);
    q = json_object_get_object_member(o, "qemu");
    g_string_append_printf(out, "%" G_GINT64_FORMAT ".%" G_GINT64_FORMAT
                           ".%" G_GINT64_FORMAT "%s\n",
                           json_object_get_int_member(q, "major"),
                           json_object_get_int_member(q, "minor"),
                           json_object_get_int_member(q, "micro"),
                           json_object_get_string_member(o, "package"));
}

/* ---- info block ---- */

static const char *member_str(JsonObject *o, const char *key)
{
    return json_object_has_member(o, key)
           ? json_object_get_string_member(o, key) : NULL;
}

static void snapshot_from_json(JsonObject *o, BdrvSnapshotInfo *sn)
{
    sn->id_str = (char *)json_object_get_string_member(o, "id");
    sn->name = (char *)json_object_get_string_member(o, "name");
    sn->vm_state_size = json_object_get_int_member(o, "vm-state-size");
    sn->date_sec = json_object_get_int_member(o, "date-sec");
    sn->date_nsec = json_object_get_int_member(o, "date-nsec");
    sn->vm_clock_nsec = json_object_get_int_member(o, "vm-clock-sec") *
                        1000000000ULL +
                        json_object_get_int_member(o, "vm-clock-nsec");
    sn->icount = json_object_has_member(o, "icount")
                 ? (uint64_t)json_object_get_int_member(o, "icount")
                 : BDRV_SNAPSHOT_NO_ICOUNT;
}

/* A format-specific value as QEMU's dump prints it. */
static void dump_value(GString *out, JsonNode *v)
{
    if (json_node_get_value_type(v) == G_TYPE_BOOLEAN) {
        g_string_append(out, json_node_get_boolean(v) ? "true" : "false");
    } else if (json_node_get_value_type(v) == G_TYPE_INT64) {
        g_string_append_printf(out, "%" G_GINT64_FORMAT, json_node_get_int(v));
    } else {
        g_string_append(out, json_node_get_string(v));
    }
}

static void dump_format_specific(GString *out, JsonObject *fs)
{
    JsonObject *data = json_object_get_object_member(fs, "data");
    g_autoptr(GList) keys = json_object_get_members(data);

    g_string_append(out, "Format specific information:\n");
    for (GList *l = keys; l; l = l->next) {
        g_autofree char *key = g_strdup(l->data);
        JsonNode *v = json_object_get_member(data, l->data);

        if (!JSON_NODE_HOLDS_VALUE(v)) {
            continue;
        }
        g_strdelimit(key, "-", ' ');
        g_string_append_printf(out, "    %s: ", key);
        dump_value(out, v);
        g_string_append_c(out, '\n');
    }
}

/* qemu-img info's text of one image (QEMU's "Images:" part of -v). */
static void dump_image(GString *out, JsonObject *img)
{
    int64_t vsize = json_object_get_int_member(img, "virtual-size");
    g_autofree char *vs = size_to_str(vsize);
    const char *backing = member_str(img, "backing-filename");

    g_string_append_printf(out, "image: %s\nfile format: %s\n"
                           "virtual size: %s (%" G_GINT64_FORMAT " bytes)\n",
                           member_str(img, "filename"),
                           member_str(img, "format"), vs, vsize);
    if (json_object_has_member(img, "actual-size")) {
        g_autofree char *ds = size_to_str(
            json_object_get_int_member(img, "actual-size"));
        g_string_append_printf(out, "disk size: %s\n", ds);
    }
    if (json_object_has_member(img, "cluster-size")) {
        g_string_append_printf(out, "cluster_size: %" G_GINT64_FORMAT "\n",
                               json_object_get_int_member(img,
                                                          "cluster-size"));
    }
    if (backing) {
        g_string_append_printf(out, "backing file: %s\n", backing);
    }
    if (member_str(img, "backing-filename-format")) {
        g_string_append_printf(out, "backing file format: %s\n",
                               member_str(img, "backing-filename-format"));
    }
    if (json_object_has_member(img, "snapshots")) {
        JsonArray *snaps = json_object_get_array_member(img, "snapshots");

        g_string_append(out, "Snapshot list:\n");
        hmp_snapshot_row(out, NULL, NULL);
        g_string_append_c(out, '\n');
        for (guint i = 0; i < json_array_get_length(snaps); i++) {
            BdrvSnapshotInfo sn = { 0 };
            snapshot_from_json(json_array_get_object_element(snaps, i), &sn);
            hmp_snapshot_row(out, NULL, &sn);
            g_string_append_c(out, '\n');
        }
    }
    if (json_object_has_member(img, "format-specific")) {
        dump_format_specific(out,
                             json_object_get_object_member(img,
                                                           "format-specific"));
    }
    /* QEMU prints the backing chain's images after it, one by one */
    if (json_object_has_member(img, "backing-image")) {
        dump_image(out, json_object_get_object_member(img, "backing-image"));
    }
}

static void print_node(GString *out, BlockDriverState *bs, bool verbose)
{
    g_autoptr(BlockDeviceInfo) info = qmp_block_device_info(bs, false);
    g_autoptr(JsonNode) node = qapi_BlockDeviceInfo_to_json(info);
    JsonObject *o = json_node_get_object(node);

    g_string_append_printf(out, "%s: %s (%s%s)\n",
                           member_str(o, "node-name"), member_str(o, "file"),
                           member_str(o, "drv"),
                           json_object_get_boolean_member(o, "ro")
                           ? ", read-only" : "");
    g_string_append_printf(out, "    Cache mode:       %s%s%s\n",
                           info->cache->writeback ? "writeback"
                                                  : "writethrough",
                           info->cache->direct ? ", direct" : "",
                           info->cache->no_flush ? ", ignore flushes" : "");
    if (member_str(o, "backing_file")) {
        g_string_append_printf(out, "    Backing file:     %s (chain depth: %"
                               G_GINT64_FORMAT ")\n",
                               member_str(o, "backing_file"),
                               json_object_get_int_member(
                                   o, "backing_file_depth"));
    }
    if (info->detect_zeroes != BLOCKDEVDETECTZEROESOPTIONS_OFF) {
        g_string_append_printf(out, "    Detect zeroes:    %s\n",
                               member_str(o, "detect_zeroes"));
    }
    if (verbose) {
        g_string_append(out, "\nImages:\n");
        dump_image(out, json_object_get_object_member(o, "image"));
    }
}

void hmp_info_block(GString *out, GHashTable *args)
{
    const char *device = g_hash_table_lookup(args, "device");
    bool verbose = g_hash_table_contains(args, "verbose");
    bool nodes = g_hash_table_contains(args, "nodes");
    g_autoptr(GPtrArray) list = NULL;
    bool printed = false;

    if (!nodes) {
        list = hmp_snapshot_disks_all();
        for (guint i = 0; i < list->len; i++) {
            BlockDriverState *bs = g_ptr_array_index(list, i);
            if (device && strcmp(device, bdrv_get_node_name(bs))) {
                continue;
            }
            if (printed) {
                g_string_append_c(out, '\n');
            }
            print_node(out, bs, verbose);
            printed = true;
        }
        if (!device || printed) {
            return;
        }
    }
    /* Named nodes; as in QEMU, a blank line before every entry but the
     * first of the whole list, printed or not. */
    g_clear_pointer(&list, g_ptr_array_unref);
    list = blockdev_list_nodes();
    for (guint i = 0; i < list->len; i++) {
        BlockDriverState *bs = g_ptr_array_index(list, i);
        const char *name = bdrv_get_node_name(bs);

        if (!name || !*name || (device && strcmp(device, name))) {
            continue;
        }
        if (i) {
            g_string_append_c(out, '\n');
        }
        print_node(out, bs, verbose);
    }
}

/* ---- info snapshots ---- */

typedef struct DiskSnapshots {
    const char *name;
    BdrvSnapshotInfo *list;
    int n;
    bool *shown;                 /* on the "all disks" list */
} DiskSnapshots;

static bool on_every_disk(GPtrArray *disks, const char *name)
{
    for (guint i = 0; i < disks->len; i++) {
        if (!bdrv_snapshot_find(g_ptr_array_index(disks, i), name, NULL,
                                NULL)) {
            return false;
        }
    }
    return true;
}

/* The first disk that can hold snapshots: QEMU's VM-state disk. */
static BlockDriverState *vmstate_disk(GPtrArray *disks)
{
    for (guint i = 0; i < disks->len; i++) {
        if (bdrv_can_snapshot(g_ptr_array_index(disks, i))) {
            return g_ptr_array_index(disks, i);
        }
    }
    return NULL;
}

static void print_partial(GString *out, DiskSnapshots *d)
{
    bool header = false;

    for (int j = 0; j < d->n; j++) {
        if (d->shown[j]) {
            continue;
        }
        if (!header) {
            g_string_append_printf(out, "\nList of partial (non-loadable) "
                                   "snapshots on '%s':\n", d->name);
            hmp_snapshot_row(out, NULL, NULL);
            g_string_append_c(out, '\n');
            header = true;
        }
        hmp_snapshot_row(out, NULL, &d->list[j]);
        g_string_append_c(out, '\n');
    }
}

void hmp_info_snapshots(GString *out, GHashTable *args)
{
    g_autoptr(GPtrArray) disks = hmp_snapshot_disks();
    /* QEMU lists the disks it can snapshot: read-only ones are not */
    GPtrArray *roots = disks;
    BlockDriverState *vm = vmstate_disk(disks);
    g_autofree DiskSnapshots *ds = NULL;
    guint nds = 0, total = 0;

    if (!vm) {
        g_string_append(out, "no block device can store vmstate for "
                        "snapshot\n");
        return;
    }
    ds = g_new0(DiskSnapshots, roots->len);
    for (guint i = 0; i < roots->len; i++) {
        BlockDriverState *bs = g_ptr_array_index(roots, i);
        BdrvSnapshotInfo *list = NULL;
        int n = bdrv_can_snapshot(bs) ? bdrv_snapshot_list(bs, &list, NULL)
                                      : 0;
        if (n <= 0) {
            bdrv_snapshot_list_free(list, 0);
        } else {
            ds[nds].name = hmp_disk_name(bs);
            ds[nds].list = list;
            ds[nds].n = n;
            ds[nds].shown = g_new0(bool, n);
            nds++;
        }
    }
    if (!nds) {
        g_string_append(out, "There is no snapshot available.\n");
        return;
    }
    g_string_append(out, "List of snapshots present on all disks:\n");
    {
        BdrvSnapshotInfo *vl = NULL;
        int vn = bdrv_snapshot_list(vm, &vl, NULL);

        for (int i = 0; i < vn; i++) {
            if (!on_every_disk(disks, vl[i].name)) {
                continue;
            }
            if (!total++) {
                hmp_snapshot_row(out, NULL, NULL);
                g_string_append_c(out, '\n');
            }
            /* IDs differ between images: QEMU shows "--" */
            hmp_snapshot_row(out, "--", &vl[i]);
            g_string_append_c(out, '\n');
            for (guint d = 0; d < nds; d++) {
                for (int j = 0; j < ds[d].n; j++) {
                    ds[d].shown[j] |= !strcmp(ds[d].list[j].name, vl[i].name);
                }
            }
        }
        bdrv_snapshot_list_free(vl, vn > 0 ? vn : 0);
    }
    if (!total) {
        g_string_append(out, "None\n");
    }
    for (guint d = 0; d < nds; d++) {
        print_partial(out, &ds[d]);
        bdrv_snapshot_list_free(ds[d].list, ds[d].n);
        g_free(ds[d].shown);
    }
}

/* ---- info block-jobs, info jobs ---- */

static JsonArray *query_list(GString *out, const char *command,
                             JsonNode **keep)
{
    g_autoptr(GError) err = NULL;

    *keep = hmp_call_qmp(command, NULL, &err);
    if (!*keep) {
        hmp_print_error(out, err);
        return NULL;
    }
    return json_node_get_array(*keep);
}

/* A job list, or NULL with "No active jobs" (or the error) already said */
static JsonArray *query_jobs_list(GString *out, const char *command,
                                  JsonNode **keep)
{
    JsonArray *list = query_list(out, command, keep);

    if (list && !json_array_get_length(list)) {
        g_string_append(out, "No active jobs\n");
        return NULL;
    }
    return list;
}

void hmp_info_block_jobs(GString *out, GHashTable *args)
{
    g_autoptr(JsonNode) keep = NULL;
    JsonArray *list = query_jobs_list(out, "query-block-jobs", &keep);

    if (!list) {
        return;
    }
    for (guint i = 0; i < json_array_get_length(list); i++) {
        JsonObject *j = json_array_get_object_element(list, i);
        const char *type = json_object_get_string_member(j, "type");

        /* QEMU words a stream job on its own */
        if (!strcmp(type, "stream")) {
            g_string_append_printf(out, "Streaming device %s",
                                   member_str(j, "device"));
        } else {
            g_string_append_printf(out, "Type %s, device %s", type,
                                   member_str(j, "device"));
        }
        g_string_append_printf(out, ": Completed %" G_GINT64_FORMAT " of %"
                               G_GINT64_FORMAT " bytes, speed limit %"
                               G_GINT64_FORMAT " bytes/s\n",
                               json_object_get_int_member(j, "offset"),
                               json_object_get_int_member(j, "len"),
                               json_object_get_int_member(j, "speed"));
    }
}

void hmp_info_jobs(GString *out, GHashTable *args)
{
    g_autoptr(JsonNode) keep = NULL;
    JsonArray *list = query_jobs_list(out, "query-jobs", &keep);

    if (!list) {
        return;
    }
    for (guint i = 0; i < json_array_get_length(list); i++) {
        JsonObject *j = json_array_get_object_element(list, i);

        g_string_append_printf(out, "Job %s: type %s, status %s, progress %"
                               G_GINT64_FORMAT " of %" G_GINT64_FORMAT,
                               member_str(j, "id"), member_str(j, "type"),
                               member_str(j, "status"),
                               json_object_get_int_member(j,
                                                          "current-progress"),
                               json_object_get_int_member(j,
                                                          "total-progress"));
        if (member_str(j, "error")) {
            g_string_append_printf(out, ", error: %s", member_str(j, "error"));
        }
        g_string_append_c(out, '\n');
    }
}
