/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * strata-io's command table and dispatcher (split a line, check the file,
 * the argument count and write permission, run), and the commands that
 * do no data I/O: help, flush, length, info, alloc, map, truncate,
 * reopen, the blkdebug breakpoint commands, abort, sleep and sigraise.
 * The data commands live in io-rw.c.  Names, options, messages and output
 * are qemu-io's (QEMU 7.2): the functional tests run both tools and
 * compare what they print.
 */
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "block/blkdebug.h"
#include "io-cmds.h"
#include "io-util.h"

static IoCmd *cmdtab;
static int ncmds;

static int compare_cmd(const void *a, const void *b)
{
    return strcmp(((const IoCmd *)a)->name, ((const IoCmd *)b)->name);
}

void io_add_command(const IoCmd *cmd)
{
    cmdtab = g_renew(IoCmd, cmdtab, ncmds + 1);
    cmdtab[ncmds++] = *cmd;
    qsort(cmdtab, ncmds, sizeof(*cmdtab), compare_cmd);
}

void io_command_usage(const IoCmd *cmd)
{
    printf("%s %s -- %s\n", cmd->name, cmd->args, cmd->oneline);
}

static const IoCmd *find_command(const char *name)
{
    for (int i = 0; i < ncmds; i++) {
        if (!strcmp(cmdtab[i].name, name) ||
            (cmdtab[i].altname && !strcmp(cmdtab[i].altname, name))) {
            return &cmdtab[i];
        }
    }
    return NULL;
}

/* ---- allocation status ---- */

static int is_allocated(BlockDriverState *bs, int64_t offset, int64_t bytes,
                        int64_t *pnum)
{
    int ret = bdrv_block_status(bs, offset, bytes, pnum, NULL, NULL);

    if (ret < 0) {
        return ret;
    }
    return !!(ret & BDRV_BLOCK_ALLOCATED);
}

/* ---- flush, truncate, length, info ---- */

static int flush_f(IoState *s, int argc, char **argv)
{
    return blk_flush(s->blk);
}

static const IoCmd flush_cmd = {
    .name = "flush",
    .altname = "f",
    .func = flush_f,
    .oneline = "push cached writes to stable storage",
};

static int truncate_f(IoState *s, int argc, char **argv);

static const IoCmd truncate_cmd = {
    .name = "truncate",
    .altname = "t",
    .func = truncate_f,
    .argmin = 1,
    .argmax = 3,
    .flags = IO_CMD_WRITE,
    .args = "[-m prealloc_mode] off",
    .oneline = "resize the image to off bytes",
};

static int truncate_f(IoState *s, int argc, char **argv)
{
    g_autoptr(GError) err = NULL;
    const char *mode = "off";
    int64_t offset;
    int c, ret;

    while ((c = getopt(argc, argv, "m:")) != -1) {
        switch (c) {
        case 'm':
            if (strcmp(optarg, "off") && strcmp(optarg, "metadata") &&
                strcmp(optarg, "falloc") && strcmp(optarg, "full")) {
                io_error_report("Invalid preallocation mode '%s'", optarg);
                return -EINVAL;
            }
            mode = optarg;
            break;
        default:
            io_command_usage(&truncate_cmd);
            return -EINVAL;
        }
    }
    offset = io_cvtnum(argv[optind]);
    if (offset < 0) {
        /* qemu-io names argv[1] here, whatever the option count */
        io_print_cvtnum_err(offset, argv[1]);
        return (int)offset;
    }
    if (strcmp(mode, "off")) {
        /* The block API resizes without preallocation only. */
        io_error_report("Unsupported preallocation mode '%s'", mode);
        return -ENOTSUP;
    }
    ret = blk_truncate(s->blk, offset, &err);
    if (ret < 0) {
        if (err) {
            io_error_report("%s", err->message);
        } else {
            io_error_report("Failed to resize the image: %s", strerror(-ret));
        }
        return ret;
    }
    return 0;
}

static int length_f(IoState *s, int argc, char **argv)
{
    int64_t size = blk_getlength(s->blk);
    char str[64];

    if (size < 0) {
        printf("getlength: %s\n", strerror(-size));
        return (int)size;
    }
    io_cvtstr((double)size, str, sizeof(str));
    printf("%s\n", str);
    return 0;
}

static const IoCmd length_cmd = {
    .name = "length",
    .altname = "l",
    .func = length_f,
    .oneline = "print the size of the image",
};

/*
 * Where QEMU would keep a qcow2 image's VM state: right after the guest
 * area, rounded up to what one L1 entry maps.
 */
static int64_t qcow2_vm_state_offset(int64_t size, int64_t cluster_size,
                                     bool extended_l2)
{
    int64_t per_l1 = cluster_size * (cluster_size / (extended_l2 ? 16 : 8));

    if (per_l1 <= 0 || size <= 0) {
        return 0;
    }
    return (size + per_l1 - 1) / per_l1 * per_l1;
}

static int info_f(IoState *s, int argc, char **argv)
{
    BlockDriverState *bs = blk_bs(s->blk);
    const char *fmt = bdrv_get_format_name(bs);
    BlockDriverInfo bdi;
    BlockSpecificInfo spec;
    int64_t vm_state = 0;
    char s1[64], s2[64];
    int ret;

    if (fmt) {
        printf("format name: %s\n", fmt);
        if (!bdrv_get_file(bs)) {
            /* a protocol node: QEMU prints its protocol name as well */
            printf("format name: %s\n", fmt);
        }
    }
    ret = bdrv_get_info(bs, &bdi);
    if (ret == -ENOTSUP && !bdrv_get_file(bs) &&
        g_strcmp0(fmt, "null-co")) {
        /* QEMU's file driver answers with an all-zero BlockDriverInfo
         * (its null-co driver does not answer at all) */
        ret = 0;
    }
    if (ret) {
        return ret;
    }
    bdrv_get_specific_info(bs, &spec);
    if (spec.type && !strcmp(spec.type, "qcow2")) {
        vm_state = qcow2_vm_state_offset(bdrv_getlength(bs),
                                         bdi.cluster_size, spec.extended_l2);
    }
    io_cvtstr(bdi.cluster_size, s1, sizeof(s1));
    io_cvtstr((double)vm_state, s2, sizeof(s2));
    printf("cluster size: %s\n", s1);
    printf("vm state offset: %s\n", s2);

    if (spec.type && !strcmp(spec.type, "qcow2")) {
        bool v2 = spec.compat && !strcmp(spec.compat, "0.10");

        /* The order is QEMU's (it prints a hash table of the fields). */
        printf("Format specific information:\n");
        printf("    compat: %s\n", spec.compat ? spec.compat : "1.1");
        printf("    compression type: %s\n",
               spec.compression_type ? spec.compression_type : "zlib");
        if (!v2) {
            printf("    lazy refcounts: %s\n",
                   spec.lazy_refcounts ? "true" : "false");
        }
        printf("    refcount bits: %d\n", spec.refcount_bits);
        if (spec.data_file) {
            printf("    data file: %s\n", spec.data_file);
        }
        if (spec.has_data_file_raw) {
            printf("    data file raw: %s\n",
                   spec.data_file_raw ? "true" : "false");
        }
        if (!v2) {
            printf("    corrupt: %s\n", spec.corrupt ? "true" : "false");
            printf("    extended l2: %s\n",
                   spec.extended_l2 ? "true" : "false");
        }
    }
    return 0;
}

static const IoCmd info_cmd = {
    .name = "info",
    .altname = "i",
    .func = info_f,
    .oneline = "print format details of the image",
};

/* ---- alloc, map ---- */

static int alloc_f(IoState *s, int argc, char **argv)
{
    int64_t offset, start, remaining, count, num, sum_alloc = 0;
    char str[64];
    int ret;

    start = offset = io_cvtnum(argv[1]);
    if (offset < 0) {
        io_print_cvtnum_err(offset, argv[1]);
        return (int)offset;
    }
    if (argc == 3) {
        count = io_cvtnum(argv[2]);
        if (count < 0) {
            io_print_cvtnum_err(count, argv[2]);
            return (int)count;
        }
    } else {
        count = BDRV_SECTOR_SIZE;
    }

    remaining = count;
    while (remaining) {
        ret = is_allocated(blk_bs(s->blk), offset, remaining, &num);
        if (ret < 0) {
            printf("is_allocated failed: %s\n", strerror(-ret));
            return ret;
        }
        offset += num;
        remaining -= num;
        if (ret) {
            sum_alloc += num;
        }
        if (num == 0) {
            /* end of image: report on the part that exists */
            count -= remaining;
            remaining = 0;
        }
    }
    io_cvtstr((double)start, str, sizeof(str));
    printf("%" PRId64 "/%" PRId64 " bytes allocated at offset %s\n",
           sum_alloc, count, str);
    return 0;
}

static const IoCmd alloc_cmd = {
    .name = "alloc",
    .altname = "a",
    .func = alloc_f,
    .argmin = 1,
    .argmax = 2,
    .args = "offset [count]",
    .oneline = "count allocated bytes from offset on",
};

/* Allocation status at offset and the length of the run sharing it. */
static int allocation_run(BlockDriverState *bs, int64_t offset,
                          int64_t bytes, int64_t *pnum)
{
    int64_t num;
    int first = is_allocated(bs, offset, bytes, &num);

    if (first < 0) {
        return first;
    }
    *pnum = num;
    while (bytes > 0) {
        int ret;

        offset += num;
        bytes -= num;
        ret = is_allocated(bs, offset, bytes, &num);
        if (ret != first || num == 0) {
            break;
        }
        *pnum += num;
    }
    return first;
}

static int map_f(IoState *s, int argc, char **argv)
{
    int64_t offset = 0, bytes, num;
    char s1[64], s2[64];
    int ret;

    bytes = blk_getlength(s->blk);
    if (bytes < 0) {
        io_error_report("Failed to query image length: %s", strerror(-bytes));
        return (int)bytes;
    }
    while (bytes) {
        ret = allocation_run(blk_bs(s->blk), offset, bytes, &num);
        if (ret < 0) {
            io_error_report("Failed to get allocation status: %s",
                            strerror(-ret));
            return ret;
        } else if (!num) {
            io_error_report("Unexpected end of image");
            return -EIO;
        }
        io_cvtstr((double)num, s1, sizeof(s1));
        io_cvtstr((double)offset, s2, sizeof(s2));
        printf("%s (0x%" PRIx64 ") bytes %s at offset %s (0x%" PRIx64 ")\n",
               s1, (uint64_t)num, ret ? "    allocated" : "not allocated",
               s2, (uint64_t)offset);
        offset += num;
        bytes -= num;
    }
    return 0;
}

static const IoCmd map_cmd = {
    .name = "map",
    .func = map_f,
    .argmin = 0,
    .argmax = 0,
    .args = "",
    .oneline = "list the image as allocated and unallocated runs",
};

/* ---- reopen ---- */

static void reopen_help(void)
{
    printf(
"\n"
" Applies new options to the open image without closing it.  strata can\n"
" switch between read-only and read-write and change write-through; any\n"
" other option that would change is refused.\n"
" Example: 'reopen -r' drops write access.\n"
"\n"
"  -r           make the image read-only\n"
"  -w           make the image writable\n"
"  -c mode      a cache mode, as for 'open -t'\n"
"  -o options   key=value pairs, as for 'open -o'\n"
"\n");
}

static int reopen_f(IoState *s, int argc, char **argv);

static const IoCmd reopen_cmd = {
    .name = "reopen",
    .func = reopen_f,
    .argmin = 0,
    .argmax = -1,
    .args = "[(-r|-w)] [-c cache] [-o options]",
    .oneline = "change the open options of the image",
    .help = reopen_help,
};

/* Takes a boolean option out of opts; false (with a message) if bad. */
static bool take_bool(BlockOpts *opts, const char *key, bool *val)
{
    g_autoptr(GError) err = NULL;

    if (!bdrv_opts_get_bool(opts, key, *val, val, &err)) {
        io_error_report("%s", err->message);
        return false;
    }
    g_hash_table_remove(opts, key);
    return true;
}

static GHashTable *opts_dup(GHashTable *from)
{
    GHashTable *copy = bdrv_opts_new();
    GHashTableIter it;
    gpointer k, v;

    g_hash_table_iter_init(&it, from);
    while (g_hash_table_iter_next(&it, &k, &v)) {
        bdrv_opts_set(copy, k, v);
    }
    return copy;
}

/* The node that an option key names through "file." and "backing."
 * prefixes (NULL if there is no such child); *leaf: the rest of the key. */
static BlockDriverState *option_node(BlockDriverState *bs, const char *key,
                                     const char **leaf)
{
    for (;;) {
        if (g_str_has_prefix(key, "file.")) {
            bs = bs ? bdrv_get_file(bs) : NULL;
            key += strlen("file.");
        } else if (g_str_has_prefix(key, "backing.")) {
            bs = bs ? bdrv_get_backing(bs) : NULL;
            key += strlen("backing.");
        } else {
            *leaf = key;
            return bs;
        }
    }
}

/* Options that only repeat what a node already has (its node-name, its
 * driver) are no change: qemu-io accepts them. */
static void drop_unchanged(BlockDriverState *bs, GHashTable *opts)
{
    GHashTableIter it;
    gpointer key, val;

    g_hash_table_iter_init(&it, opts);
    while (g_hash_table_iter_next(&it, &key, &val)) {
        const char *leaf;
        BlockDriverState *node = option_node(bs, key, &leaf);
        const char *have = !node ? NULL :
                           !strcmp(leaf, "node-name") ?
                           bdrv_get_node_name(node) :
                           !strcmp(leaf, "driver") ?
                           bdrv_get_format_name(node) : NULL;
        if (have && !strcmp(have, val)) {
            g_hash_table_iter_remove(&it);
        }
    }
}

/*
 * The block API can switch a node between read-only and read-write; the
 * write-through setting belongs to the device; the format driver takes
 * its runtime options (qcow2: cache sizes, lazy-refcounts, overlap-check,
 * ...).  Other options cannot change.
 */
static int reopen_f(IoState *s, int argc, char **argv)
{
    g_autoptr(GHashTable) opts = bdrv_opts_new();
    BlockDriverState *bs = blk_bs(s->blk);
    bool read_only = bdrv_is_read_only(bs);
    bool nocache = s->nocache, no_flush = s->no_flush;
    bool writethrough = !blk_enable_write_cache(s->blk);
    bool has_rw = false, has_cache = false;
    GHashTableIter it;
    gpointer key;
    const char *bad = NULL;
    int c;

    while ((c = getopt(argc, argv, "c:o:rw")) != -1) {
        switch (c) {
        case 'c':
            if (!io_parse_cache_mode(optarg, &nocache, &no_flush,
                                     &writethrough)) {
                io_error_report("Invalid cache option: %s", optarg);
                return -EINVAL;
            }
            has_cache = true;
            break;
        case 'o': {
            g_autoptr(GError) err = NULL;
            if (!bdrv_opts_parse(opts, optarg, NULL, &err)) {
                io_error_report("%s", err->message);
                return -EINVAL;
            }
            break;
        }
        case 'r':
        case 'w':
            if (has_rw) {
                io_error_report("Only one -r/-w option may be given");
                return -EINVAL;
            }
            read_only = c == 'r';
            has_rw = true;
            break;
        default:
            io_command_usage(&reopen_cmd);
            return -EINVAL;
        }
    }
    if (optind != argc) {
        io_command_usage(&reopen_cmd);
        return -EINVAL;
    }

    /* qemu-io gives up write permission when the new flags are
     * read-only, before looking at the options */
    if (has_rw ? read_only : bdrv_is_read_only(bs)) {
        s->write_perm = false;
    }
    if (bdrv_opts_get(opts, "read-only")) {
        if (has_rw) {
            io_error_report("Cannot set both -r/-w and 'read-only'");
            return -EINVAL;
        }
        if (!take_bool(opts, "read-only", &read_only)) {
            return -EINVAL;
        }
    }
    if (bdrv_opts_get(opts, "cache.direct") ||
        bdrv_opts_get(opts, "cache.no-flush")) {
        if (has_cache) {
            io_error_report("Cannot set both -c and the cache options");
            return -EINVAL;
        }
        if (!take_bool(opts, "cache.direct", &nocache) ||
            !take_bool(opts, "cache.no-flush", &no_flush)) {
            return -EINVAL;
        }
    }
    if (bdrv_opts_get(opts, "auto-read-only")) {
        /* Only says whether a read-write open may fall back to read-only;
         * validated, nothing to reopen. */
        bool auto_ro = false;
        if (!take_bool(opts, "auto-read-only", &auto_ro)) {
            return -EINVAL;
        }
    }
    /* The driver validates its options first (taking them out of opts),
     * then what is left cannot change; only then do they apply. */
    g_autoptr(GHashTable) drv_opts = opts_dup(opts);
    {
        g_autoptr(GError) err = NULL;
        if (!bdrv_reopen_options(bs, opts, false, &err)) {
            io_error_report("%s", err->message);
            return -EINVAL;
        }
    }
    drop_unchanged(bs, opts);
    g_hash_table_iter_init(&it, opts);
    while (g_hash_table_iter_next(&it, &key, NULL)) {
        if (!bad || strcmp(key, bad) < 0) {
            bad = key;
        }
    }
    if (bad) {
        /* named as its own node knows it, like QEMU */
        option_node(bs, bad, &bad);
    }
    if (!bad && nocache != s->nocache) {
        bad = "cache.direct";
    }
    if (!bad && no_flush != s->no_flush) {
        bad = "cache.no-flush";
    }
    if (bad) {
        io_error_report("Cannot change the option '%s'", bad);
        return -EINVAL;
    }

    if (read_only && s->write_perm) {
        io_error_report("Read-only block node '%s' cannot support read-write "
                        "users", bdrv_get_node_name(bs));
        return -EINVAL;
    }
    {
        g_autoptr(GError) err = NULL;
        if (!bdrv_reopen_options(bs, drv_opts, true, &err)) {
            io_error_report("%s", err->message);
            return -EINVAL;
        }
    }
    if (read_only != bdrv_is_read_only(bs)) {
        g_autoptr(GError) err = NULL;
        if (!bdrv_reopen_set_read_only(bs, read_only, &err)) {
            io_error_report("%s", err ? err->message : "Could not reopen");
            return -EINVAL;
        }
    }
    blk_set_enable_write_cache(s->blk, !writethrough);
    return 0;
}

/* ---- blkdebug breakpoints (block/blkdebug.c holds the requests) ---- */

static int break_f(IoState *s, int argc, char **argv)
{
    int ret = blkdebug_break(blk_bs(s->blk), argv[1], argv[2]);

    if (ret < 0) {
        printf("Could not set breakpoint: %s\n", strerror(-ret));
    }
    return ret;
}

static int remove_break_f(IoState *s, int argc, char **argv)
{
    int ret = blkdebug_remove_break(blk_bs(s->blk), argv[1]);

    if (ret < 0) {
        printf("Could not remove breakpoint %s: %s\n", argv[1],
               strerror(-ret));
    }
    return ret;
}

static int resume_f(IoState *s, int argc, char **argv)
{
    int ret = blkdebug_resume(blk_bs(s->blk), argv[1]);

    if (ret < 0) {
        printf("Could not resume request: %s\n", strerror(-ret));
        return ret;
    }
    io_aio_wait_resumed();
    return ret;
}

/* Without a blkdebug node qemu-io would wait forever; saying so is more
 * useful. */
static int wait_break_f(IoState *s, int argc, char **argv)
{
    int ret = blkdebug_wait_suspended(blk_bs(s->blk), argv[1]);

    if (ret < 0) {
        printf("Could not wait for request: %s\n", strerror(-ret));
    }
    return ret;
}

static const IoCmd break_cmd = {
    .name = "break",
    .func = break_f,
    .argmin = 2,
    .argmax = 2,
    .args = "event tag",
    .oneline = "stop the next request that reaches event, as tag",
};

static const IoCmd remove_break_cmd = {
    .name = "remove_break",
    .func = remove_break_f,
    .argmin = 1,
    .argmax = 1,
    .args = "tag",
    .oneline = "forget the breakpoint called tag",
};

static const IoCmd resume_cmd = {
    .name = "resume",
    .func = resume_f,
    .argmin = 1,
    .argmax = 1,
    .args = "tag",
    .oneline = "let the request called tag go on",
};

static const IoCmd wait_break_cmd = {
    .name = "wait_break",
    .func = wait_break_f,
    .argmin = 1,
    .argmax = 1,
    .args = "tag",
    .oneline = "block until a request stops at a breakpoint",
};

/* ---- abort, sigraise, sleep ---- */

static int abort_f(IoState *s, int argc, char **argv)
{
    abort();
}

static const IoCmd abort_cmd = {
    .name = "abort",
    .func = abort_f,
    .flags = IO_CMD_NOFILE_OK,
    .oneline = "crash on purpose with abort(3)",
};

static void sigraise_help(void)
{
    printf(
"\n"
" Sends signal number SIGNAL to strata-io, with output flushed first, so\n"
" a test can see how a process killed at this point leaves the image.\n"
" Example: 'sigraise %i' (SIGTERM).\n"
"\n", SIGTERM);
}

static int sigraise_f(IoState *s, int argc, char **argv)
{
    int64_t sig = io_cvtnum(argv[1]);

    if (sig < 0) {
        io_print_cvtnum_err(sig, argv[1]);
        return (int)sig;
    } else if (sig > NSIG) {
        printf("signal argument '%s' is too large to be a valid signal\n",
               argv[1]);
        return -EINVAL;
    }
    /* raise() may end the process without flushing stdio */
    fflush(stdout);
    fflush(stderr);
    raise((int)sig);
    return 0;
}

static const IoCmd sigraise_cmd = {
    .name = "sigraise",
    .func = sigraise_f,
    .argmin = 1,
    .argmax = 1,
    .flags = IO_CMD_NOFILE_OK,
    .args = "signal",
    .oneline = "send a signal to strata-io itself",
    .help = sigraise_help,
};

static int sleep_f(IoState *s, int argc, char **argv)
{
    char *end;
    long ms = strtol(argv[1], &end, 0);

    if (ms < 0 || *end != '\0') {
        printf("%s is not a valid number\n", argv[1]);
        return -EINVAL;
    }
    g_usleep((gulong)ms * 1000);
    return 0;
}

static const IoCmd sleep_cmd = {
    .name = "sleep",
    .func = sleep_f,
    .argmin = 1,
    .argmax = 1,
    .flags = IO_CMD_NOFILE_OK,
    .oneline = "pause for a number of milliseconds",
};

/* ---- help ---- */

static void help_oneline(const char *name, const IoCmd *cmd)
{
    printf("%s ", name);
    if (cmd->args) {
        printf("%s ", cmd->args);
    }
    printf("-- %s\n", cmd->oneline);
}

static int help_f(IoState *s, int argc, char **argv)
{
    const IoCmd *cmd;

    if (argc < 2) {
        for (int i = 0; i < ncmds; i++) {
            help_oneline(cmdtab[i].name, &cmdtab[i]);
        }
        printf("\nType 'help NAME' to read about one command.\n");
        return 0;
    }
    cmd = find_command(argv[1]);
    if (!cmd) {
        printf("command %s not found\n", argv[1]);
        return -EINVAL;
    }
    help_oneline(argv[1], cmd);
    if (cmd->help) {
        cmd->help();
    }
    return 0;
}

static const IoCmd help_cmd = {
    .name = "help",
    .altname = "?",
    .func = help_f,
    .argmin = 0,
    .argmax = 1,
    .flags = IO_CMD_GLOBAL,
    .args = "[command]",
    .oneline = "list the commands, or describe one",
};

/* ---- dispatch ---- */

static int run(IoState *s, const IoCmd *cmd, int argc, char **argv)
{
    if (!(cmd->flags & (IO_CMD_GLOBAL | IO_CMD_NOFILE_OK)) && !s->blk) {
        fprintf(stderr, "no file open, try 'help open'\n");
        return -EINVAL;
    }
    if (argc - 1 < cmd->argmin ||
        (cmd->argmax != -1 && argc - 1 > cmd->argmax)) {
        if (cmd->argmax == -1) {
            fprintf(stderr, "bad argument count %d to %s, expected at least "
                    "%d arguments\n", argc - 1, argv[0], cmd->argmin);
        } else if (cmd->argmin == cmd->argmax) {
            fprintf(stderr, "bad argument count %d to %s, expected %d "
                    "arguments\n", argc - 1, argv[0], cmd->argmin);
        } else {
            fprintf(stderr, "bad argument count %d to %s, expected between "
                    "%d and %d arguments\n", argc - 1, argv[0], cmd->argmin,
                    cmd->argmax);
        }
        return -EINVAL;
    }
    /* qemu-io asks for write permission here, before parsing anything */
    if ((cmd->flags & IO_CMD_WRITE) && s->blk) {
        if (bdrv_is_read_only(blk_bs(s->blk))) {
            io_error_report("Block node is read-only");
            return -EPERM;
        }
        s->write_perm = true;
    }
    optind = 0; /* full getopt reset, as qemu-io does */
    return cmd->func(s, argc, argv);
}

int io_run_command(IoState *s, const char *line)
{
    g_autofree char *input = g_strdup(line);
    g_autoptr(GPtrArray) args = g_ptr_array_new();
    const IoCmd *cmd;
    char *p = input;
    int ret;

    /* Words are separated by single spaces; runs of them are skipped. */
    for (char *word; (word = strsep(&p, " ")) != NULL;) {
        if (*word) {
            g_ptr_array_add(args, word);
        }
    }
    if (args->len == 0) {
        return 0;
    }
    g_ptr_array_add(args, NULL);
    cmd = find_command(g_ptr_array_index(args, 0));
    if (!cmd) {
        fprintf(stderr, "command \"%s\" not found\n",
                (char *)g_ptr_array_index(args, 0));
        return -EINVAL;
    }
    ret = run(s, cmd, (int)args->len - 1, (char **)args->pdata);
    return ret;
}

void io_init_commands(void)
{
    static const IoCmd *const builtins[] = {
        &help_cmd, &flush_cmd, &truncate_cmd, &length_cmd, &info_cmd,
        &alloc_cmd, &map_cmd, &reopen_cmd, &break_cmd, &remove_break_cmd, &resume_cmd,
        &wait_break_cmd, &abort_cmd, &sleep_cmd, &sigraise_cmd,
    };

    for (size_t i = 0; i < G_N_ELEMENTS(builtins); i++) {
        io_add_command(builtins[i]);
    }
    io_rw_init_commands();
}
