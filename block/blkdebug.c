/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The "blkdebug" filter: passes every request to its child and fails
 * chosen ones, so tests can drive every error path of the layers above.
 * It sits where a format expects its file:
 *
 *   driver=qcow2,file.driver=blkdebug,file.filename=X,
 *       file.inject-error.write=3
 *
 * QEMU's syntax (block/blkdebug-rules.c reads the rules):
 *
 *   blkdebug:CONFIG:IMAGE     (block/filename.c turns it into these:)
 *   config=FILE               rules in QEMU's ini format
 *   inject-error.N.KEY=V      an [inject-error] rule: event, errno, once,
 *                             immediately, sector, state, iotype
 *   set-state.N.KEY=V         a [set-state] rule: event, state, new_state
 *   x-image=FILE              the image (or image.* / filename below)
 *   align=N                   requests reach the image aligned to N
 *   max-transfer, opt-write-zero, max-write-zero, opt-discard,
 *   max-discard               checked as QEMU checks them; strata does not
 *                             split requests by them
 *
 * A rule of QEMU's kind becomes active when the format above announces
 * its event (bdrv_debug_event(); "none" is announced when this node
 * opens) and the node is in the rule's state (0: any; the node starts in
 * state 1): from then on the requests it matches fail with its errno --
 * only the first one if once=on -- until another event activates other
 * rules.
 *
 * strata's older options, for its own tests (all optional):
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
 *                             snapshot_refs_down).  A QEMU event name
 *                             without the other options below makes a
 *                             QEMU rule instead, as in QEMU.
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
#include "block/blkdebug-rules.h"
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
    /* a write (failed or not) came since the last flush that passed:
     * QEMU's generic layer lets only such a flush reach blkdebug */
    bool unflushed;

    /* QEMU's rules, in QEMU's insertion order (see blkdebug-rules.c) */
    GPtrArray *rules;
    GPtrArray *active; /* rules the last event activated, first first */
    int64_t state;
    uint64_t align;
    uint64_t max_transfer, opt_write_zero, max_write_zero; /* 0: none */

    /* Breakpoints (qemu-io break/resume): one-shot, (event, tag) pairs;
     * a request reaching a breakpoint's event waits in `suspended` until
     * resumed.  Under lock; suspend_cond signals both ways. */
    GPtrArray *breakpoints;    /* BlkdebugBreak * */
    GPtrArray *suspended;      /* BlkdebugSuspended * */
    GCond suspend_cond;
} BDRVBlkdebugState;

typedef struct BlkdebugBreak {
    char *event;
    char *tag;
} BlkdebugBreak;

typedef struct BlkdebugSuspended {
    const char *tag;
    bool resumed;
} BlkdebugSuspended;

static BlkdebugSuspendNotify *suspend_notify;

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

/*
 * strata's older inject-error.* keys: any of these, or an event only
 * strata announces, and the unnumbered inject-error.* keys keep their
 * older meaning (counted requests, event-count, action=kill).
 */
static bool legacy_options(BlockOpts *options)
{
    static const char *const only_legacy[] = {
        "inject-error.write", "inject-error.flush", "inject-error.any",
        "inject-error.read", "inject-error.event-count",
        "inject-error.action", NULL
    };
    const char *ev = bdrv_opts_get(options, "inject-error.event");

    for (int i = 0; only_legacy[i]; i++) {
        if (bdrv_opts_get(options, only_legacy[i])) {
            return true;
        }
    }
    return ev && blkdebug_event_is_strata(ev);
}

static bool open_legacy(BDRVBlkdebugState *s, BlockOpts *options,
                        GError **errp)
{
    uint64_t err_no;
    bool once;

    if (!take_u64(options, "inject-error.write", 0, &s->fail_write, errp) ||
        !take_u64(options, "inject-error.flush", 0, &s->fail_flush, errp) ||
        !take_u64(options, "inject-error.any", 0, &s->fail_any, errp) ||
        !take_u64(options, "inject-error.read", 0, &s->fail_read, errp) ||
        !take_u64(options, "inject-error.event-count", 1, &s->event_count,
                  errp) ||
        !take_u64(options, "inject-error.errno", EIO, &err_no, errp) ||
        !bdrv_opts_get_bool(options, "inject-error.once", true, &once,
                            errp)) {
        return false;
    }
    g_hash_table_remove(options, "inject-error.once");
    if (err_no == 0 || err_no > 4095) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "blkdebug: inject-error.errno must be 1..4095");
        return false;
    }
    s->error = (int)err_no;
    s->once = once;
    s->event = bdrv_opts_take(options, "inject-error.event");
    {
        g_autofree char *action = bdrv_opts_take(options,
                                                 "inject-error.action");
        if (action && strcmp(action, "kill") && strcmp(action, "error")) {
            g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                        "blkdebug: inject-error.action must be 'error' or "
                        "'kill'");
            return false;
        }
        s->kill = action && !strcmp(action, "kill");
    }
    return true;
}

/* QEMU's rules: the config file's, then those given as options. */
static bool open_rules(BDRVBlkdebugState *s, BlockOpts *options,
                       GError **errp)
{
    g_autofree char *config = bdrv_opts_take(options, "config");

    if (config && !blkdebug_read_config(config, s->rules, errp)) {
        return false;
    }
    return blkdebug_take_rule_options(options, s->rules, errp);
}

/*
 * QEMU's request limits: align is honoured (the generic layer aligns
 * requests to it); the others are checked like QEMU checks them, so the
 * same option strings are accepted and refused.
 */
static bool open_limits(BlockDriverState *bs, BlockOpts *options,
                        GError **errp)
{
    BDRVBlkdebugState *s = bs->opaque;
    static const char *const names[] = {
        "max-transfer", "opt-write-zero", "max-write-zero", "opt-discard",
        "max-discard", NULL
    };
    uint64_t v[5], align;

    if (!bdrv_opts_get_size(options, "align", 0, &s->align, errp)) {
        return false;
    }
    g_hash_table_remove(options, "align");
    if (s->align && (s->align >= INT32_MAX || (s->align & (s->align - 1)))) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "Cannot meet constraints with align %" G_GUINT64_FORMAT,
                    s->align);
        return false;
    }
    align = MAX(s->align, bs->file->request_alignment);
    for (int i = 0; names[i]; i++) {
        /* max-write-zero and max-discard must be multiples of their
         * optimum, if given, as well as of align */
        uint64_t unit = (i == 2 || i == 4) ? MAX(v[i - 1], align) : align;

        if (!bdrv_opts_get_size(options, names[i], 0, &v[i], errp)) {
            return false;
        }
        g_hash_table_remove(options, names[i]);
        if (v[i] && (v[i] >= INT32_MAX || v[i] % unit)) {
            g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                        "Cannot meet constraints with %s %" G_GUINT64_FORMAT,
                        names[i], v[i]);
            return false;
        }
    }
    bs->request_alignment = align;
    s->max_transfer = v[0];
    s->opt_write_zero = v[1];
    s->max_write_zero = v[2];
    return true;
}

static void blkdebug_debug_event(BlockDriverState *bs, const char *event);

static void break_free(BlkdebugBreak *b)
{
    g_free(b->event);
    g_free(b->tag);
    g_free(b);
}

/* Whether the child's options already name its own file child (file.*). */
static bool child_has_file_opts(BlockOpts *child_opts)
{
    GHashTableIter it;
    gpointer key;

    g_hash_table_iter_init(&it, child_opts);
    while (g_hash_table_iter_next(&it, &key, NULL)) {
        if (!strcmp(key, "file") || g_str_has_prefix(key, "file.")) {
            return true;
        }
    }
    return false;
}

static int blkdebug_open(BlockDriverState *bs, BlockOpts *options, int flags,
                         GError **errp)
{
    BDRVBlkdebugState *s = bs->opaque;
    BlockOpts *child_opts;
    g_autofree char *x_image = NULL;
    bool print;

    g_mutex_init(&s->lock);
    g_cond_init(&s->suspend_cond);
    s->breakpoints = g_ptr_array_new_with_free_func(
        (GDestroyNotify)break_free);
    s->suspended = g_ptr_array_new();
    s->rules = g_ptr_array_new_with_free_func(
        (GDestroyNotify)blkdebug_rule_free);
    s->active = g_ptr_array_new();
    s->state = 1;
    s->event_at = -1;
    if (!bdrv_opts_get_bool(options, "print-counts", false, &print, errp)) {
        goto fail;
    }
    g_hash_table_remove(options, "print-counts");
    s->print_counts = print;
    if (legacy_options(options) ? !open_legacy(s, options, errp)
                                : !open_rules(s, options, errp)) {
        goto fail;
    }

    x_image = bdrv_opts_take(options, "x-image");
    child_opts = bdrv_opts_extract_prefix(options, "image");
    /*
     * The image's name (blkdebug:CONFIG:IMAGE, x-image or the filename)
     * goes to the child whatever its driver, as in QEMU: "-o
     * driver=blkdebug,image.driver=qcow2 blkdebug::X" opens qcow2 on X.
     * Only a child whose file is already given by options keeps them.
     */
    if (!bdrv_opts_get(child_opts, "filename") &&
        !child_has_file_opts(child_opts)) {
        const char *name = x_image ? x_image : bs->filename;
        if (*name) {
            bdrv_opts_set(child_opts, "filename", name);
        }
    }
    if (!bdrv_opts_get(child_opts, "driver")) {
        bdrv_opts_set(child_opts, "driver", "file");
    }
    if (!bdrv_opts_get(child_opts, "filename") &&
        !strcmp(bdrv_opts_get(child_opts, "driver"), "file")) {
        g_hash_table_unref(child_opts);
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "A block device must be specified for \"image\"");
        goto fail;
    }
    bs->file = bdrv_open(NULL, child_opts, flags, errp);
    if (!bs->file) {
        goto fail;
    }
    bs->request_alignment = bs->file->request_alignment;
    bs->buf_alignment = bs->file->buf_alignment;
    if (!open_limits(bs, options, errp)) {
        bdrv_unref(bs->file);
        bs->file = NULL;
        goto fail;
    }
    if (!*bs->filename) {
        g_free(bs->filename);
        bs->filename = g_strdup(bs->file->filename);
    }
    blkdebug_debug_event(bs, "none");
    return 0;

fail:
    g_free(s->event);
    g_ptr_array_unref(s->rules);
    g_ptr_array_unref(s->active);
    g_ptr_array_unref(s->breakpoints);
    g_ptr_array_unref(s->suspended);
    g_cond_clear(&s->suspend_cond);
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
    g_ptr_array_unref(s->rules);
    g_ptr_array_unref(s->active);
    /* a close waits for its requests: nothing can be suspended now */
    g_assert(s->suspended->len == 0);
    g_ptr_array_unref(s->breakpoints);
    g_ptr_array_unref(s->suspended);
    g_cond_clear(&s->suspend_cond);
    g_mutex_clear(&s->lock);
}

typedef enum { REQ_READ, REQ_WRITE, REQ_FLUSH } ReqKind;
/* A request no QEMU rule can match (no rule's iotype mask has bit 63). */
#define IO_NONE ((BlkdebugIOType)63)

/*
 * QEMU's rules: the first active rule that matches the request's kind
 * and (if it names a sector) its range decides; a rule with errno 0
 * lets the request pass.  A once=on rule is gone after it failed one.
 * Called with the lock held.
 */
static int rule_check(BDRVBlkdebugState *s, BlkdebugIOType type,
                      int64_t offset, int64_t bytes)
{
    BlkdebugRule *rule = NULL;
    int error;

    for (guint i = 0; i < s->active->len; i++) {
        BlkdebugRule *r = g_ptr_array_index(s->active, i);
        if ((r->offset == -1 ||
             (bytes && r->offset >= offset && r->offset < offset + bytes)) &&
            (r->iotype_mask & (1ull << type))) {
            rule = r;
            break;
        }
    }
    if (!rule || !rule->error) {
        return 0;
    }
    error = rule->error;
    if (rule->once) {
        g_ptr_array_remove(s->active, rule);
        g_ptr_array_remove(s->rules, rule);
    }
    return -error;
}

/* Counts a request; returns the error to inject, or 0 to pass it on. */
static int account(BlockDriverState *bs, ReqKind kind, BlkdebugIOType type,
                   int64_t offset, int64_t bytes)
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
    } else if (kind == REQ_FLUSH && !s->unflushed) {
        ret = 0;    /* QEMU never hands this flush to its rules */
    } else {
        ret = rule_check(s, type, offset, bytes);
        s->injected |= ret != 0;
    }
    if (kind == REQ_WRITE) {
        s->unflushed = true;
    } else if (kind == REQ_FLUSH && ret == 0) {
        s->unflushed = false;
    }
    g_mutex_unlock(&s->lock);
    return ret;
}

/* Under s->lock: a request whose event has a breakpoint waits there until
 * blkdebug_resume names its tag (the breakpoint is used up). */
static void suspend_at_breakpoint(BDRVBlkdebugState *s, const char *event)
{
    BlkdebugSuspended me = { NULL, false };
    g_autofree char *tag = NULL;

    for (guint i = 0; i < s->breakpoints->len; i++) {
        BlkdebugBreak *b = g_ptr_array_index(s->breakpoints, i);
        if (!strcmp(b->event, event)) {
            tag = g_steal_pointer(&b->tag);
            g_ptr_array_remove_index(s->breakpoints, i);
            break;
        }
    }
    if (!tag) {
        return;
    }
    me.tag = tag;
    g_ptr_array_add(s->suspended, &me);
    if (suspend_notify) {
        suspend_notify(tag, true);
    }
    g_cond_broadcast(&s->suspend_cond);
    while (!me.resumed) {
        g_cond_wait(&s->suspend_cond, &s->lock);
    }
    g_ptr_array_remove(s->suspended, &me);
    if (suspend_notify) {
        suspend_notify(tag, false);
    }
    g_cond_broadcast(&s->suspend_cond);
}

static void blkdebug_debug_event(BlockDriverState *bs, const char *event)
{
    BDRVBlkdebugState *s = bs->opaque;

    int64_t new_state;
    bool cleared = false;

    if (!event) {
        return;   /* a format's conditional event that did not happen */
    }
    g_mutex_lock(&s->lock);
    if (s->event && !strcmp(s->event, event) &&
        ++s->events_seen == s->event_count) {
        s->armed = true;
        s->event_at = (int64_t)s->anys;
    }
    /*
     * QEMU's order: the event's rules newest first; the first inject
     * rule that applies replaces the active set, each later one goes in
     * front, so the active set ends up oldest first.  The state changes
     * only after all rules saw the old one.
     */
    new_state = s->state;
    for (guint i = s->rules->len; i-- > 0;) {
        BlkdebugRule *r = g_ptr_array_index(s->rules, i);
        if (strcmp(r->event, event) || (r->state && r->state != s->state)) {
            continue;
        }
        if (r->action == BLKDBG_RULE_SET_STATE) {
            new_state = r->new_state;
            continue;
        }
        if (!cleared) {
            g_ptr_array_set_size(s->active, 0);
            cleared = true;
        }
        g_ptr_array_insert(s->active, 0, r);
    }
    s->state = new_state;
    suspend_at_breakpoint(s, event);
    g_mutex_unlock(&s->lock);
}

static int blkdebug_pread(BlockDriverState *bs, int64_t offset, int64_t bytes,
                          void *buf)
{
    int ret = account(bs, REQ_READ, BLKDBG_IO_READ, offset, bytes);

    return ret ? ret : bdrv_pread(bs->file, offset, bytes, buf);
}

static int blkdebug_pwrite(BlockDriverState *bs, int64_t offset,
                           int64_t bytes, const void *buf)
{
    int ret = account(bs, REQ_WRITE, BLKDBG_IO_WRITE, offset, bytes);

    return ret ? ret : bdrv_pwrite(bs->file, offset, bytes, buf);
}

/* A piece of a zero write too small for the efficient path: written as
 * zeroed data, counted as writes (max-transfer at a time). */
static int write_zeroed_data(BlockDriverState *bs, int64_t offset,
                             int64_t bytes)
{
    BDRVBlkdebugState *s = bs->opaque;
    int64_t chunk = MIN(bytes, s->max_transfer ? (int64_t)s->max_transfer
                                               : 1 << 20);
    g_autofree void *zeroes = g_malloc0(chunk);
    int ret = 0;

    while (bytes > 0 && ret == 0) {
        int64_t n = MIN(bytes, chunk);
        ret = blkdebug_pwrite(bs, offset, n, zeroes);
        offset += n;
        bytes -= n;
    }
    return ret;
}

/*
 * With opt-write-zero or max-write-zero, a zero write is cut the way
 * QEMU's block layer cuts it (a head up to the first multiple of the
 * alignment, at most max-transfer; the aligned bulk in pieces of at most
 * max-write-zero; the tail), and, as QEMU's blkdebug does, a piece
 * smaller than the alignment is written as zeroed data: tests see the
 * same allocation in map as with QEMU.
 */
static int blkdebug_pwrite_zeroes(BlockDriverState *bs, int64_t offset,
                                  int64_t bytes, int flags)
{
    BDRVBlkdebugState *s = bs->opaque;
    int64_t align = MAX((int64_t)s->opt_write_zero,
                        (int64_t)bs->request_alignment);
    int64_t max_piece = s->max_write_zero ?
                        (int64_t)s->max_write_zero / align * align :
                        INT64_MAX;
    int64_t tail = (offset + bytes) % align;
    int ret = 0;

    while (bytes > 0 && ret == 0) {
        int64_t head = offset % align, n = bytes;

        if (head) {
            n = MIN(MIN(bytes, s->max_transfer ? (int64_t)s->max_transfer
                                               : INT64_MAX), align - head);
        } else if (tail && n > align) {
            n -= tail;
        }
        n = MIN(n, max_piece);
        if (n < align) {
            ret = (flags & BDRV_REQ_NO_FALLBACK) ? -ENOTSUP
                                                 : write_zeroed_data(bs,
                                                                     offset,
                                                                     n);
        } else {
            ret = account(bs, REQ_WRITE, BLKDBG_IO_WRITE_ZEROES, offset, n);
            if (ret == 0) {
                ret = bdrv_pwrite_zeroes(bs->file, offset, n, flags);
            }
        }
        offset += n;
        bytes -= n;
    }
    return ret;
}

static int blkdebug_pdiscard(BlockDriverState *bs, int64_t offset,
                             int64_t bytes)
{
    int ret = account(bs, REQ_WRITE, BLKDBG_IO_DISCARD, offset, bytes);

    return ret ? ret : bdrv_pdiscard(bs->file, offset, bytes);
}

/* The generic layer flushes the child after this returns 0. */
static int blkdebug_flush(BlockDriverState *bs)
{
    return account(bs, REQ_FLUSH, BLKDBG_IO_FLUSH, 0, 0);
}

static int blkdebug_truncate(BlockDriverState *bs, int64_t size,
                             GError **errp)
{
    /* counted as a write by the older options; QEMU's rules leave
     * truncates alone */
    int ret = account(bs, REQ_WRITE, IO_NONE, size, 0);

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
    BDRVBlkdebugState *s = bs->opaque;
    int ret;

    g_mutex_lock(&s->lock);
    ret = rule_check(s, BLKDBG_IO_BLOCK_STATUS, offset, bytes);
    g_mutex_unlock(&s->lock);
    return ret ? ret : bdrv_block_status(bs->file, offset, bytes, pnum, map,
                                         file);
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
    .is_filter = true,
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

/* The blkdebug node at or under bs (down through file children). */
static BDRVBlkdebugState *find_blkdebug(BlockDriverState *bs)
{
    for (; bs; bs = bs->file) {
        if (bs->drv == &bdrv_blkdebug) {
            return bs->opaque;
        }
    }
    return NULL;
}

void blkdebug_set_suspend_notify(BlkdebugSuspendNotify *fn)
{
    suspend_notify = fn;
}

int blkdebug_break(BlockDriverState *bs, const char *event, const char *tag)
{
    BDRVBlkdebugState *s = find_blkdebug(bs);
    BlkdebugBreak *b;

    if (!s) {
        return -ENOTSUP;
    }
    if (!blkdebug_event_known(event)) {
        return -ENOENT;
    }
    b = g_new0(BlkdebugBreak, 1);
    b->event = g_strdup(event);
    b->tag = g_strdup(tag);
    g_mutex_lock(&s->lock);
    g_ptr_array_add(s->breakpoints, b);
    g_mutex_unlock(&s->lock);
    return 0;
}

int blkdebug_remove_break(BlockDriverState *bs, const char *tag)
{
    BDRVBlkdebugState *s = find_blkdebug(bs);
    int ret = -ENOENT;

    if (!s) {
        return -ENOTSUP;
    }
    g_mutex_lock(&s->lock);
    /* a request waiting under that tag goes on too, as in QEMU */
    for (guint i = 0; i < s->suspended->len; i++) {
        BlkdebugSuspended *r = g_ptr_array_index(s->suspended, i);
        if (!strcmp(r->tag, tag)) {
            r->resumed = true;
            ret = 0;
        }
    }
    for (guint i = s->breakpoints->len; i-- > 0;) {
        BlkdebugBreak *b = g_ptr_array_index(s->breakpoints, i);
        if (!strcmp(b->tag, tag)) {
            g_ptr_array_remove_index(s->breakpoints, i);
            ret = 0;
        }
    }
    g_cond_broadcast(&s->suspend_cond);
    g_mutex_unlock(&s->lock);
    return ret;
}

int blkdebug_resume(BlockDriverState *bs, const char *tag)
{
    BDRVBlkdebugState *s = find_blkdebug(bs);
    BlkdebugSuspended *found = NULL;

    if (!s) {
        return -ENOTSUP;
    }
    g_mutex_lock(&s->lock);
    for (guint i = 0; i < s->suspended->len && !found; i++) {
        BlkdebugSuspended *r = g_ptr_array_index(s->suspended, i);
        if (!strcmp(r->tag, tag)) {
            found = r;
        }
    }
    if (found) {
        found->resumed = true;
        g_cond_broadcast(&s->suspend_cond);
        /* returns once the request has gone on (said it resumed) */
        while (g_ptr_array_find(s->suspended, found, NULL)) {
            g_cond_wait(&s->suspend_cond, &s->lock);
        }
    }
    g_mutex_unlock(&s->lock);
    return found ? 0 : -ENOENT;
}

int blkdebug_wait_suspended(BlockDriverState *bs, const char *tag)
{
    BDRVBlkdebugState *s = find_blkdebug(bs);

    if (!s) {
        return -ENOTSUP;
    }
    g_mutex_lock(&s->lock);
    for (;;) {
        bool there = false;
        for (guint i = 0; i < s->suspended->len && !there; i++) {
            BlkdebugSuspended *r = g_ptr_array_index(s->suspended, i);
            there = !strcmp(r->tag, tag);
        }
        if (there) {
            break;
        }
        g_cond_wait(&s->suspend_cond, &s->lock);
    }
    g_mutex_unlock(&s->lock);
    return 0;
}

bool blkdebug_has_breakpoints(BlockDriverState *bs)
{
    BDRVBlkdebugState *s = find_blkdebug(bs);
    bool any;

    if (!s) {
        return false;
    }
    g_mutex_lock(&s->lock);
    any = s->breakpoints->len || s->suspended->len;
    g_mutex_unlock(&s->lock);
    return any;
}
