/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Filenames the way QEMU accepts them: the "json:{...}" pseudo-protocol
 * (a JSON object of block options, nested objects flattened to dotted
 * keys), protocol prefixes ("file:/path", "blkdebug:CONFIG:IMAGE") and
 * QEMU's refusal of any other prefix.  block/block.c calls these while it
 * opens a node; nothing here opens anything.
 *
 * The JSON itself is parsed by json-glib; only QEMU's messages for the
 * three kinds of malformed input a user meets most (nothing, a truncated
 * object, text after the object) are found by a look at the structure
 * first, because json-glib words them differently.
 */
#include <string.h>

#include <json-glib/json-glib.h>

#include "block/block_int.h"
#include "block/drivers.h"
#include "block/filename.h"
#include "block/json-writer.h"

bool bdrv_filename_has_protocol(const char *name)
{
    return name[strcspn(name, ":/")] == ':';
}

/* The protocol drivers that open a host path: "NAME:x" names x.  The one
 * list every prefix rule below and in block.c goes by. */
static const char *const local_drivers[] = {
    "file", "host_device", "host_cdrom", NULL
};

bool bdrv_is_local_driver(const char *drvname)
{
    return g_strv_contains(local_drivers, drvname);
}

size_t bdrv_local_prefix_len(const char *name)
{
    for (const char *const *d = local_drivers; *d; d++) {
        size_t n = strlen(*d);

        if (!strncmp(name, *d, n) && name[n] == ':') {
            return n + 1;
        }
    }
    return 0;
}

char *bdrv_local_path(const char *filename)
{
    size_t n = bdrv_local_prefix_len(filename);
    const char *rest = filename + n;

    /* "./" keeps a colon in the rest from reading as a prefix again */
    if (n && bdrv_filename_has_protocol(rest)) {
        return g_strconcat("./", rest, NULL);
    }
    return g_strdup(rest);
}

/*
 * Finds where the first JSON value of text ends, by nesting and strings
 * alone.  Returns the offset after it, -1 if the text ends inside it, -2
 * if there is no value at all.  Scalars at the top end at whitespace.
 */
static gssize json_value_end(const char *text)
{
    const char *p = text;
    int depth = 0;
    bool in_string = false, started = false;

    for (; *p; p++) {
        if (in_string) {
            if (*p == '\\' && p[1]) {
                p++;
            } else if (*p == '"') {
                in_string = false;
                if (depth == 0) {
                    return p + 1 - text;
                }
            }
            continue;
        }
        if (g_ascii_isspace(*p)) {
            if (started && depth == 0) {
                return p - text;
            }
            continue;
        }
        started = true;
        if (*p == '"') {
            in_string = true;
        } else if (*p == '{' || *p == '[') {
            depth++;
        } else if (*p == '}' || *p == ']') {
            if (--depth <= 0) {
                return p + 1 - text;
            }
        }
    }
    if (!started) {
        return -2;
    }
    return (in_string || depth > 0) ? -1 : p - text;
}

static void flatten_node(BlockOpts *opts, const char *prefix, JsonNode *node);

/*
 * One value under its dotted key.  Scalars become the strings the rest of
 * strata's option code reads ("on"/"off" for booleans, decimal numbers,
 * "null" for null: what "backing": null means); arrays get indexed keys
 * ("inject-error.0.event"), as QEMU flattens them.
 */
typedef struct FlattenCtx {
    BlockOpts *opts;
    const char *prefix;
} FlattenCtx;

static void flatten_ctx_member(JsonObject *obj, const gchar *name,
                               JsonNode *node, gpointer opaque)
{
    FlattenCtx *ctx = opaque;
    g_autofree char *key = *ctx->prefix
        ? g_strdup_printf("%s.%s", ctx->prefix, name) : g_strdup(name);

    (void)obj;
    flatten_node(ctx->opts, key, node);
}

static void flatten_node(BlockOpts *opts, const char *prefix, JsonNode *node)
{
    switch (json_node_get_node_type(node)) {
    case JSON_NODE_OBJECT: {
        FlattenCtx ctx = { opts, prefix };
        json_object_foreach_member(json_node_get_object(node),
                                   flatten_ctx_member, &ctx);
        break;
    }
    case JSON_NODE_ARRAY: {
        JsonArray *arr = json_node_get_array(node);
        for (guint i = 0; i < json_array_get_length(arr); i++) {
            g_autofree char *key = g_strdup_printf("%s.%u", prefix, i);
            flatten_node(opts, key, json_array_get_element(arr, i));
        }
        break;
    }
    case JSON_NODE_NULL:
        bdrv_opts_set(opts, prefix, "null");
        break;
    case JSON_NODE_VALUE: {
        GType t = json_node_get_value_type(node);
        g_autofree char *s = NULL;

        if (t == G_TYPE_BOOLEAN) {
            s = g_strdup(json_node_get_boolean(node) ? "on" : "off");
        } else if (t == G_TYPE_INT64) {
            s = g_strdup_printf("%" G_GINT64_FORMAT, json_node_get_int(node));
        } else if (t == G_TYPE_DOUBLE) {
            char buf[G_ASCII_DTOSTR_BUF_SIZE];
            s = g_strdup(g_ascii_dtostr(buf, sizeof(buf),
                                        json_node_get_double(node)));
        } else {
            s = g_strdup(json_node_get_string(node));
        }
        bdrv_opts_set(opts, prefix, s);
        break;
    }
    }
}

BlockOpts *bdrv_json_to_opts(const char *text, GError **errp)
{
    g_autoptr(JsonParser) parser = NULL;
    g_autoptr(GError) local_err = NULL;
    gssize end = json_value_end(text);
    JsonNode *root;
    BlockOpts *opts;

    if (end == -2) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "Could not parse the JSON options: Expecting a JSON "
                    "value");
        return NULL;
    }
    if (end == -1) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "Could not parse the JSON options: JSON parse error, "
                    "premature EOI");
        return NULL;
    }
    for (const char *p = text + end; *p; p++) {
        if (!g_ascii_isspace(*p)) {
            g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                        "Could not parse the JSON options: Expecting at "
                        "most one JSON value");
            return NULL;
        }
    }
    parser = json_parser_new_immutable();
    if (!json_parser_load_from_data(parser, text, -1, &local_err)) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "Could not parse the JSON options: JSON parse error, %s",
                    local_err->message);
        return NULL;
    }
    root = json_parser_get_root(parser);
    if (!root || !JSON_NODE_HOLDS_OBJECT(root)) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "Invalid JSON object given");
        return NULL;
    }
    opts = bdrv_opts_new();
    flatten_node(opts, "", root);
    return opts;
}

bool bdrv_filename_merge_json(const char *filename, BlockOpts *options,
                              GError **errp)
{
    BlockOpts *json;
    GHashTableIter it;
    gpointer k, v;

    g_assert(g_str_has_prefix(filename, "json:"));
    json = bdrv_json_to_opts(filename + 5, errp);
    if (!json) {
        return false;
    }
    /* Options given beside the name win over those inside it, as in
     * QEMU (e.g. -f qcow2 over a "driver" in the JSON). */
    g_hash_table_iter_init(&it, json);
    while (g_hash_table_iter_next(&it, &k, &v)) {
        if (!g_hash_table_contains(options, k)) {
            bdrv_opts_set(options, k, v);
        }
    }
    g_hash_table_unref(json);
    return true;
}

bool bdrv_filename_pick_protocol(const char *filename, BlockOpts *options,
                                 GError **errp)
{
    g_autofree char *proto = NULL;

    if (bdrv_opts_get(options, "driver")) {
        return true;
    }
    if (!bdrv_filename_has_protocol(filename)) {
        bdrv_opts_set(options, "driver", file_protocol_for(filename));
        return true;
    }
    proto = g_strndup(filename, strchr(filename, ':') - filename);
    /* issue 13: QEMU's NBD protocols, when the nbd driver is built */
    if (bdrv_find_format("nbd") && (!strcmp(proto, "nbd") ||
        !strcmp(proto, "nbd+unix") || !strcmp(proto, "nbd+tcp"))) {
        bdrv_opts_set(options, "driver", "nbd");
        return true;
    }
    /* other protocols: a registered protocol driver of that name (rbd) */
    BlockDriver *pdrv = bdrv_find_format(proto);
    if (strcmp(proto, "file") && strcmp(proto, "blkdebug") &&
        !(pdrv && pdrv->is_protocol)) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "Unknown protocol '%s'", proto);
        return false;
    }
    bdrv_opts_set(options, "driver", proto);
    return true;
}

bool bdrv_filename_strip_protocol(const char *drvname, const char *filename,
                                  BlockOpts *options, char **out,
                                  GError **errp)
{
    const char *rest, *colon;

    if (bdrv_is_local_driver(drvname) &&
        g_str_has_prefix(filename, drvname) &&
        filename[strlen(drvname)] == ':') {
        *out = g_strdup(filename + strlen(drvname) + 1);
        return true;
    }
    if (strcmp(drvname, "blkdebug") ||
        !g_str_has_prefix(filename, "blkdebug:")) {
        *out = g_strdup(filename);
        return true;
    }
    /* blkdebug:CONFIG:IMAGE, CONFIG may be empty (no rules) */
    rest = filename + strlen("blkdebug:");
    colon = strchr(rest, ':');
    if (!colon) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "blkdebug requires both config file and image path");
        return false;
    }
    if (colon != rest && !bdrv_opts_get(options, "config")) {
        g_autofree char *config = g_strndup(rest, colon - rest);
        bdrv_opts_set(options, "config", config);
    }
    *out = g_strdup(colon + 1);
    return true;
}

const char *bdrv_filename_plain(const char *name)
{
    /* Only the prefixes strata opens; the image path is what is left. */
    while (name) {
        if (bdrv_local_prefix_len(name)) {
            name += bdrv_local_prefix_len(name);
        } else if (g_str_has_prefix(name, "blkdebug:") &&
                   strchr(name + 9, ':')) {
            name = strchr(name + 9, ':') + 1;
        } else {
            break;
        }
    }
    return name;
}

/* ---- the name QEMU shows for a node ---- */

static void add_str(JsonBuilder *b, const char *key, const char *value)
{
    json_builder_set_member_name(b, key);
    json_builder_add_string_value(b, value);
}

char *bdrv_get_display_filename(BlockDriverState *bs)
{
    BlockDriverState *file = bdrv_get_file(bs);
    g_autoptr(JsonBuilder) b = NULL;
    g_autoptr(JsonNode) root = NULL;
    g_autofree char *text = NULL;
    BlockSpecificInfo si;

    bdrv_get_specific_info(bs, &si);
    if (!si.key_secret || !file) {
        return g_strdup(bdrv_get_filename(bs));
    }
    b = json_builder_new();
    json_builder_begin_object(b);
    add_str(b, si.key_secret_opt, si.key_secret);
    add_str(b, "driver", bdrv_get_format_name(bs));
    json_builder_set_member_name(b, "file");
    json_builder_begin_object(b);
    add_str(b, "driver", bdrv_get_format_name(file));
    add_str(b, "filename", bdrv_get_filename(file));
    json_builder_end_object(b);
    json_builder_end_object(b);
    root = json_builder_get_root(b);
    text = json_writer_line_qdict(root);
    return g_strconcat("json:", text, NULL);
}

bool bdrv_is_encrypted(BlockDriverState *bs)
{
    BlockSpecificInfo si;

    bdrv_get_specific_info(bs, &si);
    return si.encrypt_format != NULL;
}
