/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The built-in drivers.  Adding a driver: one file in block/, one extern
 * here and one line in block/drivers.c.
 */
#ifndef STRATA_BLOCK_DRIVERS_H
#define STRATA_BLOCK_DRIVERS_H

#include "block/block_int.h"

extern BlockDriver bdrv_file;
extern BlockDriver bdrv_host_device;   /* block/file-posix.c */
extern BlockDriver bdrv_host_cdrom;    /* block/file-posix.c */
extern BlockDriver bdrv_raw;
extern BlockDriver bdrv_luks;
/* LUKS header I/O on a node (opaque: the BlockDriverState), with the
 * error texts QEMU gives: block/luks.c's, and qcow2's inside its header
 * clusters. */
bool luks_file_read(void *opaque, uint64_t offset, void *buf, size_t len,
                    GError **errp);
bool luks_file_write(void *opaque, uint64_t offset, const void *buf,
                     size_t len, GError **errp);
extern BlockDriver bdrv_qcow2;
extern BlockDriver bdrv_blkdebug;
extern BlockDriver bdrv_compress;      /* block/filters.c */
extern BlockDriver bdrv_copy_on_read;  /* block/filters.c */
extern BlockDriver bdrv_null_co;       /* block/null.c */
extern BlockDriver bdrv_quorum;        /* block/quorum.c */
extern BlockDriver bdrv_nbd;       /* block/nbd.c, with libnbd */
#ifdef CONFIG_RBD
extern BlockDriver bdrv_rbd;
#endif

void bdrv_register_all(void);

/* The protocol driver for a local path without a prefix, as QEMU
 * probes it: "host_cdrom" for a CD-ROM drive, "host_device" for another
 * block or character device, "file" for everything else. */
const char *file_protocol_for(const char *filename);
/* Shared by the file and raw drivers' create. */
bool file_create_with_size(const char *filename, uint64_t size, GError **errp);
/* The file a format's create writes into (create-target.c): a host file
 * created or emptied (file_create_with_size), or an existing node of a
 * protocol that makes no images (nbd), at least `size` long, its first
 * sector zeroed. */
bool bdrv_create_target(const char *filename, uint64_t size, GError **errp);
/* Whether bdrv_create_target makes a host file of that name. */
bool bdrv_create_target_is_host_file(const char *filename);
/* QEMU's error for a target that is not a host file and too short. */
void bdrv_create_target_cannot_grow(const char *filename, GError **errp);
/* Opens what bdrv_create_target prepared, through its protocol. */
BlockDriverState *bdrv_create_target_open(const char *filename, int flags,
                                          GError **errp);
/* preallocation=falloc|full: allocates (falloc) or writes zeroes into
 * (full) every hole of the host file under bs in [start, len); data
 * already there is untouched.  0 or -errno. */
int file_preallocate(BlockDriverState *bs, int64_t start, int64_t len,
                     bool full);
/* file_create_with_size, then the preallocation opts ask for. */
bool file_create_prealloc(const char *filename, BlockOpts *opts,
                          uint64_t size, GError **errp);
/* Parses a host file's preallocation option (off, falloc, full) with
 * QEMU's texts; *full tells falloc from full, *on whether any. */
bool file_parse_prealloc(BlockOpts *opts, bool *on, bool *full,
                         GError **errp);

#endif
