/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Internal snapshot lists as strata-img shows them: the table of
 * `info` and `snapshot -l`, and their JSON; and the `snapshot`
 * subcommand.
 */
#ifndef STRATA_IMG_SNAPSHOT_H
#define STRATA_IMG_SNAPSHOT_H

#include <json-glib/json-glib.h>
#include <stdint.h>

#include "block/block.h"

typedef struct ImgSnapshotInfo {
    char *id;
    char *name;
    uint64_t vm_state_size;
    int64_t date_sec;
    int64_t date_nsec;
    int64_t vm_clock_nsec;
    uint64_t icount;          /* UINT64_MAX: none recorded */
} ImgSnapshotInfo;

void img_snapshot_info_free(ImgSnapshotInfo *sn);

/*
 * The internal snapshots of bs in table order: 0 and *out (a GPtrArray of
 * ImgSnapshotInfo, possibly empty), or -ENOTSUP when bs cannot have any,
 * or another -errno with errp set.
 */
int img_snapshot_list(BlockDriverState *bs, GPtrArray **out, GError **errp);

/* One line of the table without its newline; NULL prints the header. */
void img_snapshot_dump(const ImgSnapshotInfo *sn);
/* {"id", "name", "vm-state-size", "date-sec", ...} as qemu-img prints. */
JsonNode *img_snapshot_to_json(const ImgSnapshotInfo *sn);

/* The `snapshot` subcommand. */
int img_snapshot(int argc, char **argv);

#endif
