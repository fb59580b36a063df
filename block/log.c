/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The log sink (include/block/log.h).  One lock serialises the sink so a
 * sink never sees two messages at once and a message never reaches a sink
 * that was replaced before it was formatted.
 */
#include <stdio.h>

#include "block/log.h"

static GMutex log_lock;
static StrataLogFunc *log_sink;
static void *log_opaque;

StrataLogFunc *strata_log_set_sink(StrataLogFunc *fn, void *opaque)
{
    g_mutex_lock(&log_lock);
    StrataLogFunc *old = log_sink;
    log_sink = fn;
    log_opaque = opaque;
    g_mutex_unlock(&log_lock);
    return old;
}

void strata_log_to_stderr(StrataLogLevel level, const char *msg,
                          void *opaque)
{
    fprintf(stderr, "%s\n", msg);
}

void strata_log(StrataLogLevel level, const char *fmt, ...)
{
    va_list ap;

    g_mutex_lock(&log_lock);
    if (log_sink) {
        va_start(ap, fmt);
        g_autofree char *msg = g_strdup_vprintf(fmt, ap);
        va_end(ap);
        log_sink(level, msg, log_opaque);
    }
    g_mutex_unlock(&log_lock);
}
