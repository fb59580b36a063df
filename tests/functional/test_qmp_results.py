#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Command results side by side with qemu-storage-daemon.

strata's results are typed structs serialised by the code the schema
generates (scripts/qapi-gen.py); these scenarios check that what comes
out is QEMU 7.2's: query-version and the greeting, query-commands,
query-named-block-nodes (flat and nested, over backing chains, with
snapshots, compat 0.10 and raw nodes), query-block (empty in both daemons:
their nodes have no named device), the SnapshotInfo that
blockdev-snapshot-delete-internal-sync returns, and the return types in
query-qmp-schema, member for member, with the members strata does not
have named (DROPPED).

Beyond comparing the JSON values (as qmplib.Scenario does), every reply
is also compared in its text order: QEMU writes an object's members in
its hash table's order, and so does strata, so the replies are byte for
byte the same once the volatile values (dates, host sizes, generated
node names) are normalised.

Needs $STRATA_DAEMON, qemu-storage-daemon and qemu-img; skips (77)
without them.
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
from common import Skip, check  # noqa: E402

import qmplib  # noqa: E402
from qmplib import (  # noqa: E402
    QEMU_SYSTEM_ONLY,
    Scenario, cmd, daemon_paths, expect_error, with_id)

runner = common.Runner()

INT = 'blockdev-snapshot-internal-sync'
DEL = 'blockdev-snapshot-delete-internal-sync'
NODES = 'query-named-block-nodes'

# Members (and union branches, enum values) of QEMU 7.2's result types
# that strata's schema leaves out, because strata has no such feature:
DROPPED = {
    # ImageInfo: no format that reports compression
    'compressed',
    # ImageInfoSpecific / ImageInfoSpecificKind: no vmdk driver; rbd
    # nodes report no format-specific facts
    'case vmdk', 'case rbd', 'value vmdk', 'value rbd',
    # BlockDeviceInfo: no I/O throttling, no dirty bitmaps
    'bps_max', 'bps_rd_max', 'bps_wr_max', 'iops_max', 'iops_rd_max',
    'iops_wr_max', 'bps_max_length', 'bps_rd_max_length',
    'bps_wr_max_length', 'iops_max_length', 'iops_rd_max_length',
    'iops_wr_max_length', 'iops_size', 'group', 'dirty-bitmaps',
}


class OrderedScenario(Scenario):
    """A Scenario whose replies must also come in QEMU's member order."""

    def run_side(self, binary, d):
        greeting, replies = super().run_side(binary, d)
        self.sides.append((greeting, replies))
        return greeting, replies

    def run(self):
        self.sides = []
        super().run()
        (gq, rq), (gs, rs) = self.sides
        check(json.dumps(gq) == json.dumps(gs),
              'greeting order: qemu %s, strata %s' % (gq, gs))
        for i, (a, b) in enumerate(zip(rq, rs)):
            if i not in self.differences:
                check(json.dumps(a) == json.dumps(b),
                      'step %d member order:\n  qemu:   %s\n  strata: %s'
                      % (i, json.dumps(a), json.dumps(b)))
        print('  %d replies byte for byte as qemu-storage-daemon\'s'
              % (len(rq) - len(self.differences)))


class PreparedScenario(OrderedScenario):
    """An OrderedScenario whose images prepare(d) changes before the
    daemon starts (qemu-img made them)."""

    def __init__(self, *args, prepare=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.prepare = prepare

    def run_side(self, binary, d):
        images, self.images = self.images, ()
        try:
            qmplib.create_images(d, images)
            self.prepare(d)
            return super().run_side(binary, d)
        finally:
            self.images = images


def add(scenario):
    runner.add(scenario.name, scenario.run)


def chain_images():
    """base <- mid <- top, a compat 0.10 image and a raw one."""
    return (('base.qcow2', 'qcow2', ()),
            ('mid.qcow2', 'qcow2', ('-b', 'base.qcow2', '-F', 'qcow2')),
            ('top.qcow2', 'qcow2', ('-b', 'mid.qcow2', '-F', 'qcow2')),
            ('v2.qcow2', 'qcow2', ('-o', 'compat=0.10')),
            ('r.raw', 'raw', ()))


CHAIN_BLOCKDEVS = [
    'driver=qcow2,node-name=top,file.driver=file,'
    'file.filename={D}/top.qcow2',
    'driver=qcow2,node-name=v2,file.driver=file,file.filename={D}/v2.qcow2',
    'driver=raw,node-name=r,file.driver=file,file.filename={D}/r.raw',
]


# ---- query-version, the greeting ----

add(OrderedScenario('version_and_greeting', steps=[
    cmd('query-version'),
    with_id(cmd('query-version'), 'v1'),
    cmd('query-version', unexpected=1),
]))


# ---- query-commands and the schema's return types ----

def expand(schema, name, depth=0):
    """A type of a SchemaInfo list as a comparable structure (the numbers
    QEMU gives types differ between two schemas)."""
    if depth > 6:
        return '...'
    e = schema[name]
    mt = e['meta-type']
    if mt == 'builtin':
        return e['json-type']
    if mt == 'array':
        return [expand(schema, e['element-type'], depth + 1)]
    if mt == 'enum':
        return {'value ' + v: None for v in e['values']}
    if mt == 'alternate':
        return ('alternate', tuple(sorted(
            json.dumps(expand(schema, m['type'], depth + 1), sort_keys=True)
            for m in e['members'])))
    out = {m['name']: (expand(schema, m['type'], depth + 1),
                       'default' in m) for m in e['members']}
    for v in e.get('variants', []):
        out['case ' + v['case']] = expand(schema, v['type'], depth + 1)
    return out


def compare_types(q, s, path, missing):
    """strata's type s must be QEMU's q with members left out; the names
    left out are added to missing."""
    if isinstance(q, dict) and isinstance(s, dict):
        for k in s:
            check(k in q, '%s.%s is not QEMU\'s' % (path, k))
            compare_types(q[k], s[k], '%s.%s' % (path, k), missing)
        missing.update(k for k in q if k not in s)
        return
    if isinstance(q, (list, tuple)) and isinstance(s, (list, tuple)) and \
            len(q) == len(s) and not (q and q[0] == 'alternate'):
        for i, (a, b) in enumerate(zip(q, s)):
            compare_types(a, b, '%s[%d]' % (path, i), missing)
        return
    check(q == s, '%s: qemu %s, strata %s' % (path, q, s))



def check_results_schema(strata, qemu):
    """query-qmp-schema's difference: the types are numbered differently
    and QEMU has more commands; every return type of strata's commands is
    QEMU's with exactly the DROPPED members left out."""
    st = {e['name']: e for e in strata[0]['return']}
    q = {e['name']: e for e in qemu[0]['return']}
    missing = set()
    returning = 0
    for name, e in st.items():
        if e['meta-type'] != 'command' or name in QEMU_SYSTEM_ONLY:
            continue
        check(name in q, 'command %s is not QEMU\'s' % name)
        # the generated text is in QEMU's member order too (QEMU's
        # 'features' aside: strata's schema language has none)
        check(list(e) == [k for k in q[name] if k != 'features'],
              '%s: members in the order %s, qemu %s'
              % (name, list(e), list(q[name])))
        a = expand(q, q[name]['ret-type'])
        b = expand(st, e['ret-type'])
        if b == {}:
            check(a == {}, '%s returns nothing in strata' % name)
            continue
        returning += 1
        compare_types(a, b, name, missing)
    check(missing == DROPPED, 'members strata leaves out: %s, named: %s'
          % (sorted(missing), sorted(DROPPED)))
    check(returning >= 6, 'only %d commands return something' % returning)
    print('  %d return types as QEMU\'s, %d members named as left out'
          % (returning, len(missing)))


def check_command_subset(strata, qemu):
    ours = [c['name'] for c in strata[0]['return']]
    theirs = {c['name'] for c in qemu[0]['return']} | QEMU_SYSTEM_ONLY
    check(all(set(c) == {'name'} for c in strata[0]['return']),
          'CommandInfo has only name: %s' % strata)
    check(set(ours) <= theirs, 'not QEMU\'s: %s' % (set(ours) - theirs))
    check(len(ours) == len(set(ours)) and len(ours) >= 14,
          'commands: %s' % ours)


add(OrderedScenario('commands_and_return_types', steps=[
    cmd('query-commands'),
    cmd('query-qmp-schema'),
], differences={
    0: ('strata has a subset of qemu-storage-daemon\'s commands',
        check_command_subset),
    1: ('query-qmp-schema: QEMU numbers its many more types differently; '
        'return types compared member for member, DROPPED named',
        check_results_schema)}))


# ---- query-named-block-nodes, query-block ----

add(OrderedScenario('named_block_nodes_chain', images=chain_images(),
                    blockdevs=CHAIN_BLOCKDEVS, steps=[
    cmd(NODES),
    cmd(NODES, flat=True),
    cmd(NODES, flat=False),
    cmd(INT, device='top', name='s1'),
    cmd(INT, device='top', name='s2'),
    cmd(INT, device='v2', name='old'),
    cmd(NODES),
    cmd(NODES, flat=True),
    cmd('query-block'),
    cmd(NODES, flat='yes'),
]))

def same_but_json_filenames(strata, qemu):
    """QEMU names a node whose options override its image's (here:
    'backing' given to blockdev-add) by a json: filename; strata has no
    json: filenames and shows the file's name.  Everything else equal."""
    found = []

    def walk(s, q, path):
        if isinstance(q, str) and q.startswith('json:{'):
            inner = json.loads(q[5:])
            check(s == inner['file']['filename'],
                  '%s: strata %s for qemu\'s %s' % (path, s, q))
            found.append(path)
        elif isinstance(q, dict):
            check(isinstance(s, dict) and list(s) == list(q),
                  '%s: members %s, qemu %s' % (path, s, q))
            for k in q:
                walk(s[k], q[k], path + '.' + k)
        elif isinstance(q, list):
            check(isinstance(s, list) and len(s) == len(q),
                  '%s: %s, qemu %s' % (path, s, q))
            for i, (a, b) in enumerate(zip(s, q)):
                walk(a, b, '%s[%d]' % (path, i))
        else:
            check(s == q, '%s: strata %s, qemu %s' % (path, s, q))

    walk(strata, qemu, '')
    check(found, 'no json: filename in qemu\'s reply: %s' % qemu)


JSON_NAME = ('no json: filenames in strata: a node opened with a backing '
             'that overrides its image\'s shows its file name',
             same_but_json_filenames)

add(OrderedScenario('named_block_nodes_added', images=chain_images(),
                    blockdevs=[], steps=[
    cmd(NODES),
    cmd('query-block'),
    cmd('blockdev-add', driver='qcow2', **{
        'node-name': 'mid', 'read-only': True,
        'file': {'driver': 'file', 'filename': '{D}/mid.qcow2'}}),
    cmd('blockdev-add', driver='qcow2', **{
        'node-name': 'top', 'backing': 'mid',
        'file': {'driver': 'file', 'filename': '{D}/top.qcow2'}}),
    cmd('blockdev-add', driver='qcow2', **{
        'node-name': 'alone', 'backing': None,
        'file': {'driver': 'file', 'filename': '{D}/v2.qcow2'}}),
    cmd(NODES),
    cmd(NODES, flat=True),
    cmd('query-block'),
    cmd('blockdev-del', **{'node-name': 'alone'}),
    cmd(NODES, flat=True),
], differences={5: JSON_NAME, 6: JSON_NAME, 9: JSON_NAME}))

def add_bitmaps(d):
    for args in (['--add', '-g', '128k', 'b0'], ['--add', '--disable', 'b1']):
        common.run(['qemu-img', 'bitmap'] + args[:-1] +
                   [os.path.join(d, 'd0.qcow2'), args[-1]])


def same_format_specific(strata, qemu):
    """Node d0's format-specific facts are QEMU's, member order too."""
    def facts(reply):
        nodes = [n for n in reply[0]['return'] if n['node-name'] == 'd0']
        check(len(nodes) == 1, 'no node d0: %s' % reply)
        return json.dumps(nodes[0]['image']['format-specific'])
    check(facts(strata) == facts(qemu) and '"bitmaps"' in facts(qemu),
          'format-specific:\n  qemu:   %s\n  strata: %s'
          % (facts(qemu), facts(strata)))


BITMAP_FACTS = ('QEMU lists its dirty-bitmaps member (strata leaves it out, '
                'see DROPPED) and puts the format node before its file node '
                'here; the format-specific facts compared byte for byte',
                same_format_specific)

# persistent bitmaps in qcow2's format-specific facts (one enabled: "auto"
# and, while a writer has the image open, "in-use"; one disabled)
add(PreparedScenario('named_block_nodes_bitmaps', prepare=add_bitmaps,
                     steps=[cmd(NODES, flat=True), cmd(NODES)],
                     differences={0: BITMAP_FACTS, 1: BITMAP_FACTS}))

add(OrderedScenario('query_block_after_snapshots', images=(
    ('d0.qcow2', 'qcow2', ()), ('d1.qcow2', 'qcow2', ())), blockdevs=[
    'driver=qcow2,node-name=d0,file.driver=file,file.filename={D}/d0.qcow2',
    'driver=qcow2,node-name=d1,file.driver=file,file.filename={D}/d1.qcow2'],
    steps=[
    cmd('query-block'),
    cmd('transaction', actions=[
        {'type': INT, 'data': {'device': 'd0', 'name': 'a'}},
        {'type': INT, 'data': {'device': 'd1', 'name': 'a'}}]),
    cmd('query-block'),
    cmd('query-block', flat=True),
]))


def tmp_accepts_o_direct():
    with common.TempDir('strata-odirect-') as d:
        try:
            fd = os.open(os.path.join(d, 'probe'),
                         os.O_CREAT | os.O_RDWR | os.O_DIRECT, 0o600)
        except OSError:
            return False
        os.close(fd)
        return True


def cache_scenario():
    """BlockdevCacheInfo: the node's own cache options (and its file
    child's, which inherits them), as QEMU reports them."""
    direct = tmp_accepts_o_direct()
    if not direct:
        print('  (the temporary directory refuses O_DIRECT: cache.direct '
              'is not exercised)')
    cache = {'no-flush': True}
    if direct:
        cache['direct'] = True
    OrderedScenario('cache_info', blockdevs=[], steps=[
        cmd('blockdev-add', driver='qcow2', cache=cache, **{
            'node-name': 'c0',
            'file': {'driver': 'file', 'filename': '{D}/d0.qcow2'}}),
        cmd(NODES, flat=True),
        cmd(NODES),
    ]).run()


runner.add('cache_info', cache_scenario)


# ---- blockdev-snapshot-delete-internal-sync's SnapshotInfo ----

add(OrderedScenario('snapshot_delete_results', images=chain_images(),
                    blockdevs=CHAIN_BLOCKDEVS, steps=[
    cmd(INT, device='top', name='a'),
    cmd(INT, device='top', name='b'),
    cmd(INT, device='top', name='c'),
    cmd(INT, device='v2', name='v'),
    cmd(DEL, device='top', name='a'),
    cmd(DEL, device='top', id='2'),
    cmd(DEL, device='top', id='3', name='c'),
    cmd(DEL, device='top', id='3', name='c'),
    cmd(DEL, device='v2', name='v'),
    cmd(DEL, device='top', name='a'),
    cmd(NODES, flat=True),
]))


def main():
    try:
        daemon_paths()
    except Skip as e:
        print('SKIP (whole script): %s' % e)
        return common.SKIP
    return runner.main()


if __name__ == '__main__':
    sys.exit(main())
