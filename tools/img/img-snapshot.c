/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Internal snapshot lists for strata-img: querying them from a node and
 * printing them in qemu-img's table and JSON forms.
 */
#include <errno.h>
#include <stdio.h>

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
    /*
     * include/block/block.h has no snapshot listing yet.  When it does,
     * convert its entries into ImgSnapshotInfo here; `info` (human and
     * JSON) and a future `snapshot -l` already print whatever this
     * returns.  Until then no format reports snapshots.
     */
    *out = NULL;
    return -ENOTSUP;
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
