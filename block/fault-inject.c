/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The process-wide fault injector of the file driver (see
 * include/block/fault-inject.h).
 */
#include <errno.h>

#include "block/fault-inject.h"

static GMutex lock;
static gint armed;                 /* read without the lock on the fast path */
static FaultKind armed_kind;
static uint64_t armed_n;
static bool fired;
static uint64_t counts[FAULT__MAX];

void fault_inject_arm(FaultKind kind, uint64_t n)
{
    g_mutex_lock(&lock);
    armed_kind = kind;
    armed_n = n;
    fired = false;
    for (int i = 0; i < FAULT__MAX; i++) {
        counts[i] = 0;
    }
    g_atomic_int_set(&armed, 1);
    g_mutex_unlock(&lock);
}

bool fault_inject_disarm(void)
{
    bool f;

    g_mutex_lock(&lock);
    g_atomic_int_set(&armed, 0);
    f = fired;
    g_mutex_unlock(&lock);
    return f;
}

uint64_t fault_inject_count(FaultKind kind)
{
    uint64_t n;

    g_mutex_lock(&lock);
    n = counts[kind];
    g_mutex_unlock(&lock);
    return n;
}

static gint64 syncs;

uint64_t fault_inject_syncs(void)
{
    return (uint64_t)g_atomic_pointer_get(&syncs);
}

void fault_inject_note_sync(void)
{
    g_atomic_pointer_add(&syncs, 1);
}

int fault_inject_hit(FaultKind kind)
{
    int ret = 0;

    if (!g_atomic_int_get(&armed)) {
        return 0;
    }
    g_mutex_lock(&lock);
    if (g_atomic_int_get(&armed)) {
        counts[kind]++;
        if (kind == armed_kind && counts[kind] == armed_n && !fired) {
            fired = true;
            ret = -EIO;
        }
    }
    g_mutex_unlock(&lock);
    return ret;
}
