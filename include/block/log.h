/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The library's one way of telling a human something: a log sink that the
 * embedding program sets.  The library itself never writes to stdout or
 * stderr; undo failures, corruption reports, check findings and
 * fault-injection counters all come through here.  Until a sink is set,
 * messages are dropped (an embedding program decides where they go); the
 * tools install strata_log_to_stderr() first thing.
 */
#ifndef STRATA_BLOCK_LOG_H
#define STRATA_BLOCK_LOG_H

#include <glib.h>

G_BEGIN_DECLS

/* The level, the sink type and the sink calls are the public API's
 * (include/strata/log.h, installed): one definition for both. */
#include "strata/log.h"

void strata_log(StrataLogLevel level, const char *fmt, ...)
    G_GNUC_PRINTF(2, 3);
#define strata_error(...)   strata_log(STRATA_LOG_ERROR, __VA_ARGS__)
#define strata_warning(...) strata_log(STRATA_LOG_WARNING, __VA_ARGS__)
#define strata_info(...)    strata_log(STRATA_LOG_INFO, __VA_ARGS__)

G_END_DECLS

#endif
