#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Malformed snapshot tables: a clear error, and nothing changes.

Each case takes an image with two snapshots made by qemu-img and breaks
its snapshot table byte by byte (too many entries, a misaligned table, a
table or an entry running past the end of the file, too much extra data,
snapshot L1 tables misaligned, too large, past the end of the file, on
top of each other or of the refcount table; QEMU's iotest 080 cases
among them).  Then every strata-img command that could touch the table
(info, snapshot -l/-c/-d/-a, convert of a snapshot) must fail with the
expected message, or (where only writing is refused) succeed read-only,
and the file must be byte for byte unchanged.  Where QEMU refuses the
same image, our message is QEMU's; `strata-img check` reports bad L1
placements with QEMU's lines.  Version 3 entries without the disk size
are reported and repaired by check as QEMU does.  A table cut off by the
end of the file (QEMU reads the missing part as zeroes) is reported by
check and repaired by check -r all, which drops the entries from the
first one past the end on.
"""

import os
import re
import struct
import sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402
import snaplib  # noqa: E402

MiB = 1 << 20

runner = common.Runner()


def make(d, cs=65536, data_after=True):
    t = common.tools()
    img = os.path.join(d, 'img.qcow2')
    common.run([t.qemu_img, 'create', '-q', '-f', 'qcow2', '-o',
                'cluster_size=%d' % cs, img, '64M'])
    common.run_io(t.qemu_io, img, ['write -P 0x11 0 1M'])
    common.run([t.qemu_img, 'snapshot', '-c', 's1', img])
    common.run_io(t.qemu_io, img, ['write -P 0x22 0 64k'])
    common.run([t.qemu_img, 'snapshot', '-c', 's2', img])
    if data_after:
        common.run_io(t.qemu_io, img, ['write -P 0x33 2M 64k'])
    return img


def entry(img, i):
    return snaplib.read_table(img)[1][i]


# patches: (image) -> None
def nb(v):
    return lambda img: snaplib.poke(img, 60, '>I', v)


def table_offset(v, count=None):
    def p(img):
        snaplib.poke(img, 64, '>Q', v)
        if count is not None:
            snaplib.poke(img, 60, '>I', count)
    return p


def field(i, off, fmt, v):
    return lambda img: snaplib.poke(img, entry(img, i).pos + off, fmt, v)


def l1_of(i, j):
    """Entry i's L1 offset := entry j's."""
    return lambda img: snaplib.poke(img, entry(img, i).pos, '>Q',
                                    entry(img, j).l1_offset)


def l1_on_reftable(i):
    def p(img):
        with open(img, 'rb') as f:
            f.seek(48)
            reft = struct.unpack('>Q', f.read(8))[0]
        snaplib.poke(img, entry(img, i).pos, '>Q', reft)
    return p


# name, patch, cluster size, data written after the snapshots,
#   message of every open, or of read-write opens only (ro_ok),
#   whether QEMU refuses to open it with the same message
CASES = [
    ('too_many_snapshots', nb(65537), 65536, True,
     re.escape('Snapshot table too large'), False, True),
    ('table_misaligned', table_offset(0x1234567890abcdef), 65536, True,
     re.escape('Snapshot table offset invalid'), False, True),
    ('table_past_eof', table_offset(1 << 30, 2), 65536, True,
     re.escape('Snapshot table offset invalid: it lies past the end of the '
               'file'), False, False),
    ('too_much_extra_data', field(0, 36, '>I', 2000), 65536, True,
     re.escape('Too much extra metadata in snapshot table entry 0'), False,
     True),
    ('extra_data_past_eof', field(1, 36, '>I', 1024), 512, False,
     re.escape('Snapshot table entry 1 extends past the end of the file'),
     False, False),
    ('name_past_eof', field(1, 14, '>H', 0xffff), 512, False,
     re.escape('Snapshot table entry 1 extends past the end of the file'),
     False, False),
    ('l1_past_eof', field(0, 0, '>Q', 1 << 40), 65536, True,
     re.escape('Snapshot 1 (s1): Snapshot L1 table offset invalid: it lies '
               'past the end of the file'), True, False),
    ('l1_misaligned', field(0, 0, '>Q', 0x400200), 65536, True,
     re.escape('Snapshot 1 (s1): Snapshot L1 table offset invalid'), True,
     False),
    ('l1_too_large', field(0, 8, '>I', 0x10000000), 65536, True,
     re.escape('Snapshot 1 (s1): Snapshot L1 table too large'), True, False),
    ('l1_overlaps_l1', l1_of(1, 0), 65536, True,
     r"Snapshot 1 \(s1\): its L1 table at 0x[0-9a-f]+ overlaps another "
     r"snapshot's L1 table", True, False),
    ('l1_on_refcount_table', l1_on_reftable(0), 65536, True,
     r'Snapshot 1 \(s1\): its L1 table at 0x[0-9a-f]+ overlaps the reference '
     r'count table', True, False),
]


def bad_table(patch, cs, data_after, msg, ro_ok, qemu_same):
    t = common.tools()
    common.skip_if_qemu_tools('these messages are ours')
    with snaplib.ShmDir() as d:
        img = make(d, cs, data_after)
        patch(img)
        before = common.sha256(img)
        pat = re.compile(msg)
        out = os.path.join(d, 'out.raw')
        writes = [['snapshot', '-c', 'x', img], ['snapshot', '-d', 's1', img],
                  ['snapshot', '-a', 's2', img]]
        reads = [['info', img], ['snapshot', '-l', img],
                 ['convert', '-O', 'raw', img, out]]
        for argv in writes + ([] if ro_ok else reads):
            r = common.run([t.img] + argv, rc=1)
            common.check(pat.search(r.err), '%s: message %r, wanted %r'
                         % (' '.join(argv[:2]), r.err, msg))
            common.check(common.sha256(img) == before,
                         '%s changed the image' % ' '.join(argv[:2]))
        if ro_ok:
            # the active image and the table can still be read; loading
            # the broken snapshot is refused
            for argv in reads:
                common.run([t.img] + argv)
            # a snapshot whose own L1 is bad cannot be loaded; one that
            # merely overlaps another structure reads fine
            r = common.run([t.img, 'convert', '--image-opts', '-O', 'raw',
                            'driver=qcow2,file.filename=%s,snapshot.name=s1'
                            % img, out], rc=None)
            common.check(r.rc == ('overlaps' not in msg) and
                         (r.rc == 0 or 'Failed to load snapshot' in r.err),
                         'loading the broken snapshot: ' + r.describe())
        common.check(common.sha256(img) == before, 'the image changed')
        if qemu_same:
            r = common.run([t.qemu_img, 'info', img], rc=1)
            common.check(pat.search(r.err), 'QEMU says %r' % r.err)


for name, patch, cs, data_after, msg, ro_ok, qemu_same in CASES:
    runner.add(name, bad_table, patch, cs, data_after, msg, ro_ok, qemu_same)


def same_check_output(img):
    """strata-img check prints what qemu-img check prints (080)."""
    t = common.tools()
    copy = img + '.q'
    snaplib.sparse_copy(img, copy)
    ours = common.run([t.img, 'check', img], rc=None)
    theirs = common.run([t.qemu_img, 'check', copy], rc=None)
    common.check((ours.rc, ours.out, sorted(ours.err.splitlines())) ==
                 (theirs.rc, theirs.out, sorted(theirs.err.splitlines())),
                 'check differs:\nours:\n%s\nqemu-img:\n%s'
                 % (ours.describe(), theirs.describe()))
    return ours


def truncated_table(patch, cs, data_after, dropped, kept):
    """A table that runs past the end of the file (as a cut-short copy
    leaves it): other opens refuse it with a hint at the repair; check
    reports it and changes nothing; check -r all drops
    the entries from the first one past the end on, and the image then
    opens, qemu-img check is clean, and the active image and the kept
    snapshots read what was written."""
    t = common.tools()
    common.skip_if_qemu_tools('QEMU reads such entries as zeroes')
    with snaplib.ShmDir() as d:
        img = make(d, cs, data_after)
        patch(img)
        before = common.sha256(img)
        first = 2 - dropped
        # any other open refuses, naming the repair
        r = common.run([t.img, 'snapshot', '-c', 'x', img], rc=1)
        common.check('past the end of the file with qemu-img check -r all'
                     in r.err, 'open: ' + r.describe())
        r = common.run([t.img, 'check', img], rc=None)
        common.check(r.rc != 0 and 'ERROR snapshot table entry %d extends '
                     'past the end of the file' % first in r.err and
                     'force-remove all %d snapshots past the end' % dropped
                     in r.err, 'check: ' + r.describe())
        common.check(common.sha256(img) == before, 'check changed the image')
        r = common.run([t.img, 'check', '-r', 'all', img])
        common.check('Discarding %d snapshots past the end of the file'
                     % dropped in r.err, 'repair: ' + r.describe())
        common.qemu_check_clean(img)
        h, entries = snaplib.read_table(img)
        common.check([e.name for e in entries] == kept and
                     (kept or h.snapshots_offset == 0),
                     'left %r at %#x' % ([e.name for e in entries],
                                         h.snapshots_offset))
        common.run_io(t.qemu_io, img, ['read -P 0x22 0 64k',
                                       'read -P 0x11 64k 960k'])
        for name in kept:
            out = os.path.join(d, name + '.raw')
            common.run([t.qemu_img, 'convert', '-l', name, '-O', 'raw', img,
                        out])
            common.run_io(t.qemu_io, out, ['read -P 0x11 0 1M'], fmt='raw')


runner.add('truncated_table_repaired_whole', truncated_table,
           table_offset(1 << 30, 2), 65536, True, 2, [])
runner.add('truncated_table_repaired_last_entry', truncated_table,
           field(1, 14, '>H', 0xffff), 512, False, 1, ['s1'])


@runner.case('check_reports_bad_l1s_like_qemu')
def check_reports_bad_l1s_like_qemu():
    for patch, line in ((field(0, 0, '>Q', 0x400200),
                         'ERROR snapshot 1 (s1) l1_offset=0x400200: L1 table '
                         'is not cluster aligned; snapshot table entry '
                         'corrupted'),
                        (field(0, 8, '>I', 0x10000000),
                         'ERROR snapshot 1 (s1) l1_size=0x10000000: L1 table '
                         'is too large; snapshot table entry corrupted')):
        with snaplib.ShmDir() as d:
            img = make(d)
            patch(img)
            r = same_check_output(img)
            common.check(r.rc == 2 and line in r.err, 'check: %s'
                         % r.describe())


@runner.case('incomplete_v3_entry')
def incomplete_v3_entry():
    """extra data shorter than 16 bytes in a version 3 image: QEMU opens
    it, check calls it corrupt, -r all rewrites the table; so do we."""
    t = common.tools()
    with snaplib.ShmDir() as d:
        img = make(d)
        h, entries = snaplib.read_table(img)
        blob = b''
        for e in entries:
            blob += b'\0' * (((len(blob) + 7) & ~7) - len(blob))
            ex = e.extra[:8] if e.name == 's1' else e.extra
            blob += struct.pack('>QIHHIIQII', e.l1_offset, e.l1_size,
                                e.id_len, e.name_len, e.date_sec, e.date_nsec,
                                e.vm_clock, e.vm_state_size, len(ex))
            blob += ex + e.id.encode() + e.name.encode()
        snaplib.poke_bytes(img, h.snapshots_offset, blob)
        r = same_check_output(img)
        common.check(r.rc == 2 and 'ERROR snapshot table entry 0 is '
                     'incomplete' in r.err, 'check: %s' % r.describe())
        common.run([t.img, 'snapshot', '-l', img])
        r = common.run([t.img, 'check', '-r', 'all', img])
        common.check('Repairing snapshot table entry 0 is incomplete' in r.err,
                     'repair: %s' % r.describe())
        common.qemu_check_clean(img)
        e = snaplib.read_table(img)[1][0]
        common.check(e.extra_size == 24 and e.disk_size == 64 * MiB and
                     e.icount == (1 << 64) - 1,
                     'repaired entry: extra %d disk %s icount %s'
                     % (e.extra_size, e.disk_size, e.icount))


@runner.case('full_table')
def full_table():
    """65536 snapshots (a table QEMU accepts): listed, the 65537th create
    refused with a clear error and nothing changed, a delete works."""
    t = common.tools()
    with snaplib.ShmDir() as d:
        img = os.path.join(d, 'img.qcow2')
        common.run([t.qemu_img, 'create', '-q', '-f', 'qcow2', img, '1M'])
        h = snaplib.Header(img)
        cs = h.cluster_size
        # entries: no L1 (an empty disk), 8-byte aligned, ids "1".."65536"
        blob = bytearray()
        for i in range(65536):
            blob += b'\0' * (((len(blob) + 7) & ~7) - len(blob))
            sid = str(i + 1).encode()
            name = ('n%d' % i).encode()
            blob += struct.pack('>QIHHIIQII', 0, 0, len(sid), len(name),
                                1700000000, 0, 0, 0, 24)
            blob += struct.pack('>QQQ', 0, 1 * MiB, 0) + sid + name
        # the table goes into new clusters at the end; their refcounts
        # (16 bits each, in the first refcount block) are set to 1
        with open(img, 'rb') as f:
            f.seek(48)
            reft = struct.unpack('>Q', f.read(8))[0]
            f.seek(reft)
            rb = struct.unpack('>Q', f.read(8))[0]
        size = os.path.getsize(img)
        start = (size + cs - 1) // cs * cs
        n = (len(blob) + cs - 1) // cs
        with open(img, 'r+b') as f:
            f.seek(start)
            f.write(bytes(blob))
            for c in range(start // cs, start // cs + n):
                f.seek(rb + 2 * c)
                f.write(struct.pack('>H', 1))
        snaplib.poke(img, 60, '>I', 65536)
        snaplib.poke(img, 64, '>Q', start)
        # (qemu-img takes seconds over a table this size: it checks once,
        # at the end)
        common.run([t.img, 'check', img])
        r = common.run([t.img, 'snapshot', '-l', img])
        common.check(r.out.count('\n') == 65536 + 2, 'listed %d lines'
                     % r.out.count('\n'))
        before = common.sha256(img)
        r = common.run([t.img, 'snapshot', '-c', 'one-more', img], rc=1)
        common.check('Too many snapshots' in r.err, 'message: ' + r.err)
        common.check(common.sha256(img) == before, 'the image changed')
        common.run([t.img, 'snapshot', '-d', 'n5', img])
        h, entries = snaplib.read_table(img)
        common.check(len(entries) == 65535 and
                     'n5' not in [e.name for e in entries[:10]],
                     'not deleted')
        snaplib.check_both_clean(img, 'after deleting from a full table')


if __name__ == '__main__':
    sys.exit(runner.main())
