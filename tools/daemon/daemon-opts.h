/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * strata-daemon's command line, qemu-storage-daemon 7.2's options that
 * strata shares: --blockdev (keyval or JSON), --chardev socket (unix or
 * tcp, server=on,wait=off) or stdio, --monitor (mode=control: QMP;
 * mode=readline: the human monitor), --pidfile, --daemonize, --help,
 * --version.  Everything is parsed and checked (the --blockdev options
 * against the schema) before anything is opened.
 */
#ifndef STRATA_DAEMON_OPTS_H
#define STRATA_DAEMON_OPTS_H

#include <stdbool.h>
#include <glib.h>
#include <json-glib/json-glib.h>

typedef struct DaemonBlockdev {
    char *arg;                 /* as given, for error messages */
    JsonNode *options;         /* a BlockdevOptions object */
    bool keyval;               /* scalars are strings */
} DaemonBlockdev;

typedef struct DaemonChardev {
    char *arg;
    char *id;
    char *path;                /* unix; or NULL */
    char *host, *port;         /* tcp */
    bool stdio;                /* --chardev stdio: the terminal */
} DaemonChardev;

typedef struct DaemonMonitor {
    char *arg;
    DaemonChardev *chardev;    /* one of DaemonConfig.chardevs */
    bool readline;             /* mode=readline: the human monitor */
} DaemonMonitor;

/* --nbd-server and --export (issue 13), applied in command line order
 * after the --blockdev nodes are open. */
typedef struct DaemonNbdOpt {
    const char *opt;           /* "--nbd-server" or "--export" */
    char *arg;
    JsonNode *options;         /* NbdServerOptions / BlockExportOptions */
    bool keyval;
} DaemonNbdOpt;

typedef struct DaemonConfig {
    GPtrArray *blockdevs;      /* DaemonBlockdev *, in command line order */
    GPtrArray *chardevs;       /* DaemonChardev * */
    GPtrArray *monitors;       /* DaemonMonitor * */
    GPtrArray *nbd_opts;       /* DaemonNbdOpt * (NULL: none) */
    char *pidfile;
    bool daemonize;
    char *state_dir;           /* --state-dir (issue 14); NULL: default */
} DaemonConfig;

/*
 * Parses argv.  Returns the configuration, or NULL when the program is
 * done: *exit_status is then 0 (--help, --version printed) or 1 (an
 * error, printed on stderr as "strata-daemon: OPTION ARG: message").
 */
DaemonConfig *daemon_parse_args(int argc, char **argv, int *exit_status);
void daemon_config_free(DaemonConfig *cfg);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(DaemonConfig, daemon_config_free)

/* Prints "strata-daemon: OPTION ARG: message" on stderr. */
void daemon_report(const char *opt, const char *arg, const char *msg);

/*
 * QEMU's keyval syntax ("a=1,b.c=x,,y"; a first item without '=' is the
 * value of implied_key) as a JSON object whose scalars are strings and
 * whose dotted keys are nested objects.  NULL with errp set.
 */
JsonNode *daemon_keyval_parse(const char *text, const char *implied_key,
                              GError **errp);

#endif
