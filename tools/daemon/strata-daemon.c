/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * strata-daemon: a drop-in for qemu-storage-daemon's block and QMP
 * interface.  main() only sequences the steps: parse and check the whole
 * command line (tools/daemon/daemon-opts.c), daemonize if asked, open the
 * --blockdev nodes, listen on the monitors' sockets, write the pidfile,
 * run the GLib main loop until quit or SIGTERM/SIGINT, then close
 * everything: running jobs cancelled (their events and SHUTDOWN still
 * reach the clients), images flushed and closed, locks released, sockets
 * and pidfile removed.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <glib-unix.h>

#include "daemon-opts.h"
#include "daemon-state.h"
#include "monitor/monitor.h"
#include "monitor/qmp-events.h"
#include "monitor/hmp.h"
#include "blockdev/registry.h"
#include "block/log.h"
#include "monitor/qmp-export.h"

static GMainLoop *loop;
/* SHUTDOWN's reason, QEMU's names. */
static const char *quit_reason = "host-qmp-quit";

static void quit_loop(void *opaque)
{
    g_main_loop_quit(loop);
}

static gboolean on_signal(gpointer opaque)
{
    quit_reason = "host-signal";
    g_main_loop_quit(loop);
    return G_SOURCE_CONTINUE;
}

static bool open_blockdevs(DaemonConfig *cfg)
{
    for (guint i = 0; i < cfg->blockdevs->len; i++) {
        DaemonBlockdev *b = g_ptr_array_index(cfg->blockdevs, i);
        g_autoptr(GError) err = NULL;

        if (!monitor_blockdev_add(b->options, b->keyval, &err)) {
            g_autofree char *msg = g_strdup(err->message);
            char *nl = strchr(msg, '\n');
            if (nl) {
                *nl = 0;     /* the lock hint is not part of QEMU's line */
            }
            daemon_report("--blockdev", b->arg, msg);
            return false;
        }
    }
    return true;
}

/* --nbd-server and --export, in command line order (issue 13). */
static bool open_nbd(DaemonConfig *cfg)
{
    for (guint i = 0; cfg->nbd_opts && i < cfg->nbd_opts->len; i++) {
        DaemonNbdOpt *o = g_ptr_array_index(cfg->nbd_opts, i);
        g_autoptr(GError) err = NULL;
        bool server = !strcmp(o->opt, "--nbd-server");
        bool object = !strcmp(o->opt, "--object");

        if (!(object ? monitor_object_add(o->options, o->keyval, &err)
              : server ? monitor_nbd_server_start(o->options, o->keyval, &err)
                       : monitor_export_add(o->options, o->keyval, &err))) {
            daemon_report(o->opt, o->arg, err->message);
            return false;
        }
    }
    return true;
}

/* A human monitor (mode=readline) on its chardev. */
static bool open_hmp(DaemonChardev *c, GError **errp)
{
    if (c->stdio) {
        return hmp_monitor_stdio(errp);
    }
    return c->path ? hmp_listen_unix(c->path, errp)
                   : hmp_listen_tcp(c->host, c->port, errp);
}

static bool open_monitors(DaemonConfig *cfg)
{
    for (guint i = 0; i < cfg->monitors->len; i++) {
        DaemonMonitor *m = g_ptr_array_index(cfg->monitors, i);
        DaemonChardev *c = m->chardev;
        g_autoptr(GError) err = NULL;
        bool ok;

        if (m->readline) {
            ok = open_hmp(c, &err);
        } else {
            ok = c->path ? monitor_listen_unix(c->path, &err)
                         : monitor_listen_tcp(c->host, c->port, &err);
        }

        if (!ok) {
            daemon_report("--chardev", c->arg, err->message);
            return false;
        }
    }
    return true;
}

static bool write_pidfile(const char *path)
{
    g_autofree char *text = g_strdup_printf("%d\n", (int)getpid());
    g_autoptr(GError) err = NULL;

    if (!g_file_set_contents(path, text, -1, &err)) {
        daemon_report("--pidfile", path, err->message);
        return false;
    }
    return true;
}

/*
 * --daemonize: the parent waits until the child reports that startup
 * is complete (one byte: 0 ok, 1 failed) and exits with that status, so
 * a caller sees errors as without --daemonize.  Returns in the child
 * with *report_fd set; never returns in the parent.
 */
static void daemonize(int *report_fd)
{
    int fds[2];
    pid_t pid;
    char status = 1;

    if (pipe(fds) < 0) {
        perror("strata-daemon: pipe");
        exit(1);
    }
    pid = fork();
    if (pid < 0) {
        perror("strata-daemon: fork");
        exit(1);
    }
    if (pid > 0) {
        close(fds[1]);
        if (read(fds[0], &status, 1) != 1) {
            status = 1;
        }
        _exit(status);
    }
    close(fds[0]);
    setsid();
    *report_fd = fds[1];
}

static void startup_done(int report_fd, char status)
{
    int null;

    if (report_fd < 0) {
        return;
    }
    if (status == 0) {
        /* Detach from the terminal only once errors have been shown. */
        null = open("/dev/null", O_RDWR);
        if (null >= 0) {
            dup2(null, STDIN_FILENO);
            dup2(null, STDOUT_FILENO);
            dup2(null, STDERR_FILENO);
            close(null);
        }
    }
    if (write(report_fd, &status, 1) != 1) {
        /* the parent is gone: nothing to tell */
    }
    close(report_fd);
}

static int run(DaemonConfig *cfg)
{
    int report_fd = -1;
    g_autofree char *package = g_strdup_printf("strata %s", STRATA_VERSION);

    if (cfg->daemonize) {
        daemonize(&report_fd);
    }
    monitor_set_package(package);
    qmp_events_watch_corruption();
    /* issue 14: the journal first, so the blockdevs open recovered */
    if (!daemon_state_dir_setup(cfg->state_dir) || !open_blockdevs(cfg) ||
        !open_nbd(cfg) || !open_monitors(cfg) ||
        (cfg->pidfile && !write_pidfile(cfg->pidfile))) {
        startup_done(report_fd, 1);
        return 1;
    }
    loop = g_main_loop_new(NULL, FALSE);
    monitor_set_quit_func(quit_loop, NULL);
    g_unix_signal_add(SIGTERM, on_signal, NULL);
    g_unix_signal_add(SIGINT, on_signal, NULL);
    g_unix_signal_add(SIGHUP, on_signal, NULL);
    startup_done(report_fd, 0);
    g_main_loop_run(loop);
    g_main_loop_unref(loop);
    /* Jobs end before the images close; clients hear of it. */
    monitor_jobs_shutdown();
    qmp_event_shutdown(quit_reason);
    qmp_events_flush();
    if (cfg->pidfile) {
        unlink(cfg->pidfile);
    }
    return 0;
}

int main(int argc, char **argv)
{
    g_autoptr(DaemonConfig) cfg = NULL;
    int status;

    strata_log_set_sink(strata_log_to_stderr, NULL);
    cfg = daemon_parse_args(argc, argv, &status);
    if (!cfg) {
        return status;
    }
    status = run(cfg);
    /* Clients and sockets first, then the nodes: each image is flushed
     * and closed and its locks released. */
    monitor_shutdown();
    hmp_shutdown();
    monitor_exports_shutdown();     /* NBD clients go before the nodes */
    monitor_blockdev_close_all();
    blockdev_remove_all_devices();
    return status;
}
