/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Flat option maps with QEMU's dotted keys ("file.filename",
 * "cache.direct") and the "k=v,k2=v2" syntax used by -o and --image-opts.
 */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "block/block.h"

G_DEFINE_QUARK(strata-block-error-quark, bdrv_error)

BlockOpts *bdrv_opts_new(void)
{
    return g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
}

void bdrv_opts_set(BlockOpts *opts, const char *key, const char *value)
{
    g_hash_table_insert(opts, g_strdup(key), g_strdup(value));
}

const char *bdrv_opts_get(BlockOpts *opts, const char *key)
{
    return opts ? g_hash_table_lookup(opts, key) : NULL;
}

char *bdrv_opts_take(BlockOpts *opts, const char *key)
{
    gpointer k = NULL, v = NULL;

    if (!opts || !g_hash_table_steal_extended(opts, key, &k, &v)) {
        return NULL;
    }
    g_free(k);
    return v;
}

bool bdrv_opts_parse(BlockOpts *opts, const char *str, const char *implied_key,
                     GError **errp)
{
    const char *p = str;

    while (*p) {
        GString *key = g_string_new(NULL);
        GString *val = NULL;
        GString *cur = key;

        /* Read up to an unescaped ','; ",," stands for one comma. */
        for (; *p; p++) {
            if (*p == ',') {
                if (p[1] == ',') {
                    g_string_append_c(cur, ',');
                    p++;
                    continue;
                }
                p++;
                break;
            }
            if (*p == '=' && cur == key) {
                val = g_string_new(NULL);
                cur = val;
                continue;
            }
            g_string_append_c(cur, *p);
        }
        if (!val) {
            if (!implied_key || key->len == 0) {
                g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                            "Invalid parameter '%s'", key->str);
                g_string_free(key, TRUE);
                return false;
            }
            bdrv_opts_set(opts, implied_key, key->str);
            implied_key = NULL;
            g_string_free(key, TRUE);
            continue;
        }
        if (key->len == 0) {
            g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                        "Invalid option string '%s': empty key", str);
            g_string_free(key, TRUE);
            g_string_free(val, TRUE);
            return false;
        }
        implied_key = NULL;
        bdrv_opts_set(opts, key->str, val->str);
        g_string_free(key, TRUE);
        g_string_free(val, TRUE);
    }
    return true;
}

bool bdrv_opts_get_bool(BlockOpts *opts, const char *key, bool def,
                        bool *out, GError **errp)
{
    const char *v = bdrv_opts_get(opts, key);

    if (!v) {
        *out = def;
        return true;
    }
    if (!strcmp(v, "on") || !strcmp(v, "true") || !strcmp(v, "yes")) {
        *out = true;
    } else if (!strcmp(v, "off") || !strcmp(v, "false") || !strcmp(v, "no")) {
        *out = false;
    } else {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "Parameter '%s' expects 'on' or 'off'", key);
        return false;
    }
    return true;
}

bool strata_parse_size(const char *str, uint64_t *out)
{
    char *end;
    double d;
    uint64_t mul = 1;

    if (!str || !*str) {
        return false;
    }
    errno = 0;
    /* Integers exactly; a fraction only with a suffix (as qemu-img does). */
    if (g_ascii_isdigit(str[0])) {
        guint64 v = g_ascii_strtoull(str, &end, 10);
        if (errno == 0 && *end == '\0') {
            *out = v;
            return true;
        }
    }
    d = g_ascii_strtod(str, &end);
    if (errno || end == str || d < 0 || isnan(d)) {
        return false;
    }
    switch (g_ascii_tolower(*end)) {
    case '\0':
    case 'b': mul = 1; break;
    case 'k': mul = 1ULL << 10; break;
    case 'm': mul = 1ULL << 20; break;
    case 'g': mul = 1ULL << 30; break;
    case 't': mul = 1ULL << 40; break;
    case 'p': mul = 1ULL << 50; break;
    case 'e': mul = 1ULL << 60; break;
    default: return false;
    }
    if (*end && end[1] != '\0') {
        return false;
    }
    if (*end == '\0' && d != floor(d)) {
        return false;
    }
    d *= (double)mul;
    if (d >= 18446744073709551616.0) {
        return false;
    }
    *out = (uint64_t)d;
    return true;
}

bool bdrv_opts_get_size(BlockOpts *opts, const char *key, uint64_t def,
                        uint64_t *out, GError **errp)
{
    const char *v = bdrv_opts_get(opts, key);

    if (!v) {
        *out = def;
        return true;
    }
    if (!strata_parse_size(v, out)) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "Parameter '%s' expects a size", key);
        return false;
    }
    return true;
}

bool bdrv_opts_get_number(BlockOpts *opts, const char *key, uint64_t def,
                          uint64_t *out, GError **errp)
{
    const char *v = bdrv_opts_get(opts, key);
    char *end;

    if (!v) {
        *out = def;
        return true;
    }
    errno = 0;
    *out = g_ascii_strtoull(v, &end, 0);
    if (!*v || *end || errno) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "Parameter '%s' expects a number", key);
        return false;
    }
    return true;
}

BlockOpts *bdrv_opts_extract_prefix(BlockOpts *opts, const char *prefix)
{
    BlockOpts *sub = bdrv_opts_new();
    g_autofree char *dot = g_strdup_printf("%s.", prefix);
    size_t len = strlen(dot);
    GHashTableIter it;
    gpointer k, v;

    if (!opts) {
        return sub;
    }
    g_hash_table_iter_init(&it, opts);
    while (g_hash_table_iter_next(&it, &k, &v)) {
        if (!strncmp(k, dot, len)) {
            bdrv_opts_set(sub, (char *)k + len, v);
            g_hash_table_iter_remove(&it);
        }
    }
    return sub;
}

bool bdrv_opts_check_empty(BlockOpts *opts, GError **errp)
{
    GHashTableIter it;
    gpointer k;
    const char *first = NULL;

    if (!opts) {
        return true;
    }
    /* Report the alphabetically first key so messages are stable. */
    g_hash_table_iter_init(&it, opts);
    while (g_hash_table_iter_next(&it, &k, NULL)) {
        if (!first || strcmp(k, first) < 0) {
            first = k;
        }
    }
    if (first) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "Invalid parameter '%s'", first);
        return false;
    }
    return true;
}
