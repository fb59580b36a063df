/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The creation option lists of each format and the host-file protocol, in
 * the order qemu-img prints them, with value checking and the two ways
 * qemu-img shows them (the "Formatting" line and -o help).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "img-common.h"
#include "img-create-opts.h"

typedef enum {
    OPT_STRING,
    OPT_BOOL,
    OPT_SIZE,
    OPT_NUMBER,
} OptType;

typedef struct {
    const char *name;
    OptType type;
    const char *def;    /* printed when not set; NULL: not printed */
    const char *help;
} OptDesc;

#define SIZE_OPT { "size", OPT_SIZE, NULL, "Virtual disk size" }

static const OptDesc qcow2_opts[] = {
    { "encryption", OPT_BOOL, NULL,
      "Encrypt the image with format 'aes'. (Deprecated in favor of "
      "encrypt.format=aes)" },
    { "encrypt.format", OPT_STRING, NULL,
      "Encrypt the image, format choices: 'aes', 'luks'" },
    { "encrypt.key-secret", OPT_STRING, NULL,
      "ID of secret providing qcow AES key or LUKS passphrase" },
    { "encrypt.cipher-alg", OPT_STRING, NULL,
      "Name of encryption cipher algorithm" },
    { "encrypt.cipher-mode", OPT_STRING, NULL,
      "Name of encryption cipher mode" },
    { "encrypt.ivgen-alg", OPT_STRING, NULL, "Name of IV generator algorithm" },
    { "encrypt.ivgen-hash-alg", OPT_STRING, NULL,
      "Name of IV generator hash algorithm" },
    { "encrypt.hash-alg", OPT_STRING, NULL,
      "Name of encryption hash algorithm" },
    { "encrypt.iter-time", OPT_NUMBER, NULL,
      "Time to spend in PBKDF in milliseconds" },
    { "cluster_size", OPT_SIZE, "65536", "qcow2 cluster size" },
    { "extended_l2", OPT_BOOL, "off", "Extended L2 tables" },
    { "preallocation", OPT_STRING, NULL,
      "Preallocation mode (allowed values: off, metadata, falloc, full)" },
    { "compression_type", OPT_STRING, "zlib",
      "Compression method used for image cluster compression" },
    SIZE_OPT,
    { "compat", OPT_STRING, NULL,
      "Compatibility level (v2 [0.10] or v3 [1.1])" },
    { "backing_file", OPT_STRING, NULL, "File name of a base image" },
    { "backing_fmt", OPT_STRING, NULL, "Image format of the base image" },
    { "data_file", OPT_STRING, NULL, "File name of an external data file" },
    { "data_file_raw", OPT_BOOL, NULL,
      "The external data file must stay valid as a raw image" },
    { "lazy_refcounts", OPT_BOOL, "off", "Postpone refcount updates" },
    { "refcount_bits", OPT_NUMBER, "16",
      "Width of a reference count entry in bits" },
    { NULL },
};

static const OptDesc raw_opts[] = {
    SIZE_OPT,
    { NULL },
};

/* QEMU's luks format (block/luks.c) */
static const OptDesc luks_opts[] = {
    { "key-secret", OPT_STRING, NULL,
      "ID of secret providing LUKS passphrase" },
    { "cipher-alg", OPT_STRING, NULL, "Name of encryption cipher algorithm" },
    { "cipher-mode", OPT_STRING, NULL, "Name of encryption cipher mode" },
    { "ivgen-alg", OPT_STRING, NULL, "Name of IV generator algorithm" },
    { "ivgen-hash-alg", OPT_STRING, NULL,
      "Name of IV generator hash algorithm" },
    { "hash-alg", OPT_STRING, NULL, "Name of encryption hash algorithm" },
    { "iter-time", OPT_NUMBER, NULL,
      "Time to spend in PBKDF in milliseconds" },
    SIZE_OPT,
    { NULL },
};

/* The host-file protocol's options (also the "file" format's). */
static const OptDesc file_opts[] = {
    SIZE_OPT,
    { "preallocation", OPT_STRING, NULL,
      "Preallocation mode (allowed values: off, falloc, full)" },
    { "nocow", OPT_BOOL, NULL,
      "Turn off copy-on-write (valid only on btrfs)" },
    { "extent_size_hint", OPT_SIZE, NULL,
      "Extent size hint for the image file, 0 to disable" },
    { NULL },
};

/* A format strata has but this table does not describe yet. */
static const OptDesc generic_opts[] = {
    SIZE_OPT,
    { "backing_file", OPT_STRING, NULL, "File name of a base image" },
    { "backing_fmt", OPT_STRING, NULL, "Image format of the base image" },
    { NULL },
};

static const OptDesc *format_opts(const char *fmt)
{
    if (!strcmp(fmt, "qcow2")) {
        return qcow2_opts;
    }
    if (!strcmp(fmt, "raw")) {
        return raw_opts;
    }
    if (!strcmp(fmt, "file")) {
        return file_opts;
    }
    if (!strcmp(fmt, "luks")) {
        return luks_opts;
    }
    return generic_opts;
}

struct ImgCreateOpts {
    GPtrArray *descs;        /* const OptDesc *, format's then protocol's */
    GHashTable *values;      /* name -> normalised value */
};

static const OptDesc *find_desc(GPtrArray *descs, const char *name)
{
    for (guint i = 0; i < descs->len; i++) {
        const OptDesc *d = g_ptr_array_index(descs, i);
        if (!strcmp(d->name, name)) {
            return d;
        }
    }
    return NULL;
}

/* Appends list to descs, skipping names already there (first one wins). */
static void append_descs(GPtrArray *descs, const OptDesc *list)
{
    for (const OptDesc *d = list; d->name; d++) {
        if (!find_desc(descs, d->name)) {
            g_ptr_array_add(descs, (gpointer)d);
        }
    }
}

/* QEMU's read-only format drivers, which strata lacks: qemu-img knows
 * them and refuses to create them, so it names them in the refusal
 * instead of calling them unknown (082 checks the text). */
static const char *const qemu_readonly_formats[] = {
    "bochs", "cloop", "dmg", "vvfat", NULL,
};

/* The refusal for a format strata cannot create, in qemu-img's words. */
static char *no_create_message(const char *fmt)
{
    for (int i = 0; qemu_readonly_formats[i]; i++) {
        if (!strcmp(fmt, qemu_readonly_formats[i])) {
            return g_strdup_printf("Format driver '%s' does not support "
                                   "image creation", fmt);
        }
    }
    return g_strdup_printf("Unknown file format '%s'", fmt);
}

ImgCreateOpts *img_create_opts_new(const char *fmt, GError **errp)
{
    ImgCreateOpts *o;

    if (!bdrv_find_format(fmt)) {
        g_autofree char *msg = no_create_message(fmt);

        g_set_error_literal(errp, BDRV_ERROR, BDRV_ERROR_GENERIC, msg);
        return NULL;
    }
    o = g_new0(ImgCreateOpts, 1);
    o->descs = g_ptr_array_new();
    o->values = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
    append_descs(o->descs, format_opts(fmt));
    append_descs(o->descs, file_opts);
    return o;
}

void img_create_opts_free(ImgCreateOpts *o)
{
    if (o) {
        g_ptr_array_unref(o->descs);
        g_hash_table_unref(o->values);
        g_free(o);
    }
}

/* qemu's size syntax: digits with optional fraction and one suffix. */
static bool parse_size_value(const char *value, uint64_t *out)
{
    return strata_parse_size(value, out);
}

/* strtoull's rules, as QEMU's numbers: "-1" wraps to 2^64-1 (the driver
 * then says what is wrong with it); *erange for a value past 2^64-1 */
static bool parse_number_value(const char *value, uint64_t *out,
                               bool *erange)
{
    char *end;

    errno = 0;
    *out = g_ascii_strtoull(value, &end, 0);
    *erange = errno == ERANGE;
    return !errno && end != value && !*end;
}

static bool parse_bool_value(const char *value)
{
    static const char *const ok[] = {
        "on", "off", "yes", "no", "true", "false", NULL
    };

    for (int i = 0; ok[i]; i++) {
        if (!strcmp(value, ok[i])) {
            return true;
        }
    }
    return false;
}

/* Checks and normalises one value; sets qemu's message on error. */
static char *normalise_value(const OptDesc *d, const char *value,
                             GError **errp)
{
    uint64_t v;
    bool erange;

    switch (d->type) {
    case OPT_BOOL:
        if (!parse_bool_value(value)) {
            g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                        "Parameter '%s' expects 'on' or 'off'", d->name);
            return NULL;
        }
        return g_strdup(value);
    case OPT_SIZE:
        if (!parse_size_value(value, &v)) {
            g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                        "Parameter '%s' expects a non-negative number below "
                        "2^64\nOptional suffix k, M, G, T, P or E means kilo-, "
                        "mega-, giga-, tera-, peta-\nand exabytes, "
                        "respectively.", d->name);
            return NULL;
        }
        return g_strdup_printf("%" G_GUINT64_FORMAT, v);
    case OPT_NUMBER:
        if (!parse_number_value(value, &v, &erange) && erange) {
            g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                        "Value '%s' is too large for parameter '%s'",
                        value, d->name);
            return NULL;
        } else if (!parse_number_value(value, &v, &erange)) {
            g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                        "Parameter '%s' expects a number", d->name);
            return NULL;
        }
        return g_strdup_printf("%" G_GUINT64_FORMAT, v);
    case OPT_STRING:
    default:
        return g_strdup(value);
    }
}

bool img_create_opts_set(ImgCreateOpts *o, const char *name,
                         const char *value)
{
    const OptDesc *d = find_desc(o->descs, name);
    char *norm;

    if (!d) {
        return false;
    }
    norm = normalise_value(d, value, NULL);
    g_hash_table_insert(o->values, g_strdup(name),
                        norm ? norm : g_strdup(value));
    return true;
}

const char *img_create_opts_get(ImgCreateOpts *o, const char *name)
{
    return g_hash_table_lookup(o->values, name);
}

void img_create_opts_unset(ImgCreateOpts *o, const char *name)
{
    g_hash_table_remove(o->values, name);
}

/* Splits at unescaped commas; ",," stands for a comma. */
static char **split_option_list(const char *str)
{
    GPtrArray *parts = g_ptr_array_new();
    GString *cur = g_string_new(NULL);

    for (const char *p = str; ; p++) {
        if (*p == ',' && p[1] == ',') {
            g_string_append_c(cur, ',');
            p++;
        } else if (*p == ',' || *p == '\0') {
            g_ptr_array_add(parts, g_string_free(cur, FALSE));
            if (!*p) {
                break;
            }
            cur = g_string_new(NULL);
        } else {
            g_string_append_c(cur, *p);
        }
    }
    g_ptr_array_add(parts, NULL);
    return (char **)g_ptr_array_free(parts, FALSE);
}

bool img_create_opts_parse(ImgCreateOpts *o, const char *str, GError **errp)
{
    return img_create_opts_parse_except(o, str, NULL, errp);
}

bool img_create_opts_parse_except(ImgCreateOpts *o, const char *str,
                                  bool (*skip)(const char *name),
                                  GError **errp)
{
    g_auto(GStrv) parts = split_option_list(str);

    for (int i = 0; parts[i]; i++) {
        char *eq = strchr(parts[i], '=');
        const char *value = "on";
        const OptDesc *d;
        char *norm;

        if (!*parts[i]) {
            continue;
        }
        if (eq) {
            *eq = '\0';
            value = eq + 1;
        }
        if (skip && skip(parts[i])) {
            continue;
        }
        d = find_desc(o->descs, parts[i]);
        if (!d) {
            g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                        "Invalid parameter '%s'", parts[i]);
            return false;
        }
        norm = normalise_value(d, value, errp);
        if (!norm) {
            return false;
        }
        g_hash_table_insert(o->values, g_strdup(d->name), norm);
    }
    return true;
}

void img_create_opts_print(ImgCreateOpts *o)
{
    for (guint i = 0; i < o->descs->len; i++) {
        const OptDesc *d = g_ptr_array_index(o->descs, i);
        const char *v = g_hash_table_lookup(o->values, d->name);

        if (!v) {
            v = d->def;
        }
        if (!v) {
            continue;
        }
        printf(" %s=", d->name);
        if (d->type == OPT_STRING) {
            /* Print strings so they could be pasted back into -o. */
            for (const char *p = v; *p; p++) {
                if (*p == ',') {
                    putchar(',');
                }
                putchar(*p);
            }
        } else {
            fputs(v, stdout);
        }
    }
}

BlockOpts *img_create_opts_to_block_opts(ImgCreateOpts *o)
{
    BlockOpts *opts = bdrv_opts_new();
    GHashTableIter it;
    gpointer k, v;

    g_hash_table_iter_init(&it, o->values);
    while (g_hash_table_iter_next(&it, &k, &v)) {
        bdrv_opts_set(opts, k, v);
    }
    return opts;
}

static bool is_valid_option_list(const char *str)
{
    size_t len = strlen(str);
    size_t i;

    if (!str[0] || str[0] == ',') {
        return false;
    }
    /* An odd number of trailing commas leaves an empty element. */
    for (i = len; i > 0 && str[i - 1] == ','; i--) {
    }
    return (len - i) % 2 == 0;
}

static void accumulate_options(char **options, const char *optarg)
{
    char *old = *options;

    *options = old ? g_strdup_printf("%s,%s", old, optarg) : g_strdup(optarg);
    g_free(old);
}

bool img_add_option_list(char **options, const char *optarg)
{
    if (!is_valid_option_list(optarg)) {
        img_error("Invalid option list: %s", optarg);
        return false;
    }
    accumulate_options(options, optarg);
    return true;
}

bool img_has_help_option(const char *str)
{
    g_auto(GStrv) parts = split_option_list(str);

    for (int i = 0; parts[i]; i++) {
        if (!strcmp(parts[i], "help") || !strcmp(parts[i], "?")) {
            return true;
        }
    }
    return false;
}

static int desc_name_cmp(gconstpointer a, gconstpointer b)
{
    const OptDesc *x = *(const OptDesc *const *)a;
    const OptDesc *y = *(const OptDesc *const *)b;

    return strcmp(x->name, y->name);
}

static const char *type_name(OptType t)
{
    switch (t) {
    case OPT_BOOL: return "bool (on/off)";
    case OPT_SIZE: return "size";
    case OPT_NUMBER: return "num";
    case OPT_STRING:
    default: return "str";
    }
}

int img_print_create_option_help(const char *filename, const char *fmt)
{
    g_autoptr(GPtrArray) descs = NULL;

    if (!bdrv_find_format(fmt)) {
        g_autofree char *msg = no_create_message(fmt);

        img_error("%s", msg);
        return 1;
    }
    descs = g_ptr_array_new();
    append_descs(descs, format_opts(fmt));
    if (filename) {
        append_descs(descs, file_opts);
    }
    g_ptr_array_sort(descs, desc_name_cmp);
    if (filename) {
        printf("Supported options:\n");
    } else {
        printf("Supported %s options:\n", fmt);
    }
    for (guint i = 0; i < descs->len; i++) {
        const OptDesc *d = g_ptr_array_index(descs, i);
        g_autofree char *left = g_strdup_printf("%s=<%s>", d->name,
                                                type_name(d->type));
        printf("  %-22s - %s\n", left, d->help);
    }
    if (!filename) {
        printf("\nThe protocol level may support further options.\n"
               "Specify the target filename to include those options.\n");
    }
    return 0;
}
