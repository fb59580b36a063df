#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Extended L2 entries (incompatible bit 4) in the image tools, beside
QEMU 7.2's qemu-img.

Each case runs the same command through strata-img and qemu-img and
compares what they print (the program name aside) and what they write:

- create_*: `create -o extended_l2=on` with 16 KiB, 64 KiB and 2 MiB
  clusters and preallocation off or metadata (also over a backing file,
  with a data file, refcount widths, lazy refcounts, zstd) makes a file
  identical byte for byte to qemu-img's: header, L1 and L2 tables,
  refcounts, length.  create_metadata_subcluster_tail: a disk size that
  ends inside a cluster; QEMU's file then ends at the end of the last
  subcluster, not of the cluster.  create_falloc_full: the data clusters
  are laid out differently (as without extended entries: QEMU moves the
  refcount table), so it asserts the same header but for the refcount
  table offset, the same file length and guest map, every mapped cluster
  host|COPIED with bitmap 0 (QEMU's preallocation), and a clean check.
  grow_metadata_in_last_cluster: a metadata grow inside the last
  cluster, which the create allocated: the same file as qemu-img's (it
  reaches the end of the new last subcluster).
  create_errors: compat=0.10, clusters under 16 KiB and the options
  judged before them fail with QEMU's text and leave no file.
- info_*: human and JSON `info` print "extended l2: true" (false without
  the feature) exactly as qemu-img does.
- measure_*: `measure -O qcow2 -o extended_l2=on` (sizes from 0 to 1 PiB,
  several cluster sizes, refcount widths, preallocation, --output=json),
  also of an existing image, and its error texts.
- check_clean_*: images QEMU wrote (partial subclusters, zero and
  compressed clusters, discards, an internal snapshot) and images strata
  created: the same report, human and JSON.
- check_damaged_*: an L2 entry poked with Python (a compressed cluster
  with a bitmap, a subcluster both allocated and zero, allocation bits on
  an unallocated entry, unaligned offsets with and without data, the
  reserved bit 0 with COPIED wrong, in the active table and in a
  snapshot's): plain check, -r leaks and -r all print what qemu-img
  prints and exit alike, and leave the same bytes (QEMU also punches
  the clusters its leak repair frees; those alone may differ, and only
  as zeroes in QEMU's copy).
- amend_*: compat=0.10 and extended_l2=on/off are refused with QEMU's
  texts and change nothing; lazy_refcounts, size and refcount_bits=1 on
  an image with extended entries give qemu-img's bytes.

Guest I/O on such images (reads, writes, map) is test_extended_l2_io.py's;
further cases go into CASES below.
Run a subset: test_extended_l2.py NAME-SUBSTRING...
"""

import json
import os
import shutil
import struct
import sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402
from common import check, run  # noqa: E402

runner = common.Runner()

EXTL2 = 1 << 4
COPIED = 1 << 63
COMPRESSED = 1 << 62
OFFSET_MASK = 0x00fffffffffffe00
ALL_ALLOC = 0x00000000ffffffff


# --------------------------------------------------------------------------
# Reading images


def u64(data, off):
    return struct.unpack_from('>Q', data, off)[0]


def u32(data, off):
    return struct.unpack_from('>I', data, off)[0]


def header(path):
    with open(path, 'rb') as f:
        d = f.read(104)
    return {
        'version': u32(d, 4), 'cluster_bits': u32(d, 20), 'size': u64(d, 24),
        'l1_size': u32(d, 36), 'l1_off': u64(d, 40), 'rt_off': u64(d, 48),
        'rt_clusters': u32(d, 56), 'incompat': u64(d, 72),
    }


def l2_tables(path):
    """(L1 index, L2 table offset) of the active tree."""
    h = header(path)
    with open(path, 'rb') as f:
        f.seek(h['l1_off'])
        l1 = f.read(8 * h['l1_size'])
    return [(i, u64(l1, 8 * i) & OFFSET_MASK) for i in range(h['l1_size'])
            if u64(l1, 8 * i) & OFFSET_MASK]


def l2_entries(path):
    """Every (guest cluster, descriptor, bitmap) of the active tree."""
    h = header(path)
    cs = 1 << h['cluster_bits']
    per = cs // 16
    out = []
    with open(path, 'rb') as f:
        for i, off in l2_tables(path):
            f.seek(off)
            t = f.read(cs)
            for j in range(per):
                out.append((i * per + j, u64(t, 16 * j), u64(t, 16 * j + 8)))
    return out


def entry_offset(path, guest_cluster, l1_off=None):
    """File offset of guest_cluster's 16-byte entry (in the active tree,
    or in the L1 table at l1_off)."""
    h = header(path)
    cs = 1 << h['cluster_bits']
    per = cs // 16
    with open(path, 'rb') as f:
        f.seek((l1_off or h['l1_off']) + 8 * (guest_cluster // per))
        l2 = struct.unpack('>Q', f.read(8))[0] & OFFSET_MASK
    check(l2, '%s: no L2 table for guest cluster %d' % (path, guest_cluster))
    return l2 + 16 * (guest_cluster % per)


def peek(path, off):
    with open(path, 'rb') as f:
        f.seek(off)
        return struct.unpack('>Q', f.read(8))[0]


def poke(path, off, value):
    with open(path, 'r+b') as f:
        f.seek(off)
        f.write(struct.pack('>Q', value))


def refcount_of(path, cluster):
    h = header(path)
    cs = 1 << h['cluster_bits']
    with open(path, 'rb') as f:
        f.seek(96)
        order = struct.unpack('>I', f.read(4))[0]
        bits = 1 << order
        per_block = cs * 8 // bits
        f.seek(h['rt_off'] + 8 * (cluster // per_block))
        rb = struct.unpack('>Q', f.read(8))[0]
        if not rb:
            return 0
        idx = cluster % per_block
        f.seek(rb + idx * bits // 8)
        raw = int.from_bytes(f.read(max(bits // 8, 1)), 'big')
    if bits < 8:
        shift = (idx * bits) % 8
        raw = (raw >> shift) & ((1 << bits) - 1)
    return raw


def same_file(ours, theirs, what):
    diff = common.files_equal(theirs, ours)
    check(diff is None, '%s: file differs from qemu-img\'s: %s' % (what, diff))


# --------------------------------------------------------------------------
# Running both tools


def both(t, args, rc=None, files=None):
    """Runs args (a list; '{img}' stands for the image) with qemu-img on
    files[0] and strata-img on files[1]; returns qemu-img's (exit code,
    stdout, stderr), with the program name and the image's name
    normalised.  Both must agree."""
    out = []
    for tool, path in ((t.qemu_img, files[0] if files else None),
                       (t.img, files[1] if files else None)):
        argv = [tool] + [a.replace('{img}', path) if path else a
                         for a in args]
        res = run(argv, rc=rc)
        name = os.path.basename(tool)
        text = [common.normalize_prog(x, name) for x in (res.out, res.err)]
        if path:
            text = [x.replace(path, '{img}') for x in text]
        out.append((res.rc,) + tuple(text))
    (qrc, qout, qerr), (src, sout, serr) = out
    what = ' '.join(args)
    check(qrc == src, '%s: exit %d, qemu-img %d\nours:\n%s%s\nqemu-img:\n%s%s'
          % (what, src, qrc, sout, serr, qout, qerr))
    check(sout == qout, '%s: stdout differs\nours:\n%s\nqemu-img:\n%s'
          % (what, sout, qout))
    check(serr == qerr, '%s: stderr differs\nours:\n%s\nqemu-img:\n%s'
          % (what, serr, qerr))
    return out[0]


def create_both(t, d, opts, size, extra=()):
    """Both tools create an image; returns (qemu's, ours).  The data file
    name (data_file=DATA) differs per image but has the same length."""
    paths = []
    for tool, tag in ((t.qemu_img, 'q'), (t.img, 's')):
        path = os.path.join(d, '%s.qcow2' % tag)
        for p in (path, os.path.join(d, '%s.raw' % tag)):
            if os.path.exists(p):
                os.unlink(p)
        o = opts.replace('DATA', os.path.join(d, '%s.raw' % tag))
        run([tool, 'create', '-q', '-f', 'qcow2', '-o', o] + list(extra) +
            [path, str(size)])
        paths.append(path)
    return paths


def qemu_written(t, path, cs, size=64 << 20, snapshot=True):
    """An image QEMU wrote: whole and partial subclusters, zeroes,
    a compressed cluster, a discard and (optionally) an internal snapshot
    whose clusters the later writes copied."""
    run([t.qemu_img, 'create', '-q', '-f', 'qcow2', '-o',
         'extended_l2=on,cluster_size=%d' % cs, path, str(size)])
    sc = cs // 32
    cmds = ['write -P 1 0 %d' % (3 * sc // 2),
            'write -P 2 %d %d' % (cs, cs),
            'write -z %d %d' % (2 * cs, 4 * sc),
            'write -c -P 3 %d %d' % (4 * cs, cs),
            'write -P 4 %d 512' % (8 * cs + 5 * sc),
            'write -P 5 %d %d' % (16 * cs, 2 * cs),
            'discard %d %d' % (17 * cs, cs // 2)]
    common.run_io(t.qemu_io, path, cmds)
    if snapshot:
        run([t.qemu_img, 'snapshot', '-c', 's1', path])
        common.run_io(t.qemu_io, path, ['write -P 6 %d %d' % (sc, sc),
                                        'write -z %d %d' % (cs, sc)])


# --------------------------------------------------------------------------
# create


def create_identical(cs, prealloc, sizes, extra_opts=''):
    t = common.tools()
    with common.TempDir() as d:
        for size in sizes:
            opts = 'extended_l2=on,cluster_size=%d,preallocation=%s%s' % (
                cs, prealloc, extra_opts)
            q, s = create_both(t, d, opts, size)
            what = '%s size %s' % (opts, size)
            h = header(s)
            check(h['incompat'] & EXTL2, '%s: bit 4 not set' % what)
            same_file(s, q, what)
            if prealloc == 'metadata':
                ents = [e for e in l2_entries(s) if e[1]]
                check(ents and all(e[1] & COPIED and not e[2] for e in ents),
                      '%s: preallocated entries not host|COPIED, bitmap 0'
                      % what)
            common.qemu_check_clean(s)


def create_metadata_subcluster_tail():
    # 1 MiB + 512 with 64 KiB clusters: the file ends 2 KiB (one
    # subcluster) into the last data cluster; 100000 bytes with 16 KiB
    # clusters: 2 KiB (four 512-byte subclusters)
    create_identical(65536, 'metadata', [(1 << 20) + 512, 1050000])
    create_identical(16384, 'metadata', [100000, 512])
    create_identical(2 << 20, 'metadata', [3000000])


def grow_metadata_in_last_cluster():
    """A metadata grow that ends inside the last cluster, which the create
    already allocated: the file still reaches the end of the subcluster
    holding the new last byte (iotest 125 with extended entries: a write
    there must not grow the file)."""
    t = common.tools()
    with common.TempDir() as d:
        for cs, size, grow in ((65536, 2048000, '+16K'),
                               (65536, 2048000, '+15K'),
                               (16384, 100000, '+1K')):
            opts = 'extended_l2=on,cluster_size=%d,preallocation=metadata' % cs
            q, s = create_both(t, d, opts, size)
            both(t, ['resize', '-f', 'qcow2', '--preallocation=metadata',
                     '{img}', grow], rc=0, files=[q, s])
            same_file(s, q, '%s size %d, resize %s' % (opts, size, grow))


def create_backing_prealloc(prealloc):
    """Preallocation over a backing file is allowed with extended entries
    (and refused without); the bitmaps stay 0, so the backing file's data
    still shows through."""
    t = common.tools()
    with common.TempDir() as d:
        base = os.path.join(d, 'base.qcow2')
        run([t.qemu_img, 'create', '-q', '-f', 'qcow2', base, '4M'])
        common.run_io(t.qemu_io, base, ['write -P 7 0 1M'])
        q, s = create_both(t, d, 'extended_l2=on,preallocation=%s' % prealloc,
                           '4M', ['-b', base, '-F', 'qcow2'])
        if prealloc in ('off', 'metadata'):
            same_file(s, q, 'backing + ' + prealloc)
        else:
            check(os.path.getsize(s) == os.path.getsize(q),
                  'file lengths %d, qemu-img %d'
                  % (os.path.getsize(s), os.path.getsize(q)))
        res = run([t.qemu_img, 'compare', '-f', 'qcow2', '-F', 'qcow2', s,
                   q], rc=None)
        check(res.rc == 0, res.describe())
        common.run_io(t.qemu_io, s, ['read -P 7 0 1M', 'read -P 0 1M 3M'])
        common.qemu_check_clean(s)
        both(t, ['create', '-q', '-f', 'qcow2', '-o',
                 'extended_l2=off,preallocation=metadata', '-b', base,
                 '-F', 'qcow2', '{img}', '4M'], rc=1,
             files=[os.path.join(d, 'q2.qcow2'), os.path.join(d, 's2.qcow2')])


def create_falloc_full():
    t = common.tools()
    with common.TempDir() as d:
        for cs, size in ((16384, 3 << 20), (65536, (100 << 20) + 512),
                         (2 << 20, 9 << 20)):
            for mode in ('falloc', 'full'):
                opts = 'extended_l2=on,cluster_size=%d,preallocation=%s' % (
                    cs, mode)
                q, s = create_both(t, d, opts, size)
                what = '%s size %d' % (opts, size)
                hq, hs = header(q), header(s)
                for k in hq:
                    if k != 'rt_off':
                        check(hq[k] == hs[k], '%s: header %s %#x, qemu-img '
                              '%#x' % (what, k, hs[k], hq[k]))
                check(os.path.getsize(s) == os.path.getsize(q),
                      '%s: file length %d, qemu-img %d'
                      % (what, os.path.getsize(s), os.path.getsize(q)))
                eq, es = l2_entries(q), l2_entries(s)
                check([(g, bool(e), b) for g, e, b in eq] ==
                      [(g, bool(e), b) for g, e, b in es],
                      '%s: mapped clusters or bitmaps differ' % what)
                check(all(e & COPIED and not b for g, e, b in es if e),
                      '%s: not host|COPIED with bitmap 0' % what)
                maps = [json.loads(run([t.qemu_img, 'map', '--output=json',
                                        p]).out) for p in (q, s)]
                strip = [[(m['start'], m['length'], m['zero'], m['data'])
                          for m in mm] for mm in maps]
                check(strip[0] == strip[1], '%s: guest map differs' % what)
                blocks = os.stat(s).st_blocks * 512
                check(blocks >= os.path.getsize(s) * 9 // 10,
                      '%s: only %d bytes allocated' % (what, blocks))
                common.qemu_check_clean(s)


def create_data_file(prealloc, raw):
    t = common.tools()
    with common.TempDir() as d:
        opts = 'extended_l2=on,preallocation=%s,data_file=DATA%s' % (
            prealloc, ',data_file_raw=on' if raw else '')
        q, s = create_both(t, d, opts, '10M')
        with open(q, 'rb') as f:
            qb = f.read().replace(os.path.join(d, 'q.raw').encode(), b'X')
        with open(s, 'rb') as f:
            sb = f.read().replace(os.path.join(d, 's.raw').encode(), b'X')
        check(qb == sb, '%s: file differs from qemu-img\'s' % opts)
        check(os.path.getsize(os.path.join(d, 'q.raw')) ==
              os.path.getsize(os.path.join(d, 's.raw')),
              '%s: data file lengths differ' % opts)


def create_errors():
    t = common.tools()
    with common.TempDir() as d:
        files = [os.path.join(d, 'q.qcow2'), os.path.join(d, 's.qcow2')]
        for opts in ('extended_l2=on,compat=0.10',
                     'extended_l2=on,compat=v2,cluster_size=4096',
                     'extended_l2=on,cluster_size=8192',
                     'extended_l2=on,cluster_size=512',
                     'extended_l2=on,cluster_size=3000',
                     'extended_l2=on,compat=0.10,cluster_size=3000',
                     'extended_l2=on,compat=0.10,lazy_refcounts=on',
                     'extended_l2=on,cluster_size=8192,refcount_bits=3',
                     'extended_l2=on,compat=0.10,refcount_bits=8',
                     'extended_l2=on,cluster_size=8192,preallocation=bogus',
                     'extended_l2=bogus',
                     'compat=bogus,cluster_size=3000',
                     'compat=bogus,refcount_bits=3'):
            both(t, ['create', '-q', '-f', 'qcow2', '-o', opts, '{img}',
                     '1M'], rc=1, files=files)
            for p in files:
                check(not os.path.exists(p), '%s: %s was left behind'
                      % (opts, p))


# --------------------------------------------------------------------------
# info


def info_case():
    t = common.tools()
    with common.TempDir() as d:
        for opts in ('extended_l2=on', 'extended_l2=on,cluster_size=16k,'
                     'lazy_refcounts=on,refcount_bits=1',
                     'extended_l2=on,data_file=DATA', 'extended_l2=off'):
            q, s = create_both(t, d, opts, '5M')
            for out in ('human', 'json'):
                # the same file for both: names and sizes then agree
                r = both(t, ['info', '--output=' + out, '{img}'],
                         rc=0, files=[s, s])
                want = ('"extended-l2": %s' if out == 'json'
                        else 'extended l2: %s') % (
                            'false' if opts.endswith('off') else 'true')
                check(want in r[1], '%s: no "%s" in:\n%s' % (opts, want, r[1]))
        path = os.path.join(d, 'w.qcow2')
        qemu_written(t, path, 65536)
        for out in ('human', 'json'):
            both(t, ['info', '--output=' + out, '{img}'], rc=0,
                 files=[path, path])


# --------------------------------------------------------------------------
# measure


def measure_sizes():
    t = common.tools()
    n = 0
    for cs in ('16k', '64k', '2M'):
        for size in ('0', '512', '1M', '1G', '17G', '1T', '100T', '1P'):
            for extra in ('', ',refcount_bits=1', ',refcount_bits=64',
                          ',preallocation=full', ',compat=0.10'):
                for out in ('human', 'json'):
                    r = both(t, ['measure', '--output=' + out, '-O', 'qcow2',
                                 '-o', 'extended_l2=on,cluster_size=' + cs +
                                 extra, '--size', size])
                    n += r[0] == 0
    check(n > 200, 'only %d measurements succeeded' % n)
    # the L2 tables are twice as big as without the feature
    a = run([t.img, 'measure', '--output=json', '-O', 'qcow2', '-o',
             'extended_l2=on', '--size', '1T']).out
    b = run([t.img, 'measure', '--output=json', '-O', 'qcow2', '-o',
             'extended_l2=off', '--size', '1T']).out
    check(json.loads(a)['required'] - json.loads(b)['required'] >=
          (1 << 40) // 65536 * 8,
          'extended entries did not double the L2 space:\n%s\n%s' % (a, b))


def measure_image():
    t = common.tools()
    with common.TempDir() as d:
        path = os.path.join(d, 'w.qcow2')
        qemu_written(t, path, 65536, snapshot=False)
        for opts in ('extended_l2=on', 'extended_l2=on,cluster_size=16k',
                     'extended_l2=off,cluster_size=2M',
                     'extended_l2=on,preallocation=falloc'):
            for out in ('human', 'json'):
                both(t, ['measure', '--output=' + out, '-O', 'qcow2', '-o',
                         opts, '{img}'], rc=0, files=[path, path])


def measure_errors():
    t = common.tools()
    for opts in ('extended_l2=on,cluster_size=8k',
                 'extended_l2=on,cluster_size=512',
                 'extended_l2=on,cluster_size=3000', 'extended_l2=bogus'):
        both(t, ['measure', '-O', 'qcow2', '-o', opts, '--size', '1G'],
             rc=1)
    # too large for 16 KiB clusters with extended entries only
    both(t, ['measure', '-O', 'qcow2', '-o',
             'extended_l2=on,cluster_size=16k', '--size', '100T'], rc=1)
    both(t, ['measure', '-O', 'qcow2', '-o',
             'extended_l2=off,cluster_size=16k', '--size', '100T'], rc=0)


# --------------------------------------------------------------------------
# check


def check_both(t, q, s, mode=None, out='human'):
    args = ['check'] + (['-r', mode] if mode else []) + \
        (['--output=json'] if out == 'json' else []) + ['{img}']
    return both(t, args, files=[q, s])


def check_clean(cs):
    t = common.tools()
    with common.TempDir() as d:
        path = os.path.join(d, 'w.qcow2')
        qemu_written(t, path, cs)
        for out in ('human', 'json'):
            r = check_both(t, path, path, out=out)
            check(r[0] == 0, 'QEMU\'s image is not clean:\n%s%s' % r[1:])
        q, s = create_both(t, d, 'extended_l2=on,cluster_size=%d,'
                           'preallocation=metadata' % cs, '20M')
        for out in ('human', 'json'):
            check_both(t, s, s, out=out)


def damage_active(entry, value_of):
    """Damage that rewrites one field of the active tree's entry for guest
    cluster `entry`: value_of(path, descriptor_off) -> list of
    (file offset, new value)."""
    def apply(path):
        off = entry_offset(path, entry)
        for at, v in value_of(path, off):
            poke(path, at, v)
    return apply


def _or(delta, word=0):
    return lambda p, o: [(o + word, peek(p, o + word) | delta)]


def _set(descriptor=None, bitmap=None):
    def f(p, o):
        out = []
        if descriptor is not None:
            out.append((o, descriptor(p, o) if callable(descriptor)
                        else descriptor))
        if bitmap is not None:
            out.append((o + 8, bitmap))
        return out
    return f


def unaligned_at(cluster):
    """A descriptor pointing 512 bytes into host cluster `cluster`."""
    def f(p, o):
        cs = 1 << header(p)['cluster_bits']
        return COPIED | (cluster * cs + 512)
    return f


# Guest clusters of qemu_written(): 0 partial data (copied after the
# snapshot: refcount 1), 1 data, 2 zeroes, 4 compressed, 5 unallocated,
# 8 one partial subcluster, 16-17 data (1, 16, 17 shared: refcount 2).
DAMAGES = {
    'compressed_bitmap': damage_active(4, _set(bitmap=1)),
    'compressed_zero_bits': damage_active(4, _set(bitmap=1 << 40)),
    'compressed_copied_bitmap': damage_active(
        4, lambda p, o: [(o, peek(p, o) | COPIED), (o + 8, 5)]),
    'allocated_and_zero': damage_active(1, _or(1 << 33, 8)),
    'unallocated_alloc_bits': damage_active(5, _set(bitmap=3)),
    'unallocated_both_bits': damage_active(5, _set(bitmap=(3 << 32) | 1)),
    'unallocated_zero_bits_ok': damage_active(5, _set(bitmap=3 << 32)),
    'prealloc_unaligned': damage_active(
        5, _set(unaligned_at(5), 7 << 32)),
    'prealloc_unaligned_no_bits': damage_active(5, _set(unaligned_at(5), 0)),
    'data_unaligned': damage_active(0, _or(0x200)),
    'data_unaligned_both_bits': damage_active(
        5, _set(unaligned_at(5), (1 << 32) | 1)),
    'reserved_bit': damage_active(1, _or(2)),
    'bit0_ignored': damage_active(0, _or(1)),
    'bit0_copied_clear': damage_active(
        0, lambda p, o: [(o, (peek(p, o) | 1) & ~COPIED)]),
    'bit0_unallocated': damage_active(5, _set(1)),
    'copied_clear': damage_active(0, lambda p, o: [(o, peek(p, o) & ~COPIED)]),
    'copied_set_shared': damage_active(16, _or(COPIED)),
}


# what QEMU accepts: zero bits without a cluster, bit 0 (reserved with
# extended entries, and ignored)
HARMLESS = ('unallocated_zero_bits_ok', 'bit0_ignored', 'bit0_unallocated')


def snapshot_l2_damage(bitmap_of):
    """Damage in the snapshot's own L2 table (the active one was copied
    by the writes after the snapshot)."""
    def apply(path):
        with open(path, 'rb') as f:
            d = f.read()
        sn_l1 = u64(d, u64(d, 64))   # the first snapshot's L1 table
        off = entry_offset(path, 1, l1_off=sn_l1)
        check(off != entry_offset(path, 1), 'snapshot shares the L2 table')
        for at, v in bitmap_of(path, off):
            poke(path, at, v)
    return apply


DAMAGES['snapshot_allocated_and_zero'] = snapshot_l2_damage(_or(1 << 40, 8))
DAMAGES['snapshot_prealloc_unaligned'] = snapshot_l2_damage(
    _set(unaligned_at(5), 0))


def same_but_free(q, s, what, punched=True):
    """Files equal but for clusters free (refcount 0) in both, which with
    punched=True QEMU must also have punched (zeroes in its copy): what
    a repair or a refcount width change left in clusters it freed."""
    cs = 1 << header(q)['cluster_bits']
    check(os.path.getsize(q) == os.path.getsize(s), '%s: lengths differ'
          % what)
    with open(q, 'rb') as fq, open(s, 'rb') as fs:
        k = 0
        while True:
            a, b = fq.read(cs), fs.read(cs)
            if not a:
                return
            if a != b:
                check((a == bytes(len(a)) or not punched) and
                      refcount_of(q, k) == 0 and refcount_of(s, k) == 0,
                      '%s: cluster %d differs from qemu-img\'s' % (what, k))
            k += 1


def check_damaged(name, cs):
    t = common.tools()
    with common.TempDir() as d:
        clean = os.path.join(d, 'clean.qcow2')
        qemu_written(t, clean, cs)
        DAMAGES[name](clean)
        for mode in (None, 'leaks', 'all'):
            q, s = os.path.join(d, 'q.qcow2'), os.path.join(d, 's.qcow2')
            shutil.copyfile(clean, q)
            shutil.copyfile(clean, s)
            r = check_both(t, q, s, mode)
            if mode is None:
                check_both(t, q, s, None, 'json')
                check((r[0] == 0) == (name in HARMLESS),
                      'exit %d:\n%s%s' % r)
                same_file(s, q, 'check without -r')
                same_file(s, clean, 'check without -r')
            else:
                same_but_free(q, s, 'check -r ' + mode)
                # and what is left to report is reported alike
                check_both(t, q, s)


# --------------------------------------------------------------------------
# amend


def amend_refused():
    t = common.tools()
    with common.TempDir() as d:
        ext, std = os.path.join(d, 'ext.qcow2'), os.path.join(d, 'std.qcow2')
        qemu_written(t, ext, 65536)
        run([t.qemu_img, 'create', '-q', '-f', 'qcow2', std, '1M'])
        for path, opts in ((ext, 'compat=0.10'), (ext, 'extended_l2=off'),
                           (ext, 'extended_l2=on'), (std, 'extended_l2=on'),
                           (ext, 'compat=0.10,lazy_refcounts=on')):
            before = common.sha256(path)
            r = both(t, ['amend', '-o', opts, '{img}'], rc=1,
                     files=[path, path])
            check(common.sha256(path) == before, '%s: image changed' % opts)
            if opts == 'compat=0.10':
                check('incompatible features 0x10 set' in r[2], r[2])


def amend_changes():
    t = common.tools()
    with common.TempDir() as d:
        clean = os.path.join(d, 'clean.qcow2')
        qemu_written(t, clean, 65536)
        # (refcount_bits=1 is refused: the snapshot shares clusters)
        for opts in ('lazy_refcounts=on', 'size=128M', 'size=100000256',
                     'refcount_bits=2', 'refcount_bits=1', 'compat=1.1'):
            q, s = os.path.join(d, 'q.qcow2'), os.path.join(d, 's.qcow2')
            shutil.copyfile(clean, q)
            shutil.copyfile(clean, s)
            r = both(t, ['amend', '-o', opts, '{img}'], files=[q, s])
            check(r[0] == (1 if opts == 'refcount_bits=1' else 0),
                  'amend -o %s: exit %d' % (opts, r[0]))
            if opts.startswith('refcount_bits'):
                # the old refcount blocks are freed, their contents moot
                same_but_free(q, s, 'amend -o ' + opts, punched=False)
            else:
                same_file(s, q, 'amend -o ' + opts)
            common.qemu_check_clean(s)


# --------------------------------------------------------------------------
# The cases, by name (I/O cases live in test_extended_l2_io.py)

CASES = []
for _cs in (16384, 65536, 2 << 20):
    CASES.append(('create_off_c%d' % _cs, create_identical, _cs, 'off',
                  [0, 512, 1 << 20, 100 << 20, 5 << 30,
                   (_cs // 16) << 30]))
    CASES.append(('create_metadata_c%d' % _cs, create_identical, _cs,
                  'metadata', [_cs, 3 * _cs, 100 << 20]))
CASES += [
    ('create_options', create_identical, 65536, 'off', [1 << 30],
     ',refcount_bits=1,lazy_refcounts=on,compression_type=zstd'),
    ('create_options_metadata', create_identical, 32768, 'metadata',
     [100 << 20], ',refcount_bits=64'),
    ('create_metadata_subcluster_tail', create_metadata_subcluster_tail),
    ('grow_metadata_in_last_cluster', grow_metadata_in_last_cluster),
    ('create_falloc_full', create_falloc_full),
    ('create_errors', create_errors),
    ('info', info_case),
    ('measure_sizes', measure_sizes),
    ('measure_image', measure_image),
    ('measure_errors', measure_errors),
    ('amend_refused', amend_refused),
    ('amend_changes', amend_changes),
]
for _p in ('off', 'metadata', 'falloc', 'full'):
    CASES.append(('create_backing_prealloc_' + _p, create_backing_prealloc,
                  _p))
    CASES.append(('create_data_file_' + _p, create_data_file, _p, False))
CASES.append(('create_data_file_raw', create_data_file, 'metadata', True))
for _cs in (16384, 65536, 2 << 20):
    CASES.append(('check_clean_c%d' % _cs, check_clean, _cs))
for _name in DAMAGES:
    CASES.append(('check_damaged_' + _name, check_damaged, _name, 65536))
for _name in ('allocated_and_zero', 'prealloc_unaligned',
              'compressed_bitmap', 'unallocated_alloc_bits'):
    for _cs in (16384, 2 << 20):
        CASES.append(('check_damaged_%s_c%d' % (_name, _cs), check_damaged,
                      _name, _cs))

for _case in CASES:
    runner.add(_case[0], *_case[1:])


if __name__ == '__main__':
    sys.exit(runner.main())
