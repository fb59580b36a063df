#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""strata-io prints what qemu-io prints, for the data commands.

Each case runs one list of commands (read, readv, write, writev,
aio_read, aio_write, aio_flush, discard, and the commands around them)
through $STRATA_IO and through qemu-io, each on a fresh copy of the same
image, and requires the same stdout, stderr (program name normalised)
and exit code; timings and rates are masked.  Cases cover the options
and every error message of the read/write core: bad numbers, lengths
over the limit, requests past the end of the device, pattern mismatches,
option conflicts, and where the aio_* commands print their completion.

It also checks the help texts: command names and argument synopses are
qemu-io's (scripts read them), while no sentence of the prose is.

Where strata deliberately differs (no VM state area: read/write -b; no
compressed writes: write -c) only the messages of argument checking are
compared, which happen before any I/O.
"""

import os
import re
import shutil
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

runner = common.Runner()

# "4 KiB, 1 ops; 00.00 sec (1.465 GiB/sec and 384000.0000 ops/sec)"
RATE_RE = re.compile(r'(\d+ ops; ).*$', re.M)
# -C: "bytes,ops,time,bytes/sec,ops/sec"
TERSE_RE = re.compile(r'^(\d+),(\d+),[0-9:.]+,[0-9.inf]+,[0-9.inf]+$', re.M)


# A usage line printed on bad arguments: "name synopsis -- description".
# The description is prose (ours differs on purpose); name and synopsis
# must match.
USAGE_RE = re.compile(r'^([a-z_]+ [^\n]*?) -- [^\n]*$', re.M)


def mask(text):
    text = RATE_RE.sub(r'\1TIME', text)
    text = USAGE_RE.sub(r'\1 -- DESCRIPTION', text)
    return TERSE_RE.sub(r'\1,\2,TIME', text)


def base_image(d, fmt):
    """A 1 MiB image of format fmt with known data in its first 64 KiB."""
    path = os.path.join(d, 'base.' + fmt)
    if not os.path.exists(path):
        t = common.tools()
        common.run([t.qemu_img, 'create', '-q', '-f', fmt, path, '1M'])
        common.run([t.qemu_io, '-f', fmt, '-c', 'write -P 0x5a 0 64k',
                    '-c', 'write -P 0x41 4k 16', path])
    return path


def run_both(d, cmds, fmt='qcow2', extra=()):
    t = common.tools()
    reference = os.environ.get('STRATA_IO_REFERENCE') or t.qemu_io
    outs = []
    for name, tool in (('theirs', reference), ('ours', t.io)):
        img = os.path.join(d, '%s.%s' % (name, fmt))
        shutil.copyfile(base_image(d, fmt), img)
        # the image name differs: say IMG in both
        res = common.run([tool, '-f', fmt] + list(extra) +
                         common.io_args(cmds) + [img], rc=None)
        prog = os.path.basename(tool)
        out = mask(common.normalize_prog(res.out.replace(img, 'IMG'), prog))
        err = mask(common.normalize_prog(res.err.replace(img, 'IMG'), prog))
        outs.append((res.rc, out, err, 'exit %d\nstdout:\n%s\nstderr:\n%s'
                     % (res.rc, out, err)))
    return outs


def same_output(cmds, fmt='qcow2', extra=()):
    with common.TempDir() as d:
        theirs, ours = run_both(d, cmds, fmt, extra)
        for what, i in (('exit code', 0), ('stdout', 1), ('stderr', 2)):
            common.check(theirs[i] == ours[i],
                         '%s differs for %s\n--- qemu-io:\n%s\n--- ours:\n%s'
                         % (what, cmds, theirs[3], ours[3]))


CASES = {
    'read': ['read 0 4k', 'read -v 4k 32', 'r -q 0 512', 'read -C 0 512',
             'read -P 0x5a 0 4k', 'read -P 0x5a 0 8k',
             'read -P 0x41 -s 4k -l 16 0 8k', 'read -P 0x5a -s 100 4k 512',
             'read -p 0 1', 'read -P 0 64k 4k'],
    'read-errors': ['read 1M 1', 'read 1020k 8k', 'read 1M 0', 'read -v 1024k 0',
                    'read x 1', 'read 0 1q', 'read 0 3G', 'read 0 99999999999999999999',
                    'read -l 4 0 8', 'read -s 4 0 8', 'read -P 0 -s 8 0 4',
                    'read -P 0 -l 9 0 8', 'read -P 300 0 1', 'read -x 0 1',
                    'read 0', 'read 0 1 2', 'read -b 1 512', 'read -b 0 100'],
    'readv': ['readv 0 512 512', 'readv -v 4k 16 16', 'readv -P 0x5a 0 1k 3k',
              'readv -P 0x5a 60k 4k 4k', 'readv -C 0 512', 'readv -q 0 1'],
    'readv-errors': ['readv 1M 1', 'readv 1020k 4k 4k', 'readv 0 x',
                     'readv 0 3G', 'readv 0 1G 1G', 'readv 0 2047M 2047M',
                     'readv -z 0 1', 'readv 0', 'readv -P x 0 1'],
    'write': ['write 0 4k', 'w -P 0x11 4k 4k', 'write -q 8k 512', 'write -C 0 1',
              'write -z 64k 64k', 'write -zu 128k 64k', 'write -f 0 512',
              'write -p 0 512', 'read -P 0x11 4k 4k', 'read -P 0 64k 128k',
              'read -P 0xcd 0 4k'],
    'write-errors': ['write 1M 1', 'write 1020k 8k', 'write -z 1M 512',
                     'write -b -z 0 1', 'write -f -b 0 1', 'write -f -c 0 512',
                     'write -n 0 1', 'write -u 0 1', 'write -z -P 1 0 1',
                     'write -P 1 -s x 0 1', 'write -s /nonexistent/x 0 1',
                     'write 0 3G', 'write -c 1 512', 'write -c 0 100',
                     'write -b 1 512', 'write -x 0 1', 'write x 1', 'write 0 x',
                     'write 0'],
    'writev': ['writev 0 512 512', 'writev -P 0x22 -f 4k 1k 1k',
               'writev -q 8k 1', 'writev -C 0 1', 'readv -P 0x22 4k 2k'],
    'writev-errors': ['writev 1M 1', 'writev 0 3G', 'writev 0 1G 1G',
                      'writev -z 0 1', 'writev 0', 'writev 0 -1'],
    # one request per aio_flush: when several are in flight, the order in
    # which qemu-io's completions print depends on its event loop
    'aio': ['aio_read 0 4k', 'aio_flush', 'aio_write -P 0x33 8k 512 512',
            'aio_flush', 'aio_read -P 0x33 -v 8k 16 16', 'aio_flush',
            'aio_read -q 0 1', 'aio_flush', 'aio_write -z 64k 4k', 'aio_flush',
            'aio_write -z -u 128k 4k', 'aio_flush', 'aio_read -C 0 512',
            'aio_flush', 'aio_read -P 0x33 0 4k', 'aio_flush',
            'aio_write -f 0 1', 'aio_flush', 'aio_write -q -C 0 1'],
    'aio-errors': ['aio_read 1M 512', 'aio_flush', 'aio_write 1M 512',
                   'aio_flush', 'aio_write -z 1M 1', 'aio_flush',
                   'aio_read -i 0 1', 'aio_write -i 0 1', 'aio_write -z 0 1 1',
                   'aio_write -u 0 1', 'aio_read 0 3G', 'aio_write 0 1G 1G',
                   'aio_read x 1', 'aio_write -x 0 1', 'aio_read 0', 'aio_flush'],
    'aio-at-exit': ['aio_write -P 0x44 0 512'],
    'discard': ['discard 0 64k', 'd -q 64k 4k', 'discard -C 0 512',
                'read -P 0 0 64k', 'discard 1M 1', 'discard 1020k 8k',
                'discard 0 3G', 'discard x 1', 'discard -x 0 1', 'discard 0'],
    'other': ['length', 'flush', 'alloc 0 64k', 'alloc 1M', 'map',
              'truncate 2M', 'length', 'read 1M 4k', 'info'],
}


# Where strata-io's aio output order is its own (it prints held-back
# completions in submission order): compared only between two builds of
# strata-io, with STRATA_IO_REFERENCE naming the other one.
OWN_ORDER_CASES = {
    'aio-order': ['aio_read 0 4k', 'aio_write -P 0x33 8k 512 512', 'read 0 1',
                  'aio_flush', 'aio_read -P 0x33 -v 8k 16 16',
                  'aio_write -z 64k 4k', 'aio_flush', 'aio_read 1M 512',
                  'aio_write 1M 512', 'aio_read 0 1', 'aio_read -P 0x44 0 1'],
}

for _name, _cmds in CASES.items():
    runner.add('io output: %s' % _name, same_output, _cmds)
if os.environ.get('STRATA_IO_REFERENCE'):
    for _name, _cmds in OWN_ORDER_CASES.items():
        runner.add('io output: %s' % _name, same_output, _cmds)

runner.add('io output: raw', same_output, CASES['write'] + CASES['discard'],
           fmt='raw')
runner.add('io output: discard ignored', same_output,
           ['discard 0 64k', 'read -P 0x5a 0 64k', 'write -zu 0 4k',
            'read -P 0 0 4k'], extra=('-d', 'ignore'))
runner.add('io output: writethrough and none', same_output,
           ['write -P 0x66 0 4k', 'writev -f 4k 512', 'read -P 0x66 0 4k'],
           extra=('-t', 'writethrough'))
runner.add('io output: read-only', same_output,
           ['write 0 1', 'discard 0 1', 'read 0 1', 'aio_write 0 1'],
           extra=('-r',))


def help_lines(tool, args):
    res = common.run([tool, '-c', ' '.join(args)], rc=None)
    return res.out.splitlines()


# The part of "help" output scripts rely on: "name synopsis -- ".
SYNOPSIS_RE = re.compile(r'^(\S+ .*?)-- ')
COMMANDS = ['read', 'readv', 'write', 'writev', 'aio_read', 'aio_write',
            'aio_flush', 'discard', 'flush', 'length', 'info', 'alloc', 'map',
            'truncate', 'reopen', 'open', 'close', 'quit', 'help', 'sigraise',
            'sleep', 'abort', 'break', 'remove_break', 'resume', 'wait_break']


def prose(lines):
    """The sentences of a help text: lines with at least four words, spaces
    normalised, the command line itself dropped."""
    out = set()
    for line in lines:
        words = line.replace('--', ' ').split()
        if len(words) >= 4:
            out.add(' '.join(words).lower())
    return out


@runner.case('help: synopses kept, prose our own')
def case_help():
    t = common.tools()
    if t.io_is_qemu:
        raise common.Skip('compares our prose with qemu-io\'s')
    theirs = help_lines(t.qemu_io, ['help'])
    ours = help_lines(t.io, ['help'])
    def synopses(lines):
        return sorted(m.group(1) for m in map(SYNOPSIS_RE.match, lines) if m)
    common.check(synopses(theirs) == synopses(ours),
                 'command list or synopses differ:\n%s\n%s'
                 % (synopses(theirs), synopses(ours)))
    shared = ['help: %s' % s for s in
              prose([l for l in theirs if not SYNOPSIS_RE.match(l)]) &
              prose([l for l in ours if not SYNOPSIS_RE.match(l)])]
    for cmd in COMMANDS:
        a = help_lines(t.qemu_io, ['help', cmd])
        b = help_lines(t.io, ['help', cmd])
        common.check(a and b and SYNOPSIS_RE.match(a[0]).group(1) ==
                     SYNOPSIS_RE.match(b[0]).group(1),
                     'help %s: synopsis differs: %r vs %r' % (cmd, a[:1], b[:1]))
        # the text after " -- " on the first line is prose too
        a[0] = a[0].split(' -- ', 1)[1]
        b[0] = b[0].split(' -- ', 1)[1]
        for s in prose(a) & prose(b):
            shared.append('help %s: %s' % (cmd, s))
    theirs_usage = common.run([t.qemu_io, '--help'], rc=None).out.splitlines()
    ours_usage = common.run([t.io, '--help'], rc=None).out.splitlines()
    for s in prose(theirs_usage[1:]) & prose(ours_usage[1:]):
        shared.append('--help: %s' % s)
    common.check(not shared, 'sentences copied from qemu-io:\n' +
                 '\n'.join(shared))


if __name__ == '__main__':
    sys.exit(runner.main())
