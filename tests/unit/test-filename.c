/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Unit tests of block/filename.c (json:{...} names flattened to dotted
 * options, protocol prefixes, QEMU's messages) and of the QEMU-format
 * blkdebug config reader in block/blkdebug-rules.c (sections, the order
 * rules come out in, values and defaults).
 */
#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "block/filename.h"
#include "block/blkdebug-rules.h"

static BlockOpts *json_ok(const char *text)
{
    g_autoptr(GError) err = NULL;
    BlockOpts *o = bdrv_json_to_opts(text, &err);

    ck_assert_msg(o, "%s: %s", text, err ? err->message : "");
    return o;
}

static void json_fails(const char *text, const char *msg)
{
    g_autoptr(GError) err = NULL;

    ck_assert(!bdrv_json_to_opts(text, &err));
    ck_assert_msg(strstr(err->message, msg), "%s: got '%s'", text,
                  err->message);
}

START_TEST(json_flattens_nested_objects_and_arrays)
{
    g_autoptr(GHashTable) o = json_ok(
        "{\"driver\": \"qcow2\", \"file\": {\"driver\": \"blkdebug\","
        " \"inject-error\": [{\"event\": \"l2_load\"}, {\"errno\": 28}],"
        " \"image\": {\"filename\": \"a,b}\\\"c\"}}, \"read-only\": true,"
        " \"backing\": null, \"cache\": {\"direct\": false}}");

    ck_assert_str_eq(bdrv_opts_get(o, "driver"), "qcow2");
    ck_assert_str_eq(bdrv_opts_get(o, "file.driver"), "blkdebug");
    ck_assert_str_eq(bdrv_opts_get(o, "file.inject-error.0.event"),
                     "l2_load");
    ck_assert_str_eq(bdrv_opts_get(o, "file.inject-error.1.errno"), "28");
    /* a brace and an escaped quote inside a string end nothing */
    ck_assert_str_eq(bdrv_opts_get(o, "file.image.filename"), "a,b}\"c");
    ck_assert_str_eq(bdrv_opts_get(o, "read-only"), "on");
    ck_assert_str_eq(bdrv_opts_get(o, "cache.direct"), "off");
    ck_assert_str_eq(bdrv_opts_get(o, "backing"), "null");
    ck_assert_uint_eq(g_hash_table_size(o), 8);
}
END_TEST

START_TEST(json_errors_are_qemus)
{
    json_fails("", "Could not parse the JSON options: Expecting a JSON "
               "value");
    json_fails("   ", "Expecting a JSON value");
    json_fails("{\"a\": \"b\"", "JSON parse error, premature EOI");
    json_fails("{\"a\": \"b}", "JSON parse error, premature EOI");
    json_fails("{} {}", "Expecting at most one JSON value");
    json_fails("{}x", "Expecting at most one JSON value");
    json_fails("[1, 2]", "Invalid JSON object given");
    json_fails("\"str\"", "Invalid JSON object given");
    json_fails("{\"a\": }", "JSON parse error");
}
END_TEST

START_TEST(json_merge_keeps_given_options)
{
    g_autoptr(GHashTable) o = bdrv_opts_new();
    g_autoptr(GError) err = NULL;

    bdrv_opts_set(o, "driver", "qcow2");
    ck_assert(bdrv_filename_merge_json(
        "json:{\"driver\": \"raw\", \"file.filename\": \"x\"}", o, &err));
    ck_assert_str_eq(bdrv_opts_get(o, "driver"), "qcow2");
    ck_assert_str_eq(bdrv_opts_get(o, "file.filename"), "x");
}
END_TEST

static const char *picked(const char *name, GError **err)
{
    static char driver[32];
    g_autoptr(GHashTable) o = bdrv_opts_new();

    if (!bdrv_filename_pick_protocol(name, o, err)) {
        return NULL;
    }
    g_strlcpy(driver, bdrv_opts_get(o, "driver"), sizeof(driver));
    return driver;
}

START_TEST(protocol_prefixes)
{
    g_autoptr(GError) err = NULL;

    ck_assert_str_eq(picked("/a/b:c", NULL), "file");
    ck_assert_str_eq(picked("./b:c", NULL), "file");
    ck_assert_str_eq(picked("plain", NULL), "file");
    ck_assert_str_eq(picked("file:x", NULL), "file");
    ck_assert_str_eq(picked("blkdebug::x", NULL), "blkdebug");
    ck_assert(!picked("b:c", &err));
    ck_assert_str_eq(err->message, "Unknown protocol 'b'");
    g_clear_error(&err);
    /* a protocol QEMU has and strata has no driver for */
    ck_assert(!picked("ssh://host/x", &err));
    ck_assert_str_eq(err->message, "Unknown protocol 'ssh'");
#ifdef HAVE_LIBNBD
    ck_assert_str_eq(picked("nbd:localhost:10809", NULL), "nbd");
    ck_assert_str_eq(picked("nbd+unix:///e?socket=/s", NULL), "nbd");
#endif
#ifdef CONFIG_RBD
    ck_assert_str_eq(picked("rbd:pool/image", NULL), "rbd");
#endif
}
END_TEST

START_TEST(protocol_strip)
{
    g_autoptr(GHashTable) o = bdrv_opts_new();
    g_autoptr(GError) err = NULL;
    g_autofree char *a = NULL, *b = NULL, *c = NULL, *d = NULL;

    ck_assert(bdrv_filename_strip_protocol("file", "file:/x:y", o, &a,
                                           NULL));
    ck_assert_str_eq(a, "/x:y");
    ck_assert(bdrv_filename_strip_protocol("blkdebug", "blkdebug::/i", o, &b,
                                           NULL));
    ck_assert_str_eq(b, "/i");
    ck_assert(!bdrv_opts_get(o, "config"));
    ck_assert(bdrv_filename_strip_protocol("blkdebug", "blkdebug:c.conf:i:j",
                                           o, &c, NULL));
    ck_assert_str_eq(c, "i:j");
    ck_assert_str_eq(bdrv_opts_get(o, "config"), "c.conf");
    ck_assert(!bdrv_filename_strip_protocol("blkdebug", "blkdebug:img", o,
                                            &d, &err));
    ck_assert_str_eq(err->message,
                     "blkdebug requires both config file and image path");
    ck_assert_str_eq(bdrv_filename_plain("blkdebug:c:file:/a/b"), "/a/b");
    ck_assert_str_eq(bdrv_filename_plain("/a/b"), "/a/b");
}
END_TEST

/* The local drivers' prefixes, from the one list in block/filename.c */
START_TEST(local_prefixes)
{
    g_autofree char *a = NULL, *b = NULL, *c = NULL, *d = NULL, *e = NULL;
    g_autofree char *f = NULL;

    ck_assert_uint_eq(bdrv_local_prefix_len("file:/x"), 5);
    ck_assert_uint_eq(bdrv_local_prefix_len("host_device:/dev/sda"), 12);
    ck_assert_uint_eq(bdrv_local_prefix_len("host_cdrom:/dev/sr0"), 11);
    ck_assert_uint_eq(bdrv_local_prefix_len("nbd:x"), 0);
    ck_assert_uint_eq(bdrv_local_prefix_len("file"), 0);
    ck_assert_uint_eq(bdrv_local_prefix_len("filex:y"), 0);
    ck_assert(bdrv_is_local_driver("host_cdrom"));
    ck_assert(!bdrv_is_local_driver("blkdebug"));
    a = bdrv_local_path("host_device:/dev/sda");
    ck_assert_str_eq(a, "/dev/sda");
    b = bdrv_local_path("file:a:b");
    ck_assert_str_eq(b, "./a:b");
    c = bdrv_local_path("a:b");
    ck_assert_str_eq(c, "a:b");
    ck_assert_str_eq(bdrv_filename_plain("host_cdrom:/dev/sr0"), "/dev/sr0");
    ck_assert(bdrv_filename_strip_protocol("host_device", "host_device:/d",
                                           NULL, &d, NULL));
    ck_assert_str_eq(d, "/d");
    /* only the driver's own prefix comes off */
    ck_assert(bdrv_filename_strip_protocol("file", "host_device:/d", NULL,
                                           &e, NULL));
    ck_assert_str_eq(e, "host_device:/d");
    ck_assert(bdrv_filename_strip_protocol("nbd", "file:/d", NULL, &f,
                                           NULL));
    ck_assert_str_eq(f, "file:/d");
}
END_TEST

static GPtrArray *config_rules(const char *text, GError **err)
{
    g_autofree char *dir = g_dir_make_tmp("strata-blkdbg-XXXXXX", NULL);
    g_autofree char *path = g_build_filename(dir, "c.conf", NULL);
    GPtrArray *rules = g_ptr_array_new_with_free_func(
        (GDestroyNotify)blkdebug_rule_free);
    bool ok;

    ck_assert(g_file_set_contents(path, text, -1, NULL));
    ok = blkdebug_read_config(path, rules, err);
    unlink(path);
    rmdir(dir);
    if (!ok) {
        g_ptr_array_unref(rules);
        return NULL;
    }
    return rules;
}

START_TEST(config_order_values_defaults)
{
    g_autoptr(GError) err = NULL;
    g_autoptr(GPtrArray) rules = config_rules(
        "# comment\n"
        "[set-state]\nevent = \"l2_update\"\nstate = \"1\"\n"
        "new_state = \"2\"\n\n"
        "[inject-error]\nevent = \"l2_load\"\nerrno = \"28\"\n"
        "once = \"on\"\nsector = \"3\"\niotype = \"flush\"\n"
        "[inject-error \"id\"]\nevent = \"write_aio\"\n", &err);
    BlkdebugRule *r;

    ck_assert_msg(rules, "%s", err ? err->message : "");
    ck_assert_uint_eq(rules->len, 3);
    /* every inject-error rule before the set-state ones, as QEMU adds
     * them */
    r = g_ptr_array_index(rules, 0);
    ck_assert_str_eq(r->event, "l2_load");
    ck_assert_int_eq(r->error, 28);
    ck_assert(r->once);
    ck_assert_int_eq(r->offset, 3 * 512);
    ck_assert_uint_eq(r->iotype_mask, 1u << BLKDBG_IO_FLUSH);
    r = g_ptr_array_index(rules, 1);
    ck_assert_str_eq(r->event, "write_aio");
    ck_assert_int_eq(r->error, EIO);
    ck_assert(!r->once);
    ck_assert_int_eq(r->offset, -1);
    ck_assert_int_eq(r->state, 0);
    ck_assert(!(r->iotype_mask & (1u << BLKDBG_IO_BLOCK_STATUS)));
    ck_assert(r->iotype_mask & (1u << BLKDBG_IO_READ));
    r = g_ptr_array_index(rules, 2);
    ck_assert_int_eq(r->action, BLKDBG_RULE_SET_STATE);
    ck_assert_int_eq(r->state, 1);
    ck_assert_int_eq(r->new_state, 2);
}
END_TEST

static void config_fails(const char *text, const char *msg)
{
    g_autoptr(GError) err = NULL;

    ck_assert(!config_rules(text, &err));
    ck_assert_msg(!strcmp(err->message, msg), "got '%s', wanted '%s'",
                  err->message, msg);
}

START_TEST(config_errors_are_qemus)
{
    config_fails("[inject-error]\nevent = \"x\"\n",
                 "invalid parameter value: x");
    config_fails("[inject-error]\nerrno = \"5\"\n",
                 "Missing event name for rule");
    config_fails("event = \"l2_load\"\n", "no group defined");
    config_fails("[nope]\n", "There is no option group 'nope'");
    config_fails("[set-state]\nevent = \"l2_load\"\nerrno = \"5\"\n",
                 "Invalid parameter 'errno'");
    config_fails("[inject-error]\nevent = \"l2_load\"\nstate = \"x\"\n",
                 "Parameter 'state' expects a number");
    config_fails("[inject-error]\n   \n", "parse error");
}
END_TEST

START_TEST(rule_options)
{
    g_autoptr(GHashTable) o = bdrv_opts_new();
    g_autoptr(GPtrArray) rules = g_ptr_array_new_with_free_func(
        (GDestroyNotify)blkdebug_rule_free);
    g_autoptr(GError) err = NULL;

    bdrv_opts_set(o, "inject-error.1.event", "read_aio");
    bdrv_opts_set(o, "inject-error.0.event", "l2_load");
    bdrv_opts_set(o, "set-state.0.event", "none");
    bdrv_opts_set(o, "set-state.0.new_state", "5");
    bdrv_opts_set(o, "align", "512");
    ck_assert_msg(blkdebug_take_rule_options(o, rules, &err), "%s",
                  err ? err->message : "");
    ck_assert_uint_eq(rules->len, 3);
    ck_assert_str_eq(((BlkdebugRule *)rules->pdata[0])->event, "l2_load");
    ck_assert_str_eq(((BlkdebugRule *)rules->pdata[1])->event, "read_aio");
    ck_assert_int_eq(((BlkdebugRule *)rules->pdata[2])->new_state, 5);
    /* what is not a rule stays for the driver */
    ck_assert_uint_eq(g_hash_table_size(o), 1);

    bdrv_opts_set(o, "inject-error.0.event", "l2_load");
    bdrv_opts_set(o, "inject-error.0.what", "1");
    ck_assert(!blkdebug_take_rule_options(o, rules, &err));
    ck_assert_str_eq(err->message,
                     "[inject-error] section doesn't support the option "
                     "'what'");
}
END_TEST

static Suite *filename_suite(void)
{
    Suite *s = suite_create("filename");
    TCase *tc = tcase_create("core");

    tcase_add_test(tc, json_flattens_nested_objects_and_arrays);
    tcase_add_test(tc, json_errors_are_qemus);
    tcase_add_test(tc, json_merge_keeps_given_options);
    tcase_add_test(tc, protocol_prefixes);
    tcase_add_test(tc, protocol_strip);
    tcase_add_test(tc, local_prefixes);
    tcase_add_test(tc, config_order_values_defaults);
    tcase_add_test(tc, config_errors_are_qemus);
    tcase_add_test(tc, rule_options);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(filename_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
