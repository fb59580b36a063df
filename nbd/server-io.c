/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Socket helpers of the NBD server: whole reads and writes on blocking
 * sockets (a short read is a vanished client, never a partial request),
 * in the clear or through the client's TLS session, and the mapping of
 * host errors to the protocol's error numbers.
 */
#include <errno.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>
#include <gnutls/gnutls.h>

#include "nbd/server-int.h"

static ssize_t raw_recv(NbdClient *c, void *p, size_t len)
{
    if (c->tls) {
        ssize_t n;

        do {
            n = gnutls_record_recv(c->tls, p, len);
            /* AGAIN: the handshake's receive timeout ran out */
        } while (n == GNUTLS_E_INTERRUPTED);
        return n < 0 ? -1 : n;
    }
    return recv(c->fd, p, len, 0);
}

static ssize_t raw_send(NbdClient *c, const void *p, size_t len)
{
    if (c->tls) {
        ssize_t n;

        do {
            n = gnutls_record_send(c->tls, p, len);
        } while (n == GNUTLS_E_INTERRUPTED || n == GNUTLS_E_AGAIN);
        return n < 0 ? -1 : n;
    }
    /* MSG_NOSIGNAL: a client gone mid-reply must not kill the daemon */
    return send(c->fd, p, len, MSG_NOSIGNAL);
}

/*
 * Moves all len bytes through one of the two raw calls: a short transfer
 * goes on, EINTR on a plain socket is retried (GnuTLS retries its own),
 * an error or end of stream fails.
 */
static bool nbd_transfer_full(NbdClient *c, uint8_t *p, size_t len,
                              ssize_t (*xfer)(NbdClient *, uint8_t *, size_t))
{
    while (len) {
        ssize_t n = xfer(c, p, len);

        if (n < 0 && errno == EINTR && !c->tls) {
            continue;
        }
        if (n <= 0) {
            return false;
        }
        p += n;
        len -= (size_t)n;
    }
    return true;
}

static ssize_t recv_some(NbdClient *c, uint8_t *p, size_t len)
{
    return raw_recv(c, p, len);
}

static ssize_t send_some(NbdClient *c, uint8_t *p, size_t len)
{
    return raw_send(c, p, len);
}

bool nbd_read_full(NbdClient *c, void *buf, size_t len)
{
    return nbd_transfer_full(c, buf, len, recv_some);
}

/* send_some never writes through the buffer: the cast only shares the loop */
bool nbd_write_full(NbdClient *c, const void *buf, size_t len)
{
    return nbd_transfer_full(c, (uint8_t *)buf, len, send_some);
}

bool nbd_discard_input(NbdClient *c, uint64_t len)
{
    uint8_t buf[4096];

    while (len) {
        size_t chunk = len < sizeof(buf) ? (size_t)len : sizeof(buf);

        if (!nbd_read_full(c, buf, chunk)) {
            return false;
        }
        len -= chunk;
    }
    return true;
}

/* Through TLS: the vectors corked into as few records as possible. */
static bool send_iov_tls(NbdClient *c, struct iovec *iov, int n)
{
    gnutls_record_cork(c->tls);
    for (int i = 0; i < n; i++) {
        if (gnutls_record_send(c->tls, iov[i].iov_base,
                               iov[i].iov_len) < 0) {
            gnutls_record_uncork(c->tls, 0);
            return false;
        }
    }
    return gnutls_record_uncork(c->tls, GNUTLS_RECORD_WAIT) >= 0;
}

bool nbd_send_iov(NbdClient *c, struct iovec *iov, int n)
{
    struct msghdr msg = { .msg_iov = iov, .msg_iovlen = (size_t)n };

    if (c->tls) {
        return send_iov_tls(c, iov, n);
    }
    while (msg.msg_iovlen) {
        ssize_t done = sendmsg(c->fd, &msg, MSG_NOSIGNAL);

        if (done < 0 && errno == EINTR) {
            continue;
        }
        if (done <= 0) {
            return false;
        }
        /* step over what went out, possibly part of one vector */
        while (msg.msg_iovlen && (size_t)done >= msg.msg_iov->iov_len) {
            done -= (ssize_t)msg.msg_iov->iov_len;
            msg.msg_iov++;
            msg.msg_iovlen--;
        }
        if (msg.msg_iovlen) {
            msg.msg_iov->iov_base = (uint8_t *)msg.msg_iov->iov_base + done;
            msg.msg_iov->iov_len -= (size_t)done;
        }
    }
    return true;
}

uint32_t nbd_errno_to_wire(int err)
{
    switch (err) {
    case 0:
        return 0;
    case EPERM:
    case EROFS:
        return NBD_EPERM;
    case EIO:
        return NBD_EIO;
    case ENOMEM:
        return NBD_ENOMEM;
    case ENOSPC:
    case EFBIG:
    case EDQUOT:
        return NBD_ENOSPC;
    case EOVERFLOW:
        return NBD_EOVERFLOW;
    case ENOTSUP:
        return NBD_ENOTSUP;
    case ESHUTDOWN:
        return NBD_ESHUTDOWN;
    default:
        /* the protocol's catch-all, as QEMU maps unknown errors */
        return NBD_EINVAL;
    }
}
