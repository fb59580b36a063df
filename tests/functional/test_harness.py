#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""The functional tests' own runner (common.run), on stand-in programs.

common.run asks a QEMU oracle again when it fails with QEMU's LUKS timing
flake ("Unable to get accurate CPU usage"), and never anything else: not a
strata tool with that text (a strata bug must show), not a QEMU failure
with another text.  Each stand-in is a shell script that counts its runs
in a file and fails with the given text for its first N runs.

Cases:
- qemu_flake_retried: a stand-in named qemu-img that flakes twice
  succeeds on its third run, through one common.run call;
- qemu_flake_gives_up: one that always flakes fails after
  QEMU_FLAKE_TRIES runs, with its own message;
- strata_tool_not_retried: the same flake from a tool named strata-img
  fails on its first run;
- other_failure_not_retried: a qemu-img failing with another text fails
  on its first run.
"""

import os
import sys
import tempfile

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402
from common import check, run  # noqa: E402

runner = common.Runner()


def stand_in(d, name, fail_runs, text):
    """A program called NAME that fails FAIL_RUNS times with TEXT on
    stderr, then succeeds; returns (path, counter file)."""
    path = os.path.join(d, name)
    counter = os.path.join(d, name + '.runs')
    with open(path, 'w') as f:
        f.write('#!/bin/sh\n'
                'n=$(cat "%s" 2>/dev/null || echo 0)\n'
                'n=$((n + 1))\n'
                'echo $n > "%s"\n'
                'if [ $n -le %d ]; then echo "%s: %s" >&2; exit 1; fi\n'
                'echo ok\n' % (counter, counter, fail_runs, name, text))
    os.chmod(path, 0o755)
    return path, counter


def runs(counter):
    with open(counter) as f:
        return int(f.read())


@runner.case()
def qemu_flake_retried():
    with tempfile.TemporaryDirectory() as d:
        prog, counter = stand_in(d, 'qemu-img', 2, common.QEMU_CPU_FLAKE)
        res = run([prog, 'create'])
        check(res.out.strip() == 'ok' and runs(counter) == 3,
              'wanted success on the 3rd run, got %d runs\n%s'
              % (runs(counter), res.describe()))


@runner.case()
def qemu_flake_gives_up():
    with tempfile.TemporaryDirectory() as d:
        prog, counter = stand_in(d, 'qemu-img', 100, common.QEMU_CPU_FLAKE)
        res = run([prog, 'create'], rc=1)
        check(runs(counter) == common.QEMU_FLAKE_TRIES
              and common.QEMU_CPU_FLAKE in res.err,
              'wanted %d runs and the flake text, got %d\n%s'
              % (common.QEMU_FLAKE_TRIES, runs(counter), res.describe()))


@runner.case()
def strata_tool_not_retried():
    with tempfile.TemporaryDirectory() as d:
        prog, counter = stand_in(d, 'strata-img', 2, common.QEMU_CPU_FLAKE)
        run([prog, 'create'], rc=1)
        check(runs(counter) == 1, 'strata-img ran %d times' % runs(counter))


@runner.case()
def other_failure_not_retried():
    with tempfile.TemporaryDirectory() as d:
        prog, counter = stand_in(d, 'qemu-img', 2, 'Could not open file')
        run([prog, 'create'], rc=1)
        check(runs(counter) == 1, 'qemu-img ran %d times' % runs(counter))


if __name__ == '__main__':
    sys.exit(runner.main())
