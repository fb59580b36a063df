#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Probing and the block-0 rule for images probed as raw.

An image opened without a format whose probe says raw must not let any
writer turn block 0 into another format's header: the next probing open
would read the file as that format, with a backing file of the writer's
choosing (any host file).  QEMU refuses such writes with EPERM and warns
at every read-write open; so must strata, on every path that writes.

Cases: the exact reproduction from issue 7 (a qcow2 header naming a
secret host file as backing file, written by strata-io); side by side
with qemu-io, a series of writes (whole header, header after block 0,
a header assembled byte by byte, zero writes, discards, explicit raw,
read-only) giving the same verdicts, output and file bytes; the same
restriction on the commit path of strata-img into a probed raw base;
and probing itself (empty file, tiny file, zero-padded header).
"""

import os
import struct
import sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402
from common import check, run  # noqa: E402

runner = common.Runner()

SECRET = b'TOP SECRET: the host file a guest must never read\n'
WARNING = ("WARNING: Image format was not specified for '%s' and probing "
           "guessed raw.\n"
           "         Automatically detecting the format is dangerous for raw "
           "images, write operations on block 0 will be restricted.\n"
           "         Specify the 'raw' format explicitly to remove the "
           "restrictions.\n")
EPERM_LINE = 'write failed: Operation not permitted'


def make_header(d):
    """A qcow2 header naming secret.txt as raw backing file (hdr.bin)."""
    t = common.tools()
    with open(os.path.join(d, 'secret.txt'), 'wb') as f:
        f.write(SECRET)
    run([t.qemu_img, 'create', '-q', '-f', 'qcow2', '-b', 'secret.txt',
         '-F', 'raw', '-u', os.path.join(d, 'hdr.qcow2'), '1M'])
    with open(os.path.join(d, 'hdr.qcow2'), 'rb') as f:
        hdr = f.read(1024)
    with open(os.path.join(d, 'hdr.bin'), 'wb') as f:
        f.write(hdr)
    return os.path.join(d, 'hdr.bin')


def blank_raw(path, size=1 << 20):
    with open(path, 'wb') as f:
        f.truncate(size)


def read_file(path):
    with open(path, 'rb') as f:
        return f.read()


def strip_timing(text):
    """Drop qemu-io's timing lines, which differ from run to run."""
    return '\n'.join(ln for ln in text.splitlines()
                     if 'ops/sec' not in ln and ' ops; ' not in ln)


@runner.case()
def exact_reproduction():
    t = common.tools()
    with common.TempDir() as d:
        hdr = make_header(d)
        img = os.path.join(d, 'r.img')
        blank_raw(img)
        res = run([t.io, '-c', 'write -s %s 0 1024' % hdr, img], rc=1, cwd=d)
        check(EPERM_LINE in res.out,
              'the write of a qcow2 header to block 0 was not refused with '
              'EPERM\n' + res.describe())
        check(WARNING % img in res.err,
              'no probing warning on a read-write open\n' + res.describe())
        check(read_file(img) == bytes(1 << 20),
              'the refused write changed the file')
        res = run([t.io, '-c', 'read -v 0 16', img], cwd=d)
        check('00000000:  00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00'
              in res.out and 'TOP SECRET' not in res.out and
              '54 4f 50' not in res.out,
              'reading block 0 does not show the original zeroes\n' +
              res.describe())
        res = run([t.img, 'info', img], cwd=d)
        check('file format: raw' in res.out and 'backing' not in res.out,
              'the image no longer probes as raw\n' + res.describe())
        run([t.io, '-r', '-c', 'read -P 0 0 1M', img], cwd=d)


# Each series runs in one invocation of each tool on a fresh 1 MiB file
# opened without a format (unless `extra` says otherwise).
SERIES = {
    'header_at_0': (['write -s {hdr} 0 1024'], ()),
    'header_after_block0': (['write -s {hdr} 512 1024'], ()),
    'header_via_rmw_ending_in_block0': (['write -s {hdr} 0 100'], ()),
    # magic first (still raw), then the version that completes a header
    'assembled_byte_by_byte': (['write -P 0x51 0 1', 'write -P 0x46 1 1',
                                'write -P 0x49 2 1', 'write -P 0xfb 3 1',
                                'write -P 0x03 7 1', 'read -v 0 8'], ()),
    'version_first_then_magic': (['write -P 0x02 7 1',
                                  'write -s {hdr} 0 4', 'read -v 0 8'], ()),
    'magic_then_version_2': (['write -s {hdr} 0 4', 'write -P 0x02 7 1',
                              'read -v 0 8'], ()),
    'zeroes_and_discard': (['write -P 0x51 0 1', 'write -z 0 4096',
                            'write -P 0x51 0 1', 'discard 0 4096',
                            'read -v 0 4', 'write -P 0x51 0 8',
                            'discard 4 100', 'discard 0 4', 'read -v 0 8'],
                           ()),
    'aio_header_then_plain': (['aio_write -P 0x51 0 1', 'aio_flush',
                               'write -s {hdr} 0 1024'], ()),
    'explicit_raw_is_unrestricted': (['write -s {hdr} 0 1024'],
                                     ('-f', 'raw')),
    'read_only_no_warning': (['read -v 0 4'], ('-r',)),
}


def run_series(name):
    t = common.tools()
    cmds, extra = SERIES[name]
    results = {}
    with common.TempDir() as d:
        hdr = make_header(d)
        for label, tool in (('strata', t.io), ('qemu', t.qemu_io)):
            img = os.path.join(d, label + '.img')
            blank_raw(img)
            argv = [tool] + list(extra)
            for c in cmds:
                argv += ['-c', c.format(hdr=hdr)]
            res = run(argv + [img], rc=None, cwd=d)
            out = strip_timing(res.out)
            err = common.normalize_prog(res.err.replace(img, 'IMG'),
                                        os.path.basename(tool))
            results[label] = (res.rc, out, err, read_file(img))
        s, q = results['strata'], results['qemu']
        check(s[0] == q[0], '%s: exit %s, qemu-io %s' % (name, s[0], q[0]))
        check(s[1] == q[1], '%s: stdout differs\nstrata:\n%s\nqemu-io:\n%s'
              % (name, s[1], q[1]))
        check(s[2] == q[2], '%s: stderr differs\nstrata:\n%s\nqemu-io:\n%s'
              % (name, s[2], q[2]))
        check(s[3] == q[3], '%s: file contents differ from qemu-io\'s'
              % name)


for _name in SERIES:
    runner.add('same_as_qemu_io:' + _name, run_series, _name)


@runner.case()
def refused_writes_are_refused_as_qemu_says():
    """The verdicts above, spelled out, so that a QEMU change shows."""
    t = common.tools()
    with common.TempDir() as d:
        hdr = make_header(d)
        img = os.path.join(d, 'r.img')
        blank_raw(img)
        res = run([t.io, '-c', 'write -s %s 0 4' % hdr,
                   '-c', 'write -P 0x03 7 1', '-c', 'write -P 0x01 7 1',
                   '-c', 'write -s %s 512 1024' % hdr, img], rc=None, cwd=d)
        lines = [ln for ln in res.out.splitlines()
                 if ln.startswith(('wrote', 'write failed'))]
        # version 3 would make it qcow2, version 1 QEMU's qcow (v1)
        check(lines == ['wrote 4/4 bytes at offset 0', EPERM_LINE,
                        EPERM_LINE, 'wrote 1024/1024 bytes at offset 512'],
              'unexpected verdicts\n' + res.describe())
        data = read_file(img)
        check(data[:8] == b'QFI\xfb\x00\x00\x00\x00',
              'block 0 is not the bare magic: %r' % data[:8])


def block(*parts):
    b = bytearray(512)
    for off, data in parts:
        b[off:off + len(data)] = data
    return bytes(b)


# Block-0 contents that QEMU 7.2 probes as one of its formats (the write
# must be refused: QEMU might open the image next) and near misses that
# stay raw.  qcow2's own odd versions are left to the qcow2 probe's tests.
BLOCK0 = {
    'qcow2_v2': (block((0, b'QFI\xfb\0\0\0\x02')), False),
    'qcow2_v3': (block((0, b'QFI\xfb\0\0\0\x03')), False),
    'qcow_v1': (block((0, b'QFI\xfb\0\0\0\x01')), False),
    'qcow_v0': (block((0, b'QFI\xfb\0\0\0\0')), True),
    'qed': (block((0, b'QED\0')), False),
    'qed_bad_magic': (block((0, b'QED\x01')), True),
    'vmdk4': (block((0, b'KDMV')), False),
    'vmdk3': (block((0, b'COWD')), False),
    'vmdk_descriptor': (block((0, b'# Disk DescriptorFile\nversion=1\n'
                                  b'RW 8 FLAT "secret.txt" 0\n')), False),
    'vmdk_descriptor_crlf': (block((0, b'# c\n   \r\nversion=3\r\n')), False),
    'vmdk_descriptor_v4': (block((0, b'version=4\n')), True),
    'vmdk_descriptor_text_first': (block((0, b'x\nversion=1\n')), True),
    'vdi': (block((64, struct.pack('<I', 0xbeda107f))), False),
    'vpc': (block((0, b'conectix')), False),
    'vhdx': (block((0, b'vhdxfile')), False),
    'parallels': (block((0, b'WithoutFreeSpace'),
                        (16, struct.pack('<I', 2))), False),
    'parallels_ext': (block((0, b'WithouFreSpacExt'),
                            (16, struct.pack('<I', 2))), False),
    'parallels_v3': (block((0, b'WithoutFreeSpace'),
                           (16, struct.pack('<I', 3))), True),
    'luks1': (block((0, b'LUKS\xba\xbe\0\x01')), False),
    'luks2': (block((0, b'LUKS\xba\xbe\0\x02')), True),
    'bochs': (block((0, b'Bochs Virtual HD Image'), (32, b'Redolog'),
                    (48, b'Growing'), (64, struct.pack('<I', 0x20000))), False),
    'bochs_v1': (block((0, b'Bochs Virtual HD Image'), (32, b'Redolog'),
                       (48, b'Growing'), (64, struct.pack('<I', 0x10000))),
                 False),
    'bochs_undoable': (block((0, b'Bochs Virtual HD Image'), (32, b'Redolog'),
                             (48, b'Undoable'),
                             (64, struct.pack('<I', 0x20000))), True),
    'cloop': (block((0, b'#!/bin/sh\n#V2.0 Format\nmodprobe cloop file=$0 '
                        b'&& mount -r -t iso9660 /dev/cloop $1\n')), False),
    'text': (block((0, b'hello world\n')), True),
}


@runner.case()
def block0_formats_like_qemu():
    """Every candidate block 0: strata-io's verdict is the expected one and
    qemu-io's; a refused block leaves the file as it was."""
    t = common.tools()
    bad = []
    with common.TempDir() as d:
        for name, (data, allowed) in sorted(BLOCK0.items()):
            src = os.path.join(d, name + '.bin')
            with open(src, 'wb') as f:
                f.write(data)
            verdicts = {}
            for label, tool in (('strata', t.io), ('qemu', t.qemu_io)):
                img = os.path.join(d, '%s-%s.img' % (name, label))
                blank_raw(img, 65536)
                res = run([tool, '-c', 'write -s %s 0 512' % src, img],
                          rc=None, cwd=d)
                ok = 'wrote 512/512 bytes at offset 0' in res.out
                refused = EPERM_LINE in res.out
                check(ok != refused, 'neither written nor refused\n' +
                      res.describe())
                if refused:
                    check(read_file(img) == bytes(65536),
                          '%s: refused but the file changed' % name)
                verdicts[label] = ok
            if verdicts['strata'] != allowed or verdicts['qemu'] != allowed:
                bad.append('%s: expected %s, strata-io %s, qemu-io %s'
                           % (name, 'written' if allowed else 'refused',
                              verdicts['strata'], verdicts['qemu']))
    check(not bad, 'block-0 verdicts differ:\n' + '\n'.join(bad))


@runner.case()
def foreign_format_not_opened_as_raw():
    """A file QEMU would open as a format strata lacks is refused when
    probing, not shown as raw; naming a format still opens it."""
    common.skip_if_qemu_tools('strata refuses what QEMU opens as vmdk')
    t = common.tools()
    with common.TempDir() as d:
        img = os.path.join(d, 'desc.vmdk')
        with open(img, 'wb') as f:
            f.write(BLOCK0['vmdk_descriptor'][0])
        res = run([t.img, 'info', img], rc=1, cwd=d)
        check("Image is in 'vmdk' format, which is not supported" in res.err,
              'a vmdk descriptor was not refused\n' + res.describe())
        res = run([t.img, 'info', '-f', 'raw', img], cwd=d)
        check('file format: raw' in res.out, res.describe())


@runner.case()
def partial_discard_cannot_assemble_a_header():
    """Hole punching zeroes bytes: discarding byte 3 of "QED\\x01" would
    leave a qed header.  QEMU lets byte-granular discards through unvetted
    (guests send whole sectors, an NBD client need not); strata vets the
    block that would result."""
    common.skip_if_qemu_tools('QEMU does not vet partial discards')
    t = common.tools()
    with common.TempDir() as d:
        img = os.path.join(d, 'r.img')
        blank_raw(img, 65536)
        res = run([t.io, '-c', 'write -P 0x01 3 1', '-c', 'write -P 0x51 0 1',
                   '-c', 'write -P 0x45 1 1', '-c', 'write -P 0x44 2 1',
                   '-c', 'discard 3 1', '-c', 'discard 1 1', img],
                  rc=None, cwd=d)
        check('write failed' not in res.out and
              'discard failed: Operation not permitted' in res.out and
              'discard 1/1 bytes at offset 1' in res.out, res.describe())
        check(read_file(img)[:4] == b'Q\0D\x01',
              'block 0 is %r' % read_file(img)[:4])


def overlay_with_unformatted_backing(d, base):
    """qemu-img 7.2 insists on a backing format; drop the extension that
    records it so the base is probed when the overlay is opened."""
    t = common.tools()
    ov = os.path.join(d, 'ov.qcow2')
    run([t.qemu_img, 'create', '-q', '-f', 'qcow2', '-b', base, '-F', 'raw',
         ov, '1M'])
    with open(ov, 'r+b') as f:
        h = f.read(4096)
        hlen = struct.unpack('>I', h[100:104])[0]
        ext = struct.unpack('>I', h[hlen:hlen + 4])[0]
        check(ext == 0xE2792ACA, 'backing format extension not first')
        f.seek(hlen)
        f.write(b'\0\0\0\0')        # end of extensions
    res = run([t.qemu_img, 'info', ov])
    check('backing file format' not in res.out,
          'backing format still recorded\n' + res.describe())
    return ov


@runner.case()
def commit_into_probed_raw_base():
    t = common.tools()
    with common.TempDir() as d:
        hdr = make_header(d)
        base = os.path.join(d, 'base.img')
        blank_raw(base)
        ov = overlay_with_unformatted_backing(d, base)
        run([t.qemu_io, '-f', 'qcow2', '-c', 'write -s %s 0 1024' % hdr,
             '-c', 'write -P 0x77 65536 4096', ov])
        before = read_file(base)
        res = run([t.img, 'commit', ov], rc=1, cwd=d)
        check('Operation not permitted' in res.err,
              'commit into a probed raw base wrote a header to block 0\n' +
              res.describe())
        check(read_file(base)[:512] == before[:512],
              'block 0 of the base changed')
        res = run([t.qemu_img, 'info', base])
        check('file format: raw' in res.out, 'base no longer raw\n' +
              res.describe())


@runner.case()
def probing_rules():
    t = common.tools()
    with common.TempDir() as d:
        hdr = make_header(d)
        cases = [('empty', b'', 'raw'),
                 ('tiny', b'x' * 7, 'raw'),
                 ('qcow2', read_file(os.path.join(d, 'hdr.qcow2')), 'qcow2'),
                 ('magic_only', read_file(hdr)[:4], 'raw')]
        for name, data, fmt in cases:
            path = os.path.join(d, name + '.img')
            with open(path, 'wb') as f:
                f.write(data)
            ours = run([t.img, 'info', '--output=json', path], rc=None, cwd=d)
            theirs = run([t.qemu_img, 'info', '--output=json', path],
                         rc=None, cwd=d)
            check(ours.rc == theirs.rc, '%s: exit %s, qemu-img %s\n%s\n%s'
                  % (name, ours.rc, theirs.rc, ours.describe(),
                     theirs.describe()))
            if theirs.rc == 0:
                check('"format": "%s"' % fmt in ours.out,
                      '%s: not probed as %s\n%s' % (name, fmt,
                                                    ours.describe()))


if __name__ == '__main__':
    sys.exit(runner.main())
