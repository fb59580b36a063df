#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""SIGKILL in the middle of snapshot create, delete and apply.

The image holds data at both ends and two snapshots made by qemu-img.
Two sizes of kill-at-every-I/O of `$STRATA_IMG snapshot` (kills at a
random moment are not used: they cannot show that they landed inside the
operation):

  at_io    on a small image: a dry run counts the writes and flushes the
           operation makes (blkdebug's print-counts, with the index at
           which the operation announced its end: the "snapshot_done"
           event, after its last I/O and before the close's), then for
           every N up to that end the blkdebug filter kills the process
           (SIGKILL, inject-error.action=kill) just before the Nth one
           reaches the file: a crash at every point between two I/Os,
           each one before the operation finished.
  at_io_big  the same on an image with more than 100,000 allocated
           clusters (512-byte clusters, preallocation=metadata), killed
           at a sample of I/Os spread over the whole operation: the
           first, both sides of the commit point (the header update),
           evenly in between, and the last.

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

import json
import os
import re
import signal
import subprocess
import sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402
import snaplib  # noqa: E402

MiB = 1 << 20
VERBOSE = bool(os.environ.get('STRATA_CRASH_VERBOSE'))

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

    def make(self, path, prealloc, cluster_size=65536):
        t = common.tools()
        opts = 'cluster_size=%d' % cluster_size + (
            ',preallocation=metadata' if prealloc else '')
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


COUNTS_RE = re.compile(r'blkdebug: reads=\d+ writes=(\d+) flushes=(\d+) '
                       r'injected=[01]( event_at=(\d+|none))?')


def io_counts(img, args, event=None):
    """Writes + flushes of the whole run (open, operation, close) and, if
    event is given, how many had passed when the operation announced it
    (blkdebug fails the first I/O after it: the close's, harmlessly)."""
    t = common.tools()
    opts = ('driver=qcow2,file.driver=blkdebug,file.filename=%s,'
            'file.print-counts=on' % img)
    if event:
        opts += ',file.inject-error.event=%s' % event
    r = common.run([t.img, 'snapshot', '--image-opts'] + args + [opts],
                   rc=None)
    m = COUNTS_RE.search(r.err)
    common.check(m, 'no counts from blkdebug:\n' + r.describe())
    total = int(m.group(1)) + int(m.group(2))
    if not event:
        common.check(r.rc == 0, 'the dry run failed:\n' + r.describe())
        return total, None
    common.check(m.group(3) and m.group(4) != 'none',
                 'event %s never came:\n%s' % (event, r.describe()))
    return total, int(m.group(4))


def kill_at(base, img, op, lay, n, end):
    """Kills the operation just before its nth write or flush and checks
    what it left; n must lie in the operation (before its end)."""
    t = common.tools()
    args = OPS[op][0]
    opts = 'driver=qcow2,file.driver=blkdebug,file.filename=%s' % img
    common.check(1 <= n <= end, 'kill point %d is not inside the operation '
                 '(its I/Os are 1..%d)' % (n, end))
    snaplib.sparse_copy(base, img)
    p = subprocess.run([t.img, 'snapshot', '--image-opts'] + args +
                       [opts + ',file.inject-error.any=%d,'
                        'file.inject-error.action=kill' % n],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    common.check(p.returncode == -signal.SIGKILL,
                 'not killed at I/O %d: exit %d\n%s'
                 % (n, p.returncode, p.stderr.decode()))
    return after_kill(img, op, lay, '%s killed at I/O %d of %d'
                      % (op, n, end))


def operation_span(base, img, op):
    """(last I/O of the operation, I/O of its commit point, all I/Os of
    the run).  The last I/O is before the close's: a kill there still
    interrupts the operation."""
    args = OPS[op][0]
    snaplib.sparse_copy(base, img)
    total, _ = io_counts(img, args)
    snaplib.sparse_copy(base, img)
    _, end = io_counts(img, args, 'snapshot_done')
    snaplib.sparse_copy(base, img)
    _, before_commit = io_counts(img, args, 'snapshot_header_update')
    common.check(0 < before_commit < end < total,
                 'I/O counts out of order: commit after %d, end %d, total '
                 '%d' % (before_commit, end, total))
    return end, before_commit + 1, total


def at_io(op):
    common.skip_if_qemu_tools('the blkdebug options are ours')
    lay = Layout(16 * MiB)
    with snaplib.ShmDir() as d:
        base = os.path.join(d, 'base.qcow2')
        img = os.path.join(d, 'img.qcow2')
        lay.make(base, prealloc=False)
        end, commit, total = operation_span(base, img, op)
        seen = {'old': 0, 'new': 0}
        for n in range(1, end + 1):
            seen[kill_at(base, img, op, lay, n, end)] += 1
        common.check(seen['old'] and seen['new'],
                     'the kills did not reach both sides of the commit '
                     'point: %s' % seen)
        print('  %s: %d of %d kills left the old state (commit at I/O %d; '
              '%d more I/Os at close)'
              % (op, seen['old'], end, commit, total - end))


BIG_CLUSTERS = 100000
BIG_SAMPLES = int(os.environ.get('STRATA_CRASH_SAMPLES', '3'))


def allocated_clusters(img):
    t = common.tools()
    r = common.run([t.qemu_img, 'check', '--output=json', img], rc=None)
    return json.loads(r.out).get('allocated-clusters', 0)


def at_io_big(op):
    common.skip_if_qemu_tools('the blkdebug options are ours')
    # 64 MiB of 512-byte clusters, every one allocated
    lay = Layout(64 * MiB)
    with snaplib.ShmDir() as d:
        base = os.path.join(d, 'base.qcow2')
        img = os.path.join(d, 'img.qcow2')
        lay.make(base, prealloc=True, cluster_size=512)
        n_alloc = allocated_clusters(base)
        common.check(n_alloc >= BIG_CLUSTERS, 'only %d allocated clusters'
                     % n_alloc)
        end, commit, total = operation_span(base, img, op)
        points = {1, end, commit - 1, commit, commit + 1}
        points |= {1 + (end - 1) * i // (BIG_SAMPLES + 1)
                   for i in range(1, BIG_SAMPLES + 1)}
        seen = {'old': 0, 'new': 0}
        for n in sorted(p for p in points if 1 <= p <= end):
            seen[kill_at(base, img, op, lay, n, end)] += 1
        common.check(seen['old'] and seen['new'],
                     'the kills did not reach both sides of the commit '
                     'point: %s' % seen)
        print('  %s: %d allocated clusters, %d I/Os (commit at %d), %d '
              'kills: %s' % (op, n_alloc, end, commit, sum(seen.values()),
                             seen))


for name in sorted(OPS):
    runner.add('at_io/' + name, at_io, name)
for name in sorted(OPS):
    runner.add('at_io_big/' + name, at_io_big, name)


if __name__ == '__main__':
    sys.exit(runner.main())
