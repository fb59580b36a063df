/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * QEMU's JSON text for json-glib trees (include/block/json-writer.h):
 * one writer for the monitor's replies and for strata-img's
 * --output=json, which differ only in layout and member order.
 */
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "block/json-writer.h"

/* ---- member order ---- */

/*
 * QEMU's QDict has 512 buckets; a key's bucket comes from the hash below
 * (from the TDB database), iteration walks buckets in order and each
 * bucket newest-first.  Sorting by bucket reproduces QEMU's key order.
 */
#define QDICT_BUCKETS 512

static unsigned qdict_bucket(const char *key)
{
    unsigned value = 0x238F13AFu * (unsigned)strlen(key);

    for (unsigned i = 0; key[i]; i++) {
        value += (unsigned)(unsigned char)key[i] << (i * 5 % 24);
    }
    return (1103515243u * value + 12345u) % QDICT_BUCKETS;
}

typedef struct {
    const char *name;
    unsigned bucket;
    int index;   /* insertion order */
} Member;

static int member_cmp(const void *a, const void *b)
{
    const Member *x = a, *y = b;

    if (x->bucket != y->bucket) {
        return x->bucket < y->bucket ? -1 : 1;
    }
    return y->index - x->index; /* same bucket: newest first */
}

GPtrArray *json_writer_qdict_order(JsonObject *obj)
{
    GList *names = json_object_get_members(obj);
    guint n = g_list_length(names);
    g_autofree Member *m = g_new(Member, n ? n : 1);
    GPtrArray *out = g_ptr_array_sized_new(n);
    int i = 0;

    for (GList *l = names; l; l = l->next, i++) {
        m[i].name = l->data;
        m[i].bucket = qdict_bucket(l->data);
        m[i].index = i;
    }
    g_list_free(names);
    qsort(m, n, sizeof(*m), member_cmp);
    for (guint k = 0; k < n; k++) {
        g_ptr_array_add(out, (gpointer)m[k].name);
    }
    return out;
}

static GPtrArray *insertion_order(JsonObject *obj)
{
    GList *names = json_object_get_members(obj);
    GPtrArray *out = g_ptr_array_new();

    for (GList *l = names; l; l = l->next) {
        g_ptr_array_add(out, l->data);
    }
    g_list_free(names);
    return out;
}

/* ---- scalars ---- */

static void write_string(GString *out, const char *s)
{
    const char *end = s + strlen(s);

    g_string_append_c(out, '"');
    for (const char *p = s; *p;) {
        gunichar c = g_utf8_get_char_validated(p, end - p);

        /* Invalid UTF-8 (a stray byte quoted in an error message) comes
         * out as U+FFFD, one per byte, never read past. */
        if (c == (gunichar)-1 || c == (gunichar)-2) {
            c = 0xfffd;
            p++;
        } else {
            p = g_utf8_next_char(p);
        }

        switch (c) {
        case '"': g_string_append(out, "\\\""); break;
        case '\\': g_string_append(out, "\\\\"); break;
        case '\b': g_string_append(out, "\\b"); break;
        case '\f': g_string_append(out, "\\f"); break;
        case '\n': g_string_append(out, "\\n"); break;
        case '\r': g_string_append(out, "\\r"); break;
        case '\t': g_string_append(out, "\\t"); break;
        default:
            if (c >= 0x20 && c < 0x7f) {
                g_string_append_c(out, (char)c);
            } else if (c < 0x10000) {
                g_string_append_printf(out, "\\u%04X", c);
            } else {
                c -= 0x10000;
                g_string_append_printf(out, "\\u%04X\\u%04X",
                                       0xd800 + (c >> 10),
                                       0xdc00 + (c & 0x3ff));
            }
        }
    }
    g_string_append_c(out, '"');
}

static void write_scalar(GString *out, JsonNode *node)
{
    if (JSON_NODE_TYPE(node) == JSON_NODE_NULL) {
        g_string_append(out, "null");
        return;
    }
    switch (json_node_get_value_type(node)) {
    case G_TYPE_INT64:
        g_string_append_printf(out, "%" G_GINT64_FORMAT,
                               json_node_get_int(node));
        break;
    case G_TYPE_DOUBLE: {
        char buf[G_ASCII_DTOSTR_BUF_SIZE];

        g_ascii_formatd(buf, sizeof(buf), "%.17g", json_node_get_double(node));
        g_string_append(out, buf);
        break;
    }
    case G_TYPE_BOOLEAN:
        g_string_append(out, json_node_get_boolean(node) ? "true" : "false");
        break;
    case G_TYPE_STRING:
        write_string(out, json_node_get_string(node));
        break;
    default:
        g_string_append(out, "null");
    }
}

/* ---- containers ---- */

typedef struct Layout {
    bool pretty;         /* one member/element per line, indented */
    GPtrArray *(*members)(JsonObject *obj);
} Layout;

static void newline(GString *out, const Layout *l, int indent)
{
    if (!l->pretty) {
        return;
    }
    g_string_append_c(out, '\n');
    for (int i = 0; i < indent; i++) {
        g_string_append(out, "    ");
    }
}

static void write_node(GString *out, const Layout *l, JsonNode *node,
                       int indent);

static void separator(GString *out, const Layout *l, guint k, int indent)
{
    if (k) {
        g_string_append(out, l->pretty ? "," : ", ");
    }
    newline(out, l, indent);
}

static void write_object(GString *out, const Layout *l, JsonObject *obj,
                         int indent)
{
    g_autoptr(GPtrArray) names = l->members(obj);

    g_string_append_c(out, '{');
    for (guint k = 0; k < names->len; k++) {
        const char *name = g_ptr_array_index(names, k);

        separator(out, l, k, indent + 1);
        write_string(out, name);
        g_string_append(out, ": ");
        write_node(out, l, json_object_get_member(obj, name), indent + 1);
    }
    if (names->len) {
        newline(out, l, indent);
    }
    g_string_append_c(out, '}');
}

static void write_array(GString *out, const Layout *l, JsonArray *arr,
                        int indent)
{
    guint n = json_array_get_length(arr);

    g_string_append_c(out, '[');
    for (guint k = 0; k < n; k++) {
        separator(out, l, k, indent + 1);
        write_node(out, l, json_array_get_element(arr, k), indent + 1);
    }
    if (n) {
        newline(out, l, indent);
    }
    g_string_append_c(out, ']');
}

static void write_node(GString *out, const Layout *l, JsonNode *node,
                       int indent)
{
    switch (JSON_NODE_TYPE(node)) {
    case JSON_NODE_OBJECT:
        write_object(out, l, json_node_get_object(node), indent);
        break;
    case JSON_NODE_ARRAY:
        write_array(out, l, json_node_get_array(node), indent);
        break;
    default:
        write_scalar(out, node);
    }
}

static char *write_text(JsonNode *node, const Layout *l)
{
    GString *out = g_string_new(NULL);

    write_node(out, l, node, 0);
    return g_string_free(out, FALSE);
}

char *json_writer_line(JsonNode *node)
{
    static const Layout line = { false, insertion_order };

    return write_text(node, &line);
}

char *json_writer_line_qdict(JsonNode *node)
{
    static const Layout line_qdict = { false, json_writer_qdict_order };

    return write_text(node, &line_qdict);
}

char *json_writer_pretty(JsonNode *node)
{
    static const Layout pretty = { true, json_writer_qdict_order };

    return write_text(node, &pretty);
}

JsonNode *json_node_new_taking_object(JsonObject *obj)
{
    JsonNode *node = json_node_new(JSON_NODE_OBJECT);

    json_node_take_object(node, obj);
    return node;
}

JsonNode *json_node_new_taking_array(JsonArray *arr)
{
    JsonNode *node = json_node_new(JSON_NODE_ARRAY);

    json_node_take_array(node, arr);
    return node;
}
