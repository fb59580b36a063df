#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""What the QMP tests share: a daemon with one QMP connection, the
normalisation of replies that legitimately differ between two runs, and
side-by-side scenarios (qemu-storage-daemon and strata-daemon on copies
of the same images, replies and images compared).

Used by test_qmp.py and the other test_qmp_*.py scripts.
"""

import json
import os
import re
import shutil
import tempfile
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
from common import Skip, check, fail  # noqa: E402

QSD = os.environ.get('QEMU_STORAGE_DAEMON', 'qemu-storage-daemon')
SYNC_ID = '__sync__'
SIZE = 4 << 20


def daemon_paths():
    strata = os.environ.get('STRATA_DAEMON')
    if not strata or not os.access(strata, os.X_OK):
        raise Skip('STRATA_DAEMON is not set to strata-daemon')
    qsd = shutil.which(QSD)
    if not qsd:
        raise Skip('qemu-storage-daemon not found (the oracle)')
    return os.path.abspath(strata), qsd


class Daemon:
    """A running daemon with one QMP connection."""

    def __init__(self, binary, args, cwd):
        self.binary = os.path.basename(binary)
        self.sock_path = os.path.join(cwd, 'qmp.sock')
        argv = [binary] + args + [
            '--chardev', 'socket,id=qmp0,path=%s,server=on,wait=off'
            % self.sock_path, '--monitor', 'chardev=qmp0']
        # strata-daemon's intent log: a journal of this daemon's own
        # (outside cwd, whose listing tests compare), so no two tests'
        # daemons ever see each other's records
        self.state_dir = tempfile.mkdtemp(prefix='strata-state-')
        env = dict(os.environ, STRATA_STATE_DIR=self.state_dir)
        self.proc = subprocess.Popen(argv, cwd=cwd, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, env=env,
                                     preexec_fn=common.limit_resources)
        self.sock = common.connect_unix(self.sock_path, self.proc, binary)
        self.sock.settimeout(60)
        self.file = self.sock.makefile('rb')
        self.events = []
        self.greeting = None
        self.greeting = self.read()

    def threads_state(self):
        """Where each thread of a daemon that does not answer waits (the
        kernel's view from /proc: state, wait channel, system call), so a
        hang names its side and its place."""
        out = []
        task = '/proc/%d/task' % self.proc.pid
        try:
            tids = sorted(os.listdir(task), key=int)
        except OSError as e:
            return '  (%s)' % e
        for tid in tids:
            info = []
            for f in ('comm', 'wchan', 'syscall', 'stack'):
                try:
                    with open(os.path.join(task, tid, f)) as fh:
                        info.append('%s=%s' % (f, ' | '.join(
                            fh.read().split('\n')[:6]).strip(' |')))
                except OSError:
                    pass
            out.append('  %s: %s' % (tid, '; '.join(info)))
        return '\n'.join(out)

    def read(self):
        while True:
            line = self.file.readline()
            check(line.endswith(b'\r\n'), 'reply not CRLF-ended: %r' % line)
            msg = json.loads(line)
            if self.greeting is None or 'QMP' not in msg:
                return msg
            # qemu-storage-daemon 7.2 now and then greets twice a client
            # that connects the moment its socket listens (1 start in 60
            # here with a client retrying connect() in a tight loop; CI
            # saw it once); strata-daemon must greet once
            check(self.binary == 'qemu-storage-daemon',
                  '%s greeted a second time: %r' % (self.binary, msg))

    def send(self, data):
        """Sends raw bytes, then a marker request; returns the replies
        (events aside) that came before the marker's."""
        if isinstance(data, (dict, list)):
            data = json.dumps(data).encode()
        self.sock.sendall(data + b'\n')
        self.sock.sendall(b'{"execute": "query-version", "id": "%s"}\n'
                          % SYNC_ID.encode())
        replies = []
        while True:
            msg = self.read()
            if 'event' in msg:
                self.events.append(msg)
            elif msg.get('id') == SYNC_ID:
                return replies
            else:
                replies.append(msg)

    def quit(self):
        try:
            self.sock.sendall(b'{"execute": "quit"}\n')
            self.read()
        except OSError:
            pass
        try:
            _, err = self.proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            where = self.threads_state()
            self.proc.kill()
            _, err = self.proc.communicate()
            fail('%s did not quit; its threads were in:\n%s\nits stderr '
                 'ended with:\n%s' % (self.binary, where,
                                      err.decode(errors='replace')[-3000:]))
        self.sock.close()
        shutil.rmtree(self.state_dir, ignore_errors=True)
        report = common.sanitizer_report(err.decode(errors='replace'))
        check(not report, 'sanitizer report:\n%s' % report)
        return self.proc.returncode


AUTO_NAME = re.compile(r'#block\d+')
# Dates and host sizes differ between any two runs.  The VM clock too:
# qemu-storage-daemon has no guest and records its host clock as the
# snapshot's VM clock, strata-daemon records 0 (no VM: no VM time).
VOLATILE = {'date-sec', 'date-nsec', 'actual-size', 'vm-clock-sec',
            'vm-clock-nsec'}


def normalise(value, dirpath):
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if k in VOLATILE or (k == 'virtual-size' and
                                 value.get('format') == 'file'):
                # a protocol node's size is its host file's length
                out[k] = '<%s>' % k
            elif k == 'package':
                out[k] = '<package>'
            elif k == 'micro':
                out[k] = '<micro>'
            else:
                out[k] = normalise(v, dirpath)
        return out
    if isinstance(value, list):
        items = [normalise(v, dirpath) for v in value]
        if items and all(isinstance(i, dict) and 'node-name' in i
                         for i in items):
            items.sort(key=lambda i: json.dumps(i, sort_keys=True))
        return items
    if isinstance(value, str):
        return AUTO_NAME.sub('#block', value.replace(dirpath, '$DIR'))
    return value


def create_images(d, images):
    for name, fmt, extra in images:
        args = ['qemu-img', 'create', '-q', '-f', fmt] + list(extra) + [
            os.path.join(d, name), str(SIZE)]
        common.run(args)


def qemu_img_facts(path, dirpath):
    res = common.run(['qemu-img', 'info', '--output=json', '--backing-chain',
                      '-U', path])
    return normalise(json.loads(res.out), dirpath)


class Scenario:
    """Steps: each a dict (a QMP request) or bytes (raw input)."""

    def __init__(self, name, steps, images=(('d0.qcow2', 'qcow2', ()),),
                 blockdevs=None, negotiate=True, differences=None,
                 leftovers=None, image_differences=None):
        self.name = name
        self.steps = steps
        self.images = images
        self.blockdevs = blockdevs if blockdevs is not None else [
            'driver=qcow2,node-name=d0,file.driver=file,'
            'file.filename={D}/d0.qcow2']
        self.negotiate = negotiate
        # step index -> (reason, function(strata replies) -> None)
        self.differences = differences or {}
        # files qemu-storage-daemon leaves that strata must not: reason
        self.leftovers = leftovers or {}
        # file -> (reason, function(qemu-img facts strata, qemu) -> None)
        self.image_differences = image_differences or {}

    def run_side(self, binary, d):
        create_images(d, self.images)
        args = []
        for b in self.blockdevs:
            args += ['--blockdev', b.replace('{D}', d)]
        daemon = Daemon(binary, args, d)
        replies = []
        try:
            greeting = normalise(daemon.greeting, d)
            if self.negotiate:
                reply = daemon.send({'execute': 'qmp_capabilities'})
                check(reply == [{'return': {}}], '%s: negotiation failed: %r'
                      % (daemon.binary, reply))
            for step in self.steps:
                if isinstance(step, bytes):
                    replies.append(daemon.send(step))
                else:
                    text = json.dumps(step).replace('{D}', d)
                    replies.append(daemon.send(text.encode()))
        finally:
            rc = daemon.quit()
        check(rc == 0, '%s exited with %s' % (binary, rc))
        return greeting, [normalise(r, d) for r in replies]

    def run(self):
        strata, qsd = daemon_paths()
        tmp = common.TempDir('strata-qmp-')
        with tmp:
            dq, ds = tmp.join('qemu'), tmp.join('strata')
            os.mkdir(dq)
            os.mkdir(ds)
            gq, rq = self.run_side(qsd, dq)
            gs, rs = self.run_side(strata, ds)
            check(gq == gs, 'greeting: qemu %s, strata %s' % (gq, gs))
            for i, (a, b) in enumerate(zip(rq, rs)):
                if i in self.differences:
                    reason, expect = self.differences[i]
                    expect(b, a)
                    print('  difference at step %d (%s): %s' % (
                        i, reason, json.dumps(b)[:200]))
                    continue
                check(a == b, 'step %d %s:\n  qemu:   %s\n  strata: %s' % (
                    i, json.dumps(self.steps[i])[:300] if not isinstance(
                        self.steps[i], bytes) else self.steps[i][:300],
                    json.dumps(a), json.dumps(b)))
            self.compare_images(dq, ds)

    def compare_images(self, dq, ds):
        fq = sorted(f for f in os.listdir(dq) if f != 'qmp.sock')
        fs = sorted(f for f in os.listdir(ds) if f != 'qmp.sock')
        for f, reason in self.leftovers.items():
            check(f in fq, 'qemu did not leave %s (%s)' % (f, reason))
            check(f not in fs, 'strata left %s behind (%s)' % (f, reason))
            print('  difference: %s only in qemu\'s directory: %s'
                  % (f, reason))
            fq.remove(f)
        check(fq == fs, 'files: qemu %s, strata %s' % (fq, fs))
        for f in fq:
            a = qemu_img_facts(os.path.join(dq, f), dq)
            b = qemu_img_facts(os.path.join(ds, f), ds)
            if f in self.image_differences:
                reason, expect = self.image_differences[f]
                expect(b, a)
                print('  difference in %s: %s' % (f, reason))
            else:
                check(a == b, '%s: qemu-img info differs:\n  qemu:   %s\n'
                      '  strata: %s' % (f, json.dumps(a), json.dumps(b)))
            for side in (dq, ds):
                fmt = a[0]['format']
                if fmt != 'qcow2':
                    continue
                res = common.run(['qemu-img', 'check', '-f', fmt,
                                  os.path.join(side, f)], rc=None)
                check(res.rc == 0, 'check %s/%s: %s' % (side, f, res.text))
            common.run(['qemu-img', 'compare', '-f', a[0]['format'],
                        '-F', a[0]['format'], os.path.join(dq, f),
                        os.path.join(ds, f)])



def cmd(command, **arguments):
    req = {'execute': command}
    if arguments:
        req['arguments'] = arguments
    return req


def with_id(req, ident):
    req = dict(req)
    req['id'] = ident
    return req


def expect_error(desc):
    def check_it(strata, qemu):
        check(len(strata) == 1 and strata[0].get('error', {}).get('desc')
              == desc, 'expected error %r, got %s' % (desc, strata))
    return check_it


# Commands QEMU's system emulator has and qemu-storage-daemon lacks;
# strata-daemon has them (test_hmp.py and test_qmp_snapshot_jobs.py
# compare them with qemu-system-x86_64 -M none).
QEMU_SYSTEM_ONLY = frozenset({'human-monitor-command', 'snapshot-save',
                              'snapshot-load', 'snapshot-delete'})
