/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * A bounded write-back cache of cluster-sized metadata tables (L2 tables,
 * refcount blocks), least recently used first out.  Table memory is
 * allocated on first use, so a cache sized for a huge image costs nothing
 * until the image is actually used.  Callers hold the qcow2 lock.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "qcow2.h"

typedef struct Qcow2CacheEntry {
    uint64_t offset;   /* 0: slot unused */
    void *table;
    bool dirty;
    uint64_t lru;
} Qcow2CacheEntry;

struct Qcow2Cache {
    Qcow2CacheEntry *entries;
    int size;
    uint32_t table_size;
    uint64_t lru_counter;
    int last;              /* slot of the latest get: mark_dirty's hint */
    GHashTable *index;     /* offset -> slot + 1 */
    int (*before_write)(BlockDriverState *bs);
    uint32_t ol_type;      /* QCOW2_OL_* of the tables (overlap check) */
    /* cache-clean-interval: clean tables unused for a whole interval give
     * their memory back (0: never). */
    int64_t clean_interval_us;
    int64_t last_clean_us;
    uint64_t lru_at_last_clean;
    /* a snapshot pre-copy's dirty log (qcow2-precopy.c): offsets of the
     * tables changed since it looked at them; NULL: none */
    GHashTable *dirty_log;
};

void qcow2_cache_set_dirty_log(Qcow2Cache *c, GHashTable *log)
{
    c->dirty_log = log;
}

static void log_dirty(Qcow2Cache *c, Qcow2CacheEntry *e)
{
    if (c->dirty_log) {
        g_hash_table_add(c->dirty_log, g_memdup2(&e->offset, 8));
    }
}

Qcow2Cache *qcow2_cache_new(int num_tables, uint32_t table_size,
                            int (*before_write)(BlockDriverState *bs))
{
    Qcow2Cache *c = g_new0(Qcow2Cache, 1);

    c->size = num_tables;
    c->table_size = table_size;
    c->entries = g_new0(Qcow2CacheEntry, num_tables);
    c->index = g_hash_table_new(g_int64_hash, g_int64_equal);
    c->before_write = before_write;
    return c;
}

void qcow2_cache_set_overlap_type(Qcow2Cache *c, uint32_t type)
{
    c->ol_type = type;
}

void qcow2_cache_set_clean_interval(Qcow2Cache *c, uint64_t seconds)
{
    c->clean_interval_us = (int64_t)MIN(seconds, (uint64_t)INT32_MAX) *
                           G_USEC_PER_SEC;
    c->last_clean_us = g_get_monotonic_time();
    c->lru_at_last_clean = c->lru_counter;
}

/*
 * QEMU cleans on a timer; we have no event loop, so the cache looks at
 * the clock when it is used.  A clean table not used since the last
 * clean is dropped and its memory freed; dirty ones stay until written.
 */
static void cache_clean_unused(Qcow2Cache *c)
{
    int64_t now;

    if (!c->clean_interval_us) {
        return;
    }
    now = g_get_monotonic_time();
    if (now - c->last_clean_us < c->clean_interval_us) {
        return;
    }
    for (int i = 0; i < c->size; i++) {
        Qcow2CacheEntry *e = &c->entries[i];
        if (e->offset && !e->dirty && e->lru <= c->lru_at_last_clean) {
            g_hash_table_remove(c->index, &e->offset);
            e->offset = 0;
        }
        if (!e->offset && e->table) {
            free(e->table);
            e->table = NULL;
        }
    }
    c->last_clean_us = now;
    c->lru_at_last_clean = c->lru_counter;
}

void qcow2_cache_destroy(Qcow2Cache *c)
{
    if (!c) {
        return;
    }
    for (int i = 0; i < c->size; i++) {
        free(c->entries[i].table);
    }
    g_hash_table_destroy(c->index);
    g_free(c->entries);
    g_free(c);
}

static int entry_write(BlockDriverState *bs, Qcow2Cache *c,
                       Qcow2CacheEntry *e)
{
    int ret;

    if (!e->dirty) {
        return 0;
    }
    if (c->before_write) {
        ret = c->before_write(bs);
        if (ret < 0) {
            return ret;
        }
    }
    if (e->offset == 0) {
        /* Never overwrite the header, whatever the tables say. */
        return -EIO;
    }
    bdrv_debug_event(bs->file, c->ol_type == QCOW2_OL_ACTIVE_L2 ? "l2_update" : "refblock_update_part");
    ret = qcow2_overlap_pwrite(bs, c->ol_type, e->offset, c->table_size,
                               e->table);
    if (ret < 0) {
        return ret;
    }
    e->dirty = false;
    return 0;
}

int qcow2_cache_write(BlockDriverState *bs, Qcow2Cache *c)
{
    /* Write in offset order: friendlier to the disk, and deterministic. */
    bool any = false;
    int ret = 0;

    for (int i = 0; i < c->size; i++) {
        if (c->entries[i].dirty) {
            any = true;
            break;
        }
    }
    if (!any) {
        return 0;
    }
    for (;;) {
        Qcow2CacheEntry *next = NULL;
        for (int i = 0; i < c->size; i++) {
            Qcow2CacheEntry *e = &c->entries[i];
            if (e->dirty && (!next || e->offset < next->offset)) {
                next = e;
            }
        }
        if (!next) {
            break;
        }
        ret = entry_write(bs, c, next);
        if (ret < 0) {
            return ret;
        }
    }
    return 0;
}

int qcow2_cache_write_table(BlockDriverState *bs, Qcow2Cache *c,
                            uint64_t offset)
{
    gpointer slotp = g_hash_table_lookup(c->index, &offset);

    if (!slotp) {
        return 0;
    }
    return entry_write(bs, c, &c->entries[GPOINTER_TO_INT(slotp) - 1]);
}

bool qcow2_cache_has_dirty(Qcow2Cache *c)
{
    for (int i = 0; i < c->size; i++) {
        if (c->entries[i].dirty) {
            return true;
        }
    }
    return false;
}

static int cache_find_slot(BlockDriverState *bs, Qcow2Cache *c)
{
    int victim = -1;
    int ret;

    for (int i = 0; i < c->size; i++) {
        if (c->entries[i].offset == 0) {
            return i;
        }
        if (victim < 0 || c->entries[i].lru < c->entries[victim].lru) {
            victim = i;
        }
    }
    ret = entry_write(bs, c, &c->entries[victim]);
    if (ret < 0) {
        return ret;
    }
    g_hash_table_remove(c->index, &c->entries[victim].offset);
    c->entries[victim].offset = 0;
    return victim;
}

static int cache_do_get(BlockDriverState *bs, Qcow2Cache *c, uint64_t offset,
                        void **table, bool read_from_disk)
{
    gpointer slotp;
    Qcow2CacheEntry *e;
    int slot, ret;

    cache_clean_unused(c);
    slotp = g_hash_table_lookup(c->index, &offset);
    if (slotp) {
        c->last = GPOINTER_TO_INT(slotp) - 1;
        e = &c->entries[c->last];
        e->lru = ++c->lru_counter;
        *table = e->table;
        return 0;
    }
    if (offset & (c->table_size - 1)) {
        /* Tables start on a cluster: only a corrupt entry (a refcount
         * table entry, which the open lets through as QEMU does) names
         * such an offset.  Refused here, for every user of the cache. */
        qcow2_signal_unaligned_table(bs, c->ol_type, offset);
        return -EIO;
    }
    slot = cache_find_slot(bs, c);
    if (slot < 0) {
        return slot;
    }
    e = &c->entries[slot];
    if (!e->table) {
        if (posix_memalign(&e->table, 4096, c->table_size) != 0) {
            e->table = NULL;
            return -ENOMEM;
        }
    }
    if (read_from_disk) {
        /* QEMU's l2_load comes with the read; its refblock_load comes
         * with every refcount change, cached or not (qcow2-refcount.c) */
        if (c->ol_type == QCOW2_OL_ACTIVE_L2) {
            bdrv_debug_event(bs->file, "l2_load");
        }
        ret = bdrv_pread(bs->file, offset, c->table_size, e->table);
        if (ret < 0) {
            return ret;
        }
    } else {
        memset(e->table, 0, c->table_size);
    }
    c->last = slot;
    e->offset = offset;
    e->dirty = false;
    e->lru = ++c->lru_counter;
    g_hash_table_insert(c->index, &e->offset, GINT_TO_POINTER(slot + 1));
    *table = e->table;
    return 0;
}

int qcow2_cache_get(BlockDriverState *bs, Qcow2Cache *c, uint64_t offset,
                    void **table)
{
    return cache_do_get(bs, c, offset, table, true);
}

int qcow2_cache_get_empty(BlockDriverState *bs, Qcow2Cache *c,
                          uint64_t offset, void **table)
{
    return cache_do_get(bs, c, offset, table, false);
}

int qcow2_cache_mark_dirty(Qcow2Cache *c, void *table)
{
    if (c->entries[c->last].table == table && c->entries[c->last].offset) {
        c->entries[c->last].dirty = true;
        log_dirty(c, &c->entries[c->last]);
        return 0;
    }
    for (int i = 0; i < c->size; i++) {
        if (c->entries[i].table == table && c->entries[i].offset) {
            c->entries[i].dirty = true;
            log_dirty(c, &c->entries[i]);
            return 0;
        }
    }
    /* The table went away under its user: only metadata pointing at
     * itself (a cluster freed or reused while in use) gets here. */
    return -EIO;
}

void qcow2_cache_discard(Qcow2Cache *c, uint64_t offset)
{
    gpointer slotp = g_hash_table_lookup(c->index, &offset);

    if (slotp) {
        Qcow2CacheEntry *e = &c->entries[GPOINTER_TO_INT(slotp) - 1];
        g_hash_table_remove(c->index, &e->offset);
        e->offset = 0;
        e->dirty = false;
    }
}

void qcow2_cache_discard_all(Qcow2Cache *c)
{
    g_hash_table_remove_all(c->index);
    for (int i = 0; i < c->size; i++) {
        c->entries[i].offset = 0;
        c->entries[i].dirty = false;
    }
}
