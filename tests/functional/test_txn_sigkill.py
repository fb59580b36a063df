#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""strata-daemon killed with SIGKILL during 4-disk transactions (issue 14).

The daemon runs with --state-dir (the intent log's journal), four qcow2
disks and the test-only writers (STRATA_DAEMON_TEST_COMMANDS=1,
qapi/test.json) writing the sequenced records of blockdev/cut-record.h to
all four.  The test sends QMP transactions over the four disks in a loop
-- rounds of internal snapshot creates, external snapshots (a new overlay
per disk) and mixes (overlays on two disks, internal snapshots on the
other two) -- while a timer kills the daemon with SIGKILL at a random
moment.  Then the daemon is started again on the same state directory
(it completes what the journal holds), the disks are added on their
newest overlays, and:

  - all or nothing: for every round ever sent, its effect (snapshot
    tR in the disk's chain, or the overlay dI-cR.qcow2 under its name)
    is on all four disks or on none; every round the daemon
    acknowledged is on all four;
  - no flushed write lost: the snapshot set of the last acknowledged
    round (the records the transaction flushed) holds exactly records
    1..M (a consistent cut), and each disk's current view still holds
    every record of it;
  - no image is corrupt (qemu-img check; leaks are allowed while the
    disks are open after a kill -- an unflushed guest cluster allocation
    may leak, as in QEMU -- and every image checks clean with no leak
    once the daemon quit normally at the end).

The disks start fresh for every kill (RESET): the writers start their
sequence at 1 in every daemon, so records an earlier daemon wrote (and
may legitimately have lost unflushed) would blur the cut check.  The number
of kills is STRATA_TXN_KILLS (100 by default, as the issue asks).  To keep
that affordable in make check, the daemon restarted after a kill goes on
to carry the next round of writes and kills, and the chains, snapshot
tables and contents are read in Python (read_chain); qemu-img checks every
image after every kill, and at the end agree_with_qemu() proves that
qemu-img reads the same chains, lists and bytes as the Python reader.

Needs $STRATA_DAEMON and qemu-img; skips (77) without them.
"""

import json
import os
import random
import shutil
import signal
import struct
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
from common import Skip, check  # noqa: E402

import snaplib  # noqa: E402
from qmplib import Daemon, cmd  # noqa: E402

runner = common.Runner()

NDEV = 4
REC = 512
SIZE = 4 * 1024 * 1024
RESET = 1
START = '__org.strata_x-test-writers-start'
MAGIC = b'strata-cut-record'
MULT = 2654435761


def strata_daemon():
    strata = os.environ.get('STRATA_DAEMON')
    if not strata or not os.access(strata, os.X_OK):
        raise Skip('STRATA_DAEMON is not set to strata-daemon')
    if not common.oracle('qemu-img'):
        raise Skip('qemu-img not found (the oracle)')
    return os.path.abspath(strata)


def qemu_img(*args, rc=0):
    return common.run(['qemu-img'] + list(args), rc=rc)


OFFSET_MASK = 0x00fffffffffffe00


def backing_name(path):
    """The backing file named in a qcow2 header (relative to the image's
    directory, as the tests write them absolute), or None."""
    with open(path, 'rb') as f:
        h = f.read(20)
        off, size = struct.unpack('>QI', h[8:20])
        if not off:
            return None
        f.seek(off)
        return os.path.basename(f.read(size).decode())


def read_clusters(path, l1, size, out, todo):
    """Fills the clusters of out that todo lists from one qcow2 file's
    tree (l1 = (offset, entries)); returns the clusters it left to the
    backing file (unallocated ones)."""
    h = snaplib.Header(path)
    cs = h.cluster_size
    per_l2 = cs // 8
    left = []
    l2s = {}
    with open(path, 'rb') as f:
        f.seek(l1[0])
        l1e = struct.unpack('>%dQ' % l1[1], f.read(8 * l1[1]))
        for c in todo:
            i, j = divmod(c, per_l2)
            l2_off = l1e[i] & OFFSET_MASK if i < len(l1e) else 0
            if not l2_off:
                left.append(c)
                continue
            if l2_off not in l2s:
                f.seek(l2_off)
                l2s[l2_off] = struct.unpack('>%dQ' % per_l2, f.read(cs))
            e = l2s[l2_off][j]
            check(not e & (1 << 62), '%s: compressed cluster' % path)
            if e & 1:
                continue                # reads as zeroes
            if not e & OFFSET_MASK:
                left.append(c)
                continue
            f.seek(e & OFFSET_MASK)
            n = min(cs, size - c * cs)
            out[c * cs:c * cs + n] = f.read(n).ljust(n, b'\0')
    return left


def read_chain(path, l1, size):
    """A guest view in Python: the clusters one tree maps, the rest from
    the backing files' active trees (zeroes past a shorter backing file).
    The images here hold only plain data clusters (no compression)."""
    out = bytearray(size)
    cs = snaplib.Header(path).cluster_size
    todo = list(range((size + cs - 1) // cs))
    while todo and path:
        todo = read_clusters(path, l1, size, out, todo)
        nxt = backing_name(path)
        if not nxt:
            break
        path = os.path.join(os.path.dirname(path), nxt)
        h = snaplib.Header(path)
        check(h.cluster_size == cs, 'mixed cluster sizes in a chain')
        todo = [c for c in todo if c * cs < h.size]
        l1 = (h.l1_offset, h.l1_size)
    return bytes(out)


class Disks:
    """The four disks, the rounds sent to them and what each round does
    to each disk: ('int', name) or ('ext', overlay file name)."""

    def __init__(self, d):
        self.d = d
        self.rounds = {}        # r -> [effect per disk]
        self.acked = []         # rounds the daemon acknowledged, in order
        self.next_round = 0
        self.node = ['d%d' % i for i in range(NDEV)]  # current top nodes
        self.cache = {}
        qemu_img('create', '-q', '-f', 'qcow2', self.path('d0.qcow2'),
                 str(SIZE))
        for i in range(1, NDEV):
            shutil.copyfile(self.path('d0.qcow2'), self.path('d%d.qcow2' % i))

    def path(self, name):
        return os.path.join(self.d, name)

    def top(self, i):
        """The newest overlay of disk i that exists under its name."""
        top = 'd%d.qcow2' % i
        for r in sorted(self.rounds):
            kind, name = self.rounds[r][i]
            if kind == 'ext' and os.path.exists(self.path(name)):
                top = name
        return top

    def chain(self, i):
        """The files of disk i's chain, top first (cached until
        forget())."""
        top = self.top(i)
        if top not in self.cache:
            self.cache[top] = self._chain(top)
        return self.cache[top]

    def forget(self):
        self.cache = {}

    def _chain(self, top):
        """The chain's files, read from the headers in Python, and each
        file's snapshots (qemu-img's view of both is compared once at
        the end: agree_with_qemu)."""
        chain = []
        f = top
        while f:
            chain.append(f)
            _, entries = snaplib.read_table(self.path(f))
            self.cache[('snapshots', f)] = {e.name for e in entries}
            f = backing_name(self.path(f))
        return chain

    def snapshots(self, i):
        names = set()
        for f in self.chain(i):
            names |= self.snapshots_of(f)
        return names

    def plan(self):
        """The actions of the next round."""
        r = self.next_round
        self.next_round += 1
        kind = r % 3
        effects, actions = [], []
        for i in range(NDEV):
            ext = kind == 1 or (kind == 2 and i < 2)
            if ext:
                name = 'd%d-c%d.qcow2' % (i, r)
                effects.append(('ext', name))
                actions.append({'type': 'blockdev-snapshot-sync', 'data': {
                    'node-name': self.node[i],
                    'snapshot-file': self.path(name),
                    'snapshot-node-name': 'o%dc%d' % (i, r),
                    'format': 'qcow2'}})
            else:
                effects.append(('int', 't%d' % r))
                actions.append({'type': 'blockdev-snapshot-internal-sync',
                                'data': {'device': self.node[i],
                                         'name': 't%d' % r}})
        self.rounds[r] = effects
        return r, actions

    def acknowledged(self, r):
        self.acked.append(r)
        for i, (kind, _) in enumerate(self.rounds[r]):
            if kind == 'ext':
                self.node[i] = 'o%dc%d' % (i, r)

    def verify(self):
        """All or nothing for every round; acknowledged rounds present.
        Returns how many rounds are present."""
        snaps = [self.snapshots(i) for i in range(NDEV)]
        present = 0
        for r, effects in sorted(self.rounds.items()):
            have = []
            for i, (kind, name) in enumerate(effects):
                have.append(name in snaps[i] if kind == 'int'
                            else os.path.exists(self.path(name)))
            check(all(have) or not any(have),
                  'round %d is on disks %s only (%s)'
                  % (r, [i for i in range(NDEV) if have[i]], effects))
            if r in self.acked:
                check(all(have), 'acknowledged round %d is lost' % r)
            present += all(have)
        return present

    def records(self, data, dev):
        """The sequence numbers of the records in a raw view of disk dev,
        each checked to sit where the format puts it."""
        found = set()
        for off in range(0, len(data), REC):
            if not data.startswith(MAGIC, off):
                check(not data[off:off + REC].strip(b'\0'),
                      'disk %d: bytes at %d that are not a record'
                      % (dev, off))
                continue
            text = data[off:off + 64].split(b'\0')[0].split()
            s, c = int(text[1]), int(text[2])
            check(c == (s * MULT) % (1 << 64) and s % NDEV == dev and
                  (s // NDEV) * REC == off,
                  'disk %d: bad record %r at %d' % (dev, text, off))
            found.add(s)
        return found

    def view(self, image, snapshot=None):
        """The guest view of a file of a disk's chain (or of one of its
        snapshots), read in Python: a file with its backing files below."""
        h, entries = snaplib.read_table(self.path(image))
        l1 = (h.l1_offset, h.l1_size)
        if snapshot:
            e = [e for e in entries if e.name == snapshot][0]
            l1 = (e.l1_offset, e.l1_size)
        return read_chain(self.path(image), l1, h.size)

    def qemu_view(self, image, snapshot=None):
        """The same view as qemu-img converts it."""
        out = self.path('view.raw')
        argv = ['convert', '-U', '-f', 'qcow2', '-O', 'raw']
        if snapshot:
            argv += ['-l', 'snapshot.name=%s' % snapshot]
        qemu_img(*(argv + [self.path(image), out]))
        with open(out, 'rb') as f:
            return f.read()

    def agree_with_qemu(self):
        """qemu-img sees the chains and snapshot lists that the Python
        reader above sees, and reads the same bytes for each disk's
        current view and its newest internal snapshot (checked once at
        the end: qemu-img is the slow path)."""
        for i in range(NDEV):
            top = self.top(i)
            out = json.loads(qemu_img('info', '-U', '--backing-chain',
                                      '--output=json', self.path(top)).out)
            chain = [os.path.basename(e['filename']) for e in out]
            check(chain == self.chain(i), 'disk %d: qemu-img sees the '
                  'chain %s, the reader %s' % (i, chain, self.chain(i)))
            newest = None
            for e in out:
                f = os.path.basename(e['filename'])
                names = [sn['name'] for sn in e.get('snapshots', [])]
                check(set(names) == self.snapshots_of(f), '%s: qemu-img '
                      'lists %s, the reader %s'
                      % (f, names, sorted(self.snapshots_of(f))))
                if names and not newest:
                    newest = (f, names[-1])
            views = [(top, None)] + ([newest] if newest else [])
            for f, name in views:
                check(self.view(f, name) == self.qemu_view(f, name),
                      '%s (snapshot %s): the reader and qemu-img read '
                      'different bytes' % (f, name))

    def verify_flushed(self):
        """The last acknowledged round's set is a consistent cut 1..M and
        every disk still holds it.  Returns M (-1: nothing to check)."""
        if not self.acked:
            return -1
        r = self.acked[-1]
        cut = set()
        per_disk = []
        for i, (kind, name) in enumerate(self.rounds[r]):
            if kind == 'int':
                img = [f for f in self.chain(i)
                       if 't%d' % r in self.snapshots_of(f)][0]
                got = self.records(self.view(img, name), i)
            else:
                # the overlay's backing chain below it: the frozen old top
                below = self.chain_below(i, name)
                got = self.records(self.view(below), i)
            per_disk.append(got)
            cut |= got
        m = max(cut, default=0)
        check(cut == set(range(1, m + 1)),
              'round %d is a torn cut: %d records, highest %d' % (r,
                                                                len(cut), m))
        for i in range(NDEV):
            now = self.records(self.view(self.top(i)), i)
            lost = per_disk[i] - now
            check(not lost, 'disk %d lost %d flushed records (e.g. %s)'
                  % (i, len(lost), sorted(lost)[:5]))
        return m

    def snapshots_of(self, f):
        return self.cache[('snapshots', f)]

    def chain_below(self, i, overlay):
        chain = self.chain(i)
        return chain[chain.index(overlay) + 1]

    def check_images(self, allow_leaks, tops_only=False):
        files = ([self.top(i) for i in range(NDEV)] if tops_only else
                 [f for f in sorted(os.listdir(self.d))
                  if f.endswith('.qcow2') and not f.startswith('.')])
        for f in files:
            common.run(['qemu-img', 'check', '-U', '-f', 'qcow2',
                        self.path(f)], rc=(0, 3) if allow_leaks else 0)


T0 = [time.monotonic()]


def trace(what):
    """STRATA_TXN_TRACE=1: where the time goes."""
    if os.environ.get('STRATA_TXN_TRACE'):
        now = time.monotonic()
        print('  %6.2fs %s' % (now - T0[0], what))
        T0[0] = now


def start(binary, disks, state):
    os.environ['STRATA_DAEMON_TEST_COMMANDS'] = '1'
    try:
        dm = Daemon(binary, ['--state-dir', state], disks.d)
    finally:
        os.environ.pop('STRATA_DAEMON_TEST_COMMANDS', None)
    check(dm.send(cmd('qmp_capabilities')) == [{'return': {}}],
          'negotiation failed')
    return dm


def add_disks(dm, disks):
    disks.node = ['d%d' % i for i in range(NDEV)]
    for i in range(NDEV):
        r = dm.send(cmd('blockdev-add', **{
            'driver': 'qcow2', 'node-name': 'd%d' % i,
            'file': {'driver': 'file',
                     'filename': disks.path(disks.top(i))}}))
        check(r == [{'return': {}}], 'blockdev-add d%d: %s' % (i, r))


def kill_during_rounds(dm, disks, rng):
    """Writers on, rounds until the timer's SIGKILL; returns how many
    rounds were acknowledged."""
    r = dm.send(cmd(START, devices=['d%d' % i for i in range(NDEV)],
                    **{'record-size': REC, 'threads': 2,
                       'interval-us': 200}))
    check(r == [{'return': {}}], 'writers: %s' % r)
    delay = rng.uniform(0.05, 1.0)
    timer = threading.Timer(delay, dm.proc.send_signal, [signal.SIGKILL])
    timer.start()
    acked = 0
    try:
        while True:
            rnd, actions = disks.plan()
            try:
                replies = dm.send(cmd('transaction', actions=actions))
            except (OSError, AssertionError, ValueError):
                break           # killed while it ran (or before)
            check(replies == [{'return': {}}],
                  'round %d: %s' % (rnd, replies))
            disks.acknowledged(rnd)
            acked += 1
    finally:
        timer.join()
        dm.proc.wait(timeout=60)
        dm.sock.close()
    check(dm.proc.returncode == -signal.SIGKILL,
          'the daemon ended with %s, not by the kill' % dm.proc.returncode)
    return acked


@runner.case('sigkill_during_transactions')
def sigkill():
    binary = strata_daemon()
    kills = int(os.environ.get('STRATA_TXN_KILLS', '100'))
    rng = random.Random(int(os.environ.get('STRATA_TXN_SEED', '14')))
    with common.TempDir('strata-txn-kill-') as root:
        state = os.path.join(root, 'state')
        totals = {'acked': 0, 'sent': 0, 'records': 0, 'present': 0}
        disks = None
        dm = None
        for k in range(kills):
            if k % RESET == 0:
                d = os.path.join(root, 'disks%d' % k)
                os.mkdir(d)
                if disks:
                    totals['sent'] += len(disks.rounds)
                    disks.check_images(allow_leaks=True)
                    shutil.rmtree(disks.d)
                disks = Disks(d)
            trace('iteration %d' % k)
            if dm is None:
                dm = start(binary, disks, state)
            # else: the daemon restarted after the last kill goes on
            add_disks(dm, disks)
            trace('started')
            totals['acked'] += kill_during_rounds(dm, disks, rng)
            trace('killed')
            # the restart: the journal is completed, then the checks
            dm = start(binary, disks, state)
            trace('restarted')
            leftover = common.live_records(state)
            check(not leftover, 'records left in the journal after the '
                  'restart: %s' % leftover)
            disks.forget()
            # the images a kill can leave mid-write; every file of the
            # set when it is left (above)
            disks.check_images(allow_leaks=True, tops_only=True)
            trace('checked')
            disks.verify()
            trace('verified')
            m = disks.verify_flushed()
            trace('verified flushed')
            totals['records'] += max(m, 0)
            print('  kill %d/%d: %d rounds acknowledged so far, last cut '
                  '%d records' % (k + 1, kills, totals['acked'], m))
        totals['sent'] += len(disks.rounds)
        # a last clean run: opened read-write (rebuilds what a kill left),
        # quit normally, every image clean with no leak
        add_disks(dm, disks)
        check(dm.quit() == 0, 'the daemon did not quit cleanly')
        disks.forget()
        disks.check_images(allow_leaks=False)
        totals['present'] = disks.verify()
        disks.agree_with_qemu()
        print('%d kills: %d rounds acknowledged, %d sent, %d on the last '
              'disks; last cut checks covered %d records'
              % (kills, totals['acked'], totals['sent'], totals['present'],
                 totals['records']))
        check(totals['acked'] >= kills // 2, 'only %d rounds acknowledged '
              'in %d kills: the kills hardly ever landed between rounds'
              % (totals['acked'], kills))


@runner.case('state_dir_option')
def state_dir_option():
    """--state-dir: a directory is created with its journal identity and
    the daemon's lock, and a transaction leaves no record in it; '' runs
    without a journal; a path that cannot be a directory stops the daemon
    at start with the option named."""
    binary = strata_daemon()
    with common.TempDir('strata-txn-state-') as root:
        disks = Disks(root)
        state = os.path.join(root, 'deep', 'state')
        dm = start(binary, disks, state)
        try:
            add_disks(dm, disks)
            r, actions = disks.plan()
            check(dm.send(cmd('transaction', actions=actions)) ==
                  [{'return': {}}], 'transaction failed')
            check(sorted(os.listdir(state)) ==
                  ['daemon.lock', 'journal-id', 'slot-0'],
                  'state directory holds %s' % os.listdir(state))
            left = common.live_records(state)
            check(not left, 'an unfinished record is left after the '
                  'transaction: %s' % left)
        finally:
            check(dm.quit() == 0, 'the daemon did not quit cleanly')
        disks.forget()
        check(disks.verify() == 1, 'the round is not on the disks')
        disks.check_images(allow_leaks=False)

        before = sorted(os.listdir(root))
        dm = Daemon(binary, ['--state-dir', ''], root)
        try:
            check(dm.send(cmd('qmp_capabilities')) == [{'return': {}}],
                  'negotiation failed')
        finally:
            check(dm.quit() == 0, 'the daemon did not quit cleanly')
        check(sorted(os.listdir(root)) == before,
              "--state-dir '' created %s" % sorted(os.listdir(root)))

        blocker = os.path.join(root, 'a-file')
        with open(blocker, 'w') as f:
            f.write('x')
        res = common.run([binary, '--state-dir', blocker], rc=1)
        check(res.err.startswith('strata-daemon: --state-dir %s: '
                                 % blocker), 'error: %r' % res.err)


def main():
    try:
        strata_daemon()
    except Skip as e:
        print('SKIP (whole script): %s' % e)
        return common.SKIP
    return runner.main()


if __name__ == '__main__':
    sys.exit(main())
