/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * strata-daemon's state directory (issue 14): the journal of the intent
 * log that makes QMP transactions crash-atomic, chosen by --state-dir
 * (default below), recovered at start-up.
 */
#ifndef STRATA_DAEMON_STATE_H
#define STRATA_DAEMON_STATE_H

#include <stdbool.h>

/* The default: /var/lib/strata for root, else $XDG_STATE_HOME/strata
 * (~/.local/state/strata).  Not $XDG_RUNTIME_DIR: that is a tmpfs, and a
 * journal must survive the power cut it is there for.  (g_free it.) */
char *daemon_state_dir_default(void);

/*
 * Opens the journal (dir NULL: the default; "": no journal, transactions
 * are atomic only while the process lives) and installs it for the
 * transaction engine; completes every transaction left in it by a
 * process that died, unless another strata-daemon is using the directory
 * now (its records are its own).  Logs what it did.  false: an error
 * was printed, the daemon must not start.
 */
bool daemon_state_dir_setup(const char *dir);

#endif
