#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""SIGKILL in the middle of snapshot create, delete and apply.

The image holds data at both ends and two snapshots made by qemu-img.
Two ways of killing `$STRATA_IMG snapshot`:

  at_io    on a small image: a dry run counts the writes and flushes the
           operation makes, then for every N the blkdebug filter kills
           the process (SIGKILL, inject-error.action=kill) just before
           the Nth one reaches the file: a crash at every point between
           two I/Os.
  by_time  on an 8 GiB image with every cluster's metadata preallocated
           (one operation walks 128k clusters and takes a while):
           killed at a random moment (fixed seeds) between the end of
           opening the image and the end of the operation.

After each kill:
  - the image opens, and qemu-img lists either the old or the new set of
    snapshots;
  - the active image and every snapshot read as before, or (apply) as the
    applied snapshot;
  - `qemu-img check` finds nothing but leaks (and COPIED flags wrong only
    because of a leaked reference), and `qemu-img check -r leaks` makes it
    clean;
  - we can carry on: the operation run again (or, when it took effect,
    another create) succeeds, and the image checks clean after -r leaks.
"""

import os
import random
import re
import signal
import subprocess
import sys
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402
import snaplib  # noqa: E402

MiB = 1 << 20
GiB = 1 << 30
BIG = 8 * GiB
KILLS = int(os.environ.get('STRATA_CRASH_KILLS', '4'))
SEED_SHIFT = int(os.environ.get('STRATA_TEST_SEED', '0'))
VERBOSE = bool(os.environ.get('STRATA_CRASH_VERBOSE'))

# the big image is sparse, but longer than common's default file limit
common.FSIZE_LIMIT = 2 * BIG

runner = common.Runner()


class Layout:
    """Where the data is, for an image of `size` bytes."""

    def __init__(self, size):
        self.size = size
        h = self.high = size // 2 + size // 8
        self.active = [(0, 512 << 10, 0x7c), (512 << 10, 512 << 10, 0x5a),
                       (h, 64 << 10, 0x8d), (h + (64 << 10), 960 << 10, 0x6b)]
        self.s1 = [(0, MiB, 0x5a), (h, MiB, 0x6b)]
        self.s2 = [(0, 512 << 10, 0x7c), (512 << 10, 512 << 10, 0x5a),
                   (h, MiB, 0x6b)]
        self.content = {'s1': self.s1, 's2': self.s2, 'new': self.active,
                        'again': None}

    def make(self, path, prealloc):
        t = common.tools()
        opts = 'cluster_size=65536' + (',preallocation=metadata'
                                       if prealloc else '')
        common.run([t.qemu_img, 'create', '-q', '-f', 'qcow2', '-o', opts,
                    path, str(self.size)])
        common.run_io(t.qemu_io, path, ['write -P 0x5a 0 1M',
                                        'write -P 0x6b %d 1M' % self.high])
        common.run([t.qemu_img, 'snapshot', '-c', 's1', path])
        common.run_io(t.qemu_io, path, ['write -P 0x7c 0 512k'])
        common.run([t.qemu_img, 'snapshot', '-c', 's2', path])
        common.run_io(t.qemu_io, path, ['write -P 0x8d %d 64k' % self.high])


OPS = {
    # op: (args, old snapshots, new snapshots)
    'create': (['-c', 'new'], ['s1', 's2'], ['s1', 's2', 'new']),
    'delete': (['-d', 's1'], ['s1', 's2'], ['s2']),
    'apply': (['-a', 's1'], ['s1', 's2'], ['s1', 's2']),
}


def read_cmds(regions):
    return ['read -P 0x%02x %d %d' % (b, off, n) for off, n, b in regions]


def active_matches(img, regions):
    t = common.tools()
    r = common.run([t.qemu_io, '-f', 'qcow2', '-r', '-U'] +
                   common.io_args(read_cmds(regions)) + [img], rc=None)
    return r.rc == 0 and 'Pattern verification failed' not in r.out


def snapshot_reads(img, name, regions):
    t = common.tools()
    opts = 'driver=qcow2,file.filename=%s,snapshot.name=%s,read-only=on' \
        % (img, name)
    r = common.run([t.io, '-r', '--image-opts'] +
                   common.io_args(read_cmds(regions)) + [opts])
    common.check('Pattern verification failed' not in r.out,
                 'snapshot %s reads wrong:\n%s' % (name, r.describe()))


def after_kill(img, op, lay, what):
    """Checks the image a kill left; returns 'old' or 'new'."""
    t = common.tools()
    args, old, new = OPS[op]
    names = snaplib.names(img)
    common.check(names in (old, new), '%s: snapshots %s, neither %s nor %s'
                 % (what, names, old, new))
    if op == 'apply':
        # the names stay: the content tells the states apart
        if active_matches(img, lay.active):
            state = 'old'
        else:
            common.check(active_matches(img, lay.s1),
                         '%s: the active image reads as neither state' % what)
            state = 'new'
    else:
        common.check(active_matches(img, lay.active),
                     '%s: the active image changed' % what)
        state = 'old' if names == old else 'new'
    for name in names:
        snapshot_reads(img, name, lay.content[name])
    snaplib.check_leaks_only(img, what)
    if VERBOSE:
        print('  %s: %s' % (what, state))
    # carry on from there
    again = args if state == 'old' else ['-c', 'again']
    common.run([t.img, 'snapshot'] + again + [img])
    common.run([t.qemu_img, 'check', '-q', '-r', 'leaks', img])
    common.qemu_check_clean(img)
    return state


COUNTS_RE = re.compile(r'blkdebug: reads=\d+ writes=(\d+) flushes=(\d+)')


def at_io(op):
    common.skip_if_qemu_tools('the blkdebug options are ours')
    t = common.tools()
    args = OPS[op][0]
    lay = Layout(16 * MiB)
    with snaplib.ShmDir() as d:
        base = os.path.join(d, 'base.qcow2')
        img = os.path.join(d, 'img.qcow2')
        lay.make(base, prealloc=False)
        opts = 'driver=qcow2,file.driver=blkdebug,file.filename=%s' % img
        snaplib.sparse_copy(base, img)
        r = common.run([t.img, 'snapshot', '--image-opts'] + args +
                       [opts + ',file.print-counts=on'])
        m = COUNTS_RE.search(r.err)
        common.check(m, 'no counts from blkdebug:\n' + r.describe())
        total = int(m.group(1)) + int(m.group(2))
        seen = {'old': 0, 'new': 0}
        for n in range(1, total + 1):
            snaplib.sparse_copy(base, img)
            p = subprocess.run([t.img, 'snapshot', '--image-opts'] + args +
                               [opts + ',file.inject-error.any=%d,'
                                'file.inject-error.action=kill' % n],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            common.check(p.returncode == -signal.SIGKILL,
                         'not killed at I/O %d: exit %d\n%s'
                         % (n, p.returncode, p.stderr.decode()))
            seen[after_kill(img, op, lay, '%s killed at I/O %d of %d'
                            % (op, n, total))] += 1
        common.check(seen['old'] and seen['new'],
                     'the kills did not reach both sides of the commit '
                     'point: %s' % seen)
        print('  %s: %d of %d kills left the old state'
              % (op, seen['old'], total))


def by_time(op):
    common.skip_if_qemu_tools('snapshot.name= is our open option')
    t = common.tools()
    args = OPS[op][0]
    lay = Layout(BIG)
    rnd = random.Random(1000 + sorted(OPS).index(op) + SEED_SHIFT)
    with snaplib.ShmDir() as d:
        base = os.path.join(d, 'base.qcow2')
        img = os.path.join(d, 'img.qcow2')
        lay.make(base, prealloc=True)
        snaplib.sparse_copy(base, img)
        opened, took = [], []
        for _ in range(2):
            t0 = time.monotonic()
            common.run([t.img, 'snapshot', '-l', img])
            opened.append(time.monotonic() - t0)
            snaplib.sparse_copy(base, img)
            t0 = time.monotonic()
            common.run([t.img, 'snapshot'] + args + [img])
            took.append(time.monotonic() - t0)
        opened, took = min(opened), min(took)
        seen = {'old': 0, 'new': 0}
        for i in range(KILLS):
            snaplib.sparse_copy(base, img)
            delay = rnd.uniform(0.9 * opened, took)
            p = subprocess.Popen([t.img, 'snapshot'] + args + [img],
                                 stdout=subprocess.DEVNULL,
                                 stderr=subprocess.PIPE)
            time.sleep(delay)
            p.send_signal(signal.SIGKILL)
            p.communicate()
            seen[after_kill(img, op, lay, '%s killed after %.3fs of %.3fs '
                            '(opening takes %.3fs)'
                            % (op, delay, took, opened))] += 1
        print('  %s: %d of %d kills left the old state'
              % (op, seen['old'], KILLS))


for name in sorted(OPS):
    runner.add('at_io/' + name, at_io, name)
for name in sorted(OPS):
    runner.add('by_time/' + name, by_time, name)


if __name__ == '__main__':
    sys.exit(runner.main())
