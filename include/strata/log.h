/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * libstrata's log sink: the library never writes to stdout or stderr;
 * undo failures, corruption reports, check findings and the like are
 * handed to the sink the embedding program installs.  Until one is
 * installed, messages are dropped.
 *
 * The library's internal log (block/log.h) shares these declarations, so
 * there is exactly one definition of the types.
 */
#ifndef STRATA_PUBLIC_LOG_H
#define STRATA_PUBLIC_LOG_H

#include <glib.h>

G_BEGIN_DECLS

typedef enum {
    STRATA_LOG_ERROR = 0,
    STRATA_LOG_WARNING = 1,
    STRATA_LOG_INFO = 2,
} StrataLogLevel;

/*
 * Receives one message: a whole line without its trailing newline, owned
 * by the library (copy it to keep it).  Called from any thread of the
 * library (I/O workers, job threads, the monitor's thread), one call at a
 * time; it must not call back into libstrata.
 */
typedef void StrataLogFunc(StrataLogLevel level, const char *msg,
                           void *opaque);

/*
 * Installs fn with opaque (NULL: drop messages again) and returns the
 * previous sink.  Any thread; a message being delivered concurrently may
 * still go to the previous sink.
 */
StrataLogFunc *strata_log_set_sink(StrataLogFunc *fn, void *opaque);

/* A ready-made sink: the message and a newline on stderr. */
void strata_log_to_stderr(StrataLogLevel level, const char *msg,
                          void *opaque);

G_END_DECLS

#endif
