#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Generates the seed corpus of the qcow2 fuzz target (tests/fuzz/corpus/).

Each seed is a small qcow2 image made with qemu-img / qemu-io (or
strata-img / strata-io given with --img / --io), followed by an operation
script and the script's length byte, in the layout fuzz-qcow2.c reads:

    [image section][script][len(script): 1 byte]

Images up to RAW_LIMIT bytes are stored raw; larger ones (64 KiB
clusters) as sparse extents {u32le offset, u16le length, bytes}, which
keeps every seed under a few KiB.  Shapes: cluster sizes 512 B..64 KiB,
refcount_bits 1..64, compat 0.10 and 1.1, with and without internal
snapshots, a backing file name that does not exist, guest data, zero
clusters and compressed clusters.

Scripts come from a seeded PRNG; images are what qemu-img writes (the
snapshot dates differ between runs, nothing else should).  The corpus is committed, so replay needs
neither this script nor qemu-img.

Usage: gen-corpus.py [--out DIR] [--img qemu-img] [--io qemu-io]
"""

import argparse
import os
import random
import shutil
import struct
import subprocess
import sys
import tempfile

RAW_LIMIT = 8 * 1024
MAX_EXTENT = 0xFFFF
GAP_MERGE = 16

# op numbers, as in fuzz-qcow2.c's ops[] (op byte % 20)
READ, WRITE, ZERO, DISCARD, STATUS, FLUSH, CHECK, REPAIR = 0, 1, 4, 5, 6, 7, 8, 9
SNAP_LIST, SNAP_CREATE, SNAP_DELETE, SNAP_GOTO, REOPEN, TRUNCATE = (
    10, 11, 12, 13, 14, 15)
SNAP_LOAD_TMP, REOPEN_RO_RW, INFO, STATUS_ABOVE = 16, 17, 18, 19


def rng_args(rnd):
    """A range argument: u16 offset in 512-byte units, mode byte, u16 len."""
    return bytes([rnd.randrange(256), rnd.randrange(8), rnd.randrange(256)]) + \
        struct.pack('<H', rnd.randrange(0x2000))


def script_random(rnd, n):
    out = bytearray()
    for _ in range(n):
        op = rnd.choice([READ, WRITE, WRITE, ZERO, DISCARD, STATUS, FLUSH,
                         CHECK, REPAIR, SNAP_LIST, SNAP_CREATE, SNAP_DELETE,
                         SNAP_GOTO, REOPEN, TRUNCATE, READ])
        out.append(op)
        if op == WRITE:
            out.append(rnd.randrange(1, 256))
            out += rng_args(rnd)
        elif op == ZERO:
            out.append(rnd.randrange(2))
            out += rng_args(rnd)
        elif op in (READ, DISCARD, STATUS):
            out += rng_args(rnd)
        elif op == SNAP_CREATE:
            out += bytes([rnd.randrange(8), rnd.randrange(2)])
        elif op in (SNAP_DELETE, SNAP_GOTO):
            out.append(rnd.choice([rnd.randrange(8), 0x80 | rnd.randrange(4)]))
        elif op == TRUNCATE:
            out += struct.pack('<H', rnd.randrange(64))
    return bytes(out[:255])


def script_snapshot_cycle():
    """write, snapshot, overwrite, read, apply, read, delete, check, repair"""
    w = lambda pat, blk: bytes([WRITE, pat]) + struct.pack('<HBH', blk, 0, 2047)
    r = lambda blk: bytes([READ]) + struct.pack('<HBH', blk, 0, 2047)
    return (w(0x11, 0) + w(0x22, 9) + bytes([SNAP_CREATE, 1, 0]) +
            w(0x33, 0) + r(0) + bytes([SNAP_LIST, SNAP_GOTO, 1]) + r(0) +
            r(9) + bytes([SNAP_DELETE, 1, CHECK, REPAIR, REOPEN]) + r(0))


def be64(img, off):
    return struct.unpack('>Q', img[off:off + 8])[0]


def refblock_as_data(img):
    """Guest cluster 1 mapped (without COPIED) onto refcount block 0, whose
    refcount is raised to 2 to match: qemu-img check reports the overlap
    ("refcount block 0 refcount=2"), strata's check does not (yet)."""
    img = bytearray(img)
    rb = be64(img, be64(img, 48)) & ~0x1ff
    l2 = be64(img, be64(img, 40)) & 0x00fffffffffffe00
    img[l2 + 8:l2 + 16] = struct.pack('>Q', rb)
    img[rb + 2 * (rb // 512):rb + 2 * (rb // 512) + 2] = struct.pack('>H', 2)
    return bytes(img)


def script_refblock_as_data():
    r = lambda blk, ln: struct.pack('<HBH', blk, 0, ln)
    return (bytes([READ]) + r(1, 255) + bytes([WRITE, 0x66]) + r(1, 255) +
            bytes([SNAP_CREATE, 1, 0, DISCARD]) + r(1, 255) +
            bytes([WRITE, 0x77]) + r(100, 2000) + bytes([CHECK, REPAIR]))


def script_load_tmp_info():
    """temporary load of s0 with reads, ro/rw reopen, info, status above"""
    r = lambda blk, ln: struct.pack('<HBH', blk, 0, ln)
    return (bytes([SNAP_LOAD_TMP, 3, 0]) + r(0, 1000) + r(2, 255) +
            r(400, 2047) + bytes([WRITE, 0x44]) + r(2, 255) +
            bytes([REOPEN_RO_RW]) + r(2, 255) + bytes([INFO, 1, STATUS_ABOVE]) +
            r(0, 0xffff) + bytes([SNAP_LOAD_TMP, 1, 1]) + r(2, 255) +
            bytes([READ]) + r(2, 255))


def encode_image(img):
    if len(img) <= RAW_LIMIT:
        return img
    out = bytearray()
    i, n = 0, len(img)
    while i < n:
        if img[i] == 0:
            i += 1
            continue
        start, end = i, i
        # extend over short zero gaps, up to one extent's length
        while end < n and end - start < MAX_EXTENT:
            if img[end] != 0:
                end += 1
                continue
            j = end
            while j < n and img[j] == 0 and j - end <= GAP_MERGE:
                j += 1
            if j < n and j - end <= GAP_MERGE and j - start < MAX_EXTENT:
                end = j
            else:
                break
        end = min(end, start + MAX_EXTENT)
        out += struct.pack('<IH', start, end - start) + img[start:end]
        i = end
    # an empty extent at the end sets the file size
    out += struct.pack('<IH', n, 0)
    assert not out.startswith(b'QFI\xfb')
    return bytes(out)


class Gen:
    def __init__(self, args, tmp):
        self.img, self.io, self.tmp = args.img, args.io, tmp
        self.out = args.out
        self.n = 0

    def run(self, *cmd):
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE, cwd=self.tmp)

    def make(self, name, cs, rb, compat='1.1', size='1M', backing=None,
             writes=(), snaps=(), after_snaps=(), bitmaps=(), opts=''):
        path = os.path.join(self.tmp, name + '.qcow2')
        cmd = [self.img, 'create', '-q', '-f', 'qcow2', '-o',
               'cluster_size=%d,compat=%s' % (cs, compat) +
               (',refcount_bits=%d' % rb if compat != '0.10' else '') +
               opts]
        self.run(*cmd, path, size)
        for w in writes:
            self.run(self.io, '-f', 'qcow2', '-c', w, path)
        if backing:
            # set after the writes: qemu-io would try to open it
            self.run(self.img, 'rebase', '-u', '-f', 'qcow2', '-b', backing,
                     '-F', 'qcow2', path)
        for s in snaps:
            self.run(self.img, 'snapshot', '-c', s, path)
        for b in bitmaps:
            self.run(self.img, 'bitmap', '--add', *b[:-1], path, b[-1])
        for w in after_snaps:
            self.run(self.io, '-f', 'qcow2', '-c', w, path)
        with open(path, 'rb') as f:
            return f.read()

    def emit(self, name, img, script):
        data = encode_image(img) + script + bytes([len(script)])
        with open(os.path.join(self.out, name), 'wb') as f:
            f.write(data)
        self.n += 1


def add_bitmap_seeds(g, rnd):
    """Persistent dirty bitmaps: one enabled, one disabled, written
    through after they were added (so they hold set bits)."""
    for cs, gran in ((512, '512'), (65536, '64k')):
        img = g.make('bm', cs, 16, writes=['write -P 0x5a 0 1k'],
                     bitmaps=[('-g', gran, 'on'), ('--disable', 'off')],
                     after_snaps=['write -P 0x66 8k 4k',
                                  'write -z 100k 1k'])
        g.emit('seed-bitmaps-c%d' % cs, img, script_random(rnd, 24))


def add_extended_l2_seeds(g, rnd):
    """Extended L2 entries: subclusters that read from the host cluster,
    as zeroes and from below in one cluster, a compressed cluster, and a
    snapshot taken between writes."""
    for cs in (16384, 65536):
        sc = cs // 32
        img = g.make('xl2', cs, 16, opts=',extended_l2=on',
                     writes=['write -P 0x51 %d %d' % (sc, 2 * sc),
                             'write -z %d %d' % (cs + sc, 3 * sc),
                             'write -c -P 0x52 %d %d' % (3 * cs, cs),
                             'write -P 0x53 %d %d' % (5 * cs - 512, 1024)],
                     snaps=('s0',),
                     after_snaps=['write -P 0x54 %d 512' % (2 * sc)])
        g.emit('seed-extl2-c%d' % cs, img, script_random(rnd, 30))
        g.emit('seed-extl2-c%d-snap' % cs, img, script_snapshot_cycle())


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument('--out', default=os.path.join(here, 'corpus'))
    ap.add_argument('--img', default=shutil.which('qemu-img'))
    ap.add_argument('--io', default=shutil.which('qemu-io'))
    args = ap.parse_args()
    if not args.img or not args.io:
        sys.exit('gen-corpus: needs qemu-img and qemu-io (or --img/--io)')
    os.makedirs(args.out, exist_ok=True)
    for f in os.listdir(args.out):
        if f.startswith('seed-'):
            os.unlink(os.path.join(args.out, f))

    rnd = random.Random(0x5742)
    with tempfile.TemporaryDirectory() as tmp:
        g = Gen(args, tmp)
        data = ['write -P 0x5a 0 1k', 'write -P 0xa5 200k 512']
        # cluster size x refcount width, v3, with data
        for cs in (512, 1024, 2048, 4096, 65536):
            for rb in (1, 2, 4, 8, 16, 32, 64):
                if cs == 65536 and rb not in (1, 16, 64):
                    continue
                img = g.make('c', cs, rb, writes=data)
                g.emit('seed-c%d-r%d' % (cs, rb), img,
                       script_random(rnd, 24))
        # compat 0.10 (refcount_bits 16 only)
        for cs in (512, 4096, 65536):
            img = g.make('v2', cs, 16, compat='0.10', writes=data)
            g.emit('seed-v2-c%d' % cs, img, script_random(rnd, 24))
        # internal snapshots: one and two, v2 and v3, data changed between
        for cs, compat in ((512, '1.1'), (4096, '1.1'), (1024, '0.10'),
                           (65536, '1.1')):
            img = g.make('sn', cs, 16, compat=compat, writes=data,
                         snaps=('s0', 's1'),
                         after_snaps=['write -P 0x77 1k 512'])
            g.emit('seed-snap2-c%d-%s' % (cs, compat), img,
                   script_snapshot_cycle())
            g.emit('seed-snap2-c%d-%s-rnd' % (cs, compat), img,
                   script_random(rnd, 30))
            g.emit('seed-snap2-c%d-%s-tmp' % (cs, compat), img,
                   script_load_tmp_info())
        img = g.make('sn1', 512, 2, writes=data, snaps=('s0',))
        g.emit('seed-snap1-c512-r2', img, script_snapshot_cycle())
        # a backing file name that does not exist (never opened while fuzzing)
        for cs in (512, 65536):
            img = g.make('bk', cs, 16, backing='no-such-base.qcow2',
                         writes=['write -P 0x42 4k 4k'])
            g.emit('seed-backing-missing-c%d' % cs, img,
                   script_random(rnd, 20))
        # zero clusters (v3) and compressed clusters
        img = g.make('z', 1024, 16, writes=data + ['write -z 0 2k',
                                                   'write -z 100k 64k'])
        g.emit('seed-zero-c1024', img, script_random(rnd, 24))
        for cs in (512, 4096, 65536):
            img = g.make('cz', cs, 16, writes=[
                'write -c -P 0x61 0 %d' % cs,
                'write -c -P 0x62 %d %d' % (4 * cs, cs)])
            g.emit('seed-compressed-c%d' % cs, img, script_random(rnd, 24))
        add_bitmap_seeds(g, rnd)
        # a larger virtual size: L1 with several entries, L2 tables apart
        img = g.make('big', 512, 16, size='64M',
                     writes=['write -P 0x33 0 512', 'write -P 0x34 32M 512',
                             'write -P 0x35 63M 512'])
        g.emit('seed-big-c512', img, script_random(rnd, 24))
        # empty images and an empty script
        img = g.make('e', 65536, 16)
        g.emit('seed-empty-c65536', img, script_random(rnd, 40))
        img = g.make('e2', 512, 64)
        g.emit('seed-empty-noscript-c512', img, b'')
        # hostile near-misses that strata's check passes today
        img = g.make('h1', 512, 16, writes=data)
        g.emit('seed-refblock-as-data-c512', refblock_as_data(img),
               script_refblock_as_data())
        add_extended_l2_seeds(g, rnd)
    total = sum(os.path.getsize(os.path.join(args.out, f))
                for f in os.listdir(args.out))
    print('gen-corpus: %d seeds, %d bytes in %s' % (g.n, total, args.out))


if __name__ == '__main__':
    main()
