/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * QEMU's keyval option syntax ("driver=qcow2,file.filename=a,,b"), the
 * text of --blockdev and of the embedding API's strata_device_open(),
 * turned into a JSON object whose scalars are strings and whose dotted
 * keys are nested objects (the "keyval" input of the schema walker).
 * Moved here from strata-daemon's option parser so that the daemon and
 * libstrata share one parser.
 */
#include <string.h>

#include "monitor/keyval.h"
#include "blockdev/registry.h"

static bool err_set(GError **errp, const char *fmt, const char *a)
{
    g_set_error(errp, BLOCKDEV_ERROR, BLOCKDEV_ERROR_GENERIC, fmt, a);
    return false;
}

/* Stores value at the dotted key in obj, making the inner objects. */
static bool keyval_store(JsonObject *obj, const char *key, const char *value,
                         GError **errp)
{
    g_auto(GStrv) parts = g_strsplit(key, ".", -1);
    guint n = g_strv_length(parts);

    for (guint i = 0; i < n; i++) {
        if (!*parts[i]) {
            return err_set(errp, "Invalid parameter '%s'", key);
        }
    }
    for (guint i = 0; i + 1 < n; i++) {
        JsonNode *inner = json_object_get_member(obj, parts[i]);

        if (!inner) {
            json_object_set_object_member(obj, parts[i], json_object_new());
            inner = json_object_get_member(obj, parts[i]);
        } else if (!JSON_NODE_HOLDS_OBJECT(inner)) {
            return err_set(errp, "Parameters '%s.*' used inconsistently",
                           parts[i]);
        }
        obj = json_node_get_object(inner);
    }
    if (json_object_has_member(obj, parts[n - 1])) {
        JsonNode *old = json_object_get_member(obj, parts[n - 1]);
        if (JSON_NODE_HOLDS_OBJECT(old)) {
            return err_set(errp, "Parameters '%s.*' used inconsistently",
                           key);
        }
        /* QEMU's keyval: the last of repeated keys wins */
    }
    json_object_set_string_member(obj, parts[n - 1], value);
    return true;
}

/* The next item of text up to an unescaped ',' (",," is a comma). */
static char *keyval_item(const char **p)
{
    GString *out = g_string_new(NULL);

    while (**p) {
        if (**p == ',') {
            if ((*p)[1] != ',') {
                (*p)++;
                break;
            }
            (*p)++;
        }
        g_string_append_c(out, **p);
        (*p)++;
    }
    return g_string_free(out, FALSE);
}

JsonNode *monitor_keyval_parse(const char *text, const char *implied_key,
                              GError **errp)
{
    JsonObject *obj = json_object_new();
    JsonNode *node = json_node_init_object(json_node_alloc(), obj);
    const char *p = text;
    bool first = true;

    json_object_unref(obj);
    while (*p || first) {
        g_autofree char *item = keyval_item(&p);
        char *eq = strchr(item, '=');

        if (!eq && first && implied_key && *item) {
            json_object_set_string_member(obj, implied_key, item);
        } else if (!eq) {
            if (!*item && first && !*p) {
                break;          /* an empty text: no parameters */
            }
            err_set(errp, *item ? "Expected '=' after parameter '%s'"
                                : "Invalid parameter '%s'", item);
            json_node_unref(node);
            return NULL;
        } else {
            *eq = 0;
            if (!keyval_store(obj, item, eq + 1, errp)) {
                json_node_unref(node);
                return NULL;
            }
        }
        first = false;
    }
    return node;
}
