/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * QMP commands of NBD exports (qapi/block-export.json): nbd-server-start,
 * nbd-server-stop, block-export-add, block-export-del,
 * query-block-exports, and the BLOCK_EXPORT_DELETED event; plus the
 * command line's --nbd-server and --export, which take the same options
 * in keyval form.  The server itself is nbd/.
 */
#include <string.h>

#include "block/crypto.h"
#include "monitor/monitor-int.h"
#include "monitor/qmp-events.h"
#include "monitor/qmp-export.h"
#include "nbd/server.h"
#include "qapi-gen.h"

/* From any thread: QEMU sends it when the export is really gone. */
static void export_deleted(const char *id)
{
    JsonBuilder *b = json_builder_new();

    json_builder_begin_object(b);
    json_builder_set_member_name(b, "id");
    json_builder_add_string_value(b, id);
    json_builder_end_object(b);
    qmp_event_emit("BLOCK_EXPORT_DELETED", json_builder_get_root(b));
    g_object_unref(b);
}

static void install_hook(void)
{
    nbd_set_export_deleted_hook(export_deleted);
}

static bool max_connections(bool has, int64_t n, uint32_t *out,
                            GError **errp)
{
    if (has && (n < 0 || n > UINT32_MAX)) {
        return qmp_fail(errp, "Parameter 'max-connections' expects uint32");
    }
    *out = has ? (uint32_t)n : 0;
    return true;
}

JsonNode *qmp_nbd_server_start(const q_obj_nbd_server_start_arg *args,
                               GError **errp)
{
    NbdServerAddr addr = { 0 };
    uint32_t maxc = 0;

    if (args->addr->type == SOCKETADDRESSTYPE_UNIX) {
        addr.unix_path = ((UnixSocketAddressWrapper *)args->addr->u)
                         ->data->path;
    } else {
        InetSocketAddress *in = ((InetSocketAddressWrapper *)args->addr->u)
                                ->data;
        addr.host = in->host;
        addr.port = in->port;
    }
    if (!max_connections(args->has_max_connections, args->max_connections,
                         &maxc, errp)) {
        return NULL;
    }
    install_hook();
    if (!nbd_server_start(&addr, maxc,
                          args->has_tls_creds ? args->tls_creds : NULL,
                          args->has_tls_authz ? args->tls_authz : NULL,
                          errp)) {
        return NULL;
    }
    return qmp_empty_return();
}

JsonNode *qmp_nbd_server_stop(GError **errp)
{
    return nbd_server_stop(errp) ? qmp_empty_return() : NULL;
}

static bool export_add(const BlockExportOptions *args, GError **errp)
{
    const BlockExportOptionsNbd *nbd = args->u;
    NbdExportOptions o = {
        .id = args->id,
        .node_name = args->node_name,
        .name = nbd && nbd->has_name ? nbd->name : NULL,
        .description = nbd && nbd->has_description ? nbd->description
                                                   : NULL,
        .writable = args->has_writable && args->writable,
        .writethrough = args->has_writethrough && args->writethrough,
        .iothread = args->has_iothread ? args->iothread : NULL,
    };

    if (!nbd_export_check_id(args->id, errp)) {
        return false;
    }
    if (args->type != BLOCKEXPORTTYPE_NBD) {
        /* QEMU's text when it was built without that export type */
        return qmp_fail(errp, "No driver found for the requested export "
                        "type");
    }
    install_hook();
    return nbd_export_add(&o, errp);
}

JsonNode *qmp_block_export_add(const BlockExportOptions *args, GError **errp)
{
    return export_add(args, errp) ? qmp_empty_return() : NULL;
}

JsonNode *qmp_block_export_del(const q_obj_block_export_del_arg *args,
                               GError **errp)
{
    NbdExportDelMode mode = args->has_mode &&
                            args->mode == BLOCKEXPORTREMOVEMODE_HARD
                            ? NBD_EXPORT_DEL_HARD : NBD_EXPORT_DEL_SAFE;

    return nbd_export_del(args->id, mode, errp) ? qmp_empty_return() : NULL;
}

JsonNode *qmp_query_block_exports(GError **errp)
{
    g_autoptr(GPtrArray) list = nbd_export_list();
    GPtrArray *out = g_ptr_array_new();
    JsonNode *ret;

    for (guint i = 0; i < list->len; i++) {
        NbdExportInfo *e = g_ptr_array_index(list, i);
        BlockExportInfo *info = g_new0(BlockExportInfo, 1);

        info->id = g_strdup(e->id);
        info->type = BLOCKEXPORTTYPE_NBD;
        info->node_name = g_strdup(e->node_name);
        info->shutting_down = e->shutting_down;
        g_ptr_array_add(out, info);
    }
    ret = qapi_BlockExportInfoList_to_json(out);
    qapi_free_BlockExportInfoList(out);
    return ret;
}

/* ---- the command line ---- */

bool monitor_nbd_server_check(JsonNode *options, bool keyval, GError **errp)
{
    NbdServerOptions *o = qapi_input(&qapi_type_NbdServerOptions, options,
                                     keyval, errp);
    uint32_t maxc = 0;
    bool ok;

    if (!o) {
        return false;
    }
    ok = max_connections(o->has_max_connections, o->max_connections, &maxc,
                         errp);
    qapi_free(&qapi_type_NbdServerOptions, o);
    return ok;
}

bool monitor_export_check(JsonNode *options, bool keyval, GError **errp)
{
    void *o = qapi_input(&qapi_type_BlockExportOptions, options, keyval,
                         errp);

    if (!o) {
        return false;
    }
    qapi_free(&qapi_type_BlockExportOptions, o);
    return true;
}

bool monitor_nbd_server_start(JsonNode *options, bool keyval, GError **errp)
{
    NbdServerOptions *o = qapi_input(&qapi_type_NbdServerOptions, options,
                                     keyval, errp);
    NbdServerAddr addr = { 0 };
    uint32_t maxc = 0;
    bool ok;

    if (!o) {
        return false;
    }
    if (o->addr->type == SOCKETADDRESSTYPE_UNIX) {
        addr.unix_path = ((UnixSocketAddress *)o->addr->u)->path;
    } else {
        addr.host = ((InetSocketAddress *)o->addr->u)->host;
        addr.port = ((InetSocketAddress *)o->addr->u)->port;
    }
    install_hook();
    ok = max_connections(o->has_max_connections, o->max_connections, &maxc,
                         errp) &&
         nbd_server_start(&addr, maxc,
                          o->has_tls_creds ? o->tls_creds : NULL,
                          o->has_tls_authz ? o->tls_authz : NULL, errp);
    qapi_free(&qapi_type_NbdServerOptions, o);
    return ok;
}

bool monitor_export_add(JsonNode *options, bool keyval, GError **errp)
{
    BlockExportOptions *o = qapi_input(&qapi_type_BlockExportOptions,
                                       options, keyval, errp);
    bool ok;

    if (!o) {
        return false;
    }
    ok = export_add(o, errp);
    qapi_free(&qapi_type_BlockExportOptions, o);
    return ok;
}

/* ---- --object tls-creds-x509 ---- */

static const char *kv_str(JsonObject *o, const char *key)
{
    JsonNode *n = json_object_get_member(o, key);

    return n && JSON_NODE_HOLDS_VALUE(n) &&
           json_node_get_value_type(n) == G_TYPE_STRING
           ? json_node_get_string(n) : NULL;
}

/* A bool given as keyval text or JSON; def if absent. */
static bool kv_flag(JsonObject *o, const char *key, bool def, bool *out,
                    GError **errp)
{
    JsonNode *n = json_object_get_member(o, key);
    const char *v;

    if (!n) {
        *out = def;
        return true;
    }
    if (JSON_NODE_HOLDS_VALUE(n) &&
        json_node_get_value_type(n) == G_TYPE_BOOLEAN) {
        *out = json_node_get_boolean(n);
        return true;
    }
    v = kv_str(o, key);
    if (v && (!strcmp(v, "on") || !strcmp(v, "true"))) {
        *out = true;
    } else if (v && (!strcmp(v, "off") || !strcmp(v, "false"))) {
        *out = false;
    } else {
        return qmp_fail(errp, "Parameter '%s' expects 'on' or 'off'", key);
    }
    return true;
}

/* authz-simple,id=ID,identity=DN */
static bool authz_check(JsonObject *o, GError **errp)
{
    static const char *const known[] = { "qom-type", "id", "identity",
                                         NULL };
    g_autoptr(GList) keys = json_object_get_members(o);

    for (GList *l = keys; l; l = l->next) {
        if (!g_strv_contains(known, l->data)) {
            return qmp_fail(errp, "Property 'authz-simple.%s' not found",
                            (const char *)l->data);
        }
    }
    if (!kv_str(o, "id")) {
        return qmp_fail(errp, "Parameter 'id' is missing");
    }
    if (!kv_str(o, "identity")) {
        return qmp_fail(errp, "Parameter 'identity' is missing");
    }
    return true;
}

/* secret,id=ID,data=D|file=F[,format=raw|base64]: an encryption key
 * (block/crypto-secret.c checks the values when it is added). */
static bool secret_check(JsonObject *o, GError **errp)
{
    static const char *const known[] = { "qom-type", "id", "data", "file",
                                         "format", "keyid", "iv", NULL };
    g_autoptr(GList) keys = json_object_get_members(o);

    for (GList *l = keys; l; l = l->next) {
        if (!g_strv_contains(known, l->data)) {
            return qmp_fail(errp, "Property 'secret.%s' not found",
                            (const char *)l->data);
        }
    }
    if (!kv_str(o, "id")) {
        return qmp_fail(errp, "Parameter 'id' is missing");
    }
    return true;
}

/* The checks of --object (all of them, without loading anything). */
static bool object_check(JsonNode *options, GError **errp)
{
    static const char *const known[] = { "qom-type", "id", "dir", "endpoint",
                                         "verify-peer", NULL };
    JsonObject *o = json_node_get_object(options);
    g_autoptr(GList) keys = json_object_get_members(o);
    const char *type = kv_str(o, "qom-type");
    bool verify;

    if (!type) {
        return qmp_fail(errp, "Parameter 'qom-type' is missing");
    }
    if (!strcmp(type, "authz-simple")) {
        return authz_check(o, errp);
    }
    if (!strcmp(type, "secret")) {
        return secret_check(o, errp);
    }
    if (strcmp(type, "tls-creds-x509")) {
        return qmp_fail(errp, "strata-daemon supports only --object "
                        "tls-creds-x509, authz-simple and secret, not '%s'",
                        type);
    }
    for (GList *l = keys; l; l = l->next) {
        if (!g_strv_contains(known, l->data)) {
            return qmp_fail(errp, "Property 'tls-creds-x509.%s' not found",
                            (const char *)l->data);
        }
    }
    if (!kv_str(o, "id")) {
        return qmp_fail(errp, "Parameter 'id' is missing");
    }
    if (!kv_str(o, "dir")) {
        return qmp_fail(errp, "Parameter 'dir' is missing");
    }
    if (kv_str(o, "endpoint") && strcmp(kv_str(o, "endpoint"), "server")) {
        return qmp_fail(errp, "strata-daemon supports only endpoint=server "
                        "TLS credentials");
    }
    return kv_flag(o, "verify-peer", true, &verify, errp);
}

bool monitor_object_check(JsonNode *options, bool keyval, GError **errp)
{
    return object_check(options, errp);
}

bool monitor_object_add(JsonNode *options, bool keyval, GError **errp)
{
    JsonObject *o = json_node_get_object(options);
    bool verify = true;

    if (!object_check(options, errp)) {
        return false;
    }
    /* one namespace over the registries of every kind, as QEMU's */
    if (crypto_secret_exists(kv_str(o, "id")) ||
        nbd_object_exists(kv_str(o, "id"))) {
        return qmp_fail(errp, "attempt to add duplicate property '%s' to "
                        "object (type 'container')", kv_str(o, "id"));
    }
    if (!strcmp(kv_str(o, "qom-type"), "authz-simple")) {
        return nbd_authz_add(kv_str(o, "id"), kv_str(o, "identity"), errp);
    }
    if (!strcmp(kv_str(o, "qom-type"), "secret")) {
        GError *err = NULL;
        if (!crypto_secret_add_fields(kv_str(o, "id"), kv_str(o, "data"),
                                      kv_str(o, "file"), kv_str(o, "format"),
                                      kv_str(o, "keyid"), kv_str(o, "iv"),
                                      &err)) {
            bool ok = qmp_fail(errp, "%s", err->message);
            g_error_free(err);
            return ok;
        }
        return true;
    }
    if (!kv_flag(o, "verify-peer", true, &verify, errp)) {
        return false;
    }
    return nbd_tls_creds_add(kv_str(o, "id"), kv_str(o, "dir"), verify,
                             errp);
}

void monitor_exports_shutdown(void)
{
    nbd_server_shutdown();
    nbd_tls_creds_remove_all();
}
