/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * One QMP request to its reply: the checks of the request's shape
 * (members execute/exec-oob/arguments/id), capabilities negotiation, the
 * lookup in the generated command table, argument checking through the
 * schema (monitor/qapi-visit.c), the call, and the reply object with the
 * id echoed.  All texts and error classes are QEMU 7.2's (see
 * ../shared/reference/qemu-7.2-block-digest.md, section 6).
 */
#include <string.h>

#include "monitor/monitor-int.h"
#include "blockdev/registry.h"
#include "monitor/qmp-cmd-test.h"

G_DEFINE_QUARK(strata-monitor-error-quark, monitor_error)

static QmpSession *current;

QmpSession *qmp_current_session(void)
{
    return current;
}

bool qmp_fail(GError **errp, const char *fmt, ...)
{
    va_list ap;
    g_autofree char *msg = NULL;

    va_start(ap, fmt);
    msg = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    g_set_error_literal(errp, BLOCKDEV_ERROR, BLOCKDEV_ERROR_GENERIC, msg);
    return false;
}

JsonNode *qmp_empty_return(void)
{
    return json_node_new_taking_object(json_object_new());
}

/* QEMU's class name for an error. */
static const char *error_class(const GError *err)
{
    if (err->domain == MONITOR_ERROR &&
        err->code == MONITOR_ERROR_COMMAND_NOT_FOUND) {
        return "CommandNotFound";
    }
    if (err->domain == MONITOR_ERROR &&
        err->code == MONITOR_ERROR_DEVICE_NOT_ACTIVE) {
        return "DeviceNotActive";
    }
    if (err->domain == BLOCKDEV_ERROR &&
        err->code == BLOCKDEV_ERROR_DEVICE_NOT_FOUND) {
        return "DeviceNotFound";
    }
    return "GenericError";
}

static JsonNode *error_reply(JsonNode *id, const GError *err)
{
    g_autoptr(JsonBuilder) b = json_builder_new();
    /* A reply is one line: the lock error's hint line is for terminals. */
    g_autofree char *desc = g_strdup(err->message);
    char *nl = strchr(desc, '\n');

    if (nl) {
        *nl = 0;
    }
    json_builder_begin_object(b);
    if (id) {
        json_builder_set_member_name(b, "id");
        json_builder_add_value(b, json_node_copy(id));
    }
    json_builder_set_member_name(b, "error");
    json_builder_begin_object(b);
    json_builder_set_member_name(b, "class");
    json_builder_add_string_value(b, error_class(err));
    json_builder_set_member_name(b, "desc");
    json_builder_add_string_value(b, desc);
    json_builder_end_object(b);
    json_builder_end_object(b);
    return json_builder_get_root(b);
}

static JsonNode *return_reply(JsonNode *id, JsonNode *value)
{
    JsonObject *obj = json_object_new();

    json_object_set_member(obj, "return", value);
    if (id) {
        json_object_set_member(obj, "id", json_node_copy(id));
    }
    return json_node_new_taking_object(obj);
}

static bool generic(GError **errp, const char *fmt, const char *arg)
{
    g_set_error(errp, BLOCKDEV_ERROR, BLOCKDEV_ERROR_GENERIC, fmt, arg);
    return false;
}

static bool not_found(GError **errp, const char *fmt, const char *arg)
{
    g_set_error(errp, MONITOR_ERROR, MONITOR_ERROR_COMMAND_NOT_FOUND, fmt,
                arg);
    return false;
}

/* The request's members, as QEMU checks them; *name gets the command. */
static bool check_request(QmpSession *s, JsonObject *req, const char **name,
                          bool *oob, JsonObject **args, GError **errp)
{
    g_autoptr(GList) members = json_object_get_members(req);
    JsonNode *exec = json_object_get_member(req, "execute");
    JsonNode *exec_oob = json_object_get_member(req, "exec-oob");

    for (GList *l = members; l; l = l->next) {
        const char *key = l->data;
        JsonNode *v = json_object_get_member(req, key);

        if (!strcmp(key, "execute") ||
            (!strcmp(key, "exec-oob") && s->oob)) {
            if (!JSON_NODE_HOLDS_VALUE(v) ||
                json_node_get_value_type(v) != G_TYPE_STRING) {
                return generic(errp, "QMP input member '%s' must be a "
                               "string", key);
            }
        } else if (!strcmp(key, "arguments")) {
            if (!JSON_NODE_HOLDS_OBJECT(v)) {
                return generic(errp, "QMP input member '%s' must be an "
                               "object", key);
            }
        } else if (strcmp(key, "id")) {
            return generic(errp, "QMP input member '%s' is unexpected", key);
        }
    }
    if (exec && exec_oob) {
        return generic(errp, "QMP input member 'execute' clashes with "
                       "'exec-oob'%s", "");
    }
    if (!exec && !exec_oob) {
        return generic(errp, "QMP input lacks member 'execute'%s", "");
    }
    *oob = exec_oob != NULL;
    *name = json_node_get_string(exec ? exec : exec_oob);
    *args = json_object_has_member(req, "arguments")
            ? json_object_get_object_member(req, "arguments") : NULL;
    return true;
}

/* The command's arguments checked and converted, then the call. */
static JsonNode *run_command(const QapiCommand *cmd, JsonObject *args,
                             GError **errp)
{
    g_autoptr(JsonNode) node = NULL;
    JsonNode *ret;
    void *typed = NULL;

    if (args) {
        node = json_node_init_object(json_node_alloc(), args);
    }
    if (!cmd->args) {
        g_autoptr(GList) names = args ? json_object_get_members(args) : NULL;
        if (names) {
            generic(errp, "Parameter '%s' is unexpected", names->data);
            return NULL;
        }
    } else {
        typed = qapi_input(cmd->args, node, false, errp);
        if (!typed) {
            return NULL;
        }
    }
    ret = cmd->fn(typed, errp);
    if (cmd->args) {
        qapi_free(cmd->args, typed);
    }
    return ret;
}

static JsonNode *dispatch_object(QmpSession *s, JsonObject *req,
                                 GError **errp)
{
    const char *name;
    bool oob;
    JsonObject *args;
    const QapiCommand *cmd;

    if (!check_request(s, req, &name, &oob, &args, errp)) {
        return NULL;
    }
    cmd = qapi_find_command(name);
    if (!cmd) {
        /* env-gated test commands (monitor/qmp-cmd-test.c) */
        cmd = qmp_test_find_command(name);
    }
    if (!s->negotiated && (!cmd || strcmp(name, "qmp_capabilities"))) {
        not_found(errp, "Expecting capabilities negotiation with "
                  "'qmp_capabilities'%s", "");
        return NULL;
    }
    if (!cmd) {
        not_found(errp, "The command %s has not been found", name);
        return NULL;
    }
    if (s->negotiated && !strcmp(name, "qmp_capabilities")) {
        not_found(errp, "Capabilities negotiation is already complete, "
                  "command ignored%s", "");
        return NULL;
    }
    if (oob) {
        /* No command of ours may run out of band (QEMU's block commands
         * may not either). */
        generic(errp, "The command %s does not support OOB", name);
        return NULL;
    }
    return run_command(cmd, args, errp);
}

JsonNode *qmp_dispatch(QmpSession *s, JsonNode *request, GError *parse_err)
{
    g_autoptr(GError) err = NULL;
    JsonNode *id = NULL;
    JsonNode *ret;

    if (parse_err) {
        return error_reply(NULL, parse_err);
    }
    if (!JSON_NODE_HOLDS_OBJECT(request)) {
        generic(&err, "QMP input must be a JSON object%s", "");
        return error_reply(NULL, err);
    }
    id = json_object_get_member(json_node_get_object(request), "id");
    current = s;
    ret = dispatch_object(s, json_node_get_object(request), &err);
    current = NULL;
    if (!ret) {
        if (!err) {
            g_set_error(&err, BLOCKDEV_ERROR, BLOCKDEV_ERROR_GENERIC,
                        "internal error: command failed without a reason");
        }
        return error_reply(id, err);
    }
    return return_reply(id, ret);
}

JsonNode *monitor_handle_request(JsonNode *request, GError *parse_err)
{
    QmpSession s = { .negotiated = true };

    return qmp_dispatch(&s, request, parse_err);
}
