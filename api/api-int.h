/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Inside libstrata's public API (the files of api/): the device handle and the
 * lock that keeps monitor operations one at a time.
 */
#ifndef STRATA_API_INT_H
#define STRATA_API_INT_H

#include "strata/strata.h"
#include "block/block-backend.h"

struct StrataDevice {
    BlockBackend *blk;     /* a reference: I/O follows its current root */
    char *node_name;       /* as given at open: what close deletes */
};

/*
 * The monitor's commands, blockdev-add/del and the event queue's work
 * were written for one thread (strata-daemon's main loop); the API lets
 * any thread call them, one at a time under this lock.  Also runs the
 * library's one-time set-up.
 */
void api_monitor_lock(void);
void api_monitor_unlock(void);

#endif
