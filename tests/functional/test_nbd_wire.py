#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Hostile and odd input on strata-daemon's NBD socket, byte by byte
(tests/functional/nbdwire.py): malformed handshakes, unknown options and
commands, out-of-range and oversized requests, a client vanishing in the
middle of a write, pipelined requests.  Each case asserts the server's
answer (an NBD error reply, or a closed connection where the stream
cannot be trusted any more), that another client is still served
afterwards, and at the end that nothing was written outside the range
the valid requests wrote (the image is filled with 0xab first and
checked with qemu-io and qemu-img check after the daemon quit).

Needs $STRATA_DAEMON, qemu-img and qemu-io; skips (77) without them.
"""

import contextlib
import os
import socket
import struct
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
from common import Skip, check  # noqa: E402
from qmplib import Daemon, cmd  # noqa: E402
import nbdwire as w  # noqa: E402

runner = common.Runner()
SIZE = 16 << 20
MB = 1 << 20
# valid writes stay below this; everything above must stay 0xab
WRITE_LIMIT = MB


def strata():
    path = os.environ.get('STRATA_DAEMON')
    if not path or not os.access(path, os.X_OK):
        raise Skip('STRATA_DAEMON is not set to strata-daemon')
    return path


_DAEMON = {}


@contextlib.contextmanager
def served():
    """A daemon exporting 'disk' (writable) and 'ro' (read-only) of one
    image filled with 0xab; yields the socket path.  Afterwards: the
    daemon exits cleanly and the image is 0xab above WRITE_LIMIT."""
    with common.TempDir('strata-nbdwire-') as d:
        img = os.path.join(d, 'a.qcow2')
        common.run(['qemu-img', 'create', '-q', '-f', 'qcow2', img,
                    str(SIZE)])
        common.run(['qemu-io', '-f', 'qcow2', '-c',
                    'write -P 0xab 0 %d' % SIZE, img])
        sock = os.path.join(d, 'nbd.sock')
        dm = Daemon(strata(), [
            '--blockdev', 'driver=qcow2,node-name=d0,file.driver=file,'
            'file.filename=%s' % img,
            '--nbd-server', 'addr.type=unix,addr.path=%s' % sock,
            '--export', 'type=nbd,id=e0,node-name=d0,name=disk,writable=on',
            '--export', 'type=nbd,id=e1,node-name=d0,name=ro'], d)
        _DAEMON['dm'] = dm
        try:
            yield sock
        finally:
            dm.send(cmd('qmp_capabilities'))
            rc = dm.quit()
        check(rc == 0, 'daemon exit status %s' % rc)
        res = common.run(['qemu-io', '-f', 'qcow2', '-c', 'read -P 0xab %d %d'
                          % (WRITE_LIMIT, SIZE - WRITE_LIMIT), img])
        check('Pattern verification failed' not in res.out,
              'data changed outside the written range:\n' + res.out)
        common.qemu_check_clean(img)


def still_serving(sock):
    """Another client negotiates and reads."""
    c = w.Client(sock)
    check(c.go('disk') == w.REP_ACK, 'a second client was refused')
    err, data, _ = c.read(SIZE - 4096, 4096)
    check(err == 0 and data == b'\xab' * 4096, 'second client read')
    c.disconnect()


def closed(c, what):
    check(c.is_closed(), 'connection not closed after ' + what)
    c.close()


@runner.case()
def handshake_bad_magic():
    with served() as sock:
        c = w.Client(sock)
        c.hello()
        c.send(struct.pack('>QII', 0x1234, w.OPT_GO, 0))
        closed(c, 'an option with a bad magic')
        still_serving(sock)


@runner.case()
def handshake_silent_client_times_out():
    """A client that connects and never answers the greeting blocks no
    one, and is dropped after the 10 s handshake limit."""
    with served() as sock:
        silent = w.Client(sock)
        silent.recv_exact(18)          # the greeting; no answer follows
        still_serving(sock)
        check(silent.is_closed(timeout=20),
              'a silent client was not dropped after the handshake limit')
        silent.close()


@runner.case()
def handshake_unknown_client_flags():
    with served() as sock:
        c = w.Client(sock)
        c.hello(client_flags=0x80)
        closed(c, 'unknown client flags')
        still_serving(sock)


@runner.case()
def handshake_garbage_and_vanish():
    with served() as sock:
        c = w.Client(sock)
        c.hello()
        c.send(b'\xff' * 7)          # half an option header
        c.close()
        c = w.Client(sock)           # gone before the greeting is read
        c.close()
        still_serving(sock)


@runner.case()
def handshake_option_errors():
    with served() as sock:
        c = w.Client(sock)
        c.hello()
        r = c.option_replies(99, b'abc')
        check(r == [(w.REP_ERR_UNSUP, r[0][1])], 'unknown option: %s' % r)
        # a name length longer than the option
        r = c.option_replies(w.OPT_GO, struct.pack('>I', 100) + b'disk')
        check(r[-1][0] == w.REP_ERR_INVALID, 'lying GO length: %s' % r)
        r = c.option_replies(w.OPT_GO, c.name_data('nope'))
        check(r[-1][0] == w.REP_ERR_UNKNOWN, 'unknown export: %s' % r)
        r = c.option_replies(w.OPT_SET_META_CONTEXT,
                             c.meta_data('disk', ['base:allocation']))
        check(r[-1][0] == w.REP_ERR_INVALID,
              'meta context before structured replies: %s' % r)
        r = c.option_replies(w.OPT_STRUCTURED_REPLY, b'x')
        check(r[-1][0] == w.REP_ERR_INVALID, 'structured with data: %s' % r)
        r = c.option_replies(w.OPT_LIST)
        names = sorted(p[4:4 + struct.unpack('>I', p[:4])[0]]
                       for t, p in r if t == w.REP_SERVER)
        check(r[-1][0] == w.REP_ACK and names == [b'disk', b'ro'],
              'LIST: %s' % r)
        r = c.option_replies(w.OPT_INFO, c.name_data('ro'))
        infos = [p for t, p in r if t == w.REP_INFO and p[:2] == b'\0\0']
        check(r[-1][0] == w.REP_ACK and len(infos) == 1 and
              struct.unpack('>HQH', infos[0])[1] == SIZE and
              struct.unpack('>HQH', infos[0])[2] & w.TFLAG_READ_ONLY,
              'INFO: %s' % r)
        r = c.option_replies(w.OPT_STARTTLS)
        check(r[-1][0] == w.REP_ERR_POLICY, 'STARTTLS without TLS: %s' % r)
        # after all that, the same connection still negotiates
        r = c.option_replies(w.OPT_GO, c.name_data('disk'))
        check(r[-1][0] == w.REP_ACK, 'GO after errors: %s' % r)
        err, data, _ = c.read(0, 512)
        check(err == 0 and data == b'\xab' * 512, 'read after GO')
        c.disconnect()


@runner.case()
def handshake_export_name_unknown_and_abort():
    with served() as sock:
        c = w.Client(sock)
        c.hello()
        c.option(w.OPT_EXPORT_NAME, b'nope')
        closed(c, 'EXPORT_NAME of an unknown export')
        c = w.Client(sock)
        c.hello()
        r = c.option_replies(w.OPT_ABORT)
        check(r == [(w.REP_ACK, b'')], 'ABORT: %s' % r)
        closed(c, 'ABORT')
        # an option length no server takes
        c = w.Client(sock)
        c.hello()
        c.send(struct.pack('>QII', w.IHAVEOPT, w.OPT_GO, 0xffffffff))
        closed(c, 'a 4 GiB option')
        # EXPORT_NAME (the old way in) works and serves
        c = w.Client(sock)
        c.hello()
        c.option(w.OPT_EXPORT_NAME, b'disk')
        size, flags = struct.unpack('>QH', c.recv_exact(10))
        check(size == SIZE and not flags & w.TFLAG_READ_ONLY,
              'EXPORT_NAME reply')
        err, data, _ = c.read(4096, 512)
        check(err == 0 and data == b'\xab' * 512, 'simple reply read')
        c.disconnect()
        still_serving(sock)


@runner.case()
def requests_out_of_range():
    with served() as sock:
        c = w.Client(sock)
        check(c.go('disk') == w.REP_ACK, 'GO')
        check(c.read(SIZE - 512, 1024)[0] == w.EINVAL, 'read past the end')
        check(c.write(SIZE - 512, b'\x01' * 1024) == w.EINVAL,
              'write past the end')
        check(c.write(2 ** 64 - 512, b'\x01' * 1024) == w.EINVAL,
              'write at a wrapping offset')
        check(c.call(w.CMD_WRITE_ZEROES, SIZE, 512)[0] == w.EINVAL,
              'zeroes past the end')
        check(c.call(w.CMD_TRIM, SIZE - 4096, 8192)[0] == w.EINVAL,
              'trim past the end')
        check(c.read(0, (32 << 20) + 1)[0] == w.EINVAL,
              'a read over 32 MiB')
        check(c.call(99, 0, 512)[0] == w.EINVAL, 'an unknown command')
        check(c.read(0, 512, flags=0x100)[0] == w.EINVAL, 'unknown flags')
        check(c.call(w.CMD_CACHE, 0, 512)[0] == w.EINVAL, 'CACHE')
        # the connection is still in step
        err, data, _ = c.read(SIZE - 512, 512)
        check(err == 0 and data == b'\xab' * 512, 'read at the end')
        c.disconnect()
        still_serving(sock)


@runner.case()
def oversized_write_closes():
    with served() as sock:
        c = w.Client(sock)
        check(c.go('disk') == w.REP_ACK, 'GO')
        h = c.request(w.CMD_WRITE, 0, (32 << 20) + 1)
        try:
            c.send(b'\x01' * 65536)  # the start of a payload we never end
        except (BrokenPipeError, ConnectionResetError):
            pass                     # the server already said no and left
        handle, err, _, _ = c.reply()
        check(handle == h and err == w.EINVAL, 'oversized write reply')
        closed(c, 'an oversized write')
        still_serving(sock)


@runner.case()
def bad_request_magic_closes():
    with served() as sock:
        c = w.Client(sock)
        check(c.go('disk') == w.REP_ACK, 'GO')
        c.send(struct.pack('>IHHQQI', 0xdeadbeef, 0, w.CMD_WRITE, 1, 0, 512)
               + b'\x01' * 512)
        closed(c, 'a request with a bad magic')
        still_serving(sock)


@runner.case()
def vanish_mid_write():
    with served() as sock:
        c = w.Client(sock)
        check(c.go('disk') == w.REP_ACK, 'GO')
        c.request(w.CMD_WRITE, 2 * MB, 65536)
        c.send(b'\x01' * 1000)
        c.sock.shutdown(socket.SHUT_RDWR)
        c.close()
        still_serving(sock)
        # nothing of the half-sent write reached the disk (2 MiB is above
        # WRITE_LIMIT: checked again after the daemon quit)
        c = w.Client(sock)
        c.go('disk')
        err, data, _ = c.read(2 * MB, 65536)
        check(err == 0 and data == b'\xab' * 65536, 'half write landed')
        c.disconnect()


@runner.case()
def read_only_export():
    with served() as sock:
        c = w.Client(sock)
        check(c.go('ro') == w.REP_ACK, 'GO')
        check(c.tflags & w.TFLAG_READ_ONLY, 'read-only flag')
        check(c.write(0, b'\x01' * 512) == w.EPERM, 'write to ro')
        check(c.call(w.CMD_TRIM, 0, 512)[0] == w.EPERM, 'trim on ro')
        check(c.call(w.CMD_WRITE_ZEROES, 0, 512)[0] == w.EPERM,
              'zeroes on ro')
        c.disconnect()


@runner.case()
def commands_and_block_status():
    with served() as sock:
        c = w.Client(sock)
        check(c.go('disk') == w.REP_ACK, 'GO')
        check(c.write(0, b'\x07' * 4096, flags=w.FLAG_FUA) == 0, 'FUA write')
        check(c.call(w.CMD_WRITE_ZEROES, 65536, 65536,
                     w.FLAG_NO_HOLE)[0] == 0, 'zeroes, no hole')
        check(c.call(w.CMD_WRITE_ZEROES, 131072, 65536)[0] == 0, 'zeroes')
        check(c.call(w.CMD_TRIM, 196608, 65536)[0] == 0, 'trim')
        check(c.call(w.CMD_FLUSH, 0, 0)[0] == 0, 'flush')
        err, data, chunks = c.read(0, 8192, flags=w.FLAG_DF)
        check(err == 0 and data == b'\x07' * 4096 + b'\xab' * 4096 and
              len(chunks) == 1, 'DF read')
        err, data, _ = c.read(65536, 131072)
        check(data == bytes(131072), 'zeroed ranges read back')
        err, ext = c.block_status(0, SIZE)
        check(err == 0 and sum(e[0] for e in ext) == SIZE,
              'block status covers the export: %s' % ext)
        check(any(f & 2 for _, f in ext) and any(f == 0 for _, f in ext),
              'block status shows data and zeroes: %s' % ext)
        err, ext = c.block_status(0, SIZE, w.FLAG_REQ_ONE)
        check(err == 0 and len(ext) == 1, 'REQ_ONE: %s' % ext)
        c.disconnect()
        # without the meta context, block status is refused
        c = w.Client(sock)
        c.go('disk', meta=False)
        check(c.block_status(0, 4096)[0] == w.EINVAL, 'status without meta')
        c.disconnect()


@runner.case()
def pipelined_requests():
    """64 requests sent before any reply is read: each gets its reply,
    whatever order they come in."""
    with served() as sock:
        c = w.Client(sock)
        check(c.go('disk', structured=False) == w.REP_ACK, 'GO')
        expect = {}
        for i in range(32):
            data = bytes([i + 1]) * 8192
            expect[c.request(w.CMD_WRITE, i * 8192, 8192, data=data)] = None
        for i in range(32):
            expect[c.request(w.CMD_READ, WRITE_LIMIT + i * 4096, 4096)] = 4096
        got = set()
        while len(got) < len(expect):
            magic, err, handle = struct.unpack('>IIQ', c.recv_exact(16))
            check(magic == w.SIMPLE_MAGIC and err == 0 and handle in expect
                  and handle not in got, 'reply %#x %d %d' % (magic, err,
                                                             handle))
            if expect[handle]:
                check(c.recv_exact(4096) == b'\xab' * 4096, 'read data')
            got.add(handle)
        err, data, _ = c.read(0, 32 * 8192)
        check(data == b''.join(bytes([i + 1]) * 8192 for i in range(32)),
              'pipelined writes')
        c.disconnect()


@runner.case()
def stop_and_delete_with_requests_in_flight():
    """nbd-server-stop and a hard block-export-del while clients have
    writes in flight: the commands return, the clients are disconnected,
    the daemon keeps answering, and the image checks clean."""
    for how in ('stop', 'hard-del'):
        with served() as sock:
            dm = _DAEMON['dm']
            check(dm.send(cmd('qmp_capabilities')) == [{'return': {}}],
                  'negotiation')
            clients = []
            for _ in range(3):
                c = w.Client(sock)
                check(c.go('disk') == w.REP_ACK, 'GO')
                for i in range(16):
                    c.request(w.CMD_WRITE, (i % 16) * 65536, 65536,
                              data=bytes([i + 1]) * 65536)
                clients.append(c)
            req = cmd('nbd-server-stop') if how == 'stop' else \
                cmd('block-export-del', id='e0', mode='hard')
            r = dm.send(req)
            check(r == [{'return': {}}], '%s: %s' % (how, r))
            for c in clients:
                c.sock.settimeout(20)
                try:
                    while True:
                        c.reply()    # replies of what completed, then EOF
                except socket.timeout:
                    check(False, '%s: a client was not disconnected' % how)
                except (w.Closed, ConnectionResetError):
                    pass
                c.close()
            # a hard delete returns at once; the export goes (and the
            # event comes) when its requests in flight are done
            deadline = time.monotonic() + 30
            while how == 'hard-del' and not any(
                    e['event'] == 'BLOCK_EXPORT_DELETED' for e in dm.events):
                check(time.monotonic() < deadline, 'no BLOCK_EXPORT_DELETED')
                dm.send(cmd('query-version'))
                time.sleep(0.05)
            r = dm.send(cmd('query-block-exports'))
            check(len(r) == 1 and 'return' in r[0], 'query: %s' % r)
            ids = [e['id'] for e in r[0]['return']]
            check('e0' not in ids, '%s: e0 still listed: %s' % (how, ids))


def main():
    for prog in ('qemu-img', 'qemu-io'):
        if not common.oracle(prog):
            print('SKIP (whole script): %s not found' % prog)
            return 77
    return runner.main()


if __name__ == '__main__':
    sys.exit(main())
