/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The process-wide fault injector of the file driver (see
 * include/block/fault-inject.h).
 */
#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

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

/* ---- the power-cut filter ---- */

/* What one write overwrote: restoring it means truncating the file back
 * to old_size, then writing old back at off. */
typedef struct UndoRecord {
    dev_t dev;
    ino_t ino;
    int fd;                 /* our own: the caller may close its fd */
    int64_t off;
    int64_t old_size;
    GBytes *old;
} UndoRecord;

static GMutex pc_lock;
static gint pc_armed;
static PowerCutMode pc_mode;
static uint64_t pc_limit, pc_writes;
static bool pc_fired;
static GPtrArray *pc_undo;      /* UndoRecord *, oldest first */

static void undo_free(gpointer p)
{
    UndoRecord *u = p;

    if (u->fd >= 0) {
        close(u->fd);
    }
    g_bytes_unref(u->old);
    g_free(u);
}

void power_cut_arm(PowerCutMode mode, uint64_t n)
{
    g_mutex_lock(&pc_lock);
    if (pc_undo) {
        g_ptr_array_free(pc_undo, TRUE);
    }
    pc_undo = g_ptr_array_new_with_free_func(undo_free);
    pc_mode = mode;
    pc_limit = n;
    pc_writes = 0;
    pc_fired = false;
    g_atomic_int_set(&pc_armed, 1);
    g_mutex_unlock(&pc_lock);
}

void power_cut_now(void)
{
    g_mutex_lock(&pc_lock);
    pc_limit = pc_writes;
    g_mutex_unlock(&pc_lock);
}

uint64_t power_cut_writes(void)
{
    uint64_t n;

    g_mutex_lock(&pc_lock);
    n = pc_writes;
    g_mutex_unlock(&pc_lock);
    return n;
}

bool power_cut_fired(void)
{
    bool f;

    g_mutex_lock(&pc_lock);
    f = pc_fired;
    g_mutex_unlock(&pc_lock);
    return f;
}

/*
 * A new open file description of fd's file: not a dup, which would share
 * the caller's byte-range locks (OFD locks belong to the description)
 * and keep them alive after the caller closed its fd.
 */
static int reopen_fd(int fd)
{
    g_autofree char *path = g_strdup_printf("/proc/self/fd/%d", fd);

    return open(path, O_WRONLY | O_CLOEXEC);
}

/* Reads what [off, off + len) of fd holds now, up to its end. */
static UndoRecord *undo_capture(int fd, const struct stat *st, int64_t off,
                                int64_t len)
{
    UndoRecord *u = g_new0(UndoRecord, 1);
    int64_t end = MIN(off + len, (int64_t)st->st_size);
    int64_t n = end > off ? end - off : 0;
    uint8_t *buf = g_malloc(MAX(n, 1));
    int64_t done = 0;

    while (done < n) {
        ssize_t r = pread(fd, buf + done, n - done, off + done);
        if (r <= 0) {
            break;      /* a short file: keep what we have */
        }
        done += r;
    }
    u->dev = st->st_dev;
    u->ino = st->st_ino;
    u->fd = reopen_fd(fd);
    u->off = off;
    u->old_size = st->st_size;
    u->old = g_bytes_new_take(buf, done);
    return u;
}

/* One more write or directory change, under pc_lock: true once it is
 * past the armed limit, and the cut is remembered as having happened. */
static bool count_write(void)
{
    bool drop;

    pc_writes++;
    drop = pc_writes > pc_limit;
    pc_fired |= drop;
    return drop;
}

bool power_cut_write(int fd, int64_t off, int64_t len)
{
    struct stat st;
    bool drop;

    if (!g_atomic_int_get(&pc_armed)) {
        return false;
    }
    g_mutex_lock(&pc_lock);
    drop = count_write();
    if (!drop && pc_mode == POWER_CUT_LOSE_UNFLUSHED && fstat(fd, &st) == 0) {
        if (len < 0) {
            /* a truncate to off: keep what a shrink cuts away */
            g_ptr_array_add(pc_undo, undo_capture(fd, &st, off,
                                                  MAX((int64_t)st.st_size - off, 0)));
        } else {
            g_ptr_array_add(pc_undo, undo_capture(fd, &st, off, len));
        }
    }
    g_mutex_unlock(&pc_lock);
    return drop;
}

bool power_cut_flush(int fd)
{
    struct stat st;
    bool drop;

    if (!g_atomic_int_get(&pc_armed)) {
        return false;
    }
    g_mutex_lock(&pc_lock);
    drop = pc_fired;
    if (!drop && pc_undo && fstat(fd, &st) == 0) {
        for (guint i = pc_undo->len; i-- > 0;) {
            UndoRecord *u = g_ptr_array_index(pc_undo, i);
            if (u->dev == st.st_dev && u->ino == st.st_ino) {
                g_ptr_array_remove_index(pc_undo, i);
            }
        }
    }
    g_mutex_unlock(&pc_lock);
    return drop;
}

bool power_cut_dir_op(void)
{
    bool drop;

    if (!g_atomic_int_get(&pc_armed)) {
        return false;
    }
    g_mutex_lock(&pc_lock);
    drop = count_write();
    g_mutex_unlock(&pc_lock);
    return drop;
}

int64_t power_cut_restore(void)
{
    int64_t undone = 0;
    int err = 0;

    g_mutex_lock(&pc_lock);
    g_atomic_int_set(&pc_armed, 0);
    for (guint i = pc_undo ? pc_undo->len : 0; i-- > 0;) {
        UndoRecord *u = g_ptr_array_index(pc_undo, i);
        gsize n;
        const uint8_t *old = g_bytes_get_data(u->old, &n);

        if (ftruncate(u->fd, u->old_size) < 0 ||
            (n && pwrite(u->fd, old, n, u->off) != (ssize_t)n)) {
            err = err ? err : errno;
        }
        undone++;
    }
    if (pc_undo) {
        /* the rollback itself must be durable before anyone looks */
        for (guint i = 0; i < pc_undo->len; i++) {
            UndoRecord *u = g_ptr_array_index(pc_undo, i);
            fdatasync(u->fd);
        }
        g_ptr_array_free(pc_undo, TRUE);
        pc_undo = NULL;
    }
    g_mutex_unlock(&pc_lock);
    return err ? -err : undone;
}
