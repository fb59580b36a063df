/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The consistent-cut records (format in blockdev/cut-record.h).
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "blockdev/cut-record.h"

/* Knuth's multiplicative constant: a check value that a record's number
 * cannot match by accident. */
#define CUT_RECORD_MULT 2654435761u

void cut_record_make(uint64_t seq, uint8_t *buf, size_t size)
{
    memset(buf, 0, size);
    snprintf((char *)buf, size, "%s %" PRIu64 " %" PRIu64, CUT_RECORD_MAGIC,
             seq, seq * CUT_RECORD_MULT);
}

uint64_t cut_record_parse(const uint8_t *buf, size_t size)
{
    char text[CUT_RECORD_MIN_SIZE];
    char magic[32];
    uint64_t s = 0, check = 0;

    /* the buffer need not hold a NUL: parse a bounded copy */
    size = size < sizeof(text) - 1 ? size : sizeof(text) - 1;
    memcpy(text, buf, size);
    text[size] = 0;
    if (sscanf(text, "%31s %" SCNu64 " %" SCNu64, magic, &s, &check) != 3 ||
        strcmp(magic, CUT_RECORD_MAGIC) || check != s * CUT_RECORD_MULT) {
        return 0;
    }
    return s;
}

int cut_record_device(uint64_t seq, int ndev)
{
    return (int)(seq % (uint64_t)ndev);
}

int64_t cut_record_offset(uint64_t seq, int ndev, size_t size)
{
    return (int64_t)(seq / (uint64_t)ndev) * (int64_t)size;
}
