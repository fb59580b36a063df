#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Lazy refcounts and the dirty bit, compared with QEMU 7.2.

- create: lazy_refcounts=on sets the compatible bit (compat=1.1), is
  refused with qemu-img's text for compat=0.10, also when the refcount
  width is wrong for compat=0.10 too (and no file is left);
- a clean close leaves the dirty bit clear, a write then SIGKILL leaves
  it set, and qemu-img check then reports exactly what it reports for
  an image that qemu-io wrote and was killed the same way;
- a read-only open keeps the image dirty and reads the data;
- reads and a flush with nothing to write leave the dirty bit clear
  (killed after the flush, as qemu-io: QEMU sets the bit only before an
  L2 update);
- a read-write open repairs it: the dirty bit is cleared, qemu-img
  check is clean, the data is intact, and the repair messages are
  QEMU's;
- lazy-refcounts=off at runtime on such an image writes accurately
  (a kill leaves no dirty bit and a clean check);
- many rounds of random writes killed at random points, each followed
  by a repairing open: the content always equals a shadow copy of the
  flushed writes and qemu-img check is clean.
"""

import os
import random
import signal
import struct
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

runner = common.Runner()


def bits(path):
    with open(path, 'rb') as f:
        hdr = f.read(88)
    return struct.unpack('>QQ', hdr[72:88])   # incompatible, compatible


def run_killed(argv):
    p = subprocess.run([str(a) for a in argv], stdin=subprocess.DEVNULL,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=120)
    err = p.stderr.decode('utf-8', 'replace')
    common.check(p.returncode == -signal.SIGKILL and
                 not common.sanitizer_report(err),
                 'wanted death by SIGKILL, got %s:\n%s' % (p.returncode, err))


def create(img, opts, size='128M', tool=None, rc=0):
    t = common.tools()
    if os.path.exists(img):
        os.unlink(img)
    return common.run([tool or t.img, 'create', '-q', '-f', 'qcow2', '-o',
                       opts, img, size], rc=rc)


def check_text(img):
    res = common.run([common.tools().qemu_img, 'check', img], rc=None)
    return res.rc, res.out + res.err


@runner.case()
def create_options():
    t = common.tools()
    with common.TempDir() as d:
        img = os.path.join(d, 'a.qcow2')
        create(img, 'lazy_refcounts=on')
        common.check(bits(img) == (0, 1), 'header bits %s' % (bits(img),))
        info = common.run([t.qemu_img, 'info', img]).out
        common.check('lazy refcounts: true' in info, info)
        os.unlink(img)
        # with a refcount width version 2 cannot have either, QEMU names
        # the lazy refcounts first
        for opts in ('compat=0.10,lazy_refcounts=on',
                     'compat=0.10,lazy_refcounts=on,refcount_bits=1',
                     'compat=0.10,refcount_bits=3,lazy_refcounts=on'):
            ours = create(img, opts, rc=1)
            common.check(not os.path.exists(img),
                         'a refused create left a file')
            theirs = create(img, opts, tool=t.qemu_img, rc=1)
            common.check(common.normalize_prog(ours.err, t.img_name) ==
                         common.normalize_prog(theirs.err, 'qemu-img'),
                         '%s: message differs:\n%s\n%s'
                         % (opts, ours.err, theirs.err))


@runner.case()
def kill_then_check_like_qemu():
    t = common.tools()
    with common.TempDir() as d:
        img = os.path.join(d, 'a.qcow2')
        # clean close: not dirty
        create(img, 'lazy_refcounts=on')
        common.run_io(t.io, img, ['write -P 0x5a 0 512'])
        common.check(bits(img)[0] == 0, 'dirty after a clean close')
        common.qemu_check_clean(img)
        reports = []
        for tool in (t.qemu_io, t.io):
            create(img, 'lazy_refcounts=on')
            run_killed([tool, '-f', 'qcow2', '-t', 'writethrough',
                        '-c', 'write -P 0x5a 0 512', '-c', 'sigraise 9', img])
            common.check(bits(img)[0] == 1, '%s: not dirty after a kill' % tool)
            reports.append(check_text(img))
        common.check(reports[0] == reports[1] and reports[0][0] == 2,
                     'qemu-img check after the kill differs:\nqemu-io:\n%s\n'
                     'ours:\n%s' % (reports[0], reports[1]))
        # read-only: still dirty, data there
        common.run_io(t.io, img, ['read -P 0x5a 0 512'], extra=['-r'])
        common.check(bits(img)[0] == 1, 'a read-only open cleared the bit')
        # read-write: repaired with QEMU's messages
        ours = common.run_io(t.io, img, ['read -P 0x5a 0 512'])
        common.check(bits(img)[0] == 0, 'the repairing open left it dirty')
        common.qemu_check_clean(img)
        create(img, 'lazy_refcounts=on', tool=t.qemu_img)
        run_killed([t.qemu_io, '-f', 'qcow2', '-t', 'writethrough',
                    '-c', 'write -P 0x5a 0 512', '-c', 'sigraise 9', img])
        theirs = common.run_io(t.qemu_io, img, ['read -P 0x5a 0 512'])
        common.check(common.normalize_prog(ours.err, t.io_name) ==
                     common.normalize_prog(theirs.err, 'qemu-io'),
                     'repair messages differ:\n%s\n%s' % (ours.err, theirs.err))


@runner.case()
def flush_after_reads_leaves_bit_clear():
    t = common.tools()
    with common.TempDir() as d:
        img = os.path.join(d, 'a.qcow2')
        for tool in (t.qemu_io, t.io):
            create(img, 'lazy_refcounts=on')
            common.run_io(t.qemu_io, img, ['write -P 0x5a 0 64k'])
            run_killed([tool, '-f', 'qcow2', '-c', 'read -P 0x5a 0 512',
                        '-c', 'flush', '-c', 'sigraise 9', img])
            common.check(bits(img)[0] == 0,
                         '%s: a flush after reads set the dirty bit' % tool)
            # the bit still comes when a write needs it
            run_killed([tool, '-f', 'qcow2', '-c', 'write -P 0x11 1M 512',
                        '-c', 'flush', '-c', 'sigraise 9', img])
            common.check(bits(img)[0] == 1,
                         '%s: a flushed write left the bit clear' % tool)


@runner.case()
def runtime_off_is_accurate():
    t = common.tools()
    with common.TempDir() as d:
        img = os.path.join(d, 'a.qcow2')
        create(img, 'lazy_refcounts=on')
        run_killed([t.io, '-f', 'qcow2', '-t', 'writethrough',
                    '-c', 'reopen -o lazy-refcounts=off',
                    '-c', 'write -P 0x5a 0 512', '-c', 'sigraise 9', img])
        common.check(bits(img)[0] == 0, 'dirty with lazy-refcounts=off')
        common.qemu_check_clean(img)
        create(img, 'lazy_refcounts=off')
        run_killed([t.io, '-f', 'qcow2', '-t', 'writethrough',
                    '-c', 'open -o lazy-refcounts=on ' + img,
                    '-c', 'write -P 0x5a 0 512', '-c', 'sigraise 9'])
        common.check(bits(img)[0] == 1, 'open -o lazy-refcounts=on ignored')


@runner.case()
def random_kills_lose_nothing_flushed():
    t = common.tools()
    r = common.rng(9)
    size = 8 << 20
    with common.TempDir() as d:
        img = os.path.join(d, 'a.qcow2')
        create(img, 'lazy_refcounts=on,cluster_size=4k', size='8M')
        shadow = bytearray(size)
        for rnd in range(12):
            cmds = []
            for _ in range(r.randint(1, 25)):
                off = r.randrange(0, size - 70000) & ~511
                ln = r.randint(1, 128) * 512
                pat = r.randint(1, 255)
                cmds.append('write -P %d %d %d' % (pat, off, ln))
                shadow[off:off + ln] = bytes([pat]) * ln
            snap = rnd % 5 == 4
            argv = [t.io, '-f', 'qcow2', '-t', 'writethrough']
            argv += common.io_args(cmds) + ['-c', 'sigraise 9', img]
            if snap:
                common.run([t.img, 'snapshot', '-c', 's%d' % rnd, img])
            run_killed(argv)
            common.check(bits(img)[0] == 1, 'round %d: not dirty' % rnd)
            # the repairing open, then the oracle's verdict
            common.run_io(t.io, img, ['read 0 512'])
            common.check(bits(img)[0] == 0, 'round %d: still dirty' % rnd)
            common.qemu_check_clean(img)
            raw = os.path.join(d, 'shadow.raw')
            with open(raw, 'wb') as f:
                f.write(shadow)
            common.qemu_compare_identical(img, raw)


if __name__ == '__main__':
    sys.exit(runner.main())
