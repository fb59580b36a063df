#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""A small NBD client on the standard library, for tests that need to
speak the protocol byte by byte: well-formed negotiation and requests
(simple or structured replies, base:allocation), and the means to send
anything else (raw bytes, bad magics, lying lengths).

Used by test_nbd_wire.py, test_nbd_export.py and test_nbd_cut.py.
"""

import socket
import struct

NBDMAGIC = 0x4e42444d41474943
IHAVEOPT = 0x49484156454F5054
REP_MAGIC = 0x0003e889045565a9
REQUEST_MAGIC = 0x25609513
SIMPLE_MAGIC = 0x67446698
STRUCTURED_MAGIC = 0x668e33ef

OPT_EXPORT_NAME, OPT_ABORT, OPT_LIST = 1, 2, 3
OPT_STARTTLS, OPT_INFO, OPT_GO, OPT_STRUCTURED_REPLY = 5, 6, 7, 8
OPT_LIST_META_CONTEXT, OPT_SET_META_CONTEXT = 9, 10
REP_ACK, REP_SERVER, REP_INFO, REP_META_CONTEXT = 1, 2, 3, 4
REP_ERR_UNSUP = 0x80000001
REP_ERR_POLICY = 0x80000002
REP_ERR_INVALID = 0x80000003
REP_ERR_UNKNOWN = 0x80000006
REP_ERR_TOO_BIG = 0x80000009
INFO_EXPORT = 0

CMD_READ, CMD_WRITE, CMD_DISC, CMD_FLUSH, CMD_TRIM = 0, 1, 2, 3, 4
CMD_CACHE, CMD_WRITE_ZEROES, CMD_BLOCK_STATUS = 5, 6, 7
FLAG_FUA, FLAG_NO_HOLE, FLAG_DF, FLAG_REQ_ONE, FLAG_FAST_ZERO = 1, 2, 4, 8, 16
REPLY_TYPE_NONE, REPLY_TYPE_OFFSET_DATA, REPLY_TYPE_OFFSET_HOLE = 0, 1, 2
REPLY_TYPE_BLOCK_STATUS, REPLY_TYPE_ERROR = 5, 32769
TFLAG_READ_ONLY = 2

EPERM, EIO, EINVAL, ENOSPC, ENOTSUP = 1, 5, 22, 28, 95


class Closed(Exception):
    """The server closed the connection."""


class Client:
    def __init__(self, path, timeout=30):
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.settimeout(timeout)
        self.sock.connect(path)
        self.structured = False
        self.handle = 0
        self.size = None
        self.tflags = None

    def close(self):
        self.sock.close()

    # ---- bytes ----

    def send(self, data):
        self.sock.sendall(data)

    def recv_exact(self, n):
        buf = b''
        while len(buf) < n:
            part = self.sock.recv(n - len(buf))
            if not part:
                raise Closed('closed after %d of %d bytes' % (len(buf), n))
            buf += part
        return buf

    def is_closed(self, timeout=10):
        """True if the server closes (EOF or reset) within timeout."""
        self.sock.settimeout(timeout)
        try:
            return self.sock.recv(1) == b''
        except ConnectionResetError:
            return True
        except socket.timeout:
            return False

    # ---- handshake ----

    def hello(self, client_flags=3):
        magic, opts, flags = struct.unpack('>QQH', self.recv_exact(18))
        assert magic == NBDMAGIC and opts == IHAVEOPT, (magic, opts)
        self.send(struct.pack('>I', client_flags))
        return flags

    def option(self, opt, data=b''):
        self.send(struct.pack('>QII', IHAVEOPT, opt, len(data)) + data)

    def option_reply(self):
        magic, opt, typ, length = struct.unpack('>QIII',
                                                self.recv_exact(20))
        assert magic == REP_MAGIC, hex(magic)
        return opt, typ, self.recv_exact(length)

    def option_replies(self, opt, data=b''):
        """Sends an option; returns its replies up to the final one."""
        self.option(opt, data)
        out = []
        while True:
            o, typ, payload = self.option_reply()
            assert o == opt, (o, opt)
            out.append((typ, payload))
            if typ == REP_ACK or typ & 0x80000000:
                return out

    @staticmethod
    def name_data(name, infos=()):
        n = name.encode()
        return (struct.pack('>I', len(n)) + n +
                struct.pack('>H', len(infos)) +
                b''.join(struct.pack('>H', i) for i in infos))

    @staticmethod
    def meta_data(name, queries):
        n = name.encode()
        out = struct.pack('>I', len(n)) + n + struct.pack('>I', len(queries))
        for q in queries:
            out += struct.pack('>I', len(q)) + q.encode()
        return out

    def go(self, name, structured=True, meta=True):
        """Full negotiation; returns the final reply type of GO."""
        self.hello()
        if structured:
            r = self.option_replies(OPT_STRUCTURED_REPLY)
            assert r[-1][0] == REP_ACK, r
            self.structured = True
        if structured and meta:
            r = self.option_replies(
                OPT_SET_META_CONTEXT,
                self.meta_data(name, ['base:allocation']))
            assert r[-1][0] == REP_ACK, r
        replies = self.option_replies(OPT_GO, self.name_data(name))
        for typ, payload in replies:
            if typ == REP_INFO and struct.unpack('>H', payload[:2])[0] == \
                    INFO_EXPORT:
                _, self.size, self.tflags = struct.unpack('>HQH', payload)
        return replies[-1][0]

    # ---- transmission ----

    def request(self, typ, offset, length, flags=0, data=b''):
        self.handle += 1
        self.send(struct.pack('>IHHQQI', REQUEST_MAGIC, flags, typ,
                              self.handle, offset, length) + data)
        return self.handle

    def reply(self, read_len=0):
        """(handle, error, data, chunks) of the next reply."""
        magic = struct.unpack('>I', self.recv_exact(4))[0]
        if magic == SIMPLE_MAGIC:
            err, handle = struct.unpack('>IQ', self.recv_exact(12))
            data = self.recv_exact(read_len) if not err and read_len else b''
            return handle, err, data, []
        chunks, err, data = [], 0, b''
        while True:
            if magic != STRUCTURED_MAGIC:
                raise AssertionError('bad reply magic %#x' % magic)
            flags, typ, handle, length = struct.unpack(
                '>HHQI', self.recv_exact(16))
            payload = self.recv_exact(length)
            chunks.append((typ, payload))
            if typ == REPLY_TYPE_ERROR:
                err = struct.unpack('>I', payload[:4])[0]
            elif typ == REPLY_TYPE_OFFSET_DATA:
                data += payload[8:]
            if flags & 1:
                return handle, err, data, chunks
            magic = struct.unpack('>I', self.recv_exact(4))[0]

    def call(self, typ, offset, length, flags=0, data=b''):
        h = self.request(typ, offset, length, flags, data)
        handle, err, out, chunks = self.reply(
            length if typ == CMD_READ else 0)
        assert handle == h, (handle, h)
        return err, out, chunks

    def read(self, offset, length, flags=0):
        return self.call(CMD_READ, offset, length, flags)

    def write(self, offset, data, flags=0):
        return self.call(CMD_WRITE, offset, len(data), flags, data)[0]

    def block_status(self, offset, length, flags=0):
        err, _, chunks = self.call(CMD_BLOCK_STATUS, offset, length, flags)
        extents = []
        for typ, payload in chunks:
            if typ == REPLY_TYPE_BLOCK_STATUS:
                for i in range(4, len(payload), 8):
                    extents.append(struct.unpack('>II', payload[i:i + 8]))
        return err, extents

    def disconnect(self):
        self.request(CMD_DISC, 0, 0)
        self.close()
