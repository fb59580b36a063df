/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Helpers shared by the strata-img subcommands: qemu-img's error and
 * usage-error style, its number and cache-mode parsing, image opening,
 * human-readable sizes and the -p progress line.
 */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "img-common.h"
#include "block/crypto.h"
#include "block/objects.h"

const char *img_progname = "strata-img";

static void img_verror(const char *fmt, va_list ap)
{
    /* stdout is not flushed first: with both redirected to one file,
     * messages land where qemu-img's do. */
    fprintf(stderr, "%s: ", img_progname);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
}

void img_error(const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    img_verror(fmt, ap);
    va_end(ap);
}

void img_error_exit(const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    img_verror(fmt, ap);
    va_end(ap);
    fprintf(stderr, "Try 'strata-img --help' for more information\n");
    exit(IMG_EXIT_USAGE);
}

void img_unrecognized_option(const char *option)
{
    img_error_exit("unrecognized option '%s'", option);
}

void img_missing_argument(const char *option)
{
    img_error_exit("missing argument for option '%s'", option);
}

void img_qprintf(bool quiet, const char *fmt, ...)
{
    va_list ap;

    if (quiet) {
        return;
    }
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
}

/* The multiplier of a size suffix, 0 if c is not one. */
static uint64_t suffix_multiplier(char c)
{
    switch (g_ascii_tolower(c)) {
    case 'b': return 1;
    case 'k': return 1ULL << 10;
    case 'm': return 1ULL << 20;
    case 'g': return 1ULL << 30;
    case 't': return 1ULL << 40;
    case 'p': return 1ULL << 50;
    case 'e': return 1ULL << 60;
    default: return 0;
    }
}

/* strata_parse_size refuses values of 2^64 and more; tell those apart
 * from malformed input, since qemu-img words the two errors differently. */
static bool size_is_too_large(const char *str)
{
    char *end;
    double d;
    uint64_t mul = 1;

    if (!g_ascii_isdigit(str[0]) && str[0] != '.') {
        return false;
    }
    errno = 0;
    d = g_ascii_strtod(str, &end);
    if (end == str || isnan(d) || d < 0) {
        return false;
    }
    if (*end) {
        mul = suffix_multiplier(*end);
        if (!mul || end[1]) {
            return false;
        }
    }
    return errno == ERANGE || d * (double)mul >= 18446744073709551616.0;
}

bool img_cvtnum_full(const char *name, const char *value, int64_t min,
                     int64_t max, int64_t *out)
{
    uint64_t v;

    if (!strata_parse_size(value, &v)) {
        if (size_is_too_large(value)) {
            goto range;
        }
        img_error("Invalid %s specified. You may use "
                  "k, M, G, T, P or E suffixes for", name);
        img_error("kilobytes, megabytes, gigabytes, terabytes, "
                  "petabytes and exabytes.");
        return false;
    }
    if (v > (uint64_t)INT64_MAX || (int64_t)v > max || (int64_t)v < min) {
        goto range;
    }
    *out = (int64_t)v;
    return true;

range:
    img_error("Invalid %s specified. Must be between %" G_GINT64_FORMAT
              " and %" G_GINT64_FORMAT ".", name, min, max);
    return false;
}

bool img_cvtnum(const char *name, const char *value, int64_t *out)
{
    return img_cvtnum_full(name, value, 0, INT64_MAX, out);
}

bool img_parse_long(const char *str, long long min, long long max,
                    long long *out)
{
    char *end;
    long long v;

    if (!str || !*str) {
        return false;
    }
    errno = 0;
    v = strtoll(str, &end, 0);
    if (errno || end == str || *end || v < min || v > max) {
        return false;
    }
    *out = v;
    return true;
}

bool img_parse_cache_mode(const char *mode, int *flags, bool *writethrough)
{
    int f = *flags & ~(BDRV_O_NOCACHE | BDRV_O_NO_FLUSH);
    bool wt;

    if (!strcmp(mode, "off") || !strcmp(mode, "none")) {
        f |= BDRV_O_NOCACHE;
        wt = false;
    } else if (!strcmp(mode, "directsync")) {
        f |= BDRV_O_NOCACHE;
        wt = true;
    } else if (!strcmp(mode, "writeback")) {
        wt = false;
    } else if (!strcmp(mode, "unsafe")) {
        f |= BDRV_O_NO_FLUSH;
        wt = false;
    } else if (!strcmp(mode, "writethrough")) {
        wt = true;
    } else {
        return false;
    }
    *flags = f;
    if (writethrough) {
        *writethrough = wt;
    }
    return true;
}

BlockDriverState *img_open(bool image_opts, const char *filename,
                           const char *fmt, int flags, bool quiet)
{
    return img_open_extra(image_opts, filename, fmt, flags, quiet, NULL);
}

BlockDriverState *img_open_extra(bool image_opts, const char *filename,
                                 const char *fmt, int flags, bool quiet,
                                 GHashTable *extra)
{
    g_autoptr(GError) err = NULL;
    BlockOpts *opts = bdrv_opts_new();
    BlockDriverState *bs;
    GHashTableIter it;
    gpointer k, v;

    if (image_opts) {
        const char *fs;

        if (!bdrv_opts_parse(opts, filename, NULL, &err)) {
            g_hash_table_unref(opts);
            img_error("%s", err->message);
            return NULL;
        }
        /* -U and the option string must agree, as in qemu-img. */
        fs = bdrv_opts_get(opts, "force-share");
        if ((flags & BDRV_O_FORCE_SHARE) && fs && strcmp(fs, "on")) {
            g_hash_table_unref(opts);
            img_error("--force-share/-U conflicts with image options");
            return NULL;
        }
        bs = bdrv_open(NULL, opts, flags, &err);
    } else {
        if (fmt) {
            bdrv_opts_set(opts, "driver", fmt);
        }
        if (extra) {
            g_hash_table_iter_init(&it, extra);
            while (g_hash_table_iter_next(&it, &k, &v)) {
                bdrv_opts_set(opts, k, v);
            }
        }
        bs = bdrv_open(filename, opts, flags, &err);
    }
    if (!bs) {
        img_error("Could not open '%s': %s", filename, err->message);
    }
    return bs;
}

const char *img_one_filename(int argc, char **argv)
{
    if (optind != argc - 1) {
        img_error_exit("Expecting one image file name");
    }
    return argv[optind];
}

bool img_common_opt(int c, char **argv, ImgCommonOpts *o)
{
    switch (c) {
    case ':':
        img_missing_argument(argv[optind - 1]);
    case '?':
        img_unrecognized_option(argv[optind - 1]);
    case 'h':
        img_help();
    case 'f':
        o->fmt = optarg;
        return true;
    case 'q':
        o->quiet = true;
        return true;
    case 'U':
        o->flags |= BDRV_O_FORCE_SHARE;
        return true;
    case 'T':
        o->cache = optarg;
        return true;
    case OPT_OUTPUT:
        o->output = optarg;
        return true;
    case OPT_IMAGE_OPTS:
        o->image_opts = true;
        return true;
    case OPT_OBJECT: {
        /* Secrets (encryption keys) and the NBD client's TLS
         * credentials; any other object type is refused, not ignored:
         * it would change what the command does. */
        g_autoptr(GError) err = NULL;
        if (!bdrv_object_add(optarg, &err)) {
            img_error("%s", err->message);
            exit(o->object_status);
        }
        return true;
    }
    default:
        return false;
    }
}

bool img_parse_output_format(const char *output, ImgOutputFormat *out)
{
    if (!output || !strcmp(output, "human")) {
        *out = OFORMAT_HUMAN;
    } else if (!strcmp(output, "json")) {
        *out = OFORMAT_JSON;
    } else {
        img_error("--output must be used with human or json as argument.");
        return false;
    }
    return true;
}

bool img_common_check_format(const ImgCommonOpts *o)
{
    if (o->image_opts && o->fmt) {
        img_error("--image-opts and --format are mutually exclusive");
        return false;
    }
    return true;
}

bool img_common_apply_cache(ImgCommonOpts *o, const char *what)
{
    if (!img_parse_cache_mode(o->cache, &o->flags, NULL)) {
        img_error("Invalid %s option: %s", what, o->cache);
        return false;
    }
    return true;
}

BlockDriverState *img_open_common(const ImgCommonOpts *o,
                                  const char *filename, int extra_flags)
{
    return img_open(o->image_opts, filename, o->fmt, o->flags | extra_flags,
                    o->quiet);
}

char *img_size_to_str(uint64_t val)
{
    static const char *const suffixes[] = {
        "", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"
    };
    int exp;
    int i;

    /* Switch unit once the integer part would reach 1000, so no value
     * prints with four digits before the point (qemu's rule). */
    frexp(val / (1000.0 / 1024.0), &exp);
    i = (exp - 1) / 10;
    if (i < 0) {
        i = 0;
    }
    if (i >= (int)G_N_ELEMENTS(suffixes)) {
        i = G_N_ELEMENTS(suffixes) - 1;
    }
    return g_strdup_printf("%0.3g %sB",
                           (double)val / (double)(1ULL << (i * 10)),
                           suffixes[i]);
}

bool img_buffer_is_zero(const void *buf, size_t len)
{
    const unsigned char *p = buf;

    if (len == 0) {
        return true;
    }
    /* Cheap early outs for the common "data" case, then one vectorised
     * compare of the buffer against itself shifted by one byte. */
    if (p[0] || p[len - 1] || p[len / 2]) {
        return false;
    }
    return memcmp(p, p + 1, len - 1) == 0;
}

/* Progress: the numbers only, no terminal tricks, like qemu's simple mode. */
static struct {
    bool enabled;
    float current;
    float last_print;
    float min_skip;
} progress;

void img_progress_init(bool enabled, float min_skip)
{
    progress.enabled = enabled;
    progress.current = 0;
    progress.last_print = 0;
    progress.min_skip = min_skip;
}

void img_progress_print(float delta, int max)
{
    float current;

    if (max == 0) {
        current = delta;
    } else {
        current = progress.current + delta / 100 * max;
    }
    if (current > 100) {
        current = 100;
    }
    progress.current = current;
    if (current > progress.last_print + progress.min_skip ||
        current < progress.last_print - progress.min_skip ||
        current == 0 || current == 100) {
        progress.last_print = current;
        if (progress.enabled) {
            printf("    (%3.2f/100%%)\r", current);
            fflush(stdout);
        }
    }
}

void img_progress_end(void)
{
    if (progress.enabled) {
        printf("\n");
    }
}
