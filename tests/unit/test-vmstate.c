/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Unit tests of the VM-state handler (blockdev/vmstate.c) through the
 * human monitor's savevm / loadvm / delvm on two disks: the handler's
 * bytes land in the first disk's snapshot (vm-state-size recorded there
 * only, as qemu-img lists it; qemu-img check clean), loadvm reverts the
 * disks and hands back the very bytes; without a handler such a snapshot
 * is refused with nothing reverted; with one a disk-only snapshot is
 * refused (QEMU's rule); a failing handler leaves no snapshot anywhere.
 * The QMP jobs snapshot-save / snapshot-load / snapshot-delete do the
 * same with the state on the disk their `vmstate` names.
 */
#include <check.h>
#include <string.h>

#include "block/fault-inject.h"
#include "block/log.h"
#include "blockdev/vmstate.h"
#include "monitor/hmp.h"
#include "monitor/hmp-int.h"
#include "monitor/qmp-events.h"
#include "txntest.h"

#define NDEV 2
/* a few MiB and an odd tail, written in uneven chunks */
#define STATE_LEN (3 * MiB + 4321)
#define CHUNK 65521

typedef struct Vm {
    uint8_t *state;             /* what save writes */
    size_t len;                 /* how much of it (STATE_LEN by default) */
    uint8_t *loaded;            /* what load read back */
    uint64_t loaded_size;
    int saves, loads;
    bool fail_save;
} Vm;

static gboolean vm_save(BlkVmStateWriter *w, void *opaque, GError **errp)
{
    Vm *vm = opaque;

    vm->saves++;
    if (vm->fail_save) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "the device model refused");
        return FALSE;
    }
    for (size_t off = 0; off < vm->len; off += CHUNK) {
        if (!blk_vmstate_write(w, vm->state + off,
                               MIN(CHUNK, vm->len - off), errp)) {
            return FALSE;
        }
    }
    return TRUE;
}

static gboolean vm_load(BlkVmStateReader *r, uint64_t size, void *opaque,
                        GError **errp)
{
    Vm *vm = opaque;
    uint8_t extra;

    vm->loads++;
    vm->loaded_size = size;
    g_free(vm->loaded);
    vm->loaded = g_malloc(size);
    for (uint64_t off = 0; off < size; off += CHUNK) {
        if (!blk_vmstate_read(r, vm->loaded + off, MIN(CHUNK, size - off),
                              errp)) {
            return FALSE;
        }
    }
    /* one byte past the recorded size must be refused */
    ck_assert(!blk_vmstate_read(r, &extra, 1, NULL));
    return TRUE;
}

static const BlkVmStateHandler handler = { vm_save, vm_load };

static Vm *vm_new(void)
{
    Vm *vm = g_new0(Vm, 1);
    GRand *r = g_rand_new_with_seed(4242);

    vm->len = STATE_LEN;
    vm->state = g_malloc(STATE_LEN);
    for (size_t i = 0; i < STATE_LEN; i++) {
        vm->state[i] = g_rand_int(r);
    }
    g_rand_free(r);
    return vm;
}

static void vm_free(Vm *vm)
{
    g_free(vm->state);
    g_free(vm->loaded);
    g_free(vm);
}

static uint64_t vm_size_of(TxnDevs *d, int i, const char *tag)
{
    BdrvSnapshotInfo sn = { 0 };
    uint64_t size;

    ck_assert_msg(bdrv_snapshot_find(blk_bs(d->blk[i]), tag, &sn, NULL),
                  "d%d has no %s", i, tag);
    size = sn.vm_state_size;
    bdrv_snapshot_info_clear(&sn);
    return size;
}

static void expect_output(const char *line, const char *prefix)
{
    g_autofree char *out = hmp_execute(line);

    ck_assert_msg(prefix ? g_str_has_prefix(out, prefix) : !*out,
                  "%s: got %s", line, out);
}

static void scribble(TxnDevs *d, uint8_t byte)
{
    g_autofree uint8_t *buf = g_malloc(TXN_IMG_SIZE);

    memset(buf, byte, TXN_IMG_SIZE);
    for (int i = 0; i < NDEV; i++) {
        ck_assert_int_ge(blk_pwrite(d->blk[i], 0, TXN_IMG_SIZE, buf), 0);
    }
}

/* qemu-img's VM SIZE column of the snapshot row of tag ("" without
 * qemu-img). */
static char *qemu_vm_size(const char *path, const char *tag)
{
    g_autofree char *out = NULL;
    const char *argv[] = { "qemu-img", "snapshot", "-l", path, NULL };
    g_auto(GStrv) lines = NULL;
    g_autofree char *prog = g_find_program_in_path("qemu-img");
    int status;

    if (!prog) {
        return g_strdup("");
    }
    ck_assert(g_spawn_sync(NULL, (char **)argv, NULL, G_SPAWN_SEARCH_PATH,
                           NULL, NULL, &out, NULL, &status, NULL));
    lines = g_strsplit(out, "\n", -1);
    for (int i = 0; lines[i]; i++) {
        if (strlen(lines[i]) > 35 && !strncmp(lines[i] + 10, tag,
                                               strlen(tag)) &&
            lines[i][10 + strlen(tag)] == ' ') {
            return g_strstrip(g_strndup(lines[i] + 27, 9));
        }
    }
    ck_abort_msg("qemu-img lists no %s in %s:\n%s", tag, path, out);
    return NULL;
}

START_TEST(test_save_load_roundtrip)
{
    TxnDevs *d = txn_devs_new("vmstate-roundtrip", NDEV, 91);
    Vm *vm = vm_new();
    g_autofree uint8_t *disk0 = NULL, *disk1 = NULL;
    g_autofree uint8_t *now0 = NULL, *now1 = NULL;
    g_autofree char *size_col = NULL;

    txn_devs_open(d, NULL);
    blk_vmstate_set_handler(&handler, vm);
    ck_assert(blk_vmstate_has_handler());
    disk0 = blk_read_all(d->blk[0], TXN_IMG_SIZE);
    disk1 = blk_read_all(d->blk[1], TXN_IMG_SIZE);
    expect_output("savevm vs1", NULL);
    ck_assert_int_eq(vm->saves, 1);
    ck_assert_uint_eq(vm_size_of(d, 0, "vs1"), STATE_LEN);
    ck_assert_uint_eq(vm_size_of(d, 1, "vs1"), 0);

    /* the guest writes on; loadvm reverts both disks and hands back the
     * state byte for byte */
    scribble(d, 0xa5);
    expect_output("loadvm vs1", NULL);
    ck_assert_int_eq(vm->loads, 1);
    ck_assert_uint_eq(vm->loaded_size, STATE_LEN);
    ck_assert(!memcmp(vm->loaded, vm->state, STATE_LEN));
    now0 = blk_read_all(d->blk[0], TXN_IMG_SIZE);
    now1 = blk_read_all(d->blk[1], TXN_IMG_SIZE);
    assert_same(disk0, now0, TXN_IMG_SIZE, "d0 after loadvm");
    assert_same(disk1, now1, TXN_IMG_SIZE, "d1 after loadvm");

    /* with a handler a disk-only snapshot is refused, as by QEMU */
    expect_output("loadvm old1",
                  "Error: This is a disk-only snapshot. Revert to it  "
                  "offline using qemu-img");
    ck_assert_int_eq(vm->loads, 1);

    /* a save that replaces vs1 stores the state again */
    expect_output("savevm vs1", NULL);
    ck_assert_uint_eq(vm_size_of(d, 0, "vs1"), STATE_LEN);
    blk_vmstate_set_handler(NULL, NULL);
    ck_assert(!blk_vmstate_has_handler());
    txn_devs_close(d);

    size_col = qemu_vm_size(d->base[0], "vs1");
    ck_assert_msg(!*size_col || !strcmp(size_col, "3 MiB"),
                  "qemu-img VM SIZE '%s'", size_col);
    txn_check_dir_clean(d->dir);
    txn_devs_free(d);
    vm_free(vm);
}
END_TEST

START_TEST(test_without_handler_refused)
{
    TxnDevs *d = txn_devs_new("vmstate-nohandler", NDEV, 92);
    Vm *vm = vm_new();
    TxnPicture *before, *after;

    txn_devs_open(d, NULL);
    blk_vmstate_set_handler(&handler, vm);
    expect_output("savevm vs1", NULL);
    blk_vmstate_set_handler(NULL, NULL);
    scribble(d, 0x3c);

    /* nothing reverted, no handler called */
    before = txn_picture(d);
    expect_output("loadvm vs1",
                  "Error: Snapshot 'vs1' on 'd0' holds VM state, which no "
                  "VM state handler can restore");
    after = txn_picture(d);
    txn_picture_assert_same(before, after, "refused loadvm");
    txn_picture_free(before);
    txn_picture_free(after);
    ck_assert_int_eq(vm->loads, 0);

    /* disk-only snapshots still load without a handler (the daemon) */
    expect_output("loadvm old1", NULL);
    /* and a snapshot with state deletes fine */
    expect_output("delvm vs1", NULL);
    {
        g_autofree char *names = txn_snapshot_names(blk_bs(d->blk[0]));
        ck_assert_str_eq(names, "old1,old2");
    }
    txn_devs_close(d);
    txn_check_dir_clean(d->dir);
    txn_devs_free(d);
    vm_free(vm);
}
END_TEST

START_TEST(test_failing_save)
{
    TxnDevs *d = txn_devs_new("vmstate-failsave", NDEV, 93);
    Vm *vm = vm_new();

    txn_devs_open(d, NULL);
    vm->fail_save = true;
    blk_vmstate_set_handler(&handler, vm);
    expect_output("savevm vs1", "Error: the device model refused");
    ck_assert_int_eq(vm->saves, 1);
    for (int i = 0; i < NDEV; i++) {
        g_autofree char *names = txn_snapshot_names(blk_bs(d->blk[i]));
        ck_assert_str_eq(names, "old1,old2");
    }
    /* a transaction that fails after the state was written (a name too
     * long): no snapshot on any disk, and the images stay clean */
    vm->fail_save = false;
    {
        g_autofree char *name = g_strnfill(300, 'x');
        g_autofree char *line = g_strdup_printf("savevm %s", name);

        expect_output(line, "Error: ");
    }
    ck_assert_int_eq(vm->saves, 2);
    for (int i = 0; i < NDEV; i++) {
        g_autofree char *names = txn_snapshot_names(blk_bs(d->blk[i]));
        ck_assert_str_eq(names, "old1,old2");
    }
    blk_vmstate_set_handler(NULL, NULL);
    txn_devs_close(d);
    txn_check_dir_clean(d->dir);
    txn_devs_free(d);
    vm_free(vm);
}
END_TEST

/* Runs a snapshot job through the QMP dispatcher to its end; returns
 * its query-jobs entry's error, or NULL. */
static char *run_job(const char *command, const char *id, const char *tag,
                     const char *vmstate, TxnDevs *d)
{
    JsonObject *a = json_object_new();
    JsonArray *devs = json_array_new();
    g_autoptr(GError) err = NULL;
    g_autoptr(JsonNode) ret = NULL;
    g_autoptr(JsonNode) jobs = NULL;
    JsonArray *list;

    for (int i = 0; i < NDEV; i++) {
        json_array_add_string_element(devs,
                                      bdrv_get_node_name(blk_bs(d->blk[i])));
    }
    json_object_set_string_member(a, "job-id", id);
    json_object_set_string_member(a, "tag", tag);
    if (vmstate) {
        json_object_set_string_member(a, "vmstate", vmstate);
    }
    json_object_set_array_member(a, "devices", devs);
    ret = hmp_call_qmp(command, a, &err);
    ck_assert_msg(ret, "%s: %s", command, err ? err->message : "");
    qmp_events_flush();         /* the job runs from the event queue */
    jobs = hmp_call_qmp("query-jobs", NULL, &err);
    ck_assert(jobs);
    list = json_node_get_array(jobs);
    for (guint i = 0; i < json_array_get_length(list); i++) {
        JsonObject *j = json_array_get_object_element(list, i);
        if (!strcmp(json_object_get_string_member(j, "id"), id)) {
            ck_assert_str_eq(json_object_get_string_member(j, "status"),
                             "concluded");
            return json_object_has_member(j, "error")
                   ? g_strdup(json_object_get_string_member(j, "error"))
                   : NULL;
        }
    }
    ck_abort_msg("no job %s", id);
    return NULL;
}

START_TEST(test_qmp_jobs)
{
    TxnDevs *d = txn_devs_new("vmstate-jobs", NDEV, 94);
    Vm *vm = vm_new();
    g_autofree uint8_t *disk1 = NULL, *now1 = NULL;
    g_autofree char *e1 = NULL, *e2 = NULL, *e3 = NULL, *e4 = NULL;
    const char *vm_node;

    txn_devs_open(d, NULL);
    vm_node = bdrv_get_node_name(blk_bs(d->blk[1]));
    blk_vmstate_set_handler(&handler, vm);
    disk1 = blk_read_all(d->blk[1], TXN_IMG_SIZE);
    /* the state goes to the disk `vmstate` names, the second one here */
    e1 = run_job("snapshot-save", "j1", "vs1", vm_node, d);
    ck_assert_msg(!e1, "save: %s", e1);
    ck_assert_uint_eq(vm_size_of(d, 0, "vs1"), 0);
    ck_assert_uint_eq(vm_size_of(d, 1, "vs1"), STATE_LEN);
    scribble(d, 0x77);
    e2 = run_job("snapshot-load", "j2", "vs1", vm_node, d);
    ck_assert_msg(!e2, "load: %s", e2);
    ck_assert_int_eq(vm->loads, 1);
    ck_assert(!memcmp(vm->loaded, vm->state, STATE_LEN));
    now1 = blk_read_all(d->blk[1], TXN_IMG_SIZE);
    assert_same(disk1, now1, TXN_IMG_SIZE, "d1 after snapshot-load");
    /* with a handler, a disk-only snapshot is refused */
    e3 = run_job("snapshot-load", "j3", "old1", vm_node, d);
    ck_assert_str_eq(e3, "This is a disk-only snapshot. Revert to it  "
                     "offline using qemu-img");
    e4 = run_job("snapshot-delete", "j4", "vs1", NULL, d);
    ck_assert_msg(!e4, "delete: %s", e4);
    {
        g_autofree char *names = txn_snapshot_names(blk_bs(d->blk[1]));
        ck_assert_str_eq(names, "old1,old2");
    }
    blk_vmstate_set_handler(NULL, NULL);
    txn_devs_close(d);
    txn_check_dir_clean(d->dir);
    txn_devs_free(d);
    vm_free(vm);
}
END_TEST

/* savevm with the handler, the Nth read, write or flush failing for
 * every N until it succeeds: each failure (in the state's writes or in
 * the transaction) leaves every disk as it was, the images clean. */
START_TEST(test_save_faults)
{
    static const char *const kinds[] = { "read", "write", "flush" };
    g_autofree char *tag = g_strdup_printf("vmstate-faults-%s", kinds[_i]);
    TxnDevs *d = txn_devs_new(tag, NDEV, 95);
    Vm *vm = vm_new();
    TxnPicture *before;
    int failures = 0;
    bool fired_last = false;

    vm->len = 200 * 1024 + 3;
    txn_devs_open(d, NULL);
    blk_vmstate_set_handler(&handler, vm);
    before = txn_picture(d);
    for (uint64_t n = 1;; n++) {
        g_autofree char *out = NULL;
        TxnPicture *after;
        bool fired;

        fault_inject_arm(_i, n);
        out = hmp_execute("savevm vs1");
        fired = fault_inject_disarm();
        if (!*out) {
            fired_last = fired;
            break;
        }
        ck_assert_msg(fired && g_str_has_prefix(out, "Error: "),
                      "%s %" G_GUINT64_FORMAT ": %s", kinds[_i], n, out);
        after = txn_picture(d);
        txn_picture_assert_same(before, after, out);
        txn_picture_free(after);
        failures++;
        ck_assert_msg(n < 3000, "no success after 3000 errors");
    }
    ck_assert_uint_eq(vm_size_of(d, 0, "vs1"), vm->len);
    blk_vmstate_set_handler(NULL, NULL);
    txn_picture_free(before);
    txn_devs_close(d);
    if (fired_last) {
        /* the succeeding run failed in a clean, after the commit, which
         * may leak: replay the failed runs on fresh disks, then one
         * without errors; none of them may leak */
        g_autofree char *tag2 = g_strdup_printf("%s-replay", tag);
        TxnDevs *d2 = txn_devs_new(tag2, NDEV, 95);
        g_autofree char *out = NULL;

        txn_devs_open(d2, NULL);
        blk_vmstate_set_handler(&handler, vm);
        for (int n = 1; n <= failures; n++) {
            g_autofree char *o = NULL;

            fault_inject_arm(_i, n);
            o = hmp_execute("savevm vs1");
            ck_assert_msg(fault_inject_disarm() && *o, "replay %d: %s", n,
                          o);
        }
        out = hmp_execute("savevm vs1");
        ck_assert_msg(!*out, "%s", out);
        blk_vmstate_set_handler(NULL, NULL);
        txn_devs_close(d2);
        txn_check_dir_clean(d2->dir);
        txn_devs_free(d2);
    } else {
        txn_check_dir_clean(d->dir);
    }
    printf("savevm with VM state: %d %s errors, each left every disk as it "
           "was\n", failures, kinds[_i]);
    fflush(stdout);
    txn_devs_free(d);
    vm_free(vm);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("vmstate");
    TCase *tc = tcase_create("handler");

    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_save_load_roundtrip);
    tcase_add_test(tc, test_without_handler_refused);
    tcase_add_test(tc, test_failing_save);
    tcase_add_test(tc, test_qmp_jobs);
    tcase_add_loop_test(tc, test_save_faults, 0, FAULT__MAX);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    strata_log_set_sink(strata_log_to_stderr, NULL);
    return chaintest_run(suite());
}
