#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Header bits that protect other writers' data (issue 9).

A qcow2 writer that does not understand an autoclear feature must clear
that bit when it opens the image read-write: the data the bit vouches for
may no longer match the image after our writes.  Compatible feature bits
and header extensions we do not know are someone else's data: they
survive our writes, snapshots and backing-file changes.

Persistent dirty bitmaps (autoclear bit 0) strata does understand: it
keeps them up to date, so the bit stays set and QEMU goes on trusting
them (test_bitmaps.py checks the bits themselves).

Cases: a bitmap written by QEMU, then a strata write (QEMU 7.2 still
lists the bitmap, warns about nothing, and check is clean); a read-only
strata open keeps the bitmaps valid; an unknown compatible bit, an
unknown autoclear bit and an unknown header extension across strata-io
write, strata-img snapshot -c and strata-img rebase -u.
"""

import os
import struct
import sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402
from common import check, run  # noqa: E402

runner = common.Runner()

AUTOCLEAR_BITMAPS = 1 << 0
UNKNOWN_COMPAT = 1 << 40
UNKNOWN_AUTOCLEAR = 1 << 40
UNKNOWN_EXT_MAGIC = 0x5354a7a5
UNKNOWN_EXT_DATA = b'another writer\'s data\x00\x01\x02'
INCONSISTENT = ('a program lacking bitmap support modified this file, so all '
                'bitmaps are now considered inconsistent')

# header fields used here: (offset, struct format)
F_BACKING_OFF = (8, '>Q')
F_BACKING_SIZE = (16, '>I')
F_COMPAT = (80, '>Q')
F_AUTOCLEAR = (88, '>Q')
F_HEADER_LEN = (100, '>I')


def get(path, field):
    off, fmt = field
    with open(path, 'rb') as f:
        f.seek(off)
        return struct.unpack(fmt, f.read(struct.calcsize(fmt)))[0]


def put(path, field, value):
    off, fmt = field
    with open(path, 'r+b') as f:
        f.seek(off)
        f.write(struct.pack(fmt, value))


def extensions(path):
    """[(magic, data)] of the header extensions, in file order."""
    start = get(path, F_HEADER_LEN)
    with open(path, 'rb') as f:
        f.seek(start)
        area = f.read(65536 - start)
    out, pos = [], 0
    while pos + 8 <= len(area):
        magic, length = struct.unpack_from('>II', area, pos)
        if magic == 0:
            return out
        out.append((magic, area[pos + 8:pos + 8 + length]))
        pos += 8 + (length + 7) // 8 * 8
    common.fail('no end of header extensions in %s' % path)


def add_unknown_extension(path):
    """Appends our unknown extension before the end marker; a backing file
    name, which QEMU stores right after the extensions, moves behind it."""
    exts = extensions(path) + [(UNKNOWN_EXT_MAGIC, UNKNOWN_EXT_DATA)]
    blob = b''
    for magic, data in exts:
        blob += struct.pack('>II', magic, len(data))
        blob += data + b'\0' * (-len(data) % 8)
    blob += b'\0' * 8
    start = get(path, F_HEADER_LEN)
    backing = get(path, F_BACKING_OFF)
    with open(path, 'r+b') as f:
        if backing:
            f.seek(backing)
            name = f.read(get(path, F_BACKING_SIZE))
            blob += name
        f.seek(start)
        f.write(blob)
    if backing:
        put(path, F_BACKING_OFF, start + len(blob) - len(name))


def qemu_info(path):
    t = common.tools()
    return run([t.qemu_img, 'info', '-f', 'qcow2', path])


def bitmap_image(d):
    """A QEMU image with persistent bitmap b0 that QEMU has written
    through, so the bitmap holds data and the autoclear bit is set."""
    t = common.tools()
    img = os.path.join(d, 'bm.qcow2')
    run([t.qemu_img, 'create', '-q', '-f', 'qcow2', img, '64M'])
    res = run([t.qemu_img, 'bitmap', '--add', img, 'b0'], rc=None)
    if res.rc != 0:
        raise common.Skip('qemu-img bitmap --add failed: ' + res.err.strip())
    run([t.qemu_io, '-f', 'qcow2', '-c', 'write -P 0x11 0 64k', img])
    info = qemu_info(img)
    check('name: b0' in info.out and 'auto' in info.out,
          'QEMU did not record bitmap b0\n' + info.describe())
    check(get(img, F_AUTOCLEAR) & AUTOCLEAR_BITMAPS,
          'QEMU left the bitmaps autoclear bit clear')
    return img


@runner.case()
def strata_write_keeps_bitmaps_consistent():
    t = common.tools()
    with common.TempDir() as d:
        img = bitmap_image(d)
        common.run_io(t.io, img, ['write -P 0x22 1M 64k'])
        check(get(img, F_AUTOCLEAR) & AUTOCLEAR_BITMAPS,
              'strata cleared the bitmaps autoclear bit: QEMU drops '
              'bitmaps strata keeps up to date')
        info = qemu_info(img)
        check(INCONSISTENT not in info.err and 'name: b0' in info.out and
              'in-use' not in info.out,
              'QEMU does not trust the bitmap after a strata write\n' +
              info.describe())
        common.qemu_check_clean(img)
        # both writers' data is there, for QEMU too
        common.run_io(t.qemu_io, img, ['read -P 0x11 0 64k',
                                       'read -P 0x22 1M 64k'])


@runner.case()
def strata_readonly_open_keeps_bitmaps():
    t = common.tools()
    with common.TempDir() as d:
        img = bitmap_image(d)
        before = open(img, 'rb').read(65536)
        common.run_io(t.io, img, ['read -P 0x11 0 64k'], extra=['-r'])
        check(open(img, 'rb').read(65536) == before,
              'a read-only open changed the header cluster')
        info = qemu_info(img)
        check('name: b0' in info.out and INCONSISTENT not in info.err,
              'the bitmap did not survive a read-only open\n' +
              info.describe())


def poked_image(d, backing=None):
    """A QEMU image (with a backing file if asked) carrying an unknown
    compatible bit, an unknown autoclear bit and an unknown extension."""
    t = common.tools()
    img = os.path.join(d, 'poked.qcow2')
    argv = [t.qemu_img, 'create', '-q', '-f', 'qcow2']
    if backing:
        argv += ['-b', backing, '-F', 'qcow2']
    run(argv + [img, '64M'])
    run([t.qemu_io, '-f', 'qcow2', '-c', 'write -P 0x33 0 128k', img])
    put(img, F_COMPAT, get(img, F_COMPAT) | UNKNOWN_COMPAT)
    put(img, F_AUTOCLEAR, get(img, F_AUTOCLEAR) | UNKNOWN_AUTOCLEAR)
    add_unknown_extension(img)
    # QEMU itself accepts the result, so the poking is well-formed
    common.qemu_check_clean(img)
    return img


def check_foreign_data_kept(img, what):
    check(get(img, F_COMPAT) & UNKNOWN_COMPAT,
          '%s dropped an unknown compatible feature bit' % what)
    check(not get(img, F_AUTOCLEAR) & UNKNOWN_AUTOCLEAR,
          '%s kept an unknown autoclear bit after a read-write open' % what)
    exts = extensions(img)
    check((UNKNOWN_EXT_MAGIC, UNKNOWN_EXT_DATA) in exts,
          '%s dropped or changed an unknown header extension: %r'
          % (what, exts))
    common.qemu_check_clean(img)
    common.run_io(common.tools().qemu_io, img, ['read -P 0x33 0 128k'])


@runner.case()
def unknown_bits_survive_io_write():
    t = common.tools()
    with common.TempDir() as d:
        img = poked_image(d)
        common.run_io(t.io, img, ['write -P 0x44 1M 64k'])
        check_foreign_data_kept(img, 'a write')
        common.run_io(t.qemu_io, img, ['read -P 0x44 1M 64k'])


@runner.case()
def unknown_bits_survive_snapshot():
    t = common.tools()
    with common.TempDir() as d:
        img = poked_image(d)
        run([t.img, 'snapshot', '-c', 's1', img])
        check_foreign_data_kept(img, 'snapshot -c')
        res = run([t.qemu_img, 'snapshot', '-l', img])
        check(' s1 ' in res.out, 'snapshot s1 missing\n' + res.describe())


@runner.case()
def unknown_bits_survive_rebase():
    t = common.tools()
    with common.TempDir() as d:
        for name in ('base1.qcow2', 'base2-with-a-longer-name.qcow2'):
            run([t.qemu_img, 'create', '-q', '-f', 'qcow2', os.path.join(d, name),
                 '64M'])
        img = poked_image(d, backing=os.path.join(d, 'base1.qcow2'))
        run([t.img, 'rebase', '-u', '-F', 'qcow2', '-b',
             os.path.join(d, 'base2-with-a-longer-name.qcow2'), img])
        check_foreign_data_kept(img, 'rebase -u')
        res = run([t.qemu_img, 'info', '--output=json', img])
        check('base2-with-a-longer-name.qcow2' in res.out,
              'backing file not changed\n' + res.describe())


if __name__ == '__main__':
    sys.exit(runner.main())
