/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Inside the human monitor (HMP): the command table's shape, the parsed
 * arguments, and what the parser (monitor/hmp.c), the commands
 * (monitor/hmp-cmds.c) and the info tables (monitor/hmp-info.c) share.
 */
#ifndef STRATA_MONITOR_HMP_INT_H
#define STRATA_MONITOR_HMP_INT_H

#include <glib.h>
#include <json-glib/json-glib.h>

#include "monitor/hmp.h"
#include "block/block.h"
#include "block/snapshot.h"

/*
 * One command.  args_type is QEMU's little language for the arguments,
 * kept so that the parser behaves like QEMU's on the same table:
 * "key:T" items separated by commas, T one of
 *   s  a word or a "quoted string"     B  the same, a block device name
 *   S  the rest of the line            -x a flag -x (stored as "on")
 * and a trailing '?' on s/B/S for an optional argument.
 * The parsed arguments are a key -> string table.
 */
typedef void HmpHandler(GString *out, GHashTable *args);

typedef struct HmpCommand {
    const char *name;
    const char *args_type;
    const char *params;
    const char *help;
    HmpHandler *fn;
    const struct HmpCommand *sub;      /* "info": its own table */
} HmpCommand;

extern const HmpCommand hmp_info_cmds[];

/* "Error: <message>\n", how QEMU's human monitor shows a failed command. */
void hmp_print_error(GString *out, const GError *err);

/*
 * Runs QMP command `command` with arguments `args` (taken; may be NULL)
 * through the QMP dispatcher, so HMP shares the schema checks and the
 * command code.  Returns the "return" value, or NULL with errp set to the
 * reply's error description.
 */
JsonNode *hmp_call_qmp(const char *command, JsonObject *args, GError **errp);

/* Appends one internal-snapshot transaction action {type, data: {device,
 * name[, id]}}: savevm, loadvm, delvm and the snapshot-* jobs build their
 * transactions alike. */
void hmp_add_snapshot_action(JsonArray *actions, const char *type,
                             const char *device, const char *name,
                             const char *id);
/* Runs the transaction of `actions` (a JsonArray, not taken) through
 * hmp_call_qmp(): the callback the VM-state save and load run it by
 * (blockdev/vmstate.c runs it between saving and after reverting). */
gboolean hmp_run_transaction(void *actions, GError **errp);

/* The nodes savevm/loadvm/delvm/info snapshots work on, QEMU's "all
 * disks": the root node of every device that is writable.  Each with a
 * reference; the array drops them. */
GPtrArray *hmp_snapshot_disks(void);
/* A disk's name in messages and actions: its device's name, else (the
 * daemon's devices have none) its node-name, as QEMU names them. */
const char *hmp_disk_name(BlockDriverState *bs);
/* Same with the read-only ones too (every device's root node). */
GPtrArray *hmp_snapshot_disks_all(void);

/* A snapshot's row of QEMU's table (no newline); NULL: the header. */
void hmp_snapshot_row(GString *out, const char *id,
                      const BdrvSnapshotInfo *sn);

/* Lines ended by "\n" to CRLF (QEMU's monitor output). */
char *hmp_text_to_crlf(const char *text);

/* The commands. */
void hmp_help(GString *out, GHashTable *args);
void hmp_quit(GString *out, GHashTable *args);
void hmp_snapshot_blkdev(GString *out, GHashTable *args);
void hmp_snapshot_blkdev_internal(GString *out, GHashTable *args);
void hmp_object_add(GString *out, GHashTable *args);
void hmp_object_del(GString *out, GHashTable *args);
void hmp_snapshot_delete_blkdev_internal(GString *out, GHashTable *args);
void hmp_savevm(GString *out, GHashTable *args);
void hmp_loadvm(GString *out, GHashTable *args);
void hmp_delvm(GString *out, GHashTable *args);
void hmp_info_version(GString *out, GHashTable *args);
void hmp_info_block(GString *out, GHashTable *args);
void hmp_info_snapshots(GString *out, GHashTable *args);
void hmp_info_block_jobs(GString *out, GHashTable *args);
void hmp_info_jobs(GString *out, GHashTable *args);
void hmp_commit(GString *out, GHashTable *args);

#endif
