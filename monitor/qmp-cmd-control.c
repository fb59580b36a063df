/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The control commands: qmp_capabilities, query-version, query-commands,
 * query-qmp-schema, quit; and the greeting, which shares query-version's object.
 */
#include "monitor/monitor-int.h"
#include "monitor/json-stream.h"
#include "monitor/qmp-cmd-test.h"
#include "qapi-gen.h"

JsonNode *qmp_version_info(void)
{
    g_autoptr(JsonBuilder) b = json_builder_new();

    json_builder_begin_object(b);
    json_builder_set_member_name(b, "qemu");
    json_builder_begin_object(b);
    json_builder_set_member_name(b, "micro");
    json_builder_add_int_value(b, MONITOR_QEMU_MICRO);
    json_builder_set_member_name(b, "minor");
    json_builder_add_int_value(b, MONITOR_QEMU_MINOR);
    json_builder_set_member_name(b, "major");
    json_builder_add_int_value(b, MONITOR_QEMU_MAJOR);
    json_builder_end_object(b);
    json_builder_set_member_name(b, "package");
    json_builder_add_string_value(b, monitor_get_package());
    json_builder_end_object(b);
    return json_builder_get_root(b);
}

JsonNode *qmp_greeting(void)
{
    JsonObject *qmp = json_object_new();
    JsonObject *top = json_object_new();
    JsonArray *caps = json_array_new();

    json_array_add_string_element(caps, "oob");
    json_object_set_member(qmp, "version", qmp_version_info());
    json_object_set_array_member(qmp, "capabilities", caps);
    json_object_set_object_member(top, "QMP", qmp);
    return json_node_init_object(json_node_alloc(), top);
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
    return qmp_version_info();
}

JsonNode *qmp_query_commands(GError **errp)
{
    JsonArray *arr = json_array_new();

    for (const QapiCommand *c = qapi_commands; c->name; c++) {
        JsonObject *o = json_object_new();
        json_object_set_string_member(o, "name", c->name);
        json_array_add_object_element(arr, o);
    }
    /* env-gated test commands (monitor/qmp-cmd-test.c) */
    for (const QapiCommand *c = qmp_test_command_table(); c->name; c++) {
        JsonObject *o = json_object_new();
        json_object_set_string_member(o, "name", c->name);
        json_array_add_object_element(arr, o);
    }
    return json_node_init_array(json_node_alloc(), arr);
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
