/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Recovery of the intent log's unfinished transactions: at an image's
 * open (the qcow2 open hook) and for a whole journal at a daemon's start.
 * A committed record is rolled forward on every image that still carries
 * its extension; an image marked by a record that never committed is
 * discarded (its extension stripped, its refcounts rebuilt).  Records and
 * the journal are blockdev/intent-log.c's; the rules are in
 * include/blockdev/intent-log.h.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "blockdev/intent-log-int.h"
#include "block/fault-inject.h"
#include "block/log.h"
#include "block/byteorder.h"

/* ---- recovery ---- */

/* The journal directory the image names, checked by its identity; the
 * search directory stands in when that one is gone or another. */
static char *find_journal(const Qcow2Intent *in, GError **errp)
{
    uint8_t id[QCOW2_INTENT_ID_LEN];
    g_autoptr(GError) err = NULL;
    char want[33];

    if (ilog_read_journal_id(in->journal_dir, id, &err) &&
        memcmp(id, in->journal_id, QCOW2_INTENT_ID_LEN) == 0) {
        return g_strdup(in->journal_dir);
    }
    if (ilog_search_dir && ilog_read_journal_id(ilog_search_dir, id, NULL) &&
        memcmp(id, in->journal_id, QCOW2_INTENT_ID_LEN) == 0) {
        return g_strdup(ilog_search_dir);
    }
    qcow2_intent_id_hex(in->journal_id, want);
    if (err) {
        g_propagate_error(errp, g_steal_pointer(&err));
    } else {
        g_set_error(errp, INTENT_LOG_ERROR, INTENT_LOG_ERROR_NO_JOURNAL,
                    "intent journal '%s' is not journal %s", in->journal_dir,
                    want);
    }
    return NULL;
}

/* Cluster 0 of an open file (up to its cluster size). */
static uint8_t *read_header_fd(int fd, size_t *len)
{
    uint8_t first[104];
    uint32_t cbits;
    struct stat st;
    uint8_t *buf;
    ssize_t n;

    if (fstat(fd, &st) < 0 ||
        pread(fd, first, sizeof(first), 0) != (ssize_t)sizeof(first)) {
        return NULL;
    }
    cbits = be32_read(first + 20);
    if (cbits < 9 || cbits > 21) {
        return NULL;
    }
    *len = MIN((size_t)1 << cbits, (size_t)st.st_size);
    buf = g_malloc0(*len);
    n = pread(fd, buf, *len, 0);
    if (n < (ssize_t)sizeof(first)) {
        g_free(buf);
        return NULL;
    }
    *len = n;
    return buf;
}

/* Whether fd's header carries the extension of txid. */
static bool carries(int fd, const uint8_t *txid)
{
    size_t len = 0;
    g_autofree uint8_t *hdr = read_header_fd(fd, &len);
    g_autoptr(Qcow2Intent) in = NULL;

    return hdr && qcow2_intent_parse(hdr, len, &in, NULL) == 1 &&
           memcmp(in->txid, txid, QCOW2_INTENT_ID_LEN) == 0;
}

/* Whether fd's header carries txid's extension but lost the autoclear
 * bit that went with it: someone else opened it read-write since. */
static bool foreign_write(int fd, const uint8_t *txid)
{
    size_t len = 0;
    g_autofree uint8_t *hdr = read_header_fd(fd, &len);

    return hdr && carries(fd, txid) && be32_read(hdr + 4) >= 3 &&
           !(be64_read(hdr + 88) & QCOW2_AUTOCLEAR_STRATA_INTENT);
}

/* Removes txid's extension from fd's header (the extension area only);
 * discard also sets the dirty bit. */
static int strip_fd(int fd, const uint8_t *txid, bool discard)
{
    size_t len = 0;
    g_autofree uint8_t *hdr = read_header_fd(fd, &len);
    g_autoptr(Qcow2Intent) in = NULL;
    uint32_t start, end;
    int ret;

    if (!hdr || qcow2_intent_parse(hdr, len, &in, NULL) != 1 ||
        memcmp(in->txid, txid, QCOW2_INTENT_ID_LEN) != 0) {
        return 0;   /* not there (any more): nothing to do */
    }
    if (!qcow2_intent_ext_area(hdr, len, &start, &end) ||
        !qcow2_intent_strip(hdr, len, discard)) {
        return -EINVAL;
    }
    /* the feature bits (dirty, our autoclear bit) in the same write */
    start = 72;
    ret = ilog_hooked_pwrite(fd, hdr + start, end - start, start);
    return ret < 0 ? ret : ilog_hooked_sync(fd);
}

/* Opens the file holding img: the path, a rename's target, or the same
 * name beside the image being opened; accepted when it is the same
 * inode, or carries the transaction's extension. */
static int open_image(const IntentRecord *rec, const IntentImage *img,
                      const char *beside, char **found)
{
    g_autoptr(GPtrArray) cands = g_ptr_array_new_with_free_func(g_free);
    g_autofree char *bdir = g_path_get_dirname(beside);

    g_ptr_array_add(cands, g_strdup(img->path));
    for (guint i = 0; i < img->ops->len; i++) {
        IntentOp *op = g_ptr_array_index(img->ops, i);
        if (op->type == INTENT_OP_RENAME) {
            g_ptr_array_add(cands, g_strdup(op->to));
            g_ptr_array_add(cands, g_strdup(op->from));
        }
    }
    for (guint i = 0, n = cands->len; i < n; i++) {
        g_autofree char *base =
            g_path_get_basename(g_ptr_array_index(cands, i));
        g_ptr_array_add(cands, g_build_filename(bdir, base, NULL));
    }
    for (guint i = 0; i < cands->len; i++) {
        const char *p = g_ptr_array_index(cands, i);
        struct stat st;
        int fd = open(p, O_RDWR | O_CLOEXEC);

        if (fd < 0) {
            continue;
        }
        if (fstat(fd, &st) == 0 &&
            ((uint64_t)st.st_dev == img->dev &&
             (uint64_t)st.st_ino == img->ino)) {
            *found = g_strdup(p);
            return fd;
        }
        if (carries(fd, rec->txid)) {
            *found = g_strdup(p);
            return fd;
        }
        close(fd);
    }
    return -ENOENT;
}

static int apply_header(int fd, const char *path, const IntentOp *op)
{
    g_autofree uint8_t *cur = g_malloc0(op->len);
    ssize_t n = pread(fd, cur, op->len, op->offset);

    if (n != (ssize_t)op->len) {
        return n < 0 ? -errno : -EIO;
    }
    if (memcmp(cur, op->new_bytes, op->len) == 0) {
        return 0;       /* published before the crash */
    }
    if (memcmp(cur, op->old_bytes, op->len) != 0) {
        strata_warning("intent recovery: '%s' changed since the transaction "
                       "(header bytes %" PRIu64 "+%u are neither the old nor "
                       "the new ones); left as it is", path, op->offset,
                       op->len);
        return 0;
    }
    n = ilog_hooked_pwrite(fd, op->new_bytes, op->len, op->offset);
    return n < 0 ? (int)n : ilog_hooked_sync(fd);
}

static int apply_rename(const IntentOp *op, int fd)
{
    struct stat st, fst;
    g_autofree char *dir = g_path_get_dirname(op->to);
    int ret;

    if (stat(op->to, &st) == 0 && fstat(fd, &fst) == 0 &&
        st.st_dev == fst.st_dev && st.st_ino == fst.st_ino) {
        return 0;       /* renamed before the crash */
    }
    if (stat(op->from, &st) < 0) {
        return -errno;
    }
    ret = ilog_hooked_rename(op->from, op->to);
    return ret < 0 ? ret : ilog_sync_dir(dir);
}

/* Every op of every image, then every extension; then the record goes.
 * Returns 0, or -ENOENT when an image was found nowhere (the record is
 * kept for it), or another -errno. */
static int roll_forward(const IntentRecord *rec, const char *beside,
                        GError **errp)
{
    g_autofree char *txid = ilog_record_name(rec->txid, "");
    int missing = 0;

    for (guint i = 0; i < rec->images->len; i++) {
        IntentImage *img = g_ptr_array_index(rec->images, i);
        g_autofree char *path = NULL;
        int fd = open_image(rec, img, beside, &path);
        int ret = 0;

        if (fd < 0) {
            strata_warning("intent recovery: transaction %s: image '%s' "
                           "not found; its record is kept until it is "
                           "opened", txid, img->path);
            missing++;
            continue;
        }
        if (!carries(fd, rec->txid)) {
            /* completed before the crash (its extension went after the
             * record's unsynced done mark), or taken by a later
             * transaction or writer since: a finished record that came
             * back must never publish its old bytes over newer ones */
            close(fd);
            continue;
        }
        if (foreign_write(fd, rec->txid)) {
            /* its prepared clusters may be gone: publish nothing there */
            strata_warning("intent recovery: '%s' was opened read-write by "
                           "a program that does not know transaction %s "
                           "(its autoclear bit is clear); left as it is",
                           path, txid);
            ret = strip_fd(fd, rec->txid, true);
            close(fd);
            if (ret < 0) {
                g_set_error(errp, INTENT_LOG_ERROR, INTENT_LOG_ERROR_IO,
                            "intent recovery: could not complete '%s': %s",
                            path, g_strerror(-ret));
                return ret;
            }
            continue;
        }
        for (guint j = 0; ret == 0 && j < img->ops->len; j++) {
            IntentOp *op = g_ptr_array_index(img->ops, j);
            ret = op->type == INTENT_OP_HEADER ? apply_header(fd, path, op)
                                               : apply_rename(op, fd);
        }
        if (ret == 0) {
            /* with the dirty bit: the process died before its clean
             * freed what the old state used (a replaced snapshot table,
             * a deleted snapshot's tree), so the next read-write open
             * rebuilds the refcounts and reclaims those leaks */
            ret = strip_fd(fd, rec->txid, img->ops->len > 0);
        }
        close(fd);
        if (ret < 0) {
            g_set_error(errp, INTENT_LOG_ERROR, INTENT_LOG_ERROR_IO,
                        "intent recovery: transaction %s: could not "
                        "complete '%s': %s", txid, path, g_strerror(-ret));
            return ret;
        }
    }
    if (missing) {
        return -ENOENT;
    }
    return ilog_finish_record((IntentRecord *)rec, true);
}

/*
 * roll_forward under the record slot's lock: with must_lock (the
 * start-up scan), a slot locked by another open file description is a
 * transaction in flight in a live process (-EBUSY: not ours to
 * complete); once locked, the slot is read again,
 * and a record finished meanwhile is left alone.  Holding the lock
 * keeps another process from reusing the slot under us.
 */
static int roll_forward_locked(IntentRecord *rec, const char *beside,
                               bool must_lock, GError **errp)
{
    struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET };
    uint8_t head[16 + QCOW2_INTENT_ID_LEN];
    int fd, ret;

    if (!rec->slot || rec->slot_fd >= 0) {
        return roll_forward(rec, beside, errp);
    }
    fd = open(rec->slot, O_RDWR | O_CLOEXEC);
    if (fd < 0) {
        ret = -errno;
        g_set_error(errp, INTENT_LOG_ERROR, INTENT_LOG_ERROR_IO,
                    "Could not open intent record '%s': %s", rec->slot,
                    g_strerror(-ret));
        return ret;
    }
    if (fcntl(fd, F_OFD_SETLK, &fl) < 0) {
        char hex[33];
        ret = errno == EAGAIN || errno == EACCES ? -EBUSY : -errno;
        close(fd);
        if (!must_lock) {
            /* an image being opened: its own file locks already keep
             * a live writer out (and a test's in-process "crash" holds
             * the slot it left behind) */
            return roll_forward(rec, beside, errp);
        }
        qcow2_intent_id_hex(rec->txid, hex);
        g_set_error(errp, INTENT_LOG_ERROR, INTENT_LOG_ERROR_GENERIC,
                    "transaction %s is in progress in another process "
                    "(its record slot '%s' is locked)", hex, rec->slot);
        return ret;
    }
    if (pread(fd, head, sizeof(head), 0) != (ssize_t)sizeof(head) ||
        memcmp(head, REC_MAGIC, 8) != 0 ||
        memcmp(head + 16, rec->txid, QCOW2_INTENT_ID_LEN) != 0) {
        close(fd);
        return 0;           /* finished meanwhile */
    }
    rec->slot_fd = fd;
    ret = roll_forward(rec, beside, errp);
    close(fd);
    rec->slot_fd = -1;
    return ret;
}

/* Which image of the record the file being opened is. */
static bool names_image(const IntentRecord *rec, const char *filename)
{
    g_autofree char *base = g_path_get_basename(filename);
    struct stat st;

    if (stat(filename, &st) < 0) {
        return false;
    }
    for (guint i = 0; i < rec->images->len; i++) {
        IntentImage *img = g_ptr_array_index(rec->images, i);
        if ((uint64_t)st.st_dev == img->dev &&
            (uint64_t)st.st_ino == img->ino) {
            return true;
        }
        for (guint j = 0; j < img->ops->len; j++) {
            IntentOp *op = g_ptr_array_index(img->ops, j);
            g_autofree char *tb = op->type == INTENT_OP_RENAME ?
                                  g_path_get_basename(op->to) : NULL;
            if (tb && strcmp(tb, base) == 0) {
                return true;
            }
        }
        g_autofree char *ib = g_path_get_basename(img->path);
        if (strcmp(ib, base) == 0) {
            return true;
        }
    }
    return false;
}

int intent_log_recover_image(const char *filename, const Qcow2Intent *in,
                             bool apply, IntentDecision *decision,
                             GError **errp)
{
    g_autofree char *dir = find_journal(in, errp);
    g_autoptr(IntentRecord) rec = NULL;
    g_autoptr(GError) err = NULL;
    int fd, ret;

    if (!dir) {
        return -ENOENT;
    }
    rec = intent_log_read_record(dir, in->txid, &err);
    if (!rec && err) {
        g_propagate_error(errp, g_steal_pointer(&err));
        return -EINVAL;
    }
    if (rec && !names_image(rec, filename)) {
        char hex[33];
        qcow2_intent_id_hex(in->txid, hex);
        g_set_error(errp, INTENT_LOG_ERROR, INTENT_LOG_ERROR_CORRUPT,
                    "intent record of transaction %s does not name '%s'",
                    hex, filename);
        return -EINVAL;
    }
    *decision = rec ? INTENT_DECIDE_ROLL_FORWARD : INTENT_DECIDE_DISCARD;
    if (!apply) {
        return 0;
    }
    if (rec) {
        ret = roll_forward_locked(rec, filename, false, errp);
        /* an image found nowhere keeps the record, not this open back */
        return ret == -ENOENT ? 0 : ret;
    }
    fd = open(filename, O_RDWR | O_CLOEXEC);
    if (fd < 0) {
        ret = -errno;
    } else {
        ret = strip_fd(fd, in->txid, true);
        close(fd);
    }
    if (ret < 0) {
        g_set_error(errp, INTENT_LOG_ERROR, INTENT_LOG_ERROR_IO,
                    "intent recovery: could not discard '%s': %s", filename,
                    g_strerror(-ret));
    }
    return ret;
}

int intent_log_recover_all(IntentLog *log, GError **errp)
{
    g_autoptr(GPtrArray) entries = intent_log_scan(log, errp);
    int done = 0;

    if (!entries) {
        return -EIO;
    }
    for (guint i = 0; i < entries->len; i++) {
        IntentScanEntry *e = g_ptr_array_index(entries, i);
        int ret;

        if (e->incomplete) {
            continue;   /* its images discard themselves when opened */
        }
        if (!e->rec) {
            g_set_error(errp, INTENT_LOG_ERROR, INTENT_LOG_ERROR_CORRUPT,
                        "%s", e->error);
            return -EINVAL;
        }
        g_autofree char *beside = g_build_filename(log->dir, "-", NULL);
        g_autoptr(GError) rf_err = NULL;
        ret = roll_forward_locked(e->rec, beside, true, &rf_err);
        if (ret == -ENOENT || ret == -EBUSY) {
            continue;       /* kept / another process's, in flight */
        }
        if (ret < 0) {
            g_propagate_error(errp, g_steal_pointer(&rf_err));
        }
        if (ret < 0) {
            return ret;
        }
        done++;
    }
    return done;
}

void intent_log_install(void)
{
    qcow2_intent_set_recovery(intent_log_recover_image);
}

/* Any program this file is linked into recovers images at open. */
__attribute__((constructor)) static void intent_log_ctor(void)
{
    intent_log_install();
}
