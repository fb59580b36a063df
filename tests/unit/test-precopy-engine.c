/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The transaction engine's optional pre_do phase (issue 15): it runs for
 * every action that has one, in list order, before the devices are
 * drained; a failure there ends the transaction with nothing drained and
 * pre_cancel for every action pre-done; a failure under the hold cancels
 * the actions whose do ran and pre-cancels, after the resume, the ones
 * whose do never ran.  Each case compares the exact sequence of calls
 * (the pause/resume hooks included) with the one the contract demands.
 */
#include "txntest.h"

typedef struct RecParams {
    const char *tag;
    bool fail_pre, fail_do, fail_inv;
} RecParams;

typedef struct RecState {
    RecParams p;
} RecState;

static GString *calls;

static void rec(const char *what, BlkAction *a, bool failed)
{
    RecState *s = blk_action_state(a);

    g_string_append_printf(calls, "%s%s:%s ", failed ? "!" : "", what,
                           s->p.tag);
}

static bool rec_check(BlkAction *a, const void *params, GError **errp)
{
    RecState *s = blk_action_state(a);
    BlockBackend *blk = blockdev_find_device("d0");
    bool ok;

    s->p = *(const RecParams *)params;
    ok = blk_action_use_device(a, blk, errp);
    blk_unref(blk);
    return ok;
}

static bool rec_step(BlkAction *a, const char *what, bool fail, GError **errp)
{
    RecState *s = blk_action_state(a);

    rec(what, a, fail);
    if (fail) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_IO, "%s of %s failed", what,
                    s->p.tag);
        return false;
    }
    return true;
}

static bool rec_pre_do(BlkAction *a, GError **errp)
{
    return rec_step(a, "pre", ((RecState *)blk_action_state(a))->p.fail_pre,
                    errp);
}

static void rec_pre_cancel(BlkAction *a)
{
    rec("pcancel", a, false);
}

static bool rec_do(BlkAction *a, GError **errp)
{
    return rec_step(a, "do", ((RecState *)blk_action_state(a))->p.fail_do,
                    errp);
}

static bool rec_invalidate(BlkAction *a, GError **errp)
{
    return rec_step(a, "inv", ((RecState *)blk_action_state(a))->p.fail_inv,
                    errp);
}

static bool rec_cancel(BlkAction *a, GError **errp)
{
    rec("cancel", a, false);
    return true;
}

static void rec_clean(BlkAction *a)
{
    rec("clean", a, false);
}

static const BlkActionType rec_pre_type = {
    .name = "test-pre",
    .state_size = sizeof(RecState),
    .check = rec_check,
    .pre_do = rec_pre_do,
    .pre_cancel = rec_pre_cancel,
    .do_ = rec_do,
    .invalidate = rec_invalidate,
    .cancel = rec_cancel,
    .clean = rec_clean,
};

static const BlkActionType rec_plain_type = {
    .name = "test-plain",
    .state_size = sizeof(RecState),
    .check = rec_check,
    .do_ = rec_do,
    .invalidate = rec_invalidate,
    .cancel = rec_cancel,
    .clean = rec_clean,
};

static void paused(BlockBackend *const *devs, size_t n, void *opaque)
{
    g_string_append(calls, "PAUSED ");
}

static void resumed(BlockBackend *const *devs, size_t n, void *opaque)
{
    g_string_append(calls, "RESUMED ");
}

typedef struct Case {
    const char *name;
    RecParams a, b, c;          /* b has no pre_do */
    const char *want_err;       /* NULL: success */
    const char *want_calls;
} Case;

static const Case cases[] = {
    { "success", { .tag = "A" }, { .tag = "B" }, { .tag = "C" }, NULL,
      "pre:A pre:C PAUSED do:A do:B do:C inv:A inv:B inv:C RESUMED "
      "clean:A clean:B clean:C " },
    /* nothing drained; both pre-done actions pre-cancelled, newest first */
    { "pre_do fails", { .tag = "A" }, { .tag = "B" }, { .tag = "C", .fail_pre = true },
      "pre of C failed",
      "pre:A !pre:C pcancel:C pcancel:A clean:A clean:B clean:C " },
    { "first pre_do fails", { .tag = "A", .fail_pre = true }, { .tag = "B" }, { .tag = "C" },
      "pre of A failed", "!pre:A pcancel:A clean:A clean:B clean:C " },
    /* A and B cancelled under the hold; C never reached do: pre-cancelled
     * once the devices run again */
    { "do fails", { .tag = "A" }, { .tag = "B", .fail_do = true }, { .tag = "C" },
      "do of B failed",
      "pre:A pre:C PAUSED do:A !do:B cancel:B cancel:A RESUMED pcancel:C "
      "clean:A clean:B clean:C " },
    { "invalidate fails", { .tag = "A" }, { .tag = "B" }, { .tag = "C", .fail_inv = true },
      "inv of C failed",
      "pre:A pre:C PAUSED do:A do:B do:C inv:A inv:B !inv:C cancel:C "
      "cancel:B cancel:A RESUMED clean:A clean:B clean:C " },
};

START_TEST(test_pre_do_order)
{
    const Case *c = &cases[_i];
    TxnDevs *d = txn_devs_new("precopy-engine", 1, 5);
    BlkTransactionStates *t;
    GError *err = NULL;
    bool ok;

    txn_devs_open(d, NULL);
    calls = g_string_new(NULL);
    blk_transaction_set_hooks(paused, resumed, NULL);
    t = blk_transaction_new();
    ck_assert(blk_transaction_add_custom(t, &rec_pre_type, &c->a, &err));
    ck_assert(blk_transaction_add_custom(t, &rec_plain_type, &c->b, &err));
    ck_assert(blk_transaction_add_custom(t, &rec_pre_type, &c->c, &err));
    ok = blk_transaction_submit(t, &err);
    ck_assert_msg(ok == !c->want_err, "%s: submit returned %d (%s)",
                  c->name, ok, err ? err->message : "");
    if (c->want_err) {
        ck_assert_str_eq(err->message, c->want_err);
        g_clear_error(&err);
    }
    ck_assert_msg(!strcmp(calls->str, c->want_calls),
                  "%s:\n got  %s\n want %s", c->name, calls->str,
                  c->want_calls);
    blk_transaction_free(t);
    blk_transaction_set_hooks(NULL, NULL, NULL);
    g_string_free(calls, TRUE);
    txn_devs_close(d);
    txn_devs_free(d);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("precopy-engine");
    TCase *tc = tcase_create("core");

    tcase_set_timeout(tc, 300);
    tcase_add_loop_test(tc, test_pre_do_order, 0, G_N_ELEMENTS(cases));
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    strata_log_set_sink(strata_log_to_stderr, NULL);
    return chaintest_run(suite());
}
