#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""`strata-img snapshot -c` with pre-copy (issue 15): a kill at every write.

The image holds data at both ends and one snapshot "s1" made by qemu-img.
A dry run counts the writes and flushes `$STRATA_IMG snapshot -c new`
makes up to the operation's end (blkdebug's print-counts with the
"snapshot_done" event); then for every N up to that end the blkdebug
filter kills the process (SIGKILL, inject-error.action=kill) just before
the Nth one reaches the file.  After each kill:

  - `qemu-img check` reports NO error at all (exit 0 or 3: leaks only).
    test_snapshot_crash.py tolerates COPIED flags that disagree with the
    refcounts after a kill inside a create; the create that rewrites
    COPIED flags in place (strata-img before issue 15's pre-copy, and
    qemu-img) leaves exactly those, this one must not;
  - the snapshot list is "s1" or "s1,new";
  - the active image and s1 read as before, "new" (if listed) as the
    active image;
  - `qemu-img check -r leaks` makes it clean, and a create run again
    succeeds.

Cases: 64 KiB clusters (every I/O), 512-byte clusters (many L2 tables
and refcount blocks: a sample of the I/Os, both sides of the commit
point included), and an image with lazy_refcounts=on (whose create now
takes the pre-copy too; every I/O).  The same points with an I/O error
instead of a kill (eio/once: that request alone fails; eio/dead: every
one from it on), after which the tool goes on and closes the image.
Beside them: one data cluster mapped 300 times by the active tree gets
300 more references, as with qemu-img (many_references); and the layout
the settle leaves, cluster for cluster qemu-img's (settles_like_qemu).
"""

import os
import signal
import struct
import subprocess
import sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402
import snaplib  # noqa: E402

MiB = 1 << 20
SIZE = 8 * MiB
HIGH = SIZE // 2 + SIZE // 8
S1 = [(0, MiB, 0x5a), (HIGH, MiB, 0x6b)]
ACTIVE = [(0, 512 << 10, 0x7c), (512 << 10, 512 << 10, 0x5a),
          (HIGH, 64 << 10, 0x8d), (HIGH + (64 << 10), 960 << 10, 0x6b)]

runner = common.Runner()


def make(path, opts):
    t = common.tools()
    common.run([t.qemu_img, 'create', '-q', '-f', 'qcow2', '-o', opts,
                path, str(SIZE)])
    common.run_io(t.qemu_io, path, ['write -P 0x5a 0 1M',
                                    'write -P 0x6b %d 1M' % HIGH])
    common.run([t.qemu_img, 'snapshot', '-c', 's1', path])
    common.run_io(t.qemu_io, path, ['write -P 0x7c 0 512k',
                                    'write -P 0x8d %d 64k' % HIGH])


def read_cmds(regions):
    return ['read -P 0x%02x %d %d' % (b, off, n) for off, n, b in regions]


def reads_as(img, regions, snapshot=None):
    t = common.tools()
    opts = 'driver=qcow2,file.filename=%s,read-only=on' % img
    if snapshot:
        opts += ',snapshot.name=%s' % snapshot
    r = common.run([t.io, '-r', '--image-opts'] +
                   common.io_args(read_cmds(regions)) + [opts], rc=None)
    return r.rc == 0 and 'Pattern verification failed' not in r.out


def blkdebug(img):
    return 'driver=qcow2,file.driver=blkdebug,file.filename=%s' % img


def event_at(img, event):
    """Writes + flushes before the create announced event."""
    t = common.tools()
    r = common.run([t.img, 'snapshot', '--image-opts', '-c', 'new',
                    blkdebug(img) + ',file.print-counts=on,'
                    'file.inject-error.event=%s' % event], rc=None)
    m = [ln for ln in r.err.splitlines() if ln.startswith('blkdebug:')]
    common.check(m and 'event_at=' in m[-1], 'no counts:\n' + r.describe())
    at = m[-1].split('event_at=')[1].split()[0]
    common.check(at.isdigit(), '%s never came:\n%s' % (event, r.describe()))
    return int(at)


def after_kill(img, what):
    """Checks what a kill left; returns 'old' or 'new'."""
    t = common.tools()
    names = snaplib.names(img)
    common.check(names in (['s1'], ['s1', 'new']),
                 '%s: snapshots %s' % (what, names))
    chk = common.run([t.qemu_img, 'check', img], rc=None)
    common.check(chk.rc in (0, 3), '%s: qemu-img check finds errors (exit '
                 '%d), not only leaks:\n%s' % (what, chk.rc, chk.describe()))
    common.check(reads_as(img, ACTIVE), '%s: the active image changed'
                 % what)
    common.check(reads_as(img, S1, 's1'), '%s: s1 reads wrong' % what)
    state = 'old'
    if names == ['s1', 'new']:
        common.check(reads_as(img, ACTIVE, 'new'), '%s: new does not read '
                     'as the active image' % what)
        state = 'new'
    common.run([t.qemu_img, 'check', '-q', '-r', 'leaks', img])
    check_clean(img, '%s, then check -r leaks' % what)
    common.run([t.img, 'snapshot', '-c', 'new' if state == 'old' else 'again',
                img])
    # qemu-img check counts no cluster past the end of the file: a
    # cluster the killed run allocated there but never wrote is a leak it
    # sees only once the file grows past it (the create above)
    chk = common.run([t.qemu_img, 'check', img], rc=None)
    common.check(chk.rc in (0, 3), '%s, then one more create: qemu-img '
                 'check finds errors:\n%s' % (what, chk.describe()))
    common.run([t.qemu_img, 'check', '-q', '-r', 'leaks', img])
    check_clean(img, '%s, then one more create' % what)
    return state


def check_clean(img, what):
    t = common.tools()
    r = common.run([t.qemu_img, 'check', img], rc=None)
    common.check(r.rc == 0, '%s: qemu-img check not clean:\n%s'
                 % (what, r.describe()))


def kill_points(base, img, samples):
    """1..end (the create's last I/O), or with samples: the first, the
    last, both sides of the commit point (the header switch) and samples
    more evenly in between."""
    snaplib.sparse_copy(base, img)
    end = event_at(img, 'snapshot_done')
    if not samples:
        return end, list(range(1, end + 1))
    snaplib.sparse_copy(base, img)
    commit = event_at(img, 'snapshot_header_update') + 1
    pts = {1, end, commit - 1, commit, commit + 1}
    pts |= {1 + (end - 1) * i // (samples + 1) for i in range(1, samples + 1)}
    return end, sorted(p for p in pts if 1 <= p <= end)


def each_write(opts, samples, fault, exits, what):
    """For every point (kill_points) a copy of the image gets `fault` at
    that write or flush (an inject-error setting, %d for the point) while
    `strata-img snapshot -c new` runs; the tool must end with one of
    `exits` and leave what after_kill accepts.  Both sides of the commit
    point must be met."""
    common.skip_if_qemu_tools('the blkdebug options are ours')
    t = common.tools()
    with snaplib.ShmDir() as d:
        base = os.path.join(d, 'base.qcow2')
        img = os.path.join(d, 'img.qcow2')
        make(base, opts)
        end, points = kill_points(base, img, samples)
        seen = {'old': 0, 'new': 0}
        for n in points:
            snaplib.sparse_copy(base, img)
            p = subprocess.run([t.img, 'snapshot', '--image-opts', '-c',
                                'new', blkdebug(img) + ',' + fault % n],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            common.check(p.returncode in exits, '%s at I/O %d: exit %d\n%s'
                         % (what, n, p.returncode, p.stderr.decode()))
            seen[after_kill(img, '%s at I/O %d of %d' % (what, n, end))] += 1
        common.check(seen['old'] and seen['new'],
                     '%s did not reach both sides of the commit point: %s'
                     % (what, seen))
        print('  %s: %d I/Os, %s at %d of them: %s'
              % (opts, end, what, len(points), seen))


def kill_every_write(opts, samples=None):
    each_write(opts, samples, 'file.inject-error.any=%d,'
               'file.inject-error.action=kill', (-signal.SIGKILL,), 'killed')


def fail_every_write(opts, once):
    """An I/O error (EIO) at each write or flush of the create instead of a
    kill: the tool goes on, undoes or reports, and closes the image.  With
    once=on only that request fails; with once=off it and every write and
    flush after it fail (a disk that died).  What is left must pass the
    same checks as after a kill: old or new snapshot list, leaks at most,
    every content exact."""
    each_write(opts, None, 'file.inject-error.any=%d,'
               'file.inject-error.once=' + once, (0, 1),
               'EIO (once=%s)' % once)


def output_as_qemu():
    """The create prints nothing and exits 0; a duplicate name is refused
    with the same words as before, and changes nothing."""
    t = common.tools()
    with snaplib.ShmDir() as d:
        img = os.path.join(d, 'img.qcow2')
        make(img, 'cluster_size=65536')
        r = common.run([t.img, 'snapshot', '-c', 'new', img])
        common.check(r.out == '' and r.err == '', 'output:\n' + r.describe())
        before = common.sha256(img)
        r = common.run([t.img, 'snapshot', '-c', 'new', img], rc=1)
        common.check(r.err.startswith("strata-img: Could not create "
                                      "snapshot 'new': "),
                     'error text:\n' + r.describe())
        common.check(common.sha256(img) == before,
                     'a refused create changed the image')
        common.check(snaplib.names(img) == ['s1', 'new'],
                     'snapshots %s' % snaplib.names(img))
        common.qemu_check_clean(img)


def refblock0(img):
    """The offset of the first refcount block."""
    with open(img, 'rb') as f:
        f.seek(48)
        f.seek(struct.unpack('>Q', f.read(8))[0])
        return struct.unpack('>Q', f.read(8))[0]


def refcount_of(img, cluster):
    """The 16-bit refcount of a cluster the first block covers."""
    with open(img, 'rb') as f:
        f.seek(refblock0(img) + 2 * cluster)
        return struct.unpack('>H', f.read(2))[0]


SHARED = 300


def many_references():
    """One data cluster mapped by 300 entries of the active tree (valid:
    its refcount says 300), the way a deduplicating tool may write
    images: the create adds 300 references to it (more than the one byte
    per entry the counts start with), as qemu-img's does, and both
    images then check clean and read the same."""
    t = common.tools()
    with snaplib.ShmDir() as d:
        imgs = []
        for who in ('qemu', 'ours'):
            img = os.path.join(d, who + '.qcow2')
            common.run([t.qemu_img, 'create', '-q', '-f', 'qcow2', img,
                        '64M'])
            common.run_io(t.qemu_io, img, ['write -P 0x3c 0 64k'])
            h = snaplib.Header(img)
            with open(img, 'rb') as f:
                f.seek(h.l1_offset)
                l2 = struct.unpack('>Q', f.read(8))[0] & 0x00fffffffffffe00
                f.seek(l2)
                data = struct.unpack('>Q', f.read(8))[0] & 0x00fffffffffffe00
            for j in range(SHARED):
                snaplib.poke(img, l2 + 8 * j, '>Q', data)  # no COPIED
            snaplib.poke(img, refblock0(img) + 2 * (data >> h.cluster_bits),
                         '>H', SHARED)
            common.qemu_check_clean(img)
            tool = t.qemu_img if who == 'qemu' else t.img
            common.run([tool, 'snapshot', '-c', 'new', img])
            common.qemu_check_clean(img)
            rc = refcount_of(img, data >> h.cluster_bits)
            common.check(rc == 2 * SHARED, '%s: refcount %d, wanted %d'
                         % (who, rc, 2 * SHARED))
            common.run_io(t.qemu_io, img,
                          ['read -P 0x3c 0 %d' % (SHARED * 65536)])
            out = os.path.join(d, who + '.raw')
            common.run([t.qemu_img, 'convert', '-l', 'new', '-O', 'raw',
                        img, out])
            imgs.append(common.sha256(out))
        common.check(imgs[0] == imgs[1], 'the snapshots read differently')


def be(d, off, n):
    return int.from_bytes(d[off:off + n], 'big')


def layout(img):
    """Where everything lies: the header's table offsets, and for every
    cluster with a nonzero refcount its count and what points at it (the
    active L1/L2 tables and data, each snapshot's, the tables of the
    refcount and snapshot structures).  The file's length is left out:
    strata's is longer by the copies the settle freed (holes)."""
    with open(img, 'rb') as f:
        d = f.read()
    cb = be(d, 20, 4)
    cs = 1 << cb
    bits = 1 << (be(d, 96, 4) if be(d, 4, 4) >= 3 else 4)
    l1_size, l1_off = be(d, 36, 4), be(d, 40, 8)
    rt_off, rt_clusters = be(d, 48, 8), be(d, 56, 4)
    nb, sn_off = be(d, 60, 4), be(d, 64, 8)
    owners = {}

    def mark(off, n, what):
        for c in range(off // cs, (off + n + cs - 1) // cs):
            owners.setdefault(c, []).append(what)

    def tree(off, n, tag):
        mark(off, n * 8, tag + 'L1')
        for i in range(n):
            l2 = be(d, off + 8 * i, 8) & 0x00fffffffffffe00
            if not l2:
                continue
            mark(l2, cs, '%sL2[%d]' % (tag, i))
            for k in range(cs // 8):
                e = be(d, l2 + 8 * k, 8)
                if not (e >> 62) & 1 and e & 0x00fffffffffffe00:
                    mark(e & 0x00fffffffffffe00, cs, tag + 'data')

    mark(0, cs, 'header')
    mark(rt_off, rt_clusters * cs, 'reftable')
    counts = {}
    per = cs * 8 // bits
    for i in range(rt_clusters * cs // 8):
        rb = be(d, rt_off + 8 * i, 8)
        if not rb:
            continue
        mark(rb, cs, 'refblock%d' % i)
        for j in range(per):
            v = be(d, rb + j * bits // 8, bits // 8)
            if v:
                counts[i * per + j] = v
    tree(l1_off, l1_size, '')
    off = sn_off
    for n in range(nb):
        tree(be(d, off, 8), be(d, off + 8, 4), 'sn%d.' % n)
        off += (40 + be(d, off + 36, 4) + be(d, off + 12, 2) +
                be(d, off + 14, 2) + 7) & ~7
    if nb:
        mark(sn_off, off - sn_off, 'snapshot table')
    head = {'l1': (l1_off, l1_size), 'reftable': (rt_off, rt_clusters),
            'snapshots': (sn_off, nb)}
    return head, sorted((c, v, sorted(owners.get(c, [])))
                        for c, v in counts.items())


def settles_like_qemu(opts):
    """Creates, writes and a delete in between, each by both tool sets on
    images made the same way: strata-img's creates leave every table
    where qemu-img's do (the active L1 and the refcount structures stay
    put, the active image shares its L2 tables with the new snapshot,
    refcount 2), where the pre-copy alone leaves the active image on
    copies.  Both images read the same and check clean."""
    t = common.tools()
    oracle = (t.qemu_img, t.qemu_io)
    with snaplib.ShmDir() as d:
        got = {}
        for who, (img_tool, io_tool) in (('qemu', oracle),
                                         ('ours', (t.img, t.io))):
            img = os.path.join(d, who + '.qcow2')
            common.run([img_tool, 'create', '-q', '-f', 'qcow2', '-o', opts,
                        img, str(SIZE)])
            common.run_io(io_tool, img, ['write -P 1 0 1M',
                                         'write -P 2 5M 1M'])
            common.run([img_tool, 'snapshot', '-c', 'a', img])
            first = layout(img)
            common.run_io(io_tool, img, ['write -P 3 512k 1M'])
            common.run([img_tool, 'snapshot', '-c', 'b', img])
            common.run([img_tool, 'snapshot', '-d', 'a', img])
            common.run_io(io_tool, img, ['write -P 4 7M 512k'])
            common.run([img_tool, 'snapshot', '-c', 'c', img])
            got[who] = (first, layout(img), img)
            common.qemu_check_clean(img)
        for i, when in ((0, 'after the first create'), (1, 'at the end')):
            q, o = got['qemu'][i], got['ours'][i]
            common.check(q[0] == o[0], '%s, %s: header %s, qemu-img\'s %s'
                         % (opts, when, o[0], q[0]))
            diff = [(a, b) for a, b in zip(q[1], o[1]) if a != b]
            common.check(len(q[1]) == len(o[1]) and not diff,
                         '%s, %s: clusters differ (qemu-img\'s, ours): %s'
                         % (opts, when, diff[:5] or (len(q[1]), len(o[1]))))
        shared = [c for c in got['ours'][0][1]
                  if c[1] == 2 and 'L2[0]' in c[2] and 'sn0.L2[0]' in c[2]]
        common.check(shared, '%s: the first L2 table is not shared with the '
                     'snapshot' % opts)
        common.run([oracle[0], 'compare', '-q', got['qemu'][2],
                    got['ours'][2]])


runner.add('output', output_as_qemu)
runner.add('many_references', many_references)
runner.add('kill/64k', kill_every_write, 'cluster_size=65536')
# 512-byte clusters: hundreds of I/Os, a sample of them
runner.add('kill/512', kill_every_write, 'cluster_size=512', 10)
runner.add('kill/lazy', kill_every_write,
           'cluster_size=65536,lazy_refcounts=on')
runner.add('eio/once', fail_every_write, 'cluster_size=65536', 'on')
runner.add('eio/dead', fail_every_write, 'cluster_size=65536', 'off')
for o in ('cluster_size=65536', 'cluster_size=4096',
          'cluster_size=65536,compat=0.10',
          'cluster_size=65536,lazy_refcounts=on'):
    runner.add('settles_like_qemu/' + o, settles_like_qemu, o)


if __name__ == '__main__':
    sys.exit(runner.main())
