/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The snapshot-save / snapshot-load / snapshot-delete jobs
 * (monitor/qmp-cmd-snapshot-jobs.c) as the generic job commands of
 * monitor/qmp-cmd-jobs.c see them: listed by query-jobs, dismissed by
 * job-dismiss, dismissed at shutdown.  Main loop only.
 */
#ifndef STRATA_MONITOR_SNAPSHOT_JOBS_H
#define STRATA_MONITOR_SNAPSHOT_JOBS_H

#include <stdbool.h>
#include <glib.h>
#include <json-glib/json-glib.h>

G_BEGIN_DECLS

/* Whether a snapshot job has this id. */
bool snapshot_job_exists(const char *id);
/* Adds a JobInfo (qapi-gen.h) per snapshot job to list, newest first. */
void snapshot_jobs_add_info(GPtrArray *list);
/* job-dismiss of a snapshot job: QEMU's text unless it has concluded. */
JsonNode *snapshot_job_dismiss(const char *id, GError **errp);
/* At exit: every job gone, each with its "null" event. */
void snapshot_jobs_shutdown(void);

G_END_DECLS

#endif
