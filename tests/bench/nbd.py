#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""NBD export speed: strata-daemon against qemu-storage-daemon.

`make bench` runs ``python3 tests/bench/nbd.py --build build``.  Both
daemons export a copy of the same fully written raw image (a raw node
over a file node, write-back cache) on a unix socket, side by side in
the same run; `qemu-img bench` (the NBD client of QEMU 7.2) drives each
export with 4 KiB and 64 KiB reads and writes at queue depth 1 and 16.
The two daemons take turns (strata/QEMU, then QEMU/strata, ...) for
--rounds rounds after one warm-up run each; each side's median is kept.
The result is a Markdown table on stdout whose ratio column is strata /
QEMU in requests per second: 1.00 is parity, higher is better for us.
Progress goes to stderr.  A benchmark, never a test: nothing here is
asserted, and make check does not run it.
"""

import argparse
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

SIZE = 256 << 20
CASES = [  # (label, request size, depth, write, count)
    ('4 KiB read, depth 1', 4096, 1, False, 20000),
    ('4 KiB read, depth 16', 4096, 16, False, 40000),
    ('4 KiB write, depth 1', 4096, 1, True, 20000),
    ('4 KiB write, depth 16', 4096, 16, True, 40000),
    ('64 KiB read, depth 1', 65536, 1, False, 8000),
    ('64 KiB read, depth 16', 65536, 16, False, 16000),
    ('64 KiB write, depth 1', 65536, 1, True, 8000),
    ('64 KiB write, depth 16', 65536, 16, True, 16000),
]


def log(msg):
    print(msg, file=sys.stderr, flush=True)


class Export:
    def __init__(self, binary, d, name):
        self.dir = os.path.join(d, name)
        os.mkdir(self.dir)
        self.img = os.path.join(self.dir, 'disk.raw')
        shutil.copyfile(os.path.join(d, 'master.raw'), self.img)
        self.sock = os.path.join(self.dir, 'nbd.sock')
        self.proc = subprocess.Popen([
            binary, '--blockdev',
            'driver=raw,node-name=d0,file.driver=file,file.filename=%s'
            % self.img,
            '--nbd-server', 'addr.type=unix,addr.path=%s' % self.sock,
            '--export', 'type=nbd,id=e0,node-name=d0,name=disk,writable=on'],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 30
        while True:
            try:
                s = socket.socket(socket.AF_UNIX)
                s.connect(self.sock)
                s.close()
                break
            except OSError:
                if self.proc.poll() is not None or \
                        time.monotonic() > deadline:
                    raise SystemExit('%s did not start: %s' % (
                        binary, self.proc.stderr.read().decode()))
                time.sleep(0.05)
        self.uri = 'nbd+unix:///disk?socket=%s' % self.sock

    def stop(self):
        self.proc.terminate()
        self.proc.wait(60)


def bench(exp, size, depth, write, count):
    argv = ['qemu-img', 'bench', '-f', 'raw', '-c', str(count),
            '-d', str(depth), '-s', str(size), '-S', str(size * 7)]
    if write:
        argv.append('-w')
    res = subprocess.run(argv + [exp.uri], capture_output=True, text=True,
                         check=True)
    m = re.search(r'Run completed in ([0-9.]+) seconds', res.stdout)
    return count / float(m.group(1))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--build', default='build')
    ap.add_argument('--rounds', type=int, default=3)
    ap.add_argument('--scratch', default=None)
    args = ap.parse_args()
    strata = os.path.join(args.build, 'tools', 'daemon', 'strata-daemon')
    qsd = shutil.which('qemu-storage-daemon')
    if not os.access(strata, os.X_OK) or not qsd or \
            not shutil.which('qemu-img'):
        log('nbd bench: strata-daemon, qemu-storage-daemon or qemu-img '
            'missing; skipped')
        return 0
    d = tempfile.mkdtemp(prefix='strata-nbd-bench-', dir=args.scratch)
    try:
        with open(os.path.join(d, 'master.raw'), 'wb') as f:
            chunk = os.urandom(1 << 20)
            for _ in range(SIZE >> 20):
                f.write(chunk)
        sides = {'strata': Export(os.path.abspath(strata), d, 'strata'),
                 'qemu': Export(qsd, d, 'qemu')}
        rows = []
        try:
            for label, size, depth, write, count in CASES:
                scores = {'strata': [], 'qemu': []}
                for side in ('strata', 'qemu'):
                    bench(sides[side], size, depth, write, count // 4)
                for r in range(args.rounds):
                    order = ('strata', 'qemu') if r % 2 == 0 \
                        else ('qemu', 'strata')
                    for side in order:
                        scores[side].append(bench(sides[side], size, depth,
                                                  write, count))
                s = statistics.median(scores['strata'])
                q = statistics.median(scores['qemu'])
                log('%-24s strata %9.0f  qemu %9.0f  ratio %.2f'
                    % (label, s, q, s / q))
                rows.append((label, s, q))
        finally:
            for e in sides.values():
                e.stop()
    finally:
        shutil.rmtree(d, ignore_errors=True)
    print('\n### NBD export: qemu-img bench over a unix socket '
          '(requests/s, median of %d)\n' % args.rounds)
    print('| case | strata-daemon | qemu-storage-daemon | ratio |')
    print('| --- | ---: | ---: | ---: |')
    for label, s, q in rows:
        print('| %s | %.0f | %.0f | %.2f |' % (label, s, q, s / q))
    return 0


if __name__ == '__main__':
    sys.exit(main())
