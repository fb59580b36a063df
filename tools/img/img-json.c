/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * A JSON printer for json-glib trees that reproduces qemu-img's output:
 * members ordered as QEMU's QDict iterates them, qemu's pretty layout and
 * qemu's string escaping.
 */
#include <stdio.h>
#include <string.h>

#include "img-json.h"
#include "block/qcow2-intent.h"
#include "blockdev/intent-log.h"

/*
 * QEMU's QDict has 512 buckets; a key's bucket comes from the hash below
 * (from the TDB database), iteration walks buckets in order and each
 * bucket newest-first.  Sorting by bucket reproduces qemu's key order.
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

static void newline(GString *out, int indent)
{
    g_string_append_c(out, '\n');
    for (int i = 0; i < indent; i++) {
        g_string_append(out, "    ");
    }
}

/* Printable ASCII as is, the usual short escapes, \uXXXX for the rest. */
static void append_string(GString *out, const char *s)
{
    g_string_append_c(out, '"');
    while (*s) {
        gunichar cp = g_utf8_get_char_validated(s, -1);
        const char *next;

        if (cp == (gunichar)-1 || cp == (gunichar)-2) {
            cp = 0xFFFD;
            next = s + 1;
        } else {
            next = g_utf8_next_char(s);
        }
        switch (cp) {
        case '"': g_string_append(out, "\\\""); break;
        case '\\': g_string_append(out, "\\\\"); break;
        case '\b': g_string_append(out, "\\b"); break;
        case '\f': g_string_append(out, "\\f"); break;
        case '\n': g_string_append(out, "\\n"); break;
        case '\r': g_string_append(out, "\\r"); break;
        case '\t': g_string_append(out, "\\t"); break;
        default:
            if (cp > 0xFFFF) {
                g_string_append_printf(out, "\\u%04X\\u%04X",
                                       0xD800 + ((cp - 0x10000) >> 10),
                                       0xDC00 + ((cp - 0x10000) & 0x3FF));
            } else if (cp < 0x20 || cp >= 0x7F) {
                g_string_append_printf(out, "\\u%04X", cp);
            } else {
                g_string_append_c(out, (char)cp);
            }
        }
        s = next;
    }
    g_string_append_c(out, '"');
}

static void append_node(GString *out, JsonNode *node, int indent);

GPtrArray *img_json_members_ordered(JsonObject *obj)
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

static void append_object(GString *out, JsonObject *obj, int indent)
{
    g_autoptr(GPtrArray) names = img_json_members_ordered(obj);

    g_string_append_c(out, '{');
    for (guint k = 0; k < names->len; k++) {
        const char *name = g_ptr_array_index(names, k);

        if (k) {
            g_string_append_c(out, ',');
        }
        newline(out, indent + 1);
        append_string(out, name);
        g_string_append(out, ": ");
        append_node(out, json_object_get_member(obj, name), indent + 1);
    }
    if (names->len) {
        newline(out, indent);
    }
    g_string_append_c(out, '}');
}

static void append_array(GString *out, JsonArray *arr, int indent)
{
    guint n = json_array_get_length(arr);

    g_string_append_c(out, '[');
    for (guint k = 0; k < n; k++) {
        if (k) {
            g_string_append_c(out, ',');
        }
        newline(out, indent + 1);
        append_node(out, json_array_get_element(arr, k), indent + 1);
    }
    if (n) {
        newline(out, indent);
    }
    g_string_append_c(out, ']');
}

static void append_node(GString *out, JsonNode *node, int indent)
{
    switch (json_node_get_node_type(node)) {
    case JSON_NODE_OBJECT:
        append_object(out, json_node_get_object(node), indent);
        break;
    case JSON_NODE_ARRAY:
        append_array(out, json_node_get_array(node), indent);
        break;
    case JSON_NODE_NULL:
        g_string_append(out, "null");
        break;
    case JSON_NODE_VALUE:
        switch (json_node_get_value_type(node)) {
        case G_TYPE_BOOLEAN:
            g_string_append(out,
                            json_node_get_boolean(node) ? "true" : "false");
            break;
        case G_TYPE_INT64:
            g_string_append_printf(out, "%" G_GINT64_FORMAT,
                                   json_node_get_int(node));
            break;
        case G_TYPE_DOUBLE:
            g_string_append_printf(out, "%.17g", json_node_get_double(node));
            break;
        case G_TYPE_STRING:
            append_string(out, json_node_get_string(node));
            break;
        default:
            g_string_append(out, "null");
        }
        break;
    }
}

char *img_json_to_string(JsonNode *node)
{
    GString *out = g_string_new(NULL);

    append_node(out, node, 0);
    return g_string_free(out, FALSE);
}

void img_json_print(JsonNode *node)
{
    g_autofree char *s = img_json_to_string(node);

    printf("%s\n", s);
}

/* ---- strata's pending-transaction report (issue 14) ---- */

static const char *intent_state_name(Qcow2IntentState st)
{
    switch (st) {
    case QCOW2_INTENT_PENDING:
        return "pending";
    case QCOW2_INTENT_ROLLED_FORWARD:
        return "rolled-forward";
    case QCOW2_INTENT_DISCARDED:
        return "discarded";
    default:
        return "none";
    }
}

bool img_json_add_intent(JsonBuilder *b, BlockDriverState *bs)
{
    Qcow2IntentInfo info;

    intent_log_install();   /* strata-img recovers at open */
    if (!qcow2_intent_query(bs, &info) || info.state == QCOW2_INTENT_NONE) {
        qcow2_intent_info_clear(&info);
        return false;
    }
    json_builder_set_member_name(b, IMG_JSON_INTENT_MEMBER);
    json_builder_begin_object(b);
    json_builder_set_member_name(b, "transaction");
    json_builder_add_string_value(b, info.txid);
    json_builder_set_member_name(b, "journal");
    json_builder_add_string_value(b, info.journal_dir);
    json_builder_set_member_name(b, "state");
    json_builder_add_string_value(b, intent_state_name(info.state));
    if (info.detail) {
        json_builder_set_member_name(b, "detail");
        json_builder_add_string_value(b, info.detail);
    }
    json_builder_end_object(b);
    qcow2_intent_info_clear(&info);
    return true;
}

char *img_intent_sentence(BlockDriverState *bs)
{
    Qcow2IntentInfo info;
    char *out = NULL;

    if (!qcow2_intent_query(bs, &info)) {
        return NULL;
    }
    switch (info.state) {
    case QCOW2_INTENT_PENDING:
        if (info.detail && (!strcmp(info.detail, "roll forward") ||
                            !strcmp(info.detail, "discard"))) {
            out = g_strdup_printf("Image is part of unfinished transaction "
                                  "%s (journal %s); recovery will %s "
                                  "(strata-img check -r all).", info.txid,
                                  info.journal_dir,
                                  !strcmp(info.detail, "discard") ?
                                  "discard it" : "roll it forward");
        } else {
            out = g_strdup_printf("Image is part of unfinished transaction "
                                  "%s (journal %s) that cannot be "
                                  "recovered: %s", info.txid,
                                  info.journal_dir,
                                  info.detail ? info.detail : "unknown");
        }
        break;
    case QCOW2_INTENT_ROLLED_FORWARD:
    case QCOW2_INTENT_DISCARDED:
        out = g_strdup_printf("Unfinished transaction %s (journal %s) was %s.",
                              info.txid, info.journal_dir,
                              info.state == QCOW2_INTENT_DISCARDED ?
                              "discarded" : "rolled forward");
        break;
    default:
        break;
    }
    qcow2_intent_info_clear(&info);
    return out;
}
