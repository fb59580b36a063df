/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Inside the monitor: a client's session state, the request dispatcher
 * (monitor/qmp-dispatch.c) and helpers the command files share.
 */
#ifndef STRATA_MONITOR_INT_H
#define STRATA_MONITOR_INT_H

#include "monitor/monitor.h"
#include "monitor/qapi-visit.h"
#include "block/json-writer.h"
#include "block/block.h"

typedef struct QmpSession {
    bool negotiated;       /* qmp_capabilities done */
    bool oob;              /* the oob capability enabled */
} QmpSession;

/* The reply to one request (or to a parse error) of session s. */
JsonNode *qmp_dispatch(QmpSession *s, JsonNode *request, GError *parse_err);

/* The session of the command running now (for qmp_capabilities). */
QmpSession *qmp_current_session(void);

/* {} */
JsonNode *qmp_empty_return(void);

/* Sets a GenericError with a formatted text; returns false, so a check
 * reads `return qmp_fail(errp, ...)`. */
bool qmp_fail(GError **errp, const char *fmt, ...) G_GNUC_PRINTF(2, 3);

/* The greeting a new client gets. */
JsonNode *qmp_greeting(void);
/* The SnapshotInfo result of a snapshot (monitor/qmp-block-info.c). */
typedef struct SnapshotInfo SnapshotInfo;
typedef struct BdrvSnapshotInfo BdrvSnapshotInfo;
SnapshotInfo *qmp_snapshot_info(const BdrvSnapshotInfo *sn);
/* A node's BlockDeviceInfo, as query-named-block-nodes gives it. */
typedef struct BlockDeviceInfo BlockDeviceInfo;
BlockDeviceInfo *qmp_block_device_info(BlockDriverState *bs, bool flat);

#endif
