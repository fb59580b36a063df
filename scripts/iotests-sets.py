#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Derives the named qemu-iotests sets of `make check-iotests` by scanning
the test scripts of a qemu source tree; run once per QEMU version and commit
the output (tests/iotests/set-106.txt, set-plain.txt, set-generic.txt).

  106    tests that name qcow2 in their supported formats and need no
         guest: they start neither QEMU nor the storage daemon, so only
         qemu-img and qemu-io run, and in four of them (058, 209, 233, 302)
         Debian's qemu-nbd serves an image to them (the issue counts 104;
         this scan finds 105, 101 of them without qemu-nbd); plus 197 and
         215 (copy-on-read through qemu-io; "generic" tests whose wrapper
         image is qcow2).
  plain  those of 106 that run no NBD server, neither inject faults
         (blkdebug, blkverify) nor use json: names, nor edit image bytes
         behind the tools' back
         (poke_file, qcow2.py, dd, truncate, -f raw or seek on the image),
         nor create encrypted images (strata refuses encryption by design).
  generic  the "generic" shell tests (any format, run here as qcow2)
         that start no guest, daemon or NBD server, but for 197 and 215
         (in 106): not part of the issue's count, run beside it for more
         coverage.

Usage: iotests-sets.py QEMU_SOURCE_TREE {106|plain|generic}
"""

import re
import sys
from pathlib import Path

EXTRA_106 = ['197', '215']

# anything that starts QEMU or the storage daemon: a guest, or QMP
NEEDS_GUEST = re.compile(
    r'_launch_qemu|\$\{?QEMU\}?[\s"]|\$QEMU$|_qemu_with|\brun_qemu\b|'
    r'iotests\.VM\b|\bVM\(|'
    r'_launch_qsd|QSD|qsd|qemu_storage_daemon|QemuStorageDaemon|'
    r'QEMU_PROG|qemu_prog', re.M)

# Debian's qemu-nbd serving an image to strata-img/strata-io: no guest, so
# in "106" (the issue keeps QEMU_NBD_PROG Debian's), but not plain
RUNS_NBD_SERVER = re.compile(
    r'QEMU_NBD|qemu_nbd|qemu-nbd|_qemu_nbd|nbd_server')

NOT_PLAIN = re.compile(
    r'blkdebug|blkverify|json:|poke_file|qcow2\.py|qcow2_format|-f raw|'
    r'\.seek\(|\bdd\b|truncate')

NEEDS_ENCRYPTION = re.compile(
    r'encrypt\.format|encryption=on|_require_working_luks|secret,id=|'
    r'--object secret')


def code(text):
    """The script without its comment lines."""
    return '\n'.join(ln for ln in text.split('\n')
                     if not ln.lstrip().startswith('#'))


def names_qcow2(text):
    if text.startswith('#!/usr/bin/env python'):
        fmts = re.findall(r'supported_fmts=\[([^\]]*)\]', text)
        return any(re.search(r'[\'"]qcow2[\'"]', f) for f in fmts)
    fmts = re.findall(r'^_supported_fmt\s+(.*)$', text, re.M)
    return 'qcow2' in ' '.join(fmts).split()


def set_106(suite):
    out = []
    for f in sorted(suite.iterdir()):
        if not re.fullmatch(r'\d{3}', f.name):
            continue
        text = f.read_text(errors='replace')
        if f.name in EXTRA_106 or (names_qcow2(text) and
                                   not NEEDS_GUEST.search(code(text))):
            out.append(f.name)
    return out


def names_generic(text):
    # the Python ones without formats are 277 (an NBD fault-injecting
    # server) and 297 (a linter of QEMU's own Python): neither applies
    if text.startswith('#!/usr/bin/env python'):
        return False
    fmts = re.findall(r'^_supported_fmt\s+(.*)$', text, re.M)
    return 'generic' in ' '.join(fmts).split()


def set_generic(suite):
    out = []
    for f in sorted(suite.iterdir()):
        if not re.fullmatch(r'\d{3}', f.name) or f.name in EXTRA_106:
            continue
        text = f.read_text(errors='replace')
        if names_generic(text) and not NEEDS_GUEST.search(code(text)) \
                and not RUNS_NBD_SERVER.search(code(text)):
            out.append(f.name)
    return out


def set_plain(suite):
    plain = []
    for t in set_106(suite):
        text = code((suite / t).read_text(errors='replace'))
        if not NOT_PLAIN.search(text) and not NEEDS_ENCRYPTION.search(text) \
                and not RUNS_NBD_SERVER.search(text):
            plain.append(t)
    return plain


def main():
    sets = {'106': set_106, 'plain': set_plain, 'generic': set_generic}
    if len(sys.argv) != 3 or sys.argv[2] not in sets:
        sys.exit(__doc__)
    suite = Path(sys.argv[1]) / 'tests' / 'qemu-iotests'
    tests = sets[sys.argv[2]](suite)
    for t in tests:
        print(t)


if __name__ == '__main__':
    main()
