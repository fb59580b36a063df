#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Malformed qcow2 images get a clear error and are left untouched.

For every case built by badimages.py (bad magic, versions, cluster sizes,
header length, header extensions (including a CRYPTO extension without
LUKS and a bitmaps extension of the wrong length), backing file offset/
name/loops, feature bits, corrupt bit, compression type, refcount order
(up to 2^32-1, read unsigned), encryption, virtual size (not a multiple
of 512: rounded down), L1 table placement/size/entries, refcount table
placement/size/entries, snapshot table count/offset, snapshot extra data,
a zero flag in a version 2 image; versions such as 0x100 must probe as
qcow2 and be refused, not be taken for raw): open it with
`$STRATA_IO -c 'read 0 512'` (probing the format and with -f qcow2, and
read-only where it matters) and with `$STRATA_IMG info`.  Each open must
give the expected outcome: a non-zero exit with the tool's open-failure
prefix followed by QEMU 7.2's exact message (for strata-only cases, where
QEMU accepts the image and strata is stricter, a message naming the
problem), or success where QEMU succeeds too; never a crash signal, a
sanitizer report or a hang; and every file of the case is byte-identical
(sha256) afterwards.
"""

import os
import re
import sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import badimages  # noqa: E402
import common  # noqa: E402

TIMEOUT = 60

runner = common.Runner()


def digest_dir(d):
    return {n: common.sha256(os.path.join(d, n)) for n in sorted(os.listdir(d))
            if not n.startswith('.')}


def matches(expect, text):
    if isinstance(expect, re.Pattern):
        return expect.search(text) is not None
    return expect == text


def show(expect):
    return '/%s/' % expect.pattern if isinstance(expect, re.Pattern) else repr(expect)


def run_check(c, path):
    """Run one Check; return None or a failure description."""
    t = common.tools()
    if c.tool == 'io':
        argv = [t.io] + (['-f', c.fmt] if c.fmt else []) + (['-r'] if c.ro else []) + \
               ['-c', 'read 0 512', path]
        prefix = "%s: can't open device %s: " % (t.io_name, path)
    else:
        argv = [t.img, 'info'] + (['-f', c.fmt] if c.fmt else []) + \
               (['--backing-chain'] if c.chain else []) + [path]
        prefix = "%s: Could not open '%s': " % (t.img_name, path)
    try:
        res = common.run(argv, rc=None, timeout=TIMEOUT)
    except common.TestFailure as e:      # crash, sanitizer report, hang
        return str(e)
    if c.expect is badimages.ANY:
        return None
    if c.expect is None:
        ok = res.rc == 0
        if ok and c.tool == 'io':
            ok = 'read 512/512 bytes at offset 0' in res.out
        if ok and c.out:
            ok = c.out in res.out
        if not ok:
            return 'expected success%s\n%s' % (
                ' with %r in stdout' % c.out if c.out else '', res.describe())
        return None
    if res.rc == 0:
        return 'expected failure with %s, but it succeeded\n%s' % (show(c.expect), res.describe())
    if not c.prefixed:
        if matches(c.expect, res.err) or (isinstance(c.expect, str) and c.expect in res.err):
            return None
        return 'expected %s in stderr\n%s' % (show(c.expect), res.describe())
    lines = [ln for ln in res.err.splitlines() if ln.startswith(prefix)]
    if not lines:
        return 'expected an error line starting with %r\n%s' % (prefix, res.describe())
    msg = lines[0][len(prefix):]
    if not matches(c.expect, msg):
        return 'wrong message: expected %s, got %r\n%s' % (show(c.expect), msg, res.describe())
    return None


def run_case(case):
    t = common.tools()
    def is_qemu(c):
        return t.io_is_qemu if c.tool == 'io' else t.img_is_qemu

    checks = [c for c in case.checks if not (c.strata_only and is_qemu(c))]
    if not checks:
        raise common.Skip('strata-only: ' + case.strata_only)
    with common.TempDir() as d:
        path = badimages.build(case, d)
        before = digest_dir(d)
        problems = []
        for c in checks:
            err = run_check(c, path)
            if err:
                problems.append('[%s] %s' % (c.label(), err))
        after = digest_dir(d)
        if after != before:
            changed = [n for n in set(before) | set(after) if before.get(n) != after.get(n)]
            problems.append('files changed by opening the image: %s' % ', '.join(sorted(changed)))
        if problems:
            common.fail('\n'.join(problems))
        skipped = len(case.checks) - len(checks)
        if skipped:
            print('     (%d strata-only check(s) skipped under QEMU tools)' % skipped)


def count_check():
    common.check(len(badimages.CASES) >= 30, 'fewer than 30 malformed images')
    names = [c.name for c in badimages.CASES]
    common.check(len(names) == len(set(names)), 'duplicate case names')


runner.add('at least 30 distinct cases', count_check)
for _case in badimages.CASES:
    runner.add(_case.name, run_case, _case)

if __name__ == '__main__':
    sys.exit(runner.main())
