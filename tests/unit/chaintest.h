/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Helpers shared by the backing-chain unit tests (chaintest.c).
 */
#ifndef STRATA_TESTS_CHAINTEST_H
#define STRATA_TESTS_CHAINTEST_H

#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "block/backing.h"
#include "block/blkdebug.h"
#include "block/log.h"
#include "block/snapshot.h"
#include "block/block-backend.h"
#include "block/blockjob.h"
#include "block/external-snapshot.h"

#define KiB 1024LL
#define MiB (1024 * KiB)

extern char *tmpdir;

typedef struct SeqWriter {
    BlockBackend *blk;
    gint stop;
    int n;                      /* writes completed */
} SeqWriter;

#define SEQ_STRIDE (64 * KiB)
#define SEQ_MAX 200

char *tmp_path(const char *name);
void create_img(const char *path, int64_t size, const char *backing,
                       const char *backing_fmt);
BlockDriverState *open_img(const char *path, int flags);
void open_fails(const char *path, BlockOpts *o, const char *want);
void fill_random(BlockDriverState *bs, GRand *r, int n);
uint8_t *read_all(BlockDriverState *bs, int64_t len);
uint8_t *blk_read_all(BlockBackend *blk, int64_t len);
void assert_same(const uint8_t *a, const uint8_t *b, int64_t len,
                        const char *what);
void check_clean(const char *path);
char *make_chain(const char *prefix, int depth, const int64_t *sizes,
                        unsigned seed);
char *layer_path(const char *prefix, int i);
BlockDriverState *layer(BlockDriverState *top, int depth, int i);
BlockBackend *device_on(const char *path);
gpointer seq_writer(gpointer opaque);
int chaintest_run(Suite *s);
/* the intent log tests: an unfinished record in a journal directory */
bool live_record_file(const char *jdir, const char *name);

#endif
