#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Growing the refcount table lays the image out as QEMU does.

When a write needs a refcount block past the end of the refcount table,
QEMU 7.2 puts the block in the first free cluster after the write's run,
then a new table and the blocks covering it in an area from the next
refcount-block boundary, frees the old table at once, and looks for the
run again (so the data goes into the old table's clusters when it fits).
A write that meets metadata fills the free clusters before it and goes on
elsewhere.  Images grown that way by qemu-io and by strata-io from the
same start must match: the header's table offset and size, `qemu-img
check` (its "Image end offset" is what iotest 044 compares), `qemu-img
map` (every host offset) and the content.  Small clusters (512 bytes)
make the table grow within a few MiB.
"""

import os
import shutil
import struct
import sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402
from common import check, run  # noqa: E402

runner = common.Runner()


def reftable_fields(path):
    """(refcount_table_offset, refcount_table_clusters) from the header."""
    with open(path, 'rb') as f:
        f.seek(48)
        return struct.unpack('>QI', f.read(12))


def grow_both(opts, size, cmds, setup=None, grows=True):
    """Runs cmds with qemu-io and strata-io on copies of one image and
    compares what QEMU's tools say about the two."""
    t = common.tools()
    with common.TempDir() as d:
        base = os.path.join(d, 'base.qcow2')
        run([t.qemu_img, 'create', '-q', '-f', 'qcow2', '-o', opts, base,
             str(size)])
        if setup:
            common.run_io(t.qemu_io, base, setup)
        imgs = {}
        for label, io in (('qemu', t.qemu_io), ('ours', t.io)):
            imgs[label] = os.path.join(d, label + '.qcow2')
            shutil.copyfile(base, imgs[label])
            common.run_io(io, imgs[label], cmds)
        before = reftable_fields(base)
        fields = {k: reftable_fields(v) for k, v in imgs.items()}
        check((fields['qemu'] != before) == grows,
              'the scenario %s the refcount table (%r)'
              % ('does not grow' if grows else 'grows', before))
        check(fields['ours'] == fields['qemu'],
              'refcount table (offset, clusters): ours %r, qemu-io\'s %r'
              % (fields['ours'], fields['qemu']))
        checks = {k: run([t.qemu_img, 'check', '-f', 'qcow2', v]).out
                  for k, v in imgs.items()}
        check(checks['ours'] == checks['qemu'],
              'qemu-img check differs\n-- ours:\n%s-- qemu-io\'s:\n%s'
              % (checks['ours'], checks['qemu']))
        maps = {k: run([t.qemu_img, 'map', '-f', 'qcow2', '--output=json',
                        v]).out for k, v in imgs.items()}
        check(maps['ours'] == maps['qemu'],
              'qemu-img map differs\n-- ours:\n%s-- qemu-io\'s:\n%s'
              % (maps['ours'][:3000], maps['qemu'][:3000]))
        res = run([t.qemu_img, 'compare', '-f', 'qcow2', '-F', 'qcow2',
                   imgs['ours'], imgs['qemu']], rc=None)
        check(res.rc == 0, 'content differs\n' + res.describe())
        common.qemu_check_clean(imgs['ours'])


# One write: the run lies past the table's coverage, the new block after
# it, the data moves into the freed old table and on past the area.
runner.add('one_write_16bit', grow_both,
           'cluster_size=512,refcount_bits=16', 16 << 20,
           ['write -P 0x5a 0 10M'])

# Many small writes, each its own request: the table grows between them.
runner.add('many_writes_16bit', grow_both,
           'cluster_size=512,refcount_bits=16', 16 << 20,
           ['write -P %d %dk 64k' % (i % 250 + 1, i * 64) for i in range(160)])

# 64-bit refcounts: 64 clusters per block, the table grows several times,
# and runs end on block boundaries (a block whose first free cluster lies
# in the next, missing block).
runner.add('several_growths_64bit', grow_both,
           'cluster_size=512,refcount_bits=64', 8 << 20,
           ['write -P 7 0 3M', 'write -P 8 4M 1M', 'write -P 9 3M 512k'])


def random_writes(seed):
    r = common.rng(seed)
    cmds = []
    for _ in range(150):
        off = r.randrange(0, (6 << 20) // 512) * 512 + r.choice((0, 0, 100))
        length = r.randrange(1, 100) * 512 - r.choice((0, 0, 7))
        cmds.append('write -P %d %d %d' % (r.randrange(1, 255), off, length))
    grow_both('cluster_size=512,refcount_bits=64', 8 << 20, cmds)


for _seed in range(3):
    runner.add('random_writes_64bit_%d' % _seed, random_writes, _seed)

# After a first growth (by QEMU) the table has room: new blocks are
# hooked into it without growing it again.
runner.add('after_growth_16bit', grow_both,
           'cluster_size=512,refcount_bits=16', 32 << 20,
           ['write -P 3 20M 2M', 'write -P 4 0 1M', 'write -P 5 30M 1M'],
           ['write -P 1 0 9M'], grows=False)

sys.exit(runner.main())
