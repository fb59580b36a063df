/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Devices of the public API: strata_device_open() is blockdev-add (the
 * monitor's own parsing and checks, keyval or JSON, so an embedding
 * program and strata-daemon accept the same options), the handle is the
 * node's anonymous device, and the I/O calls are the device layer's.
 */
#include <errno.h>
#include <string.h>

#include "api-int.h"
#include "monitor/monitor.h"
#include "monitor/keyval.h"
#include "monitor/json-stream.h"
#include "blockdev/registry.h"

/* The node-name member of parsed options, or NULL. */
static const char *options_node_name(JsonNode *options)
{
    JsonObject *o;
    JsonNode *m;

    if (!JSON_NODE_HOLDS_OBJECT(options)) {
        return NULL;
    }
    o = json_node_get_object(options);
    m = json_object_get_member(o, "node-name");
    if (!m || !JSON_NODE_HOLDS_VALUE(m) ||
        json_node_get_value_type(m) != G_TYPE_STRING) {
        return NULL;
    }
    return json_node_get_string(m);
}

/* The device blockdev-add gave the node (a new reference), or NULL. */
static BlockBackend *device_of_node(const char *node_name)
{
    g_autoptr(BlockDriverState) bs = blockdev_find_node(node_name);
    g_autoptr(GPtrArray) devs = blockdev_list_devices();

    for (guint i = 0; bs && i < devs->len; i++) {
        BlockBackend *blk = g_ptr_array_index(devs, i);
        if (blk_bs(blk) == bs) {
            blk_ref(blk);
            return blk;
        }
    }
    return NULL;
}

StrataDevice *strata_device_open(const char *options, GError **errp)
{
    g_autoptr(JsonNode) node = NULL;
    bool keyval;
    const char *name;
    StrataDevice *dev;
    BlockBackend *blk;

    g_return_val_if_fail(options, NULL);
    keyval = options[0] != '{';
    node = keyval ? monitor_keyval_parse(options, "driver", errp)
                  : json_stream_parse_text(options, errp);
    if (!node) {
        return NULL;
    }
    api_monitor_lock();
    if (!monitor_blockdev_add(node, keyval, errp)) {
        api_monitor_unlock();
        return NULL;
    }
    /* blockdev-add refuses options without a node-name, so there is one */
    name = options_node_name(node);
    blk = name ? device_of_node(name) : NULL;
    api_monitor_unlock();
    if (!blk) {
        g_set_error(errp, BLOCKDEV_ERROR, BLOCKDEV_ERROR_GENERIC,
                    "internal error: no device for node '%s'",
                    name ? name : "");
        return NULL;
    }
    dev = g_new0(StrataDevice, 1);
    dev->blk = blk;
    dev->node_name = g_strdup(name);
    return dev;
}

bool strata_device_close(StrataDevice *dev, GError **errp)
{
    g_autofree char *req = NULL;
    g_autoptr(JsonNode) reply = NULL;
    g_autoptr(GError) parse_err = NULL;
    g_autoptr(JsonNode) request = NULL;
    g_autoptr(JsonBuilder) b = json_builder_new();
    g_autoptr(BlockDriverState) still = NULL;
    JsonObject *r;

    if (!dev) {
        return true;
    }
    /* Our reference first: the node's last user must be the monitor for
     * blockdev-del to close the image. */
    blk_unref(dev->blk);
    json_builder_begin_object(b);
    json_builder_set_member_name(b, "execute");
    json_builder_add_string_value(b, "blockdev-del");
    json_builder_set_member_name(b, "arguments");
    json_builder_begin_object(b);
    json_builder_set_member_name(b, "node-name");
    json_builder_add_string_value(b, dev->node_name);
    json_builder_end_object(b);
    json_builder_end_object(b);
    request = json_builder_get_root(b);

    api_monitor_lock();
    still = blockdev_find_node(dev->node_name);
    /* after strata_shutdown() the node is gone already: only free */
    reply = still ? monitor_handle_request(request, NULL) : NULL;
    api_monitor_unlock();
    r = reply ? json_node_get_object(reply) : NULL;
    if (r && json_object_has_member(r, "error")) {
        JsonObject *e = json_object_get_object_member(r, "error");
        g_set_error_literal(errp, BLOCKDEV_ERROR, BLOCKDEV_ERROR_GENERIC,
                            json_object_get_string_member(e, "desc"));
    }
    g_free(dev->node_name);
    g_free(dev);
    return !r || !json_object_has_member(r, "error");
}

const char *strata_device_node_name(StrataDevice *dev)
{
    return dev->node_name;
}

int64_t strata_device_get_length(StrataDevice *dev)
{
    return blk_getlength(dev->blk);
}

/* The device layer takes int64_t lengths; a size_t beyond them is not a
 * request anybody can satisfy. */
static bool bytes_ok(size_t bytes)
{
    return bytes <= INT64_MAX;
}

static int blk_flags(unsigned flags)
{
    return ((flags & STRATA_IO_FUA) ? BLK_REQ_FUA : 0) |
           ((flags & STRATA_IO_MAY_UNMAP) ? BDRV_REQ_MAY_UNMAP : 0);
}

int strata_device_pread(StrataDevice *dev, int64_t offset, size_t bytes,
                        void *buf)
{
    return bytes_ok(bytes) ? blk_pread(dev->blk, offset, bytes, buf)
                           : -EINVAL;
}

int strata_device_pwrite(StrataDevice *dev, int64_t offset, size_t bytes,
                         const void *buf, unsigned flags)
{
    if (!bytes_ok(bytes) || (flags & ~STRATA_IO_FUA)) {
        return -EINVAL;
    }
    return blk_pwrite_flags(dev->blk, offset, bytes, buf, blk_flags(flags));
}

int strata_device_write_zeroes(StrataDevice *dev, int64_t offset,
                               size_t bytes, unsigned flags)
{
    if (!bytes_ok(bytes) || (flags & ~(STRATA_IO_FUA | STRATA_IO_MAY_UNMAP))) {
        return -EINVAL;
    }
    return blk_pwrite_zeroes(dev->blk, offset, bytes, blk_flags(flags));
}

int strata_device_discard(StrataDevice *dev, int64_t offset, size_t bytes)
{
    return bytes_ok(bytes) ? blk_pdiscard(dev->blk, offset, bytes) : -EINVAL;
}

int strata_device_flush(StrataDevice *dev)
{
    return blk_flush(dev->blk);
}

void strata_device_set_write_cache(StrataDevice *dev, bool enable)
{
    blk_set_enable_write_cache(dev->blk, enable);
}
