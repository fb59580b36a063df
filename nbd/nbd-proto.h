/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The NBD wire protocol as the server side needs it: magics, option and
 * reply codes, command types and flags, transmission flags and error
 * numbers, with the values of the protocol document
 * (https://github.com/NetworkBlockDevice/nbd/blob/master/doc/proto.md).
 * Everything on the wire is big-endian.
 */
#ifndef STRATA_NBD_PROTO_H
#define STRATA_NBD_PROTO_H

#include <stdint.h>

/* Handshake */
#define NBD_MAGIC               0x4e42444d41474943ULL   /* "NBDMAGIC" */
#define NBD_OPTS_MAGIC          0x49484156454F5054ULL   /* "IHAVEOPT" */
#define NBD_REP_MAGIC           0x0003e889045565a9ULL

#define NBD_FLAG_FIXED_NEWSTYLE 0x0001                  /* server flags */
#define NBD_FLAG_NO_ZEROES      0x0002
#define NBD_FLAG_C_FIXED_NEWSTYLE NBD_FLAG_FIXED_NEWSTYLE /* client flags */
#define NBD_FLAG_C_NO_ZEROES    NBD_FLAG_NO_ZEROES

#define NBD_OPT_EXPORT_NAME       1
#define NBD_OPT_ABORT             2
#define NBD_OPT_LIST              3
#define NBD_OPT_STARTTLS          5
#define NBD_OPT_INFO              6
#define NBD_OPT_GO                7
#define NBD_OPT_STRUCTURED_REPLY  8
#define NBD_OPT_LIST_META_CONTEXT 9
#define NBD_OPT_SET_META_CONTEXT  10

#define NBD_REP_ACK             1
#define NBD_REP_SERVER          2
#define NBD_REP_INFO            3
#define NBD_REP_META_CONTEXT    4
#define NBD_REP_FLAG_ERROR      (1U << 31)
#define NBD_REP_ERR_UNSUP       (NBD_REP_FLAG_ERROR | 1)
#define NBD_REP_ERR_POLICY      (NBD_REP_FLAG_ERROR | 2)
#define NBD_REP_ERR_INVALID     (NBD_REP_FLAG_ERROR | 3)
#define NBD_REP_ERR_PLATFORM    (NBD_REP_FLAG_ERROR | 4)
#define NBD_REP_ERR_TLS_REQD    (NBD_REP_FLAG_ERROR | 5)
#define NBD_REP_ERR_UNKNOWN     (NBD_REP_FLAG_ERROR | 6)
#define NBD_REP_ERR_SHUTDOWN    (NBD_REP_FLAG_ERROR | 7)
#define NBD_REP_ERR_TOO_BIG     (NBD_REP_FLAG_ERROR | 9)

#define NBD_INFO_EXPORT         0
#define NBD_INFO_NAME           1
#define NBD_INFO_DESCRIPTION    2
#define NBD_INFO_BLOCK_SIZE     3

/* Transmission flags (per export) */
#define NBD_FLAG_HAS_FLAGS         (1 << 0)
#define NBD_FLAG_READ_ONLY         (1 << 1)
#define NBD_FLAG_SEND_FLUSH        (1 << 2)
#define NBD_FLAG_SEND_FUA          (1 << 3)
#define NBD_FLAG_SEND_TRIM         (1 << 5)
#define NBD_FLAG_SEND_WRITE_ZEROES (1 << 6)
#define NBD_FLAG_SEND_DF           (1 << 7)
#define NBD_FLAG_CAN_MULTI_CONN    (1 << 8)
#define NBD_FLAG_SEND_FAST_ZERO    (1 << 11)

/* Transmission */
#define NBD_REQUEST_MAGIC           0x25609513U
#define NBD_SIMPLE_REPLY_MAGIC      0x67446698U
#define NBD_STRUCTURED_REPLY_MAGIC  0x668e33efU
#define NBD_REQUEST_SIZE            28
#define NBD_SIMPLE_REPLY_SIZE       16
#define NBD_STRUCTURED_HDR_SIZE     20

#define NBD_CMD_READ            0
#define NBD_CMD_WRITE           1
#define NBD_CMD_DISC            2
#define NBD_CMD_FLUSH           3
#define NBD_CMD_TRIM            4
#define NBD_CMD_CACHE           5
#define NBD_CMD_WRITE_ZEROES    6
#define NBD_CMD_BLOCK_STATUS    7

#define NBD_CMD_FLAG_FUA        (1 << 0)
#define NBD_CMD_FLAG_NO_HOLE    (1 << 1)
#define NBD_CMD_FLAG_DF         (1 << 2)
#define NBD_CMD_FLAG_REQ_ONE    (1 << 3)
#define NBD_CMD_FLAG_FAST_ZERO  (1 << 4)

#define NBD_REPLY_FLAG_DONE         (1 << 0)
#define NBD_REPLY_TYPE_NONE         0
#define NBD_REPLY_TYPE_OFFSET_DATA  1
#define NBD_REPLY_TYPE_OFFSET_HOLE  2
#define NBD_REPLY_TYPE_BLOCK_STATUS 5
#define NBD_REPLY_TYPE_ERROR        ((1 << 15) + 1)

/* base:allocation extent flags */
#define NBD_STATE_HOLE          (1 << 0)
#define NBD_STATE_ZERO          (1 << 1)

/* Error numbers on the wire (not the host's errno values) */
#define NBD_EPERM       1
#define NBD_EIO         5
#define NBD_ENOMEM      12
#define NBD_EINVAL      22
#define NBD_ENOSPC      28
#define NBD_EOVERFLOW   75
#define NBD_ENOTSUP     95
#define NBD_ESHUTDOWN   108

/* Limits: QEMU's largest request (32 MiB) and string (4096 bytes). */
#define NBD_MAX_BUFFER_SIZE     (32 * 1024 * 1024)
#define NBD_MAX_STRING_SIZE     4096
/* Requests of one client worked on at the same time (QEMU's number). */
#define NBD_MAX_REQUESTS        16

#define NBD_META_BASE_ALLOCATION "base:allocation"
/* The id our replies give base:allocation (any number the server
 * chooses; 0 is a valid one). */
#define NBD_META_ID_BASE_ALLOCATION 0

#endif
