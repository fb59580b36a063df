/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * What every strata-img subcommand shares: error reporting in qemu-img's
 * style, qemu-img's number and cache-mode parsing, opening an image the
 * way qemu-img does, sizes for humans, and the progress line.
 */
#ifndef STRATA_IMG_COMMON_H
#define STRATA_IMG_COMMON_H

#include <glib.h>
#include <stdbool.h>
#include <stdint.h>

#include "block/block.h"

/* Exit status of a usage error, as qemu-img. */
#define IMG_EXIT_USAGE 1

#define IMG_NORETURN __attribute__((noreturn))

/* Long options without a short letter (values past any char). */
enum {
    OPT_OUTPUT = 256,
    OPT_BACKING_CHAIN,
    OPT_OBJECT,
    OPT_IMAGE_OPTS,
    OPT_TARGET_IMAGE_OPTS,
    OPT_FORCE_SHARE,
    OPT_FLUSH_INTERVAL,
    OPT_NO_DRAIN,
    OPT_PATTERN,
    OPT_SALVAGE,
    OPT_TARGET_IS_ZERO,
    OPT_BITMAPS,
    OPT_SKIP_BROKEN,
};

typedef enum { OFORMAT_HUMAN, OFORMAT_JSON } ImgOutputFormat;

/* The name we were invoked as (basename of argv[0]); prefixes errors. */
extern const char *img_progname;

/* "strata-img: <message>" on stderr. */
void img_error(const char *fmt, ...) G_GNUC_PRINTF(1, 2);
/* img_error plus the "Try ... --help" hint, then exit(1). */
IMG_NORETURN void img_error_exit(const char *fmt, ...) G_GNUC_PRINTF(1, 2);
/* getopt error helpers: an unknown option, a missing option argument. */
IMG_NORETURN void img_unrecognized_option(const char *option);
IMG_NORETURN void img_missing_argument(const char *option);
/* Prints the full usage text and exits 0 (-h in any subcommand). */
IMG_NORETURN void img_help(void);

/* printf unless quiet. */
void img_qprintf(bool quiet, const char *fmt, ...) G_GNUC_PRINTF(2, 3);

/*
 * qemu-img's cvtnum: a size with optional k/M/G/T/P/E suffix within
 * [min, max].  On error prints qemu-img's message naming `name` and
 * returns false.
 */
bool img_cvtnum_full(const char *name, const char *value, int64_t min,
                     int64_t max, int64_t *out);
bool img_cvtnum(const char *name, const char *value, int64_t *out);
/* A C integer in any base (0x.., 0..), whole string; false if not. */
bool img_parse_long(const char *str, long long min, long long max,
                    long long *out);

/*
 * qemu's cache modes: none/off, directsync, writeback, writethrough,
 * unsafe.  Sets BDRV_O_NOCACHE/BDRV_O_NO_FLUSH in *flags (other bits are
 * kept) and whether every write must be followed by a flush.
 */
bool img_parse_cache_mode(const char *mode, int *flags, bool *writethrough);
#define IMG_DEFAULT_CACHE "writeback"

/*
 * Opens an image like qemu-img: `filename` is a file name with optional
 * format, or (image_opts) an option string "driver=..,file.filename=..".
 * flags may carry BDRV_O_FORCE_SHARE (-U) and BDRV_O_NO_SHARE.
 * On failure prints "Could not open 'X': why" and returns NULL; an image
 * another process holds gives QEMU's lock error and its hint line.
 */
BlockDriverState *img_open(bool image_opts, const char *filename,
                           const char *fmt, int flags, bool quiet);
/* The same with more options for the node (not with image_opts): the
 * key a new encrypted target needs, as qemu-img passes it on. */
BlockDriverState *img_open_extra(bool image_opts, const char *filename,
                                 const char *fmt, int flags, bool quiet,
                                 GHashTable *extra);

/*
 * The option prologue every subcommand shares.  A subcommand's getopt
 * loop handles its own letters first and passes every other value to
 * img_common_opt(), which knows the cases qemu-img repeats in each
 * command: ':' and '?' (usage errors), -h, -f, -q, -U, -T (the source
 * cache), --output, --object and --image-opts.  getopt only returns the
 * letters a subcommand lists, so each keeps exactly the options it had.
 */
typedef struct ImgCommonOpts {
    const char *fmt;        /* -f */
    const char *output;     /* --output, parsed by img_parse_output_format */
    const char *cache;      /* -T: the source cache mode */
    bool image_opts;        /* --image-opts */
    bool quiet;             /* -q */
    int flags;              /* open flags; -U adds BDRV_O_FORCE_SHARE */
    int object_status;      /* exit status when --object is given */
} ImgCommonOpts;

/* Defaults: no format, human output, qemu-img's default cache, exit 1. */
#define IMG_COMMON_OPTS_INIT(open_flags) {                     \
        .cache = IMG_DEFAULT_CACHE, .flags = (open_flags),     \
        .object_status = 1,                                    \
    }

/*
 * Handles one shared getopt value.  Usage errors, -h and --object end the
 * process (with IMG_EXIT_USAGE, 0 and o->object_status respectively).
 * argv is the subcommand's (for naming the offending option); the value
 * comes from getopt's optarg.
 * Returns false for a value that is not one of the shared options.
 */
bool img_common_opt(int c, char **argv, ImgCommonOpts *o);

/* The single image file name left after the options of a command that
 * takes one; any other count ends the process with qemu-img's error. */
const char *img_one_filename(int argc, char **argv);

/* --output: human (also when absent) or json; else qemu-img's error. */
bool img_parse_output_format(const char *output, ImgOutputFormat *out);

/* "--image-opts and --format are mutually exclusive" if both are set. */
bool img_common_check_format(const ImgCommonOpts *o);

/*
 * Applies o->cache to o->flags; on a bad mode prints
 * "Invalid <what> option: <mode>" (what: "cache" or "source cache").
 */
bool img_common_apply_cache(ImgCommonOpts *o, const char *what);

/* img_open with o's format, --image-opts, -q and flags | extra_flags. */
BlockDriverState *img_open_common(const ImgCommonOpts *o,
                                  const char *filename, int extra_flags);

/* "64 MiB", "1.25 MiB", "0 B": qemu's size_to_str. */
char *img_size_to_str(uint64_t val);

/* True if every byte of buf is zero. */
bool img_buffer_is_zero(const void *buf, size_t len);

/* A request of [offset, offset+bytes) must lie inside a node of `len`. */
static inline bool img_request_in_bounds(int64_t offset, int64_t bytes,
                                         int64_t len)
{
    return offset >= 0 && bytes >= 0 && offset <= len && len - offset >= bytes;
}

/* The "    (12.34/100%)\r" progress line of qemu-img -p. */
void img_progress_init(bool enabled, float min_skip);
/* max == 0: set the percentage to delta; else advance by delta% of max. */
void img_progress_print(float delta, int max);
void img_progress_end(void);

/* The subcommands. */
int img_create(int argc, char **argv);
int img_info(int argc, char **argv);
int img_check(int argc, char **argv);
int img_convert(int argc, char **argv);
int img_compare(int argc, char **argv);
int img_bench(int argc, char **argv);
int img_commit(int argc, char **argv);
int img_rebase(int argc, char **argv);
int img_map(int argc, char **argv);
/* resize, amend, measure, dd (img-resize.c, img-amend.c, ...) */
int img_resize(int argc, char **argv);
int img_bitmap(int argc, char **argv);
int img_amend(int argc, char **argv);
int img_measure(int argc, char **argv);
int img_dd(int argc, char **argv);
/* -l (measure, convert): loads "snapshot.id=..,snapshot.name=.." or an
 * ID or name read-only in place of the active image; false after
 * qemu-img's "Failed to load snapshot: ..." message. */
bool img_load_snapshot(BlockDriverState *bs, const char *sn);
/* At option time: a "snapshot.*" -l names only snapshot.id/.name
 * (qemu-img's two messages otherwise); anything else is an ID or name. */
bool img_check_snapshot_param(const char *param);

#endif
