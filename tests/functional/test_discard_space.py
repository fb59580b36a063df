#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Host space given back, side by side with qemu-img and qemu-io (QEMU's
pass-discard-snapshot, on by default, and pass-discard-request).

Each case runs the same steps once with QEMU's tools and once with the
tools under test, on the same kind of image, and compares how many bytes
of the image file the host holds (st_blocks) before and after:

- deleting a snapshot whose clusters only it held gives them back;
- so does a guest discard (qemu-io `discard`) and a zero write that may
  unmap (`write -z -u`) of clusters no snapshot holds;
- with the option off, nothing is given back;
- a cluster a snapshot still holds is not given back by a discard;
- snapshots taken, applied and deleted leave no free cluster holding
  host space (strata's pre-copy moves the refcount table and L1 tables,
  whose old clusters must go back too), with pass-discard-snapshot;
- `commit` empties the overlay as qemu-img's does: the file cut after
  its last cluster in use, the rest given back;
- with pass-discard-other, the old refcount structures of an amend go
  back; without it they stay, as in QEMU.

Data and metadata must stay right: `qemu-img check` clean after every
step, and every byte that should remain reads back.
"""

import os
import struct
import sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402
from common import check, run  # noqa: E402

runner = common.Runner()
MiB = 1024 * 1024


def held(path):
    """Bytes of the file the host holds."""
    return os.stat(path).st_blocks * 512


def refcounts(path):
    """{host cluster index: count} for every cluster counted > 0, read
    from the image's refcount table and blocks; and the cluster size."""
    with open(path, 'rb') as f:
        h = f.read(104)
        version, = struct.unpack('>I', h[4:8])
        cluster_bits, = struct.unpack('>I', h[20:24])
        rt_off, = struct.unpack('>Q', h[48:56])
        rt_clusters, = struct.unpack('>I', h[56:60])
        order = struct.unpack('>I', h[96:100])[0] if version >= 3 else 4
        cs = 1 << cluster_bits
        bits = 1 << order
        per_block = cs * 8 // bits
        f.seek(rt_off)
        table = struct.unpack('>%dQ' % (rt_clusters * cs // 8),
                              f.read(rt_clusters * cs))
        counts = {}
        for i, block in enumerate(table):
            if not block:
                continue
            f.seek(block)
            raw = int.from_bytes(f.read(cs), 'big')
            for j in range(per_block):
                v = (raw >> ((per_block - 1 - j) * bits)) & ((1 << bits) - 1)
                if v:
                    counts[i * per_block + j] = v
    return counts, cs


def free_but_held(path):
    """Clusters counted 0 whose space the host still holds."""
    counts, cs = refcounts(path)
    out = []
    fd = os.open(path, os.O_RDONLY)
    try:
        size, off = os.fstat(fd).st_size, 0
        while off < size:
            try:
                start = os.lseek(fd, off, os.SEEK_DATA)
            except OSError:
                break
            end = os.lseek(fd, start, os.SEEK_HOLE)
            out += [c for c in range(start // cs, (end + cs - 1) // cs)
                    if c not in counts]
            off = end
    finally:
        os.close(fd)
    return out


def io(tool, img, *cmds, opts=None):
    """A qemu-io-compatible tool's commands on img (opts: open options)."""
    if opts:
        argv = [tool, '-c', 'open -o driver=qcow2,%s %s' % (opts, img)]
    else:
        argv = [tool, '-f', 'qcow2', img]
    for c in cmds:
        argv += ['-c', c]
    r = run(argv)
    check('failed' not in r.out, r.describe())
    return r


def fresh(d, name):
    t = common.tools()
    img = os.path.join(d, name)
    run([t.qemu_img, 'create', '-q', '-f', 'qcow2', img, '64M'])
    return img


def both(d, steps):
    """steps(img, img_tool, io_tool) once per pair of tools; the held
    bytes it reports for each, QEMU's first."""
    t = common.tools()
    out = []
    for label, img_tool, io_tool in (('qemu', t.qemu_img, t.qemu_io),
                                     ('ours', t.img, t.io)):
        img = fresh(d, '%s.qcow2' % label)
        out.append(steps(img, img_tool, io_tool))
        run([t.qemu_img, 'check', '-q', img])
    return out


def close(ours, qemu, slack=2 * MiB):
    """Equal but for a few metadata clusters laid out differently."""
    return abs(ours - qemu) <= slack


@runner.case()
def snapshot_delete_gives_space_back():
    """32 MiB that only a snapshot held: deleting it gives them back,
    as qemu-img's delete does; with pass-discard-snapshot=off, not."""
    t = common.tools()

    def steps(img, img_tool, io_tool, opts=None):
        io(t.qemu_io, img, 'write -P 0x11 0 32M')
        run([img_tool, 'snapshot', '-c', 's1', img])
        io(t.qemu_io, img, 'write -P 0x22 0 32M')
        before = held(img)
        if opts:
            run([img_tool, 'snapshot', '-d', 's1', '--image-opts',
                 'driver=qcow2,file.filename=%s,%s' % (img, opts)])
        else:
            run([img_tool, 'snapshot', '-d', 's1', img])
        io(t.qemu_io, img, 'read -P 0x22 0 32M')
        return before - held(img)

    with common.TempDir() as d:
        qemu, ours = both(d, steps)
        check(qemu >= 30 * MiB, 'QEMU gave back only %d bytes' % qemu)
        check(close(ours, qemu), 'gave back %d bytes, QEMU %d' % (ours, qemu))
        qemu, ours = both(d, lambda *a: steps(
            *a, opts='pass-discard-snapshot=off'))
        check(qemu < MiB and ours < MiB,
              'with the option off: %d bytes (QEMU %d)' % (ours, qemu))


@runner.case()
def guest_discard_gives_space_back():
    """discard and write -z -u of clusters only the image holds give the
    space back (pass-discard-request), a discard of clusters a snapshot
    still holds does not; with the option off, nothing goes back."""
    t = common.tools()

    def steps(img, img_tool, io_tool, opts=None):
        io(t.qemu_io, img, 'write -P 0x33 0 48M')
        run([t.qemu_img, 'snapshot', '-c', 'keep', img])
        io(t.qemu_io, img, 'write -P 0x44 0 32M')
        start = held(img)
        io(io_tool, img, 'discard 0 8M', 'write -z -u 8M 8M', opts=opts)
        mid = held(img)
        # 32M..48M: still the snapshot's too
        io(io_tool, img, 'discard 32M 16M', opts=opts)
        end = held(img)
        io(t.qemu_io, img, 'read -P 0 0 16M', 'read -P 0x44 16M 16M',
           'read -P 0 32M 16M')
        run([t.qemu_img, 'snapshot', '-a', 'keep', img])
        io(t.qemu_io, img, 'read -P 0x33 0 48M')
        return start - mid, mid - end

    with common.TempDir() as d:
        (qemu, q_shared), (ours, o_shared) = both(d, steps)
        check(qemu >= 15 * MiB, 'QEMU gave back only %d bytes' % qemu)
        check(close(ours, qemu), 'gave back %d bytes, QEMU %d' % (ours, qemu))
        check(o_shared < MiB and q_shared < MiB,
              'shared clusters given back: %d bytes (QEMU %d)'
              % (o_shared, q_shared))
        (qemu, _), (ours, _) = both(d, lambda *a: steps(
            *a, opts='pass-discard-request=off'))
        check(qemu < MiB and ours < MiB,
              'with the option off: %d bytes (QEMU %d)' % (ours, qemu))


def image_opts(img, opts):
    return ['--image-opts', 'driver=qcow2,file.filename=%s%s'
            % (img, ',' + opts if opts else '')]


@runner.case()
def snapshot_cycles_hold_no_free_cluster():
    """Ten snapshots taken with writes between them, one applied, all
    deleted: no cluster whose count is 0 still holds host space, as with
    qemu-img.  With pass-discard-snapshot=off both keep some."""
    t = common.tools()

    def steps(img, img_tool, io_tool, opts=None):
        io(t.qemu_io, img, 'write -P 0x51 0 4M')
        for i in range(10):
            run([img_tool, 'snapshot', '-c', 's%d' % i] +
                image_opts(img, opts))
            io(t.qemu_io, img, 'write -P %d %dM 1M' % (i + 1, i))
        run([img_tool, 'snapshot', '-a', 's3'] + image_opts(img, opts))
        for i in range(10):
            run([img_tool, 'snapshot', '-d', 's%d' % i] +
                image_opts(img, opts))
        io(t.qemu_io, img, 'read -P 1 0 1M', 'read -P 2 1M 1M',
           'read -P 3 2M 1M', 'read -P 0x51 3M 1M')
        return free_but_held(img)

    with common.TempDir() as d:
        qemu, ours = both(d, steps)
        check(qemu == [], 'QEMU holds free clusters %s' % qemu)
        check(ours == [], 'free clusters still held: %s' % ours)
        qemu, ours = both(d, lambda *a: steps(
            *a, opts='pass-discard-snapshot=off'))
        check(qemu and ours, 'with the option off, free clusters held: '
              '%s (QEMU %s)' % (ours, qemu))


@runner.case()
def commit_empties_the_overlay():
    """After `commit` the overlay holds about what qemu-img's holds: with
    nothing else in it, a few clusters (QEMU truncates the file; strata
    cuts the free tail); with a snapshot, only what the snapshot holds."""
    t = common.tools()

    def steps(img, img_tool, io_tool, snapshot):
        base = img + '.base'
        run([t.qemu_img, 'create', '-q', '-f', 'qcow2', base, '64M'])
        run([t.qemu_img, 'rebase', '-u', '-b', base, '-F', 'qcow2', img])
        io(t.qemu_io, img, 'write -P 0x61 0 30M')
        if snapshot:
            run([t.qemu_img, 'snapshot', '-c', 'keep', img])
        io(t.qemu_io, img, 'write -P 0x62 30M 30M')
        run([img_tool, 'commit', img])
        io(t.qemu_io, base, 'read -P 0x61 0 30M', 'read -P 0x62 30M 30M')
        io(t.qemu_io, img, 'read -P 0x61 0 30M', 'read -P 0x62 30M 30M')
        return held(img), os.path.getsize(img), free_but_held(img)

    with common.TempDir() as d:
        (q_held, q_len, q_free), (held_, len_, free) = both(
            d, lambda *a: steps(*a, snapshot=False))
        check(q_held < MiB and q_len < MiB, 'QEMU holds %d of %d bytes'
              % (q_held, q_len))
        check(held_ <= q_held + 256 * 1024 and len_ <= q_len + 256 * 1024,
              'the overlay holds %d of %d bytes (QEMU %d of %d)'
              % (held_, len_, q_held, q_len))
        check(free == [], 'free clusters still held: %s' % free)
        (q_held, _, q_free), (held_, _, free) = both(
            d, lambda *a: steps(*a, snapshot=True))
        check(q_held > 29 * MiB and q_free == [],
              'QEMU holds %d bytes, free %s' % (q_held, q_free))
        check(close(held_, q_held, slack=MiB) and free == [],
              'the overlay holds %d bytes (QEMU %d), free: %s'
              % (held_, q_held, free))


@runner.case()
def pass_discard_other_gives_old_refcounts_back():
    """amend refcount_bits=64 replaces the refcount table and blocks;
    with pass-discard-other=on their old clusters go back to the host,
    by default (off) they stay, with qemu-img as with ours."""
    t = common.tools()

    def steps(img, img_tool, io_tool, opts):
        io(t.qemu_io, img, 'write -P 0x71 0 8M')
        run([img_tool, 'amend', '-o', 'refcount_bits=64'] +
            image_opts(img, opts))
        io(t.qemu_io, img, 'read -P 0x71 0 8M')
        return free_but_held(img)

    with common.TempDir() as d:
        qemu, ours = both(d, lambda *a: steps(*a, 'pass-discard-other=on'))
        check(qemu == [] and ours == [], 'with the option on, free '
              'clusters held: %s (QEMU %s)' % (ours, qemu))
        qemu, ours = both(d, lambda *a: steps(*a, None))
        check(qemu and len(ours) == len(qemu), 'by default, free clusters '
              'held: %s (QEMU %s)' % (ours, qemu))


@runner.case()
def freed_clusters_reused_where_qemu_reuses_them():
    """QEMU reuses a freed cluster at once; strata only after a sync (an
    unsynced reuse could leave the old pointer reading the new data after
    a crash), and pays that sync before an allocation that would grow the
    file once the guest has discarded or zero-unmapped something since
    the last one.  Test 271's zero+unmap steps, one process each: holes
    of one cluster between data clusters, then compressed clusters that
    zero writes unmap or rewrite; a rewrite that needs two clusters in a
    row finds them only with the compressed cluster the same request
    freed.  The maps (host offsets included) and the file lengths equal
    QEMU's, and so does the content."""
    t = common.tools()
    steps = ['write -q -P 1 576k 576k', 'write -q -z -u 576k 192k',
             'write -q -z -u 800k 128k', 'write -q -z -u 991k 128k']
    steps += ['write -q -c -P %d %dk 64k' % (c, c * 64)
              for c in range(18, 29)]
    steps += ['write -q -z -u 1152k 192k', 'write -q -z -u 1376k 128k',
              'write -q -z -u 1567k 129k', 'write -q -z -u 1759k 128k']
    with common.TempDir('strata-reuse-') as d:
        imgs, maps = [], []
        for label, io_tool in (('qemu', t.qemu_io), ('ours', t.io)):
            img = os.path.join(d, '%s.qcow2' % label)
            run([t.qemu_img, 'create', '-q', '-f', 'qcow2', '-o',
                 'extended_l2=on', img, '2083k'])
            for step in steps:
                io(io_tool, img, step)
            run([t.qemu_img, 'check', '-q', img])
            maps.append(run([t.qemu_img, 'map', '--output=json',
                             img]).out)
            imgs.append(img)
        check(maps[0] == maps[1], 'maps differ:\nqemu %s\nours %s'
              % tuple(maps))
        lens = tuple(os.path.getsize(i) for i in imgs)
        check(lens[0] == lens[1], 'file lengths differ: qemu %d, ours %d'
              % lens)
        run([t.qemu_img, 'compare', imgs[0], imgs[1]])

if __name__ == '__main__':
    sys.exit(runner.main())
