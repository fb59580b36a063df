#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Transactions of internal snapshots over 4 RBD devices in strata-daemon
(the engine's per-device path, block/rbd-snapshot.c's phases):

  * a failure injected at each step -- a check (duplicate name on the last
    device), the do of device k (its hidden working name already taken on
    the cluster), after every do (QEMU's 'abort' action last) -- leaves no
    snapshot on any image, and none of strata's hidden working snapshots;
    then the same transaction without the fault creates all four;
  * under the daemon's sequenced writers (qapi/test.json) every snapshot
    set, read back by qemu-img over rbd:, is a consistent cut.

Needs $STRATA_DAEMON and a Ceph that can run (scripts/ceph-test-cluster.sh);
skips (77) without them."""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
import rbdlib  # noqa: E402
from common import Skip, check  # noqa: E402
from qmplib import Daemon, cmd  # noqa: E402
import test_qmp_cut as cut  # noqa: E402

# These cases test the per-image path; a transaction of creates over 4
# RBD devices would otherwise run as one group snapshot (test_rbd_group.py)
os.environ['STRATA_RBD_GROUP'] = 'off'

R = common.Runner()
NDEV = 4
SIZE = 8 << 20


def daemon_path():
    p = os.environ.get('STRATA_DAEMON')
    if not p or not os.access(p, os.X_OK):
        raise Skip('STRATA_DAEMON is not set to strata-daemon')
    return os.path.abspath(p)


def start(d, images, test_commands=False, extra=()):
    args = list(extra)
    for i, im in enumerate(images):
        args += ['--blockdev', 'driver=raw,node-name=d%d,file.driver=rbd,'
                 'file.pool=%s,file.image=%s' % (i, rbdlib.POOL, im)]
    with cut.test_env('1' if test_commands else None):
        dm = Daemon(daemon_path(), args, d)
    check(dm.send(cmd('qmp_capabilities')) == [{'return': {}}],
          'negotiation failed')
    return dm


def txn(name, n=NDEV, extra=()):
    acts = [{'type': 'blockdev-snapshot-internal-sync',
             'data': {'device': 'd%d' % i, 'name': name}} for i in range(n)]
    return cmd('transaction', actions=acts + list(extra))


def user_snaps(images):
    """Each image's user snapshots (one rbd call per image); also checks
    that none of strata's hidden working snapshots is left."""
    out = []
    for im in images:
        names = rbdlib.snap_names(im, True)
        left = [n for n in names if n.startswith('.strata-')]
        check(not left, 'hidden snapshots left on %s: %s'
              % (im, left))
        out.append([n for n in names if not n.startswith('.')])
    return out


@R.case()
def faults_leave_nothing():
    rbdlib.setup()
    images = [rbdlib.new_name('txn') for _ in range(NDEV)]
    for im in images:
        rbdlib.rbd_create(im, SIZE)
    with common.TempDir('strata-rbd-txn-') as d:
        dm = start(d, images)
        try:
            # check: the last device already has the name
            rbdlib.rbd('snap', 'create', '%s@s' % images[-1])
            desc = cut.error_desc(dm, txn('s'))
            check("Snapshot with name 's' already exists" in desc, desc)
            got = user_snaps(images[:-1])
            check(got == [[]] * (NDEV - 1), 'after a failed check: %s' % got)
            rbdlib.rbd('snap', 'rm', '%s@s' % images[-1])
            # do of device k fails: its working name is taken
            for k in range(NDEV):
                planted = '%s@.strata-new.s' % images[k]
                rbdlib.rbd('snap', 'create', planted)
                desc = cut.error_desc(dm, txn('s'))
                check('Failed to create snapshot' in desc, desc)
                rbdlib.rbd('snap', 'rm', planted)
                got = user_snaps(images)
                check(got == [[]] * NDEV, 'do failed on %d: %s' % (k, got))
            # every do ran, then the abort action fails
            desc = cut.error_desc(dm, txn('s', extra=[
                {'type': 'abort', 'data': {}}]))
            check('abort' in desc.lower(), desc)
            got = user_snaps(images)
            check(got == [[]] * NDEV, 'after abort: %s' % got)
            # and without a fault, all four
            cut.ok(dm, txn('s'))
            got = user_snaps(images)
            check(got == [['s']] * NDEV, 'after success: %s' % got)
        finally:
            cut.quit_ok(dm)


@R.case()
def consistent_cut_under_writers():
    rbdlib.setup()
    images = [rbdlib.new_name('cut') for _ in range(NDEV)]
    for im in images:
        rbdlib.rbd_create(im, SIZE)
    rounds = 6
    with common.TempDir('strata-rbd-cut-') as d:
        dm = start(d, images, test_commands=True)
        try:
            cut.ok(dm, cmd(cut.START, devices=['d%d' % i
                                               for i in range(NDEV)],
                           **{'interval-us': 100}))
            for r in range(rounds):
                time.sleep(0.05)
                cut.ok(dm, txn('c%d' % r))
            counts = cut.ok(dm, cmd(cut.STOP))
            check(all(c['writes'] > 0 for c in counts),
                  'writers wrote nothing: %s' % counts)
        finally:
            cut.quit_ok(dm)
        last = 0
        for r in range(rounds):
            seen = set()
            for i, im in enumerate(images):
                out = os.path.join(d, 'view.raw')
                common.run(['qemu-img', 'convert', '-f', 'raw', '-O', 'raw',
                            rbdlib.uri(im, 'c%d' % r), out])
                seen |= cut.records(out, i)
            m = max(seen) if seen else 0
            check(seen == set(range(1, m + 1)),
                  'snapshot set c%d is torn: has %d records up to %d '
                  '(missing %s)' % (r, len(seen), m,
                                    sorted(set(range(1, m + 1)) - seen)[:8]))
            check(m >= last, 'cut c%d (%d) before c%d (%d)'
                  % (r, m, r - 1, last))
            last = m
        check(last > 0, 'no record in any snapshot')


def hmp(dm, line):
    return cut.ok(dm, cmd('human-monitor-command', **{'command-line': line}))


@R.case()
def hmp_savevm_loadvm():
    """HMP savevm / info snapshots / loadvm / delvm on two RBD devices;
    the data rolled back is checked with qemu-io over rbd:."""
    t = rbdlib.setup()
    images = [rbdlib.new_name('hmp') for _ in range(2)]
    for im in images:
        rbdlib.rbd_create(im, SIZE)
        common.run_io(t.qemu_io, rbdlib.uri(im), ['write -P 0x11 0 64k'],
                      fmt='raw')
    with common.TempDir('strata-rbd-hmp-') as d:
        dm = start(d, images)
        try:
            check(hmp(dm, 'savevm vm1') == '', 'savevm failed')
            info = hmp(dm, 'info snapshots')
            check('vm1' in info, 'info snapshots:\n' + info)
        finally:
            cut.quit_ok(dm)
        check(user_snaps(images) == [['vm1']] * 2,
              'rbd lists %s' % user_snaps(images))
        for im in images:
            common.run_io(t.qemu_io, rbdlib.uri(im), ['write -P 0x22 0 64k'],
                          fmt='raw')
        dm = start(d, images)
        try:
            check(hmp(dm, 'loadvm vm1') == '', 'loadvm failed')
            check(hmp(dm, 'delvm vm1') == '', 'delvm failed')
        finally:
            cut.quit_ok(dm)
    for im in images:
        common.run_io(t.qemu_io, rbdlib.uri(im), ['read -P 0x11 0 64k'],
                      fmt='raw')
    check(user_snaps(images) == [[]] * 2, 'after delvm: %s'
          % user_snaps(images))


@R.case()
def savevm_replaces_tag():
    """HMP savevm over an existing tag replaces it (a delete and a create
    in one transaction, as for qcow2): on one RBD device and on an RBD
    device beside a qcow2 disk (both on the per-image path), checked by
    rbd's list (one snapshot, no hidden one left) and by loadvm restoring
    the second state; and on two RBD devices (per-image snapshots here;
    over a group snapshot see test_rbd_group.py)."""
    t = rbdlib.setup()
    with common.TempDir('strata-rbd-replace-') as d:
        qcow = os.path.join(d, 'q.qcow2')
        common.run([t.qemu_img, 'create', '-f', 'qcow2', qcow, '8M'])
        for extra in ([], ['--blockdev', 'driver=qcow2,node-name=q0,'
                           'file.driver=file,file.filename=' + qcow]):
            im = rbdlib.new_name('repl')
            rbdlib.rbd_create(im, SIZE)
            for pattern, tag in ((0x11, 'vm1'), (0x22, 'vm1')):
                common.run_io(t.qemu_io, rbdlib.uri(im),
                              ['write -P 0x%x 0 64k' % pattern], fmt='raw')
                dm = start(d, [im], extra=extra)
                try:
                    out = hmp(dm, 'savevm ' + tag)
                    check(out == '', 'savevm %s: %s' % (tag, out))
                finally:
                    cut.quit_ok(dm)
                check(user_snaps([im]) == [['vm1']],
                      'rbd lists %s' % user_snaps([im]))
            common.run_io(t.qemu_io, rbdlib.uri(im), ['write -P 0x33 0 64k'],
                          fmt='raw')
            dm = start(d, [im], extra=extra)
            try:
                check(hmp(dm, 'loadvm vm1') == '', 'loadvm failed')
            finally:
                cut.quit_ok(dm)
            common.run_io(t.qemu_io, rbdlib.uri(im), ['read -P 0x22 0 64k'],
                          fmt='raw')
        lst = common.run([t.qemu_img, 'snapshot', '-l', qcow]).out
        check(lst.count(' vm1 ') == 1, 'qcow2 list:\n' + lst)

        # two RBD devices (this script runs the per-image path)
        images = [rbdlib.new_name('repl') for _ in range(2)]
        for im in images:
            rbdlib.rbd_create(im, SIZE)
        dm = start(d, images)
        try:
            for _ in range(2):
                out = hmp(dm, 'savevm vm1')
                check(out == '', 'savevm on two devices: %r' % out)
        finally:
            cut.quit_ok(dm)
        check(user_snaps(images) == [['vm1']] * 2,
              'after the replacement: %s' % user_snaps(images))


if __name__ == '__main__':
    sys.exit(R.main())
