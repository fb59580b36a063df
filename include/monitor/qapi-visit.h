/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The descriptors scripts/qapi-gen.py generates from the schema (qapi/), and the
 * one walker that checks a command's JSON arguments against them and
 * builds the typed C arguments, and that serialises typed results
 * (monitor/qapi-visit.c).  Errors are QEMU
 * 7.2's texts: "Parameter 'x' is missing", "Parameter 'x' is unexpected",
 * "Invalid parameter type for 'x', expected: string", "Parameter 'x' does
 * not accept value 'y'", with QEMU's paths ("actions[0].data.name").
 */
#ifndef STRATA_MONITOR_QAPI_VISIT_H
#define STRATA_MONITOR_QAPI_VISIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <glib.h>
#include <json-glib/json-glib.h>

G_BEGIN_DECLS

typedef enum QapiKind {
    QAPI_KIND_STR,        /* char * */
    QAPI_KIND_INT,        /* int64_t */
    QAPI_KIND_BOOL,       /* bool */
    QAPI_KIND_NULL,       /* bool (always true when present) */
    QAPI_KIND_ANY,        /* JsonNode * (a copy) */
    QAPI_KIND_ENUM,       /* int: index into values */
    QAPI_KIND_STRUCT,     /* pointer to the generated struct */
    QAPI_KIND_UNION,      /* flat union: base members, then u */
    QAPI_KIND_LIST,       /* GPtrArray * of elements (enums: GINT_TO_POINTER) */
    QAPI_KIND_ALTERNATE,  /* JsonNode * (checked against one branch) */
} QapiKind;

typedef struct QapiType QapiType;

typedef struct QapiMember {
    const char *name;             /* NULL ends a member table */
    const QapiType *type;
    bool optional;
    size_t offset;                /* of the value in the C struct */
    size_t has_offset;            /* of has_<name> (optional members) */
} QapiMember;

struct QapiType {
    const char *name;
    QapiKind kind;
    size_t size;                          /* struct, union */
    const QapiMember *members;            /* struct; union: its base */
    const char *const *values;            /* enum */
    size_t n_values;
    const QapiType *elem;                 /* list */
    const QapiType *const *alts;          /* alternate */
    size_t n_alts;
    const char *discriminator;            /* union: a base member (enum) */
    const QapiType *const *variants;      /* union: by enum value, or NULL */
    size_t variant_offset;                /* union: of the void *u */
};

/* A QMP command: its argument type (NULL: none) and its handler, which
 * returns the "return" value (NULL on error, errp set). */
typedef struct QapiCommand {
    const char *name;                     /* NULL ends the table */
    const QapiType *args;
    JsonNode *(*fn)(const void *args, GError **errp);
} QapiCommand;

extern const QapiCommand qapi_commands[];
extern const QapiType qapi_type_str, qapi_type_int, qapi_type_bool,
                      qapi_type_null, qapi_type_any;

/*
 * Checks node against type (a struct or union) and returns the new C
 * value (free with qapi_free()), or NULL with errp set.  keyval: scalars
 * arrive as strings, as from the command line ("read-only=on").  A NULL
 * node is an empty object (a command given no "arguments").
 */
void *qapi_input(const QapiType *type, JsonNode *node, bool keyval,
                 GError **errp);
void qapi_free(const QapiType *type, void *value);

/*
 * The JSON of a C value of a struct or union type (the reverse of
 * qapi_input): an optional member only when its has_<name> is set, enums
 * as their names, lists as arrays, a union's variant members beside its
 * base's.  Members come in the order QEMU 7.2 writes them (its QDict's
 * hash order, ties by schema order), so replies are byte for byte
 * QEMU's.  Required strings and objects must be set.  The result types'
 * generated qapi_<T>_to_json() call this.
 */
JsonNode *qapi_output(const QapiType *type, const void *value);
/* The same for the value in *slot, of any type (a list: GPtrArray **). */
JsonNode *qapi_output_value(const QapiType *type, const void *slot);
/* Frees what *slot holds (a list: its elements and the array). */
void qapi_free_value(const QapiType *type, void *slot);

/* The command called name, or NULL. */
const QapiCommand *qapi_find_command(const char *name);

G_END_DECLS

#endif
