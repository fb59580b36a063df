#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""NBD exports of strata-daemon against real NBD clients and beside
qemu-storage-daemon.

- qemu-io (-f raw nbd+unix://...) writes, zeroes and discards through
  the export; the same commands run by qemu-io on a copy of the image
  must leave an identical image (qemu-img compare) once the daemon quit,
  and the exported image passes qemu-img check.
- qemu-img convert from the export and into it; nbdcopy both ways.
- nbdinfo --map of our export equals qemu-storage-daemon's export of a
  copy of the same image.
- The QMP commands (nbd-server-start/-stop, block-export-add/-del,
  query-block-exports) side by side with qemu-storage-daemon, errors
  included; safe and hard block-export-del with a client connected and
  the BLOCK_EXPORT_DELETED event, on both daemons.
- An export follows its node's device onto an external snapshot's
  overlay, as QEMU's export follows its node.
- detect-zeroes=unmap on the exported node turns a client's write of
  zeroes into unmapped clusters, as in qemu-storage-daemon.
- The node's `discard` option decides what a client's trims and zero
  writes do, side by side with qemu-storage-daemon: by default
  (ignore) a trim changes nothing and a zero write may unmap clusters
  but gives no host space back; with unmap both do.

Needs $STRATA_DAEMON, qemu-img, qemu-io, qemu-storage-daemon; nbdinfo
and nbdcopy (libnbd-bin) for their cases.  Skips (77) without them.
"""

import json
import os
import shutil
import socket
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
from common import Skip, check  # noqa: E402
from qmplib import (Daemon, Scenario, cmd, daemon_paths,  # noqa: E402
                    expect_error)
import nbdwire  # noqa: E402

runner = common.Runner()
SIZE = 16 << 20
MB = 1 << 20


def uri(sock, name):
    return 'nbd+unix:///%s?socket=%s' % (name, sock)


def make_image(path, writes=()):
    common.run(['qemu-img', 'create', '-q', '-f', 'qcow2', path, str(SIZE)])
    if writes:
        common.run(['qemu-io', '-f', 'qcow2'] +
                   common.io_args(list(writes)) + [path])


# Data, zero clusters and holes: what a map must tell apart.
LAYOUT = ['write -P 0x11 0 1M', 'write -P 0x22 3M 64k',
          'write -z 5M 1M', 'write -P 0x33 9M 2M', 'discard 9M 512k']


def export_args(d, img, writable=True, name='disk', node='d0',
                discard='unmap'):
    """discard: the node's option (None: blockdev's default, ignore)."""
    sock = os.path.join(d, 'nbd.sock')
    return sock, [
        '--blockdev', 'driver=qcow2,node-name=%s,%sfile.driver=file,'
        'file.filename=%s' % (node, 'discard=%s,' % discard if discard
                              else '', img),
        '--nbd-server', 'addr.type=unix,addr.path=%s' % sock,
        '--export', 'type=nbd,id=e0,node-name=%s,name=%s,writable=%s'
        % (node, name, 'on' if writable else 'off')]


def strata():
    path, _ = daemon_paths()
    return path


def quit_ok(dm):
    # quit needs a negotiated session (an error if already negotiated)
    dm.send(cmd('qmp_capabilities'))
    check(dm.quit() == 0, 'daemon exit status')


def need(prog):
    if not shutil.which(prog):
        raise Skip('%s not found' % prog)


@runner.case()
def qemu_io_readwrite():
    with common.TempDir('strata-nbd-') as d:
        img, ref = os.path.join(d, 'a.qcow2'), os.path.join(d, 'ref.qcow2')
        make_image(img, LAYOUT)
        shutil.copy(img, ref)
        sock, args = export_args(d, img)
        dm = Daemon(strata(), args, d)
        cmds = ['write -P 0x44 4097 3000', 'write -P 0x55 2M 1M',
                'write -z 3M 4k', 'write -z -u 10M 1M', 'discard 64k 64k',
                'aio_write -P 0x66 12M 64k', 'aio_write -P 0x67 13M 64k',
                'aio_flush', 'write -f -P 0x68 14M 512']
        reads = ['read -P 0x44 4097 3000', 'read -P 0x55 2M 1M',
                 'read -P 0 3M 4k', 'read -P 0 10M 1M',
                 'read -P 0x66 12M 64k', 'read -P 0x67 13M 64k',
                 'read -P 0x68 14M 512', 'read -P 0x22 3149824 61440']
        res = common.run(['qemu-io', '-f', 'raw'] +
                         common.io_args(cmds + reads) + [uri(sock, 'disk')])
        check('Pattern verification failed' not in res.out and
              len(common.READ_RE.findall(res.out)) == len(reads) and
              len(common.WROTE_RE.findall(res.out)) == len(cmds) - 2,
              'through NBD:\n' + res.out)
        quit_ok(dm)
        common.run(['qemu-io', '-f', 'qcow2'] + common.io_args(cmds) + [ref])
        common.run(['qemu-img', 'compare', '-f', 'qcow2', '-F', 'qcow2',
                    img, ref])
        common.qemu_check_clean(img)


@runner.case()
def qemu_img_convert():
    with common.TempDir('strata-nbd-') as d:
        img = os.path.join(d, 'a.qcow2')
        make_image(img, LAYOUT)
        sock, args = export_args(d, img)
        out, src = os.path.join(d, 'out.raw'), os.path.join(d, 'src.raw')
        dm = Daemon(strata(), args, d)
        common.run(['qemu-img', 'convert', '-f', 'raw', '-O', 'raw',
                    uri(sock, 'disk'), out])
        common.run(['qemu-img', 'compare', '-U', '-f', 'qcow2', '-F', 'raw',
                    img, out])
        with open(src, 'wb') as f:
            f.write(os.urandom(SIZE // 2) + bytes(SIZE // 4) +
                    os.urandom(SIZE // 4))
        common.run(['qemu-img', 'convert', '-n', '-f', 'raw', '-O', 'raw',
                    src, uri(sock, 'disk')])
        quit_ok(dm)
        common.run(['qemu-img', 'compare', '-f', 'qcow2', '-F', 'raw',
                    img, src])
        common.qemu_check_clean(img)


@runner.case()
def nbdcopy_both_ways():
    need('nbdcopy')
    with common.TempDir('strata-nbd-') as d:
        img = os.path.join(d, 'a.qcow2')
        make_image(img, LAYOUT)
        sock, args = export_args(d, img)
        out, src = os.path.join(d, 'out.raw'), os.path.join(d, 'src.raw')
        dm = Daemon(strata(), args, d)
        common.run(['nbdcopy', uri(sock, 'disk'), out])
        common.run(['qemu-img', 'compare', '-U', '-f', 'qcow2', '-F', 'raw',
                    img, out])
        with open(src, 'wb') as f:
            f.write(bytes(MB) + os.urandom(SIZE - 2 * MB) + bytes(MB))
        # parallel requests on several connections
        common.run(['nbdcopy', '--connections=4', '--requests=16', src,
                    uri(sock, 'disk')])
        quit_ok(dm)
        common.run(['qemu-img', 'compare', '-f', 'qcow2', '-F', 'raw',
                    img, src])
        common.qemu_check_clean(img)


def nbdinfo_map(sock, name):
    res = common.run(['nbdinfo', '--map', '--json', uri(sock, name)])
    return json.loads(res.out)


@runner.case()
def nbdinfo_map_as_qemu():
    need('nbdinfo')
    _, qsd = daemon_paths()
    maps = {}
    with common.TempDir('strata-nbd-') as d:
        for side, binary in (('qemu', qsd), ('strata', strata())):
            os.mkdir(os.path.join(d, side))
            img = os.path.join(d, side, 'a.qcow2')
            make_image(img, LAYOUT)
            sock, args = export_args(os.path.join(d, side), img, writable=False)
            dm = Daemon(binary, args, os.path.join(d, side))
            maps[side] = nbdinfo_map(sock, 'disk')
            info = json.loads(common.run(['nbdinfo', '--json',
                                          uri(sock, 'disk')]).out)
            maps[side + '-size'] = info['exports'][0]['export-size']
            maps[side + '-ro'] = info['exports'][0]['is_read_only']
            quit_ok(dm)
    for k in ('', '-size', '-ro'):
        check(maps['qemu' + k] == maps['strata' + k],
              'nbdinfo%s:\n  qemu:   %s\n  strata: %s'
              % (k, maps['qemu' + k], maps['strata' + k]))
    check(any(e['type'] == 3 for e in maps['strata']) and
          any(e['type'] == 0 for e in maps['strata']),
          'the map shows no hole or no data: %s' % maps['strata'])


def held_kib(path):
    return os.stat(path).st_blocks // 2


def each_daemon(d):
    """(side, daemon binary, a fresh directory of its own under d) for
    qemu-storage-daemon, then strata-daemon."""
    _, qsd = daemon_paths()
    for side, binary in (('qemu', qsd), ('strata', strata())):
        sd = os.path.join(d, side)
        os.mkdir(sd)
        yield side, binary, sd


@runner.case()
def discard_follows_the_node_option():
    """An internal snapshot, the whole disk rewritten, a trim and zero
    writes through the export, the snapshot deleted: the same map and
    held bytes as qemu-storage-daemon's, with discard=ignore (the
    default: the trim changes nothing, the unmapped clusters keep their
    space, the delete's frees still reach the file, whose own default
    is unmap) and with discard=unmap."""
    cmds = ['write -P 0x22 0 4M', 'discard 0 1M', 'write -z -u 1M 1M',
            'write -z 2M 1M']
    for discard in (None, 'unmap'):
        seen = {}
        with common.TempDir('strata-nbd-') as d:
            for side, binary, sd in each_daemon(d):
                img = os.path.join(sd, 'a.qcow2')
                make_image(img, ['write -P 0x11 0 4M'])
                sock, args = export_args(sd, img, discard=discard)
                dm = Daemon(binary, args, sd)
                one(dm, cmd('qmp_capabilities'))
                snap = {'device': 'd0', 'name': 's1'}
                r = one(dm, cmd('blockdev-snapshot-internal-sync', **snap))
                check(r == {'return': {}}, 'snapshot: %s' % r)
                common.run(['qemu-io', '-f', 'raw'] + common.io_args(cmds) +
                           [uri(sock, 'disk')])
                r = one(dm, cmd('blockdev-snapshot-delete-internal-sync',
                                **snap))
                check('return' in r, 'delete: %s' % r)
                quit_ok(dm)
                common.qemu_check_clean(img)
                # host offsets differ (strata's snapshot moves metadata);
                # whether each range has one does not
                m = json.loads(common.run(['qemu-img', 'map',
                                           '--output=json', img]).out)
                for e in m:
                    e['offset'] = 'offset' in e
                seen[side] = (m, held_kib(img))
        (q_map, q_held), (o_map, o_held) = seen['qemu'], seen['strata']
        check(o_map == q_map, 'discard=%s, map:\n  qemu:   %s\n  strata: %s'
              % (discard, q_map, o_map))
        check(abs(o_held - q_held) <= 64, 'discard=%s: %d KiB held, QEMU '
              '%d' % (discard, o_held, q_held))
        kept = o_map[0]['data'] and o_map[0]['length'] == 1 << 20
        check(kept == (discard is None), 'discard=%s: the trimmed MiB %s'
              % (discard, 'kept' if kept else 'dropped'))
        check((o_held > 4096) == (discard is None) and o_held < 5120,
              'discard=%s: %d KiB held' % (discard, o_held))


NBD_DIR = tempfile.mkdtemp(prefix='strata-nbdsock-')
NBD_SOCK = os.path.join(NBD_DIR, 'n.sock')
UNIX = {'type': 'unix', 'data': {'path': NBD_SOCK}}


def add(**kw):
    kw.setdefault('type', 'nbd')
    return cmd('block-export-add', **kw)


@runner.case()
def qmp_side_by_side():
    steps = [
        add(id='e0', **{'node-name': 'd0'}),
        cmd('nbd-server-stop'),
        cmd('nbd-server-start', addr=UNIX),
        cmd('nbd-server-start', addr=UNIX),
        add(id='e0', **{'node-name': 'd0'}),
        add(id='e0', **{'node-name': 'd0'}),
        add(id='e1', **{'node-name': 'nope'}),
        add(id='e1', **{'node-name': 'd0'}),
        add(id='e1', name='other', writable=True, **{'node-name': 'd0'}),
        add(id='1bad', **{'node-name': 'd0'}),
        add(id='e2', writable=True, **{'node-name': 'ro'}),
        add(id='e2', name='ro', **{'node-name': 'ro'}),
        add(id='e3', name='x' * 4097, **{'node-name': 'd0'}),
        cmd('query-block-exports'),
        cmd('block-export-del', id='nope'),
        cmd('block-export-del', id='e1'),
        cmd('block-export-del', id='e1'),
        cmd('query-block-exports'),
        cmd('block-export-del', id='e0', mode='hard'),
        cmd('nbd-server-stop'),
        cmd('query-block-exports'),
        cmd('nbd-server-stop'),
        cmd('nbd-server-start', addr={'type': 'unix', 'data': {
            'path': '/nonexistent-dir/x.sock'}}),
        cmd('nbd-server-start', addr={'type': 'inet', 'data': {
            'host': '127.0.0.1', 'port': '0'}}),
        add(id='e0', **{'node-name': 'd0'}),
        add(id='e1', iothread='io0', **{'node-name': 'ro'}),
        add(id='e1', iothread='io0', **{'node-name': 'nope'}),
        add(id='e0', iothread='io0', **{'node-name': 'nope'}),
        cmd('blockdev-del', **{'node-name': 'd0'}),
        cmd('query-block-exports'),
        cmd('nbd-server-stop'),
        cmd('query-block-exports'),
        cmd('blockdev-del', **{'node-name': 'd0'}),
    ]
    Scenario('nbd-qmp', steps,
             images=(('d0.qcow2', 'qcow2', ()), ('ro.qcow2', 'qcow2', ())),
             blockdevs=['driver=qcow2,node-name=d0,file.driver=file,'
                        'file.filename={D}/d0.qcow2',
                        'driver=qcow2,node-name=ro,read-only=on,'
                        'file.driver=file,file.filename={D}/ro.qcow2']
             ).run()


def wait_event(dm, name, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for e in dm.events:
            if e['event'] == name:
                return e
        dm.send(cmd('query-version'))
        time.sleep(0.05)
    return None


def one(dm, req):
    r = dm.send(req)
    check(len(r) == 1, 'one reply expected: %s' % r)
    return r[0]


@runner.case()
def delete_with_client_connected():
    """Safe refuses, hard disconnects the client, the event follows; the
    same on qemu-storage-daemon."""
    _, qsd = daemon_paths()
    seen = {}
    with common.TempDir('strata-nbd-') as d:
        for side, binary in (('qemu', qsd), ('strata', strata())):
            os.mkdir(os.path.join(d, side))
            img = os.path.join(d, side, 'a.qcow2')
            make_image(img)
            sock, args = export_args(os.path.join(d, side), img)
            dm = Daemon(binary, args, os.path.join(d, side))
            one(dm, cmd('qmp_capabilities'))
            c = nbdwire.Client(sock)
            check(c.go('disk') == nbdwire.REP_ACK, 'GO refused')
            check(c.write(0, b'x' * 512) == 0, 'write failed')
            r = [one(dm, cmd('block-export-del', id='e0')),
                 one(dm, cmd('query-block-exports'))]
            r.append(one(dm, cmd('block-export-del', id='e0', mode='hard')))
            closed = c.is_closed()
            ev = wait_event(dm, 'BLOCK_EXPORT_DELETED')
            r.append(one(dm, cmd('query-block-exports')))
            r.append(one(dm, cmd('block-export-del', id='e0')))
            seen[side] = (r, closed, ev and ev['data'])
            c.close()
            quit_ok(dm)
    q, s = seen['qemu'], seen['strata']
    check(s[0][0].get('error', {}).get('desc') == "export 'e0' still in use",
          'safe delete with a client: %s' % s[0][0])
    check(s[1] == q[1] and s[0] == q[0] and s[2:] == q[2:] and
          s[0][2:] == q[0][2:],
          'qemu %s\nstrata %s' % (q, s))
    check(s[1] is True and s[2] == {'id': 'e0'},
          'client not disconnected or no event: %s' % (s,))


def greeted(c, timeout):
    c.sock.settimeout(timeout)
    try:
        c.hello()
        return True
    except socket.timeout:
        return False


@runner.case()
def max_connections_one():
    """At the limit a new client waits (QEMU stops accepting) and is
    served once the other one leaves; the same on both daemons."""
    _, qsd = daemon_paths()
    for side, binary in (('qemu', qsd), ('strata', strata())):
        with common.TempDir('strata-nbd-') as d:
            img = os.path.join(d, 'a.qcow2')
            make_image(img)
            sock, args = export_args(d, img)
            args[args.index('--nbd-server') + 1] += ',max-connections=1'
            dm = Daemon(binary, args, d)
            a = nbdwire.Client(sock)
            check(a.go('disk') == nbdwire.REP_ACK, 'GO')
            b = nbdwire.Client(sock)
            check(not greeted(b, 1), '%s: a second client was served over '
                  'max-connections=1' % side)
            a.disconnect()
            check(greeted(b, 20), '%s: the waiting client was not served '
                  'after the first left' % side)
            b.close()
            quit_ok(dm)


@runner.case()
def export_follows_external_snapshot():
    with common.TempDir('strata-nbd-') as d:
        img = os.path.join(d, 'a.qcow2')
        make_image(img, ['write -P 0x11 0 1M'])
        sock, args = export_args(d, img)
        dm = Daemon(strata(), args, d)
        one(dm, cmd('qmp_capabilities'))
        c = nbdwire.Client(sock)
        check(c.go('disk') == nbdwire.REP_ACK, 'GO refused')
        r = one(dm, cmd('blockdev-snapshot-sync', **{
            'node-name': 'd0', 'snapshot-file': os.path.join(d, 'top.qcow2'),
            'snapshot-node-name': 'top', 'format': 'qcow2'}))
        check(r == {'return': {}}, 'snapshot: %s' % r)
        check(c.write(0, b'\x77' * 4096) == 0, 'write after the snapshot')
        err, data, _ = c.read(0, 8192)
        check(err == 0 and data == b'\x77' * 4096 + b'\x11' * 4096,
              'read after the snapshot')
        c.disconnect()
        quit_ok(dm)
        # the write went to the overlay; the old top keeps its data
        common.run(['qemu-io', '-f', 'qcow2', '-c', 'read -P 0x11 0 1M',
                    img])
        res = common.run(['qemu-io', '-f', 'qcow2', '-c',
                          'read -P 0x77 0 4k', os.path.join(d, 'top.qcow2')])
        check('Pattern verification failed' not in res.out, res.out)


@runner.case()
def detect_zeroes_through_the_export():
    """detect-zeroes=unmap on the exported node: a client's write of
    zeroes unmaps the clusters; query-named-block-nodes reports the
    option; blockdev-add refuses unmap without discard=unmap.  All as
    qemu-storage-daemon does."""
    seen = {}
    with common.TempDir('strata-nbd-') as d:
        for side, binary, sd in each_daemon(d):
            img, other = os.path.join(sd, 'a.qcow2'), os.path.join(sd, 'b.qcow2')
            make_image(img, ['write -P 0x11 0 2M'])
            make_image(other)
            sock, args = export_args(sd, img)
            args[1] += ',detect-zeroes=unmap'
            dm = Daemon(binary, args, sd)
            one(dm, cmd('qmp_capabilities'))
            common.run(['qemu-io', '-f', 'raw', '-c', 'write -P 0 0 1M',
                        '-c', 'read -P 0 0 1M', '-c', 'read -P 0x11 1M 1M',
                        uri(sock, 'disk')])
            nodes = one(dm, cmd('query-named-block-nodes'))['return']
            dz = [n['detect_zeroes'] for n in nodes if n['node-name'] == 'd0']
            r = one(dm, cmd('blockdev-add', **{
                'driver': 'qcow2', 'node-name': 'd1',
                'detect-zeroes': 'unmap',
                'file': {'driver': 'file', 'filename': other}}))
            quit_ok(dm)
            common.qemu_check_clean(img)
            m = json.loads(common.run(['qemu-img', 'map', '--output=json',
                                       img]).out)
            seen[side] = (dz, r.get('error', {}).get('desc'),
                          [(e['start'], e['length'], e['data']) for e in m])
    check(seen['strata'] == seen['qemu'], '(detect_zeroes, blockdev-add '
          'error, map):\n  qemu:   %s\n  strata: %s'
          % (seen['qemu'], seen['strata']))
    check(seen['strata'][2][0] == (0, 1 << 20, False),
          'the zeroes left data: %s' % (seen['strata'][2],))


def dirty_bit(path):
    with open(path, 'rb') as f:
        f.seek(72)
        return int.from_bytes(f.read(8), 'big') & 1


@runner.case()
def qcow2_runtime_options_take_effect():
    """qcow2 options given to --blockdev reach the driver: with
    lazy-refcounts=on an allocating write through the export sets the
    dirty bit while the daemon runs (off: it stays clear), as in
    qemu-storage-daemon."""
    _, qsd = daemon_paths()
    seen = {}
    with common.TempDir('strata-nbd-') as d:
        for side, binary in (('qemu', qsd), ('strata', strata())):
            for lazy in ('on', 'off'):
                sd = os.path.join(d, side + lazy)
                os.mkdir(sd)
                img = os.path.join(sd, 'a.qcow2')
                make_image(img)
                sock, args = export_args(sd, img)
                args[1] += ',lazy-refcounts=%s,overlap-check=all' % lazy
                dm = Daemon(binary, args, sd)
                common.run(['qemu-io', '-f', 'raw', '-c',
                            'write -P 0x33 0 64k', uri(sock, 'disk')])
                seen[side + lazy] = dirty_bit(img)
                quit_ok(dm)
                common.qemu_check_clean(img)
    check(seen == {'qemuon': 1, 'qemuoff': 0, 'strataon': 1,
                   'strataoff': 0}, 'dirty bits: %s' % seen)


@runner.case()
def file_node_by_reference():
    """libvirt's layout: a file node, then a qcow2 node naming it as its
    file.  Data written through the export, an internal and an external
    snapshot taken over QMP, more data: every image reads back what was
    written and checks clean."""
    with common.TempDir('strata-nbd-') as d:
        img, top = os.path.join(d, 'a.qcow2'), os.path.join(d, 't.qcow2')
        make_image(img, ['write -P 0x11 0 1M'])
        sock = os.path.join(d, 'nbd.sock')
        dm = Daemon(strata(), [
            '--blockdev', json.dumps({
                'driver': 'file', 'node-name': 'fa', 'filename': img,
                'auto-read-only': True, 'discard': 'unmap'}),
            '--blockdev', json.dumps({
                'driver': 'qcow2', 'node-name': 'qa', 'file': 'fa',
                'discard': 'unmap'}),
            '--nbd-server', 'addr.type=unix,addr.path=%s' % sock,
            '--export', 'type=nbd,id=e0,node-name=qa,name=disk,writable=on'],
            d)
        one(dm, cmd('qmp_capabilities'))
        io = ['qemu-io', '-f', 'raw']
        common.run(io + ['-c', 'write -P 0x22 1M 1M', uri(sock, 'disk')])
        r = one(dm, cmd('blockdev-snapshot-internal-sync', device='qa',
                        name='s1'))
        check(r == {'return': {}}, 'internal snapshot: %s' % r)
        common.run(io + ['-c', 'write -P 0x33 0 64k', uri(sock, 'disk')])
        r = one(dm, cmd('blockdev-snapshot-sync', **{
            'node-name': 'qa', 'snapshot-file': top,
            'snapshot-node-name': 'top', 'format': 'qcow2'}))
        check(r == {'return': {}}, 'external snapshot: %s' % r)
        res = common.run(io + ['-c', 'write -P 0x44 2M 64k',
                               '-c', 'read -P 0x33 0 64k',
                               '-c', 'read -P 0x11 64k 960k',
                               '-c', 'read -P 0x22 1M 1M',
                               '-c', 'read -P 0x44 2M 64k',
                               uri(sock, 'disk')])
        check('Pattern verification failed' not in res.out, res.out)
        r = one(dm, cmd('blockdev-del', **{'node-name': 'fa'}))
        check(r.get('error', {}).get('desc') == 'Block device fa is in use',
              'blockdev-del of the file node: %s' % r)
        # the shared file node keeps the image locked
        res = common.run(['qemu-io', '-f', 'qcow2', '-c', 'write 0 4k', img],
                         rc=None)
        check(res.rc != 0 and 'lock' in res.out + res.err,
              'a second writer got in: %s' % (res.out + res.err))
        quit_ok(dm)
        for path in (img, top):
            common.qemu_check_clean(path)
        res = common.run(['qemu-io', '-f', 'qcow2', '-c',
                          'read -P 0x33 0 64k', '-c', 'read -P 0x22 1M 1M',
                          img])
        check('Pattern verification failed' not in res.out, res.out)
        res = common.run(['qemu-img', 'snapshot', '-l', img])
        check(' s1 ' in res.out, res.out)


@runner.case()
def overlay_takes_the_old_tops_modes():
    """blockdev-snapshot-sync opens the overlay with the old top's cache
    modes and discard choice, as QEMU does: cache.direct=on stays on,
    and with the default discard=ignore a client's trim of data written
    after the snapshot changes nothing."""
    seen = {}
    with common.TempDir('strata-nbd-') as d:
        for side, binary, sd in each_daemon(d):
            img, top = os.path.join(sd, 'a.qcow2'), os.path.join(sd, 't.qcow2')
            make_image(img, ['write -P 0x11 0 1M'])
            sock, args = export_args(sd, img, discard=None)
            args[1] += ',cache.direct=on'
            dm = Daemon(binary, args, sd)
            one(dm, cmd('qmp_capabilities'))
            r = one(dm, cmd('blockdev-snapshot-sync', **{
                'node-name': 'd0', 'snapshot-file': top,
                'snapshot-node-name': 'top', 'format': 'qcow2'}))
            check(r == {'return': {}}, '%s: snapshot: %s' % (side, r))
            nodes = one(dm, cmd('query-named-block-nodes'))['return']
            cache = [n['cache'] for n in nodes if n['node-name'] == 'top']
            common.run(['qemu-io', '-f', 'raw', '-c', 'write -P 0x22 0 64k',
                        '-c', 'discard 0 64k', uri(sock, 'disk')])
            quit_ok(dm)
            common.qemu_check_clean(top)
            res = common.run(['qemu-io', '-f', 'qcow2', '-c',
                              'read -P 0x22 0 64k', top])
            seen[side] = (cache, 'Pattern verification failed'
                          not in res.out)
    check(seen['strata'] == seen['qemu'], 'overlay (cache, trim ignored):'
          '\n  qemu:   %s\n  strata: %s' % (seen['qemu'], seen['strata']))
    check(seen['strata'] == ([{'writeback': True, 'direct': True,
                               'no-flush': False}], True),
          'overlay: %s' % (seen['strata'],))


@runner.case()
def libnbd_parallel_connections():
    """libnbd from C (tests/functional/nbd-parallel.c): 4 connections,
    16 requests in flight on each, every block checked from another
    connection after one flush."""
    helper = os.environ.get('STRATA_NBD_PARALLEL')
    if not helper or not os.access(helper, os.X_OK):
        raise Skip('STRATA_NBD_PARALLEL (the libnbd helper) not built')
    with common.TempDir('strata-nbd-') as d:
        img = os.path.join(d, 'a.qcow2')
        make_image(img)
        sock, args = export_args(d, img)
        dm = Daemon(strata(), args, d)
        common.run([helper, uri(sock, 'disk'), '4', '256', '4096'])
        quit_ok(dm)
        # every block is in the image, where its stamp says
        raw = os.path.join(d, 'a.raw')
        common.run(['qemu-img', 'convert', '-O', 'raw', img, raw])
        with open(raw, 'rb') as f:
            data = f.read()
        for r in range(4):
            for b in range(256):
                off = (r * 256 + b) * 4096
                want = b'conn %d block %d ' % (r, b)
                check(data[off:off + len(want)] == want,
                      'block %d of connection %d: %r' % (
                          b, r, data[off:off + 32]))
        common.qemu_check_clean(img)


def main():
    for prog in ('qemu-img', 'qemu-io'):
        if not common.oracle(prog):
            print('SKIP (whole script): %s not found' % prog)
            return 77
    try:
        return runner.main()
    finally:
        shutil.rmtree(NBD_DIR, ignore_errors=True)


if __name__ == '__main__':
    sys.exit(main())
