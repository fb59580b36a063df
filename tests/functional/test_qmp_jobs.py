#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Block jobs over QMP: strata-daemon side by side with qemu-storage-daemon.

Each scenario opens the same three-image chain (base <- mid <- top, each
layer with its own pattern) in both daemons, drives the same commands, and
compares every reply and the whole stream of job events (JOB_STATUS_CHANGE,
BLOCK_JOB_*), after normalising what depends on timing or on how a job
cuts its work: timestamps, progress numbers (len/offset, current-/total-
progress) and "busy" while running.  Completed jobs must report offset ==
len on both sides.  Steps that wait for an event make the flows
deterministic; a slow `speed` keeps a job running until the scenario acts.

Then both daemons quit and the images are compared with qemu-img: the
same backing chains (`info --backing-chain`), `check` clean, and the same
content, for every file or, where a cancelled job legitimately leaves
different partial copies in a lower image, through the chain of the top
image (which must read the same).

Further cases run strata alone: events reach every negotiated client and
no other; SIGTERM and quit during a throttled job cancel it, emit SHUTDOWN
(qemu-storage-daemon emits none: a named difference), exit 0 and leave
images that check clean and read as before.

Needs $STRATA_DAEMON, qemu-storage-daemon, qemu-img, qemu-io; skips (77)
without them.
"""

import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
from common import Skip, check, fail  # noqa: E402

from qmplib import Daemon, cmd, daemon_paths, normalise  # noqa: E402

runner = common.Runner()
MiB = 1 << 20
SLOW = 1                      # bytes/s: a job that waits to be acted on
JOB_EVENTS = ('JOB_STATUS_CHANGE', 'BLOCK_JOB_READY', 'BLOCK_JOB_COMPLETED',
              'BLOCK_JOB_CANCELLED', 'BLOCK_JOB_PENDING', 'BLOCK_JOB_ERROR',
              'BLOCK_IMAGE_CORRUPTED')
PROGRESS = ('len', 'offset', 'current-progress', 'total-progress')

CHAIN_BLOCKDEVS = [
    'driver=qcow2,node-name=b0,file.driver=file,file.filename={D}/base.qcow2',
    'driver=qcow2,node-name=m0,backing=b0,file.driver=file,'
    'file.filename={D}/mid.qcow2',
    'driver=qcow2,node-name=d0,backing=m0,file.driver=file,'
    'file.filename={D}/top.qcow2',
]


def make_chain(d):
    """base: 1s over 4 MiB; mid: 2s over the first 2 MiB; top: 3s over
    [1 MiB, 2 MiB) and 4s over [3 MiB, 3.5 MiB)."""
    def img(*a):
        common.run(['qemu-img'] + list(a))

    def io(path, c):
        common.run(['qemu-io', '-f', 'qcow2', '-c', c, path])
    img('create', '-q', '-f', 'qcow2', os.path.join(d, 'base.qcow2'), '4M')
    io(os.path.join(d, 'base.qcow2'), 'write -P 1 0 4M')
    img('create', '-q', '-f', 'qcow2', '-b', 'base.qcow2', '-F', 'qcow2',
        os.path.join(d, 'mid.qcow2'))
    io(os.path.join(d, 'mid.qcow2'), 'write -P 2 0 2M')
    img('create', '-q', '-f', 'qcow2', '-b', 'mid.qcow2', '-F', 'qcow2',
        os.path.join(d, 'top.qcow2'))
    io(os.path.join(d, 'top.qcow2'), 'write -P 3 1M 1M')
    io(os.path.join(d, 'top.qcow2'), 'write -P 4 3M 512k')


def normalise_job(value):
    """Progress and running-time busy depend on timing and chunking."""
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if k in PROGRESS:
                out[k] = '<%s>' % k
            elif k == 'busy' and value.get('status') == 'running':
                out[k] = '<busy>'
            else:
                out[k] = normalise_job(v)
        return out
    if isinstance(value, list):
        return [normalise_job(v) for v in value]
    return value


def check_progress_done(events, side):
    for e in events:
        if e['event'] == 'BLOCK_JOB_COMPLETED' and 'error' not in e['data']:
            check(e['data']['offset'] == e['data']['len'],
                  '%s: completed with offset != len: %s' % (side, e))


def wait_event(daemon, name, cursor, match=None, timeout=60):
    """Reads until event `name` (with data containing `match`) arrives at
    or after daemon.events[cursor]; returns the index after it."""
    deadline = time.monotonic() + timeout
    while True:
        for i in range(cursor, len(daemon.events)):
            e = daemon.events[i]
            if e['event'] == name and all(
                    e.get('data', {}).get(k) == v
                    for k, v in (match or {}).items()):
                return i + 1
        if time.monotonic() > deadline:
            fail('no event %s %s; events: %s' % (name, match,
                                                  daemon.events[cursor:]))
        msg = daemon.read()
        check('event' in msg, 'unexpected reply %s' % msg)
        daemon.events.append(msg)


def wait(name, **match):
    return ('wait', name, match)


def status(job_id, st):
    return wait('JOB_STATUS_CHANGE', id=job_id, status=st)


class JobScenario:
    """steps: QMP requests (dicts) and waits (wait()/status()).

    Every file is compared alone (without its backing file) except those
    in chain_only, where a cancelled job leaves a partial copy whose
    extent depends on its chunking; top.qcow2 is also compared through
    its chain, which must read the same whatever happened below."""

    def __init__(self, name, steps, chain_only=(), expect_backing=None,
                 setup=make_chain, corrupt=()):
        self.name = name
        self.steps = steps
        self.chain_only = chain_only
        self.setup = setup
        # files that end up marked corrupt (not checked clean; the flag
        # must be set on both sides)
        self.corrupt = corrupt
        # file -> backing file name expected in its header afterwards
        self.expect_backing = expect_backing or {}

    def run_side(self, binary, d):
        self.setup(d)
        args = []
        for b in CHAIN_BLOCKDEVS:
            args += ['--blockdev', b.replace('{D}', d)]
        daemon = Daemon(binary, args, d)
        replies, cursor = [], 0
        try:
            check(daemon.send(cmd('qmp_capabilities')) == [{'return': {}}],
                  'negotiation failed')
            for step in self.steps:
                if isinstance(step, tuple):
                    cursor = wait_event(daemon, step[1], cursor, step[2])
                    continue
                text = json.dumps(step).replace('{D}', d)
                replies.append(daemon.send(text.encode()))
        finally:
            rc = daemon.quit()
        check(rc == 0, '%s exited with %s' % (binary, rc))
        events = [e for e in daemon.events if e['event'] in JOB_EVENTS]
        for e in events:
            check(set(e['timestamp']) == {'seconds', 'microseconds'},
                  'timestamp %s' % e)
        check_progress_done(events, binary)
        events = [{'event': e['event'], 'data': self.event_data(e)}
                  for e in events]
        return (normalise_job(normalise(replies, d)),
                normalise_job(normalise(events, d)))

    @staticmethod
    def event_data(e):
        data = e.get('data')
        if e['event'] == 'BLOCK_IMAGE_CORRUPTED':
            # Difference: strata's corruption notice carries no offset
            # and size (the qcow2 layer reports a message only).
            data = {k: v for k, v in data.items()
                    if k not in ('offset', 'size')}
        return data

    def run(self):
        strata, qsd = daemon_paths()
        tmp = common.TempDir('strata-qmpjobs-')
        with tmp:
            dq, ds = tmp.join('qemu'), tmp.join('strata')
            os.mkdir(dq)
            os.mkdir(ds)
            rq, eq = self.run_side(qsd, dq)
            rs, es = self.run_side(strata, ds)
            for i, (a, b) in enumerate(zip(rq, rs)):
                check(a == b, 'reply %d:\n  qemu:   %s\n  strata: %s' % (
                    i, json.dumps(a), json.dumps(b)))
            check(eq == es, 'events:\n  qemu:   %s\n  strata: %s' % (
                json.dumps(eq), json.dumps(es)))
            self.compare_images(dq, ds)

    def compare_images(self, dq, ds):
        for f in ('base.qcow2', 'mid.qcow2', 'top.qcow2'):
            pq, ps = os.path.join(dq, f), os.path.join(ds, f)
            fq, fs = [[{k: v for k, v in i.items()
                        if k in ('filename', 'format', 'virtual-size',
                                 'full-backing-filename',
                                 'backing-filename-format')}
                       for i in json.loads(common.run(
                           ['qemu-img', 'info', '--output=json',
                            '--backing-chain', '-U', p]).out)]
                      for p in (pq, ps)]
            check(normalise(fq, dq) == normalise(fs, ds),
                  '%s: chains differ:\n  qemu:   %s\n  strata: %s'
                  % (f, fq, fs))
            if f in self.expect_backing:
                # Difference: QEMU records base's name as it was opened
                # (here absolute); strata keeps a relative name relative
                # (the chain stays movable).  The resolved chain above is
                # the same; the name strata wrote is checked here.
                want = self.expect_backing[f]
                got = self.backing_name(ps)
                check(got == want, '%s: backing %r, expected %r'
                      % (f, got, want))
                if self.backing_name(pq) != got:
                    print('  difference: %s names its backing file %r '
                          '(qemu: %r)' % (f, got, normalise(
                              self.backing_name(pq), dq)))
            for p in (pq, ps):
                if f in self.corrupt:
                    info = json.loads(common.run(
                        ['qemu-img', 'info', '--output=json', '-U',
                         p]).out)
                    check(info['format-specific']['data']['corrupt'],
                          '%s is not marked corrupt' % p)
                else:
                    common.qemu_check_clean(p)
            if f not in self.chain_only:
                common.run(self.alone_compare(pq, ps))
        # whatever a cancelled job left below, the device reads the same
        common.run(['qemu-img', 'compare', '-U', os.path.join(dq, 'top.qcow2'),
                    os.path.join(ds, 'top.qcow2')])

    @staticmethod
    def backing_name(path):
        return json.loads(common.run(['qemu-img', 'info', '--output=json',
                                      '-U', path]).out).get(
                                          'backing-filename')

    @staticmethod
    def alone_compare(pq, ps):
        """qemu-img compare of the two files without their backing files
        (json: filenames with backing null)."""
        def spec(p):
            return 'json:' + json.dumps({
                'driver': 'qcow2', 'backing': None,
                'file': {'driver': 'file', 'filename': p}})
        return ['qemu-img', 'compare', '-U', spec(pq), spec(ps)]


def add(scenario):
    runner.add(scenario.name, scenario.run)


def commit(job_id, **kw):
    return cmd('block-commit', device='d0', **{'job-id': job_id}, **kw)


def stream(job_id, **kw):
    return cmd('block-stream', device='d0', **{'job-id': job_id}, **kw)


QBJ = cmd('query-block-jobs')
QJ = cmd('query-jobs')


# ---- commit ----

add(JobScenario('commit_intermediate', [
    commit('c1', **{'top-node': 'm0', 'base-node': 'b0'}),
    status('c1', 'null'),
    QBJ, QJ,
], expect_backing={'top.qcow2': 'base.qcow2'}))

add(JobScenario('commit_intermediate_cancel', [
    commit('c1', **{'top-node': 'm0', 'speed': SLOW}),
    status('c1', 'running'),
    QBJ,
    cmd('block-job-cancel', device='c1'),
    status('c1', 'null'),
    QJ,
], chain_only=('base.qcow2',), expect_backing={'top.qcow2': 'mid.qcow2'}))

add(JobScenario('commit_active_complete', [
    commit('c1', speed=SLOW),
    status('c1', 'running'),
    cmd('block-job-complete', device='c1'),
    cmd('block-job-set-speed', device='c1', speed=0),
    wait('BLOCK_JOB_READY', device='c1'),
    QBJ, QJ,
    cmd('block-job-complete', device='c1'),
    status('c1', 'null'),
    QBJ,
]))

add(JobScenario('commit_active_cancel_when_ready', [
    commit('c1'),
    wait('BLOCK_JOB_READY', device='c1'),
    cmd('block-job-cancel', device='c1'),
    status('c1', 'null'),
    # without force: completed without the pivot, d0 is still the top
    commit('c2'),
    wait('BLOCK_JOB_READY', device='c2'),
    cmd('block-job-cancel', device='c2', force=True),
    status('c2', 'null'),
], expect_backing={'top.qcow2': 'mid.qcow2'}))

add(JobScenario('commit_running_cancel_force', [
    commit('c1', speed=SLOW),
    status('c1', 'running'),
    cmd('job-cancel', id='c1'),
    status('c1', 'null'),
], chain_only=('base.qcow2',)))

# ---- stream ----

add(JobScenario('stream_whole_chain', [
    stream('s1'),
    status('s1', 'null'),
    QJ,
], expect_backing={'top.qcow2': None}))

add(JobScenario('stream_to_base_node', [
    stream('s1', **{'base-node': 'b0'}),
    status('s1', 'null'),
]))

add(JobScenario('stream_cancel', [
    stream('s1', speed=SLOW),
    status('s1', 'running'),
    cmd('block-job-cancel', device='s1'),
    status('s1', 'null'),
], chain_only=('top.qcow2',), expect_backing={'top.qcow2': 'mid.qcow2'}))

# ---- pause, resume, speed ----

add(JobScenario('pause_resume', [
    stream('s1', speed=SLOW),
    status('s1', 'running'),
    cmd('block-job-pause', device='s1'),
    status('s1', 'paused'),
    QBJ, QJ,
    cmd('block-job-pause', device='s1'),
    cmd('block-job-resume', device='s1'),
    status('s1', 'running'),
    cmd('block-job-resume', device='s1'),
    cmd('job-pause', id='s1'),
    status('s1', 'paused'),
    cmd('job-resume', id='s1'),
    cmd('block-job-set-speed', device='s1', speed=0),
    status('s1', 'null'),
], expect_backing={'top.qcow2': None}))

add(JobScenario('set_speed', [
    commit('c1', **{'top-node': 'm0', 'speed': SLOW}),
    status('c1', 'running'),
    cmd('block-job-set-speed', device='c1', speed=12345),
    QBJ,
    cmd('block-job-set-speed', device='c1', speed=-1),
    cmd('block-job-set-speed', device='c1'),
    cmd('block-job-set-speed', device='c1', speed=0),
    status('c1', 'null'),
], expect_backing={'top.qcow2': 'base.qcow2'}))

add(JobScenario('pause_ready_standby', [
    commit('c1'),
    wait('BLOCK_JOB_READY', device='c1'),
    cmd('block-job-pause', device='c1'),
    status('c1', 'standby'),
    QBJ,
    cmd('block-job-complete', device='c1'),
    cmd('block-job-resume', device='c1'),
    status('c1', 'ready'),
    status('c1', 'null'),
]))

# ---- finalize, dismiss ----

add(JobScenario('auto_finalize_off', [
    stream('s1', **{'auto-finalize': False}),
    wait('BLOCK_JOB_PENDING', id='s1'),
    QBJ, QJ,
    cmd('job-dismiss', id='s1'),
    cmd('block-job-complete', device='s1'),
    cmd('job-finalize', id='s1'),
    status('s1', 'null'),
    QJ,
], expect_backing={'top.qcow2': None}))

add(JobScenario('auto_finalize_off_cancel_pending', [
    commit('c1', **{'top-node': 'm0', 'auto-finalize': False,
                    'auto-dismiss': False}),
    wait('BLOCK_JOB_PENDING', id='c1'),
    cmd('block-job-cancel', device='c1'),
    status('c1', 'concluded'),
    QBJ, QJ,
    cmd('job-finalize', id='c1'),
    cmd('block-job-dismiss', id='c1'),
    QJ,
], chain_only=('base.qcow2',), expect_backing={'top.qcow2': 'mid.qcow2'}))

add(JobScenario('auto_dismiss_off', [
    commit('c1', **{'top-node': 'm0', 'auto-dismiss': False}),
    status('c1', 'concluded'),
    QBJ, QJ,
    cmd('job-finalize', id='c1'),
    cmd('block-job-cancel', device='c1'),
    cmd('block-job-pause', device='c1'),
    cmd('job-dismiss', id='c1'),
    QJ,
    cmd('job-dismiss', id='c1'),
], expect_backing={'top.qcow2': 'base.qcow2'}))

# ---- bad arguments ----

add(JobScenario('bad_arguments', [
    cmd('block-commit', device='nodev', **{'job-id': 'x'}),
    cmd('block-commit', device='m0', **{'job-id': 'x'}),
    cmd('block-commit', device='d0'),
    commit('1bad'),
    commit('x', **{'top-node': 'd0', 'base-node': 'd0'}),
    commit('x', **{'top-node': 'nonode'}),
    commit('x', **{'base-node': 'nonode'}),
    commit('x', **{'top-node': 'm0', 'top': 'mid.qcow2'}),
    commit('x', **{'base-node': 'b0', 'base': 'base.qcow2'}),
    commit('x', base='nofile.qcow2'),
    commit('x', **{'backing-file': 'foo'}),
    commit('x', speed=-1),
    cmd('block-stream', device='nodev', **{'job-id': 'x'}),
    cmd('block-stream', device='d0'),
    stream('x', **{'base-node': 'd0'}),
    stream('x', **{'base-node': 'nonode'}),
    stream('x', base='nofile.qcow2'),
    stream('x', base='base.qcow2', **{'base-node': 'b0'}),
    stream('x', **{'backing-file': 'foo'}),
    stream('x', speed=-1),
    cmd('block-job-cancel', device='nojob'),
    cmd('block-job-pause', device='nojob'),
    cmd('block-job-resume', device='nojob'),
    cmd('block-job-complete', device='nojob'),
    cmd('block-job-set-speed', device='nojob', speed=1),
    cmd('block-job-dismiss', id='nojob'),
    cmd('block-job-finalize', id='nojob'),
    cmd('job-cancel', id='nojob'),
    cmd('job-pause', id='nojob'),
    cmd('job-resume', id='nojob'),
    cmd('job-complete', id='nojob'),
    cmd('job-dismiss', id='nojob'),
    cmd('job-finalize', id='nojob'),
    cmd('block-job-cancel'),
    cmd('block-commit', device='d0', **{'job-id': 'x', 'speed': 'fast'}),
    QJ,
]))

add(JobScenario('busy_device', [
    stream('s1', speed=SLOW),
    status('s1', 'running'),
    stream('s1'),
    stream('s2'),
    commit('s1', **{'top-node': 'm0'}),
    cmd('block-job-complete', device='s1'),
    cmd('job-finalize', id='s1'),
    cmd('job-dismiss', id='s1'),
    cmd('block-job-cancel', device='s1'),
    status('s1', 'null'),
    QJ,
], chain_only=('top.qcow2',)))


# ---- errors ----

def make_corrupt_base(d):
    """make_chain, then base's L2 entry for cluster 0 points (as copied,
    writable in place) at the refcount table: a commit writing there must
    be stopped by the overlap check, which marks base corrupt."""
    make_chain(d)
    with open(os.path.join(d, 'base.qcow2'), 'r+b') as f:
        f.seek(0x30000)                 # L1 table: the L2 table's offset
        l2 = struct.unpack('>Q', f.read(8))[0] & 0x00fffffffffffe00
        f.seek(l2)
        f.write(struct.pack('>Q', 0x10000 | (1 << 63)))


add(JobScenario('commit_into_corrupt_base', [
    commit('c1', **{'top-node': 'm0'}),
    status('c1', 'null'),
    QJ,
], setup=make_corrupt_base, corrupt=('base.qcow2',),
    chain_only=('base.qcow2', 'top.qcow2'),
    expect_backing={'top.qcow2': 'mid.qcow2'}))


# ---- strata alone: clients, signals, quit ----

def connect(path, negotiate):
    s = socket.socket(socket.AF_UNIX)
    s.connect(path)
    s.settimeout(30)
    f = s.makefile('rb')
    json.loads(f.readline())
    if negotiate:
        s.sendall(b'{"execute": "qmp_capabilities"}\n')
        check(json.loads(f.readline()) == {'return': {}}, 'negotiation')
    return s, f


def read_until_eof(f):
    out = []
    for line in f:
        out.append(json.loads(line))
    return out


def strata_daemon(d):
    strata, _ = daemon_paths()
    make_chain(d)
    args = []
    for b in CHAIN_BLOCKDEVS:
        args += ['--blockdev', b.replace('{D}', d)]
    return Daemon(strata, args, d)


@runner.case('events_reach_every_negotiated_client')
def events_to_clients():
    tmp = common.TempDir('strata-qmpjobs-')
    with tmp:
        d = tmp.join('w')
        os.mkdir(d)
        dm = strata_daemon(d)
        dm.send(cmd('qmp_capabilities'))
        s2, f2 = connect(dm.sock_path, True)
        s3, f3 = connect(dm.sock_path, False)
        check(dm.send(stream('s1')) == [{'return': {}}], 'stream')
        wait_event(dm, 'JOB_STATUS_CHANGE', 0, {'status': 'null'})
        names = []
        while not names or names[-1] != ('JOB_STATUS_CHANGE', 'null'):
            e = json.loads(f2.readline())
            names.append((e['event'], e['data'].get('status')))
        check(names == [(e['event'], e['data'].get('status'))
                        for e in dm.events],
              'second client: %s, first: %s' % (names, dm.events))
        # the client that never negotiated got nothing: its next line is
        # the refusal of a command
        s3.sendall(b'{"execute": "query-jobs"}\n')
        reply = json.loads(f3.readline())
        check(reply.get('error', {}).get('class') == 'CommandNotFound',
              'unnegotiated client got %s' % reply)
        s2.close()
        s3.close()
        check(dm.quit() == 0, 'quit')


def shutdown_case(how):
    tmp = common.TempDir('strata-qmpjobs-')
    with tmp:
        d = tmp.join('w')
        os.mkdir(d)
        pristine = tmp.join('pristine')
        os.mkdir(pristine)
        make_chain(pristine)
        dm = strata_daemon(d)
        dm.send(cmd('qmp_capabilities'))
        check(dm.send(commit('c1', **{'top-node': 'm0', 'speed': SLOW}))
              == [{'return': {}}], 'commit')
        check(dm.send(stream('s1', **{'base-node': 'b0', 'speed': SLOW,
                                      'auto-dismiss': False}))
              == [{'error': {'class': 'GenericError', 'desc':
                             "Node 'd0' is busy: block device is in use "
                             "by block job: commit"}}], 'second job')
        wait_event(dm, 'JOB_STATUS_CHANGE', 0, {'status': 'running'})
        if how == 'signal':
            dm.proc.send_signal(signal.SIGTERM)
        else:
            dm.sock.sendall(b'{"execute": "quit"}\n')
        rest = read_until_eof(dm.file)
        _, err = dm.proc.communicate(timeout=60)
        report = common.sanitizer_report(err.decode(errors='replace'))
        check(not report, 'sanitizer report:\n%s' % report)
        check(dm.proc.returncode == 0, 'exit status %s' % dm.proc.returncode)
        events = [(m['event'], m.get('data', {}).get('status'))
                  for m in rest if 'event' in m]
        check(('BLOCK_JOB_CANCELLED', None) in events and
              events[-1] == ('SHUTDOWN', None), 'events %s' % events)
        tail = [e for e in events if e[0] == 'JOB_STATUS_CHANGE']
        check(tail[-3:] == [('JOB_STATUS_CHANGE', 'aborting'),
                            ('JOB_STATUS_CHANGE', 'concluded'),
                            ('JOB_STATUS_CHANGE', 'null')],
              'job states %s' % tail)
        shutdown = [m for m in rest if m.get('event') == 'SHUTDOWN'][0]
        want = 'host-signal' if how == 'signal' else 'host-qmp-quit'
        check(shutdown['data'] == {'guest': False, 'reason': want},
              'SHUTDOWN %s' % shutdown)
        print('  difference: SHUTDOWN %s (qemu-storage-daemon sends no '
              'SHUTDOWN; QEMU\'s system emulator does)' % shutdown['data'])
        for f in ('base.qcow2', 'mid.qcow2', 'top.qcow2'):
            common.qemu_check_clean(os.path.join(d, f))
        # the chain reads as before, and is the same chain
        common.run(['qemu-img', 'compare', os.path.join(pristine,
                                                        'top.qcow2'),
                    os.path.join(d, 'top.qcow2')])
        info = json.loads(common.run(['qemu-img', 'info', '--output=json',
                                      os.path.join(d, 'top.qcow2')]).out)
        check(info.get('backing-filename') == 'mid.qcow2',
              'backing %s' % info.get('backing-filename'))
        # and no lock is left: qemu-io may open it for writing
        common.run(['qemu-io', '-c', 'write 0 512',
                    os.path.join(d, 'top.qcow2')])


@runner.case('on_error_policies')
def on_error_policies():
    """Difference: QEMU pauses or ignores on an I/O error when asked;
    strata's jobs only report, so the other policies are refused rather
    than silently treated as 'report'."""
    tmp = common.TempDir('strata-qmpjobs-')
    with tmp:
        d = tmp.join('w')
        os.mkdir(d)
        dm = strata_daemon(d)
        dm.send(cmd('qmp_capabilities'))
        for policy in ('ignore', 'stop', 'enospc'):
            for req in (commit('c1', **{'on-error': policy}),
                        stream('s1', **{'on-error': policy})):
                reply = dm.send(req)
                check(reply == [{'error': {
                    'class': 'GenericError', 'desc':
                    "on-error '%s' is not supported by strata (only "
                    "'report' and 'auto')" % policy}}],
                    '%s: %s' % (req, reply))
        check(dm.send(cmd('query-jobs')) == [{'return': []}], 'no job')
        check(dm.events == [], 'events %s' % dm.events)
        check(dm.send(stream('s1', **{'on-error': 'auto'})) ==
              [{'return': {}}], 'auto accepted')
        wait_event(dm, 'JOB_STATUS_CHANGE', 0, {'status': 'null'})
        check(dm.quit() == 0, 'quit')
        common.qemu_check_clean(os.path.join(d, 'top.qcow2'))


runner.add('sigterm_during_throttled_job', shutdown_case, 'signal')
runner.add('quit_during_throttled_job', shutdown_case, 'quit')


def main():
    try:
        daemon_paths()
    except Skip as e:
        print('SKIP (whole script): %s' % e)
        return common.SKIP
    return runner.main()


if __name__ == '__main__':
    sys.exit(main())
