/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * A helper of tests/functional/test_nbd_export.py: libnbd from C against
 * an export, several connections at once, each with up to 16 requests in
 * flight.  Connection k writes blocks of its own region (each block
 * stamped with its connection and index, in a shuffled order), flushes,
 * and then every connection reads back every other connection's region
 * in parallel and checks each stamp: a lost, misplaced or torn write, a
 * reply matched to the wrong request, or a flush on one connection that
 * does not cover another's completed writes (multi-conn) fails the run.
 *
 * Usage: nbd-parallel URI CONNECTIONS BLOCKS_PER_CONNECTION BLOCK_SIZE
 * Exit status 0 on success, 1 with a message on stderr otherwise.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libnbd.h>

#define DEPTH 16

typedef struct Conn {
    struct nbd_handle *h;
    int index;
    uint64_t next;             /* next block to submit */
    uint64_t *order;           /* shuffled block numbers */
    char *bufs[DEPTH];
    int64_t cookies[DEPTH];
    uint64_t blocks_of[DEPTH]; /* which block each slot holds */
    int region;                /* the region this pass reads (or writes) */
} Conn;

static uint64_t nblocks;
static size_t bsize;
static int nconn;

static void die(const char *what)
{
    fprintf(stderr, "nbd-parallel: %s: %s\n", what, nbd_get_error());
    exit(1);
}

/* Block b of region r: its first bytes name both, the rest repeat. */
static void stamp(char *buf, int r, uint64_t b)
{
    int n = snprintf(buf, bsize, "conn %d block %" PRIu64 " ", r, b);

    for (size_t i = (size_t)n; i < bsize; i++) {
        buf[i] = (char)('a' + (r * 7 + b + i) % 26);
    }
}

static uint64_t offset_of(int r, uint64_t b)
{
    return ((uint64_t)r * nblocks + b) * bsize;
}

/* Submits into every free slot; true while anything is left to do. */
static bool pump(Conn *c, bool writing, char *check)
{
    bool busy = false;

    for (int s = 0; s < DEPTH; s++) {
        if (c->cookies[s] > 0) {
            int done = nbd_aio_command_completed(c->h, (uint64_t)c->cookies[s]);
            if (done < 0) {
                die(writing ? "write" : "read");
            }
            if (done == 0) {
                busy = true;
                continue;
            }
            if (!writing) {
                stamp(check, c->region, c->blocks_of[s]);
                if (memcmp(check, c->bufs[s], bsize)) {
                    fprintf(stderr, "nbd-parallel: connection %d read a "
                            "wrong block %" PRIu64 " of region %d: %.40s\n",
                            c->index, c->blocks_of[s], c->region, c->bufs[s]);
                    exit(1);
                }
            }
            c->cookies[s] = 0;
        }
        if (c->next < nblocks) {
            uint64_t b = c->order[c->next++];
            uint64_t off = offset_of(c->region, b);

            c->blocks_of[s] = b;
            if (writing) {
                stamp(c->bufs[s], c->region, b);
                c->cookies[s] = nbd_aio_pwrite(c->h, c->bufs[s], bsize, off,
                                               NBD_NULL_COMPLETION, 0);
            } else {
                c->cookies[s] = nbd_aio_pread(c->h, c->bufs[s], bsize, off,
                                              NBD_NULL_COMPLETION, 0);
            }
            if (c->cookies[s] < 0) {
                die("submit");
            }
            busy = true;
        }
    }
    return busy;
}

/* All connections at once until each has done its region. */
static void run_pass(Conn *conns, bool writing)
{
    char *check = malloc(bsize);
    bool busy = true;

    for (int k = 0; k < nconn; k++) {
        conns[k].next = 0;
        memset(conns[k].cookies, 0, sizeof(conns[k].cookies));
    }
    while (busy) {
        busy = false;
        for (int k = 0; k < nconn; k++) {
            if (pump(&conns[k], writing, check)) {
                busy = true;
                if (nbd_aio_in_flight(conns[k].h) > 0 &&
                    nbd_poll(conns[k].h, 0) < 0) {
                    die("poll");
                }
            }
        }
    }
    free(check);
}

int main(int argc, char **argv)
{
    Conn *conns;

    if (argc != 5) {
        fprintf(stderr, "usage: nbd-parallel URI CONNECTIONS BLOCKS "
                "BLOCK_SIZE\n");
        return 2;
    }
    nconn = atoi(argv[2]);
    nblocks = strtoull(argv[3], NULL, 0);
    bsize = strtoull(argv[4], NULL, 0);
    if (nconn < 2 || !nblocks || bsize < 64) {
        fprintf(stderr, "nbd-parallel: bad arguments\n");
        return 2;
    }
    conns = calloc((size_t)nconn, sizeof(*conns));
    srand(42);
    for (int k = 0; k < nconn; k++) {
        Conn *c = &conns[k];

        c->index = k;
        c->region = k;
        c->h = nbd_create();
        if (!c->h || nbd_connect_uri(c->h, argv[1]) < 0) {
            die("connect");
        }
        if (nbd_can_multi_conn(c->h) != 1) {
            fprintf(stderr, "nbd-parallel: the export does not offer "
                    "multi-conn\n");
            return 1;
        }
        if ((uint64_t)nbd_get_size(c->h) < offset_of(nconn, 0)) {
            fprintf(stderr, "nbd-parallel: export too small\n");
            return 1;
        }
        c->order = malloc(nblocks * sizeof(uint64_t));
        for (uint64_t b = 0; b < nblocks; b++) {
            c->order[b] = b;
        }
        for (uint64_t b = nblocks - 1; b > 0; b--) {
            uint64_t j = (uint64_t)rand() % (b + 1), t = c->order[b];
            c->order[b] = c->order[j];
            c->order[j] = t;
        }
        for (int s = 0; s < DEPTH; s++) {
            c->bufs[s] = malloc(bsize);
        }
    }
    run_pass(conns, true);
    /* one flush covers every connection's completed writes */
    if (nbd_flush(conns[0].h, 0) < 0) {
        die("flush");
    }
    /* each connection reads the region another one wrote */
    for (int k = 0; k < nconn; k++) {
        conns[k].region = (k + 1) % nconn;
    }
    run_pass(conns, false);
    for (int k = 0; k < nconn; k++) {
        if (nbd_shutdown(conns[k].h, 0) < 0) {
            die("shutdown");
        }
        nbd_close(conns[k].h);
        for (int s = 0; s < DEPTH; s++) {
            free(conns[k].bufs[s]);
        }
        free(conns[k].order);
    }
    free(conns);
    printf("nbd-parallel: %d connections x %" PRIu64 " blocks of %zu "
           "bytes: ok\n", nconn, nblocks, bsize);
    return 0;
}
