#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Snapshot operations with an I/O error at every write and flush.

The image (made by qemu-img: data, two snapshots, more data) is opened by
`$STRATA_IMG snapshot --image-opts` through the blkdebug filter
(file.driver=blkdebug), which fails the Nth write-or-flush
(file.inject-error.any=N).  A dry run counts the writes and flushes each
of create, delete and apply performs; then for every N up to that count:

  once    only that request fails.  The operation must fail with a clear
          message, and the image (as qemu-img sees it: snapshot list,
          active content, every snapshot's content) must be exactly the old
          one or exactly the new one.  Old: `qemu-img check` clean, not
          even a leak (the operation was undone).  New (the failure came
          after the commit point): clean but for leaks.
  always  that request and every later one fail, as if the disk died (the
          state it leaves is what a crash at that point leaves).  Old or
          new again, and `qemu-img check -r leaks` must repair it to clean
          having found nothing but leaks and COPIED flags that disagree only
          because of them.

In-process unit tests (tests/unit/test-qcow2-snapshot.c) run the same
loops with smaller clusters; this one has QEMU judge the result.
"""

import os
import re
import shutil
import sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402
import snaplib  # noqa: E402

MiB = 1 << 20

OPS = [
    ('create', ['-c', 'new']),
    ('delete', ['-d', 's1']),
    ('apply', ['-a', 's1']),
]

runner = common.Runner()


def make_base(path):
    t = common.tools()
    common.run([t.qemu_img, 'create', '-q', '-f', 'qcow2', '-o',
                'cluster_size=65536', path, '4M'])
    common.run_io(t.qemu_io, path, ['write -P 0x61 0 1536k'])
    common.run([t.qemu_img, 'snapshot', '-c', 's1', path])
    common.run_io(t.qemu_io, path, ['write -P 0x62 1M 1536k'])
    common.run([t.qemu_img, 'snapshot', '-c', 's2', path])
    common.run_io(t.qemu_io, path, ['write -P 0x63 3M 512k'])


def state(d, img):
    """What qemu-img sees: names and the digest of every content."""
    names = snaplib.qemu_list(img)
    raw = os.path.join(d, 'state.raw')
    snaplib.active_raw(img, raw)
    parts = ['active=' + common.sha256(raw)]
    for sid, name in names:
        snaplib.snapshot_raw(img, name, raw)
        parts.append('%s:%s=%s' % (sid, name, common.sha256(raw)))
    return ' '.join(parts)


def blkdebug_opts(img, n=None, once=True, counts=False):
    o = 'driver=qcow2,file.driver=blkdebug,file.filename=%s' % img
    if n is not None:
        o += ',file.inject-error.any=%d,file.inject-error.once=%s' % (
            n, 'on' if once else 'off')
    if counts:
        o += ',file.print-counts=on'
    return o


COUNTS_RE = re.compile(r'blkdebug: reads=\d+ writes=(\d+) flushes=(\d+)')


def run_op(d, base, args, once):
    t = common.tools()
    img = os.path.join(d, 'work.qcow2')
    old_q = state(d, base)
    old = snaplib.fast_state(base)
    # dry run: the new state, and how many writes and flushes it takes
    shutil.copyfile(base, img)
    r = common.run([t.img, 'snapshot', '--image-opts'] + args +
                   [blkdebug_opts(img, counts=True)])
    m = COUNTS_RE.search(r.err)
    common.check(m, 'no counts from blkdebug:\n' + r.describe())
    total = int(m.group(1)) + int(m.group(2))
    new_q = state(d, img)
    new = snaplib.fast_state(img)
    common.check(old != new and old_q != new_q,
                 'the operation changed nothing')
    common.check(total >= 3, 'only %d writes and flushes?' % total)
    # each N is then judged by qemu-img check and by the Python reader
    # (which agrees with QEMU on these two states: its digests differ
    # exactly where QEMU's do)
    common.check((old == new) == (old_q == new_q), 'readers disagree')
    seen_new = seen_old = 0
    for n in range(1, total + 1):
        shutil.copyfile(base, img)
        r = common.run([t.img, 'snapshot', '--image-opts'] + args +
                       [blkdebug_opts(img, n, once)], rc=None)
        st = snaplib.fast_state(img)
        what = '%s with %s fault at %d of %d' % (' '.join(args),
                                                 'a single' if once
                                                 else 'a permanent', n, total)
        common.check(st in (old, new), '%s: state in between\n%s\nold %s\n'
                     'new %s' % (what, st, old, new))
        if r.rc == 0:
            # the failed request came after the operation (the last flush
            # at close): it must have taken effect
            common.check(st == new, '%s: success but old state' % what)
        else:
            common.check(r.rc == 1 and 'Could not' in r.err,
                         '%s: no clear error\n%s' % (what, r.describe()))
        if once and st == old:
            common.qemu_check_clean(img)
            seen_old += 1
        elif once:
            common.qemu_check_clean(img, allow_leaks=True)
            seen_new += 1
        else:
            snaplib.check_leaks_only(img, what)
            seen_new += st == new
            seen_old += st == old
    # a fault early in the operation leaves the old state
    common.check(seen_old > 0, 'no fault left the old state')


def case(args, once):
    common.skip_if_qemu_tools('the blkdebug options are ours')
    with snaplib.ShmDir() as d:
        base = os.path.join(d, 'base.qcow2')
        make_base(base)
        run_op(d, base, args, once)


for name, args in OPS:
    runner.add('%s/once' % name, case, args, True)
    runner.add('%s/always' % name, case, args, False)


@runner.case('named_event')
def named_event():
    """inject-error.event: the header write of a create fails; the image
    is unchanged and clean."""
    common.skip_if_qemu_tools('the blkdebug options are ours')
    t = common.tools()
    with snaplib.ShmDir() as d:
        base = os.path.join(d, 'base.qcow2')
        make_base(base)
        old = state(d, base)
        r = common.run([t.img, 'snapshot', '--image-opts', '-c', 'x',
                        'driver=qcow2,file.driver=blkdebug,file.filename=%s,'
                        'file.inject-error.event=snapshot_header_update'
                        % base], rc=1)
        common.check('Could not update the image header' in r.err,
                     'message: ' + r.err)
        common.check(state(d, base) == old, 'the image changed')
        common.qemu_check_clean(base)


if __name__ == '__main__':
    sys.exit(runner.main())
