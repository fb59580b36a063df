#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""`make check-iotests`: QEMU's own qemu-iotests (qcow2) with strata-img and
strata-io in the place of qemu-img and qemu-io.

Three steps, each usable alone:
  fetch   Debian's `qemu` source package (the exact source of Debian 12's
          qemu-utils) is downloaded with apt's source download into the build
          folder, through a private sources list and private lists/cache
          directories, so the system's apt configuration is never touched.
          apt checks the .dsc against the signed Sources index and
          dpkg-source checks the tarballs against the .dsc, then applies
          Debian's patches.  Exit 77 when it cannot be fetched (no network).
  run     each selected test runs alone (`./check -qcow2 -tap NNN`) in its
          own scratch directory, with a time limit, N at a time.
  compare the results against tests/iotests/expected-failures.txt: an
          unexpected failure fails the run; an expected failure that now
          passes is reported, so the list gets trimmed.

Nothing from QEMU is committed; the suite lives under BUILD/iotests/.
"""

import argparse
import concurrent.futures
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SRC_PKG = 'qemu'
SRC_VERSION = '1:7.2+dfsg-7+deb12u18'
SRC_DIRNAME = 'qemu-7.2+dfsg'
SUITES = ('bookworm', 'bookworm-updates', 'bookworm-security')
MIRROR = 'http://deb.debian.org/debian'
SECURITY = 'http://deb.debian.org/debian-security'
KEYRING = '/usr/share/keyrings/debian-archive-keyring.gpg'

REPO = Path(__file__).resolve().parent.parent
LISTS = REPO / 'tests' / 'iotests'
SETS = {'plain': LISTS / 'set-plain.txt', '106': LISTS / 'set-106.txt',
        'generic': LISTS / 'set-generic.txt'}
EXPECTED = LISTS / 'expected-failures.txt'

# A test that hangs must not eat the CI budget; the slowest tests (261,
# 271) take 8 minutes on a machine loaded ten times over.
TEST_TIMEOUT = int(os.environ.get('IOTESTS_TIMEOUT', '900'))
# 197 refuses to run when TEST_DIR holds anything else
SAFE_DIR = re.compile(r'^[-_a-zA-Z0-9/]+$')


def log(msg):
    print(f'check-iotests: {msg}', flush=True)


def apt_options(aptdir):
    """apt -o options that point every apt path we need at aptdir."""
    return ['-o', f'Dir::Etc::SourceList={aptdir}/sources.list',
            '-o', 'Dir::Etc::SourceParts=/dev/null',
            '-o', f'Dir::State::Lists={aptdir}/lists',
            '-o', f'Dir::Cache={aptdir}/cache',
            # our private directories belong to whoever runs make; apt's
            # download sandbox user could not write into them
            '-o', 'APT::Sandbox::User=' + _current_user(),
            '-o', 'Debug::NoLocking=1']


def _current_user():
    import pwd
    return pwd.getpwuid(os.getuid()).pw_name


def write_sources(aptdir):
    signed = f' [signed-by={KEYRING}]' if os.path.exists(KEYRING) else ''
    lines = []
    for suite in SUITES:
        base = SECURITY if suite.endswith('-security') else MIRROR
        lines.append(f'deb-src{signed} {base} {suite} main')
    for d in ('lists/partial', 'cache/archives/partial'):
        (aptdir / d).mkdir(parents=True, exist_ok=True)
    (aptdir / 'sources.list').write_text('\n'.join(lines) + '\n')


def fetch(workdir):
    """Returns the extracted source tree, or None if it cannot be had."""
    srcroot = workdir / 'src'
    tree = srcroot / SRC_DIRNAME
    stamp = srcroot / ('.fetched-' + SRC_VERSION.replace(':', '_'))
    if stamp.exists() and (tree / 'tests' / 'qemu-iotests' / 'check').exists():
        return tree
    if not shutil.which('apt-get') or not shutil.which('dpkg-source'):
        log('apt-get or dpkg-source (package dpkg-dev) missing')
        return None
    aptdir = workdir / 'apt'
    write_sources(aptdir)
    opts = apt_options(aptdir)
    log(f'fetching Debian source package {SRC_PKG} {SRC_VERSION}')
    r = subprocess.run(['apt-get', *opts, '-q', 'update'],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       text=True)
    if r.returncode != 0 or 'Err:' in r.stdout:
        log('apt-get update failed:\n' + r.stdout)
        return None
    # a half-extracted tree from an interrupted run is not trusted
    shutil.rmtree(srcroot, ignore_errors=True)
    srcroot.mkdir(parents=True)
    r = subprocess.run(['apt-get', *opts, '-q', 'source',
                        f'{SRC_PKG}={SRC_VERSION}'], cwd=srcroot,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       text=True)
    if r.returncode != 0 or not (tree / 'tests' / 'qemu-iotests').is_dir():
        log('apt-get source failed:\n' + r.stdout)
        return None
    # the tarballs are not needed once extracted and patched
    for f in srcroot.iterdir():
        if f.is_file() and re.search(r'\.(tar\.\w+|dsc)$', f.name):
            f.unlink()
    applied = tree / '.pc' / 'applied-patches'
    n = len(applied.read_text().split()) if applied.exists() else 0
    log(f'extracted {tree.name}, {n} Debian patches applied')
    stamp.touch()
    return tree


def read_list(path):
    """Test names from a list file: first word of each line, # comments."""
    names = []
    for line in path.read_text().splitlines():
        line = line.split('#', 1)[0].strip()
        if line:
            names.append(line.split()[0])
    return names


def read_expected(path):
    """name -> reason (the rest of the line) from expected-failures.txt."""
    expected = {}
    if not path.exists():
        return expected
    for line in path.read_text().splitlines():
        if not line.strip() or line.lstrip().startswith('#'):
            continue
        name, *reason = line.split()
        expected[name] = ' '.join(reason)
    return expected


def tool_links(workdir, build):
    """qemu-img/qemu-io symlinks to our tools, so error prefixes match."""
    bindir = workdir / 'bin'
    bindir.mkdir(parents=True, exist_ok=True)
    tools = {'qemu-img': build / 'tools' / 'img' / 'strata-img',
             'qemu-io': build / 'tools' / 'io' / 'strata-io'}
    for name, target in tools.items():
        if not os.access(target, os.X_OK):
            sys.exit(f'check-iotests: {target} not built')
        link = bindir / name
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(target.resolve())
    return bindir


def scratch_root(workdir):
    root = workdir / 'scratch'
    if SAFE_DIR.match(str(root.resolve().parent)):
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
        return root
    # a build path with dots or spaces: tests refuse such a TEST_DIR
    return Path(tempfile.mkdtemp(prefix='strata_iotests_'))


HUGE = 513 << 40   # what _require_large_file asks of iotest 220


def holds_huge_files(directory):
    """Can directory hold a sparse file of HUGE bytes?  (ext4 cannot.)"""
    probe = Path(directory) / '.huge-probe'
    try:
        with open(probe, 'wb') as f:
            f.truncate(HUGE)
        return True
    except OSError:
        return False
    finally:
        probe.unlink(missing_ok=True)


# Tests that count the host blocks of a preallocated file before and
# after writing into it.  On ext4 the count includes the file's extent
# tree, which gains a block when a write splits an extent while the
# inode's own slots are full; when that happens depends on where the file
# system placed the preallocation (its free space on that machine), so
# the same tool passes on one machine and fails on another (on one of
# ours QEMU's own qemu-img failed one case of 125, strata's five).  tmpfs
# keeps no extent tree: the count is the data's alone.
COUNTS_HOST_BLOCKS = {'125'}


def test_dir_for(test, suite, scratch):
    """The test's TEST_DIR.  A test that needs a huge sparse file (it says
    so with _require_large_file, and notes that tmpfs works) runs on
    /dev/shm when the scratch file system cannot hold one; a test in
    COUNTS_HOST_BLOCKS runs there whenever it can."""
    tdir = scratch / test.replace('/', '_')
    shm = Path('/dev/shm')
    try:
        needs_huge = '_require_large_file' in (suite / test).read_text()
    except OSError:
        needs_huge = False
    usable = shm.is_dir() and os.access(shm, os.W_OK)
    if usable and (test in COUNTS_HOST_BLOCKS or
                   (needs_huge and not holds_huge_files(scratch) and
                    holds_huge_files(shm))):
        return Path(tempfile.mkdtemp(prefix='strata_iotests_', dir=shm))
    return tdir


def run_one(test, suite, bindir, scratch, logdir):
    """(status, seconds): status is pass, fail or 'not run'."""
    tdir = test_dir_for(test, suite, scratch)
    sdir = tdir / 'sock'
    sdir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ,
               QEMU_IMG_PROG=str(bindir / 'qemu-img'),
               QEMU_IO_PROG=str(bindir / 'qemu-io'),
               QEMU_PROG=shutil.which('qemu-system-x86_64') or
               '/usr/bin/qemu-system-x86_64',
               QEMU_NBD_PROG=shutil.which('qemu-nbd') or '/usr/bin/qemu-nbd',
               QSD_PROG=shutil.which('qemu-storage-daemon') or
               '/usr/bin/qemu-storage-daemon',
               TEST_DIR=str(tdir), SOCK_DIR=str(sdir),
               PYTHONDONTWRITEBYTECODE='1')
    t0 = time.time()
    # its own session, so a test that hangs is ended with all it started
    with subprocess.Popen([sys.executable, './check', '-qcow2', '-tap', test],
                          cwd=suite, env=env, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          start_new_session=True) as proc:
        try:
            out, _ = proc.communicate(timeout=TEST_TIMEOUT)
            status = _tap_status(out, test)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, _ = proc.communicate()
            out += f'\ntimed out after {TEST_TIMEOUT}s\n'
            status = 'fail'
    secs = time.time() - t0
    bad = tdir / (Path(test).name + '.out.bad')
    if bad.exists():
        out += '\n--- output of the failing run: ' + str(bad) + '\n'
    (logdir / (test.replace('/', '_') + '.log')).write_text(out)
    if status == 'pass' or tdir.parent != scratch:
        # a failing run on /dev/shm goes too: it holds memory, and its
        # log keeps the diff
        if status != 'pass' and bad.exists():
            with open(logdir / (test.replace('/', '_') + '.log'), 'a') as f:
                f.write(bad.read_text(errors='replace'))
        shutil.rmtree(tdir, ignore_errors=True)
    return status, secs


def _tap_status(out, test):
    name = re.escape(test)
    if re.search(rf'^not ok qcow2 {name}\b', out, re.M):
        return 'fail'
    if re.search(rf'^ok qcow2 {name} # SKIP', out, re.M):
        return 'not run'
    if re.search(rf'^ok qcow2 {name}\b', out, re.M):
        return 'pass'
    return 'fail'


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument('--build', default='build', help='build folder')
    ap.add_argument('--set', default='106', choices=sorted(SETS),
                    help='named test set (default 106, which holds plain)')
    ap.add_argument('--fetch-only', action='store_true')
    ap.add_argument('--source', help='an extracted qemu source tree to use '
                    'instead of fetching one')
    ap.add_argument('-j', '--jobs', type=int,
                    default=int(os.environ.get('IOTESTS_JOBS', '1')))
    ap.add_argument('tests', nargs='*', help='run these instead of a set')
    args = ap.parse_args()

    build = Path(args.build).resolve()
    workdir = build / 'iotests'
    workdir.mkdir(parents=True, exist_ok=True)
    tree = Path(args.source).resolve() if args.source else fetch(workdir)
    if tree is None:
        log('SKIPPED: the qemu source package could not be fetched')
        return 77
    if args.fetch_only:
        log(f'source ready in {tree}')
        return 0

    tests = args.tests or read_list(SETS[args.set])
    expected = read_expected(EXPECTED)
    bindir = tool_links(workdir, build)
    scratch = scratch_root(workdir)
    logdir = workdir / 'logs'
    shutil.rmtree(logdir, ignore_errors=True)
    logdir.mkdir()
    suite = tree / 'tests' / 'qemu-iotests'

    log(f'{len(tests)} tests ({"named" if args.tests else args.set}), '
        f'{args.jobs} at a time, logs in {logdir}')
    t0 = time.time()
    results = {}
    with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
        futs = {pool.submit(run_one, t, suite, bindir, scratch, logdir): t
                for t in tests}
        for fut in concurrent.futures.as_completed(futs):
            t = futs[fut]
            status, secs = fut.result()
            results[t] = status
            note = ''
            if status == 'fail' and t in expected:
                note = f'  (expected: {expected[t]})'
            elif status == 'fail':
                note = '  UNEXPECTED'
            elif status == 'pass' and t in expected:
                note = '  (listed as expected failure: trim the list)'
            print(f'{t:8} {status:8} {secs:6.1f}s{note}', flush=True)

    return report(tests, results, expected, logdir, time.time() - t0)


def report(tests, results, expected, logdir, secs):
    n = {s: sum(1 for t in tests if results[t] == s)
         for s in ('pass', 'fail', 'not run')}
    regressions = [t for t in tests
                   if results[t] == 'fail' and t not in expected]
    fixed = [t for t in tests if results[t] == 'pass' and t in expected]
    print()
    if fixed:
        print('expected failures that now pass (remove them from '
              f'{EXPECTED.relative_to(REPO)}): {" ".join(fixed)}')
    if regressions:
        print(f'UNEXPECTED failures: {" ".join(regressions)} '
              f'(diffs in {logdir})')
    print(f'{n["pass"]} passed, {n["fail"]} failed'
          f' ({len(tests) - len(regressions) - n["pass"] - n["not run"]}'
          f' expected), {n["not run"]} not run, in {secs / 60:.1f} min')
    return 1 if regressions else 0


if __name__ == '__main__':
    sys.exit(main())
