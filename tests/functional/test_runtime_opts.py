#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""qcow2 runtime options, side by side with qemu-io (QEMU 7.2).

cache-size, l2-cache-size, l2-cache-entry-size, refcount-cache-size,
cache-clean-interval, lazy-refcounts, pass-discard-* and overlap-check
are given to `open -o` and `reopen -o`, good and bad values alike; the
tool under test must print what qemu-io prints (program name aside) and
end with the same exit code.  A bad reopen must change nothing (a
lazy-refcounts=on next to a bad value leaves no dirty bit after a kill),
and the smallest caches the options allow still write, copy on write
after a snapshot and read back correctly, with qemu-img check clean.
"""

import os
import re
import signal
import struct
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

runner = common.Runner()

# Each runs against a fresh 64 MiB image, through qemu-io and ours.
OPEN_CASES = [
    'cache-size=1.25M,l2-cache-size=1M,refcount-cache-size=0.25M',
    'cache-size=1M,l2-cache-size=2M',
    'cache-size=1M,refcount-cache-size=2M',
    'cache-size=0,l2-cache-size=0,refcount-cache-size=0',
    'l2-cache-entry-size=256',
    'l2-cache-entry-size=4242',
    'l2-cache-entry-size=128k',
    'l2-cache-entry-size=512',
    'l2-cache-entry-size=16k',
    'cache-size=0',
    'l2-cache-size=0',
    'refcount-cache-size=0',
    'cache-size=2M',
    'cache-size=2M,l2-cache-size=1M',
    'cache-size=2M,refcount-cache-size=1M',
    'l2-cache-size=1M,refcount-cache-size=0.25M',
    'cache-size=x',
    'l2-cache-size=-1',
    'refcount-cache-size=256T',
    'cache-clean-interval=x',
    'cache-clean-interval=-1',
    'cache-clean-interval=0x10',
    'cache-clean-interval=4294967296',
    'lazy-refcounts=42',
    'lazy-refcounts=on',
    'pass-discard-request=on,pass-discard-snapshot=off,pass-discard-other=on',
    'pass-discard-other=maybe',
    'overlap-check=none,cache-size=1M,refcount-cache-size=2M',
]

REOPEN_CASES = [
    ['reopen -o lazy-refcounts=42'],
    ['reopen -o cache-size=1M,l2-cache-size=64k,refcount-cache-size=64k'],
    ['reopen -o cache-size=1M,l2-cache-size=2M'],
    ['reopen -o cache-size=1M,refcount-cache-size=2M'],
    ['reopen -o l2-cache-entry-size=33k'],
    ['reopen -o l2-cache-entry-size=128k'],
    ['reopen -o refcount-cache-size=256T'],
    ['reopen -o overlap-check=constant,overlap-check.template=all'],
    ['reopen -o overlap-check=blubb'],
    ['reopen -o cache-clean-interval=-1'],
    # QEMU's merge rules: old options stay unless a new one replaces them
    ['reopen -o cache-size=1M', 'reopen -o l2-cache-size=2M'],
    ['reopen -o cache-size=1M,l2-cache-size=512k',
     'reopen -o refcount-cache-size=2M'],
    ['reopen -o l2-cache-size=512k', 'reopen -o cache-size=256k'],
    ['reopen -o overlap-check.template=none',
     'reopen -o overlap-check.main-header=x'],
    ['reopen -o cache-size=1M', 'reopen -o l2-cache-entry-size=512',
     'reopen -o refcount-cache-size=128k', 'reopen -o cache-clean-interval=5',
     'write -P 0x33 0 1M', 'read -P 0x33 0 1M'],
    ['reopen -o lazy-refcounts=on,pass-discard-request=on',
     'reopen -o lazy-refcounts=off,pass-discard-request=off',
     'write -P 0x11 64k 64k', 'read -P 0x11 64k 64k'],
    ['reopen -o foo=bar'],
    ['reopen -o lazy-refcounts=on,foo=bar'],
    ['reopen -r -o lazy-refcounts=on', 'write 0 512'],
]


def fresh(d, name, opts=''):
    t = common.tools()
    path = os.path.join(d, name)
    if os.path.exists(path):
        os.unlink(path)
    args = [t.qemu_img, 'create', '-q', '-f', 'qcow2']
    if opts:
        args += ['-o', opts]
    common.run(args + [path, '64M'])
    return path


def _rate(text):
    return re.sub(r'\d+ ops; .*', 'RATE', text)


def side_by_side(d, cmds, with_open_opts=None, img_opts=''):
    t = common.tools()
    outs = []
    for tool, prog in ((t.qemu_io, t.qemu_io), (t.io, t.io)):
        img = fresh(d, 'img.qcow2', img_opts)
        argv = [tool]
        if with_open_opts is not None:
            argv += ['-c', 'open -o %s %s' % (with_open_opts, img)]
            argv += common.io_args(cmds)
        else:
            argv += ['-f', 'qcow2'] + common.io_args(cmds) + [img]
        res = common.run(argv, rc=None)
        outs.append((res.rc, _rate(common.normalize_prog(
            res.out + res.err, os.path.basename(prog)))))
        common.qemu_check_clean(img)
    common.check(outs[0] == outs[1],
                 'output differs from qemu-io for %s %s:\nqemu-io:\n%s\n'
                 'ours:\n%s' % (with_open_opts or '', cmds, outs[0], outs[1]))


@runner.case()
def open_options_match_qemu():
    with common.TempDir() as d:
        for o in OPEN_CASES:
            side_by_side(d, ['read 0 512'], with_open_opts=o)


@runner.case()
def huge_caches_match_qemu():
    """With 2 MiB clusters a 256 TiB cache is few enough tables to pass
    QEMU's count check, and QEMU then fails to allocate it: strata must
    refuse it with the same text (and accept a large one that fits)."""
    with common.TempDir() as d:
        for o in ('refcount-cache-size=256T', 'l2-cache-size=256T',
                  'cache-size=256T', 'l2-cache-size=64M,cache-size=128M'):
            side_by_side(d, ['read 0 512'], with_open_opts=o,
                         img_opts='cluster_size=2M')
        side_by_side(d, ['reopen -o refcount-cache-size=256T', 'read 0 512'],
                     img_opts='cluster_size=2M')


@runner.case()
def reopen_options_match_qemu():
    with common.TempDir() as d:
        for cmds in REOPEN_CASES:
            side_by_side(d, cmds)


def run_killed(argv):
    """argv ends in sigraise 9: it must die of SIGKILL, nothing else."""
    p = subprocess.run([str(a) for a in argv], stdin=subprocess.DEVNULL,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=120)
    err = p.stderr.decode('utf-8', 'replace')
    common.check(p.returncode == -signal.SIGKILL and
                 not common.sanitizer_report(err),
                 'wanted death by SIGKILL, got %s:\n%s' % (p.returncode, err))
    return p.stdout.decode('utf-8', 'replace'), err


def incompat_bits(path):
    with open(path, 'rb') as f:
        hdr = f.read(80)
    return struct.unpack('>Q', hdr[72:80])[0]


@runner.case()
def bad_reopen_changes_nothing():
    """lazy-refcounts=on in a reopen that fails must not apply: after a
    write and a kill the image is not dirty (QEMU's 137)."""
    t = common.tools()
    with common.TempDir() as d:
        img = fresh(d, 'img.qcow2')
        _, err = run_killed([t.io, '-f', 'qcow2', '-t', 'writethrough',
                             '-c', 'reopen -o lazy-refcounts=on,'
                             'overlap-check=bl',
                             '-c', 'write -P 0x5a 0 512',
                             '-c', 'sigraise 9', img])
        common.check('overlap-check' in err, 'no error: ' + err)
        common.check(incompat_bits(img) == 0,
                     'dirty bit set by a failed reopen: %#x' % incompat_bits(img))
        common.qemu_check_clean(img)
        # and the same reopen without the bad value does apply
        img = fresh(d, 'img2.qcow2')
        run_killed([t.io, '-f', 'qcow2', '-t', 'writethrough',
                    '-c', 'reopen -o lazy-refcounts=on',
                    '-c', 'write -P 0x5a 0 512', '-c', 'sigraise 9', img])
        common.check(incompat_bits(img) & 1,
                     'reopen -o lazy-refcounts=on did not apply')


@runner.case()
def minimal_caches_stay_correct():
    """cache-size=0 (two L2 tables, four refcount blocks): writes across
    many L2 tables, a snapshot, copy-on-write, and reads all agree."""
    t = common.tools()
    with common.TempDir() as d:
        img = os.path.join(d, 'img.qcow2')
        common.run([t.qemu_img, 'create', '-q', '-f', 'qcow2', '-o',
                    'cluster_size=4k', img, '256M'])
        # 4k clusters: one L2 table maps 2 MiB; touch 40 tables
        writes = ['write -P %d %dM 8k' % (i % 250 + 1, i * 6 + 1)
                  for i in range(40)]
        common.run([t.io, '-c', 'open -o cache-size=0,cache-clean-interval=1 '
                    + img] + common.io_args(writes))
        common.run([t.qemu_img, 'snapshot', '-c', 'snap', img])
        cow = ['write -P 0x77 %dM 512' % (i * 6 + 1) for i in range(40)]
        common.run([t.io, '-c', 'open -o l2-cache-size=0,refcount-cache-size=0 '
                    + img] + common.io_args(cow))
        common.qemu_check_clean(img)
        reads = []
        for i in range(40):
            reads += ['read -P 0x77 %dM 512' % (i * 6 + 1),
                      'read -P %d %d 7680' % (i % 250 + 1,
                                              (i * 6 + 1) * 1048576 + 512)]
        common.run_io(t.qemu_io, img, reads)


if __name__ == '__main__':
    sys.exit(runner.main())
