#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Images written by us must be valid and identical in QEMU's eyes.

For every cluster size (512, 4096, 65536, 2M), each with one refcount
width (1, 16, 64 bits in turn; every pair with STRATA_TEST_FULL=1): create a qcow2 image with $STRATA_IMG, apply a seeded random
workload (pattern writes at aligned and unaligned offsets, overwrites,
zero writes, writes touching the last byte) with $STRATA_IO while
mirroring every op onto a raw shadow file; then `qemu-img check` must
report no errors and no leaks (exit 0) and `qemu-img compare` must find
the image identical to the shadow.  Also: backing chains of three images
(base, mid, top) created with `create -f qcow2 -b X -F qcow2` with writes
at each level, including a chain with mixed cluster sizes and a top larger
than its backing; compat=0.10 (version 2) images; and images compressed by
`qemu-img convert -c` then overwritten by us (partial writes into
compressed clusters, zero writes over them).
"""

import os
import sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402
import workload  # noqa: E402

MiB = 1 << 20
CLUSTER_SIZES = [512, 4096, 65536, 2 * MiB]
REFCOUNT_BITS = [1, 16, 64]

# Virtual sizes: deliberately not multiples of the cluster size (the last
# cluster is partial) for the larger clusters.
SIZE = {512: 16 * MiB, 4096: 32 * MiB + 7 * 512, 65536: 48 * MiB + 3 * 512,
        2 * MiB: 40 * MiB + 1536}
NOPS = {512: 100, 4096: 200, 65536: 200, 2 * MiB: 120}

runner = common.Runner()


def create(path, size=None, opts=None, backing=None):
    t = common.tools()
    argv = [t.img, 'create', '-f', 'qcow2']
    if opts:
        argv += ['-o', opts]
    if backing:
        argv += ['-b', backing, '-F', 'qcow2']
    argv.append(path)
    if size is not None:
        argv.append(str(size))
    common.run(argv)
    common.check(os.path.exists(path), 'create did not make %s' % path)


def verify(img, shadow_path):
    common.qemu_check_clean(img)
    common.qemu_compare_identical(img, shadow_path)


def matrix_case(cs, rb):
    t = common.tools()
    size = SIZE[cs]
    with common.TempDir() as d:
        img = os.path.join(d, 'img.qcow2')
        create(img, size, 'cluster_size=%d,refcount_bits=%d' % (cs, rb))
        # The header must say what we asked for.
        info = common.run([t.qemu_img, 'info', '--output=json', img]).out
        common.check('"cluster-size": %d' % cs in info and
                     '"refcount-bits": %d' % rb in info and
                     '"virtual-size": %d' % size in info,
                     'qemu-img info disagrees with the creation options:\n' + info)
        # An empty image is already clean.
        verify_shadow = common.Shadow(os.path.join(d, 'shadow.raw'), size)
        verify(img, verify_shadow.path)
        rnd = common.rng(1000 * cs.bit_length() + rb)
        ops = workload.gen_ops(rnd, size, cs, NOPS[cs])
        half = len(ops) // 2
        # two separate invocations: the second reopens what the first wrote
        workload.apply(t.io, img, verify_shadow, ops[:half])
        verify(img, verify_shadow.path)
        workload.apply(t.io, img, verify_shadow, ops[half:])
        verify(img, verify_shadow.path)


for _cs, _rb in common.format_matrix(CLUSTER_SIZES, REFCOUNT_BITS):
    runner.add('cluster_size=%d,refcount_bits=%d' % (_cs, _rb), matrix_case, _cs, _rb)


def compat010_case(cs):
    t = common.tools()
    size = SIZE[cs]
    with common.TempDir() as d:
        img = os.path.join(d, 'v2.qcow2')
        create(img, size, 'compat=0.10,cluster_size=%d' % cs)
        info = common.run([t.qemu_img, 'info', '--output=json', img]).out
        common.check('"compat": "0.10"' in info, 'not a v2 image:\n' + info)
        shadow = common.Shadow(os.path.join(d, 'shadow.raw'), size)
        ops = workload.gen_ops(common.rng(77 + cs), size, cs, NOPS[cs] // 2)
        workload.apply(t.io, img, shadow, ops)
        verify(img, shadow.path)
        info = common.run([t.qemu_img, 'info', '--output=json', img]).out
        common.check('"compat": "0.10"' in info, 'image no longer v2 after writes:\n' + info)


for _cs in (4096, 65536):
    runner.add('compat=0.10,cluster_size=%d' % _cs, compat010_case, _cs)


def chain_case(cluster_sizes, seed, top_grow=0):
    """base <- mid <- top, writes at each level; every level is checked
    and compared with its own shadow (the shadow of an overlay starts as a
    copy of its backing's shadow)."""
    t = common.tools()
    size = SIZE[max(cluster_sizes)] if len(set(cluster_sizes)) > 1 else SIZE[cluster_sizes[0]]
    rnd = common.rng(seed)
    with common.TempDir() as d:
        names = ['base.qcow2', 'mid.qcow2', 'top.qcow2']
        paths = [os.path.join(d, n) for n in names]
        shadows = []
        for level, (path, cs) in enumerate(zip(paths, cluster_sizes)):
            opts = 'cluster_size=%d' % cs
            if level == 0:
                create(path, size, opts)
                shadow = common.Shadow(path + '.raw', size)
            elif level == 1:
                # relative backing name: resolved against the overlay's directory
                create(path, None, opts, backing=names[0])
                shadow = common.Shadow(path + '.raw', size, base=shadows[-1])
            else:
                # absolute backing name, and (optionally) a larger overlay
                create(path, size + top_grow if top_grow else None, opts,
                       backing=paths[1])
                shadow = common.Shadow(path + '.raw', size + top_grow, base=shadows[-1])
            shadows.append(shadow)
            ops = workload.gen_ops(rnd, shadow.size, cs, min(NOPS[cs], 80))
            workload.apply(t.io, path, shadow, ops)
        info = common.run([t.qemu_img, 'info', '--backing-chain', paths[2]]).out
        for n in names:
            common.check(n in info, 'backing chain incomplete in qemu-img info:\n' + info)
        for path, shadow in zip(paths, shadows):
            verify(path, shadow.path)


for _cs in CLUSTER_SIZES:
    runner.add('chain,cluster_size=%d' % _cs, chain_case, [_cs] * 3, 500 + _cs.bit_length())
runner.add('chain,mixed_clusters,larger_top', chain_case, [65536, 4096, 2 * MiB], 4242,
           top_grow=5 * MiB + 512)

def compressed_case(cs):
    """A QEMU-compressed image (compressed, plain and absent clusters)
    overwritten by us: partial writes into compressed clusters must
    decompress and copy, zero writes must hide them."""
    t = common.tools()
    rnd = common.rng(cs + 1)
    size = 16 * MiB
    with common.TempDir() as d:
        shadow = common.Shadow(os.path.join(d, 'shadow.raw'), size)
        off = 0
        while off < size:
            length = min(size - off, rnd.choice([512, cs, 3 * cs, 300000]))
            if rnd.random() < 0.3:
                shadow.write(off, rnd.randbytes(length))
            elif rnd.random() < 0.8:
                shadow.fill(off, length, rnd.randint(1, 255))
            off += length
        img = os.path.join(d, 'c.qcow2')
        common.run([t.qemu_img, 'convert', '-c', '-f', 'raw', '-O', 'qcow2',
                    '-o', 'cluster_size=%d' % cs, shadow.path, img])
        ops = workload.gen_ops(rnd, size, cs, 60)
        workload.apply(t.io, img, shadow, ops)
        verify(img, shadow.path)


for _cs in (4096, 65536, 2 * MiB):
    runner.add('qemu-compressed,cluster_size=%d: our writes' % _cs, compressed_case, _cs)

if __name__ == '__main__':
    sys.exit(runner.main())
