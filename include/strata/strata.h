/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * libstrata's embedding API, everything in one include:
 *   strata/version.h      versions of the headers and of the library
 *   strata/log.h          the log sink
 *   strata/device.h       devices from --blockdev options, synchronous I/O
 *   strata/io.h           asynchronous I/O (GMainContext or your own loop)
 *   strata/transaction.h  all-or-nothing snapshot sets, pause/resume hook
 *   strata/monitor.h      QMP and HMP in-process, events
 *   strata/vmstate.h      VM state of savevm/loadvm
 * Build with `pkg-config --cflags --libs strata`.
 */
#ifndef STRATA_PUBLIC_STRATA_H
#define STRATA_PUBLIC_STRATA_H

#include "strata/version.h"
#include "strata/log.h"
#include "strata/device.h"
#include "strata/io.h"
#include "strata/transaction.h"
#include "strata/monitor.h"
#include "strata/vmstate.h"

#endif
