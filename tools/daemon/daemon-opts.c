/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * strata-daemon's command line: getopt_long for the option names (so a
 * misspelt option gets getopt's text, as qemu-storage-daemon's does),
 * QEMU's keyval syntax for the option values, and the checks of each
 * option with qemu-storage-daemon 7.2's error texts where it has one.
 */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "daemon-opts.h"
#include "monitor/json-stream.h"
#include "monitor/keyval.h"
#include "monitor/qapi-visit.h"
#include "blockdev/registry.h"
#include "qapi-gen.h"
#include "monitor/qmp-export.h"

#define PROG "strata-daemon"

void daemon_report(const char *opt, const char *arg, const char *msg)
{
    if (opt) {
        fprintf(stderr, PROG ": %s %s: %s\n", opt, arg, msg);
    } else {
        fprintf(stderr, PROG ": %s: %s\n", arg, msg);
    }
}

static bool err_set(GError **errp, const char *fmt, const char *a)
{
    g_set_error(errp, BLOCKDEV_ERROR, BLOCKDEV_ERROR_GENERIC, fmt, a);
    return false;
}

/* ---- keyval ---- */

/* The parser lives in the monitor library (monitor/keyval.c) so that the
 * embedding API opens devices from the same option strings. */
JsonNode *daemon_keyval_parse(const char *text, const char *implied_key,
                              GError **errp)
{
    return monitor_keyval_parse(text, implied_key, errp);
}

/* ---- the options ---- */

static void blockdev_free(DaemonBlockdev *b)
{
    g_free(b->arg);
    json_node_unref(b->options);
    g_free(b);
}

static void chardev_free(DaemonChardev *c)
{
    g_free(c->arg);
    g_free(c->id);
    g_free(c->path);
    g_free(c->host);
    g_free(c->port);
    g_free(c);
}

static void monitor_free(DaemonMonitor *m)
{
    g_free(m->arg);
    g_free(m);
}

void daemon_config_free(DaemonConfig *cfg)
{
    if (!cfg) {
        return;
    }
    g_ptr_array_unref(cfg->blockdevs);
    g_ptr_array_unref(cfg->chardevs);
    g_ptr_array_unref(cfg->monitors);
    if (cfg->nbd_opts) {
        g_ptr_array_unref(cfg->nbd_opts);
    }
    g_free(cfg->pidfile);
    g_free(cfg->state_dir);
    g_free(cfg);
}

/* --blockdev: keyval or JSON, checked against BlockdevOptions now. */
static bool parse_blockdev(DaemonConfig *cfg, const char *arg, GError **errp)
{
    bool keyval = arg[0] != '{';
    g_autoptr(JsonNode) node = keyval
        ? daemon_keyval_parse(arg, "driver", errp)
        : json_stream_parse_text(arg, errp);
    void *typed;
    DaemonBlockdev *b;

    if (!node) {
        return false;
    }
    if (!JSON_NODE_HOLDS_OBJECT(node)) {
        return err_set(errp, "%s", "JSON value must be an object");
    }
    typed = qapi_input(&qapi_type_BlockdevOptions, node, keyval, errp);
    if (!typed) {
        return false;
    }
    qapi_free(&qapi_type_BlockdevOptions, typed);
    if (!json_object_has_member(json_node_get_object(node), "node-name")) {
        return err_set(errp, "%s", "'node-name' must be specified for the "
                       "root node");
    }
    b = g_new0(DaemonBlockdev, 1);
    b->arg = g_strdup(arg);
    b->options = g_steal_pointer(&node);
    b->keyval = keyval;
    g_ptr_array_add(cfg->blockdevs, b);
    return true;
}

static DaemonChardev *find_chardev(DaemonConfig *cfg, const char *id)
{
    for (guint i = 0; i < cfg->chardevs->len; i++) {
        DaemonChardev *c = g_ptr_array_index(cfg->chardevs, i);
        if (!strcmp(c->id, id)) {
            return c;
        }
    }
    return NULL;
}

/* A string member of a keyval object; NULL if absent. */
static const char *kv(JsonObject *o, const char *key)
{
    JsonNode *n = json_object_get_member(o, key);

    return n && JSON_NODE_HOLDS_VALUE(n) ? json_node_get_string(n) : NULL;
}

static bool kv_bool(JsonObject *o, const char *key, bool def, bool *out,
                    GError **errp)
{
    const char *v = kv(o, key);

    if (!v) {
        *out = def;
    } else if (!strcmp(v, "on") || !strcmp(v, "true")) {
        *out = true;
    } else if (!strcmp(v, "off") || !strcmp(v, "false")) {
        *out = false;
    } else {
        g_set_error(errp, BLOCKDEV_ERROR, BLOCKDEV_ERROR_GENERIC,
                    "Parameter '%s' expects 'on' or 'off'", key);
        return false;
    }
    return true;
}

/* --chardev stdio,id=ID: the terminal (for a readline monitor); one. */
static bool add_stdio_chardev(DaemonConfig *cfg, const char *arg,
                              JsonObject *o, GError **errp)
{
    DaemonChardev *c;

    if (kv(o, "path") || kv(o, "host") || kv(o, "port") ||
        kv(o, "server") || kv(o, "wait")) {
        return err_set(errp, "%s", "Invalid parameter for a stdio "
                       "chardev");
    }
    if (find_chardev(cfg, kv(o, "id"))) {
        return err_set(errp, "%s", "duplicate yank instance");
    }
    for (guint i = 0; i < cfg->chardevs->len; i++) {
        if (((DaemonChardev *)g_ptr_array_index(cfg->chardevs, i))->stdio) {
            return err_set(errp, "%s", "cannot use stdio by multiple "
                           "character devices");
        }
    }
    c = g_new0(DaemonChardev, 1);
    c->arg = g_strdup(arg);
    c->id = g_strdup(kv(o, "id"));
    c->stdio = true;
    g_ptr_array_add(cfg->chardevs, c);
    return true;
}

/* --chardev socket,id=ID,path=P|host=H,port=N,server=on,wait=off */
static bool parse_chardev(DaemonConfig *cfg, const char *arg, GError **errp)
{
    static const char *const known[] = {
        "backend", "id", "path", "host", "port", "server", "wait", NULL,
    };
    g_autoptr(JsonNode) node = daemon_keyval_parse(arg, "backend", errp);
    g_autoptr(GList) keys = NULL;
    JsonObject *o;
    DaemonChardev *c;
    bool server, wait;

    if (!node) {
        return false;
    }
    o = json_node_get_object(node);
    keys = json_object_get_members(o);
    for (GList *l = keys; l; l = l->next) {
        if (!g_strv_contains(known, l->data) ||
            JSON_NODE_HOLDS_OBJECT(json_object_get_member(o, l->data))) {
            return err_set(errp, "Invalid parameter '%s'", l->data);
        }
    }
    if (!kv(o, "id")) {
        return err_set(errp, "%s", "chardev: no id specified");
    }
    if (!blockdev_id_wellformed(kv(o, "id"))) {
        return err_set(errp, "%s", "Parameter 'id' expects an identifier\n"
                       "Identifiers consist of letters, digits, '-', '.', "
                       "'_', starting with a letter.");
    }
    if (kv(o, "backend") && !strcmp(kv(o, "backend"), "stdio")) {
        return add_stdio_chardev(cfg, arg, o, errp);
    }
    if (!kv(o, "backend") || strcmp(kv(o, "backend"), "socket")) {
        return err_set(errp, "'%s' is not a valid char driver name",
                       kv(o, "backend") ? kv(o, "backend") : "");
    }
    if (find_chardev(cfg, kv(o, "id"))) {
        /* QEMU's text: its per-chardev "yank" registration refuses it */
        return err_set(errp, "%s", "duplicate yank instance");
    }
    if (!kv_bool(o, "server", false, &server, errp) ||
        !kv_bool(o, "wait", true, &wait, errp)) {
        return false;
    }
    if (!kv(o, "path") && !kv(o, "host") && !kv(o, "port")) {
        return err_set(errp, "%s", "Unable to parse FD number ");
    }
    if (kv(o, "path") && (kv(o, "host") || kv(o, "port"))) {
        return err_set(errp, "%s", "'path' and 'host'/'port' cannot be "
                       "used together");
    }
    if (!kv(o, "path") && !kv(o, "port")) {
        return err_set(errp, "%s", "chardev: socket: no port given");
    }
    /* strata-daemon listens; it never connects out nor waits for a
     * client before starting. */
    if (!server) {
        return err_set(errp, "%s", "strata-daemon supports only "
                       "server=on sockets");
    }
    if (wait) {
        return err_set(errp, "%s", "strata-daemon supports only wait=off "
                       "server sockets");
    }
    c = g_new0(DaemonChardev, 1);
    c->arg = g_strdup(arg);
    c->id = g_strdup(kv(o, "id"));
    c->path = g_strdup(kv(o, "path"));
    c->host = g_strdup(kv(o, "host"));
    c->port = g_strdup(kv(o, "port"));
    g_ptr_array_add(cfg->chardevs, c);
    return true;
}

/* --monitor [chardev=]ID[,mode=control|readline][,pretty=off] */
static bool parse_monitor(DaemonConfig *cfg, const char *arg, GError **errp)
{
    g_autoptr(JsonNode) node = daemon_keyval_parse(arg, "chardev", errp);
    g_autoptr(GList) keys = NULL;
    JsonObject *o;
    DaemonMonitor *m;
    DaemonChardev *c;
    bool pretty, readline;

    if (!node) {
        return false;
    }
    o = json_node_get_object(node);
    keys = json_object_get_members(o);
    for (GList *l = keys; l; l = l->next) {
        static const char *const known[] = { "chardev", "mode", "pretty",
                                             "id", NULL };
        if (!g_strv_contains(known, l->data)) {
            return err_set(errp, "Parameter '%s' is unexpected", l->data);
        }
    }
    if (!kv(o, "chardev")) {
        return err_set(errp, "%s", "Parameter 'chardev' is missing");
    }
    c = find_chardev(cfg, kv(o, "chardev"));
    if (!c) {
        return err_set(errp, "chardev \"%s\" not found", kv(o, "chardev"));
    }
    if (kv(o, "mode") && strcmp(kv(o, "mode"), "control") &&
        strcmp(kv(o, "mode"), "readline")) {
        return err_set(errp, "Parameter 'mode' does not accept value "
                       "'%s'", kv(o, "mode"));
    }
    readline = kv(o, "mode") && !strcmp(kv(o, "mode"), "readline");
    if (c->stdio && !readline) {
        return err_set(errp, "%s", "strata-daemon supports QMP on sockets "
                       "only; use mode=readline on stdio");
    }
    if (!kv_bool(o, "pretty", false, &pretty, errp)) {
        return false;
    }
    if (pretty) {
        return err_set(errp, "%s", "strata-daemon does not pretty-print "
                       "QMP (pretty=on)");
    }
    m = g_new0(DaemonMonitor, 1);
    m->arg = g_strdup(arg);
    m->chardev = c;
    m->readline = readline;
    g_ptr_array_add(cfg->monitors, m);
    return true;
}

/* ---- --nbd-server and --export (issue 13) ---- */

static void nbd_opt_free(DaemonNbdOpt *o)
{
    g_free(o->arg);
    json_node_unref(o->options);
    g_free(o);
}

static bool is_secret(JsonNode *node)
{
    JsonNode *t = json_object_get_member(json_node_get_object(node),
                                         "qom-type");

    return t && JSON_NODE_HOLDS_VALUE(t) &&
           json_node_get_value_type(t) == G_TYPE_STRING &&
           !strcmp(json_node_get_string(t), "secret");
}

/* --nbd-server, --export and --object tls-creds-x509 (the NBD server's
 * TLS credentials): keyval (or JSON, as qemu-storage-daemon takes it),
 * checked against the schema now, applied after the nodes are open. */
static bool parse_nbd_opt(DaemonConfig *cfg, const char *opt,
                          const char *arg, GError **errp)
{
    bool server = !strcmp(opt, "--nbd-server");
    bool object = !strcmp(opt, "--object");
    bool keyval = arg[0] != '{';
    g_autoptr(JsonNode) node = keyval
        ? daemon_keyval_parse(arg, server ? NULL : object ? "qom-type"
                                                          : "type", errp)
        : json_stream_parse_text(arg, errp);
    DaemonNbdOpt *o;

    if (!node) {
        return false;
    }
    if (!JSON_NODE_HOLDS_OBJECT(node)) {
        return err_set(errp, "%s", "JSON value must be an object");
    }
    if (object ? !monitor_object_check(node, keyval, errp)
        : server ? !monitor_nbd_server_check(node, keyval, errp)
                 : !monitor_export_check(node, keyval, errp)) {
        return false;
    }
    /* A secret is needed by the --blockdev nodes, which open before the
     * NBD objects are applied: it is added now. */
    if (object && is_secret(node)) {
        return monitor_object_add(node, keyval, errp);
    }
    if (!cfg->nbd_opts) {
        cfg->nbd_opts = g_ptr_array_new_with_free_func(
            (GDestroyNotify)nbd_opt_free);
    }
    o = g_new0(DaemonNbdOpt, 1);
    o->opt = object ? "--object" : server ? "--nbd-server" : "--export";
    o->arg = g_strdup(arg);
    o->options = g_steal_pointer(&node);
    o->keyval = keyval;
    g_ptr_array_add(cfg->nbd_opts, o);
    return true;
}

static void print_help(void)
{
    printf("Usage: " PROG " [options]\n"
           "strata storage daemon: qemu-storage-daemon's block and QMP "
           "interface\n"
           "\n"
           "  -h, --help             display this help and exit\n"
           "  -V, --version          output version information and exit\n"
           "\n"
           "  --blockdev [driver=]<driver>,node-name=<N>[,read-only=on|off]\n"
           "             [,cache.direct=on|off][,cache.no-flush=on|off]\n"
           "             [,force-share=on|off][,driver specific "
           "parameters...]\n"
           "  --blockdev '{\"driver\": ..., \"node-name\": ...}'\n"
           "                         open a block node (drivers: qcow2, "
           "raw, file)\n"
           "\n"
           "  --chardev socket,id=<id>,path=<path>,server=on,wait=off\n"
           "  --chardev socket,id=<id>,host=<addr>,port=<port>,server=on,"
           "wait=off\n"
           "  --chardev stdio,id=<id>\n"
           "                         a socket for a monitor (unix: mode "
           "0600; tcp: loopback\n"
           "                         unless host= names an address)\n"
           "\n"
           "  --daemonize            daemonize the process, and have the "
           "parent exit\n"
           "                         once startup is complete\n"
           "\n"
           "  --monitor [chardev=]<id>[,mode=control|readline]\n"
           "                         configure a QMP monitor (control) or "
           "a human\n"
           "                         monitor (readline)\n"
           "\n"
           "  --pidfile <path>       write process ID to a file after "
           "startup\n"
           "\n"
           "  --nbd-server addr.type=inet,addr.host=<host>,addr.port=<port>"
           "\n"
           "             [,max-connections=<n>]\n"
           "  --nbd-server addr.type=unix,addr.path=<path>"
           "[,max-connections=<n>]\n"
           "             [,tls-creds=<id>][,tls-authz=<id>]\n"
           "                         start an NBD server (TCP: loopback "
           "unless\n"
           "                         addr.host names an address)\n"
           "\n"
           "  --export [type=]nbd,id=<id>,node-name=<node-name>"
           "[,name=<export-name>]\n"
           "           [,writable=on|off][,writethrough=on|off]"
           "[,description=<text>]\n"
           "                         export a block node over NBD\n"
           "\n"
           "  --object tls-creds-x509,id=<id>,dir=<dir>,endpoint=server"
           "[,verify-peer=on|off]\n"
           "                         TLS credentials for --nbd-server "
           "tls-creds=<id>\n"
           "  --object authz-simple,id=<id>,identity=<DN>\n"
           "                         the only client --nbd-server "
           "tls-authz=<id> admits\n"
           "  --object secret,id=<id>,data=<text>|file=<path>"
           "[,format=raw|base64]\n"
           "                         a key that encrypt.key-secret=<id> "
           "names\n"
           "\n"
           "  --state-dir <dir>      journal of crash-atomic transactions "
           "(default:\n"
           "                         $STRATA_STATE_DIR if set, else "
           "/var/lib/strata for\n"
           "                         root, else $XDG_STATE_HOME/strata; "
           "'' for none)\n");
}

enum {
    OPT_BLOCKDEV = 256, OPT_CHARDEV, OPT_MONITOR, OPT_PIDFILE,
    OPT_DAEMONIZE, OPT_EXPORT, OPT_NBD_SERVER, OPT_OBJECT,
    OPT_STATE_DIR,
};

static const struct option long_options[] = {
    { "help", no_argument, NULL, 'h' },
    { "version", no_argument, NULL, 'V' },
    { "trace", required_argument, NULL, 'T' },
    { "blockdev", required_argument, NULL, OPT_BLOCKDEV },
    { "chardev", required_argument, NULL, OPT_CHARDEV },
    { "monitor", required_argument, NULL, OPT_MONITOR },
    { "pidfile", required_argument, NULL, OPT_PIDFILE },
    { "daemonize", no_argument, NULL, OPT_DAEMONIZE },
    { "export", required_argument, NULL, OPT_EXPORT },
    { "nbd-server", required_argument, NULL, OPT_NBD_SERVER },
    { "object", required_argument, NULL, OPT_OBJECT },
    { "state-dir", required_argument, NULL, OPT_STATE_DIR },
    { NULL, 0, NULL, 0 },
};

static const char *option_name(int c)
{
    for (const struct option *o = long_options; o->name; o++) {
        if (o->val == c) {
            return o->name;
        }
    }
    return "?";
}

/* One option with its argument; false (error printed) to stop. */
static bool handle_option(DaemonConfig *cfg, int c, const char *arg)
{
    g_autoptr(GError) err = NULL;
    g_autofree char *opt = g_strdup_printf("--%s", option_name(c));
    bool ok;

    switch (c) {
    case OPT_BLOCKDEV:
        ok = parse_blockdev(cfg, arg, &err);
        break;
    case OPT_CHARDEV:
        ok = parse_chardev(cfg, arg, &err);
        break;
    case OPT_MONITOR:
        ok = parse_monitor(cfg, arg, &err);
        break;
    case OPT_PIDFILE:
        g_free(cfg->pidfile);
        cfg->pidfile = g_strdup(arg);
        return true;
    case OPT_DAEMONIZE:
        cfg->daemonize = true;
        return true;
    case OPT_NBD_SERVER:
    case OPT_EXPORT:
    case OPT_OBJECT:
        ok = parse_nbd_opt(cfg, opt, arg, &err);
        break;
    case OPT_STATE_DIR:
        g_free(cfg->state_dir);
        cfg->state_dir = g_strdup(arg);
        return true;
    default:
        /* qemu-storage-daemon options strata has no subsystem for */
        daemon_report(opt, arg, "not supported by strata-daemon");
        return false;
    }
    if (!ok) {
        daemon_report(opt, arg, err->message);
    }
    return ok;
}

DaemonConfig *daemon_parse_args(int argc, char **argv, int *exit_status)
{
    g_autoptr(DaemonConfig) cfg = g_new0(DaemonConfig, 1);
    int c;

    cfg->blockdevs = g_ptr_array_new_with_free_func(
        (GDestroyNotify)blockdev_free);
    cfg->chardevs = g_ptr_array_new_with_free_func(
        (GDestroyNotify)chardev_free);
    cfg->monitors = g_ptr_array_new_with_free_func(
        (GDestroyNotify)monitor_free);
    *exit_status = 1;
    /* '-' first: non-options come back in order, as QEMU reports them */
    while ((c = getopt_long(argc, argv, "-hVT:", long_options, NULL)) != -1) {
        switch (c) {
        case 'h':
            print_help();
            *exit_status = 0;
            return NULL;
        case 'V':
            printf(PROG " version %s\n", STRATA_VERSION);
            printf("QMP compatible with qemu-storage-daemon 7.2\n");
            *exit_status = 0;
            return NULL;
        case 1:
            daemon_report(NULL, optarg, "Unexpected argument");
            return NULL;
        case '?':
            return NULL;        /* getopt printed why */
        default:
            if (!handle_option(cfg, c, optarg)) {
                return NULL;
            }
        }
    }
    for (guint i = 0; cfg->daemonize && i < cfg->chardevs->len; i++) {
        DaemonChardev *ch = g_ptr_array_index(cfg->chardevs, i);
        if (ch->stdio) {
            /* a daemon has no terminal (QEMU's refusal and text) */
            daemon_report("--chardev", ch->arg,
                          "cannot use stdio with -daemonize");
            return NULL;
        }
    }
    *exit_status = 0;
    return g_steal_pointer(&cfg);
}
