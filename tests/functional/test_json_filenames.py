#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""json:{...} filenames, the file: prefix and protocol prefixes, as QEMU
takes them.

Each case gives the same name (and the same commands) to qemu-io and to
$STRATA_IO on copies of the same image and requires the same stdout,
stderr (program name and image path normalised) and exit code:

- json: names with nested objects, dotted keys, -f beside them (which
  wins over the JSON's "driver"), JSON numbers and booleans as option
  values (read-only: true, no-flush: false), and the file: prefix, each reading known data back;
- malformed JSON (nothing, a truncated object, text after the object, an
  array), an unknown driver, an unknown protocol prefix and a missing
  file: QEMU's message and exit code, and the image is byte for byte
  unchanged afterwards;
- a json: backing name as QEMU writes it into an overlay (libvirt does
  the same): strata-io reads the backing data through the overlay and
  strata-img check finds nothing wrong;
- --image-opts with nested driver options where only the innermost node
  names the file (file.driver=blkdebug,file.image.filename=...);
- an overlay named by json: over blkdebug, used from another working
  directory: its relative backing file is found next to the file it is
  stored in (reads, and info's actual path, as qemu-img's); over quorum
  (no file to take a directory from) info says the path cannot be
  determined, as qemu-img;
- quorum of three copies: writes reach all, a read returns what the
  threshold agrees on, fails when it cannot agree, and rewrite-corrupted
  repairs the odd copy; outputs as qemu-io's.
"""

import json
import os
import re
import shutil
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

runner = common.Runner()

RATE_RE = re.compile(r'(\d+ ops; ).*$', re.M)


def mask(text, d):
    return RATE_RE.sub(r'\1TIME', text.replace(d + '/', 'DIR/'))


def make_image(path):
    t = common.tools()
    common.run([t.qemu_img, 'create', '-q', '-f', 'qcow2', path, '1M'])
    common.run([t.qemu_io, '-c', 'write -P 0x5a 0 64k',
                '-c', 'write -P 0x33 128k 4k', path])


def run_both(d, name_of, cmds, extra=(), rc=None):
    """name_of(img) -> the name given to the tool; each tool gets its own
    copy of the image.  Returns [(rc, out, err)] for QEMU, then strata."""
    t = common.tools()
    results = []
    for who, tool in (('theirs', t.qemu_io), ('ours', t.io)):
        img = os.path.join(d, who + '.qcow2')
        shutil.copyfile(os.path.join(d, 'base.qcow2'), img)
        before = common.sha256(img)
        res = common.run([tool] + list(extra) + common.io_args(cmds) +
                         [name_of(img)], rc=rc)
        prog = os.path.basename(tool)
        out = mask(common.normalize_prog(res.out, prog), d)
        err = mask(common.normalize_prog(res.err, prog), d)
        out = out.replace(who + '.qcow2', 'IMG')
        err = err.replace(who + '.qcow2', 'IMG')
        results.append((res.rc, out, err, before, common.sha256(img)))
    return results


def same(name_of, cmds, extra=(), unchanged=False):
    with common.TempDir() as d:
        make_image(os.path.join(d, 'base.qcow2'))
        (qrc, qout, qerr, _, _), (src, sout, serr, before, after) = \
            run_both(d, name_of, cmds, extra)
        common.check((qrc, qout, qerr) == (src, sout, serr),
                     'output differs from qemu-io\n--- qemu-io (exit %d)\n'
                     '%s%s\n--- strata-io (exit %d)\n%s%s'
                     % (qrc, qout, qerr, src, sout, serr))
        if unchanged:
            common.check(before == after, 'a refused open changed the image')
        return src, sout, serr


def js(obj):
    return 'json:' + json.dumps(obj)


READS = ['read -P 0x5a 0 64k', 'read -P 0x33 128k 4k', 'read -P 0 64k 64k']


def readable(name_of, extra=()):
    rc, out, _ = same(name_of, READS, extra)
    common.check(rc == 0 and out.count('read ') == 3,
                 'the data did not read back:\n' + out)


runner.add('json_nested', readable, lambda img: js(
    {'driver': 'qcow2', 'file': {'driver': 'file', 'filename': img}}))
runner.add('json_dotted', readable, lambda img: js(
    {'driver': 'qcow2', 'file.filename': img}))
runner.add('json_probed', readable, lambda img: js({'file.filename': img}))
runner.add('json_typed_values', readable, lambda img: js(
    {'driver': 'qcow2', 'read-only': True, 'cache': {'no-flush': False},
     'file': {'driver': 'file', 'filename': img}}), extra=('-r',))
# -f qcow2 beside a JSON that says raw: the option given outside wins
runner.add('json_format_outside_wins', readable, lambda img: js(
    {'driver': 'raw', 'file': {'driver': 'file', 'filename': img}}),
    extra=('-f', 'qcow2'))
runner.add('file_prefix', readable, lambda img: 'file:' + img)
runner.add('file_prefix_relative', readable,
           lambda img: 'file:' + os.path.relpath(img))
runner.add('json_with_f_format', readable, lambda img: js(
    {'driver': 'qcow2', 'file': {'driver': 'file', 'filename': img}}),
    extra=('-f', 'qcow2'))


def refused(name_of, text):
    rc, _, err = same(name_of, ['write -P 0x11 0 64k'], unchanged=True)
    common.check(rc == 1 and text in err,
                 'wanted exit 1 and %r, got exit %d:\n%s' % (text, rc, err))


runner.add('bad_json_empty', refused, lambda img: 'json:',
           'Could not parse the JSON options: Expecting a JSON value')
runner.add('bad_json_truncated', refused,
           lambda img: 'json:{"driver": "qcow2", "file": {"filename": "%s"'
           % img, 'JSON parse error, premature EOI')
runner.add('bad_json_trailing', refused,
           lambda img: js({'file.filename': img}) + ' {}',
           'Expecting at most one JSON value')
runner.add('bad_json_array', refused, lambda img: 'json:[%s]' % json.dumps(
    {'file.filename': img}), 'Invalid JSON object given')
runner.add('bad_json_unknown_driver', refused, lambda img: js(
    {'driver': 'nosuch', 'file.filename': img}), "Unknown driver 'nosuch'")
runner.add('unknown_protocol', refused, lambda img: 'nbdx:' + img,
           "Unknown protocol 'nbdx'")
runner.add('unknown_protocol_relative', refused,
           lambda img: 'nosuch:' + os.path.basename(img),
           "Unknown protocol 'nosuch'")
runner.add('json_missing_file', refused, lambda img: js(
    {'driver': 'qcow2', 'file': {'filename': img + '.missing'}}),
    'No such file or directory')


@runner.case('json_backing_name_written_by_qemu')
def json_backing():
    """An overlay whose backing name QEMU wrote as json:{...}."""
    t = common.tools()
    with common.TempDir() as d:
        base = os.path.join(d, 'base.qcow2')
        ov = os.path.join(d, 'ov.qcow2')
        make_image(base)
        backing = js({'driver': 'qcow2',
                      'file': {'driver': 'file', 'filename': base}})
        common.run([t.qemu_img, 'create', '-q', '-f', 'qcow2', '-b', backing,
                    '-F', 'qcow2', ov])
        common.run([t.qemu_io, '-c', 'write -P 0x77 4k 4k', ov])
        cmds = ['read -P 0x5a 0 4k', 'read -P 0x77 4k 4k',
                'read -P 0x5a 8k 56k', 'read -P 0x33 128k 4k']
        outs = []
        for tool in (t.qemu_io, t.io):
            res = common.run([tool] + common.io_args(cmds) + [ov], rc=None)
            outs.append((res.rc, RATE_RE.sub(r'\1TIME', res.out)))
        common.check(outs[0] == outs[1] and outs[1][0] == 0,
                     'reading through a json: backing name differs:\n%r'
                     % outs)
        res = common.run([t.img, 'info', ov])
        common.check('backing file: ' + backing in res.out,
                     'info does not show the json: backing name:\n'
                     + res.out)
        common.run([t.img, 'check', ov])
        # the overlay is written through; QEMU still reads the chain
        common.run([t.io, '-c', 'write -P 0x44 64k 4k', ov])
        common.run([t.qemu_io, '-c', 'read -P 0x44 64k 4k',
                    '-c', 'read -P 0x5a 0 4k', ov])
        common.qemu_check_clean(ov)


@runner.case('image_opts_nested')
def image_opts_nested():
    def name_of(img):
        # the format's file child named only by its own child's options
        return ('driver=qcow2,file.driver=blkdebug,file.image.driver=file,'
                'file.image.filename=' + img)
    rc, out, _ = same(name_of, READS, extra=('--image-opts',))
    common.check(rc == 0 and out.count('read ') == 3,
                 'the data did not read back:\n' + out)


def backing_lines(text):
    return [x for x in text.splitlines() if x.startswith('backing file')]


@runner.case('json_overlay_relative_backing_from_elsewhere')
def json_overlay_elsewhere():
    t = common.tools()
    with common.TempDir() as d:
        base = os.path.join(d, 't.qcow2.base')
        top = os.path.join(d, 't.qcow2')
        copy = os.path.join(d, 't.qcow2.copy')
        common.run([t.qemu_img, 'create', '-q', '-f', 'qcow2', base, '4M'])
        common.run([t.qemu_io, '-c', 'write -P 0x5a 0 64k', base])
        common.run([t.qemu_img, 'create', '-q', '-f', 'qcow2', '-b',
                    't.qcow2.base', '-F', 'qcow2', top])
        shutil.copy(top, copy)
        blk = ("json:{'driver': 'qcow2', 'file': {'driver': 'blkdebug', "
               "'image': {'driver': 'file', 'filename': '%s'}}}" % top)
        quorum = ("json:{'driver': 'qcow2', 'file': {'driver': 'quorum', "
                  "'vote-threshold': 1, 'children': [{'driver': 'file', "
                  "'filename': '%s'}, {'driver': 'file', 'filename': '%s'}]}}"
                  % (top, copy))
        for name in (blk, quorum):
            infos = []
            for img in (t.qemu_img, t.img):
                res = common.run([img, 'info', name], cwd='/')
                # a name is given (QEMU may rebuild a shorter one)
                common.check(len(res.out.splitlines()[0]) > len('image: '),
                             res.out)
                infos.append(backing_lines(res.out))
            common.check(infos[0] == infos[1],
                         'qemu-img: %r\nours: %r' % tuple(infos))
        outs = []
        for io in (t.qemu_io, t.io):
            res = common.run([io, '-c', 'read -P 0x5a 0 64k', blk], cwd='/')
            outs.append(mask(res.out, d))
        common.check(outs[0] == outs[1] and 'read 65536/65536' in outs[1],
                     'qemu-io: %r\nours: %r' % tuple(outs))


def quorum_opts(paths, threshold, extra=''):
    kids = ','.join('children.%d.driver=file,children.%d.filename=%s'
                    % (i, i, p) for i, p in enumerate(paths))
    return ('driver=quorum,vote-threshold=%d,%s%s'
            % (threshold, kids, extra))


@runner.case('quorum_votes_like_qemu')
def quorum_votes():
    t = common.tools()
    with common.TempDir() as d:
        results = []
        for who, io in (('theirs', t.qemu_io), ('ours', t.io)):
            paths = [os.path.join(d, '%s%d.raw' % (who, i)) for i in range(3)]
            for p in paths:
                with open(p, 'wb') as f:
                    f.write(b'\0' * (1 << 20))
            out = []

            def run(opts, *cmds):
                res = common.run([io, '--image-opts'] +
                                 common.io_args(list(cmds)) + [opts], rc=None)
                out.append((res.rc, mask(res.out, d).replace(who, 'X'),
                            common.normalize_prog(res.err, os.path.basename(
                                io)).replace(who, 'X')))

            run(quorum_opts(paths, 2), 'write -P 0x11 0 64k')
            with open(paths[2], 'r+b') as f:      # one copy goes bad
                f.write(b'\x77' * 4096)
            run(quorum_opts(paths, 2), 'read -P 0x11 0 64k')
            run(quorum_opts(paths[1:], 2), 'read -P 0x11 0 64k')
            run(quorum_opts(paths, 2, ',rewrite-corrupted=on'),
                'read -P 0x11 0 64k')
            run(quorum_opts(paths, 4), 'read 0 512')
            run(quorum_opts(paths, 1, ',read-pattern=first'), 'read 0 512')
            with open(paths[2], 'rb') as f:
                out.append(('copy 2 repaired', f.read(4096) == b'\x11' * 4096))
            results.append(out)
        common.check(results[0] == results[1],
                     'qemu-io:\n%r\nours:\n%r' % tuple(results))
        common.check(results[1][-1][1] is True, results[1])


if __name__ == '__main__':
    sys.exit(runner.main())
