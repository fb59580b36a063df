/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* --object for the tools: which kind of object a spec makes. */

#include "block/block.h"
#include "block/crypto.h"
#include "block/nbd-client-tls.h"
#include "block/objects.h"

#include <string.h>

GHashTable *bdrv_object_spec_parse(const char *spec, GError **errp)
{
    g_autoptr(GHashTable) fields =
        g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
    g_autoptr(GString) cur = g_string_new(NULL);
    bool first = true;

    for (const char *p = spec; ; p++) {
        if (*p == ',' && p[1] == ',') {
            g_string_append_c(cur, ',');
            p++;
            continue;
        }
        if (*p && *p != ',') {
            g_string_append_c(cur, *p);
            continue;
        }
        const char *eq = strchr(cur->str, '=');
        if (eq) {
            g_hash_table_insert(fields, g_strndup(cur->str, eq - cur->str),
                                g_strdup(eq + 1));
        } else if (first) {
            g_hash_table_insert(fields, g_strdup("qom-type"),
                                g_strdup(cur->str));
        } else {
            g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                        "Expected '=' after parameter '%s'", cur->str);
            return NULL;
        }
        first = false;
        g_string_truncate(cur, 0);
        if (!*p) {
            break;
        }
    }
    return g_steal_pointer(&fields);
}

bool bdrv_object_add(const char *spec, GError **errp)
{
    g_autoptr(GHashTable) fields = bdrv_object_spec_parse(spec, errp);
    const char *type;

    if (!fields) {
        return false;
    }
    type = g_hash_table_lookup(fields, "qom-type");
    if (type && (!strcmp(type, "tls-creds-x509") ||
                 !strcmp(type, "tls-creds-psk"))) {
        return nbd_client_creds_add(fields, errp);
    }
    /* secrets, and the refusal of every other type, with its texts */
    return crypto_secret_add(spec, errp);
}
