/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Unit tests of the human monitor's whole-machine snapshot commands
 * under injected I/O errors: savevm (a new tag, and a tag it replaces),
 * loadvm and delvm over three disks, with the Nth read, write or flush
 * of any image file failing, for every N until the command succeeds.
 * Each failure must leave every disk as it was (snapshot lists, content,
 * files) and every image clean (ours and qemu-img's check) at the end;
 * the number of cases is printed.
 */
#include <check.h>
#include <string.h>

#include "block/fault-inject.h"
#include "block/log.h"
#include "monitor/hmp.h"
#include "txntest.h"

#define NDEV 3

static const char *const kind_names[] = { "read", "write", "flush" };

static void assert_names(TxnDevs *d, const char *want, const char *what)
{
    for (int i = 0; i < NDEV; i++) {
        g_autofree char *names = txn_snapshot_names(blk_bs(d->blk[i]));
        ck_assert_msg(!strcmp(names, want), "%s: d%d has %s, want %s", what,
                      i, names, want);
    }
}

/*
 * line with the Nth request of kind failing, N = 1, 2, ... until it
 * succeeds.  Returns the number of failures; *fired_last says whether
 * the succeeding run's request failed too (in a clean, after the
 * commit, which may only leak).
 */
static int fail_until_success(TxnDevs *d, FaultKind kind, const char *line,
                              const char *want_names, bool *fired_last)
{
    TxnPicture *before = txn_picture(d);
    int failures = 0;

    for (uint64_t n = 1;; n++) {
        g_autofree char *what = g_strdup_printf("%s: %s error %"
                                                G_GUINT64_FORMAT, line,
                                                kind_names[kind], n);
        g_autofree char *out = NULL;
        TxnPicture *after;
        bool fired;

        fault_inject_arm(kind, n);
        out = hmp_execute(line);
        fired = fault_inject_disarm();
        if (!*out) {
            assert_names(d, want_names, what);
            *fired_last = fired;
            break;
        }
        ck_assert_msg(fired, "%s: failed without the injected error: %s",
                      what, out);
        ck_assert_msg(g_str_has_prefix(out, "Error: "), "%s: %s", what, out);
        after = txn_picture(d);
        txn_picture_assert_same(before, after, what);
        txn_picture_free(after);
        failures++;
        ck_assert_msg(n < 5000, "no success after 5000 errors");
    }
    txn_picture_free(before);
    return failures;
}

/* The failing runs 1..failures on fresh disks, then the command with no
 * error: the disks must end clean with no leak at all, so no failed run
 * leaked or corrupted anything. */
static void replay_then_check(const char *tag, FaultKind kind,
                              const char *line, const char *want_names,
                              int failures)
{
    g_autofree char *tag2 = g_strdup_printf("%s-replay", tag);
    TxnDevs *d = txn_devs_new(tag2, NDEV, 77);
    g_autofree char *out = NULL;

    txn_devs_open(d, NULL);
    for (int n = 1; n <= failures; n++) {
        g_autofree char *o = NULL;

        fault_inject_arm(kind, n);
        o = hmp_execute(line);
        ck_assert_msg(fault_inject_disarm() && *o, "%s: replay %d: %s",
                      line, n, o);
    }
    out = hmp_execute(line);
    ck_assert_msg(!*out, "%s: %s", line, out);
    assert_names(d, want_names, line);
    txn_devs_close(d);
    txn_check_dir_clean(d->dir);
    txn_devs_free(d);
}

/* line at every N of kind until it succeeds; each failure leaves every
 * disk as it was; then each disk's snapshot names are want_names. */
static void run_everywhere(FaultKind kind, const char *tag,
                           const char *line, const char *want_names)
{
    TxnDevs *d = txn_devs_new(tag, NDEV, 77);
    bool fired_last = false;
    int failures;

    txn_devs_open(d, NULL);
    failures = fail_until_success(d, kind, line, want_names, &fired_last);
    ck_assert_int_gt(failures, 0);
    txn_devs_close(d);
    if (fired_last) {
        /* a clean's error after the commit may leak: check the failed
         * runs' effect on their own */
        replay_then_check(tag, kind, line, want_names, failures);
    } else {
        txn_check_dir_clean(d->dir);
    }
    txn_devs_free(d);
    printf("%s: %d %s errors injected, each left every disk as it was and "
           "clean; succeeds from %s number %d%s\n", line, failures,
           kind_names[kind], kind_names[kind], failures + 1,
           fired_last ? " (that one failed in a clean, after the commit)"
                      : "");
    fflush(stdout);
}

START_TEST(test_savevm_new_tag)
{
    g_autofree char *tag = g_strdup_printf("hmp-save-%s", kind_names[_i]);

    run_everywhere(_i, tag, "savevm s1", "old1,old2,s1");
}
END_TEST

START_TEST(test_savevm_replaces_tag)
{
    g_autofree char *tag = g_strdup_printf("hmp-replace-%s", kind_names[_i]);

    /* old1 is deleted and taken anew in the same transaction */
    run_everywhere(_i, tag, "savevm old1", "old2,old1");
}
END_TEST

START_TEST(test_loadvm)
{
    g_autofree char *tag = g_strdup_printf("hmp-load-%s", kind_names[_i]);

    run_everywhere(_i, tag, "loadvm old1", "old1,old2");
}
END_TEST

START_TEST(test_delvm)
{
    g_autofree char *tag = g_strdup_printf("hmp-del-%s", kind_names[_i]);

    run_everywhere(_i, tag, "delvm old2", "old1");
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("hmp");
    TCase *tc = tcase_create("faults");

    tcase_set_timeout(tc, 1800);
    tcase_add_loop_test(tc, test_savevm_new_tag, 0, FAULT__MAX);
    tcase_add_loop_test(tc, test_savevm_replaces_tag, 0, FAULT__MAX);
    tcase_add_loop_test(tc, test_loadvm, 0, FAULT__MAX);
    tcase_add_loop_test(tc, test_delvm, 0, FAULT__MAX);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    strata_log_set_sink(strata_log_to_stderr, NULL);
    return chaintest_run(suite());
}
