#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Persistent dirty bitmaps (qcow2 bitmaps extension), next to QEMU's.

The bits are read straight from the file by the small reader below (the
directory, each table, each data cluster), so a case can say exactly
which bits a tool set: it does not trust either tool to report them.

- commands_like_qemu: one sequence of qemu-img bitmap actions (add with
  and without -g, --disable, clear, enable, disable, merge within the
  image and from another file with -b/-F, remove) and qemu-io writes,
  run with QEMU's tools and with ours on twin images: the same bitmaps,
  flags and bits, the same qemu-img info, both files clean for
  qemu-img check, and the two files byte-identical (QEMU's order of
  allocations);
- writes_are_recorded_for_qemu: strata-io writes, zero writes and
  discards into an image whose bitmap QEMU made; QEMU then sees the
  bitmap consistent, with exactly the granules written (and nothing a
  disabled bitmap should not have);
- crash_leaves_bitmap_in_use: strata-io aborts while the image is open:
  the bitmap stays flagged in-use, QEMU calls it inconsistent instead of
  trusting it, both tools refuse to clear it (QEMU's text and hint) and
  both can remove it, leaving the image clean;
- snapshot_apply_marks_everything: strata-img snapshot -a dirties every
  bit of an enabled bitmap and none of a disabled one (qemu-img refuses
  to apply a snapshot to an image with bitmaps);
- resize_keeps_bitmaps_like_qemu: grow and shrink with a bitmap: the
  same bits and table sizes as QEMU's;
- check_counts_bitmap_clusters: strata-img check finds no leak in an
  image with bitmaps, and check -r all leaves the bitmaps intact;
- measure_counts_bitmaps_like_qemu: the same measure output as qemu-img;
- errors_like_qemu: bad command lines and refused actions give qemu-img's
  text and exit code, and leave the file unchanged;
- stale_extension_dropped_like_qemu: an image whose bitmaps autoclear
  bit another program cleared: strata-io warns as qemu-io does and drops
  the extension on a read-write open; the two files are then identical
  and qemu-img check -r leaks makes both clean;
- convert_copies_bitmaps_like_qemu: convert --bitmaps gives the same
  bitmaps (names, flags, granularity, bits) as qemu-img's; a raw target,
  an in-use bitmap with and without --skip-broken-bitmaps, and the
  option without --bitmaps give qemu-img's texts;
- too_many_bitmaps_for_memory: a crafted directory of nine 512 MiB
  bitmaps (4.5 GiB to hold): a read-write open is refused with a clear
  message and the file unchanged; a read-only open (info) lists them;
- downgrade_refused: amend compat=0.10 refuses an image with bitmaps and
  leaves it as it was.
"""

import os
import re
import shutil
import signal
import subprocess
import struct
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
from common import check, run  # noqa: E402

runner = common.Runner()

EXT_BITMAPS = 0x23852875


def read_bitmaps(path):
    """{name: (flags, granularity, table_size, bits as int)} from the file
    itself, or {} without the extension (or with the autoclear bit off)."""
    with open(path, 'rb') as f:
        data = f.read()
    version = struct.unpack_from('>I', data, 4)[0]
    cluster = 1 << struct.unpack_from('>I', data, 20)[0]
    size = struct.unpack_from('>Q', data, 24)[0]
    if version < 3 or not struct.unpack_from('>Q', data, 88)[0] & 1:
        return {}
    pos = struct.unpack_from('>I', data, 100)[0]
    while True:
        magic, length = struct.unpack_from('>II', data, pos)
        if magic == 0:
            return {}
        if magic == EXT_BITMAPS:
            nb, _, dsize, doff = struct.unpack_from('>IIQQ', data, pos + 8)
            break
        pos += 8 + (length + 7) // 8 * 8
    out, p = {}, doff
    for _ in range(nb):
        toff, tsize, flags, _, gbits, nsize, extra = struct.unpack_from(
            '>QIIBBHI', data, p)
        name = data[p + 24 + extra:p + 24 + extra + nsize].decode()
        nbits = (size + (1 << gbits) - 1) >> gbits
        raw = b''
        for i in range(tsize):
            e = struct.unpack_from('>Q', data, toff + 8 * i)[0]
            off = e & 0x00fffffffffffe00
            if off:
                raw += data[off:off + cluster]
            else:
                raw += (b'\xff' if e & 1 else b'\0') * cluster
        bits = int.from_bytes(raw, 'little') & ((1 << nbits) - 1)
        out[name] = (flags, 1 << gbits, tsize, bits)
        p += (24 + nsize + extra + 7) // 8 * 8
    check(p - doff == dsize, 'directory size %d, entries end at %d'
          % (dsize, p - doff))
    return out


def granules(bits):
    """The set bit numbers of an int."""
    return {i for i in range(bits.bit_length()) if bits >> i & 1}


def mkimg(path, size='16M', opts=None):
    argv = [common.tools().qemu_img, 'create', '-q', '-f', 'qcow2']
    if opts:
        argv += ['-o', opts]
    run(argv + [path, size])


def info_text(img):
    res = run([common.tools().qemu_img, 'info', img])
    return res.out.replace(img, 'IMG')


def twin_run(d, steps, size='16M', opts=None):
    """Runs steps (a list of ('img'|'io', argv-after-tool)) with QEMU's
    tools on theirs.qcow2 and ours on ours.qcow2; {who: image path}."""
    t = common.tools()
    imgs = {}
    for who, img_tool, io_tool in (('theirs', t.qemu_img, t.qemu_io),
                                   ('ours', t.img, t.io)):
        img = os.path.join(d, who + '.qcow2')
        mkimg(img, size, opts)
        other = os.path.join(d, who + '-other.qcow2')
        mkimg(other, size)
        for kind, argv in steps:
            argv = [a.replace('IMG', img).replace('OTHER', other)
                    for a in argv]
            if kind == 'img':
                run([img_tool] + argv)
            else:
                run([io_tool, '-f', 'qcow2'] + argv)
        imgs[who] = img
    return imgs


@runner.case()
def commands_like_qemu():
    # the other file's bitmap comes from QEMU in both runs
    steps = [
        ('img', ['bitmap', '--add', '-g', '32k', 'IMG', 'b1']),
        ('io', ['-c', 'write 0 100k', '-c', 'write 5M 64k', 'IMG']),
        ('img', ['bitmap', '--add', 'IMG', 'b2', '--disable']),
        ('io', ['-c', 'write 1M 4k', 'IMG']),
        ('img', ['bitmap', '--enable', 'IMG', 'b2']),
        ('io', ['-c', 'write -z 2M 128k', '-c', 'discard 8M 64k', 'IMG']),
        ('img', ['bitmap', '--add', '-g', '1M', 'IMG', 'b3']),
        ('img', ['bitmap', '--merge', 'b1', 'IMG', 'b3']),
        ('img', ['bitmap', '--clear', '--disable', 'IMG', 'b1']),
        ('io', ['-c', 'write 12M 512', 'IMG']),
        ('img', ['bitmap', '--add', '--merge', 'o1', '-b', 'OTHER', '-F',
                 'qcow2', 'IMG', 'b4']),
        ('img', ['bitmap', '--add', 'IMG', 'gone']),
        ('img', ['bitmap', '--remove', 'IMG', 'gone']),
    ]
    t = common.tools()
    with common.TempDir() as d:
        imgs = {}
        for who, img_tool, io_tool in (('theirs', t.qemu_img, t.qemu_io),
                                       ('ours', t.img, t.io)):
            img = os.path.join(d, who + '.qcow2')
            other = os.path.join(d, who + '-other.qcow2')
            mkimg(img)
            mkimg(other)
            # the -b source: made and written by QEMU for both runs
            run([t.qemu_img, 'bitmap', '--add', other, 'o1'])
            run([t.qemu_io, '-c', 'write 15M 64k', other])
            for kind, argv in steps:
                argv = [a.replace('IMG', img).replace('OTHER', other)
                        for a in argv]
                tool = img_tool if kind == 'img' else io_tool
                run([tool] + argv)
            imgs[who] = img
        theirs, ours = (read_bitmaps(imgs[w]) for w in ('theirs', 'ours'))
        check(sorted(theirs) == ['b1', 'b2', 'b3', 'b4'],
              'QEMU made bitmaps %r' % sorted(theirs))
        check(theirs == ours, 'bitmaps differ:\nQEMU   %r\nstrata %r'
              % (theirs, ours))
        # what QEMU's own bits say, so the comparison is not vacuous
        check(granules(theirs['b2'][3]) == {32, 33, 128, 192}, 'b2 bits %r'
              % sorted(granules(theirs['b2'][3])))
        check(theirs['b1'][0] == 0 and theirs['b2'][0] == 2,
              'flags %r %r' % (theirs['b1'][0], theirs['b2'][0]))
        for img in imgs.values():
            common.qemu_check_clean(img)
        check(info_text(imgs['theirs']) == info_text(imgs['ours']),
              'qemu-img info differs:\n%s\n%s' % (info_text(imgs['theirs']),
                                                  info_text(imgs['ours'])))
        diff = common.files_equal(imgs['theirs'], imgs['ours'])
        check(diff is None, 'the files differ (QEMU lays bitmaps out '
              'elsewhere): %s' % diff)


@runner.case()
def writes_are_recorded_for_qemu():
    t = common.tools()
    with common.TempDir() as d:
        img = os.path.join(d, 'a.qcow2')
        mkimg(img)
        run([t.qemu_img, 'bitmap', '--add', '-g', '64k', img, 'on'])
        run([t.qemu_img, 'bitmap', '--add', '-g', '64k', img, 'off',
             '--disable'])
        common.run_io(t.io, img, ['write 0 1', 'write -z 1M 200k',
                                  'discard 4M 64k', 'write 65535 2'])
        bms = read_bitmaps(img)
        # 200k from 1M (granule 16) ends inside granule 19
        want = {0, 1} | set(range(16, 20)) | {64}
        check(granules(bms['on'][3]) == want, 'enabled bitmap holds %r, '
              'want %r' % (sorted(granules(bms['on'][3])), sorted(want)))
        check(bms['off'][3] == 0, 'the disabled bitmap recorded writes')
        check(bms['on'][0] == 2, 'flags %#x: not auto, or left in use'
              % bms['on'][0])
        res = run([t.qemu_img, 'info', img])
        check('inconsistent' not in res.err and 'in-use' not in res.out,
              'QEMU does not trust the bitmap:\n' + res.describe())
        common.qemu_check_clean(img)


@runner.case()
def crash_leaves_bitmap_in_use():
    t = common.tools()
    with common.TempDir() as d:
        img = os.path.join(d, 'a.qcow2')
        mkimg(img)
        run([t.qemu_img, 'bitmap', '--add', img, 'b'])
        p = subprocess.run([t.io, '-f', 'qcow2', '-c', 'write 0 64k', '-c',
                            'abort', img], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
        check(p.returncode == -signal.SIGABRT, 'strata-io abort: exit %d'
              % p.returncode)
        res = run([t.qemu_img, 'info', img])
        check('in-use' in res.out, 'bitmap not flagged in use after a '
              'crash:\n' + res.describe())
        copy = os.path.join(d, 'copy.qcow2')
        outs = []
        for tool in (t.qemu_img, t.img):
            shutil.copy(img, copy)
            r = run([tool, 'bitmap', '--clear', copy, 'b'], rc=1)
            check(read_bitmaps(copy)['b'][0] & 1, '%s trusts the in-use '
                  'bitmap again after a refused clear' % tool)
            outs.append(common.normalize_prog(r.err, os.path.basename(tool)))
            run([tool, 'bitmap', '--remove', copy, 'b'])
            check(read_bitmaps(copy) == {}, 'remove left %r'
                  % read_bitmaps(copy))
            common.qemu_check_clean(copy, allow_leaks=True)
        check(outs[0] == outs[1], 'clear of an in-use bitmap:\nQEMU   %r\n'
              'strata %r' % tuple(outs))


@runner.case()
def snapshot_apply_marks_everything():
    common.skip_if_qemu_tools('qemu-img refuses snapshot -a with bitmaps')
    t = common.tools()
    with common.TempDir() as d:
        img = os.path.join(d, 'a.qcow2')
        mkimg(img, '4M')
        run([t.qemu_io, '-c', 'write 0 64k', img])
        run([t.qemu_img, 'snapshot', '-c', 's1', img])
        run([t.qemu_img, 'bitmap', '--add', '-g', '1M', img, 'on'])
        run([t.qemu_img, 'bitmap', '--add', '-g', '1M', img, 'off',
             '--disable'])
        run([t.img, 'snapshot', '-a', 's1', img])
        bms = read_bitmaps(img)
        check(bms['on'][3] == 0b1111, 'enabled bitmap after snapshot -a: '
              '%#x, want every granule' % bms['on'][3])
        check(bms['off'][3] == 0, 'disabled bitmap changed')
        common.qemu_check_clean(img)


@runner.case()
def resize_keeps_bitmaps_like_qemu():
    with common.TempDir() as d:
        imgs = twin_run(d, [
            ('img', ['bitmap', '--add', '-g', '512', 'IMG', 'fine']),
            ('io', ['-c', 'write 3M 1M', 'IMG']),
            ('img', ['resize', 'IMG', '300M']),
            ('io', ['-c', 'write 290M 64k', 'IMG']),
            ('img', ['resize', '--shrink', 'IMG', '3500k']),
        ], size='4M')
        theirs, ours = (read_bitmaps(imgs[w]) for w in ('theirs', 'ours'))
        check(theirs == ours, 'after resizes:\nQEMU   %r\nstrata %r'
              % ({k: v[:3] for k, v in theirs.items()},
                 {k: v[:3] for k, v in ours.items()}))
        check(theirs['fine'][3] != 0, 'QEMU kept no bits: the case tests '
              'nothing')
        for img in imgs.values():
            common.qemu_check_clean(img)


@runner.case()
def check_counts_bitmap_clusters():
    t = common.tools()
    with common.TempDir() as d:
        img = os.path.join(d, 'a.qcow2')
        mkimg(img)
        run([t.qemu_img, 'bitmap', '--add', '-g', '512', img, 'b'])
        run([t.qemu_io, '-c', 'write 0 8M', img])
        before = read_bitmaps(img)
        check(before['b'][3] != 0, 'QEMU stored no bits')
        res = run([t.img, 'check', img])
        check('No errors were found' in res.out and 'leak' not in res.text,
              'strata-img check on an image with bitmaps:\n' +
              res.describe())
        run([t.img, 'check', '-r', 'all', img])
        check(read_bitmaps(img) == before, 'check -r all changed the '
              'bitmaps')
        common.qemu_check_clean(img)


@runner.case()
def measure_counts_bitmaps_like_qemu():
    t = common.tools()
    with common.TempDir() as d:
        img = os.path.join(d, 'a.qcow2')
        mkimg(img, '1G')
        run([t.qemu_img, 'bitmap', '--add', '-g', '4k', img, 'b1'])
        run([t.qemu_img, 'bitmap', '--add', img, 'b2'])
        for args in (['-O', 'qcow2'], ['-O', 'qcow2', '-o', 'cluster_size=4k'],
                     ['--output=json', '-O', 'qcow2'], ['-O', 'raw']):
            want = run([t.qemu_img, 'measure'] + args + [img])
            got = run([t.img, 'measure'] + args + [img])
            check(want.out == got.out, 'measure %s:\nQEMU\n%s\nstrata\n%s'
                  % (' '.join(args), want.out, got.out))
            if args == ['-O', 'qcow2']:
                check(re.search(r'bitmaps size: [1-9]', want.out),
                      'QEMU counted no bitmaps:\n' + want.out)


ERROR_CASES = [
    ['bitmap', 'IMG', 'b'],
    ['bitmap', '--remove', '-g', '64k', 'IMG', 'b'],
    ['bitmap', '--add', '-F', 'qcow2', 'IMG', 'b'],
    ['bitmap', '--add', '-b', 'IMG', 'IMG', 'b'],
    ['bitmap', '--add', 'IMG'],
    ['bitmap', '--add', 'IMG', ''],
    ['bitmap', '--add', 'IMG', 'have'],
    ['bitmap', '--add', '-g', '1000', 'IMG', 'b'],
    ['bitmap', '--add', '-g', '256', 'IMG', 'b'],
    ['bitmap', '--add', '-g', '4G', 'IMG', 'b'],
    ['bitmap', '--remove', 'IMG', 'missing'],
    ['bitmap', '--clear', 'IMG', 'missing'],
    ['bitmap', '--merge', 'missing', 'IMG', 'have'],
    ['bitmap', '--merge', 'o1', '-b', 'SMALL', 'IMG', 'have'],
    ['bitmap', '--add', 'V2', 'b'],
]


@runner.case()
def errors_like_qemu():
    t = common.tools()
    with common.TempDir() as d:
        img = os.path.join(d, 'a.qcow2')
        small = os.path.join(d, 'small.qcow2')
        v2 = os.path.join(d, 'v2.qcow2')
        mkimg(img)
        run([t.qemu_img, 'bitmap', '--add', img, 'have'])
        mkimg(small, '1M')
        run([t.qemu_img, 'bitmap', '--add', small, 'o1'])
        mkimg(v2, '1M', 'compat=0.10')
        originals = {'IMG': img, 'SMALL': small, 'V2': v2}
        want = {k: read_bitmaps(p) for k, p in originals.items()}
        for n, case in enumerate(ERROR_CASES):
            outs, results = [], []
            for who, tool in (('theirs', t.qemu_img), ('ours', t.img)):
                sub = os.path.join(d, '%s%d' % (who, n))
                os.mkdir(sub)
                copies = {k: os.path.join(sub, os.path.basename(p))
                          for k, p in originals.items()}
                for k, p in originals.items():
                    shutil.copy(p, copies[k])
                r = run([tool] + [copies.get(a, a) for a in case], rc=None)
                err = common.normalize_prog(r.err, os.path.basename(tool))
                # QEMU names its automatic node ("#block123"), strata its own
                err = re.sub(r"persistent in '[^']*'", "persistent in 'NODE'",
                             err)
                outs.append((r.rc, err.replace(sub, 'D')))
                results.append(copies)
                for k in originals:
                    check(read_bitmaps(copies[k]) == want[k],
                          '%s changed the bitmaps of %s: %s' % (tool, k, case))
            check(outs[0] == outs[1] and outs[0][0] != 0,
                  '%s:\nQEMU   %r\nstrata %r' % (case, outs[0], outs[1]))
            # a refusal after the open still stores the bitmaps, in QEMU's
            # places: the files stay twins
            for k in originals:
                diff = common.files_equal(results[0][k], results[1][k])
                check(diff is None, '%s: %s' % (case, diff))


@runner.case()
def stale_extension_dropped_like_qemu():
    t = common.tools()
    with common.TempDir() as d:
        img = os.path.join(d, 'a.qcow2')
        mkimg(img)
        run([t.qemu_img, 'bitmap', '--add', '-g', '4k', img, 'b'])
        run([t.qemu_io, '-c', 'write 0 1M', img])
        with open(img, 'r+b') as f:
            f.seek(88)
            bits = struct.unpack('>Q', f.read(8))[0]
            f.seek(88)
            f.write(struct.pack('>Q', bits & ~1))
        outs, copies = [], []
        for who, io in (('theirs', t.qemu_io), ('ours', t.io)):
            copy = os.path.join(d, who + '.qcow2')
            shutil.copy(img, copy)
            r = run([io, '-c', 'write 2M 4k', copy])
            outs.append(common.normalize_prog(r.err, os.path.basename(io))
                        .rstrip())
            copies.append(copy)
        check('bitmaps are now considered inconsistent' in outs[0],
              'QEMU gave no warning: %r' % outs[0])
        check(outs[0] == outs[1], 'warning:\nQEMU   %r\nstrata %r'
              % tuple(outs))
        diff = common.files_equal(copies[0], copies[1])
        check(diff is None, 'after the drop: %s' % diff)
        for copy in copies:
            check(read_bitmaps(copy) == {}, 'extension kept')
            run([t.qemu_img, 'check', '-q', '-r', 'leaks', copy], rc=None)
            common.qemu_check_clean(copy)


@runner.case()
def convert_copies_bitmaps_like_qemu():
    t = common.tools()
    with common.TempDir() as d:
        src = os.path.join(d, 'src.qcow2')
        mkimg(src, '8M')
        run([t.qemu_img, 'bitmap', '--add', '-g', '128k', src, 'first'])
        run([t.qemu_io, '-c', 'write 1M 300k', src])
        run([t.qemu_img, 'bitmap', '--add', '--disable', src, 'second'])
        run([t.qemu_img, 'bitmap', '--merge', 'first', src, 'second'])
        run([t.qemu_io, '-c', 'write 7M 4k', src])
        broken = os.path.join(d, 'broken.qcow2')
        shutil.copy(src, broken)
        p = subprocess.run([t.qemu_io, '-c', 'write 0 4k', '-c', 'abort',
                            broken], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
        check(p.returncode != 0, 'qemu-io abort did not abort')
        cases = [(['-O', 'qcow2', '--bitmaps', src], 0),
                 (['-O', 'raw', '--bitmaps', src], 1),
                 (['-O', 'qcow2', '--bitmaps', broken], 1),
                 (['-O', 'qcow2', '--bitmaps', '--skip-broken-bitmaps',
                   broken], 0),
                 (['-O', 'qcow2', '--skip-broken-bitmaps', src], 1)]
        for args, rc in cases:
            outs, got = [], []
            for who, tool in (('theirs', t.qemu_img), ('ours', t.img)):
                out = os.path.join(d, who + '.out')
                if os.path.exists(out):
                    os.unlink(out)
                r = run([tool, 'convert'] + args + [out], rc=rc)
                outs.append(common.normalize_prog(r.err,
                                                  os.path.basename(tool)))
                got.append(read_bitmaps(out) if rc == 0 else None)
            check(outs[0] == outs[1], '%s:\nQEMU   %r\nstrata %r'
                  % (args, outs[0], outs[1]))
            check(got[0] == got[1], '%s: bitmaps\nQEMU   %r\nstrata %r'
                  % (args, got[0], got[1]))
            if args[-1] == src and rc == 0:
                check(sorted(got[0]) == ['first', 'second'],
                      'QEMU copied %r' % got[0])


def craft_bitmaps(path, names, gbits, table_entries):
    """Adds a bitmaps extension to path (an image qemu-img just made, no
    backing file): one zero table appended, every entry pointing at it."""
    with open(path, 'r+b') as f:
        data = bytearray(f.read())
        cluster = 1 << struct.unpack_from('>I', data, 20)[0]
        end = (len(data) + cluster - 1) // cluster * cluster
        table_off = end
        table_len = (table_entries * 8 + cluster - 1) // cluster * cluster
        dir_off = table_off + table_len
        directory = b''
        for n in names:
            e = struct.pack('>QIIBBHI', table_off, table_entries, 2, 1, gbits,
                            len(n), 0) + n.encode()
            directory += e + b'\0' * (-len(e) % 8)
        f.seek(table_off)
        f.write(b'\0' * table_len + directory)
        f.write(b'\0' * (-f.tell() % cluster))
        # the extension goes before the end marker (the feature table
        # stays); the autoclear bit vouches for it
        hlen = struct.unpack_from('>I', data, 100)[0]
        pos = hlen
        while struct.unpack_from('>I', data, pos)[0] != 0:
            pos += 8 + (struct.unpack_from('>I', data, pos + 4)[0] + 7) // 8 * 8
        ext = struct.pack('>IIIIQQ', EXT_BITMAPS, 24, len(names), 0,
                          len(directory), dir_off)
        f.seek(pos)
        f.write(ext + b'\0' * 8)
        f.seek(88)
        f.write(struct.pack('>Q', struct.unpack_from('>Q', data, 88)[0] | 1))


@runner.case()
def too_many_bitmaps_for_memory():
    t = common.tools()
    with common.TempDir() as d:
        # the crafting, checked by QEMU on a small image (QEMU takes
        # minutes to load the big one): 1 GiB at 64 KiB a bit
        small = os.path.join(d, 'small.qcow2')
        mkimg(small, '1G')
        craft_bitmaps(small, ['s0', 's1'], 16, 1)
        info = run([t.qemu_img, 'info', small])
        check(info.out.count('granularity: 65536') == 2 and
              'inconsistent' not in info.err,
              'the crafted image is not what QEMU reads:\n' + info.describe())
        img = os.path.join(d, 'a.qcow2')
        mkimg(img, '2T')
        # granularity 512 over 2 TiB: 512 MiB of bits, 8192 table entries
        craft_bitmaps(img, ['b%d' % i for i in range(9)], 9, 8192)
        before = open(img, 'rb').read()
        res = run([t.io, '-c', 'write 0 4k', img], rc=1)
        check('persistent bitmaps need 4608 MiB' in res.err,
              'no clear refusal:\n' + res.describe())
        check(open(img, 'rb').read() == before, 'a refused open changed '
              'the image')
        res = run([t.img, 'info', img])
        check(res.out.count('granularity: 512') == 9,
              'a read-only open does not list them:\n' + res.describe())


@runner.case()
def downgrade_refused():
    common.skip_if_qemu_tools('qemu-img downgrades, losing the bitmaps')
    t = common.tools()
    with common.TempDir() as d:
        img = os.path.join(d, 'a.qcow2')
        mkimg(img)
        run([t.qemu_img, 'bitmap', '--add', img, 'b'])
        run([t.qemu_io, '-c', 'write 0 64k', img])
        before = read_bitmaps(img)
        res = run([t.img, 'amend', '-o', 'compat=0.10', img], rc=1)
        check('bitmaps' in res.err, 'no reason given:\n' + res.describe())
        info = run([t.qemu_img, 'info', img]).out
        check('compat: 1.1' in info and read_bitmaps(img) == before,
              'a refused downgrade changed the image:\n' + info)
        common.qemu_check_clean(img)


if __name__ == '__main__':
    sys.exit(runner.main())
