#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""driver=rbd against QEMU's rbd driver on one throw-away Ceph cluster.

`make bench` runs ``python3 tests/bench/rbd.py --build build``.  It starts
scripts/ceph-test-cluster.sh (one mon, one memstore OSD on loopback) and:

  * I/O: `strata-img bench` and `qemu-img bench` with the same arguments
    on the same rbd: image, 4 KiB and 64 KiB reads and writes at depth 1
    and 32, taking turns for --rounds rounds; the median wall time of each
    side is kept and the ratio is QEMU's time / strata's (above 1.00
    strata is faster); the client's CPU time (user + system, median) is
    shown beside it, since the OSD shares the machine's CPUs;
  * snapshots: strata-daemon with 4 RBD devices, the time of one
    `transaction` snapshotting all 4 against 4 separate
    `blockdev-snapshot-internal-sync` calls (median of --rounds), both
    through the same daemon and the same QMP connection; once with the
    transaction as one RBD group snapshot (the default) and once on the
    per-image path (STRATA_RBD_GROUP=off).  --snapshots-only skips I/O.

The Markdown tables go to stdout, progress to stderr.
"""
import argparse
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPT = os.path.join(HERE, '..', '..', 'scripts', 'ceph-test-cluster.sh')
MiB = 1 << 20


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def sh(argv, **kw):
    return subprocess.run(argv, check=True, stdin=subprocess.DEVNULL,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          **kw)


def child_cpu():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def timed(argv):
    """(wall seconds, CPU seconds of the process)"""
    c0 = child_cpu()
    t0 = time.monotonic()
    p = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE)
    dt = time.monotonic() - t0
    if p.returncode:
        raise RuntimeError('%s: %s' % (' '.join(argv), p.stderr.decode()))
    return dt, child_cpu() - c0


def bench_io(img, qemu_img, image, rounds, count):
    rows = []
    for write in (False, True):
        for size in (4096, 65536):
            for depth in (1, 32):
                args = ['bench', '-f', 'raw', '-c', str(count), '-d',
                        str(depth), '-s', str(size)] + \
                       (['-w'] if write else []) + ['rbd:rbd/' + image]
                times = {'ours': [], 'qemu': []}
                cpu = {'ours': [], 'qemu': []}
                for r in range(rounds):
                    order = [('ours', img), ('qemu', qemu_img)]
                    if r % 2:
                        order.reverse()
                    for side, tool in order:
                        wall, used = timed([tool] + args)
                        times[side].append(wall)
                        cpu[side].append(used)
                o = statistics.median(times['ours'])
                q = statistics.median(times['qemu'])
                oc = statistics.median(cpu['ours'])
                qc = statistics.median(cpu['qemu'])
                name = '%s %dK d%d' % ('write' if write else 'read',
                                       size // 1024, depth)
                log('  %-16s ours %.3fs qemu %.3fs' % (name, o, q))
                rows.append((name, o, q, oc, qc))
    print('| rbd I/O (%d requests) | strata s | qemu-img s | ratio '
          '| strata CPU s | qemu-img CPU s |' % count)
    print('|---|---|---|---|---|---|')
    for name, o, q, oc, qc in rows:
        print('| %s | %.3f | %.3f | %.2f | %.3f | %.3f |'
              % (name, o, q, q / o, oc, qc))
    print()


class Qmp:
    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX)
        for _ in range(1000):
            try:
                self.sock.connect(path)
                break
            except OSError:
                time.sleep(0.01)
        self.f = self.sock.makefile('rw')
        self.f.readline()
        self.cmd('qmp_capabilities')

    def cmd(self, name, args=None):
        req = {'execute': name}
        if args is not None:
            req['arguments'] = args
        self.f.write(json.dumps(req) + '\n')
        self.f.flush()
        while True:
            r = json.loads(self.f.readline())
            if 'event' not in r:
                break
        if 'error' in r:
            raise RuntimeError('%s: %s' % (name, r['error']['desc']))
        return r['return']


def bench_snapshots(daemon, images, rounds, d, label, prefix):
    sock = os.path.join(d, 'qmp.sock')
    argv = [daemon, '--chardev', 'socket,path=%s,server=on,wait=off,id=m'
            % sock, '--monitor', 'chardev=m']
    for i, im in enumerate(images):
        argv += ['--blockdev', 'driver=raw,node-name=d%d,file.driver=rbd,'
                 'file.pool=rbd,file.image=%s' % (i, im)]
    env = dict(os.environ)
    if label == 'per-image path':
        env['STRATA_RBD_GROUP'] = 'off'
    p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, env=env)
    try:
        q = Qmp(sock)
        txn, sep = [], []
        for r in range(rounds):
            t0 = time.monotonic()
            q.cmd('transaction', {'actions': [
                {'type': 'blockdev-snapshot-internal-sync',
                 'data': {'device': 'd%d' % i,
                          'name': '%st%d' % (prefix, r)}}
                for i in range(len(images))]})
            txn.append(time.monotonic() - t0)
            t0 = time.monotonic()
            for i in range(len(images)):
                q.cmd('blockdev-snapshot-internal-sync',
                      {'device': 'd%d' % i,
                       'name': '%ss%d' % (prefix, r)})
            sep.append(time.monotonic() - t0)
        q.cmd('quit')
    finally:
        p.wait(timeout=60)
    t, s = statistics.median(txn) * 1000, statistics.median(sep) * 1000
    print('| %d RBD images, %s | ms |' % (len(images), label))
    print('|---|---|')
    print('| one transaction of %d internal snapshots | %.1f |'
          % (len(images), t))
    print('| %d separate blockdev-snapshot-internal-sync | %.1f |'
          % (len(images), s))
    print('| ratio separate / transaction | %.2f |' % (s / t))
    print()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--build', default='build')
    ap.add_argument('--rounds', type=int, default=5)
    ap.add_argument('--count', type=int, default=2000)
    ap.add_argument('--snapshots-only', action='store_true')
    a = ap.parse_args()
    img = os.path.join(a.build, 'tools', 'img', 'strata-img')
    daemon = os.path.join(a.build, 'tools', 'daemon', 'strata-daemon')
    d = tempfile.mkdtemp(prefix='strata-rbd-bench-')
    cdir = os.path.join(d, 'ceph')
    p = subprocess.run(['sh', SCRIPT, 'start', cdir], stdout=subprocess.PIPE)
    if p.returncode == 77:
        log('rbd bench skipped: Ceph cannot run here')
        return 0
    if p.returncode:
        return 1
    os.environ['CEPH_CONF'] = os.path.join(cdir, 'ceph.conf')
    try:
        if not a.snapshots_only:
            sh(['rbd', 'create', '--size', '64M', 'rbd/bench'])
            # reads of written data, not of holes
            sh(['qemu-img', 'bench', '-f', 'raw', '-w', '-c', '1024', '-d',
                '32', '-s', '64K', 'rbd:rbd/bench'])
            log('rbd I/O')
            bench_io(img, 'qemu-img', 'bench', a.rounds, a.count)
        images = ['snap%d' % i for i in range(4)]
        for im in images:
            sh(['rbd', 'create', '--size', '64M', 'rbd/' + im])
        log('rbd snapshots')
        bench_snapshots(daemon, images, max(a.rounds, 5), d,
                        'group snapshot path', 'g')
        bench_snapshots(daemon, images, max(a.rounds, 5), d,
                        'per-image path', 'p')
    finally:
        subprocess.run(['sh', SCRIPT, 'stop', cdir])
        subprocess.run(['rm', '-rf', d])
    return 0


if __name__ == '__main__':
    sys.exit(main())
