# SPDX-License-Identifier: LGPL-2.1-or-later
"""Random guest-write workloads shared by the interop tests.

What lives here: generators of qemu-io-style write commands (pattern
writes, overwrites of earlier regions, zero writes) with fixed seeds, each
paired with the equivalent operation on a raw Shadow, so a test can apply
the same workload through any qemu-io-compatible tool and then compare the
image with the shadow.
"""

import common


def gen_ops(rnd, size, cluster_size, count, zero=True):
    """Return a list of ops: ('write', off, len, byte) or ('zero', off, len).

    Offsets mix cluster-aligned, sector-aligned and arbitrary byte offsets;
    lengths mix sub-sector, sub-cluster and multi-cluster; some ops overwrite
    an earlier op's region exactly or partially, a few touch the last bytes
    of the disk."""
    ops = []
    max_len = max(4 * cluster_size, 256 << 10)
    max_len = min(max_len, 4 << 20, size)
    for _ in range(count):
        r = rnd.random()
        if ops and r < 0.2:
            # overwrite (part of) an earlier region
            prev = rnd.choice(ops)
            off, length = prev[1], prev[2]
            if rnd.random() < 0.5 and length > 1:
                cut = rnd.randrange(1, length)
                if rnd.random() < 0.5:
                    length = cut
                else:
                    off, length = off + cut, length - cut
        else:
            k = rnd.random()
            if k < 0.3:
                length = rnd.randint(1, 4096)
            elif k < 0.8:
                length = rnd.randint(1, max(1, cluster_size * 2))
            else:
                length = rnd.randint(1, max_len)
            length = min(length, max_len)
            a = rnd.random()
            if a < 0.05:
                off = size - length            # the very end of the disk
            else:
                off = rnd.randrange(0, size - length + 1)
                if a < 0.35:
                    off -= off % cluster_size
                elif a < 0.75:
                    off -= off % 512
            if rnd.random() < 0.3:
                # whole sectors / clusters more often than not
                length = max(512, length - length % 512)
                if off + length > size:
                    off = size - length
        if zero and rnd.random() < 0.18:
            ops.append(('zero', off, length))
        else:
            ops.append(('write', off, length, rnd.randint(1, 255)))
    return ops


def io_cmd(op):
    if op[0] == 'write':
        return 'write -P 0x%02x %d %d' % (op[3], op[1], op[2])
    if op[0] == 'zero':
        return 'write -z %d %d' % (op[1], op[2])
    raise ValueError(op)


def apply_shadow(shadow, op):
    if op[0] == 'write':
        shadow.fill(op[1], op[2], op[3])
    elif op[0] == 'zero':
        shadow.zero(op[1], op[2])
    else:
        raise ValueError(op)


def apply(io, img, shadow, ops, batch=200, extra=(), fmt='qcow2'):
    """Apply ops to img through io (batched -c commands) and to shadow."""
    for part in common.chunks(ops, batch):
        common.run_io(io, img, [io_cmd(op) for op in part], extra=extra, fmt=fmt)
        for op in part:
            apply_shadow(shadow, op)


def apply_model(model, ops):
    """Apply ops to an IntervalMap of the image contents."""
    for op in ops:
        model.set(op[1], op[2], op[3] if op[0] == 'write' else 0)
    return model
