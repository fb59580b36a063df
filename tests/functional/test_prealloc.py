#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""preallocation=off|metadata|falloc|full on create, next to qemu-img.

For qcow2 (several sizes and cluster sizes) the image we create has the
file length qemu-img's has, the same `qemu-img map --output=json` (for
falloc/full without host offsets: see guest_map), at
least as many allocated blocks as the guest size needs (falloc, full),
reads back as zeroes, and passes qemu-img check.  For raw the file is
fully allocated.  A bad mode gets qemu-img's text and creates no file.
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

runner = common.Runner()


def create(tool, fmt, path, opts, size, rc=0):
    if os.path.exists(path):
        os.unlink(path)
    return common.run([tool, 'create', '-q', '-f', fmt, '-o', opts, path,
                       size], rc=rc)


def guest_map(text):
    """A map without host offsets, adjacent equal runs merged: what the
    guest sees.  (Our falloc/full layout places the L2 tables of images
    that need more than one among the data, QEMU's after it.)"""
    out = []
    for e in json.loads(text):
        e.pop('offset', None)
        key = {k: v for k, v in e.items() if k not in ('start', 'length')}
        if out and out[-1][0] == key and \
                out[-1][1] + out[-1][2] == e['start']:
            out[-1][2] += e['length']
        else:
            out.append([key, e['start'], e['length']])
    return out


@runner.case()
def qcow2_modes_match_qemu():
    t = common.tools()
    with common.TempDir() as d:
        ours, theirs = os.path.join(d, 'o.qcow2'), os.path.join(d, 't.qcow2')
        for mode in ('off', 'metadata', 'falloc', 'full'):
            for size, cs in (('4M', '64k'), ('5M', '4k'), ('3000k', '512')):
                opts = 'preallocation=%s,cluster_size=%s' % (mode, cs)
                create(t.img, 'qcow2', ours, opts, size)
                create(t.qemu_img, 'qcow2', theirs, opts, size)
                what = '%s %s' % (opts, size)
                common.check(os.path.getsize(ours) == os.path.getsize(theirs),
                             '%s: file length %d, qemu-img %d'
                             % (what, os.path.getsize(ours),
                                os.path.getsize(theirs)))
                maps = [common.run([t.qemu_img, 'map', '--output=json', p]).out
                        for p in (theirs, ours)]
                if mode in ('falloc', 'full'):
                    maps = [guest_map(m) for m in maps]
                common.check(maps[0] == maps[1], '%s: map differs:\n%s\n%s'
                             % (what, maps[0], maps[1]))
                if mode in ('falloc', 'full'):
                    blocks = os.stat(ours).st_blocks * 512
                    common.check(blocks >= os.path.getsize(ours) * 9 // 10,
                                 '%s: only %d bytes allocated of %d'
                                 % (what, blocks, os.path.getsize(ours)))
                common.qemu_check_clean(ours)
                res = common.run([t.qemu_img, 'compare', ours, theirs])
                common.check('identical' in res.out, res.describe())


@runner.case()
def raw_modes():
    t = common.tools()
    with common.TempDir() as d:
        path = os.path.join(d, 'o.raw')
        for mode in ('falloc', 'full'):
            create(t.img, 'raw', path, 'preallocation=' + mode, '3M')
            st = os.stat(path)
            common.check(st.st_size == 3 << 20 and
                         st.st_blocks * 512 >= 3 << 20,
                         '%s: size %d, allocated %d' % (mode, st.st_size,
                                                        st.st_blocks * 512))
            with open(path, 'rb') as f:
                common.check(f.read() == bytes(3 << 20), 'not zeroes')


@runner.case()
def bad_modes_create_nothing():
    t = common.tools()
    with common.TempDir() as d:
        for fmt, mode in (('qcow2', 'foo'), ('raw', 'foo'),
                          ('raw', 'metadata')):
            path = os.path.join(d, 'x.' + fmt)
            ours = create(t.img, fmt, path, 'preallocation=' + mode, '1M',
                          rc=1)
            common.check(not os.path.exists(path),
                         '%s %s: a file was left' % (fmt, mode))
            theirs = create(t.qemu_img, fmt, path, 'preallocation=' + mode,
                            '1M', rc=1)
            common.check(common.normalize_prog(ours.err, t.img_name) ==
                         common.normalize_prog(theirs.err, 'qemu-img'),
                         '%s %s: %r vs %r' % (fmt, mode, ours.err, theirs.err))


if __name__ == '__main__':
    sys.exit(runner.main())
