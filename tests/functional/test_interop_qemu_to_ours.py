#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Images written by QEMU must read back identically through our tools.

Images are created and written by qemu-img / qemu-io only:
  * every cluster size (512, 4096, 65536, 2M), each with one refcount
    width (1, 16, 64 in turn; every pair with STRATA_TEST_FULL=1)
    with a seeded random workload (pattern writes, overwrites, zero writes);
  * compat=0.10 (version 2) images, where zero writes cannot use the zero
    flag;
  * compressed images (`qemu-img convert -c -O qcow2`) holding compressed,
    uncompressed (incompressible) and absent clusters, then partially
    overwritten by qemu-io;
  * backing chains: qcow2 <- v2 qcow2 <- larger qcow2, and qcow2 over raw.
For each image, separately: `$STRATA_IO -r -c 'read -P ..'` over every
region whose content is one known byte; `$STRATA_IMG convert -O raw`
byte-for-byte equal (in Python) to the raw shadow and to `qemu-img convert
-O raw`; `$STRATA_IMG check` clean and `$STRATA_IMG compare` identical; the
`map` output of $STRATA_IO, and the output of `$STRATA_IMG info` (human,
JSON, --backing-chain) and `check` (human, JSON) equal to QEMU's for the
same image.
"""

import atexit
import os
import shutil
import sys
import tempfile

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402
import workload  # noqa: E402

MiB = 1 << 20
CLUSTER_SIZES = [512, 4096, 65536, 2 * MiB]
REFCOUNT_BITS = [1, 16, 64]
SIZE = {512: 16 * MiB, 4096: 32 * MiB + 7 * 512, 65536: 48 * MiB + 3 * 512,
        2 * MiB: 40 * MiB + 1536}
NOPS = {512: 80, 4096: 200, 65536: 200, 2 * MiB: 120}

runner = common.Runner()

_workdir = None


def workdir():
    global _workdir
    if _workdir is None:
        _workdir = tempfile.mkdtemp(prefix='strata-ft-q2o-')
        if os.environ.get('STRATA_KEEP_TMP'):
            atexit.register(print, '  (kept %s)' % _workdir)
        else:
            atexit.register(shutil.rmtree, _workdir, True)
    return _workdir


class Fixture:
    """An image written by QEMU, its raw shadow and a content model."""

    def __init__(self, name, build):
        self.name = name
        self._build = build
        self.built = False
        self.error = None

    def get(self):
        if not self.built:
            self.built = True
            d = os.path.join(workdir(), self.name.replace('/', '_'))
            os.mkdir(d)
            try:
                self.img, self.shadow, self.model = self._build(d)
            except Exception as e:  # remembered so every case reports it
                self.error = e
                raise
        if self.error is not None:
            raise common.TestFailure('building the QEMU image failed: %s' % self.error)
        return self


def qemu_create(path, size=None, opts=None, backing=None, backing_fmt='qcow2'):
    argv = [common.tools().qemu_img, 'create', '-f', 'qcow2']
    if opts:
        argv += ['-o', opts]
    if backing:
        argv += ['-b', backing, '-F', backing_fmt]
    argv.append(path)
    if size is not None:
        argv.append(str(size))
    common.run(argv)


def build_workload(d, cs, rb, seed, opts_extra=''):
    t = common.tools()
    size = SIZE[cs]
    img = os.path.join(d, 'img.qcow2')
    opts = 'cluster_size=%d' % cs + (',refcount_bits=%d' % rb if rb else '') + opts_extra
    qemu_create(img, size, opts)
    shadow = common.Shadow(os.path.join(d, 'shadow.raw'), size)
    ops = workload.gen_ops(common.rng(seed), size, cs, NOPS[cs])
    workload.apply(t.qemu_io, img, shadow, ops)
    common.qemu_check_clean(img)
    return img, shadow, workload.apply_model(common.IntervalMap(size), ops)


def build_compressed(d, cs, seed):
    """Raw source with incompressible random runs, pattern runs and holes;
    compressed by qemu-img convert -c; then partly overwritten by qemu-io
    (partial writes into compressed clusters force decompress + COW)."""
    t = common.tools()
    rnd = common.rng(seed)
    size = 24 * MiB + 512
    src = common.Shadow(os.path.join(d, 'src.raw'), size)
    model = common.IntervalMap(size)
    off = 0
    while off < size:
        length = min(size - off, rnd.choice([512, 3000, cs, 2 * cs, 100000, 1 * MiB]))
        kind = rnd.random()
        if kind < 0.25:
            src.write(off, rnd.randbytes(length))
            model.set(off, length, None)
        elif kind < 0.75:
            b = rnd.randint(1, 255)
            src.fill(off, length, b)
            model.set(off, length, b)
        off += length
    img = os.path.join(d, 'img.qcow2')
    common.run([t.qemu_img, 'convert', '-c', '-f', 'raw', '-O', 'qcow2',
                '-o', 'cluster_size=%d' % cs, src.path, img])
    chk = common.run([t.qemu_img, 'check', '--output=json', img]).out
    common.check('"compressed-clusters"' in chk,
                 'qemu-img convert -c made no compressed clusters:\n' + chk)
    ops = workload.gen_ops(rnd, size, cs, 40)
    workload.apply(t.qemu_io, img, src, ops)
    workload.apply_model(model, ops)
    common.qemu_check_clean(img)
    return img, src, model


def build_chain(d, seed):
    """base (v3, 64K) <- mid (v2, 4K) <- top (v3, 2M clusters, 3 MiB larger)."""
    t = common.tools()
    rnd = common.rng(seed)
    size = 32 * MiB
    base = os.path.join(d, 'base.qcow2')
    mid = os.path.join(d, 'mid.qcow2')
    top = os.path.join(d, 'top.qcow2')
    qemu_create(base, size, 'cluster_size=65536')
    shadow = common.Shadow(os.path.join(d, 'shadow.raw'), size)
    model = common.IntervalMap(size)
    for path, cs, n in ((base, 65536, 120), (mid, 4096, 120), (top, 2 * MiB, 80)):
        if path == mid:
            qemu_create(mid, None, 'compat=0.10,cluster_size=4096', backing='base.qcow2')
        elif path == top:
            grow = 3 * MiB
            qemu_create(top, size + grow, 'cluster_size=%d' % (2 * MiB), backing=mid)
            shadow = common.Shadow(os.path.join(d, 'shadow-top.raw'), size + grow, base=shadow)
            model = model.copy(size + grow)
        ops = workload.gen_ops(rnd, shadow.size, cs, n)
        workload.apply(t.qemu_io, path, shadow, ops)
        workload.apply_model(model, ops)
    common.qemu_check_clean(top)
    return top, shadow, model


def build_raw_backing(d, seed):
    """qcow2 overlay (v3, 4K clusters) on a raw base."""
    t = common.tools()
    rnd = common.rng(seed)
    size = 20 * MiB
    base = os.path.join(d, 'base.raw')
    with open(base, 'wb') as fh:
        fh.truncate(size)
    shadow = common.Shadow(os.path.join(d, 'shadow.raw'), size)
    ops = workload.gen_ops(rnd, size, 4096, 80)
    workload.apply(t.qemu_io, base, shadow, ops, fmt='raw')
    model = workload.apply_model(common.IntervalMap(size), ops)
    top = os.path.join(d, 'top.qcow2')
    qemu_create(top, None, 'cluster_size=4096', backing='base.raw', backing_fmt='raw')
    top_shadow = common.Shadow(os.path.join(d, 'shadow-top.raw'), size, base=shadow)
    ops = workload.gen_ops(rnd, size, 4096, 120)
    workload.apply(t.qemu_io, top, top_shadow, ops)
    workload.apply_model(model, ops)
    common.qemu_check_clean(top)
    return top, top_shadow, model


FIXTURES = []
for _cs, _rb in common.format_matrix(CLUSTER_SIZES, REFCOUNT_BITS):
    FIXTURES.append(Fixture('cs=%d,rb=%d' % (_cs, _rb),
                            lambda d, cs=_cs, rb=_rb: build_workload(d, cs, rb, 31 * cs + rb)))
for _cs in (512, 65536):
    FIXTURES.append(Fixture('compat=0.10,cs=%d' % _cs,
                            lambda d, cs=_cs: build_workload(d, cs, None, 7 + cs, ',compat=0.10')))
for _cs in CLUSTER_SIZES:
    FIXTURES.append(Fixture('compressed,cs=%d' % _cs,
                            lambda d, cs=_cs: build_compressed(d, cs, 99 + cs)))
FIXTURES.append(Fixture('chain:v3<-v2<-larger', lambda d: build_chain(d, 2024)))
FIXTURES.append(Fixture('chain:raw<-qcow2', lambda d: build_raw_backing(d, 7)))


def case_read_pattern(fx):
    f = fx.get()
    t = common.tools()
    cmds = common.read_pattern_cmds(f.model.segments(), max_len=1 * MiB)
    common.check(cmds, 'no patterned regions to read?')
    for part in common.chunks(cmds, 200):
        common.run_io(t.io, f.img, part, extra=['-r'])


def case_convert(fx):
    f = fx.get()
    t = common.tools()
    d = os.path.dirname(f.img)
    ours = os.path.join(d, 'ours.raw')
    theirs = os.path.join(d, 'qemu.raw')
    try:
        common.run([t.qemu_img, 'convert', '-f', 'qcow2', '-O', 'raw', f.img, theirs])
        diff = common.files_equal(theirs, f.shadow.path)
        common.check(diff is None, 'test bug: qemu-img convert differs from shadow: %s' % diff)
        common.run([t.img, 'convert', '-f', 'qcow2', '-O', 'raw', f.img, ours])
        diff = common.files_equal(ours, f.shadow.path)
        common.check(diff is None, '%s convert -O raw %s: output differs from the shadow: %s'
                     % (t.img_name, f.img, diff))
    finally:
        for p in (ours, theirs):
            if os.path.exists(p):
                os.unlink(p)


def case_check_compare(fx):
    f = fx.get()
    t = common.tools()
    before = common.sha256(f.img)
    res = common.run([t.img, 'check', f.img], rc=None)
    common.check(res.rc == 0 and 'No errors were found on the image.' in res.out,
                 'check of a clean QEMU image is not clean\n' + res.describe())
    res = common.run([t.img, 'compare', '-f', 'qcow2', '-F', 'raw', f.img, f.shadow.path], rc=None)
    common.check(res.rc == 0 and 'Images are identical.' in res.out,
                 'compare with the shadow failed\n' + res.describe())
    common.check(common.sha256(f.img) == before, 'check/compare modified the image')


def case_map(fx):
    f = fx.get()
    t = common.tools()
    theirs = common.run([t.qemu_io, '-r', '-f', 'qcow2', '-c', 'map', f.img])
    ours = common.run([t.io, '-r', '-f', 'qcow2', '-c', 'map', f.img])
    common.check(ours.out == theirs.out,
                 'map output differs from qemu-io\n--- qemu-io:\n%s--- %s:\n%s'
                 % (theirs.out[:3000], t.io_name, ours.out[:3000]))


def case_info_output(fx):
    """Same options, same output: info (human, JSON, whole chain) and check
    (human, JSON) print exactly what qemu-img prints for the same image."""
    f = fx.get()
    t = common.tools()
    diffs = []
    for args in (['info'], ['info', '--output=json'], ['info', '--backing-chain'],
                 ['check'], ['check', '--output=json']):
        theirs = common.run([t.qemu_img] + args + [f.img], rc=None)
        ours = common.run([t.img] + args + [f.img], rc=None)
        a = common.normalize_prog(theirs.out + theirs.err, 'qemu-img')
        b = common.normalize_prog(ours.out + ours.err, t.img_name)
        if (ours.rc, b) != (theirs.rc, a):
            diffs.append('%s: exit %s vs qemu-img %s\n--- qemu-img:\n%s--- %s:\n%s'
                         % (' '.join(args), ours.rc, theirs.rc, a[:2000], t.img_name, b[:2000]))
    if diffs:
        common.fail('\n'.join(diffs))


for _fx in FIXTURES:
    runner.add('%s: read -P' % _fx.name, case_read_pattern, _fx)
    runner.add('%s: convert -O raw' % _fx.name, case_convert, _fx)
    runner.add('%s: check+compare' % _fx.name, case_check_compare, _fx)
    runner.add('%s: map' % _fx.name, case_map, _fx)
    runner.add('%s: info/check output' % _fx.name, case_info_output, _fx)

if __name__ == '__main__':
    sys.exit(runner.main())
