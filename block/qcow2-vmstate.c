/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The qcow2 VM state area: where a savevm stores the machine's state
 * beside the disk.  It lies in the image's guest address space just past
 * the disk, from the first L1 entry the disk does not use (so the guest
 * can never reach it), and is read and written like guest data through
 * the cluster code.  qemu-io's read -b / write -b reach it; so will a
 * savevm that stores state.
 */
#include <errno.h>

#include "qcow2.h"

/* Byte offset of the area: the disk rounded up to a whole L1 entry. */
static uint64_t vm_state_offset(BDRVQcow2State *s)
{
    return qcow2_l1_entries_for(s, s->size) <<
           (s->cluster_bits + s->l2_bits);
}

static int vmstate_range(BDRVQcow2State *s, int64_t pos, int64_t size,
                         uint64_t *start)
{
    uint64_t off;

    if (pos < 0 || size < 0) {
        return -EINVAL;
    }
    off = vm_state_offset(s) + (uint64_t)pos;
    if (off < (uint64_t)pos || off + (uint64_t)size < off ||
        off + (uint64_t)size > QCOW2_MAX_HOST_OFFSET) {
        return -EINVAL;
    }
    *start = off;
    return 0;
}

int qcow2_save_vmstate(BlockDriverState *bs, const void *buf, int64_t pos,
                       int64_t size)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t off;
    int ret = vmstate_range(s, pos, size, &off);

    if (ret < 0 || size == 0) {
        return ret;
    }
    if (bs->read_only) {
        return -EACCES;
    }
    /* The L1 table must reach the area before anything is mapped there. */
    g_rw_lock_writer_lock(&s->free_lock);
    g_mutex_lock(&s->lock);
    ret = qcow2_grow_l1_table(bs, qcow2_l1_entries_for(s, off + size));
    g_mutex_unlock(&s->lock);
    g_rw_lock_writer_unlock(&s->free_lock);
    if (ret < 0) {
        return ret;
    }
    return qcow2_pwrite_any(bs, (int64_t)off, size, buf);
}

int qcow2_load_vmstate(BlockDriverState *bs, void *buf, int64_t pos,
                       int64_t size)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t off;
    int ret = vmstate_range(s, pos, size, &off);

    if (ret < 0 || size == 0) {
        return ret;
    }
    /* Past the L1 table nothing is mapped: the lookup reads zeroes. */
    return qcow2_pread_any(bs, (int64_t)off, size, buf);
}
