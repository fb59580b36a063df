#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""check -r all (and -r leaks) against QEMU's, on damaged images.

Each case builds a damaged qcow2 (with qemu-img and qemu-io, then patched
byte by byte), copies it, runs `$STRATA_IMG check -r MODE` on one copy and
`qemu-img check -r MODE` on the other, then judges both copies with
`qemu-img check`: ours must end with no more errors than QEMU's (zero when
QEMU's reaches zero, and then our own double check must say so: exit 0),
and where both copies can be read their guest data must agree (`qemu-img
compare` of the two converted copies).

The damage: a refcount of 2^64-1 on a used cluster (refcount_bits=64;
the repair must take under 5 s: it once stepped the count one at a
time), a refcount too low, too high and 0, a refcount block that is also
mapped as data or as an L2 table, the L1 table mapped as data, a
refcount-table entry outside the file or unaligned, no refcount table,
the refcount table lying on the L1 table, an unaligned refcount-table
offset (both refuse to open it, with the same message, and nothing
changes), -r leaks where a rebuild is needed (QEMU's refusal), and a
seeded, deterministic set of random single-field mutations of a small
image with two internal snapshots (alternately -r all and -r leaks).
The named cases also check the lines QEMU prints ("Rebuilding refcount
structure", "ERROR refcount block 0 refcount=2", ...).

Crash safety of the rebuild: the blkdebug filter kills the repairing
process at each of its writes and flushes in turn; the data must be
intact, the header must name the old table until the publishing write,
no new corruption may appear, and a second repair must end clean.

Run a subset: test_check_repair.py NAME-SUBSTRING...
Random set: STRATA_REPAIR_SEED, STRATA_REPAIR_MUTANTS (default 100),
STRATA_REPAIR_STRICT=1 (count the known open refusals as failures).
"""

import json
import os
import random
import re
import shutil
import signal
import struct
import subprocess
import sys
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402

runner = common.Runner()

CS = 65536
RT_AT, RB_AT, L1_AT, L2_AT = 0x10000, 0x20000, 0x30000, 0x40000
COPIED = 1 << 63
# Exit codes of `qemu-img check`: 0 clean, 2 corruptions, 3 leaks only;
# 1 (cannot open / check failed) is worse than any count.
UNOPENABLE = 1 << 30

SEED = int(os.environ.get('STRATA_REPAIR_SEED', '20261201'))
MUTANTS = int(os.environ.get('STRATA_REPAIR_MUTANTS', '100'))


def poke(path, off, fmt, value):
    with open(path, 'r+b') as f:
        f.seek(off)
        f.write(struct.pack('>' + fmt, value))


def peek(path, off, fmt):
    with open(path, 'rb') as f:
        f.seek(off)
        return struct.unpack('>' + fmt, f.read(struct.calcsize('>' + fmt)))[0]


def small_image(d, refcount_bits=16, name='base.qcow2'):
    """Fresh 64M image with two data clusters: cluster 0 header, 1
    refcount table, 2 refcount block, 3 L1, 4 L2, 5 and 6 data."""
    t = common.tools()
    img = os.path.join(d, name)
    common.run([t.qemu_img, 'create', '-q', '-f', 'qcow2', '-o',
                'refcount_bits=%d' % refcount_bits, img, '64M'])
    common.run_io(t.qemu_io, img, ['write -P 0x11 0 64k',
                                   'write -P 0x22 128k 64k'])
    return img


def snapshot_image(d):
    """Small image with two internal snapshots and data changed between
    them (shared and private clusters, several L2 tables, 4K clusters so
    that metadata is a good part of the file)."""
    t = common.tools()
    img = os.path.join(d, 'snap.qcow2')
    common.run([t.qemu_img, 'create', '-q', '-f', 'qcow2', '-o',
                'cluster_size=4096', img, '8M'])
    common.run_io(t.qemu_io, img, ['write -P 0x11 0 64k',
                                   'write -P 0x12 3M 8k'])
    common.run([t.qemu_img, 'snapshot', '-c', 's1', img])
    common.run_io(t.qemu_io, img, ['write -P 0x21 4k 4k',
                                   'write -P 0x22 6M 12k'])
    common.run([t.qemu_img, 'snapshot', '-c', 's2', img])
    common.run_io(t.qemu_io, img, ['write -P 0x31 8k 4k',
                                   'write -P 0x32 7M 4k'])
    return img


def verdict(img):
    """Errors qemu-img check finds: corruptions + leaks + check errors,
    or UNOPENABLE.  Returns (count, result)."""
    t = common.tools()
    r = common.run([t.qemu_img, 'check', '--output=json', '-f', 'qcow2',
                    img], rc=None, timeout=120)
    if r.rc not in (0, 2, 3):
        return UNOPENABLE, r
    try:
        j = json.loads(r.out)
    except ValueError:
        return UNOPENABLE, r
    return (j.get('corruptions', 0) + j.get('leaks', 0) +
            j.get('check-errors', 0)), r


def readable(img):
    t = common.tools()
    r = common.run([t.qemu_img, 'convert', '-f', 'qcow2', '-O', 'raw', img,
                    img + '.raw'], rc=None, timeout=120)
    return r.rc == 0


def differential(damaged, label, want_lines=(), max_secs=None, mode='all'):
    """Repairs two copies of `damaged` (check -r mode), ours and QEMU's;
    judges both."""
    t = common.tools()
    ours = damaged + '.ours'
    theirs = damaged + '.qemu'
    shutil.copyfile(damaged, ours)
    shutil.copyfile(damaged, theirs)
    t0 = time.monotonic()
    r_ours = common.run([t.img, 'check', '-r', mode, '-f', 'qcow2', ours],
                        rc=None, timeout=max_secs * 4 if max_secs else 120)
    elapsed = time.monotonic() - t0
    r_qemu = common.run([t.qemu_img, 'check', '-r', mode, '-f', 'qcow2',
                         theirs], rc=None, timeout=120)
    n_ours, v_ours = verdict(ours)
    n_qemu, v_qemu = verdict(theirs)
    what = ('%s: after repair qemu-img check finds %s on ours, %s on '
            'QEMU\'s\n--- our repair:\n%s\n--- QEMU\'s repair:\n%s\n'
            '--- check of ours:\n%s'
            % (label, 'unopenable' if n_ours == UNOPENABLE else n_ours,
               'unopenable' if n_qemu == UNOPENABLE else n_qemu,
               r_ours.describe(), r_qemu.describe(), v_ours.describe()))
    common.check(n_ours <= n_qemu, 'more errors left than QEMU leaves: '
                 + what)
    if n_qemu == 0:
        common.check(r_ours.rc == 0, 'our repair should end clean (exit 0)'
                     ' as QEMU\'s does: ' + what)
    for line in want_lines:
        common.check(line in r_ours.err, 'expected %r in our output: %s'
                     % (line, what))
    if max_secs is not None:
        common.check(elapsed < max_secs, '%s: repair took %.2fs (bound %ss)'
                     % (label, elapsed, max_secs))
    if n_ours != UNOPENABLE and n_qemu != UNOPENABLE and \
            readable(ours) and readable(theirs):
        r = common.run([t.qemu_img, 'compare', '-f', 'raw', '-F', 'raw',
                        ours + '.raw', theirs + '.raw'], rc=None)
        common.check(r.rc == 0, 'guest data differ after repair: %s\n%s'
                     % (r.describe(), what))
    return n_ours, n_qemu


def named(name, build, want_lines=(), max_secs=None, refcount_bits=16):
    def case():
        with common.TempDir() as d:
            img = small_image(d, refcount_bits)
            build(img)
            before, _ = verdict(img)
            common.check(before != 0, '%s: the damage is not seen by '
                         'qemu-img check' % name)
            differential(img, name, want_lines, max_secs)
    runner.add(name, case)


def max_refcount(img):
    # refcount_bits=64: cluster 5's entry in the refcount block
    poke(img, RB_AT + 5 * 8, 'Q', (1 << 64) - 1)


named('refcount_2^64-1_fast', max_refcount,
      want_lines=('Repairing cluster 5 refcount=18446744073709551615 '
                  'reference=1',), max_secs=5, refcount_bits=64)
def shared_then_too_low(img):
    # after a snapshot data cluster 5 is shared (refcount 2); store 1
    common.run([common.tools().qemu_img, 'snapshot', '-c', 's', img])
    check = peek(img, RB_AT + 5 * 2, 'H')
    common.check(check == 2, 'cluster 5 refcount %d, expected 2' % check)
    poke(img, RB_AT + 5 * 2, 'H', 1)


named('refcount_too_low', shared_then_too_low,
      want_lines=('Repairing cluster 5 refcount=1 reference=2',))
named('refcount_zero_on_data', lambda img: poke(img, RB_AT + 5 * 2, 'H', 0),
      want_lines=('ERROR cluster 5 refcount=0 reference=1',
                  'Rebuilding refcount structure'))
named('refcount_zero_on_l2', lambda img: poke(img, RB_AT + 4 * 2, 'H', 0),
      want_lines=('Rebuilding refcount structure',))
named('refcount_too_high', lambda img: poke(img, RB_AT + 6 * 2, 'H', 7))
named('refblock_mapped_as_data',
      lambda img: poke(img, L2_AT + 2 * 8, 'Q', COPIED | RB_AT),
      want_lines=('ERROR refcount block 0 refcount=2',
                  'Rebuilding refcount structure'))
named('refblock_is_l2_table',
      lambda img: poke(img, L1_AT, 'Q', COPIED | RB_AT),
      want_lines=('Rebuilding refcount structure',))
named('l1_table_mapped_as_data',
      lambda img: poke(img, L2_AT + 3 * 8, 'Q', COPIED | L1_AT),
      want_lines=('ERROR cluster 3 refcount=1 reference=2',))
named('reftable_entry_outside_file',
      lambda img: poke(img, RT_AT + 8, 'Q', 0x1000000),
      want_lines=('Repairing refcount block 1 is outside image',
                  'Rebuilding refcount structure'))
named('reftable_entry0_outside_file',
      lambda img: poke(img, RT_AT, 'Q', 0x1000000),
      want_lines=('Rebuilding refcount structure',))
named('reftable_entry_unaligned',
      lambda img: poke(img, RT_AT, 'Q', RB_AT + 0x200),
      want_lines=('ERROR refcount block 0 is not cluster aligned; '
                  'refcount table entry corrupted',
                  'Rebuilding refcount structure'))
named('reftable_clusters_zero', lambda img: poke(img, 56, 'I', 0),
      want_lines=('Rebuilding refcount structure',))
named('reftable_on_l1_table', lambda img: poke(img, 48, 'Q', L1_AT),
      want_lines=('Rebuilding refcount structure',))


def snapshot_extra_too_big(img):
    """The first snapshot entry claims 2000 bytes of extra data (QEMU's
    limit is 1024): any open refuses it, check -r all cuts it."""
    common.run([common.tools().qemu_img, 'snapshot', '-c', 's1', img])
    common.run([common.tools().qemu_img, 'snapshot', '-c', 's2', img])
    table = peek(img, 64, 'Q')
    poke(img, table + 36, 'I', 2000)


named('snapshot_extra_data_too_big', snapshot_extra_too_big,
      want_lines=('Discarding too much extra metadata in snapshot table '
                  'entry 0 (2000 > 1024)',))


def snapshot_table_too_big(img):
    """A table of 1,120 entries with 60,000-byte names: past QEMU's 64 MiB
    limit after about 1,117 of them.  Any open refuses it; check -r all
    drops the entries that overhang."""
    name_len = 60000
    with open(img, 'r+b') as fh:
        fh.seek(0, 2)
        table = (fh.tell() + 0xffff) & ~0xffff
        fh.seek(table)
        for i in range(1120):
            ident = b'%d' % (i + 1)
            entry = struct.pack('>QIHHIIQII', 0, 0, len(ident), name_len,
                                0, 0, 0, 0, 24)
            entry += struct.pack('>QQQ', 0, 64 << 20, (1 << 64) - 1)
            entry += ident + b'n' * name_len
            entry += b'\0' * (-len(entry) % 8)
            fh.write(entry)
    poke(img, 60, 'I', 1120)
    poke(img, 64, 'Q', table)


named('snapshot_table_too_big', snapshot_table_too_big,
      want_lines=('Discarding 3 overhanging snapshots (snapshot table is '
                  'too big)',))


@runner.case('snapshot_damage_needs_r_all')
def snapshot_damage_needs_r_all():
    """Without -r all (-r leaks, or no -r), check refuses such a table as
    qemu-img does (exit 1, the same lines), and the file is unchanged."""
    t = common.tools()
    with common.TempDir() as d:
        img = small_image(d)
        snapshot_extra_too_big(img)
        ours, theirs = img + '.ours', img + '.qemu'
        shutil.copyfile(img, ours)
        shutil.copyfile(img, theirs)
        with open(ours, 'rb') as fh:
            before = fh.read()
        # plain check (read-only) reports the table as check -r leaks does
        for repair in (['-r', 'leaks'], []):
            r_ours = common.run([t.img, 'check'] + repair + ['-f', 'qcow2',
                                                            ours], rc=None)
            r_qemu = common.run([t.qemu_img, 'check'] + repair +
                                ['-f', 'qcow2', theirs], rc=None)
            common.check(r_ours.rc == r_qemu.rc == 1, 'exit codes: ours %d, '
                         'QEMU %d\n%s\n%s' % (r_ours.rc, r_qemu.rc,
                                               r_ours.describe(),
                                               r_qemu.describe()))
            for line in ('ERROR failed to read the snapshot table: Too much '
                         'extra metadata in snapshot table entry 0',
                         'You can force-remove this extra metadata with '
                         'qemu-img check -r all',
                         'Check failed: File too large'):
                common.check(line in r_ours.err and line in r_qemu.err,
                             'expected %r from both:\n%s\n%s'
                             % (line, r_ours.describe(), r_qemu.describe()))
        with open(ours, 'rb') as fh:
            common.check(fh.read() == before, 'the refused check changed '
                         'the file')


@runner.case('reftable_offset_unaligned')
def reftable_offset_unaligned():
    """Neither opens it: the same message, and the file is unchanged."""
    t = common.tools()
    with common.TempDir() as d:
        img = small_image(d)
        poke(img, 48, 'Q', RT_AT + 0x200)
        before = common.sha256(img)
        r = common.run([t.img, 'check', '-r', 'all', '-f', 'qcow2', img],
                       rc=1)
        q = common.run([t.qemu_img, 'check', '-r', 'all', '-f', 'qcow2',
                        img], rc=1)
        common.check(common.normalize_prog(r.err, t.img_name) ==
                     common.normalize_prog(q.err, 'qemu-img'),
                     'messages differ:\n%s\n%s' % (r.describe(),
                                                   q.describe()))
        common.check(common.sha256(img) == before, 'image changed')


@runner.case('leaks_only_repair_keeps_exit_codes')
def leaks_only():
    """-r leaks on damage that needs a rebuild: QEMU's refusal and exit
    code; on pure leaks: repaired, exit 0."""
    t = common.tools()
    with common.TempDir() as d:
        img = small_image(d)
        poke(img, RB_AT + 5 * 2, 'H', 0)
        for tool, name in ((t.img, t.img_name), (t.qemu_img, 'qemu-img')):
            c = img + '.' + name
            shutil.copyfile(img, c)
            r = common.run([tool, 'check', '-r', 'leaks', '-f', 'qcow2', c],
                           rc=1)
            common.check('ERROR need to rebuild refcount structures' in r.err,
                         r.describe())
        img2 = small_image(d, name='leak.qcow2')
        poke(img2, RB_AT + 6 * 2, 'H', 3)
        r = common.run([t.img, 'check', '-r', 'leaks', '-f', 'qcow2', img2],
                       rc=0)
        common.check('Repairing cluster 6 refcount=3 reference=1' in r.err,
                     r.describe())
        common.qemu_check_clean(img2)


# ---------------------------------------------------------------------------
# Crash safety of the rebuild

COUNTS_RE = re.compile(r'blkdebug: reads=\d+ writes=(\d+) flushes=(\d+)')


def blkdebug_opts(img, kill_at=None, counts=False):
    o = 'driver=qcow2,file.driver=blkdebug,file.filename=%s' % img
    if kill_at is not None:
        o += ',file.inject-error.any=%d,file.inject-error.action=kill' % kill_at
    if counts:
        o += ',file.print-counts=on'
    return o


def guest_data(img):
    common.run([common.tools().qemu_img, 'convert', '-f', 'qcow2', '-O',
                'raw', img, img + '.raw'])
    return common.sha256(img + '.raw')


def crash_during_rebuild(damage):
    """The process is killed at every write and flush of a rebuilding
    repair in turn.  Each time: the guest data are intact, the header
    still names the old refcount table unless the publishing write was
    done, qemu-img check finds no more errors than before the repair
    (then, if the switch was done, only leaks), and a second repair ends
    clean."""
    common.skip_if_qemu_tools('the blkdebug options are ours')
    t = common.tools()
    with common.TempDir() as d:
        base = small_image(d)
        damage(base)
        data = guest_data(base)
        errors_before, v = verdict(base)
        corruptions_before = json.loads(v.out).get('corruptions', 0)
        old_rt = peek(base, 48, 'Q')
        img = os.path.join(d, 'work.qcow2')
        shutil.copyfile(base, img)
        r = common.run([t.img, 'check', '-r', 'all', '--image-opts',
                        blkdebug_opts(img, counts=True)])
        common.check('Rebuilding refcount structure' in r.err, r.describe())
        m = COUNTS_RE.search(r.err)
        common.check(m, 'no counts from blkdebug:\n' + r.describe())
        total = int(m.group(1)) + int(m.group(2))
        common.check(peek(img, 48, 'Q') != old_rt, 'table not moved')
        switched = 0
        for n in range(1, total + 1):
            shutil.copyfile(base, img)
            p = subprocess.run([t.img, 'check', '-r', 'all', '--image-opts',
                                blkdebug_opts(img, kill_at=n)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               timeout=120)
            what = 'killed at write/flush %d of %d' % (n, total)
            common.check(p.returncode == -signal.SIGKILL,
                         '%s: not killed: exit %d\n%s'
                         % (what, p.returncode, p.stderr.decode()))
            common.check(guest_data(img) == data, '%s: data changed' % what)
            after, v = verdict(img)
            if peek(img, 48, 'Q') == old_rt:
                common.check(after <= errors_before, '%s: %s errors, %d '
                             'before\n%s' % (what, after, errors_before,
                                             v.describe()))
            else:
                # published: the old structure is leaked until the leak
                # repair is done; no corruption may be new
                switched += 1
                corruptions = json.loads(v.out).get('corruptions', 0)
                common.check(corruptions <= corruptions_before,
                             '%s: switched, %d corruptions, %d before\n%s'
                             % (what, corruptions, corruptions_before,
                                v.describe()))
            common.run([t.img, 'check', '-r', 'all', '-f', 'qcow2', img])
            common.qemu_check_clean(img)
        common.check(0 < switched < total, 'kills before and after the '
                     'switch expected (%d of %d after)' % (switched, total))


runner.add('crash_during_rebuild_data_on_refblock', crash_during_rebuild,
           lambda img: poke(img, L2_AT + 2 * 8, 'Q', COPIED | RB_AT))
runner.add('crash_during_rebuild_reftable_entry_outside', crash_during_rebuild,
           lambda img: poke(img, RT_AT + 8, 'Q', 0x1000000))


# ---------------------------------------------------------------------------
# Random single-field mutations

def metadata_words(img):
    """(offset, width) of every field worth mutating: header fields, L1
    entries (active and snapshot), L2 entries in use, refcount-table
    entries, refcount entries of used clusters, snapshot-table fields."""
    cs = 1 << peek(img, 20, 'I')
    size = os.path.getsize(img)
    fields = [(o, w) for o, w in ((24, 8), (36, 4), (40, 8), (48, 8),
                                  (56, 4), (60, 4), (64, 8), (72, 8),
                                  (96, 4))]
    l1_size, l1_off = peek(img, 36, 'I'), peek(img, 40, 'Q')
    rt_off, rt_clusters = peek(img, 48, 'Q'), peek(img, 56, 'I')
    nb_snap, snap_off = peek(img, 60, 'I'), peek(img, 64, 'Q')
    order = peek(img, 96, 'I')
    l1s = [(l1_off, l1_size)]
    off = snap_off
    for _ in range(nb_snap):
        sl1_off, sl1_size = peek(img, off, 'Q'), peek(img, off + 8, 'I')
        id_len, name_len = peek(img, off + 12, 'H'), peek(img, off + 14, 'H')
        extra = peek(img, off + 36, 'I')
        fields += [(off, 8), (off + 8, 4), (off + 36, 4), (off + 40, 8)]
        l1s.append((sl1_off, sl1_size))
        off += 40 + extra + id_len + name_len
        off = (off + 7) & ~7
    l2s = set()
    for lo, ln in l1s:
        for i in range(ln):
            e = peek(img, lo + 8 * i, 'Q')
            fields.append((lo + 8 * i, 8))
            if e & 0x00fffffffffffe00:
                l2s.add(e & 0x00fffffffffffe00)
    for l2 in sorted(l2s):
        if l2 + cs > size:
            continue
        for i in range(cs // 8):
            if peek(img, l2 + 8 * i, 'Q'):
                fields.append((l2 + 8 * i, 8))
    width = (1 << order) // 8
    for i in range(rt_clusters * cs // 8):
        e = peek(img, rt_off + 8 * i, 'Q')
        if not e:
            continue
        fields.append((rt_off + 8 * i, 8))
        if width >= 1:
            for k in range(cs // width):
                if (i * (cs // width) + k) * cs < size:
                    fields.append((e + k * width, width))
    return fields


def mutate(rng, img, fields):
    off, w = rng.choice(fields)
    fmt = {1: 'B', 2: 'H', 4: 'I', 8: 'Q'}[w]
    old = peek(img, off, fmt)
    cs = 1 << peek(img, 20, 'I')
    size = os.path.getsize(img)
    kind = rng.randrange(6)
    if kind == 0:
        new = 0
    elif kind == 1:
        new = old ^ (1 << rng.randrange(w * 8))
    elif kind == 2:
        new = (1 << (w * 8)) - 1
    elif kind == 3:
        new = old + rng.choice((1, -1, 2))
    elif kind == 4 and w == 8:
        new = (old & ~0x00fffffffffffe00) | (rng.randrange(size // cs + 4)
                                             * cs)
    else:
        new = rng.randrange(1 << (w * 8))
    new &= (1 << (w * 8)) - 1
    poke(img, off, fmt, new)
    return 'field at %#x (%d bytes): %#x -> %#x' % (off, w, old, new)


# Images our check refuses to open where QEMU's opens them, listed as
# known and counted as failures only with STRATA_REPAIR_STRICT=1 (every
# snapshot-table damage QEMU's check repairs, ours repairs too: extra
# data over 1024 bytes, a table over 64 MiB or with more than 65536
# entries as QEMU does, entries past the end of the file by dropping
# them):
#  - an active L1 table on the header: deliberate, QEMU's "repair" then
#    writes COPIED flags into the header;
#  - an active L1 table past the end of the file: deliberate, QEMU reads
#    it as empty and its leak repair frees every cluster the active tree
#    had (a pointer fixed by hand later would find them reused).
KNOWN_OPEN_REFUSALS = ('Active L1 table overlaps the image header',
                       'Active L1 table offset invalid: it lies past the end')
STRICT = os.environ.get('STRATA_REPAIR_STRICT') == '1'


def known_refusal(msg):
    return not STRICT and any(k in msg and 'Could not open' in msg
                              for k in KNOWN_OPEN_REFUSALS)


def random_mutants():
    """Every damaging mutant is judged; failures are collected so that one
    run lists them all."""
    rng = random.Random(SEED)
    stats = {'qemu_clean': 0, 'ours_clean': 0, 'both_unopenable': 0}
    failures = []
    known = []
    with common.TempDir() as d:
        base = snapshot_image(d)
        fields = metadata_words(base)
        done = 0
        for n in range(MUTANTS * 3):
            if done >= MUTANTS:
                break
            img = os.path.join(d, 'm%03d.qcow2' % n)
            shutil.copyfile(base, img)
            what = mutate(rng, img, fields)
            before, _ = verdict(img)
            if before == 0:
                os.unlink(img)
                continue   # harmless mutation: nothing to repair
            done += 1
            # alternately -r all and -r leaks
            mode = ('all', 'leaks')[done % 2]
            try:
                o, q = differential(img, 'mutant %d (seed %d, %s, -r %s)'
                                    % (n, SEED, what, mode), mode=mode)
            except common.TestFailure as e:
                if known_refusal(str(e)):
                    known.append(n)
                    print('  mutant %d: known open refusal: %s' % (n, what))
                    continue
                failures.append(str(e))
                print('  mutant %d: FAIL: %s' % (n, str(e).split('\n')[0]))
                continue
            stats['qemu_clean'] += q == 0
            stats['ours_clean'] += o == 0
            stats['both_unopenable'] += q == o == UNOPENABLE
            for f in os.listdir(d):
                if f.startswith('m%03d.' % n):
                    os.unlink(os.path.join(d, f))
        print('  %d damaged mutants; clean after repair: QEMU %d, ours %d; '
              'unopenable for both: %d; known: %d; failed: %d'
              % (done, stats['qemu_clean'], stats['ours_clean'],
                 stats['both_unopenable'], len(known), len(failures)))
        common.check(not failures, '%d of %d mutants:\n%s'
                     % (len(failures), done, '\n\n'.join(failures)))
        common.check(done >= MUTANTS // 2, 'too few damaging mutations')


runner.add('random_single_field_mutations', random_mutants)

if __name__ == '__main__':
    sys.exit(runner.main())
