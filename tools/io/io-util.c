/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * strata-io helpers: qemu-io compatible size parsing and formatting of
 * sizes, times, statistics and hex dumps; I/O buffer allocation; error
 * reporting with the program name.  Output formats are qemu-io's (QEMU
 * 7.2) byte for byte, because tests compare the two tools' outputs.
 */
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io-util.h"

bool io_misalign;

#define MISALIGN_OFFSET 16
#define BUF_ALIGN 4096

void io_error_report(const char *fmt, ...)
{
    va_list ap;

    fprintf(stderr, "%s: ", g_get_prgname());
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

/* Binary multiplier of a unit letter, 0 if c is not one. */
static uint64_t unit_multiplier(char c)
{
    switch (g_ascii_toupper(c)) {
    case 'B': return 1;
    case 'K': return UINT64_C(1) << 10;
    case 'M': return UINT64_C(1) << 20;
    case 'G': return UINT64_C(1) << 30;
    case 'T': return UINT64_C(1) << 40;
    case 'P': return UINT64_C(1) << 50;
    case 'E': return UINT64_C(1) << 60;
    default: return 0;
    }
}

/*
 * The rules below reproduce QEMU 7.2's qemu_strtosz() as observed from
 * qemu-io: the integer part is exact, a fraction is kept as a 64-bit
 * binary fraction (so ".99999999999999999", which rounds to 1.0 as a
 * double, contributes nothing, as on x86-64 QEMU), the product is
 * rounded half up, and any unparsed character makes the whole argument
 * invalid even when an overflow was seen first.
 */
static int parse_size(const char *s, uint64_t *out)
{
    char *end;
    unsigned long long val;
    uint64_t frac = 0, mul;
    bool hex = false;
    int ret = 0;

    errno = 0;
    val = strtoull(s, &end, 10);
    if (errno == ERANGE) {
        ret = -ERANGE;
        goto out;
    }
    if (end == s) {
        return -EINVAL;
    }
    if (memchr(s, '-', end - s)) {
        return -EINVAL;
    }
    if (val == 0 && (*end == 'x' || *end == 'X')) {
        errno = 0;
        val = strtoull(s, &end, 16);
        if (errno == ERANGE) {
            ret = -ERANGE;
            goto out;
        }
        if (*end == '.') {
            return -EINVAL;
        }
        hex = true;
    } else if (*end == '.') {
        const char *f = end;
        char *fend;
        double fraction;

        errno = 0;
        fraction = strtod(f, &fend);
        if (fend == f || !isfinite(fraction)) {
            /* Not a fraction ("1.k"): skip the dot and go on. */
            end = (char *)f + 1;
        } else if (errno == ERANGE) {
            /* QEMU skips one more character after an out-of-range
             * fraction; where that would step over the terminator it
             * reads past the string and rejects the argument. */
            if (!*fend) {
                return -EINVAL;
            }
            end = fend + 1;
        } else if (memchr(f, 'e', fend - f) || memchr(f, 'E', fend - f)) {
            return -EINVAL;
        } else {
            double scaled = fraction * 0x1p64;
            frac = scaled >= 0x1p64 ? 0 : (uint64_t)scaled;
            end = fend;
        }
    }

    mul = unit_multiplier(*end);
    if (mul) {
        end++;
    } else {
        mul = 1;
    }
    if (hex && mul != 1) {
        fprintf(stderr, "%s: warning: Using a multiplier suffix on hex "
                "numbers is deprecated: %s\n", g_get_prgname(), s);
    }
    if (mul == 1) {
        if (frac != 0) {
            return -EINVAL;
        }
    } else {
        unsigned __int128 whole = (unsigned __int128)val * mul;
        unsigned __int128 part = (unsigned __int128)frac * mul;

        whole += part >> 64;
        whole += ((uint64_t)part) >> 63;   /* round half up */
        if (whole >> 64) {
            ret = -ERANGE;
        }
        val = (uint64_t)whole;
    }

out:
    if (*end) {
        return -EINVAL;
    }
    if (ret == 0) {
        *out = val;
    }
    return ret;
}

int64_t io_cvtnum(const char *s)
{
    uint64_t v;
    int ret;

    if (!s) {
        return -EINVAL;
    }
    ret = parse_size(s, &v);
    if (ret < 0) {
        return ret;
    }
    if (v > INT64_MAX) {
        return -ERANGE;
    }
    return (int64_t)v;
}

void io_print_cvtnum_err(int64_t rc, const char *arg)
{
    switch (rc) {
    case -EINVAL:
        printf("Parsing error: non-numeric argument,"
               " or extraneous/unrecognized suffix -- %s\n", arg);
        break;
    case -ERANGE:
        printf("Parsing error: argument too large -- %s\n", arg);
        break;
    default:
        printf("Parsing error: %s\n", arg);
    }
}

void io_cvtstr(double value, char *str, size_t size)
{
    static const char *const units[] = {
        " KiB", " MiB", " GiB", " TiB", " PiB", " EiB",
    };
    const char *suffix = " bytes";
    char *dot;
    int i;

    /* Pick the largest binary unit not above the value. */
    for (i = G_N_ELEMENTS(units); i > 0; i--) {
        double unit = (double)(UINT64_C(1) << (10 * i));
        if (value >= unit) {
            suffix = units[i - 1];
            snprintf(str, size - 4, "%.3f", value / unit);
            break;
        }
    }
    if (i == 0) {
        snprintf(str, size - 6, "%f", value);
    }
    /* An all-zero fraction is dropped: "64 KiB", not "64.000 KiB". */
    dot = strstr(str, ".000");
    if (dot) {
        *dot = '\0';
    }
    g_strlcat(str, suffix, size);
}

struct timespec io_tsub(struct timespec t2, struct timespec t1)
{
    struct timespec d;

    d.tv_sec = t2.tv_sec - t1.tv_sec;
    d.tv_nsec = t2.tv_nsec - t1.tv_nsec;
    if (d.tv_nsec < 0) {
        d.tv_nsec += 1000000000L;
        d.tv_sec--;
    }
    return d;
}

static double per_second(double value, const struct timespec *t)
{
    return value / ((double)t->tv_sec + (double)t->tv_nsec / 1e9);
}

/* "00.00 sec" below one second, "H:MM:SS.ss" otherwise or with -C. */
static void format_time(const struct timespec *t, char *buf, size_t size,
                        bool fixed)
{
    double frac = (double)t->tv_nsec / 1e9;
    unsigned int secs = (unsigned int)(t->tv_sec % 60);

    if (fixed || t->tv_sec) {
        snprintf(buf, size, "%u:%02u:%05.2f",
                 (unsigned int)(t->tv_sec / 3600),
                 (unsigned int)((t->tv_sec % 3600) / 60),
                 secs + frac);
    } else {
        snprintf(buf, size, "%05.2f sec", frac);
    }
}

void io_print_report(FILE *f, const char *op, const struct timespec *t,
                     int64_t offset, int64_t count, int64_t total, int cnt,
                     bool cflag)
{
    char size_str[64], rate_str[64], time_str[64];

    format_time(t, time_str, sizeof(time_str), cflag);
    if (cflag) {
        /* bytes,ops,time,bytes/sec,ops/sec */
        fprintf(f, "%" PRId64 ",%d,%s,%.3f,%.3f\n", total, cnt, time_str,
                per_second((double)total, t), per_second((double)cnt, t));
        return;
    }
    io_cvtstr((double)total, size_str, sizeof(size_str));
    io_cvtstr(per_second((double)total, t), rate_str, sizeof(rate_str));
    fprintf(f, "%s %" PRId64 "/%" PRId64 " bytes at offset %" PRId64 "\n",
            op, total, count, offset);
    fprintf(f, "%s, %d ops; %s (%s/sec and %.4f ops/sec)\n",
            size_str, cnt, time_str, rate_str, per_second((double)cnt, t));
}

void io_dump_buffer(FILE *f, const void *buffer, int64_t offset, int64_t len)
{
    const uint8_t *p = buffer;

    for (int64_t line = 0; line < len; line += 16) {
        int64_t n = MIN(16, len - line);

        fprintf(f, "%08" PRIx64 ":  ", (uint64_t)(offset + line));
        for (int64_t j = 0; j < n; j++) {
            fprintf(f, "%02x ", p[line + j]);
        }
        fputc(' ', f);
        for (int64_t j = 0; j < n; j++) {
            fputc(isalnum(p[line + j]) ? p[line + j] : '.', f);
        }
        fputc('\n', f);
    }
}

int io_parse_pattern(const char *arg)
{
    char *end = NULL;
    long v = strtol(arg, &end, 0);

    if (v < 0 || v > UCHAR_MAX || *end != '\0') {
        printf("%s is not a valid pattern byte\n", arg);
        return -1;
    }
    return (int)v;
}

void *io_alloc(size_t len, int pattern)
{
    size_t extra = io_misalign ? MISALIGN_OFFSET : 0;
    void *p = NULL;

    if (posix_memalign(&p, BUF_ALIGN, MAX(len + extra, 1)) != 0) {
        io_error_report("failed to allocate %zu bytes", len);
        abort();
    }
    memset(p, pattern, len + extra);
    return (char *)p + extra;
}

void io_free(void *p)
{
    if (p) {
        free((char *)p - (io_misalign ? MISALIGN_OFFSET : 0));
    }
}

bool io_parse_cache_mode(const char *mode, bool *nocache, bool *no_flush,
                         bool *writethrough)
{
    *nocache = false;
    *no_flush = false;
    *writethrough = false;
    if (!strcmp(mode, "off") || !strcmp(mode, "none")) {
        *nocache = true;
    } else if (!strcmp(mode, "directsync")) {
        *nocache = true;
        *writethrough = true;
    } else if (!strcmp(mode, "writeback")) {
        /* the defaults */
    } else if (!strcmp(mode, "unsafe")) {
        *no_flush = true;
    } else if (!strcmp(mode, "writethrough")) {
        *writethrough = true;
    } else {
        return false;
    }
    return true;
}

bool io_parse_discard_mode(const char *mode, bool *ignore)
{
    if (!strcmp(mode, "off") || !strcmp(mode, "ignore")) {
        *ignore = true;
    } else if (!strcmp(mode, "on") || !strcmp(mode, "unmap")) {
        *ignore = false;
    } else {
        return false;
    }
    return true;
}

bool io_parse_aio_mode(const char *mode)
{
    return !strcmp(mode, "threads") || !strcmp(mode, "native") ||
           !strcmp(mode, "io_uring");
}
