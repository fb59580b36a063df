/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * strata-img: a qemu-img compatible image tool.  main() parses the global
 * options, then hands the rest of the command line to the subcommand;
 * this file also holds the usage text.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "img-common.h"
#include "block/log.h"
#include "img-snapshot.h"

#ifndef STRATA_VERSION
#define STRATA_VERSION "unknown"
#endif

typedef struct {
    const char *name;
    int (*handler)(int argc, char **argv);
    const char *syntax;
} ImgCommand;

/* Keep alphabetical, as qemu-img's usage text is. */
static const ImgCommand img_cmds[] = {
    { "amend", img_amend,
      "amend [--object objectdef] [--image-opts] [-p] [-q] [-f fmt] "
      "[-t cache] [--force] -o options filename" },
    { "bench", img_bench,
      "bench [-c count] [-d depth] [-f fmt] [--flush-interval=flush_interval] "
      "[-i aio] [-n] [--no-drain] [-o offset] [--pattern=pattern] [-q] "
      "[-s buffer_size] [-S step_size] [-t cache] [-w] [-U] filename" },
    { "bitmap", img_bitmap,
      "bitmap (--merge SOURCE | --add | --remove | --clear | --enable | "
      "--disable)... [-b source_file [-F source_fmt]] [-g granularity] "
      "[--object objectdef] [--image-opts | -f fmt] filename bitmap" },
    { "check", img_check,
      "check [--image-opts] [-q] [-f fmt] [--output=ofmt] [-r [leaks | all]] "
      "[-T src_cache] [-U] filename" },
    { "commit", img_commit,
      "commit [--object objectdef] [--image-opts] [-q] [-f fmt] [-t cache] "
      "[-b base] [-r rate_limit] [-d] [-p] filename" },
    { "compare", img_compare,
      "compare [--image-opts] [-f fmt] [-F fmt] [-T src_cache] [-p] [-q] "
      "[-s] [-U] filename1 filename2" },
    { "convert", img_convert,
      "convert [--image-opts] [--target-image-opts] [--target-is-zero] [-U] "
      "[-p] [-q] [-n] [-f fmt] [-t cache] [-T src_cache] [-O output_fmt] "
      "[-B backing_file [-F backing_fmt]] [-o options] [-S sparse_size] "
      "[-m num_coroutines] [-W] filename [filename2 [...]] output_filename" },
    { "create", img_create,
      "create [-q] [-f fmt] [-b backing_file [-F backing_fmt]] [-u] "
      "[-o options] filename [size]" },
    { "dd", img_dd,
      "dd [--image-opts] [-U] [-f fmt] [-O output_fmt] [bs=block_size] "
      "[count=blocks] [skip=blocks] if=input of=output" },
    { "info", img_info,
      "info [--image-opts] [-f fmt] [--output=ofmt] [--backing-chain] [-U] "
      "filename" },
    { "map", img_map,
      "map [--object objectdef] [--image-opts] [-f fmt] "
      "[--start-offset=offset] [--max-length=len] [--output=ofmt] [-U] "
      "filename" },
    { "measure", img_measure,
      "measure [--output=ofmt] [-O output_fmt] [-o options] [--size N | "
      "[--object objectdef] [--image-opts] [-f fmt] [-l snapshot_param] "
      "filename]" },
    { "rebase", img_rebase,
      "rebase [--object objectdef] [--image-opts] [-U] [-q] [-f fmt] "
      "[-t cache] [-T src_cache] [-p] [-u] -b backing_file [-F backing_fmt] "
      "filename" },
    { "resize", img_resize,
      "resize [--object objectdef] [--image-opts] [-f fmt] "
      "[--preallocation=prealloc] [-q] [--shrink] filename [+ | -]size" },
    { "snapshot", img_snapshot,
      "snapshot [--object objectdef] [--image-opts] [-U] [-q] "
      "[-l | -a snapshot | -c snapshot | -d snapshot] filename" },
    { NULL, NULL, NULL },
};

static int cmp_strings(gconstpointer a, gconstpointer b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static void print_version(void)
{
    printf("strata-img version " STRATA_VERSION "\n"
           "Copyright (c) the strata authors\n");
}

void img_help(void)
{
    const char *const *formats = bdrv_format_names();
    g_autoptr(GPtrArray) sorted = g_ptr_array_new();

    print_version();
    printf("usage: strata-img [standard options] command [command options]\n"
           "strata disk image utility\n"
           "\n"
           "    '-h', '--help'       display this help and exit\n"
           "    '-V', '--version'    output version information and exit\n"
           "\n"
           "Command syntax:\n");
    for (const ImgCommand *cmd = img_cmds; cmd->name; cmd++) {
        printf("  %s\n", cmd->syntax);
    }
    printf("\n"
"Command parameters:\n"
"  'filename' is a disk image filename\n"
"  'fmt' is the disk image format. It is guessed automatically in most cases\n"
"  'cache' is the cache mode used to write the output disk image, the valid\n"
"    options are: 'none', 'writeback' (default, except for convert), 'writethrough',\n"
"    'directsync' and 'unsafe' (default for convert)\n"
"  'src_cache' is the cache mode used to read input disk images, the valid\n"
"    options are the same as for the 'cache' option\n"
"  'size' is the disk image size in bytes. Optional suffixes\n"
"    'k' or 'K' (kilobyte, 1024), 'M' (megabyte, 1024k), 'G' (gigabyte, 1024M),\n"
"    'T' (terabyte, 1024G), 'P' (petabyte, 1024T) and 'E' (exabyte, 1024P)  are\n"
"    supported. 'b' is ignored.\n"
"  'output_filename' is the destination disk image filename\n"
"  'output_fmt' is the destination format\n"
"  'options' is a comma separated list of format specific options in a\n"
"    name=value format. Use -o help for an overview of the options supported by\n"
"    the used format\n"
"  '-u' allows unsafe backing chains. For image creation, allow creating\n"
"       without attempting to open the backing file.\n"
"  '-h' with or without a command shows this help and lists the supported formats\n"
"  '-p' show progress of command (only certain commands)\n"
"  '-q' use Quiet mode - do not print any output (except errors)\n"
"  '-S' indicates the consecutive number of bytes (defaults to 4k) that must\n"
"       contain only zeros for strata-img to create a sparse image during\n"
"       conversion. If the number of bytes is 0, the source will not be scanned for\n"
"       unallocated or zero sectors, and the destination image will always be\n"
"       fully allocated\n"
"  '--output' takes the format in which the output must be done (human or json)\n"
"  '-n' skips the target volume creation (useful if the volume is created\n"
"       prior to running strata-img)\n"
"\n"
"Parameters to check subcommand:\n"
"  '-r' tries to repair any inconsistencies that are found during the check.\n"
"       '-r leaks' repairs only cluster leaks, whereas '-r all' fixes all\n"
"       kinds of errors, with a higher risk of choosing the wrong fix or\n"
"       hiding corruption that has already occurred.\n"
"\n"
"Parameters to convert subcommand:\n"
"  '-m' specifies how many requests work in parallel during the convert\n"
"       process (defaults to 8)\n"
"  '-W' allow to write to the target out of order rather than sequential\n"
"\n"
"Parameters to compare subcommand:\n"
"  '-f' first image format\n"
"  '-F' second image format\n"
"  '-s' run in Strict mode - fail on different image size or sector allocation\n"
"\n"
"Supported formats:");
    for (int i = 0; formats[i]; i++) {
        g_ptr_array_add(sorted, (gpointer)formats[i]);
    }
    g_ptr_array_sort(sorted, cmp_strings);
    for (guint i = 0; i < sorted->len; i++) {
        printf(" %s", (const char *)g_ptr_array_index(sorted, i));
    }
    printf("\n");
    exit(EXIT_SUCCESS);
}

int main(int argc, char **argv)
{
    static const struct option long_options[] = {
        { "help", no_argument, NULL, 'h' },
        { "version", no_argument, NULL, 'V' },
        { NULL, 0, NULL, 0 },
    };
    g_autofree char *progname = g_path_get_basename(argv[0]);
    const char *cmdname;
    int c;

    strata_log_set_sink(strata_log_to_stderr, NULL);

    img_progname = progname;
    /* the library names the program in the lines QEMU prints with
     * error_report() (check's "ERROR failed to read the snapshot table") */
    g_set_prgname(progname);
    if (argc < 2) {
        img_error_exit("Not enough arguments");
    }
    while ((c = getopt_long(argc, argv, "+:hV", long_options, NULL)) != -1) {
        switch (c) {
        case ':':
            img_missing_argument(argv[optind - 1]);
        case '?':
            img_unrecognized_option(argv[optind - 1]);
        case 'h':
            img_help();
        case 'V':
            print_version();
            return 0;
        }
    }
    if (optind >= argc) {
        return 0;
    }
    cmdname = argv[optind];
    argc -= optind;
    argv += optind;
    optind = 0;   /* glibc: restart scanning from argv[1] */

    for (const ImgCommand *cmd = img_cmds; cmd->name; cmd++) {
        if (!strcmp(cmdname, cmd->name)) {
            int ret = cmd->handler(argc, argv);
            fflush(stdout);
            return ret;
        }
    }
    img_error_exit("Command not found: %s", cmdname);
}
