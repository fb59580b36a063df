/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * strata-io's data commands: read, readv, aio_read, write, writev,
 * aio_write, discard and aio_flush.  They share one core: a table entry
 * per command says which options it takes, how its lengths are given
 * (one, or several that are added up) and whether its result is printed
 * at once or held back like an asynchronous completion; parsing,
 * checking, the request and the report are the same code for all of
 * them.  The device (BlockBackend) does what qemu-io's device does:
 * bounds checks, write-through, FUA and discard=ignore.
 *
 * Command names, synopses, messages and output are qemu-io's (QEMU 7.2):
 * scripts and tests compare the two tools' output.  The help texts are
 * our own.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "block/blkdebug.h"
#include "io-cmds.h"
#include "io-util.h"

typedef enum RwOp {
    RW_READ = 1,
    RW_WRITE = 2,
    RW_DISCARD = 4,
} RwOp;

/* How a command gives its lengths and reports. */
typedef enum RwShape {
    RW_SINGLE,      /* off len */
    RW_VECTOR,      /* off len [len..]: one request of the sum */
    RW_AIO,         /* like RW_VECTOR; printed later, never fails on I/O */
} RwShape;

typedef struct RwKind {
    RwOp op;
    RwShape shape;
    const char *optstring;      /* getopt(3) */
    const char *fail_label;     /* "<label> failed: <strerror>" */
    const IoCmd *cmd;
    const char *summary;        /* help */
    const char *example;
} RwKind;

/* Everything the options and arguments of one command line say. */
typedef struct RwArgs {
    bool terse;                 /* -C */
    bool quiet;                 /* -q */
    bool dump;                  /* -v */
    bool has_pattern;           /* -P */
    int pattern;
    bool has_verify_off;        /* read -s */
    int64_t verify_off;
    bool has_verify_len;        /* read -l */
    int64_t verify_len;
    const char *source;         /* write -s */
    bool vmstate;               /* -b */
    bool compressed;            /* -c */
    bool fua;                   /* -f */
    bool zeroes;                /* -z */
    int zero_flags;             /* -n, -u */
    int64_t offset;
    int64_t bytes;
} RwArgs;

/* ---- Parsing ---- */

static int64_t parse_num(const char *arg)
{
    int64_t v = io_cvtnum(arg);

    if (v < 0) {
        io_print_cvtnum_err(v, arg);
    }
    return v;
}

/*
 * The options.  Returns 0, a negative errno after printing why, or 1 when
 * the command is done already (aio -i).
 */
static int parse_options(const RwKind *k, RwArgs *a, int argc, char **argv)
{
    int c;

    while ((c = getopt(argc, argv, k->optstring)) != -1) {
        switch (c) {
        case 'b':
            a->vmstate = true;
            break;
        case 'c':
            a->compressed = true;
            break;
        case 'C':
            a->terse = true;
            break;
        case 'f':
            a->fua = true;
            break;
        case 'i':
            printf("injecting invalid %s request\n",
                   k->op == RW_READ ? "read" : "write");
            return 1;
        case 'l':
            a->has_verify_len = true;
            a->verify_len = parse_num(optarg);
            if (a->verify_len < 0) {
                return (int)a->verify_len;
            }
            break;
        case 'n':
            a->zero_flags |= BDRV_REQ_NO_FALLBACK;
            break;
        case 'p':
            break;              /* accepted for old scripts */
        case 'P':
            a->has_pattern = true;
            a->pattern = io_parse_pattern(optarg);
            if (a->pattern < 0) {
                return -EINVAL;
            }
            break;
        case 'q':
            a->quiet = true;
            break;
        case 's':
            if (k->op == RW_READ) {
                a->has_verify_off = true;
                a->verify_off = parse_num(optarg);
                if (a->verify_off < 0) {
                    return (int)a->verify_off;
                }
            } else {
                a->source = optarg;
            }
            break;
        case 'u':
            a->zero_flags |= BDRV_REQ_MAY_UNMAP;
            break;
        case 'v':
            a->dump = true;
            break;
        case 'z':
            a->zeroes = true;
            break;
        default:
            io_command_usage(k->cmd);
            return -EINVAL;
        }
    }
    return 0;
}

/* Options that exclude or need each other, in qemu-io's order. */
static bool options_consistent(const RwKind *k, const RwArgs *a, int nlens)
{
    bool unmap = a->zero_flags & BDRV_REQ_MAY_UNMAP;
    bool no_fallback = a->zero_flags & BDRV_REQ_NO_FALLBACK;

    if (a->vmstate && a->zeroes) {
        printf("-b and -z cannot be specified at the same time\n");
    } else if (a->fua && (a->vmstate || a->compressed)) {
        printf("-f and -b or -c cannot be specified at the same time\n");
    } else if (no_fallback && !a->zeroes) {
        printf("-n requires -z to be specified\n");
    } else if (a->zeroes && nlens != 1) {
        printf("-z supports only a single length parameter\n");
    } else if (unmap && !a->zeroes) {
        printf("-u requires -z to be specified\n");
    } else if (k->shape == RW_SINGLE &&
               a->zeroes + a->has_pattern + !!a->source > 1) {
        /* (aio_write -z -P is let through, as by qemu-io) */
        printf("Only one of -z, -P, and -s "
               "can be specified at the same time\n");
    } else {
        return true;
    }
    return false;
}

/* The sum of several lengths, each and the sum within the request limit. */
static int parse_length_list(char **argv, int n, int64_t *total)
{
    int64_t sum = 0;

    for (int i = 0; i < n; i++) {
        int64_t len = parse_num(argv[i]);

        if (len < 0) {
            return (int)len;
        }
        if (len > IO_REQUEST_MAX_BYTES) {
            printf("Argument '%s' exceeds maximum size %" PRIu64 "\n",
                   argv[i], (uint64_t)IO_REQUEST_MAX_BYTES);
            return -EINVAL;
        }
        if (sum > IO_REQUEST_MAX_BYTES - len) {
            printf("The total number of bytes exceed the maximum size %"
                   PRIu64 "\n", (uint64_t)IO_REQUEST_MAX_BYTES);
            return -EINVAL;
        }
        sum += len;
    }
    *total = sum;
    return 0;
}

static int parse_length(const RwKind *k, RwArgs *a, char **argv, int n)
{
    if (k->shape != RW_SINGLE && !a->zeroes) {
        return parse_length_list(argv, n, &a->bytes);
    }
    a->bytes = parse_num(argv[0]);
    if (a->bytes < 0) {
        return (int)a->bytes;
    }
    /* Zero writes allocate no buffer: only -n lifts their limit (and an
     * aio zero write has none). */
    if (k->shape != RW_SINGLE || a->bytes <= IO_REQUEST_MAX_BYTES) {
        return 0;
    }
    if (k->op != RW_WRITE) {
        printf("length cannot exceed %" PRIu64 ", given %s\n",
               (uint64_t)IO_REQUEST_MAX_BYTES, argv[0]);
        return -EINVAL;
    }
    if (!(a->zero_flags & BDRV_REQ_NO_FALLBACK)) {
        printf("length cannot exceed %" PRIu64 " without -n, given %s\n",
               (uint64_t)IO_REQUEST_MAX_BYTES, argv[0]);
        return -EINVAL;
    }
    return 0;
}

static bool sector_aligned(int64_t value, const char *what)
{
    if (value % BDRV_SECTOR_SIZE) {
        printf("%" PRId64 " is not a sector-aligned value for '%s'\n", value,
               what);
        return false;
    }
    return true;
}

/*
 * The whole command line into *a.  Returns 0, a negative errno after
 * printing why, or 1 when there is nothing left to do.
 */
static int parse_command(const RwKind *k, RwArgs *a, int argc, char **argv)
{
    int ret = parse_options(k, a, argc, argv);
    int nlens;

    if (ret != 0) {
        return ret;
    }
    nlens = argc - optind - 1;
    if (nlens < 1 || (k->shape == RW_SINGLE && nlens != 1)) {
        io_command_usage(k->cmd);
        return -EINVAL;
    }
    if (!options_consistent(k, a, nlens)) {
        return -EINVAL;
    }
    a->offset = parse_num(argv[optind]);
    if (a->offset < 0) {
        return (int)a->offset;
    }
    ret = parse_length(k, a, &argv[optind + 1], nlens);
    if (ret < 0) {
        return ret;
    }
    if (!a->has_pattern && (a->has_verify_len || a->has_verify_off)) {
        io_command_usage(k->cmd);
        return -EINVAL;
    }
    if (!a->has_verify_len) {
        a->verify_len = a->bytes - a->verify_off;
    }
    if (a->verify_len < 0 || a->verify_len + a->verify_off > a->bytes) {
        printf("pattern verification range exceeds end of read data\n");
        return -EINVAL;
    }
    if ((a->vmstate || a->compressed) &&
        (!sector_aligned(a->offset, "offset") ||
         !sector_aligned(a->bytes, "count"))) {
        return -EINVAL;
    }
    return 0;
}

/* ---- Buffers ---- */

/* len bytes of the file's content, repeated as often as needed (write -s). */
static char *alloc_from_file(size_t len, const char *name)
{
    FILE *f = fopen(name, "r");
    size_t n;
    char *buf;

    if (!f) {
        perror(name);
        return NULL;
    }
    buf = io_alloc(len, 0);
    n = fread(buf, 1, len, f);
    if (ferror(f)) {
        perror(name);
        goto fail;
    }
    if (n == 0) {
        fprintf(stderr, "%s: file is empty\n", name);
        goto fail;
    }
    fclose(f);
    for (size_t pos = n; pos < len; pos += n) {
        memcpy(buf + pos, buf, MIN(n, len - pos));
    }
    return buf;

fail:
    io_free(buf);
    fclose(f);
    return NULL;
}

/* ---- Held-back output of the aio_* commands ---- */

/*
 * An aio_* request runs at once, but what it prints waits until qemu-io
 * would have seen it complete: aio_flush, closing the image, or exit.
 * A request that fails its bounds check never reaches a node; qemu-io
 * completes those at its next poll, which is as good as now.
 *
 * While a blkdebug breakpoint is set or holds a request (and until the
 * requests issued meanwhile are done), an aio_* request runs in a thread
 * of its own, so that the commands after it can go on while it waits:
 * aio_flush, close and exit wait for those threads first.  Their reports
 * go out in the order the requests completed, as qemu-io's do.
 */
static GMutex aio_lock;
static GCond aio_cond;
static int aio_outstanding;       /* threads still running a request */
static GString *aio_pending;      /* under aio_lock */

/*
 * qemu-io's `resume` runs the held request on at once, in its own
 * coroutine; requests that queued behind it (an allocation of the same
 * cluster) go on only once it completed, so its report comes first.
 * Here those requests are threads that the resumed one wakes before it
 * returns from the node, and they could report first.  So while the
 * resumed request runs, the other requests' reports wait in aio_deferred
 * and follow its own, and `resume` waits for it to complete
 * (io_aio_wait_resumed) -- unless a request is held at a breakpoint, which
 * the resumed one may be waiting for: then nothing waits, as before.
 * Under aio_lock.
 */
typedef struct AioJob AioJob;
static __thread AioJob *thread_job;   /* the aio_* request of this thread */
static AioJob *resumed_job;           /* went on at the last resume */
static int aio_held;                  /* requests held at a breakpoint */
static GString *aio_deferred;         /* reports after resumed_job's */

/* Under aio_lock: the resumed request is done with, or no longer waited
 * for; the reports held back behind it follow. */
static void end_resumed(void)
{
    resumed_job = NULL;
    if (aio_deferred && aio_deferred->len) {
        g_string_append_len(aio_pending, aio_deferred->str,
                            aio_deferred->len);
        g_string_truncate(aio_deferred, 0);
    }
}

typedef struct RwOutput {
    FILE *f;
    char *text;
    size_t len;
} RwOutput;

static void output_begin(IoState *s, const RwKind *k, const RwArgs *a,
                         RwOutput *out)
{
    out->f = stdout;
    if (k->shape == RW_AIO &&
        blk_check_request(s->blk, a->offset, a->bytes) == 0) {
        FILE *mem = open_memstream(&out->text, &out->len);
        if (mem) {
            out->f = mem;
        }
    }
}

static void output_end(RwOutput *out)
{
    if (out->f == stdout) {
        return;
    }
    fclose(out->f);
    g_mutex_lock(&aio_lock);
    if (!aio_pending) {
        aio_pending = g_string_new(NULL);
        aio_deferred = g_string_new(NULL);
    }
    if (resumed_job && thread_job != resumed_job) {
        g_string_append_len(aio_deferred, out->text, out->len);
    } else {
        g_string_append_len(aio_pending, out->text, out->len);
        if (resumed_job) {
            end_resumed();
        }
    }
    g_mutex_unlock(&aio_lock);
    free(out->text);
}

void io_aio_drain(void)
{
    g_mutex_lock(&aio_lock);
    while (aio_outstanding) {
        g_cond_wait(&aio_cond, &aio_lock);
    }
    if (aio_pending && aio_pending->len) {
        fwrite(aio_pending->str, 1, aio_pending->len, stdout);
        g_string_truncate(aio_pending, 0);
    }
    g_mutex_unlock(&aio_lock);
}

static bool aio_in_thread(IoState *s)
{
    bool busy;

    g_mutex_lock(&aio_lock);
    busy = aio_outstanding > 0;
    g_mutex_unlock(&aio_lock);
    return busy || blkdebug_has_breakpoints(blk_bs(s->blk));
}

/* ---- The request ---- */

static bool all_bytes_are(const uint8_t *buf, int64_t len, int pattern)
{
    for (int64_t i = 0; i < len; i++) {
        if (buf[i] != pattern) {
            return false;
        }
    }
    return true;
}

static int submit(IoState *s, const RwKind *k, const RwArgs *a, char *buf)
{
    int fua = a->fua ? BLK_REQ_FUA : 0;

    if (a->vmstate) {
        /* The format's VM state area (qcow2: past the disk's end). */
        BlockDriverState *bs = blk_bs(s->blk);
        int ret = k->op == RW_READ ?
                  bdrv_load_vmstate(bs, buf, a->offset, a->bytes) :
                  k->op == RW_WRITE && !a->zeroes ?
                  bdrv_save_vmstate(bs, buf, a->offset, a->bytes) : -ENOTSUP;
        /* as QEMU's device does: without a write cache, the state is
         * flushed before the write counts as done */
        if (ret >= 0 && k->op == RW_WRITE && !blk_enable_write_cache(s->blk)) {
            ret = bdrv_flush(bs);
        }
        return ret;
    }
    switch (k->op) {
    case RW_READ:
        return blk_pread(s->blk, a->offset, a->bytes, buf);
    case RW_DISCARD:
        return blk_pdiscard(s->blk, a->offset, a->bytes);
    case RW_WRITE:
        break;
    }
    if (a->zeroes) {
        return blk_pwrite_zeroes(s->blk, a->offset, a->bytes,
                                 a->zero_flags | fua);
    }
    if (a->compressed) {
        return blk_pwrite_compressed(s->blk, a->offset, a->bytes, buf);
    }
    return blk_pwrite_flags(s->blk, a->offset, a->bytes, buf, fua);
}

static void now(struct timespec *t)
{
    clock_gettime(CLOCK_MONOTONIC, t);
}

/* Issues the request and reports it; takes buf. */
static int execute(IoState *s, const RwKind *k, const RwArgs *a, char *buf)
{
    static const char *const report_label[] = {
        [RW_READ] = "read", [RW_WRITE] = "wrote", [RW_DISCARD] = "discard",
    };
    struct timespec t1, t2;
    RwOutput out;
    int ret;

    now(&t1);
    ret = submit(s, k, a, buf);   /* not in MIN(): it would run twice */
    ret = MIN(ret, 0);
    now(&t2);

    output_begin(s, k, a, &out);
    if (ret < 0) {
        fprintf(out.f, "%s failed: %s\n", k->fail_label, strerror(-ret));
        goto done;
    }
    if (k->op == RW_READ && a->has_pattern &&
        !all_bytes_are((uint8_t *)buf + a->verify_off, a->verify_len,
                       a->pattern)) {
        fprintf(out.f, "Pattern verification failed at offset %" PRId64
                ", %" PRId64 " bytes\n", a->offset + a->verify_off,
                a->verify_len);
        ret = -EINVAL;
    }
    if (!a->quiet) {
        if (a->dump) {
            io_dump_buffer(out.f, buf, a->offset, a->bytes);
        }
        t2 = io_tsub(t2, t1);
        io_print_report(out.f, report_label[k->op], &t2, a->offset, a->bytes,
                        a->bytes, 1, a->terse);
    }
done:
    output_end(&out);
    io_free(buf);
    return ret;
}

struct AioJob {
    IoState *s;
    const RwKind *k;
    RwArgs a;
    char *buf;
};

static gpointer aio_thread(gpointer opaque)
{
    AioJob *j = opaque;

    thread_job = j;
    execute(j->s, j->k, &j->a, j->buf);
    g_mutex_lock(&aio_lock);
    if (resumed_job == j) {
        end_resumed();        /* (it reported nothing: bounds refused) */
    }
    thread_job = NULL;
    g_free(j);
    aio_outstanding--;
    g_cond_broadcast(&aio_cond);
    g_mutex_unlock(&aio_lock);
    return NULL;
}

void io_aio_breakpoint_event(bool suspended)
{
    g_mutex_lock(&aio_lock);
    aio_held += suspended ? 1 : -1;
    g_assert(aio_held >= 0);
    if (!suspended && thread_job) {
        resumed_job = thread_job;
    } else if (suspended && resumed_job) {
        end_resumed();        /* held again (or another is): as before */
    }
    g_cond_broadcast(&aio_cond);
    g_mutex_unlock(&aio_lock);
}

void io_aio_wait_resumed(void)
{
    /* a bound, should the request wait for something no breakpoint
     * holds (it cannot: commands run one at a time) */
    gint64 deadline = g_get_monotonic_time() + 30 * G_TIME_SPAN_SECOND;

    g_mutex_lock(&aio_lock);
    while (resumed_job && aio_held == 0 &&
           g_cond_wait_until(&aio_cond, &aio_lock, deadline)) {
    }
    if (resumed_job) {
        end_resumed();
    }
    g_mutex_unlock(&aio_lock);
}

static int run_request(IoState *s, const RwKind *k, const RwArgs *a)
{
    char *buf = NULL;
    int ret;

    if (k->op == RW_READ) {
        buf = io_alloc(a->bytes, 0xab);
    } else if (k->op == RW_WRITE && !a->zeroes) {
        buf = a->source ? alloc_from_file(a->bytes, a->source)
                        : io_alloc(a->bytes, a->has_pattern ? a->pattern
                                                            : 0xcd);
        if (!buf) {
            return -EINVAL;
        }
    }
    if (k->shape == RW_AIO && aio_in_thread(s)) {
        AioJob *j = g_new0(AioJob, 1);
        *j = (AioJob){ s, k, *a, buf };
        j->a.source = NULL;           /* read already; argv goes away */
        g_mutex_lock(&aio_lock);
        aio_outstanding++;
        g_mutex_unlock(&aio_lock);
        g_thread_unref(g_thread_new("aio", aio_thread, j));
        return 0;
    }
    ret = execute(s, k, a, buf);
    /* An aio command has done its part once the request is issued. */
    return k->shape == RW_AIO ? 0 : ret;
}

static int rw_command(IoState *s, const RwKind *k, int argc, char **argv)
{
    RwArgs a = { 0 };
    int ret = parse_command(k, &a, argc, argv);

    if (ret != 0) {
        return ret < 0 ? ret : 0;
    }
    return run_request(s, k, &a);
}

/* ---- Help, built from the option letters each command takes ---- */

typedef struct RwOptionHelp {
    char letter;
    int ops;                    /* RwOp mask the text applies to */
    const char *arg;
    const char *text;
} RwOptionHelp;

static const RwOptionHelp option_help[] = {
    { 'b', RW_READ | RW_WRITE, NULL,
      "use the VM state area (strata images have none: fails)" },
    { 'c', RW_WRITE, NULL,
      "store the data compressed (whole clusters, unallocated ones)" },
    { 'C', RW_READ | RW_WRITE | RW_DISCARD, NULL,
      "print the timing on one comma-separated line" },
    { 'f', RW_WRITE, NULL,
      "Force Unit Access: on stable storage when the command ends" },
    { 'i', RW_READ | RW_WRITE, NULL,
      "issue nothing, only say an invalid request was injected" },
    { 'l', RW_READ, "len", "with -P: compare only len bytes" },
    { 'n', RW_WRITE, NULL, "with -z: fail rather than write zero buffers" },
    { 'p', RW_READ | RW_WRITE, NULL, "no effect; old scripts still pass it" },
    { 'P', RW_READ, "pattern", "fail unless every byte equals pattern" },
    { 'P', RW_WRITE, "pattern", "the byte to write (default 0xcd)" },
    { 'q', RW_READ | RW_WRITE | RW_DISCARD, NULL,
      "print nothing when it works" },
    { 's', RW_READ, "off", "with -P: start comparing off bytes in" },
    { 's', RW_WRITE, "file", "write the bytes of file, repeated to fill" },
    { 'u', RW_WRITE, NULL, "with -z: the range may be deallocated" },
    { 'v', RW_READ, NULL, "show the bytes as hex and text" },
    { 'z', RW_WRITE, NULL, "write zeroes without sending a buffer" },
};

static void rw_help(const RwKind *k)
{
    printf("\n%s\n Example: %s\n", k->summary, k->example);
    if (k->shape == RW_AIO) {
        printf("\n strata-io runs the request at once but holds its report"
               " back until\n aio_flush, close or exit.  The command itself"
               " succeeds even if the\n request then fails.\n");
    }
    printf("\n");
    for (const char *p = k->optstring; *p; p++) {
        for (size_t i = 0; i < G_N_ELEMENTS(option_help); i++) {
            const RwOptionHelp *h = &option_help[i];
            if (h->letter == *p && (h->ops & k->op)) {
                g_autofree char *lhs = g_strdup_printf(
                    "-%c%s%s", h->letter, h->arg ? " " : "",
                    h->arg ? h->arg : "");
                printf("  %-12s %s\n", lhs, h->text);
            }
        }
    }
    printf("\n");
}

/* ---- The commands ---- */

static const RwKind read_kind, readv_kind, aio_read_kind;
static const RwKind write_kind, writev_kind, aio_write_kind, discard_kind;

#define RW_WRAPPERS(k)                                                  \
    static int k##_f(IoState *s, int argc, char **argv)                 \
    {                                                                   \
        return rw_command(s, &k##_kind, argc, argv);                    \
    }                                                                   \
    static void k##_help(void)                                          \
    {                                                                   \
        rw_help(&k##_kind);                                             \
    }

RW_WRAPPERS(read)
RW_WRAPPERS(readv)
RW_WRAPPERS(aio_read)
RW_WRAPPERS(write)
RW_WRAPPERS(writev)
RW_WRAPPERS(aio_write)
RW_WRAPPERS(discard)

static const IoCmd read_cmd = {
    .name = "read", .altname = "r", .func = read_f, .help = read_help,
    .argmin = 2, .argmax = -1,
    .args = "[-abCqv] [-P pattern [-s off] [-l len]] off len",
    .oneline = "read one byte range",
};
static const IoCmd readv_cmd = {
    .name = "readv", .func = readv_f, .help = readv_help,
    .argmin = 2, .argmax = -1,
    .args = "[-Cqv] [-P pattern] off len [len..]",
    .oneline = "read a byte range given as several lengths",
};
static const IoCmd aio_read_cmd = {
    .name = "aio_read", .func = aio_read_f, .help = aio_read_help,
    .argmin = 2, .argmax = -1,
    .args = "[-Ciqv] [-P pattern] off len [len..]",
    .oneline = "read now, report at the next aio_flush",
};
static const IoCmd write_cmd = {
    .name = "write", .altname = "w", .func = write_f, .help = write_help,
    .argmin = 2, .argmax = -1, .flags = IO_CMD_WRITE,
    .args = "[-bcCfnquz] [-P pattern | -s source_file] off len",
    .oneline = "write one byte range",
};
static const IoCmd writev_cmd = {
    .name = "writev", .func = writev_f, .help = writev_help,
    .argmin = 2, .argmax = -1, .flags = IO_CMD_WRITE,
    .args = "[-Cfq] [-P pattern] off len [len..]",
    .oneline = "write a byte range given as several lengths",
};
static const IoCmd aio_write_cmd = {
    .name = "aio_write", .func = aio_write_f, .help = aio_write_help,
    .argmin = 2, .argmax = -1, .flags = IO_CMD_WRITE,
    .args = "[-Cfiquz] [-P pattern] off len [len..]",
    .oneline = "write now, report at the next aio_flush",
};
static const IoCmd discard_cmd = {
    .name = "discard", .altname = "d", .func = discard_f,
    .help = discard_help, .argmin = 2, .argmax = -1, .flags = IO_CMD_WRITE,
    .args = "[-Cq] off len",
    .oneline = "tell the image a byte range is no longer needed",
};

static const RwKind read_kind = {
    RW_READ, RW_SINGLE, "bCl:pP:qs:v", "read", &read_cmd,
    " Reads len bytes at byte offset off of the image and prints how long\n"
    " that took.  Numbers take the suffixes k, M, G, T, P and E.",
    "'read -P 0 -v 1M 16' checks 16 bytes at 1 MiB for zeroes, shows them.",
};
static const RwKind readv_kind = {
    RW_READ, RW_VECTOR, "CP:qv", "readv", &readv_cmd,
    " Reads the sum of the lengths at byte offset off, as one request.",
    "'readv 0 4k 4k' reads the first 8 KiB.",
};
static const RwKind aio_read_kind = {
    RW_READ, RW_AIO, "CP:iqv", "readv", &aio_read_cmd,
    " Reads the sum of the lengths at byte offset off, as one request.",
    "'aio_read 0 64k' then 'aio_flush'.",
};
static const RwKind write_kind = {
    RW_WRITE, RW_SINGLE, "bcCfnpP:qs:uz", "write", &write_cmd,
    " Writes len bytes at byte offset off of the image, every byte 0xcd\n"
    " unless -P, -s or -z says otherwise, and prints how long that took.",
    "'write -P 0x55 2M 64k' fills 64 KiB at 2 MiB with 0x55.",
};
static const RwKind writev_kind = {
    RW_WRITE, RW_VECTOR, "CfqP:", "writev", &writev_cmd,
    " Writes the sum of the lengths at byte offset off, as one request of\n"
    " 0xcd bytes unless -P gives another value.",
    "'writev 1M 512 512' writes 1 KiB at 1 MiB.",
};
static const RwKind aio_write_kind = {
    RW_WRITE, RW_AIO, "CfiqP:uz", "aio_write", &aio_write_cmd,
    " Writes the sum of the lengths at byte offset off, as one request of\n"
    " 0xcd bytes unless -P gives another value (-z takes one length).",
    "'aio_write -z 0 1M' then 'aio_flush'.",
};
static const RwKind discard_kind = {
    RW_DISCARD, RW_SINGLE, "Cq", "discard", &discard_cmd,
    " Discards len bytes at byte offset off: the image may drop them, and\n"
    " what reads return there afterwards depends on the format.  With\n"
    " discard=ignore the request succeeds without reaching the image.",
    "'discard 0 1M'.",
};

static int aio_flush_f(IoState *s, int argc, char **argv)
{
    io_aio_drain();
    return 0;
}

static const IoCmd aio_flush_cmd = {
    .name = "aio_flush",
    .func = aio_flush_f,
    .oneline = "print what the aio_* requests reported",
};

void io_rw_init_commands(void)
{
    static const IoCmd *const cmds[] = {
        &read_cmd, &readv_cmd, &write_cmd, &writev_cmd, &aio_read_cmd,
        &aio_write_cmd, &aio_flush_cmd, &discard_cmd,
    };

    for (size_t i = 0; i < G_N_ELEMENTS(cmds); i++) {
        io_add_command(cmds[i]);
    }
}
