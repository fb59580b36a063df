# SPDX-License-Identifier: LGPL-2.1-or-later
"""Helpers shared by the internal-snapshot tests (test_snapshot_*.py).

What lives here: a scratch directory in /dev/shm when there is one; the
qcow2 header and snapshot table parsed in Python (to check what either
tool wrote, and to build malformed tables byte by byte); snapshot lists as
either tool reports them; reading a snapshot's content back as raw bytes
through either tool; and the checks every step of these tests repeats
(qemu-img check clean, strata-img check clean, content equal to a model).
"""

import json
import os
import struct

import common

MiB = 1 << 20


def ShmDir(prefix='strata-snap-'):
    """A scratch directory in /dev/shm if possible (removed afterwards)."""
    return common.TempDir(prefix, shm=True)


# --------------------------------------------------------------------------
# The image, parsed

class Header:
    def __init__(self, path):
        with open(path, 'rb') as f:
            h = f.read(112)
        (self.magic, self.version) = struct.unpack('>II', h[0:8])
        self.cluster_bits = struct.unpack('>I', h[20:24])[0]
        self.size = struct.unpack('>Q', h[24:32])[0]
        self.l1_size = struct.unpack('>I', h[36:40])[0]
        self.l1_offset = struct.unpack('>Q', h[40:48])[0]
        self.nb_snapshots = struct.unpack('>I', h[60:64])[0]
        self.snapshots_offset = struct.unpack('>Q', h[64:72])[0]
        self.cluster_size = 1 << self.cluster_bits


class Entry:
    """One snapshot table entry with the file offset of each field."""

    def __init__(self, data, pos, base):
        self.pos = base + pos          # file offset of the entry
        (self.l1_offset, self.l1_size, self.id_len, self.name_len,
         self.date_sec, self.date_nsec, self.vm_clock, self.vm_state_size,
         self.extra_size) = struct.unpack('>QIHHIIQII', data[pos:pos + 40])
        p = pos + 40
        self.extra = data[p:p + self.extra_size]
        p += self.extra_size
        self.id = data[p:p + self.id_len].decode('utf-8', 'replace')
        p += self.id_len
        self.name = data[p:p + self.name_len].decode('utf-8', 'replace')
        p += self.name_len
        self.end = p                   # unpadded, relative to the table

    @property
    def disk_size(self):
        return struct.unpack('>Q', self.extra[8:16])[0] \
            if self.extra_size >= 16 else None

    @property
    def icount(self):
        return struct.unpack('>Q', self.extra[16:24])[0] \
            if self.extra_size >= 24 else None


def read_table(path):
    """(Header, [Entry]) as the file holds them."""
    h = Header(path)
    entries = []
    if h.nb_snapshots == 0:
        return h, entries
    with open(path, 'rb') as f:
        f.seek(h.snapshots_offset)
        data = f.read(64 * MiB)
    pos = 0
    for _ in range(h.nb_snapshots):
        pos = (pos + 7) & ~7
        e = Entry(data, pos, h.snapshots_offset)
        entries.append(e)
        pos = e.end
    return h, entries


def sparse_copy(src, dst):
    """Copies only the data regions (holes stay holes: a plain copy of a
    big preallocated image would write gigabytes of zeroes)."""
    with open(src, 'rb') as fi, open(dst, 'wb') as fo:
        size = os.fstat(fi.fileno()).st_size
        fo.truncate(size)
        off = 0
        while off < size:
            try:
                data = os.lseek(fi.fileno(), off, os.SEEK_DATA)
            except OSError:
                break               # only a hole is left
            hole = os.lseek(fi.fileno(), data, os.SEEK_HOLE)
            fi.seek(data)
            fo.seek(data)
            left = hole - data
            while left:
                chunk = fi.read(min(left, 4 * MiB))
                fo.write(chunk)
                left -= len(chunk)
            off = hole


def poke(path, offset, fmt, value):
    with open(path, 'r+b') as f:
        f.seek(offset)
        f.write(struct.pack(fmt, value))


def poke_bytes(path, offset, data):
    with open(path, 'r+b') as f:
        f.seek(offset)
        f.write(data)


def read_tree(path, l1_offset, l1_size, size):
    """The guest content under one L1 table, read in Python straight from
    the file (no backing file, no compressed clusters): a third opinion
    next to QEMU's and ours, and much cheaper than starting a tool."""
    h = Header(path)
    cs = h.cluster_size
    l2_entries = cs // 8
    out = bytearray(size)
    with open(path, 'rb') as f:
        f.seek(l1_offset)
        l1 = struct.unpack('>%dQ' % l1_size, f.read(8 * l1_size)) \
            if l1_size else ()
        for i, l1e in enumerate(l1):
            l2_off = l1e & 0x00fffffffffffe00
            if not l2_off:
                continue
            f.seek(l2_off)
            l2 = struct.unpack('>%dQ' % l2_entries, f.read(cs))
            for j, e in enumerate(l2):
                guest = (i * l2_entries + j) * cs
                if guest >= size:
                    break
                if e & (1 << 62):
                    raise ValueError('compressed cluster at %#x' % guest)
                host = e & 0x00fffffffffffe00
                if (e & 1) or not host:
                    continue        # zeroes (no backing file)
                f.seek(host)
                n = min(cs, size - guest)
                data = f.read(n)
                out[guest:guest + len(data)] = data
    return bytes(out)


def fast_state(path):
    """Names and digests of the active image and every snapshot (as
    read_tree reads them, each with its own size)."""
    import hashlib
    h, entries = read_table(path)
    parts = ['active=' + hashlib.sha256(
        read_tree(path, h.l1_offset, h.l1_size, h.size)).hexdigest()]
    for e in entries:
        size = e.disk_size if e.disk_size is not None else h.size
        parts.append('%s:%s=%s' % (e.id, e.name, hashlib.sha256(
            read_tree(path, e.l1_offset, e.l1_size, size)).hexdigest()))
    return ' '.join(parts)


# --------------------------------------------------------------------------
# Snapshot lists and contents

def qemu_list(path):
    """[(id, name)] from qemu-img info --output=json (-U: no locking)."""
    out = common.run([common.tools().qemu_img, 'info', '-U', '--output=json',
                      path]).out
    return [(s['id'], s['name']) for s in json.loads(out).get('snapshots', [])]


def names(path):
    return [n for _, n in qemu_list(path)]


def snapshot_raw(path, name, out, by='qemu'):
    """The snapshot's content as a raw file, read by QEMU (convert -l) or
    by us (convert of --image-opts with snapshot.name)."""
    t = common.tools()
    if os.path.exists(out):
        os.unlink(out)
    if by == 'qemu' or t.img_is_qemu:
        tool = t.qemu_img if by == 'qemu' else t.img
        common.run([tool, 'convert', '-U', '-l',
                    'snapshot.name=' + name, '-O', 'raw', path, out])
    else:
        common.run([t.img, 'convert', '--image-opts',
                    'driver=qcow2,file.filename=%s,snapshot.name=%s'
                    % (path.replace(',', ',,'), name.replace(',', ',,')),
                    '-O', 'raw', out])


def active_raw(path, out, by='qemu'):
    t = common.tools()
    if os.path.exists(out):
        os.unlink(out)
    tool = t.qemu_img if by == 'qemu' else t.img
    common.run([tool, 'convert', '-f', 'qcow2', '-O', 'raw', path, out])


def equal_raw(got, model, scratch):
    """The raw file `got` holds exactly what the IntervalMap says."""
    model.write_raw(scratch)
    diff = common.files_equal(got, scratch)
    common.check(diff is None, 'content differs from the model: %s' % diff)


def check_both_clean(path, what=''):
    """qemu-img check and strata-img check: no errors, no leaks."""
    t = common.tools()
    r = common.run([t.qemu_img, 'check', path], rc=None)
    common.check(r.rc == 0, 'qemu-img check not clean %s\n%s'
                 % (what, r.describe()))
    r = common.run([t.img, 'check', path], rc=None)
    common.check(r.rc == 0, 'strata-img check not clean %s\n%s'
                 % (what, r.describe()))


def check_leaks_only(path, what=''):
    """What a crash may leave: clusters whose refcount is too high, and
    COPIED flags that disagree only because of them.  `qemu-img check -r
    leaks` (on a copy) must end clean, having repaired nothing else than
    leaks and such COPIED flags; a plain check may report nothing but
    leaks and OFLAG_COPIED mismatches."""
    t = common.tools()
    plain = common.run([t.qemu_img, 'check', path], rc=(0, 2, 3))
    for line in (plain.out + plain.err).splitlines():
        if line.startswith('ERROR') and 'OFLAG_COPIED' not in line:
            common.fail('corruption after %s:\n%s' % (what, plain.describe()))
    copy = path + '.repair'
    sparse_copy(path, copy)
    rep = common.run([t.qemu_img, 'check', '-r', 'leaks', copy], rc=None)
    os.unlink(copy)
    common.check(rep.rc == 0 and 'No errors were found' in rep.out,
                 'qemu-img check -r leaks does not end clean after %s\n%s'
                 % (what, rep.describe()))
    return plain.rc
