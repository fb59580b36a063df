#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Bad backing chains and bad chain arguments: a clear error, nothing
written.

Chains whose backing file is missing, has the wrong format given, forms a
loop, is deeper than the limit, is a directory, a device node or a FIFO:
opening them read-only and read-write ($STRATA_IO), `info
--backing-chain`, `map`, `commit`, `rebase` and `convert` all fail with a
message naming the problem, and no file in the directory changes.  Also
`create -b` and `rebase -b` with such backing files, and commit/rebase
arguments that make no sense (no backing file, a base not in the chain, a
loop through the new backing file).  `rebase -u` writes a loop when told
to, as qemu-img does; the opens then fail and a second `rebase -u` mends
it.
"""

import os
import sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import chainlib  # noqa: E402
import common  # noqa: E402

MiB = 1 << 20
runner = common.Runner()


def snapshot_dir(d):
    out = {}
    for name in sorted(os.listdir(d)):
        p = os.path.join(d, name)
        if os.path.isfile(p) and not os.path.islink(p):
            out[name] = chainlib.sha256(p)
        else:
            out[name] = None
    return out


def expect_error(argv, want, d, timeout=60):
    """argv fails (exit 1), mentions every string of `want`, and changes
    no file in d."""
    before = snapshot_dir(d)
    res = common.run(argv, rc=None, timeout=timeout)
    common.check(res.rc not in (0, None), 'should have failed:\n'
                 + res.describe())
    for w in want:
        common.check(w in res.err, 'error lacks %r:\n%s' % (w, res.describe()))
    after = snapshot_dir(d)
    common.check(before == after, 'files changed by a failed command:\n%s\n'
                 'before: %r\nafter: %r' % (common.cmdline(argv), before,
                                             after))
    return res


def all_openers(top, want, d, opens_backing_for_info=True):
    """Every command that opens the chain of top fails the same way."""
    t = common.tools()
    expect_error([t.io, '-f', 'qcow2', '-c', 'read 0 512', top], want, d)
    expect_error([t.io, '-f', 'qcow2', '-c', 'write -P 1 0 512', top], want, d)
    expect_error([t.img, 'map', top], want, d)
    expect_error([t.img, 'commit', top], want, d)
    expect_error([t.img, 'convert', '-O', 'raw', top,
                  os.path.join(d, 'out.raw')], want, d)
    if opens_backing_for_info:
        expect_error([t.img, 'info', '--backing-chain', top], want, d)


def missing_case():
    with chainlib.ShmDir() as d:
        t = common.tools()
        top = os.path.join(d, 'top.qcow2')
        chainlib.create(t.img, top, MiB, backing='nosuch.qcow2', unsafe=True)
        all_openers(top, ['nosuch.qcow2', 'No such file or directory'], d)


def wrong_format_case():
    with chainlib.ShmDir() as d:
        t = common.tools()
        raw = os.path.join(d, 'base.raw')
        with open(raw, 'wb') as f:
            f.write(b'\1' * MiB)
        top = os.path.join(d, 'top.qcow2')
        chainlib.create(t.img, top, MiB, backing='base.raw',
                        backing_fmt='qcow2', unsafe=True)
        all_openers(top, ['Image is not in qcow2 format'], d,
                    opens_backing_for_info=False)


def directory_case():
    with chainlib.ShmDir() as d:
        t = common.tools()
        os.mkdir(os.path.join(d, 'adir'))
        top = os.path.join(d, 'top.qcow2')
        chainlib.create(t.img, top, MiB, backing='adir', unsafe=True)
        want = ['adir'] if t.are_qemu else ["adir' is a directory"]
        all_openers(top, want, d, opens_backing_for_info=False)


def device_case():
    common.skip_if_qemu_tools('QEMU opens character devices as raw files')
    with chainlib.ShmDir() as d:
        t = common.tools()
        top = os.path.join(d, 'top.qcow2')
        for dev in ('/dev/null', '/dev/zero'):
            chainlib.create(t.img, top, MiB, backing=dev, backing_fmt='raw',
                            unsafe=True)
            all_openers(top, ["'%s' is not a regular file" % dev], d,
                        opens_backing_for_info=False)


def fifo_case():
    common.skip_if_qemu_tools('opening a FIFO may block QEMU')
    with chainlib.ShmDir() as d:
        t = common.tools()
        os.mkfifo(os.path.join(d, 'fifo'))
        top = os.path.join(d, 'top.qcow2')
        chainlib.create(t.img, top, MiB, backing='fifo', unsafe=True)
        all_openers(top, ["fifo' is not a regular file"], d,
                    opens_backing_for_info=False)


def loop_case():
    common.skip_if_qemu_tools('qemu-img 7.2 map hangs on a backing loop')
    with chainlib.ShmDir() as d:
        t = common.tools()
        a = os.path.join(d, 'a.qcow2')
        b = os.path.join(d, 'b.qcow2')
        chainlib.create(t.img, a, MiB, backing='b.qcow2', unsafe=True)
        chainlib.create(t.img, b, MiB, backing='a.qcow2', unsafe=True)
        want = ['backing chain loop']
        for top in (a, b):
            all_openers(top, want, d, opens_backing_for_info=False)
        expect_error([t.img, 'info', '--backing-chain', a],
                     ['infinite loop'], d)
        # an image that is its own backing file
        c = os.path.join(d, 'c.qcow2')
        chainlib.create(t.img, c, MiB, backing='c.qcow2', unsafe=True)
        all_openers(c, want, d, opens_backing_for_info=False)


def deep_case():
    common.skip_if_qemu_tools('QEMU has no chain depth limit')
    with chainlib.ShmDir() as d:
        t = common.tools()
        top = None
        for i in range(65):
            top = os.path.join(d, 'd%02d.qcow2' % i)
            # (made by qemu-img: faster than a sanitized build)
            chainlib.create(t.qemu_img, top, MiB,
                            backing='d%02d.qcow2' % (i - 1) if i else None,
                            unsafe=True)
        want = ['backing chain is deeper than 64 images']
        res = expect_error([t.io, '-c', 'read 0 512', top], want, d)
        common.check(res.err.count('Could not open backing file') == 1,
                     'the depth error should be reported once:\n' + res.err)
        expect_error([t.img, 'commit', top], want, d)
        # 64 images are fine
        common.run_io(t.io, os.path.join(d, 'd63.qcow2'), ['read -P 0 0 512'])


def create_case():
    """create -b with a bad backing file makes no file."""
    with chainlib.ShmDir() as d:
        t = common.tools()
        raw = os.path.join(d, 'base.raw')
        with open(raw, 'wb') as f:
            f.write(b'\0' * MiB)
        os.mkdir(os.path.join(d, 'adir'))
        ov = os.path.join(d, 'ov.qcow2')
        cases = [('nosuch.qcow2', 'qcow2', 'No such file or directory'),
                 ('base.raw', 'qcow2', 'Image is not in qcow2 format'),
                 ('adir', 'qcow2', 'adir')]
        if not t.are_qemu:
            cases.append(('/dev/null', 'raw', 'regular file'))
        for backing, fmt, want in cases:
            expect_error([t.img, 'create', '-f', 'qcow2', '-b', backing, '-F',
                          fmt, ov], [want], d)
            common.check(not os.path.exists(ov), 'create left %s' % ov)


def base_and_top(t, d):
    """base.qcow2 (0x22 in its first 128k) under top.qcow2."""
    base = os.path.join(d, 'base.qcow2')
    top = os.path.join(d, 'top.qcow2')
    chainlib.create(t.img, base, MiB)
    common.run_io(t.io, base, ['write -P 0x22 0 128k'])
    chainlib.create(t.img, top, MiB, backing='base.qcow2')
    return base, top


def rebase_case():
    with chainlib.ShmDir() as d:
        t = common.tools()
        base, top = base_and_top(t, d)
        raw = os.path.join(d, 'x.raw')
        with open(raw, 'wb') as f:
            f.write(b'\0' * MiB)
        expect_error([t.img, 'rebase', '-b', 'nosuch.qcow2', '-F', 'qcow2',
                      top], ['nosuch.qcow2', 'No such file or directory'], d)
        expect_error([t.img, 'rebase', '-b', 'x.raw', '-F', 'qcow2', top],
                     ['Image is not in qcow2 format'], d)
        expect_error([t.img, 'rebase', '-b', 'base.qcow2', top],
                     ['backing format must be specified'], d)
        expect_error([t.img, 'rebase', top], ['Must specify backing file'], d)
        # the safe mode reads through the new chain and meets the image
        # lock first, with qemu-img's message
        expect_error([t.img, 'rebase', '-b', 'top.qcow2', '-F', 'qcow2',
                      base], ['Failed to get shared "write" lock'], d)
        expect_error([t.img, 'rebase', '-b', 'top.qcow2', '-F', 'qcow2',
                      top], ['Failed to get shared "write" lock'], d)


def rebase_unsafe_loop_case():
    """rebase -u writes the name it is given, as qemu-img does, even one
    that closes a loop; every open then reports the loop, and a second
    rebase -u mends it without losing data."""
    with chainlib.ShmDir() as d:
        t = common.tools()
        base, top = base_and_top(t, d)
        common.run([t.img, 'rebase', '-u', '-b', 'top.qcow2', '-F', 'qcow2',
                    base])
        res = common.run([t.img, 'info', '--backing-chain', top], rc=None)
        common.check(res.rc == 1 and "Backing file '%s' creates an infinite "
                     "loop." % top in res.err, res.describe())
        if not t.are_qemu:
            # qemu-io's own open of a loop recurses until a lock trips
            all_openers(top, ['loop'], d, opens_backing_for_info=False)
        common.run([t.img, 'rebase', '-u', '-b', '', base])
        common.run_io(t.io, top, ['read -P 0x22 0 128k'])
        common.run([t.img, 'check', top])


def commit_args_case():
    with chainlib.ShmDir() as d:
        t = common.tools()
        base = os.path.join(d, 'base.qcow2')
        top = os.path.join(d, 'top.qcow2')
        chainlib.create(t.img, base, MiB)
        chainlib.create(t.img, top, MiB, backing='base.qcow2')
        expect_error([t.img, 'commit', base],
                     ['Image does not have a backing file'], d)
        expect_error([t.img, 'commit', '-b', 'nosuch.qcow2', top],
                     ["Did not find 'nosuch.qcow2' in the backing chain of"],
                     d)
        expect_error([t.img, 'commit', '-b', top, top],
                     ['in the backing chain of'], d)


runner.add('missing backing file', missing_case)
runner.add('wrong backing format given', wrong_format_case)
runner.add('backing file is a directory', directory_case)
runner.add('backing file is a device node', device_case)
runner.add('backing file is a FIFO', fifo_case)
runner.add('backing loop', loop_case)
runner.add('chain deeper than the limit', deep_case)
runner.add('create -b with a bad backing file', create_case)
runner.add('rebase with a bad new backing file', rebase_case)
runner.add('rebase -u closing a loop', rebase_unsafe_loop_case)
runner.add('commit arguments', commit_args_case)

if __name__ == '__main__':
    sys.exit(runner.main())
