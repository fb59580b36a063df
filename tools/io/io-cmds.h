/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * strata-io's command table and the state the commands share: the device
 * of the open image (its write-cache and discard settings live there, as
 * for any other user of a device) and the open options strata-io keeps
 * beside it.
 */
#ifndef STRATA_IO_CMDS_H
#define STRATA_IO_CMDS_H

#include <stdbool.h>

#include "block/block.h"
#include "block/block-backend.h"

typedef struct IoState {
    BlockBackend *blk;      /* NULL when no file is open */
    bool nocache;           /* opened with cache.direct=on */
    bool no_flush;          /* opened with cache.no-flush=on */
    bool write_perm;        /* qemu-io's BlockBackend holds write permission */
    bool image_opts;        /* --image-opts given */
    bool quit;              /* 'quit' was run */
} IoState;

typedef int (*IoCmdFunc)(IoState *s, int argc, char **argv);

#define IO_CMD_GLOBAL     0x01  /* runs without a file; help, quit */
#define IO_CMD_NOFILE_OK  0x02  /* may run without a file */
#define IO_CMD_WRITE      0x04  /* needs a writable node */

typedef struct IoCmd {
    const char *name;
    const char *altname;
    IoCmdFunc func;
    int argmin;
    int argmax;             /* -1: no limit */
    int flags;
    const char *args;
    const char *oneline;
    void (*help)(void);
} IoCmd;

/* Adds a command; the table stays sorted by name as help lists it. */
void io_add_command(const IoCmd *cmd);
/* Registers the built-in commands (all but open, close and quit). */
void io_init_commands(void);
/* Registers the data commands of io-rw.c. */
void io_rw_init_commands(void);
/* Prints "name args -- oneline". */
void io_command_usage(const IoCmd *cmd);
/* Prints what completed aio_* requests have to say (qemu-io prints it
 * when it waits for them: aio_flush, close, exit).  In io-rw.c. */
void io_aio_drain(void);
/* Told from a request's thread when it stops at a blkdebug breakpoint and
 * when it goes on again.  In io-rw.c. */
void io_aio_breakpoint_event(bool suspended);
/* After `resume`: waits until the resumed aio_* request has completed,
 * unless a request (it or another) is held at a breakpoint.  In io-rw.c. */
void io_aio_wait_resumed(void);
/* Runs one command line; returns its result (< 0 on failure). */
int io_run_command(IoState *s, const char *line);

#endif
