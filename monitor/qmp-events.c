/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The QMP event queue (see qmp-events.h): job threads and I/O threads
 * queue, the main loop delivers.  An event's timestamp is the moment it
 * was queued, as QEMU stamps its events when they happen.
 */
#include <string.h>

#include "monitor/qmp-events.h"
#include "blockdev/registry.h"

typedef struct QueuedItem {
    JsonNode *event;                 /* a complete event message, or */
    void (*fn)(void *opaque);        /* work for the main loop */
    void *opaque;
} QueuedItem;

static GMutex queue_lock;
static GQueue queue = G_QUEUE_INIT;  /* QueuedItem *, under queue_lock */
static bool delivery_scheduled;      /* under queue_lock */

static JsonNode *event_message(const char *name, JsonNode *data)
{
    g_autoptr(JsonBuilder) b = json_builder_new();
    int64_t now = g_get_real_time();

    json_builder_begin_object(b);
    json_builder_set_member_name(b, "timestamp");
    json_builder_begin_object(b);
    json_builder_set_member_name(b, "seconds");
    json_builder_add_int_value(b, now / G_USEC_PER_SEC);
    json_builder_set_member_name(b, "microseconds");
    json_builder_add_int_value(b, now % G_USEC_PER_SEC);
    json_builder_end_object(b);
    json_builder_set_member_name(b, "event");
    json_builder_add_string_value(b, name);
    if (data) {
        json_builder_set_member_name(b, "data");
        json_builder_add_value(b, data);
    }
    json_builder_end_object(b);
    return json_builder_get_root(b);
}

static gboolean deliver(gpointer opaque)
{
    qmp_events_flush();
    return G_SOURCE_REMOVE;
}

static void enqueue(QueuedItem *item)
{
    g_mutex_lock(&queue_lock);
    g_queue_push_tail(&queue, item);
    if (!delivery_scheduled) {
        delivery_scheduled = true;
        /* Attaches to the default context, from any thread; at the
         * priority of client input, so that a client sending command
         * after command does not hold the events back. */
        g_idle_add_full(G_PRIORITY_DEFAULT, deliver, NULL, NULL);
    }
    g_mutex_unlock(&queue_lock);
}

void qmp_event_emit(const char *name, JsonNode *data)
{
    QueuedItem *item = g_new0(QueuedItem, 1);

    item->event = event_message(name, data);
    enqueue(item);
}

void qmp_event_call(void (*fn)(void *opaque), void *opaque)
{
    QueuedItem *item = g_new0(QueuedItem, 1);

    item->fn = fn;
    item->opaque = opaque;
    enqueue(item);
}

void qmp_events_flush(void)
{
    for (;;) {
        QueuedItem *item;

        g_mutex_lock(&queue_lock);
        item = g_queue_pop_head(&queue);
        if (!item) {
            delivery_scheduled = false;
        }
        g_mutex_unlock(&queue_lock);
        if (!item) {
            return;
        }
        /* The lock is not held here: work may queue more events. */
        if (item->event) {
            monitor_broadcast(item->event);
            json_node_unref(item->event);
        } else {
            item->fn(item->opaque);
        }
        g_free(item);
    }
}

void qmp_event_shutdown(const char *reason)
{
    g_autoptr(JsonBuilder) b = json_builder_new();

    json_builder_begin_object(b);
    json_builder_set_member_name(b, "guest");
    json_builder_add_boolean_value(b, FALSE);
    json_builder_set_member_name(b, "reason");
    json_builder_add_string_value(b, reason);
    json_builder_end_object(b);
    qmp_event_emit("SHUTDOWN", json_builder_get_root(b));
}

/* Any thread (the one whose I/O found the corruption). */
static void corruption_found(BlockDriverState *bs, const char *msg,
                             bool fatal, void *opaque)
{
    g_autoptr(JsonBuilder) b = json_builder_new();
    g_autoptr(GPtrArray) devs = blockdev_list_devices();
    const char *device = "";

    /* QEMU names the device the node is attached to ("" for none, as
     * every node of qemu-storage-daemon). */
    for (guint i = 0; i < devs->len; i++) {
        BlockBackend *blk = g_ptr_array_index(devs, i);
        if (blk_bs(blk) == bs && *blk_name(blk)) {
            device = blk_name(blk);
            break;
        }
    }
    json_builder_begin_object(b);
    json_builder_set_member_name(b, "device");
    json_builder_add_string_value(b, device);
    json_builder_set_member_name(b, "node-name");
    json_builder_add_string_value(b, bdrv_get_node_name(bs));
    json_builder_set_member_name(b, "msg");
    json_builder_add_string_value(b, msg);
    json_builder_set_member_name(b, "fatal");
    json_builder_add_boolean_value(b, fatal);
    json_builder_end_object(b);
    qmp_event_emit("BLOCK_IMAGE_CORRUPTED", json_builder_get_root(b));
}

void qmp_events_watch_corruption(void)
{
    bdrv_set_corruption_notifier(corruption_found, NULL);
}
