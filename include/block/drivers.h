/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The built-in drivers.  Adding a driver: one file in block/, one extern
 * here and one line in block/drivers.c.
 */
#ifndef STRATA_BLOCK_DRIVERS_H
#define STRATA_BLOCK_DRIVERS_H

#include "block/block_int.h"

extern BlockDriver bdrv_file;
extern BlockDriver bdrv_raw;
extern BlockDriver bdrv_qcow2;
extern BlockDriver bdrv_blkdebug;

void bdrv_register_all(void);

/* Shared by the file and raw drivers' create. */
bool file_create_with_size(const char *filename, uint64_t size, GError **errp);

#endif
