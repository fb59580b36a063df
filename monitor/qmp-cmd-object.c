/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * QMP object-add and object-del: the objects --object makes (secrets, and
 * TLS credentials and authorization lists for the NBD server), added and
 * removed while the daemon runs, as libvirt does before a blockdev-add of
 * an encrypted image or an nbd-server-start with TLS.
 *
 * Every kind lives in its own registry (block/crypto-secret.c,
 * nbd/server-tls.c); monitor_object_add() keeps one namespace over them,
 * as QEMU has.
 */
#include <glib.h>

#include "block/crypto.h"
#include "monitor/keyval.h"
#include "monitor/qmp-export.h"
#include "monitor/monitor-int.h"
#include "nbd/server.h"
#include "qapi-gen.h"

JsonNode *qmp_object_add(const ObjectOptions *args, GError **errp)
{
    /* the same path as --object, from the typed members */
    g_autoptr(JsonNode) node = qapi_output(&qapi_type_ObjectOptions, args);

    return monitor_object_add(node, false, errp) ? qmp_empty_return() : NULL;
}

/* HMP object_add: QEMU's keyval form, the type first without a name
 * ("secret,id=s0,data=..."). */
bool monitor_object_add_text(const char *text, GError **errp)
{
    g_autoptr(JsonNode) node = monitor_keyval_parse(text, "qom-type", errp);

    return node && monitor_object_add(node, true, errp);
}

JsonNode *qmp_object_del(const q_obj_object_del_arg *args, GError **errp)
{
    /* open images keep the keys they derived: a secret can always go */
    if (crypto_secret_remove(args->id)) {
        return qmp_empty_return();
    }
    return nbd_object_remove(args->id, errp) ? qmp_empty_return() : NULL;
}
