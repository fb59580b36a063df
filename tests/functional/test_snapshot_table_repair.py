#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Snapshot tables that only check -r all can repair, side by side with
qemu-img (QEMU's iotest 261 cases, built in Python).

Each case breaks a table the way 261 does: an entry with more than 1 KiB
of extra data, a table past QEMU's 64 MiB limit, more than 65536 entries
in the header.  On two identical copies, qemu-img and strata-img must
then say the same thing and end the same way: the refused open (with
QEMU's hint line), check without -r (its "PROG: ERROR ..." line and
hint, exit 1), check -r all (its report, exit 0) and the snapshot list
that is left.
"""

import os
import struct
import sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402
import snaplib  # noqa: E402

MiB = 1 << 20
CS = 65536

runner = common.Runner()


def pack_entry(l1_offset, l1_size, sid, name, extra, extra_size=None,
               date=1700000000):
    """One entry, unpadded; extra_size may claim more than extra holds."""
    if extra_size is None:
        extra_size = len(extra)
    return struct.pack('>QIHHIIQII', l1_offset, l1_size, len(sid), len(name),
                       date, 0, 0, 0, extra_size) + extra + sid + name


def pad8(blob):
    return blob + b'\0' * (((len(blob) + 7) & ~7) - len(blob))


def allocate(img, start, end):
    """Refcount 1 for the clusters of [start, end) (refcount block 0,
    16-bit refcounts), as 261's refblock0_allocate."""
    with open(img, 'r+b') as f:
        f.seek(48)
        reft = struct.unpack('>Q', f.read(8))[0]
        f.seek(reft)
        rb = struct.unpack('>Q', f.read(8))[0]
        for c in range(start // CS, (end + CS - 1) // CS):
            f.seek(rb + 2 * c)
            f.write(struct.pack('>H', 1))


def both(d, img, argv, rc=None):
    """argv (after the program) on a fresh copy of img for each tool;
    returns (qemu's result, ours, qemu's copy, our copy), outputs with
    the program name and file name made equal."""
    t = common.tools()
    res = []
    for tag, tool in (('q', t.qemu_img), ('s', t.img)):
        copy = os.path.join(d, '%s.qcow2' % tag)
        snaplib.sparse_copy(img, copy)
        r = common.run([tool] + argv + [copy], rc=rc, timeout=600)
        name = os.path.basename(tool)
        r.out = r.out.replace(copy, 'IMG')
        r.err = common.normalize_prog(r.err.replace(copy, 'IMG'), name)
        res.append((r, copy))
    return res[0][0], res[1][0], res[0][1], res[1][1]


def same(what, q, s):
    common.check((q.rc, q.out, q.err) == (s.rc, s.out, s.err),
                 '%s differs:\nqemu-img:\n%s\nours:\n%s'
                 % (what, q.describe(), s.describe()))


def same_repair(d, img, expect_err):
    """info refused alike, check alike, check -r all alike; the repaired
    images list the same snapshots.  Returns our repaired copy."""
    t = common.tools()
    q, s, _, _ = both(d, img, ['info'])
    same('info', q, s)
    common.check(s.rc == 1 and expect_err in s.err, 'info: ' + s.describe())
    q, s, _, _ = both(d, img, ['check'])
    same('check', q, s)
    q, s, qcopy, scopy = both(d, img, ['check', '-r', 'all'])
    same('check -r all', q, s)
    common.check(s.rc == 0, 'repair: ' + s.describe())
    lq = common.run([t.qemu_img, 'snapshot', '-l', qcopy]).out
    ls = common.run([t.qemu_img, 'snapshot', '-l', scopy]).out
    common.check(lq.replace(qcopy, 'IMG') == ls.replace(scopy, 'IMG'),
                 'snapshots after repair differ:\nqemu:\n%s\nours:\n%s'
                 % (lq, ls))
    common.qemu_check_clean(scopy)
    return scopy


def three_snapshots(d):
    t = common.tools()
    img = os.path.join(d, 'img.qcow2')
    common.run([t.qemu_img, 'create', '-q', '-f', 'qcow2', img, '64M'])
    for i in range(3):
        common.run_io(t.qemu_io, img, ['write -P %d 0 64k' % (i + 1)])
        common.run([t.qemu_img, 'snapshot', '-c', 's%d' % i, img])
    return img


@runner.case('too_much_extra_mid_table')
def too_much_extra_mid_table():
    """Entry 1 of 3 claims 2000 bytes of extra data (QEMU keeps 1024):
    the open is refused with QEMU's hint; check reports it with QEMU's
    prefixed line; -r all cuts it and keeps the ID and name that follow
    all 2000 bytes (reading on after the kept 1024 would take the extra
    data for them)."""
    with snaplib.ShmDir() as d:
        img = three_snapshots(d)
        h, entries = snaplib.read_table(img)
        blob = b''
        for i, e in enumerate(entries):
            extra = e.extra
            if i == 1:
                extra = e.extra[:24] + bytes(range(256)) * 7 + b'x' * 184
            blob = pad8(blob) + pack_entry(e.l1_offset, e.l1_size,
                                           e.id.encode(), e.name.encode(),
                                           extra, date=e.date_sec)
        snaplib.poke_bytes(img, h.snapshots_offset, blob)
        scopy = same_repair(d, img, 'Too much extra metadata in snapshot '
                            'table entry 1\nYou can force-remove this extra '
                            'metadata with qemu-img check -r all\n')
        names = [e.name for e in snaplib.read_table(scopy)[1]]
        common.check(names == ['s0', 's1', 's2'], 'names: %r' % names)


@runner.case('table_too_big')
def table_too_big():
    """A table past 64 MiB inside the file (261 "Snapshot table too
    big"): refused as too big with the number of overhanging entries
    (not as an entry past the end of the file); -r all drops that entry
    and counts it as a corruption, as qemu-img does."""
    t = common.tools()
    with snaplib.ShmDir() as d:
        img = os.path.join(d, 'img.qcow2')
        common.run([t.qemu_img, 'create', '-q', '-f', 'qcow2', img, '64M'])
        one = pad8(pack_entry(0, 0, b'i' * 65535, b'n' * 65535,
                              struct.pack('>QQQ', 0, 64 * MiB, 0) +
                              b'\0' * 1000))
        count = 64 * MiB // len(one) + 1
        start = 1 * MiB
        with open(img, 'r+b') as f:
            f.seek(start)
            f.write(one * count)
            f.truncate(start + len(one) * count)
        allocate(img, start, start + len(one) * count)
        snaplib.poke(img, 60, '>I', count)
        snaplib.poke(img, 64, '>Q', start)
        scopy = same_repair(d, img, 'Snapshot table is too big\nYou can '
                            'force-remove all 1 overhanging snapshots with '
                            'qemu-img check -r all\n')
        common.check(snaplib.Header(scopy).nb_snapshots == count - 1,
                     'entries left: %d' % snaplib.Header(scopy).nb_snapshots)


@runner.case('table_too_big_once_cut')
def table_too_big_once_cut():
    """261 "Snapshot table too big with one entry with too much extra
    data": QEMU measures the table against its limit with that entry cut
    to 1 KiB, so the entry stays (cut) and only the next one, past the
    limit even so, is dropped: measuring the bytes on disk would drop
    both."""
    t = common.tools()
    with snaplib.ShmDir() as d:
        img = os.path.join(d, 'img.qcow2')
        common.run([t.qemu_img, 'create', '-q', '-f', 'qcow2', img, '64M'])
        known = struct.pack('>QQQ', 0, 64 * MiB, 0)
        one = pad8(pack_entry(0, 0, b'i' * 65535, b'n' * 65535,
                              known + b'\0' * 1000))
        fit = 64 * MiB // len(one)          # entries that fit the limit
        # the cut entry is the last that fits; on disk it crosses it
        big = 1024 + (64 * MiB - fit * len(one)) + 8
        cut = pad8(pack_entry(0, 0, b'i' * 65535, b'n' * 65535,
                              known + b'\0' * (big - 24)))
        blob = one * (fit - 1) + cut + one
        start = 1 * MiB
        with open(img, 'r+b') as f:
            f.seek(start)
            f.write(blob)
            f.truncate(start + len(blob))
        allocate(img, start, start + len(blob))
        snaplib.poke(img, 60, '>I', fit + 1)
        snaplib.poke(img, 64, '>Q', start)
        scopy = same_repair(d, img, 'Too much extra metadata in snapshot '
                            'table entry %d\nYou can force-remove this extra '
                            'metadata with qemu-img check -r all\n'
                            % (fit - 1))
        common.check(snaplib.Header(scopy).nb_snapshots == fit,
                     'entries left: %d' % snaplib.Header(scopy).nb_snapshots)


@runner.case('too_many_snapshots')
def too_many_snapshots():
    """131072 entries in the header (261 "Too many snapshots"): every
    other open refuses the table, check reports QEMU's "ERROR snapshot
    table too large" and hint, -r all keeps the first 65536 entries and
    reclaims what the dropped ones held (one of them an L1 and L2
    table)."""
    t = common.tools()
    with snaplib.ShmDir() as d:
        img = os.path.join(d, 'img.qcow2')
        common.run([t.qemu_img, 'create', '-q', '-f', 'qcow2', '-o',
                    'compat=0.10', img, '64M'])
        start, n = 1 * MiB, 131072
        with open(img, 'r+b') as f:
            f.truncate(start + 40 * n)
        # entry 65536 (dropped) owns an L1 table two clusters before the
        # table and an L2 table one cluster before it
        e = start + 40 * 65536
        snaplib.poke(img, e, '>Q', start - 2 * CS)
        snaplib.poke(img, e + 8, '>I', 1)
        snaplib.poke(img, start - 2 * CS, '>Q', (1 << 63) | (start - CS))
        allocate(img, start - 2 * CS, start + 40 * n)
        snaplib.poke(img, 60, '>I', n)
        snaplib.poke(img, 64, '>Q', start)
        q, s, _, _ = both(d, img, ['info'])
        same('info', q, s)
        q, s, _, _ = both(d, img, ['check'])
        same('check', q, s)
        common.check(s.rc == 1 and 'PROG: ERROR snapshot table too large\n'
                     'You can force-remove all 65536 overhanging snapshots '
                     'with qemu-img check -r all\n' in s.err,
                     'check: ' + s.describe())
        q, s, _, scopy = both(d, img, ['check', '-r', 'all'])
        same('check -r all', q, s)
        common.check(s.rc == 0 and '65536 corruptions' in s.out,
                     'repair: ' + s.describe())
        common.check(snaplib.Header(scopy).nb_snapshots == 65536,
                     'entries left: %d' % snaplib.Header(scopy).nb_snapshots)
        common.qemu_check_clean(scopy)
        r = common.run([t.img, 'info', scopy])
        common.check(r.out.count('\n' + ' ' * 32) == 65536,
                     'info lists %d snapshots' % r.out.count('\n' + ' ' * 32))


if __name__ == '__main__':
    sys.exit(runner.main())
