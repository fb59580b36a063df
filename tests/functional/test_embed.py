#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""The embedding API as a program outside the tree sees it.

The build is installed (`meson install --destdir`) into a temporary
directory; only include/strata/ headers, libstrata.so.0 and strata.pc may
be what a program builds against.  examples/minivm.c is compiled with
`cc $(pkg-config --cflags --libs strata ...)` against that installation
(PKG_CONFIG_SYSROOT_DIR points pkg-config into it), and run: guest
threads write sequenced records to 4 disks while QMP transactions sent to
minivm's own socket (forwarded to libstrata) snapshot all 4, internal and
external snapshots in turn, plus an HMP savevm.  Afterwards every
snapshot set must hold exactly records 1..M on all disks together (a
consistent cut, as tests/functional/test_qmp_cut.py checks for
strata-daemon), the guest must have seen no error, and the pause hook
must have been called once per transaction.  The library's dynamic
symbol table must export exactly the functions its headers declare.

Needs meson, cc, pkg-config, nm, qemu-img; the build directory is found
from $STRATA_IMG (BUILD/tools/img/strata-img).  Skips (77) without them.
"""

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
from common import Skip, check  # noqa: E402
from test_qmp_cut import round_actions, top_during  # noqa: E402

runner = common.Runner()

SRC = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
NDEV = 4
REC = 512
ROUNDS = 8
SIZE = 32 << 20     # room for the guest to write through every round
MAGIC = b'strata-cut-record'
MULT = 2654435761

_install = {}


def build_dir():
    img = os.environ.get('STRATA_IMG')
    if not img:
        raise Skip('STRATA_IMG is not set')
    d = os.path.dirname(os.path.dirname(os.path.dirname(
        os.path.abspath(img))))
    if not os.path.isdir(os.path.join(d, 'meson-private')):
        raise Skip('%s is not a meson build directory' % d)
    return d


def need(prog):
    path = shutil.which(prog)
    if not path:
        raise Skip('%s not found' % prog)
    return path


def installation(tmp):
    """Installs the build under tmp/root once; returns facts about it."""
    if _install:
        return _install
    meson = need('meson')
    for p in ('cc', 'pkg-config', 'nm', 'readelf', 'qemu-img'):
        need(p)
    root = os.path.join(tmp, 'root')
    common.run([meson, 'install', '-C', build_dir(), '--no-rebuild',
                '--quiet', '--destdir', root], timeout=600)
    pcs = []
    for dirpath, _, files in os.walk(root):
        pcs += [os.path.join(dirpath, f) for f in files if f == 'strata.pc']
    check(len(pcs) == 1, 'strata.pc installed %d times: %s' % (len(pcs),
                                                                pcs))
    # The installation was made for its prefix; moved under root, its
    # strata.pc gets the prefix moved too (what a relocated package
    # does), so pkg-config's other packages (GLib) stay the system's.
    pcdir = os.path.join(tmp, 'pkgconfig')
    os.makedirs(pcdir, exist_ok=True)
    with open(pcs[0]) as f:
        pc = f.read()
    check(re.search(r'^prefix=/', pc, re.M), 'strata.pc has no prefix')
    pc = re.sub(r'^prefix=(.*)$', lambda m: 'prefix=' + root + m.group(1),
                pc, count=1, flags=re.M)
    with open(os.path.join(pcdir, 'strata.pc'), 'w') as f:
        f.write(pc)
    env = dict(os.environ, PKG_CONFIG_PATH=pcdir)

    def var(name):
        return subprocess.run(['pkg-config', '--variable=' + name,
                               'strata'], env=env, capture_output=True,
                              text=True, check=True).stdout.strip()
    libdir, incdir = var('libdir'), var('includedir')
    check(libdir.startswith(root) and incdir.startswith(root),
          'strata.pc paths outside the installation: %s %s' % (libdir,
                                                               incdir))
    _install.update(root=root, env=env, libdir=libdir, incdir=incdir)
    return _install


@runner.case('installed_files')
def installed_files():
    """Only the public headers are installed; the library has its soname
    and strata.pc points at them."""
    with common.TempDir('strata-embed-') as tmp:
        _install.clear()
        inst = installation(tmp)
        headers = []
        for dirpath, _, files in os.walk(inst['incdir']):
            headers += [os.path.relpath(os.path.join(dirpath, f),
                                        inst['incdir']) for f in files]
        want = sorted('strata/' + f for f in os.listdir(
            os.path.join(SRC, 'include', 'strata')) if f.endswith('.h'))
        want = sorted(want + ['strata/version.h'])
        check(sorted(headers) == want,
              'installed headers %s, want %s' % (sorted(headers), want))
        lib = os.path.join(inst['libdir'], 'libstrata.so.0')
        check(os.path.exists(lib), 'no libstrata.so.0 in %s' % inst['libdir'])
        dyn = common.run(['readelf', '-d', lib]).out
        check('Library soname: [libstrata.so.0]' in dyn,
              'soname is not libstrata.so.0:\n%s' % dyn)
        flags = subprocess.run(['pkg-config', '--cflags', '--libs',
                                'strata'], env=inst['env'],
                               capture_output=True, text=True,
                               check=True).stdout.split()
        check('-lstrata' in flags, 'pkg-config --libs: %s' % flags)
        _install.clear()


def declared_functions(incdir):
    """Functions declared in the installed strata/*.h, by header."""
    out = {}
    for f in sorted(os.listdir(os.path.join(incdir, 'strata'))):
        if not f.endswith('.h'):
            continue
        with open(os.path.join(incdir, 'strata', f)) as fh:
            text = re.sub(r'/\*.*?\*/', '', fh.read(), flags=re.S)
        out[f] = set(re.findall(r'\b(strata_\w+)\s*\(', text))
    return out


@runner.case('exported_symbols')
def exported_symbols():
    """nm -D --defined-only: every exported symbol is a function of the
    public headers, and each of those is exported (the VM-state calls all
    or none: they join when issue 12's handler is in the library)."""
    with common.TempDir('strata-embed-') as tmp:
        _install.clear()
        inst = installation(tmp)
        lib = os.path.join(inst['libdir'], 'libstrata.so.0')
        nm = common.run(['nm', '-D', '--defined-only', lib]).out
        exported = set()
        for line in nm.splitlines():
            parts = line.split()
            if len(parts) == 3 and parts[1] == 'A':
                continue          # the version node STRATA_0
            name = parts[-1].split('@')[0]
            exported.add(name)
        decl = declared_functions(inst['incdir'])
        declared = set().union(*decl.values())
        stray = sorted(exported - declared)
        check(not stray, 'exported but not public: %s' % stray[:20])
        vm = decl.get('vmstate.h', set())
        missing = sorted((declared - vm) - exported)
        check(not missing, 'public but not exported: %s' % missing)
        check(vm <= exported or not (vm & exported),
              'half of the VM-state calls exported: %s' % sorted(
                  vm & exported))
        check(len(exported) >= 30, 'only %d symbols' % len(exported))
        print('  %d symbols exported, VM-state calls %s' % (
            len(exported), 'in' if vm <= exported else 'not yet built'))
        _install.clear()


# ---- minivm ----

class Qmp:
    """A QMP client on minivm's socket."""

    def __init__(self, path, proc):
        self.sock = common.connect_unix(path, proc, 'minivm', timeout=60)
        self.sock.settimeout(120)
        self.file = self.sock.makefile('rb')
        self.events = []
        self.greeting = self.read()

    def read(self):
        line = self.file.readline()
        check(line.endswith(b'\r\n'), 'reply not CRLF-ended: %r' % line)
        return json.loads(line)

    def cmd(self, name, **args):
        req = {'execute': name}
        if args:
            req['arguments'] = args
        self.sock.sendall(json.dumps(req).encode() + b'\n')
        while True:
            msg = self.read()
            if 'event' in msg:
                self.events.append(msg)
            else:
                return msg

    def ok(self, name, **args):
        r = self.cmd(name, **args)
        check('return' in r, '%s failed: %s' % (name, r))
        return r['return']


def build_minivm(inst, tmp, vmstate):
    exe = os.path.join(tmp, 'minivm')
    flags = subprocess.run(['pkg-config', '--cflags', '--libs', 'strata',
                            'gio-2.0', 'json-glib-1.0'], env=inst['env'],
                           capture_output=True, text=True,
                           check=True).stdout.split()
    lib = os.path.join(inst['libdir'], 'libstrata.so.0')
    extra = ['-DMINIVM_VMSTATE'] if vmstate else []
    if 'libasan' in common.run(['readelf', '-d', lib]).out:
        # a sanitizer build: the program needs the runtime first too
        extra += ['-fsanitize=address,undefined']
    common.run(['cc', '-std=gnu11', '-Wall', '-Werror', '-o', exe,
                os.path.join(SRC, 'examples', 'minivm.c')] + flags + extra,
               timeout=300)
    return exe


def records(raw_path, dev):
    found = set()
    with open(raw_path, 'rb') as f:
        data = f.read()
    for off in range(0, len(data), REC):
        if not data.startswith(MAGIC, off):
            check(not data[off:off + REC].strip(b'\0'),
                  'disk %d: bytes at %d that are not a record' % (dev, off))
            continue
        text = data[off:off + 64].split(b'\0')[0].split()
        s, c = int(text[1]), int(text[2])
        check(c == (s * MULT) % (1 << 64),
              'disk %d: record %d has a bad check value' % (dev, s))
        check(s % NDEV == dev and (s // NDEV) * REC == off,
              'record %d found on disk %d at %d' % (s, dev, off))
        found.add(s)
    return found


def view(d, image, snapshot=None):
    out = os.path.join(d, 'view.raw')
    argv = ['qemu-img', 'convert', '-f', 'qcow2', '-O', 'raw']
    if snapshot:
        argv += ['-l', 'snapshot.name=%s' % snapshot]
    common.run(argv + [os.path.join(d, image), out])
    return out


@runner.case('minivm_cut')
def minivm_cut():
    """minivm built against the installed library: transactions under
    guest load through its QMP socket cut all 4 disks consistently."""
    with common.TempDir('strata-embed-') as tmp:
        _install.clear()
        inst = installation(tmp)
        lib = os.path.join(inst['libdir'], 'libstrata.so.0')
        # the VM-state callbacks join the library with issue 12's handler
        vmstate = 'strata_vmstate_set_handler' in common.run(
            ['nm', '-D', '--defined-only', lib]).out
        exe = build_minivm(inst, tmp, vmstate)
        d = os.path.join(tmp, 'disks')
        os.mkdir(d)
        imgs = []
        for i in range(NDEV):
            imgs.append(os.path.join(d, 'd%d.qcow2' % i))
            common.run(['qemu-img', 'create', '-q', '-f', 'qcow2', imgs[-1],
                        str(SIZE)])
        sock = os.path.join(tmp, 'qmp.sock')
        env = dict(os.environ, LD_LIBRARY_PATH=inst['libdir'])
        proc = subprocess.Popen([exe, '--qmp', sock, '--record-size',
                                 str(REC), '--interval-us', '50'] + imgs,
                                env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        quitted = False
        try:
            q = Qmp(sock, proc)
            check(q.greeting['QMP']['version']['qemu']['minor'] == 2,
                  'greeting %s' % q.greeting)
            r = q.cmd('query-version')
            check(r.get('error', {}).get('class') == 'CommandNotFound',
                  'a command before qmp_capabilities: %s' % r)
            q.ok('qmp_capabilities')
            for r in range(ROUNDS):
                time.sleep(0.15)
                q.ok('transaction', actions=round_actions(d, r, NDEV))
                if r == 0:
                    # HMP through QMP, forwarded like any command
                    hmp = q.ok('human-monitor-command',
                               **{'command-line': 'info snapshots'})
                    check(re.search(r'\bc0\b', hmp),
                          'info snapshots: %r' % hmp)
            # a bad transaction changes nothing and does not pause
            bad = q.cmd('transaction', actions=[{
                'type': 'blockdev-snapshot-internal-sync',
                'data': {'device': 'nosuch', 'name': 'x'}}])
            check(bad.get('error', {}).get('desc') ==
                  "Cannot find device='nosuch' nor node-name='nosuch'",
                  'bad transaction: %s' % bad)
            # savevm under load: one more set (with a fake VM state
            # when the library has the callbacks)
            time.sleep(0.15)
            out = q.ok('human-monitor-command',
                       **{'command-line': 'savevm vm1'})
            check(out == '', 'savevm: %r' % out)
            stats = q.ok('minivm-stop-writers')
            q.ok('quit')
            quitted = True
        finally:
            if not quitted:
                proc.terminate()
            try:
                out, err = proc.communicate(timeout=120)
            except subprocess.TimeoutExpired:
                proc.kill()
                out, err = proc.communicate()
        err = err.decode(errors='replace')
        check(proc.returncode == 0, 'minivm exited %s:\n%s' % (
            proc.returncode, err))
        report = common.sanitizer_report(err)
        check(not report, 'sanitizer report:\n%s' % report)
        check(stats['errors'] == 0, 'the guest saw errors: %s' % stats)
        check(min(stats['writes']) > 0, 'a disk got no write: %s' % stats)
        # one pause per transaction, savevm's included (HMP's savevm is
        # one transaction over every disk); none for the refused one
        check(stats['pauses'] == ROUNDS + 1 and
              stats['resumes'] == ROUNDS + 1,
              'pause hook: %s, want %d each' % (stats, ROUNDS + 1))
        total = sum(stats['writes'])
        for f in sorted(os.listdir(d)):
            if f.endswith('.qcow2'):
                common.qemu_check_clean(os.path.join(d, f))
        prev = 0
        for r in range(ROUNDS):
            present = set()
            for i in range(NDEV):
                if r % 2:
                    v = view(d, top_during(r, i))
                else:
                    v = view(d, top_during(r, i), 'c%d' % r)
                present |= records(v, i)
            m = len(present)
            missing = sorted(set(range(1, m + 1)) - present)
            check(not missing, 'set %d holds %d records but not record %d:'
                  ' a torn cut' % (r, m, missing[0] if missing else 0))
            check(m >= prev, 'set %d holds fewer records than set %d' % (
                r, r - 1))
            prev = m
            print('  set %d: records 1..%d' % (r, m))
        present = set()
        for i in range(NDEV):
            present |= records(view(d, top_during(ROUNDS, i), 'vm1'), i)
        m = len(present)
        check(present == set(range(1, m + 1)) and m >= prev,
              'the savevm set is not a prefix: %d records' % m)
        print('  savevm set: records 1..%d' % m)
        sizes = common.run(['qemu-img', 'snapshot', '-l', os.path.join(
            d, top_during(ROUNDS, 0))]).out
        line = [x for x in sizes.splitlines() if ' vm1 ' in x]
        check(line, 'no vm1 on disk 0: %s' % sizes)
        has_state = ' 0 B ' not in line[0]
        check(has_state == vmstate, 'vm1 on disk 0: %r, VM state expected: '
              '%s' % (line[0], vmstate))
        final = set()
        for i in range(NDEV):
            final |= records(view(d, top_during(ROUNDS, i)), i)
        check(final == set(range(1, total + 1)),
              'the final disks hold %d records, the guest wrote %d'
              % (len(final), total))
        print('  %d records written, %d transactions' % (total, ROUNDS))
        _install.clear()


if __name__ == '__main__':
    sys.exit(runner.main())
