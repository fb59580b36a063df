/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Unit tests of the generated result serialisers (qapi_<T>_to_json over
 * monitor/qapi-visit.c's output walker): exact JSON text for structs with
 * optional members set and unset, lists (of structs, of enums, empty),
 * enums, nested structs, a recursive type, a flat union's variant, C
 * keyword members; input then output giving the text back; and
 * query-block, which lists named devices only, as QEMU.  Built with the
 * sanitizers, each test also proves that qapi_free_<T> frees everything
 * (LeakSanitizer would report otherwise).
 */
#include <check.h>
#include <string.h>
#include <unistd.h>

#include "blockdev/registry.h"
#include "monitor/json-stream.h"   /* json_stream_parse_text */
#include "monitor/qapi-visit.h"
#include "qapi-gen.h"

/* The text of node (freed): json-glib's compact layout, which keeps the
 * members in the order the serialiser added them. */
static char *text_of(JsonNode *node)
{
    char *t = json_to_string(node, FALSE);

    json_node_unref(node);
    return t;
}

static SnapshotInfo *snapshot(const char *id, const char *name,
                              bool has_icount)
{
    SnapshotInfo *s = g_new0(SnapshotInfo, 1);

    s->id = g_strdup(id);
    s->name = g_strdup(name);
    s->vm_state_size = 512;
    s->date_sec = 1700000000;
    s->date_nsec = 5;
    s->vm_clock_sec = 1;
    s->vm_clock_nsec = 2;
    s->has_icount = has_icount;
    s->icount = 77;      /* must not show unless has_icount */
    return s;
}

static ImageInfoSpecific *qcow2_specific(bool v3)
{
    ImageInfoSpecific *spec = g_new0(ImageInfoSpecific, 1);
    ImageInfoSpecificQCow2Wrapper *w = g_new0(ImageInfoSpecificQCow2Wrapper,
                                              1);

    w->data = g_new0(ImageInfoSpecificQCow2, 1);
    w->data->compat = g_strdup(v3 ? "1.1" : "0.10");
    w->data->has_lazy_refcounts = w->data->has_corrupt = v3;
    w->data->lazy_refcounts = true;  /* hidden for 0.10 */
    w->data->refcount_bits = 16;
    w->data->compression_type = v3 ? QCOW2COMPRESSIONTYPE_ZSTD
                                   : QCOW2COMPRESSIONTYPE_ZLIB;
    spec->type = IMAGEINFOSPECIFICKIND_QCOW2;
    spec->u = w;
    return spec;
}

START_TEST(test_struct_optional_nested)
{
    g_autoptr(ImageInfo) top = g_new0(ImageInfo, 1);
    ImageInfo *base = g_new0(ImageInfo, 1);
    g_autofree char *got = NULL;

    base->filename = g_strdup("b.qcow2");
    base->format = g_strdup("qcow2");
    base->virtual_size = 1048576;
    base->has_format_specific = true;
    base->format_specific = qcow2_specific(false);

    top->filename = g_strdup("t \"q\".qcow2");
    top->format = g_strdup("qcow2");
    top->dirty_flag = true;             /* has_dirty_flag false: absent */
    top->has_actual_size = true;
    top->actual_size = 0;               /* set: shown even when 0 */
    top->virtual_size = 4194304;
    top->has_backing_filename = true;
    top->backing_filename = g_strdup("b.qcow2");
    top->has_snapshots = true;
    top->snapshots = g_ptr_array_new();
    g_ptr_array_add(top->snapshots, snapshot("1", "a", true));
    g_ptr_array_add(top->snapshots, snapshot("2", "b", false));
    top->has_backing_image = true;
    top->backing_image = base;
    top->has_format_specific = true;
    top->format_specific = qcow2_specific(true);

    got = text_of(qapi_ImageInfo_to_json(top));
    /* QEMU's member order (its QDict's), as qemu-storage-daemon writes
     * these objects in query-named-block-nodes */
    ck_assert_str_eq(got,
        "{\"backing-image\":{\"virtual-size\":1048576,\"filename\":"
        "\"b.qcow2\",\"format\":\"qcow2\",\"format-specific\":"
        "{\"type\":\"qcow2\",\"data\":{\"compat\":\"0.10\","
        "\"compression-type\":\"zlib\",\"refcount-bits\":16}}},"
        "\"snapshots\":["
        "{\"icount\":77,\"vm-clock-nsec\":2,\"name\":\"a\","
        "\"date-sec\":1700000000,\"date-nsec\":5,\"vm-clock-sec\":1,"
        "\"id\":\"1\",\"vm-state-size\":512},"
        "{\"vm-clock-nsec\":2,\"name\":\"b\","
        "\"date-sec\":1700000000,\"date-nsec\":5,\"vm-clock-sec\":1,"
        "\"id\":\"2\",\"vm-state-size\":512}],"
        "\"virtual-size\":4194304,\"filename\":\"t \\\"q\\\".qcow2\","
        "\"format\":\"qcow2\",\"actual-size\":0,"
        "\"format-specific\":{\"type\":\"qcow2\",\"data\":"
        "{\"compat\":\"1.1\",\"compression-type\":\"zstd\","
        "\"lazy-refcounts\":true,\"refcount-bits\":16,"
        "\"corrupt\":false}},\"backing-filename\":\"b.qcow2\"}");
}
END_TEST

START_TEST(test_lists_and_enums)
{
    g_autoptr(GPtrArray) caps = g_ptr_array_new();
    GPtrArray *cmds = g_ptr_array_new();
    GPtrArray *empty = g_ptr_array_new();
    g_autoptr(VersionInfo) v = g_new0(VersionInfo, 1);
    g_autofree char *t1 = NULL, *t2 = NULL, *t3 = NULL, *t4 = NULL;

    g_ptr_array_add(caps, GINT_TO_POINTER(QMPCAPABILITY_OOB));
    t1 = text_of(qapi_output_value(&qapi_list_of_QMPCapability, &caps));
    ck_assert_str_eq(t1, "[\"oob\"]");

    for (int i = 0; i < 3; i++) {
        CommandInfo *c = g_new0(CommandInfo, 1);
        c->name = g_strdup_printf("cmd-%d", i);
        g_ptr_array_add(cmds, c);
    }
    t2 = text_of(qapi_CommandInfoList_to_json(cmds));
    ck_assert_str_eq(t2, "[{\"name\":\"cmd-0\"},{\"name\":\"cmd-1\"},"
                         "{\"name\":\"cmd-2\"}]");
    qapi_free_CommandInfoList(cmds);

    t3 = text_of(qapi_BlockInfoList_to_json(empty));
    ck_assert_str_eq(t3, "[]");
    qapi_free_BlockInfoList(empty);

    v->qemu = g_new0(VersionTriple, 1);
    v->qemu->major = 7;
    v->qemu->minor = 2;
    v->qemu->micro = -1;
    v->package = g_strdup("");
    t4 = text_of(qapi_VersionInfo_to_json(v));
    /* QEMU's greeting order: micro, minor, major */
    ck_assert_str_eq(t4, "{\"qemu\":{\"micro\":-1,\"minor\":2,"
                         "\"major\":7},\"package\":\"\"}");
}
END_TEST

/* A union with the 'object' variant, whose members include the C
 * keywords 'default' (type any) and 'case'. */
START_TEST(test_union_keywords)
{
    g_autoptr(SchemaInfo) si = g_new0(SchemaInfo, 1);
    SchemaInfoObject *obj = g_new0(SchemaInfoObject, 1);
    SchemaInfoObjectMember *m = g_new0(SchemaInfoObjectMember, 1);
    SchemaInfoObjectVariant *var = g_new0(SchemaInfoObjectVariant, 1);
    g_autofree char *got = NULL;

    m->name = g_strdup("x");
    m->type = g_strdup("int");
    m->has_q_default = true;
    m->q_default = json_node_init_null(json_node_alloc());
    var->q_case = g_strdup("qcow2");
    var->type = g_strdup("7");
    obj->members = g_ptr_array_new();
    g_ptr_array_add(obj->members, m);
    obj->has_tag = true;
    obj->tag = g_strdup("driver");
    obj->has_variants = true;
    obj->variants = g_ptr_array_new();
    g_ptr_array_add(obj->variants, var);
    si->name = g_strdup("3");
    si->meta_type = SCHEMAMETATYPE_OBJECT;
    si->u = obj;

    got = text_of(qapi_SchemaInfo_to_json(si));
    /* member order as qemu-storage-daemon's query-qmp-schema */
    ck_assert_str_eq(got,
        "{\"name\":\"3\",\"tag\":\"driver\",\"variants\":"
        "[{\"case\":\"qcow2\",\"type\":\"7\"}],\"members\":"
        "[{\"name\":\"x\",\"default\":null,\"type\":\"int\"}],"
        "\"meta-type\":\"object\"}");
}
END_TEST

/* Input then output: a command's arguments come back as the same JSON,
 * union variants, enums, lists and a member-less struct included. */
START_TEST(test_round_trip)
{
    static const char *const texts[] = {
        "{\"actions\": [{\"type\": \"blockdev-snapshot-sync\", \"data\": "
        "{\"device\": \"d0\", \"snapshot-file\": \"o.qcow2\", \"mode\": "
        "\"existing\"}}, {\"type\": \"abort\", \"data\": {}}, "
        "{\"type\": \"blockdev-snapshot-delete-internal-sync\", \"data\": "
        "{\"device\": \"d1\", \"name\": \"s\"}}], \"properties\": "
        "{\"completion-mode\": \"grouped\"}}",
        "{\"actions\": []}",
    };

    for (size_t i = 0; i < G_N_ELEMENTS(texts); i++) {
        g_autoptr(GError) err = NULL;
        g_autoptr(JsonNode) in = json_stream_parse_text(texts[i], &err);
        void *value;
        g_autoptr(JsonNode) out = NULL;
        g_autofree char *got = NULL;

        ck_assert_msg(in, "%s", err ? err->message : "");
        value = qapi_input(&qapi_type_q_obj_transaction_arg, in, false, &err);
        ck_assert_msg(value, "%s", err ? err->message : "");
        out = qapi_output(&qapi_type_q_obj_transaction_arg, value);
        qapi_free(&qapi_type_q_obj_transaction_arg, value);
        got = json_to_string(out, FALSE);
        ck_assert_msg(json_node_equal(in, out), "%s became %s", texts[i],
                      got);
    }
}
END_TEST

/*
 * query-block lists a device only when it has a name (QEMU: a name or a
 * guest device): the anonymous devices blockdev-add makes do not appear,
 * which is why qemu-storage-daemon and strata-daemon both return [].
 */
START_TEST(test_query_block)
{
    g_autoptr(GError) err = NULL;
    g_autofree char *dir = g_dir_make_tmp("strata-qmp-results-XXXXXX", NULL);
    g_autofree char *path = g_build_filename(dir, "disk.raw", NULL);
    BlockOpts *o = bdrv_opts_new();
    BlockDriverState *bs;
    BlockBackend *anon, *named;
    g_autofree char *t1 = NULL, *t2 = NULL;
    g_autoptr(JsonNode) parsed = NULL;
    JsonObject *info, *inserted;

    bdrv_opts_set(o, "size", "1048576");
    ck_assert_msg(bdrv_create("raw", path, o, &err), "%s",
                  err ? err->message : "");
    g_hash_table_unref(o);
    o = bdrv_opts_new();
    bdrv_opts_set(o, "driver", "raw");
    bdrv_opts_set(o, "node-name", "n0");
    bs = blockdev_open_node(path, o, BDRV_O_RDWR, &err);
    ck_assert_msg(bs, "%s", err ? err->message : "");

    t1 = text_of(qmp_query_block(&err));
    ck_assert_str_eq(t1, "[]");
    anon = blk_new(NULL, bs);
    ck_assert(blockdev_add_device(anon, &err));
    blk_unref(anon);
    g_clear_pointer(&t1, g_free);
    t1 = text_of(qmp_query_block(&err));
    ck_assert_str_eq(t1, "[]");

    named = blk_new("disk0", bs);
    ck_assert(blockdev_add_device(named, &err));
    blk_unref(named);
    t2 = text_of(qmp_query_block(&err));
    parsed = json_stream_parse_text(t2, &err);
    ck_assert_msg(parsed && JSON_NODE_HOLDS_ARRAY(parsed), "%s", t2);
    ck_assert_uint_eq(json_array_get_length(json_node_get_array(parsed)), 1);
    info = json_array_get_object_element(json_node_get_array(parsed), 0);
    /* a backend without a device model: removable, unlocked, no tray */
    ck_assert_str_eq(json_object_get_string_member(info, "device"), "disk0");
    ck_assert_str_eq(json_object_get_string_member(info, "type"), "unknown");
    ck_assert(json_object_get_boolean_member(info, "removable"));
    ck_assert(!json_object_get_boolean_member(info, "locked"));
    ck_assert(!json_object_has_member(info, "tray_open"));
    ck_assert(!json_object_has_member(info, "qdev"));
    ck_assert(!json_object_has_member(info, "io-status"));
    inserted = json_object_get_object_member(info, "inserted");
    ck_assert_str_eq(json_object_get_string_member(inserted, "node-name"),
                     "n0");
    ck_assert_str_eq(json_object_get_string_member(inserted, "drv"), "raw");
    ck_assert_str_eq(json_object_get_string_member(inserted, "file"), path);
    ck_assert_int_eq(json_object_get_int_member(
                         json_object_get_object_member(inserted, "image"),
                         "virtual-size"), 1048576);

    blockdev_remove_all_devices();
    bdrv_unref(bs);
    unlink(path);
    rmdir(dir);
}
END_TEST

static Suite *results_suite(void)
{
    Suite *s = suite_create("qmp-results");
    TCase *tc = tcase_create("serialisers");

    tcase_add_test(tc, test_struct_optional_nested);
    tcase_add_test(tc, test_lists_and_enums);
    tcase_add_test(tc, test_union_keywords);
    tcase_add_test(tc, test_round_trip);
    tcase_add_test(tc, test_query_block);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(results_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
