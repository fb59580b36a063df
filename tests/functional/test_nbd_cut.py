#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""A live consistent cut through NBD: NBD clients write, QMP snapshots.

strata-daemon exports four disks over NBD.  Three client threads, each
with its own connection to every export, write the sequenced records of
blockdev/cut-record.h (record s, one global sequence, each written only
after the one before it completed, goes to disk s % 4 at byte
(s // 4) * 512) while QMP `transaction`s snapshot the four disks
together, internal and external snapshots in turn (an external one
moves each disk's device onto a new overlay: the exports follow it).
Afterwards, with the daemon gone, qemu-img reads every snapshot set and
each must hold exactly records 1..M for some M (a record present while
an earlier one on another disk is missing would be a torn cut), no
client saw an error, and the final images hold every record the clients
completed: no lost write.

Needs $STRATA_DAEMON and qemu-img; skips (77) without them.
"""

import os
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
from common import Skip, check  # noqa: E402
from qmplib import Daemon, cmd, create_images  # noqa: E402
import nbdwire  # noqa: E402
from test_qmp_cut import (check_all_clean, check_prefix,  # noqa: E402
                          one, records, read_view, round_actions, top_during)

runner = common.Runner()
NDEV = 4
REC = 512
ROUNDS = 10
THREADS = 3
MAGIC = b'strata-cut-record'
MULT = 2654435761


def record(s):
    text = b'%s %d %d' % (MAGIC, s, (s * MULT) % (1 << 64))
    return text + bytes(REC - len(text))


class Writers:
    """Client threads writing records 1, 2, 3, ... in one global order."""

    def __init__(self, socks, max_seq):
        self.socks = socks
        self.max_seq = max_seq
        self.cond = threading.Condition()
        self.claimed = 0
        self.completed = 0
        self.stop = False
        self.errors = []
        self.writes = [0] * NDEV
        self.threads = [threading.Thread(target=self.run)
                        for _ in range(THREADS)]

    def claim(self):
        with self.cond:
            if self.stop or self.errors or self.claimed >= self.max_seq:
                return 0
            self.claimed += 1
            s = self.claimed
            while self.completed != s - 1 and not self.errors:
                self.cond.wait()
            return 0 if self.errors else s

    def run(self):
        try:
            clients = []
            for i, sock in enumerate(self.socks):
                c = nbdwire.Client(sock)
                check(c.go('disk%d' % i) == nbdwire.REP_ACK, 'GO refused')
                clients.append(c)
            while True:
                s = self.claim()
                if not s:
                    break
                dev = s % NDEV
                err = clients[dev].write((s // NDEV) * REC, record(s))
                with self.cond:
                    if err:
                        self.errors.append('record %d: NBD error %d'
                                           % (s, err))
                    else:
                        self.completed = s
                        self.writes[dev] += 1
                    self.cond.notify_all()
            for c in clients:
                c.disconnect()
        except Exception as e:  # noqa: BLE001 -- reported by the test
            with self.cond:
                self.errors.append(repr(e))
                self.cond.notify_all()

    def start(self):
        for t in self.threads:
            t.start()

    def finish(self):
        with self.cond:
            self.stop = True
            self.cond.notify_all()
        for t in self.threads:
            t.join(120)
        check(not self.errors, 'a client failed: %s' % self.errors)


def strata():
    path = os.environ.get('STRATA_DAEMON')
    if not path or not os.access(path, os.X_OK):
        raise Skip('STRATA_DAEMON is not set to strata-daemon')
    return path




@runner.case()
def consistent_cut_through_nbd():
    with common.TempDir('strata-nbd-cut-') as d:
        create_images(d, [('d%d.qcow2' % i, 'qcow2', ()) for i in
                          range(NDEV)])
        args, socks = [], []
        args += ['--nbd-server', 'addr.type=unix,addr.path=%s'
                 % os.path.join(d, 'nbd.sock')]
        for i in range(NDEV):
            args = ['--blockdev', 'driver=qcow2,node-name=d%d,file.driver='
                    'file,file.filename=%s/d%d.qcow2' % (i, d, i)] + args
            args += ['--export', 'type=nbd,id=e%d,node-name=d%d,name=disk%d,'
                     'writable=on' % (i, i, i)]
            socks.append(os.path.join(d, 'nbd.sock'))
        dm = Daemon(strata(), args, d)
        check(one(dm, cmd('qmp_capabilities')) == {'return': {}},
              'negotiation')
        size = 4 << 20           # qmplib's image size
        w = Writers(socks, (size // REC) * NDEV - 1)
        try:
            w.start()
            for r in range(ROUNDS):
                time.sleep(0.15)
                t0 = time.monotonic()
                rep = one(dm, cmd('transaction', actions=round_actions(d, r)))
                check(rep == {'return': {}}, 'transaction %d: %s' % (r, rep))
                print('  transaction %d: %.1f ms, %d records so far' % (
                    r, (time.monotonic() - t0) * 1000, w.completed))
        finally:
            w.finish()
            dm.send(cmd('query-version'))
            check(dm.quit() == 0, 'daemon exit status')
        total = w.completed
        check(min(w.writes) > 0, 'a disk got no write: %s' % w.writes)
        check_all_clean(d)
        prev, distinct = 0, 0
        for r in range(ROUNDS):
            present = set()
            for i in range(NDEV):
                view = read_view(d, top_during(r, i),
                                 None if r % 2 else 'c%d' % r)
                present |= records(view, i)
            m = check_prefix(present, 'set %d' % r)
            check(m >= prev, 'set %d has fewer records than the one '
                  'before' % r)
            distinct += m > prev
            prev = m
            print('  set %2d (%s): records 1..%d' % (
                r, 'external' if r % 2 else 'internal', m))
        check(distinct >= ROUNDS // 2, 'only %d of %d sets differ: the '
              'clients did not write during the snapshots' % (distinct,
                                                               ROUNDS))
        final = set()
        for i in range(NDEV):
            final |= records(read_view(d, top_during(ROUNDS, i)), i)
        check(final == set(range(1, total + 1)),
              'the final images hold %d records, the clients completed '
              '1..%d: a lost write' % (len(final), total))
        print('  %d records written through NBD, %s per disk'
              % (total, w.writes))


def main():
    if not common.oracle('qemu-img'):
        print('SKIP (whole script): qemu-img not found')
        return 77
    return runner.main()


if __name__ == '__main__':
    sys.exit(main())
