/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Helpers shared by the transaction tests (txntest.c): named devices on
 * fresh qcow2 images, a picture of everything a transaction may change
 * (per device: chain files, snapshot lists, content; the directory's file
 * names) to compare before and after, and QEMU's qemu-img as a second
 * opinion on the images once the devices are closed.
 */
#ifndef STRATA_TESTS_TXNTEST_H
#define STRATA_TESTS_TXNTEST_H

#include "chaintest.h"
#include "blockdev/registry.h"
#include "blockdev/transaction.h"

#define TXN_IMG_SIZE (1 * MiB)

typedef struct TxnDevs {
    int n;
    char *dir;                  /* every image of the case lives here */
    char **base;                /* image i: DIR/dI.qcow2 */
    BlockBackend **blk;         /* device "dI" on it, registered */
} TxnDevs;

/* n images in a new directory (named after tag) with random content and
 * two snapshots each, "old1" and "old2" (different content). */
TxnDevs *txn_devs_new(const char *tag, int n, unsigned seed);
/* Registered devices d0..d(n-1) on the images (or on their chains'
 * current tops after an earlier close: tops[i] if non-NULL). */
void txn_devs_open(TxnDevs *d, char **tops);
/* Unregisters and closes every device. */
void txn_devs_close(TxnDevs *d);
void txn_devs_free(TxnDevs *d);

/* Everything a transaction can change, as one string per device plus the
 * directory listing: equal strings mean equal states. */
typedef struct TxnPicture {
    int n;
    char **dev;                 /* chain, snapshot lists, content digest */
    char *files;                /* sorted names in the directory */
} TxnPicture;

TxnPicture *txn_picture(TxnDevs *d);
void txn_picture_assert_same(const TxnPicture *a, const TxnPicture *b,
                             const char *what);
void txn_picture_free(TxnPicture *p);

/* Snapshot names of the node, comma-separated in table order. */
char *txn_snapshot_names(BlockDriverState *bs);
/* Every *.qcow2 in the directory is clean with no leak (ours and
 * qemu-img's check). */
void txn_check_dir_clean(const char *dir);

/* qemu-img's view (NULL if qemu-img is not installed): the snapshot
 * names of an image, comma-separated, and the file names of its backing
 * chain from the top, comma-separated. */
char *qemu_snapshot_names(const char *path);
char *qemu_chain_files(const char *path);
/* qemu-img compare of a qcow2 image with a raw file: true if equal (or
 * qemu-img is not installed). */
bool qemu_same_content(const char *qcow2, const char *raw);

/* Action builders. */
BlkTransactionAction txn_internal(const char *dev, const char *name);
BlkTransactionAction txn_delete(const char *dev, const char *id,
                                const char *name);
BlkTransactionAction txn_apply(const char *dev, const char *id,
                               const char *name);
BlkTransactionAction txn_external(const char *dev, const char *file);
BlkTransactionAction txn_abort(void);
/* Adds or fails the test with the message. */
void txn_add_ok(BlkTransactionStates *t, BlkTransactionAction a);

#endif
