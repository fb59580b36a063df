/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * What blockdev/intent-log.c (records, journal, slots) shares with
 * blockdev/intent-recover.c (recovery): the journal's layout and the
 * durable file operations that go through the fault hooks.
 */
#ifndef STRATA_BLOCKDEV_INTENT_LOG_INT_H
#define STRATA_BLOCKDEV_INTENT_LOG_INT_H

#include "blockdev/intent-log.h"

#define REC_MAGIC "STRATAIR"
#define REC_VERSION 1
#define REC_SUM_LEN 32        /* SHA-256 */
#define REC_MAX_BYTES (64u << 20)
#define ID_FILE "journal-id"
/* Record slots: DIR/slot-K, overwritten in place (see the header). */
#define SLOT_PREFIX "slot-"
#define SLOT_PREALLOC 4096
#define REC_DONE_MAGIC "STRATAID"

struct IntentLog {
    char *dir;
    uint8_t id[QCOW2_INTENT_ID_LEN];
};

/* the directory intent_log_set_search_dir() named, or NULL */
extern char *ilog_search_dir;

/* durable file operations through the fault injector's hooks */
int ilog_hooked_pwrite(int fd, const void *buf, size_t len, off_t off);
int ilog_hooked_sync(int fd);
int ilog_sync_dir(const char *dir);
int ilog_hooked_rename(const char *from, const char *to);
bool ilog_read_journal_id(const char *dir, uint8_t *id, GError **errp);
int ilog_finish_record(IntentRecord *rec, bool sync);
char *ilog_record_name(const uint8_t *txid, const char *suffix);

#endif
