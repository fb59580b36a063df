/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The strata intent header extension of qcow2 (issue 14): an image that
 * takes part in a crash-atomic transaction carries, from prepare until it
 * is published (or the transaction discarded), a header extension naming
 * the transaction and the journal that holds its intent record, so an
 * image opened alone knows it must be recovered first.
 *
 * Extension type 0x5354494c ("STIL", strata intent log); no QEMU or
 * qcow2-spec extension uses it.  QEMU 7.2 keeps unknown extensions and
 * ignores them (qemu-img info/check/snapshot work unchanged, see README).
 * Payload, big endian:
 *     0   transaction id (16 bytes)
 *     16  journal id (16 bytes, the journal directory's own identity)
 *     32  u32 length of the journal directory path
 *     36  the journal directory path (no NUL)
 *
 * The journal itself (records, recovery) is blockdev/intent-log.c; the
 * block layer only finds the extension at open and calls the recovery
 * function the intent log installs, so block/ does not depend on it.
 */
#ifndef STRATA_BLOCK_QCOW2_INTENT_H
#define STRATA_BLOCK_QCOW2_INTENT_H

#include <glib.h>
#include <stdbool.h>
#include <stdint.h>

#include "block/block.h"

G_BEGIN_DECLS

#define QCOW2_EXT_STRATA_INTENT 0x5354494cU
/*
 * Set together with the extension: an autoclear feature bit, which QEMU
 * (and any writer that does not know it) clears when it opens the image
 * read-write.  Found cleared beside the extension, it means someone else
 * wrote to the image mid-transaction (a `qemu-img check -r leaks` may even
 * have freed the prepared clusters), so recovery does not trust what the
 * image had prepared: it leaves that image's header alone.  Version 3
 * images only (version 2 has no feature bits).
 */
#define QCOW2_AUTOCLEAR_STRATA_INTENT (1ULL << 63)
#define QCOW2_INTENT_ID_LEN 16

typedef struct Qcow2Intent {
    uint8_t txid[QCOW2_INTENT_ID_LEN];
    uint8_t journal_id[QCOW2_INTENT_ID_LEN];
    char *journal_dir;
} Qcow2Intent;

void qcow2_intent_free(Qcow2Intent *in);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(Qcow2Intent, qcow2_intent_free)

/* An id as 32 lowercase hex digits (buf: 33 bytes). */
void qcow2_intent_id_hex(const uint8_t *id, char *buf);

/*
 * Raw cluster-0 bytes (len: as many as were read, up to one cluster).
 * Returns 1 and *out when the header carries the extension, 0 when not
 * (or when the bytes are no qcow2 header this code can walk: open reports
 * those), -EINVAL with errp when the extension itself is malformed.
 */
int qcow2_intent_parse(const uint8_t *hdr, size_t len, Qcow2Intent **out,
                       GError **errp);
/* Removes the extension from raw cluster-0 bytes in place (later
 * extensions move up, the end marker follows them, the backing name stays
 * where its offset says).  When set_dirty, also sets the dirty bit (v3
 * images): the next read-write open then rebuilds the refcounts, which
 * reclaims what a discarded transaction had prepared.  Returns whether
 * the extension was there. */
bool qcow2_intent_strip(uint8_t *hdr, size_t len, bool set_dirty);
/* Where the header's extension area starts and ends (for rewriting only
 * that part); false when hdr is no walkable qcow2 header. */
bool qcow2_intent_ext_area(const uint8_t *hdr, size_t len, uint32_t *start,
                           uint32_t *end);
/* Encodes the extension payload (g_free it). */
uint8_t *qcow2_intent_encode(const Qcow2Intent *in, uint32_t *len);

/* ---- on an open qcow2 node (the engine's prepare and publish) ---- */

/* Adds the extension (replacing one there) and the autoclear bit, and
 * writes cluster 0, WITHOUT a flush: the engine flushes every image after
 * its do, before the record is committed, and that flush makes the
 * extension durable too (one sync per image saved). */
int qcow2_intent_set(BlockDriverState *bs, const Qcow2Intent *in,
                     GError **errp);
/* Drops the extension from the node's header in memory only: the next
 * header rewrite leaves it out. */
void qcow2_intent_forget(BlockDriverState *bs);
/* Drops the extension and writes cluster 0, without a flush: if a crash
 * loses that write after the record is done, the next open finds the
 * extension without a record and discards, which only drops it again
 * (and rebuilds the refcounts); the published state stays. */
int qcow2_intent_clear(BlockDriverState *bs, GError **errp);

/* What the last open of a qcow2 node found and did. */
typedef enum {
    QCOW2_INTENT_NONE,            /* no extension */
    QCOW2_INTENT_PENDING,         /* extension left (read-only open, or
                                     an error a check reports) */
    QCOW2_INTENT_ROLLED_FORWARD,  /* recovered: transaction completed */
    QCOW2_INTENT_DISCARDED,       /* recovered: transaction dropped */
} Qcow2IntentState;

typedef struct Qcow2IntentInfo {
    Qcow2IntentState state;
    char txid[33];
    char *journal_dir;
    /* PENDING: what recovery would do ("roll forward", "discard") or why
     * it cannot ("the journal ... cannot be read: ..."). */
    char *detail;
} Qcow2IntentInfo;

void qcow2_intent_info_clear(Qcow2IntentInfo *info);
/* false when bs is not a qcow2 node. */
bool qcow2_intent_query(BlockDriverState *bs, Qcow2IntentInfo *info);

/* ---- the recovery hook ---- */

typedef enum {
    INTENT_DECIDE_ROLL_FORWARD,
    INTENT_DECIDE_DISCARD,
} IntentDecision;

/*
 * Called at open for an image (filename: the file under the qcow2 node)
 * whose header carries the extension.  apply = false: only decide (a
 * read-only open must not write).  apply = true: carry it out on every
 * image of the transaction, this one included, through their files, and
 * leave this image's header without the extension.  Returns 0 with
 * *decision, or -errno with errp (the journal is missing or corrupt, the
 * record does not name the image, ...).
 */
typedef int (*Qcow2IntentRecoverFn)(const char *filename,
                                    const Qcow2Intent *in, bool apply,
                                    IntentDecision *decision, GError **errp);
void qcow2_intent_set_recovery(Qcow2IntentRecoverFn fn);

G_END_DECLS

#endif
