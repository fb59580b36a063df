/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The walker over the generated QAPI descriptors: checks JSON input (a
 * QMP command's arguments, a --blockdev option) against a type and builds
 * the typed C value the command receives; serialises a typed C result
 * (the reverse walk, behind the generated qapi_<T>_to_json); frees such
 * values.
 *
 * The error texts and which name they carry follow QEMU 7.2's input
 * visitor: missing, unexpected and wrong-type errors name the full path
 * ("actions[0].data.name"); a bad enum value names only the member
 * ("Parameter 'mode' does not accept value 'x'"), and "null" for a list
 * element, as QEMU does.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "block/json-writer.h"
#include "monitor/qapi-visit.h"
#include "blockdev/registry.h"

const QapiType qapi_type_str = { .name = "str", .kind = QAPI_KIND_STR };
const QapiType qapi_type_int = { .name = "int", .kind = QAPI_KIND_INT };
const QapiType qapi_type_bool = { .name = "bool", .kind = QAPI_KIND_BOOL };
const QapiType qapi_type_null = { .name = "null", .kind = QAPI_KIND_NULL };
const QapiType qapi_type_any = { .name = "any", .kind = QAPI_KIND_ANY };

static bool visit_value(const QapiType *t, JsonNode *node, const char *path,
                        const char *bare, bool keyval, void *slot,
                        GError **errp);

static bool param_error(GError **errp, const char *fmt, const char *a,
                        const char *b)
{
    g_set_error(errp, BLOCKDEV_ERROR, BLOCKDEV_ERROR_GENERIC, fmt, a, b);
    return false;
}

/* The word QEMU's "expected: %s" uses for a type. */
static const char *expected_word(const QapiType *t)
{
    switch (t->kind) {
    case QAPI_KIND_STR:
    case QAPI_KIND_ENUM:
        return "string";
    case QAPI_KIND_INT:
        return "integer";
    case QAPI_KIND_BOOL:
        return "boolean";
    case QAPI_KIND_NULL:
        return "null";
    case QAPI_KIND_STRUCT:
    case QAPI_KIND_UNION:
        return "object";
    case QAPI_KIND_LIST:
        return "array";
    default:
        return t->name;
    }
}

static bool type_error(const QapiType *t, const char *path, GError **errp)
{
    return param_error(errp, "Invalid parameter type for '%s', expected: %s",
                       path, expected_word(t));
}

static bool node_is(JsonNode *node, GType vt)
{
    return JSON_NODE_HOLDS_VALUE(node) && json_node_get_value_type(node) == vt;
}

static char *child_path(const char *path, const char *name)
{
    return *path ? g_strdup_printf("%s.%s", path, name) : g_strdup(name);
}

static bool keyval_bool(JsonNode *node, const char *path, bool *out,
                        GError **errp)
{
    const char *s = json_node_get_string(node);

    if (!strcmp(s, "on")) {
        *out = true;
    } else if (!strcmp(s, "off")) {
        *out = false;
    } else {
        return param_error(errp, "Parameter '%s' expects 'on' or 'off'%s",
                           path, "");
    }
    return true;
}

static bool keyval_int(JsonNode *node, const char *path, int64_t *out,
                       GError **errp)
{
    const char *s = json_node_get_string(node);
    char *end;

    errno = 0;
    *out = strtoll(s, &end, 0);
    if (!*s || *end || errno) {
        return param_error(errp, "Parameter '%s' expects %s", path,
                           "an integer");
    }
    return true;
}

static bool visit_scalar(const QapiType *t, JsonNode *node, const char *path,
                         const char *bare, bool keyval, void *slot,
                         GError **errp)
{
    bool is_str = node_is(node, G_TYPE_STRING);

    switch (t->kind) {
    case QAPI_KIND_STR:
        if (!is_str) {
            return type_error(t, path, errp);
        }
        *(char **)slot = g_strdup(json_node_get_string(node));
        return true;
    case QAPI_KIND_INT:
        if (keyval && is_str) {
            return keyval_int(node, path, slot, errp);
        }
        if (!node_is(node, G_TYPE_INT64)) {
            return type_error(t, path, errp);
        }
        *(int64_t *)slot = json_node_get_int(node);
        return true;
    case QAPI_KIND_BOOL:
        if (keyval && is_str) {
            return keyval_bool(node, path, slot, errp);
        }
        if (!node_is(node, G_TYPE_BOOLEAN)) {
            return type_error(t, path, errp);
        }
        *(bool *)slot = json_node_get_boolean(node);
        return true;
    case QAPI_KIND_NULL:
        if (!JSON_NODE_HOLDS_NULL(node)) {
            return type_error(t, path, errp);
        }
        *(bool *)slot = true;
        return true;
    case QAPI_KIND_ENUM:
        if (!is_str) {
            return type_error(t, path, errp);
        }
        for (size_t i = 0; i < t->n_values; i++) {
            if (!strcmp(t->values[i], json_node_get_string(node))) {
                *(int *)slot = (int)i;
                return true;
            }
        }
        return param_error(errp, "Parameter '%s' does not accept value '%s'",
                           bare, json_node_get_string(node));
    default:
        g_assert_not_reached();
    }
}

/* The members of one struct table read from obj into out; the names
 * consumed are added to seen. */
static bool visit_members(const QapiMember *m, JsonObject *obj,
                          const char *path, bool keyval, char *out,
                          GHashTable *seen, GError **errp)
{
    for (; m && m->name; m++) {
        JsonNode *v = json_object_get_member(obj, m->name);
        g_autofree char *p = child_path(path, m->name);

        if (!v) {
            if (!m->optional) {
                return param_error(errp, "Parameter '%s' is missing%s", p,
                                   "");
            }
            continue;
        }
        g_hash_table_add(seen, (gpointer)m->name);
        if (!visit_value(m->type, v, p, m->name, keyval, out + m->offset,
                         errp)) {
            return false;
        }
        if (m->optional) {
            *(bool *)(out + m->has_offset) = true;
        }
    }
    return true;
}

static bool visit_object(const QapiType *t, JsonObject *obj,
                         const char *path, bool keyval, void **slot,
                         GError **errp)
{
    g_autoptr(GHashTable) seen = g_hash_table_new(g_str_hash, g_str_equal);
    g_autoptr(GList) names = NULL;
    char *out = g_malloc0(t->size);

    *slot = out;        /* freed by the caller's qapi_free on error */
    if (!visit_members(t->members, obj, path, keyval, out, seen, errp)) {
        return false;
    }
    if (t->kind == QAPI_KIND_UNION) {
        const QapiType *variant = NULL;

        for (const QapiMember *m = t->members; m->name; m++) {
            if (!strcmp(m->name, t->discriminator)) {
                variant = t->variants[*(int *)(out + m->offset)];
            }
        }
        if (variant) {
            char *vout = g_malloc0(variant->size);

            *(void **)(out + t->variant_offset) = vout;
            if (!visit_members(variant->members, obj, path, keyval, vout,
                               seen, errp)) {
                return false;
            }
        }
    }
    names = json_object_get_members(obj);
    for (GList *l = names; l; l = l->next) {
        if (!g_hash_table_contains(seen, l->data)) {
            g_autofree char *p = child_path(path, l->data);
            return param_error(errp, "Parameter '%s' is unexpected%s", p, "");
        }
    }
    return true;
}

/* The branch of an alternate that a node of this JSON type selects. */
static const QapiType *alternate_branch(const QapiType *t, JsonNode *node,
                                        bool keyval)
{
    for (size_t i = 0; i < t->n_alts; i++) {
        const QapiType *b = t->alts[i];
        bool obj = b->kind == QAPI_KIND_STRUCT || b->kind == QAPI_KIND_UNION;

        bool str = b->kind == QAPI_KIND_STR || b->kind == QAPI_KIND_ENUM;

        if ((obj && JSON_NODE_HOLDS_OBJECT(node)) ||
            (str && node_is(node, G_TYPE_STRING)) ||
            (b->kind == QAPI_KIND_NULL && JSON_NODE_HOLDS_NULL(node))) {
            return b;
        }
    }
    return NULL;
}

static bool visit_value(const QapiType *t, JsonNode *node, const char *path,
                        const char *bare, bool keyval, void *slot,
                        GError **errp)
{
    switch (t->kind) {
    case QAPI_KIND_STRUCT:
    case QAPI_KIND_UNION:
        if (!JSON_NODE_HOLDS_OBJECT(node)) {
            return type_error(t, path, errp);
        }
        return visit_object(t, json_node_get_object(node), path, keyval,
                            slot, errp);
    case QAPI_KIND_LIST: {
        GPtrArray *list;
        JsonArray *arr;

        if (!JSON_NODE_HOLDS_ARRAY(node)) {
            return type_error(t, path, errp);
        }
        arr = json_node_get_array(node);
        list = g_ptr_array_new();
        *(GPtrArray **)slot = list;
        for (guint i = 0; i < json_array_get_length(arr); i++) {
            g_autofree char *p = g_strdup_printf("%s[%u]", path, i);
            union { void *ptr; int64_t i; int e; bool b; } v = { 0 };
            bool ok = visit_value(t->elem, json_array_get_element(arr, i),
                                  p, "null", keyval, &v, errp);

            if (t->elem->kind == QAPI_KIND_ENUM) {
                v.ptr = GINT_TO_POINTER(v.e);
            }
            if (ok || v.ptr) {
                g_ptr_array_add(list, v.ptr);
            }
            if (!ok) {
                return false;
            }
        }
        return true;
    }
    case QAPI_KIND_ANY:
        *(JsonNode **)slot = json_node_copy(node);
        return true;
    case QAPI_KIND_ALTERNATE: {
        const QapiType *b = alternate_branch(t, node, keyval);
        void *tmp = NULL;
        bool ok;

        if (!b) {
            return type_error(t, path, errp);
        }
        ok = visit_value(b, node, path, bare, keyval, &tmp, errp);
        if (b->kind == QAPI_KIND_STR) {
            g_free(tmp);
        } else if (b->kind == QAPI_KIND_STRUCT || b->kind == QAPI_KIND_UNION) {
            qapi_free(b, tmp);
        }
        if (ok) {
            *(JsonNode **)slot = json_node_copy(node);
        }
        return ok;
    }
    default:
        return visit_scalar(t, node, path, bare, keyval, slot, errp);
    }
}

void *qapi_input(const QapiType *type, JsonNode *node, bool keyval,
                 GError **errp)
{
    g_autoptr(JsonNode) empty = NULL;
    void *out = NULL;

    if (!node) {
        node = empty = json_node_new_taking_object(json_object_new());
    }
    if (!visit_value(type, node, "", "", keyval, &out, errp)) {
        qapi_free(type, out);
        return NULL;
    }
    return out;
}

static void free_slot(const QapiType *t, void *slot)
{
    switch (t->kind) {
    case QAPI_KIND_STR:
        g_free(*(char **)slot);
        break;
    case QAPI_KIND_ANY:
    case QAPI_KIND_ALTERNATE:
        if (*(JsonNode **)slot) {
            json_node_unref(*(JsonNode **)slot);
        }
        break;
    case QAPI_KIND_STRUCT:
    case QAPI_KIND_UNION:
        qapi_free(t, *(void **)slot);
        break;
    case QAPI_KIND_LIST: {
        GPtrArray *list = *(GPtrArray **)slot;

        for (guint i = 0; list && i < list->len; i++) {
            if (t->elem->kind != QAPI_KIND_ENUM) {
                free_slot(t->elem, &list->pdata[i]);
            }
        }
        if (list) {
            g_ptr_array_unref(list);
        }
        break;
    }
    default:
        break;
    }
}

void qapi_free_value(const QapiType *type, void *slot)
{
    free_slot(type, slot);
}

static void free_members(const QapiMember *m, char *value)
{
    for (; m && m->name; m++) {
        free_slot(m->type, value + m->offset);
    }
}

void qapi_free(const QapiType *type, void *value)
{
    char *v = value;

    if (!v) {
        return;
    }
    if (type->kind == QAPI_KIND_UNION) {
        void *u = *(void **)(v + type->variant_offset);

        for (const QapiMember *m = type->members; m->name; m++) {
            if (!strcmp(m->name, type->discriminator)) {
                const QapiType *variant = type->variants[*(int *)(v + m->offset)];
                if (variant && u) {
                    qapi_free(variant, u);
                }
            }
        }
    }
    free_members(type->members, v);
    g_free(v);
}

/* ---- output: typed C value to JSON ---- */

/* The variant table entry of a union value (NULL: no variant members). */
static const QapiType *union_variant(const QapiType *t, const char *v)
{
    for (const QapiMember *m = t->members; m->name; m++) {
        if (!strcmp(m->name, t->discriminator)) {
            return t->variants[*(const int *)(v + m->offset)];
        }
    }
    g_assert_not_reached();
}

/*
 * QEMU builds a result as a QDict (a hash table of 512 buckets, each
 * member put at the head of its bucket's list) and writes it bucket by
 * bucket, so its members come out in an order fixed by their names.
 * strata writes the same order, so that a reply is byte for byte QEMU's,
 * not only the same JSON.  This is that bucket: gdbm's hash, as QEMU's
 * qdict uses it.
 */
static unsigned qdict_bucket(const char *name)
{
    unsigned value = 0x238F13AFu * (unsigned)strlen(name);

    for (unsigned i = 0; name[i]; i++) {
        value += (unsigned)(unsigned char)name[i] << (i * 5 % 24);
    }
    return (1103515243u * value + 12345u) % 512u;
}

typedef struct OutMember {
    const char *name;
    JsonNode *value;
    unsigned bucket;
    unsigned seq;                /* schema order: QEMU's insertion order */
} OutMember;

static gint out_member_cmp(gconstpointer a, gconstpointer b)
{
    const OutMember *x = a, *y = b;

    if (x->bucket != y->bucket) {
        return x->bucket < y->bucket ? -1 : 1;
    }
    /* same bucket: the one put in last is first in QEMU's list */
    return x->seq > y->seq ? -1 : 1;
}

static void collect_members(const QapiMember *m, const char *v, GArray *out)
{
    for (; m && m->name; m++) {
        OutMember om = { m->name, NULL, qdict_bucket(m->name), out->len };

        if (m->optional && !*(const bool *)(v + m->has_offset)) {
            continue;
        }
        om.value = qapi_output_value(m->type, v + m->offset);
        g_array_append_val(out, om);
    }
}

JsonNode *qapi_output(const QapiType *type, const void *value)
{
    const char *v = value;
    JsonObject *obj = json_object_new();
    g_autoptr(GArray) members = g_array_new(FALSE, FALSE, sizeof(OutMember));

    g_assert(type->kind == QAPI_KIND_STRUCT || type->kind == QAPI_KIND_UNION);
    /* a struct without members has no storage (g_malloc0(0) is NULL) */
    g_assert(v || !type->members || !type->members->name);
    if (!v) {
        return json_node_new_taking_object(obj);
    }
    collect_members(type->members, v, members);
    if (type->kind == QAPI_KIND_UNION) {
        const QapiType *variant = union_variant(type, v);
        const char *u = *(char *const *)(v + type->variant_offset);

        if (variant && u) {
            collect_members(variant->members, u, members);
        }
    }
    g_array_sort(members, out_member_cmp);
    for (guint i = 0; i < members->len; i++) {
        OutMember *om = &g_array_index(members, OutMember, i);
        json_object_set_member(obj, om->name, om->value);
    }
    return json_node_new_taking_object(obj);
}

static JsonNode *output_list(const QapiType *t, const GPtrArray *list)
{
    JsonArray *arr = json_array_new();

    for (guint i = 0; list && i < list->len; i++) {
        if (t->elem->kind == QAPI_KIND_ENUM) {
            /* enums live in the array as GINT_TO_POINTER, as qapi_input
             * stores them */
            int e = GPOINTER_TO_INT(list->pdata[i]);
            json_array_add_element(arr, qapi_output_value(t->elem, &e));
        } else {
            json_array_add_element(arr, qapi_output_value(t->elem,
                                                          &list->pdata[i]));
        }
    }
    return json_node_new_taking_array(arr);
}

JsonNode *qapi_output_value(const QapiType *t, const void *slot)
{
    JsonNode *n = json_node_alloc();

    switch (t->kind) {
    case QAPI_KIND_STR:
        g_assert(*(char *const *)slot);
        return json_node_init_string(n, *(char *const *)slot);
    case QAPI_KIND_INT:
        return json_node_init_int(n, *(const int64_t *)slot);
    case QAPI_KIND_BOOL:
        return json_node_init_boolean(n, *(const bool *)slot);
    case QAPI_KIND_NULL:
        return json_node_init_null(n);
    case QAPI_KIND_ENUM: {
        int e = *(const int *)slot;

        g_assert(e >= 0 && (size_t)e < t->n_values);
        return json_node_init_string(n, t->values[e]);
    }
    case QAPI_KIND_ANY:
    case QAPI_KIND_ALTERNATE:
        json_node_free(n);
        g_assert(*(JsonNode *const *)slot);
        return json_node_copy(*(JsonNode *const *)slot);
    case QAPI_KIND_STRUCT:
    case QAPI_KIND_UNION:
        json_node_free(n);
        return qapi_output(t, *(void *const *)slot);
    case QAPI_KIND_LIST:
        json_node_free(n);
        return output_list(t, *(GPtrArray *const *)slot);
    default:
        g_assert_not_reached();
    }
}

const QapiCommand *qapi_find_command(const char *name)
{
    for (const QapiCommand *c = qapi_commands; c->name; c++) {
        if (!strcmp(c->name, name)) {
            return c;
        }
    }
    return NULL;
}
