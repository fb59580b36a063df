/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Devices: a guest's disk, opened from the same options as
 * strata-daemon's --blockdev (QEMU's keyval text or a JSON object), and
 * synchronous guest I/O on it.
 *
 * Errors: functions taking GError **errp return false/NULL and set it
 * (domain and text as the QMP monitor reports them, QEMU 7.2's words
 * where QEMU has the case).  I/O functions return 0 or a negative errno
 * (-EIO for a request outside the device, the image's error otherwise).
 *
 * Threads: the I/O calls may be made from any number of threads at once
 * on the same device, also while a transaction (strata/transaction.h)
 * runs: a transaction holds new requests until it is done, it never
 * fails them.  Open and close are monitor operations: make them from one
 * thread at a time (the same thread as strata/monitor.h's calls).
 */
#ifndef STRATA_PUBLIC_DEVICE_H
#define STRATA_PUBLIC_DEVICE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <glib.h>

G_BEGIN_DECLS

typedef struct StrataDevice StrataDevice;

/*
 * Opens a node graph as blockdev-add does and returns a device on its
 * root.  options is either keyval text
 *     "driver=qcow2,node-name=disk0,file.driver=file,file.filename=a.qcow2"
 * or a JSON object (the text starts with '{'), checked against QEMU's
 * BlockdevOptions schema.  node-name is required: it names the device in
 * transactions and QMP commands.  The image is opened read-write and
 * locked.  Returns a handle the caller owns (strata_device_close()), or
 * NULL with errp set (bad syntax, unknown driver, missing file, lock held
 * by another process...).
 */
StrataDevice *strata_device_open(const char *options, GError **errp);

/*
 * Waits for nothing: the caller must have no request in flight on dev
 * (synchronous or submitted to a queue).  Frees the handle in every case
 * and then removes the node graph the open created (QMP blockdev-del):
 * images flushed, closed and unlocked.  Returns false with errp set if
 * the node could not be removed (e.g. an external snapshot made it the
 * backing of another node: "Node 'x' is busy: ..."); it then stays open
 * until strata_shutdown() or a QMP blockdev-del.
 */
bool strata_device_close(StrataDevice *dev, GError **errp);

/* The node-name given at open (owned by dev). */
const char *strata_device_node_name(StrataDevice *dev);

/* Size of the guest-visible disk in bytes, or a negative errno. */
int64_t strata_device_get_length(StrataDevice *dev);

/* Flags of writes and zero writes. */
#define STRATA_IO_FUA        0x1  /* on stable storage when the call returns */
#define STRATA_IO_MAY_UNMAP  0x2  /* zero writes: the range may be deallocated */

/* Reads bytes at offset into buf (bytes long). */
int strata_device_pread(StrataDevice *dev, int64_t offset, size_t bytes,
                        void *buf);
/* Writes; flags: STRATA_IO_FUA. */
int strata_device_pwrite(StrataDevice *dev, int64_t offset, size_t bytes,
                         const void *buf, unsigned flags);
/* Zeroes a range; flags: STRATA_IO_FUA, STRATA_IO_MAY_UNMAP. */
int strata_device_write_zeroes(StrataDevice *dev, int64_t offset,
                               size_t bytes, unsigned flags);
/* Discards a range (a hint: reads may return old data or zeroes). */
int strata_device_discard(StrataDevice *dev, int64_t offset, size_t bytes);
/* Makes every completed write stable. */
int strata_device_flush(StrataDevice *dev);

/*
 * Write cache on (the default: completed writes are stable after a
 * flush) or off (write-through: every write is stable on completion).
 */
void strata_device_set_write_cache(StrataDevice *dev, bool enable);

G_END_DECLS

#endif
