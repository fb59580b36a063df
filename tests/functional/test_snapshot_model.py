#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""A seeded random walk over writes and snapshot operations, with a model.

For each configuration (cluster size, refcount width, seed), one image
lives through a few dozen steps; each step is one of: a batch of pattern
and zero writes, snapshot create, delete or apply, or a growing resize.
Most steps go through our tools ($STRATA_IO, $STRATA_IMG snapshot), some
through QEMU's, so each side keeps working on what the other wrote.  A
Python model keeps the expected content of the active image and of every
snapshot (runs of single bytes, see common.IntervalMap) and its size.
After every step: `qemu-img check` and `strata-img check` report no
errors and no leaks, the active image reads as the model says (qemu-io
read -P), and every snapshot read through `qemu-img convert -l` equals its
model; every few steps and at the end we read the snapshots ourselves too.
A failure names the seed and the step; STRATA_TEST_SEED shifts the seeds.
"""

import os
import sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402
import snaplib  # noqa: E402
import workload  # noqa: E402

MiB = 1 << 20
SEED_SHIFT = int(os.environ.get('STRATA_TEST_SEED', '0'))

# name, create options, size, cluster size, steps, seed
CONFIGS = [
    ('64k', 'cluster_size=65536', 6 * MiB, 65536, 28, 1),
    ('4k-rb64', 'cluster_size=4096,refcount_bits=64', 3 * MiB + 512, 4096,
     26, 2),
    ('512-rb8', 'cluster_size=512,refcount_bits=8', 1 * MiB, 512, 22, 3),
]

runner = common.Runner()


class Model:
    def __init__(self, size):
        self.active = common.IntervalMap(size)
        self.snaps = {}          # name -> IntervalMap (its size is its own)
        self.raws = {}           # (name, size) -> the model as a raw file
        self.order = []          # names in table order
        self.counter = 0


def verify(d, img, m, ours_too):
    t = common.tools()
    snaplib.check_both_clean(img)
    info = snaplib.qemu_list(img)
    common.check([n for _, n in info] == m.order,
                 'snapshot list %s, model %s' % (info, m.order))
    h = snaplib.Header(img)
    common.check(h.size == m.active.size, 'virtual size %d, model %d'
                 % (h.size, m.active.size))
    cmds = common.read_pattern_cmds(list(m.active.segments()))
    for part in common.chunks(cmds, 400):
        common.run_io(t.qemu_io, img, part, extra=['-r', '-U'])
    got = os.path.join(d, 'got.raw')
    for name in m.order:
        for by in (('qemu', 'ours') if ours_too else ('qemu',)):
            snaplib.snapshot_raw(img, name, got, by=by)
            want = m.snaps[name]
            if by == 'qemu' or t.img_is_qemu:
                # QEMU reads a snapshot with the image's current size; we
                # with the snapshot's own
                want = want.copy(m.active.size)
            key = (name, want.size)
            if key not in m.raws:
                m.raws[key] = os.path.join(d, 'model-%s-%d.raw' % key)
                want.write_raw(m.raws[key])
            diff = common.files_equal(got, m.raws[key])
            common.check(diff is None, 'snapshot %s read by %s differs from '
                         'the model: %s' % (name, by, diff))


def step(rnd, d, img, m, cs, log):
    t = common.tools()
    ours = rnd.random() < 0.75
    img_tool = t.img if ours else t.qemu_img
    who = 'ours' if ours else 'qemu'
    r = rnd.random()
    if not m.order:
        r = 0.0 if r < 0.5 else 0.5     # nothing to delete or apply
    if r < 0.4:
        ops = workload.gen_ops(rnd, m.active.size, cs, rnd.randint(2, 8))
        io = t.io if ours else t.qemu_io
        common.run_io(io, img, [workload.io_cmd(op) for op in ops])
        workload.apply_model(m.active, ops)
        log.append('%s writes %d ops' % (who, len(ops)))
    elif r < 0.6:
        if len(m.order) >= 6:
            return step(rnd, d, img, m, cs, log)
        m.counter += 1
        name = 'snap-%d' % m.counter
        common.run([img_tool, 'snapshot', '-c', name, img])
        m.snaps[name] = m.active.copy()
        m.order.append(name)
        log.append('%s create %s' % (who, name))
    elif r < 0.75:
        name = rnd.choice(m.order)
        common.run([img_tool, 'snapshot', '-d', name, img])
        del m.snaps[name]
        m.order.remove(name)
        log.append('%s delete %s' % (who, name))
    elif r < 0.93:
        name = rnd.choice(m.order)
        common.run([img_tool, 'snapshot', '-a', name, img])
        m.active = m.snaps[name].copy()
        log.append('%s apply %s' % (who, name))
    else:
        grow = rnd.choice([512, cs, 3 * MiB + 512])
        common.run([t.qemu_img, 'resize', '-q', img,
                    str(m.active.size + grow)])
        m.active = m.active.copy(m.active.size + grow)
        log.append('qemu resize +%d' % grow)


def run_config(opts, size, cs, steps, seed):
    t = common.tools()
    seed += SEED_SHIFT
    rnd = common.rng(seed)
    with snaplib.ShmDir() as d:
        img = os.path.join(d, 'img.qcow2')
        common.run([t.img, 'create', '-q', '-f', 'qcow2', '-o', opts, img,
                    str(size)])
        m = Model(size)
        log = []
        for i in range(steps):
            step(rnd, d, img, m, cs, log)
            try:
                verify(d, img, m, ours_too=(i % 8 == 7 or i == steps - 1))
            except common.TestFailure as e:
                common.fail('seed %d, step %d (%s):\n%s\nsteps so far:\n  %s'
                            % (seed, i, log[-1], e, '\n  '.join(log)))


for name, opts, size, cs, steps, seed in CONFIGS:
    runner.add(name, run_config, opts, size, cs, steps, seed)


if __name__ == '__main__':
    sys.exit(runner.main())
