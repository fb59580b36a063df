#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""QMP's snapshot-save, snapshot-load and snapshot-delete jobs against
QEMU's.

The oracle is qemu-system-x86_64 -M none (qemu-storage-daemon has no
such jobs) with the same -blockdev nodes on copies of the same images.
The same requests go to both; each job's JOB_STATUS_CHANGE sequence,
its query-jobs entry (error text included) and the images' snapshot
lists must match, apart from the documented deliberate differences,
each named where it is met:
  - no VM: strata emits no STOP / RESUME (not compared) and stores no VM
    state (vm-state-size 0 where QEMU stores its machine's few hundred
    bytes), and loads disk-only snapshots (README difference 11);
  - so images one side saved are listed and deleted by the other, but a
    load is refused by the other side with a clear error.

Needs $STRATA_DAEMON, qemu-img, qemu-io and qemu-system-x86_64 (skipped,
exit 77, without them).
"""

import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
from common import check  # noqa: E402
from test_hmp import (QemuVM, StrataQMP, blockdev, make_image,  # noqa: E402
                      reads_as, snapshots_full, write)

runner = common.Runner()


class QemuJobs(QemuVM):
    """QemuVM that keeps the events."""

    def __init__(self, disks, d):
        self.events = []
        super().__init__(disks, d)

    def read(self):
        while True:
            msg = json.loads(self.file.readline())
            if 'event' not in msg:
                return msg
            self.events.append(msg)


class StrataJobs(StrataQMP):
    @property
    def events(self):
        return self.dm.events


SIDES = (('qemu', QemuJobs), ('strata', StrataJobs))


def disks_in(d):
    return [blockdev('da', os.path.join(d, 'a.qcow2')),
            blockdev('db', os.path.join(d, 'b.qcow2'))]


def new_images(d, pattern):
    for n in ('a', 'b'):
        make_image(os.path.join(d, n + '.qcow2'))
        write(os.path.join(d, n + '.qcow2'), pattern)


def job_statuses(side, job_id):
    return [e['data']['status'] for e in side.events
            if e['event'] == 'JOB_STATUS_CHANGE'
            and e['data']['id'] == job_id]


def wait_concluded(side, job_id):
    """The job's query-jobs entry once it has concluded."""
    deadline = time.monotonic() + 60
    while True:
        r = side.qmp({'execute': 'query-jobs'})
        mine = [j for j in r['return'] if j['id'] == job_id]
        check(mine, '%s: no job %s in %s' % (side, job_id, r))
        if mine[0]['status'] == 'concluded':
            return mine[0]
        check(time.monotonic() < deadline, 'job %s never concluded'
              % job_id)
        time.sleep(0.05)


def run_job(side, command, job_id, **args):
    """Starts a job; returns (command reply, statuses, query-jobs entry)."""
    args['job-id'] = job_id
    r = side.qmp({'execute': command, 'arguments': args})
    if 'error' in r:
        return r, [], None
    entry = wait_concluded(side, job_id)
    # the concluding events may trail the query's reply by a request
    side.qmp({'execute': 'query-version'})
    return r, job_statuses(side, job_id), entry


def snapshot_rows(path):
    return [(s['id'], s['name'], s['vm-state-size'])
            for s in snapshots_full(path)]


# (command, job-id, arguments): the same on both sides
STEPS = [
    ('snapshot-save', 'j1', dict(tag='s1', vmstate='da',
                                 devices=['da', 'db'])),
    ('snapshot-save', 'j2', dict(tag='s1', vmstate='da',
                                 devices=['da', 'db'])),
    ('snapshot-save', 'j1', dict(tag='s9', vmstate='da', devices=['da'])),
    ('snapshot-save', 'j3', dict(tag='s2', vmstate='da', devices=[])),
    ('snapshot-save', 'j4', dict(tag='s2', vmstate='da',
                                 devices=['da', 'zz'])),
    ('snapshot-save', 'j5', dict(tag='s2', vmstate='zz', devices=['da'])),
    ('snapshot-save', 'j6', dict(tag='s2', vmstate='db', devices=['da'])),
    ('snapshot-save', 'j7', dict(tag='s2', vmstate='da-file',
                                 devices=['da-file'])),
    ('snapshot-load', 'j8', dict(tag='nope', vmstate='da',
                                 devices=['da', 'db'])),
    ('snapshot-delete', 'j9', dict(tag='nope', devices=['da', 'db'])),
    ('snapshot-save', 'j10', dict(tag='s2', vmstate='db', devices=['db'])),
    ('snapshot-load', 'j11', dict(tag='s2', vmstate='da',
                                  devices=['da', 'db'])),
    ('snapshot-delete', 'j12', dict(tag='s2', devices=['db'])),
    # refused before any job exists
    ('snapshot-save', 'j13', dict(vmstate='da', devices=['da'])),
    ('snapshot-save', 'j14', dict(tag='s3', vmstate='da', devices=['da'],
                                  bogus=1)),
    ('snapshot-delete', 'j15', dict(tag='s3', devices='da')),
    ('snapshot-delete', '-bad', dict(tag='s3', devices=['da'])),
]


def blockdev_file_node(path, node):
    return json.dumps({'driver': 'qcow2', 'node-name': node,
                       'file': {'driver': 'file', 'filename': path,
                                'node-name': node + '-file'}})


@runner.case('jobs_match_qemu')
def jobs_match_qemu():
    """Every step's reply, the job's JOB_STATUS_CHANGE sequence and its
    query-jobs entry (error text included) as QEMU's; then job-dismiss,
    the final query-jobs and the images' snapshot lists."""
    results = {}
    with common.TempDir('strata-snapjobs-') as d:
        for name, cls in SIDES:
            sd = os.path.join(d, name)
            os.mkdir(sd)
            new_images(sd, 0x11)
            disks = [blockdev_file_node(os.path.join(sd, 'a.qcow2'), 'da'),
                     blockdev_file_node(os.path.join(sd, 'b.qcow2'), 'db')]
            side = cls(disks, sd)
            out = []
            try:
                for command, job_id, args in STEPS:
                    out.append(run_job(side, command, job_id, **args))
                out.append(side.qmp({'execute': 'job-dismiss',
                                     'arguments': {'id': 'j1'}}))
                out.append(side.qmp({'execute': 'job-dismiss',
                                     'arguments': {'id': 'j1'}}))
                side.qmp({'execute': 'query-version'})
                out.append(job_statuses(side, 'j1')[-1])
                out.append(side.qmp({'execute': 'query-jobs'}))
                out.append(side.qmp({'execute': 'query-block-jobs'}))
            finally:
                side.quit()
            out.append([(i, n) for i, n, _ in
                        snapshot_rows(os.path.join(sd, 'a.qcow2'))])
            out.append([(i, n) for i, n, _ in
                        snapshot_rows(os.path.join(sd, 'b.qcow2'))])
            results[name] = out
            for n in ('a', 'b'):
                common.qemu_check_clean(os.path.join(sd, n + '.qcow2'))
        q, s = results["qemu"], results["strata"]
        if os.environ.get("SNAPJOBS_DUMP"):
            for row in s:
                print(json.dumps(row)[:230])
        for i, (a, b) in enumerate(zip(q, s)):
            check(a == b, 'step %d:\n  qemu:   %s\n  strata: %s'
                  % (i, json.dumps(a), json.dumps(b)))
        # the sequences checked above are QEMU's, and these
        check(q[0][1] == ['created', 'running', 'waiting', 'pending',
                          'concluded'], repr(q[0]))
        check(q[1][1] == ['created', 'running', 'aborting', 'concluded'],
              repr(q[1]))
        # no VM: strata stores no state (difference 11)
        qa = snapshot_rows(os.path.join(d, 'qemu', 'a.qcow2'))
        sa = snapshot_rows(os.path.join(d, 'strata', 'a.qcow2'))
        check(qa[0][2] > 0 and sa[0][2] == 0, '%s %s' % (qa, sa))
        print('  difference: vm-state-size of s1 on da: qemu %d, strata 0'
              ' (no VM)' % qa[0][2])


@runner.case('load_restores_and_cross_images')
def load_restores_and_cross_images():
    """snapshot-save, writes (offline), snapshot-load restores every
    device on both sides; then each side's images in the other: listed,
    a load refused with the documented texts (nothing reverted), a
    delete works and the images check clean."""
    with common.TempDir('strata-snapjobs-') as d:
        paths = {}
        for name, cls in SIDES:
            sd = os.path.join(d, name)
            os.mkdir(sd)
            new_images(sd, 0x21)
            paths[name] = sd
            side = cls(disks_in(sd), sd)
            try:
                _, st, e = run_job(side, 'snapshot-save', 'js', tag='t1',
                                   vmstate='da', devices=['da', 'db'])
                check(st[-1] == 'concluded' and 'error' not in e,
                      '%s save: %s' % (name, e))
            finally:
                side.quit()
            for n in ('a', 'b'):
                write(os.path.join(sd, n + '.qcow2'), 0x22)
            side = cls(disks_in(sd), sd)
            try:
                _, st, e = run_job(side, 'snapshot-load', 'jl', tag='t1',
                                   vmstate='da', devices=['da', 'db'])
                check('error' not in e, '%s load: %s' % (name, e))
            finally:
                side.quit()
            for n in ('a', 'b'):
                check(reads_as(os.path.join(sd, n + '.qcow2'), 0x21),
                      '%s: %s not restored' % (name, n))
        # each side on the other's images
        wants = {
            'qemu': 'This is a disk-only snapshot. Revert to it  offline '
                    'using qemu-img',
            'strata': "Snapshot 't1' on 'da' holds VM state, which no VM "
                      "state handler can restore; it is not loaded "
                      "disk-only",
        }
        for name, cls in SIDES:
            other = paths['strata' if name == 'qemu' else 'qemu']
            for n in ('a', 'b'):
                write(os.path.join(other, n + '.qcow2'), 0x23)
            side = cls(disks_in(other), other)
            try:
                _, st, e = run_job(side, 'snapshot-load', 'jx', tag='t1',
                                   vmstate='da', devices=['da', 'db'])
                check(e.get('error') == wants[name],
                      '%s loading the other\'s: %s' % (name, e))
                print('  difference: %s refuses the other\'s t1: %s'
                      % (name, e['error']))
                _, st, e = run_job(side, 'snapshot-delete', 'jd', tag='t1',
                                   devices=['da', 'db'])
                check('error' not in e, '%s delete: %s' % (name, e))
            finally:
                side.quit()
            for n in ('a', 'b'):
                p = os.path.join(other, n + '.qcow2')
                check(reads_as(p, 0x23), '%s reverted %s' % (name, p))
                check(snapshot_rows(p) == [], '%s left %s' % (name, p))
                common.qemu_check_clean(p)


@runner.case('all_or_nothing')
def all_or_nothing():
    """A save whose transaction fails on one device (read-only) leaves
    the tag on no device (QEMU's leaves it on the first); a load where
    one device lacks the tag reverts none."""
    with common.TempDir('strata-snapjobs-') as d:
        new_images(d, 0x31)
        make_image(os.path.join(d, 'c.qcow2'))
        disks = disks_in(d) + [blockdev('dc', os.path.join(d, 'c.qcow2'),
                                        read_only=True)]
        side = StrataJobs(disks, d)
        try:
            _, st, e = run_job(side, 'snapshot-save', 'j1', tag='t1',
                               vmstate='da', devices=['da', 'db', 'dc'])
            check(st == ['created', 'running', 'aborting', 'concluded']
                  and e.get('error'), repr((st, e)))
            print('  save failing on dc: %s' % e['error'])
            _, st, e = run_job(side, 'snapshot-save', 'j2', tag='t2',
                               vmstate='da', devices=['da'])
            check('error' not in e, repr(e))
        finally:
            side.quit()
        check(snapshot_rows(os.path.join(d, 'a.qcow2')) ==
              [('1', 't2', 0)] and
              snapshot_rows(os.path.join(d, 'b.qcow2')) == [],
              'a save left a snapshot behind')
        for n in ('a', 'b'):
            write(os.path.join(d, n + '.qcow2'), 0x32)
        side = StrataJobs(disks_in(d), d)
        try:
            _, st, e = run_job(side, 'snapshot-load', 'j3', tag='t2',
                               vmstate='da', devices=['da', 'db'])
            check(e.get('error') == "Snapshot 't2' does not exist in one "
                  "or more devices", repr(e))
        finally:
            side.quit()
        for n in ('a', 'b'):
            p = os.path.join(d, n + '.qcow2')
            check(reads_as(p, 0x32), 'reverted %s' % p)
            common.qemu_check_clean(p)


if __name__ == '__main__':
    sys.exit(runner.main())
