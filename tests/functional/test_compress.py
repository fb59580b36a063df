#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Compressed clusters, both ways with QEMU (issue 9).

- `convert -c` (zlib and zstd; 512 B, 64 KiB and 2 MiB clusters; a last
  cluster the image ends inside; random data that does not shrink; zero
  areas): the image reads as the source with qemu-img, `qemu-img check`
  is clean and counts compressed clusters, `qemu-img map` shows
  compressed data (no host offset) and the random data as ordinary
  clusters, and the file is the one qemu-img's own `convert -c` writes,
  byte for byte.
- `convert -c` of two sources whose boundary falls inside a target
  cluster: the cluster holds both (qemu-img's file byte for byte).
- `write -c` with strata-io: qemu-io reads the data back, host clusters
  shared by several compressed clusters keep their counts through
  overwrites and discards (check finds no leak and no error).
- Images compressed by qemu-img with zstd read identically with strata.
- `write -c` refusals print what qemu-io prints and change nothing;
  `-o compression_type=` refusals print what qemu-img prints; `convert -c`
  to a format that cannot compress is refused as by qemu-img.
"""

import json
import os
import re
import sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402
from common import check, run, run_io  # noqa: E402

runner = common.Runner()

KiB = 1024
MiB = 1024 * KiB


def make_source(path, size, cluster, seed):
    """A raw image: text-like data, random data, zeroes, and data in the
    last, partial cluster."""
    r = common.rng(seed)
    buf = bytearray(size)
    text = b''.join(b'block %08d of a compressible pattern\n' % i
                    for i in range(4096))
    # compressible data over the first clusters (several per host cluster)
    n = min(size // 4, max(4 * cluster, 256 * KiB))
    buf[0:n] = (text * (n // len(text) + 1))[:n]
    # random data: does not shrink, stored uncompressed
    at = size // 2 // cluster * cluster
    rl = min(2 * cluster, size - at - cluster)
    buf[at:at + rl] = r.randbytes(rl)
    # a little data in the last cluster, which the image ends inside
    buf[size - 700:size - 600] = b'E' * 100
    with open(path, 'wb') as f:
        f.write(buf)
    return at, rl


def map_json(img):
    res = run([common.tools().qemu_img, 'map', '--output=json', '-f', 'qcow2',
               img])
    return json.loads(res.out)


def compressed_bytes(extents):
    """Bytes qemu-img map shows as data without a host offset (what it
    shows for compressed clusters)."""
    return sum(e['length'] for e in extents
               if e['data'] and 'offset' not in e)


def compressed_share(check_out):
    """The percentage of compressed clusters `check` reports."""
    m = re.search(r'([0-9.]+)% compressed clusters', check_out)
    return float(m.group(1)) if m else 0.0


def check_compressed_counted(img):
    res = common.qemu_check_clean(img)
    check('No errors were found on the image.' in res.out,
          'qemu-img check is not clean\n' + res.describe())
    check(compressed_share(res.out) > 0,
          'qemu-img check counts no compressed cluster\n' + res.describe())


def convert_case(ctype, cluster):
    t = common.tools()
    size = 6 * max(cluster, 1 * MiB) + 4608     # ends inside a cluster
    with common.TempDir() as d:
        src = os.path.join(d, 'src.raw')
        rnd_at, rnd_len = make_source(src, size, cluster, cluster)
        outs = {}
        for label, tool in (('ours', t.img), ('qemu', t.qemu_img)):
            out = os.path.join(d, label + '.qcow2')
            run([tool, 'convert', '-c', '-f', 'raw', '-O', 'qcow2', '-o',
                 'cluster_size=%d,compression_type=%s' % (cluster, ctype),
                 src, out])
            outs[label] = out
        ours = outs['ours']
        common.qemu_compare_identical(ours, src)
        check_compressed_counted(ours)
        info = run([t.qemu_img, 'info', ours]).out
        check('compression type: %s' % ctype in info,
              'qemu-img info does not say %s\n%s' % (ctype, info))
        ext = map_json(ours)
        check(compressed_bytes(ext) > 0,
              'qemu-img map shows no compressed data: %s' % ext)
        # the random clusters did not shrink: ordinary clusters
        rnd = [e for e in ext if e['start'] <= rnd_at < e['start'] +
               e['length']]
        check(rnd and 'offset' in rnd[0],
              'random data at %d is not an ordinary cluster: %s'
              % (rnd_at, rnd))
        # the zero middle is not allocated at all
        check(any(not e['data'] and e['zero'] for e in ext),
              'no unallocated zero area: %s' % ext)
        with open(ours, 'rb') as f:
            check(len(f.read()) % 512 == 0, 'file end not sector aligned')
        diff = common.files_equal(ours, outs['qemu'])
        check(diff is None, 'not the file qemu-img convert -c writes: %s'
              % diff)
        # and strata reads its own image back
        res = run([t.img, 'compare', '-f', 'qcow2', '-F', 'raw', ours, src],
                  rc=None)
        check(res.rc == 0, 'strata-img compare differs\n' + res.describe())


for _ct in ('zlib', 'zstd'):
    for _cs in (512, 64 * KiB, 2 * MiB):
        runner.add('convert_%s_%d' % (_ct, _cs), convert_case, _ct, _cs)


@runner.case()
def convert_c_concatenated_sources():
    """Two 1023 KiB sources: a 64 KiB target cluster holds the end of the
    first and the start of the second, and is compressed whole."""
    t = common.tools()
    with common.TempDir() as d:
        srcs = [os.path.join(d, 's%d.qcow2' % i) for i in (1, 2)]
        for src in srcs:
            run([t.qemu_img, 'create', '-f', 'qcow2', '-o',
                 'cluster_size=1024', src, '1023k'])
        run_io(t.qemu_io, srcs[0], ['write -P 0x11 16k 16k',
                                    'write -P 0x33 1022k 1k'])
        run_io(t.qemu_io, srcs[1], ['write -P 0x44 0 1k'])
        outs = {}
        for label, tool in (('ours', t.img), ('qemu', t.qemu_img)):
            outs[label] = os.path.join(d, label + '.qcow2')
            run([tool, 'convert', '-c', '-O', 'qcow2'] + srcs +
                [outs[label]])
        run_io(t.qemu_io, outs['ours'], ['read -P 0x11 16k 16k',
                                         'read -P 0x33 1022k 1k',
                                         'read -P 0x44 1023k 1k',
                                         'read -P 0 1024k 1022k'])
        common.qemu_check_clean(outs['ours'])
        diff = common.files_equal(outs['ours'], outs['qemu'])
        check(diff is None, 'not the file qemu-img convert -c writes: %s'
              % diff)


def write_c_case(ctype):
    t = common.tools()
    with common.TempDir() as d:
        img = os.path.join(d, 'w.qcow2')
        rnd = os.path.join(d, 'rnd')
        r = common.rng(7)
        with open(rnd, 'wb') as f:
            f.write(r.randbytes(64 * KiB))
        # 64 KiB clusters, the image ends 512 bytes into its last cluster
        run([t.img, 'create', '-f', 'qcow2', '-o',
             'compression_type=' + ctype, img, str(2 * MiB + 512)])
        run_io(t.io, img, [
            'write -c -P 0x11 0 64k',
            'write -c -P 0x22 64k 192k',      # three at once
            'write -c -P 0x33 1M 64k',
            'write -c -s %s 512k 64k' % rnd,  # does not shrink
            'write -c -P 0x44 2M 512',        # the partial last cluster
        ])
        run_io(t.qemu_io, img, [
            'read -P 0x11 0 64k', 'read -P 0x22 64k 192k',
            'read -P 0x33 1M 64k', 'read -P 0x44 2M 512',
            'read -P 0 256k 256k', 'read -P 0 576k 448k',
        ])
        with open(rnd, 'rb') as f:
            want = f.read()
        got = open_guest_bytes(d, img, 512 * KiB, 64 * KiB)
        check(got == want, 'the random cluster reads back differently')
        check_compressed_counted(img)
        ext = map_json(img)
        check(compressed_bytes(ext) == 5 * 64 * KiB + 512,
              'qemu-img map: compressed bytes %d, want %d: %s'
              % (compressed_bytes(ext), 5 * 64 * KiB + 512, ext))
        # The compressed clusters share host clusters: overwrite one,
        # discard another, and the counts must still be right.
        run_io(t.io, img, ['write -P 0x55 64k 4k', 'discard 128k 64k'])
        run_io(t.qemu_io, img, ['read -P 0x55 64k 4k',
                                'read -P 0x22 68k 60k',
                                'read -P 0 128k 64k',
                                'read -P 0x22 192k 64k'])
        res = common.qemu_check_clean(img)
        check('No errors were found' in res.out and 'leaked' not in res.out,
              'after overwrite and discard\n' + res.describe())


def open_guest_bytes(d, img, off, length):
    """Guest bytes read by qemu-img (convert to raw)."""
    raw = os.path.join(d, 'guest.raw')
    run([common.tools().qemu_img, 'convert', '-f', 'qcow2', '-O', 'raw',
         img, raw])
    with open(raw, 'rb') as f:
        f.seek(off)
        return f.read(length)


runner.add('write_c_zlib', write_c_case, 'zlib')
runner.add('write_c_zstd', write_c_case, 'zstd')


@runner.case()
def qemu_zstd_read_by_strata():
    """An image qemu-img compressed with zstd reads as its source."""
    t = common.tools()
    with common.TempDir() as d:
        src = os.path.join(d, 'src.raw')
        make_source(src, 4 * MiB, 64 * KiB, 3)
        img = os.path.join(d, 'q.qcow2')
        run([t.qemu_img, 'convert', '-c', '-f', 'raw', '-O', 'qcow2', '-o',
             'compression_type=zstd', src, img])
        res = run([t.img, 'compare', '-f', 'qcow2', '-F', 'raw', img, src],
                  rc=None)
        check(res.rc == 0 and 'Images are identical.' in res.out,
              'strata-img compare\n' + res.describe())
        run_io(t.io, img, ['read -P 0 1M 1M', 'read -P 0x45 %d 100'
                           % (4 * MiB - 700)])
        info = run([t.img, 'info', img]).out
        check('compression type: zstd' in info, 'info:\n' + info)
        res = run([t.img, 'check', img])
        check(compressed_share(res.out) > 0,
              'strata-img check counts no compressed cluster\n'
              + res.describe())
        # and strata writes into it: more compressed clusters, zstd too
        run_io(t.io, img, ['write -c -P 0x66 3M 64k'])
        run_io(t.qemu_io, img, ['read -P 0x66 3M 64k'])
        common.qemu_check_clean(img)


def io_output(tool, img, cmd, fmt='qcow2'):
    t = common.tools()
    name = os.path.basename(tool)
    res = run([tool, '-f', fmt, '-c', cmd, img], rc=None)
    return res.rc, common.normalize_prog(res.out + res.err, name)


@runner.case()
def write_c_refusals_match_qemu():
    """Refused compressed writes: qemu-io's texts; nothing changes."""
    t = common.tools()
    cmds = [
        'write -c 512 64k',          # not cluster aligned
        'write -c 0 1000',           # not sector aligned
        'write -c 64k 32k',          # not whole clusters
        'write -c 0 64k',            # already allocated
        'write -c 1M 64k',           # past the end
        'write -c -f 128k 64k',      # -f with -c
        'write -c 7 512',            # offset not sector aligned
    ]
    with common.TempDir() as d:
        for cmd in cmds:
            outs = {}
            for label, io in (('ours', t.io), ('qemu', t.qemu_io)):
                img = os.path.join(d, label + '.qcow2')
                if os.path.exists(img):
                    os.unlink(img)
                run([t.qemu_img, 'create', '-f', 'qcow2', img, '1M'])
                run([t.qemu_io, '-f', 'qcow2', '-c', 'write -c 0 64k', img])
                before = common.sha256(img)
                outs[label] = io_output(io, img, cmd)
                check(common.sha256(img) == before,
                      '%s: %r changed the image' % (label, cmd))
            check(outs['ours'] == outs['qemu'],
                  '%r: ours %r, qemu-io %r' % (cmd, outs['ours'],
                                               outs['qemu']))
        # a format that cannot compress
        outs = {}
        for label, io in (('ours', t.io), ('qemu', t.qemu_io)):
            img = os.path.join(d, label + '.raw')
            run([t.qemu_img, 'create', '-f', 'raw', img, '1M'])
            outs[label] = io_output(io, img, 'write -c 0 64k', fmt='raw')
        check(outs['ours'] == outs['qemu'],
              'raw: ours %r, qemu-io %r' % (outs['ours'], outs['qemu']))


@runner.case()
def create_and_convert_refusals_match_qemu():
    """compression_type values qemu-img refuses; convert -c to raw, and
    with -C (copy offloading), refused with qemu-img's texts."""
    t = common.tools()
    with common.TempDir() as d:
        for opts in ('compression_type=foo', 'compression_type=zstd,compat=0.10'):
            outs = {}
            for label, tool in (('ours', t.img), ('qemu', t.qemu_img)):
                img = os.path.join(d, label + '.qcow2')
                res = run([tool, 'create', '-f', 'qcow2', '-o', opts, img,
                           '1M'], rc=1, cwd=d)
                outs[label] = common.normalize_prog(
                    (res.out + res.err).replace(img, 'IMG'),
                    os.path.basename(tool))
            check(outs['ours'] == outs['qemu'],
                  '%s: ours %r, qemu-img %r' % (opts, outs['ours'],
                                                outs['qemu']))
        src = os.path.join(d, 'src.raw')
        make_source(src, 1 * MiB, 64 * KiB, 5)
        for args in (['-c', '-O', 'raw'], ['-c', '-C', '-O', 'qcow2'],
                     ['-C', '-S', '4k', '-O', 'qcow2']):
            outs = {}
            for label, tool in (('ours', t.img), ('qemu', t.qemu_img)):
                out = os.path.join(d, label + '.out')
                res = run([tool, 'convert', '-f', 'raw'] + args + [src, out],
                          rc=1)
                outs[label] = common.normalize_prog(res.err,
                                                    os.path.basename(tool))
                check(not os.path.exists(out), '%s: %s created the target'
                      % (' '.join(args), label))
            check(outs['ours'] == outs['qemu'],
                  'convert %s: ours %r, qemu-img %r'
                  % (' '.join(args), outs['ours'], outs['qemu']))


if __name__ == '__main__':
    sys.exit(runner.main())
