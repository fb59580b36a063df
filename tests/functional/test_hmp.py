#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""strata-daemon's human monitor (HMP) against QEMU's.

The oracle is QEMU without a guest: qemu-system-x86_64 -M none with the
same -blockdev nodes on copies of the same images, driven through QMP's
human-monitor-command.  strata-daemon is driven twice: through a real
terminal (a pty: --chardev stdio with libedit) and through
human-monitor-command.  Outputs are compared line by line after
normalising what legitimately differs between two runs (dates, VM clocks,
VM state sizes, savevm's timestamp names, disk sizes) and apart from the
documented deliberate differences, each named where it is met.

Then the all-or-nothing promises: savevm, writes, loadvm restores every
disk; a savevm that fails on one disk leaves no snapshot anywhere (and
an overwritten one in place); a loadvm that cannot complete reverts no
disk; a snapshot with QEMU's VM state is listed and deletable but not
loaded.

Needs $STRATA_DAEMON, $STRATA_IMG, $STRATA_IO, qemu-img, qemu-io and
qemu-system-x86_64 (skipped, exit 77, without them).
"""

import json
import os
import pty
import re
import select
import shutil
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
from common import Skip, check, fail  # noqa: E402
from qmplib import Daemon  # noqa: E402

runner = common.Runner()
SIZE = 4 << 20
PROMPT = b'(strata) '
QEMU_SYSTEM = os.environ.get('QEMU_SYSTEM', 'qemu-system-x86_64')


def strata_daemon():
    strata = os.environ.get('STRATA_DAEMON')
    if not strata or not os.access(strata, os.X_OK):
        raise Skip('STRATA_DAEMON is not set to strata-daemon')
    return os.path.abspath(strata)


def qemu_system():
    path = shutil.which(QEMU_SYSTEM)
    if not path:
        raise Skip('%s not found (the oracle; Debian: qemu-system-x86)'
                   % QEMU_SYSTEM)
    return path


def blockdev(node, path, read_only=False):
    opts = {'driver': 'qcow2', 'node-name': node,
            'file': {'driver': 'file', 'filename': path}}
    if read_only:
        opts['read-only'] = True
    return json.dumps(opts)


def make_image(path, extra=()):
    common.run(['qemu-img', 'create', '-q', '-f', 'qcow2'] + list(extra) +
               [path, str(SIZE)])


def snapshot_names(path):
    """(id, name) of every snapshot, from qemu-img's JSON."""
    res = common.run(['qemu-img', 'info', '--output=json', '-U', path])
    return [(s['id'], s['name'])
            for s in json.loads(res.out).get('snapshots', [])]


def snapshots_full(path):
    res = common.run(['qemu-img', 'info', '--output=json', '-U', path])
    return json.loads(res.out).get('snapshots', [])


def write(path, pattern, off=0, length=65536):
    common.run(['qemu-io', '-f', 'qcow2', '-c',
                'write -P %d %d %d' % (pattern, off, length), path])


def reads_as(path, pattern, off=0, length=65536):
    res = common.run(['qemu-io', '-f', 'qcow2', '-c',
                      'read -P %d %d %d' % (pattern, off, length), path],
                     rc=None)
    return res.rc == 0 and 'Pattern verification failed' not in res.out


# ---- the three ways in ----

class QemuVM:
    """qemu-system-x86_64 -M none with the nodes; HMP through QMP."""

    def __init__(self, disks, d):
        self.sock_path = os.path.join(d, 'vm-qmp.sock')
        argv = [qemu_system(), '-M', 'none', '-nodefaults', '-display',
                'none', '-qmp', 'unix:%s,server=on,wait=off'
                % self.sock_path]
        for bd in disks:
            argv += ['-blockdev', bd]
        self.proc = subprocess.Popen(argv, cwd=d, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE,
                                     stdin=subprocess.DEVNULL)
        self.sock = common.connect_unix(self.sock_path, self.proc,
                                        'qemu-system', timeout=60)
        self.sock.settimeout(120)
        self.file = self.sock.makefile('rb')
        check('QMP' in json.loads(self.file.readline()), 'no QMP greeting')
        self.qmp({'execute': 'qmp_capabilities'})

    def read(self):
        """The next reply: events, and the second greeting QEMU's monitor
        sends now and then to a client that connects the moment it
        listens (see qmplib.Daemon.read), are not replies."""
        while True:
            msg = json.loads(self.file.readline())
            if 'event' not in msg and 'QMP' not in msg:
                return msg

    def qmp(self, req):
        self.sock.sendall(json.dumps(req).encode() + b'\n')
        return self.read()

    def hmp(self, line):
        r = self.qmp({'execute': 'human-monitor-command',
                      'arguments': {'command-line': line}})
        check('return' in r, 'qemu: %s' % r)
        return r['return']

    def text(self, line):
        return self.hmp(line).replace('\r\n', '\n')

    def quit(self):
        self.qmp({'execute': 'quit'})
        self.proc.communicate(timeout=60)
        self.sock.close()


class StrataQMP:
    """strata-daemon; HMP through human-monitor-command."""

    def __init__(self, disks, d):
        args = []
        for bd in disks:
            args += ['--blockdev', bd]
        self.dm = Daemon(strata_daemon(), args, d)
        check(self.dm.send({'execute': 'qmp_capabilities'}) ==
              [{'return': {}}], 'negotiation')

    def qmp(self, req):
        replies = self.dm.send(req)
        check(len(replies) == 1, 'replies: %s' % replies)
        return replies[0]

    def hmp(self, line):
        r = self.qmp({'execute': 'human-monitor-command',
                      'arguments': {'command-line': line}})
        check('return' in r, 'strata: %s' % r)
        return r['return']

    def text(self, line):
        return self.hmp(line).replace('\r\n', '\n')

    def quit(self):
        check(self.dm.quit() == 0, 'strata-daemon exit status')


ANSI = re.compile(rb'\x1b\[[0-9;?]*[A-Za-z]|[\x07\x08]')


class StrataTerminal:
    """strata-daemon --chardev stdio on a pty: a person typing."""

    def __init__(self, disks, d):
        argv = [strata_daemon(), '--chardev', 'stdio,id=m', '--monitor',
                'chardev=m,mode=readline']
        for bd in disks:
            argv += ['--blockdev', bd]
        self.master, slave = pty.openpty()
        self.proc = subprocess.Popen(argv, cwd=d, stdin=slave, stdout=slave,
                                     stderr=subprocess.PIPE,
                                     start_new_session=True,
                                     preexec_fn=common.limit_resources)
        os.close(slave)
        self.banner = self.until_prompt()

    def until_prompt(self, timeout=60):
        buf = b''
        deadline = time.monotonic() + timeout
        while not buf.endswith(PROMPT):
            if time.monotonic() > deadline:
                fail('no prompt from the terminal monitor; got %r' % buf)
            r, _, _ = select.select([self.master], [], [], 0.5)
            if r:
                try:
                    chunk = os.read(self.master, 65536)
                except OSError:
                    fail('terminal closed; got %r' % buf)
                if not chunk:
                    fail('terminal closed; got %r' % buf)
                buf += chunk
        return buf[:-len(PROMPT)]

    def type(self, text):
        # a person waits for the prompt: libedit owns the terminal only
        # once it reads
        time.sleep(0.05)
        os.write(self.master, text)

    def hmp(self, line):
        self.type(line.encode() + b'\r')
        raw = self.until_prompt()
        text = ANSI.sub(b'', raw).decode(errors='replace')
        lines = text.replace('\r', '').split('\n')
        # the first line is libedit's echo of what was typed
        check(lines[0].endswith(line) or lines[0] == line,
              'echo of %r: %r' % (line, raw))
        return '\n'.join(lines[1:])

    def quit(self):
        self.type(b'quit\r')
        try:
            _, err = self.proc.communicate(timeout=60)
        finally:
            os.close(self.master)
        report = common.sanitizer_report(err.decode(errors='replace'))
        check(not report, 'sanitizer report:\n%s' % report)
        check(self.proc.returncode == 0, 'exit %s' % self.proc.returncode)


# ---- normalisation ----

DATE = re.compile(r'\d{4}-\d\d-\d\d \d\d:\d\d:\d\d')
CLOCK = re.compile(r'\d\d:\d\d:\d\d\.\d{3}')
SIZE_RE = re.compile(r'\b\d+(\.\d+)?(e\+\d+)? [KMGTPE]?i?B\b')
VMTAG = re.compile(r'vm-\d{14}')
PARTIAL = re.compile(r"snapshots on '[^']*':")


def normalise(text):
    """Lines with run-to-run values replaced; table rows keep their
    length, so that the column layout is compared too."""
    out = []
    for line in text.replace('\r\n', '\n').split('\n'):
        row = bool(DATE.search(line))
        length = len(line)
        line = VMTAG.sub('vm-TIMESTAMP', line)
        line = DATE.sub('DATE', line)
        line = CLOCK.sub('CLOCK', line)
        line = SIZE_RE.sub('SIZE', line)
        line = PARTIAL.sub("snapshots on DISK:", line)
        line = re.sub(r' +', ' ', line)
        if row:
            line += '  [%d]' % length
        out.append(line)
    return '\n'.join(out)


# ---- side by side ----

def setup_images(d):
    """Two writable disks and a read-only one with a snapshot of its
    own (read-only disks take no part in savevm and its listings)."""
    for name in ('a', 'b', 'r'):
        make_image(os.path.join(d, name + '.qcow2'))
    write(os.path.join(d, 'a.qcow2'), 1)
    write(os.path.join(d, 'b.qcow2'), 2)
    common.run(['qemu-img', 'snapshot', '-c', 'ro1',
                os.path.join(d, 'r.qcow2')])
    return [blockdev('da', os.path.join(d, 'a.qcow2')),
            blockdev('db', os.path.join(d, 'b.qcow2')),
            blockdev('dr', os.path.join(d, 'r.qcow2'), read_only=True)]


COMMANDS = [
    'info snapshots',
    'savevm s1',
    'info snapshots',
    'snapshot_blkdev_internal da s2',
    'info snapshots',
    'savevm s1',
    'info snapshots',
    'savevm "a b"',
    'savevm',
    'info snapshots',
    'help savevm',
    'help loadvm',
    'help delvm',
    'help snapshot_blkdev',
    'help snapshot_blkdev_internal',
    'help snapshot_delete_blkdev_internal',
    'help info snapshots',
    'help info block',
    'help bogus',
    'bogus_cmd',
    'info bogus',
    'loadvm',
    'loadvm s1 extra',
    'delvm',
    'savevm a b',
    'savevm "abc',
    'savevm "a\\qb"',
    'snapshot_blkdev_internal',
    'snapshot_blkdev_internal da',
    'snapshot_blkdev_internal da x y',
    'snapshot_delete_blkdev_internal da',
    'snapshot_blkdev da',
    'snapshot_blkdev -x da',
    'snapshot_blkdev -e da',
    'snapshot_blkdev -',
    'info block -x',
    'info block -v -n da',
    'info snapshots extra',
    'help info bogus',
    'snapshot_blkdev -n da /nonexistent/ov.qcow2',
    'snapshot_blkdev_internal nodev x',
    'snapshot_blkdev_internal dr x',
    'snapshot_blkdev_internal da s1',
    'snapshot_blkdev_internal da ""',
    'loadvm nope',
    'loadvm s2',
    'loadvm s1',
    'snapshot_delete_blkdev_internal da s2 99',
    'snapshot_delete_blkdev_internal da s2',
    'snapshot_delete_blkdev_internal da s2',
    'info snapshots',
    'delvm s1',
    'info snapshots',
    'delvm nope',
    'info block da',
    'info block -v da',
    'info block -v dr',
    'info block nodev',
    'info version',
    'info block',
    '',
    'info',
    'help',
    'info block-jobs',
    'help info block-jobs',
    'help commit',
    'commit',
    'commit nodev',
    'commit all',
    'commit da',
    'info jobs',
]


def diff_delvm_nowhere(strata, qemu):
    check(strata == "Error: Could not delete snapshot 'nope': snapshot not "
          "found\n", 'delvm nope: %r' % strata)
    return 'deliberate difference 8: delvm of a tag that exists nowhere ' \
        'is an error (QEMU: silent)'


def diff_version(strata, qemu):
    check(re.fullmatch(r'7\.2\.0strata \S+\n', strata), repr(strata))
    return 'info version: QEMU 7.2 with our package name'


def diff_info_block_all(strata, qemu):
    check(qemu == '', 'qemu -M none has no BlockBackends: %r' % qemu)
    check(strata.startswith('da: ') and '\ndb: ' in strata and
          '\ndr: ' in strata and '(qcow2, read-only)' in strata,
          repr(strata))
    return 'info block: strata lists every device\'s root node (QEMU -M ' \
        'none has no BlockBackends and lists none)'


def diff_info_block_leading_blank(strata, qemu):
    # QEMU -M none finds the node among the named nodes and prints the
    # blank separator before every node but the first of ITS list, which
    # starts with the file nodes.
    check(qemu.startswith('\n'), repr(qemu))
    check(normalise(strata) == normalise(qemu[1:]),
          '\n  qemu:   %r\n  strata: %r' % (qemu, strata))
    return 'info block <node>: no leading blank line (QEMU prints one ' \
        'when the node is not first among all named nodes)'


def diff_commit_device(strata, qemu):
    check(qemu == "Device 'da' not found\n", repr(qemu))
    check(strata == "'commit' error for 'da': Operation not supported\n",
          repr(strata))
    return 'commit: strata\'s devices are the nodes (QEMU -M none has no ' \
        'BlockBackend to commit); da has no backing file'


def diff_info_jobs(strata, qemu):
    check(qemu == "unknown command: 'info jobs'\n", repr(qemu))
    check(strata == 'No active jobs\n', repr(strata))
    return 'info jobs: a strata extension (query-jobs as text)'


# strata's HMP commands that QEMU 7.2 lacks: their help lines
EXTENSION_LINES = ('info jobs  -- ',)


def diff_subset(strata, qemu):
    """help/info: strata has fewer commands; each line it prints is one
    of QEMU's, word for word (or one of the named extensions)."""
    theirs = set(qemu.split('\n'))
    ours = [ln for ln in strata.split('\n') if ln
            and not ln.startswith(EXTENSION_LINES)]
    check(len(ours) >= 3, repr(strata))
    for ln in ours:
        check(ln in theirs, 'not in QEMU\'s list: %r' % ln)
    return 'help/info list only the commands strata has (%d lines, each ' \
        'QEMU\'s)' % len(ours)


DIFFERENCES = {
    'delvm nope': diff_delvm_nowhere,
    'info version': diff_version,
    'info block': diff_info_block_all,
    'info block da': diff_info_block_leading_blank,
    'info block -v da': diff_info_block_leading_blank,
    'info': diff_subset,
    'help': diff_subset,
    'commit da': diff_commit_device,
    'info jobs': diff_info_jobs,
}


def run_commands(side, commands):
    out = []
    try:
        for c in commands:
            out.append(side.hmp(c))
    finally:
        side.quit()
    return out


@runner.case('commands_match_qemu')
def commands_match_qemu():
    """Every command through a pty and through human-monitor-command,
    outputs equal to QEMU's (-M none, human-monitor-command) after
    normalisation, the images' snapshot lists equal and clean."""
    qemu_system()
    strata_daemon()
    with common.TempDir('strata-hmp-') as tmp:
        dirs = {k: os.path.join(tmp, k) for k in ('qemu', 'pty', 'qmp')}
        outs = {}
        for side, d in dirs.items():
            os.mkdir(d)
            disks = setup_images(d)
            cls = {'qemu': QemuVM, 'pty': StrataTerminal,
                   'qmp': StrataQMP}[side]
            outs[side] = run_commands(cls(disks, d), COMMANDS)
        for side, d in dirs.items():
            outs[side] = [o.replace(d, '$DIR') for o in outs[side]]
        for i, c in enumerate(COMMANDS):
            q = outs['qemu'][i].replace('\r\n', '\n')
            s = outs['qmp'][i]
            check('\n' not in s.replace('\r\n', ''),
                  'human-monitor-command output not CRLF: %r' % s)
            s = s.replace('\r\n', '\n')
            t = outs['pty'][i]
            # the terminal shows the same text as human-monitor-command
            check(normalise(t) == normalise(s),
                  '%r: terminal %r, human-monitor-command %r' % (c, t, s))
            if c in DIFFERENCES:
                print('  difference at %r: %s' % (c, DIFFERENCES[c](s, q)))
                continue
            check(normalise(s) == normalise(q),
                  '%r:\n  qemu:   %r\n  strata: %r' % (c, q, s))
        for name in ('a', 'b', 'r'):
            lists = {side: snapshot_names(os.path.join(d, name + '.qcow2'))
                     for side, d in dirs.items()}
            norm = {k: [(i, VMTAG.sub('vm-T', n)) for i, n in v]
                    for k, v in lists.items()}
            check(norm['qemu'] == norm['pty'] == norm['qmp'],
                  '%s snapshots: %s' % (name, lists))
            for d in dirs.values():
                common.qemu_check_clean(os.path.join(d, name + '.qcow2'))
        # strata stores no VM state; QEMU's savevm stores it on one disk
        for s in snapshots_full(os.path.join(dirs['qmp'], 'a.qcow2')):
            check(s['vm-state-size'] == 0, 'strata VM state: %s' % s)
        print('  difference: VM SIZE is 0 B in strata\'s snapshots (no VM '
              'state), QEMU stores its machine state on the first disk')


def side_by_side(name, make_disks, commands, differences=None):
    """commands on QEMU and on strata (human-monitor-command), each on
    its own copy of the images made by make_disks(d) -> blockdevs;
    outputs equal after normalisation; after(dq, ds) compares the
    images."""
    with common.TempDir('strata-hmp-') as tmp:
        outs = {}
        dirs = {}
        for side, cls in (('qemu', QemuVM), ('strata', StrataQMP)):
            d = dirs[side] = os.path.join(tmp, side)
            os.mkdir(d)
            disks = make_disks(d)
            outs[side] = [o.replace(d, '$DIR') for o in
                          run_commands(cls(disks, d),
                                       [c.replace('{D}', d)
                                        for c in commands])]
        for i, c in enumerate(commands):
            q = outs['qemu'][i].replace('\r\n', '\n')
            s = outs['strata'][i].replace('\r\n', '\n')
            if differences and c in differences:
                want, reason = differences[c]
                check(s == want, '%s %r: %r, want %r' % (name, c, s, want))
                print('  difference at %r (%s): QEMU %r' % (c, reason, q))
                continue
            check(normalise(s) == normalise(q),
                  '%s %r:\n  qemu:   %r\n  strata: %r' % (name, c, q, s))


@runner.case('object_add_del')
def object_add_del():
    """object_add / object_del of secrets (one plain, one encrypted with a
    master key as libvirt gives them), their errors, and help's lines,
    as QEMU prints them; the secret then opens an encrypted image over
    QMP (blockdev-add with encrypt.key-secret)."""
    master = ('secret,id=m,format=base64,data=AAECAwQFBgcICQoLDA0ODxAREhMU'
              'FRYXGBkaGxwdHh8=')
    cmds = ['help object_add', 'help object_del',
            'object_add ' + master,
            'object_add secret,id=k1,keyid=m,iv=oKGio6SlpqeoqaqrrK2urw==,'
            'format=base64,data=J72nCQpnE4fUl6jlhNY4tA==',
            'object_add qom-type=secret,id=k2,data=astrochicken',
            'object_add secret,id=k2,data=x',
            'object_add secret,id=k3,keyid=m,data=abc',
            'object_add secret,id=k3,format=hex,data=x',
            'object_add secret,data=x',
            'object_del k2', 'object_del k2', 'object_del nope']
    side_by_side('object_add', lambda d: [], cmds)
    # the decrypted secret is the image's password: over QMP on strata
    with common.TempDir('strata-hmp-') as d:
        img = os.path.join(d, 'e.qcow2')
        common.run(['qemu-img', 'create', '-q', '-f', 'qcow2', '--object',
                    'secret,id=s,data=astrochicken', '-o',
                    'encrypt.format=luks,encrypt.key-secret=s,'
                    'encrypt.iter-time=10', img, '1M'])
        side = StrataQMP([], d)
        try:
            check(side.hmp('object_add ' + master) == '', 'master')
            check(side.hmp('object_add secret,id=k1,keyid=m,iv=oKGio6SlpqeoqaqrrK2urw==,'
                           'format=base64,data=J72nCQpnE4fUl6jlhNY4tA==') == '',
                  'k1')
            r = side.dm.send({'execute': 'blockdev-add', 'arguments': {
                'driver': 'qcow2', 'node-name': 'e0',
                'file': {'driver': 'file', 'filename': img},
                'encrypt': {'format': 'luks', 'key-secret': 'k1'}}})[-1]
            check(r == {'return': {}}, 'blockdev-add with k1: %r' % r)
        finally:
            side.quit()


@runner.case('no_snapshot_capable_disk')
def no_snapshot_capable_disk():
    """No disk at all, and a writable raw disk: QEMU's refusals of
    savevm/loadvm/delvm and info snapshots' text (qemu-iotests 267)."""
    cmds = ['info snapshots', 'savevm s0', 'loadvm s0', 'delvm s0',
            'info snapshots']
    nowhere = {'delvm s0': ("Error: Could not delete snapshot 's0': "
                            "snapshot not found\n",
                            'deliberate difference 8: delvm of a tag that '
                            'exists nowhere is an error')}
    side_by_side('no disk', lambda d: [], cmds, nowhere)

    def raw_disk(d):
        path = os.path.join(d, 'r.raw')
        common.run(['qemu-img', 'create', '-q', '-f', 'raw', path,
                    str(SIZE)])
        return [json.dumps({'driver': 'raw', 'node-name': 'rw',
                            'file': {'driver': 'file', 'filename': path}})]
    side_by_side('raw disk', raw_disk, cmds + [
        'snapshot_blkdev_internal rw s0'])


@runner.case('savevm_file_node_by_reference')
def savevm_file_node_by_reference():
    """libvirt's layout (a file node, then a qcow2 node naming it): the
    file node is no disk of its own, so savevm, info snapshots and delvm
    see the qcow2 node only, as in QEMU."""
    def disks(d):
        make_image(os.path.join(d, 'a.qcow2'))
        return [json.dumps({'driver': 'file', 'node-name': 'fa',
                            'filename': os.path.join(d, 'a.qcow2')}),
                json.dumps({'driver': 'qcow2', 'node-name': 'qa',
                            'file': 'fa'})]
    side_by_side('file node by reference', disks, [
        'savevm s1', 'info snapshots', 'snapshot_blkdev_internal qa s2',
        'info snapshots', 'delvm s1', 'info snapshots'])


@runner.case('info_block_modes')
def info_block_modes():
    """info block shows a node's cache mode and detect-zeroes as QEMU
    prints them (it printed "writeback" whatever the node's mode)."""
    def disks(d):
        make_image(os.path.join(d, 'a.qcow2'))
        opts = json.loads(blockdev('da', os.path.join(d, 'a.qcow2')))
        opts.update({'cache': {'direct': True, 'no-flush': True},
                     'discard': 'unmap', 'detect-zeroes': 'unmap'})
        return [json.dumps(opts)]
    outs = {}
    with common.TempDir('strata-hmp-') as tmp:
        for side, cls in (('qemu', QemuVM), ('strata', StrataQMP)):
            d = os.path.join(tmp, side)
            os.mkdir(d)
            vm = cls(disks(d), d)
            try:
                outs[side] = normalise(vm.text('info block -n da')
                                       .lstrip('\n')).replace(d, 'DIR')
            finally:
                vm.quit()
    check(outs['qemu'] == outs['strata'], '\n  qemu:   %r\n  strata: %r'
          % (outs['qemu'], outs['strata']))
    check('writeback, direct, ignore flushes' in outs['strata'] and
          'Detect zeroes: unmap' in outs['strata'], repr(outs['strata']))


@runner.case('snapshot_blkdev_external')
def snapshot_blkdev_external():
    """snapshot_blkdev names a device (a BlockBackend); neither QEMU -M
    none nor strata-daemon has named devices, so both refuse it with the
    same text, and change nothing; the QMP command it stands for, on the
    node, then makes the same chains on both."""
    def disks(d):
        make_image(os.path.join(d, 'a.qcow2'))
        make_image(os.path.join(d, 'b.qcow2'))
        make_image(os.path.join(d, 'b-ov.qcow2'),
                   ['-b', os.path.join(d, 'b.qcow2'), '-F', 'qcow2'])
        return [blockdev('da', os.path.join(d, 'a.qcow2')),
                blockdev('db', os.path.join(d, 'b.qcow2'))]
    outs = {}
    with common.TempDir('strata-hmp-') as tmp:
        dirs = {}
        for side, cls in (('qemu', QemuVM), ('strata', StrataQMP)):
            d = dirs[side] = os.path.join(tmp, side)
            os.mkdir(d)
            vm = cls(disks(d), d)
            try:
                outs[side] = [vm.text(c % d) for c in (
                    'snapshot_blkdev da %s/a-ov.qcow2',
                    'snapshot_blkdev -n db %s/b-ov.qcow2 qcow2')]
                check(not os.path.exists(os.path.join(d, 'a-ov.qcow2')),
                      '%s created the overlay' % side)
                for req in ({'node-name': 'da', 'format': 'qcow2',
                             'snapshot-node-name': 'ova',
                             'snapshot-file': d + '/a-ov.qcow2'},
                            {'node-name': 'db', 'format': 'qcow2',
                             'snapshot-node-name': 'ovb',
                             'mode': 'existing',
                             'snapshot-file': d + '/b-ov.qcow2'}):
                    r = vm.qmp({'execute': 'blockdev-snapshot-sync',
                                'arguments': req})
                    check(r == {'return': {}}, '%s: %s' % (side, r))
            finally:
                vm.quit()
        check(outs['qemu'] == outs['strata'] == [
            "Error: Cannot find device='da' nor node-name=''\n",
            "Error: Cannot find device='db' nor node-name=''\n"],
            repr(outs))
        for f in ('a-ov.qcow2', 'b-ov.qcow2'):
            facts = [qemu_img_chain(os.path.join(d, f), d)
                     for d in dirs.values()]
            check(facts[0] == facts[1], '%s:\n  qemu:   %s\n  strata: %s'
                  % (f, facts[0], facts[1]))
            for d in dirs.values():
                common.qemu_check_clean(os.path.join(d, f))


def qemu_img_chain(path, d):
    res = common.run(['qemu-img', 'info', '--output=json',
                      '--backing-chain', '-U', path])
    out = []
    for img in json.loads(res.out):
        out.append({k: (v.replace(d, '$DIR') if isinstance(v, str) else v)
                    for k, v in img.items()
                    if k in ('filename', 'format', 'virtual-size',
                             'backing-filename', 'full-backing-filename',
                             'backing-filename-format')})
    return out


@runner.case('human_monitor_command_qmp')
def human_monitor_command_qmp():
    """The QMP command itself: exact replies equal to QEMU's (CRLF text,
    "" for a silent command, cpu-index accepted, argument errors)."""
    with common.TempDir('strata-hmp-') as tmp:
        reqs = [
            {'execute': 'human-monitor-command',
             'arguments': {'command-line': 'help savevm'}},
            {'execute': 'human-monitor-command',
             'arguments': {'command-line': 'savevm t1'}},
            {'execute': 'human-monitor-command',
             'arguments': {'command-line': 'savevm t2', 'cpu-index': 0}},
            {'execute': 'human-monitor-command',
             'arguments': {'command-line': 'loadvm'}},
            {'execute': 'human-monitor-command', 'arguments': {}},
            {'execute': 'human-monitor-command',
             'arguments': {'command-line': 1}},
            {'execute': 'human-monitor-command',
             'arguments': {'command-line': 'x', 'bogus': 1}},
        ]
        got = {}
        for side, cls in (('qemu', QemuVM), ('strata', StrataQMP)):
            d = os.path.join(tmp, side)
            os.mkdir(d)
            make_image(os.path.join(d, 'a.qcow2'))
            vm = cls([blockdev('da', os.path.join(d, 'a.qcow2'))], d)
            try:
                got[side] = [vm.qmp(r) for r in reqs]
            finally:
                vm.quit()
        for i, r in enumerate(reqs):
            check(got['qemu'][i] == got['strata'][i],
                  '%s:\n  qemu:   %s\n  strata: %s' % (
                      json.dumps(r), got['qemu'][i], got['strata'][i]))
        check(got['strata'][1] == {'return': ''}, got['strata'][1])


BLOCK_JOB_LINE = re.compile(r'Completed \d+ of \d+ bytes')


@runner.case('chain_commit_and_jobs')
def chain_commit_and_jobs():
    """On a two-image chain: info block -v prints the backing image after
    the top one as QEMU does; info block-jobs shows a running commit job
    as QEMU's (progress figures normalised) and info jobs lists it; then
    strata's commit merges the top into the backing file and empties it
    (QEMU -M none has no BlockBackend to commit: its text is shown)."""
    def disks(d):
        base, top = os.path.join(d, 'base.qcow2'), os.path.join(d, 'a.qcow2')
        make_image(base)
        write(base, 5)
        make_image(top, ['-b', base, '-F', 'qcow2'])
        write(top, 7, off=65536)
        return [blockdev('da', top)]
    outs = {}
    with common.TempDir('strata-hmp-') as tmp:
        dirs = {}
        for side, cls in (('qemu', QemuVM), ('strata', StrataQMP)):
            d = dirs[side] = os.path.join(tmp, side)
            os.mkdir(d)
            vm = cls(disks(d), d)
            try:
                out = [vm.text('info block -v da'), vm.text('info block-jobs')]
                r = vm.qmp({'execute': 'block-commit', 'arguments': {
                    'device': 'da', 'job-id': 'c1', 'speed': 1}})
                check(r == {'return': {}}, '%s: %s' % (side, r))
                out.append(vm.text('info block-jobs'))
                if side == 'strata':
                    jobs = vm.text('info jobs')
                    check(re.fullmatch(r'Job c1: type commit, status '
                                       r'(running|ready), progress \d+ of '
                                       r'\d+\n', jobs), repr(jobs))
                r = vm.qmp({'execute': 'block-job-cancel', 'arguments': {
                    'device': 'c1', 'force': True}})
                check(r == {'return': {}}, '%s: %s' % (side, r))
                deadline = time.monotonic() + 60
                while vm.text('info block-jobs') != 'No active jobs\n':
                    check(time.monotonic() < deadline, 'job stays')
                    time.sleep(0.1)
                out.append(vm.text('commit da'))
            finally:
                vm.quit()
            outs[side] = [o.replace(d, '$DIR') for o in out]
        q, s = outs['qemu'], outs['strata']
        check(normalise(q[0][1:]) == normalise(s[0]) and
              '\nimage: $DIR/base.qcow2\n' in s[0],
              'info block -v:\n  qemu:   %r\n  strata: %r' % (q[0], s[0]))
        check(q[1] == s[1] == 'No active jobs\n', repr((q[1], s[1])))
        check(BLOCK_JOB_LINE.sub('Completed N of N bytes', q[2]) ==
              BLOCK_JOB_LINE.sub('Completed N of N bytes', s[2]) ==
              'Type commit, device c1: Completed N of N bytes, speed limit '
              '1 bytes/s\n', repr((q[2], s[2])))
        check(q[3] == "Device 'da' not found\n", repr(q[3]))
        check(s[3] == '', 'strata commit: %r' % s[3])
        print('  difference at \'commit da\': QEMU -M none %r, strata '
              'commits' % q[3])
        d = dirs['strata']
        base, top = os.path.join(d, 'base.qcow2'), os.path.join(d, 'a.qcow2')
        check(reads_as(base, 7, off=65536) and reads_as(base, 5),
              'base does not hold the merged data')
        res = common.run(['qemu-img', 'map', '--output=json', top])
        check(all(e['depth'] > 0 for e in json.loads(res.out)),
              'top not emptied: %s' % res.out)
        check(reads_as(top, 7, off=65536), 'top reads differently')
        for p in (base, top):
            common.qemu_check_clean(p)


def daemon_with(disks, d):
    return StrataQMP(disks, d)


@runner.case('savevm_writes_loadvm_restores')
def savevm_writes_loadvm_restores():
    """savevm, then writes to every disk, then loadvm: every disk reads
    as at savevm again; a read-only disk is left alone."""
    with common.TempDir('strata-hmp-') as d:
        disks = setup_images(d)
        a, b, r = (os.path.join(d, n + '.qcow2') for n in 'abr')
        vm = daemon_with(disks, d)
        check(vm.text('savevm keep') == '', 'savevm')
        vm.quit()
        write(a, 0x11)
        write(b, 0x22, off=1 << 20)
        check(reads_as(a, 0x11) and reads_as(b, 0x22, off=1 << 20),
              'writes did not land')
        vm = daemon_with(disks, d)
        check(vm.text('loadvm keep') == '', 'loadvm')
        vm.quit()
        check(reads_as(a, 1), 'disk a not restored')
        check(reads_as(b, 2) and reads_as(b, 0, off=1 << 20),
              'disk b not restored')
        check(snapshot_names(r) == [('1', 'ro1')], 'read-only disk touched')
        for p in (a, b, r):
            common.qemu_check_clean(p)


@runner.case('savevm_fails_on_one_disk')
def savevm_fails_on_one_disk():
    """A savevm that one disk refuses (refcount_bits=1 cannot share a
    cluster) or that is refused as a whole (name too long) leaves no
    snapshot on any disk; an existing snapshot of that tag, which savevm
    would replace, is still there unchanged; every image checks clean."""
    with common.TempDir('strata-hmp-') as d:
        a, b = os.path.join(d, 'a.qcow2'), os.path.join(d, 'b.qcow2')
        make_image(a)
        make_image(b, ['-o', 'refcount_bits=1'])
        write(a, 1)
        write(b, 2)
        disks = [blockdev('da', a), blockdev('db', b)]
        vm = daemon_with(disks, d)
        out = vm.text('savevm s1')
        check(out.startswith('Error: ') and 'refcount' in out, repr(out))
        check(snapshot_names(a) == [] and snapshot_names(b) == [],
              'snapshots left: %s %s' % (snapshot_names(a),
                                          snapshot_names(b)))
        # the tag exists on the first disk only: savevm would replace it
        check(vm.text('snapshot_blkdev_internal da s1') == '', 'internal')
        before = snapshots_full(a)
        out = vm.text('savevm s1')
        check(out.startswith('Error: '), repr(out))
        check(snapshots_full(a) == before,
              'the replaced snapshot is gone or changed: %s -> %s'
              % (before, snapshots_full(a)))
        check(snapshot_names(b) == [], 'snapshot on b')
        long_tag = 'x' * 256
        out = vm.text('savevm ' + long_tag)
        check(out.startswith('Error: '), repr(out))
        print('  difference: a 256-byte tag is refused (%s); QEMU '
              'truncates it to 255 bytes (deliberate difference 5)'
              % out.strip())
        check(vm.text('info snapshots').split('\n')[:1] ==
              ['List of snapshots present on all disks:'], 'listing')
        vm.quit()
        check(snapshot_names(a) == [('1', 's1')] and snapshot_names(b) == [],
              'after: %s %s' % (snapshot_names(a), snapshot_names(b)))
        for p in (a, b):
            common.qemu_check_clean(p)
        check(reads_as(a, 1) and reads_as(b, 2), 'data changed')


@runner.case('loadvm_reverts_none_when_incomplete')
def loadvm_reverts_none_when_incomplete():
    """loadvm of a tag one disk lacks reverts no disk (QEMU's message);
    nor does a loadvm that a disk refuses during the transaction."""
    with common.TempDir('strata-hmp-') as d:
        disks = setup_images(d)
        a, b = os.path.join(d, 'a.qcow2'), os.path.join(d, 'b.qcow2')
        vm = daemon_with(disks, d)
        check(vm.text('savevm both') == '', 'savevm')
        check(vm.text('snapshot_delete_blkdev_internal db both') == '',
              'delete on b')
        vm.quit()
        write(a, 0x33)
        write(b, 0x44)
        vm = daemon_with(disks, d)
        out = vm.text('loadvm both')
        check(out == "Error: Snapshot 'both' does not exist in one or more "
              "devices\n", repr(out))
        vm.quit()
        check(reads_as(a, 0x33) and reads_as(b, 0x44),
              'a disk was reverted')
        for p in (a, b):
            common.qemu_check_clean(p)


@runner.case('qemu_vm_state_listed_not_loaded')
def qemu_vm_state_listed_not_loaded():
    """Images QEMU's savevm wrote (VM state on the first disk): strata's
    info snapshots lists them as QEMU does, loadvm refuses them (no VM to
    restore, and not disk-only behind the user's back) without reverting
    anything, delvm deletes them and the images check clean."""
    with common.TempDir('strata-hmp-') as d:
        a, b = os.path.join(d, 'a.qcow2'), os.path.join(d, 'b.qcow2')
        make_image(a)
        make_image(b)
        disks = [blockdev('da', a), blockdev('db', b)]
        vm = QemuVM(disks, d)
        check(vm.text('savevm q1') == '', 'qemu savevm')
        qlist = vm.text('info snapshots').replace('\r\n', '\n')
        vm.quit()
        vm_size = snapshots_full(a)[0]['vm-state-size']
        check(vm_size > 0, 'qemu stored no VM state')
        write(a, 0x55)
        write(b, 0x66)
        vm = daemon_with(disks, d)
        slist = vm.text('info snapshots').replace('\r\n', '\n')
        check(normalise(slist) == normalise(qlist),
              'info snapshots:\n  qemu:   %r\n  strata: %r' % (qlist, slist))
        # the VM SIZE column is QEMU's own figure, not normalised away
        size_col = qlist.split('\n')[2][28:36]
        check(size_col.strip() and size_col in slist, repr(size_col))
        out = vm.text('loadvm q1')
        check(out.startswith("Error: Snapshot 'q1' on 'da' holds VM state"),
              repr(out))
        print('  difference: %s' % out.strip())
        check(vm.text('delvm q1') == '', 'delvm')
        vm.quit()
        check(reads_as(a, 0x55) and reads_as(b, 0x66), 'reverted')
        check(snapshot_names(a) == [] and snapshot_names(b) == [],
              'not deleted')
        for p in (a, b):
            common.qemu_check_clean(p)


@runner.case('strata_images_load_in_qemu')
def strata_images_load_in_qemu():
    """A savevm of strata's is seen by QEMU's info snapshots as present
    on all disks; QEMU refuses to load it (disk-only), as documented."""
    with common.TempDir('strata-hmp-') as d:
        a, b = os.path.join(d, 'a.qcow2'), os.path.join(d, 'b.qcow2')
        make_image(a)
        make_image(b)
        disks = [blockdev('da', a), blockdev('db', b)]
        vm = daemon_with(disks, d)
        check(vm.text('savevm s9') == '', 'savevm')
        vm.quit()
        vm = QemuVM(disks, d)
        listing = vm.text('info snapshots').replace('\r\n', '\n')
        out = vm.text('loadvm s9')
        vm.quit()
        check(listing.startswith('List of snapshots present on all disks:'
                                 '\n') and '--        s9 ' in listing,
              repr(listing))
        check('disk-only snapshot' in out, repr(out))
        print('  QEMU on strata\'s savevm: %s' % out.strip())


@runner.case('terminal_editing')
def terminal_editing():
    """On the terminal, libedit edits the line (cursor keys, insertion)
    and keeps a history (up arrow recalls the last line)."""
    with common.TempDir('strata-hmp-') as d:
        a = os.path.join(d, 'a.qcow2')
        make_image(a)
        term = StrataTerminal([blockdev('da', a)], d)
        try:
            check(term.banner.endswith(b"monitor - type 'help' for more "
                                       b"information\r\r\n") or
                  term.banner.endswith(b"monitor - type 'help' for more "
                                       b"information\r\n"),
                  repr(term.banner))
            # "savevm ab", two steps left (between "savevm " and "ab"),
            # "x": the line is "savevm xab"
            term.type(b'savevm ab\x1b[D\x1b[Dx\r')
            term.until_prompt()
            # up arrow recalls "savevm xab", cursor at its end; "2"
            term.type(b'\x1b[A')
            time.sleep(0.2)
            term.type(b'2\r')
            term.until_prompt()
            out = term.hmp('info snapshots')
        finally:
            term.quit()
        check('\n--        xab ' in out and '\n--        xab2 ' in out,
              repr(out))
        check([n for _, n in snapshot_names(a)] == ['xab', 'xab2'],
              snapshot_names(a))


@runner.case('socket_monitor')
def socket_monitor():
    """--monitor chardev=ID,mode=readline on a unix socket: banner,
    prompt, each line echoed then its output, CRLF; quit ends the
    daemon; the socket is removed."""
    with common.TempDir('strata-hmp-') as d:
        a = os.path.join(d, 'a.qcow2')
        make_image(a)
        sock_path = os.path.join(d, 'h.sock')
        p = subprocess.Popen([strata_daemon(), '--blockdev',
                              blockdev('da', a), '--chardev',
                              'socket,id=h,path=%s,server=on,wait=off'
                              % sock_path, '--monitor',
                              'chardev=h,mode=readline'],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             preexec_fn=common.limit_resources)
        s = common.connect_unix(sock_path, p, 'strata-daemon')
        check(oct(os.stat(sock_path).st_mode & 0o777) == '0o600',
              'socket mode')
        s.settimeout(60)

        def until_prompt():
            buf = b''
            while not buf.endswith(PROMPT):
                chunk = s.recv(4096)
                check(chunk, 'closed: %r' % buf)
                buf += chunk
            return buf
        banner = until_prompt()
        check(re.fullmatch(rb"strata \S+ monitor - type 'help' for more "
                           rb"information\r\n\(strata\) ", banner),
              repr(banner))
        s.sendall(b'savevm s1\n')
        check(until_prompt() == b'savevm s1\r\n(strata) ', 'savevm')
        s.sendall(b'info snapshots\n')
        out = until_prompt()
        check(out.startswith(b'info snapshots\r\nList of snapshots present '
                             b'on all disks:\r\n') and b'\n--        s1 '
              in out, repr(out))
        s.sendall(b'quit\n')
        _, err = p.communicate(timeout=60)
        s.close()
        report = common.sanitizer_report(err.decode(errors='replace'))
        check(not report, report)
        check(p.returncode == 0, 'exit %s' % p.returncode)
        check(not os.path.exists(sock_path), 'socket left behind')
        check(snapshot_names(a) == [('1', 's1')], 'snapshot')


@runner.case('command_line')
def command_line():
    """The options of the readline monitor: stdio once only, QMP not on
    stdio, an unknown mode refused as QEMU refuses it; nothing starts."""
    strata = strata_daemon()
    cases = [
        (['--chardev', 'stdio,id=m', '--chardev', 'stdio,id=n'],
         'cannot use stdio by multiple character devices'),
        (['--chardev', 'stdio,id=m', '--monitor', 'chardev=m'],
         'strata-daemon supports QMP on sockets only'),
        (['--chardev', 'stdio,id=m', '--monitor', 'chardev=m,mode=bogus'],
         "Parameter 'mode' does not accept value 'bogus'"),
        (['--chardev', 'stdio,id=m,path=/x'],
         'Invalid parameter for a stdio chardev'),
        (['--chardev', 'stdio,id=m', '--monitor', 'chardev=m,mode=readline',
          '--daemonize'], 'cannot use stdio with -daemonize'),
    ]
    for args, want in cases:
        res = subprocess.run([strata] + args, capture_output=True,
                             timeout=60, stdin=subprocess.DEVNULL)
        err = res.stderr.decode(errors='replace')
        check(res.returncode == 1 and want in err,
              '%s: rc %s, %r' % (args, res.returncode, err))


if __name__ == '__main__':
    sys.exit(runner.main())
