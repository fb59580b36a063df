/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The VM-state callbacks of the public API over blockdev/vmstate.h.  The
 * public reader and writer are the internal ones under public names (the
 * handles are never dereferenced here), and the handler is forwarded
 * through a small table so the public signatures (bool) stay independent
 * of the internal ones (gboolean).
 *
 * Built only once blockdev/vmstate.c (issue 12) is part of the library:
 * api/meson.build adds this file then.
 */
#include <string.h>

#include "api-int.h"
#include "blockdev/vmstate.h"

static StrataVmStateHandler handler;
static void *handler_opaque;

static gboolean save_cb(BlkVmStateWriter *w, void *opaque, GError **errp)
{
    return handler.save((StrataVmStateWriter *)w, handler_opaque, errp);
}

static gboolean load_cb(BlkVmStateReader *r, uint64_t size, void *opaque,
                        GError **errp)
{
    return handler.load((StrataVmStateReader *)r, size, handler_opaque,
                        errp);
}

void strata_vmstate_set_handler(const StrataVmStateHandler *h, void *opaque)
{
    static const BlkVmStateHandler forward = {
        .save = save_cb,
        .load = load_cb,
    };

    if (!h) {
        blk_vmstate_set_handler(NULL, NULL);
        memset(&handler, 0, sizeof(handler));
        handler_opaque = NULL;
        return;
    }
    handler = *h;
    handler_opaque = opaque;
    blk_vmstate_set_handler(&forward, NULL);
}

bool strata_vmstate_write(StrataVmStateWriter *w, const void *buf,
                          size_t len, GError **errp)
{
    return blk_vmstate_write((BlkVmStateWriter *)w, buf, len, errp);
}

bool strata_vmstate_read(StrataVmStateReader *r, void *buf, size_t len,
                         GError **errp)
{
    return blk_vmstate_read((BlkVmStateReader *)r, buf, len, errp);
}
