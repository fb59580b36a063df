/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The "blkdebug" filter: passes every request to its child and fails
 * chosen ones, so tests can drive every error path of the layers above.
 * It sits where a format expects its file:
 *
 *   driver=qcow2,file.driver=blkdebug,file.filename=X,
 *       file.inject-error.write=3
 *
 * Options (all optional, keys of the blkdebug node):
 *   filename                  the image file, opened with the file driver
 *   image.*                   or else the child node's options (default
 *                             driver "file"), e.g. image.filename=X; the
 *                             generic layer still wants a filename for a
 *                             format's file child, so give the format a
 *                             filename when using these
 *   inject-error.write=N      fail the Nth write (writes, zero writes,
 *                             discards and truncates count; from 1)
 *   inject-error.flush=N      fail the Nth flush
 *   inject-error.any=N        fail the Nth write or flush, counted together
 *   inject-error.read=N       fail the Nth read
 *   inject-error.event=NAME   fail the first write or flush after the Nth
 *                             time the format above announces NAME (see
 *                             bdrv_debug_event(); qcow2 snapshots announce
 *                             snapshot_refs_up, snapshot_l1_write,
 *                             snapshot_table_write, snapshot_header_update,
 *                             snapshot_refs_down)
 *   inject-error.event-count=N   which occurrence of the event (default 1)
 *   inject-error.once=on|off  on (default): only that one request fails;
 *                             off: it and every write and flush after it
 *                             fail, like a disk that died
 *   inject-error.errno=N      the error returned (default 5, EIO)
 *   inject-error.action=kill  instead of failing the request, kill the
 *                             process (SIGKILL) before it is done: a
 *                             crash at an exact point, for crash tests
 *   print-counts=on           at close, log how many reads,
 *                             writes and flushes passed and whether an
 *                             error was injected:
 *                             "blkdebug: reads=R writes=W flushes=F
 *                              injected=0|1", and with inject-error.event
 *                             " event_at=N": the writes and flushes that
 *                             had passed when the event came (or "none")
 * A failed request does nothing (the child never sees it).
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "block/blkdebug.h"
#include "block/log.h"
#include "block/block_int.h"
#include "block/drivers.h"

typedef struct BDRVBlkdebugState {
    GMutex lock;
    uint64_t fail_write, fail_flush, fail_any, fail_read;  /* 0: never */
    char *event;
    uint64_t event_count;
    bool once;
    bool kill;
    int error;
    bool print_counts;

    uint64_t reads, writes, flushes, anys, events_seen;
    bool armed;        /* the event happened: fail the next write/flush */
    int64_t event_at;  /* anys when the event came; -1: not yet */
    bool injected;     /* an error was returned */
    bool dead;         /* once=off and injected: everything fails */
} BDRVBlkdebugState;

static bool take_u64(BlockOpts *options, const char *key, uint64_t def,
                     uint64_t *out, GError **errp)
{
    g_autofree char *v = bdrv_opts_take(options, key);
    char *end;

    *out = def;
    if (!v) {
        return true;
    }
    *out = g_ascii_strtoull(v, &end, 0);
    if (!*v || *end) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "blkdebug: '%s' expects a number, not '%s'", key, v);
        return false;
    }
    return true;
}

static int blkdebug_open(BlockDriverState *bs, BlockOpts *options, int flags,
                         GError **errp)
{
    BDRVBlkdebugState *s = bs->opaque;
    BlockOpts *child_opts;
    uint64_t err_no;
    bool once, print;

    g_mutex_init(&s->lock);
    if (!take_u64(options, "inject-error.write", 0, &s->fail_write, errp) ||
        !take_u64(options, "inject-error.flush", 0, &s->fail_flush, errp) ||
        !take_u64(options, "inject-error.any", 0, &s->fail_any, errp) ||
        !take_u64(options, "inject-error.read", 0, &s->fail_read, errp) ||
        !take_u64(options, "inject-error.event-count", 1, &s->event_count,
                  errp) ||
        !take_u64(options, "inject-error.errno", EIO, &err_no, errp) ||
        !bdrv_opts_get_bool(options, "inject-error.once", true, &once, errp) ||
        !bdrv_opts_get_bool(options, "print-counts", false, &print, errp)) {
        goto fail;
    }
    g_hash_table_remove(options, "inject-error.once");
    g_hash_table_remove(options, "print-counts");
    if (err_no == 0 || err_no > 4095) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "blkdebug: inject-error.errno must be 1..4095");
        goto fail;
    }
    s->error = (int)err_no;
    s->once = once;
    s->print_counts = print;
    s->event = bdrv_opts_take(options, "inject-error.event");
    s->event_at = -1;
    {
        g_autofree char *action = bdrv_opts_take(options,
                                                 "inject-error.action");
        if (action && strcmp(action, "kill") && strcmp(action, "error")) {
            g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                        "blkdebug: inject-error.action must be 'error' or "
                        "'kill'");
            goto fail;
        }
        s->kill = action && !strcmp(action, "kill");
    }

    child_opts = bdrv_opts_extract_prefix(options, "image");
    if (g_hash_table_size(child_opts) == 0 && *bs->filename) {
        bdrv_opts_set(child_opts, "filename", bs->filename);
    }
    if (!bdrv_opts_get(child_opts, "driver")) {
        bdrv_opts_set(child_opts, "driver", "file");
    }
    if (!bdrv_opts_get(child_opts, "filename")) {
        g_hash_table_unref(child_opts);
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "blkdebug: no image to open (give image.filename=)");
        goto fail;
    }
    bs->file = bdrv_open(NULL, child_opts, flags, errp);
    if (!bs->file) {
        goto fail;
    }
    bs->request_alignment = bs->file->request_alignment;
    bs->buf_alignment = bs->file->buf_alignment;
    if (!*bs->filename) {
        g_free(bs->filename);
        bs->filename = g_strdup(bs->file->filename);
    }
    return 0;

fail:
    g_free(s->event);
    g_mutex_clear(&s->lock);
    return -EINVAL;
}

static void blkdebug_close(BlockDriverState *bs)
{
    BDRVBlkdebugState *s = bs->opaque;

    if (s->print_counts) {
        g_autofree char *at = !s->event ? g_strdup("") :
            s->event_at < 0 ? g_strdup(" event_at=none") :
            g_strdup_printf(" event_at=%" G_GINT64_FORMAT, s->event_at);
        strata_info("blkdebug: reads=%" G_GUINT64_FORMAT " writes=%"
                G_GUINT64_FORMAT " flushes=%" G_GUINT64_FORMAT
                " injected=%d%s", s->reads, s->writes, s->flushes,
                s->injected, at);
    }
    g_free(s->event);
    g_mutex_clear(&s->lock);
}

typedef enum { REQ_READ, REQ_WRITE, REQ_FLUSH } ReqKind;

/* Counts a request; returns the error to inject, or 0 to pass it on. */
static int account(BlockDriverState *bs, ReqKind kind)
{
    BDRVBlkdebugState *s = bs->opaque;
    int ret = 0;
    bool fail = false;

    g_mutex_lock(&s->lock);
    if (kind == REQ_READ) {
        s->reads++;
        fail = s->fail_read && s->reads == s->fail_read;
    } else {
        s->anys++;
        if (kind == REQ_WRITE) {
            s->writes++;
            fail = s->fail_write && s->writes == s->fail_write;
        } else {
            s->flushes++;
            fail = s->fail_flush && s->flushes == s->fail_flush;
        }
        fail |= s->fail_any && s->anys == s->fail_any;
        if (s->armed) {
            s->armed = false;
            fail = true;
        }
        fail |= s->dead;
    }
    if (fail && s->kill) {
        fflush(NULL);
        raise(SIGKILL);
    }
    if (fail) {
        s->injected = true;
        s->dead = !s->once;
        ret = -s->error;
    }
    g_mutex_unlock(&s->lock);
    return ret;
}

static void blkdebug_debug_event(BlockDriverState *bs, const char *event)
{
    BDRVBlkdebugState *s = bs->opaque;

    g_mutex_lock(&s->lock);
    if (s->event && !strcmp(s->event, event) &&
        ++s->events_seen == s->event_count) {
        s->armed = true;
        s->event_at = (int64_t)s->anys;
    }
    g_mutex_unlock(&s->lock);
}

static int blkdebug_pread(BlockDriverState *bs, int64_t offset, int64_t bytes,
                          void *buf)
{
    int ret = account(bs, REQ_READ);

    return ret ? ret : bdrv_pread(bs->file, offset, bytes, buf);
}

static int blkdebug_pwrite(BlockDriverState *bs, int64_t offset,
                           int64_t bytes, const void *buf)
{
    int ret = account(bs, REQ_WRITE);

    return ret ? ret : bdrv_pwrite(bs->file, offset, bytes, buf);
}

static int blkdebug_pwrite_zeroes(BlockDriverState *bs, int64_t offset,
                                  int64_t bytes, int flags)
{
    int ret = account(bs, REQ_WRITE);

    return ret ? ret : bdrv_pwrite_zeroes(bs->file, offset, bytes, flags);
}

static int blkdebug_pdiscard(BlockDriverState *bs, int64_t offset,
                             int64_t bytes)
{
    int ret = account(bs, REQ_WRITE);

    return ret ? ret : bdrv_pdiscard(bs->file, offset, bytes);
}

/* The generic layer flushes the child after this returns 0. */
static int blkdebug_flush(BlockDriverState *bs)
{
    return account(bs, REQ_FLUSH);
}

static int blkdebug_truncate(BlockDriverState *bs, int64_t size,
                             GError **errp)
{
    int ret = account(bs, REQ_WRITE);

    if (ret) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_IO,
                    "Failed to resize the file: %s (injected)",
                    g_strerror(-ret));
        return ret;
    }
    return bdrv_truncate(bs->file, size, errp);
}

static int64_t blkdebug_getlength(BlockDriverState *bs)
{
    return bdrv_getlength(bs->file);
}

static int blkdebug_block_status(BlockDriverState *bs, int64_t offset,
                                 int64_t bytes, int64_t *pnum, int64_t *map,
                                 BlockDriverState **file)
{
    return bdrv_block_status(bs->file, offset, bytes, pnum, map, file);
}

bool blkdebug_get_counts(BlockDriverState *bs, BlkdebugCounts *out)
{
    BDRVBlkdebugState *s;

    if (!bs || bs->drv != &bdrv_blkdebug) {
        return false;
    }
    s = bs->opaque;
    g_mutex_lock(&s->lock);
    out->reads = s->reads;
    out->writes = s->writes;
    out->flushes = s->flushes;
    out->injected = s->injected;
    g_mutex_unlock(&s->lock);
    return true;
}

BlockDriver bdrv_blkdebug = {
    .format_name = "blkdebug",
    .instance_size = sizeof(BDRVBlkdebugState),
    .is_protocol = true,      /* opens its child itself, from image.* */
    .open = blkdebug_open,
    .close = blkdebug_close,
    .pread = blkdebug_pread,
    .pwrite = blkdebug_pwrite,
    .pwrite_zeroes = blkdebug_pwrite_zeroes,
    .pdiscard = blkdebug_pdiscard,
    .flush = blkdebug_flush,
    .truncate = blkdebug_truncate,
    .getlength = blkdebug_getlength,
    .block_status = blkdebug_block_status,
    .debug_event = blkdebug_debug_event,
};
