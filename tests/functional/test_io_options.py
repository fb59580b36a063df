#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""strata-io's -s, -C, read/write -b and open options, next to qemu-io.

- -s / open -s: writes land in a temporary overlay; the image file is
  byte for byte unchanged afterwards and no temporary file is left;
  reads in the session see the writes over the image's data;
- -C / open -C: after reads, the top image holds what it read (the map
  printed by qemu-io equals the one after qemu-io -C did the same reads,
  content identical to the backing chain once the chain is cut), also
  without a backing file (zero clusters); -C with -r is refused with
  qemu-io's text;
- read -b / write -b: the VM state area is shared with QEMU both ways
  (written by one, read back by the other), is not guest-visible, and
  qemu-img check stays clean;
- zero writes and discards (whole and partial clusters, v2 and v3, with
  and without backing data) leave the map qemu-io leaves;
- reopen -o with node-name/driver repeated or changed (also a child's),
  auto-read-only, and a null-co node: qemu-io's output and exit code;
- convert from a null-co node, sparse and -S 0: qemu-img's map.
- the node option discard=ignore|unmap (also on the file child only, and
  a bad value): qemu-io's output, map and held bytes;
- the file driver's engine options (aio, aio-max-batch, drop-cache,
  x-check-cache-dropped): accepted and refused as qemu-io does;
- detect-zeroes=on|unmap: writes of zeroes become zero writes (unmapping
  with unmap), the map qemu-io leaves; a bad value and unmap without
  discard=unmap are refused with qemu-io's texts.
"""

import glob
import os
import re
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

runner = common.Runner()


def mkimg(path, size, opts=None, backing=None):
    t = common.tools()
    if os.path.exists(path):
        os.unlink(path)
    argv = [t.qemu_img, 'create', '-q', '-f', 'qcow2']
    if backing:
        argv += ['-b', backing, '-F', 'qcow2']
    if opts:
        argv += ['-o', opts]
    common.run(argv + [path] + ([size] if size else []))


def temp_files():
    return set(glob.glob(os.path.join(tempfile.gettempdir(),
                                      'strata-io-snapshot-*')))


@runner.case()
def snapshot_mode_leaves_image_alone():
    t = common.tools()
    with common.TempDir() as d:
        img = os.path.join(d, 'a.qcow2')
        mkimg(img, '4M')
        common.run_io(t.qemu_io, img, ['write -P 0x11 0 1M'])
        before = common.sha256(img)
        tmp_before = temp_files()
        common.run_io(t.io, img, ['write -P 0x22 64k 4k',
                                  'read -P 0x22 64k 4k',
                                  'read -P 0x11 0 64k',
                                  'read -P 0x11 68k 956k'], extra=['-s'])
        res = common.run([t.io, '-c', 'open -s ' + img,
                          '-c', 'write -P 0x33 0 8k',
                          '-c', 'read -P 0x33 0 8k'])
        common.check('Pattern verification failed' not in res.out and
                     'wrote 8192/8192' in res.out, res.describe())
        common.check(common.sha256(img) == before,
                     'snapshot mode changed the image file')
        common.check(temp_files() == tmp_before,
                     'temporary overlays left: %s' % (temp_files() - tmp_before))
        common.run_io(t.qemu_io, img, ['read -P 0x11 0 1M'])
        common.qemu_check_clean(img)


def maps(tool, img):
    return common.run([tool, '-f', 'qcow2', '-c', 'map', img]).out


@runner.case()
def copy_on_read_like_qemu():
    t = common.tools()
    with common.TempDir() as d:
        base = os.path.join(d, 'base.qcow2')
        mkimg(base, '64M')
        common.run_io(t.qemu_io, base, ['write -P 0x55 40M 1k',
                                        'write -P 0x66 1M 64k'])
        results = []
        for tool in (t.qemu_io, t.io):
            top = os.path.join(d, 'top.qcow2')
            mkimg(top, None, backing=base)
            common.run_io(t.qemu_io, top, ['write -z -u 8M 64k'])
            common.run_io(tool, top, ['read 0 0', 'read -P 0 1k 700k',
                                      'read -P 0x66 1M 64k',
                                      'read 7M 3M', 'read -P 0x55 40M 512'],
                          extra=['-C'])
            common.qemu_check_clean(top)
            common.run([t.qemu_img, 'rebase', '-u', '-b', '', top])
            res = common.run([t.qemu_img, 'compare', '-f', 'qcow2', '-F',
                              'qcow2', base, top], rc=(0, 1))
            results.append((maps(t.qemu_io, top), res.rc))
        common.check(results[0] == results[1],
                     'after -C reads:\nqemu-io:\n%s\nours:\n%s'
                     % (results[0], results[1]))
        # read-only copy-on-read is refused, as by qemu-io
        errs = []
        for tool in (t.qemu_io, t.io):
            res = common.run([tool, '-f', 'qcow2', '-C', '-r', base], rc=1)
            errs.append(common.normalize_prog(
                res.err, os.path.basename(tool)))
        common.check(errs[0] == errs[1], '%r vs %r' % tuple(errs))


@runner.case()
def copy_on_read_without_backing():
    t = common.tools()
    with common.TempDir() as d:
        outs = []
        for tool in (t.qemu_io, t.io):
            img = os.path.join(d, 'a.qcow2')
            mkimg(img, '1024', opts='compat=1.1')
            common.run_io(tool, img, ['read 0 1024'], extra=['-C'])
            outs.append(maps(t.qemu_io, img))
            common.qemu_check_clean(img)
        common.check(outs[0] == outs[1], '%r vs %r' % tuple(outs))


@runner.case()
def vmstate_area_shared_with_qemu():
    t = common.tools()
    with common.TempDir() as d:
        img = os.path.join(d, 'a.qcow2')
        for writer, reader in ((t.io, t.qemu_io), (t.qemu_io, t.io)):
            mkimg(img, '3M')
            common.run_io(writer, img, ['write -b -P 0xab 512 64k',
                                        'write -b -P 0xcd 1M 4k',
                                        'write -P 0x12 0 4k'])
            common.run_io(reader, img, ['read -b -P 0xab 512 64k',
                                        'read -b -P 0xcd 1M 4k',
                                        'read -b -P 0 0 512',
                                        'read -P 0x12 0 4k',
                                        'read -P 0 4k 3068k'])
            common.qemu_check_clean(img)
            m = common.run([t.qemu_img, 'map', '--output=json', img]).out
            ends = [int(x) for x in re.findall(r'"start": (\d+)', m)]
            common.check(max(ends) < 3 << 20, 'vm state is guest-visible:\n'
                         + m)


# Kept short: every case runs both tools on v2 and v3 images, with and
# without backing data (this script must stay within its timeout).
ZERO_CASES = [
    ['write -z 0 128k'], ['write -z 0 1k'], ['write -z 32k 64k'],
    ['write -z 60k 8k'], ['discard 0 256k'],
    ['write -P 1 0 128k', 'write -z -u 0 128k'],
    ['write -P 1 0 64k', 'write -z 4k 60k'],
    ['write -z 1k 1k', 'write -P 3 2k 1k'],
]
BACKING_DATA = [None, 'write -P 7 60k 8k']


@runner.case()
def zero_write_policy_maps_like_qemu():
    """Zero writes and discards, whole and partial clusters, v2 and v3,
    with and without a backing file (holding data in various places):
    the image maps as qemu-io leaves it and reads the same."""
    t = common.tools()
    with common.TempDir() as d:
        base = os.path.join(d, 'base.qcow2')
        for bdata in BACKING_DATA:
            if bdata:
                mkimg(base, '1M')
                common.run_io(t.qemu_io, base, [bdata])
            for compat in ('0.10', '1.1'):
                for cmds in ZERO_CASES:
                    got = []
                    for tool in (t.qemu_io, t.io):
                        img = os.path.join(d, os.path.basename(tool) + '.q')
                        mkimg(img, '1M', opts='compat=' + compat,
                              backing=base if bdata else None)
                        common.run_io(tool, img, cmds)
                        if tool == t.io:
                            common.qemu_check_clean(img)
                        got.append(common.run([t.qemu_img, 'map',
                                               '--output=json', img]).out)
                    what = '[%s, backing: %s] %s' % (compat, bdata, cmds)
                    common.check(got[0] == got[1], '%s: maps differ:\n%s\n%s'
                                 % (what, got[0], got[1]))
                    res = common.run([t.qemu_img, 'compare', img,
                                      os.path.join(d, 'qemu-io.q')])
                    common.check('identical' in res.out, what)


def both_io(argv_of, d):
    """The same qemu-io arguments to both tools: (qemu's, ours) output,
    stdout and stderr together, program names and paths masked."""
    t = common.tools()
    outs = []
    for io in (t.qemu_io, t.io):
        res = common.run([io] + argv_of(d), rc=None)
        text = common.normalize_prog(res.out + res.err, os.path.basename(io))
        outs.append('exit %d\n%s' % (res.rc, text.replace(d, 'DIR')))
    return outs


@runner.case()
def discard_option_like_qemu():
    """discard=ignore drops the discard and keeps the zero write's
    clusters' host space; file.discard=ignore lets the qcow2 node unmap
    but not punch; a bad value is refused with qemu-io's text."""
    t = common.tools()
    cmds = ['-c', 'discard 0 256k', '-c', 'write -z -u 256k 256k']
    with common.TempDir() as d:
        img = os.path.join(d, 't.qcow2')
        for opts in ('discard=ignore', 'discard=unmap',
                     'discard=unmap,file.discard=ignore', 'discard=bogus'):
            got = []
            for io in (t.qemu_io, t.io):
                mkimg(img, '1M')
                common.run_io(t.qemu_io, img, ['write -P 0x5a 0 1M'])
                res = common.run([io, '--image-opts',
                                  'driver=qcow2,file.filename=%s,%s'
                                  % (img, opts)] + cmds, rc=None)
                text = common.normalize_prog(res.out + res.err,
                                             os.path.basename(io))
                text = re.sub(r'ops; .*', 'ops;', text)
                common.qemu_check_clean(img)
                got.append((res.rc, text, common.run(
                    [t.qemu_img, 'map', '--output=json', img]).out,
                    os.stat(img).st_blocks // 128))
            common.check(got[0] == got[1], '%s:\nqemu-io: %s\nours:    %s'
                         % (opts, got[0], got[1]))
            kept = got[1][3] >= 1024 // 64 + 2   # 64 KiB units held
            common.check(kept == (opts != 'discard=unmap'),
                         '%s: %d x 64 KiB held' % (opts, got[1][3]))


@runner.case()
def file_engine_options_like_qemu():
    """aio=native needs cache.direct=on; bad values get qemu-io's texts;
    good ones read as usual."""
    t = common.tools()
    cases = ['file.aio=threads', 'file.aio=io_uring', 'file.aio=native',
             'file.aio=native,cache.direct=on', 'file.aio=bogus',
             'file.aio-max-batch=4', 'file.aio-max-batch=x',
             'file.drop-cache=off', 'file.drop-cache=x',
             'file.x-check-cache-dropped=on']
    with common.TempDir() as d:
        img = os.path.join(d, 't.qcow2')
        mkimg(img, '1M')
        for opts in cases:
            got = []
            for io in (t.qemu_io, t.io):
                res = common.run([io, '--image-opts',
                                  'driver=qcow2,file.filename=%s,%s'
                                  % (img, opts), '-c', 'read 0 4k'], rc=None)
                text = common.normalize_prog(res.out + res.err,
                                             os.path.basename(io))
                got.append((res.rc, re.sub(r'ops; .*', 'ops;', text)))
            common.check(got[0] == got[1], '%s:\nqemu-io: %s\nours:    %s'
                         % (opts, got[0], got[1]))


@runner.case()
def detect_zeroes_like_qemu():
    t = common.tools()
    steps = [('detect-zeroes=bogus', ['write -P 0 0 64k']),
             ('detect-zeroes=unmap,discard=ignore', ['write -P 0 0 64k']),
             ('detect-zeroes=unmap', ['write -P 1 0 128k', 'write -P 0 0 64k',
                                      'write -P 0 192k 64k']),
             ('detect-zeroes=on', ['write -P 0 64k 64k', 'write -P 0 256k 4k',
                                   'write -P 0 300k 100']),
             ('detect-zeroes=off', ['write -P 0 512k 64k'])]
    with common.TempDir() as d:
        img = os.path.join(d, 't.qcow2')
        got = []
        for io in (t.qemu_io, t.io):
            mkimg(img, '1M')
            out = []
            for opts, cmds in steps:
                res = common.run([io, '--image-opts',
                                  'driver=qcow2,file.filename=%s,%s'
                                  % (img, opts)] +
                                 [a for c in cmds for a in ('-c', c)],
                                 rc=None)
                text = common.normalize_prog(res.out + res.err,
                                             os.path.basename(io))
                out.append((res.rc, re.sub(r'ops; .*', 'ops;', text)))
            common.qemu_check_clean(img)
            out.append(common.run([t.qemu_img, 'map', '--output=json',
                                   img]).out)
            got.append(out)
        common.check(got[0] == got[1], 'qemu-io:\n%s\nours:\n%s'
                     % (got[0], got[1]))
        # the zeroes written with detection on left no data behind
        common.check('"start": 0, "length": 65536, "depth": 0, "present": '
                     'true, "zero": true, "data": false}' in got[1][-1] and
                     '"start": 524288, "length": 65536, "depth": 0, '
                     '"present": true, "zero": false, "data": true'
                     in got[1][-1], got[1][-1])


@runner.case()
def reopen_options_like_qemu():
    """Test 133: a reopen may repeat a node's node-name or driver (also a
    child's, through file./backing.), not change them; the refusal names
    the option as the child knows it; auto-read-only is checked as a
    boolean; a null-co node reopens."""
    t = common.tools()
    with common.TempDir() as d:
        base = os.path.join(d, 'b.qcow2')
        img = os.path.join(d, 't.qcow2')
        mkimg(base, '4M')
        mkimg(img, None, backing=base)
        cases = [
            ['-c', 'reopen -o file.node-name=foo', img],
            ['-c', 'reopen -o backing.node-name=foo', img],
            ['-c', 'open -o node-name=foo ' + img,
             '-c', 'reopen -o node-name=foo'],
            ['-c', 'open -o file.node-name=foo ' + img,
             '-c', 'reopen -o file.node-name=foo'],
            ['-c', 'open -o backing.node-name=foo ' + img,
             '-c', 'reopen -o backing.node-name=foo'],
            ['-c', 'open -o backing.node-name=foo ' + img,
             '-c', 'reopen -o backing.node-name=bar'],
            ['-c', 'reopen -o file.driver=qcow2', img],
            ['-c', 'reopen -o backing.driver=file', img],
            ['-c', 'reopen -o driver=qcow2', img],
            ['-c', 'reopen -o file.driver=file', img],
            ['-c', 'reopen -o backing.driver=qcow2', img],
            ['-c', 'reopen -o auto-read-only=qux', img],
            ['-c', 'reopen -o auto-read-only=on', img],
            ['-f', 'null-co', '-c', 'reopen', '-c', 'info',
             "json:{'driver': 'null-co', 'size': 65536}"],
        ]
        for argv in cases:
            q, o = both_io(lambda _d, a=argv: a, d)
            common.check(q == o, '%s:\nqemu-io:\n%s\nours:\n%s'
                         % (argv, q, o))


@runner.case()
def convert_from_null_co_like_qemu():
    """Test 150: converting a null-co node that reads zeroes leaves
    nothing allocated, unless -S 0 asks for every byte written."""
    t = common.tools()
    src = "json:{'driver': 'null-co', 'size': 1048576, 'read-zeroes': true}"
    with common.TempDir() as d:
        for sparse in ([], ['-S', '0']):
            maps = []
            for img_tool in (t.qemu_img, t.img):
                out = os.path.join(d, 'o.qcow2')
                if os.path.exists(out):
                    os.unlink(out)
                common.run([img_tool, 'convert', '-O', 'qcow2'] + sparse +
                           [src, out])
                maps.append(common.run([t.qemu_img, 'map', out]).out)
            common.check(maps[0] == maps[1], '%s:\nqemu-img:\n%s\nours:\n'
                         '%s' % (sparse, maps[0], maps[1]))


if __name__ == '__main__':
    sys.exit(runner.main())
