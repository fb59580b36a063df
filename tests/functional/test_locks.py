#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Image locks shared with QEMU: who may open an image that someone holds.

A long-lived holder keeps an image open: qemu-io or strata-io reading
commands from a pipe (so the test decides when it quits), or
qemu-storage-daemon (stopped with SIGTERM).  Against it:

- the lock bytes in /proc/locks that strata-io holds for each kind of open
  (read-write and read-only qcow2 and raw, -U, a qcow2 or raw backing
  file) are exactly the ones qemu-io holds for the same open;
- a writer (strata-io, strata-img snapshot/check -r/create/convert -n/
  commit) on an image QEMU holds is refused with qemu-io's or qemu-img's
  exact message and exit status, and the image is unchanged; while QEMU
  writes, a reader without -U is refused too ("shared" variant); a -U
  reader works;
- QEMU's tools are refused the same way by an image strata-io holds, and
  a second strata process by the first;
- read-only opens coexist both ways; a reopen to read-write is refused
  while another process reads, as in qemu-io;
- file.locking=off takes no lock and checks none; a bad value is refused;
- -U on a writable open, and -U against force-share=off, are refused;
- `convert x x` (-O qcow2, -O raw, -n, a raw source) is refused with
  qemu-img's message and x stays byte-identical.

Cases that need qemu-storage-daemon are skipped (and counted) without it.
"""

import os
import re
import shutil
import signal
import subprocess
import sys
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402
from common import check  # noqa: E402

MiB = 1 << 20
runner = common.Runner()
HOLD_TIMEOUT = 60


def qsd_path():
    path = shutil.which(os.environ.get('QEMU_STORAGE_DAEMON',
                                       'qemu-storage-daemon'))
    if not path:
        raise common.Skip('qemu-storage-daemon not found')
    return path


def lock_bytes(path):
    """The bytes of path that some open file description holds a read lock
    on, from /proc/locks (every holder together)."""
    st = os.stat(path)
    out = set()
    with open('/proc/locks') as f:
        for line in f:
            parts = line.split()
            # "1: OFDLCK ADVISORY  READ -1 fe:00:10953384 100 101"
            if len(parts) < 8 or parts[1] not in ('OFDLCK', 'POSIX'):
                continue
            dev_ino = parts[5].split(':')
            if len(dev_ino) != 3 or int(dev_ino[2]) != st.st_ino:
                continue
            if int(dev_ino[0], 16) != os.major(st.st_dev) or \
                    int(dev_ino[1], 16) != os.minor(st.st_dev):
                continue
            check(parts[3] == 'READ', 'unexpected lock type: ' + line)
            end = parts[7]
            last = int(end) if end != 'EOF' else int(parts[6])
            out.update(range(int(parts[6]), last + 1))
    return sorted(out)


class IoHolder:
    """qemu-io or strata-io keeping `args` open, reading commands from a
    pipe; ready once it answered a read (so the open is done)."""

    def __init__(self, io, args):
        self.argv = [io] + list(args)
        self.p = None

    def __enter__(self):
        self.p = subprocess.Popen(self.argv, stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE,
                                  preexec_fn=common.limit_resources)
        self.p.stdin.write(b'read 0 512\n')
        self.p.stdin.flush()
        line = b''
        deadline = time.monotonic() + HOLD_TIMEOUT
        while b'read 512/512' not in line and time.monotonic() < deadline:
            line = self.p.stdout.readline()
            if not line:
                break
        if b'read 512/512' not in line:
            err = self.stop()
            common.fail('holder did not open the image: %s\n%s'
                        % (common.cmdline(self.argv), err))
        return self

    def stop(self):
        if self.p is None:
            return ''
        try:
            out, err = self.p.communicate(input=b'quit\n',
                                          timeout=HOLD_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.p.kill()
            out, err = self.p.communicate()
        res = common.Result(self.argv, self.p.returncode,
                            out.decode('utf-8', 'replace'),
                            err.decode('utf-8', 'replace'), 0)
        self.p = None
        common.assert_no_crash(res)
        return res.err

    def __exit__(self, *exc):
        self.stop()


class QsdHolder:
    """qemu-storage-daemon with a file node and a qcow2 node on path."""

    def __init__(self, path, read_only=False):
        ro = ',read-only=on' if read_only else ''
        self.path = path
        self.argv = [qsd_path(),
                     '--blockdev', 'driver=file,filename=%s,node-name=f%s'
                     % (path, ro),
                     '--blockdev', 'driver=qcow2,file=f,node-name=q%s' % ro]
        self.p = None

    def __enter__(self):
        self.p = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL,
                                  stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE)
        deadline = time.monotonic() + HOLD_TIMEOUT
        while not lock_bytes(self.path):
            if self.p.poll() is not None or time.monotonic() > deadline:
                out, err = self.p.communicate()
                common.fail('qemu-storage-daemon did not start: %s'
                            % err.decode('utf-8', 'replace'))
            time.sleep(0.05)
        return self

    def __exit__(self, *exc):
        self.p.send_signal(signal.SIGTERM)
        try:
            self.p.communicate(timeout=HOLD_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.communicate()


def make_image(d, name='img.qcow2', fmt='qcow2', size=4 * MiB, backing=None,
               backing_fmt=None, pattern=0x5a):
    t = common.tools()
    path = os.path.join(d, name)
    argv = [t.qemu_img, 'create', '-q', '-f', fmt]
    if backing:
        argv += ['-b', backing, '-F', backing_fmt]
    common.run(argv + [path, str(size)])
    if pattern is not None:
        common.run([t.qemu_io, '-f', fmt, '-c',
                    'write -P %d 0 64k' % pattern, path])
    return path


def same_failure(ours_argv, qemu_argv, ours_prog, qemu_prog, path=None):
    """Both commands fail with exit 1 and the same stderr (program names
    aside), and neither changes the file at path."""
    before = common.sha256(path) if path else None
    ours = common.run(ours_argv, rc=None)
    if path:
        check(common.sha256(path) == before,
              'a refused command changed %s\n%s' % (path, ours.describe()))
    theirs = common.run(qemu_argv, rc=None)
    if path:
        check(common.sha256(path) == before,
              'QEMU changed %s\n%s' % (path, theirs.describe()))
    check(theirs.rc == 1, 'QEMU did not fail as expected\n'
          + theirs.describe())
    check(ours.rc == theirs.rc, 'exit %s, QEMU exits %s\n%s'
          % (ours.rc, theirs.rc, ours.describe()))
    a = common.normalize_prog(ours.err, ours_prog)
    b = common.normalize_prog(theirs.err, qemu_prog)
    check(a == b, 'messages differ:\nours: %r\nQEMU: %r' % (a, b))
    return ours


def io_pair(cmds, path, extra=(), fmt='qcow2'):
    """(strata-io argv, qemu-io argv) for the same command line."""
    t = common.tools()
    tail = (['-f', fmt] if fmt else []) + list(extra) + \
        common.io_args(cmds) + [path]
    return [t.io] + tail, [t.qemu_io] + tail


def img_pair(args):
    t = common.tools()
    return [t.img] + list(args), [t.qemu_img] + list(args)


def same_io_failure(cmds, path, extra=(), fmt='qcow2', want=None):
    t = common.tools()
    ours, theirs = io_pair(cmds, path, extra, fmt)
    res = same_failure(ours, theirs, t.io_name, 'qemu-io', path)
    if want:
        check(want in res.err, 'error lacks %r\n%s' % (want, res.describe()))
    return res


def same_img_failure(args, path, want=None):
    t = common.tools()
    ours, theirs = img_pair(args)
    res = same_failure(ours, theirs, t.img_name, 'qemu-img', path)
    if want:
        check(want in res.err, 'error lacks %r\n%s' % (want, res.describe()))
    return res


def write_lock_msg(path):
    return ('Failed to get "write" lock\n'
            'Is another process using the image [%s]?\n' % path)


def shared_lock_msg(path):
    return ('Failed to get shared "write" lock\n'
            'Is another process using the image [%s]?\n' % path)


def reads_pattern(io, path, pattern, extra=('-r', '-U'), fmt='qcow2'):
    res = common.run_io(io, path, ['read -P %d 0 64k' % pattern], fmt=fmt,
                        extra=extra)
    return res


# ----------------------------------------------------------------------------
# Cases


@runner.case('strata-io holds the lock bytes qemu-io holds')
def case_same_bytes():
    t = common.tools()
    with common.TempDir() as d:
        q = make_image(d)
        r = make_image(d, 'img.raw', fmt='raw')
        base = make_image(d, 'base.qcow2')
        rbase = make_image(d, 'base.raw', fmt='raw')
        ov = make_image(d, 'ov.qcow2', backing='base.qcow2',
                        backing_fmt='qcow2', pattern=None)
        rov = make_image(d, 'rov.qcow2', backing='base.raw',
                         backing_fmt='raw', pattern=None)
        opens = [
            (q, ['-f', 'qcow2'], q, [100, 101, 103, 201, 203]),
            (q, ['-f', 'qcow2', '-r'], q, [100, 201, 203]),
            (q, ['-f', 'qcow2', '-r', '-U'], q, [100]),
            (r, ['-f', 'raw'], r, [100, 101]),
            (r, ['-f', 'raw', '-r'], r, [100]),
            (ov, ['-f', 'qcow2'], base, [100, 201, 203]),
            (ov, ['-f', 'qcow2', '-r', '-U'], base, [100]),
            (rov, ['-f', 'qcow2'], rbase, [100]),
        ]
        for img, args, watched, qemu_expect in opens:
            got = {}
            for io in (t.qemu_io, t.io):
                with IoHolder(io, args + [img]):
                    got[io] = lock_bytes(watched)
                check(lock_bytes(watched) == [],
                      '%s left locks on %s after quitting: %r'
                      % (io, watched, lock_bytes(watched)))
            check(got[t.qemu_io] == qemu_expect,
                  'qemu-io %s %s holds %r on %s (the test expects %r)'
                  % (' '.join(args), img, got[t.qemu_io], watched,
                     qemu_expect))
            check(got[t.io] == got[t.qemu_io],
                  '%s %s %s holds bytes %r of %s, qemu-io holds %r'
                  % (t.io_name, ' '.join(args), img, got[t.io], watched,
                     got[t.qemu_io]))


def refused_while_held(path, holder_writes):
    """Our tools against an image someone else holds (read-write if
    holder_writes, else read-only)."""
    t = common.tools()
    # writers: refused with "write" lock by any holder of a qcow2 image
    same_io_failure(['write -P 1 0 4k'], path, want=write_lock_msg(path))
    same_img_failure(['snapshot', '-c', 'snap', path], path,
                     want=write_lock_msg(path))
    same_img_failure(['check', '-r', 'all', path], path,
                     want=write_lock_msg(path))
    for fmt in ('qcow2', 'raw'):
        same_img_failure(['create', '-q', '-f', fmt, path, '8M'], path,
                         want=write_lock_msg(path))
    if holder_writes:
        # readers that do not share write: refused with the shared variant
        same_io_failure(['read 0 4k'], path, extra=['-r'],
                        want=shared_lock_msg(path))
        same_img_failure(['info', path], path, want=shared_lock_msg(path))
        same_img_failure(['map', path], path, want=shared_lock_msg(path))
    else:
        reads_pattern(t.io, path, 0x5a, extra=['-r'])
        common.run([t.img, 'info', path])
    # -U readers work alongside, and see the data
    reads_pattern(t.io, path, 0x5a)
    res = common.run([t.img, 'info', '-U', path])
    check('file format: qcow2' in res.out, res.describe())
    common.run([t.img, 'compare', '-U', path, path])


@runner.case('qemu-io writer: strata writers and readers refused, -U reads')
def case_qemu_io_writer():
    t = common.tools()
    with common.TempDir() as d:
        img = make_image(d)
        target = make_image(d, 'other.qcow2')
        with IoHolder(t.qemu_io, ['-f', 'qcow2', img]):
            refused_while_held(img, True)
            # convert -n into it, and commit into it from an overlay
            same_img_failure(['convert', '-n', '-O', 'qcow2', target, img],
                             img, want=write_lock_msg(img))
            common.run([t.qemu_img, 'create', '-q', '-f', 'qcow2', '-b',
                        img, '-F', 'qcow2', os.path.join(d, 'top.qcow2')])
            same_img_failure(['commit', os.path.join(d, 'top.qcow2')], img,
                             want=shared_lock_msg(img))


@runner.case('qemu-io reader: strata writers refused, readers coexist')
def case_qemu_io_reader():
    t = common.tools()
    with common.TempDir() as d:
        img = make_image(d)
        with IoHolder(t.qemu_io, ['-f', 'qcow2', '-r', img]):
            refused_while_held(img, False)
            # a read-only strata open turned read-write meets the reader
            cmds = ['reopen -w', 'write -P 2 0 512']
            same_io_failure(cmds, img, extra=['-r'],
                            want=write_lock_msg(img))
            # commit opens the base read-only, then wants to write it
            top = os.path.join(d, 'top.qcow2')
            common.run([t.qemu_img, 'create', '-q', '-f', 'qcow2', '-b',
                        img, '-F', 'qcow2', top])
            common.run_io(t.qemu_io, top, ['write -P 7 0 4k'])
            top_sum = common.sha256(top)
            same_img_failure(['commit', top], img, want=write_lock_msg(img))
            check(common.sha256(top) == top_sum, 'commit changed the top')


@runner.case('qemu-storage-daemon writer: strata refused, -U reads')
def case_qsd_writer():
    with common.TempDir() as d:
        img = make_image(d)
        with QsdHolder(img):
            refused_while_held(img, True)


@runner.case('qemu-storage-daemon reader: strata readers coexist')
def case_qsd_reader():
    with common.TempDir() as d:
        img = make_image(d)
        with QsdHolder(img, read_only=True):
            refused_while_held(img, False)


@runner.case('strata-io writer: QEMU and strata refused, -U reads')
def case_strata_writer():
    t = common.tools()
    with common.TempDir() as d:
        img = make_image(d)
        with IoHolder(t.io, ['-f', 'qcow2', img]):
            before = common.sha256(img)
            for io in (t.qemu_io, t.io):
                res = common.run([io, '-f', 'qcow2', '-c', 'write -P 1 0 4k',
                                  img], rc=1)
                check(res.err.endswith("can't open device %s: %s"
                                       % (img, write_lock_msg(img))),
                      res.describe())
                res = common.run([io, '-f', 'qcow2', '-r', '-c', 'read 0 4k',
                                  img], rc=1)
                check(shared_lock_msg(img) in res.err, res.describe())
                reads_pattern(io, img, 0x5a)
            for prog in (t.qemu_img, t.img):
                res = common.run([prog, 'info', img], rc=1)
                check(res.err.endswith("Could not open '%s': %s"
                                       % (img, shared_lock_msg(img))),
                      res.describe())
                res = common.run([prog, 'snapshot', '-c', 's', img], rc=1)
                check(write_lock_msg(img) in res.err, res.describe())
                common.run([prog, 'info', '-U', img])
            check(common.sha256(img) == before, 'the held image changed')


@runner.case('strata-io writer: qemu-storage-daemon refused')
def case_strata_writer_qsd():
    t = common.tools()
    qsd = qsd_path()
    with common.TempDir() as d:
        img = make_image(d)
        with IoHolder(t.io, ['-f', 'qcow2', img]):
            before = common.sha256(img)
            res = common.run([qsd, '--blockdev',
                              'driver=file,filename=%s,node-name=f' % img,
                              '--blockdev',
                              'driver=qcow2,file=f,node-name=q'], rc=1,
                             timeout=30)
            check(write_lock_msg(img) in res.err, res.describe())
            check(common.sha256(img) == before, 'the held image changed')


@runner.case('strata-io reader: readers coexist, writers refused')
def case_strata_reader():
    t = common.tools()
    with common.TempDir() as d:
        img = make_image(d)
        with IoHolder(t.io, ['-f', 'qcow2', '-r', img]):
            before = common.sha256(img)
            for io in (t.qemu_io, t.io):
                reads_pattern(io, img, 0x5a, extra=['-r'])
                res = common.run([io, '-f', 'qcow2', '-c', 'write -P 1 0 4k',
                                  img], rc=1)
                check(write_lock_msg(img) in res.err, res.describe())
            for prog in (t.qemu_img, t.img):
                common.run([prog, 'info', img])
                common.run([prog, 'check', img])
            check(common.sha256(img) == before, 'the held image changed')
        # once the holder quit, writers get in
        common.run_io(t.io, img, ['write -P 3 0 4k'])


@runner.case('file.locking=off takes and checks no lock')
def case_locking_off():
    t = common.tools()
    with common.TempDir() as d:
        img = make_image(d)
        opts = 'driver=qcow2,file.filename=%s,file.locking=off' % img
        with IoHolder(t.qemu_io, ['-f', 'qcow2', img]):
            # refused with locking, let in without
            common.run([t.io, '-r', '-c', 'read 0 4k', img], rc=1)
            res = common.run([t.io, '-r', '--image-opts', '-c',
                              'read -P 90 0 64k', opts])
            check('read 65536/65536' in res.out, res.describe())
            res = common.run([t.img, 'info', '--image-opts', opts])
            check('file format: qcow2' in res.out, res.describe())
        # a strata holder with locking=off holds no byte: QEMU writes
        with IoHolder(t.io, ['--image-opts', opts]):
            check(lock_bytes(img) == [], 'locking=off holds bytes %r'
                  % lock_bytes(img))
            common.run_io(t.qemu_io, img, ['read -P 90 0 64k'])
        # explicit on, and auto, hold them
        for mode in ('on', 'auto'):
            with IoHolder(t.io, ['--image-opts', opts[:-3] + mode]):
                check(lock_bytes(img) == [100, 101, 103, 201, 203],
                      'locking=%s holds %r' % (mode, lock_bytes(img)))
        # a bad value, as qemu-io words it
        bad = opts[:-3] + 'maybe'
        ours, theirs = [t.io, '--image-opts', '-c', 'quit', bad], \
            [t.qemu_io, '--image-opts', '-c', 'quit', bad]
        same_failure(ours, theirs, t.io_name, 'qemu-io', img)


@runner.case('-U on a writable open, and against force-share=off')
def case_force_share_misuse():
    t = common.tools()
    with common.TempDir() as d:
        img = make_image(d)
        same_io_failure(['read 0 512'], img, extra=['-U'],
                        want='force-share=on can only be used with '
                        'read-only images')
        same_img_failure(['snapshot', '-U', '-c', 's', img], img,
                         want='force-share=on can only be used with '
                         'read-only images')
        same_img_failure(['bench', '-U', '-w', '-c', '1', img], img)
        same_img_failure(['info', '-U', '--image-opts',
                          'driver=qcow2,file.filename=%s,force-share=off'
                          % img], img,
                         want='--force-share/-U conflicts with image options')


@runner.case('convert x x is refused and x is unchanged')
def case_convert_same():
    t = common.tools()
    with common.TempDir() as d:
        img = make_image(d, 'x.qcow2')
        raw = make_image(d, 'x.raw', fmt='raw')
        for args in (['-O', 'qcow2', img, img],
                     ['-O', 'raw', img, img],
                     ['-f', 'qcow2', '-O', 'qcow2', img, img],
                     ['-n', '-O', 'qcow2', img, img],
                     ['-f', 'raw', '-O', 'raw', raw, raw],
                     ['-f', 'raw', '-O', 'qcow2', raw, raw]):
            path = args[-1]
            res = same_img_failure(['convert'] + args, path,
                                   want=write_lock_msg(path))
            check(res.rc == 1, res.describe())
        common.run([t.qemu_img, 'check', img])
        common.run_io(t.qemu_io, img, ['read -P 90 0 64k'])


if __name__ == '__main__':
    sys.exit(runner.main())
