#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Merging layers of a chain: `commit` (into the backing file, or with -b
further down) and `rebase` (safe: the image reads the same; -b '' streams
the whole chain into it; -u: header only).

For chains of depth 2, 3 and 5 with overlays larger and smaller than their
backing file: the result reads exactly what the chain read before (the
base after a commit, up to the committed image's size; the rebased
image), `qemu-img check` is clean on every image, the committed image is
emptied (unless -d / -b), and the names recorded in headers are the ones
qemu-img records.  A commit or rebase killed with SIGKILL in the middle
leaves a chain that still reads the same and has no corruption; running
the command again finishes the job.  commit -b finds a layer by a name
relative to each overlay (not to the working directory), and a failed
commit job is reported in qemu-img's words.

The stream *job* (copy-up with the device in use) is tested by the unit
test test-chain; offline, `rebase` is its equivalent.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import chainlib  # noqa: E402
import common  # noqa: E402

MiB = 1 << 20
runner = common.Runner()

# depth -> layer sizes, bottom first
SHAPES = {
    '2-same': [8 * MiB, 8 * MiB],
    '2-bigger-top': [6 * MiB, 10 * MiB],
    '2-smaller-top': [10 * MiB, 5 * MiB],
    '3': [8 * MiB, 6 * MiB, 9 * MiB],
    '5': [4 * MiB, 8 * MiB, 5 * MiB, 7 * MiB, 6 * MiB],
    '5-shrinking': [9 * MiB, 8 * MiB, 6 * MiB, 5 * MiB, 3 * MiB],
}


def build(d, shape, seed, by_qemu=True):
    sizes = SHAPES[shape]
    return chainlib.build_chain(d, len(sizes), sizes, seed, by_qemu=by_qemu,
                                nops=20)


def assert_reads(tool, img, shadow_path, length=None):
    """img (with its chain) reads like the first `length` bytes of the
    shadow (all of it by default)."""
    out = chainlib.read_raw(tool, img, img + '.check.raw')
    size = os.path.getsize(out)
    length = size if length is None else length
    common.check(size >= length, '%s is only %d bytes' % (img, size))
    common.check(chainlib.prefix_equal(out, shadow_path, length),
                 '%s does not read what the chain read before' % img)
    os.unlink(out)


def depth0_data(tool, img):
    """Ranges the image itself holds (map entries at depth 0, present)."""
    entries = json.loads(chainlib.map_json(tool, img))
    return [(e['start'], e['length']) for e in entries
            if e['depth'] == 0 and e['present']]


def check_all(paths):
    for p in paths:
        common.qemu_check_clean(p)


def commit_case(shape, by_qemu):
    t = common.tools()
    with chainlib.ShmDir() as d:
        paths, shadows = build(d, shape, 31 + len(shape), by_qemu)
        top, backing = paths[-1], paths[-2]
        top_size = SHAPES[shape][-1]
        old_backing = shadows[-2].path
        res = common.run([t.img, 'commit', top])
        common.check('Image committed.' in res.out, res.describe())
        check_all(paths)
        # the backing file has the chain's content (up to top's size) and
        # its own beyond that
        assert_reads(t.qemu_img, backing, shadows[-1].path, top_size)
        bsize = SHAPES[shape][-2]
        if bsize > top_size:
            out = chainlib.read_raw(t.qemu_img, backing, backing + '.raw2')
            with open(out, 'rb') as a, open(old_backing, 'rb') as b:
                a.seek(top_size)
                b.seek(top_size)
                common.check(a.read() == b.read(), 'commit changed the backing '
                             'file past the top image\'s end')
        # the committed image is empty and reads the same through its chain
        common.check(depth0_data(t.qemu_img, top) == [],
                     'committed image not emptied')
        assert_reads(t.qemu_img, top, shadows[-1].path)
        # and the chain below is untouched
        for p, s in zip(paths[:-2], shadows[:-2]):
            assert_reads(t.qemu_img, p, s.path)


for _shape in SHAPES:
    runner.add('commit %s' % _shape, commit_case, _shape, True)
runner.add('commit 3, chain by us', commit_case, '3', False)


def commit_base_case(shape, base_index, drop):
    """commit -b BASE (implies -d), or -d: nothing emptied."""
    t = common.tools()
    with chainlib.ShmDir() as d:
        paths, shadows = build(d, shape, 57 + (base_index or 0), True)
        top = paths[-1]
        before = depth0_data(t.qemu_img, top)
        argv = [t.img, 'commit', '-q']
        if base_index is not None:
            argv += ['-b', os.path.basename(paths[base_index])]
        if drop:
            argv.append('-d')
        res = common.run(argv + [top])
        common.check(res.out == '', '-q printed:\n' + res.out)
        check_all(paths)
        base = paths[base_index if base_index is not None else -2]
        assert_reads(t.qemu_img, base, shadows[-1].path, SHAPES[shape][-1])
        common.check(depth0_data(t.qemu_img, top) == before,
                     'commit -b/-d emptied the image')
        assert_reads(t.qemu_img, top, shadows[-1].path)


runner.add('commit -b bottom of 3', commit_base_case, '3', 0, False)
runner.add('commit -b middle of 5', commit_base_case, '5', 1, False)
runner.add('commit -b bottom of 5 (shrinking)', commit_base_case,
           '5-shrinking', 0, False)
runner.add('commit -d', commit_base_case, '2-bigger-top', None, True)


def rebase_case(shape, new_index, unrelated=False):
    """Safe rebase onto a lower image, onto nothing (stream everything),
    or onto an unrelated image: the image reads the same."""
    t = common.tools()
    with chainlib.ShmDir() as d:
        paths, shadows = build(d, shape, 71 + len(shape), True)
        top = paths[-1]
        if unrelated:
            other = os.path.join(d, 'other.qcow2')
            chainlib.create(t.qemu_img, other, 7 * MiB)
            common.run_io(t.qemu_io, other, ['write -P 0x3c 0 3M',
                                            'write -P 0x4d 5M 1M'])
            new, new_name = other, 'other.qcow2'
        elif new_index is None:
            new, new_name = None, ''
        else:
            new = paths[new_index]
            new_name = os.path.basename(new)
        argv = [t.img, 'rebase', '-b', new_name]
        if new:
            argv += ['-F', 'qcow2']
        common.run(argv + [top])
        check_all([top])
        info = json.loads(common.run([t.qemu_img, 'info', '--output=json',
                                      top]).out)
        common.check(info.get('backing-filename') == (new_name or None),
                     'recorded backing file: %r' % info.get('backing-filename'))
        assert_reads(t.qemu_img, top, shadows[-1].path)
        # images below are untouched
        for p, s in zip(paths[:-1], shadows[:-1]):
            assert_reads(t.qemu_img, p, s.path)


runner.add('rebase 3 onto the bottom', rebase_case, '3', 0)
runner.add('rebase 5 onto the middle', rebase_case, '5', 1)
runner.add('rebase 5-shrinking onto the bottom', rebase_case, '5-shrinking', 0)
runner.add('rebase 2 -b "" (stream all)', rebase_case, '2-smaller-top', None)
runner.add('rebase 5 -b "" (stream all)', rebase_case, '5', None)
runner.add('rebase 3 onto an unrelated image', rebase_case, '3', None, True)


def rebase_unsafe_case():
    t = common.tools()
    with chainlib.ShmDir() as d:
        paths, shadows = build(d, '3', 91, True)
        top = paths[-1]
        before = depth0_data(t.qemu_img, top)
        common.run([t.img, 'rebase', '-u', '-b', os.path.basename(paths[0]),
                    '-F', 'qcow2', top])
        info = json.loads(common.run([t.qemu_img, 'info', '--output=json',
                                      top]).out)
        common.check(info['backing-filename'] == os.path.basename(paths[0])
                     and info['backing-filename-format'] == 'qcow2',
                     'header not changed: %r' % info)
        common.check(depth0_data(t.qemu_img, top) == before,
                     'rebase -u changed the data')
        check_all([top])
        # -u without -b: no backing file
        common.run([t.img, 'rebase', '-u', top])
        info = json.loads(common.run([t.qemu_img, 'info', '--output=json',
                                      top]).out)
        common.check('backing-filename' not in info, repr(info))


runner.add('rebase -u', rebase_unsafe_case)


def big_chain(d, size):
    """A 2-level chain by qemu with data spread over the whole disk."""
    t = common.tools()
    base = os.path.join(d, 'base.qcow2')
    top = os.path.join(d, 'top.qcow2')
    chainlib.create(t.qemu_img, base, size)
    chainlib.create(t.qemu_img, top, size, backing='base.qcow2')
    cmds_b = ['write -P 0x%02x %d 1M' % (1 + i % 200, i * 2 * MiB)
              for i in range(size // (2 * MiB))]
    cmds_t = ['write -P 0x%02x %d 512k' % (2 + i % 200, i * 2 * MiB + MiB)
              for i in range(size // (2 * MiB))]
    common.run_io(t.qemu_io, base, cmds_b)
    common.run_io(t.qemu_io, top, cmds_t)
    want = os.path.join(d, 'want.raw')
    chainlib.read_raw(t.qemu_img, top, want)
    return base, top, want


def kill_after(argv, seconds):
    p = subprocess.Popen(argv, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE)
    time.sleep(seconds)
    finished = p.poll() is not None
    if not finished:
        p.send_signal(signal.SIGKILL)
    p.wait()
    return finished


def killed_case(what):
    common.skip_if_qemu_tools('measures strata-img under SIGKILL')
    t = common.tools()
    with chainlib.ShmDir() as d:
        size = 64 * MiB
        base, top, want = big_chain(d, size)
        if what == 'commit':
            argv = [t.img, 'commit', '-r', '8M', top]
        else:
            other = os.path.join(d, 'other.qcow2')
            chainlib.create(t.qemu_img, other, size)
            argv = [t.img, 'rebase', '-b', 'other.qcow2', '-F', 'qcow2', top]
        finished = kill_after(argv, 1.5 if what == 'commit' else 0.4)
        if what == 'commit':
            common.check(not finished, 'commit with -r 8M finished in 1.5 s')
        # a chain that reads the same, no corruption (leaks allowed)
        for p in (base, top):
            common.qemu_check_clean(p, allow_leaks=True)
        assert_reads(t.qemu_img, top, want)
        # running it again completes the work
        common.run([a for a in argv if a not in ('-r', '8M')])
        for p in (base, top):
            common.qemu_check_clean(p, allow_leaks=True)
        assert_reads(t.qemu_img, top, want)
        if what == 'commit':
            assert_reads(t.qemu_img, base, want)


runner.add('commit killed', killed_case, 'commit')
runner.add('rebase killed', killed_case, 'rebase')


def same_as_qemu_case():
    """Our commit and QEMU's leave backing files that read the same, and
    our rebase records the same header as QEMU's."""
    t = common.tools()
    with chainlib.ShmDir() as d:
        paths, shadows = build(d, '3', 5, True)
        copy = os.path.join(d, 'copy')
        shutil.copytree(d, copy)
        cp = [os.path.join(copy, os.path.basename(p)) for p in paths]
        common.run([t.img, 'commit', '-q', paths[-1]])
        common.run([t.qemu_img, 'commit', '-q', cp[-1]])
        a = chainlib.read_raw(t.qemu_img, paths[-2], os.path.join(d, 'a.raw'))
        b = chainlib.read_raw(t.qemu_img, cp[-2], os.path.join(d, 'b.raw'))
        common.check(chainlib.sha256(a) == chainlib.sha256(b),
                     'commit results differ from qemu-img commit')
        common.run([t.img, 'rebase', '-b', 'L0.qcow2', '-F', 'qcow2',
                    paths[-1]])
        common.run([t.qemu_img, 'rebase', '-b', 'L0.qcow2', '-F', 'qcow2',
                    cp[-1]])
        qa = common.run([t.qemu_img, 'info', paths[-1]]).out
        qb = common.run([t.qemu_img, 'info', cp[-1]]).out
        def backing_lines(text):
            return [x.split(' (actual path')[0] for x in text.splitlines()
                    if x.startswith('backing')]
        common.check(backing_lines(qa) == backing_lines(qb),
                     'headers differ after rebase:\n%s\n%s' % (qa, qb))


runner.add('same results as qemu-img', same_as_qemu_case)


def commit_base_names_case():
    """commit -b takes a relative name relative to each overlay's
    directory, never the working directory (test 020): run from the
    parent of subdir/, 'L1.qcow2' and an absolute name find the middle
    layer, 'subdir/L1.qcow2' does not; a failing write of the commit job
    is reported as qemu-img reports it.  Output and exit code as
    qemu-img's."""
    t = common.tools()
    with common.TempDir() as d:
        sub = os.path.join(d, 'subdir')
        os.mkdir(sub)
        results = {}
        for tool in (t.qemu_img, t.img):
            outs = []
            for name in ('L1.qcow2', 'subdir/L1.qcow2',
                         os.path.join(sub, 'L1.qcow2')):
                common.run([t.qemu_img, 'create', '-q', '-f', 'qcow2',
                            'subdir/L0.qcow2', '1M'], cwd=d)
                for lower, upper in (('L0', 'L1'), ('L1', 'L2')):
                    common.run([t.qemu_img, 'create', '-q', '-f', 'qcow2',
                                '-b', lower + '.qcow2', '-F', 'qcow2',
                                'subdir/%s.qcow2' % upper], cwd=d)
                res = common.run([tool, 'commit', '-b', name,
                                  'subdir/L2.qcow2'], rc=None, cwd=d)
                outs.append((res.rc, common.normalize_prog(
                    res.out + res.err, os.path.basename(tool))))
            base = os.path.join(d, 'base.qcow2')
            common.run([t.qemu_img, 'create', '-q', '-f', 'qcow2', base,
                        '1M'])
            top = os.path.join(d, 'top.qcow2')
            common.run([t.qemu_img, 'create', '-q', '-f', 'qcow2', '-b',
                        "json:{'driver': 'qcow2', 'file': {'driver': "
                        "'blkdebug', 'inject-error': [{'event': 'write_aio', "
                        "'errno': 28, 'once': true}], 'image': {'driver': "
                        "'file', 'filename': '%s'}}}" % base, '-F', 'qcow2',
                        top])
            common.run([t.qemu_io, '-c', 'write 0 64k', top])
            res = common.run([tool, 'commit', top], rc=None)
            outs.append((res.rc, common.normalize_prog(
                res.err, os.path.basename(tool))))
            results[tool] = outs
        common.check(results[t.qemu_img] == results[t.img],
                     'qemu-img:\n%r\nours:\n%r'
                     % (results[t.qemu_img], results[t.img]))
        common.check(results[t.img][1][0] == 1 and
                     results[t.img][0][0] == 0, results[t.img])


runner.add('commit -b names, job failure text', commit_base_names_case)

if __name__ == '__main__':
    sys.exit(runner.main())
