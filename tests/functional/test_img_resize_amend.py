#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""resize, amend, measure, dd, convert -l and convert -n (issue 9),
side by side with qemu-img.

Each case builds the same image twice with QEMU's tools, runs one command
with strata-img on one copy and with qemu-img on the other, and asserts:
the same exit status and the same messages (program name aside); both
images pass `qemu-img check`; both read the same (`qemu-img compare`);
`qemu-img info` says the same (virtual size, compat, lazy refcounts,
refcount bits, snapshots; and, after a shrink, the same file length).
A command that must fail fails with qemu-img's text and leaves the image
byte for byte as it was.  measure's and dd's outputs are compared
exactly; dd's and convert -l's results are compared byte for byte.
"""

import json
import os
import re
import sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402
from common import check, run  # noqa: E402

runner = common.Runner()

# Lines of qemu-img info that must agree (the file name and disk usage
# may differ between two copies).
INFO_SKIP = re.compile(r'^(image:|disk size:|backing file:|Child node|'
                       r'\s+(filename|driver|protocol type|file length|'
                       r'disk size)[: ])')


def norm(text):
    """Program names out: 'strata-img: x' and 'qemu-img: x' compare
    equal, as do the "Try ... --help" hints."""
    t = common.tools()
    return text.replace(t.img_name, 'PROG').replace(
        os.path.basename(t.qemu_img), 'PROG')


def qemu_io(img, *cmds, fmt='qcow2'):
    t = common.tools()
    argv = [t.qemu_io, '-f', fmt]
    for c in cmds:
        argv += ['-c', c]
    return run(argv + [img])


def info_lines(img, fmt=None):
    t = common.tools()
    argv = [t.qemu_img, 'info', '-U'] + (['-f', fmt] if fmt else []) + [img]
    out = run(argv).out
    return [re.sub(r'\d{4}-\d\d-\d\d \d\d:\d\d:\d\d', 'DATE', ln)
            for ln in out.splitlines() if not INFO_SKIP.match(ln)]


def snapshot_names(img):
    out = run([common.tools().qemu_img, 'snapshot', '-l', img]).out
    return [ln.split()[1] for ln in out.splitlines()[2:] if ln.strip()]


class Twin:
    """The same image for strata (ours) and qemu (theirs)."""

    def __init__(self, d, build, name='img.qcow2', fmt='qcow2'):
        self.d = d
        self.fmt = fmt
        self.paths = {}
        for side in ('ours', 'theirs'):
            sub = os.path.join(d, side)
            os.makedirs(sub, exist_ok=True)
            self.paths[side] = os.path.join(sub, name)
            build(self.paths[side], sub)

    def run(self, args, rc=None):
        """Runs `tool args... IMG` for both; returns both results after
        checking that status and messages agree."""
        t = common.tools()
        res = {}
        for side, tool in (('ours', t.img), ('theirs', t.qemu_img)):
            argv = [tool] + [a.replace('@IMG@', self.paths[side])
                             .replace('@DIR@', os.path.dirname(
                                 self.paths[side]))
                             for a in args]
            res[side] = run(argv, rc=None)
        o, q = res['ours'], res['theirs']
        check(o.rc == q.rc, 'exit status %d, qemu-img %d\n%s\n%s'
              % (o.rc, q.rc, o.describe(), q.describe()))
        if rc is not None:
            check(o.rc == rc, 'wanted exit %d\n%s' % (rc, o.describe()))
        ours_text = norm(o.out + o.err).replace(
            os.path.dirname(self.paths['ours']), 'DIR')
        theirs_text = norm(q.out + q.err).replace(
            os.path.dirname(self.paths['theirs']), 'DIR')
        check(ours_text == theirs_text,
              'output differs from qemu-img\n--- ours\n%s--- qemu-img\n%s'
              % (ours_text, theirs_text))
        return res

    def same_result(self, file_length=False):
        """Both images check clean, read alike and have the same info."""
        t = common.tools()
        o, q = self.paths['ours'], self.paths['theirs']
        if self.fmt == 'qcow2':
            common.qemu_check_clean(o)
            common.qemu_check_clean(q)
        res = run([t.qemu_img, 'compare', '-U', '-f', self.fmt, '-F',
                   self.fmt, o, q], rc=None)
        check(res.rc == 0, 'contents differ from qemu-img\'s result\n'
              + res.describe())
        io, iq = info_lines(o, self.fmt), info_lines(q, self.fmt)
        check(io == iq, 'qemu-img info differs\n%s\n%s'
              % ('\n'.join(io), '\n'.join(iq)))
        if file_length:
            check(os.path.getsize(o) == os.path.getsize(q),
                  'file length %d, qemu-img\'s %d'
                  % (os.path.getsize(o), os.path.getsize(q)))

    def refused(self, args, rc=1):
        """Both refuse with the same text; neither image changed."""
        before = {s: common.sha256(p) for s, p in self.paths.items()}
        self.run(args, rc=rc)
        for s, p in self.paths.items():
            check(common.sha256(p) == before[s],
                  '%s: image changed by a refused command %s' % (s, args))


def qcow2_with_data(extra_opts=None, size='64M'):
    def build(path, d):
        t = common.tools()
        argv = [t.qemu_img, 'create', '-q', '-f', 'qcow2']
        if extra_opts:
            argv += ['-o', extra_opts]
        run(argv + [path, size])
        if size == '64M':
            qemu_io(path, 'write -P 0x11 0 2M', 'write -P 0x22 30M 3M',
                    'write -P 0x33 62M 2M', 'write -z 40M 1M')
        else:
            qemu_io(path, 'write -P 0x11 0 1M', 'write -z 1M 1M',
                    'write -P 0x22 3M 1M')
    return build


# --------------------------------------------------------------------------
# resize


@runner.case()
def resize_grow():
    with common.TempDir() as d:
        tw = Twin(d, qcow2_with_data())
        tw.run(['resize', '@IMG@', '100M'], rc=0)
        tw.run(['resize', '@IMG@', '+28M'], rc=0)
        tw.same_result()
        check('virtual size: 128 MiB' in '\n'.join(
            info_lines(tw.paths['ours'])), 'not grown to 128 MiB')


@runner.case()
def resize_shrink_frees_tail():
    """--shrink drops the data past the end: grown back, it reads zeroes;
    the file is cut to the same length as qemu-img's."""
    with common.TempDir() as d:
        tw = Twin(d, qcow2_with_data())
        tw.run(['resize', '--shrink', '@IMG@', '31M'], rc=0)
        tw.same_result(file_length=True)
        tw.run(['resize', '-q', '@IMG@', '64M'], rc=0)
        tw.same_result()
        qemu_io(tw.paths['ours'], 'read -P 0x22 30M 1M',
                'read -P 0 31M 33M')
        tw.run(['resize', '--shrink', '-q', '@IMG@', '-32M'], rc=0)
        tw.same_result(file_length=True)


@runner.case()
def resize_shrink_gives_space_back():
    """QEMU's test 250: data of the end mapped to the file's start and
    the other way round; a shrink must give the freed host space back
    (holes punched where the file cannot be cut): the same drop in disk
    usage as qemu-img's."""
    def build(path, d):
        t = common.tools()
        run([t.qemu_img, 'create', '-q', '-f', 'qcow2', '-o',
             'cluster_size=1M,preallocation=metadata', path, '100M'])
        qemu_io(path, 'discard 0 10M', 'discard 90M 10M', 'write 90M 10M',
                'write 0 10M')
    with common.TempDir() as d:
        tw = Twin(d, build)
        before = {k: os.stat(p).st_blocks for k, p in tw.paths.items()}
        tw.run(['resize', '--shrink', '@IMG@', '5M'], rc=0)
        tw.same_result(file_length=True)
        delta = {k: before[k] - os.stat(p).st_blocks
                 for k, p in tw.paths.items()}
        check(delta['ours'] == delta['theirs'] and delta['ours'] > 0,
              'disk usage dropped by %d blocks, qemu-img\'s by %d'
              % (delta['ours'], delta['theirs']))


@runner.case()
def resize_shrink_keeps_snapshot():
    """A v3 image shrinks under a snapshot; the snapshot keeps all of its
    data (its tree is shared, not freed)."""
    def build(path, d):
        qcow2_with_data()(path, d)
        run([common.tools().qemu_img, 'snapshot', '-c', 's1', path])
    with common.TempDir() as d:
        tw = Twin(d, build)
        tw.run(['resize', '--shrink', '@IMG@', '16M'], rc=0)
        tw.same_result()
        for side in ('ours', 'theirs'):
            out = os.path.join(d, side + '.raw')
            run([common.tools().qemu_img, 'convert', '-l', 's1', '-O', 'raw',
                 tw.paths[side], out])
        check(common.files_equal(os.path.join(d, 'ours.raw'),
                                 os.path.join(d, 'theirs.raw')) is None,
              'snapshot content changed by the shrink')


@runner.case()
def resize_shrink_after_snapshot_cycle():
    """A snapshot taken and deleted by each side's own tool, then a shrink:
    the file ends where qemu-img's does.  Before strata-img's create
    settled (qcow2-precopy-settle.c), the pre-copy left the refcount
    table and the L1 table past the data, and the shrink's cut stopped
    there (62,144 KiB against qemu-img's 10,560)."""
    def build(path, d):
        run([common.tools().qemu_img, 'create', '-q', '-f', 'qcow2', path,
             '64M'])
        qemu_io(path, 'write -P 0x5a 0 60M')
    with common.TempDir() as d:
        tw = Twin(d, build)
        tw.run(['snapshot', '-c', 's', '@IMG@'], rc=0)
        tw.run(['snapshot', '-d', 's', '@IMG@'], rc=0)
        tw.run(['resize', '--shrink', '-q', '@IMG@', '10M'], rc=0)
        tw.same_result(file_length=True)


@runner.case()
def resize_refusals():
    def v2_snap(path, d):
        qcow2_with_data('compat=0.10')(path, d)
        run([common.tools().qemu_img, 'snapshot', '-c', 's1', path])
    with common.TempDir() as d:
        tw = Twin(d, qcow2_with_data())
        tw.refused(['resize', '@IMG@', '32M'])
        tw.refused(['resize', '@IMG@', '-64M'])
        tw.refused(['resize', '@IMG@', '-65M'])
        tw.refused(['resize', '--preallocation=full', '--shrink', '@IMG@',
                    '32M'])
        tw.refused(['resize', '--preallocation=full', '@IMG@', '64M'])
        tw.refused(['resize', '--preallocation=bogus', '@IMG@', '+1M'])
        tw.refused(['resize', '@IMG@', '12Q'])
        tw.refused(['resize', '@IMG@', '+1000'])
        tw.refused(['resize', '@IMG@'])
        tw.refused(['resize', '-f', 'raw', '@IMG@', 'x', '1M'])
    with common.TempDir() as d:
        tw = Twin(d, v2_snap)
        tw.refused(['resize', '@IMG@', '+1M'])


@runner.case()
def resize_preallocation():
    """metadata, falloc and full: same content, clean, and the new area
    is allocated in the image (map shows it present)."""
    for mode in ('metadata', 'falloc', 'full'):
        with common.TempDir() as d:
            tw = Twin(d, qcow2_with_data(size='8M'))
            tw.run(['resize', '--preallocation=' + mode, '@IMG@', '+4M'],
                   rc=0)
            tw.same_result()
            m = json.loads(run([common.tools().qemu_img, 'map',
                                '--output=json', tw.paths['ours']]).out)
            tail = [e for e in m if e['start'] + e['length'] > 8 << 20]
            check(tail and all(e['present'] for e in tail),
                  '%s: the new area is not allocated: %s' % (mode, tail))


@runner.case()
def resize_prealloc_over_backing():
    """A preallocating grow from inside a cluster the backing file fills
    keeps the backing data below the old end, reads zeroes above it, and
    takes as many clusters as qemu-img's (QEMU's test 125 expects 7)."""
    def build(path, d, orig):
        t = common.tools()
        base = os.path.join(d, 'base.raw')
        run([t.qemu_img, 'create', '-q', '-f', 'raw', base, '128k'])
        qemu_io(base, 'write -P 1 0 128k', fmt='raw')
        run([t.qemu_img, 'create', '-q', '-f', 'qcow2', '-F', 'raw', '-b',
             base, '-o', 'cluster_size=64k', path, orig])
    for orig in ('31k', '33k'):
        for mode in ('metadata', 'full', 'falloc'):
            with common.TempDir() as d:
                tw = Twin(d, lambda p, dd: build(p, dd, orig))
                tw.run(['resize', '--preallocation=' + mode, '@IMG@',
                        '96k'], rc=0)
                tw.same_result(file_length=True)
                qemu_io(tw.paths['ours'], 'read -P 1 0 ' + orig,
                        'read -P 0 %s 63k' % orig)


@runner.case()
def resize_falloc_after_metadata_prealloc():
    """QEMU's test 125: an image preallocated with metadata only, grown
    from inside a cluster with falloc/full: writing the grown area takes
    no new host space, and the file does not grow."""
    t = common.tools()
    size = 2 * 1024 * 1024 - 48 * 1024
    for mode in ('falloc', 'full'):
        with common.TempDir() as d:
            img = os.path.join(d, 'img.qcow2')
            run([t.qemu_img, 'create', '-q', '-f', 'qcow2', '-o',
                 'preallocation=metadata,cluster_size=64k', img, str(size)])
            run([t.img, 'resize', '-q', '--preallocation=' + mode, img,
                 '+16K'])
            qemu_io(img, 'write 0 %d' % size)
            st1 = os.stat(img)
            qemu_io(img, 'write %d 16k' % size)
            st2 = os.stat(img)
            # Not preallocated, the 16 KiB write would take 16 KiB more;
            # ext4 has been seen to add one 4 KiB block here now and then
            # whatever wrote the image (its own extent bookkeeping), so
            # less than the write's size counts as preallocated.
            check(st2.st_blocks - st1.st_blocks < 16 * 1024 // 512 and
                  st2.st_size <= st1.st_size,
                  '%s: the grown area was not preallocated (%d -> %d '
                  'blocks, %d -> %d bytes)' % (mode, st1.st_blocks,
                                               st2.st_blocks, st1.st_size,
                                               st2.st_size))
            common.qemu_check_clean(img)


@runner.case()
def resize_raw():
    def build(path, d):
        with open(path, 'wb') as f:
            f.write(b'\x5a' * (1 << 20))
    with common.TempDir() as d:
        tw = Twin(d, build, 'img.raw', 'raw')
        tw.run(['resize', '-f', 'raw', '@IMG@', '+1M'], rc=0)
        tw.run(['resize', '-f', 'raw', '--preallocation=full', '@IMG@',
                '+1M'], rc=0)
        tw.run(['resize', '-f', 'raw', '--preallocation=falloc', '@IMG@',
                '+512k'], rc=0)
        tw.refused(['resize', '-f', 'raw', '@IMG@', '1M'])
        tw.run(['resize', '-f', 'raw', '--shrink', '@IMG@', '1536k'], rc=0)
        tw.same_result(file_length=True)


@runner.case()
def resize_over_longer_backing():
    """A grow over a longer backing file reads zeroes, not the backing
    data (QEMU zeroes the new area)."""
    def build(path, d):
        t = common.tools()
        base = os.path.join(d, 'base.qcow2')
        run([t.qemu_img, 'create', '-q', '-f', 'qcow2', base, '8M'])
        qemu_io(base, 'write -P 0x77 0 8M')
        run([t.qemu_img, 'create', '-q', '-f', 'qcow2', '-b', base, '-F',
             'qcow2', path, '8M'])
        run([t.qemu_img, 'resize', '--shrink', '-q', path, '4M'])
    with common.TempDir() as d:
        tw = Twin(d, build)
        tw.run(['resize', '@IMG@', '8M'], rc=0)
        tw.same_result()
        qemu_io(tw.paths['ours'], 'read -P 0x77 0 4M', 'read -P 0 4M 4M')


# --------------------------------------------------------------------------
# amend


@runner.case()
def amend_downgrade_and_upgrade():
    """1.1 -> 0.10 with zero clusters (with and without a backing file),
    then back to 1.1 with a snapshot: clean, same data and info."""
    def build(path, d, backing):
        t = common.tools()
        extra = []
        if backing:
            base = os.path.join(d, 'base.qcow2')
            run([t.qemu_img, 'create', '-q', '-f', 'qcow2', base, '4M'])
            qemu_io(base, 'write -P 7 0 4M')
            extra = ['-b', base, '-F', 'qcow2']
        run([t.qemu_img, 'create', '-q', '-f', 'qcow2'] + extra +
            [path, '4M'])
        qemu_io(path, 'write -P 9 1M 64k', 'write -z 0 128k',
                'write -P 5 2M 64k', 'write -z 2M 64k')
    for backing in (False, True):
        with common.TempDir() as d:
            tw = Twin(d, lambda p, dd: build(p, dd, backing))
            tw.run(['amend', '-o', 'compat=0.10', '@IMG@'], rc=0)
            tw.same_result()
            check('compat: 0.10' in '\n'.join(info_lines(tw.paths['ours'])),
                  'not downgraded')
            for p in tw.paths.values():
                run([common.tools().qemu_img, 'snapshot', '-c', 's1', p])
            tw.run(['amend', '-o', 'compat=1.1', '@IMG@'], rc=0)
            tw.same_result()
            check(snapshot_names(tw.paths['ours']) == ['s1'],
                  'snapshot lost by the upgrade')


@runner.case()
def amend_downgrade_snapshot_zero_clusters():
    """A downgrade expands zero clusters in a snapshot's tree too (shared
    L2 tables), with qemu-img's progress output (-p), as QEMU's 061."""
    def build(path, d):
        t = common.tools()
        base = os.path.join(d, 'base.qcow2')
        run([t.qemu_img, 'create', '-q', '-f', 'qcow2', base, '4G'])
        run([t.qemu_img, 'create', '-q', '-f', 'qcow2', '-b', base, '-F',
             'qcow2', path, '4G'])
        qemu_io(path, 'write -z 0 64k', 'write -z 1G 64k',
                'write -P 3 2G 64k', 'write -z 3G 64k')
        run([t.qemu_img, 'snapshot', '-c', 'foo', path])
    with common.TempDir() as d:
        tw = Twin(d, build)
        tw.run(['amend', '-p', '-o', 'compat=0.10', '@IMG@'], rc=0)
        tw.same_result()
        m = [run([common.tools().qemu_img, 'map', '--output=json', p]).out
             for p in tw.paths.values()]
        check(m[0] == m[1], 'map differs from qemu-img\'s\n%s\n%s' % tuple(m))
        for side in ('ours', 'theirs'):
            out = os.path.join(d, side + '.snap.qcow2')
            run([common.tools().qemu_img, 'convert', '-l', 'foo', '-O',
                 'qcow2', tw.paths[side], out])
        res = run([common.tools().qemu_img, 'compare',
                   os.path.join(d, 'ours.snap.qcow2'),
                   os.path.join(d, 'theirs.snap.qcow2')], rc=None)
        check(res.rc == 0, 'snapshot content differs after the downgrade')


@runner.case()
def amend_downgrade_keeps_snapshot_data():
    """A zero write after a snapshot keeps the data cluster the snapshot
    still reads (a zero entry with an offset); the downgrade must give
    the active image new zeroes and leave the snapshot's data and the
    refcounts right.  QEMU 7.2 zeroes the shared cluster in place: the
    snapshot loses its data and check reports an error (strata-only)."""
    common.skip_if_qemu_tools('QEMU 7.2 corrupts the snapshot here')
    t = common.tools()
    with common.TempDir() as d:
        base = os.path.join(d, 'base.qcow2')
        img = os.path.join(d, 'img.qcow2')
        run([t.qemu_img, 'create', '-q', '-f', 'qcow2', base, '768M'])
        run([t.qemu_img, 'create', '-q', '-f', 'qcow2', '-b', base, '-F',
             'qcow2', img, '768M'])
        qemu_io(img, 'write -P 3 512M 64k')
        run([t.qemu_img, 'snapshot', '-c', 'foo', img])
        qemu_io(img, 'write -z 512M 64k')
        m = run([t.qemu_img, 'map', '--output=json', img]).out
        check('"zero": true, "data": false, "offset"' in m,
              'setup: no zero cluster with an offset\n' + m)
        run([t.img, 'amend', '-o', 'compat=0.10', img])
        common.qemu_check_clean(img)
        qemu_io(img, 'read -P 0 512M 64k')
        snap = os.path.join(d, 'snap.raw')
        run([t.qemu_img, 'convert', '-l', 'foo', '-O', 'raw', img, snap])
        qemu_io(snap, 'read -P 3 512M 64k', fmt='raw')


@runner.case()
def amend_lazy_refcounts_and_size():
    with common.TempDir() as d:
        tw = Twin(d, qcow2_with_data())
        tw.run(['amend', '-o', 'lazy_refcounts=on', '@IMG@'], rc=0)
        tw.same_result()
        check('lazy refcounts: true' in '\n'.join(
            info_lines(tw.paths['ours'])), 'lazy refcounts not set')
        tw.run(['amend', '-o', 'lazy_refcounts=off,size=32M', '@IMG@'],
               rc=0)
        tw.same_result()
        tw.run(['amend', '-o', 'size=96M,compat=1.1', '@IMG@'], rc=0)
        tw.same_result()


@runner.case()
def amend_refusals():
    with common.TempDir() as d:
        tw = Twin(d, qcow2_with_data())
        for opts in ('cluster_size=4k', 'foo=1', 'lazy_refcounts=maybe',
                     'compat=0.9', 'backing_file=foo', 'refcount_bits=3',
                     'compat=0.10,lazy_refcounts=on', 'data_file=x',
                     'refcount_bits=128',
                     'compat=0.10,refcount_bits=8', 'size=1Q'):
            tw.refused(['amend', '-o', opts, '@IMG@'])
        tw.refused(['amend', '@IMG@'])
        tw.refused(['amend', '-o', 'compat=1.1', '@IMG@', 'x'])
        tw.refused(['amend', '-f', 'raw', '-o', 'size=1M', '@IMG@'])
        tw.refused(['amend', '-o', 'size=1M,', '-o', 'help', '@IMG@'])
        tw.refused(['amend', '-o', 'size=1M', '-o', ',,', '@IMG@'])
        tw.refused(['amend', '-f', 'bochs', '-o', 'help'])
        tw.run(['amend', '-f', 'qcow2', '-o', 'help'], rc=0)
    def v3_snap_other_size(path, d):
        qcow2_with_data()(path, d)
        run([common.tools().qemu_img, 'snapshot', '-c', 's1', path])
        run([common.tools().qemu_img, 'resize', '-q', path, '+1M'])
    with common.TempDir() as d:
        tw = Twin(d, v3_snap_other_size)
        tw.refused(['amend', '-o', 'compat=0.10', '@IMG@'])


@runner.case()
def amend_refcount_bits():
    """refcount_bits through every width and back: clean, same data, the
    width in info; narrowing below a snapshot's refcount of 2 is refused
    with qemu-img's text and changes nothing."""
    with common.TempDir() as d:
        tw = Twin(d, qcow2_with_data())
        for bits in ('8', '1', '64', '16'):
            tw.run(['amend', '-o', 'refcount_bits=' + bits, '@IMG@'], rc=0)
            tw.same_result()
            check('refcount bits: %s' % bits in '\n'.join(
                info_lines(tw.paths['ours'])), 'width not %s' % bits)
        for p in tw.paths.values():
            run([common.tools().qemu_img, 'snapshot', '-c', 's1', p])
        tw.refused(['amend', '-o', 'refcount_bits=1', '@IMG@'])
        tw.run(['amend', '-o', 'refcount_bits=2', '@IMG@'], rc=0)
        tw.same_result()


PROGRESS_RE = re.compile(r'\(([0-9.]+)/100%\)')


@runner.case()
def amend_progress():
    """amend -p reports each walk of a refcount width change (the old
    refcounts scanned, the new blocks written) and of a downgrade in
    turn: many steps from 0 to 100, never going back (qemu-img's goes
    back when it needs another walk), and the image checks clean.  The
    first image's new refcount table is longer than its old one, which
    the header switch got wrong (its overlap check read past the old
    table; AddressSanitizer in `make check` caught it)."""
    common.skip_if_qemu_tools("qemu-img's progress goes back between walks")
    t = common.tools()
    with common.TempDir() as d:
        img = os.path.join(d, 'img.qcow2')
        for create_opts, amend_opts in (
                ('cluster_size=512,preallocation=metadata', 'refcount_bits=64'),
                ('cluster_size=512,refcount_bits=64',
                 'refcount_bits=16,compat=0.10')):
            run([t.qemu_img, 'create', '-q', '-f', 'qcow2', '-o',
                 create_opts, img, '64M'])
            run([t.qemu_io, '-c', 'write -z 0 1M', '-c', 'write 2M 3M', img])
            r = run([t.img, 'amend', '-p', '-o', amend_opts, img])
            steps = [float(v) for v in PROGRESS_RE.findall(r.out)]
            check(len(steps) > 20 and steps[0] == 0 and steps[-1] == 100 and
                  all(a <= b for a, b in zip(steps, steps[1:])),
                  '%s: progress %r' % (amend_opts, steps))
            common.qemu_check_clean(img)
            os.unlink(img)


# --------------------------------------------------------------------------
# measure, dd, convert -l / -n


@runner.case()
def measure_outputs():
    t = common.tools()
    with common.TempDir() as d:
        img = os.path.join(d, 'img.qcow2')
        qcow2_with_data()(img, d)
        run([t.qemu_img, 'snapshot', '-c', 'snap', img])
        qemu_io(img, 'write -P 0x44 10M 5M')
        raw = os.path.join(d, 'img.raw')
        run([t.qemu_img, 'convert', '-O', 'raw', img, raw])
        v2 = os.path.join(d, 'v2.qcow2')
        run([t.qemu_img, 'convert', '-O', 'qcow2', '-o', 'compat=0.10', img,
             v2])
        cases = [
            ['-O', 'qcow2', v2],
            ['--size', '1G', '-O', 'qcow2'],
            ['--size', '1G'],
            ['--output=json', '-O', 'qcow2', img],
            ['-O', 'qcow2', '-o', 'cluster_size=4k,refcount_bits=1',
             '--size', '100G'],
            ['-O', 'qcow2', '-o', 'preallocation=full', img],
            ['-O', 'qcow2', '-o', 'backing_file=x', img],
            ['-O', 'qcow2', '-l', 'snap', img],
            ['-O', 'qcow2', '-l', 'snapshot.name=snap', img],
            ['--output=json', '-O', 'qcow2', '-f', 'raw', raw],
            ['-O', 'raw', img],
            # refusals
            [], ['-f', 'qcow2', '--size', '1G'], ['--size', '1G', img],
            ['--size', '1G', 'a', 'b'], ['-O', 'qcow2', '-l', 'nosuch', img],
            ['-O', 'qcow2', '-o', 'foo=1', '--size', '1M'],
            ['-O', 'qcow2', '-o', 'compat=0.10,refcount_bits=8', '--size',
             '1M'],
            ['-O', 'qcow2', '--size', '1E'], ['-O', 'nosuch', '--size', '1'],
            ['--output=xml', '--size', '1M'], ['-o', ',', '--size', '1M'],
            ['-l', 'snapshot.foo=bar'], ['--output', 'foo'], ['--size', '-1'],
            ['--object', 'secret,id=sec0,data=MTIzNDU2,format=base64'],
            ['-O', 'qcow2', '--size', '7E'], ['-O', 'qcow2', '--size', '0'],
        ]
        for args in cases:
            o = run([t.img, 'measure'] + args, rc=None)
            q = run([t.qemu_img, 'measure'] + args, rc=None)
            check((o.rc, norm(o.out + o.err)) == (q.rc, norm(q.out + q.err)),
                  'measure %s differs\n%s\n%s' % (args, o.describe(),
                                                  q.describe()))


@runner.case()
def dd_outputs():
    t = common.tools()
    with common.TempDir() as d:
        img = os.path.join(d, 'img.qcow2')
        qcow2_with_data(size='4M')(img, d)
        qemu_io(img, 'write -P 0x66 100k 300k')
        cases = [
            (['bs=64k', 'count=20', 'skip=2'], 'raw'),
            (['bs=1M', '-O', 'qcow2'], 'qcow2'),
            (['skip=100000'], 'raw'),
            (['bs=4k', 'count=3'], 'raw'),
            ([], 'raw'),
        ]
        for args, fmt in cases:
            outs = {}
            for label, tool in (('ours', t.img), ('qemu', t.qemu_img)):
                out = os.path.join(d, 'dd-%s.%s' % (label, fmt))
                if os.path.exists(out):
                    os.unlink(out)
                res = run([tool, 'dd'] + args + ['if=' + img, 'of=' + out],
                          rc=None)
                outs[label] = (res, out)
            (ro, po), (rq, pq) = outs['ours'], outs['qemu']
            check((ro.rc, norm(ro.err)) ==
                  (rq.rc, norm(rq.err)),
                  'dd %s differs\n%s\n%s' % (args, ro.describe(),
                                             rq.describe()))
            if fmt == 'raw':
                diff = common.files_equal(po, pq)
                check(diff is None, 'dd %s: %s' % (args, diff))
            else:
                common.qemu_check_clean(po)
                res = run([t.qemu_img, 'compare', po, pq], rc=None)
                check(res.rc == 0, 'dd %s: contents differ' % args)
        for args in (['if=' + img], ['if=' + img, 'of=x', 'foo=1'],
                     ['if=' + img, 'of=x', 'bs=0'], ['x'],
                     ['-O', 'nosuch', 'if=' + img, 'of=x'],
                     ['if=' + img, 'of=x', 'count=abc']):
            o = run([t.img, 'dd'] + args, rc=None, cwd=d)
            q = run([t.qemu_img, 'dd'] + args, rc=None, cwd=d)
            check((o.rc, norm(o.err)) == (q.rc, norm(q.err)),
                  'dd %s differs\n%s\n%s' % (args, o.describe(),
                                             q.describe()))


@runner.case()
def convert_snapshot_and_n():
    """convert -l takes a snapshot (also one of another size) as source;
    -n's rules and texts."""
    t = common.tools()
    with common.TempDir() as d:
        img = os.path.join(d, 'sn.qcow2')
        run([t.qemu_img, 'create', '-q', '-f', 'qcow2', img, '4M'])
        qemu_io(img, 'write -P 1 0 1M')
        run([t.qemu_img, 'snapshot', '-c', 's1', img])
        qemu_io(img, 'write -P 2 0 1M')
        run([t.qemu_img, 'resize', '-q', img, '8M'])
        for args, fmt in ((['-l', 's1', '-O', 'raw'], 'raw'),
                          (['-l', 'snapshot.name=s1', '-O', 'qcow2'],
                           'qcow2'),
                          (['-l', 'snapshot.id=1', '-O', 'raw'], 'raw')):
            outs = []
            for label, tool in (('ours', t.img), ('qemu', t.qemu_img)):
                out = os.path.join(d, 'c-%s.%s' % (label, fmt))
                if os.path.exists(out):
                    os.unlink(out)
                run([tool, 'convert'] + args + [img, out])
                outs.append(out)
            if fmt == 'raw':
                diff = common.files_equal(*outs)
                check(diff is None, 'convert %s: %s' % (args, diff))
            else:
                common.qemu_check_clean(outs[0])
                res = run([t.qemu_img, 'compare'] + outs, rc=None)
                check(res.rc == 0, 'convert %s: contents differ' % args)
        target = os.path.join(d, 'target.raw')
        with open(target, 'wb') as f:
            f.write(b'\xaa' * (8 << 20))
        before = common.sha256(target)
        for args in (['-l', 'snapshot.foo=s1', img],
                     ['-l', 'nosuch', img], ['-l', 's1', img, img],
                     ['-n', '-o', 'cluster_size=4k', img],
                     ['-C', '-S', '4k', img], ['-C', '--salvage', img],
                     ['-n', '-O', 'raw', img + '.none']):
            o = run([t.img, 'convert', '-O', 'raw'] + args + [target],
                    rc=None)
            q = run([t.qemu_img, 'convert', '-O', 'raw'] + args + [target],
                    rc=None)
            check((o.rc, norm(o.err)) == (q.rc, norm(q.err)),
                  'convert %s differs\n%s\n%s' % (args, o.describe(),
                                                  q.describe()))
            check(common.sha256(target) == before,
                  'convert %s changed the target' % args)


@runner.case()
def convert_salvage():
    """A compressed cluster whose data is damaged cannot be read: plain
    convert fails, --salvage warns for each unreadable sector (qemu-img's
    texts, in its order), writes zeroes there and copies the rest; -q
    silences the warnings; -C is refused with it."""
    t = common.tools()
    with common.TempDir() as d:
        img = os.path.join(d, 'cz.qcow2')
        run([t.qemu_img, 'create', '-q', '-f', 'qcow2', img, '1M'])
        qemu_io(img, 'write -c -P 0x41 0 64k', 'write -P 0x42 64k 64k')
        m = json.loads(run([t.qemu_img, 'map', '--output=json', img]).out)
        check(m[0]['data'] and 'offset' not in m[0], 'not compressed')
        # the compressed data lies in the cluster after the L2 table,
        # refcount block and the other data cluster: find it by its flag
        with open(img, 'r+b') as f:
            l1 = int.from_bytes(f.read(48)[40:48], 'big')
            f.seek(l1)
            l2 = int.from_bytes(f.read(8), 'big') & ((1 << 56) - 512)
            f.seek(l2)
            entry = int.from_bytes(f.read(8), 'big')
            check(entry & (1 << 62), 'first entry is not compressed')
            host = entry & ((1 << 54) - 1)   # 64k clusters: 54 offset bits
            f.seek(host)
            f.write(b'\xff' * 16)
        for extra in ([], ['--salvage'], ['--salvage', '-q'],
                      ['--salvage', '-C']):
            outs = []
            res = []
            for label, tool in (('ours', t.img), ('qemu', t.qemu_img)):
                out = os.path.join(d, 's-%s.raw' % label)
                if os.path.exists(out):
                    os.unlink(out)
                res.append(run([tool, 'convert'] + extra +
                                ['-O', 'raw', img, out], rc=None))
                outs.append(out)
            o, q = res
            check((o.rc, norm(o.out + o.err)) == (q.rc, norm(q.out + q.err)),
                  'convert %s differs\n%s\n%s' % (extra, o.describe(),
                                                    q.describe()))
            if extra[:2] == ['--salvage'] or extra == ['--salvage', '-q']:
                check(o.rc == 0, 'salvage failed')
                diff = common.files_equal(*outs)
                check(diff is None, 'salvaged copies differ: %s' % diff)


@runner.case()
def convert_salvage_block_status():
    """A block status that fails (blkdebug's iotype=block-status over the
    format node): qemu-img warns once while it sizes the copy and again
    while it copies, then copies that sector as data; strata's warnings,
    exit status and copy must be the same, with -p as without."""
    t = common.tools()
    with common.TempDir() as d:
        img = os.path.join(d, 'src.qcow2')
        run([t.qemu_img, 'create', '-q', '-f', 'qcow2', img, '4M'])
        qemu_io(img, 'write -P 0x2a 0 4M')
        bad = 1024 * 1024 + 8192
        src = ("json:{'driver': 'blkdebug', 'image': {'driver': 'qcow2', "
               "'file': {'driver': 'file', 'filename': '%s'}}, "
               "'inject-error': [{'event': 'none', 'iotype': 'block-status',"
               " 'errno': 5, 'sector': %d}]}" % (img, bad // 512))
        for extra in ([], ['-p']):
            res, outs = [], []
            for label, tool in (('ours', t.img), ('qemu', t.qemu_img)):
                out = os.path.join(d, 'bs-%s.qcow2' % label)
                if os.path.exists(out):
                    os.unlink(out)
                res.append(run([tool, 'convert', '--salvage'] + extra +
                                ['-O', 'qcow2', src, out], rc=None))
                outs.append(out)
            o, q = res
            warnings = norm(o.err).count('error while reading block status')
            check(warnings == 2, 'expected two warnings, got %d\n%s'
                  % (warnings, o.describe()))
            check((o.rc, norm(o.err)) == (q.rc, norm(q.err)),
                  'convert %s differs\n%s\n%s' % (extra, o.describe(),
                                                  q.describe()))
            run([t.qemu_img, 'compare', '-q', img, outs[0]])
            run([t.qemu_img, 'check', '-q', outs[0]])


@runner.case()
def create_readonly_format_refusals():
    """create and convert to a format QEMU has but cannot create (bochs,
    dmg): qemu-img's "does not support image creation", with or without
    -o help, and no file left behind; a format QEMU lacks stays unknown."""
    with common.TempDir() as d:
        tw = Twin(d, qcow2_with_data())
        for fmt in ('bochs', 'dmg', 'nosuchfmt'):
            tw.refused(['create', '-f', fmt, '-o', 'help'])
            tw.refused(['create', '-f', fmt, '@DIR@/new.img', '1M'])
            tw.refused(['convert', '-O', fmt, '-o', 'help'])
            tw.refused(['convert', '-O', fmt, '@IMG@', '@DIR@/out.img'])
            for side in tw.paths.values():
                for leftover in ('new.img', 'out.img'):
                    path = os.path.join(os.path.dirname(side), leftover)
                    check(not os.path.exists(path),
                          '%s left behind by a refused %s' % (path, fmt))


@runner.case()
def create_data_file_raw_alone():
    """data_file_raw=on without data_file: qemu-img's refusal, no image."""
    with common.TempDir() as d:
        tw = Twin(d, qcow2_with_data())
        tw.refused(['create', '-f', 'qcow2', '-o', 'data_file_raw=on',
                    '@DIR@/new.qcow2', '1M'])
        for side in tw.paths.values():
            path = os.path.join(os.path.dirname(side), 'new.qcow2')
            check(not os.path.exists(path), path + ' left behind')


@runner.case()
def create_and_convert_with_data_file():
    """create and convert with data_file (and data_file_raw) make the
    image and its data file, as qemu-img does: the guest data lands in
    the data file, qemu-img compare finds the copy identical and qemu-img
    check finds nothing (test_data_file.py has the rest)."""
    t = common.tools()
    with common.TempDir() as d:
        src = os.path.join(d, 'src.qcow2')
        qcow2_with_data()(src, d)
        img, data = os.path.join(d, 'new.qcow2'), os.path.join(d, 'new.data')
        for opts in ('data_file=' + data,
                     'data_file=%s,data_file_raw=on' % data):
            for f in (img, data):
                if os.path.exists(f):
                    os.unlink(f)
            run([t.img, 'convert', '-O', 'qcow2', '-o', opts, src, img])
            check(os.path.exists(data), 'no data file from ' + opts)
            res = run([t.qemu_img, 'compare', src, img])
            check('identical' in res.out, res.describe())
            common.qemu_check_clean(img)
            if 'raw' in opts:
                # the data file alone reads as the disk
                res = run([t.qemu_img, 'compare', '-F', 'raw', src, data])
                check('identical' in res.out, res.describe())


@runner.case()
def rebase_past_old_end_writes_zero_clusters():
    """rebase onto a backing file where the old chain (here: none) reads
    zeroes: the differing clusters become zero clusters, as with qemu-img,
    not allocated clusters of zeroes (iotest 252)."""
    t = common.tools()

    def build(path, d):
        run([t.qemu_img, 'create', '-q', '-f', 'qcow2', path, '384k'])
        qemu_io(path, 'write -P 0x22 0 128k')
        base = os.path.join(d, 'base.qcow2')
        run([t.qemu_img, 'create', '-q', '-f', 'qcow2', base, '384k'])
        qemu_io(base, 'write -P 0x11 128k 64k', 'write -P 0x11 256k 64k')
    with common.TempDir() as d:
        tw = Twin(d, build)
        tw.run(['rebase', '-b', '@DIR@/base.qcow2', '-F', 'qcow2', '@IMG@'],
               rc=0)
        maps = {}
        for side, path in tw.paths.items():
            res = run([t.qemu_img, 'map', '--output=json', path])
            maps[side] = [(e['start'], e['length'], e['depth'], e['zero'],
                           e['data']) for e in json.loads(res.out)]
        check(maps['ours'] == maps['theirs'],
              'map differs from qemu-img\'s\n%s\n%s'
              % (maps['ours'], maps['theirs']))
        check(any(e[2] == 0 and e[3] and not e[4] for e in maps['ours']),
              'no zero cluster in the image: %s' % maps['ours'])


def zero_refblocks(path):
    """Refcount table entries pointing at an all-zero refcount block."""
    import struct
    with open(path, 'rb') as f:
        d = f.read()
    cs = 1 << struct.unpack('>I', d[20:24])[0]
    rto, rtc = struct.unpack('>QI', d[48:60])
    ents = struct.unpack('>%dQ' % (rtc * cs // 8), d[rto:rto + rtc * cs])
    return [e for e in ents if e and not any(d[e:e + cs])]


@runner.case()
def resize_shrink_drops_refblocks_counted_elsewhere():
    """Shrinking an image whose refcount blocks live outside the range
    they count (512-byte clusters, 64-bit refcounts) drops the blocks left
    empty, as qemu-img does: no table entry points at an all-zero block,
    and the file is as long as qemu-img's (iotest 163)."""
    t = common.tools()

    def build(path, d):
        run([t.qemu_img, 'create', '-q', '-f', 'qcow2', '-o',
             'cluster_size=512,refcount_bits=64', path, '3M'])
        qemu_io(path, *['write -P 0xff %d 256k' % (i * 262144)
                        for i in range(12)])
    with common.TempDir() as d:
        tw = Twin(d, build)
        tw.run(['resize', '-f', 'qcow2', '--shrink', '@IMG@', '1M'], rc=0)
        tw.same_result(file_length=True)
        for side, path in tw.paths.items():
            zero = zero_refblocks(path)
            check(not zero, '%s: empty refcount blocks still in the table '
                  'at %s' % (side, zero))


@runner.case()
def commit_zeroes_frees_base_clusters():
    """commit of an overlay written with zeroes (write -z) over a base full
    of data: the base's clusters are freed, as with qemu-img (QEMU's mirror
    unmaps), not kept allocated holding zeroes (iotest 313)."""
    t = common.tools()

    def build(path, d):
        base = os.path.join(d, 'base.qcow2')
        run([t.qemu_img, 'create', '-q', '-f', 'qcow2', base, '1M'])
        qemu_io(base, 'write -P 1 0 1M')
        run([t.qemu_img, 'create', '-q', '-f', 'qcow2', '-F', 'qcow2', '-b',
             base, path])
        qemu_io(path, 'write -z 0 1M')
    with common.TempDir() as d:
        tw = Twin(d, build)
        tw.run(['commit', '@IMG@'], rc=0)
        checks = {}
        for side, path in tw.paths.items():
            base = os.path.join(os.path.dirname(path), 'base.qcow2')
            checks[side] = run([t.qemu_img, 'check', base]).out
        check(checks['ours'] == checks['theirs'],
              'base check differs from qemu-img\'s\n%s\n%s'
              % (checks['ours'], checks['theirs']))
        check('allocated' not in checks['ours'],
              'base keeps allocated clusters:\n' + checks['ours'])


if __name__ == '__main__':
    sys.exit(runner.main())
