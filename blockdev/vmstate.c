/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * VM state of whole-machine snapshots (interface: blockdev/vmstate.h;
 * the savevm / loadvm side: blockdev/vmstate-int.h).
 *
 * The state goes where QEMU puts it in qcow2: the vmstate disk's vm-state
 * area, past the guest-visible disk (bdrv_save_vmstate), written into the
 * ACTIVE image just before the transaction; the snapshot's create then
 * copies the L1 table that maps it, and records its size.  A load reverts
 * first, after which the active image maps the snapshot's area, and
 * reads it from there.  This is the order QEMU uses, so images carry the
 * same layout either way (only the bytes are the hypervisor's own).
 */
#include <errno.h>

#include "block/log.h"
#include "blockdev/vmstate-int.h"
#include "blockdev/registry.h"

struct BlkVmStateWriter {
    BlockDriverState *bs;
    uint64_t pos;
};

struct BlkVmStateReader {
    BlockDriverState *bs;
    uint64_t pos;
    uint64_t size;
};

static BlkVmStateHandler handler;
static void *handler_opaque;
static gboolean handler_set;

/* The save in progress (main loop only): its disk and state size. */
static BlockDriverState *pending_bs;
static uint64_t pending_size;

void blk_vmstate_set_handler(const BlkVmStateHandler *h, void *opaque)
{
    handler_set = h != NULL;
    handler = h ? *h : (BlkVmStateHandler){ 0 };
    handler_opaque = h ? opaque : NULL;
}

gboolean blk_vmstate_has_handler(void)
{
    return handler_set;
}

gboolean blk_vmstate_write(BlkVmStateWriter *w, const void *buf, size_t len,
                           GError **errp)
{
    int ret;

    if (len > (size_t)INT64_MAX - w->pos) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "VM state too large");
        return FALSE;
    }
    ret = bdrv_save_vmstate(w->bs, buf, (int64_t)w->pos, (int64_t)len);
    if (ret < 0) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_IO,
                    "Could not write the VM state of '%s': %s",
                    bdrv_get_node_name(w->bs), g_strerror(-ret));
        return FALSE;
    }
    w->pos += len;
    return TRUE;
}

gboolean blk_vmstate_read(BlkVmStateReader *r, void *buf, size_t len,
                          GError **errp)
{
    int ret;

    if (len > r->size - r->pos) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "Reading past the end of the VM state (%" G_GUINT64_FORMAT
                    " bytes)", r->size);
        return FALSE;
    }
    ret = bdrv_load_vmstate(r->bs, buf, (int64_t)r->pos, (int64_t)len);
    if (ret < 0) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_IO,
                    "Could not read the VM state of '%s': %s",
                    bdrv_get_node_name(r->bs), g_strerror(-ret));
        return FALSE;
    }
    r->pos += len;
    return TRUE;
}

uint64_t blk_vmstate_pending_size(BlockDriverState *bs)
{
    return bs && bs == pending_bs ? pending_size : 0;
}

gboolean blk_vmstate_save_around(BlockDriverState *vm_bs,
                                 BlkVmStateRunFunc *run, void *opaque,
                                 GError **errp)
{
    BlkVmStateWriter w = { .bs = vm_bs };
    gboolean ok;

    if (!handler_set || !vm_bs) {
        return run(opaque, errp);
    }
    /* the guest's writes must not race the handler's view of the disk */
    bdrv_drained_begin(vm_bs);
    ok = handler.save(&w, handler_opaque, errp);
    bdrv_drained_end(vm_bs);
    if (!ok) {
        if (errp && !*errp) {
            g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                        "The VM state handler failed");
        }
        return FALSE;
    }
    pending_bs = vm_bs;
    pending_size = w.pos;
    ok = run(opaque, errp);
    pending_bs = NULL;
    pending_size = 0;
    /* On failure the bytes stay in the active image's vm-state area,
     * which the guest cannot see; the next save overwrites them. */
    return ok;
}

gboolean blk_vmstate_check_load(const char *tag, const char *device,
                                uint64_t vm_size, GError **errp)
{
    if (!handler_set && vm_size) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "Snapshot '%s' on '%s' holds VM state, which no VM "
                    "state handler can restore; it is not loaded disk-only",
                    tag, device);
        return FALSE;
    }
    if (handler_set && !vm_size) {
        /* QEMU's text, two spaces included */
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                    "This is a disk-only snapshot. Revert to it  offline "
                    "using qemu-img");
        return FALSE;
    }
    return TRUE;
}

gboolean blk_vmstate_load_around(BlockDriverState *vm_bs, uint64_t vm_size,
                                 BlkVmStateRunFunc *run, void *opaque,
                                 GError **errp)
{
    BlkVmStateReader r = { .bs = vm_bs, .size = vm_size };

    if (!run(opaque, errp)) {
        return FALSE;
    }
    if (!handler_set || !vm_bs || !vm_size) {
        return TRUE;
    }
    if (!handler.load(&r, vm_size, handler_opaque, errp)) {
        if (errp && !*errp) {
            g_set_error(errp, BDRV_ERROR, BDRV_ERROR_GENERIC,
                        "The VM state handler failed to load the state");
        }
        return FALSE;
    }
    return TRUE;
}
