#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Images on block and character devices: the host_device and host_cdrom
protocol drivers, side by side with qemu-img and qemu-io.

The type checks run on a directory and /dev/null (qemu-iotests 226's
matrix).  The rest needs a loop device (root and /dev/loop-control); a
32 MiB sparse file is attached for the script and detached at the end,
and each of those cases is a counted skip where that is impossible:

- a block device the kernel holds read-only (`losetup -r`) is refused
  for writing at open, with QEMU's text, and reads fine read-only;
- a qcow2 image made on the device by strata-img, written and
  snapshotted by strata-img/strata-io, must read back with qemu-io, pass
  `qemu-img check` and map as qemu-img maps it;
- convert onto a device that holds other data must write the source's
  zeroes too (a device is not zero-initialised, unlike a new file);
- resize, create and preallocation on a device fail or succeed as
  qemu-img's do, with its texts; a qcow2 create with
  preallocation=falloc leaves the device untouched (QEMU's leaves a
  header of size 0 behind, so only the message is compared there).
"""

import contextlib
import hashlib
import os
import re
import subprocess
import sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402
from common import check, run  # noqa: E402

runner = common.Runner()
MiB = 1024 * 1024
DEVICE_SIZE = 32 * MiB


def norm(text):
    """Program names out, so both tools' messages compare."""
    t = common.tools()
    for name in (t.img_name, os.path.basename(t.io), 'qemu-img', 'qemu-io'):
        text = text.replace(name + ':', 'PROG:')
    return text


def same_outcome(argv_ours, argv_qemu, what):
    """Both commands end alike: exit status and messages."""
    o = run(argv_ours, rc=None)
    q = run(argv_qemu, rc=None)
    check((o.rc, norm(o.out + o.err)) == (q.rc, norm(q.out + q.err)),
          '%s differs\n%s\n%s' % (what, o.describe(), q.describe()))
    return o


@contextlib.contextmanager
def loop_device(read_only=False):
    """A loop device over a sparse 32 MiB file, or Skip."""
    with common.TempDir() as d:
        backing = os.path.join(d, 'disk.bin')
        with open(backing, 'wb') as f:
            f.truncate(DEVICE_SIZE)
        try:
            p = subprocess.run(['losetup', '-f', '--show'] +
                               (['-r'] if read_only else []) + [backing],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               timeout=60)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise common.Skip('losetup: %s' % e)
        dev = p.stdout.decode().strip()
        if p.returncode != 0 or not dev.startswith('/dev/'):
            raise common.Skip('no loop device here: %s'
                              % p.stderr.decode().strip())
        try:
            yield d, dev
        finally:
            subprocess.run(['losetup', '-d', dev], timeout=60)


def fill(dev, byte):
    """Every byte of the device set to `byte`: old data to overwrite."""
    with open(dev, 'r+b') as f:
        chunk = bytes([byte]) * MiB
        for _ in range(DEVICE_SIZE // MiB):
            f.write(chunk)
        f.flush()
        os.fsync(f.fileno())


def head_digest(dev, n=MiB):
    with open(dev, 'rb') as f:
        return hashlib.sha256(f.read(n)).hexdigest()


def source_image(d):
    """4 MiB qcow2: 0x33 in its first 2 MiB, the rest never written."""
    t = common.tools()
    src = os.path.join(d, 'src.qcow2')
    run([t.qemu_img, 'create', '-q', '-f', 'qcow2', src, '4M'])
    run([t.qemu_io, '-c', 'write -P 0x33 0 2M', src])
    return src


@runner.case()
def type_checks():
    """Each driver refuses the wrong kind of node with QEMU's text, in
    QEMU's order: a read-only open of a directory reaches the type check,
    a read-write one fails in open(2); /dev/null opens as a device."""
    t = common.tools()
    with common.TempDir() as d:
        adir = os.path.join(d, 'adir')
        os.mkdir(adir)
        for drv in ('file', 'host_device', 'host_cdrom'):
            for ro in ('-r ', ''):
                for path, extra in ((adir, ''), ('/dev/null', ',locking=off')):
                    cmd = 'open %s-o driver=%s,filename=%s%s' % (
                        ro, drv, path, extra)
                    same_outcome([t.io, '-c', cmd], [t.qemu_io, '-c', cmd],
                                 cmd)
        # without a driver, a device path is probed as host_device
        o = same_outcome([t.img, 'info', '/dev/null'],
                         [t.qemu_img, 'info', '/dev/null'], 'info /dev/null')
        check('file format: raw' in o.out, 'not raw:\n%s' % o.describe())
        # and the prefix names it too
        same_outcome([t.img, 'info', 'host_device:/dev/null'],
                     [t.qemu_img, 'info', 'host_device:/dev/null'],
                     'info host_device:/dev/null')


@runner.case()
def backing_never_a_device():
    """create -b naming a device node is refused (an image could not
    open it as its backing file: device nodes named in headers are never
    opened) and creates nothing."""
    t = common.tools()
    if t.are_qemu:
        raise common.Skip('strata rule: QEMU opens device backing files')
    with common.TempDir() as d:
        ov = os.path.join(d, 'ov.qcow2')
        r = run([t.img, 'create', '-f', 'qcow2', '-b', '/dev/null', '-F',
                 'raw', ov], rc=1)
        check("'/dev/null' is not a regular file" in r.err,
              'wrong refusal:\n%s' % r.describe())
        check(not os.path.exists(ov), 'create left %s' % ov)


@runner.case()
def read_only_device_refused():
    """A block device the kernel holds read-only opens for writing (the
    open(2) succeeds; its writes would fail with EPERM): refused at open
    with QEMU's text, while a read-only open works."""
    t = common.tools()
    with loop_device(read_only=True) as (d, dev):
        cmd = 'open -o driver=host_device,filename=%s' % dev
        o = same_outcome([t.io, '-c', cmd], [t.qemu_io, '-c', cmd], cmd)
        check('The device is not writable' in o.out + o.err, o.describe())
        for tool in (t.io, t.qemu_io):
            r = run([tool, '-r', '-f', 'raw', '-c', 'read -P 0 0 64k', dev])
            check('Pattern verification failed' not in r.out, r.describe())


@runner.case()
def qcow2_on_device():
    """strata-img makes a qcow2 image on the device (virtual size beyond
    the device's), strata-io writes, zeroes and discards in it,
    strata-img snapshots it; QEMU reads every byte as written, its check
    is clean and both map it alike."""
    t = common.tools()
    with loop_device() as (d, dev):
        fill(dev, 0xa5)
        run([t.img, 'create', '-q', '-f', 'qcow2', dev, '64M'])
        run([t.io, '-c', 'write -P 0x11 0 1M', '-c', 'write -z 1M 64k',
             '-c', 'discard 0 64k', dev])
        run([t.img, 'snapshot', '-c', 's1', dev])
        run([t.io, '-c', 'write -P 0x22 512k 1M', '-c', 'write -P 0x44 60M 64k',
             dev])
        r = run([t.qemu_img, 'check', dev], rc=None)
        check(r.rc == 0 and 'No errors were found' in r.out,
              'check:\n%s' % r.describe())
        r = run([t.qemu_io, '-c', 'read -P 0 0 64k',
                 '-c', 'read -P 0x11 64k 448k', '-c', 'read -P 0x22 512k 1M',
                 '-c', 'read -P 0 1536k 1M', '-c', 'read -P 0x44 60M 64k',
                 dev])
        check('Pattern verification failed' not in r.out, r.describe())
        r = run([t.qemu_img, 'snapshot', '-l', dev])
        check(re.search(r'^1\s+s1\s', r.out, re.M), r.describe())
        ours = run([t.img, 'map', '--output=json', dev]).out
        theirs = run([t.qemu_img, 'map', '--output=json', dev]).out
        check(ours == theirs, 'map differs:\n%s\n%s' % (ours, theirs))
        # the snapshot still holds the first data
        run([t.img, 'snapshot', '-a', 's1', dev])
        r = run([t.qemu_io, '-c', 'read -P 0x11 64k 960k', dev])
        check('Pattern verification failed' not in r.out, r.describe())


@runner.case()
def convert_to_device_writes_zeroes():
    """convert onto a device full of 0xa5: the source's unwritten half
    must read as zeroes afterwards, raw and qcow2 targets alike."""
    t = common.tools()
    with loop_device() as (d, dev):
        src = source_image(d)
        fill(dev, 0xa5)
        run([t.img, 'convert', '-O', 'raw', src, dev])
        r = run([t.qemu_io, '-f', 'raw', '-c', 'read -P 0x33 0 2M',
                 '-c', 'read -P 0 2M 2M', '-c', 'read -P 0xa5 4M 1M', dev])
        check('Pattern verification failed' not in r.out,
              'raw convert left old data:\n%s' % r.describe())
        fill(dev, 0xa5)
        run([t.img, 'convert', '-O', 'qcow2', src, dev])
        run([t.qemu_img, 'compare', src, dev])
        run([t.qemu_img, 'check', '-q', dev])
        # -n onto the device as it stands: the same rule
        fill(dev, 0xa5)
        run([t.img, 'convert', '-n', '-O', 'raw', src, dev])
        r = run([t.qemu_io, '-f', 'raw', '-c', 'read -P 0 2M 2M', dev])
        check('Pattern verification failed' not in r.out,
              'convert -n left old data:\n%s' % r.describe())


@runner.case()
def resize_and_create_rules():
    """What a device cannot do, it refuses as qemu-img does (a raw
    resize to another length, preallocation, a create larger than the
    device), and what it can, it does (a raw resize to its own length, a
    qcow2 image resized inside it)."""
    t = common.tools()
    size = str(DEVICE_SIZE)
    with loop_device() as (d, dev):
        raw_cases = [['resize', '-f', 'raw', dev, '64M'],
                     ['resize', '-f', 'raw', dev, size],
                     ['resize', '-f', 'raw', '--shrink', dev, '4M'],
                     ['resize', '-f', 'raw', '--preallocation=falloc', dev,
                      '64M'],
                     ['create', '-f', 'raw', '-o', 'preallocation=full', dev,
                      '4M'],
                     ['create', '-f', 'raw', dev, '64M'],
                     ['create', '-f', 'raw', dev, '4M']]
        for args in raw_cases:
            same_outcome([t.img] + args, [t.qemu_img] + args, ' '.join(args))
        for args in (['resize', dev, '16M'],
                     ['resize', '--shrink', dev, '2M'],
                     ['resize', '--preallocation=full', dev, '32M']):
            res = []
            for tool in (t.img, t.qemu_img):
                run([t.qemu_img, 'create', '-q', '-f', 'qcow2', dev, '4M'])
                res.append(run([tool] + args, rc=None))
                run([t.qemu_img, 'check', '-q', dev])
                res.append(run([t.qemu_img, 'info', dev]).out.split('\n')[2])
            o, o_size, q, q_size = res
            check((o.rc, norm(o.err), o_size) == (q.rc, norm(q.err), q_size),
                  '%s differs (%s, %s)\n%s\n%s' % (
                      ' '.join(args), o_size, q_size, o.describe(),
                      q.describe()))
        # preallocation of a qcow2 image on the device: QEMU's text;
        # strata refuses before it writes anything
        run([t.img, 'create', '-q', '-f', 'qcow2', dev, '16M'])
        before = head_digest(dev)
        args = ['create', '-q', '-f', 'qcow2', '-o', 'preallocation=falloc',
                dev, '4M']
        o = run([t.img] + args, rc=1)
        check("Preallocation mode 'falloc' unsupported for this non-regular "
              "file" in o.err, o.describe())
        if not t.are_qemu:
            check(head_digest(dev) == before,
                  'a refused create changed the device')
            info = run([t.qemu_img, 'info', dev]).out
            check('virtual size: 16 MiB' in info, info)


@runner.case()
def qmp_blockdev_add_and_snapshot():
    """blockdev-add with driver host_device (and host_cdrom's and file's
    type checks) answers as qemu-storage-daemon does, and a transaction
    of an internal snapshot on the device's qcow2 image works: QEMU then
    lists the snapshot and finds the image clean."""
    t = common.tools()
    if t.are_qemu:
        raise common.Skip('needs strata-daemon')
    import qmplib
    strata, qsd = qmplib.daemon_paths()
    with loop_device() as (d, dev):
        adir = os.path.join(d, 'adir')
        os.mkdir(adir)
        steps = [
            {'execute': 'blockdev-add', 'arguments': {
                'driver': 'raw', 'node-name': 'bad%d' % i, 'read-only': ro,
                'file': {'driver': drv, 'filename': path}}}
            for i, (drv, path, ro) in enumerate(
                (drv, path, ro) for drv in ('file', 'host_device',
                                            'host_cdrom')
                for path in (adir, '/dev/null') for ro in (True, False))]
        steps.append({'execute': 'blockdev-add', 'arguments': {
            'driver': 'qcow2', 'node-name': 'disk0',
            'file': {'driver': 'host_device', 'filename': dev}}})
        steps.append({'execute': 'transaction', 'arguments': {'actions': [
            {'type': 'blockdev-snapshot-internal-sync',
             'data': {'device': 'disk0', 'name': 'snap-a'}}]}})
        replies = {}
        for name, binary in (('strata', strata), ('qemu', qsd)):
            run([t.qemu_img, 'create', '-q', '-f', 'qcow2', dev, '16M'])
            daemon = qmplib.Daemon(binary, [], d)
            try:
                daemon.send({'execute': 'qmp_capabilities'})
                replies[name] = [
                    (r[0].get('return'), r[0].get('error', {}).get('desc'))
                    for r in (daemon.send(step) for step in steps)]
            finally:
                check(daemon.quit() == 0, '%s did not exit cleanly' % name)
            r = run([t.qemu_img, 'snapshot', '-l', dev])
            check(re.search(r'^1\s+snap-a\s', r.out, re.M),
                  '%s: no snapshot\n%s' % (name, r.describe()))
            run([t.qemu_img, 'check', '-q', dev])
        check(replies['strata'] == replies['qemu'],
              'replies differ:\n%s\n%s' % (replies['strata'],
                                              replies['qemu']))


if __name__ == '__main__':
    sys.exit(runner.main())
