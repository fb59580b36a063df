# SPDX-License-Identifier: LGPL-2.1-or-later
"""Side-by-side benchmark of strata-img against QEMU's qemu-img.

`make bench` runs ``python3 tests/bench/run.py --build build``.  For every
benchmark case the same command line is given to our tool
(BUILD/tools/img/strata-img) and to QEMU's (qemu-img), on identical images
created by QEMU's qemu-img.  After one discarded warm-up run each, the two
tools take turns (ours/QEMU, then QEMU/ours, ...) for --rounds rounds and
each side's median is kept.  The result is a Markdown table on stdout, one
per benchmark family, whose "ratio" column is ours / QEMU for a
higher-is-better score (requests per second for I/O): 1.00 is parity,
higher is better for us.  Progress goes to stderr, so stdout can be pasted
into the README as is.

Peak memory of each run is taken from os.wait4() (ru_maxrss, KiB on Linux)
and the maximum over the runs of each side is reported; the tools are
started through a tiny /bin/sh so that the runner's own RSS does not leak
into theirs (see spawn()).  Images written by either tool are checked with
QEMU's `qemu-img check` after each write run (--no-verify skips it).

Noise: on small VMs the spread between identical runs is large, mostly from
thread migration between CPUs and from the virtual disk.  The runner and
both tools are therefore pinned to one CPU (--cpus), every case starts with
a warm-up, and os.sync() runs before every measured run.  Expect ratios of
0.9-1.1 from noise alone when both sides are the same binary.

Scratch images (about 2 GiB) go to a new directory under BUILD, else
/var/tmp, or under --scratch; it is removed at the end unless --keep.  If
that file system rejects O_DIRECT (tmpfs on older kernels), cache=none
cases are skipped and a note in the report says so.

Benchmark families live in FAMILIES: a family is one function, registered
with @family(name, title), that returns a list of Case objects.  A Case
knows how to prepare its images before each (untimed) run, which arguments
to pass to the tool, and how to turn the tool's output into a score; the
runner does the alternation, calibration, timing, memory accounting,
verification and reporting.  See the 'io' family for an example.

Run counts (-c) are calibrated per case with QEMU's tool so that one run
takes about --target-time seconds, unless --count forces one.

Usage examples:

    python3 tests/bench/run.py --build build
    python3 tests/bench/run.py --build build --quick
    python3 tests/bench/run.py --ours /usr/bin/qemu-img --only 'write/4k/d1/'
    python3 tests/bench/run.py --build build --json bench.json
    python3 tests/bench/run.py --list
    # cost of the qcow2 overlap check: ours (cached) against ours (none)
    python3 tests/bench/run.py --build build --only '^io/' \
        --versus build/tools/img/strata-img \
        --ours-opts overlap-check=cached --versus-opts overlap-check=none
"""

import argparse
import datetime
import json
import math
import mmap
import os
import platform
import random
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB

SIDES = ('ours', 'qemu')


def log(msg):
    """Progress and notes go to stderr; stdout carries only the report."""
    print(msg, file=sys.stderr, flush=True)


class BenchError(Exception):
    """A run failed in a way that makes its case unusable."""


# --------------------------------------------------------------------------
# Running one command and measuring it

class RunResult:
    """Outcome of one process: exit code, output, wall time, peak RSS."""

    def __init__(self, argv, rc, stdout, stderr, wall, maxrss_kib,
                 timed_out):
        self.argv = argv
        self.rc = rc
        self.stdout = stdout
        self.stderr = stderr
        self.wall = wall
        self.maxrss_kib = maxrss_kib
        self.timed_out = timed_out

    def describe_failure(self):
        what = 'timed out' if self.timed_out else 'exit code %d' % self.rc
        tail = (self.stderr.strip() or self.stdout.strip())[-400:]
        return '%s: %s%s' % (' '.join(self.argv), what,
                             ('\n    ' + tail.replace('\n', '\n    '))
                             if tail else '')


def become_subreaper():
    """prctl(PR_SET_CHILD_SUBREAPER): orphaned descendants become ours."""
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(36, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


SUBREAPER = False       # set by main(); see spawn()


def spawn(argv, out, err):
    """Start argv with stdout/stderr to the given files; return its pid.

    ru_maxrss survives execve(): a process forked from this runner and
    exec'ing the tool reports at least the runner's own peak RSS (~15 MiB of
    Python), which would hide the tools' real footprint.  So, when we are a
    subreaper, the tool is forked by a short-lived /bin/sh instead, whose
    RSS (~1 MiB) becomes the floor, and it is reparented to us when the
    shell exits.  The caller reaps it with os.wait4().
    """
    if not SUBREAPER:
        return os.posix_spawnp(argv[0], argv, os.environ, file_actions=[
            (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
            (os.POSIX_SPAWN_DUP2, out.fileno(), 1),
            (os.POSIX_SPAWN_DUP2, err.fileno(), 2)])
    r, w = os.pipe()
    try:
        script = '"$@" </dev/null %d>&- & echo $! >&%d' % (w, w)
        sh = subprocess.Popen(['/bin/sh', '-c', script, 'sh'] + argv,
                              stdin=subprocess.DEVNULL, stdout=out,
                              stderr=err, pass_fds=(w,))
        os.close(w)
        w = -1
        with os.fdopen(r) as f:
            r = -1
            line = f.readline()
        sh.wait()
    finally:
        for fd in (r, w):
            if fd >= 0:
                os.close(fd)
    if sh.returncode != 0 or not line.strip().isdigit():
        raise BenchError('cannot start %s via /bin/sh' % argv[0])
    return int(line)


def run_measured(argv, timeout):
    """Run argv to completion; return a RunResult with ru_maxrss.

    The tool is reaped with os.wait4() so that its own resource usage
    (not the sum over all our children) is returned.
    """
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.monotonic()
        try:
            pid = spawn(argv, out, err)
        except OSError as e:
            raise BenchError('cannot run %s: %s' % (argv[0], e)) from e
        timed_out = threading.Event()

        def kill():
            timed_out.set()
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass

        timer = threading.Timer(timeout, kill)
        timer.start()
        reaped = False
        try:
            _, status, rusage = os.wait4(pid, 0)
            reaped = True
        finally:
            timer.cancel()
            if not reaped:          # interrupted (e.g. ^C): do not leak it
                os.kill(pid, 9)
                os.waitpid(pid, 0)
        wall = time.monotonic() - start
        out.seek(0)
        err.seek(0)
        return RunResult(argv, os.waitstatus_to_exitcode(status),
                         out.read().decode(errors='replace'),
                         err.read().decode(errors='replace'),
                         wall, rusage.ru_maxrss, timed_out.is_set())


def run_checked(argv, timeout=600):
    """Run a helper command (image creation, check); raise on failure."""
    res = run_measured(argv, timeout)
    if res.rc != 0:
        raise BenchError(res.describe_failure())
    return res


# --------------------------------------------------------------------------
# Benchmark context: tools, scratch directory, shared images

class Context:
    """What every family needs: tool paths, scratch space, options."""

    def __init__(self, args, scratch, odirect):
        # the second side is QEMU's tool unless --versus names another one
        self.tools = {'ours': args.ours, 'qemu': args.versus or args.qemu}
        self.qemu = args.qemu           # reference tool, creates all images
        # extra qcow2 open options per side (--ours-opts, --versus-opts)
        self.side_opts = {'ours': args.ours_opts, 'qemu': args.versus_opts}
        self.scratch = scratch
        self.odirect = odirect
        self.quick = args.quick
        self.image_size = args.image_size
        self.timeout = args.timeout
        self.verify = not args.no_verify
        self._shared = {}

    def path(self, name):
        return os.path.join(self.scratch, name)

    def create_qcow2(self, path, size=None, opts=None):
        """Create a qcow2 image with QEMU's qemu-img (same for both sides)."""
        if os.path.exists(path):
            os.unlink(path)
        argv = [self.qemu, 'create', '-q', '-f', 'qcow2']
        if opts:
            argv += ['-o', opts]
        run_checked(argv + [path, str(size or self.image_size)])
        return path

    def shared_image(self, name, opts=None):
        """An image created once per invocation and reused by many cases."""
        if name not in self._shared:
            log('  creating shared image %s (%s)' % (name, opts or 'empty'))
            self._shared[name] = self.create_qcow2(self.path(name + '.qcow2'),
                                                   opts=opts)
        return self._shared[name]

    def check_image(self, path):
        """qemu-img check: detect corruption left behind by a run."""
        res = run_measured([self.qemu, 'check', '-q', '-f', 'qcow2', path],
                           self.timeout)
        if res.rc != 0:
            raise BenchError('image check failed after run: '
                             + res.describe_failure())


# --------------------------------------------------------------------------
# Cases and families

class Case:
    """One row of a result table.

    Subclasses (or families) provide:
      prepare(ctx)            -> state; untimed, called before every run
      args(ctx, state, count) -> argv after the tool path
      score(ctx, result, count) -> float, higher is better (unit: self.unit)
      cleanup(ctx, state)     -> untimed, after every run
    count is None when the case does not use one (calibrate = False).
    """

    unit = 'op/s'
    calibrate = False       # calibrate a repetition count with QEMU's tool
    probe_count = 1         # first calibration attempt
    min_count = 1
    max_count = None
    verify_after = False    # run `qemu-img check` after each run

    def __init__(self, family, cid, columns):
        self.family = family
        self.id = cid           # e.g. "io/read/4k/d1/none/prealloc"
        self.columns = columns  # ordered {header: value} for the table

    def prepare(self, ctx):
        return None

    def args(self, ctx, state, count):
        raise NotImplementedError

    def score(self, ctx, result, count):
        return 1.0 / max(result.wall, 1e-6)

    def cleanup(self, ctx, state):
        pass

    def image_of(self, state):
        """Path to verify after a run (when verify_after is set)."""
        return state


FAMILIES = {}


def family(name, title):
    """Register a benchmark family: fn(ctx) -> list of Case."""
    def register(fn):
        FAMILIES[name] = (title, fn)
        return fn
    return register


# ---- family 'io': qemu-img bench -----------------------------------------

BENCH_SENDING = re.compile(
    r'^Sending (\d+) (read|write) requests, (\d+) bytes each, '
    r'(\d+) in parallel.*$', re.M)
BENCH_DONE = re.compile(r'^Run completed in ([0-9.]+) seconds\.', re.M)


def fmt_size(n):
    if n % MiB == 0:
        return '%dM' % (n // MiB)
    if n % KiB == 0:
        return '%dk' % (n // KiB)
    return str(n)


class BenchCase(Case):
    """`bench -c COUNT -s SIZE -d DEPTH -t CACHE [-w] IMAGE`."""

    unit = 'req/s'
    calibrate = True

    def __init__(self, ctx, op, size, depth, cache, image):
        cid = 'io/%s/%s/d%d/%s/%s' % (op, fmt_size(size), depth, cache, image)
        super().__init__('io', cid, {
            'Op': op, 'Size': fmt_size(size).replace('k', ' KiB'),
            'Depth': str(depth), 'Cache': cache, 'Image': image})
        self.op, self.size, self.depth = op, size, depth
        self.cache, self.image = cache, image
        self.probe_count = max(16, ctx.image_size // size // 64)
        self.min_count = max(100, depth)
        # Writes to an empty image must all allocate: no wrap-around.
        self.max_count = (ctx.image_size // size
                          if (op, image) == ('write', 'empty') else None)
        self.verify_after = (op == 'write')

    def prepare(self, ctx):
        if self.image == 'prealloc':
            # Metadata and data preallocated with real (written) blocks, so
            # reads hit allocated clusters and rewrites do not allocate
            # anywhere, neither in qcow2 nor in the host file system.
            return ctx.shared_image('prealloc', 'preallocation=full')
        if self.op == 'read':
            return ctx.shared_image('empty')
        # allocating writes: a fresh empty image for every run
        return ctx.create_qcow2(ctx.path('fresh.qcow2'))

    def cleanup(self, ctx, state):
        if state == ctx.path('fresh.qcow2') and os.path.exists(state):
            os.unlink(state)

    def args(self, ctx, state, count):
        argv = ['bench', '-f', 'qcow2', '-c', str(count), '-s', str(self.size),
                '-d', str(self.depth), '-t', self.cache]
        if self.op == 'write':
            argv.append('-w')
        return argv + [state]

    def score(self, ctx, result, count):
        sending = BENCH_SENDING.search(result.stdout)
        done = BENCH_DONE.search(result.stdout)
        if not sending or not done:
            raise BenchError('unexpected output from %s:\n    %s' % (
                ' '.join(result.argv), result.stdout.strip()[-400:]))
        n, op, size, depth = sending.groups()
        if (int(n), op, int(size), int(depth)) != (count, self.op, self.size,
                                                   self.depth):
            raise BenchError('%s announced %r' % (result.argv[0],
                                                  sending.group(0)))
        seconds = max(float(done.group(1)), 0.0005)  # printed as %.3f
        return count / seconds


@family('io', 'Sequential I/O: `bench` (1 GiB qcow2, 64 KiB clusters)')
def io_family(ctx):
    """Every combination of op, image state, request size, depth, cache."""
    sizes = [4 * KiB] if ctx.quick else [4 * KiB, 64 * KiB]
    caches = ['none', 'writeback'] if ctx.odirect else ['writeback']
    cases = []
    for op in ('read', 'write'):
        for image in ('prealloc', 'empty'):
            for size in sizes:
                for depth in (1, 16):
                    for cache in caches:
                        cases.append(BenchCase(ctx, op, size, depth, cache,
                                               image))
    return cases


# Later families (snapshot, ...) go here: one @family function returning
# Case subclasses that prepare their images and score e.g. 1 / wall time.


# ---- family 'chain': commit, rebase, reads through a deep chain ----------

def chain_sizes(ctx):
    """(virtual size, data per image): 4 GiB holding 1 GiB, or a quarter
    of that with --quick."""
    return (1 * GiB, 256 * MiB) if ctx.quick else (4 * GiB, 1 * GiB)


def qemu_io_batch(ctx, path, cmds, batch=512):
    qemu_io = os.path.join(os.path.dirname(ctx.qemu), 'qemu-io')
    if not os.access(qemu_io, os.X_OK):
        qemu_io = shutil.which('qemu-io') or 'qemu-io'
    for i in range(0, len(cmds), batch):
        argv = [qemu_io, '-f', 'qcow2']
        for c in cmds[i:i + batch]:
            argv += ['-c', c]
        run_checked(argv + [path])


def chain_pristine(ctx):
    """base.qcow2 (`data` bytes at its start) and top.qcow2 over it (as
    much data in 1 MiB pieces, every other MiB over twice that range, so
    half of it covers the base's data), created once by QEMU; plus an
    empty new-base.qcow2 that rebase moves top onto."""
    if 'chain-pristine' in ctx._shared:
        return ctx._shared['chain-pristine']
    size, data = chain_sizes(ctx)
    d = ctx.path('chain-pristine')
    os.makedirs(d, exist_ok=True)
    base = os.path.join(d, 'base.qcow2')
    top = os.path.join(d, 'top.qcow2')
    new = os.path.join(d, 'new-base.qcow2')
    log('  creating the commit/rebase chain (%d MiB of data per image)'
        % (data // MiB))
    ctx.create_qcow2(base, size)
    qemu_io_batch(ctx, base, ['write -P 0x%02x %d %d' % (1 + i % 250, i * 64 * MiB,
                                                       64 * MiB)
                              for i in range(data // (64 * MiB))])
    run_checked([ctx.qemu, 'create', '-q', '-f', 'qcow2', '-b', 'base.qcow2',
                 '-F', 'qcow2', top, str(size)])
    qemu_io_batch(ctx, top, ['write -P 0x%02x %d %d' % (1 + i % 250, 2 * i * MiB,
                                                      MiB)
                             for i in range(data // MiB)])
    ctx.create_qcow2(new, size)
    ctx._shared['chain-pristine'] = (base, top, new)
    return ctx._shared['chain-pristine']


class ChainOpCase(Case):
    """`commit` or `rebase` of a fresh copy of the pristine chain; the
    score is the overlay's data in MiB per second of wall time."""

    unit = 'MiB/s'
    verify_after = True

    def __init__(self, ctx, op):
        size, data = chain_sizes(ctx)
        super().__init__('chain', 'chain/%s/%dG-over-%dG' % (
            op, size // GiB, size // GiB), {
                'Op': op, 'Image': '%d GiB overlay, %d MiB data, over %d GiB'
                % (size // GiB, data // MiB, size // GiB)})
        self.op = op
        self.data = data

    def prepare(self, ctx):
        base, top, new = chain_pristine(ctx)
        d = ctx.path('chain-work')
        shutil.rmtree(d, ignore_errors=True)
        os.makedirs(d)
        for src in (base, top, new):
            shutil.copyfile(src, os.path.join(d, os.path.basename(src)))
        return d

    def args(self, ctx, state, count):
        top = os.path.join(state, 'top.qcow2')
        if self.op == 'commit':
            return ['commit', '-q', '-f', 'qcow2', top]
        return ['rebase', '-q', '-f', 'qcow2', '-b', 'new-base.qcow2',
                '-F', 'qcow2', top]

    def image_of(self, state):
        return os.path.join(state, 'base.qcow2' if self.op == 'commit'
                            else 'top.qcow2')

    def score(self, ctx, result, count):
        return self.data / MiB / max(result.wall, 1e-6)

    def cleanup(self, ctx, state):
        shutil.rmtree(state, ignore_errors=True)


def chain_deep(ctx, depth=10):
    """A chain of `depth` images of image_size; layer i holds every
    depth-th MiB starting at i, so reads visit every depth."""
    key = 'chain-deep-%d' % depth
    if key in ctx._shared:
        return ctx._shared[key]
    d = ctx.path(key)
    os.makedirs(d, exist_ok=True)
    log('  creating a chain of depth %d' % depth)
    prev = None
    for i in range(depth):
        path = os.path.join(d, 'l%d.qcow2' % i)
        argv = [ctx.qemu, 'create', '-q', '-f', 'qcow2']
        if prev:
            argv += ['-b', os.path.basename(prev), '-F', 'qcow2']
        run_checked(argv + [path, str(ctx.image_size)])
        qemu_io_batch(ctx, path, ['write -P 0x%02x %d %d' % (1 + i, off, MiB)
                                  for off in range(i * MiB, ctx.image_size,
                                                   depth * MiB)])
        prev = path
    ctx._shared[key] = prev
    return prev


class ChainReadCase(BenchCase):
    """`bench` reads on the top of a chain of depth 10."""

    def __init__(self, ctx, size, depth):
        super().__init__(ctx, 'read', size, depth, 'writeback', 'chain10')
        self.family = 'chain-read'
        self.id = 'chain/read/%s/d%d/depth10' % (fmt_size(size), depth)
        self.columns = {'Op': 'read', 'Size':
                        fmt_size(size).replace('k', ' KiB'),
                        'Depth': str(depth), 'Image':
                        'top of 10 images of %d MiB' % (ctx.image_size // MiB)}

    def prepare(self, ctx):
        return chain_deep(ctx)


@family('chain', 'Backing chains: `commit` and `rebase` of a 4 GiB overlay '
        'holding 1 GiB of data over a 4 GiB base (rebase: onto an empty '
        'image)')
def chain_family(ctx):
    return [ChainOpCase(ctx, 'commit'), ChainOpCase(ctx, 'rebase')]


@family('chain-read', 'Backing chains: `bench` reads on the top of a chain '
        'of depth 10')
def chain_read_family(ctx):
    return [ChainReadCase(ctx, 4 * KiB, depth) for depth in (1, 16)]


# ---- family 'compress': convert -c ---------------------------------------

def compress_source(ctx):
    """A qcow2 image of image_size (created once, by QEMU): three quarters
    text-like data (words; deflate shrinks it to about a third), an eighth
    random data (does not shrink: written uncompressed), an eighth left
    unallocated."""
    if 'compress-src' in ctx._shared:
        return ctx._shared['compress-src']
    size = ctx.image_size
    raw = ctx.path('compress-src.raw')
    log('  creating the convert -c source (%d MiB)' % (size // MiB))
    rnd = random.Random(9)
    words = [bytes(rnd.choice(b'abcdefghijklmnopqrstuvwxyz')
                   for _ in range(rnd.randint(2, 10))) for _ in range(2000)]
    text = bytearray()
    while len(text) < 8 * MiB:
        text += b' '.join(rnd.choice(words) for _ in range(16)) + b'\n'
    text = bytes(text[:8 * MiB])
    with open(raw, 'wb') as f:
        for off in range(0, size * 3 // 4, len(text)):
            f.write(text[:min(len(text), size * 3 // 4 - off)])
        left = size // 8
        while left > 0:
            n = min(left, 8 * MiB)
            f.write(rnd.randbytes(n))
            left -= n
        f.truncate(size)
    path = ctx.path('compress-src.qcow2')
    run_checked([ctx.qemu, 'convert', '-q', '-f', 'raw', '-O', 'qcow2', raw,
                 path])
    os.unlink(raw)
    ctx._shared['compress-src'] = path
    return path


class CompressCase(Case):
    """`convert -c` of the source into a new qcow2 image (zlib or zstd);
    the score is source MiB per second of wall time."""

    unit = 'MiB/s'
    verify_after = True

    def __init__(self, ctx, ctype):
        super().__init__('compress', 'compress/convert-c/%s' % ctype, {
            'Op': 'convert -c', 'Compression': ctype,
            'Image': '%d MiB: 3/4 text, 1/8 random, 1/8 unallocated'
            % (ctx.image_size // MiB)})
        self.ctype = ctype

    def prepare(self, ctx):
        compress_source(ctx)
        out = ctx.path('compressed.qcow2')
        if os.path.exists(out):
            os.unlink(out)
        return out

    def args(self, ctx, state, count):
        return ['convert', '-c', '-f', 'qcow2', '-O', 'qcow2', '-o',
                'compression_type=' + self.ctype, compress_source(ctx),
                state]

    def score(self, ctx, result, count):
        return ctx.image_size / MiB / max(result.wall, 1e-6)

    def cleanup(self, ctx, state):
        if os.path.exists(state):
            os.unlink(state)


@family('compress', 'Compressed copy: `convert -c` of a 1 GiB qcow2 image '
        '(64 KiB clusters)')
def compress_family(ctx):
    return [CompressCase(ctx, 'zlib'), CompressCase(ctx, 'zstd')]


# ---- family 'snapshot': qcow2 internal snapshots -------------------------

def snap_qemu_io(ctx, path, cmds, batch=256):
    qemu_io = os.path.join(os.path.dirname(ctx.qemu), 'qemu-io')
    if not os.access(qemu_io, os.X_OK):
        qemu_io = shutil.which('qemu-io') or 'qemu-io'
    for i in range(0, len(cmds), batch):
        argv = [qemu_io, '-f', 'qcow2']
        for c in cmds[i:i + batch]:
            argv += ['-c', c]
        run_checked(argv + [path])


def sparse_copy(src, dst):
    """Copy only the data regions: a 64 GiB image with preallocated
    metadata holds about 10 MiB."""
    with open(src, 'rb') as fi, open(dst, 'wb') as fo:
        size = os.fstat(fi.fileno()).st_size
        fo.truncate(size)
        off = 0
        while off < size:
            try:
                data = os.lseek(fi.fileno(), off, os.SEEK_DATA)
            except OSError:
                break
            hole = os.lseek(fi.fileno(), data, os.SEEK_HOLE)
            fi.seek(data)
            fo.seek(data)
            left = hole - data
            while left:
                chunk = fi.read(min(left, 8 * MiB))
                fo.write(chunk)
                left -= len(chunk)
            off = hole


def snap_pristine(ctx, kind):
    """Images made once by QEMU's tools (the list image's table by the
    runner, see below):
      big    64 GiB, preallocation=metadata (every cluster allocated, a
             million of them), one snapshot 'bench'
      many   1 GiB holding 64 MiB, 500 snapshots 'snap-1'..'snap-500'
             (1 MiB rewritten between every 25), made by qemu-img
      list   1000 snapshots: a table of 1000 entries without L1 tables
             (as snapshots of an empty disk have), written by the runner:
             creating 1000 snapshots with qemu-img would take minutes, and
             listing reads only the table"""
    key = 'snap-' + kind
    if key in ctx._shared:
        return ctx._shared[key]
    path = ctx.path(key + '.qcow2')
    if kind == 'big':
        log('  creating a 64 GiB image with preallocated metadata')
        ctx.create_qcow2(path, 64 * GiB, 'preallocation=metadata')
        run_checked([ctx.qemu, 'snapshot', '-c', 'bench', path])
    elif kind == 'many':
        n = 100 if ctx.quick else 500
        log('  creating an image with %d snapshots (qemu-img, one by one)'
            % n)
        ctx.create_qcow2(path, 1 * GiB)
        snap_qemu_io(ctx, path, ['write -P 0x%02x %d 1M' % (1 + i, i * MiB)
                                 for i in range(64)])
        for i in range(1, n + 1):
            if i % 25 == 0:
                snap_qemu_io(ctx, path, ['write -P 0x%02x %d 1M'
                                         % (i % 250, (i // 25 % 64) * MiB)])
            run_checked([ctx.qemu, 'snapshot', '-c', 'snap-%d' % i, path])
    else:
        ctx.create_qcow2(path, 1 * GiB)
        snap_table_image(path, 1000)
    ctx._shared[key] = path
    return path


def snap_table_image(path, n):
    """Appends a table of n entries (no L1: l1_size 0) in new clusters,
    counts them in the first refcount block and points the header at it."""
    import struct
    with open(path, 'r+b') as f:
        hdr = f.read(72)
        cs = 1 << struct.unpack('>I', hdr[20:24])[0]
        reft = struct.unpack('>Q', hdr[48:56])[0]
        f.seek(reft)
        rb = struct.unpack('>Q', f.read(8))[0]
        blob = bytearray()
        for i in range(n):
            blob += b'\0' * (-len(blob) % 8)
            sid, name = str(i + 1).encode(), ('snap-%d' % (i + 1)).encode()
            blob += struct.pack('>QIHHIIQII', 0, 0, len(sid), len(name),
                                1700000000 + i, 0, 0, 0, 24)
            blob += struct.pack('>QQQ', 0, GiB, 0) + sid + name
        size = os.fstat(f.fileno()).st_size
        start = (size + cs - 1) // cs * cs
        f.seek(start)
        f.write(bytes(blob))
        for c in range(start // cs, start // cs + (len(blob) + cs - 1) // cs):
            f.seek(rb + 2 * c)          # 16-bit refcounts, block 0
            f.write(struct.pack('>H', 1))
        f.seek(60)
        f.write(struct.pack('>IQ', n, start))


class SnapshotCase(Case):
    """`snapshot -c|-d|-a NAME` on a fresh copy of a pristine image, or
    `snapshot -l` on the shared one; scored in operations per second of
    wall time (the whole process: open, operation, close)."""

    unit = 'op/s'

    LABELS = {'big': '64 GiB, metadata preallocated (1M clusters)',
              'many': '1 GiB, 64 MiB data, %d snapshots',
              'list': '1000 snapshots'}

    def __init__(self, ctx, op, kind):
        n = 100 if ctx.quick else 500
        super().__init__('snapshot', 'snapshot/%s/%s' % (op, kind), {
            'Op': op, 'Image': self.LABELS[kind].replace('%d', str(n))})
        self.op, self.kind, self.n = op, kind, n
        self.verify_after = op != 'list'

    def prepare(self, ctx):
        pristine = snap_pristine(ctx, self.kind)
        if self.op == 'list':
            return pristine
        work = ctx.path('snap-work.qcow2')
        sparse_copy(pristine, work)
        return work

    def args(self, ctx, state, count):
        if self.op == 'list':
            return ['snapshot', '-l', state]
        target = 'bench' if self.kind == 'big' else 'snap-%d' % (self.n // 2)
        flag = {'create': '-c', 'delete': '-d', 'apply': '-a'}[self.op]
        return ['snapshot', flag,
                'bench-new' if self.op == 'create' else target, state]

    def cleanup(self, ctx, state):
        if self.op != 'list' and os.path.exists(state):
            os.unlink(state)


@family('snapshot', 'Internal snapshots: `snapshot -c/-d/-a` on a 64 GiB '
        'image with every cluster allocated and on an image holding 500 '
        'snapshots; `snapshot -l` of 1000 snapshots')
def snapshot_family(ctx):
    cases = []
    for kind in ('big', 'many'):
        for op in ('create', 'delete', 'apply'):
            cases.append(SnapshotCase(ctx, op, kind))
    cases.append(SnapshotCase(ctx, 'list', 'list'))
    return cases


# --------------------------------------------------------------------------
# The runner

def nice_count(x):
    """Round to two significant digits."""
    if x <= 0:
        return 1
    digits = int(math.floor(math.log10(x))) - 1
    return int(round(x / 10 ** digits) * 10 ** digits) if digits > 0 \
        else int(round(x))


def with_open_opts(argv, state, opts):
    """`-f qcow2 ... IMAGE` -> `--image-opts ... driver=qcow2,file.filename=
    IMAGE,OPTS`, to bench one side with e.g. overlap-check=none."""
    if not opts:
        return argv
    if argv[-1] != state or '-f' not in argv:
        raise BenchError('open options need a case with -f FMT IMAGE: %s'
                         % ' '.join(argv))
    i = argv.index('-f')
    fmt = argv[i + 1]
    return (argv[:i] + ['--image-opts'] + argv[i + 2:-1] +
            ['driver=%s,file.filename=%s,%s' % (fmt, state, opts)])


def one_run(ctx, case, side, count):
    """Prepare, run one side once, verify, clean up; return (score, result)."""
    state = case.prepare(ctx)
    try:
        os.sync()           # do not let dirty pages of a previous run leak
        argv = [ctx.tools[side]] + with_open_opts(
            case.args(ctx, state, count), state, ctx.side_opts[side])
        res = run_measured(argv, ctx.timeout)
        if res.rc != 0 or res.timed_out:
            raise BenchError(res.describe_failure())
        score = case.score(ctx, res, count)
        if case.verify_after and ctx.verify:
            ctx.check_image(case.image_of(state))
        return score, res
    finally:
        case.cleanup(ctx, state)


def calibrate(ctx, case, target):
    """Pick a count so that QEMU's tool takes about `target` seconds."""
    count = case.probe_count
    if case.max_count:
        count = min(count, case.max_count)
    for _ in range(6):
        score, _res = one_run(ctx, case, 'qemu', count)
        seconds = count / score
        if seconds >= target / 10 or (case.max_count
                                      and count >= case.max_count):
            break
        count *= 8
        if case.max_count:
            count = min(count, case.max_count)
    count = nice_count(count * target / seconds)
    count = max(case.min_count, count)
    if case.max_count:
        count = min(count, case.max_count)
    return count


def run_case(ctx, case, rounds, target, fixed_count, warmup):
    """Alternate the two tools for `rounds` rounds; return a result dict.

    With `warmup`, each tool first does one discarded run: the first run
    after a change of workload is often an outlier, and it would otherwise
    always hit the same side.
    """
    rec = {'id': case.id, 'family': case.family, 'columns': case.columns,
           'unit': case.unit, 'count': None, 'runs': [], 'error': None,
           'median': {}, 'ratio': None, 'maxrss_kib': {}, 'sending': {}}
    try:
        count = None
        if case.calibrate:
            count = fixed_count or calibrate(ctx, case, target)
            if case.max_count:
                count = min(count, case.max_count)
        rec['count'] = count
        if warmup:
            for side in SIDES:
                one_run(ctx, case, side, count)
        for rnd in range(rounds):
            order = SIDES if rnd % 2 == 0 else SIDES[::-1]
            for side in order:
                score, res = one_run(ctx, case, side, count)
                rec['runs'].append({
                    'side': side, 'round': rnd, 'score': score,
                    'wall': round(res.wall, 4),
                    'maxrss_kib': res.maxrss_kib,
                    'stdout': res.stdout.strip()})
                first = res.stdout.strip().split('\n')[0]
                rec['sending'].setdefault(side, first)
    except BenchError as e:
        rec['error'] = str(e)
        return rec
    for side in SIDES:
        runs = [r for r in rec['runs'] if r['side'] == side]
        rec['median'][side] = statistics.median(r['score'] for r in runs)
        rec['maxrss_kib'][side] = max(r['maxrss_kib'] for r in runs)
        scores = [r['score'] for r in runs]
        rec.setdefault('spread', {})[side] = (
            (max(scores) - min(scores)) / rec['median'][side])
    rec['ratio'] = rec['median']['ours'] / rec['median']['qemu']
    if rec['sending'].get('ours') != rec['sending'].get('qemu'):
        rec['output_mismatch'] = True
    return rec


# --------------------------------------------------------------------------
# Reporting

def fmt_rate(x):
    if x >= 100:
        return '{:,.0f}'.format(x)
    return '{:.3g}'.format(x)


def fmt_mib(kib):
    return '%.1f' % (kib / 1024.0)


def markdown_table(headers, rows):
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
              for i, h in enumerate(headers)]
    numeric = [all(re.match(r'^[-0-9.,]+$|^ERR$|^-$', r[i]) for r in rows)
               and bool(rows) for i in range(len(headers))]

    def line(cells):
        return '| ' + ' | '.join(
            c.rjust(w) if num else c.ljust(w)
            for c, w, num in zip(cells, widths, numeric)) + ' |'
    sep = '|' + '|'.join(('-' * (w + 1) + ':') if num else ('-' * (w + 2))
                         for w, num in zip(widths, numeric)) + '|'
    return '\n'.join([line(headers), sep] + [line(r) for r in rows])


def report(results, meta, out):
    """Write the Markdown report; return the summary dict."""
    pinned = meta['pinned_cpus']
    print('Benchmark: %s vs %s, median of %d alternating run(s) per side, '
          '%s; ratio = ours ÷ QEMU (higher is better); RSS = peak RSS in MiB.'
          % (meta['ours_version'], meta['qemu_version'], meta['rounds'],
             'not pinned' if pinned == 'all' else
             'pinned to CPU ' + ','.join(map(str, pinned))),
          file=out)
    for note in meta['notes']:
        print('\nNote: ' + note, file=out)
    for fam, (title, _fn) in FAMILIES.items():
        recs = [r for r in results if r['family'] == fam]
        if not recs:
            continue
        unit = recs[0]['unit']
        colnames = list(recs[0]['columns'])
        headers = colnames + ['-c', 'QEMU ' + unit, 'ours ' + unit, 'ratio',
                              'RSS QEMU', 'RSS ours']
        rows = []
        for r in recs:
            cells = [r['columns'][c] for c in colnames]
            cells.append(str(r['count']) if r['count'] else '-')
            if r['error']:
                done = {side: [x for x in r['runs'] if x['side'] == side]
                        for side in SIDES}
                cells += [fmt_rate(statistics.median(
                    x['score'] for x in done['qemu'])) if done['qemu']
                          else '-', 'ERR', 'ERR']
                cells += [fmt_mib(max(x['maxrss_kib'] for x in done[side]))
                          if done[side] else '-' for side in SIDES[::-1]]
            else:
                cells += [fmt_rate(r['median']['qemu']),
                          fmt_rate(r['median']['ours']),
                          '%.2f' % r['ratio'],
                          fmt_mib(r['maxrss_kib']['qemu']),
                          fmt_mib(r['maxrss_kib']['ours'])]
            rows.append(cells)
        print('\n### ' + title + '\n', file=out)
        print(markdown_table(headers, rows), file=out)

    good = [r for r in results if not r['error']]
    failed = [r for r in results if r['error']]
    summary = {'cases': len(results), 'failed': len(failed)}
    if good:
        ratios = [r['ratio'] for r in good]
        worst = min(good, key=lambda r: r['ratio'])
        summary.update({
            'geomean_ratio': math.exp(sum(map(math.log, ratios))
                                      / len(ratios)),
            'min_ratio': worst['ratio'], 'min_case': worst['id'],
            'max_rss_kib': {s: max(r['maxrss_kib'][s] for r in good)
                            for s in SIDES}})
        print('\n**Summary:** %d case(s)%s, geometric mean ratio **%.2f**, '
              'minimum %.2f (%s); peak RSS QEMU %s MiB, ours %s MiB.' % (
                  len(good),
                  (', %d failed' % len(failed)) if failed else '',
                  summary['geomean_ratio'], worst['ratio'], worst['id'],
                  fmt_mib(summary['max_rss_kib']['qemu']),
                  fmt_mib(summary['max_rss_kib']['ours'])), file=out)
    else:
        print('\n**Summary:** no successful case (%d failed).'
              % len(failed), file=out)
    for r in failed:
        first = r['error'].strip().split('\n')
        print('\nError in %s: %s' % (r['id'], ' / '.join(
            x.strip() for x in first[:3])[:300]), file=out)
    mism = [r['id'] for r in good if r.get('output_mismatch')]
    if mism:
        print('\nWarning: first output line differs from QEMU in: '
              + ', '.join(mism), file=out)
    return summary


# --------------------------------------------------------------------------
# Setup helpers

def supports_odirect(directory):
    """True if files in `directory` can be opened and written with O_DIRECT."""
    flag = getattr(os, 'O_DIRECT', 0)
    if not flag:
        return False
    fd, path = tempfile.mkstemp(prefix='.odirect-', dir=directory)
    os.close(fd)
    buf = mmap.mmap(-1, 4096)           # page aligned
    try:
        fd = os.open(path, os.O_RDWR | flag)
        try:
            os.pwrite(fd, buf, 0)
            os.preadv(fd, [buf], 0)
        finally:
            os.close(fd)
        return True
    except OSError:
        return False
    finally:
        buf.close()
        os.unlink(path)


def tool_version(path):
    try:
        out = subprocess.run([path, '--version'], capture_output=True,
                             text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return os.path.basename(path)
    first = out.strip().split('\n')[0] if out.strip() else ''
    return first or os.path.basename(path)


def parse_cpus(spec):
    """Turn --cpus into a set of CPU numbers, or None for no pinning."""
    allowed = sorted(os.sched_getaffinity(0))
    if spec == 'all':
        return None
    if spec == 'first':
        return {allowed[0]}
    cpus = set()
    for part in spec.split(','):
        lo, _, hi = part.partition('-')
        cpus.update(range(int(lo), int(hi or lo) + 1))
    return cpus


def resolve_tool(path):
    if os.sep not in path:
        found = shutil.which(path)
        if found:
            return found
    return path


def collect_cases(ctx, only):
    cases = []
    for _name, (_title, fn) in FAMILIES.items():
        cases += fn(ctx)
    if only:
        pat = re.compile(only)
        cases = [c for c in cases if pat.search(c.id)]
    return cases


def parse_args(argv):
    p = argparse.ArgumentParser(
        description='Benchmark strata-img against qemu-img side by side.')
    p.add_argument('--build', default='build',
                   help='build directory (default: build)')
    p.add_argument('--ours', help='our tool (default: '
                   'BUILD/tools/img/strata-img)')
    p.add_argument('--qemu', default='qemu-img',
                   help="QEMU's tool, also used to create and check images "
                   '(default: qemu-img)')
    p.add_argument('--versus', metavar='TOOL',
                   help='run TOOL as the second side instead of --qemu '
                   '(which still creates and checks the images); e.g. '
                   'our own tool with other --versus-opts')
    p.add_argument('--ours-opts', metavar='OPTS',
                   help='extra qcow2 open options for our side, e.g. '
                   '"overlap-check=cached" (the image is then opened with '
                   '--image-opts)')
    p.add_argument('--versus-opts', metavar='OPTS',
                   help='the same for the second side, e.g. '
                   '"overlap-check=none": with --versus BUILD/tools/img/'
                   'strata-img the ratio is the cost of the overlap check')
    p.add_argument('--quick', action='store_true',
                   help='fewer cases (4 KiB only), 1 round, shorter runs')
    p.add_argument('--only', metavar='REGEX',
                   help='run cases whose id (see --list) matches this '
                   'regular expression, e.g. "write/4k" or "d1/none" (note '
                   'that "d1" alone also matches "d16")')
    p.add_argument('--list', action='store_true',
                   help='list case ids and exit')
    p.add_argument('--json', metavar='FILE', help='dump all results to FILE')
    p.add_argument('--rounds', type=int,
                   help='measured runs per side per case (default 5, 1 with '
                   '--quick)')
    p.add_argument('--target-time', type=float,
                   help='seconds per QEMU run when calibrating -c '
                   '(default 0.4, 0.25 with --quick)')
    p.add_argument('--count', type=int,
                   help='use this -c for every case instead of calibrating')
    p.add_argument('--scratch', metavar='DIR',
                   help='directory for images (default: a new directory '
                   'under BUILD, else /var/tmp; not tmpfs)')
    p.add_argument('--keep', action='store_true',
                   help='keep the scratch directory')
    p.add_argument('--no-warmup', action='store_true',
                   help='skip the discarded first run of each tool per case')
    p.add_argument('--no-verify', action='store_true',
                   help='skip `qemu-img check` after write runs')
    p.add_argument('--timeout', type=float, default=300,
                   help='seconds before one run is killed (default 300)')
    p.add_argument('--cpus', default='first',
                   help='CPUs to pin the runner and both tools to: "first" '
                   '(default: the first allowed CPU, which avoids the large '
                   'run-to-run noise of thread migration), a list like "0" '
                   'or "0-1,3", or "all" for no pinning')
    p.add_argument('--image-size', type=int, default=1 * GiB,
                   help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.rounds is None:
        args.rounds = 1 if args.quick else 5
    if args.target_time is None:
        args.target_time = 0.25 if args.quick else 0.4
    if args.rounds < 1:
        p.error('--rounds must be at least 1')
    return args


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    args.ours = resolve_tool(args.ours or os.path.join(
        args.build, 'tools', 'img', 'strata-img'))
    args.qemu = resolve_tool(args.qemu)
    if args.versus:
        args.versus = resolve_tool(args.versus)

    if args.list:
        ctx = Context(args, scratch='/nonexistent', odirect=True)
        for c in collect_cases(ctx, args.only):
            print(c.id)
        return 0

    for side, path in (('ours', args.ours), ('qemu', args.qemu)):
        if not (os.path.isfile(path) and os.access(path, os.X_OK)):
            log('error: %s tool not found or not executable: %s%s' % (
                side, path, ' (build it, or pass --ours PATH)'
                if side == 'ours' else ' (pass --qemu PATH)'))
            return 2

    notes = []
    global SUBREAPER
    SUBREAPER = become_subreaper()
    if not SUBREAPER:
        notes.append('cannot become a subreaper: peak RSS values include '
                     "the runner's own (about %d MiB)."
                     % (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                        // 1024))
        log('note: ' + notes[-1])
    try:
        cpus = parse_cpus(args.cpus)
        if cpus is not None:
            os.sched_setaffinity(0, cpus)   # inherited by every child
    except (ValueError, OSError) as e:
        log('error: bad --cpus %r: %s' % (args.cpus, e))
        return 2
    if args.scratch:
        os.makedirs(args.scratch, exist_ok=True)
        scratch = tempfile.mkdtemp(prefix='bench-', dir=args.scratch)
    else:
        base = args.build if os.path.isdir(args.build) else '/var/tmp'
        scratch = tempfile.mkdtemp(prefix='bench-scratch-', dir=base)
    scratch = os.path.abspath(scratch)
    try:
        odirect = supports_odirect(scratch)
        if not odirect:
            notes.append('%s does not support O_DIRECT (tmpfs?): cache=none '
                         'cases skipped, writeback only.' % scratch)
            log('note: ' + notes[-1])
        free = shutil.disk_usage(scratch).free
        if free < 3 * args.image_size:
            log('warning: only %.1f GiB free in %s' % (free / GiB, scratch))

        ctx = Context(args, scratch, odirect)
        cases = collect_cases(ctx, args.only)
        if not cases:
            log('error: no case matches --only %r (see --list)' % args.only)
            return 2
        meta = {
            'date': datetime.datetime.now().astimezone().isoformat(
                timespec='seconds'),
            'host': platform.node(), 'kernel': platform.release(),
            'ncpus': os.cpu_count(),
            'ours': args.ours, 'qemu': args.qemu,
            'ours_version': tool_version(args.ours),
            'qemu_version': tool_version(args.versus or args.qemu) + (
                ' [%s]' % args.versus_opts if args.versus_opts else ''),
            'rounds': args.rounds, 'warmup': not args.no_warmup,
            'target_time': args.target_time,
            'fixed_count': args.count, 'scratch': scratch,
            'odirect': odirect, 'image_size': args.image_size,
            'verify': not args.no_verify, 'notes': notes,
            'pinned_cpus': sorted(cpus) if cpus is not None else 'all',
        }
        log('bench: %d case(s), %d round(s), ours=%s, qemu=%s, scratch=%s' % (
            len(cases), args.rounds, args.ours, args.qemu, scratch))

        results = []
        interrupted = False
        start = time.monotonic()
        for i, case in enumerate(cases, 1):
            case_start = time.monotonic()
            try:
                rec = run_case(ctx, case, args.rounds, args.target_time,
                               args.count, not args.no_warmup)
            except KeyboardInterrupt:
                log('interrupted: reporting the %d finished case(s)'
                    % len(results))
                interrupted = True
                break
            rec['elapsed'] = round(time.monotonic() - case_start, 1)
            results.append(rec)
            if rec['error']:
                log('[%d/%d] %s: ERROR %s' % (i, len(cases), case.id,
                                              rec['error']))
            else:
                log('[%d/%d] %s -c %s: qemu %s, ours %s %s, ratio %.2f '
                    '(spread qemu %.0f%%, ours %.0f%%; %.0f s)' % (
                        i, len(cases), case.id, rec['count'],
                        fmt_rate(rec['median']['qemu']),
                        fmt_rate(rec['median']['ours']), case.unit,
                        rec['ratio'], 100 * rec['spread']['qemu'],
                        100 * rec['spread']['ours'], rec['elapsed']))
        meta['elapsed'] = round(time.monotonic() - start, 1)
        log('bench: done in %.0f s' % meta['elapsed'])

        summary = report(results, meta, sys.stdout)
        if args.json:
            with open(args.json, 'w') as f:
                json.dump({'meta': meta, 'summary': summary,
                           'cases': results}, f, indent=1)
                f.write('\n')
        if interrupted:
            return 130
        return 1 if summary['failed'] else 0
    finally:
        if args.keep:
            log('scratch kept in %s' % scratch)
        else:
            shutil.rmtree(scratch, ignore_errors=True)


if __name__ == '__main__':
    sys.exit(main())
