#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Generator of malformed qcow2 images, built byte by byte.

Each case starts from a fresh `qemu-img create -f qcow2 t 64M` image
(version 3, 64 KiB clusters, header_length 112; layout: cluster 0 header,
1 refcount table, 2 refcount block, 3 L1 table), optionally after one
64 KiB write at guest offset 0 (then cluster 4 is the L2 table and 5 the
data cluster), and patches header fields or tables with struct.pack('>..').

Each case carries what opening it must produce (see test_bad_images.py):
`expect` is the error text for an open with $STRATA_IO (read-write) and
$STRATA_IMG info; QEMU 7.2's exact text where QEMU rejects the image too
(the digest's 1.10 / 8.3 list), a regular expression for strata-only
cases where QEMU accepts the image and strata is deliberately stricter.

Run alone to write every image into a directory (e.g. as fuzzing seeds):
    badimages.py OUTDIR
"""

import os
import re
import shutil
import struct
import subprocess
import sys

MiB = 1 << 20
CS = 65536

# Header field offsets (digest 1.1)
MAGIC, VERSION, BACKING_OFF, BACKING_SIZE, CLUSTER_BITS, SIZE = 0, 4, 8, 16, 20, 24
CRYPT, L1_SIZE, L1_OFF, RT_OFF, RT_CLUSTERS = 32, 36, 40, 48, 56
NB_SNAP, SNAP_OFF, INCOMPAT, COMPAT, AUTOCLEAR = 60, 64, 72, 80, 88
REFCOUNT_ORDER, HEADER_LEN, COMPRESSION = 96, 100, 104

RT_AT = 0x10000          # fresh 64M image: refcount table in cluster 1
L1_AT = 0x30000          # fresh 64M image: L1 table in cluster 3
L2_AT = 0x40000          # after one write at 0: L2 table in cluster 4
COPIED = 1 << 63

FMT = {'B': 1, 'I': 4, 'Q': 8}


class Image:
    """A qcow2 file being patched in memory."""

    def __init__(self, data):
        self.data = bytearray(data)

    def put(self, fmt, off, value):
        n = struct.calcsize('>' + fmt)
        if off + n > len(self.data):
            self.data.extend(bytes(off + n - len(self.data)))
        struct.pack_into('>' + fmt, self.data, off, value)

    def get(self, fmt, off):
        return struct.unpack_from('>' + fmt, self.data, off)[0]

    def put_bytes(self, off, b):
        if off + len(b) > len(self.data):
            self.data.extend(bytes(off + len(b) - len(self.data)))
        self.data[off:off + len(b)] = b

    def truncate(self, n):
        del self.data[n:]

    def save(self, path):
        with open(path, 'wb') as f:
            f.write(self.data)


ANY = object()      # expectation: success or failure are both fine


class Check:
    """One way of opening a case's image and what it must produce.

    tool: 'io' ($STRATA_IO -c 'read 0 512') or 'info' ($STRATA_IMG info).
    expect: None = must succeed; str = the open must fail with this text
    (after the tool's usual "can't open device FILE: " / "Could not open
    'FILE': " prefix); re.Pattern = same, for strata-only wording; ANY =
    either outcome.  fmt: -f argument (None: probe).  ro: qemu-io -r.
    chain: info --backing-chain.  prefixed=False: expect is searched in the
    whole stderr (messages that are not open failures).  out: text that
    stdout must contain on success.  strata_only: reason QEMU differs (the
    check is skipped when the tools under test are QEMU's)."""

    def __init__(self, tool, expect, fmt=None, ro=False, chain=False,
                 prefixed=True, out=None, strata_only=None):
        self.tool = tool
        self.expect = expect
        self.fmt = fmt
        self.ro = ro
        self.chain = chain
        self.prefixed = prefixed
        self.out = out
        self.strata_only = strata_only

    def label(self):
        bits = [self.tool]
        if self.fmt:
            bits.append('-f ' + self.fmt)
        if self.ro:
            bits.append('-r')
        if self.chain:
            bits.append('--backing-chain')
        return ' '.join(bits)


def io(expect, **kw):
    return Check('io', expect, **kw)


def info(expect, **kw):
    return Check('info', expect, **kw)


class Case:
    """A malformed image: how to build it and the checks it must pass.

    With only `expect`, the checks are: $STRATA_IO probing the format,
    $STRATA_IO -f qcow2, and $STRATA_IMG info, all failing with `expect`."""

    def __init__(self, name, build, expect=None, *, checks=None, write=False,
                 strata_only=None):
        self.name = name
        self.build = build          # fn(Image, dir, path) -> None | path
        if checks is None:
            checks = [io(expect), io(expect, fmt='qcow2'), info(expect)]
        if strata_only:
            for c in checks:
                c.strata_only = c.strata_only or strata_only
        self.checks = checks
        self.write = write          # start from the image with one write at 0
        self.strata_only = strata_only


def qemu_img():
    return os.environ.get('QEMU_IMG') or shutil.which('qemu-img')


def qemu_io():
    return os.environ.get('QEMU_IO') or shutil.which('qemu-io')


def _run(argv, cwd=None):
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, cwd=cwd)


def base_image(d, write):
    """Bytes of a fresh 64M qcow2 image (optionally with 64K at 0 written)."""
    p = os.path.join(d, '.base-%d.qcow2' % write)
    if not os.path.exists(p):
        _run([qemu_img(), 'create', '-q', '-f', 'qcow2', p, '64M'])
        if write:
            _run([qemu_io(), '-f', 'qcow2', '-c', 'write -P 0x11 0 64k', p])
    with open(p, 'rb') as f:
        return f.read()


def build(case, d):
    """Build case's image(s) in directory d; return the main image's path."""
    img = Image(base_image(d, case.write))
    path = os.path.join(d, case.name + '.qcow2')
    ret = case.build(img, d, path)
    if ret is None:
        img.save(path)
    return path


# --------------------------------------------------------------------------
# Builders

def field(fmt, off, value):
    def b(img, d, path):
        img.put(fmt, off, value)
    return b


def fields(*triples):
    def b(img, d, path):
        for fmt, off, value in triples:
            img.put(fmt, off, value)
    return b


def bogus_extension(length, at=112, backing_off=None):
    """An unknown header extension at `at` claiming `length` bytes."""
    def b(img, d, path):
        img.put('I', at, 0x12345678)
        img.put('I', at + 4, length)
        if backing_off is not None:
            img.put('Q', BACKING_OFF, backing_off)
    return b


def feature_table_naming_bit5(img, d, path):
    """Feature-name table names incompatible bit 5; set the bit."""
    entry = struct.pack('>BB46s', 0, 5, b'strata test feature')
    img.put('I', 112, 0x6803F857)
    img.put('I', 116, len(entry))
    img.put_bytes(120, entry)
    img.put('Q', 120 + len(entry), 0)     # end marker
    img.put('Q', INCOMPAT, 1 << 5)


def backing_chain(links):
    """Create each image `name` with qemu-img as an overlay of a placeholder
    whose name has the length of `target`, then overwrite the backing name
    in the header in place: that yields links qemu-img refuses to create
    (loops)."""
    def b(img, d, path):
        placeholders = set()
        for name, target in links.items():
            ph = '_' * len(target)
            if ph not in placeholders:
                _run([qemu_img(), 'create', '-q', '-f', 'qcow2', os.path.join(d, ph), '64M'])
                placeholders.add(ph)
            p = os.path.join(d, name)
            if os.path.exists(p):
                os.unlink(p)
            _run([qemu_img(), 'create', '-q', '-f', 'qcow2', '-b', ph, '-F', 'qcow2', p])
            with open(p, 'r+b') as f:
                hdr = f.read(CS)
                boff, blen = struct.unpack_from('>QI', hdr, BACKING_OFF)
                assert hdr[boff:boff + blen] == ph.encode(), hdr[boff:boff + blen]
                f.seek(boff)
                f.write(target.encode())
        for ph in placeholders:
            os.unlink(os.path.join(d, ph))
        return path
    return b


def self_backing(img, d, path):
    name = os.path.basename(path)
    return backing_chain({name: name})(img, d, path)


def loop_backing(img, d, path):
    a = os.path.basename(path)
    return backing_chain({'loop-b.qcow2': a, a: 'loop-b.qcow2'})(img, d, path)


def with_snapshot(patch):
    """qemu-img snapshot -c s1 on the written image, then patch(img, table)."""
    def b(img, d, path):
        img.save(path)
        _run([qemu_img(), 'snapshot', '-c', 's1', path])
        with open(path, 'rb') as f:
            img.data = bytearray(f.read())
        patch(img, img.get('Q', SNAP_OFF))
    return b


def l1_entry(value):
    def b(img, d, path):
        img.put('Q', L1_AT, value)
    return b


def backing_format_ext(name):
    """A backing-format header extension (0xE2792ACA) holding name."""
    def b(img, d, path):
        img.put('I', 112, 0xE2792ACA)
        img.put('I', 116, len(name))
        img.put_bytes(120, name + bytes(-len(name) % 8))
        img.put('Q', 120 + len(name) + (-len(name) % 8), 0)
    return b


def backing_name(name):
    """Backing file name bytes at 0x200 (after the end-of-extensions marker)."""
    def b(img, d, path):
        img.put('Q', BACKING_OFF, 0x200)
        img.put('I', BACKING_SIZE, len(name))
        img.put_bytes(0x200, name)
    return b


def truncate_to(n):
    def b(img, d, path):
        img.truncate(n)
    return b


def header_extension(magic, length):
    """A header extension of a known type with `length` zero bytes."""
    def b(img, d, path):
        img.put('I', 112, magic)
        img.put('I', 116, length)
        img.put_bytes(120, bytes((length + 7) & ~7))
    return b


def v2_zero_flag(entry):
    """A version 2 image (one 64K write at 0) whose L2 entry 0 is `entry`
    ORed into the old one: the zero flag does not exist in version 2."""
    def b(img, d, path):
        _run([qemu_img(), 'create', '-q', '-f', 'qcow2', '-o', 'compat=0.10',
              path, '64M'])
        _run([qemu_io(), '-f', 'qcow2', '-c', 'write -P 0x11 0 64k', path])
        v2 = Image(open(path, 'rb').read())
        v2.put('Q', L2_AT, entry(v2.get('Q', L2_AT)))
        v2.save(path)
        return path
    return b


def huge_size_consistent_l1(img, d, path):
    """A size whose L1 needs 4Mi+1 entries (> 32 MiB), l1_size to match."""
    entries = 4 * MiB + 1
    img.put('Q', SIZE, entries * (CS * CS // 8))
    img.put('I', L1_SIZE, entries)


# --------------------------------------------------------------------------
# The cases.  Texts are QEMU 7.2's (digest 1.10 / 8.3) unless strata_only.

LOOP = re.compile(r'(?i)(loop|recurs|itself|cycle)')

CASES = [
    # magic / version / cluster size
    Case('bad_magic', field('I', MAGIC, 0x514649fa), checks=[
        io('Image is not in qcow2 format', fmt='qcow2'),
        info('Image is not in qcow2 format', fmt='qcow2'),
        io(None),                                   # probed as raw
        info(None, out='file format: raw'),
    ]),
    Case('version_1', field('I', VERSION, 1), checks=[
        # without -f QEMU hands version 1 to its qcow (v1) driver
        io('Unsupported qcow2 version 1', fmt='qcow2'),
        info('Unsupported qcow2 version 1', fmt='qcow2'),
    ]),
    Case('version_4', field('I', VERSION, 4), 'Unsupported qcow2 version 4'),
    Case('version_huge', field('I', VERSION, 0xffffffff), 'Unsupported qcow2 version 4294967295'),
    # the probe reads all 32 bits of the version (it used to read one byte
    # and took these for raw images, opened writable)
    Case('version_0x100', field('I', VERSION, 0x100), 'Unsupported qcow2 version 256'),
    Case('version_0x80000000', field('I', VERSION, 0x80000000),
         'Unsupported qcow2 version 2147483648'),
    Case('version_0x10003', field('I', VERSION, 0x10003), 'Unsupported qcow2 version 65539'),
    Case('cluster_bits_8', field('I', CLUSTER_BITS, 8), 'Unsupported cluster size: 2^8'),
    Case('cluster_bits_22', field('I', CLUSTER_BITS, 22), 'Unsupported cluster size: 2^22'),
    Case('cluster_bits_huge', field('I', CLUSTER_BITS, 0xffffffff),
         'Unsupported cluster size: 2^4294967295'),
    Case('truncated_header', truncate_to(60),
         re.compile(r'qcow2 header too short|Could not read qcow2 header')),
    # header length / extensions / backing file
    Case('header_length_short', field('I', HEADER_LEN, 100), 'qcow2 header too short'),
    Case('header_length_huge', field('I', HEADER_LEN, 0xffffffff), 'qcow2 header exceeds cluster size'),
    Case('header_length_past_cluster', field('I', HEADER_LEN, CS + 8),
         'qcow2 header exceeds cluster size'),
    Case('extension_too_large', bogus_extension(0x7fffffff), 'Header extension too large'),
    Case('extension_past_cluster', bogus_extension(CS - 112 - 8 + 1), 'Header extension too large'),
    Case('extension_past_backing_offset', bogus_extension(0x7fffffff, backing_off=116),
         'Header extension too large'),
    Case('backing_format_ext_too_long', backing_format_ext(b'qcow2qcow2qcow2qcow2'),
         'ERROR: ext_backing_format: len=20 too large (>=16)'),
    Case('backing_offset_huge', bogus_extension(0x7fffffff, backing_off=0xffffffffffffffff),
         'Invalid backing file offset'),
    Case('backing_name_too_long', fields(('Q', BACKING_OFF, 0x1000), ('I', BACKING_SIZE, 0xffffffff)),
         'Backing file name too long'),
    Case('backing_name_nul', backing_name(b'a\0bc'), re.compile(r'(?i)NUL|backing file name'),
         strata_only='QEMU cuts the name at the NUL byte and looks for file "a"'),
    Case('backing_self', self_backing, checks=[
        # QEMU fails only because its own image lock trips; strata must see the loop
        io(re.compile(r'(?i)backing')),
        io(LOOP, strata_only='a read-only qemu-io open of a backing loop recurses forever'),
        io(LOOP, ro=True,
           strata_only='a read-only qemu-io open of a backing loop recurses forever'),
        info(None),                                  # info does not open the backing file
        info(re.compile(r"Backing file '[^']*backing_self\.qcow2' creates an infinite loop\."),
             chain=True, prefixed=False),
    ]),
    Case('backing_loop', loop_backing, checks=[
        io(re.compile(r'(?i)backing')),
        io(LOOP, ro=True,
           strata_only='a read-only qemu-io open of a backing loop recurses forever'),
        info(None),
        info(re.compile(r"Backing file '[^']*backing_loop\.qcow2' creates an infinite loop\."),
             chain=True, prefixed=False),
    ]),
    # feature bits
    Case('incompat_bit5', field('Q', INCOMPAT, 1 << 5),
         'Unsupported qcow2 feature(s): Unknown incompatible feature: 20'),
    Case('incompat_bit63', field('Q', INCOMPAT, 1 << 63),
         'Unsupported qcow2 feature(s): Unknown incompatible feature: 8000000000000000'),
    Case('incompat_bit5_named', feature_table_naming_bit5,
         'Unsupported qcow2 feature(s): strata test feature'),
    Case('corrupt_bit', field('Q', INCOMPAT, 1 << 1), checks=[
        io('qcow2: Image is corrupt; cannot be opened read/write'),
        io('qcow2: Image is corrupt; cannot be opened read/write', fmt='qcow2'),
        io(None, ro=True),
        info(None, out='corrupt: true'),
    ], write=True),
    Case('data_file_bit_without_data_file', field('Q', INCOMPAT, 1 << 2), checks=[
        io(re.compile(r"data.file")),
        info(ANY),
    ]),
    Case('compression_type_unknown', fields(('B', COMPRESSION, 5), ('Q', INCOMPAT, 1 << 3)),
         'qcow2: unknown compression type: 5'),
    Case('compression_type_without_bit', field('B', COMPRESSION, 1),
         'qcow2: Compression type incompatible feature bit must be set'),
    Case('compression_bit_without_type', field('Q', INCOMPAT, 1 << 3),
         'qcow2: Compression type incompatible feature bit must not be set'),
    Case('refcount_order_7', field('I', REFCOUNT_ORDER, 7),
         'Reference count entry width too large; may not exceed 64 bits'),
    # read as unsigned: 2^31 used to pass the check as a negative int
    Case('refcount_order_2_31', field('I', REFCOUNT_ORDER, 0x80000000),
         'Reference count entry width too large; may not exceed 64 bits'),
    Case('refcount_order_huge', field('I', REFCOUNT_ORDER, 0xffffffff),
         'Reference count entry width too large; may not exceed 64 bits'),
    Case('crypt_method_3', field('I', CRYPT, 3), 'Unsupported encryption method 3'),
    Case('crypto_ext_unencrypted', header_extension(0x0537BE77, 16),
         'CRYPTO header extension only expected with LUKS encryption method'),
    Case('bitmaps_ext_length_16', header_extension(0x23852875, 16),
         'bitmaps_ext: Invalid extension length'),
    Case('bitmaps_ext_length_0', header_extension(0x23852875, 0),
         'bitmaps_ext: Invalid extension length'),
    # version 2 has no zero flag: QEMU fails the read (corruption), and
    # writes nothing (a v2 header has no corrupt bit)
    Case('v2_zero_flag_alloc', v2_zero_flag(lambda e: e | 1), checks=[
        io('Zero cluster entry found in pre-v3 image (L2 offset: 0x40000, '
           'L2 index: 0)', prefixed=False),
        io('Zero cluster entry found in pre-v3 image (L2 offset: 0x40000, '
           'L2 index: 0)', prefixed=False, ro=True),
        info(None),
    ]),
    Case('v2_zero_flag_plain', v2_zero_flag(lambda e: 1), checks=[
        io('qcow2: Marking image as corrupt: Zero cluster entry found in '
           'pre-v3 image (L2 offset: 0x40000, L2 index: 0); further '
           'corruption events will be suppressed', prefixed=False),
    ]),
    # QEMU counts whole sectors: 1000 bytes is a 512-byte disk
    Case('size_not_sector_multiple', field('Q', SIZE, 1000), checks=[
        io(None),
        info(None, out='virtual size: 512 B (512 bytes)'),
    ]),
    # virtual size / L1 table
    Case('size_2_63', field('Q', SIZE, 1 << 63), re.compile(r'(?i)too (big|large)')),
    Case('size_needs_huge_l1', huge_size_consistent_l1, 'Active L1 table too large'),
    Case('l1_size_huge', field('I', L1_SIZE, 0xffffffff), 'Active L1 table too large'),
    Case('l1_size_7fffffff', field('I', L1_SIZE, 0x7fffffff), 'Active L1 table too large'),
    Case('l1_size_zero', field('I', L1_SIZE, 0), 'L1 table is too small'),
    Case('l1_too_small_for_size', field('Q', SIZE, 1 << 40), 'L1 table is too small'),
    Case('l1_offset_unaligned', field('Q', L1_OFF, L1_AT + 8), 'Active L1 table offset invalid'),
    Case('l1_offset_huge', fields(('Q', L1_OFF, 0x7fffffffffff0000), ('I', L1_SIZE, 0xffff)),
         'Active L1 table offset invalid'),
    Case('l1_offset_garbage', field('Q', L1_OFF, 0x1234567890abcdef), 'Active L1 table offset invalid'),
    Case('l1_offset_past_eof', field('Q', L1_OFF, 256 * MiB),
         re.compile(r'Active L1 table.*(end of the file|offset invalid)'),
         strata_only='QEMU reads the L1 table past EOF as zeros'),
    Case('l1_offset_zero', field('Q', L1_OFF, 0),
         re.compile(r'Active L1 table.*(header|offset invalid)'),
         strata_only='QEMU reads the header as an L1 table'),
    Case('l1_overlaps_refcount_table', field('Q', L1_OFF, 0x10000),
         re.compile(r'Active L1 table.*(overlap|offset invalid)'),
         strata_only='QEMU does not check table overlaps at open'),
    Case('l1_entry_past_eof', l1_entry(COPIED | (64 * MiB)),
         re.compile(r'L1 .*(end of the file|invalid)'), write=True,
         strata_only='QEMU reads an L2 table past EOF as zeros'),
    Case('l1_entry_unaligned', l1_entry(COPIED | (L2_AT + 0x200)),
         re.compile(r'L1 .*(not cluster aligned|unaligned)'), write=True,
         strata_only='QEMU opens it, fails the read and marks the image corrupt (writes it)'),
    Case('l1_entry_reserved_low', l1_entry(COPIED | L2_AT | 0x100),
         re.compile(r'L1 .*reserved'), write=True,
         strata_only='QEMU masks the reserved bits away'),
    Case('l1_entry_reserved_high', l1_entry(COPIED | (1 << 56) | L2_AT),
         re.compile(r'L1 .*reserved'), write=True,
         strata_only='QEMU masks the reserved bits away'),
    # refcount table
    Case('refcount_table_clusters_0', field('I', RT_CLUSTERS, 0),
         'Image does not contain a reference count table'),
    Case('refcount_table_clusters_huge', field('I', RT_CLUSTERS, 0xffffffff),
         'Reference count table too large'),
    Case('refcount_table_clusters_20001', field('I', RT_CLUSTERS, 0x20001),
         'Reference count table too large'),
    Case('refcount_table_unaligned', field('Q', RT_OFF, 0x10008),
         'Reference count table offset invalid'),
    Case('refcount_table_garbage', field('Q', RT_OFF, 0x1234567890abcdef),
         'Reference count table offset invalid'),
    Case('refcount_table_overflow', fields(('Q', RT_OFF, 0xffffffffffff0000), ('I', RT_CLUSTERS, 0x7f)),
         'Reference count table offset invalid'),
    Case('refcount_table_past_eof', field('Q', RT_OFF, 256 * MiB),
         re.compile(r'Reference count table.*(end of the file|offset invalid)'),
         strata_only='QEMU reads the refcount table past EOF as zeros'),
    Case('refcount_table_zero', field('Q', RT_OFF, 0),
         re.compile(r'Reference count table.*(header|offset invalid)'),
         strata_only='QEMU reads the header as the refcount table'),
    Case('refcount_table_entry_reserved', field('Q', RT_AT, 0x20000 | 1),
         re.compile(r'Reference count table entry 0.*reserved'),
         strata_only='QEMU does not look at refcounts for a read'),
    Case('refcount_table_entry_past_eof', field('Q', RT_AT, 256 * MiB),
         re.compile(r'Reference count table entry 0.*(invalid|end of the file)'),
         strata_only='QEMU does not look at refcounts for a read'),
    # snapshot table
    Case('nb_snapshots_huge', field('I', NB_SNAP, 0xffffffff), 'Snapshot table too large'),
    Case('nb_snapshots_7fffffff', field('I', NB_SNAP, 0x7fffffff), 'Snapshot table too large'),
    Case('nb_snapshots_65537', field('I', NB_SNAP, 65537), 'Snapshot table too large'),
    Case('snapshots_offset_unaligned', field('Q', SNAP_OFF, 0x1234567890abcdef),
         'Snapshot table offset invalid'),
    Case('snapshots_offset_overflow', fields(('Q', SNAP_OFF, 0xffffffffffff0000), ('I', NB_SNAP, 0xffff)),
         'Snapshot table offset invalid'),
    Case('snapshots_offset_past_eof', fields(('Q', SNAP_OFF, 16 * MiB), ('I', NB_SNAP, 1)),
         re.compile(r'Snapshot table.*(end of the file|offset invalid)'),
         strata_only='QEMU reads the snapshot table past EOF as zeros'),
    Case('snapshot_extra_data_too_big',
         with_snapshot(lambda img, t: img.put('I', t + 36, 2000)),
         'Too much extra metadata in snapshot table entry 0', write=True),
]


def main(argv):
    if len(argv) != 2:
        print('usage: %s OUTDIR' % argv[0], file=sys.stderr)
        return 2
    out = argv[1]
    os.makedirs(out, exist_ok=True)
    for c in CASES:
        print(build(c, out))
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv))
