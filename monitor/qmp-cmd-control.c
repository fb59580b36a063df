/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The control commands: qmp_capabilities, query-version, query-commands,
 * query-qmp-schema, quit; and the greeting, which shares query-version's
 * VersionInfo.  Results are the schema's types (qapi/control.json)
 * serialised by the generated qapi_<T>_to_json.
 */
#include "monitor/monitor-int.h"
#include "monitor/json-stream.h"
#include "monitor/qmp-cmd-test.h"
#include "qapi-gen.h"

/* query-version's VersionInfo: the QEMU version whose QMP strata
 * implements, and strata's own package name. */
static VersionInfo *version_info(void)
{
    VersionInfo *info = g_new0(VersionInfo, 1);

    info->qemu = g_new0(VersionTriple, 1);
    info->qemu->major = MONITOR_QEMU_MAJOR;
    info->qemu->minor = MONITOR_QEMU_MINOR;
    info->qemu->micro = MONITOR_QEMU_MICRO;
    info->package = g_strdup(monitor_get_package());
    return info;
}

/* The greeting is no schema type in QEMU either: its two members are a
 * VersionInfo and the capability list, each serialised as typed. */
JsonNode *qmp_greeting(void)
{
    g_autoptr(VersionInfo) version = version_info();
    g_autoptr(GPtrArray) caps = g_ptr_array_new();
    JsonObject *qmp = json_object_new();
    JsonObject *top = json_object_new();

    g_ptr_array_add(caps, GINT_TO_POINTER(QMPCAPABILITY_OOB));
    json_object_set_member(qmp, "version", qapi_VersionInfo_to_json(version));
    json_object_set_member(qmp, "capabilities",
                           qapi_output_value(&qapi_list_of_QMPCapability,
                                             &caps));
    json_object_set_object_member(top, "QMP", qmp);
    return json_node_new_taking_object(top);
}

JsonNode *qmp_qmp_capabilities(const q_obj_qmp_capabilities_arg *args,
                               GError **errp)
{
    QmpSession *s = qmp_current_session();
    bool oob = false;

    for (guint i = 0; args->has_enable && i < args->enable->len; i++) {
        oob |= GPOINTER_TO_INT(args->enable->pdata[i]) == QMPCAPABILITY_OOB;
    }
    s->negotiated = true;
    s->oob = oob;
    return qmp_empty_return();
}

JsonNode *qmp_query_version(GError **errp)
{
    g_autoptr(VersionInfo) info = version_info();

    return qapi_VersionInfo_to_json(info);
}

static void add_command_info(GPtrArray *list, const char *name)
{
    CommandInfo *info = g_new0(CommandInfo, 1);

    info->name = g_strdup(name);
    g_ptr_array_add(list, info);
}

JsonNode *qmp_query_commands(GError **errp)
{
    GPtrArray *list = g_ptr_array_new();
    JsonNode *ret;

    for (const QapiCommand *c = qapi_commands; c->name; c++) {
        add_command_info(list, c->name);
    }
    /* env-gated test commands (monitor/qmp-cmd-test.c) */
    for (const QapiCommand *c = qmp_test_command_table(); c->name; c++) {
        add_command_info(list, c->name);
    }
    ret = qapi_CommandInfoList_to_json(list);
    qapi_free_CommandInfoList(list);
    return ret;
}

JsonNode *qmp_query_qmp_schema(GError **errp)
{
    /* generated from the schema at build time: valid by construction */
    return json_stream_parse_text(qmp_test_schema_text(), errp);
}

JsonNode *qmp_quit(GError **errp)
{
    monitor_request_quit();
    return qmp_empty_return();
}
