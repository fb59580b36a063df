/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Helpers shared by the qcow2 snapshot unit tests (snaptest.c).
 */
#ifndef STRATA_TESTS_SNAPTEST_H
#define STRATA_TESTS_SNAPTEST_H

#include <check.h>
#include <errno.h>
#include <string.h>

#include "block/blkdebug.h"
#include "block/block.h"
#include "block/qcow2.h"
#include "block/snapshot.h"

#define KiB 1024
#define MiB (1024LL * 1024)

extern char *tmpdir;

#define STEP_OK(fn, op)                                                   \
    do {                                                                  \
        GError *e_ = NULL;                                                \
        int r_ = fn(op, &e_);                                             \
        ck_assert_msg(r_ == 0, "%s: %s", #fn, e_ ? e_->message : "");     \
    } while (0)

/* The step is refused with -EBUSY and a message containing `why`. */
#define STEP_REFUSED(fn, op, why)                                         \
    do {                                                                  \
        GError *e_ = NULL;                                                \
        int r_ = fn(op, &e_);                                             \
        ck_assert_msg(r_ == -EBUSY && e_ && strstr(e_->message, why),     \
                      "%s: got %d (%s), want -EBUSY (%s)", #fn, r_,       \
                      e_ ? e_->message : "no error", why);                \
        g_clear_error(&e_);                                               \
    } while (0)

char *tmp_path(const char *name);
void make_image(const char *path, const char *size, const char *cs,
                       const char *rb);
BlockDriverState *open_img(const char *path, bool rw,
                                  const char *extra, GError **errp);
BlockDriverState *open_ok(const char *path, bool rw, const char *extra);
void fill(BlockDriverState *bs, int64_t off, int64_t len, int byte);
void expect(BlockDriverState *bs, int64_t off, int64_t len, int byte);
void assert_clean(BlockDriverState *bs);
BdrvSnapshotInfo tmpl_of(const char *name);
void snap_create(BlockDriverState *bs, const char *name);
void snap_delete(BlockDriverState *bs, const char *name);
void snap_goto(BlockDriverState *bs, const char *name);
char *names_of(BlockDriverState *bs);
uint64_t l2_entry(BlockDriverState *bs, uint64_t guest, uint64_t *l1e);
uint64_t refcount(BlockDriverState *bs, uint64_t host);
BdrvSnapshotOp *check_create(BlockDriverState *bs, const char *name);
BdrvSnapshotOp *check_delete(BlockDriverState *bs, const char *name);
void copy_file(const char *from, const char *to);
char *digest(BlockDriverState *bs);
char *state_of(const char *path);
void poke(const char *path, uint64_t off, const void *data, size_t len);
void add_case(Suite *s, const char *name, const TTest *t, int loops);
int snaptest_run(Suite *s);

#endif
