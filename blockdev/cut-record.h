/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The sequenced records of the consistent-cut tests, library-internal
 * (not installed): one format shared by the unit test
 * (tests/unit/test-transaction-cut.c) and strata-daemon's test-only
 * writers (monitor/qmp-cmd-test.c), whose images
 * tests/functional/test_qmp_cut.py reads back with qemu-img.
 *
 * Record s (s >= 1, one global sequence) goes to device s % ndev at byte
 * (s / ndev) * size.  It is the text "strata-cut-record S C" with C =
 * S * 2654435761 modulo 2^64, both in decimal, NUL-padded to size bytes,
 * so that a record cannot be confused with data or with another record's
 * torn remains.
 */
#ifndef STRATA_BLOCKDEV_CUT_RECORD_H
#define STRATA_BLOCKDEV_CUT_RECORD_H

#include <stddef.h>
#include <stdint.h>

#define CUT_RECORD_MAGIC "strata-cut-record"
/* the text of the largest record, with its NUL, fits in this */
#define CUT_RECORD_MIN_SIZE 64

/* Fills buf (size >= CUT_RECORD_MIN_SIZE bytes) with record seq. */
void cut_record_make(uint64_t seq, uint8_t *buf, size_t size);
/* The sequence number of the record in buf (size bytes), 0 if none. */
uint64_t cut_record_parse(const uint8_t *buf, size_t size);
/* Where record seq lives among ndev devices. */
int cut_record_device(uint64_t seq, int ndev);
int64_t cut_record_offset(uint64_t seq, int ndev, size_t size);

#endif
