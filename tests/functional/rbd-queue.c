/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * A helper of tests/functional/test_rbd.py: the embedding API's queue on
 * an RBD device, where reads and plain writes go to librbd directly
 * (api/queue.c's direct path) and FUA writes, zero writes and flushes
 * through the queue's workers.  All requests of a pass are submitted
 * before the first is reaped, so up to BLOCKS are in flight at once.
 *
 * Pass 1 writes block i with the byte (i * 37 + 1) & 0xff, every eighth
 * with STRATA_IO_FUA (a worker) and block 3 as zeroes (a worker), then a
 * flush; pass 2 reads every block back in parallel and checks it.  The
 * caller then checks the same bytes with qemu-io.
 *
 * Usage: rbd-queue POOL IMAGE BLOCKS BLOCK_SIZE
 * Exit status 0 on success, 1 with a message on stderr otherwise.
 */
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <strata/strata.h>

static int failures;

static void done(int ret, void *opaque)
{
    if (ret < 0) {
        fprintf(stderr, "request %s failed: %s\n", (const char *)opaque,
                g_strerror(-ret));
        failures++;
    }
}

/* Reaps until every request of the queue has completed. */
static void reap_all(StrataQueue *q)
{
    struct pollfd p = { .fd = strata_queue_get_fd(q), .events = POLLIN };

    while (strata_queue_pending(q) > 0) {
        if (poll(&p, 1, 60 * 1000) == 0) {
            fprintf(stderr, "no completion within 60 s (%u pending)\n",
                    strata_queue_pending(q));
            exit(1);
        }
        strata_queue_reap(q);
    }
}

static uint8_t block_byte(long i)
{
    return i == 3 ? 0 : (uint8_t)(i * 37 + 1);
}

static void submit(StrataQueue *q, StrataDevice *dev, StrataOp op,
                   int64_t offset, size_t bytes, void *buf, unsigned flags,
                   const char *what)
{
    GError *err = NULL;

    if (!strata_queue_submit(q, dev, op, offset, bytes, buf, flags, done,
                             (void *)what, &err)) {
        fprintf(stderr, "submit %s: %s\n", what, err->message);
        exit(1);
    }
}

int main(int argc, char **argv)
{
    GError *err = NULL;
    StrataDevice *dev;
    StrataQueue *q;
    long blocks, bsize;
    uint8_t *bufs;
    char *opts;

    if (argc != 5) {
        fprintf(stderr, "usage: rbd-queue POOL IMAGE BLOCKS BLOCK_SIZE\n");
        return 1;
    }
    blocks = atol(argv[3]);
    bsize = atol(argv[4]);
    opts = g_strdup_printf("driver=raw,node-name=d0,file.driver=rbd,"
                           "file.pool=%s,file.image=%s", argv[1], argv[2]);
    dev = strata_device_open(opts, &err);
    if (!dev) {
        fprintf(stderr, "open: %s\n", err->message);
        return 1;
    }
    q = strata_queue_new(2, &err);
    if (!q) {
        fprintf(stderr, "queue: %s\n", err->message);
        return 1;
    }
    bufs = g_malloc((size_t)blocks * bsize);

    for (long i = 0; i < blocks; i++) {
        uint8_t *b = bufs + (size_t)i * bsize;

        memset(b, block_byte(i), bsize);
        if (i == 3) {
            submit(q, dev, STRATA_OP_WRITE_ZEROES, i * bsize, bsize, NULL, 0,
                   "zeroes");
        } else {
            submit(q, dev, STRATA_OP_WRITE, i * bsize, bsize, b,
                   i % 8 == 0 ? STRATA_IO_FUA : 0, "write");
        }
    }
    reap_all(q);
    submit(q, dev, STRATA_OP_FLUSH, 0, 0, NULL, 0, "flush");
    reap_all(q);

    memset(bufs, 0xee, (size_t)blocks * bsize);
    for (long i = 0; i < blocks; i++) {
        submit(q, dev, STRATA_OP_READ, i * bsize, bsize,
               bufs + (size_t)i * bsize, 0, "read");
    }
    reap_all(q);
    for (long i = 0; i < blocks; i++) {
        const uint8_t *b = bufs + (size_t)i * bsize;

        for (long k = 0; k < bsize; k++) {
            if (b[k] != block_byte(i)) {
                fprintf(stderr, "block %ld byte %ld: 0x%02x, expected "
                        "0x%02x\n", i, k, b[k], block_byte(i));
                return 1;
            }
        }
    }

    strata_queue_free(q);
    if (!strata_device_close(dev, &err)) {
        fprintf(stderr, "close: %s\n", err->message);
        return 1;
    }
    g_free(bufs);
    g_free(opts);
    return failures ? 1 : 0;
}
