/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * strata-daemon's state directory: the intent log's journal (--state-dir),
 * its default, the lock that tells daemons sharing it apart, and the
 * recovery at start-up.
 */
#include <errno.h>
#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <glib.h>

#include "block/log.h"
#include "blockdev/intent-log.h"
#include "blockdev/transaction.h"
#include "daemon-opts.h"
#include "daemon-state.h"

/* Held for the daemon's life (shared): a daemon that gets it exclusive
 * at start knows no other daemon has records in flight here. */
static int lock_fd = -1;

char *daemon_state_dir_default(void)
{
    /* lets a test suite give every daemon its own journal instead of the
     * machine's (and '' turns the journal off) */
    const char *env = g_getenv("STRATA_STATE_DIR");

    if (env) {
        return g_strdup(env);
    }
    if (geteuid() == 0) {
        return g_strdup("/var/lib/strata");
    }
    return g_build_filename(g_get_user_state_dir(), "strata", NULL);
}

/* true: this daemon is the only one using dir. */
static bool lock_dir(const char *dir)
{
    g_autofree char *path = g_build_filename(dir, "daemon.lock", NULL);
    bool alone;

    lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (lock_fd < 0) {
        return false;
    }
    alone = flock(lock_fd, LOCK_EX | LOCK_NB) == 0;
    /* shared from now on: later daemons see this one */
    if (flock(lock_fd, LOCK_SH) < 0) {
        strata_warning("state directory %s: could not lock %s: %s", dir,
                       path, g_strerror(errno));
    }
    return alone;
}

bool daemon_state_dir_setup(const char *dir)
{
    g_autofree char *def = NULL;
    g_autoptr(IntentLog) log = NULL;
    g_autoptr(GError) err = NULL;
    int done;

    if (!dir) {
        dir = def = daemon_state_dir_default();
    }
    if (!*dir) {
        return true;            /* --state-dir '': no journal */
    }
    if (g_mkdir_with_parents(dir, 0700) < 0 ||
        !blk_transaction_set_state_dir(dir, &err)) {
        daemon_report("--state-dir", dir, err ? err->message :
                      g_strerror(errno));
        return false;
    }
    if (!lock_dir(dir)) {
        strata_info("state directory %s: in use by another strata-daemon; "
                    "its unfinished transactions are left to it (an image "
                    "is still recovered when it is opened)", dir);
        return true;
    }
    log = intent_log_open(dir, &err);
    if (!log) {
        daemon_report("--state-dir", dir, err->message);
        return false;
    }
    done = intent_log_recover_all(log, &err);
    if (done < 0) {
        /* the images of that record refuse a read-write open with the
         * reason; the others work */
        strata_error("state directory %s: recovery failed: %s", dir,
                     err->message);
    } else if (done > 0) {
        strata_info("state directory %s: %d unfinished transaction%s "
                    "completed (rolled forward)", dir, done,
                    done == 1 ? "" : "s");
    }
    return true;
}
