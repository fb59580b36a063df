#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""A consistent cut over QMP, and strata-daemon's test-only commands.

strata-daemon has no exports yet, so the writes a transaction must cut
consistently come from writer threads inside the daemon, started and
stopped by the test-only commands of qapi/test.json
(__org.strata_x-test-writers-start / -stop).  They write the sequenced
records of blockdev/cut-record.h: record s (one global sequence, each
written only after the one before it completed) goes to disk s % 4 at
byte (s // 4) * 512.  Meanwhile QMP `transaction`s snapshot the four
disks together, internal and external snapshots in turn.  Afterwards,
with the daemon gone, qemu-img reads every snapshot set (an internal
snapshot through `convert -l`, an external one as the frozen old top
with its chain) and each set must hold exactly records 1..M for some M:
a disk holding a record whose predecessor on another disk is missing
would be a torn cut.

The test-only commands exist only with STRATA_DAEMON_TEST_COMMANDS=1 in
the daemon's environment; without it they must be unknown in every way a
client can see (CommandNotFound with the unknown-command text, absent
from query-commands and query-qmp-schema).

Needs $STRATA_DAEMON and qemu-img; skips (77) without them.
"""

import contextlib
import json
import os
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
from common import Skip, check  # noqa: E402

from qmplib import Daemon, SIZE, cmd, create_images  # noqa: E402

runner = common.Runner()

ENV = 'STRATA_DAEMON_TEST_COMMANDS'
START = '__org.strata_x-test-writers-start'
STOP = '__org.strata_x-test-writers-stop'
NDEV = 4
REC = 512
ROUNDS = 12
# The record format of blockdev/cut-record.h.
MAGIC = b'strata-cut-record'
MULT = 2654435761
BD = ('driver=qcow2,node-name={N},file.driver=file,'
      'file.filename={D}/{N}.qcow2')


def strata_daemon():
    strata = os.environ.get('STRATA_DAEMON')
    if not strata or not os.access(strata, os.X_OK):
        raise Skip('STRATA_DAEMON is not set to strata-daemon')
    if not common.oracle('qemu-img'):
        raise Skip('qemu-img not found (the oracle)')
    return os.path.abspath(strata)


@contextlib.contextmanager
def test_env(value):
    """The environment the daemon is started with (None: unset)."""
    old = os.environ.pop(ENV, None)
    if value is not None:
        os.environ[ENV] = value
    try:
        yield
    finally:
        os.environ.pop(ENV, None)
        if old is not None:
            os.environ[ENV] = old


def start_daemon(d, n, env):
    create_images(d, [('d%d.qcow2' % i, 'qcow2', ()) for i in range(n)])
    args = []
    for i in range(n):
        args += ['--blockdev', BD.replace('{N}', 'd%d' % i)
                 .replace('{D}', d)]
    with test_env(env):
        dm = Daemon(strata_daemon(), args, d)
    check(dm.send(cmd('qmp_capabilities')) == [{'return': {}}],
          'negotiation failed')
    return dm


def one(dm, req):
    replies = dm.send(req)
    check(len(replies) == 1, 'expected one reply to %s, got %s'
          % (req, replies))
    return replies[0]


def ok(dm, req):
    r = one(dm, req)
    check('return' in r, '%s failed: %s' % (json.dumps(req)[:200], r))
    return r['return']


def error_desc(dm, req, cls='GenericError'):
    r = one(dm, req)
    check('error' in r and r['error']['class'] == cls,
          'expected a %s error for %s, got %s' % (cls, req, r))
    return r['error']['desc']


def quit_ok(dm):
    rc = dm.quit()
    check(rc == 0, 'strata-daemon exited with %s' % rc)


def check_all_clean(d):
    for f in sorted(os.listdir(d)):
        if f.endswith('.qcow2'):
            common.qemu_check_clean(os.path.join(d, f))


def records(raw_path, dev, ndev=NDEV):
    """The sequence numbers of the records in a raw image of the dev-th
    of ndev written disks, each checked to sit where the format puts it."""
    found = set()
    with open(raw_path, 'rb') as f:
        data = f.read()
    for off in range(0, len(data), REC):
        if not data.startswith(MAGIC, off):
            check(not data[off:off + REC].strip(b'\0'),
                  'disk %d: bytes at %d that are not a record' % (dev, off))
            continue
        text = data[off:off + 64].split(b'\0')[0].split()
        check(len(text) == 3 and text[0] == MAGIC,
              'disk %d: malformed record at %d: %r' % (dev, off, text))
        s, c = int(text[1]), int(text[2])
        check(c == (s * MULT) % (1 << 64),
              'disk %d: record %d at %d has a bad check value' % (dev, s,
                                                                  off))
        check(s % ndev == dev and (s // ndev) * REC == off,
              'record %d found on disk %d at %d' % (s, dev, off))
        found.add(s)
    return found


def read_view(d, image, snapshot=None):
    """The content of image (with its backing chain), or of its internal
    snapshot, as a raw file next to it."""
    out = os.path.join(d, 'view.raw')
    argv = ['qemu-img', 'convert', '-f', 'qcow2', '-O', 'raw']
    if snapshot:
        argv += ['-l', 'snapshot.name=%s' % snapshot]
    common.run(argv + [os.path.join(d, image), out])
    return out


def gated_off_case(env):
    def run():
        with common.TempDir('strata-qmp-gate-') as d:
            dm = start_daemon(d, 1, env)
            try:
                names = [c['name'] for c in ok(dm, cmd('query-commands'))]
                check('quit' in names and START not in names and
                      STOP not in names,
                      'query-commands lists the test commands: %s' % names)
                schema = [e['name'] for e in ok(dm, cmd('query-qmp-schema'))
                          if e['meta-type'] == 'command']
                check('quit' in schema and START not in schema and
                      STOP not in schema,
                      'query-qmp-schema has the test commands')
                # exactly what a command that never existed gets
                for name in (START, STOP, '__org.strata_x-test-nothing'):
                    req = {'execute': name, 'id': 7}
                    if name == START:
                        req['arguments'] = {'devices': ['d0']}
                    r = one(dm, req)
                    check(r == {'id': 7, 'error': {
                        'class': 'CommandNotFound',
                        'desc': 'The command %s has not been found' % name}},
                        '%s without %s=1: %s' % (name, ENV, r))
            finally:
                quit_ok(dm)
            check_all_clean(d)
    return run


runner.add('gated_off_unset', gated_off_case(None))
runner.add('gated_off_zero', gated_off_case('0'))


@runner.case('gated_on_and_bad_arguments')
def gated_on():
    """With STRATA_DAEMON_TEST_COMMANDS=1 the commands are listed, bad
    arguments are refused with a clear error and leave the images as they
    were, and start/stop pair up."""
    with common.TempDir('strata-qmp-gate-') as d:
        dm = start_daemon(d, 2, '1')
        try:
            names = [c['name'] for c in ok(dm, cmd('query-commands'))]
            check(START in names and STOP in names,
                  'query-commands lacks the test commands: %s' % names)
            schema = [e['name'] for e in ok(dm, cmd('query-qmp-schema'))
                      if e['meta-type'] == 'command']
            check(START in schema and STOP in schema,
                  'query-qmp-schema lacks the test commands')
            common.run(['qemu-img', 'create', '-q', '-f', 'qcow2',
                        os.path.join(d, 'tiny.qcow2'), '1M'])
            ok(dm, cmd('blockdev-add', **{
                'driver': 'qcow2', 'node-name': 'tiny',
                'file': {'driver': 'file',
                         'filename': os.path.join(d, 'tiny.qcow2')}}))
            bad = [
                ({'devices': ['nope']},
                 "Cannot find device='nope' nor node-name='nope'"),
                ({'devices': []},
                 "Parameter 'devices' must name at least one device"),
                ({'devices': ['d0', 'd1', 'd0']},
                 "Device 'd0' is listed twice"),
                ({'devices': ['d0'], 'record-size': 10},
                 "Parameter 'record-size' must be between 64 and 1048576"),
                ({'devices': ['d0'], 'threads': 0},
                 "Parameter 'threads' must be between 1 and 64"),
                ({'devices': ['d0'], 'interval-us': -1},
                 "Parameter 'interval-us' must be between 0 and 1000000"),
                ({'devices': ['d0', 'tiny'], 'record-size': 1 << 20},
                 'The devices are too small for 1048576-byte records'),
                ({'devices': 'd0'},
                 "Invalid parameter type for 'devices', expected: array"),
                ({}, "Parameter 'devices' is missing"),
            ]
            for args, desc in bad:
                got = error_desc(dm, cmd(START, **args))
                check(got == desc, '%s: expected %r, got %r'
                      % (args, desc, got))
            check(error_desc(dm, cmd(STOP)) ==
                  'The test writers are not running', 'stop before start')
            for dev in ('d0', 'd1'):
                ok(dm, cmd('blockdev-snapshot-internal-sync', device=dev,
                           name='refused'))
            ok(dm, cmd(START, devices=['d1', 'd0'], **{'interval-us': 200}))
            check(error_desc(dm, cmd(START, devices=['d0'])) ==
                  'The test writers are already running', 'second start')
            time.sleep(0.2)
            counts = ok(dm, cmd(STOP))
            check([c['device'] for c in counts] == ['d1', 'd0'] and
                  all(c['writes'] > 0 for c in counts),
                  'stop returned %s' % counts)
            check(error_desc(dm, cmd(STOP)) ==
                  'The test writers are not running', 'stop twice')
        finally:
            quit_ok(dm)
        check_all_clean(d)
        # the refused starts wrote nothing (the snapshots taken after
        # them hold no record), and the one real start wrote exactly what
        # stop counted: record s to devices[s % 2], d1 first
        for i, dev in enumerate((1, 0)):
            check(not records(read_view(d, 'd%d.qcow2' % dev, 'refused'), i,
                              2), 'a refused start wrote to d%d' % dev)
            got = records(read_view(d, 'd%d.qcow2' % dev), i, 2)
            check(len(got) == counts[i]['writes'],
                  'd%d holds %d records, stop counted %s'
                  % (dev, len(got), counts))


def top_during(r, i):
    """The image that was disk i's top while round r ran (odd rounds are
    external snapshots, each adding an overlay)."""
    last = max([k for k in range(1, r, 2)], default=None)
    return 'd%d.qcow2' % i if last is None else 'd%d-c%d.qcow2' % (i, last)


def node_during(r, i):
    last = max([k for k in range(1, r, 2)], default=None)
    return 'd%d' % i if last is None else 'o%dc%d' % (i, last)


def round_actions(d, r, ndev=NDEV):
    """Round r's transaction: an external snapshot of every disk in odd
    rounds (overlay d<i>-c<r>.qcow2 in d), an internal one 'c<r>' in even
    rounds."""
    actions = []
    for i in range(ndev):
        node = node_during(r, i)
        if r % 2:
            actions.append({
                'type': 'blockdev-snapshot-sync',
                'data': {'node-name': node,
                         'snapshot-file': os.path.join(
                             d, 'd%d-c%d.qcow2' % (i, r)),
                         'snapshot-node-name': 'o%dc%d' % (i, r),
                         'format': 'qcow2'}})
        else:
            actions.append({
                'type': 'blockdev-snapshot-internal-sync',
                'data': {'device': node, 'name': 'c%d' % r}})
    return actions


@runner.case('consistent_cut')
def consistent_cut():
    """Four disks, writers running inside the daemon, twelve QMP
    transactions (internal and external snapshots of all four in turn):
    every snapshot set holds exactly records 1..M, the sets grow, the
    final images hold exactly what the writers counted, all clean."""
    with common.TempDir('strata-qmp-cut-') as d:
        dm = start_daemon(d, NDEV, '1')
        try:
            ok(dm, cmd(START, devices=['d%d' % i for i in range(NDEV)],
                       **{'record-size': REC, 'threads': 3,
                          'interval-us': 100}))
            for r in range(ROUNDS):
                time.sleep(0.1)
                t0 = time.monotonic()
                ok(dm, cmd('transaction', actions=round_actions(d, r)))
                print('  transaction %d: %.1f ms' % (
                    r, (time.monotonic() - t0) * 1000))
            counts = ok(dm, cmd(STOP))
        finally:
            quit_ok(dm)
        writes = [c['writes'] for c in counts]
        total = sum(writes)
        check(min(writes) > 0, 'a disk got no write: %s' % writes)
        check_all_clean(d)

        prev, distinct = 0, 0
        for r in range(ROUNDS):
            present = set()
            for i in range(NDEV):
                if r % 2:
                    view = read_view(d, top_during(r, i))
                else:
                    view = read_view(d, top_during(r, i), 'c%d' % r)
                present |= records(view, i)
            m = len(present)
            missing = sorted(set(range(1, m + 1)) - present)
            check(not missing, 'set %d (%s) holds %d records but not '
                  'record %d: a torn cut' % (r, 'external' if r % 2
                                             else 'internal', m,
                                             missing[0] if missing else 0))
            check(m >= prev, 'set %d has fewer records than the one '
                  'before' % r)
            distinct += m > prev
            prev = m
            print('  set %2d (%s): records 1..%d' % (
                r, 'external' if r % 2 else 'internal', m))
        # the writers really ran during the snapshots
        check(distinct >= ROUNDS // 2, 'only %d of %d sets differ'
              % (distinct, ROUNDS))
        final = set()
        for i in range(NDEV):
            mine = records(read_view(d, top_during(ROUNDS, i)), i)
            check(len(mine) == writes[i], 'disk %d holds %d records, the '
                  'writers counted %d' % (i, len(mine), writes[i]))
            final |= mine
        check(final == set(range(1, total + 1)),
              'the final images do not hold exactly records 1..%d' % total)
        print('  %d records written in all, %s per disk' % (total, writes))


@runner.case('quit_and_sigterm_while_writing')
def quit_while_writing():
    """quit or SIGTERM with the writers running: the daemon stops them,
    exits 0, and every image checks clean."""
    for how in ('quit', 'sigterm'):
        with common.TempDir('strata-qmp-cutq-') as d:
            dm = start_daemon(d, 2, '1')
            ok(dm, cmd(START, devices=['d0', 'd1']))
            time.sleep(0.2)
            if how == 'quit':
                quit_ok(dm)
            else:
                dm.proc.send_signal(signal.SIGTERM)
                _, err = dm.proc.communicate(timeout=120)
                check(dm.proc.returncode == 0, 'exit %s: %s' % (
                    dm.proc.returncode, err[-2000:]))
                report = common.sanitizer_report(err.decode(errors='replace'))
                check(not report, 'sanitizer report:\n%s' % report)
            check_all_clean(d)
            n = sum(len(records(read_view(d, 'd%d.qcow2' % i), i, 2))
                    for i in range(2))
            check(n > 0, '%s: no record reached the disks' % how)


def check_prefix(present, what):
    m = len(present)
    missing = sorted(set(range(1, m + 1)) - present)
    check(not missing, '%s holds %d records but not record %d: a torn cut'
          % (what, m, missing[0] if missing else 0))
    return m


@runner.case('sigterm_during_32_disk_transaction')
def sigterm_during_transaction():
    """SIGTERM right behind a transaction over 32 disks (an internal
    snapshot and an external one of each: 64 actions) while the writers
    write to all of them: the daemon exits 0, every image checks clean,
    the transaction took effect on all disks or on none, and where it did
    the internal snapshots are a consistent cut."""
    n = 32
    outcomes = []
    for delay in (0, 0.02):
        with common.TempDir('strata-qmp-sig32-') as d:
            dm = start_daemon(d, n, '1')
            ok(dm, cmd(START, devices=['d%d' % i for i in range(n)]))
            time.sleep(0.05)
            acts = []
            for i in range(n):
                acts.append({'type': 'blockdev-snapshot-internal-sync',
                             'data': {'device': 'd%d' % i, 'name': 'cut'}})
                acts.append({'type': 'blockdev-snapshot-sync',
                             'data': {'node-name': 'd%d' % i,
                                      'snapshot-file': os.path.join(
                                          d, 'o%d.qcow2' % i),
                                      'snapshot-node-name': 'o%d' % i,
                                      'format': 'qcow2'}})
            dm.sock.sendall(json.dumps(cmd('transaction', actions=acts))
                            .encode() + b'\n')
            time.sleep(delay)
            dm.proc.send_signal(signal.SIGTERM)
            _, err = dm.proc.communicate(timeout=300)
            dm.sock.close()
            check(dm.proc.returncode == 0, 'exit %s: %s' % (
                dm.proc.returncode, err[-2000:]))
            report = common.sanitizer_report(err.decode(errors='replace'))
            check(not report, 'sanitizer report:\n%s' % report)
            check_all_clean(d)
            snaps = overlays = 0
            present = set()
            for i in range(n):
                base = 'd%d.qcow2' % i
                res = common.run(['qemu-img', 'snapshot', '-l',
                                  os.path.join(d, base)])
                if ' cut ' in res.out:
                    snaps += 1
                    present |= records(read_view(d, base, 'cut'), i, n)
                overlays += os.path.exists(os.path.join(d, 'o%d.qcow2' % i))
            check(snaps in (0, n) and overlays == snaps,
                  'torn transaction: %d snapshots, %d overlays of %d'
                  % (snaps, overlays, n))
            if snaps:
                m = check_prefix(present, 'the 32-disk set')
                outcomes.append('took effect (records 1..%d)' % m)
            else:
                outcomes.append('did not run')
            print('  SIGTERM %.0f ms after sending: the transaction %s'
                  % (delay * 1000, outcomes[-1]))


def main():
    try:
        strata_daemon()
    except Skip as e:
        print('SKIP (whole script): %s' % e)
        return common.SKIP
    return runner.main()


if __name__ == '__main__':
    sys.exit(main())
