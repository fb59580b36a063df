#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""qcow2 external data files (QEMU's data_file), next to qemu-img/qemu-io.

Images with a data file made by qemu-img are read and written by strata
and checked by qemu-img, and the reverse; contents are compared byte for
byte (qemu-io read -P, qemu-img compare against a raw shadow), and the
data file itself must hold the guest data at the guest offsets.
qemu-img check finds nothing (data clusters have no refcounts, so no
leaks either).  create gives the file sizes, maps and info lines
qemu-img gives for every preallocation mode, and info (qemu-img's and
qemu-io's) the same data file lines.  Internal snapshots and
compressed writes are refused with QEMU's texts and change nothing on
disk; with data_file_raw, zero writes and discards reach the raw file.
Random requests from both tools match a raw shadow.  An L2 entry
pointing elsewhere than its guest offset is corruption, in QEMU's
words; amend changes the recorded name and clears data_file_raw as
qemu-img does; blockdev-add takes a data file as qemu-storage-daemon
does.
"""

import json
import os
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

runner = common.Runner()

SIZE = 4 << 20
CS = 65536


def create(tool, img, data, extra='', size=SIZE):
    for p in (img, data):
        if os.path.exists(p):
            os.unlink(p)
    opts = 'data_file=' + data + (',' + extra if extra else '')
    common.run([tool, 'create', '-q', '-f', 'qcow2', '-o', opts, img,
                str(size)])


# Writes spread over clusters, partial clusters and two L2-table ranges'
# worth of offsets (cluster size 64k: one table covers 512 MiB, so the
# second table comes from a 1 GiB image in bigger_image_maps).
WRITES = [(0, 512, 0x11), (CS - 512, 1024, 0x22), (3 * CS + 100, 5000, 0x33),
          (1 << 20, 3 * CS, 0x44), (SIZE - 4096, 4096, 0x55)]
MORE = [(CS, 4096, 0x66), (2 << 20, CS + 7, 0x77), (1 << 20, 512, 0x88)]


def write_cmds(writes):
    return ['write -P %#x %d %d' % (p, o, n) for o, n, p in writes]


def read_cmds(shadow):
    return common.read_pattern_cmds(shadow.segments())


def shadow_of(writes, zeroes=()):
    m = common.IntervalMap(SIZE)
    for o, n, p in writes:
        m.set(o, n, p)
    for o, n in zeroes:
        m.set(o, n, 0)
    return m


def data_file_holds(data, writes, zeroed=()):
    """The guest bytes of each write sit at the guest offset in the data
    file (later writes win where they overlap).  Zeroed ranges are left
    out: without data_file_raw only the L2 entries say they read zeroes."""
    with open(data, 'rb') as f:
        buf = f.read()
    want = bytearray(len(buf))
    have = bytearray(len(buf))
    for o, n, p in writes:
        want[o:o + n] = bytes([p]) * n
        have[o:o + n] = b'\x01' * n
    for o, n in zeroed:
        have[o:o + n] = bytes(n)
    for i in range(len(buf)):
        if have[i] and buf[i] != want[i]:
            common.fail('data file byte %d is %#x, guest wrote %#x'
                        % (i, buf[i], want[i]))


def compare_with_shadow(img, shadow, d):
    raw = os.path.join(d, 'shadow.raw')
    shadow.write_raw(raw)
    common.qemu_compare_identical(img, raw)


@runner.case()
def qemu_image_used_by_strata():
    t = common.tools()
    with common.TempDir() as d:
        img, data = os.path.join(d, 'q.qcow2'), os.path.join(d, 'q.data')
        create(t.qemu_img, img, data)
        common.run_io(t.qemu_io, img, write_cmds(WRITES))
        common.run_io(t.io, img, read_cmds(shadow_of(WRITES)))
        zero = [(2 * CS, CS), (1 << 20, CS), (SIZE - 1000, 1000)]
        common.run_io(t.io, img, write_cmds(MORE) +
                      ['write -z %d %d' % z for z in zero])
        shadow = shadow_of(WRITES + MORE, zero)
        common.run_io(t.qemu_io, img, read_cmds(shadow))
        common.qemu_check_clean(img)
        compare_with_shadow(img, shadow, d)
        data_file_holds(data, WRITES + MORE, zero)
        common.check(os.path.getsize(data) == SIZE,
                     'data file is %d bytes' % os.path.getsize(data))


@runner.case()
def strata_image_used_by_qemu():
    t = common.tools()
    with common.TempDir() as d:
        img, data = os.path.join(d, 's.qcow2'), os.path.join(d, 's.data')
        create(t.img, img, data)
        common.run_io(t.io, img, write_cmds(WRITES))
        common.run_io(t.qemu_io, img, read_cmds(shadow_of(WRITES)))
        common.run_io(t.qemu_io, img, write_cmds(MORE))
        common.run_io(t.io, img, read_cmds(shadow_of(WRITES + MORE)))
        common.qemu_check_clean(img)
        res = common.run([t.img, 'check', img])
        common.check('No errors were found' in res.out, res.describe())
        compare_with_shadow(img, shadow_of(WRITES + MORE), d)
        data_file_holds(data, WRITES + MORE)
        # the qcow2 file holds metadata only: header, refcount table and
        # block, L1 and one L2 table
        common.check(os.path.getsize(img) <= 5 * CS,
                     'qcow2 file grew to %d bytes' % os.path.getsize(img))


@runner.case()
def info_matches_qemu():
    t = common.tools()
    with common.TempDir() as d:
        img, data = os.path.join(d, 'i.qcow2'), os.path.join(d, 'i.data')
        for extra in ('', 'data_file_raw=on'):
            create(t.qemu_img, img, data, extra)
            ours = common.run([t.img, 'info', img]).out
            theirs = common.run([t.qemu_img, 'info', img]).out
            spec = [l for l in ours.splitlines() if l.startswith('    ')]
            want = [l for l in theirs.splitlines() if l.startswith('    ')]
            common.check(spec == want, 'info %s:\n%s\nqemu-img:\n%s'
                         % (extra, '\n'.join(spec), '\n'.join(want)))
            common.check('    data file: %s' % data in spec, ours)
            js = [json.loads(common.run([tool, 'info', '--output=json',
                                         img]).out)['format-specific']
                  for tool in (t.img, t.qemu_img)]
            common.check(js[0] == js[1], 'json: %r vs %r' % tuple(js))
            common.check(js[0]['data']['data-file-raw'] == bool(extra),
                         repr(js[0]))
            # qemu-io's info command prints the same two lines
            outs = [common.run([io, '-c', 'info', img]).out
                    for io in (t.io, t.qemu_io)]
            common.check(outs[0] == outs[1], 'io info:\n%s\nqemu-io:\n%s'
                         % tuple(outs))


@runner.case()
def info_does_not_open_the_data_file():
    """qemu-img info describes an image without opening its data file
    (an untrusted image must not make it open other files): it works
    with the data file gone, where opening for I/O fails, as qemu-io's."""
    t = common.tools()
    with common.TempDir() as d:
        img, data = os.path.join(d, 'g.qcow2'), os.path.join(d, 'g.data')
        create(t.qemu_img, img, data)
        os.unlink(data)
        for args in (['info'], ['info', '--output=json']):
            ours = common.run([t.img] + args + [img])
            theirs = common.run([t.qemu_img] + args + [img])
            common.check(ours.out == theirs.out, '%s:\n%s\nqemu-img:\n%s'
                         % (args, ours.out, theirs.out))
        ours = common.run([t.io, '-c', 'read 0 512', img], rc=1)
        theirs = common.run([t.qemu_io, '-c', 'read 0 512', img], rc=1)
        common.check(common.normalize_prog(ours.err, t.io_name) ==
                     common.normalize_prog(theirs.err, 'qemu-io'),
                     '%r vs %r' % (ours.err, theirs.err))
        common.check(not os.path.exists(data), 'the data file came back')


@runner.case()
def create_matches_qemu():
    t = common.tools()
    with common.TempDir() as d:
        for mode in ('off', 'metadata', 'falloc', 'full'):
            sizes = {}
            maps = {}
            for who, tool in (('ours', t.img), ('qemu', t.qemu_img)):
                img = os.path.join(d, who + '.qcow2')
                data = os.path.join(d, who + '.data')
                create(tool, img, data, 'preallocation=' + mode, size=64 << 20)
                sizes[who] = (os.path.getsize(img), os.path.getsize(data))
                m = json.loads(common.run([t.qemu_img, 'map',
                                           '--output=json', img]).out)
                maps[who] = [{k: v for k, v in e.items() if k != 'filename'}
                             for e in m]
                common.qemu_check_clean(img)
                if mode in ('falloc', 'full'):
                    blocks = os.stat(data).st_blocks * 512
                    common.check(blocks >= 64 << 20,
                                 '%s %s: data file has %d bytes allocated'
                                 % (who, mode, blocks))
            common.check(sizes['ours'] == sizes['qemu'],
                         '%s: sizes %r, qemu-img %r'
                         % (mode, sizes['ours'], sizes['qemu']))
            common.check(maps['ours'] == maps['qemu'],
                         '%s: map %r, qemu-img %r'
                         % (mode, maps['ours'], maps['qemu']))
        # iotest 243's numbers
        common.check(sizes['ours'][0] == 327680, repr(sizes))
        # with the same (relative) data file name, the qcow2 files are
        # identical byte for byte, data_file_raw or not
        for mode in ('off', 'metadata', 'full'):
            for raw in ('off', 'on'):
                files = []
                for who, tool in (('ours', t.img), ('qemu', t.qemu_img)):
                    sub = os.path.join(d, who)
                    shutil.rmtree(sub, ignore_errors=True)
                    os.mkdir(sub)
                    common.run([tool, 'create', '-q', '-f', 'qcow2', '-o',
                                'data_file=x.data,data_file_raw=%s,'
                                'preallocation=%s' % (raw, mode), 'x.qcow2',
                                '3M'], cwd=sub)
                    files.append(os.path.join(sub, 'x.qcow2'))
                diff = common.files_equal(*files)
                common.check(diff is None, '%s raw=%s: %s' % (mode, raw, diff))


@runner.case()
def resize_matches_qemu():
    """resize grows the data file with the disk (falloc: allocated),
    shrinks it with the disk, and maps only metadata into the qcow2 file,
    as qemu-img resize does; the data stays readable."""
    t = common.tools()
    with common.TempDir() as d:
        got = {}
        for who, tool in (('ours', t.img), ('qemu', t.qemu_img)):
            img = os.path.join(d, who + '.qcow2')
            data = os.path.join(d, who + '.data')
            create(t.qemu_img, img, data, size=1 << 20)
            common.run_io(t.qemu_io, img, ['write -P 0x41 0 1M'])
            steps = []
            for args in (['3M'], ['--preallocation=falloc', '5M'],
                         ['--shrink', '2M']):
                common.run([tool, 'resize', '-q', img] + args)
                steps.append((os.path.getsize(img), os.path.getsize(data),
                              common.run([t.qemu_img, 'map',
                                          '--output=json', img]).out))
            got[who] = steps
            common.qemu_check_clean(img)
            common.run_io(t.qemu_io, img, ['read -P 0x41 0 1M',
                                           'read -P 0 1M 1M'])
        common.check(got['ours'] == got['qemu'], 'resize steps:\n%r\n%r'
                     % (got['ours'], got['qemu']))


@runner.case()
def shrink_drops_a_whole_l2_table():
    """A shrink that cuts off a whole L2 table (4 KiB clusters: one
    table maps 2 MiB) releases that table's refcount only: its data
    clusters live in the data file and have none.  strata once lowered
    the count of the qcow2 cluster at each data offset and marked the
    image corrupt (qemu-iotests 033 with -o data_file).  The same steps
    through qemu-io: same output, same map, check clean, data kept."""
    t = common.tools()
    with common.TempDir() as d:
        got = {}
        for who, tool in (('ours', t.io), ('qemu', t.qemu_io)):
            img = os.path.join(d, who + '.qcow2')
            data = os.path.join(d, who + '.data')
            create(t.qemu_img, img, data, extra='cluster_size=4k')
            common.run_io(t.qemu_io, img, ['write -P 0x61 0 512',
                                           'write -P 0x62 1M 64k',
                                           'write -P 0x63 2M 512'])
            r = common.run([tool, '-f', 'qcow2', '-c', 'truncate 2M', img],
                           rc=None)
            got[who] = (r.rc, r.out, common.normalize_prog(
                r.err, os.path.basename(tool)),
                common.run([t.qemu_img, 'map', '--output=json', img]).out)
            common.qemu_check_clean(img)
            common.run_io(t.qemu_io, img, ['read -P 0x61 0 512',
                                           'read -P 0x62 1M 64k'])
        common.check(got['ours'] == got['qemu'], 'truncate:\n%r\n%r'
                     % (got['ours'], got['qemu']))


@runner.case()
def file_prefixed_names():
    """An image and a data file named with QEMU's "file:" prefix (and
    a colon in the rest): create makes the files the names stand for,
    records the data file's name as given, and the image opens and
    works, as with qemu-img (qemu-iotests 126 with -o data_file)."""
    t = common.tools()
    with common.TempDir() as d:
        got = {}
        for who, tool in (('ours', t.img), ('qemu', t.qemu_img)):
            img = os.path.join(d, who + ':img.qcow2')
            name = 'file:' + img
            r = common.run([tool, 'create', '-q', '-f', 'qcow2', '-o',
                            'data_file=%s.data' % name, name, '1M'], rc=None)
            common.check(r.rc == 0, r.describe())
            common.check(os.path.exists(img + '.data'),
                         '%s: no data file %s.data' % (who, img))
            common.run_io(t.qemu_io, name, ['write -P 0x5a 0 64k'])
            common.qemu_check_clean(img)
            info = json.loads(common.run([t.qemu_img, 'info', '--output=json',
                                          img]).out)
            got[who] = info['format-specific']['data']['data-file'].replace(
                who, 'WHO')
        common.check(got['ours'] == got['qemu'], 'recorded names: %r'
                     % got)


@runner.case()
def too_large_create_changes_nothing():
    """A 16 TiB disk on a file system whose files cannot be that large
    (ext4): qemu-img's text for any create that fails with EFBIG, and
    nothing left behind -- no image, no new data file, and a data file
    that was there keeps its bytes.  Skipped where the file system takes
    such a file."""
    t = common.tools()
    big = str(16 << 40)
    with common.TempDir() as d:
        probe = os.path.join(d, 'probe')
        with open(probe, 'wb') as f:
            try:
                f.truncate(16 << 40)
            except OSError:
                pass
            else:
                raise common.Skip('this file system takes a 16 TiB file')
        os.unlink(probe)
        def create_fails(tool, argv):
            # common.run's file size limit would kill the tool (SIGXFSZ)
            # before the file system can refuse: run without it
            p = subprocess.run([tool, 'create', '-q'] + argv,
                               stdin=subprocess.DEVNULL, capture_output=True,
                               text=True, timeout=120)
            common.check(p.returncode == 1, 'rc %d: %s' % (p.returncode,
                                                          p.stderr))
            return common.normalize_prog(p.stderr, os.path.basename(tool))

        for args in (['-f', 'raw', '@/r.raw', big],
                     ['-f', 'qcow2', '-o', 'data_file=@/x.data', '@/x.qcow2',
                      big]):
            res = []
            for tool in (t.img, t.qemu_img):
                res.append(create_fails(tool,
                                        [a.replace('@', d) for a in args]))
                if tool == t.img and not t.are_qemu:
                    # strata's rule; qemu-img leaves an empty raw file
                    left = sorted(os.listdir(d))
                    common.check(left == [], 'left behind: %s' % left)
                for f in os.listdir(d):
                    os.unlink(os.path.join(d, f))
            common.check(res[0] == res[1], 'messages:\n%s\n%s' % tuple(res))
            common.check('too large' in res[0], res[0])
        if t.are_qemu:
            return
        keep = os.path.join(d, 'x.data')
        with open(keep, 'wb') as f:
            f.write(b'keep')
        create_fails(t.img, ['-f', 'qcow2', '-o', 'data_file=' + keep,
                             os.path.join(d, 'x.qcow2'), big])
        with open(keep, 'rb') as f:
            common.check(f.read() == b'keep', 'the data file was changed')


@runner.case()
def preallocating_grow_keeps_backing_data():
    """A grow with preallocation=metadata/falloc/full of an image with
    a data file over a backing file, from a size inside a cluster: the
    preallocation maps that cluster, so what the backing file showed
    there must be copied into the data file first (strata once mapped it
    unread: zeroes where the backing data was; qemu-iotests 125 with
    -o data_file).  Same reads and map as qemu-img's."""
    t = common.tools()
    with common.TempDir() as d:
        base = os.path.join(d, 'base.raw')
        common.run([t.qemu_img, 'create', '-q', '-f', 'raw', base, '128k'])
        common.run_io(t.qemu_io, base, ['write -P 1 0 128k'], fmt='raw')
        for prealloc in ('metadata', 'falloc', 'full'):
            maps = {}
            for who, tool in (('ours', t.img), ('qemu', t.qemu_img)):
                img = os.path.join(d, who + '.qcow2')
                data = os.path.join(d, who + '.data')
                for p in (img, data):
                    if os.path.exists(p):
                        os.unlink(p)
                common.run([t.qemu_img, 'create', '-q', '-f', 'qcow2', '-F',
                            'raw', '-b', base, '-o', 'data_file=' + data,
                            img, '31k'])
                common.run([tool, 'resize', '-q', '--preallocation=' +
                            prealloc, img, '96k'])
                common.run_io(t.qemu_io, img, ['read -P 1 0 31k',
                                               'read -P 0 31k 65k'])
                common.qemu_check_clean(img)
                maps[who] = common.run([t.qemu_img, 'map', '--output=json',
                                        img]).out.replace(who, 'WHO')
            common.check(maps['ours'] == maps['qemu'], '%s maps:\n%s\n%s'
                         % (prealloc, maps['ours'], maps['qemu']))


@runner.case()
def snapshot_and_compression_refused():
    t = common.tools()
    with common.TempDir() as d:
        img, data = os.path.join(d, 'r.qcow2'), os.path.join(d, 'r.data')
        create(t.qemu_img, img, data)
        common.run_io(t.qemu_io, img, write_cmds(WRITES))
        before = (common.sha256(img), common.sha256(data))
        for args in (['snapshot', '-c', 's1'], ['snapshot', '-a', 's1'],
                     ['snapshot', '-d', 's1']):
            ours = common.run([t.img] + args + [img], rc=1)
            theirs = common.run([t.qemu_img] + args + [img], rc=1)
            common.check(common.normalize_prog(ours.err, t.img_name) ==
                         common.normalize_prog(theirs.err, 'qemu-img'),
                         '%s: %r vs %r' % (args, ours.err, theirs.err))
            common.check((common.sha256(img), common.sha256(data)) == before,
                         '%s changed the files' % args)
            common.check('Operation not supported' in ours.err or
                         args[1] == '-d', ours.describe())
        ours = common.run([t.io, '-c', 'write -c 0 64k', img], rc=None)
        theirs = common.run([t.qemu_io, '-c', 'write -c 0 64k', img], rc=None)
        common.check(ours.out + ours.err == theirs.out + theirs.err and
                     'Operation not supported' in ours.out + ours.err,
                     'write -c: %r vs %r' % (ours.out + ours.err,
                                             theirs.out + theirs.err))
        common.check((common.sha256(img), common.sha256(data)) == before,
                     'write -c changed the files')
        common.qemu_check_clean(img)


@runner.case()
def data_file_raw_zeroes_reach_the_file():
    t = common.tools()
    with common.TempDir() as d:
        img, data = os.path.join(d, 'z.qcow2'), os.path.join(d, 'z.data')
        create(t.img, img, data, 'data_file_raw=on')
        common.run_io(t.io, img, ['write -P 0x5a 0 %d' % SIZE])
        zero = [(CS, 2 * CS), (5 * CS + 512, 1024), (SIZE - 700, 700)]
        common.run_io(t.io, img, ['write -z %d %d' % z for z in zero] +
                      ['discard %d %d' % (1 << 20, CS)])
        zero.append((1 << 20, CS))
        common.run_io(t.qemu_io, data, ['read -P 0 %d %d' % z for z in zero],
                      fmt='raw')
        res = common.run([t.qemu_img, 'compare', '-f', 'qcow2', '-F', 'raw',
                          img, data])
        common.check('identical' in res.out, res.describe())
        common.qemu_check_clean(img)
        info = json.loads(common.run([t.qemu_img, 'info', '--output=json',
                                      img]).out)
        common.check(info['format-specific']['data']['data-file-raw'],
                     'data_file_raw was cleared: %r' % info)


def random_ops(rng, n):
    """n requests: writes, zero writes (partial clusters too) and
    cluster-aligned discards, with what each makes the guest read."""
    ops = []
    for i in range(n):
        kind = rng.choice(('write', 'write', 'zero', 'discard'))
        if kind == 'discard':
            off = rng.randrange(SIZE // CS) * CS
            ln = min(rng.randrange(1, 4) * CS, SIZE - off)
        else:
            off = rng.randrange(0, SIZE - 512, 512)
            ln = min(rng.choice((512, 4096, CS, 3 * CS + 1024)), SIZE - off)
        ops.append((kind, off, ln, 1 + i % 250))
    return ops


def op_cmd(op):
    kind, off, ln, pat = op
    if kind == 'write':
        return 'write -P %d %d %d' % (pat, off, ln)
    if kind == 'zero':
        return 'write -z %d %d' % (off, ln)
    return 'discard %d %d' % (off, ln)


@runner.case()
def random_requests_match_a_shadow():
    """Random writes, zero writes and discards (in batches, strata and
    qemu-io taking turns) on a data-file image, data_file_raw off and on:
    the guest reads what a raw shadow holds, qemu-img check stays clean,
    and with data_file_raw the data file alone is the shadow too."""
    import random
    t = common.tools()
    for raw in ('off', 'on'):
        rng = random.Random(0x5eed + (raw == 'on'))
        with common.TempDir() as d:
            img = os.path.join(d, 'm.qcow2')
            data = os.path.join(d, 'm.data')
            create(t.img, img, data, 'data_file_raw=' + raw)
            shadow = common.IntervalMap(SIZE)
            for batch in range(6):
                ops = random_ops(rng, 30)
                io = t.io if batch % 2 == 0 else t.qemu_io
                common.run([io, '-f', 'qcow2'] +
                           common.io_args([op_cmd(o) for o in ops]) + [img])
                for kind, off, ln, pat in ops:
                    shadow.set(off, ln, pat if kind == 'write' else 0)
            compare_with_shadow(img, shadow, d)
            common.qemu_check_clean(img)
            if raw == 'on':
                ref = os.path.join(d, 'shadow.raw')
                diff = common.files_equal(data, ref)
                common.check(diff is None, 'raw data file: %s' % diff)


def l2_entry_offset(img, index):
    """File offset of the active image's first L2 table's entry `index`."""
    with open(img, 'rb') as f:
        hdr = f.read(48)
        l1_off = int.from_bytes(hdr[40:48], 'big')
        f.seek(l1_off)
        l2 = int.from_bytes(f.read(8), 'big') & 0x00fffffffffffe00
    return l2 + 8 * index


@runner.case()
def mismatched_offset_is_corruption():
    t = common.tools()
    with common.TempDir() as d:
        img, data = os.path.join(d, 'c.qcow2'), os.path.join(d, 'c.data')
        create(t.qemu_img, img, data)
        common.run_io(t.qemu_io, img, ['write -P 0x31 %d %d' % (CS, CS)])
        pos = l2_entry_offset(img, 1)
        with open(img, 'r+b') as f:
            f.seek(pos)
            f.write((0x8000000000000000 | 2 * CS).to_bytes(8, 'big'))
        twin = os.path.join(d, 'c2.qcow2')
        shutil.copy(img, twin)
        ours = common.run([t.io, '-c', 'read %d 512' % CS, img], rc=None)
        theirs = common.run([t.qemu_io, '-c', 'read %d 512' % CS, twin],
                            rc=None)
        want = ('External data file host cluster offset %#x does not match '
                'guest cluster offset: %#x, L2 index: 0x1)' % (2 * CS, CS))
        common.check(want in theirs.err, 'oracle: ' + theirs.describe())
        common.check(common.normalize_prog(ours.out + ours.err, t.io_name) ==
                     common.normalize_prog(theirs.out + theirs.err,
                                           'qemu-io'),
                     '%r vs %r' % (ours.out + ours.err,
                                   theirs.out + theirs.err))


@runner.case()
def amend_name_and_raw_bit():
    t = common.tools()
    with common.TempDir() as d:
        img, data = os.path.join(d, 'a.qcow2'), os.path.join(d, 'a.data')
        create(t.img, img, data, 'data_file_raw=on')
        common.run_io(t.io, img, ['write -P 0x21 0 %d' % CS])
        moved = os.path.join(d, 'moved.data')
        # amend opens the image, data file included: rename afterwards
        common.run([t.img, 'amend', '-o', 'data_file=' + moved, img])
        os.rename(data, moved)
        common.run_io(t.qemu_io, img, ['read -P 0x21 0 %d' % CS])
        for tool in (t.img, t.qemu_img):
            res = common.run([tool, 'amend', '-o', 'data_file_raw=off', img])
            info = json.loads(common.run([t.qemu_img, 'info',
                                          '--output=json', img]).out)
            data_info = info['format-specific']['data']
            common.check(data_info['data-file'] == moved and
                         not data_info['data-file-raw'], repr(info))
            ours = common.run([t.img, 'amend', '-o', 'data_file_raw=on',
                               img], rc=1)
            theirs = common.run([t.qemu_img, 'amend', '-o',
                                 'data_file_raw=on', img], rc=1)
            common.check(common.normalize_prog(ours.err, t.img_name) ==
                         common.normalize_prog(theirs.err, 'qemu-img'),
                         '%r vs %r' % (ours.err, theirs.err))
        # no recorded name: an open needs the option, as with QEMU
        common.run([t.img, 'amend', '-o', 'data_file=', img])
        ours = common.run([t.io, '-c', 'read 0 512', img], rc=1)
        theirs = common.run([t.qemu_io, '-c', 'read 0 512', img], rc=1)
        common.check(common.normalize_prog(ours.err, t.io_name) ==
                     common.normalize_prog(theirs.err, 'qemu-io') and
                     "'data-file' is required" in ours.err,
                     '%r vs %r' % (ours.err, theirs.err))
        opened = 'open -o data-file.filename=%s,file.filename=%s' % (moved,
                                                                     img)
        for io in (t.io, t.qemu_io):
            res = common.run([io, '-c', opened, '-c', 'read -P 0x21 0 512'])
            common.check('read 512/512' in res.out and
                         'Pattern verification failed' not in res.out,
                         res.describe())
        spec = ('driver=qcow2,file.filename=%s,data-file.filename=%s'
                % (img, moved))
        for tool in (t.img, t.qemu_img):
            res = common.run([tool, 'check', '--image-opts', spec])
            common.check('No errors were found' in res.out, res.describe())


@runner.case()
def qmp_blockdev_add_with_data_file():
    """blockdev-add takes "data-file" as a node reference or a definition,
    as qemu-storage-daemon does: the same replies (query-named-block-nodes
    with the data file lines included) and errors (a data file node in
    use cannot be deleted), and the same images
    afterwards (qmplib compares and checks them)."""
    import qmplib
    from qmplib import cmd

    class DataFileScenario(qmplib.Scenario):
        def run_side(self, binary, d):
            img, data = os.path.join(d, 'd0.qcow2'), os.path.join(d, 'd0.data')
            if not os.path.exists(img):
                create(common.tools().qemu_img, img, data)
                common.run_io(common.tools().qemu_io, img,
                              ['write -P 0x3c 0 64k'])
            return super().run_side(binary, d)

    qcow2 = {'driver': 'file', 'filename': '{D}/d0.qcow2'}
    DataFileScenario('data-file', images=(), blockdevs=[
        'driver=file,node-name=df,filename={D}/d0.data'], steps=[
        cmd('blockdev-add', **{'driver': 'qcow2', 'node-name': 'd0',
                               'file': qcow2, 'data-file': 'df'}),
        cmd('query-named-block-nodes'),
        cmd('blockdev-del', **{'node-name': 'df'}),   # in use by d0
        cmd('blockdev-del', **{'node-name': 'd0'}),
        cmd('blockdev-add', **{'driver': 'qcow2', 'node-name': 'd1',
                               'file': qcow2, 'data-file': 'nope'}),
        cmd('blockdev-add', **{'driver': 'qcow2', 'node-name': 'd2',
                               'read-only': True, 'file': qcow2,
                               'data-file': {'driver': 'file',
                                             'filename': '{D}/d0.data'}}),
        cmd('blockdev-del', **{'node-name': 'd2'}),
        cmd('blockdev-del', **{'node-name': 'df'}),   # free again
    ]).run()


if __name__ == '__main__':
    sys.exit(runner.main())
