/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The NBD client's TLS credentials, by id (see nbd-client-tls.h).  Only
 * what QEMU checks when it creates such an object is checked here (the
 * files it needs exist); libnbd reads them at the handshake.
 */

#include "block/block.h"
#include "block/crypto.h"
#include "block/nbd-client-tls.h"

#include <errno.h>
#include <string.h>
#include <sys/stat.h>

static GHashTable *creds_by_id;   /* id -> NbdClientCreds */

static void creds_free(gpointer p)
{
    NbdClientCreds *c = p;

    g_free(c->id);
    g_free(c->dir);
    g_free(c->username);
    g_free(c);
}

static bool fail(GError **errp, const char *fmt, ...) G_GNUC_PRINTF(2, 3);
static bool fail(GError **errp, const char *fmt, ...)
{
    g_autofree char *msg = NULL;
    va_list ap;

    va_start(ap, fmt);
    msg = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    g_set_error_literal(errp, BDRV_ERROR, BDRV_ERROR_GENERIC, msg);
    return false;
}

/* QEMU's on/off spellings of a bool property */
static bool parse_bool(const char *name, const char *v, bool *out,
                       GError **errp)
{
    if (!strcmp(v, "on") || !strcmp(v, "yes") || !strcmp(v, "true")) {
        *out = true;
    } else if (!strcmp(v, "off") || !strcmp(v, "no") ||
               !strcmp(v, "false")) {
        *out = false;
    } else {
        return fail(errp, "Parameter '%s' expects 'on' or 'off'", name);
    }
    return true;
}

/* A file the credentials need in their directory, as QEMU looks for it. */
static bool need_file(const NbdClientCreds *c, const char *name,
                      GError **errp)
{
    g_autofree char *path = g_build_filename(c->dir, name, NULL);
    struct stat st;

    if (stat(path, &st) < 0) {
        return fail(errp, "Unable to access credentials %s: %s", path,
                    g_strerror(errno));
    }
    return true;
}

static bool take_fields(NbdClientCreds *c, GHashTable *fields,
                        GError **errp)
{
    GHashTableIter it;
    gpointer k, v;

    g_hash_table_iter_init(&it, fields);
    while (g_hash_table_iter_next(&it, &k, &v)) {
        const char *key = k, *val = v;
        if (!strcmp(key, "qom-type")) {
            continue;
        } else if (!strcmp(key, "id")) {
            c->id = g_strdup(val);
        } else if (!strcmp(key, "dir")) {
            c->dir = g_strdup(val);
        } else if (!strcmp(key, "endpoint")) {
            if (strcmp(val, "client") && strcmp(val, "server")) {
                return fail(errp, "Parameter 'endpoint' does not accept "
                            "value '%s'", val);
            }
            c->server = !strcmp(val, "server");
        } else if (!strcmp(key, "verify-peer") && !c->psk) {
            if (!parse_bool(key, val, &c->verify_peer, errp)) {
                return false;
            }
        } else if (!strcmp(key, "username") && c->psk) {
            c->username = g_strdup(val);
        } else {
            return fail(errp, "Parameter '%s' is unexpected", key);
        }
    }
    return true;
}

bool nbd_client_creds_add(GHashTable *fields, GError **errp)
{
    g_autoptr(GError) err = NULL;
    NbdClientCreds *c = g_new0(NbdClientCreds, 1);
    const char *type = g_hash_table_lookup(fields, "qom-type");

    c->psk = type && !strcmp(type, "tls-creds-psk");
    c->verify_peer = true;
    if (!take_fields(c, fields, &err)) {
        goto fail;
    }
    if (!c->id) {
        fail(&err, "Parameter 'id' is missing");
    } else if (creds_by_id && g_hash_table_contains(creds_by_id, c->id)) {
        fail(&err, "attempt to add duplicate property '%s' to object "
             "(type 'container')", c->id);
    } else if (!c->dir) {
        fail(&err, "Missing 'dir' property value");
    } else if (c->psk && c->server && c->username) {
        fail(&err, "username should not be set when endpoint=server");
    } else if (c->psk) {
        need_file(c, "keys.psk", &err);
    } else if (need_file(c, "ca-cert.pem", &err) && c->server &&
               need_file(c, "server-cert.pem", &err)) {
        /* QEMU loads them at once, so it names a missing one here */
        need_file(c, "server-key.pem", &err);
    }   /* a client's own certificate and key are optional, as in QEMU */
    if (err) {
        goto fail;
    }
    if (c->psk && !c->username) {
        c->username = g_strdup("qemu");   /* QEMU's default user */
    }
    if (!creds_by_id) {
        creds_by_id = g_hash_table_new_full(g_str_hash, g_str_equal, NULL,
                                            creds_free);
    }
    g_hash_table_insert(creds_by_id, c->id, c);
    return true;

fail:
    g_propagate_error(errp, g_steal_pointer(&err));
    creds_free(c);
    return false;
}

const NbdClientCreds *nbd_client_creds_for_client(const char *id,
                                                  GError **errp)
{
    NbdClientCreds *c = creds_by_id ? g_hash_table_lookup(creds_by_id, id)
                                    : NULL;

    if (!c) {
        fail(errp, crypto_secret_exists(id)
                   ? "Object with id '%s' is not TLS credentials"
                   : "No TLS credentials with id '%s'", id);
        return NULL;
    }
    if (c->server) {
        fail(errp, "Expected TLS credentials for a client endpoint");
        return NULL;
    }
    return c;
}
