/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The intent log of crash-atomic transactions (issue 14): a journal
 * directory holding one record per transaction in flight, and the
 * recovery that completes or drops such a transaction when one of its
 * images is opened after a crash.
 *
 * How the engine uses it (one transaction):
 *
 *   rec = intent_record_begin(log)              random 128-bit id
 *   for each image:  i = intent_record_add_image(rec, path)
 *                    qcow2_intent_set(bs, intent_record_extension(rec))
 *   do every action (results durable, unpublished)
 *   for each image:  intent_record_add_header(rec, i, off, old, new, len)
 *                    and/or intent_record_add_rename(rec, i, from, to)
 *   intent_record_commit(rec)     the record written into a free slot
 *                                 in place and fdatasynced: "complete"
 *                                 (the transaction's one synced write)
 *   publish every image (its header write, its rename), made durable
 *   intent_record_done(rec)       the slot's magic overwritten, no sync
 *   for each image:  qcow2_intent_clear(bs)
 *
 * Journal layout: DIR/journal-id (32 hex digits, the journal's identity,
 * also named by each image's header extension so a different directory
 * at the same path is not taken for it) and record slots DIR/slot-K
 * (slot-0 made at open, 4 KiB; another only when every one is locked by a
 * transaction in flight, OFD write locks, any process).  A record is
 * written at offset 0 of its slot; what follows its checksum is old
 * bytes.  A slot is free when it does not start with the record magic
 * (zeros, or "STRATAID": done).  Journals of the first format,
 * DIR/<txid>.rec (written to .rec.tmp, renamed; unlinked when done), are
 * still read and recovered; nothing writes them any more.
 *
 * Why a done mark may be lost: it is not synced, so a crash can bring a
 * finished record back.  Recovery therefore acts on an image only while
 * it carries that transaction's extension: the extension is durable
 * before the commit and removed only after done; once a later flush of
 * the image (any later transaction's, or any header update's) has made
 * its removal durable -- or a later transaction's extension replaced it
 * -- a returning record finds nothing to do on it.
 *
 * Record file, big endian: "STRATAIR" | u32 version (1) | u32 body length
 * | body | SHA-256 of everything before it.  Body: txid[16] |
 * journal id[16] | u32 image count | per image: u64 st_dev | u64 st_ino
 * | str path | u32 op count | per op: u32 type, then HEADER: u64 offset
 * | u32 len | old bytes | new bytes, or RENAME: str from | str to.
 * str = u32 length + bytes (no NUL).  A chain link (a backing file name)
 * is recorded as the header bytes it changes.
 *
 * Recovery rules (intent_log_recover_image, installed as the qcow2 open
 * hook):
 *  - the journal named by the image's extension must exist and carry the
 *    same journal id (else, or if the path does not exist, the
 *    directory given to intent_log_set_search_dir() is tried); otherwise
 *    it is an error, never a guess;
 *  - record present and valid: roll forward: every image of the record
 *    gets every op (a HEADER op is a compare-and-swap: written only when
 *    the file holds the old bytes, skipped when it holds the new ones,
 *    left alone with a warning when it holds neither -- the image was
 *    changed since), then loses its extension; then the record is
 *    removed.  Each step is idempotent, so a crash during recovery
 *    recovers the same way;
 *  - record present but corrupt or truncated (a first-format file, or a
 *    slot with the record magic naming this transaction that fails its
 *    length or checksum): an error, never a guess;
 *  - an image that no longer carries the transaction's extension is
 *    left alone (completed, or taken by a later transaction);
 *  - record absent (never committed, or its .tmp torn): discard: the
 *    image loses its extension and gets the dirty bit, so its next
 *    read-write open (or check -r) rebuilds the refcounts and reclaims
 *    what the transaction had prepared.  Every other image of that
 *    transaction is discarded the same way when it is opened.
 *  - images are found by the record's path (and the rename's target) and
 *    identified by st_dev + st_ino; an image moved to another directory
 *    is found when it sits beside the image being opened under the same
 *    name (moved together), and a file that carries this transaction's
 *    extension is accepted even when its inode changed (copied).  An
 *    image found nowhere is reported and the record kept, so it is
 *    completed when that image is opened.
 */
#ifndef STRATA_BLOCKDEV_INTENT_LOG_H
#define STRATA_BLOCKDEV_INTENT_LOG_H

#include <glib.h>
#include <stdbool.h>
#include <stdint.h>

#include "block/qcow2-intent.h"

G_BEGIN_DECLS

#define INTENT_LOG_ERROR (intent_log_error_quark())
GQuark intent_log_error_quark(void);
typedef enum {
    INTENT_LOG_ERROR_GENERIC,
    INTENT_LOG_ERROR_NO_JOURNAL,   /* missing, unreadable or another one */
    INTENT_LOG_ERROR_CORRUPT,      /* a record that fails its checksum */
    INTENT_LOG_ERROR_IO,
} IntentLogError;

typedef enum {
    INTENT_OP_HEADER = 1,
    INTENT_OP_RENAME = 2,
} IntentOpType;

/* The parts of a record (read them; build them with the functions). */
typedef struct IntentOp {
    IntentOpType type;
    uint64_t offset;          /* HEADER */
    uint32_t len;
    uint8_t *old_bytes, *new_bytes;
    char *from, *to;          /* RENAME */
} IntentOp;

typedef struct IntentImage {
    uint64_t dev, ino;
    char *path;               /* absolute, at the time of the transaction */
    GPtrArray *ops;           /* IntentOp * */
} IntentImage;

typedef struct IntentRecord {
    uint8_t txid[QCOW2_INTENT_ID_LEN];
    uint8_t journal_id[QCOW2_INTENT_ID_LEN];
    char *dir;                /* the journal directory */
    GPtrArray *images;        /* IntentImage * */
    bool committed, done;
    char *slot;               /* its slot file; NULL: a first-format
                                 DIR/<txid>.rec (read only) */
    int slot_fd;              /* the slot, locked, while committed */
} IntentRecord;

typedef struct IntentLog IntentLog;

/* Opens the journal directory, creating it (and its journal-id) when
 * missing.  The path is made absolute. */
IntentLog *intent_log_open(const char *dir, GError **errp);
void intent_log_close(IntentLog *log);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(IntentLog, intent_log_close)
const char *intent_log_dir(IntentLog *log);

/* Where recovery also looks when the directory an image names is gone
 * or is another journal (a daemon's --state-dir); NULL: nowhere. */
void intent_log_set_search_dir(const char *dir);

IntentRecord *intent_record_begin(IntentLog *log);
void intent_record_free(IntentRecord *rec);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(IntentRecord, intent_record_free)
/* The extension each image carries from prepare on (free it). */
Qcow2Intent *intent_record_extension(const IntentRecord *rec);
/* Returns the image's index, or -errno (cannot stat, already in it). */
int intent_record_add_image(IntentRecord *rec, const char *path,
                            GError **errp);
bool intent_record_add_header(IntentRecord *rec, int image, uint64_t offset,
                              const void *old_bytes, const void *new_bytes,
                              uint32_t len, GError **errp);
bool intent_record_add_rename(IntentRecord *rec, int image,
                              const char *from, const char *to,
                              GError **errp);
/* Writes the record durably; from here on recovery rolls it forward. */
int intent_record_commit(IntentRecord *rec, GError **errp);
/* Marks the record finished, without a sync: call it only once every
 * publish is durable (recovery then skips images without the extension,
 * so a done mark lost in a crash is harmless). */
int intent_record_done(IntentRecord *rec, GError **errp);
/* The same, synced: for a record withdrawn before a rollback frees what
 * it points at. */
int intent_record_withdraw(IntentRecord *rec, GError **errp);

/* Encoding (tests and tools). */
GBytes *intent_record_serialize(const IntentRecord *rec);
IntentRecord *intent_record_parse(const void *buf, size_t len,
                                  GError **errp);
/* The unfinished record of txid (a slot, or a first-format
 * DIR/<txid>.rec): NULL with INTENT_LOG_ERROR_CORRUPT for a bad one,
 * NULL and no error when there is none. */
IntentRecord *intent_log_read_record(const char *dir, const uint8_t *txid,
                                     GError **errp);

/* One entry per file in the journal that is not journal-id. */
typedef struct IntentScanEntry {
    char txid[33];
    char *path;
    IntentRecord *rec;        /* NULL unless complete and valid */
    bool incomplete;          /* a .tmp, or a torn slot: never committed */
    char *error;              /* why a .rec or a slot is not valid */
} IntentScanEntry;
/* Unfinished transactions of the journal (IntentScanEntry *). */
GPtrArray *intent_log_scan(IntentLog *log, GError **errp);

/* The qcow2 open hook (see qcow2-intent.h); intent_log_open installs
 * it, as does intent_log_install(). */
int intent_log_recover_image(const char *filename, const Qcow2Intent *in,
                             bool apply, IntentDecision *decision,
                             GError **errp);
void intent_log_install(void);
/* Rolls forward every complete record of the journal (daemon start-up):
 * returns how many were completed, or -errno on the first failure.  A
 * record whose slot another open file description has locked is a
 * transaction in flight in a live process: skipped. */
int intent_log_recover_all(IntentLog *log, GError **errp);

G_END_DECLS

#endif
