#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""The compress and copy-on-read filter drivers, next to QEMU's.

Each case does the same thing with qemu-io and with strata-io, each on
its own image made by qemu-img, and compares what qemu-img sees after:

- compress over qcow2 (--image-opts and json:, tests 214): unaligned
  writes become whole compressed clusters (read-modify-write), qemu-img
  check counts the same compressed clusters, the contents are identical;
  over raw it is refused with QEMU's text and the image is unchanged;
- copy-on-read over an overlay (test 215): reads return the chain's
  data and leave the overlay holding what they read (same map once the
  backing file is cut, identical to the base); a cor_write blkdebug rule
  that no request after the copy matches does not fail the read; a
  read-only open is refused with QEMU's text.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

runner = common.Runner()


def mkimg(path, size, opts=None, backing=None, fmt='qcow2'):
    t = common.tools()
    argv = [t.qemu_img, 'create', '-q', '-f', fmt]
    if backing:
        argv += ['-b', backing, '-F', 'qcow2']
    if opts:
        argv += ['-o', opts]
    common.run(argv + [path] + ([size] if size else []))


def compressed_clusters(img):
    res = common.run([common.tools().qemu_img, 'check', '--output=json',
                      img])
    for line in res.out.splitlines():
        if '"compressed-clusters"' in line:
            return int(line.split(':')[1].strip(' ,'))
    return 0


@runner.case()
def compress_filter_writes_compressed_clusters():
    t = common.tools()
    cs = 65536
    with common.TempDir() as d:
        imgs = []
        for who, io in (('theirs', t.qemu_io), ('ours', t.io)):
            img = os.path.join(d, who + '.qcow2')
            mkimg(img, '2M', 'cluster_size=%d' % cs)
            common.run([io, '-c', 'write -P 0xbb 0 %d' % (3 * cs + cs // 2),
                        '--image-opts',
                        'driver=compress,file.driver=qcow2,'
                        'file.file.driver=file,file.file.filename=' + img])
            common.run([io, '-c', 'write -P 0xcc %d %d'
                        % (4 * cs + cs // 4, 3 * cs + cs // 2),
                        "json:{'driver': 'compress', 'file': {'driver': "
                        "'qcow2', 'file': {'driver': 'file', 'filename': "
                        "'%s'}}}" % img])
            common.qemu_check_clean(img)
            imgs.append(img)
        counts = [compressed_clusters(i) for i in imgs]
        common.check(counts[0] == counts[1] == 8,
                     'compressed clusters: qemu %d, strata %d' % tuple(counts))
        common.run([t.qemu_img, 'compare', imgs[0], imgs[1]])
        common.run_io(t.qemu_io, imgs[1], ['read -P 0xbb 0 %d' % (3 * cs),
                                           'read -P 0xcc %d %d'
                                           % (4 * cs + cs // 4,
                                              3 * cs + cs // 2)])


@runner.case()
def compress_filter_refused_over_raw():
    t = common.tools()
    with common.TempDir() as d:
        errs = []
        for who, io in (('theirs', t.qemu_io), ('ours', t.io)):
            img = os.path.join(d, who + '.raw')
            mkimg(img, '1M', fmt='raw')
            before = common.sha256(img)
            res = common.run([io, '-c', 'write 0 64k', '--image-opts',
                              'driver=compress,file.driver=raw,'
                              'file.file.driver=file,file.file.filename=' +
                              img], rc=1)
            errs.append(common.normalize_prog(res.err, os.path.basename(io))
                        .replace(who, 'X'))
            common.check(common.sha256(img) == before, 'image changed')
        common.check(errs[0] == errs[1] and 'not supported' in errs[0],
                     '%r vs %r' % tuple(errs))


def cor_open(img, extra=''):
    return 'open %s-o driver=copy-on-read,file.driver=qcow2 %s' % (extra, img)


@runner.case()
def copy_on_read_filter_fills_the_overlay():
    t = common.tools()
    with common.TempDir() as d:
        base = os.path.join(d, 'base.qcow2')
        mkimg(base, '64M')
        common.run([t.qemu_io, '-c', 'write -P 0x55 40M 1k',
                    '-c', 'write -P 0x66 1M 64k', base])
        results = []
        for who, io in (('theirs', t.qemu_io), ('ours', t.io)):
            top = os.path.join(d, who + '.qcow2')
            mkimg(top, None, backing=base)
            common.run([t.qemu_io, '-c', 'write -z -u 8M 64k', top])
            conf = os.path.join(d, 'cor.conf')
            with open(conf, 'w') as f:
                f.write('[inject-error]\nevent = "cor_write"\n'
                        'sector = "16384"\n')
            # the copy of 8M+64k does not cover sector 16384 (8M): the
            # read itself must not be failed by the rule afterwards
            out = common.run([io, '-c', 'open -o driver=copy-on-read,'
                              'file.driver=blkdebug,file.config=%s,'
                              'file.image.driver=qcow2 %s' % (conf, top),
                              '-c', 'read -P 0 8M 128k']).out
            common.check('read 131072/131072' in out, out)
            out = common.run([io, '-c', cor_open(top), '-c', 'read 0 0',
                              '-c', 'read -P 0 1k 700k',
                              '-c', 'read -P 0x66 1M 64k',
                              '-c', 'read -P 0x55 40M 512']).out
            common.check(out.count('read ') == 4 and
                         'verification failed' not in out, out)
            common.qemu_check_clean(top)
            common.run([t.qemu_img, 'rebase', '-u', '-b', '', top])
            results.append(common.run([t.qemu_io, '-f', 'qcow2', '-c', 'map',
                                       top]).out)
            common.run([t.qemu_img, 'compare', '-f', 'qcow2', '-F', 'qcow2',
                        base, top])
        common.check(results[0] == results[1],
                     'map after the reads:\nqemu-io:\n%s\nours:\n%s'
                     % tuple(results))
        # the copy of 40M's cluster is what keeps the compare identical
        common.check('allocated at offset 40 MiB' in results[1], results[1])


@runner.case()
def copy_on_read_filter_refuses_read_only():
    t = common.tools()
    with common.TempDir() as d:
        img = os.path.join(d, 'a.qcow2')
        mkimg(img, '1M')
        errs = []
        for io in (t.qemu_io, t.io):
            res = common.run([io, '-c', cor_open(img, '-r ')], rc=None)
            errs.append(common.normalize_prog(res.err,
                                              os.path.basename(io)))
        common.check(errs[0] == errs[1] and 'read-only' in errs[0],
                     '%r vs %r' % tuple(errs))


if __name__ == '__main__':
    sys.exit(runner.main())
