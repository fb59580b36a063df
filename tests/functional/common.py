# SPDX-License-Identifier: LGPL-2.1-or-later
"""Shared helpers for the functional tests.

What lives here: locating the tools under test ($STRATA_IMG, $STRATA_IO)
and the QEMU oracles (qemu-img, qemu-io), running them with crash and
sanitizer detection, temporary directories, a raw "shadow" file that
mirrors every guest write, an interval model of image contents, and a tiny
case runner with meson's exit-code conventions (0 pass, 1 fail, 77 skip).

Every test also passes with STRATA_IMG=qemu-img STRATA_IO=qemu-io, which is
how the tests themselves are validated; cases about behaviour where strata
is deliberately stricter than QEMU call skip_if_qemu_tools().
"""

import bisect
import hashlib
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
import traceback

SKIP = 77

# Markers of a sanitizer report in a tool's stderr.
SANITIZER_MARKERS = ('AddressSanitizer', 'LeakSanitizer',
                     'UndefinedBehaviorSanitizer', 'ThreadSanitizer',
                     'MemorySanitizer', 'runtime error:')

DEFAULT_TIMEOUT = float(os.environ.get('STRATA_TEST_CMD_TIMEOUT', '120'))

# No file written by a tool may grow past this: a runaway allocation loop
# then dies with SIGXFSZ (reported as a crash) instead of filling the disk.
FSIZE_LIMIT = int(os.environ.get('STRATA_TEST_FSIZE_LIMIT', str(1 << 30)))


def limit_resources():
    """preexec_fn for every tool we start."""
    import resource
    resource.setrlimit(resource.RLIMIT_FSIZE, (FSIZE_LIMIT, FSIZE_LIMIT))


class Skip(Exception):
    """Raised to skip the current case (or the whole script)."""


class TestFailure(AssertionError):
    """A check failed; the message says what was expected and what we got."""


def fail(msg):
    raise TestFailure(msg)


def check(cond, msg):
    if not cond:
        raise TestFailure(msg)


# --------------------------------------------------------------------------
# Tools


def _resolve(path):
    if os.sep in path:
        return os.path.abspath(path) if os.access(path, os.X_OK) else None
    return shutil.which(path)


def tool_under_test(var):
    """Absolute path of the tool named by environment variable var."""
    val = os.environ.get(var)
    if not val:
        raise Skip('%s is not set (point it at the tool under test, '
                   'or at the qemu equivalent to validate the test)' % var)
    path = _resolve(val)
    if path is None:
        raise Skip('%s=%s is not an executable' % (var, val))
    return path


def oracle(name):
    """Absolute path of a QEMU oracle (qemu-img, qemu-io); skip if absent."""
    val = os.environ.get(name.upper().replace('-', '_'), name)
    path = _resolve(val)
    if path is None:
        raise Skip('%s not found (needed as the oracle)' % name)
    return path


class Tools:
    """The tools under test and the oracles, resolved once."""

    def __init__(self):
        self.img = tool_under_test('STRATA_IMG')
        self.io = tool_under_test('STRATA_IO')
        self.qemu_img = oracle('qemu-img')
        self.qemu_io = oracle('qemu-io')
        self.img_name = os.path.basename(self.img)
        self.io_name = os.path.basename(self.io)

    @property
    def img_is_qemu(self):
        return self.img_name.startswith('qemu-')

    @property
    def io_is_qemu(self):
        return self.io_name.startswith('qemu-')

    @property
    def are_qemu(self):
        """True when a 'tool under test' is QEMU's own (validation run)."""
        return self.img_is_qemu or self.io_is_qemu


_TOOLS = None


def tools():
    global _TOOLS
    if _TOOLS is None:
        _TOOLS = Tools()
    return _TOOLS


def full_run():
    """STRATA_TEST_FULL=1: the long forms of the sampled tests."""
    return bool(os.environ.get('STRATA_TEST_FULL'))


def format_matrix(cluster_sizes, refcount_bits):
    """The (cluster size, refcount width) pairs a test runs: in make check
    one pair per cluster size, the widths taken in turn so that every
    width appears too (4 pairs instead of 12 for the usual lists; the
    refcount code does not depend on the cluster size beyond what each
    size's own pair exercises); STRATA_TEST_FULL=1 the whole product."""
    if full_run():
        return [(cs, rb) for cs in cluster_sizes for rb in refcount_bits]
    check(len(cluster_sizes) >= len(refcount_bits),
          'too few cluster sizes to cover every refcount width')
    return [(cs, refcount_bits[i % len(refcount_bits)])
            for i, cs in enumerate(cluster_sizes)]


def live_records(journal):
    """Unfinished records in an intent-log journal (issue 14): slots that still start with the
    record magic (a finished one says STRATAID), and first-format
    <txid>.rec files."""
    out = []
    for f in os.listdir(journal):
        if f.endswith('.rec'):
            out.append(f)
        elif f.startswith('slot-'):
            with open(os.path.join(journal, f), 'rb') as fh:
                if fh.read(8) == b'STRATAIR':
                    out.append(f)
    return out


def skip_if_qemu_tools(reason):
    """For strata-only expectations (stricter than QEMU)."""
    if tools().are_qemu:
        raise Skip('strata-only: ' + reason)


# --------------------------------------------------------------------------
# Running commands


class Result:
    def __init__(self, argv, rc, out, err, elapsed):
        self.argv = argv
        self.rc = rc
        self.out = out
        self.err = err
        self.elapsed = elapsed

    @property
    def text(self):
        return self.out + self.err

    def describe(self, limit=3000):
        def cut(s):
            return s if len(s) <= limit else s[:limit] + '\n...[%d more bytes]' % (len(s) - limit)
        return ('command: %s\nexit: %s\nstdout:\n%s\nstderr:\n%s'
                % (cmdline(self.argv), self.rc, cut(self.out), cut(self.err)))


def cmdline(argv):
    import shlex
    s = ' '.join(shlex.quote(a) for a in argv)
    return s if len(s) < 2000 else s[:2000] + ' ...'


def sanitizer_report(text):
    for m in SANITIZER_MARKERS:
        if m in text:
            return m
    return None


def assert_no_crash(res):
    """No signal death, no sanitizer report -- for every tool run."""
    if res.rc == -25:      # SIGXFSZ
        fail('killed by SIGXFSZ: a file grew past %d bytes (runaway allocation?)\n%s'
             % (FSIZE_LIMIT, res.describe()))
    if res.rc is not None and res.rc < 0:
        fail('killed by signal %d\n%s' % (-res.rc, res.describe()))
    if res.rc in (128 + 6, 128 + 11, 134, 139):
        fail('exit code %d looks like a crash\n%s' % (res.rc, res.describe()))
    m = sanitizer_report(res.err) or sanitizer_report(res.out)
    if m:
        fail('sanitizer report (%s)\n%s' % (m, res.describe(20000)))


# QEMU's LUKS code times a first round of PBKDF2 by the thread's CPU time
# (getrusage, in scheduler ticks) and gives up with this text when that
# reads 0, which happens often (11 of 60 creates on an idle machine here;
# five in a row failed once under the sanitized suite's load).  A QEMU
# oracle that fails so is asked again (QEMU_FLAKE_TRIES times in all,
# each failed try costing milliseconds); strata's tools, which time with
# a nanosecond clock, are never retried.
QEMU_CPU_FLAKE = 'Unable to get accurate CPU usage'
QEMU_FLAKE_TRIES = 30


def is_qemu_flake(argv, res):
    return (res.rc != 0 and not os.path.basename(argv[0]).startswith('strata')
            and QEMU_CPU_FLAKE in res.err + res.out)


def run(argv, rc=0, timeout=DEFAULT_TIMEOUT, cwd=None):
    """Run argv; check its exit code (rc=None: any non-crash exit).

    rc may be an int or a tuple of allowed ints."""
    argv = [str(a) for a in argv]
    for _ in range(QEMU_FLAKE_TRIES - 1):
        res = run_once(argv, timeout, cwd)
        if not is_qemu_flake(argv, res):
            break
    else:
        res = run_once(argv, timeout, cwd)
    if rc is not None:
        ok = res.rc in rc if isinstance(rc, tuple) else res.rc == rc
        if not ok:
            fail('unexpected exit code (wanted %s)\n%s' % (rc, res.describe()))
    return res


def run_once(argv, timeout, cwd):
    """One run of argv: its Result, after the crash checks."""
    t0 = time.monotonic()
    try:
        p = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=timeout, cwd=cwd,
                           preexec_fn=limit_resources)
    except OSError as e:
        fail('cannot execute %s: %s' % (argv[0], e))
    except subprocess.TimeoutExpired as e:
        fail('timed out after %ss: %s\nstdout:\n%s\nstderr:\n%s'
             % (timeout, cmdline(argv),
                (e.stdout or b'')[-2000:].decode('utf-8', 'replace'),
                (e.stderr or b'')[-2000:].decode('utf-8', 'replace')))
    res = Result(argv, p.returncode, p.stdout.decode('utf-8', 'replace'),
                 p.stderr.decode('utf-8', 'replace'), time.monotonic() - t0)
    assert_no_crash(res)
    return res


def io_args(cmds):
    """Turn a list of qemu-io command strings into '-c CMD' arguments."""
    out = []
    for c in cmds:
        out += ['-c', c]
    return out


PATTERN_FAIL_RE = re.compile(r'Pattern verification failed at offset (\d+), (\d+) bytes')
WROTE_RE = re.compile(r'^wrote (\d+)/(\d+) bytes at offset (\d+)$', re.M)
READ_RE = re.compile(r'^read (\d+)/(\d+) bytes at offset (\d+)$', re.M)


def run_io(io, img, cmds, fmt='qcow2', extra=(), rc=0, timeout=DEFAULT_TIMEOUT):
    """Run one qemu-io-compatible invocation with many -c commands and check
    that every write/read command reported completion and no pattern
    mismatch was printed."""
    argv = [io]
    if fmt:
        argv += ['-f', fmt]
    argv += list(extra) + io_args(cmds) + [img]
    res = run(argv, rc=rc, timeout=timeout)
    if rc == 0:
        m = PATTERN_FAIL_RE.search(res.out)
        if m:
            fail('pattern verification failed\n' + res.describe())
        nw = sum(1 for c in cmds if c.split()[0] == 'write')
        nr = sum(1 for c in cmds if c.split()[0] == 'read')
        got_w = len(WROTE_RE.findall(res.out))
        got_r = len(READ_RE.findall(res.out))
        if got_w != nw or got_r != nr:
            fail('expected %d "wrote" and %d "read" lines, got %d and %d\n%s'
                 % (nw, nr, got_w, got_r, res.describe()))
    return res


def connect_unix(path, proc, name, timeout=30):
    """A connected AF_UNIX socket to the server `proc` (called `name` in
    failures) is starting.  The socket's file appears when it is bound, a
    moment before it listens, so a missing file or a refused connection
    is retried until the deadline; a server that exits first fails the
    test with its stderr."""
    import socket
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            _, err = proc.communicate(timeout=5)
            fail('%s did not start: rc=%s\n%s' % (
                name, proc.returncode,
                (err or b'').decode(errors='replace')))
        s = socket.socket(socket.AF_UNIX)
        try:
            s.connect(path)
            return s
        except (FileNotFoundError, ConnectionRefusedError):
            s.close()
            check(time.monotonic() < deadline,
                  '%s did not listen on %s in %d s' % (name, path, timeout))
            time.sleep(0.02)


def sha256(path):
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(1 << 20), b''):
            h.update(chunk)
    return h.hexdigest()


def files_equal(a, b):
    """Byte-for-byte comparison; returns None or a description of the
    first difference."""
    sa, sb = os.path.getsize(a), os.path.getsize(b)
    if sa != sb:
        return 'sizes differ: %s has %d bytes, %s has %d' % (a, sa, b, sb)
    with open(a, 'rb') as fa, open(b, 'rb') as fb:
        off = 0
        while True:
            ca = fa.read(1 << 20)
            cb = fb.read(1 << 20)
            if not ca:
                return None
            if ca != cb:
                i = next(i for i in range(len(ca)) if ca[i] != cb[i])
                return ('first difference at byte %d (0x%x): %s has 0x%02x, %s has 0x%02x'
                        % (off + i, off + i, a, ca[i], b, cb[i]))
            off += len(ca)


def qemu_check_clean(img, fmt='qcow2', allow_leaks=False):
    """qemu-img check must find no errors (and no leaks unless allowed)."""
    allowed = (0, 3) if allow_leaks else 0
    return run([tools().qemu_img, 'check', '-f', fmt, img], rc=allowed)


def qemu_compare_identical(img, raw, fmt='qcow2'):
    res = run([tools().qemu_img, 'compare', '-f', fmt, '-F', 'raw', img, raw], rc=None)
    if res.rc != 0 or 'Images are identical.' not in res.out:
        fail('qemu-img compare: image and shadow differ\n' + res.describe())
    return res


def normalize_prog(text, prog_name, generic='PROG'):
    """Replace a program name used as a message prefix, so that
    'strata-img: Could not open ...' and 'qemu-img: Could not open ...'
    compare equal."""
    return re.sub(r'(^|\n)' + re.escape(prog_name) + ':', r'\1' + generic + ':', text)


# --------------------------------------------------------------------------
# Temporary directories


class TempDir:
    """mkdtemp that is removed afterwards (kept if STRATA_KEEP_TMP=1);
    with shm=True in /dev/shm where there is one (fast, for tests that
    write a lot and do not need a real file system's behaviour)."""

    def __init__(self, prefix='strata-ft-', shm=False):
        base = '/dev/shm' if shm and os.path.isdir('/dev/shm') else None
        self.path = tempfile.mkdtemp(prefix=prefix, dir=base)

    def __enter__(self):
        return self.path

    def __exit__(self, *exc):
        if os.environ.get('STRATA_KEEP_TMP'):
            print('  (kept %s)' % self.path)
        else:
            shutil.rmtree(self.path, ignore_errors=True)
        return False

    def join(self, *names):
        return os.path.join(self.path, *names)


# --------------------------------------------------------------------------
# Raw shadows and content models


class Shadow:
    """A raw file mirroring every write made to an image, written in Python."""

    def __init__(self, path, size, base=None):
        self.path = path
        self.size = size
        if base is not None:
            shutil.copyfile(base.path, path)
            with open(path, 'r+b') as f:
                f.truncate(size)
        else:
            with open(path, 'wb') as f:
                f.truncate(size)

    def _check(self, off, length):
        if off < 0 or length < 0 or off + length > self.size:
            raise ValueError('shadow op out of range: %d+%d > %d' % (off, length, self.size))

    def write(self, off, data):
        self._check(off, len(data))
        with open(self.path, 'r+b') as f:
            f.seek(off)
            f.write(data)

    def fill(self, off, length, byte):
        self._check(off, length)
        with open(self.path, 'r+b') as f:
            f.seek(off)
            chunk = bytes([byte]) * min(length, 1 << 20)
            left = length
            while left:
                n = min(left, len(chunk))
                f.write(chunk[:n])
                left -= n

    def zero(self, off, length):
        self.fill(off, length, 0)

    def read(self, off, length):
        with open(self.path, 'rb') as f:
            f.seek(off)
            return f.read(length)


class IntervalMap:
    """Image contents as runs of a single value (a pattern byte, or None
    for 'unknown').  Segments cover [0, size)."""

    def __init__(self, size, value=0):
        self.size = size
        self.starts = [0]
        self.vals = [value]

    def _split(self, pos):
        """Make pos a segment boundary; return its index."""
        if pos >= self.size:
            return len(self.starts)
        i = bisect.bisect_right(self.starts, pos) - 1
        if self.starts[i] == pos:
            return i
        self.starts.insert(i + 1, pos)
        self.vals.insert(i + 1, self.vals[i])
        return i + 1

    def set(self, off, length, value):
        if length <= 0:
            return
        end = min(off + length, self.size)
        a = self._split(off)
        b = self._split(end)
        del self.starts[a:b]
        del self.vals[a:b]
        self.starts.insert(a, off)
        self.vals.insert(a, value)
        # merge with neighbours holding the same value
        if a + 1 < len(self.starts) and self.vals[a + 1] == value:
            del self.starts[a + 1]
            del self.vals[a + 1]
        if a > 0 and self.vals[a - 1] == value:
            del self.starts[a]
            del self.vals[a]

    def copy(self, size=None):
        """A copy, optionally resized (growth reads as zeros)."""
        new = IntervalMap(self.size)
        new.starts = list(self.starts)
        new.vals = list(self.vals)
        if size is not None and size != self.size:
            if size > self.size:
                new.size = size
                new.set(self.size, size - self.size, 0)
            else:
                new.size = size
                i = bisect.bisect_left(new.starts, size)
                del new.starts[i:]
                del new.vals[i:]
        return new

    def segments(self):
        """Yield (start, length, value)."""
        n = len(self.starts)
        for i in range(n):
            end = self.starts[i + 1] if i + 1 < n else self.size
            yield self.starts[i], end - self.starts[i], self.vals[i]

    def segment_at(self, pos):
        i = bisect.bisect_right(self.starts, pos) - 1
        end = self.starts[i + 1] if i + 1 < len(self.starts) else self.size
        return self.starts[i], end - self.starts[i], self.vals[i]

    def write_raw(self, path):
        """Materialize as a raw file (unknown runs are written as zeros)."""
        with open(path, 'wb') as f:
            f.truncate(self.size)
            for start, length, val in self.segments():
                if val:
                    f.seek(start)
                    left = length
                    chunk = bytes([val]) * min(length, 1 << 20)
                    while left:
                        n = min(left, len(chunk))
                        f.write(chunk[:n])
                        left -= n


def read_pattern_cmds(segments, max_len=4 << 20):
    """'read -P' commands verifying a list of (start, length, byte)."""
    cmds = []
    for start, length, val in segments:
        if val is None:
            continue
        off = start
        while off < start + length:
            n = min(max_len, start + length - off)
            cmds.append('read -P 0x%02x %d %d' % (val, off, n))
            off += n
    return cmds


def chunks(seq, n):
    for i in range(0, len(seq), n):
        yield seq[i:i + n]


# --------------------------------------------------------------------------
# Case runner


class Runner:
    """Collects cases; runs each, reporting ok/FAIL/SKIP with timings.

    Exit status: 1 if any case failed, 77 if every case skipped, else 0.
    Run a subset with: script.py NAME-SUBSTRING..."""

    def __init__(self):
        self.cases = []

    def case(self, name=None):
        def deco(fn):
            self.cases.append((name or fn.__name__, fn))
            return fn
        return deco

    def add(self, name, fn, *args, **kwargs):
        self.cases.append((name, lambda: fn(*args, **kwargs)))

    def main(self, argv=None):
        argv = sys.argv[1:] if argv is None else argv
        sys.stdout.reconfigure(line_buffering=True)
        try:
            t = tools()
        except Skip as e:
            print('SKIP (whole script): %s' % e)
            return SKIP
        print('# tools under test: %s, %s%s' % (t.img, t.io,
              '  (QEMU validation run)' if t.are_qemu else ''))
        print('# oracles: %s, %s' % (t.qemu_img, t.qemu_io))
        selected = [(n, f) for n, f in self.cases
                    if not argv or any(a in n for a in argv)]
        passed = failed = skipped = 0
        t_all = time.monotonic()
        for name, fn in selected:
            t0 = time.monotonic()
            try:
                fn()
            except Skip as e:
                skipped += 1
                print('SKIP %s: %s' % (name, e))
            except Exception as e:  # noqa: BLE001 -- report every failure
                failed += 1
                print('FAIL %s (%.1fs)' % (name, time.monotonic() - t0))
                if isinstance(e, TestFailure):
                    print('  ' + str(e).replace('\n', '\n  '))
                else:
                    traceback.print_exc(file=sys.stdout)
            else:
                passed += 1
                print('ok   %s (%.1fs)' % (name, time.monotonic() - t0))
        print('# %d passed, %d failed, %d skipped in %.1fs'
              % (passed, failed, skipped, time.monotonic() - t_all))
        if failed:
            return 1
        if passed == 0 and skipped:
            return SKIP
        return 0


def rng(seed):
    """Seeded generator; STRATA_TEST_SEED=N shifts every seed (default 0:
    the fixed seeds the suite normally runs with) to explore further."""
    return random.Random(seed + 1000003 * int(os.environ.get('STRATA_TEST_SEED', '0')))
