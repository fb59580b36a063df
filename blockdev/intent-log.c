/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The intent log of crash-atomic transactions: records (build, encode,
 * parse with checksum) and the journal directory (slots, commit, done,
 * scan).  Recovery (roll forward or discard) is intent-recover.c.
 * Format and rules are in include/blockdev/intent-log.h.
 *
 * Every write, flush and directory change here goes through the file
 * driver's fault injector and power-cut filter hooks, so a test's power
 * cut counts the journal's writes and recovery's writes with the images'.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "blockdev/intent-log-int.h"
#include "block/fault-inject.h"
#include "block/log.h"
#include "block/byteorder.h"

G_DEFINE_QUARK(strata-intent-log-error-quark, intent_log_error)

char *ilog_search_dir;        /* intent_log_set_search_dir() */

/* ---- durable file operations, through the fault hooks ---- */

int ilog_hooked_pwrite(int fd, const void *buf, size_t len, off_t off)
{
    const uint8_t *p = buf;

    if (fault_inject_hit(FAULT_WRITE) < 0) {
        return -EIO;
    }
    if (power_cut_write(fd, off, (int64_t)len)) {
        return 0;
    }
    while (len > 0) {
        ssize_t n = pwrite(fd, p, len, off);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0) {
            return -errno;
        }
        p += n;
        off += n;
        len -= n;
    }
    return 0;
}

int ilog_hooked_sync(int fd)
{
    if (fault_inject_hit(FAULT_FLUSH) < 0) {
        return -EIO;
    }
    if (power_cut_flush(fd)) {
        return 0;
    }
    return fsync(fd) < 0 ? -errno : 0;
}

/* fdatasync: a slot's in-place overwrite needs its data (and size) only */
static int hooked_datasync(int fd)
{
    if (fault_inject_hit(FAULT_FLUSH) < 0) {
        return -EIO;
    }
    if (power_cut_flush(fd)) {
        return 0;
    }
    return fdatasync(fd) < 0 ? -errno : 0;
}

int ilog_sync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    int ret;

    if (fd < 0) {
        return -errno;
    }
    ret = ilog_hooked_sync(fd);
    close(fd);
    return ret;
}

int ilog_hooked_rename(const char *from, const char *to)
{
    if (fault_inject_hit(FAULT_WRITE) < 0) {
        return -EIO;
    }
    if (power_cut_dir_op()) {
        return 0;
    }
    return rename(from, to) < 0 ? -errno : 0;
}

static int hooked_unlink(const char *path)
{
    if (fault_inject_hit(FAULT_WRITE) < 0) {
        return -EIO;
    }
    if (power_cut_dir_op()) {
        return 0;
    }
    return unlink(path) < 0 && errno != ENOENT ? -errno : 0;
}

/* Writes name in dir with exactly data: a .tmp written and synced, renamed
 * into place, the directory synced.  A crash leaves the old file (or
 * none) or the new one, never a torn one under name. */
static int write_durably(const char *dir, const char *name, const void *data,
                         size_t len)
{
    g_autofree char *path = g_build_filename(dir, name, NULL);
    g_autofree char *tmp = g_strconcat(path, ".tmp", NULL);
    int fd, ret;

    if (fault_inject_hit(FAULT_WRITE) < 0) {
        return -EIO;
    }
    if (power_cut_dir_op()) {
        return 0;     /* the power is off: nothing more reaches the disk */
    }
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        return -errno;
    }
    ret = ilog_hooked_pwrite(fd, data, len, 0);
    if (ret == 0) {
        ret = ilog_hooked_sync(fd);
    }
    close(fd);
    if (ret == 0) {
        ret = ilog_hooked_rename(tmp, path);
    }
    if (ret == 0) {
        ret = ilog_sync_dir(dir);
    }
    if (ret < 0) {
        unlink(tmp);
    }
    return ret;
}

static bool random_id(uint8_t *id)
{
    size_t got = 0;

    while (got < QCOW2_INTENT_ID_LEN) {
        ssize_t n = getrandom(id + got, QCOW2_INTENT_ID_LEN - got, 0);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0) {
            return false;
        }
        got += n;
    }
    return true;
}

static bool parse_hex_id(const char *s, uint8_t *id)
{
    for (int i = 0; i < QCOW2_INTENT_ID_LEN; i++) {
        int hi = g_ascii_xdigit_value(s[2 * i]);
        int lo = hi < 0 ? -1 : g_ascii_xdigit_value(s[2 * i + 1]);
        if (lo < 0) {
            return false;
        }
        id[i] = (uint8_t)(hi << 4 | lo);
    }
    return true;
}

/* Reads DIR/journal-id into id. */
bool ilog_read_journal_id(const char *dir, uint8_t *id, GError **errp)
{
    g_autofree char *path = g_build_filename(dir, ID_FILE, NULL);
    g_autofree char *text = NULL;
    gsize len = 0;
    g_autoptr(GError) err = NULL;

    if (!g_file_get_contents(path, &text, &len, &err)) {
        g_set_error(errp, INTENT_LOG_ERROR, INTENT_LOG_ERROR_NO_JOURNAL,
                    "intent journal '%s' cannot be read: %s", dir,
                    err->message);
        return false;
    }
    if (len < 2 * QCOW2_INTENT_ID_LEN || !parse_hex_id(text, id)) {
        g_set_error(errp, INTENT_LOG_ERROR, INTENT_LOG_ERROR_NO_JOURNAL,
                    "intent journal '%s' has a malformed %s", dir, ID_FILE);
        return false;
    }
    return true;
}

static int slot_acquire(const char *dir, char **path);
static GPtrArray *list_slots(const char *dir);

/* ---- the journal ---- */

IntentLog *intent_log_open(const char *dir, GError **errp)
{
    g_autofree char *abs = g_canonicalize_filename(dir, NULL);
    g_autoptr(GError) err = NULL;
    IntentLog *log;

    intent_log_install();
    if (g_mkdir_with_parents(abs, 0700) < 0) {
        int e = errno;
        g_set_error(errp, INTENT_LOG_ERROR, INTENT_LOG_ERROR_IO,
                    "Could not create intent journal '%s': %s", abs,
                    g_strerror(e));
        return NULL;
    }
    log = g_new0(IntentLog, 1);
    log->dir = g_steal_pointer(&abs);
    if (!ilog_read_journal_id(log->dir, log->id, &err)) {
        g_autofree char *path = g_build_filename(log->dir, ID_FILE, NULL);
        char hex[34];
        int ret;

        if (g_file_test(path, G_FILE_TEST_EXISTS)) {
            /* a damaged identity is not silently replaced: images name it */
            g_propagate_error(errp, g_steal_pointer(&err));
            intent_log_close(log);
            return NULL;
        }
        if (!random_id(log->id)) {
            g_set_error(errp, INTENT_LOG_ERROR, INTENT_LOG_ERROR_IO,
                        "Could not get random bytes: %s", g_strerror(errno));
            intent_log_close(log);
            return NULL;
        }
        qcow2_intent_id_hex(log->id, hex);
        hex[32] = '\n';
        ret = write_durably(log->dir, ID_FILE, hex, 33);
        if (ret < 0) {
            g_set_error(errp, INTENT_LOG_ERROR, INTENT_LOG_ERROR_IO,
                        "Could not write '%s': %s", path, g_strerror(-ret));
            intent_log_close(log);
            return NULL;
        }
    }
    /* a slot ready before the first transaction, so its commit is one
     * overwrite in place: no file created, no directory synced (only
     * when there is none: another process may hold slot-0) */
    {
        g_autoptr(GPtrArray) slots = list_slots(log->dir);
        g_autofree char *slot = NULL;
        int fd = slots->len ? -1 : slot_acquire(log->dir, &slot);
        if (fd >= 0) {
            close(fd);
        }
    }
    return log;
}

void intent_log_close(IntentLog *log)
{
    if (log) {
        g_free(log->dir);
        g_free(log);
    }
}

const char *intent_log_dir(IntentLog *log)
{
    return log->dir;
}

void intent_log_set_search_dir(const char *dir)
{
    g_free(ilog_search_dir);
    ilog_search_dir = dir ? g_canonicalize_filename(dir, NULL) : NULL;
}

/* ---- records ---- */

static void op_free(gpointer p)
{
    IntentOp *op = p;

    g_free(op->old_bytes);
    g_free(op->new_bytes);
    g_free(op->from);
    g_free(op->to);
    g_free(op);
}

static void image_free(gpointer p)
{
    IntentImage *img = p;

    g_free(img->path);
    g_ptr_array_free(img->ops, TRUE);
    g_free(img);
}

static void slot_release(IntentRecord *rec);

static IntentRecord *record_new(void)
{
    IntentRecord *rec = g_new0(IntentRecord, 1);

    rec->images = g_ptr_array_new_with_free_func(image_free);
    rec->slot_fd = -1;
    return rec;
}

IntentRecord *intent_record_begin(IntentLog *log)
{
    IntentRecord *rec = record_new();

    if (!random_id(rec->txid)) {
        /* getrandom does not fail for 16 bytes once the pool is ready */
        for (int i = 0; i < QCOW2_INTENT_ID_LEN; i++) {
            rec->txid[i] = (uint8_t)g_random_int();
        }
    }
    memcpy(rec->journal_id, log->id, QCOW2_INTENT_ID_LEN);
    rec->dir = g_strdup(log->dir);
    return rec;
}

void intent_record_free(IntentRecord *rec)
{
    if (rec) {
        /* a committed record not ended (its publish could not be made
         * durable) keeps its slot locked for the life of the process, so
         * no later transaction overwrites what recovery needs */
        if (!(rec->committed && !rec->done)) {
            slot_release(rec);
        }
        g_free(rec->slot);
        g_ptr_array_free(rec->images, TRUE);
        g_free(rec->dir);
        g_free(rec);
    }
}

Qcow2Intent *intent_record_extension(const IntentRecord *rec)
{
    Qcow2Intent *in = g_new0(Qcow2Intent, 1);

    memcpy(in->txid, rec->txid, QCOW2_INTENT_ID_LEN);
    memcpy(in->journal_id, rec->journal_id, QCOW2_INTENT_ID_LEN);
    in->journal_dir = g_strdup(rec->dir);
    return in;
}

static bool check_open(IntentRecord *rec, GError **errp)
{
    if (rec->committed) {
        g_set_error(errp, INTENT_LOG_ERROR, INTENT_LOG_ERROR_GENERIC,
                    "The intent record is already committed");
        return false;
    }
    return true;
}

int intent_record_add_image(IntentRecord *rec, const char *path,
                            GError **errp)
{
    g_autofree char *abs = g_canonicalize_filename(path, NULL);
    IntentImage *img;
    struct stat st;

    if (!check_open(rec, errp)) {
        return -EINVAL;
    }
    if (stat(abs, &st) < 0) {
        int e = errno;
        g_set_error(errp, INTENT_LOG_ERROR, INTENT_LOG_ERROR_IO,
                    "Could not stat '%s': %s", abs, g_strerror(e));
        return -e;
    }
    for (guint i = 0; i < rec->images->len; i++) {
        IntentImage *o = g_ptr_array_index(rec->images, i);
        if (o->dev == (uint64_t)st.st_dev && o->ino == (uint64_t)st.st_ino) {
            g_set_error(errp, INTENT_LOG_ERROR, INTENT_LOG_ERROR_GENERIC,
                        "'%s' is already in the intent record", abs);
            return -EEXIST;
        }
    }
    img = g_new0(IntentImage, 1);
    img->dev = st.st_dev;
    img->ino = st.st_ino;
    img->path = g_steal_pointer(&abs);
    img->ops = g_ptr_array_new_with_free_func(op_free);
    g_ptr_array_add(rec->images, img);
    return (int)rec->images->len - 1;
}

static IntentImage *image_at(IntentRecord *rec, int image, GError **errp)
{
    if (!check_open(rec, errp)) {
        return NULL;
    }
    if (image < 0 || (guint)image >= rec->images->len) {
        g_set_error(errp, INTENT_LOG_ERROR, INTENT_LOG_ERROR_GENERIC,
                    "No image %d in the intent record", image);
        return NULL;
    }
    return g_ptr_array_index(rec->images, image);
}

bool intent_record_add_header(IntentRecord *rec, int image, uint64_t offset,
                              const void *old_bytes, const void *new_bytes,
                              uint32_t len, GError **errp)
{
    IntentImage *img = image_at(rec, image, errp);
    IntentOp *op;

    if (!img) {
        return false;
    }
    /* header ops live in cluster 0, at most 2 MiB */
    if (len == 0 || len > (2u << 20) || offset > (2u << 20) - len) {
        g_set_error(errp, INTENT_LOG_ERROR, INTENT_LOG_ERROR_GENERIC,
                    "Header update of %" PRIu32 " bytes at %" PRIu64
                    " is outside the header cluster", len, offset);
        return false;
    }
    op = g_new0(IntentOp, 1);
    op->type = INTENT_OP_HEADER;
    op->offset = offset;
    op->len = len;
    op->old_bytes = g_memdup2(old_bytes, len);
    op->new_bytes = g_memdup2(new_bytes, len);
    g_ptr_array_add(img->ops, op);
    return true;
}

bool intent_record_add_rename(IntentRecord *rec, int image, const char *from,
                              const char *to, GError **errp)
{
    IntentImage *img = image_at(rec, image, errp);
    IntentOp *op;

    if (!img) {
        return false;
    }
    op = g_new0(IntentOp, 1);
    op->type = INTENT_OP_RENAME;
    op->from = g_canonicalize_filename(from, NULL);
    op->to = g_canonicalize_filename(to, NULL);
    g_ptr_array_add(img->ops, op);
    return true;
}

/* ---- encoding ---- */

static void put32(GByteArray *b, uint32_t v)
{
    uint8_t x[4];

    be32_write(x, v);
    g_byte_array_append(b, x, 4);
}

static void put64(GByteArray *b, uint64_t v)
{
    uint8_t x[8];

    be64_write(x, v);
    g_byte_array_append(b, x, 8);
}

static void putstr(GByteArray *b, const char *s)
{
    put32(b, (uint32_t)strlen(s));
    g_byte_array_append(b, (const uint8_t *)s, strlen(s));
}

static void sha256(const uint8_t *data, size_t len, uint8_t *out)
{
    g_autoptr(GChecksum) c = g_checksum_new(G_CHECKSUM_SHA256);
    gsize n = REC_SUM_LEN;

    g_checksum_update(c, data, len);
    g_checksum_get_digest(c, out, &n);
}

GBytes *intent_record_serialize(const IntentRecord *rec)
{
    GByteArray *b = g_byte_array_new();
    uint8_t sum[REC_SUM_LEN];

    g_byte_array_append(b, (const uint8_t *)REC_MAGIC, 8);
    put32(b, REC_VERSION);
    put32(b, 0);        /* body length, filled in below */
    g_byte_array_append(b, rec->txid, QCOW2_INTENT_ID_LEN);
    g_byte_array_append(b, rec->journal_id, QCOW2_INTENT_ID_LEN);
    put32(b, rec->images->len);
    for (guint i = 0; i < rec->images->len; i++) {
        IntentImage *img = g_ptr_array_index(rec->images, i);
        put64(b, img->dev);
        put64(b, img->ino);
        putstr(b, img->path);
        put32(b, img->ops->len);
        for (guint j = 0; j < img->ops->len; j++) {
            IntentOp *op = g_ptr_array_index(img->ops, j);
            put32(b, op->type);
            if (op->type == INTENT_OP_HEADER) {
                put64(b, op->offset);
                put32(b, op->len);
                g_byte_array_append(b, op->old_bytes, op->len);
                g_byte_array_append(b, op->new_bytes, op->len);
            } else {
                putstr(b, op->from);
                putstr(b, op->to);
            }
        }
    }
    be32_write(b->data + 12, b->len - 16);
    sha256(b->data, b->len, sum);
    g_byte_array_append(b, sum, REC_SUM_LEN);
    return g_byte_array_free_to_bytes(b);
}

/* A bounds-checked reader over the body. */
typedef struct {
    const uint8_t *p;
    size_t left;
    bool bad;
} Reader;

static const uint8_t *take(Reader *r, size_t n)
{
    const uint8_t *p = r->p;

    if (r->bad || n > r->left) {
        r->bad = true;
        return NULL;
    }
    r->p += n;
    r->left -= n;
    return p;
}

static uint32_t get32(Reader *r)
{
    const uint8_t *p = take(r, 4);
    return p ? be32_read(p) : 0;
}

static uint64_t get64(Reader *r)
{
    const uint8_t *p = take(r, 8);
    return p ? be64_read(p) : 0;
}

static char *getstr(Reader *r)
{
    uint32_t n = get32(r);
    const uint8_t *p = take(r, n);

    if (!p || n == 0 || n > 4096 || memchr(p, 0, n)) {
        r->bad = true;
        return NULL;
    }
    return g_strndup((const char *)p, n);
}

static bool parse_op(Reader *r, IntentImage *img)
{
    IntentOp *op = g_new0(IntentOp, 1);
    const uint8_t *o, *n;

    g_ptr_array_add(img->ops, op);
    op->type = get32(r);
    if (op->type == INTENT_OP_HEADER) {
        op->offset = get64(r);
        op->len = get32(r);
        if (op->len == 0 || op->len > (2u << 20) ||
            op->offset > (2u << 20) - op->len) {
            return false;
        }
        o = take(r, op->len);
        n = take(r, op->len);
        if (!o || !n) {
            return false;
        }
        op->old_bytes = g_memdup2(o, op->len);
        op->new_bytes = g_memdup2(n, op->len);
        return true;
    }
    if (op->type == INTENT_OP_RENAME) {
        op->from = getstr(r);
        op->to = getstr(r);
        return !r->bad;
    }
    return false;
}

IntentRecord *intent_record_parse(const void *buf, size_t len, GError **errp)
{
    g_autoptr(IntentRecord) rec = record_new();
    const uint8_t *b = buf;
    uint8_t sum[REC_SUM_LEN];
    Reader r;
    uint32_t body, nimg;

    if (len < 16 + REC_SUM_LEN || memcmp(b, REC_MAGIC, 8) != 0) {
        g_set_error(errp, INTENT_LOG_ERROR, INTENT_LOG_ERROR_CORRUPT,
                    "not an intent record");
        return NULL;
    }
    body = be32_read(b + 12);
    if (be32_read(b + 8) != REC_VERSION) {
        g_set_error(errp, INTENT_LOG_ERROR, INTENT_LOG_ERROR_CORRUPT,
                    "unknown intent record version %u", be32_read(b + 8));
        return NULL;
    }
    if (body != len - 16 - REC_SUM_LEN) {
        g_set_error(errp, INTENT_LOG_ERROR, INTENT_LOG_ERROR_CORRUPT,
                    "intent record is truncated (%zu of %u bytes)", len,
                    body + 16 + REC_SUM_LEN);
        return NULL;
    }
    sha256(b, len - REC_SUM_LEN, sum);
    if (memcmp(sum, b + len - REC_SUM_LEN, REC_SUM_LEN) != 0) {
        g_set_error(errp, INTENT_LOG_ERROR, INTENT_LOG_ERROR_CORRUPT,
                    "intent record checksum mismatch");
        return NULL;
    }
    r = (Reader) { .p = b + 16, .left = body };
    memcpy(rec->txid, take(&r, 16), 16);
    memcpy(rec->journal_id, take(&r, 16), 16);
    nimg = get32(&r);
    for (uint32_t i = 0; i < nimg && !r.bad; i++) {
        IntentImage *img = g_new0(IntentImage, 1);
        uint32_t nops;

        img->ops = g_ptr_array_new_with_free_func(op_free);
        g_ptr_array_add(rec->images, img);
        img->dev = get64(&r);
        img->ino = get64(&r);
        img->path = getstr(&r);
        nops = get32(&r);
        for (uint32_t j = 0; j < nops && !r.bad; j++) {
            if (!parse_op(&r, img)) {
                r.bad = true;
            }
        }
    }
    if (r.bad || r.left) {
        /* the checksum matched: a writer bug, still never guessed at */
        g_set_error(errp, INTENT_LOG_ERROR, INTENT_LOG_ERROR_CORRUPT,
                    "intent record is malformed");
        return NULL;
    }
    rec->committed = true;
    return g_steal_pointer(&rec);
}

char *ilog_record_name(const uint8_t *txid, const char *suffix)
{
    char hex[33];

    qcow2_intent_id_hex(txid, hex);
    return g_strconcat(hex, suffix, NULL);
}

/* ---- record slots ---- */

/*
 * Takes a slot for this process: the first DIR/slot-K that no other open
 * file description has locked (OFD write lock, so two transactions of one
 * process, or of two processes, never share a slot; the kernel drops the
 * lock when its holder dies).  A new slot is created, preallocated and
 * made durable (file and directory synced) only when every one is busy,
 * so the steady state writes no directory entry.  Returns the fd (locked)
 * and *path, or -errno.
 */
static int slot_acquire(const char *dir, char **path)
{
    for (unsigned k = 0; k < 4096; k++) {
        g_autofree char *p = g_strdup_printf("%s/" SLOT_PREFIX "%u", dir, k);
        struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET };
        bool created = false;
        int fd = open(p, O_RDWR | O_CLOEXEC);

        if (fd < 0 && errno == ENOENT) {
            fd = open(p, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
            created = fd >= 0;
            if (fd < 0 && errno == EEXIST) {
                k--;        /* another process created it: look again */
                continue;
            }
        }
        if (fd < 0) {
            return -errno;
        }
        if (fcntl(fd, F_OFD_SETLK, &fl) < 0) {
            int e = errno;
            close(fd);
            if (e == EAGAIN || e == EACCES) {
                continue;   /* in use */
            }
            return -e;
        }
        if (created) {
            g_autofree uint8_t *zero = g_malloc0(SLOT_PREALLOC);
            int ret = ilog_hooked_pwrite(fd, zero, SLOT_PREALLOC, 0);

            ret = ret < 0 ? ret : ilog_hooked_sync(fd);
            ret = ret < 0 ? ret : ilog_sync_dir(dir);
            if (ret < 0) {
                close(fd);
                return ret;
            }
        }
        *path = g_steal_pointer(&p);
        return fd;
    }
    return -ENOSPC;
}

/* Marks the record in fd's slot finished: its magic overwritten. */
static int slot_mark_done(int fd, bool sync)
{
    int ret = ilog_hooked_pwrite(fd, REC_DONE_MAGIC, 8, 0);

    return ret < 0 || !sync ? ret : hooked_datasync(fd);
}

static void slot_release(IntentRecord *rec)
{
    if (rec->slot_fd >= 0) {
        close(rec->slot_fd);     /* drops the lock */
        rec->slot_fd = -1;
    }
}

int intent_record_commit(IntentRecord *rec, GError **errp)
{
    g_autoptr(GBytes) bytes = NULL;
    gsize len;
    const void *data;
    int ret;

    if (!check_open(rec, errp)) {
        return -EINVAL;
    }
    bytes = intent_record_serialize(rec);
    data = g_bytes_get_data(bytes, &len);
    if (rec->slot_fd < 0) {
        g_free(rec->slot);
        rec->slot = NULL;
        ret = slot_acquire(rec->dir, &rec->slot);
        if (ret < 0) {
            g_set_error(errp, INTENT_LOG_ERROR, INTENT_LOG_ERROR_IO,
                        "Could not take a record slot in intent journal "
                        "'%s': %s", rec->dir, g_strerror(-ret));
            return ret;
        }
        rec->slot_fd = ret;
    }
    /* the one synced write of the transaction: a torn one fails its
     * checksum (or still carries the slot's old, finished record) */
    ret = ilog_hooked_pwrite(rec->slot_fd, data, len, 0);
    ret = ret < 0 ? ret : hooked_datasync(rec->slot_fd);
    if (ret < 0) {
        g_set_error(errp, INTENT_LOG_ERROR, INTENT_LOG_ERROR_IO,
                    "Could not write intent record '%s': %s", rec->slot,
                    g_strerror(-ret));
        /* the caller cancels: the record must not come back later */
        if (slot_mark_done(rec->slot_fd, true) < 0) {
            /* keep the slot locked so nothing reuses it; recovery then
             * acts only on images that still carry the extension */
            return ret;
        }
        slot_release(rec);
        return ret;
    }
    rec->committed = true;
    return 0;
}

static char *legacy_path(const char *dir, const uint8_t *txid)
{
    g_autofree char *name = ilog_record_name(txid, ".rec");

    return g_build_filename(dir, name, NULL);
}

/* Ends a record: its slot marked done (synced when sync), or a journal
 * of the first format's <txid>.rec unlinked (+ directory fsync). */
int ilog_finish_record(IntentRecord *rec, bool sync)
{
    int ret;

    if (rec->slot_fd >= 0) {
        ret = slot_mark_done(rec->slot_fd, sync);
    } else if (rec->slot) {
        int fd = open(rec->slot, O_RDWR | O_CLOEXEC);
        if (fd < 0) {
            return -errno;
        }
        ret = slot_mark_done(fd, sync);
        close(fd);
    } else {
        g_autofree char *path = legacy_path(rec->dir, rec->txid);
        ret = hooked_unlink(path);
        ret = ret < 0 ? ret : ilog_sync_dir(rec->dir);
    }
    return ret;
}

static int end_record(IntentRecord *rec, bool sync, GError **errp)
{
    int ret;

    if (!rec->committed || rec->done) {
        g_set_error(errp, INTENT_LOG_ERROR, INTENT_LOG_ERROR_GENERIC,
                    "The intent record is %s", rec->done ? "already done" :
                    "not committed");
        return -EINVAL;
    }
    ret = ilog_finish_record(rec, sync);
    if (ret < 0) {
        g_set_error(errp, INTENT_LOG_ERROR, INTENT_LOG_ERROR_IO,
                    "Could not remove the intent record: %s",
                    g_strerror(-ret));
        return ret;
    }
    rec->done = true;
    slot_release(rec);
    return 0;
}

int intent_record_done(IntentRecord *rec, GError **errp)
{
    return end_record(rec, false, errp);
}

int intent_record_withdraw(IntentRecord *rec, GError **errp)
{
    return end_record(rec, true, errp);
}

/* Reads the journal's first-format DIR/<txid>.rec, if there is one. */
static IntentRecord *read_legacy(const char *dir, const uint8_t *txid,
                                 bool *found, GError **errp)
{
    g_autofree char *path = legacy_path(dir, txid);
    g_autofree char *data = NULL;
    g_autoptr(GError) err = NULL;
    IntentRecord *rec;
    gsize len;

    *found = false;
    if (!g_file_get_contents(path, &data, &len, &err)) {
        if (!g_error_matches(err, G_FILE_ERROR, G_FILE_ERROR_NOENT)) {
            *found = true;
            g_set_error(errp, INTENT_LOG_ERROR, INTENT_LOG_ERROR_IO,
                        "Could not read intent record '%s': %s", path,
                        err->message);
        }
        return NULL;
    }
    *found = true;
    rec = intent_record_parse(data, len, &err);
    if (rec && memcmp(rec->txid, txid, QCOW2_INTENT_ID_LEN) != 0) {
        intent_record_free(rec);
        rec = NULL;
        g_set_error(&err, INTENT_LOG_ERROR, INTENT_LOG_ERROR_CORRUPT,
                    "it names another transaction");
    }
    if (!rec) {
        g_set_error(errp, INTENT_LOG_ERROR, INTENT_LOG_ERROR_CORRUPT,
                    "Intent record '%s' is corrupt: %s", path, err->message);
        return NULL;
    }
    rec->dir = g_strdup(dir);
    return rec;
}

/*
 * What one slot holds.  SLOT_LIVE: a valid unfinished record (*out);
 * SLOT_TORN: the live magic but a record that fails its length or
 * checksum (*txid_out: the transaction id its bytes name, when they are
 * long enough); SLOT_FREE: zeros, a finished record, anything else.
 */
typedef enum { SLOT_FREE, SLOT_LIVE, SLOT_TORN } SlotState;

static SlotState read_slot(const char *path, IntentRecord **out,
                           uint8_t *txid_out, bool *have_txid, char **why)
{
    g_autofree uint8_t *data = NULL;
    g_autoptr(GError) err = NULL;
    gsize len = 0;
    uint64_t want;

    *out = NULL;
    *have_txid = false;
    if (!g_file_get_contents(path, (char **)&data, &len, NULL) ||
        len < 16 || memcmp(data, REC_MAGIC, 8) != 0) {
        return SLOT_FREE;
    }
    if (len >= 32) {
        memcpy(txid_out, data + 16, QCOW2_INTENT_ID_LEN);
        *have_txid = true;
    }
    /* a slot is longer than its record: the header says how long */
    want = (uint64_t)be32_read(data + 12) + 16 + REC_SUM_LEN;
    *out = intent_record_parse(data, MIN(want, len), &err);
    if (!*out) {
        if (why) {
            *why = g_strdup_printf("Intent record '%s' is corrupt: %s", path,
                                   err->message);
        }
        return SLOT_TORN;
    }
    (*out)->slot = g_strdup(path);
    return SLOT_LIVE;
}

/* The journal's slot files, sorted by name. */
static GPtrArray *list_slots(const char *dir)
{
    g_autoptr(GDir) d = g_dir_open(dir, 0, NULL);
    GPtrArray *out = g_ptr_array_new_with_free_func(g_free);
    const char *name;

    while (d && (name = g_dir_read_name(d))) {
        if (g_str_has_prefix(name, SLOT_PREFIX)) {
            g_ptr_array_add(out, g_build_filename(dir, name, NULL));
        }
    }
    g_ptr_array_sort(out, (GCompareFunc)g_strcmp0);
    return out;
}

IntentRecord *intent_log_read_record(const char *dir, const uint8_t *txid,
                                     GError **errp)
{
    g_autoptr(GPtrArray) slots = NULL;
    IntentRecord *rec;
    bool found;

    rec = read_legacy(dir, txid, &found, errp);
    if (found) {
        return rec;
    }
    slots = list_slots(dir);
    for (guint i = 0; i < slots->len; i++) {
        const char *path = g_ptr_array_index(slots, i);
        uint8_t id[QCOW2_INTENT_ID_LEN];
        bool have_id;
        g_autofree char *why = NULL;
        SlotState st = read_slot(path, &rec, id, &have_id, &why);

        if (!have_id || memcmp(id, txid, QCOW2_INTENT_ID_LEN) != 0) {
            intent_record_free(rec);
            continue;
        }
        if (st == SLOT_TORN) {
            /* this transaction's record, damaged: torn while committed
             * (nothing was published) or damaged since (some may be):
             * no guess */
            g_set_error(errp, INTENT_LOG_ERROR, INTENT_LOG_ERROR_CORRUPT,
                        "%s", why);
            return NULL;
        }
        rec->dir = g_strdup(dir);
        return rec;
    }
    return NULL;
}

static void scan_entry_free(gpointer p)
{
    IntentScanEntry *e = p;

    g_free(e->path);
    g_free(e->error);
    intent_record_free(e->rec);
    g_free(e);
}

/* The unfinished records in slots: valid ones, and torn ones as
 * incomplete (a commit that never returned, or damage: the images that
 * name that transaction report it when opened). */
static void scan_slots(const char *dir, GPtrArray *out)
{
    g_autoptr(GPtrArray) slots = list_slots(dir);

    for (guint i = 0; i < slots->len; i++) {
        const char *path = g_ptr_array_index(slots, i);
        uint8_t id[QCOW2_INTENT_ID_LEN];
        IntentRecord *rec;
        bool have_id;
        char *why = NULL;
        SlotState st = read_slot(path, &rec, id, &have_id, &why);
        IntentScanEntry *e;

        if (st == SLOT_FREE) {
            continue;
        }
        e = g_new0(IntentScanEntry, 1);
        if (have_id) {
            qcow2_intent_id_hex(id, e->txid);
        }
        e->path = g_strdup(path);
        e->rec = rec;
        if (rec) {
            rec->dir = g_strdup(dir);
        }
        e->incomplete = st == SLOT_TORN;
        e->error = why;
        g_ptr_array_add(out, e);
    }
}

GPtrArray *intent_log_scan(IntentLog *log, GError **errp)
{
    g_autoptr(GDir) d = g_dir_open(log->dir, 0, errp);
    GPtrArray *out;
    const char *name;

    if (!d) {
        return NULL;
    }
    out = g_ptr_array_new_with_free_func(scan_entry_free);
    while ((name = g_dir_read_name(d))) {
        bool tmp = g_str_has_suffix(name, ".rec.tmp");
        IntentScanEntry *e;
        uint8_t txid[QCOW2_INTENT_ID_LEN];
        g_autoptr(GError) err = NULL;

        if ((!tmp && !g_str_has_suffix(name, ".rec")) ||
            strlen(name) < 32 || !parse_hex_id(name, txid)) {
            continue;
        }
        e = g_new0(IntentScanEntry, 1);
        memcpy(e->txid, name, 32);
        e->path = g_build_filename(log->dir, name, NULL);
        e->incomplete = tmp;
        if (!tmp) {
            e->rec = intent_log_read_record(log->dir, txid, &err);
            if (!e->rec) {
                e->error = g_strdup(err ? err->message : "vanished");
            }
        }
        g_ptr_array_add(out, e);
    }
    scan_slots(log->dir, out);
    return out;
}
