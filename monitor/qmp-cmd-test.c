/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Test-only QMP commands (qapi/test.json), enabled by the environment
 * variable STRATA_DAEMON_TEST_COMMANDS=1 and invisible otherwise.
 *
 * The writers: strata-daemon has no exports yet, so a test that needs
 * guest-like writes during a transaction starts them here.  Threads write
 * the records of blockdev/cut-record.h to a list of devices, record s to
 * device s % n, each record only after the one before it completed: the
 * records have one global order, and a snapshot set taken by one
 * transaction must hold exactly records 1..M for some M.  The writes go
 * through the devices (BlockBackends), so they follow a device onto a new
 * overlay and are held by the transaction's drain like a guest's.
 * The writers hold a reference on each device until they stop: a node
 * blockdev-del'ed meanwhile stays open until then.
 */
#include <stdlib.h>
#include <string.h>

#include "monitor/monitor-int.h"
#include "monitor/qmp-cmd-test.h"
#include "blockdev/cut-record.h"
#include "blockdev/registry.h"
#include "qapi-gen.h"

#define TEST_ENV "STRATA_DAEMON_TEST_COMMANDS"

static const QapiCommand no_commands[] = { { NULL, NULL, NULL } };

bool qmp_test_commands_enabled(void)
{
    static gsize once;
    static bool enabled;

    if (g_once_init_enter(&once)) {
        const char *v = getenv(TEST_ENV);
        enabled = v && !strcmp(v, "1");
        g_once_init_leave(&once, 1);
    }
    return enabled;
}

const QapiCommand *qmp_test_command_table(void)
{
    return qmp_test_commands_enabled() ? qapi_test_commands : no_commands;
}

const QapiCommand *qmp_test_find_command(const char *name)
{
    for (const QapiCommand *c = qmp_test_command_table(); c->name; c++) {
        if (!strcmp(c->name, name)) {
            return c;
        }
    }
    return NULL;
}

const char *qmp_test_schema_text(void)
{
    return qmp_test_commands_enabled() ? qapi_schema_test_json
                                       : qapi_schema_json;
}

/* ---- the writers ---- */

typedef struct TestWriters {
    int ndev;
    BlockBackend **blk;         /* a reference each */
    char **names;               /* as the client named them */
    uint64_t *writes;           /* completed writes per device */
    int nthreads;
    GThread **threads;
    size_t rec_size;
    uint64_t interval_us;

    GMutex lock;                /* protects what follows */
    GCond cond;
    uint64_t claimed;           /* last sequence number handed out */
    uint64_t completed;         /* last record whose write completed */
    uint64_t max_seq;           /* the last record that fits */
    bool stop;
    char *error;                /* the first failed write */
} TestWriters;

static TestWriters *writers;    /* touched by the monitor's thread only */

/* Claims the next record once the one before it completed; 0 when the
 * writers are to end. */
static uint64_t claim_next(TestWriters *w)
{
    uint64_t s;

    g_mutex_lock(&w->lock);
    if (w->stop || w->error || w->claimed >= w->max_seq) {
        g_mutex_unlock(&w->lock);
        return 0;
    }
    s = ++w->claimed;
    /* the thread that claimed s - 1 finishes it even after a stop */
    while (w->completed != s - 1 && !w->error) {
        g_cond_wait(&w->cond, &w->lock);
    }
    if (w->error) {
        s = 0;
    }
    g_mutex_unlock(&w->lock);
    return s;
}

static void finish(TestWriters *w, uint64_t s, int dev, int ret)
{
    g_mutex_lock(&w->lock);
    if (ret < 0) {
        if (!w->error) {
            w->error = g_strdup_printf("Test writer failed on device '%s' "
                                       "at record %" G_GUINT64_FORMAT ": %s",
                                       w->names[dev], s, g_strerror(-ret));
        }
    } else {
        w->completed = s;
        w->writes[dev]++;
    }
    g_cond_broadcast(&w->cond);
    g_mutex_unlock(&w->lock);
}

static gpointer writer_thread(gpointer opaque)
{
    TestWriters *w = opaque;
    g_autofree uint8_t *buf = g_malloc(w->rec_size);
    uint64_t s;

    while ((s = claim_next(w)) != 0) {
        int dev = cut_record_device(s, w->ndev);

        /* only the holder of the next record gets here: the pause paces
         * the whole sequence, not one thread of several */
        if (w->interval_us) {
            g_usleep(w->interval_us);
        }
        cut_record_make(s, buf, w->rec_size);
        finish(w, s, dev,
               blk_pwrite(w->blk[dev],
                          cut_record_offset(s, w->ndev, w->rec_size),
                          (int64_t)w->rec_size, buf));
    }
    return NULL;
}

static void writers_free(TestWriters *w)
{
    for (int i = 0; i < w->ndev; i++) {
        if (w->blk[i]) {
            blk_unref(w->blk[i]);
        }
        g_free(w->names[i]);
    }
    g_free(w->blk);
    g_free(w->names);
    g_free(w->writes);
    g_free(w->threads);
    g_free(w->error);
    g_mutex_clear(&w->lock);
    g_cond_clear(&w->cond);
    g_free(w);
}

/* The device showing the root node called name (a node-name, or a
 * device's name), with a reference. */
static BlockBackend *device_of(const char *name, GError **errp)
{
    g_autoptr(BlockDriverState) bs = blockdev_get_root_bs(name, errp);
    g_autoptr(GPtrArray) devs = NULL;

    if (!bs) {
        return NULL;
    }
    devs = blockdev_list_devices();
    for (guint i = 0; i < devs->len; i++) {
        BlockBackend *blk = g_ptr_array_index(devs, i);
        if (blk_bs(blk) == bs) {
            blk_ref(blk);
            return blk;
        }
    }
    qmp_fail(errp, "Node '%s' is not attached to a device", name);
    return NULL;
}

/* The devices, checked: each found, writable, named once, room for a
 * record; w->max_seq set from the smallest. */
static bool writers_open(TestWriters *w, GPtrArray *devices, GError **errp)
{
    int64_t slots = INT64_MAX;

    for (int i = 0; i < w->ndev; i++) {
        const char *name = g_ptr_array_index(devices, i);
        int64_t len;

        for (int j = 0; j < i; j++) {
            if (!strcmp(w->names[j], name)) {
                return qmp_fail(errp, "Device '%s' is listed twice", name);
            }
        }
        w->names[i] = g_strdup(name);
        w->blk[i] = device_of(name, errp);
        if (!w->blk[i]) {
            return false;
        }
        for (int j = 0; j < i; j++) {
            if (w->blk[j] == w->blk[i]) {
                return qmp_fail(errp, "Device '%s' is listed twice", name);
            }
        }
        if (bdrv_is_read_only(blk_bs(w->blk[i]))) {
            return qmp_fail(errp, "Device '%s' is read-only", name);
        }
        len = blk_getlength(w->blk[i]);
        if (len < 0) {
            return qmp_fail(errp, "Cannot get the length of device '%s': %s",
                        name, g_strerror((int)-len));
        }
        slots = MIN(slots, len / (int64_t)w->rec_size);
    }
    /* record s lives in slot s / ndev; slot 0 of device 0 stays empty */
    if (slots < 2) {
        return qmp_fail(errp, "The devices are too small for %zu-byte records",
                    w->rec_size);
    }
    w->max_seq = (uint64_t)slots * (uint64_t)w->ndev - 1;
    return true;
}

JsonNode *qmp___org_strata_x_test_writers_start(
    const q_obj___org_strata_x_test_writers_start_arg *args, GError **errp)
{
    int64_t rec_size = args->has_record_size ? args->record_size : 512;
    int64_t nthreads = args->has_threads ? args->threads : 3;
    int64_t interval = args->has_interval_us ? args->interval_us : 0;
    TestWriters *w;

    if (writers) {
        qmp_fail(errp, "The test writers are already running");
        return NULL;
    }
    if (args->devices->len == 0) {
        qmp_fail(errp, "Parameter 'devices' must name at least one device");
        return NULL;
    }
    if (rec_size < CUT_RECORD_MIN_SIZE || rec_size > 1024 * 1024) {
        qmp_fail(errp, "Parameter 'record-size' must be between %d and 1048576",
             CUT_RECORD_MIN_SIZE);
        return NULL;
    }
    if (nthreads < 1 || nthreads > 64) {
        qmp_fail(errp, "Parameter 'threads' must be between 1 and 64");
        return NULL;
    }
    if (interval < 0 || interval > 1000000) {
        qmp_fail(errp, "Parameter 'interval-us' must be between 0 and 1000000");
        return NULL;
    }
    w = g_new0(TestWriters, 1);
    g_mutex_init(&w->lock);
    g_cond_init(&w->cond);
    w->ndev = (int)args->devices->len;
    w->blk = g_new0(BlockBackend *, w->ndev);
    w->names = g_new0(char *, w->ndev);
    w->writes = g_new0(uint64_t, w->ndev);
    w->rec_size = (size_t)rec_size;
    w->interval_us = (uint64_t)interval;
    if (!writers_open(w, args->devices, errp)) {
        writers_free(w);
        return NULL;
    }
    w->nthreads = (int)nthreads;
    w->threads = g_new0(GThread *, w->nthreads);
    for (int k = 0; k < w->nthreads; k++) {
        w->threads[k] = g_thread_new("test-writer", writer_thread, w);
    }
    writers = w;
    return qmp_empty_return();
}

/* Ends the threads (every claimed record completes first). */
static void writers_join(TestWriters *w)
{
    g_mutex_lock(&w->lock);
    w->stop = true;
    g_mutex_unlock(&w->lock);
    for (int k = 0; k < w->nthreads; k++) {
        g_thread_join(w->threads[k]);
    }
}

JsonNode *qmp___org_strata_x_test_writers_stop(GError **errp)
{
    TestWriters *w = writers;
    GPtrArray *counts;
    JsonNode *ret;

    if (!w) {
        qmp_fail(errp, "The test writers are not running");
        return NULL;
    }
    writers = NULL;
    writers_join(w);
    if (w->error) {
        qmp_fail(errp, "%s", w->error);
        writers_free(w);
        return NULL;
    }
    counts = g_ptr_array_new();
    for (int i = 0; i < w->ndev; i++) {
        __org_strata_TestWriterCount *c = g_new0(__org_strata_TestWriterCount,
                                                 1);

        c->device = g_strdup(w->names[i]);
        c->writes = (int64_t)w->writes[i];
        g_ptr_array_add(counts, c);
    }
    writers_free(w);
    ret = qapi___org_strata_TestWriterCountList_to_json(counts);
    qapi_free___org_strata_TestWriterCountList(counts);
    return ret;
}

void qmp_test_shutdown(void)
{
    if (writers) {
        writers_join(writers);
        writers_free(writers);
        writers = NULL;
    }
}
