/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The API's process-wide state: one-time set-up, the monitor lock, the
 * library version and strata_shutdown().
 */
#include "api-int.h"
#include "monitor/monitor.h"
#include "monitor/qmp-events.h"
#include "blockdev/registry.h"

/* Recursive: the event handler's thread may run queued monitor work
 * (a concluded job's clean-up) while it holds the lock already. */
static GRecMutex monitor_lock;

static void api_setup(void)
{
    static gsize done;

    if (g_once_init_enter(&done)) {
        monitor_set_package("strata " STRATA_VERSION_STRING);
        qmp_events_watch_corruption();
        g_once_init_leave(&done, 1);
    }
}

void api_monitor_lock(void)
{
    api_setup();
    g_rec_mutex_lock(&monitor_lock);
}

void api_monitor_unlock(void)
{
    g_rec_mutex_unlock(&monitor_lock);
}

const char *strata_version(void)
{
    /* The library's own version, compiled in from meson's project(). */
    return STRATA_LIB_VERSION;
}

void strata_shutdown(void)
{
    api_monitor_lock();
    monitor_jobs_shutdown();
    qmp_events_flush();
    monitor_blockdev_close_all();
    blockdev_remove_all_devices();
    api_monitor_unlock();
}
