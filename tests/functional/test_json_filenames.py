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
  names the file (file.driver=blkdebug,file.image.filename=...).
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


if __name__ == '__main__':
    sys.exit(runner.main())
