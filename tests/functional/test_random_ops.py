#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Thousands of seeded random operations against one qcow2 image.

Each configuration (cluster size, refcount width, version) runs batches of
200 commands through ONE $STRATA_IO invocation per batch: pattern writes,
zero writes, cluster-aligned discards, flushes and reads.  A Python model
keeps the image contents as runs of single bytes, so every read is a
`read -P` over a run with one expected byte, checked against what the
model says at that moment (reads see the writes earlier in the same
batch).  After every few batches and at the end, `qemu-img check` must be
clean and `qemu-img compare` must find the image equal to the model's raw
rendering.  A failing read is reported with the history of the ops that
touched the failing offset.
"""

import os
import sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402

MiB = 1 << 20
BATCH = 200

# name, cluster size, create options, virtual size, number of ops, seed
CONFIGS = [
    ('v3,cs=64K,rb=16', 65536, 'cluster_size=65536,refcount_bits=16', 64 * MiB, 2400, 1),
    ('v3,cs=4K,rb=1', 4096, 'cluster_size=4096,refcount_bits=1', 32 * MiB + 512, 1400, 2),
    ('v3,cs=512,rb=64', 512, 'cluster_size=512,refcount_bits=64', 6 * MiB, 800, 3),
    ('v2,cs=64K', 65536, 'compat=0.10,cluster_size=65536', 48 * MiB, 800, 4),
    ('v3,cs=2M,rb=16', 2 * MiB, 'cluster_size=2097152', 40 * MiB + 1536, 600, 5),
]

runner = common.Runner()


class Model:
    def __init__(self, size, cs, rnd):
        self.size = size
        self.cs = cs
        self.rnd = rnd
        self.map = common.IntervalMap(size, 0)
        self.history = []          # (op index, command, off, len)

    def _range(self, max_len):
        r = self.rnd.random()
        if r < 0.4:
            length = self.rnd.randint(1, 8192)
        elif r < 0.85:
            length = self.rnd.randint(1, 3 * self.cs)
        else:
            length = self.rnd.randint(1, max_len)
        length = min(length, self.size, max_len)
        off = self.rnd.randrange(0, self.size - length + 1)
        a = self.rnd.random()
        if a < 0.3:
            off -= off % self.cs
        elif a < 0.7:
            off -= off % 512
        if self.rnd.random() < 0.3 and length >= 512:
            length -= length % 512
        return off, length

    def next_op(self):
        """Return (command, expected-read or None) and update the model."""
        r = self.rnd.random()
        idx = len(self.history)
        if r < 0.35:
            off, length = self._range(1 * MiB)
            b = self.rnd.randint(1, 255)
            self.map.set(off, length, b)
            cmd = 'write -P 0x%02x %d %d' % (b, off, length)
        elif r < 0.47:
            off, length = self._range(2 * MiB)
            self.map.set(off, length, 0)
            cmd = 'write -z %d %d' % (off, length)
        elif r < 0.52:
            nclusters = self.rnd.randint(1, 4)
            first = self.rnd.randrange(0, self.size // self.cs)
            off = first * self.cs
            length = min(nclusters * self.cs, self.size - off)
            length -= length % self.cs
            if length == 0:
                return self.next_op()
            self.map.set(off, length, 0)
            cmd = 'discard %d %d' % (off, length)
        elif r < 0.55:
            self.history.append((idx, 'flush', 0, 0))
            return 'flush'
        else:
            pos = self.rnd.randrange(0, self.size)
            start, seglen, val = self.map.segment_at(pos)
            if self.rnd.random() < 0.5:
                # somewhere inside the run
                off = self.rnd.randrange(start, start + seglen)
                length = self.rnd.randint(1, min(start + seglen - off, 1 * MiB))
            else:
                # the whole run (capped), starting at its first byte
                off, length = start, min(seglen, 1 * MiB)
            cmd = 'read -P 0x%02x %d %d' % (val, off, length)
        self.history.append((idx, cmd, off, length))
        return cmd

    def explain(self, offset):
        """The last ops whose range covers offset."""
        hits = [h for h in self.history if h[2] <= offset < h[2] + h[3]]
        return '\n'.join('    #%d %s' % (h[0], h[1]) for h in hits[-8:])


def run_config(name, cs, opts, size, nops, seed):
    t = common.tools()
    rnd = common.rng(seed)
    with common.TempDir() as d:
        img = os.path.join(d, 'img.qcow2')
        common.run([t.img, 'create', '-f', 'qcow2', '-o', opts, img, str(size)])
        model = Model(size, cs, rnd)
        nbatches = (nops + BATCH - 1) // BATCH
        for b in range(nbatches):
            first = len(model.history)
            cmds = [model.next_op() for _ in range(BATCH)]
            res = common.run([t.io, '-f', 'qcow2'] + common.io_args(cmds) + [img], rc=None)
            m = common.PATTERN_FAIL_RE.search(res.out)
            if m:
                bad = int(m.group(1))
                fail_cmd = next((h for h in model.history[first:]
                                 if h[1].startswith('read') and h[2] <= bad < h[2] + h[3]), None)
                common.fail('batch %d: %s\n  failing read: %s\n  ops touching offset %d:\n%s\n%s'
                            % (b, m.group(0), fail_cmd and '#%d %s' % (fail_cmd[0], fail_cmd[1]),
                               bad, model.explain(bad), res.describe(1500)))
            common.check(res.rc == 0, 'batch %d failed\n%s' % (b, res.describe()))
            nw = sum(1 for c in cmds if c.startswith('write'))
            nr = sum(1 for c in cmds if c.startswith('read'))
            nd = sum(1 for c in cmds if c.startswith('discard'))
            got = (len(common.WROTE_RE.findall(res.out)), len(common.READ_RE.findall(res.out)),
                   res.out.count('discard '))
            common.check(got == (nw, nr, nd),
                         'batch %d: expected %d wrote / %d read / %d discard lines, got %s\n%s'
                         % (b, nw, nr, nd, got, res.describe()))
            if b % 4 == 3 or b == nbatches - 1:
                common.qemu_check_clean(img)
        shadow = os.path.join(d, 'model.raw')
        model.map.write_raw(shadow)
        common.qemu_compare_identical(img, shadow)
        # and once more through our own reader, from a fresh open, read-only
        cmds = common.read_pattern_cmds(model.map.segments(), max_len=4 * MiB)
        for part in common.chunks(cmds, BATCH):
            common.run_io(t.io, img, part, extra=['-r'])


for _cfg in CONFIGS:
    runner.add(_cfg[0], run_config, *_cfg)

if __name__ == '__main__':
    sys.exit(runner.main())
