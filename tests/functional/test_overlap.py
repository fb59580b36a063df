#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Metadata overlap protection: guest writes never land on qcow2 metadata.

Images are built with qemu-img/qemu-io and patched byte by byte so that an
L2 entry, an L1 entry or a refcount-table entry points at metadata (the
header, the refcount table, a refcount block, the active L1 table, an L2
table, the snapshot table, a snapshot's L1 or L2 table), or so that a
metadata cluster has refcount 0 and an allocating write follows.  For each:

- `$STRATA_IO -c 'write ...'` fails with EIO ("write failed: Input/output
  error") and prints QEMU's exact message, `qcow2: Marking image as
  corrupt: Preventing invalid write on metadata (overlaps with <type>);
  further corruption events will be suppressed`;
- the file is byte-identical afterwards except for the corrupt bit in the
  header (every metadata byte, and the guest data, unchanged: stricter
  than QEMU, which in some of these cases has already changed refcounts,
  L1 entries or the refcount table when it refuses);
- `qemu-img info` then says `corrupt: true`;
- QEMU, given the same image, marks it corrupt too (same message where
  QEMU hits the same metadata first; the expected type is listed per case).

Then the option itself: overlap-check=none lets the write through,
constant checks only the constant tables, overlap-check.<type>=off turns
one type off, all adds inactive L2 tables, a bad value or conflicting
values are refused with QEMU's texts; with overlap-check=none a refcount-0
header is still never handed out (it used to abort in
qcow2_cache_mark_dirty); and a clean workload with snapshots under
overlap-check=all meets no false alarm and leaves qemu-img check clean.
Finally the virtual size of an image whose header size is not a multiple
of 512 is rounded down exactly as qemu-img info and qemu-io report it.
"""

import os
import shutil
import struct
import sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402

COPIED = 1 << 63
INCOMPAT = 72
CORRUPT = 1 << 1
runner = common.Runner()

MSG = ('qcow2: Marking image as corrupt: Preventing invalid write on '
       'metadata (overlaps with %s); further corruption events will be '
       'suppressed')

_bases = {}


def base(kind):
    """Bytes of a base image built by QEMU's tools (cached per run).

    fresh: 64M, clusters 0 header, 1 refcount table, 2 refcount block,
    3 L1.  written: plus 64K written at 0 (4 L2 table, 5 data).  snap:
    written, then snapshot s1, then 4K written at 0 (the L2 table is
    copied; offsets read from the image)."""
    if kind not in _bases:
        d = _tmp.join('base-' + kind)
        os.makedirs(d, exist_ok=True)
        p = os.path.join(d, 'b.qcow2')
        q = common.tools()
        common.run([q.qemu_img, 'create', '-q', '-f', 'qcow2', p, '64M'])
        if kind in ('written', 'snap'):
            common.run([q.qemu_io, '-f', 'qcow2', '-c', 'write -P 0x11 0 64k', p])
        if kind == 'snap':
            common.run([q.qemu_img, 'snapshot', '-c', 's1', p])
            common.run([q.qemu_io, '-f', 'qcow2', '-c', 'write -P 0x33 0 4k', p])
        with open(p, 'rb') as f:
            _bases[kind] = f.read()
    return bytearray(_bases[kind])


def be(fmt, data, off):
    return struct.unpack_from('>' + fmt, data, off)[0]


def snap_layout(d):
    """(active L2, snapshot table, snapshot L1, old L2 now only in s1)."""
    l1 = be('Q', d, 40)
    active_l2 = be('Q', d, l1) & 0x00fffffffffffe00
    sntab = be('Q', d, 64)
    sn_l1 = be('Q', d, sntab)
    old_l2 = be('Q', d, sn_l1) & 0x00fffffffffffe00
    return active_l2, sntab, sn_l1, old_l2


# name: (base, patch(d) -> None, guest write, our overlap type, QEMU's type
# or None when QEMU names another type first, extra open options)
def p_put(fmt, off, value):
    return lambda d: struct.pack_into('>' + fmt, d, off, value)


def p_snap_l2(which):
    def patch(d):
        active_l2, sntab, sn_l1, old_l2 = snap_layout(d)
        target = {'sntab': sntab, 'sn_l1': sn_l1, 'old_l2': old_l2}[which]
        struct.pack_into('>Q', d, active_l2, target | COPIED)
    return patch


W0 = 'write -P 0x22 0 4k'
# what both say when the free cluster found for a new L2 table is the header
L2_AT_0 = 'Preventing invalid allocation of L2 table at offset 0'
W64 = 'write -P 0x22 64k 4k'
CASES = [
    # an L2 entry (guest data cluster) pointing at metadata
    ('l2_entry_to_refcount_table', 'written', p_put('Q', 0x40000, 0x10000 | COPIED), W0,
     'refcount table', 'refcount table'),
    ('l2_entry_to_refcount_block', 'written', p_put('Q', 0x40000, 0x20000 | COPIED), W0,
     'refcount block', 'refcount block'),
    ('l2_entry_to_l1_table', 'written', p_put('Q', 0x40000, 0x30000 | COPIED), W0,
     'active L1 table', 'active L1 table'),
    ('l2_entry_to_itself', 'written', p_put('Q', 0x40000, 0x40000 | COPIED), W0,
     'active L2 table', 'active L2 table'),
    ('l2_entry_to_snapshot_table', 'snap', p_snap_l2('sntab'), W0,
     'snapshot table', 'snapshot table'),
    ('l2_entry_to_snapshot_l1', 'snap', p_snap_l2('sn_l1'), W0,
     'inactive L1 table', 'inactive L1 table'),
    # an L1 entry (L2 table) pointing at metadata
    ('l1_entry_to_refcount_table', 'written', p_put('Q', 0x30000, 0x10000 | COPIED), W0,
     'refcount table', 'refcount table'),
    ('l1_entry_to_refcount_table_shared', 'written', p_put('Q', 0x30000, 0x10000), W0,
     'refcount table', 'refcount table'),
    ('l1_entry_to_refcount_block', 'written', p_put('Q', 0x30000, 0x20000 | COPIED), W0,
     'refcount block', None),     # QEMU: active L2 table, after writing
    ('l1_entry_to_l1_table', 'written', p_put('Q', 0x30000, 0x30000 | COPIED), W0,
     'active L1 table', 'active L1 table'),
    # a refcount-table entry (refcount block) pointing at metadata
    ('refcount_entry_to_refcount_table', 'written', p_put('Q', 0x10000, 0x10000), W64,
     'qcow2_header', 'qcow2_header'),
    ('refcount_entry_to_l1_table', 'written', p_put('Q', 0x10000, 0x30000), W64,
     'refcount table', 'refcount table'),
    ('refcount_entry_to_l2_table', 'written', p_put('Q', 0x10000, 0x40000), W64,
     'refcount block', None),     # QEMU: refcount table
    # metadata with refcount 0, then an allocating write
    ('refcount0_header', 'written', p_put('H', 0x20000, 0), W64,
     'qcow2_header', 'qcow2_header'),
    ('refcount0_refcount_table', 'written', p_put('H', 0x20002, 0), W64,
     'refcount table', 'refcount table'),
    ('refcount0_refcount_block', 'written', p_put('H', 0x20004, 0), W64,
     'refcount block', 'refcount block'),
    ('refcount0_l1_table', 'written', p_put('H', 0x20006, 0), W64,
     'active L1 table', 'active L1 table'),
    ('refcount0_l2_table', 'written', p_put('H', 0x20008, 0), W64,
     'active L2 table', 'active L2 table'),
    ('refcount0_l1_table_new_l2', 'fresh', p_put('H', 0x20006, 0), W0,
     'active L1 table', 'active L1 table'),
    ('refcount0_refcount_table_new_l2', 'fresh', p_put('H', 0x20002, 0), W0,
     'refcount table', 'refcount table'),
    ('refcount0_header_new_l2', 'fresh', p_put('H', 0x20000, 0), W0,
     L2_AT_0, L2_AT_0),           # test 137's case
]


def build(name, kind, patch):
    d = base(kind)
    patch(d)
    p = _tmp.join(name + '.qcow2')
    with open(p, 'wb') as f:
        f.write(d)
    return p, bytes(d)


def image_opts(path, opts):
    return ['--image-opts', 'driver=qcow2,file.filename=%s%s' % (path, opts)]


def io_write(io, path, cmd, opts=''):
    argv = [io] + (image_opts(path, opts) if opts else ['-f', 'qcow2']) + ['-c', cmd]
    if not opts:
        argv.append(path)
    return common.run(argv, rc=None)


def assert_refused(res, typ, who):
    common.check(res.rc != 0 and 'write failed: Input/output error' in res.text,
                 '%s: the write was not refused with EIO\n%s' % (who, res.describe()))
    want = typ if typ.startswith('Preventing') else MSG % typ
    common.check(want in res.err,
                 '%s: expected %r\n%s' % (who, want, res.describe()))


def only_corrupt_bit_changed(before, path):
    with open(path, 'rb') as f:
        after = f.read()
    common.check(len(after) == len(before),
                 'file length changed: %d -> %d' % (len(before), len(after)))
    want = bytearray(before)
    struct.pack_into('>Q', want, INCOMPAT, be('Q', before, INCOMPAT) | CORRUPT)
    if after != bytes(want):
        diff = [i for i in range(len(after)) if after[i] != want[i]]
        common.fail('%d bytes changed besides the corrupt bit, first at %s'
                    % (len(diff), ', '.join(hex(i) for i in diff[:8])))


def run_case(name, kind, patch, cmd, ours, qemus):
    t = common.tools()
    path, before = build(name, kind, patch)
    res = io_write(t.io, path, cmd)
    if not t.io_is_qemu:
        assert_refused(res, ours, 'tool under test')
        only_corrupt_bit_changed(before, path)
    elif qemus:
        assert_refused(res, qemus, 'tool under test')
    info = common.run([t.qemu_img, 'info', path])
    common.check('corrupt: true' in info.out, 'qemu-img info does not say corrupt\n'
                 + info.describe())
    # QEMU refuses the same image (it may name another type first)
    qpath = _tmp.join(name + '-qemu.qcow2')
    with open(qpath, 'wb') as f:
        f.write(before)
    q = io_write(t.qemu_io, qpath, cmd)
    if qemus:
        assert_refused(q, qemus, 'qemu-io')
    else:
        common.check('qcow2: Marking image as corrupt: Preventing invalid' in q.err,
                     'qemu-io did not flag it\n' + q.describe())


def inactive_l2_only_in_mode_all():
    """An entry pointing at an L2 table only a snapshot uses: QEMU's
    cached mode does not look at inactive L2 tables, mode all does."""
    t = common.tools()
    path, before = build('inactive_l2', 'snap', p_snap_l2('old_l2'))
    res = io_write(t.io, path, W0, ',overlap-check=all')
    assert_refused(res, 'inactive L2 table', 'overlap-check=all')
    if not t.io_is_qemu:
        only_corrupt_bit_changed(before, path)
    path, before = build('inactive_l2_cached', 'snap', p_snap_l2('old_l2'))
    res = io_write(t.io, path, W0, ',overlap-check=cached')
    common.check(res.rc == 0, 'cached mode must not check inactive L2 tables\n'
                 + res.describe())


def mode_none_writes_through():
    t = common.tools()
    path, _ = build('none', 'written', p_put('Q', 0x40000, 0x20000 | COPIED))
    res = io_write(t.io, path, W0, ',overlap-check=none')
    common.check(res.rc == 0 and 'Marking image as corrupt' not in res.err,
                 'overlap-check=none must not check\n' + res.describe())


def mode_constant():
    t = common.tools()
    path, _ = build('constant_rb', 'written', p_put('Q', 0x40000, 0x20000 | COPIED))
    res = io_write(t.io, path, W0, ',overlap-check=constant')
    common.check(res.rc == 0, 'constant mode does not check refcount blocks\n'
                 + res.describe())
    path, before = build('constant_rt', 'written', p_put('Q', 0x40000, 0x10000 | COPIED))
    res = io_write(t.io, path, W0, ',overlap-check=constant')
    assert_refused(res, 'refcount table', 'overlap-check=constant')


def per_type_switch():
    t = common.tools()
    path, _ = build('type_off', 'written', p_put('Q', 0x40000, 0x10000 | COPIED))
    res = io_write(t.io, path, W0, ',overlap-check.refcount-table=off')
    common.check(res.rc == 0, 'overlap-check.refcount-table=off must let it '
                 'through\n' + res.describe())
    path, _ = build('type_on', 'written', p_put('Q', 0x40000, 0x20000 | COPIED))
    res = io_write(t.io, path, W0,
                   ',overlap-check=none,overlap-check.refcount-block=on')
    assert_refused(res, 'refcount block', 'overlap-check.refcount-block=on')


def bad_option_values():
    """Same texts as qemu-io for a bad mode and for conflicting values."""
    t = common.tools()
    path = _tmp.join('opts.qcow2')
    with open(path, 'wb') as f:
        f.write(base('fresh'))
    for opts in (',overlap-check=sometimes',
                 ',overlap-check=none,overlap-check.template=all'):
        ours = io_write(t.io, path, 'read 0 512', opts)
        theirs = io_write(t.qemu_io, path, 'read 0 512', opts)
        common.check(ours.rc != 0 and theirs.rc != 0,
                     'both must refuse %s\n%s\n%s' % (opts, ours.describe(),
                                                      theirs.describe()))
        strip = [common.normalize_prog(r.err, n).strip()
                 for r, n in ((ours, t.io_name), (theirs, 'qemu-io'))]
        common.check(strip[0] == strip[1], 'messages differ for %s:\n  ours:  %r\n'
                     '  qemu:  %r' % (opts, strip[0], strip[1]))


def header_refcount0_mode_none_no_abort():
    """Used to abort in qcow2_cache_mark_dirty: a new L2 table at offset
    0.  Refused cleanly even with the overlap check off; header intact."""
    t = common.tools()
    common.skip_if_qemu_tools('QEMU writes the L2 table over the header')
    path, before = build('hdr0_none', 'fresh', p_put('H', 0x20000, 0))
    res = io_write(t.io, path, W0, ',overlap-check=none')
    common.check(res.rc != 0 and 'write failed: Input/output error' in res.text,
                 'expected EIO\n' + res.describe())
    common.check(L2_AT_0 in res.err,
                 'expected the offset-0 message\n' + res.describe())
    only_corrupt_bit_changed(before, path)


def clean_workload_mode_all():
    """No false alarm: writes around snapshot create/apply/delete with
    every check on; the result is clean for qemu-img check."""
    t = common.tools()
    path = _tmp.join('clean.qcow2')
    common.run([t.qemu_img, 'create', '-q', '-f', 'qcow2', '-o', 'cluster_size=4k',
                path, '8M'])
    opts = ',overlap-check=all'
    rounds = [['write -P 1 0 1M', 'write -P 2 3M 100k'],
              ['write -P 3 512k 1M', 'write -z 4M 1M', 'discard 0 64k'],
              ['write -P 4 0 8M'],
              ['write -P 5 1M 4k']]
    for i, cmds in enumerate(rounds):
        argv = [t.io] + image_opts(path, opts)
        for c in cmds:
            argv += ['-c', c]
        res = common.run(argv, rc=None)
        common.check(res.rc == 0 and 'corrupt' not in res.err,
                     'false alarm in round %d\n%s' % (i, res.describe()))
        common.run([t.img, 'snapshot', '-c', 's%d' % i, path])
        if i == 2:
            common.run([t.img, 'snapshot', '-a', 's0', path])
            common.run([t.img, 'snapshot', '-d', 's1', path])
    common.qemu_check_clean(path)
    info = common.run([t.qemu_img, 'info', path])
    common.check('corrupt: false' in info.out, 'image marked corrupt\n' + info.describe())


def odd_virtual_size():
    """Header size 1000: QEMU's disk is 512 bytes (info and qemu-io)."""
    t = common.tools()
    path = _tmp.join('odd.qcow2')
    d = base('fresh')
    struct.pack_into('>Q', d, 24, 1000)
    with open(path, 'wb') as f:
        f.write(d)
    for tool, qtool, args in ((t.img, t.qemu_img, ['info', '-f', 'qcow2', path]),
                              (t.io, t.qemu_io, ['-f', 'qcow2', '-c', 'length', path])):
        ours = common.run([tool] + args)
        theirs = common.run([qtool] + args)
        line = [ln for ln in ours.out.splitlines() if 'size' in ln or 'bytes' in ln]
        qline = [ln for ln in theirs.out.splitlines() if 'size' in ln or 'bytes' in ln]
        common.check(line[:1] == qline[:1], '%s: %r vs QEMU %r' % (args[0], line, qline))
    res = common.run([t.io, '-f', 'qcow2', '-c', 'read 512 1', path], rc=None)
    common.check(res.rc != 0 or 'read failed' in res.text,
                 'a read past the rounded-down size must fail\n' + res.describe())


def unaligned_refblock():
    """A refcount table entry inside a cluster (iotest 305): the image
    opens and reads as QEMU's does; the first write that needs a
    refcount from that block is refused and marks the image corrupt with
    QEMU's text, the guest's data and the header and refcount table stay
    as they were (the corrupt bit aside), the close reports nothing more,
    and check reports it as qemu-img check does."""
    t = common.tools()
    # iotest 305's image: 1k clusters, 64-bit refcounts (128 per block):
    # block 0 full, one data cluster counted in block 1, two clusters
    # freed before it, so the next allocation reuses them
    p = _tmp.join('unaligned-base.qcow2')
    common.run([t.qemu_img, 'create', '-q', '-f', 'qcow2', '-o',
                'refcount_bits=64,cluster_size=1k', p, '1M'])
    common.run([t.qemu_io, '-f', 'qcow2', '-c', 'write -P 0x11 0 124k',
                '-c', 'discard 121k 1k', '-c', 'discard 123k 1k', p])
    with open(p, 'rb') as f:
        d = bytearray(f.read())
    reft = be('Q', d, 48)
    bad = be('Q', d, reft + 8) + 0x200
    struct.pack_into('>Q', d, reft + 8, bad)
    want = ('qcow2: Marking image as corrupt: Refblock offset %#x unaligned '
            '(reftable index: 0x1); further corruption events will be '
            'suppressed' % bad)
    for who, io in (('tool under test', t.io), ('qemu-io', t.qemu_io)):
        path = _tmp.join('unaligned-rb-%s.qcow2' % who.split()[0])
        with open(path, 'wb') as f:
            f.write(d)
        res = io_write(io, path, 'read -P 0x11 0 120k')
        common.check(res.rc == 0 and 'read 122880/122880' in res.out,
                     '%s: the read must work\n%s' % (who, res.describe()))
        res = io_write(io, path, 'write -P 0x22 121k 3k')
        common.check('write failed: Input/output error' in res.text,
                     '%s: not refused\n%s' % (who, res.describe()))
        common.check(res.err.strip().splitlines() == [want],
                     '%s: expected only %r\n%s' % (who, want, res.describe()))
        # the guest sees what it saw (the data of the refused write may
        # sit in clusters that stay free), and the header says corrupt
        def read_only(cmd):
            return common.run([io, '-r', '-f', 'qcow2', '-c', cmd, path],
                              rc=None)
        res = read_only('read -P 0x11 0 121k')
        common.check(res.rc == 0 and 'read 123904/123904' in res.out,
                     '%s: data changed\n%s' % (who, res.describe()))
        for rng in ('121k 1k', '123k 901k'):
            res = read_only('read -P 0 ' + rng)
            common.check(res.rc == 0 and 'failed' not in res.text,
                         '%s: data changed\n%s' % (who, res.describe()))
        with open(path, 'rb') as f:
            after = f.read()
        common.check(be('Q', after, INCOMPAT) == be('Q', d, INCOMPAT) | CORRUPT,
                     '%s: the corrupt bit is not set' % who)
        common.check(after[:INCOMPAT] == bytes(d[:INCOMPAT]) and
                     after[reft:reft + 1024] == bytes(d[reft:reft + 1024]),
                     '%s: header or refcount table changed' % who)
    # check reports it as qemu-img check does; -r all rebuilds the
    # refcounts (qemu-img's repair marks the image corrupt and fails)
    outs = []
    for who, img in (('tool under test', t.img), ('qemu-img', t.qemu_img)):
        path = _tmp.join('unaligned-rb-check-%s.qcow2' % who.split()[0])
        with open(path, 'wb') as f:
            f.write(d)
        chk = common.run([img, 'check', path], rc=None)
        outs.append((chk.rc, chk.out, chk.err.replace(img, 'PROG')
                     .replace('qemu-img:', 'PROG:')
                     .replace('strata-img:', 'PROG:')))
    common.check(outs[0] == outs[1], 'check differs from qemu-img check:\n'
                 '%r\n%r' % tuple(outs))
    common.check('ERROR refcount block 1 is not cluster aligned' in outs[0][2],
                 'check does not name the entry: %r' % (outs[0],))
    if not t.img_is_qemu:
        path = _tmp.join('unaligned-rb-check-tool.qcow2')
        common.run([t.img, 'check', '-r', 'all', path])
        common.run([t.img, 'check', path])
        res = io_write(t.io, path, 'read -P 0x11 0 120k')
        common.check(res.rc == 0, res.describe())


_tmp = common.TempDir(prefix='strata-overlap-')

for _c in CASES:
    runner.add(_c[0], run_case, *_c)
runner.add('inactive L2 only in mode all', inactive_l2_only_in_mode_all)
runner.add('overlap-check=none writes through', mode_none_writes_through)
runner.add('overlap-check=constant', mode_constant)
runner.add('overlap-check.<type>=on|off', per_type_switch)
runner.add('bad option values (QEMU texts)', bad_option_values)
runner.add('refcount-0 header, overlap-check=none: no abort', header_refcount0_mode_none_no_abort)
runner.add('clean workload with overlap-check=all', clean_workload_mode_all)
runner.add('virtual size not a multiple of 512', odd_virtual_size)
runner.add('unaligned refcount block: corrupt on first use', unaligned_refblock)

if __name__ == '__main__':
    with _tmp:
        sys.exit(runner.main())
