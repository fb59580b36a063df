#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Transactions of internal snapshots over 4 RBD devices that run as one
RBD group snapshot (blockdev/rbd-group.c), in strata-daemon:

  * under the daemon's sequenced writers every snapshot set, read back
    through strata-img over rbd:<image>@<name>, is a consistent cut; each
    image has exactly one group-namespace snapshot per transaction (none
    in the user namespace), `rbd snap ls --all` names the group snapshot
    after the user's name, `qemu-img snapshot -l` lists it, strata lists
    it under the user's name, and no image is left in a group;
  * a failure injected at each step of the group path (group create, the
    add of the first and last image, the group snapshot, the removal of
    the first and last image, the publishing rename, and QEMU's 'abort'
    action after every do) leaves no snapshot on any image and no new
    group; then the transaction without a fault succeeds;
  * SIGKILL of strata-daemon at varied moments of repeated group
    transactions (KILLS kills): afterwards each transaction's snapshot is
    listed on all four images or on none; a restarted daemon still runs
    a group transaction on the same images (stale groups are cleared);
  * a group snapshot cannot be deleted or applied on one image (clear
    error, nothing changed), a duplicate name is refused, and a
    one-device command keeps the per-image path (a user snapshot);
  * HMP savevm, loadvm and delvm over the 4 devices run as whole-group
    operations (one rbd_group_snap_rollback / one group snapshot delete):
    loadvm restores every image's content (also over the daemon's own
    writes) and size, delvm leaves no snapshot and no group; a delete or
    apply of 3 of the 4 images is refused with nothing changed; faults at
    the rollback and at the delete's rename change nothing; QMP
    snapshot-load rolls the whole group back too; stale strata groups
    (empty, or with only a hidden snapshot) are removed by the next group
    transaction; other groups stay.

Needs $STRATA_DAEMON and a Ceph that can run (scripts/ceph-test-cluster.sh);
skips (77) without them."""
import json
import os
import random
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
import rbdlib  # noqa: E402
from common import check  # noqa: E402
from qmplib import Daemon, cmd  # noqa: E402
import test_qmp_cut as cut  # noqa: E402
import test_rbd_txn as txnlib  # noqa: E402

# test_rbd_txn turns the group path off for its own cases
os.environ.pop('STRATA_RBD_GROUP', None)

R = common.Runner()
NDEV = 4
SIZE = 8 << 20
KILLS = 4
FAULT = 'STRATA_RBD_GROUP_FAULT'


def start(d, images, test_commands=False, fault=None):
    os.environ.pop(FAULT, None)
    if fault:
        os.environ[FAULT] = fault
    try:
        return txnlib.start(d, images, test_commands)
    finally:
        os.environ.pop(FAULT, None)


def txn(name, n=NDEV, extra=()):
    return txnlib.txn(name, n, extra)


def all_snaps(image):
    """(user names, [(group, group snap)]) of the image, as rbd lists."""
    out = rbdlib.rbd('snap', 'ls', '--all', '--format', 'json', image).out
    user, group = [], []
    for s in json.loads(out or '[]'):
        ns = s.get('namespace', {})
        if ns.get('type') == 'group':
            group.append((ns['group'], ns['group snap']))
        else:
            user.append(s['name'])
    return sorted(user), sorted(group)


def groups():
    return set(json.loads(rbdlib.rbd('group', 'ls', '--format',
                                     'json').out or '[]'))


def image_group(image):
    info = json.loads(rbdlib.rbd('info', '--format', 'json', image).out)
    return info.get('group')


def listed(image):
    """strata's own list of the image's snapshots."""
    t = common.tools()
    out = common.run([t.img, 'snapshot', '-l', rbdlib.uri(image)]).out
    return [ln.split()[1] for ln in out.splitlines()[2:] if ln.strip()]


def new_images(prefix):
    images = [rbdlib.new_name(prefix) for _ in range(NDEV)]
    for im in images:
        rbdlib.rbd_create(im, SIZE)
    return images


@R.case()
def group_cut_under_writers():
    t = rbdlib.setup()
    images = new_images('gcut')
    rounds = 4
    with common.TempDir('strata-rbd-gcut-') as d:
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
        names = ['c%d' % r for r in range(rounds)]
        gnames = None
        for im in images:
            user, grp = all_snaps(im)
            check(user == [], 'user snapshots on %s: %s' % (im, user))
            check(sorted(g[1] for g in grp) == names,
                  'group snapshots of %s: %s' % (im, grp))
            check(all(g[0].startswith('.strata-g.') for g in grp),
                  'not strata groups: %s' % grp)
            gnames = gnames or grp
            check(grp == gnames, 'images in different groups: %s vs %s'
                  % (grp, gnames))
            check(image_group(im) is None, '%s left in group %s'
                  % (im, image_group(im)))
            check(listed(im) == names, 'strata lists %s' % listed(im))
            q = common.run(['qemu-img', 'snapshot', '-l',
                            rbdlib.uri(im)]).out
            check(q.count('.group.') == 2 * rounds,
                  'qemu-img snapshot -l:\n' + q)
        last = 0
        for r in range(rounds):
            seen = set()
            for i, im in enumerate(images):
                out = os.path.join(d, 'view.raw')
                common.run([t.img, 'convert', '-f', 'raw', '-O', 'raw',
                            rbdlib.uri(im, 'c%d' % r), out])
                seen |= cut.records(out, i)
            m = max(seen) if seen else 0
            check(seen == set(range(1, m + 1)),
                  'group snapshot c%d is torn: %d records up to %d' %
                  (r, len(seen), m))
            check(m >= last, 'cut c%d before c%d' % (r, r - 1))
            last = m
        check(last > 0, 'no record in any snapshot')


@R.case()
def faults_leave_nothing():
    rbdlib.setup()
    images = new_images('gflt')
    before = groups()
    steps = ['create', 'add:3', 'snap', 'remove:0', 'rename', 'abort']
    with common.TempDir('strata-rbd-gflt-') as d:
        # one daemon for every step: the hook file is read at each step
        faults = os.path.join(d, 'faults')
        os.environ['STRATA_RBD_GROUP_FAULT_FILE'] = faults
        try:
            dm = start(d, images)
        finally:
            del os.environ['STRATA_RBD_GROUP_FAULT_FILE']
        try:
            for step in steps:
                with open(faults, 'w') as f:
                    f.write('' if step == 'abort' else step)
                extra = [{'type': 'abort', 'data': {}}] \
                    if step == 'abort' else []
                desc = cut.error_desc(dm, txn('s', extra=extra))
                want = 'abort' if step == 'abort' else 'Input/output error'
                check(want in desc, '%s: %s' % (step, desc))
                for im in images:
                    got = all_snaps(im)
                    check(got == ([], []), 'fault at %s left %s on %s'
                          % (step, got, im))
                # no new group: so no image is left in one either
                check(groups() == before, 'fault at %s left groups %s'
                      % (step, groups() - before))
            os.unlink(faults)
            cut.ok(dm, txn('s'))
        finally:
            cut.quit_ok(dm)
    for im in images:
        check(listed(im) == ['s'], 'after success %s lists %s'
              % (im, listed(im)))


@R.case()
def sigkill_all_or_none():
    rbdlib.setup()
    images = new_images('gkill')
    rng = random.Random(1616)
    seen_some = seen_none = 0
    with common.TempDir('strata-rbd-gkill-') as d:
        for k in range(KILLS):
            dm = start(d, images)
            # one whole transaction (timed), then one cut short by the
            # kill at a moment spread over its expected length
            t0 = time.monotonic()
            cut.ok(dm, txn('k%d-0' % k))
            took = time.monotonic() - t0
            dm.sock.sendall(json.dumps(txn('k%d-x' % k)).encode() + b'\n')
            time.sleep(rng.uniform(0.0, 1.2 * took))
            dm.proc.send_signal(signal.SIGKILL)
            dm.proc.communicate()
            dm.sock.close()
            # published group snapshots, as rbd lists them per image
            sets = [set(g[1] for g in all_snaps(im)[1]
                        if not g[1].startswith('.strata-'))
                    for im in images]
            name = 'k%d-x' % k
            has = [name in s for s in sets]
            check(all(has) or not any(has),
                  'kill %d: %s on only %s' % (k, name, has))
            seen_some += all(has)
            seen_none += not any(has)
            check(all('k%d-0' % k in s for s in sets),
                  'kill %d lost k%d-0: %s' % (k, k, sets))
        # a restarted daemon runs the same images in a group again
        dm = start(d, images)
        try:
            cut.ok(dm, txn('after'))
        finally:
            cut.quit_ok(dm)
    for im in images:
        check('after' in listed(im), 'after the kills: %s' % listed(im))
        check(image_group(im) is None, '%s left in %s'
              % (im, image_group(im)))
    sys.stderr.write('kills: %d, published at the kill %d, not %d\n'
                     % (KILLS, seen_some, seen_none))


@R.case()
def per_image_rules():
    rbdlib.setup()
    images = new_images('grul')
    with common.TempDir('strata-rbd-grul-') as d:
        dm = start(d, images)
        try:
            cut.ok(dm, txn('g'))
            desc = cut.error_desc(dm, cmd(
                'blockdev-snapshot-delete-internal-sync', device='d0',
                name='g'))
            check('part of an RBD group snapshot' in desc, desc)
            desc = cut.error_desc(dm, txn('g'))
            check("Snapshot with name 'g' already exists" in desc, desc)
            # savevm over a group snapshot's tag (a delete of part of the
            # group mixed with creates) is refused: not replaced
            out = hmp(dm, 'savevm g')
            check("Snapshot with name 'g' already exists" in out, out)
            cut.ok(dm, cmd('blockdev-snapshot-internal-sync', device='d1',
                           name='one'))
        finally:
            cut.quit_ok(dm)
    check(all_snaps(images[1])[0] == ['one'],
          'one-device snapshot: %s' % (all_snaps(images[1]),))
    for im in images:
        check(len(all_snaps(im)[1]) == 1, 'group snapshots of %s: %s'
              % (im, all_snaps(im)))
    t = common.tools()
    res = common.run([t.img, 'snapshot', '-a', 'g', rbdlib.uri(images[0])],
                     rc=1)
    check('part of an RBD group snapshot' in res.err, res.err)


def hmp(dm, line):
    return cut.ok(dm, cmd('human-monitor-command', **{'command-line': line}))


# where io_all works: far from the daemon's writers' records (from 0 on)
AT = SIZE // 2


def io_all(images, read=None, write=None, zero_head=False):
    """One qemu-io over rbd: per image i: reads pattern read+i at AT
    (checked), then writes pattern write+i there; zero_head: the first
    64 KiB read as zeroes."""
    for i, im in enumerate(images):
        cmds = ['read -P 0 0 64k'] if zero_head else []
        if read is not None:
            cmds.append('read -P 0x%x %d 64k' % (read + i, AT))
        if write is not None:
            cmds.append('write -P 0x%x %d 64k' % (write + i, AT))
        common.run_io('qemu-io', rbdlib.uri(im), cmds, fmt='raw')


def wait_job(dm, job_id):
    """The job's query-jobs entry once it has concluded."""
    deadline = time.monotonic() + 60
    while True:
        mine = [j for j in cut.ok(dm, cmd('query-jobs'))
                if j['id'] == job_id]
        check(mine, 'no job %s' % job_id)
        if mine[0]['status'] == 'concluded':
            return mine[0]
        check(time.monotonic() < deadline, 'job %s never concluded'
              % job_id)
        time.sleep(0.05)


def whole_txn(kind, name, n):
    typ = {'delete': 'blockdev-snapshot-delete-internal-sync',
           'apply': '__org.strata_blockdev-snapshot-apply-internal'}[kind]
    return cmd('transaction', actions=[
        {'type': typ, 'data': {'device': 'd%d' % i, 'name': name}}
        for i in range(n)])


def image_size(image):
    return json.loads(rbdlib.rbd('info', '--format', 'json', image).out)[
        'size']


def device_size(dm, dev):
    for b in cut.ok(dm, cmd('query-named-block-nodes')):
        if b.get('node-name') == dev:
            return b['image']['virtual-size']
    check(False, 'no node %s in query-named-block-nodes' % dev)


@R.case()
def whole_group_delete_apply():
    """HMP savevm/loadvm/delvm over 4 RBD devices as whole-group
    operations: loadvm rolls every image back (content and size, also
    over the daemon's own writes just before it), delvm
    removes the group snapshot from every image and its group; a delete
    or apply of 3 of the 4 images is refused with nothing changed; a
    fault at the rollback or at the delete's publishing rename changes
    nothing; stale strata groups (empty, or with only a hidden snapshot)
    are removed by the next group transaction, another program's group
    and a strata group with a published snapshot are not; QMP
    snapshot-load rolls the whole group back too."""
    rbdlib.setup()
    images = new_images('gwho')
    io_all(images, write=0x10)
    before = groups()
    # left by killed processes: empty, and with only a hidden snapshot;
    # kept: another program's group, and a strata group whose snapshot
    # is published
    stale = ['.strata-g.0000dead%08x%d' % (os.getpid(), k) for k in (0, 1)]
    keep = [rbdlib.new_name('keep'), '.strata-g.0000beef%08x' % os.getpid()]
    for g in stale + keep:
        rbdlib.rbd('group', 'create', g)
    rbdlib.rbd('group', 'snap', 'create', stale[1] + '@.strata-new.x')
    rbdlib.rbd('group', 'snap', 'create', keep[1] + '@published')
    with common.TempDir('strata-rbd-gwho-') as d:
        faults = os.path.join(d, 'faults')
        os.environ['STRATA_RBD_GROUP_FAULT_FILE'] = faults
        try:
            dm = start(d, images, test_commands=True)
        finally:
            del os.environ['STRATA_RBD_GROUP_FAULT_FILE']
        try:
            check(hmp(dm, 'savevm sv') == '', 'savevm failed')
            # savevm's group transaction removed the stale groups only
            now = groups()
            check(not (set(stale) & now) and set(keep) <= now,
                  'groups after savevm: %s' % now)
            grp = None
            for im in images:
                user, g = all_snaps(im)
                check(user == [] and len(g) == 1 and g[0][1] == 'sv',
                      'savevm left on %s: %s %s' % (im, user, g))
                grp = grp or g[0][0]
                check(g[0][0] == grp, 'two groups: %s %s' % (grp, g))
            io_all(images, write=0x20)
            rbdlib.rbd('resize', '--size', '%dK' % (2 * SIZE // 1024),
                       images[3])
            check(device_size(dm, 'd3') == 2 * SIZE, 'resize not seen')
            for kind in ('apply', 'delete'):
                desc = cut.error_desc(dm, whole_txn(kind, 'sv', NDEV - 1))
                check("Snapshot 'sv' of %s is part of an RBD group "
                      "snapshot; it can only be removed or rolled back for "
                      "the whole group" % images[0] in desc,
                      '%s of 3 of 4: %s' % (kind, desc))
            # a wrong rollback would read 0x10+i (a wrong delete is seen
            # after the faults below: the snapshot would be gone)
            io_all(images, read=0x20)
            # the daemon writes too (it then holds each image's exclusive
            # lock, maybe with cached writes): the rollback replaces that
            cut.ok(dm, cmd(cut.START, devices=['d%d' % i
                                               for i in range(NDEV)],
                           **{'interval-us': 100}))
            time.sleep(0.3)
            counts = cut.ok(dm, cmd(cut.STOP))
            check(all(c['writes'] > 0 for c in counts),
                  'writers wrote nothing: %s' % counts)
            check(hmp(dm, 'loadvm sv') == '', 'loadvm failed')
            check(device_size(dm, 'd3') == SIZE,
                  'd3 size after loadvm: %d' % device_size(dm, 'd3'))
            check(image_size(images[3]) == SIZE, 'size not rolled back')
            io_all(images, read=0x10, write=0x30, zero_head=True)
            with open(faults, 'w') as f:
                f.write('rollback,del-rename\n')
            out = hmp(dm, 'loadvm sv')
            check('Input/output error' in out, 'faulty loadvm: %r' % out)
            out = hmp(dm, 'delvm sv')
            check('Input/output error' in out, 'faulty delvm: %r' % out)
            io_all(images, read=0x30)
            for im in images:
                check(all_snaps(im) == ([], [(grp, 'sv')]),
                      'failed delvm changed %s: %s' % (im, all_snaps(im)))
            os.unlink(faults)
            # QMP's snapshot-load job takes the same whole-group path
            devs = ['d%d' % i for i in range(NDEV)]
            cut.ok(dm, cmd('snapshot-load', **{'job-id': 'jl', 'tag': 'sv',
                                               'vmstate': 'd0',
                                               'devices': devs}))
            job = wait_job(dm, 'jl')
            check('error' not in job, 'snapshot-load: %s' % job)
            io_all(images, read=0x10)
            check(hmp(dm, 'delvm sv') == '', 'delvm failed')
        finally:
            cut.quit_ok(dm)
    for im in images:
        check(rbdlib.snaps(im, True) == [], 'delvm left on %s: %s'
              % (im, rbdlib.snaps(im, True)))
    check(grp not in groups(), 'delvm left the group %s' % grp)
    check(groups() == before | set(keep),
          'groups: %s' % (groups() - before))
    for g in keep:
        rbdlib.rbd('group', 'rm', g)

if __name__ == '__main__':
    sys.exit(R.main())
