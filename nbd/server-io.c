/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Socket helpers of the NBD server: whole reads and writes on blocking
 * sockets (a short read is a vanished client, never a partial request),
 * and the mapping of host errors to the protocol's error numbers.
 */
#include <errno.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "nbd/server-int.h"

bool nbd_read_full(int fd, void *buf, size_t len)
{
    uint8_t *p = buf;

    while (len) {
        ssize_t n = recv(fd, p, len, 0);

        if (n < 0 && errno == EINTR) {
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

bool nbd_write_full(int fd, const void *buf, size_t len)
{
    const uint8_t *p = buf;

    while (len) {
        /* MSG_NOSIGNAL: a client gone mid-reply must not kill the daemon */
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL);

        if (n < 0 && errno == EINTR) {
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

bool nbd_discard_input(int fd, uint64_t len)
{
    uint8_t buf[4096];

    while (len) {
        size_t chunk = len < sizeof(buf) ? (size_t)len : sizeof(buf);

        if (!nbd_read_full(fd, buf, chunk)) {
            return false;
        }
        len -= chunk;
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

bool nbd_send_iov(int fd, struct iovec *iov, int n)
{
    struct msghdr msg = { .msg_iov = iov, .msg_iovlen = (size_t)n };

    while (msg.msg_iovlen) {
        ssize_t done = sendmsg(fd, &msg, MSG_NOSIGNAL);

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
