/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The human monitor's command line: the command table, the parser of a
 * line into a command and its arguments (QEMU 7.2's rules and texts:
 * words or "quoted strings" with \n \r \\ \' \" escapes, -x flags,
 * optional trailing arguments, "extraneous characters at the end of
 * line"), help, and QMP's human-monitor-command, which runs a line and
 * returns what it printed.
 */
#include <string.h>

#include "monitor/hmp-int.h"
#include "monitor/monitor-int.h"
#include "blockdev/registry.h"
#include "qapi-gen.h"

/* QEMU reads each argument into a 1024-byte buffer and silently drops
 * the rest; we keep the same bound so the same lines mean the same. */
#define HMP_ARG_MAX 1023

/* The help texts are QEMU's (they are output `help` prints); the
 * commands in QEMU's order, by name. */
static const HmpCommand hmp_cmds[] = {
    { "commit", "device:B", "device|all", "commit changes to the disk "
      "images (if -snapshot is used) or backing files", hmp_commit, NULL },
    { "delvm", "name:s", "tag", "delete a VM snapshot from its tag",
      hmp_delvm, NULL },
    { "help|?", "name:S?", "[cmd]", "show the help", hmp_help, NULL },
    { "info", "item:s?", "[subcommand]", "show various information about "
      "the system state", NULL, hmp_info_cmds },
    { "loadvm", "name:s", "tag", "restore a VM snapshot from its tag",
      hmp_loadvm, NULL },
    { "object_add", "object:S", "[qom-type=]type,id=str[,prop=value][,...]",
      "create QOM object", hmp_object_add, NULL },
    { "object_del", "id:s", "id", "destroy QOM object", hmp_object_del,
      NULL },
    { "quit|q", "", "", "quit the emulator", hmp_quit, NULL },
    { "savevm", "name:s?", "tag", "save a VM snapshot. If no tag is "
      "provided, a new snapshot is created", hmp_savevm, NULL },
    { "snapshot_blkdev", "reuse:-n,device:B,snapshot-file:s?,format:s?",
      "[-n] device [new-image-file] [format]",
      "initiates a live snapshot\n\t\t\t"
      "of device. If a new image file is specified, the\n\t\t\t"
      "new image file will become the new root image.\n\t\t\t"
      "If format is specified, the snapshot file will\n\t\t\t"
      "be created in that format.\n\t\t\t"
      "The default format is qcow2.  The -n flag requests QEMU\n\t\t\t"
      "to reuse the image found in new-image-file, instead of\n\t\t\t"
      "recreating it from scratch.", hmp_snapshot_blkdev, NULL },
    { "snapshot_blkdev_internal", "device:B,name:s", "device name",
      "take an internal snapshot of device.\n\t\t\t"
      "The format of the image used by device must\n\t\t\t"
      "support it, such as qcow2.\n\t\t\t",
      hmp_snapshot_blkdev_internal, NULL },
    { "snapshot_delete_blkdev_internal", "device:B,name:s,id:s?",
      "device name [id]",
      "delete an internal snapshot of device.\n\t\t\t"
      "If id is specified, qemu will try delete\n\t\t\t"
      "the snapshot matching both id and name.\n\t\t\t"
      "The format of the image used by device must\n\t\t\t"
      "support it, such as qcow2.\n\t\t\t",
      hmp_snapshot_delete_blkdev_internal, NULL },
    { NULL },
};

void hmp_print_error(GString *out, const GError *err)
{
    g_autofree char *msg = g_strdup(err->message);
    char *nl = strchr(msg, '\n');

    if (nl) {
        *nl = 0;        /* a lock error's hint line is not QEMU's text */
    }
    g_string_append_printf(out, "Error: %s\n", msg);
}

JsonNode *hmp_call_qmp(const char *command, JsonObject *args, GError **errp)
{
    JsonObject *req = json_object_new();
    g_autoptr(JsonNode) node = NULL;
    g_autoptr(JsonNode) reply = NULL;
    JsonObject *r;

    json_object_set_string_member(req, "execute", command);
    if (args) {
        json_object_set_object_member(req, "arguments", args);
    }
    node = json_node_init_object(json_node_alloc(), req);
    json_object_unref(req);
    reply = monitor_handle_request(node, NULL);
    r = json_node_get_object(reply);
    if (json_object_has_member(r, "error")) {
        JsonObject *e = json_object_get_object_member(r, "error");
        g_set_error_literal(errp, BLOCKDEV_ERROR, BLOCKDEV_ERROR_GENERIC,
                            json_object_get_string_member(e, "desc"));
        return NULL;
    }
    return json_node_copy(json_object_get_member(r, "return"));
}

/* "a|b" names a command a with the alias b. */
static bool name_matches(const char *names, const char *word)
{
    g_auto(GStrv) alt = g_strsplit(names, "|", -1);

    return g_strv_contains((const char *const *)alt, word);
}

static const HmpCommand *find_command(const HmpCommand *table,
                                      const char *word)
{
    for (const HmpCommand *c = table; c->name; c++) {
        if (name_matches(c->name, word)) {
            return c;
        }
    }
    return NULL;
}

static const char *skip_space(const char *p)
{
    while (g_ascii_isspace(*p)) {
        p++;
    }
    return p;
}

/*
 * The next argument at *pp: a word, or a quoted string with escapes.
 * NULL at the end of the line or on a bad quoted string (then *msg says
 * why, as QEMU prints it before the command's own message).
 */
static char *next_word(const char **pp, const char **msg)
{
    const char *p = skip_space(*pp);
    GString *s = g_string_new(NULL);

    *msg = NULL;
    if (!*p) {
        goto fail;
    }
    if (*p != '"') {
        while (*p && !g_ascii_isspace(*p)) {
            if (s->len < HMP_ARG_MAX) {
                g_string_append_c(s, *p);
            }
            p++;
        }
        *pp = p;
        return g_string_free(s, FALSE);
    }
    for (p++; *p && *p != '"'; p++) {
        char c = *p;

        if (c == '\\') {
            c = *++p;
            if (c == 'n') {
                c = '\n';
            } else if (c == 'r') {
                c = '\r';
            } else if (c != '\\' && c != '\'' && c != '"') {
                *msg = "unsupported escape code";
                goto fail;
            }
        }
        if (s->len < HMP_ARG_MAX) {
            g_string_append_c(s, c);
        }
    }
    if (*p != '"') {
        *msg = "unterminated string";
        goto fail;
    }
    *pp = p + 1;
    return g_string_free(s, FALSE);
fail:
    g_string_free(s, TRUE);
    return NULL;
}

static void usage_error(GString *out, const HmpCommand *cmd,
                        const char *what)
{
    g_autofree char *name = g_strdup(cmd->name);

    *strchrnul(name, '|') = 0;
    g_string_append_printf(out, "%s: %s\n", name, what);
}

/* Whether -c is one of the command's flags (some "key:-c" item). */
static bool is_flag_of(const HmpCommand *cmd, char c)
{
    g_autofree char *pattern = g_strdup_printf(":-%c", c);

    return c && strstr(cmd->args_type, pattern);
}

/* One "key:T" item of args_type against the line at *pp. */
static bool parse_item(GString *out, const HmpCommand *cmd,
                       const char *item, const char **pp, GHashTable *args)
{
    g_autofree char *key = g_strndup(item, strchr(item, ':') - item);
    const char *type = strchr(item, ':') + 1;
    bool optional = type[1] == '?';
    const char *p = skip_space(*pp);

    if (type[0] == '-') {
        if (p[0] == '-' && p[1] == type[1]) {
            g_hash_table_insert(args, g_steal_pointer(&key), g_strdup("on"));
            *pp = p + 2;
        } else if (p[0] == '-' && p[1] && !is_flag_of(cmd, p[1])) {
            /* (a lone "-" is a word, as in QEMU) */
            g_autofree char *m = g_strdup_printf("unsupported option -%c",
                                                 p[1]);
            usage_error(out, cmd, m);
            return false;
        }
        return true;
    }
    if (optional && !*p) {
        return true;
    }
    if (type[0] == 'S') {
        g_hash_table_insert(args, g_steal_pointer(&key), g_strdup(p));
        *pp = p + strlen(p);
        return true;
    }
    {
        const char *msg;
        char *word = next_word(&p, &msg);

        if (!word) {
            /* QEMU prints msg (a bad quoted string) on its process's
             * stdout, not on the monitor: only the usage line here. */
            usage_error(out, cmd, type[0] == 'B' ? "block device name "
                        "expected" : "string expected");
            return false;
        }
        g_hash_table_insert(args, g_steal_pointer(&key), word);
    }
    *pp = p;
    return true;
}

static void try_help(GString *out, const char *prefix, const HmpCommand *cmd)
{
    g_autofree char *name = g_strdup(cmd->name);

    *strchrnul(name, '|') = 0;
    g_string_append_printf(out, "Try \"help %s%s\" for more information\n",
                           prefix, name);
}

static GHashTable *parse_args(GString *out, const char *prefix,
                              const HmpCommand *cmd, const char *p)
{
    g_autoptr(GHashTable) args = g_hash_table_new_full(g_str_hash,
                                                       g_str_equal, g_free,
                                                       g_free);
    g_auto(GStrv) items = g_strsplit(cmd->args_type, ",", -1);

    for (guint i = 0; items[i] && *items[i]; i++) {
        if (!parse_item(out, cmd, items[i], &p, args)) {
            try_help(out, prefix, cmd);
            return NULL;
        }
    }
    if (*skip_space(p)) {
        usage_error(out, cmd, "extraneous characters at the end of line");
        try_help(out, prefix, cmd);
        return NULL;
    }
    return g_steal_pointer(&args);
}

/* The command word at *pp (letters up to a blank); NULL if none. */
static char *command_word(const char **pp)
{
    const char *p = skip_space(*pp);
    const char *start = p;

    while (*p && !g_ascii_isspace(*p)) {
        p++;
    }
    *pp = p;
    return p > start ? g_strndup(start, p - start) : NULL;
}

static void help_one(GString *out, const char *prefix, const HmpCommand *c)
{
    g_autofree char *name = g_strdup(c->name);

    g_string_append_printf(out, "%s%s %s -- %s\n", prefix, name, c->params,
                           c->help);
}

static void help_table(GString *out, const char *prefix,
                       const HmpCommand *table)
{
    for (const HmpCommand *c = table; c->name; c++) {
        help_one(out, prefix, c);
    }
}

void hmp_help(GString *out, GHashTable *args)
{
    const char *what = g_hash_table_lookup(args, "name");
    g_auto(GStrv) words = NULL;
    const HmpCommand *c;

    if (!what) {
        help_table(out, "", hmp_cmds);
        return;
    }
    {
    g_autofree char *text = g_strstrip(g_strdup(what));

    words = g_strsplit_set(text, " \t", -1);
    }
    c = find_command(hmp_cmds, words[0]);
    if (c && c->sub && words[1] && *words[1]) {
        const HmpCommand *s = find_command(c->sub, words[1]);
        if (s) {
            help_one(out, "info ", s);
            return;
        }
        g_string_append_printf(out, "unknown command: '%s %s'\n", words[0],
                               words[1]);
        return;
    }
    if (c && c->sub) {
        help_table(out, "info ", c->sub);
    } else if (c) {
        help_one(out, "", c);
    } else {
        g_string_append_printf(out, "unknown command: '%s'\n", words[0]);
    }
}

char *hmp_execute(const char *line)
{
    GString *out = g_string_new(NULL);
    const char *p = line;
    const char *prefix = "";
    g_autofree char *word = command_word(&p);
    const HmpCommand *cmd;
    g_autoptr(GHashTable) args = NULL;

    if (!word) {
        return g_string_free(out, FALSE);
    }
    cmd = find_command(hmp_cmds, word);
    if (cmd && cmd->sub) {
        g_autofree char *sub = command_word(&p);

        if (!sub) {
            help_table(out, "info ", cmd->sub);
            return g_string_free(out, FALSE);
        }
        prefix = "info ";
        cmd = find_command(cmd->sub, sub);
    }
    if (!cmd) {
        g_string_append_printf(out, "unknown command: '%.*s'\n",
                               (int)(p - skip_space(line)), skip_space(line));
        return g_string_free(out, FALSE);
    }
    args = parse_args(out, prefix, cmd, p);
    if (args) {
        cmd->fn(out, args);
    }
    return g_string_free(out, FALSE);
}

/* Lines ended by "\n" to CRLF, as QEMU's monitor sends them. */
static char *to_crlf(const char *text)
{
    GString *s = g_string_new(NULL);

    for (const char *p = text; *p; p++) {
        if (*p == '\n') {
            g_string_append_c(s, '\r');
        }
        g_string_append_c(s, *p);
    }
    return g_string_free(s, FALSE);
}

JsonNode *qmp_human_monitor_command(
    const q_obj_human_monitor_command_arg *args, GError **errp)
{
    g_autofree char *text = NULL;
    g_autofree char *crlf = NULL;
    JsonNode *ret;

    /* cpu-index selects a vCPU; strata-daemon has none, as QEMU -M none
     * has none, and both refuse every index alike. */
    if (args->has_cpu_index) {
        g_set_error(errp, BLOCKDEV_ERROR, BLOCKDEV_ERROR_GENERIC,
                    "Parameter 'cpu-index' expects a CPU number");
        return NULL;
    }
    text = hmp_execute(args->command_line);
    crlf = to_crlf(text);
    ret = json_node_new(JSON_NODE_VALUE);
    json_node_set_string(ret, crlf);
    return ret;
}

char *hmp_text_to_crlf(const char *text)
{
    return to_crlf(text);
}
