/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Reading and writing big- and little-endian integers at any address of a
 * byte buffer: the one set of helpers every on-disk format parser uses
 * (qcow2's header, extensions and snapshot table; the probes).  memcpy
 * keeps unaligned fields legal under UBSan.
 */
#ifndef STRATA_BLOCK_BYTEORDER_H
#define STRATA_BLOCK_BYTEORDER_H

#include <glib.h>
#include <stdint.h>
#include <string.h>

static inline uint16_t be16_read(const void *p)
{
    uint16_t v;
    memcpy(&v, p, 2);
    return GUINT16_FROM_BE(v);
}

static inline uint32_t be32_read(const void *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return GUINT32_FROM_BE(v);
}

static inline uint64_t be64_read(const void *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    return GUINT64_FROM_BE(v);
}

static inline uint32_t le32_read(const void *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return GUINT32_FROM_LE(v);
}

static inline void be16_write(void *p, uint16_t v)
{
    v = GUINT16_TO_BE(v);
    memcpy(p, &v, 2);
}

static inline void be32_write(void *p, uint32_t v)
{
    v = GUINT32_TO_BE(v);
    memcpy(p, &v, 4);
}

static inline void be64_write(void *p, uint64_t v)
{
    v = GUINT64_TO_BE(v);
    memcpy(p, &v, 8);
}

#endif
