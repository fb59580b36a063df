# SPDX-License-Identifier: LGPL-2.1-or-later
"""Helpers shared by the backing-chain tests (test_chain_*.py,
test_commit_stream.py).

What lives here: a scratch directory in /dev/shm when there is one, chains
of images built layer by layer (by us or by QEMU) with a raw shadow of what
the chain reads at each level, reading a chain back as raw bytes through
either tool, and JSON helpers for `info --backing-chain` and `map`.
"""

import hashlib
import json
import os

import common
import workload

MiB = 1 << 20


def ShmDir(prefix='strata-chain-'):
    """A scratch directory in /dev/shm if possible (removed afterwards)."""
    return common.TempDir(prefix, shm=True)


def create(img_tool, path, size=None, backing=None, backing_fmt='qcow2',
           opts=None, unsafe=False):
    argv = [img_tool, 'create', '-q', '-f', 'qcow2']
    if opts:
        argv += ['-o', opts]
    if backing is not None:
        argv += ['-b', backing]
        if backing_fmt:
            argv += ['-F', backing_fmt]
    if unsafe:
        argv.append('-u')
    argv.append(path)
    if size is not None:
        argv.append(str(size))
    common.run(argv)


def build_chain(d, depth, sizes, seed, by_qemu=False, nops=24,
                relative=True, cluster_size=65536, names=None):
    """Layers d/L0.qcow2 (bottom) .. d/L{depth-1}.qcow2, each written while
    it was the top.  Returns (paths, shadows) -- shadows[i] is a raw file
    with what layer i reads through its chain."""
    t = common.tools()
    img = t.qemu_img if by_qemu else t.img
    io = t.qemu_io if by_qemu else t.io
    rnd = common.rng(seed)
    names = names or ['L%d.qcow2' % i for i in range(depth)]
    paths = [os.path.join(d, n) for n in names]
    shadows = []
    for i in range(depth):
        opts = 'cluster_size=%d' % cluster_size
        if i == 0:
            create(img, paths[i], sizes[i], opts=opts)
            shadow = common.Shadow(paths[i] + '.raw', sizes[i])
        else:
            backing = names[i - 1] if relative else paths[i - 1]
            create(img, paths[i], sizes[i], backing=backing, opts=opts)
            shadow = common.Shadow(paths[i] + '.raw', sizes[i],
                                   base=shadows[-1])
        ops = workload.gen_ops(rnd, sizes[i], cluster_size, nops)
        workload.apply(io, paths[i], shadow, ops)
        shadows.append(shadow)
    return paths, shadows


def read_raw(tool_img, img, out, fmt='qcow2'):
    """The guest view of img (with its chain) as a raw file, via `convert`."""
    if os.path.exists(out):
        os.unlink(out)
    common.run([tool_img, 'convert', '-f', fmt, '-O', 'raw', img, out])
    return out


def sha256(path):
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(1 << 20), b''):
            h.update(chunk)
    return h.hexdigest()


def prefix_equal(raw, shadow_path, length):
    """The first `length` bytes of two raw files are equal."""
    with open(raw, 'rb') as a, open(shadow_path, 'rb') as b:
        left = length
        while left:
            n = min(left, 1 << 20)
            x, y = a.read(n), b.read(n)
            if x != y:
                return False
            left -= n
    return True


def info_chain(tool_img, img):
    res = common.run([tool_img, 'info', '--backing-chain', '--output=json',
                      img])
    return json.loads(res.out)


CHAIN_KEYS = ('filename', 'format', 'virtual-size', 'backing-filename',
              'full-backing-filename', 'backing-filename-format')


def chain_summary(infos):
    return [{k: i.get(k) for k in CHAIN_KEYS} for i in infos]


def map_json(tool_img, img, extra=()):
    return common.run([tool_img, 'map', '--output=json'] + list(extra)
                      + [img]).out


def file_digests(paths):
    return {p: (sha256(p) if os.path.isfile(p) else None) for p in paths}
