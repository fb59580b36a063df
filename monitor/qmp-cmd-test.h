/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * strata-daemon's test-only commands (qapi/test.json, monitor/
 * qmp-cmd-test.c): present only when the daemon runs with
 * STRATA_DAEMON_TEST_COMMANDS=1, and otherwise unknown in every way a
 * client can see (dispatch, query-commands, query-qmp-schema).
 */
#ifndef STRATA_MONITOR_QMP_CMD_TEST_H
#define STRATA_MONITOR_QMP_CMD_TEST_H

#include "monitor/qapi-visit.h"

/* Whether the environment enabled them (read once). */
bool qmp_test_commands_enabled(void);
/* The test-only command called name, or NULL (always NULL if disabled). */
const QapiCommand *qmp_test_find_command(const char *name);
/* Their table, empty if disabled. */
const QapiCommand *qmp_test_command_table(void);
/* query-qmp-schema's text: with the test-only commands if enabled. */
const char *qmp_test_schema_text(void);
/* Stops the test writers, if running: before the images close. */
void qmp_test_shutdown(void);

#endif
