#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Host space given back, side by side with qemu-img and qemu-io (QEMU's
pass-discard-snapshot, on by default, and pass-discard-request).

Each case runs the same steps once with QEMU's tools and once with the
tools under test, on the same kind of image, and compares how many bytes
of the image file the host holds (st_blocks) before and after:

- deleting a snapshot whose clusters only it held gives them back;
- so does a guest discard (qemu-io `discard`) and a zero write that may
  unmap (`write -z -u`) of clusters no snapshot holds;
- with the option off, nothing is given back;
- a cluster a snapshot still holds is not given back by a discard.

Data and metadata must stay right: `qemu-img check` clean after every
step, and every byte that should remain reads back.
"""

import os
import sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402
from common import check, run  # noqa: E402

runner = common.Runner()
MiB = 1024 * 1024


def held(path):
    """Bytes of the file the host holds."""
    return os.stat(path).st_blocks * 512


def io(tool, img, *cmds, opts=None):
    """A qemu-io-compatible tool's commands on img (opts: open options)."""
    if opts:
        argv = [tool, '-c', 'open -o driver=qcow2,%s %s' % (opts, img)]
    else:
        argv = [tool, '-f', 'qcow2', img]
    for c in cmds:
        argv += ['-c', c]
    r = run(argv)
    check('failed' not in r.out, r.describe())
    return r


def fresh(d, name):
    t = common.tools()
    img = os.path.join(d, name)
    run([t.qemu_img, 'create', '-q', '-f', 'qcow2', img, '64M'])
    return img


def both(d, steps):
    """steps(img, img_tool, io_tool) once per pair of tools; the held
    bytes it reports for each, QEMU's first."""
    t = common.tools()
    out = []
    for label, img_tool, io_tool in (('qemu', t.qemu_img, t.qemu_io),
                                     ('ours', t.img, t.io)):
        img = fresh(d, '%s.qcow2' % label)
        out.append(steps(img, img_tool, io_tool))
        run([t.qemu_img, 'check', '-q', img])
    return out


def close(ours, qemu, slack=2 * MiB):
    """Equal but for a few metadata clusters laid out differently."""
    return abs(ours - qemu) <= slack


@runner.case()
def snapshot_delete_gives_space_back():
    """32 MiB that only a snapshot held: deleting it gives them back,
    as qemu-img's delete does; with pass-discard-snapshot=off, not."""
    t = common.tools()

    def steps(img, img_tool, io_tool, opts=None):
        io(t.qemu_io, img, 'write -P 0x11 0 32M')
        run([img_tool, 'snapshot', '-c', 's1', img])
        io(t.qemu_io, img, 'write -P 0x22 0 32M')
        before = held(img)
        if opts:
            run([img_tool, 'snapshot', '-d', 's1', '--image-opts',
                 'driver=qcow2,file.filename=%s,%s' % (img, opts)])
        else:
            run([img_tool, 'snapshot', '-d', 's1', img])
        io(t.qemu_io, img, 'read -P 0x22 0 32M')
        return before - held(img)

    with common.TempDir() as d:
        qemu, ours = both(d, steps)
        check(qemu >= 30 * MiB, 'QEMU gave back only %d bytes' % qemu)
        check(close(ours, qemu), 'gave back %d bytes, QEMU %d' % (ours, qemu))
        qemu, ours = both(d, lambda *a: steps(
            *a, opts='pass-discard-snapshot=off'))
        check(qemu < MiB and ours < MiB,
              'with the option off: %d bytes (QEMU %d)' % (ours, qemu))


@runner.case()
def guest_discard_gives_space_back():
    """discard and write -z -u of clusters only the image holds give the
    space back (pass-discard-request), a discard of clusters a snapshot
    still holds does not; with the option off, nothing goes back."""
    t = common.tools()

    def steps(img, img_tool, io_tool, opts=None):
        io(t.qemu_io, img, 'write -P 0x33 0 48M')
        run([t.qemu_img, 'snapshot', '-c', 'keep', img])
        io(t.qemu_io, img, 'write -P 0x44 0 32M')
        start = held(img)
        io(io_tool, img, 'discard 0 8M', 'write -z -u 8M 8M', opts=opts)
        mid = held(img)
        # 32M..48M: still the snapshot's too
        io(io_tool, img, 'discard 32M 16M', opts=opts)
        end = held(img)
        io(t.qemu_io, img, 'read -P 0 0 16M', 'read -P 0x44 16M 16M',
           'read -P 0 32M 16M')
        run([t.qemu_img, 'snapshot', '-a', 'keep', img])
        io(t.qemu_io, img, 'read -P 0x33 0 48M')
        return start - mid, mid - end

    with common.TempDir() as d:
        (qemu, q_shared), (ours, o_shared) = both(d, steps)
        check(qemu >= 15 * MiB, 'QEMU gave back only %d bytes' % qemu)
        check(close(ours, qemu), 'gave back %d bytes, QEMU %d' % (ours, qemu))
        check(o_shared < MiB and q_shared < MiB,
              'shared clusters given back: %d bytes (QEMU %d)'
              % (o_shared, q_shared))
        (qemu, _), (ours, _) = both(d, lambda *a: steps(
            *a, opts='pass-discard-request=off'))
        check(qemu < MiB and ours < MiB,
              'with the option off: %d bytes (QEMU %d)' % (ours, qemu))


if __name__ == '__main__':
    sys.exit(runner.main())
