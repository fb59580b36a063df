#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Internal snapshots are interchangeable with qemu-img's, both ways.

Ours to QEMU: for several cluster sizes, refcount widths and both qcow2
versions, data written by $STRATA_IO, snapshots created by `$STRATA_IMG
snapshot -c`; then `qemu-img snapshot -l` lists them, `qemu-img convert -l
snapshot.name=` reads each one's content, `qemu-img snapshot -a` applies and
`-d` deletes them, with `qemu-img check` (and ours) clean after every step
and the table bytes as QEMU writes them (24 bytes of extra data, disk size,
icount 0).

QEMU to ours: snapshots made by qemu-img are listed by us with the very
same `snapshot -l` and `info` output (text and JSON), read back through
our snapshot.name= open option, applied and deleted by us, clean after
every step.

Also: unknown extra data in a QEMU table survives our rewrites, short
(version 2) entries are upgraded as QEMU does, the ID-before-name lookup of
-a and the name-only lookup of -d, the error texts qemu-img prints where we
behave the same, and the names we refuse where QEMU does not (empty,
duplicate, longer than 255 bytes).
"""

import json
import os
import struct
import sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402
import snaplib  # noqa: E402
import workload  # noqa: E402

MiB = 1 << 20

# name, create options, virtual size, cluster size
CONFIGS = [
    ('v3-64k', 'cluster_size=65536', 24 * MiB, 65536),
    ('v3-4k-rb64', 'cluster_size=4096,refcount_bits=64', 8 * MiB + 1536, 4096),
    ('v3-512-rb8', 'cluster_size=512,refcount_bits=8', 3 * MiB, 512),
    ('v2-64k', 'compat=0.10,cluster_size=65536', 16 * MiB, 65536),
    ('v3-2m', 'cluster_size=2097152', 20 * MiB + 512, 2 * MiB),
]

runner = common.Runner()


def write_ops(rnd, size, cs, n):
    return workload.gen_ops(rnd, size, cs, n)


def apply(tool, img, model, ops):
    for part in common.chunks(ops, 150):
        common.run_io(tool, img, [workload.io_cmd(op) for op in part])
    workload.apply_model(model, ops)


def verify_active(d, img, model, by):
    got = os.path.join(d, 'active.raw')
    snaplib.active_raw(img, got, by=by)
    snaplib.equal_raw(got, model, os.path.join(d, 'model.raw'))


def verify_snapshot(d, img, name, model, by):
    got = os.path.join(d, 'snap.raw')
    snaplib.snapshot_raw(img, name, got, by=by)
    snaplib.equal_raw(got, model, os.path.join(d, 'model.raw'))


def ours_to_qemu(opts, size, cs, seed):
    t = common.tools()
    rnd = common.rng(seed)
    with snaplib.ShmDir() as d:
        img = os.path.join(d, 'img.qcow2')
        common.run([t.qemu_img, 'create', '-q', '-f', 'qcow2', '-o', opts,
                    img, str(size)])
        model = common.IntervalMap(size)
        apply(t.io, img, model, write_ops(rnd, size, cs, 40))
        common.run([t.img, 'snapshot', '-c', 's1', img])
        m1 = model.copy()
        snaplib.check_both_clean(img, 'after creating s1')
        apply(t.io, img, model, write_ops(rnd, size, cs, 40))
        common.run([t.img, 'snapshot', '-c', 's2', img])
        m2 = model.copy()
        apply(t.io, img, model, write_ops(rnd, size, cs, 30))
        snaplib.check_both_clean(img, 'after creating s2 and writing')
        common.check(snaplib.qemu_list(img) == [('1', 's1'), ('2', 's2')],
                     'qemu-img lists %s' % snaplib.qemu_list(img))
        # the table as QEMU writes it
        h, entries = snaplib.read_table(img)
        for e in entries:
            common.check(e.extra_size == 24 and e.disk_size == size and
                         e.icount == 0 and e.vm_state_size == 0 and
                         e.l1_offset % cs == 0,
                         'entry %s: extra %d, disk size %s, icount %s'
                         % (e.name, e.extra_size, e.disk_size, e.icount))
        # QEMU reads every state
        verify_snapshot(d, img, 's1', m1, 'qemu')
        verify_snapshot(d, img, 's2', m2, 'qemu')
        verify_active(d, img, model, 'qemu')
        # QEMU applies and deletes them
        common.run([t.qemu_img, 'snapshot', '-a', 's1', img])
        snaplib.check_both_clean(img, 'after qemu-img applied s1')
        verify_active(d, img, m1, 'qemu')
        common.run([t.qemu_img, 'snapshot', '-d', 's2', img])
        snaplib.check_both_clean(img, 'after qemu-img deleted s2')
        common.check(snaplib.names(img) == ['s1'], 'list: %s'
                     % snaplib.names(img))
        verify_snapshot(d, img, 's1', m1, 'ours')
        common.run([t.qemu_img, 'snapshot', '-d', 's1', img])
        snaplib.check_both_clean(img, 'after qemu-img deleted s1')
        h = snaplib.Header(img)
        common.check(h.nb_snapshots == 0 and h.snapshots_offset == 0,
                     'empty table: nb %d offset %#x'
                     % (h.nb_snapshots, h.snapshots_offset))
        verify_active(d, img, m1, 'qemu')


def qemu_to_ours(opts, size, cs, seed):
    t = common.tools()
    rnd = common.rng(seed)
    with snaplib.ShmDir() as d:
        img = os.path.join(d, 'img.qcow2')
        common.run([t.qemu_img, 'create', '-q', '-f', 'qcow2', '-o', opts,
                    img, str(size)])
        model = common.IntervalMap(size)
        apply(t.qemu_io, img, model, write_ops(rnd, size, cs, 40))
        common.run([t.qemu_img, 'snapshot', '-c', 's1', img])
        m1 = model.copy()
        apply(t.qemu_io, img, model, write_ops(rnd, size, cs, 40))
        common.run([t.qemu_img, 'snapshot', '-c', 's2', img])
        m2 = model.copy()
        apply(t.qemu_io, img, model, write_ops(rnd, size, cs, 30))
        # the same listing, to the byte
        ours = common.run([t.img, 'snapshot', '-l', img]).out
        theirs = common.run([t.qemu_img, 'snapshot', '-l', img]).out
        common.check(ours == theirs, 'snapshot -l differs:\nours:\n%s\n'
                     'qemu-img:\n%s' % (ours, theirs))
        # we read every state
        verify_snapshot(d, img, 's1', m1, 'ours')
        verify_snapshot(d, img, 's2', m2, 'ours')
        verify_active(d, img, model, 'ours')
        # we apply and delete them
        common.run([t.img, 'snapshot', '-a', 's2', img])
        snaplib.check_both_clean(img, 'after we applied s2')
        verify_active(d, img, m2, 'qemu')
        active = m2.copy()
        apply(t.io, img, active, write_ops(rnd, size, cs, 20))
        snaplib.check_both_clean(img, 'after writing over the applied s2')
        verify_active(d, img, active, 'qemu')
        common.run([t.img, 'snapshot', '-d', 's1', img])
        snaplib.check_both_clean(img, 'after we deleted s1')
        common.check(snaplib.names(img) == ['s2'], 'list: %s'
                     % snaplib.names(img))
        verify_snapshot(d, img, 's2', m2, 'qemu')
        common.run([t.img, 'snapshot', '-d', 's2', img])
        snaplib.check_both_clean(img, 'after we deleted s2')
        verify_active(d, img, active, 'qemu')


for i, (name, opts, size, cs) in enumerate(CONFIGS):
    runner.add('ours_to_qemu/' + name, ours_to_qemu, opts, size, cs, 100 + i)
    runner.add('qemu_to_ours/' + name, qemu_to_ours, opts, size, cs, 200 + i)


def make_with_snapshots(d, names_, opts='cluster_size=65536'):
    t = common.tools()
    img = os.path.join(d, 'img.qcow2')
    common.run([t.qemu_img, 'create', '-q', '-f', 'qcow2', '-o', opts, img,
                '64M'])
    for i, n in enumerate(names_):
        common.run_io(t.qemu_io, img, ['write -P 0x%02x 0 64k' % (0x10 + i)])
        common.run([t.qemu_img, 'snapshot', '-c', n, img])
    return img


@runner.case('compressed_clusters')
def compressed_clusters():
    """Compressed clusters (qemu-img convert -c) are shared and released
    by byte range: refcounts right after create, apply, delete."""
    t = common.tools()
    with snaplib.ShmDir() as d:
        raw = os.path.join(d, 'src.raw')
        img = os.path.join(d, 'img.qcow2')
        model = common.IntervalMap(8 * MiB)
        with open(raw, 'wb') as f:
            f.truncate(8 * MiB)
        for i in range(0, 8, 2):
            with open(raw, 'r+b') as f:
                f.seek(i * MiB)
                f.write(bytes([0x40 + i]) * MiB)
            model.set(i * MiB, MiB, 0x40 + i)
        common.run([t.qemu_img, 'convert', '-c', '-f', 'raw', '-O', 'qcow2',
                    '-o', 'cluster_size=4096', raw, img])
        common.run([t.img, 'snapshot', '-c', 'c1', img])
        snaplib.check_both_clean(img, 'after creating c1')
        m1 = model.copy()
        apply(t.io, img, model, [('write', 512, 8192, 0x77),
                                 ('zero', MiB, 64 * 1024)])
        common.run([t.img, 'snapshot', '-c', 'c2', img])
        common.run([t.img, 'snapshot', '-a', 'c1', img])
        snaplib.check_both_clean(img, 'after applying c1')
        verify_active(d, img, m1, 'qemu')
        common.run([t.img, 'snapshot', '-d', 'c1', img])
        verify_snapshot(d, img, 'c2', model, 'qemu')
        common.run([t.img, 'snapshot', '-d', 'c2', img])
        snaplib.check_both_clean(img, 'after deleting both')
        verify_active(d, img, m1, 'qemu')


@runner.case('info_text_and_json')
def info_text_and_json():
    t = common.tools()
    with snaplib.ShmDir() as d:
        img = make_with_snapshots(d, ['first', 'second snapshot'])
        common.run([t.img, 'snapshot', '-c', 'third', img])
        ours = common.run([t.img, 'info', img]).out
        theirs = common.run([t.qemu_img, 'info', img]).out
        cut = lambda s: s[s.index('Snapshot list:'):s.index('Format specific')]
        common.check(cut(ours) == cut(theirs), 'info differs:\n%s\n%s'
                     % (cut(ours), cut(theirs)))
        ours = json.loads(common.run([t.img, 'info', '--output=json',
                                      img]).out)
        theirs = json.loads(common.run([t.qemu_img, 'info', '--output=json',
                                        img]).out)
        common.check(ours.get('snapshots') == theirs.get('snapshots'),
                     'json snapshots differ:\n%s\n%s'
                     % (ours.get('snapshots'), theirs.get('snapshots')))


@runner.case('list_icount_none')
def list_icount_none():
    """An entry without icount (-1, as QMP writes) shows a blank column."""
    t = common.tools()
    with snaplib.ShmDir() as d:
        img = make_with_snapshots(d, ['a', 'b'])
        h, entries = snaplib.read_table(img)
        snaplib.poke(img, entries[0].pos + 40 + 16, '>Q', (1 << 64) - 1)
        ours = common.run([t.img, 'snapshot', '-l', img]).out
        theirs = common.run([t.qemu_img, 'snapshot', '-l', img]).out
        common.check(ours == theirs, 'snapshot -l differs:\n%s\n%s'
                     % (ours, theirs))


def rewrite_entry(img, entry, extra, table_len_out=None):
    """Replaces one table entry in place (the table's cluster has room),
    keeping every other entry; returns the new table bytes."""
    h, entries = snaplib.read_table(img)
    blob = b''
    for e in entries:
        blob += b'\0' * (((len(blob) + 7) & ~7) - len(blob))
        ex = extra if e.pos == entry.pos else e.extra
        blob += struct.pack('>QIHHIIQII', e.l1_offset, e.l1_size, e.id_len,
                            e.name_len, e.date_sec, e.date_nsec, e.vm_clock,
                            e.vm_state_size, len(ex))
        blob += ex + e.id.encode() + e.name.encode()
    common.check(len(blob) <= h.cluster_size, 'table grew past its cluster')
    snaplib.poke_bytes(img, h.snapshots_offset, blob)
    return blob


@runner.case('unknown_extra_data_kept')
def unknown_extra_data_kept():
    t = common.tools()
    with snaplib.ShmDir() as d:
        img = make_with_snapshots(d, ['sn1'])
        h, entries = snaplib.read_table(img)
        unknown = b'very important data'.ljust(26, b'\0')
        extra = entries[0].extra[:24] + unknown
        rewrite_entry(img, entries[0], extra)
        common.qemu_check_clean(img)
        common.run([t.img, 'snapshot', '-c', 'sn2', img])
        snaplib.check_both_clean(img, 'after creating sn2')
        h, entries = snaplib.read_table(img)
        common.check(entries[0].extra == extra and entries[0].extra_size == 50,
                     'sn1 extra data changed: %r' % entries[0].extra)
        common.run([t.img, 'snapshot', '-d', 'sn2', img])
        h, entries = snaplib.read_table(img)
        common.check(len(entries) == 1 and entries[0].extra == extra,
                     'sn1 extra data changed: %r' % entries[0].extra)
        snaplib.check_both_clean(img, 'after deleting sn2')


@runner.case('short_entries_upgraded')
def short_entries_upgraded():
    """A version 2 entry without extra data gets QEMU's 24 bytes when we
    rewrite the table: the current disk size and no icount."""
    t = common.tools()
    with snaplib.ShmDir() as d:
        img = make_with_snapshots(d, ['old'], opts='compat=0.10')
        h, entries = snaplib.read_table(img)
        rewrite_entry(img, entries[0], b'')
        common.qemu_check_clean(img)
        common.run([t.img, 'snapshot', '-c', 'new', img])
        snaplib.check_both_clean(img, 'after creating a snapshot')
        h, entries = snaplib.read_table(img)
        e = entries[0]
        common.check(e.extra_size == 24 and e.disk_size == 64 * MiB and
                     e.icount == (1 << 64) - 1,
                     'old entry: extra %d disk %s icount %s'
                     % (e.extra_size, e.disk_size, e.icount))


def same_behaviour(argv_tail, img_factory, expect_rc):
    """Runs `snapshot ARGS` with qemu-img and with us on two copies; the
    outputs (program name aside) and exit codes must agree."""
    t = common.tools()
    results = []
    for tool in (t.qemu_img, t.img):
        with snaplib.ShmDir() as d:
            img = img_factory(d)
            r = common.run([tool, 'snapshot'] + argv_tail + [img], rc=None)
            text = (r.out + r.err).replace(os.path.basename(tool), 'PROG')
            results.append((r.rc, text.replace(img, 'IMG'),
                            snaplib.qemu_list(img)))
    common.check(results[0] == results[1],
                 'qemu-img and we differ on snapshot %s:\n%r\n%r'
                 % (' '.join(argv_tail), results[0], results[1]))
    common.check(results[0][0] == expect_rc, 'exit code %d, wanted %d'
                 % (results[0][0], expect_rc))
    return results[1]


@runner.case('lookup_semantics_like_qemu')
def lookup_semantics_like_qemu():
    factory = lambda d: make_with_snapshots(d, ['A', '1'])
    # -a: ID first (restores "A", id 1); the content tells
    t = common.tools()
    for tool in (t.qemu_img, t.img):
        with snaplib.ShmDir() as d:
            img = factory(d)
            common.run_io(t.qemu_io, img, ['write -P 0x77 0 64k'])
            common.run([tool, 'snapshot', '-a', '1', img])
            common.run_io(t.qemu_io, img, ['read -P 0x10 0 64k'])
    # -d: name only (deletes the one named "1", id 2)
    r = same_behaviour(['-d', '1'], factory, 0)
    common.check(r[2] == [('1', 'A')], 'after -d 1: %s' % (r[2],))
    same_behaviour(['-d', '2'], factory, 1)       # no name "2"
    same_behaviour(['-a', 'nope'], factory, 1)
    same_behaviour(['-l', '-c', 'x'], factory, 1)  # cannot mix


@runner.case('raw_image')
def raw_image():
    t = common.tools()
    with snaplib.ShmDir() as d:
        raw = os.path.join(d, 'r.raw')
        with open(raw, 'wb') as f:
            f.truncate(MiB)
        for tool in (t.qemu_img, t.img):
            r = common.run([tool, 'snapshot', '-l', raw])
            common.check(r.out == '', '-l on raw printed %r' % r.out)
        common.skip_if_qemu_tools('qemu-img says only "-95 (Operation not '
                                  'supported)"')
        r = common.run([t.img, 'snapshot', '-c', 's', raw], rc=1)
        common.check("Could not create snapshot 's'" in r.err and
                     'does not support internal snapshots' in r.err,
                     'unclear error: %s' % r.err)


@runner.case('names_we_refuse')
def names_we_refuse():
    common.skip_if_qemu_tools('qemu-img accepts these names')
    t = common.tools()
    with snaplib.ShmDir() as d:
        img = make_with_snapshots(d, ['taken'])
        before = common.sha256(img)
        for name, why in (('', 'Name is empty'),
                          ('taken', "Snapshot with name 'taken' already "
                                    "exists"),
                          ('x' * 256, 'too long')):
            r = common.run([t.img, 'snapshot', '-c', name, img], rc=1)
            common.check(why in r.err, 'for %r: %s' % (name[:20], r.err))
            common.check(common.sha256(img) == before,
                         'a refused create changed the image')
        # 255 bytes are fine, and QEMU lists them whole
        common.run([t.img, 'snapshot', '-c', 'y' * 255, img])
        common.check(snaplib.names(img) == ['taken', 'y' * 255],
                     'list: %s' % snaplib.names(img))
        snaplib.check_both_clean(img, 'after a 255-byte name')


@runner.case('qemu_duplicates_and_empty_names')
def qemu_duplicates_and_empty_names():
    """Tables QEMU allows us to be handed: duplicate and empty names."""
    t = common.tools()
    with snaplib.ShmDir() as d:
        img = make_with_snapshots(d, ['dup', 'dup', ''])
        ours = common.run([t.img, 'snapshot', '-l', img]).out
        theirs = common.run([t.qemu_img, 'snapshot', '-l', img]).out
        common.check(ours == theirs, 'lists differ:\n%s\n%s' % (ours, theirs))
        common.run([t.img, 'snapshot', '-d', 'dup', img])   # the first one
        common.check(snaplib.qemu_list(img) == [('2', 'dup'), ('3', '')],
                     'list: %s' % snaplib.qemu_list(img))
        common.run([t.img, 'snapshot', '-c', 'next', img])
        common.check(snaplib.qemu_list(img)[-1] == ('4', 'next'),
                     'the next ID is one more than the highest')
        snaplib.check_both_clean(img, 'after delete and create')


@runner.case('snapshot_layout_like_qemu')
def snapshot_layout_like_qemu():
    """The first snapshot -c of an image puts the snapshot's L1 table and
    the snapshot table in the clusters qemu-img puts them in (scripts such
    as qemu-iotests 080 poke at those offsets); only the active tables and
    the refcount structures move, to the clusters after them (issue 15's
    pre-copy), so later snapshots reuse the clusters freed then."""
    t = common.tools()
    layouts = []
    with snaplib.ShmDir() as d:
        for img_tool, io_tool in ((t.img, t.io), (t.qemu_img, t.qemu_io)):
            img = os.path.join(d, 'lay.qcow2')
            if os.path.exists(img):
                os.unlink(img)
            common.run([img_tool, 'create', '-q', '-f', 'qcow2', img, '1G'])
            common.run_io(io_tool, img, ['write -P 0x5a 0 512',
                                         'write -P 0x5b 600M 4k'])
            common.run([img_tool, 'snapshot', '-c', 'one', img])
            with open(img, 'rb') as f:
                hdr = f.read(72)
                nb, table = struct.unpack_from('>IQ', hdr, 60)
                f.seek(table)
                l1_off, l1_size = struct.unpack_from('>QI', f.read(12))
            layouts.append((nb, table, l1_off, l1_size))
            snaplib.check_both_clean(img, 'after the snapshot')
    common.check(layouts[0] == layouts[1],
                 'snapshot layout differs from qemu-img\'s: ours %r, QEMU %r'
                 % tuple(layouts))

if __name__ == '__main__':
    sys.exit(runner.main())
