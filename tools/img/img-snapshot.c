/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Internal snapshots in strata-img: querying them from a node, printing
 * them in qemu-img's table and JSON forms (also used by `info`), and the
 * `snapshot` subcommand (-l | -c | -d | -a, as qemu-img snapshot).
 *
 * Where we differ from qemu-img 7.2, on purpose: -c refuses an empty name,
 * a name longer than 255 bytes (QEMU silently truncates it) and a name
 * that already exists (QEMU accepts duplicates, which -d and -a then
 * cannot tell apart); -c errors say why in words rather than as an errno.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "block/block_int.h"
#include "block/snapshot.h"
#include "img-common.h"
#include "img-snapshot.h"

void img_snapshot_info_free(ImgSnapshotInfo *sn)
{
    if (sn) {
        g_free(sn->id);
        g_free(sn->name);
        g_free(sn);
    }
}

int img_snapshot_list(BlockDriverState *bs, GPtrArray **out, GError **errp)
{
    BdrvSnapshotInfo *list;
    int n = bdrv_snapshot_list(bs, &list, errp);

    *out = NULL;
    if (n < 0) {
        return n;
    }
    *out = g_ptr_array_new_with_free_func(
        (GDestroyNotify)img_snapshot_info_free);
    for (int i = 0; i < n; i++) {
        ImgSnapshotInfo *sn = g_new0(ImgSnapshotInfo, 1);
        sn->id = g_strdup(list[i].id_str);
        sn->name = g_strdup(list[i].name);
        sn->vm_state_size = list[i].vm_state_size;
        sn->date_sec = list[i].date_sec;
        sn->date_nsec = list[i].date_nsec;
        sn->vm_clock_nsec = (int64_t)list[i].vm_clock_nsec;
        sn->icount = list[i].icount;
        g_ptr_array_add(*out, sn);
    }
    bdrv_snapshot_list_free(list, n);
    return 0;
}

void img_snapshot_dump(const ImgSnapshotInfo *sn)
{
    g_autoptr(GDateTime) date = NULL;
    g_autofree char *date_buf = NULL;
    g_autofree char *sizing = NULL;
    char clock_buf[64];
    char icount_buf[32] = "";
    int64_t secs;

    if (!sn) {
        printf("%-10s%-17s%8s%20s%13s%11s", "ID", "TAG", "VM SIZE", "DATE",
               "VM CLOCK", "ICOUNT");
        return;
    }
    date = g_date_time_new_from_unix_local(sn->date_sec);
    date_buf = date ? g_date_time_format(date, "%Y-%m-%d %H:%M:%S")
                    : g_strdup("");
    secs = sn->vm_clock_nsec / 1000000000;
    snprintf(clock_buf, sizeof(clock_buf), "%02d:%02d:%02d.%03d",
             (int)(secs / 3600), (int)((secs / 60) % 60), (int)(secs % 60),
             (int)((sn->vm_clock_nsec / 1000000) % 1000));
    sizing = img_size_to_str(sn->vm_state_size);
    if (sn->icount != UINT64_MAX) {
        snprintf(icount_buf, sizeof(icount_buf), "%" G_GUINT64_FORMAT,
                 sn->icount);
    }
    printf("%-9s %-16s %8s%20s%13s%11s", sn->id, sn->name, sizing, date_buf,
           clock_buf, icount_buf);
}

JsonNode *img_snapshot_to_json(const ImgSnapshotInfo *sn)
{
    g_autoptr(JsonBuilder) b = json_builder_new();

    json_builder_begin_object(b);
    json_builder_set_member_name(b, "id");
    json_builder_add_string_value(b, sn->id);
    json_builder_set_member_name(b, "name");
    json_builder_add_string_value(b, sn->name);
    json_builder_set_member_name(b, "vm-state-size");
    json_builder_add_int_value(b, (int64_t)sn->vm_state_size);
    json_builder_set_member_name(b, "date-sec");
    json_builder_add_int_value(b, sn->date_sec);
    json_builder_set_member_name(b, "date-nsec");
    json_builder_add_int_value(b, sn->date_nsec);
    json_builder_set_member_name(b, "vm-clock-sec");
    json_builder_add_int_value(b, sn->vm_clock_nsec / 1000000000);
    json_builder_set_member_name(b, "vm-clock-nsec");
    json_builder_add_int_value(b, sn->vm_clock_nsec % 1000000000);
    if (sn->icount != UINT64_MAX) {
        json_builder_set_member_name(b, "icount");
        json_builder_add_int_value(b, (int64_t)sn->icount);
    }
    json_builder_end_object(b);
    return json_builder_get_root(b);
}

/* `snapshot -l`: nothing at all when the image has no snapshots (or its
 * format none), like qemu-img. */
static void dump_snapshots(BlockDriverState *bs)
{
    g_autoptr(GPtrArray) list = NULL;
    g_autoptr(GError) err = NULL;

    if (img_snapshot_list(bs, &list, &err) < 0 || list->len == 0) {
        return;
    }
    printf("Snapshot list:\n");
    img_snapshot_dump(NULL);
    printf("\n");
    for (guint i = 0; i < list->len; i++) {
        img_snapshot_dump(g_ptr_array_index(list, i));
        printf("\n");
    }
}

/*
 * -c through the phases rather than bdrv_snapshot_create(), so that the
 * driver's pre-copy (pre_do) runs: a qcow2 create then changes nothing
 * live before its one publishing header write, and a kill at any point
 * leaves leaks at most.  bdrv_snapshot_create() rewrites COPIED flags in
 * place, and a kill in the middle leaves flags that disagree with the
 * refcounts (`qemu-img check` errors).  Alone on the image, it asks the
 * driver to settle in clean (BDRV_SNAPSHOT_SETTLE): the active image goes
 * back into its old tables, as qemu-img's in-place create leaves it.  The
 * messages are the ones bdrv_snapshot_create() gives.
 */
static int create_precopy(BlockDriverState *bs, const char *name,
                          GError **errp)
{
    BdrvSnapshotInfo tmpl = {
        .name = (char *)name,
        .icount = 0,       /* what qemu-img records */
    };
    g_autoptr(GError) local = NULL;
    BdrvSnapshotOp *op = bdrv_snapshot_create_check(bs, &tmpl,
                                                    BDRV_SNAPSHOT_SETTLE,
                                                    errp);
    int ret;

    if (!op) {
        return -EINVAL;
    }
    /* undrained, as the transaction engine runs it (nothing else does
     * I/O here, so the drain only satisfies do's rule) */
    ret = bdrv_snapshot_op_pre_do(op, errp);
    if (ret < 0) {
        bdrv_snapshot_op_pre_cancel(op);
        bdrv_snapshot_op_clean(op, NULL);
        return ret;
    }
    bdrv_drained_begin(bs);
    ret = bdrv_snapshot_op_do(op, errp);
    if (ret == 0) {
        ret = bdrv_snapshot_op_invalidate(op, errp);
        if (ret < 0) {
            bdrv_snapshot_op_cancel(op, NULL);
        }
    }
    bdrv_drained_end(bs);
    if (ret < 0) {
        bdrv_snapshot_op_clean(op, NULL);
        return ret;
    }
    ret = bdrv_snapshot_op_clean(op, &local);
    if (ret < 0) {
        g_set_error(errp, BDRV_ERROR, local->code,
                    "The snapshot create of '%s' took effect, but freeing "
                    "the clusters it no longer uses failed (they leak): %s",
                    name, local->message);
    }
    /* for fault injection: the operation's last I/O is behind us (the
     * crash tests kill only before this point) */
    bdrv_debug_event(bs->file, "snapshot_done");
    return ret;
}

typedef enum {
    SNAP_NONE, SNAP_LIST, SNAP_CREATE, SNAP_DELETE, SNAP_APPLY,
} SnapshotAction;

int img_snapshot(int argc, char **argv)
{
    static const struct option long_options[] = {
        { "help", no_argument, NULL, 'h' },
        { "object", required_argument, NULL, OPT_OBJECT },
        { "image-opts", no_argument, NULL, OPT_IMAGE_OPTS },
        { "force-share", no_argument, NULL, 'U' },
        { NULL, 0, NULL, 0 },
    };
    SnapshotAction action = SNAP_NONE;
    ImgCommonOpts o = IMG_COMMON_OPTS_INIT(BDRV_O_RDWR);
    const char *name = NULL, *filename;
    g_autoptr(BlockDriverState) bs = NULL;
    g_autoptr(GError) err = NULL;
    int c, ret = 0;

    while ((c = getopt_long(argc, argv, ":la:c:d:f:hqU", long_options,
                            NULL)) != -1) {
        switch (c) {
        case 'l':
        case 'a':
        case 'c':
        case 'd':
            if (action != SNAP_NONE) {
                img_error_exit("Cannot mix '-l', '-a', '-c', '-d'");
            }
            action = c == 'l' ? SNAP_LIST : c == 'a' ? SNAP_APPLY :
                     c == 'c' ? SNAP_CREATE : SNAP_DELETE;
            name = optarg;
            if (c == 'l') {
                o.flags &= ~BDRV_O_RDWR;
            }
            break;
        default:
            img_common_opt(c, argv, &o);
            break;
        }
    }
    filename = img_one_filename(argc, argv);
    if (!img_common_check_format(&o)) {
        return 1;
    }

    bs = img_open_common(&o, filename, 0);
    if (!bs) {
        return 1;
    }

    switch (action) {
    case SNAP_NONE:            /* qemu-img opens the image, and that is all */
        break;
    case SNAP_LIST:
        dump_snapshots(bs);
        break;
    case SNAP_CREATE:
        ret = create_precopy(bs, name, &err);
        if (ret < 0) {
            img_error("Could not create snapshot '%s': %s", name,
                      err->message);
        }
        break;
    case SNAP_APPLY:
        ret = bdrv_snapshot_goto(bs, name, &err);
        if (ret < 0) {
            img_error("Could not apply snapshot '%s': %s", name,
                      err->message);
        }
        break;
    case SNAP_DELETE: {
        BdrvSnapshotInfo sn = { 0 };
        /* qemu-img -d looks the name up only (never the ID) */
        if (!bdrv_snapshot_find(bs, name, &sn, NULL)) {
            img_error("Could not delete snapshot '%s': snapshot not found",
                      name);
            ret = -ENOENT;
            break;
        }
        ret = bdrv_snapshot_delete(bs, sn.id_str, sn.name, NULL, &err);
        if (ret < 0) {
            img_error("Could not delete snapshot '%s': %s", name,
                      err->message);
        }
        bdrv_snapshot_info_clear(&sn);
        break;
    }
    }
    if (ret == 0 && bdrv_flush(bs) < 0 && action != SNAP_LIST &&
        action != SNAP_NONE) {
        img_error("Could not flush the image");
        ret = -EIO;
    }
    return ret < 0 ? 1 : 0;
}
