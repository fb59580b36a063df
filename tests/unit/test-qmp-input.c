/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Unit tests of the QMP monitor's input side: the JSON stream (values cut
 * from arbitrary chunks, QEMU's parse errors, the size and nesting
 * bounds, recovery after an error), the schema walker (QEMU's argument
 * errors with their paths, typed values, keyval scalars), and requests
 * dispatched without a socket (shape errors, the id echoed, error
 * classes).
 */
#include <check.h>
#include <string.h>

#include "monitor/json-stream.h"
#include "monitor/monitor.h"
#include "monitor/qapi-visit.h"
#include "qapi-gen.h"

typedef struct Collected {
    GPtrArray *texts;          /* "V:<json>" or "E:<message>" */
} Collected;

static void collect(JsonNode *value, GError *err, void *opaque)
{
    Collected *c = opaque;

    if (value) {
        g_autofree char *t = json_writer_line(value);
        g_ptr_array_add(c->texts, g_strconcat("V:", t, NULL));
        json_node_unref(value);
    } else {
        g_ptr_array_add(c->texts, g_strconcat("E:", err->message, NULL));
        g_error_free(err);
    }
}

/* Feeds text in chunks of chunk bytes; returns what came out. */
static GPtrArray *feed(const char *text, size_t chunk)
{
    Collected c = { g_ptr_array_new_with_free_func(g_free) };
    JsonStream *s = json_stream_new(collect, &c);
    size_t len = strlen(text);

    for (size_t i = 0; i < len; i += chunk) {
        json_stream_feed(s, text + i, MIN(chunk, len - i));
    }
    json_stream_free(s);
    return c.texts;
}

static void assert_outputs(const char *text, const char *const *want,
                           guint n)
{
    /* the same values whatever the chunking */
    static const size_t chunks[] = { 1, 2, 7, 4096 };

    for (size_t k = 0; k < G_N_ELEMENTS(chunks); k++) {
        g_autoptr(GPtrArray) got = feed(text, chunks[k]);

        ck_assert_msg(got->len == n, "%s (chunk %zu): %u values, want %u",
                      text, chunks[k], got->len, n);
        for (guint i = 0; i < n; i++) {
            ck_assert_str_eq(g_ptr_array_index(got, i), want[i]);
        }
    }
}

START_TEST(test_stream_values)
{
    static const char *const two[] = {
        "V:{\"a\": 1}", "V:{\"b\": [true, false, null, \"x\"]}",
    };
    static const char *const pretty[] = { "V:{\"execute\": \"q\", \"id\": 2}" };
    static const char *const single[] = { "V:{\"a\": \"it's\"}" };
    static const char *const esc[] = {
        "V:[\"\\u00E9\\uD83D\\uDE00\", \"\\n\\\"\"]",
    };

    assert_outputs("{\"a\": 1}{\"b\": [true, false, null, \"x\"]}\n", two, 2);
    assert_outputs("{\n  \"execute\":\n   \"q\",\n \"id\": 2\n}", pretty, 1);
    assert_outputs("{'a': 'it\\'s'}", single, 1);
    /* non-ASCII is escaped on output, surrogate pairs decoded and
     * re-encoded */
    assert_outputs("[\"\xc3\xa9\\ud83d\\ude00\", \"\\n\\\"\"]", esc, 1);
}
END_TEST

START_TEST(test_stream_errors)
{
    static const char *const missing[] = {
        "E:JSON parse error, expecting value",
    };
    static const char *const words[] = {
        "E:JSON parse error, invalid keyword 'this'",
        "E:JSON parse error, invalid keyword 'is'",
        "V:{\"ok\": 1}",
    };
    static const char *const key[] = {
        "E:JSON parse error, key is not a string in object",
        "E:JSON parse error, missing : in object pair",
        "E:JSON parse error, expected separator in list",
        "E:JSON parse error, duplicate key",
        "E:JSON parse error, \\uzzzz is not a valid Unicode character",
    };
    static const char *const stray[] = {
        "E:JSON parse error, stray '@'", "V:[1]",
    };
    /* a stray non-UTF-8 byte: quoted in the message, which the writer
     * must print without reading past it */
    {
        g_autoptr(GPtrArray) got = feed("\xff", 1);
        g_autofree char *text = NULL;
        g_autoptr(JsonNode) n = NULL;

        ck_assert_uint_eq(got->len, 1);
        n = json_node_init_string(json_node_alloc(),
                                  (char *)got->pdata[0] + 2);
        text = json_writer_line(n);
        ck_assert_str_eq(text, "\"JSON parse error, stray '\\uFFFD'\"");
    }

    assert_outputs("{\"execute\": }", missing, 1);
    assert_outputs("this is {\"ok\": 1}", words, 3);
    assert_outputs("{1: 2}{\"a\" 1}[1 2]{\"a\": 1, \"a\": 2}[\"\\uzzzz\"]",
                   key, 5);
    assert_outputs("@[1]", stray, 2);
}
END_TEST

START_TEST(test_stream_bounds)
{
    GString *deep = g_string_new(NULL);
    g_autoptr(GPtrArray) got = NULL;
    g_autofree char *big = NULL;
    g_autofree char *text = NULL;

    /* nesting: refused at depth 1025, the stream recovers */
    for (int i = 0; i < 1100; i++) {
        g_string_append_c(deep, '[');
    }
    g_string_append(deep, " {\"after\": 1}");
    got = feed(deep->str, 4096);
    g_string_free(deep, TRUE);
    ck_assert_uint_ge(got->len, 1);
    ck_assert_str_eq(g_ptr_array_index(got, 0),
                     "E:JSON nesting depth limit exceeded");
    g_ptr_array_unref(g_steal_pointer(&got));

    /* a string over the bound: one error, the rest of it dropped, the
     * next value parsed */
    big = g_malloc(JSON_STREAM_MAX_BYTES + 100);
    memset(big, 'x', JSON_STREAM_MAX_BYTES + 99);
    big[JSON_STREAM_MAX_BYTES + 99] = 0;
    text = g_strdup_printf("\"%s\" {\"next\": true}", big);
    got = feed(text, 65536);
    ck_assert_uint_eq(got->len, 2);
    ck_assert_str_eq(g_ptr_array_index(got, 0),
                     "E:JSON token size limit exceeded");
    ck_assert_str_eq(g_ptr_array_index(got, 1), "V:{\"next\": true}");
}
END_TEST

/* ---- the schema walker ---- */

static void *input_text(const QapiType *t, const char *json, bool keyval,
                        char **err_out)
{
    g_autoptr(GError) err = NULL;
    g_autoptr(JsonNode) node = json_stream_parse_text(json, &err);
    void *v;

    ck_assert_msg(node, "%s: %s", json, err ? err->message : "");
    v = qapi_input(t, node, keyval, &err);
    *err_out = err ? g_strdup(err->message) : NULL;
    return v;
}

static void input_refused(const QapiType *t, const char *json, bool keyval,
                          const char *want)
{
    g_autofree char *err = NULL;
    void *v = input_text(t, json, keyval, &err);

    ck_assert_msg(!v, "%s accepted", json);
    ck_assert_str_eq(err, want);
}

START_TEST(test_schema_errors)
{
    const QapiType *tr = &qapi_type_q_obj_transaction_arg;
    const QapiType *bd = &qapi_type_BlockdevOptions;

    input_refused(tr, "{}", false, "Parameter 'actions' is missing");
    input_refused(tr, "{\"actions\": {}}", false,
                  "Invalid parameter type for 'actions', expected: array");
    input_refused(tr, "{\"actions\": [1]}", false,
                  "Invalid parameter type for 'actions[0]', expected: "
                  "object");
    input_refused(tr, "{\"actions\": [{\"data\": {}}]}", false,
                  "Parameter 'actions[0].type' is missing");
    input_refused(tr, "{\"actions\": [{\"type\": \"abort\"}]}", false,
                  "Parameter 'actions[0].data' is missing");
    /* an enum error names the member only, as QEMU's does */
    input_refused(tr, "{\"actions\": [{\"type\": \"x\", \"data\": {}}]}",
                  false, "Parameter 'type' does not accept value 'x'");
    input_refused(tr, "{\"actions\": [{\"type\": "
                  "\"blockdev-snapshot-internal-sync\", \"data\": "
                  "{\"device\": \"d\", \"name\": 1}}]}", false,
                  "Invalid parameter type for 'actions[0].data.name', "
                  "expected: string");
    input_refused(tr, "{\"actions\": [], \"zz\": 1}", false,
                  "Parameter 'zz' is unexpected");
    input_refused(bd, "{\"driver\": \"qcow2\", \"file\": 3}", false,
                  "Invalid parameter type for 'file', expected: "
                  "BlockdevRef");
    input_refused(bd, "{\"driver\": \"qcow2\", \"file\": {\"driver\": "
                  "\"file\"}}", false, "Parameter 'file.filename' is "
                  "missing");
    input_refused(bd, "{\"driver\": \"raw\", \"read-only\": \"maybe\", "
                  "\"file\": \"f\"}", true,
                  "Parameter 'read-only' expects 'on' or 'off'");
    input_refused(bd, "{\"driver\": \"raw\", \"read-only\": \"on\", "
                  "\"file\": \"f\"}", false,
                  "Invalid parameter type for 'read-only', expected: "
                  "boolean");
    /* a list element's enum error says 'null', as QEMU's does */
    input_refused(&qapi_type_q_obj_qmp_capabilities_arg,
                  "{\"enable\": [\"bogus\"]}", false,
                  "Parameter 'null' does not accept value 'bogus'");
}
END_TEST

START_TEST(test_schema_typed)
{
    g_autofree char *err = NULL;
    q_obj_transaction_arg *t = input_text(
        &qapi_type_q_obj_transaction_arg,
        "{\"actions\": [{\"type\": \"blockdev-snapshot-sync\", \"data\": "
        "{\"node-name\": \"d0\", \"snapshot-file\": \"o.qcow2\", "
        "\"mode\": \"existing\"}}], \"properties\": "
        "{\"completion-mode\": \"grouped\"}}", false, &err);
    TransactionAction *a;
    BlockdevSnapshotSync *d;
    BlockdevOptions *o;

    ck_assert_msg(t, "%s", err);
    ck_assert_uint_eq(t->actions->len, 1);
    a = t->actions->pdata[0];
    ck_assert_int_eq(a->type, TRANSACTIONACTIONKIND_BLOCKDEV_SNAPSHOT_SYNC);
    d = ((BlockdevSnapshotSyncWrapper *)a->u)->data;
    ck_assert(d->has_node_name && !d->has_device && !d->has_format);
    ck_assert_str_eq(d->node_name, "d0");
    ck_assert_str_eq(d->snapshot_file, "o.qcow2");
    ck_assert(d->has_mode);
    ck_assert_int_eq(d->mode, NEWIMAGEMODE_EXISTING);
    ck_assert(t->has_properties && t->properties->has_completion_mode);
    ck_assert_int_eq(t->properties->completion_mode,
                     ACTIONCOMPLETIONMODE_GROUPED);
    qapi_free(&qapi_type_q_obj_transaction_arg, t);

    /* keyval: strings become booleans; a nested object stays JSON */
    o = input_text(&qapi_type_BlockdevOptions,
                   "{\"driver\": \"qcow2\", \"node-name\": \"n\", "
                   "\"read-only\": \"on\", \"file\": {\"driver\": \"file\", "
                   "\"filename\": \"a\"}}", true, &err);
    ck_assert_msg(o, "%s", err);
    ck_assert(o->has_read_only && o->read_only);
    ck_assert_int_eq(o->driver, BLOCKDEVDRIVER_QCOW2);
    ck_assert(JSON_NODE_HOLDS_OBJECT(
        ((BlockdevOptionsQcow2 *)o->u)->file));
    qapi_free(&qapi_type_BlockdevOptions, o);
}
END_TEST

/* ---- requests ---- */

static char *reply_to(const char *text)
{
    g_autoptr(GError) err = NULL;
    g_autoptr(JsonNode) req = json_stream_parse_text(text, &err);
    g_autoptr(JsonNode) reply = monitor_handle_request(req, err);

    return json_writer_line(reply);
}

static void assert_reply(const char *req, const char *want)
{
    g_autofree char *got = reply_to(req);

    ck_assert_str_eq(got, want);
}

START_TEST(test_requests)
{
    monitor_set_package("strata test");
    assert_reply("[]", "{\"error\": {\"class\": \"GenericError\", \"desc\": "
                 "\"QMP input must be a JSON object\"}}");
    assert_reply("{\"id\": 5}", "{\"id\": 5, \"error\": {\"class\": "
                 "\"GenericError\", \"desc\": \"QMP input lacks member "
                 "'execute'\"}}");
    assert_reply("{\"execute\": 1}", "{\"error\": {\"class\": "
                 "\"GenericError\", \"desc\": \"QMP input member 'execute' "
                 "must be a string\"}}");
    assert_reply("{\"execute\": \"x\", \"id\": [1, {\"a\": null}]}",
                 "{\"id\": [1, {\"a\": null}], \"error\": {\"class\": "
                 "\"CommandNotFound\", \"desc\": \"The command x has not "
                 "been found\"}}");
    assert_reply("{\"execute\": \"qmp_capabilities\"}",
                 "{\"error\": {\"class\": \"CommandNotFound\", \"desc\": "
                 "\"Capabilities negotiation is already complete, command "
                 "ignored\"}}");
    assert_reply("{\"execute\": \"query-version\", \"id\": \"v\"}",
                 "{\"return\": {\"qemu\": {\"micro\": 0, \"minor\": 2, "
                 "\"major\": 7}, \"package\": \"strata test\"}, \"id\": "
                 "\"v\"}");
    assert_reply("{\"execute\": \"blockdev-del\", \"arguments\": "
                 "{\"node-name\": \"nonode\"}}",
                 "{\"error\": {\"class\": \"GenericError\", \"desc\": "
                 "\"Failed to find node with node-name='nonode'\"}}");
    assert_reply("{\"exec-oob\": \"query-version\"}",
                 "{\"error\": {\"class\": \"GenericError\", \"desc\": "
                 "\"QMP input member 'exec-oob' is unexpected\"}}");
    monitor_shutdown();
}
END_TEST

static Suite *qmp_suite(void)
{
    Suite *s = suite_create("qmp-input");
    TCase *stream = tcase_create("stream");
    TCase *schema = tcase_create("schema");
    TCase *requests = tcase_create("requests");

    tcase_add_test(stream, test_stream_values);
    tcase_add_test(stream, test_stream_errors);
    tcase_add_test(stream, test_stream_bounds);
    tcase_add_test(schema, test_schema_errors);
    tcase_add_test(schema, test_schema_typed);
    tcase_add_test(requests, test_requests);
    suite_add_tcase(s, stream);
    suite_add_tcase(s, schema);
    suite_add_tcase(s, requests);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(qmp_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
