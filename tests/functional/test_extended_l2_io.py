#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Guest I/O on images with extended L2 entries, side by side with QEMU.

Images with extended L2 entries (incompatible bit 4) split each cluster
into 32 subclusters, each reading from the host cluster, as zeroes or from
the backing file.  Every case here makes its images with qemu-img and
then runs the same commands through strata's tools and QEMU's:

- random_ops_*: a seeded random sequence of qemu-io writes (whole and
  partial subclusters, across clusters), zero writes with and without
  unmap, discards and compressed writes, over a backing file or not, with
  16 KiB and 64 KiB clusters.  strata-io and qemu-io must print the same
  lines and exit codes; the two images must hold the same guest data,
  report the same allocation per byte range (map: start, length, depth,
  present, zero, data), and pass qemu-img check.
- snapshots_*: the same with internal snapshots created, applied and
  deleted by strata-img and qemu-img between the writes (so writes copy
  clusters a snapshot shares, which QEMU does from the first to the last
  allocated subcluster); every snapshot's data is compared too, and
  strata-img check must pass QEMU's image.
- qemu_written: an image QEMU wrote is read by strata: data, map (host
  offsets included, human and JSON) and check output equal QEMU's.
- invalid_bitmap: a subcluster marked both allocated and zero is QEMU's
  "Invalid cluster entry": the read fails with QEMU's text.
- small_subclusters: clusters under 16 KiB cannot have extended entries;
  the open fails with QEMU's text.
- compressed_reuse_*: a compressed cluster overwritten, a cluster
  allocated, then another compressed write, in one qemu-io session.
  QEMU 7.2 puts the new compressed data into the data cluster it has
  just allocated (qemu-img check: "ERROR OFLAG_COPIED data cluster ...
  refcount=2", with standard entries too); strata's image must stay
  clean and read back right.  So this case, and random_ops_7 whose
  sequence contains the same steps, are skipped when QEMU's tools stand
  in for strata's.
"""

import json
import os
import struct
import sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402
from common import check, run  # noqa: E402

runner = common.Runner()


def create(t, path, size, cs, backing=None):
    args = [t.qemu_img, 'create', '-q', '-f', 'qcow2', '-o',
            'extended_l2=on,cluster_size=%d' % cs]
    if backing:
        args += ['-b', backing, '-F', 'qcow2']
    run(args + [path, str(size)])


def random_ops(rnd, size, cs, n):
    ops = []
    sc = cs // 32
    while len(ops) < n:
        kind = rnd.choice(['w', 'w', 'w', 'z', 'zu', 'd', 'c'])
        off = rnd.randrange(0, size) // 512 * 512
        if kind == 'c':
            off = off // cs * cs
            if off + cs <= size:
                ops.append('write -c -P %d %d %d'
                           % (rnd.randrange(1, 255), off, cs))
            continue
        length = rnd.choice([512, 1024, sc, 2 * sc, cs // 2, cs, cs + 512,
                             3 * cs])
        if rnd.random() < 0.3:
            off = off // sc * sc
        length = min(length, size - off)
        if length <= 0:
            continue
        if kind == 'w':
            ops.append('write -P %d %d %d'
                       % (rnd.randrange(1, 255), off, length))
        elif kind == 'z':
            ops.append('write -z %d %d' % (off, length))
        elif kind == 'zu':
            ops.append('write -z -u %d %d' % (off, length))
        else:
            ops.append('discard %d %d' % (off, length))
    return ops


def io_lines(res, name):
    """What a qemu-io run printed, minus timings and the program name."""
    text = common.normalize_prog(res.out + res.err, name)
    return [ln for ln in text.splitlines() if 'ops;' not in ln]


def allocation(t, img):
    """qemu-img map's JSON without host offsets (layouts may differ), so
    neighbours that only the host offsets kept apart are merged."""
    res = run([t.qemu_img, 'map', '--output=json', '-f', 'qcow2', img])
    out = []
    for e in json.loads(res.out):
        kind = (e['depth'], e['present'], e['zero'], e['data'])
        if out and out[-1][2:] == kind and out[-1][0] + out[-1][1] == e['start']:
            out[-1] = (out[-1][0], out[-1][1] + e['length']) + kind
        else:
            out.append((e['start'], e['length']) + kind)
    return out


def same_data(t, a, b, what):
    res = run([t.qemu_img, 'compare', '-f', 'qcow2', '-F', 'qcow2', a, b],
              rc=None)
    check(res.rc == 0 and 'Images are identical.' in res.out,
          '%s: guest data differs from QEMU\'s\n%s' % (what, res.describe()))


def make_base(t, d, rnd, size):
    base = os.path.join(d, 'base.qcow2')
    run([t.qemu_img, 'create', '-q', '-f', 'qcow2', base, str(size)])
    cmds = []
    for _ in range(8):
        off = rnd.randrange(0, size - 8192) // 512 * 512
        cmds.append('write -P %d %d %d' % (rnd.randrange(1, 255), off,
                                             rnd.randrange(1, 16) * 512))
    common.run_io(t.qemu_io, base, cmds)
    return base


# seeds whose sequence meets QEMU 7.2's compressed-space reuse bug
QEMU_CORRUPTS = {1007}


def random_ops_case(seed):
    t = common.tools()
    if seed in QEMU_CORRUPTS:
        common.skip_if_qemu_tools('QEMU 7.2 leaves a refcount error here '
                                  '(see compressed_reuse)')
    rnd = common.rng(seed)
    cs = rnd.choice([16384, 65536])
    size = rnd.choice([1 << 20, (1 << 20) + 3 * 512 + cs // 2])
    with common.TempDir() as d:
        base = make_base(t, d, rnd, size) if rnd.random() < 0.6 else None
        ops = random_ops(rnd, size, cs, 20)
        out = {}
        for label, io in (('ours', t.io), ('qemu', t.qemu_io)):
            img = os.path.join(d, label + '.qcow2')
            create(t, img, size, cs, base)
            res = run([io, '-f', 'qcow2'] + common.io_args(ops) + [img],
                      rc=None)
            out[label] = (res.rc, io_lines(res, os.path.basename(io)))
        what = 'seed %d (cluster %d, backing %s)\n%s' % (
            seed, cs, bool(base), '\n'.join(ops))
        check(out['ours'] == out['qemu'],
              '%s\noutput differs:\n%s\n%s' % (what, out['ours'],
                                                out['qemu']))
        ours, qemu = os.path.join(d, 'ours.qcow2'), os.path.join(d,
                                                                 'qemu.qcow2')
        common.qemu_check_clean(ours)
        same_data(t, ours, qemu, what)
        a, b = allocation(t, ours), allocation(t, qemu)
        check(a == b, '%s\nmap differs:\n%s\n%s' % (what, a, b))


for _seed in range(1, 13):
    runner.add('random_ops_%d' % _seed, random_ops_case, 1000 + _seed)


def snapshots_case(seed):
    t = common.tools()
    rnd = common.rng(seed)
    cs = rnd.choice([16384, 65536])
    size = 1 << 20
    with common.TempDir() as d:
        base = make_base(t, d, rnd, size) if rnd.random() < 0.5 else None
        steps = []
        for i in range(rnd.randrange(3, 7)):
            steps.append(('io', random_ops(rnd, size, cs,
                                           rnd.randrange(1, 8))))
            prev = 's%d' % max(0, i - 1)
            steps.append(('img', rnd.choice([
                ['snapshot', '-c', 's%d' % i], ['snapshot', '-c', 's%d' % i],
                ['snapshot', '-a', prev], ['snapshot', '-d', prev]])))
        logs = {}
        for label, io, img_tool in (('ours', t.io, t.img),
                                    ('qemu', t.qemu_io, t.qemu_img)):
            img = os.path.join(d, label + '.qcow2')
            create(t, img, size, cs, base)
            log = []
            for kind, what in steps:
                if kind == 'io':
                    res = run([io, '-f', 'qcow2'] + common.io_args(what) +
                              [img], rc=None)
                    log.append((res.rc, io_lines(res, os.path.basename(io))))
                else:
                    res = run([img_tool] + what + [img], rc=None)
                    log.append((res.rc, io_lines(
                        res, os.path.basename(img_tool))))
            logs[label] = log
        what = 'seed %d (cluster %d, backing %s): %s' % (seed, cs, bool(base),
                                                         steps)
        check(logs['ours'] == logs['qemu'],
              '%s\noutputs differ:\n%s\n%s' % (what, logs['ours'],
                                               logs['qemu']))
        ours, qemu = os.path.join(d, 'ours.qcow2'), os.path.join(d,
                                                                 'qemu.qcow2')
        common.qemu_check_clean(ours)
        run([t.img, 'check', '-f', 'qcow2', qemu])
        same_data(t, ours, qemu, what)
        a, b = allocation(t, ours), allocation(t, qemu)
        check(a == b, '%s\nmap differs:\n%s\n%s' % (what, a, b))
        listing = run([t.qemu_img, 'snapshot', '-l', qemu]).out.splitlines()
        for line in listing[2:]:
            name = line.split()[1]
            raws = []
            for label in ('ours', 'qemu'):
                raw = os.path.join(d, label + '.snap.raw')
                run([t.qemu_img, 'convert', '-l', 'snapshot.name=' + name,
                     '-O', 'raw', os.path.join(d, label + '.qcow2'), raw])
                raws.append(raw)
            diff = common.files_equal(*raws)
            check(diff is None, '%s\nsnapshot %s: %s' % (what, name, diff))


for _seed in range(1, 7):
    runner.add('snapshots_%d' % _seed, snapshots_case, 2000 + _seed)


def qemu_written_case(cs):
    t = common.tools()
    sc = cs // 32
    with common.TempDir() as d:
        base = os.path.join(d, 'base.qcow2')
        create(t, base, 1 << 20, cs)
        common.run_io(t.qemu_io, base, ['write -P 1 0 %d' % (3 * cs),
                                        'write -z %d %d' % (sc, sc)])
        img = os.path.join(d, 'top.qcow2')
        create(t, img, 1 << 20, cs, base)
        common.run_io(t.qemu_io, img, [
            'write -P 2 %d %d' % (2 * sc, sc),           # one subcluster
            'write -P 3 %d 512' % (cs + 5 * sc + 512),   # part of one
            'write -z %d %d' % (cs + 9 * sc, 2 * sc),    # zero subclusters
            'write -c -P 4 %d %d' % (4 * cs, cs),        # compressed
            'write -P 5 %d %d' % (6 * cs - sc, 2 * sc),  # across clusters
            'discard %d %d' % (8 * cs, cs)])
        for args in (['map', '--output=json'], ['map'], ['check']):
            ours = run([t.img] + args + ['-f', 'qcow2', img], rc=None)
            qemu = run([t.qemu_img] + args + ['-f', 'qcow2', img], rc=None)
            check((ours.rc, ours.out) == (qemu.rc, qemu.out),
                  '%s differs\n%s\n%s' % (args, ours.describe(),
                                          qemu.describe()))
        raws = []
        for label, tool in (('ours', t.img), ('qemu', t.qemu_img)):
            raw = os.path.join(d, label + '.raw')
            run([tool, 'convert', '-f', 'qcow2', '-O', 'raw', img, raw])
            raws.append(raw)
        diff = common.files_equal(*raws)
        check(diff is None, 'convert to raw: ' + str(diff))
        # the patterns where they were written, through strata-io
        common.run_io(t.io, img, [
            'read -P 2 %d %d' % (2 * sc, sc),
            'read -P 1 %d %d' % (3 * sc, sc),
            'read -P 0 %d %d' % (sc, sc),
            'read -P 3 %d 512' % (cs + 5 * sc + 512),
            'read -P 1 %d 512' % (cs + 5 * sc),
            'read -P 0 %d %d' % (cs + 9 * sc, 2 * sc),
            'read -P 4 %d %d' % (4 * cs, cs),
            'read -P 5 %d %d' % (6 * cs - sc, 2 * sc),
            'read -P 0 %d %d' % (8 * cs, cs)])


for _cs in (16384, 65536):
    runner.add('qemu_written_c%d' % _cs, qemu_written_case, _cs)


def l2_entry_offset(img, index):
    """File offset of L2 entry `index` of the first L2 table."""
    with open(img, 'rb') as f:
        hdr = f.read(48)
        l1_off = struct.unpack('>Q', hdr[40:48])[0]
        f.seek(l1_off)
        l2_off = struct.unpack('>Q', f.read(8))[0] & 0x00fffffffffffe00
    return l2_off + 16 * index


def invalid_bitmap_case():
    t = common.tools()
    with common.TempDir() as d:
        outs = []
        for label, io in (('ours', t.io), ('qemu', t.qemu_io)):
            img = os.path.join(d, label + '.qcow2')
            create(t, img, 1 << 20, 65536)
            common.run_io(t.qemu_io, img, ['write -P 7 0 4k'])
            pos = l2_entry_offset(img, 0) + 8
            with open(img, 'r+b') as f:
                f.seek(pos)
                bitmap = struct.unpack('>Q', f.read(8))[0]
                f.seek(pos)
                # subcluster 0: allocated and zero at once
                f.write(struct.pack('>Q', bitmap | (1 << 32)))
            res = run([io, '-r', '-f', 'qcow2', '-c', 'read 0 4k', img],
                      rc=None)
            outs.append((res.rc, io_lines(res, os.path.basename(io))))
        check(outs[0] == outs[1] and any('Invalid cluster entry found'
                                         in ln for ln in outs[1][1]),
              'ours %s\nqemu %s' % tuple(outs))


runner.add('invalid_bitmap', invalid_bitmap_case)


def small_subclusters_case():
    t = common.tools()
    with common.TempDir() as d:
        img = os.path.join(d, 'x.qcow2')
        run([t.qemu_img, 'create', '-q', '-f', 'qcow2', '-o',
             'cluster_size=8192', img, '1M'])
        with open(img, 'r+b') as f:
            f.seek(72)
            incompat = struct.unpack('>Q', f.read(8))[0]
            f.seek(72)
            f.write(struct.pack('>Q', incompat | (1 << 4)))
        outs = []
        for io in (t.io, t.qemu_io):
            res = run([io, '-f', 'qcow2', '-c', 'read 0 512', img], rc=None)
            outs.append((res.rc, io_lines(res, os.path.basename(io))))
        check(outs[0] == outs[1] and
              any('Unsupported subcluster size: 256' in ln
                  for ln in outs[1][1]), 'ours %s\nqemu %s' % tuple(outs))


runner.add('small_subclusters', small_subclusters_case)


def compressed_reuse_case(opts):
    t = common.tools()
    common.skip_if_qemu_tools('QEMU 7.2 reuses the space of a compressed '
                              'cluster it freed while its next compressed '
                              'write still points into it')
    with common.TempDir() as d:
        img = os.path.join(d, 'x.qcow2')
        run([t.qemu_img, 'create', '-q', '-f', 'qcow2', '-o',
             'cluster_size=16384' + opts, img, '1M'])
        common.run_io(t.io, img, ['write -c -P 1 114688 16384',
                                  'write -P 2 102912 49152',
                                  'write -P 3 1007616 1024',
                                  'write -c -P 4 589824 16384'])
        common.qemu_check_clean(img)
        common.run_io(t.io, img, ['read -P 2 102912 49152',
                                  'read -P 3 1007616 1024',
                                  'read -P 4 589824 16384'])


runner.add('compressed_reuse', compressed_reuse_case, '')
runner.add('compressed_reuse_extended', compressed_reuse_case,
           ',extended_l2=on')


if __name__ == '__main__':
    sys.exit(runner.main())
