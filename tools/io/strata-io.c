/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * strata-io: a disk exerciser, command-line compatible with qemu-io.
 * This file holds main(): option parsing, opening the image, the open /
 * close / quit commands and the loop that runs the -c commands or reads
 * commands from stdin.  The commands themselves are in io-cmds.c.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "io-cmds.h"
#include "block/blkdebug.h"
#include "block/log.h"
#include "io-util.h"
#include "block/crypto.h"
#include "block/objects.h"

#ifndef STRATA_VERSION
#define STRATA_VERSION "unknown"
#endif

static IoState state;

/* The cache and discard settings of the next open. */
typedef struct OpenMode {
    bool read_only;
    bool nocache;
    bool no_flush;
    bool writethrough;
    bool discard_ignore;
    bool force_share;       /* -U */
    bool aio_native;        /* -k, -i native */
    bool snapshot;          /* -s: writes go to a temporary overlay */
    bool copy_on_read;      /* -C */
} OpenMode;

/*
 * Snapshot mode (-s), as qemu-io's: the image is only read; a temporary
 * qcow2 overlay over it, created under $TMPDIR (QEMU's /var/tmp), takes
 * the writes and disappears with the process.  Returns the overlay's
 * open node, or NULL with errp set.  base is consumed.
 */
static BlockDriverState *open_temp_overlay(BlockDriverState *base, int flags,
                                           GError **errp)
{
    g_autofree char *tmp = NULL;
    g_autofree char *abs = NULL;
    g_autofree char *size = NULL;
    g_autoptr(GHashTable) copts = bdrv_opts_new();
    BlockOpts *oopts;
    BlockDriverState *overlay;
    int64_t len = bdrv_getlength(base);
    int fd;

    if (len < 0) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_IO,
                    "Could not get image size: %s", g_strerror((int)-len));
        bdrv_unref(base);
        return NULL;
    }
    abs = g_canonicalize_filename(bdrv_get_filename(base), NULL);
    size = g_strdup_printf("%" G_GINT64_FORMAT, len);
    bdrv_opts_set(copts, "size", size);
    bdrv_opts_set(copts, "backing_file", abs);
    bdrv_opts_set(copts, "backing_fmt", bdrv_get_format_name(base));
    /* Only its name and format were needed: the overlay opens it again,
     * read-only, as its backing file. */
    bdrv_unref(base);
    fd = g_file_open_tmp("strata-io-snapshot-XXXXXX", &tmp, errp);
    if (fd < 0) {
        return NULL;
    }
    close(fd);
    if (!bdrv_create("qcow2", tmp, copts, errp)) {
        unlink(tmp);
        return NULL;
    }
    oopts = bdrv_opts_new();
    bdrv_opts_set(oopts, "driver", "qcow2");
    overlay = bdrv_open(tmp, oopts, flags | BDRV_O_RDWR, errp);
    /* Open (or not), the name is no longer needed. */
    unlink(tmp);
    return overlay;
}

/*
 * Opens name (or, with name NULL, what opts say) as the current image,
 * with m's cache and discard settings.  opts (may be NULL) is consumed.
 * Returns 0, or 1 after printing why the open failed.
 */
static int open_image(const char *name, BlockOpts *opts, const OpenMode *m)
{
    g_autoptr(GError) err = NULL;
    g_autofree char *fs_opt = NULL;
    g_autofree char *file_name = NULL;
    const char *open_name = name;
    BlockDriverState *bs;
    bool read_only, force_share;
    int flags = 0;

    if (state.blk) {
        io_error_report("file open already, try 'help close'");
        if (opts) {
            g_hash_table_unref(opts);
        }
        return 1;
    }
    if (!opts) {
        opts = bdrv_opts_new();
    }

    /*
     * force-share (-U): a read-only open that ignores other users' image
     * locks and refuses nothing to them.  Checked here as qemu-io does, so
     * the messages name the device like qemu-io's.
     */
    fs_opt = bdrv_opts_take(opts, "force-share");
    if (m->force_share && fs_opt && strcmp(fs_opt, "on")) {
        io_error_report("-U conflicts with image options");
        g_hash_table_unref(opts);
        return 1;
    }
    force_share = m->force_share || !g_strcmp0(fs_opt, "on");
    if (!bdrv_opts_get_bool(opts, "read-only", m->read_only, &read_only,
                            NULL)) {
        read_only = m->read_only;
    }
    if (m->copy_on_read && read_only) {
        io_error_report("can't open%s%s: Can't use copy-on-read on read-only "
                        "device", name ? " device " : "", name ? name : "");
        g_hash_table_unref(opts);
        return 1;
    }
    if (force_share && !read_only) {
        io_error_report("can't open%s%s: force-share=on can only be used "
                        "with read-only images", name ? " device " : "",
                        name ? name : "");
        g_hash_table_unref(opts);
        return 1;
    }

    if (m->aio_native && !m->nocache) {
        bool direct = false;
        if (!bdrv_opts_get_bool(opts, "cache.direct", false, &direct, NULL) ||
            !direct) {
            io_error_report("can't open%s%s: aio=native was specified, but "
                            "it requires cache.direct=on, which was not "
                            "specified.", name ? " device " : "",
                            name ? name : "");
            g_hash_table_unref(opts);
            return 1;
        }
    }

    /* An image given only as file.filename: pass the name to bdrv_open
     * as well, so that the node knows it from the start. */
    if (!name && bdrv_opts_get(opts, "file.filename") &&
        !bdrv_opts_get(opts, "filename")) {
        file_name = bdrv_opts_take(opts, "file.filename");
        open_name = file_name;
    }

    if (!m->read_only) {
        flags |= BDRV_O_RDWR;
    }
    if (m->nocache) {
        flags |= BDRV_O_NOCACHE;
    }
    if (m->no_flush) {
        flags |= BDRV_O_NO_FLUSH;
    }
    if (force_share) {
        flags |= BDRV_O_FORCE_SHARE;
    }
    if (m->snapshot) {
        flags &= ~BDRV_O_RDWR;
    }
    bs = bdrv_open(open_name, opts, flags, &err);
    if (bs && m->snapshot) {
        bs = open_temp_overlay(bs, flags, &err);
    }
    if (!bs) {
        io_error_report("can't open%s%s: %s", name ? " device " : "",
                        name ? name : "", err ? err->message : "unknown error");
        return 1;
    }
    if (!m->read_only && bdrv_is_read_only(bs)) {
        /* qemu-io wants write access to what it opened read-write */
        io_error_report("can't open%s%s: Block node is read-only",
                        name ? " device " : "", name ? name : "");
        bdrv_unref(bs);
        return 1;
    }
    /* A probed raw image's warning comes from the library (raw_open). */
    state.write_perm = !bdrv_is_read_only(bs);
    /* The device owns write-through and discard=ignore. */
    state.blk = blk_new(NULL, bs);
    bdrv_unref(bs);
    blk_set_enable_write_cache(state.blk, !m->writethrough);
    blk_set_ignore_discard(state.blk, m->discard_ignore);
    blk_set_copy_on_read(state.blk, m->copy_on_read);
    state.nocache = m->nocache;
    state.no_flush = m->no_flush;
    return 0;
}

static void close_image(void)
{
    io_aio_drain();
    if (state.blk) {
        blk_flush(state.blk);
        g_clear_pointer(&state.blk, blk_unref);
    }
}

static int close_f(IoState *s, int argc, char **argv)
{
    close_image();
    return 0;
}

static const IoCmd close_cmd = {
    .name = "close",
    .altname = "c",
    .func = close_f,
    .oneline = "close the image (pending aio output is printed)",
};

static void open_help(void)
{
    printf(
"\n"
" Makes path the image the other commands work on (one at a time: 'close'\n"
" the current one first).  With --image-opts, path is an option string.\n"
" Example: 'open -r -o driver=qcow2 disk.img' opens disk.img without\n"
" write access.\n"
"\n"
"  -r           no write access\n"
"  -s           temporary overlay (not in strata: refused)\n"
"  -C           copy-on-read (not in strata: refused)\n"
"  -n           bypass the host page cache (same as -t none)\n"
"  -U           allow others to write meanwhile (only with -r)\n"
"  -k           same as -i native\n"
"  -i mode      threads, native or io_uring (all run the same way here)\n"
"  -t mode      none, writeback, writethrough, directsync or unsafe\n"
"  -d mode      ignore or unmap: what discard requests do\n"
"  -o options   key=value pairs for the driver, comma separated\n"
"\n");
}

static int open_f(IoState *s, int argc, char **argv);

static const IoCmd open_cmd = {
    .name = "open",
    .altname = "o",
    .func = open_f,
    .argmin = 1,
    .argmax = -1,
    .flags = IO_CMD_NOFILE_OK,
    .args = "[-rsCnkU] [-t cache] [-d discard] [-o options] [path]",
    .oneline = "open an image",
    .help = open_help,
};

typedef enum {
    MODE_OPT_OTHER,     /* not an open-mode option */
    MODE_OPT_OK,
    MODE_OPT_BAD,       /* invalid argument, already reported */
} ModeOpt;

/* The options the command line and the `open` command share, as qemu-io
 * takes them in both places: getopt's `c` and `arg` into *m. */
static ModeOpt parse_mode_opt(int c, const char *arg, OpenMode *m)
{
    switch (c) {
    case 's':
        m->snapshot = true;
        break;
    case 'C':
        m->copy_on_read = true;
        break;
    case 'n':
        m->nocache = true;
        m->writethrough = false;
        break;
    case 'r':
        m->read_only = true;
        break;
    case 'k':
        m->aio_native = true;
        break;
    case 't':
        if (!io_parse_cache_mode(arg, &m->nocache, &m->no_flush,
                                 &m->writethrough)) {
            io_error_report("Invalid cache option: %s", arg);
            return MODE_OPT_BAD;
        }
        break;
    case 'd':
        if (!io_parse_discard_mode(arg, &m->discard_ignore)) {
            io_error_report("Invalid discard option: %s", arg);
            return MODE_OPT_BAD;
        }
        break;
    case 'i':
        if (!io_parse_aio_mode(arg)) {
            io_error_report("Invalid aio option: %s", arg);
            return MODE_OPT_BAD;
        }
        m->aio_native = !strcmp(arg, "native");
        break;
    case 'U':
        m->force_share = true;
        break;
    default:
        return MODE_OPT_OTHER;
    }
    return MODE_OPT_OK;
}

static int open_f(IoState *s, int argc, char **argv)
{
    OpenMode m = { .writethrough = true };
    g_autoptr(GHashTable) opts = bdrv_opts_new();
    g_autoptr(GError) err = NULL;
    bool have_opts = false;
    int c;

    while ((c = getopt(argc, argv, "snCro:ki:t:d:U")) != -1) {
        ModeOpt r = parse_mode_opt(c, optarg, &m);

        if (r == MODE_OPT_BAD) {
            return -EINVAL;
        }
        if (r == MODE_OPT_OK) {
            continue;
        }
        switch (c) {
        case 'o':
            if (s->image_opts) {
                printf("--image-opts and 'open -o' are mutually exclusive\n");
                return -EINVAL;
            }
            if (!bdrv_opts_parse(opts, optarg, NULL, &err)) {
                io_error_report("%s", err->message);
                return -EINVAL;
            }
            have_opts = true;
            break;
        default:
            io_command_usage(&open_cmd);
            return -EINVAL;
        }
    }
    if (s->image_opts && optind == argc - 1) {
        if (!bdrv_opts_parse(opts, argv[optind], NULL, &err)) {
            io_error_report("%s", err->message);
            return -EINVAL;
        }
        have_opts = true;
        optind++;
    }
    if (optind == argc - 1) {
        return open_image(argv[optind],
                          have_opts ? g_steal_pointer(&opts) : NULL, &m)
               ? -EINVAL : 0;
    } else if (optind == argc) {
        return open_image(NULL, have_opts ? g_steal_pointer(&opts) : NULL, &m)
               ? -EINVAL : 0;
    }
    io_command_usage(&open_cmd);
    return -EINVAL;
}

static int quit_f(IoState *s, int argc, char **argv)
{
    s->quit = true;
    return 0;
}

static const IoCmd quit_cmd = {
    .name = "quit",
    .altname = "q",
    .func = quit_f,
    .argmin = -1,
    .argmax = -1,
    .flags = IO_CMD_GLOBAL,
    .oneline = "leave strata-io",
};

static void usage(const char *name)
{
    printf(
"Usage: %s [OPTIONS]... [-c STRING]... [file]\n"
"Runs commands against one disk image; the commands and what they print\n"
"are those of qemu-io.\n"
"\n"
"  --image-opts         file is a key=value option string, not a name\n"
"  --object DEF         a secret (an encrypted image's key) or the TLS\n"
"                       credentials of an NBD connection\n"
"                       (tls-creds-x509 / tls-creds-psk, then tls-creds=)\n"
"  -c, --cmd STRING     a command to run; repeat for more (without any,\n"
"                       commands come from standard input)\n"
"  -f, --format FMT     the image format (default: guessed from the file)\n"
"  -r, --read-only      no write access\n"
"  -n, --nocache        bypass the host page cache (same as -t none)\n"
"  -m, --misalign       hand the drivers buffers that are not aligned\n"
"  -k, --native-aio     same as -i native\n"
"  -i, --aio=MODE       threads, native or io_uring; all run the same way\n"
"                       here, and native needs -t none\n"
"  -t, --cache=MODE     none, writeback, writethrough, directsync or unsafe\n"
"  -d, --discard=MODE   ignore or unmap: what discard requests do\n"
"  -T, --trace ...      accepted and ignored (strata has no trace events)\n"
"  -U, --force-share    allow others to write meanwhile (only with -r)\n"
"  -h, --help           print this text\n"
"  -V, --version        print the version\n"
"\n"
"'%s -c help' lists the commands.\n",
           name, name);
}

/* One line from stdin without its newline, NULL at end of input. */
static char *fetch_line(void)
{
    g_autoptr(GString) line = g_string_new(NULL);
    int ch;

    while ((ch = getchar()) != EOF && ch != '\n') {
        g_string_append_c(line, (char)ch);
    }
    if (ch == EOF && line->len == 0) {
        return NULL;
    }
    return g_string_free(g_steal_pointer(&line), FALSE);
}

static int command_loop(char **cmds, int ncmds)
{
    int last_error = 0;

    for (int i = 0; !state.quit && i < ncmds; i++) {
        int ret = io_run_command(&state, cmds[i]);
        if (ret < 0) {
            last_error = ret;
        }
    }
    if (ncmds) {
        return last_error;
    }

    while (!state.quit) {
        g_autofree char *input = NULL;
        int ret;

        printf("%s> ", g_get_prgname());
        fflush(stdout);
        input = fetch_line();
        if (!input) {
            if (isatty(STDIN_FILENO)) {
                printf("\n");
            }
            break;
        }
        ret = io_run_command(&state, input);
        if (ret < 0) {
            last_error = ret;
        }
    }
    return last_error;
}

enum {
    OPTION_OBJECT = 256,
    OPTION_IMAGE_OPTS = 257,
};

/* qemu-io's lines for a request held at a blkdebug breakpoint (printed by
 * the request's thread, on stdout like the reports). */
static void print_breakpoint(const char *tag, bool suspended)
{
    printf("blkdebug: %s request '%s'\n",
           suspended ? "Suspended" : "Resuming", tag);
    io_aio_breakpoint_event(suspended);
}

int main(int argc, char **argv)
{
    static const struct option lopt[] = {
        { "help", no_argument, NULL, 'h' },
        { "version", no_argument, NULL, 'V' },
        { "cmd", required_argument, NULL, 'c' },
        { "format", required_argument, NULL, 'f' },
        { "read-only", no_argument, NULL, 'r' },
        { "snapshot", no_argument, NULL, 's' },
        { "nocache", no_argument, NULL, 'n' },
        { "copy-on-read", no_argument, NULL, 'C' },
        { "misalign", no_argument, NULL, 'm' },
        { "native-aio", no_argument, NULL, 'k' },
        { "aio", required_argument, NULL, 'i' },
        { "discard", required_argument, NULL, 'd' },
        { "cache", required_argument, NULL, 't' },
        { "trace", required_argument, NULL, 'T' },
        { "object", required_argument, NULL, OPTION_OBJECT },
        { "image-opts", no_argument, NULL, OPTION_IMAGE_OPTS },
        { "force-share", no_argument, NULL, 'U' },
        { NULL, 0, NULL, 0 },
    };
    OpenMode m = { .writethrough = true };
    g_autoptr(GPtrArray) cmds = g_ptr_array_new();
    g_autofree char *prgname = g_path_get_basename(argv[0]);
    const char *format = NULL;
    int c, ret;

    strata_log_set_sink(strata_log_to_stderr, NULL);
    blkdebug_set_suspend_notify(print_breakpoint);

    g_set_prgname(prgname);

    while ((c = getopt_long(argc, argv, "hVc:d:f:rsnCmki:t:T:U", lopt,
                            NULL)) != -1) {
        ModeOpt r = parse_mode_opt(c, optarg, &m);

        if (r == MODE_OPT_BAD) {
            exit(1);
        }
        if (r == MODE_OPT_OK) {
            continue;
        }
        switch (c) {
        case 'f':
            format = optarg;
            break;
        case 'c':
            g_ptr_array_add(cmds, optarg);
            break;
        case 'm':
            io_misalign = true;
            break;
        case 'T':
            break; /* no trace events in strata */
        case 'V':
            printf("%s version %s\n", g_get_prgname(), STRATA_VERSION);
            exit(0);
        case 'h':
            usage(g_get_prgname());
            exit(0);
        case OPTION_OBJECT: {
            g_autoptr(GError) err = NULL;
            if (!bdrv_object_add(optarg, &err)) {
                io_error_report("%s", err->message);
                exit(1);
            }
            break;
        }
        case OPTION_IMAGE_OPTS:
            state.image_opts = true;
            break;
        default:
            usage(g_get_prgname());
            exit(1);
        }
    }
    if (argc - optind > 1) {
        usage(g_get_prgname());
        exit(1);
    }
    if (format && state.image_opts) {
        io_error_report("--image-opts and -f are mutually exclusive");
        exit(1);
    }

    io_init_commands();
    io_add_command(&quit_cmd);
    io_add_command(&open_cmd);
    io_add_command(&close_cmd);

    if (argc - optind == 1) {
        BlockOpts *opts = NULL;

        if (state.image_opts) {
            g_autoptr(GError) err = NULL;

            opts = bdrv_opts_new();
            if (!bdrv_opts_parse(opts, argv[optind], NULL, &err)) {
                io_error_report("%s", err->message);
                g_hash_table_unref(opts);
                exit(1);
            }
            if (open_image(NULL, opts, &m)) {
                exit(1);
            }
        } else {
            if (format) {
                opts = bdrv_opts_new();
                bdrv_opts_set(opts, "driver", format);
            }
            if (open_image(argv[optind], opts, &m)) {
                exit(1);
            }
        }
    }

    ret = command_loop((char **)cmds->pdata, (int)cmds->len);
    close_image();
    return ret < 0 ? 1 : 0;
}
