/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * strata-io helpers shared by the command implementations: qemu-io
 * compatible number parsing, human-readable sizes and times, the
 * statistics report, the hex dump, I/O buffers and error reporting.
 */
#ifndef STRATA_IO_UTIL_H
#define STRATA_IO_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <time.h>

#include <glib.h>

/* Largest request qemu-io lets through: INT_MAX rounded down to sectors. */
#define IO_REQUEST_MAX_BYTES ((int64_t)(0x7fffffff & ~511))

/*
 * Parses a size argument exactly as qemu-io (QEMU 7.2) does: decimal or
 * 0x-hex integer, optional fraction, optional B/K/M/G/T/P/E suffix
 * (binary units, case-insensitive), result rounded to the nearest byte.
 * Returns the value, or -EINVAL / -ERANGE.
 */
int64_t io_cvtnum(const char *s);
/* Prints qemu-io's message for a failed io_cvtnum(). */
void io_print_cvtnum_err(int64_t rc, const char *arg);

/* "64 KiB", "1.500 MiB", "512 bytes" ... into str. */
void io_cvtstr(double value, char *str, size_t size);

/* Elapsed t2 - t1. */
struct timespec io_tsub(struct timespec t2, struct timespec t1);
/* Prints to f the two-line (or -C one-line) statistics qemu-io prints. */
void io_print_report(FILE *f, const char *op, const struct timespec *t,
                     int64_t offset, int64_t count, int64_t total, int cnt,
                     bool cflag);
/* qemu-io's -v hex dump, to f. */
void io_dump_buffer(FILE *f, const void *buffer, int64_t offset, int64_t len);
/* A pattern byte (strtol base 0, 0..255); prints an error, returns -1. */
int io_parse_pattern(const char *arg);

/*
 * I/O buffers: aligned for O_DIRECT, or deliberately misaligned by 16
 * bytes when io_misalign is set (-m), filled with pattern.
 */
extern bool io_misalign;
void *io_alloc(size_t len, int pattern);
void io_free(void *p);

/* "PROGNAME: message" on stderr, like QEMU's error_report(). */
void io_error_report(const char *fmt, ...) G_GNUC_PRINTF(1, 2);

/*
 * QEMU's cache modes: sets *nocache / *no_flush / *writethrough.  Returns
 * false for an unknown mode.
 */
bool io_parse_cache_mode(const char *mode, bool *nocache, bool *no_flush,
                         bool *writethrough);
/* "ignore"/"off" -> *ignore = true; "unmap"/"on" -> false. */
bool io_parse_discard_mode(const char *mode, bool *ignore);
/* "threads", "native", "io_uring" (accepted, then ignored). */
bool io_parse_aio_mode(const char *mode);

#endif
