#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""qemu-iotests run with extra image options (`./check -o OPTS`), once with
QEMU's qemu-img/qemu-io and once with strata's, and the two runs compared.

Most tests print the options they were given, so with `-o extended_l2=on`
QEMU's own tools fail many of them; what matters is that strata's tools
do what QEMU's do.  For each test this prints one of:

  same-pass   both runs pass (same-skip: neither runs)
  same-fail   both fail with the same output (TEST_DIR and the program
              path made alike)
  DIFFERENT   the outputs differ (the diff is kept in BUILD/iotests-imgopts)

and exits 1 if any test is DIFFERENT.  Uses the source tree that
`make iotests-fetch` (scripts/check-iotests.py) put in BUILD/iotests/src.
Not part of `make check`: it runs every test twice.

  scripts/iotests-imgopts.py --build build -o extended_l2=on [-j 2] [NNN ...]
"""

import argparse
import concurrent.futures
import difflib
import importlib.util
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
_spec = importlib.util.spec_from_file_location('check_iotests',
                                               HERE / 'check-iotests.py')
ci = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ci)


def run(test, suite, tools, tdir, opts):
    """The test's filtered output (its .out.bad, or '' if it passed) and
    its status: pass, fail or skip (not run)."""
    shutil.rmtree(tdir, ignore_errors=True)
    (tdir / 'sock').mkdir(parents=True)
    env = dict(os.environ, QEMU_IMG_PROG=tools['qemu-img'],
               QEMU_IO_PROG=tools['qemu-io'],
               QEMU_PROG=shutil.which('qemu-system-x86_64') or
               '/usr/bin/qemu-system-x86_64',
               QEMU_NBD_PROG=shutil.which('qemu-nbd') or '/usr/bin/qemu-nbd',
               QSD_PROG=shutil.which('qemu-storage-daemon') or
               '/usr/bin/qemu-storage-daemon',
               TEST_DIR=str(tdir), SOCK_DIR=str(tdir / 'sock'),
               PYTHONDONTWRITEBYTECODE='1')
    with subprocess.Popen([sys.executable, './check', '-qcow2', '-o', opts,
                           '-tap', test], cwd=suite, env=env, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          start_new_session=True) as proc:
        try:
            out, _ = proc.communicate(timeout=ci.TEST_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            return 'timed out', 'fail'
    bad = tdir / (test + '.out.bad')
    text = bad.read_text(errors='replace') if bad.exists() else ''
    # the scratch folder and the tool's path differ between the runs
    text = text.replace(str(tdir), 'TEST_DIR')
    for path in tools.values():
        text = text.replace(path, 'QEMU_PROG_PATH')
    if re.search(r'^ok .*# SKIP', out, re.M):
        return text, 'skip'
    return text, 'pass' if re.search(r'^ok ', out, re.M) else 'fail'


def compare(test, suite, tools_q, tools_s, root, opts):
    out_q, st_q = run(test, suite, tools_q, root / ('q' + test), opts)
    out_s, st_s = run(test, suite, tools_s, root / ('s' + test), opts)
    if st_q == st_s and (st_q != 'fail' or out_q == out_s):
        return 'same-' + st_q, ''
    diff = ''.join(difflib.unified_diff(
        out_q.splitlines(True), out_s.splitlines(True),
        'QEMU (%s)' % st_q, 'strata (%s)' % st_s))
    return 'DIFFERENT', diff or 'QEMU: %s, strata: %s\n' % (st_q, st_s)


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument('--build', default='build')
    ap.add_argument('-o', dest='opts', required=True,
                    help='image options for every test, e.g. extended_l2=on')
    ap.add_argument('--set', default='106', choices=sorted(ci.SETS))
    ap.add_argument('-j', '--jobs', type=int, default=1)
    ap.add_argument('tests', nargs='*')
    args = ap.parse_args()

    build = Path(args.build).resolve()
    suite = build / 'iotests' / 'src' / ci.SRC_DIRNAME / 'tests' / \
        'qemu-iotests'
    if not suite.is_dir():
        sys.exit('iotests-imgopts: no source tree: run make iotests-fetch')
    ours = ci.tool_links(build / 'iotests', build)
    tools_s = {n: str(ours / n) for n in ('qemu-img', 'qemu-io')}
    tools_q = {n: shutil.which(n) or '/usr/bin/' + n
               for n in ('qemu-img', 'qemu-io')}
    root = build / 'iotests-imgopts'
    if not ci.SAFE_DIR.match(str(root)):
        sys.exit('iotests-imgopts: the build path must hold no dots or '
                 'spaces (the tests refuse such a TEST_DIR)')
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    tests = args.tests or ci.read_list(ci.SETS[args.set])
    counts = {}
    with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
        futs = {pool.submit(compare, t, suite, tools_q, tools_s, root,
                            args.opts): t for t in tests}
        for fut in concurrent.futures.as_completed(futs):
            t = futs[fut]
            verdict, diff = fut.result()
            counts[verdict] = counts.get(verdict, 0) + 1
            if diff:
                (root / (t + '.diff')).write_text(diff)
            print(f'{t:8} {verdict}', flush=True)
    print('; '.join(f'{n} {v}' for v, n in sorted(counts.items())) +
          f' (-o {args.opts}; diffs in {root})')
    return 1 if counts.get('DIFFERENT') else 0


if __name__ == '__main__':
    sys.exit(main())
