/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * QMP object-add and object-del: the objects --object makes (secrets, and
 * TLS credentials and authorization lists for the NBD server), added and
 * removed while the daemon runs, as libvirt does before a blockdev-add of
 * an encrypted image or an nbd-server-start with TLS.
 *
 * Every kind lives in its own registry (block/crypto-secret.c,
 * nbd/server-tls.c); QEMU keeps one namespace for all of them, so the
 * duplicate check here looks in each.
 */
#include <glib.h>

#include "block/crypto.h"
#include "monitor/keyval.h"
#include "monitor/qmp-export.h"
#include "monitor/monitor-int.h"
#include "nbd/server.h"
#include "qapi-gen.h"

static bool object_exists(const char *id)
{
    return crypto_secret_exists(id) || nbd_object_exists(id);
}

JsonNode *qmp_object_add(const ObjectOptions *args, GError **errp)
{
    g_autoptr(JsonNode) node = NULL;

    if (object_exists(args->id)) {
        qmp_fail(errp, "attempt to add duplicate property '%s' to object "
                 "(type 'container')", args->id);
        return NULL;
    }
    /* the same path as --object, from the typed members */
    node = qapi_output(&qapi_type_ObjectOptions, args);
    return monitor_object_add(node, false, errp) ? qmp_empty_return() : NULL;
}

/* HMP object_add: QEMU's keyval form, the type first without a name
 * ("secret,id=s0,data=..."). */
bool monitor_object_add_text(const char *text, GError **errp)
{
    g_autoptr(JsonNode) node = monitor_keyval_parse(text, "qom-type", errp);
    JsonNode *id;

    if (!node) {
        return false;
    }
    id = json_object_get_member(json_node_get_object(node), "id");
    if (id && JSON_NODE_HOLDS_VALUE(id) &&
        json_node_get_value_type(id) == G_TYPE_STRING &&
        object_exists(json_node_get_string(id))) {
        return qmp_fail(errp, "attempt to add duplicate property '%s' to "
                        "object (type 'container')",
                        json_node_get_string(id));
    }
    return monitor_object_add(node, true, errp);
}

JsonNode *qmp_object_del(const q_obj_object_del_arg *args, GError **errp)
{
    /* open images keep the keys they derived: a secret can always go */
    if (crypto_secret_remove(args->id)) {
        return qmp_empty_return();
    }
    return nbd_object_remove(args->id, errp) ? qmp_empty_return() : NULL;
}
