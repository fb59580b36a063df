#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Raw files of odd lengths, and creates that fail (issue 7, item 9).

A raw file whose length is not a multiple of 512 is read as whole
sectors, the padding reading as zeroes (QEMU's rule).  For several such
lengths: `convert` to qcow2 and raw (format probed and named) gives
what qemu-img's convert gives (same virtual size, same content, same raw
file size), `compare` says what qemu-img compare says (identical, or the
same first mismatching offset), and `map` prints qemu-img's map.

A create that fails changes nothing on disk: no file is left where there
was none, and an existing file keeps its bytes.  QEMU's exit status is
matched; QEMU itself deletes an existing file after a failed create (and
leaves an empty file after a failed raw create), so those expectations
are strata's own (README: strata is stricter).
"""

import os
import sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402
from common import check, run  # noqa: E402

runner = common.Runner()

ODD_SIZES = [1, 100, 511, 513, 1000, 4097, 65537, (1 << 20) + 7]


def write_random(path, size, seed):
    r = common.rng(seed)
    with open(path, 'wb') as f:
        f.write(bytes(r.getrandbits(8) for _ in range(size)))


def convert_case(size):
    t = common.tools()
    with common.TempDir() as d:
        src = os.path.join(d, 'odd.raw')
        write_random(src, size, size)
        for out_fmt in ('qcow2', 'raw'):
            for src_fmt in (['-f', 'raw'], []):
                outs = {}
                for label, tool in (('ours', t.img), ('qemu', t.qemu_img)):
                    out = os.path.join(d, '%s.%s' % (label, out_fmt))
                    if os.path.exists(out):
                        os.unlink(out)
                    run([tool, 'convert'] + src_fmt + ['-O', out_fmt, src,
                                                       out])
                    outs[label] = out
                info = {k: run([t.qemu_img, 'info', '-f', out_fmt, v]).out
                        for k, v in outs.items()}
                vs = [ln for ln in info['ours'].splitlines()
                      if ln.startswith('virtual size')]
                check(vs and vs[0] in info['qemu'],
                      'size %d -> %s: virtual size differs\n%s\n%s'
                      % (size, out_fmt, info['ours'], info['qemu']))
                res = run([t.qemu_img, 'compare', '-f', out_fmt, '-F',
                           out_fmt, outs['ours'], outs['qemu']], rc=None)
                check(res.rc == 0, 'size %d -> %s: content differs from '
                      'qemu-img convert\'s\n%s' % (size, out_fmt,
                                                   res.describe()))
                if out_fmt == 'raw':
                    check(os.path.getsize(outs['ours']) ==
                          os.path.getsize(outs['qemu']),
                          'size %d: raw output is %d bytes, qemu-img\'s %d'
                          % (size, os.path.getsize(outs['ours']),
                             os.path.getsize(outs['qemu'])))
                if out_fmt == 'qcow2':
                    common.qemu_check_clean(outs['ours'])


for _size in ODD_SIZES:
    runner.add('convert_%d' % _size, convert_case, _size)


def same_verdict(args, cwd, what):
    t = common.tools()
    ours = run([t.img] + args, rc=None, cwd=cwd)
    theirs = run([t.qemu_img] + args, rc=None, cwd=cwd)
    check(ours.rc == theirs.rc and ours.out == theirs.out,
          '%s: strata-img and qemu-img disagree\n%s\n%s'
          % (what, ours.describe(), theirs.describe()))
    return ours


def compare_case(size):
    t = common.tools()
    with common.TempDir() as d:
        src = os.path.join(d, 'odd.raw')
        write_random(src, size, size + 1)
        q = os.path.join(d, 'copy.qcow2')
        run([t.qemu_img, 'convert', '-f', 'raw', '-O', 'qcow2', src, q])
        res = same_verdict(['compare', src, q], d, 'compare %d' % size)
        check(res.rc == 0 and 'Images are identical.' in res.out,
              res.describe())
        same_verdict(['compare', '-f', 'raw', '-F', 'raw', src, src], d,
                     'compare %d with itself' % size)
        # a difference in the last real byte, then in the padding
        run([t.qemu_io, '-f', 'qcow2', '-c',
             'write -P 0x%02x %d 1' % ((open(src, 'rb').read()[size - 1]
                                        ^ 0xff), size - 1), q])
        res = same_verdict(['compare', src, q], d,
                           'compare %d, last byte differs' % size)
        # qemu-img names the start of the 512-byte sector that differs
        check(res.rc == 1 and 'Content mismatch at offset %d!'
              % ((size - 1) // 512 * 512) in res.out, res.describe())
        if size % 512:
            run([t.qemu_io, '-f', 'qcow2', '-c',
                 'write -P 0x%02x %d 1' % (open(src, 'rb').read()[size - 1],
                                           size - 1),
                 '-c', 'write -P 0x01 %d 1' % size, q])
            res = same_verdict(['compare', src, q], d,
                               'compare %d, padding differs' % size)
            check(res.rc == 1, res.describe())
        same_verdict(['map', '--output=json', src], d, 'map %d' % size)


for _size in ODD_SIZES:
    runner.add('compare_%d' % _size, compare_case, _size)


# Creates that fail.  (args, the file name is appended as 'X' where the
# list says so; messages compared when QEMU's text is known to match.)
FAILING_CREATES = [
    (['-f', 'qcow2', '-o', 'cluster_size=3', 'X', '1M'], True),
    (['-f', 'qcow2', '-o', 'refcount_bits=3', 'X', '1M'], True),
    # (the hint differs: QEMU says "use version=v3", strata "compat=1.1")
    (['-f', 'qcow2', '-o', 'compat=0.10,refcount_bits=64', 'X', '1M'], False),
    (['-f', 'qcow2', '-b', 'missing.qcow2', '-F', 'qcow2', 'X', '1M'], True),
    (['-f', 'qcow2', 'X', '100P'], False),
    (['-f', 'raw', '-b', 'base.raw', '-F', 'raw', 'X', '1M'], False),
    (['-f', 'qcow2', '-o', 'size=1M', 'X', '2M'], True),
]


def create_fails(args, same_text):
    t = common.tools()
    with common.TempDir() as d:
        x = os.path.join(d, 'X')
        theirs = run([t.qemu_img, 'create'] + args, rc=1, cwd=d)
        if os.path.exists(x):
            os.unlink(x)
        ours = run([t.img, 'create'] + args, rc=1, cwd=d)
        if same_text:
            check(common.normalize_prog(ours.err, t.img_name) ==
                  common.normalize_prog(theirs.err, 'qemu-img'),
                  'message differs from qemu-img\'s\n%s\n%s'
                  % (ours.describe(), theirs.describe()))
        common.skip_if_qemu_tools('QEMU may leave an empty file, and '
                                  'deletes an existing one')
        check(not os.path.exists(x), 'a failed create left %s behind' % x)
        with open(x, 'wb') as f:
            f.write(b'precious data\n')
        run([t.img, 'create'] + args, rc=1, cwd=d)
        check(open(x, 'rb').read() == b'precious data\n',
              'a failed create changed the existing file')
        left = [n for n in os.listdir(d) if n != 'X']
        check(not left, 'scratch files left behind: %s' % left)


for _i, (_args, _same) in enumerate(FAILING_CREATES):
    runner.add('create_fails_%d:%s' % (_i, ' '.join(_args)), create_fails,
               _args, _same)


@runner.case()
def convert_into_existing_target_fails_cleanly():
    """convert's create of the target fails: the old target is kept."""
    common.skip_if_qemu_tools('QEMU deletes the existing target')
    t = common.tools()
    with common.TempDir() as d:
        src = os.path.join(d, 'src.raw')
        write_random(src, 1000, 7)
        dst = os.path.join(d, 'dst.qcow2')
        with open(dst, 'wb') as f:
            f.write(b'keep me\n')
        run([t.img, 'convert', '-O', 'qcow2', '-o', 'cluster_size=3', src,
             dst], rc=1, cwd=d)
        check(open(dst, 'rb').read() == b'keep me\n',
              'the existing target was changed')


@runner.case()
def successful_create_replaces_in_place():
    """Success still overwrites an existing file in place, as qemu-img
    does (same inode: hard links and permissions survive)."""
    t = common.tools()
    with common.TempDir() as d:
        x = os.path.join(d, 'X')
        with open(x, 'wb') as f:
            f.write(b'old\n')
        os.chmod(x, 0o640)
        ino = os.stat(x).st_ino
        run([t.img, 'create', '-f', 'qcow2', x, '1M'], cwd=d)
        st = os.stat(x)
        check(st.st_ino == ino and (st.st_mode & 0o777) == 0o640,
              'create replaced the file instead of rewriting it')
        common.qemu_check_clean(x)
        check(sorted(os.listdir(d)) == ['X'], 'stray files: %s'
              % os.listdir(d))


if __name__ == '__main__':
    sys.exit(runner.main())
