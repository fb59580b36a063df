/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * block/rbd-lib.c: the Ceph libraries are loaded on first use, and the
 * table of their functions cannot be read before that.
 */
#include <check.h>
#include <dlfcn.h>
#include <signal.h>
#include <stdlib.h>

/* the table's members by their own names, not librbd's calls */
#define STRATA_RBD_LIB_NO_NAMES
#include "block/rbd-lib.h"

/* The rule the driver relies on: no librbd call before rbd_lib_load() */
START_TEST(test_table_before_load_aborts)
{
    rbd_lib();
}
END_TEST

/* Nothing of Ceph is in the process until the first load */
START_TEST(test_load_fills_the_table)
{
    GError *err = NULL;

    ck_assert_ptr_null(dlopen("librbd.so.1", RTLD_NOW | RTLD_NOLOAD));
    ck_assert_msg(rbd_lib_load(&err), "%s", err ? err->message : "");
    ck_assert_ptr_nonnull(dlopen("librbd.so.1", RTLD_NOW | RTLD_NOLOAD));
#define CHECK_ENTRY(f) ck_assert_ptr_nonnull(*(void **)&rbd_lib()->f);
    STRATA_RBD_FUNCTIONS(CHECK_ENTRY)
#undef CHECK_ENTRY
    /* a second load is the same table */
    ck_assert(rbd_lib_load(NULL));
    ck_assert_ptr_eq(rbd_lib(), rbd_lib());
}
END_TEST

int main(void)
{
    Suite *s = suite_create("rbd-lib");
    TCase *tc = tcase_create("load");
    SRunner *sr;
    int failed;

    tcase_add_test_raise_signal(tc, test_table_before_load_aborts, SIGABRT);
    tcase_add_test(tc, test_load_fills_the_table);
    suite_add_tcase(s, tc);
    sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
