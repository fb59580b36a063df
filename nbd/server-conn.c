/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The NBD transmission phase, server side.  The client's thread reads
 * requests (and a write's payload) and checks each one; a valid request
 * goes to the client's worker pool, up to NBD_MAX_REQUESTS at a time, so
 * requests run in parallel and complete out of order as the protocol
 * allows.  A worker does the I/O through the export's BlockBackend (a
 * transaction's drain holds it there like a guest's) and sends the reply
 * under the client's send lock: simple replies, or structured ones
 * (OFFSET_DATA, NONE, ERROR, BLOCK_STATUS) once negotiated.
 *
 * Bad requests get an error reply and the connection stays up while the
 * stream is still in step; a bad magic, or a write whose payload is too
 * large to take, ends the connection.  A client vanishing mid-request
 * ends it too, after the requests already running complete; nothing
 * half-received is ever written.
 */
#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include "nbd/server-int.h"
#include "block/log.h"

typedef struct Request {
    NbdClient *c;
    uint16_t flags, type;
    uint64_t handle, offset;
    uint32_t len;
    uint8_t *buf;              /* a write's payload */
} Request;

/* Extents of one BLOCK_STATUS reply at most (QEMU's cap is similar: the
 * client asked for a range, not for a map of every cluster). */
#define MAX_EXTENTS 65536

/* ---- replies ---- */

static void mark_dead(NbdClient *c)
{
    g_mutex_lock(&c->lock);
    c->dead = true;
    g_cond_broadcast(&c->cond);
    g_mutex_unlock(&c->lock);
    /* the reader blocked in recv() wakes up with EOF */
    shutdown(c->fd, SHUT_RDWR);
}

/* Sends the vectors as one reply; a failure kills the connection. */
static void send_reply_iov(NbdClient *c, struct iovec *iov, int n)
{
    bool ok;

    g_mutex_lock(&c->send_lock);
    ok = nbd_send_iov(c, iov, n);
    g_mutex_unlock(&c->send_lock);
    if (!ok) {
        mark_dead(c);
    }
}

static void put_chunk_header(uint8_t *h, uint16_t flags, uint16_t type,
                             uint64_t handle, uint32_t len)
{
    nbd_put32(h, NBD_STRUCTURED_REPLY_MAGIC);
    nbd_put16(h + 4, flags);
    nbd_put16(h + 6, type);
    nbd_put64(h + 8, handle);
    nbd_put32(h + 16, len);
}

/* A reply without data: success, or the error err (a host errno). */
static void reply_status(NbdClient *c, uint64_t handle, int err)
{
    uint8_t h[NBD_STRUCTURED_HDR_SIZE + 6];
    struct iovec iov = { h, 0 };

    if (!c->structured) {
        nbd_put32(h, NBD_SIMPLE_REPLY_MAGIC);
        nbd_put32(h + 4, nbd_errno_to_wire(err));
        nbd_put64(h + 8, handle);
        iov.iov_len = NBD_SIMPLE_REPLY_SIZE;
    } else if (!err) {
        put_chunk_header(h, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_NONE,
                         handle, 0);
        iov.iov_len = NBD_STRUCTURED_HDR_SIZE;
    } else {
        put_chunk_header(h, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_ERROR,
                         handle, 6);
        nbd_put32(h + NBD_STRUCTURED_HDR_SIZE, nbd_errno_to_wire(err));
        nbd_put16(h + NBD_STRUCTURED_HDR_SIZE + 4, 0);  /* no message */
        iov.iov_len = sizeof(h);
    }
    send_reply_iov(c, &iov, 1);
}

static void reply_read(NbdClient *c, const Request *r, uint8_t *data)
{
    uint8_t h[NBD_STRUCTURED_HDR_SIZE + 8];
    struct iovec iov[2] = { { h, 0 }, { data, r->len } };

    if (!r->len) {
        reply_status(c, r->handle, 0);
        return;
    }
    if (!c->structured) {
        nbd_put32(h, NBD_SIMPLE_REPLY_MAGIC);
        nbd_put32(h + 4, 0);
        nbd_put64(h + 8, r->handle);
        iov[0].iov_len = NBD_SIMPLE_REPLY_SIZE;
    } else {
        /* one chunk for the whole range: DF holds by construction */
        put_chunk_header(h, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_OFFSET_DATA,
                         r->handle, 8 + r->len);
        nbd_put64(h + NBD_STRUCTURED_HDR_SIZE, r->offset);
        iov[0].iov_len = sizeof(h);
    }
    send_reply_iov(c, iov, 2);
}

/* ---- the commands ---- */

/* base:allocation extents of the range (one with REQ_ONE), as QEMU
 * derives them from the block status of the whole backing chain. */
static int block_status(NbdClient *c, const Request *r, GByteArray *out)
{
    g_autoptr(BlockDriverState) bs = blk_get_root(c->exp->blk);
    uint64_t off = r->offset, end = r->offset + r->len;
    uint32_t last_flags = 0;
    guint n = 0;

    if (!bs) {
        return -ENOMEDIUM;
    }
    while (off < end) {
        int64_t pnum = 0, map = 0;
        BlockDriverState *file = NULL;
        int depth = 0;
        int ret = bdrv_block_status_above(bs, (int64_t)off,
                                          (int64_t)(end - off), &pnum, &map,
                                          &file, &depth);
        uint32_t flags;
        uint8_t e[8];

        if (ret < 0) {
            return ret;
        }
        if (pnum <= 0) {
            break;
        }
        flags = (ret & BDRV_BLOCK_DATA ? 0 : NBD_STATE_HOLE) |
                (ret & BDRV_BLOCK_ZERO ? NBD_STATE_ZERO : 0);
        if (n && flags == last_flags) {
            /* same kind as the extent before: make it longer */
            uint8_t *prev = out->data + out->len - 8;
            nbd_put32(prev, nbd_get32(prev) + (uint32_t)pnum);
        } else {
            if (n == MAX_EXTENTS ||
                (n == 1 && (r->flags & NBD_CMD_FLAG_REQ_ONE))) {
                break;
            }
            nbd_put32(e, (uint32_t)pnum);
            nbd_put32(e + 4, flags);
            g_byte_array_append(out, e, sizeof(e));
            n++;
            last_flags = flags;
        }
        off += (uint64_t)pnum;
    }
    return 0;
}

static void do_block_status(NbdClient *c, const Request *r)
{
    g_autoptr(GByteArray) ext = g_byte_array_new();
    uint8_t h[NBD_STRUCTURED_HDR_SIZE + 4];
    struct iovec iov[2];
    int ret = block_status(c, r, ext);

    if (ret < 0) {
        reply_status(c, r->handle, -ret);
        return;
    }
    put_chunk_header(h, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_BLOCK_STATUS,
                     r->handle, 4 + ext->len);
    nbd_put32(h + NBD_STRUCTURED_HDR_SIZE, NBD_META_ID_BASE_ALLOCATION);
    iov[0] = (struct iovec){ h, sizeof(h) };
    iov[1] = (struct iovec){ ext->data, ext->len };
    send_reply_iov(c, iov, 2);
}

static int do_write_zeroes(NbdClient *c, const Request *r)
{
    int flags = 0;

    /* NO_HOLE: the range must stay allocated; FAST_ZERO: fail rather
     * than write zeroes slowly (QEMU's mapping of both) */
    if (!(r->flags & NBD_CMD_FLAG_NO_HOLE)) {
        flags |= BDRV_REQ_MAY_UNMAP;
    }
    if (r->flags & NBD_CMD_FLAG_FAST_ZERO) {
        flags |= BDRV_REQ_NO_FALLBACK;
    }
    if ((r->flags & NBD_CMD_FLAG_FUA) || c->exp->writethrough) {
        flags |= BLK_REQ_FUA;
    }
    return blk_pwrite_zeroes(c->exp->blk, (int64_t)r->offset, r->len, flags);
}

static int do_trim(NbdClient *c, const Request *r)
{
    int ret = blk_pdiscard(c->exp->blk, (int64_t)r->offset, r->len);

    if (ret >= 0 && ((r->flags & NBD_CMD_FLAG_FUA) ||
                     c->exp->writethrough)) {
        ret = blk_flush(c->exp->blk);
    }
    return ret;
}

static void run_request(gpointer data, gpointer user_data)
{
    Request *r = data;
    NbdClient *c = r->c;
    BlockBackend *blk = c->exp->blk;
    int ret = 0;

    switch (r->type) {
    case NBD_CMD_READ: {
        g_autofree uint8_t *buf = g_malloc(r->len ? r->len : 1);

        ret = r->len ? blk_pread(blk, (int64_t)r->offset, r->len, buf) : 0;
        if (ret >= 0) {
            reply_read(c, r, buf);
        }
        break;
    }
    case NBD_CMD_WRITE:
        if (r->len) {
            int fua = ((r->flags & NBD_CMD_FLAG_FUA) || c->exp->writethrough)
                      ? BLK_REQ_FUA : 0;
            ret = blk_pwrite_flags(blk, (int64_t)r->offset, r->len, r->buf,
                                   fua);
        }
        break;
    case NBD_CMD_FLUSH:
        ret = blk_flush(blk);
        break;
    case NBD_CMD_TRIM:
        ret = r->len ? do_trim(c, r) : 0;
        break;
    case NBD_CMD_WRITE_ZEROES:
        ret = r->len ? do_write_zeroes(c, r) : 0;
        break;
    case NBD_CMD_BLOCK_STATUS:
        do_block_status(c, r);
        break;
    default:
        g_assert_not_reached();
    }
    if (ret < 0 || (r->type != NBD_CMD_READ &&
                    r->type != NBD_CMD_BLOCK_STATUS)) {
        reply_status(c, r->handle, ret < 0 ? -ret : 0);
    }
    g_free(r->buf);
    g_free(r);
    g_mutex_lock(&c->lock);
    c->inflight--;
    g_cond_broadcast(&c->cond);
    g_mutex_unlock(&c->lock);
}

/* ---- checks ---- */

static uint16_t allowed_flags(uint16_t type)
{
    switch (type) {
    case NBD_CMD_READ:
        return NBD_CMD_FLAG_DF;
    case NBD_CMD_WRITE:
    case NBD_CMD_TRIM:
        return NBD_CMD_FLAG_FUA;
    case NBD_CMD_WRITE_ZEROES:
        return NBD_CMD_FLAG_FUA | NBD_CMD_FLAG_NO_HOLE |
               NBD_CMD_FLAG_FAST_ZERO;
    case NBD_CMD_BLOCK_STATUS:
        return NBD_CMD_FLAG_REQ_ONE;
    default:
        return 0;
    }
}

static bool has_range(uint16_t type)
{
    return type == NBD_CMD_READ || type == NBD_CMD_WRITE ||
           type == NBD_CMD_TRIM || type == NBD_CMD_WRITE_ZEROES ||
           type == NBD_CMD_BLOCK_STATUS;
}

/* 0 if the request may run, else the errno its reply carries. */
static int check_request(NbdClient *c, const Request *r)
{
    NbdExport *e = c->exp;

    switch (r->type) {
    case NBD_CMD_READ:
    case NBD_CMD_FLUSH:
        break;
    case NBD_CMD_WRITE:
    case NBD_CMD_TRIM:
    case NBD_CMD_WRITE_ZEROES:
        if (!e->writable) {
            return EPERM;
        }
        break;
    case NBD_CMD_BLOCK_STATUS:
        if (!c->meta_base_allocation || !r->len) {
            return EINVAL;
        }
        break;
    default:
        return EINVAL;         /* unknown command (CACHE included) */
    }
    if (r->flags & ~allowed_flags(r->type)) {
        return EINVAL;
    }
    if ((r->flags & NBD_CMD_FLAG_DF) && !c->structured) {
        return EINVAL;
    }
    if (has_range(r->type) &&
        (r->offset > (uint64_t)e->size ||
         r->len > (uint64_t)e->size - r->offset)) {
        return EINVAL;         /* past the end: QEMU's answer */
    }
    return 0;
}

/* ---- the reader ---- */

/* Reads one request (and a write's payload); false: close. */
static bool read_request(NbdClient *c, Request *r, int *err)
{
    uint8_t h[NBD_REQUEST_SIZE];

    if (!nbd_read_full(c, h, sizeof(h)) ||
        nbd_get32(h) != NBD_REQUEST_MAGIC) {
        return false;
    }
    r->flags = nbd_get16(h + 4);
    r->type = nbd_get16(h + 6);
    r->handle = nbd_get64(h + 8);
    r->offset = nbd_get64(h + 16);
    r->len = nbd_get32(h + 24);
    *err = 0;
    if ((r->type == NBD_CMD_READ || r->type == NBD_CMD_WRITE) &&
        r->len > NBD_MAX_BUFFER_SIZE) {
        *err = EINVAL;
        /* the payload of such a write is not taken: the stream is out of
         * step after the reply, so the connection ends there */
        return r->type != NBD_CMD_WRITE;
    }
    if (r->type == NBD_CMD_WRITE) {
        r->buf = g_try_malloc(r->len ? r->len : 1);
        if (!r->buf) {
            *err = ENOMEM;
            return nbd_discard_input(c, r->len);
        }
        if (!nbd_read_full(c, r->buf, r->len)) {
            return false;      /* vanished mid-payload: nothing written */
        }
    }
    return true;
}

/* Waits for a free slot; false if the connection died meanwhile. */
static bool reserve_slot(NbdClient *c)
{
    bool ok;

    g_mutex_lock(&c->lock);
    while (c->inflight >= NBD_MAX_REQUESTS && !c->dead) {
        g_cond_wait(&c->cond, &c->lock);
    }
    ok = !c->dead;
    if (ok) {
        c->inflight++;
    }
    g_mutex_unlock(&c->lock);
    return ok;
}

void nbd_transmission(NbdClient *c)
{
    c->pool = g_thread_pool_new(run_request, c, NBD_MAX_REQUESTS, FALSE,
                                NULL);
    for (;;) {
        Request *r = g_new0(Request, 1);
        int err = 0;
        bool in_step = read_request(c, r, &err);

        r->c = c;
        if (in_step && !err && r->type == NBD_CMD_DISC) {
            g_free(r);
            break;
        }
        if (!err && in_step) {
            err = check_request(c, r);
        }
        if (err) {
            reply_status(c, r->handle, err);
        }
        if (!in_step || err || !reserve_slot(c)) {
            g_free(r->buf);
            g_free(r);
            if (!in_step) {
                break;
            }
            continue;
        }
        g_thread_pool_push(c->pool, r, NULL);
    }
    /* the requests already running complete and reply (if the socket is
     * still there) before the client goes */
    g_thread_pool_free(c->pool, FALSE, TRUE);
    c->pool = NULL;
}
