#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""strata's NBD client driver (block/nbd.c, driver=nbd) against real NBD
servers: qemu-nbd and nbdkit's memory plugin.

strata-io and strata-img reach the exports through every spelling QEMU
accepts (nbd+unix:// and nbd:// URIs, the legacy nbd:unix:PATH and
nbd:HOST:PORT forms, driver=nbd options in a json: filename) and must
read what qemu-io reads, write what qemu-io then reads back, and map the
export as qemu-img map does.  A qcow2 image exported raw by qemu-nbd is
opened as qcow2 over our NBD driver: an internal snapshot made through
NBD is there for qemu-img afterwards, on the file, with the data it
held, and the image is clean.  Unreachable servers and unknown exports
fail with a clear error.

Needs qemu-nbd (and nbdkit for its case) and a strata built with
libnbd; skips (77) without them.
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
from common import Skip, check  # noqa: E402

runner = common.Runner()
SIZE = 4 << 20


class Server:
    """An NBD server process on a unix socket (or TCP port)."""

    def __init__(self, argv, sock=None, port=None):
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)
        deadline = time.monotonic() + 30
        while True:
            try:
                if sock:
                    s = socket.socket(socket.AF_UNIX)
                    s.connect(sock)
                else:
                    s = socket.create_connection(('127.0.0.1', port))
                s.close()
                break
            except OSError:
                if self.proc.poll() is not None or \
                        time.monotonic() > deadline:
                    common.fail('%s did not start: %s' % (
                        argv[0], self.proc.stderr.read().decode()))
                time.sleep(0.05)

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def need(prog):
    path = shutil.which(prog)
    if not path:
        raise Skip('%s not found' % prog)
    return path


def need_nbd_driver(t, d):
    """strata built without libnbd has no nbd protocol: skip."""
    r = common.run([t.img, 'info', 'nbd+unix:///x?socket=%s/none' % d],
                   rc=None)
    if 'Unknown protocol' in r.err:
        raise Skip('strata built without libnbd (no NBD client)')


def free_port():
    s = socket.socket()
    s.bind(('127.0.0.1', 0))
    port = s.getsockname()[1]
    s.close()
    return port


def same_reads(t, url, fmt, cmds):
    """strata-io and qemu-io run the same read commands on url: both pass
    the pattern checks (run_io fails on a mismatch)."""
    common.run_io(t.io, url, cmds, fmt=fmt)
    common.run_io(t.qemu_io, url, cmds, fmt=fmt)


def maps_equal(t, url, fmt='raw'):
    ours = common.run([t.img, 'map', '--output=json', '-f', fmt, url]).out
    theirs = common.run([t.qemu_img, 'map', '--output=json', '-f', fmt,
                         url]).out
    check(json.loads(ours) == json.loads(theirs),
          'map differs:\nours %s\nqemu %s' % (ours, theirs))
    return json.loads(ours)


@runner.case('qemu_nbd')
def qemu_nbd_case():
    t = common.tools()
    qemu_nbd = need('qemu-nbd')
    with common.TempDir('strata-nbdc-') as d:
        need_nbd_driver(t, d)
        disk = os.path.join(d, 'disk.raw')
        common.run([t.qemu_img, 'create', '-q', '-f', 'raw', disk,
                    str(SIZE)])
        common.run_io(t.qemu_io, disk, ['write -P 0xab 0 64k',
                                        'write -P 0xcd 1M 4k',
                                        'write -P 0xef 3M 100k'], fmt='raw')
        sock = os.path.join(d, 'nbd.sock')
        with Server([qemu_nbd, '-f', 'raw', '-x', 'exp', '-k', sock, '-t',
                     disk], sock=sock):
            uris = ['nbd+unix:///exp?socket=%s' % sock,
                    'nbd:unix:%s:exportname=exp' % sock,
                    'json:' + json.dumps({
                        'driver': 'raw', 'file': {
                            'driver': 'nbd', 'export': 'exp',
                            'server': {'type': 'unix', 'path': sock}}})]
            reads = ['read -P 0xab 0 64k', 'read -P 0 64k 960k',
                     'read -P 0xcd 1M 4k', 'read -P 0xef 3M 100k']
            for u in uris:
                same_reads(t, u, 'raw' if not u.startswith('json:')
                           else None, reads)
            url = uris[0]
            info = common.run([t.img, 'info', '-f', 'raw', url]).out
            check('virtual size: 4 MiB (4194304 bytes)' in info and
                  'image: ' + url in info, 'info: %s' % info)
            # writes, zeroes and discards through strata reach the server
            common.run_io(t.io, url, ['write -P 0x11 2M 8k',
                                      'write -z 64k 4k',
                                      'discard 3M 64k',
                                      'flush'], fmt='raw')
            same_reads(t, url, 'raw', ['read -P 0x11 2M 8k',
                                       'read -P 0 64k 4k',
                                       # after the discarded 64k (a hint:
                                       # qemu-nbd ignores it by default)
                                       'read -P 0xef 3211264 36k'])
            maps_equal(t, url)
            # the whole export equals the file strata served through
            out = os.path.join(d, 'copy.raw')
            common.run([t.img, 'convert', '-f', 'raw', '-O', 'raw', url,
                        out])
        r = common.run([t.qemu_img, 'compare', '-f', 'raw', '-F', 'raw',
                        disk, out], rc=None)
        check(r.rc == 0, 'convert through NBD differs: %s' % r.out)


@runner.case('nbdkit_memory')
def nbdkit_case():
    t = common.tools()
    nbdkit = need('nbdkit')
    with common.TempDir('strata-nbdc-') as d:
        need_nbd_driver(t, d)
        port = free_port()
        with Server([nbdkit, '-f', '-i', '127.0.0.1', '-p', str(port),
                     'memory', str(SIZE)], port=port):
            url = 'nbd://127.0.0.1:%d/' % port
            legacy = 'nbd:127.0.0.1:%d' % port
            common.run_io(t.io, url, ['write -P 0x5a 0 256k',
                                      'write -P 0x6b 1M 4k',
                                      'write -z 128k 64k'], fmt='raw')
            same_reads(t, legacy, 'raw', ['read -P 0x5a 0 128k',
                                          'read -P 0 128k 64k',
                                          'read -P 0x5a 192k 64k',
                                          'read -P 0x6b 1M 4k'])
            # what qemu-io writes, strata reads
            common.run_io(t.qemu_io, url, ['write -P 0x7c 2M 512k'],
                          fmt='raw')
            common.run_io(t.io, url, ['read -P 0x7c 2M 512k',
                                      'discard 2M 512k', 'flush'],
                          fmt='raw')
            common.run_io(t.qemu_io, url, ['read -P 0 2M 512k'], fmt='raw')
            m = maps_equal(t, url)
            check(any(e['data'] for e in m) and
                  any(not e['data'] for e in m),
                  'nbdkit memory map shows no holes or no data: %s' % m)


@runner.case('qcow2_over_nbd')
def qcow2_over_nbd():
    t = common.tools()
    qemu_nbd = need('qemu-nbd')
    with common.TempDir('strata-nbdc-') as d:
        need_nbd_driver(t, d)
        img = os.path.join(d, 'img.qcow2')
        common.run([t.qemu_img, 'create', '-q', '-f', 'qcow2', img, '8M'])
        common.run_io(t.qemu_io, img, ['write -P 0x42 0 128k'])
        # an NBD export cannot grow: room for the snapshot's metadata
        os.truncate(img, 16 << 20)
        sock = os.path.join(d, 'nbd.sock')
        over = 'json:' + json.dumps({
            'driver': 'qcow2', 'file': {
                'driver': 'nbd', 'export': 'exp',
                'server': {'type': 'unix', 'path': sock}}})
        url = 'nbd+unix:///exp?socket=%s' % sock
        with Server([qemu_nbd, '-f', 'raw', '-x', 'exp', '-k', sock, '-t',
                     img], sock=sock):
            common.run([t.img, 'snapshot', '-c', 'snap1', over])
            common.run_io(t.io, url, ['write -P 0x43 64k 64k'])
            lst = common.run([t.img, 'snapshot', '-l', over]).out
            check(' snap1 ' in lst, 'snapshot list over NBD: %s' % lst)
            info = common.run([t.img, 'info', url]).out
            check('file format: qcow2' in info, 'probe over NBD: %s' % info)
        lst = common.run([t.qemu_img, 'snapshot', '-l', img]).out
        check(' snap1 ' in lst, 'qemu-img does not see snap1: %s' % lst)
        common.qemu_check_clean(img)
        common.run_io(t.qemu_io, img, ['read -P 0x42 0 64k',
                                       'read -P 0x43 64k 64k'])
        raw = os.path.join(d, 'snap.raw')
        common.run([t.qemu_img, 'convert', '-l', 'snapshot.name=snap1',
                    '-O', 'raw', img, raw])
        common.run_io(t.qemu_io, raw, ['read -P 0x42 0 128k'], fmt='raw')


def export_at(d, qemu_nbd, disk, offset):
    """qemu-nbd serving disk raw from offset on (an image inside an OVA),
    and its URL."""
    sock = os.path.join(d, 'nbd.sock')
    server = Server([qemu_nbd, '-f', 'raw', '-x', 'exp', '-k', sock, '-t',
                     '--offset', str(offset), disk], sock=sock)
    return server, 'nbd+unix:///exp?socket=%s' % sock


def same_failure(t, args, watched):
    """strata-img fails args without changing the file `watched`, and
    qemu-img fails them with the same message (but for the program's
    name); the text."""
    before = open(watched, 'rb').read()
    ours = common.run([t.img] + args, rc=1).err
    check(open(watched, 'rb').read() == before,
          'refused %s changed the export' % args)
    theirs = common.run([t.qemu_img] + args, rc=1).err
    check(ours.replace('strata-img', 'qemu-img') == theirs,
          'messages differ:\nours %s\nqemu %s' % (ours, theirs))
    return ours


@runner.case('create_on_export')
def create_on_export():
    """convert -O qcow2 -c and create -f raw write into an existing NBD
    export as QEMU's create does for a protocol that cannot make images:
    the export must be long enough, its first sector is zeroed, and the
    rest is the format's to write.  (iotest 302 does this into an OVA.)"""
    t = common.tools()
    qemu_nbd = need('qemu-nbd')
    with common.TempDir('strata-nbdc-') as d:
        need_nbd_driver(t, d)
        src = os.path.join(d, 'src.qcow2')
        common.run([t.qemu_img, 'create', '-q', '-f', 'qcow2', src, '1G'])
        common.run_io(t.qemu_io, src, ['write -P 0x3c 1M 64k'])
        head = 1536
        ova = os.path.join(d, 'test.ova')
        with open(ova, 'wb') as f:
            f.write(b'\x5a' * head)
            f.truncate(head + (448 << 10))
        server, url = export_at(d, qemu_nbd, ova, head)
        with server:
            common.run([t.img, 'convert', '-f', 'qcow2', '-O', 'qcow2',
                        '-c', src, url])
            chk = common.run([t.qemu_img, 'check', '--output=json',
                              url]).out
            chk = json.loads(chk)
            check(chk.get('corruptions', 0) == 0 and
                  chk.get('leaks', 0) == 0 and
                  chk.get('compressed-clusters') == 1,
                  'qemu-img check over NBD: %s' % chk)
            r = common.run([t.qemu_img, 'compare', src, url], rc=None)
            check(r.rc == 0, 'qcow2 written into the export differs: %s'
                  % r.out)
        with open(ova, 'rb') as f:
            check(f.read(head) == b'\x5a' * head,
                  'bytes before the export were touched')
        check(not any(n.startswith('nbd') for n in os.listdir(d)) and
              not any(n.startswith('nbd+') for n in os.listdir('.')),
              'a local file named after the URL was made')

        # raw: a create that fits zeroes the first sector only
        with open(ova, 'r+b') as f:
            f.seek(head)
            f.write(b'\x77' * 4096)
        server, url = export_at(d, qemu_nbd, ova, head)
        with server:
            common.run([t.img, 'create', '-q', '-f', 'raw', url, '100k'])
            before = open(ova, 'rb').read()
            # too large for the export, or preallocated: refused as by
            # qemu-img, nothing written
            err = same_failure(t, ['create', '-q', '-f', 'raw', url, '1M'],
                               ova)
            check('Cannot grow NBD nodes' in err, err)
            err = same_failure(t, ['create', '-q', '-f', 'raw', '-o',
                                   'preallocation=full', url, '100k'], ova)
            check("Unsupported preallocation mode 'full'" in err, err)
            same_failure(t, ['convert', '-O', 'qcow2', '-o',
                             'preallocation=falloc', src, url], ova)
        data = before[head:head + 4096]
        check(data[:512] == bytes(512) and data[512:] == b'\x77' * 3584,
              'raw create on the export: first sector %r..., then %r...'
              % (data[:8], data[512:520]))


@runner.case('daemon_blockdev_nbd')
def daemon_blockdev_nbd():
    """strata-daemon's --blockdev and QMP blockdev-add take driver=nbd
    (QEMU's server.type/path/host/port and export): qcow2 over NBD,
    snapshotted through QMP, seen by qemu-img on the file."""
    t = common.tools()
    qemu_nbd = need('qemu-nbd')
    strata = os.environ.get('STRATA_DAEMON')
    if not strata or not os.access(strata, os.X_OK):
        raise Skip('STRATA_DAEMON is not set to strata-daemon')
    from qmplib import Daemon, cmd
    with common.TempDir('strata-nbdc-') as d:
        need_nbd_driver(t, d)
        imgs = []
        for name in ('a', 'b'):
            imgs.append(os.path.join(d, name + '.qcow2'))
            common.run([t.qemu_img, 'create', '-q', '-f', 'qcow2', imgs[-1],
                        '8M'])
            os.truncate(imgs[-1], 16 << 20)
        socks = [os.path.join(d, 'a.sock'), os.path.join(d, 'b.sock')]
        port = free_port()
        with Server([qemu_nbd, '-f', 'raw', '-x', 'ea', '-k', socks[0], '-t',
                     imgs[0]], sock=socks[0]), \
                Server([qemu_nbd, '-f', 'raw', '-x', 'eb', '-b',
                        '127.0.0.1', '-p', str(port), '-t', imgs[1]],
                       port=port):
            dm = Daemon(os.path.abspath(strata), [
                '--blockdev', 'driver=qcow2,node-name=na,file.driver=nbd,'
                'file.server.type=unix,file.server.path=%s,file.export=ea'
                % socks[0]], d)
            try:
                r = dm.send(cmd('qmp_capabilities'))
                check(r == [{'return': {}}], 'negotiation: %s' % r)
                r = dm.send(cmd('blockdev-add', **{
                    'driver': 'qcow2', 'node-name': 'nb',
                    'file': {'driver': 'nbd', 'export': 'eb',
                             'server': {'type': 'inet',
                                        'host': '127.0.0.1',
                                        'port': str(port)}}}))
                check(r == [{'return': {}}], 'blockdev-add nbd: %s' % r)
                r = dm.send(cmd('transaction', actions=[
                    {'type': 'blockdev-snapshot-internal-sync',
                     'data': {'device': n, 'name': 'nsnap'}}
                    for n in ('na', 'nb')]))
                check(r == [{'return': {}}], 'transaction: %s' % r)
                r = dm.send(cmd('blockdev-add', **{
                    'driver': 'raw', 'node-name': 'bad',
                    'file': {'driver': 'nbd',
                             'server': {'type': 'vsock'}}}))
                check('error' in r[0], 'a vsock server accepted: %s' % r)
            finally:
                rc = dm.quit()
            check(rc == 0, 'strata-daemon exited %s' % rc)
        for img in imgs:
            lst = common.run([t.qemu_img, 'snapshot', '-l', img]).out
            check(' nsnap ' in lst, '%s: %s' % (img, lst))
            common.qemu_check_clean(img)


@runner.case('bad_targets')
def bad_targets():
    t = common.tools()
    qemu_nbd = need('qemu-nbd')
    with common.TempDir('strata-nbdc-') as d:
        need_nbd_driver(t, d)
        r = common.run([t.io, '-f', 'raw', '-c', 'read 0 512',
                        'nbd+unix:///exp?socket=%s/none.sock' % d], rc=1)
        check('No such file or directory' in r.err,
              'missing socket: %s' % r.err)
        r = common.run([t.io, '-c', 'read 0 512', 'json:' + json.dumps({
            'driver': 'raw', 'file': {'driver': 'nbd', 'export': 'x'}})],
            rc=1)
        check("Parameter 'server.type' is missing" in r.err,
              'no server: %s' % r.err)
        disk = os.path.join(d, 'disk.raw')
        common.run([t.qemu_img, 'create', '-q', '-f', 'raw', disk, '1M'])
        sock = os.path.join(d, 'nbd.sock')
        with Server([qemu_nbd, '-f', 'raw', '-x', 'exp', '-k', sock, '-t',
                     disk], sock=sock):
            r = common.run([t.io, '-f', 'raw', '-c', 'read 0 512',
                            'nbd+unix:///other?socket=%s' % sock], rc=1)
            check('export' in r.err.lower(), 'unknown export: %s' % r.err)
            # out of range: EIO from the device layer, nothing sent
            r = common.run([t.io, '-f', 'raw', '-c', 'write 1M 512',
                            'nbd+unix:///exp?socket=%s' % sock], rc=None)
            check('Input/output error' in r.out + r.err,
                  'write past the end: %s %s' % (r.out, r.err))
        check(os.path.getsize(disk) == 1 << 20, 'the export grew')


if __name__ == '__main__':
    sys.exit(runner.main())
