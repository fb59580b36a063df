/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The human monitor (HMP) of strata-daemon: QEMU's human command names,
 * argument syntax and output formats, on a readline-mode monitor (a
 * terminal on stdio, or a unix/tcp socket) and through QMP's
 * human-monitor-command.  The commands are written on the QMP command
 * functions and the transaction engine.
 */
#ifndef STRATA_MONITOR_HMP_H
#define STRATA_MONITOR_HMP_H

#include <stdbool.h>
#include <glib.h>

G_BEGIN_DECLS

/* The prompt.  QEMU's is "(qemu) "; ours names the program. */
#define HMP_PROMPT "(strata) "

/*
 * Runs one command line; returns what it prints, lines ended by "\n"
 * (the transports turn them into CRLF, as QEMU's monitor does).  An
 * empty line prints nothing.
 */
char *hmp_execute(const char *line);

/* A readline-mode monitor on the process's stdin/stdout: with libedit's
 * line editing and history when stdin is a terminal, plain lines
 * otherwise.  End of input ends the monitor, not the daemon. */
bool hmp_monitor_stdio(GError **errp);
/* A readline-mode monitor for every client of a socket. */
bool hmp_listen_unix(const char *path, GError **errp);
bool hmp_listen_tcp(const char *host, const char *port, GError **errp);

/* Closes the monitors (terminal restored, sockets closed and unlinked). */
void hmp_shutdown(void);

G_END_DECLS

#endif
