#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Backing chains are interchangeable with QEMU's.

- Chains of depth 1, 3 and 10 built by us (`create -b -F`, writes through
  $STRATA_IO while each layer was the top, layers larger and smaller than
  their backing file): `qemu-img info --backing-chain` follows them, our
  `info --backing-chain` reports the same chain, qemu-img reads every level
  identically to its shadow, `qemu-img check` is clean, and our `map`
  equals qemu-img's.
- The same chains built by qemu-img/qemu-io: we read every level
  identically (convert to raw), and `map --output=json|human` matches.
- Relative backing names survive moving the whole chain to another
  directory; absolute names survive a change of the working directory
  but not a move (both tools then fail to open, naming the missing file);
  `../base` style names from a subdirectory.
"""

import os
import shutil
import sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import chainlib  # noqa: E402
import common  # noqa: E402

MiB = 1 << 20
runner = common.Runner()

SIZES = {
    1: [8 * MiB],
    3: [8 * MiB, 12 * MiB, 6 * MiB],
    10: [4 * MiB, 6 * MiB, 3 * MiB, 5 * MiB, 5 * MiB, 8 * MiB, 2 * MiB,
         4 * MiB, 6 * MiB, 7 * MiB],
}


def check_levels(paths, shadows, reader):
    """Every level reads like its shadow, through `reader`'s convert."""
    for p, s in zip(paths, shadows):
        out = chainlib.read_raw(reader, p, p + '.read')
        diff = common.files_equal(out, s.path)
        if diff:
            common.fail('%s read by %s differs from its shadow: %s'
                        % (p, os.path.basename(reader), diff))
        os.unlink(out)


def ours_case(depth):
    t = common.tools()
    with chainlib.ShmDir() as d:
        paths, shadows = chainlib.build_chain(
            d, depth, SIZES[depth], 10 + depth,
            nops=24 if depth < 10 else 10)
        top = paths[-1]
        qinfo = chainlib.info_chain(t.qemu_img, top)
        common.check(len(qinfo) == depth,
                     'qemu-img info --backing-chain lists %d images, not %d'
                     % (len(qinfo), depth))
        for i, info in enumerate(qinfo):
            level = depth - 1 - i
            common.check(info['filename'] == paths[level],
                         'level %d is %s' % (level, info['filename']))
            if level:
                common.check(info.get('backing-filename') ==
                             os.path.basename(paths[level - 1]) and
                             info.get('backing-filename-format') == 'qcow2',
                             'backing name/format of %s: %r' % (paths[level],
                                                                info))
        ours = chainlib.info_chain(t.img, top)
        common.check(chainlib.chain_summary(ours) ==
                     chainlib.chain_summary(qinfo),
                     'our info --backing-chain differs:\n%r\n%r'
                     % (chainlib.chain_summary(ours),
                        chainlib.chain_summary(qinfo)))
        for p in paths:
            common.qemu_check_clean(p)
        check_levels(paths, shadows, t.qemu_img)
        for p in (paths[-1], paths[0]):
            qm = chainlib.map_json(t.qemu_img, p)
            om = chainlib.map_json(t.img, p)
            common.check(qm == om, 'map of %s differs:\nqemu:\n%s\nours:\n%s'
                         % (p, qm, om))


def qemu_case(depth):
    t = common.tools()
    with chainlib.ShmDir() as d:
        paths, shadows = chainlib.build_chain(
            d, depth, SIZES[depth], 20 + depth, by_qemu=True,
            nops=24 if depth < 10 else 10)
        check_levels(paths, shadows, t.img)
        top = paths[-1]
        for out in ('json', 'human'):
            qm = common.run([t.qemu_img, 'map', '--output=' + out, top]).out
            om = common.run([t.img, 'map', '--output=' + out, top]).out
            common.check(qm == om, 'map --output=%s differs:\nqemu:\n%s\n'
                         'ours:\n%s' % (out, qm, om))
        # part of the image, as qemu-img map --start-offset/--max-length
        extra = ['--start-offset=%d' % (MiB + 4096), '--max-length=%d' % (3 * MiB)]
        qm = chainlib.map_json(t.qemu_img, top, extra)
        om = chainlib.map_json(t.img, top, extra)
        common.check(qm == om, 'partial map differs:\n%s\n%s' % (qm, om))
        ours = chainlib.info_chain(t.img, top)
        qinfo = chainlib.info_chain(t.qemu_img, top)
        common.check(chainlib.chain_summary(ours) ==
                     chainlib.chain_summary(qinfo),
                     'info --backing-chain differs on a QEMU chain')


for _depth in (1, 3, 10):
    runner.add('depth %d by us, read by qemu' % _depth, ours_case, _depth)
    runner.add('depth %d by qemu, read by us' % _depth, qemu_case, _depth)


def move_case(relative):
    t = common.tools()
    with chainlib.ShmDir() as d:
        src = os.path.join(d, 'a')
        os.mkdir(src)
        sizes = [4 * MiB, 4 * MiB, 4 * MiB]
        paths, shadows = chainlib.build_chain(src, 3, sizes, 77,
                                              relative=relative, nops=12)
        want = chainlib.sha256(shadows[-1].path)
        # another working directory: both kinds of names still work
        for tool in (t.img, t.qemu_img):
            out = os.path.join(d, 'x.raw')
            common.run([tool, 'convert', '-O', 'raw',
                        os.path.relpath(paths[-1], d), 'x.raw'], cwd=d)
            common.check(chainlib.sha256(out) == want,
                         '%s read the chain differently from another cwd'
                         % tool)
            os.unlink(out)
        dst = os.path.join(d, 'b')
        shutil.move(src, dst)
        top = os.path.join(dst, os.path.basename(paths[-1]))
        for tool in (t.img, t.qemu_img):
            out = os.path.join(d, 'y.raw')
            res = common.run([tool, 'convert', '-O', 'raw', top, out],
                             rc=None)
            if relative:
                common.check(res.rc == 0 and chainlib.sha256(out) == want,
                             'moved relative chain unreadable by %s\n%s'
                             % (tool, res.describe()))
                os.unlink(out)
            else:
                common.check(res.rc != 0 and paths[1] in res.err and
                             'No such file or directory' in res.err,
                             'moved absolute chain: %s should fail naming '
                             'the missing %s\n%s' % (tool, paths[1],
                                                     res.describe()))


runner.add('relative names: chain moved', move_case, True)
runner.add('absolute names: chain moved', move_case, False)


def subdir_case():
    """An overlay in a subdirectory naming ../base: info prints the actual
    path like qemu-img, and both read it identically."""
    t = common.tools()
    with chainlib.ShmDir() as d:
        base = os.path.join(d, 'base.qcow2')
        os.mkdir(os.path.join(d, 'sub'))
        top = os.path.join(d, 'sub', 'top.qcow2')
        chainlib.create(t.img, base, 2 * MiB)
        common.run_io(t.io, base, ['write -P 0x5a 0 1M'])
        chainlib.create(t.img, top, backing='../base.qcow2')
        common.run_io(t.io, top, ['write -P 0x6b 512k 1M'])
        for args in ([], ['--backing-chain']):
            q = common.run([t.qemu_img, 'info'] + args + [top]).out
            o = common.run([t.img, 'info'] + args + [top]).out
            ql = [x for x in q.splitlines() if x.startswith('backing file')]
            ol = [x for x in o.splitlines() if x.startswith('backing file')]
            common.check(ql == ol and ql, 'backing lines differ:\n%s\n%s'
                         % (ql, ol))
        common.run_io(t.io, top, ['read -P 0x5a 0 512k', 'read -P 0x6b 512k 1M',
                                  'read -P 0 1536k 512k'])
        common.run_io(t.qemu_io, top, ['read -P 0x5a 0 512k',
                                       'read -P 0x6b 512k 1M'])


runner.add('../base from a subdirectory', subdir_case)

if __name__ == '__main__':
    sys.exit(runner.main())
