#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""A writer killed with SIGKILL at random moments loses nothing it flushed.

A $STRATA_IO process runs a long list of `write -P N OFF LEN` (or
`write -z OFF LEN`) commands, each followed by `flush`, with its stdout on
a pseudo-terminal so every "wrote ..." line arrives as it is printed.  It
is killed with SIGKILL after a random number of completed writes (or at a
random moment, possibly while opening).  A write is known to be durable
once the line of the *next* write has been printed (its flush ran in
between); the last printed write and the one in progress are unknown.
After each kill (40 in total over three configurations, one of them
with extended L2 entries, each on one image that accumulates them): `qemu-img check` must exit 0 or 3 (leaks are
allowed, corruption never), `$STRATA_IMG check` must agree with it (exit
code and number of leaked clusters), and `$STRATA_IO -r` must read back
every byte whose content is known (every durable write, and zeros never
written) with `read -P`.
"""

import errno
import os
import pty
import re
import select
import signal
import subprocess
import sys
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402

MiB = 1 << 20
OPS_PER_WRITER = 300
ITER_TIMEOUT = 120.0

# name, create options, size, iterations, seed
CONFIGS = [
    ('cs=64K,rb=16', 'cluster_size=65536', 64 * MiB, 15, 11),
    ('cs=4K,rb=1', 'cluster_size=4096,refcount_bits=1', 32 * MiB, 15, 12),
    # 16-byte L2 entries: writes fill and mark single subclusters
    ('cs=32K,extended_l2', 'cluster_size=32768,extended_l2=on', 32 * MiB,
     10, 13),
]

runner = common.Runner()


def o_direct_works(d):
    try:
        fd = os.open(os.path.join(d, '.odirect'), os.O_CREAT | os.O_RDWR | os.O_DIRECT, 0o600)
    except OSError:
        return False
    os.close(fd)
    os.unlink(os.path.join(d, '.odirect'))
    return True


def gen_ops(rnd, size, first_pattern):
    ops = []
    for i in range(OPS_PER_WRITER):
        length = rnd.choice([512, 4096, 65536, rnd.randint(1, 300000)])
        off = rnd.randrange(0, size - length + 1)
        if rnd.random() < 0.7:
            off -= off % 512
        if rnd.random() < 0.12:
            ops.append(('write -z %d %d' % (off, length), off, length, 0))
        else:
            val = (first_pattern + i) % 255 + 1
            ops.append(('write -P 0x%02x %d %d' % (val, off, length), off, length, val))
    return ops


def drain(fd, buf):
    while True:
        r, _, _ = select.select([fd], [], [], 0)
        if not r:
            return buf
        try:
            chunk = os.read(fd, 65536)
        except OSError as e:
            if e.errno in (errno.EIO, errno.EAGAIN):
                return buf
            raise
        if not chunk:
            return buf
        buf += chunk


def run_writer(io, img, ops, cache, rnd, d):
    """Start the writer, kill it at a random point; return (completed
    write count, finished normally?)."""
    cmds = []
    for op in ops:
        cmds += ['-c', op[0], '-c', 'flush']
    argv = [io, '-f', 'qcow2', '-t', cache] + cmds + [img]
    master, slave = pty.openpty()
    errpath = os.path.join(d, 'writer.err')
    by_time = rnd.random() < 0.2
    target = rnd.randint(0, int(len(ops) * 0.8))
    with open(errpath, 'wb') as err:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=slave, stderr=err,
                                preexec_fn=common.limit_resources)
    buf = b''
    t0 = time.monotonic()
    kill_at = t0 + rnd.uniform(0, 0.4) if by_time else None
    killed = False
    try:
        while proc.poll() is None:
            now = time.monotonic()
            if now - t0 > ITER_TIMEOUT:
                proc.kill()
                proc.wait()
                common.fail('writer did not finish in %ss' % ITER_TIMEOUT)
            wait = 0.05 if kill_at is None else max(0, min(0.05, kill_at - now))
            r, _, _ = select.select([master], [], [], wait)
            if r:
                buf = drain(master, buf)
            if kill_at is None and buf.count(b'wrote ') >= target:
                kill_at = time.monotonic() + rnd.uniform(0, 0.01)
            if kill_at is not None and time.monotonic() >= kill_at:
                proc.send_signal(signal.SIGKILL)
                killed = True
                break
        proc.wait()
        buf = drain(master, buf)
    finally:
        os.close(master)
        os.close(slave)
    out = buf.decode('utf-8', 'replace').replace('\r', '')
    with open(errpath, 'rb') as f:
        errtext = f.read().decode('utf-8', 'replace')
    res = common.Result(argv[:6] + ['...'], proc.returncode, out, errtext, 0)
    if common.sanitizer_report(errtext):
        common.fail('sanitizer report from the writer\n' + res.describe(20000))
    if proc.returncode != -signal.SIGKILL:
        # it ended on its own before the kill: it must have succeeded
        killed = False
        if proc.returncode != 0:
            common.fail('writer failed\n' + res.describe())
    lines = common.WROTE_RE.findall(out)
    for i, (n, total, off) in enumerate(lines):
        want = ops[i]
        if (int(n), int(total), int(off)) != (want[2], want[2], want[1]):
            common.fail('writer output #%d does not match its command %r: %r'
                        % (i, want[0], lines[i]))
    if not killed:
        common.check(len(lines) == len(ops), 'writer exited 0 after %d of %d writes\n%s'
                     % (len(lines), len(ops), res.describe()))
    return len(lines), not killed


def leaks(check_out):
    m = re.search(r'^(\d+) leaked clusters were found on the image', check_out, re.M)
    return int(m.group(1)) if m else 0


def crash_config(name, opts, size, iterations, seed):
    t = common.tools()
    rnd = common.rng(seed)
    problems = []
    with common.TempDir() as d:
        img = os.path.join(d, 'img.qcow2')
        common.run([t.img, 'create', '-f', 'qcow2', '-o', opts, img, str(size)])
        model = common.IntervalMap(size, 0)
        caches = ['writeback', 'none'] if o_direct_works(d) else ['writeback']
        stats = []
        for it in range(iterations):
            ops = gen_ops(rnd, size, it * 37)
            cache = caches[it % len(caches)]
            done, finished = run_writer(t.io, img, ops, cache, rnd, d)
            durable = done if finished else max(0, done - 1)
            for op in ops[:durable]:
                model.set(op[1], op[2], op[3])
            for op in ops[durable:min(done + 1, len(ops))]:
                model.set(op[1], op[2], None)
            where = 'iteration %d (cache=%s, %d writes completed, %s)' % (
                it, cache, done, 'finished' if finished else 'killed')
            q = common.run([t.qemu_img, 'check', img], rc=None)
            stats.append('%d%s%s' % (done, '' if finished else 'k', '+leaks' if q.rc == 3 else ''))
            if q.rc not in (0, 3):
                common.fail('%s: qemu-img check must exit 0 or 3\n%s' % (where, q.describe()))
            ours = common.run([t.img, 'check', img], rc=None)
            if (ours.rc, leaks(ours.out)) != (q.rc, leaks(q.out)):
                problems.append('%s: %s check: exit %d, %d leaks; qemu-img check: exit %d, '
                                '%d leaks\n%s\n--- qemu-img:\n%s%s'
                                % (where, t.img_name, ours.rc, leaks(ours.out), q.rc,
                                   leaks(q.out), ours.describe(), q.out, q.err[:1500]))
            cmds = common.read_pattern_cmds(model.segments(), max_len=4 * MiB)
            for part in common.chunks(cmds, 200):
                res = common.run([t.io, '-r', '-f', 'qcow2'] + common.io_args(part) + [img],
                                 rc=None)
                m = common.PATTERN_FAIL_RE.search(res.out)
                if m or res.rc != 0:
                    common.fail('%s: durable data does not read back: %s\n%s'
                                % (where, m.group(0) if m else 'read failed', res.describe()))
        print('     completed writes per iteration (k: killed): %s' % ' '.join(stats))
    if problems:
        common.fail('\n'.join(problems))


for _cfg in CONFIGS:
    runner.add(_cfg[0], crash_config, *_cfg)

if __name__ == '__main__':
    sys.exit(runner.main())
