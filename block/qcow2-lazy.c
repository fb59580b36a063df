/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Lazy refcounts (qcow2 v3 compatible feature bit 0, QEMU's
 * lazy_refcounts / lazy-refcounts) and the dirty bit that makes them safe.
 *
 * With lazy refcounts, L2 tables may reach the disk before the refcounts
 * of the clusters they point at, and a guest flush writes no refcount
 * blocks at all.  Before the first such write the dirty bit (incompatible
 * feature bit 0) is set and synced; a clean close writes everything back
 * and clears it again.  An image found dirty on a read-write open had a
 * crash with counts that may be stale: its refcounts are repaired (the
 * check with -r all) before anything else can write, as QEMU does.
 *
 * All functions here expect the caller to hold s->free_lock (writer) and
 * s->lock unless they say otherwise.
 */
#include <errno.h>

#include "qcow2.h"
#include "block/log.h"

static int write_incompat(BlockDriverState *bs, uint64_t bits)
{
    uint64_t be = GUINT64_TO_BE(bits);

    /* qcow2_write_header_bytes syncs after the write. */
    return qcow2_write_header_bytes(bs, QCOW2_HDR_INCOMPAT_OFF, &be, 8);
}

int qcow2_mark_dirty(BlockDriverState *bs)
{
    BDRVQcow2State *s = bs->opaque;
    int ret;

    if (s->version < 3) {
        return -ENOTSUP;   /* no feature bits before v3 */
    }
    if (s->incompatible_features & QCOW2_INCOMPAT_DIRTY) {
        return 0;
    }
    ret = write_incompat(bs, s->incompatible_features | QCOW2_INCOMPAT_DIRTY);
    if (ret < 0) {
        return ret;
    }
    /* Only once the bit is durable may writes skip refcount ordering. */
    s->incompatible_features |= QCOW2_INCOMPAT_DIRTY;
    s->dirtied_here = true;
    return 0;
}

int qcow2_mark_clean(BlockDriverState *bs)
{
    BDRVQcow2State *s = bs->opaque;
    int ret;

    /* A dirty bit this open did not set belongs to a repair (check -r
     * opened the image as it found it): only the check may clear it. */
    if (!(s->incompatible_features & QCOW2_INCOMPAT_DIRTY) ||
        !s->dirtied_here) {
        return 0;
    }
    ret = qcow2_write_back_metadata(bs);
    if (ret == 0) {
        ret = bdrv_flush(bs->file);
    }
    if (ret == 0) {
        ret = write_incompat(bs,
                             s->incompatible_features & ~QCOW2_INCOMPAT_DIRTY);
    }
    if (ret < 0) {
        return ret;
    }
    s->incompatible_features &= ~QCOW2_INCOMPAT_DIRTY;
    s->dirtied_here = false;
    return 0;
}

int qcow2_lazy_write_back(BlockDriverState *bs)
{
    BDRVQcow2State *s = bs->opaque;
    int ret;

    /* Frees must reach the refcounts only after the pointers are gone:
     * the full write-back keeps that order. */
    /* With no refcount block to hold back there is nothing to gain: the
     * dirty bit is set only when a write needs it, as QEMU sets it only
     * before an L2 update (a flush after reads leaves the header alone) */
    if (!s->rt.lazy_refcounts || s->pending_frees->len ||
        !qcow2_cache_has_dirty(s->refcount_cache)) {
        return qcow2_write_back_metadata(bs);
    }
    ret = qcow2_mark_dirty(bs);
    if (ret < 0) {
        return qcow2_write_back_metadata(bs);
    }
    /* L2 tables only; qcow2_before_l2_write sees the dirty bit and does
     * not wait for the refcount blocks, which stay in their cache. */
    return qcow2_cache_write(bs, s->l2_cache);
}

int qcow2_repair_dirty(BlockDriverState *bs, int flags, GError **errp)
{
    BDRVQcow2State *s = bs->opaque;
    BdrvCheckResult res = { 0 };
    int ret;

    if (!(flags & BDRV_O_RDWR) || (flags & BDRV_O_CHECK) ||
        !(s->incompatible_features & QCOW2_INCOMPAT_DIRTY)) {
        return 0;
    }
    /* The check takes the locks itself and, when it repaired everything,
     * clears the dirty bit. */
    ret = qcow2_check(bs, &res, BDRV_FIX_ERRORS | BDRV_FIX_LEAKS);
    g_mutex_lock(&s->lock);
    qcow2_overlap_invalidate(s);
    g_mutex_unlock(&s->lock);
    if (ret < 0 || res.check_errors ||
        (s->incompatible_features & QCOW2_INCOMPAT_DIRTY)) {
        if (ret >= 0) {
            ret = -EIO;
        }
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_IO,
                    "Could not repair dirty image: %s", g_strerror(-ret));
        return ret;
    }
    return 0;
}
