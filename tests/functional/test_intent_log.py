#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Crash-atomic transactions, as the tools see them (issue 14).

The images and the journal are built here byte by byte from the formats
documented in include/block/qcow2-intent.h and include/blockdev/
intent-log.h (so the formats are checked by a second writer): QEMU takes
an internal snapshot "s1" of each image, then the header bytes 60..71 are
put back, which leaves the new snapshot table durable but unpublished
(what a transaction's do leaves), the strata intent extension is added
to each header and, for a committed transaction, the intent record is
written to the journal.

Cases: what QEMU's tools show of such an image; strata-img info and check
(human and JSON) report the pending transaction; check -r all rolls it
forward on every image (2 and 4 images) or discards it (no record);
a missing journal, another journal at the same path and a corrupt record
are clear errors that change nothing; QEMU writing to one image in
between (documented outcome: that image keeps QEMU's state, no
corruption).
"""

import hashlib
import json
import os
import struct
import sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402
from common import check, run  # noqa: E402

runner = common.Runner()

EXT_MAGIC = 0x5354494c
AUTOCLEAR_INTENT = 1 << 63
SIZE = 1 << 20


def header(path, n=65536):
    with open(path, 'rb') as f:
        return bytearray(f.read(n))


def poke(path, off, data):
    with open(path, 'r+b') as f:
        f.seek(off)
        f.write(data)


def ext_area(hdr):
    hlen = struct.unpack('>I', hdr[100:104])[0]
    backing_off = struct.unpack('>Q', hdr[8:16])[0]
    cluster = 1 << struct.unpack('>I', hdr[20:24])[0]
    return hlen, backing_off or cluster


def extensions(path):
    hdr = header(path)
    off, end = ext_area(hdr)
    out = []
    while off + 8 <= end:
        magic, ln = struct.unpack('>II', hdr[off:off + 8])
        if magic == 0:
            break
        out.append((magic, bytes(hdr[off + 8:off + 8 + ln])))
        off += 8 + ((ln + 7) & ~7)
    return out


def add_intent_ext(path, txid, jid, jdir):
    """Inserts the strata intent extension before the end marker."""
    hdr = header(path)
    off, end = ext_area(hdr)
    while struct.unpack('>I', hdr[off:off + 4])[0] != 0:
        ln = struct.unpack('>I', hdr[off + 4:off + 8])[0]
        off += 8 + ((ln + 7) & ~7)
    payload = txid + jid + struct.pack('>I', len(jdir)) + jdir.encode()
    ext = struct.pack('>II', EXT_MAGIC, len(payload)) + payload
    ext += b'\0' * ((-len(ext)) % 8) + b'\0' * 8
    check(off + len(ext) <= end, 'no room for the extension')
    poke(path, off, ext)
    autoclear = struct.unpack('>Q', hdr[88:96])[0] | AUTOCLEAR_INTENT
    poke(path, 88, struct.pack('>Q', autoclear))


def record_bytes(txid, jid, images):
    """images: [(path, [(off, old, new)])]"""
    body = bytearray(txid + jid + struct.pack('>I', len(images)))
    for path, ops in images:
        st = os.stat(path)
        p = os.path.abspath(path).encode()
        body += struct.pack('>QQI', st.st_dev, st.st_ino, len(p)) + p
        body += struct.pack('>I', len(ops))
        for off, old, new in ops:
            body += struct.pack('>IQI', 1, off, len(old)) + old + new
    rec = b'STRATAIR' + struct.pack('>II', 1, len(body)) + bytes(body)
    return rec + hashlib.sha256(rec).digest()


class Txn:
    """n images left between do and publish of one transaction."""

    def __init__(self, d, n, committed=True, slot=False):
        t = common.tools()
        self.d = d
        self.jdir = os.path.join(d, 'journal')
        os.mkdir(self.jdir)
        self.txid = os.urandom(16)
        self.jid = os.urandom(16)
        with open(os.path.join(self.jdir, 'journal-id'), 'w') as f:
            f.write(self.jid.hex() + '\n')
        self.paths = []
        images = []
        for i in range(n):
            p = os.path.join(d, 'd%d.qcow2' % i)
            run([t.qemu_img, 'create', '-q', '-f', 'qcow2', p, str(SIZE)])
            run([t.qemu_io, '-f', 'qcow2', '-c',
                 'write -P %d 0 192k' % (0x21 + i), p])
            old = bytes(header(p)[60:72])
            run([t.qemu_img, 'snapshot', '-c', 's1', p])
            new = bytes(header(p)[60:72])
            check(old != new, 'snapshot did not change the header')
            poke(p, 60, old)                  # prepared, not published
            add_intent_ext(p, self.txid, self.jid, self.jdir)
            self.paths.append(p)
            images.append((p, [(60, old, new)]))
        self.rec = os.path.join(self.jdir, self.txid.hex() + '.rec')
        if slot:
            # the current format: a slot overwritten in place; what
            # follows the record is an older, longer record's tail, and
            # slot-0 holds a finished record (magic STRATAID)
            self.rec = os.path.join(self.jdir, 'slot-1')
            done = bytearray(record_bytes(os.urandom(16), self.jid, images))
            done[0:8] = b'STRATAID'
            with open(os.path.join(self.jdir, 'slot-0'), 'wb') as f:
                f.write(bytes(done).ljust(4096, b'\0'))
        if committed:
            data = record_bytes(self.txid, self.jid, images)
            if slot:
                data = data + b'\xa5' * (4096 - len(data))
            with open(self.rec, 'wb') as f:
                f.write(data)


def qemu_snapshots(path):
    res = run([common.tools().qemu_img, 'snapshot', '-l', path])
    return [ln.split()[1] for ln in res.out.splitlines()[2:] if ln.strip()]


def has_intent(path):
    return any(m == EXT_MAGIC for m, _ in extensions(path))


def img(*args, rc=0):
    return run([common.tools().img] + list(args), rc=rc)


@runner.case()
def qemu_view_mid_transaction():
    """QEMU 7.2 ignores the extension: info and snapshot -l work and show
    the old state; check finds the prepared clusters as leaks only."""
    t = common.tools()
    with common.TempDir() as d:
        x = Txn(d, 2)
        p = x.paths[0]
        res = run([t.qemu_img, 'info', p])
        check('Snapshot list' not in res.out, res.describe())
        check(qemu_snapshots(p) == [], 'QEMU sees the unpublished snapshot')
        res = run([t.qemu_img, 'check', p], rc=3)
        check('leaked clusters were found' in res.out, res.describe())
        check('ERROR' not in res.out, res.describe())
        # the extension alone (no prepared data) checks clean
        q = os.path.join(d, 'clean.qcow2')
        run([t.qemu_img, 'create', '-q', '-f', 'qcow2', q, str(SIZE)])
        add_intent_ext(q, x.txid, x.jid, x.jdir)
        res = run([t.qemu_img, 'check', q])
        check('No errors were found on the image.' in res.out, res.describe())
        # QEMU keeps it when it rewrites the header, and clears the
        # autoclear bit that goes with it
        run([t.qemu_img, 'snapshot', '-c', 'q1', q])
        check(has_intent(q), 'qemu-img dropped the extension')
        check(not struct.unpack('>Q', header(q)[88:96])[0] & AUTOCLEAR_INTENT,
              'qemu-img kept the autoclear bit')


@runner.case()
def info_and_check_report_pending():
    common.skip_if_qemu_tools('strata-only report')
    with common.TempDir() as d:
        x = Txn(d, 2)
        p = x.paths[0]
        before = common.sha256(p)
        res = img('info', p)
        want = ('unfinished transaction: %s (journal %s, pending: roll '
                'forward)' % (x.txid.hex(), x.jdir))
        check(want in res.out, res.describe())
        info = json.loads(img('info', '--output=json', p).out)
        check(info.get('__org.strata_intent') ==
              {'transaction': x.txid.hex(), 'journal': x.jdir,
               'state': 'pending', 'detail': 'roll forward'}, str(info))
        res = img('check', p, rc=3)
        check(('Image is part of unfinished transaction %s (journal %s); '
               'recovery will roll it forward' % (x.txid.hex(), x.jdir))
              in res.out, res.describe())
        js = json.loads(img('check', '--output=json', p, rc=3).out)
        check(js['__org.strata_intent']['state'] == 'pending', str(js))
        check(common.sha256(p) == before, 'a read-only check wrote')
        check(os.path.exists(x.rec), 'the record went away')


def roll_forward(n):
    common.skip_if_qemu_tools('strata recovery')
    with common.TempDir() as d:
        x = Txn(d, n)
        res = img('check', '-r', 'all', x.paths[-1])
        check('Unfinished transaction %s (journal %s) was rolled forward.'
              % (x.txid.hex(), x.jdir) in res.out, res.describe())
        check(not os.path.exists(x.rec), 'the record is still there')
        for p in x.paths:
            check(not has_intent(p), '%s keeps the extension' % p)
            check(qemu_snapshots(p) == ['s1'], '%s: no s1' % p)
            common.qemu_check_clean(p)


runner.add('roll_forward_2', roll_forward, 2)
runner.add('roll_forward_4', roll_forward, 4)


@runner.case()
def roll_forward_slot():
    """The record in a slot file (what strata writes since the journal
    costs one synced write): strata-img check -r all on one image rolls
    every image forward and marks the slot done in place (the file
    stays, for the next transaction); a slot already marked done is
    never replayed."""
    common.skip_if_qemu_tools('strata recovery')
    with common.TempDir() as d:
        x = Txn(d, 2, slot=True)
        res = img('check', '-r', 'all', x.paths[0])
        check('Unfinished transaction %s (journal %s) was rolled forward.'
              % (x.txid.hex(), x.jdir) in res.out, res.describe())
        with open(x.rec, 'rb') as f:
            data = f.read()
        check(data[:8] == b'STRATAID', 'the slot is not marked done')
        check(len(data) == 4096, 'the slot was not kept in place')
        for p in x.paths:
            check(not has_intent(p), '%s keeps the extension' % p)
            check(qemu_snapshots(p) == ['s1'], '%s: no s1' % p)
            common.qemu_check_clean(p)


@runner.case()
def discard_without_record():
    common.skip_if_qemu_tools('strata recovery')
    with common.TempDir() as d:
        x = Txn(d, 2, committed=False)
        res = img('check', '-r', 'all', x.paths[0])
        check('was discarded.' in res.out, res.describe())
        check(not has_intent(x.paths[0]), 'extension kept')
        check(has_intent(x.paths[1]), 'the other image changed unopened')
        res = img('check', '--output=json', '-r', 'all', x.paths[1])
        check(json.loads(res.out)['__org.strata_intent']['state'] ==
              'discarded', res.describe())
        for p in x.paths:
            check(qemu_snapshots(p) == [], '%s has s1' % p)
            common.qemu_check_clean(p)       # the leaks are reclaimed


@runner.case()
def bad_journal_changes_nothing():
    common.skip_if_qemu_tools('strata recovery')
    with common.TempDir() as d:
        x = Txn(d, 2)
        sums = [common.sha256(p) for p in x.paths]
        away = x.jdir + '.away'
        os.rename(x.jdir, away)
        res = img('check', '-r', 'all', x.paths[0], rc=1)
        check('cannot be read' in res.err and 'unfinished transaction' in
              res.err, res.describe())
        res = img('info', x.paths[0])
        check('cannot be recovered' in res.out + res.err, res.describe())
        # another journal at the same path is not taken for it
        os.mkdir(x.jdir)
        with open(os.path.join(x.jdir, 'journal-id'), 'w') as f:
            f.write(os.urandom(16).hex() + '\n')
        res = img('check', '-r', 'all', x.paths[0], rc=1)
        check('is not journal %s' % x.jid.hex() in res.err, res.describe())
        os.rename(os.path.join(x.jdir, 'journal-id'), os.path.join(d, 'other-id'))
        os.rmdir(x.jdir)
        os.rename(away, x.jdir)
        # a corrupt record
        with open(x.rec, 'r+b') as f:
            f.seek(40)
            b = f.read(1)
            f.seek(40)
            f.write(bytes([b[0] ^ 4]))
        res = img('check', '-r', 'all', x.paths[1], rc=1)
        check('is corrupt' in res.err, res.describe())
        check([common.sha256(p) for p in x.paths] == sums,
              'a refused recovery changed an image')
        res = run([common.tools().io, '-c', 'read 0 4k', x.paths[0]], rc=1)
        check('unfinished transaction' in res.err, res.describe())


@runner.case()
def qemu_writes_in_between():
    """QEMU (which ignores the extension) takes a snapshot of image 0, or
    repairs its leaks (freeing the prepared table), before recovery:
    recovery sees the autoclear bit QEMU cleared, leaves image 0 as QEMU
    left it (with a warning), completes image 1, and nothing is corrupt:
    the documented outcome, all-or-nothing holds only for images nobody
    else wrote to."""
    common.skip_if_qemu_tools('strata recovery')
    t = common.tools()
    for qemu_op in (['snapshot', '-c', 'q'], ['check', '-r', 'leaks']):
        with common.TempDir() as d:
            x = Txn(d, 2)
            run([t.qemu_img] + qemu_op + [x.paths[0]])
            res = img('check', '-r', 'all', x.paths[1])
            check('was opened read-write by a program that does not know'
                  in res.err, res.describe())
            want = ['q'] if qemu_op[0] == 'snapshot' else []
            check(qemu_snapshots(x.paths[0]) == want, 'image 0 changed')
            check(qemu_snapshots(x.paths[1]) == ['s1'],
                  'image 1 not completed')
            check(not has_intent(x.paths[0]), 'extension kept on image 0')
            # image 0 got the dirty bit: its next open reclaims leaks
            img('check', '-r', 'all', x.paths[0])
            common.qemu_check_clean(x.paths[0])
            common.qemu_check_clean(x.paths[1])


if __name__ == '__main__':
    sys.exit(runner.main())
