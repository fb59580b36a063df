#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""strata-daemon side by side with qemu-storage-daemon.

Each scenario starts qemu-storage-daemon and strata-daemon with the same
command line on copies of the same images (each in its own directory),
sends both the same QMP input, and compares every reply after
normalising what legitimately differs between two runs (dates, sizes on
the host, generated node names, the directory, QEMU's micro version and
package string).  Then both daemons quit and the images left behind are
compared with qemu-img: the same files, the same `info --backing-chain`
(snapshot lists, chains, formats), clean `check`, identical content.

Where strata deliberately differs (../shared/reference/README.md, or a
limit of this first version), the scenario names the difference and the
step it applies to; those steps are checked against strata's own
expectation instead.

Needs $STRATA_DAEMON (the strata-daemon under test), qemu-storage-daemon
and qemu-img; skips (77) without them.
"""

import json
import os
import re
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
from common import Skip, check  # noqa: E402

from qmplib import (  # noqa: E402
    QEMU_SYSTEM_ONLY,
    Daemon, Scenario, cmd, create_images, daemon_paths, expect_error,
    with_id)

runner = common.Runner()


def add(scenario):
    runner.add(scenario.name, scenario.run)



def expect_same_error_class(strata, qemu):
    check(len(strata) == 1 and 'error' in strata[0] and
          strata[0]['error']['class'] == qemu[0]['error']['class'],
          'expected an error of class %s, got %s' % (qemu, strata))


NODE = 'd0'
INT = 'blockdev-snapshot-internal-sync'
DEL = 'blockdev-snapshot-delete-internal-sync'


def internal(dev, name):
    return {'type': INT, 'data': {'device': dev, 'name': name}}


def external(node, f, new):
    return {'type': 'blockdev-snapshot-sync',
            'data': {'node-name': node, 'snapshot-file': '{D}/' + f,
                     'snapshot-node-name': new, 'format': 'qcow2'}}


def two_disks():
    return dict(images=(('d0.qcow2', 'qcow2', ()), ('d1.qcow2', 'qcow2', ()),
                        ('r0.raw', 'raw', ())),
                blockdevs=['driver=qcow2,node-name=d0,file.driver=file,'
                           'file.filename={D}/d0.qcow2',
                           '{"driver": "qcow2", "node-name": "d1", "file": '
                           '{"driver": "file", "filename": "{D}/d1.qcow2"}}',
                           'driver=raw,node-name=r0,file.driver=file,'
                           'file.filename={D}/r0.raw'])


# ---- the wire protocol ----

add(Scenario('negotiation', negotiate=False, steps=[
    cmd('query-version'),
    with_id(cmd('query-version'), 'x1'),
    cmd('qmp_capabilities', enable=['bogus']),
    cmd('qmp_capabilities', enable='oob'),
    cmd('no-such-command'),
    cmd('qmp_capabilities'),
    cmd('qmp_capabilities'),
    cmd('query-version'),
]))

add(Scenario('request_shape', steps=[
    b'[]', b'42', b'"str"', b'{"id": 5}', b'{"execute": 42}',
    b'{"execute": "query-version", "arguments": []}',
    b'{"execute": "query-version", "foo": 1}',
    b'{"execute": "query-version", "exec-oob": "query-version"}',
    b'{"exec-oob": "query-version"}',
    with_id(cmd('no-such-command'), 7),
    with_id(cmd('query-version'), None),
    with_id(cmd('query-version'), {'a': [1, 2, {'b': None}]}),
    with_id(cmd('query-version'), 3.6),
    with_id(cmd('query-version'), 'text'),
    with_id(cmd('query-version'), -12),
    with_id(cmd('quit', bogus=1), 9),
]))

add(Scenario('oob_enabled', negotiate=False, steps=[
    cmd('qmp_capabilities', enable=['oob']),
    b'{"exec-oob": "query-version", "id": 1}',
    b'{"exec-oob": "no-such-command"}',
    b'{"exec-oob": 5}',
]))

add(Scenario('malformed_json', steps=[
    b'{"execute": }',
    b'this is not json',
    b'{"execute" "query-version"}',
    b'{1: 2}',
    b'[1 2]',
    b'{"a": 1,}',
    b'{"execute": "query-version", "execute": "quit"}',
    b'}',
    b']',
    b'{"execute": "query-version"} {"execute": "query-version", "id": 2}',
    b"{'execute': 'query-version', 'id': 'single'}",
    b'{\n  "execute":\n    "query-version",\n  "id": "pretty"\n}',
    b'{"execute": "q\\uery-version"}',
    b'{"execute": "query-\\u00e9", "id": "\\u00e9\\ud83d\\ude00"}',
    b'{"execute": "query-version", "id": "\\q"}',
    b'nul',
    b'[[[[[[[[[[]]]]]]]]]]',
    b'{"execute": "query-version", "id": 12345678901234567890}',
    b'{"execute": "query-version", "id": [true, false, null, 1e3, -0.5]}',
], differences={
    17: ('an id beyond int64 comes back as a double (json-glib has no '
         'uint64); QEMU echoes it exactly',
         lambda s, q: check(s == [{'return': q[0]['return'],
                                   'id': 1.2345678901234567e+19}], str(s))),
}))

add(Scenario('query_commands_and_version', steps=[
    cmd('query-version'),
    cmd('query-version', x=1),
    cmd('query-commands'),
], differences={
    2: ('strata lists only the commands it implements; every one of '
        'them is also in qemu-storage-daemon\'s list',
        lambda s, q: check(
            {c['name'] for c in s[0]['return']} <=
            {c['name'] for c in q[0]['return']} | QEMU_SYSTEM_ONLY,
            'a strata command qemu lacks: %s' % (
                {c['name'] for c in s[0]['return']} -
                {c['name'] for c in q[0]['return']}))),
}))

# ---- arguments against the schema ----

add(Scenario('argument_errors', steps=[
    cmd(INT),
    cmd(INT, device='d0'),
    cmd(INT, device=1, name='x'),
    cmd(INT, device='d0', name=['x']),
    cmd(INT, device='d0', name='x', bogus=True),
    cmd('blockdev-snapshot-sync', **{'node-name': 'd0'}),
    cmd('blockdev-snapshot-sync', **{'node-name': 'd0', 'snapshot-file': 1}),
    cmd('blockdev-snapshot-sync', **{'node-name': 'd0', 'snapshot-file': 'x',
                                     'mode': 'bogus'}),
    cmd('blockdev-snapshot', node='d0'),
    cmd(DEL),
    cmd(DEL, device='d0', id=5),
    cmd('blockdev-del'),
    cmd('blockdev-del', **{'node-name': False}),
    cmd('query-named-block-nodes', flat=1),
    cmd('query-named-block-nodes', flat='yes'),
    cmd('transaction'),
    cmd('transaction', actions={}),
    cmd('transaction', actions=[1]),
    cmd('transaction', actions=[{'data': {}}]),
    cmd('transaction', actions=[{'type': 'abort'}]),
    cmd('transaction', actions=[{'type': 'bogus', 'data': {}}]),
    cmd('transaction', actions=[{'type': INT, 'data': {'device': 'd0'}}]),
    cmd('transaction', actions=[{'type': INT, 'data': {
        'device': 'd0', 'name': 'a', 'zz': 1}}]),
    cmd('transaction', actions=[{'type': INT, 'data': {
        'device': 'd0', 'name': 'a'}, 'extra': 1}]),
    cmd('transaction', actions=[], properties={'completion-mode': 'bogus'}),
    cmd('transaction', actions=[], properties={'bogus': 1}),
    cmd('transaction', actions=[], properties=[]),
]))

# ---- blockdev-add / blockdev-del ----

add(Scenario('blockdev_add', images=(
    ('d0.qcow2', 'qcow2', ()), ('a.qcow2', 'qcow2', ()),
    ('b.raw', 'raw', ())), steps=[
    cmd('blockdev-add', driver='qcow2', file={'driver': 'file',
                                             'filename': '{D}/a.qcow2'}),
    cmd('blockdev-add', driver='qcow2', **{'node-name': 'a', 'file': 3}),
    cmd('blockdev-add', driver='qcow2', **{'node-name': 'a',
                                           'file': {'driver': 'file'}}),
    cmd('blockdev-add', driver='bogus', **{'node-name': 'a'}),
    cmd('blockdev-add', driver='qcow2', **{
        'node-name': 'a', 'file': {'driver': 'file',
                                   'filename': '{D}/nonexist.qcow2'}}),
    cmd('blockdev-add', driver='qcow2', **{
        'node-name': 'a', 'file': 'nonode'}),
    cmd('blockdev-add', driver='qcow2', **{
        'node-name': 'a', 'read-only': 'on',
        'file': {'driver': 'file', 'filename': '{D}/a.qcow2'}}),
    cmd('blockdev-add', driver='qcow2', **{
        'node-name': '1a', 'file': {'driver': 'file',
                                    'filename': '{D}/a.qcow2'}}),
    cmd('blockdev-add', driver='qcow2', **{
        'node-name': 'd0', 'file': {'driver': 'file',
                                    'filename': '{D}/a.qcow2'}}),
    cmd('blockdev-add', driver='qcow2', **{
        'node-name': 'a', 'file': {'driver': 'file',
                                   'filename': '{D}/d0.qcow2'}}),
    cmd('blockdev-add', driver='qcow2', **{
        'node-name': 'a', 'backing': None,
        'file': {'driver': 'file', 'filename': '{D}/a.qcow2'}}),
    cmd('blockdev-add', driver='raw', **{
        'node-name': 'b', 'read-only': True,
        'file': {'driver': 'file', 'filename': '{D}/b.raw'}}),
    cmd('query-named-block-nodes'),
    cmd('query-named-block-nodes', flat=True),
    cmd('blockdev-del', **{'node-name': 'nonode'}),
    cmd('blockdev-del', **{'node-name': 'a'}),
    cmd('blockdev-del', **{'node-name': 'a'}),
    cmd('blockdev-add', driver='qcow2', **{
        'node-name': 'a', 'file': {'driver': 'file', 'node-name': 'fa',
                                   'filename': '{D}/a.qcow2'}}),
    cmd('blockdev-del', **{'node-name': 'fa'}),
    cmd('query-named-block-nodes', flat=True),
], differences={
    9: ('strata refuses an image open elsewhere in the daemon with its '
        'lock error as QEMU does', expect_same_error_class),
}))


def add_a(**opts):
    """blockdev-add of node a over {D}/a.qcow2 with qcow2 options."""
    return cmd('blockdev-add', driver='qcow2', **dict(
        {'node-name': 'a', 'file': {'driver': 'file',
                                    'filename': '{D}/a.qcow2'}}, **opts))


DEL_A = cmd('blockdev-del', **{'node-name': 'a'})

# The qcow2 runtime options, QEMU's checks and texts.
add(Scenario('blockdev_add_qcow2_options', images=(
    ('d0.qcow2', 'qcow2', ()), ('a.qcow2', 'qcow2', ())), steps=[
    add_a(**{'lazy-refcounts': True, 'pass-discard-request': False,
             'pass-discard-snapshot': False, 'pass-discard-other': True,
             'cache-size': 1048576, 'l2-cache-size': 524288,
             'cache-clean-interval': 10, 'overlap-check': 'all',
             'discard': 'unmap', 'detect-zeroes': 'unmap'}),
    cmd('query-named-block-nodes'),
    DEL_A,
    add_a(**{'overlap-check': {'template': 'none', 'main-header': True,
                               'inactive-l2': False}}),
    DEL_A,
    add_a(**{'overlap-check': 'bogus'}),
    add_a(**{'overlap-check': {'template': 'cached', 'active-l1': 'x'}}),
    add_a(**{'overlap-check': 3}),
    add_a(**{'l2-cache-entry-size': 100}),
    add_a(**{'l2-cache-entry-size': 4096}),
    DEL_A,
    add_a(**{'cache-size': 1048576, 'l2-cache-size': 524288,
             'refcount-cache-size': 65536}),
    add_a(**{'l2-cache-size': 1048576, 'cache-size': 524288}),
    add_a(**{'cache-clean-interval': -1}),
    add_a(**{'lazy-refcounts': 'yes'}),
    add_a(**{'detect-zeroes': 'unmap'}),
    add_a(**{'detect-zeroes': 'bogus'}),
]))

# libvirt's layout: the file node first, the format node naming it.
FA = {'driver': 'file', 'node-name': 'fa', 'filename': '{D}/a.qcow2',
      'auto-read-only': True, 'discard': 'unmap'}
add(Scenario('blockdev_add_file_reference', images=(
    ('d0.qcow2', 'qcow2', ()), ('a.qcow2', 'qcow2', ())), steps=[
    cmd('blockdev-add', **FA),
    cmd('blockdev-add', driver='qcow2', file='fa', discard='unmap',
        **{'node-name': 'qa', 'read-only': False}),
    cmd('blockdev-add', driver='qcow2', file='fa', **{'node-name': 'qb'}),
    cmd('blockdev-add', driver='qcow2', file='nope', **{'node-name': 'qb'}),
    cmd('blockdev-del', **{'node-name': 'fa'}),
    cmd('blockdev-snapshot-internal-sync', device='qa', name='s1'),
    cmd('query-named-block-nodes'),
    cmd('blockdev-snapshot-delete-internal-sync', device='qa', name='s1'),
    cmd('blockdev-del', **{'node-name': 'qa'}),
    cmd('blockdev-add', driver='qcow2', file='fa', **{'node-name': 'qa'}),
    cmd('blockdev-del', **{'node-name': 'qa'}),
    cmd('blockdev-del', **{'node-name': 'fa'}),
    cmd('blockdev-add', driver='file', filename='{D}/a.qcow2',
        **{'node-name': 'fr', 'read-only': True}),
    cmd('blockdev-add', driver='qcow2', file='fr', **{'node-name': 'qr'}),
    cmd('blockdev-add', driver='qcow2', file='fr',
        **{'node-name': 'qr', 'read-only': True}),
    cmd('query-named-block-nodes', flat=True),
]))

# ---- internal snapshots ----

add(Scenario('internal_snapshots', **two_disks(), steps=[
    cmd(INT, device='d0', name='s1'),
    cmd(INT, device='d0', name='s1'),
    cmd(INT, device='d1', name='s1'),
    cmd(INT, device='d0', name=''),
    cmd(INT, device='nodev', name='x'),
    cmd(INT, device='r0', name='x'),
    cmd(INT, device='d0', name='s2'),
    cmd('query-named-block-nodes', flat=True),
    cmd(DEL, device='d0', name='s1'),
    cmd(DEL, device='d0', name='s1'),
    cmd(DEL, device='d0', id='2'),
    cmd(DEL, device='d0'),
    cmd(DEL, device='d0', id='9', name='s9'),
    cmd(DEL, device='nodev', name='x'),
    cmd(DEL, device='r0', name='x'),
    cmd(INT, device='d0', name='s3'),
    cmd(DEL, device='d1', id='1', name='s1'),
]))

add(Scenario('internal_snapshot_file_child', images=(
    ('d0.qcow2', 'qcow2', ()),), blockdevs=[
    'driver=qcow2,node-name=d0,file.driver=file,file.node-name=f0,'
    'file.filename={D}/d0.qcow2'], steps=[
    cmd(INT, device='f0', name='x'),
    cmd(DEL, device='f0', name='x'),
    cmd('blockdev-del', **{'node-name': 'f0'}),
    cmd('blockdev-del', **{'node-name': 'd0'}),
    cmd(INT, device='d0', name='x'),
]))

add(Scenario('read_only_node', images=(('d0.qcow2', 'qcow2', ()),),
             blockdevs=['driver=qcow2,node-name=d0,read-only=on,'
                        'file.driver=file,file.filename={D}/d0.qcow2'],
             steps=[
    cmd(INT, device='d0', name='x'),
    cmd('query-named-block-nodes', flat=True),
]))

# ---- external snapshots ----

def overlay_kept(node, backing):
    """strata's answer where qemu-storage-daemon dropped the overlay."""
    def check_it(strata, qemu):
        nodes = {n['node-name']: n for n in strata[0]['return']}
        # flat: QEMU counts no depth (0); the backing node is named
        check(node in nodes and nodes[node]['backing_file_depth'] == 0 and
              nodes[node]['backing_file'].endswith(backing) and
              nodes[node]['image']['backing-filename'].endswith(backing)
              and nodes[node.replace('o', 'd')]['ro'] is True,
              'overlay %s over %s not shown: %s' % (node, backing, strata))
        names = {n['node-name'] for n in qemu[0]['return']}
        check(node not in names, 'qemu kept %s: %s' % (node, names))
    return check_it


OVERLAY_DROPPED = (
    'an external snapshot of a node no export uses: qemu-storage-daemon '
    'creates the overlay file, makes the old node read-only and then '
    'drops the overlay (it has no parent to take it); strata-daemon keeps '
    'it as the node\'s new top (the node\'s anonymous device moves to it)')

add(Scenario('snapshot_sync_errors', **two_disks(), steps=[
    cmd('blockdev-snapshot-sync', device='d0', **{
        'snapshot-file': '{D}/o.qcow2'}),
    cmd('blockdev-snapshot-sync', **{'node-name': 'd0',
                                     'snapshot-file': '{D}/o.qcow2'}),
    cmd('blockdev-snapshot-sync', **{'snapshot-file': '{D}/o.qcow2'}),
    cmd('blockdev-snapshot-sync', **{'node-name': 'd0',
                                     'snapshot-file': '{D}/o.qcow2',
                                     'snapshot-node-name': 'd1'}),
    cmd('blockdev-snapshot-sync', **{'node-name': 'd0', 'mode': 'existing',
                                     'snapshot-file': '{D}/none.qcow2',
                                     'snapshot-node-name': 'o0'}),
    cmd('blockdev-snapshot-sync', **{'node-name': 'r0',
                                     'snapshot-file': '{D}/o.raw',
                                     'snapshot-node-name': 'o0',
                                     'format': 'raw'}),
    cmd('blockdev-snapshot-sync', **{'node-name': 'nonode',
                                     'snapshot-file': '{D}/o.qcow2',
                                     'snapshot-node-name': 'o0'}),
    cmd('query-named-block-nodes', flat=True),
]))

add(Scenario('snapshot_sync', **two_disks(), steps=[
    cmd('blockdev-snapshot-sync', **{'node-name': 'd0',
                                     'snapshot-file': '{D}/o0.qcow2',
                                     'snapshot-node-name': 'o0',
                                     'format': 'qcow2'}),
    cmd('query-named-block-nodes', flat=True),
    cmd(INT, device='d1', name='other'),
], differences={1: (OVERLAY_DROPPED, overlay_kept('o0', 'd0.qcow2'))}))

add(Scenario('blockdev_snapshot', images=(
    ('d0.qcow2', 'qcow2', ()), ('ov.qcow2', 'qcow2', ()),
    ('ovb.qcow2', 'qcow2', ('-b', 'd0.qcow2', '-F', 'qcow2')),
    ('r.raw', 'raw', ())), steps=[
    cmd('blockdev-add', driver='qcow2', **{
        'node-name': 'ov', 'backing': None,
        'file': {'driver': 'file', 'filename': '{D}/ov.qcow2'}}),
    cmd('blockdev-add', driver='raw', **{
        'node-name': 'rr', 'file': {'driver': 'file',
                                    'filename': '{D}/r.raw'}}),
    cmd('blockdev-snapshot', node='d0', overlay='rr'),
    cmd('blockdev-snapshot', node='d0', overlay='nonode'),
    cmd('blockdev-snapshot', node='nonode', overlay='ov'),
    cmd('blockdev-snapshot', node='d0', overlay='d0'),
    cmd('blockdev-snapshot', node='d0', overlay='ov'),
    cmd('query-named-block-nodes', flat=True),
    cmd(INT, device='ov', name='top'),
    cmd('blockdev-del', **{'node-name': 'd0'}),
    cmd('blockdev-del', **{'node-name': 'ov'}),
    cmd('query-named-block-nodes', flat=True),
    cmd(INT, device='d0', name='after-del'),
], differences={7: (
    'blockdev-snapshot: strata records the backing link in the overlay\'s '
    'header (the chain on disk survives a restart); QEMU leaves the header '
    'without one and names the node by a json: filename',
    lambda s, q: check(
        [n['image']['backing-filename'].endswith('d0.qcow2')
         for n in s[0]['return'] if n['node-name'] == 'ov'] == [True],
        str(s)))},
    image_differences={'ov.qcow2': (
        'the backing link strata wrote (see step 7)',
        lambda s, q: check(s[0].get('full-backing-filename', '')
                           .endswith('d0.qcow2') and len(s) == 2 and
                           'backing-filename' not in q[0], str((s, q))))}))

# ---- transactions ----

add(Scenario('transaction_ok', **two_disks(), steps=[
    cmd('transaction', actions=[]),
    cmd('transaction', actions=[internal('d0', 't1'), internal('d1', 't1')]),
    cmd('transaction', actions=[
        internal('d0', 't2'), internal('d1', 't3'),
        external('d0', 'o0.qcow2', 'o0'), external('d1', 'o1.qcow2', 'o1')]),
    cmd('query-named-block-nodes', flat=True),
], differences={3: (OVERLAY_DROPPED, overlay_kept('o0', 'd0.qcow2'))}))

add(Scenario('transaction_same_name_twice', **two_disks(), steps=[
    cmd('transaction', actions=[internal('d0', 't6'), internal('d0', 't6')]),
    cmd('transaction', actions=[internal('d0', 't7'), internal('d1', 't7'),
                                internal('d1', 't7')]),
    cmd('query-named-block-nodes', flat=True),
]))

def backing_recorded(strata, qemu):
    check(strata[0].get('backing-filename') == 'after.qcow2' or
          strata[0].get('full-backing-filename', '').endswith('d0.qcow2'),
          'no backing recorded: %s' % strata)


add(Scenario('transaction_internal_after_external', **two_disks(), steps=[
    cmd('transaction', actions=[external('d0', 'o0.qcow2', 'o0'),
                                internal('d0', 'after')]),
], differences={0: (
    'QEMU resolves a later action\'s node name after the earlier '
    'action\'s prepare changed the graph, so the old node is no longer a '
    'root ("Need a root block node"); strata\'s engine applies the '
    'actions on one device in list order and takes the snapshot in the '
    'new overlay', lambda s, q: check(
        s == [{'return': {}}] and
        q[0]['error']['desc'] == 'Need a root block node', str((s, q))))},
    image_differences={'o0.qcow2': (
        'the transaction succeeded in strata: the overlay holds the '
        'snapshot', lambda s, q: check(
            [sn['name'] for sn in s[0].get('snapshots', [])] == ['after'],
            str(s)))}))


def failing_at(pos, n=3):
    """n internal/external actions over d0/d1 with abort at pos."""
    actions = [internal('d0', 'a%d' % i) if i % 2 == 0 else
               external('d1', 'f%d.qcow2' % i, 'n%d' % i) for i in range(n)]
    actions[pos] = {'type': 'abort', 'data': {}}
    return actions


for _pos in range(4):
    _acts = failing_at(_pos, 4)
    _left = {a['data']['snapshot-file'][4:]: 'a failed transaction leaves '
             'no file it created (README difference 1)'
             for a in _acts[:_pos] if a['type'] == 'blockdev-snapshot-sync'}
    add(Scenario('transaction_abort_at_%d' % _pos, **two_disks(), steps=[
        cmd('transaction', actions=_acts),
        cmd('query-named-block-nodes', flat=True),
    ], leftovers=_left))

add(Scenario('transaction_check_errors', **two_disks(), steps=[
    cmd('transaction', actions=[internal('d0', 'x'), internal('r0', 'x')]),
    cmd('transaction', actions=[internal('d0', 'x'), internal('nodev', 'x')]),
    cmd('transaction', actions=[internal('d0', 'x'), internal('d1', '')]),
    cmd('transaction', actions=[internal('d0', 'y'),
                                external('nodev', 'q.qcow2', 'q')]),
    cmd('transaction', actions=[internal('d0', 'x')],
        properties={'completion-mode': 'grouped'}),
    cmd('transaction', actions=[{'type': 'abort', 'data': {}}],
        properties={'completion-mode': 'grouped'}),
    cmd('transaction', actions=[internal('d0', 'x')],
        properties={'completion-mode': 'individual'}),
    cmd('query-named-block-nodes', flat=True),
]))


for _pos in range(3):
    _acts = [internal('d0', 'p0'), external('d1', 'e1.qcow2', 'e1'),
             internal('d0', 'p2')]
    # a real failure (the name exists already) at position _pos
    _acts[_pos] = internal('d0', 'dup')
    _left = {a['data']['snapshot-file'][4:]: 'a failed transaction leaves '
             'no file it created (README difference 1)'
             for a in _acts[:_pos] if a['type'] == 'blockdev-snapshot-sync'}
    add(Scenario('transaction_fail_at_%d' % _pos, **two_disks(), steps=[
        cmd(INT, device='d0', name='dup'),
        cmd('transaction', actions=_acts),
        cmd('query-named-block-nodes', flat=True),
    ], leftovers=_left))


def strata_extension(reason, check_reply):
    def check_it(strata, qemu):
        check(qemu[0]['error']['desc'].startswith(
            "Parameter 'type' does not accept value"), str(qemu))
        check_reply(strata)
    return (reason, check_it)


add(Scenario('transaction_strata_actions', **two_disks(), steps=[
    cmd(INT, device='d0', name='s1'),
    cmd('transaction', actions=[
        {'type': DEL, 'data': {'device': 'd0', 'name': 's1'}},
        internal('d1', 'k1')]),
    cmd(INT, device='d0', name='s2'),
    cmd('transaction', actions=[
        {'type': '__org.strata_blockdev-snapshot-apply-internal',
         'data': {'device': 'd0', 'name': 's2'}},
        internal('d1', 'k2')]),
    cmd('transaction', actions=[
        {'type': DEL, 'data': {'device': 'd0', 'name': 'nosuch'}},
        internal('d1', 'k3')]),
], differences={
    1: strata_extension('a snapshot delete is a transaction action in '
                        'strata (README difference 7)',
                        lambda s: check(s == [{'return': {}}], str(s))),
    3: strata_extension('an internal apply is a transaction action in '
                        'strata (__org.strata_, README difference 9)',
                        lambda s: check(s == [{'return': {}}], str(s))),
    4: strata_extension('the delete action refuses a missing snapshot and '
                        'nothing else in the list happens',
                        lambda s: check('error' in s[0], str(s))),
}, image_differences={
    'd0.qcow2': ('s1 deleted by the transaction', lambda s, q: check(
        [x['name'] for x in s[0]['snapshots']] == ['s2'] and
        [x['name'] for x in q[0]['snapshots']] == ['s1', 's2'], str(s))),
    'd1.qcow2': ('k1, k2 taken with the strata actions', lambda s, q: check(
        [x['name'] for x in s[0]['snapshots']] == ['k1', 'k2'] and
        'snapshots' not in q[0], str(s))),
}))


# ---- the command line ----

def run_cli(binary, args, cwd):
    res = subprocess.run([binary] + args, cwd=cwd, capture_output=True,
                         timeout=60, preexec_fn=common.limit_resources)
    err = res.stderr.decode(errors='replace')
    report = common.sanitizer_report(err)
    check(not report, 'sanitizer report:\n%s' % report)
    err = err.replace(binary, 'PROG').replace(cwd, '$DIR')
    err = re.sub(r'^(qemu-storage-daemon|strata-daemon):', 'PROG:', err,
                 flags=re.M)
    return res.returncode, err


def cli_case(args, differences=None):
    """Both daemons refuse the same bad command line with the same text,
    exit 1, and leave nothing behind (no socket, no pidfile, images
    unchanged)."""
    def run():
        strata, qsd = daemon_paths()
        tmp = common.TempDir('strata-qmp-cli-')
        with tmp:
            out = {}
            for side, binary in (('qemu', qsd), ('strata', strata)):
                d = tmp.join(side)
                os.mkdir(d)
                create_images(d, (('d0.qcow2', 'qcow2', ()),))
                before = common.sha256(os.path.join(d, 'd0.qcow2'))
                argv = [a.replace('{D}', d) for a in args]
                out[side] = run_cli(binary, argv, d)
                left = sorted(os.listdir(d))
                if side == 'qemu' and 's.sock' in left:
                    # qemu-storage-daemon opens each option as it reads
                    # it: a later error leaves the socket of an earlier
                    # --chardev behind.  strata checks the whole command
                    # line before it creates anything.
                    print('  difference: qemu left its socket behind')
                    left.remove('s.sock')
                check(left == ['d0.qcow2'],
                      '%s left files: %s' % (side, os.listdir(d)))
                check(common.sha256(os.path.join(d, 'd0.qcow2')) == before,
                      '%s changed the image' % side)
            check(out['qemu'][0] == 1 and out['strata'][0] == 1,
                  'exit status: %s' % out)
            if differences:
                reason, want = differences
                check(out['strata'][1] == want, 'strata said %r, want %r'
                      % (out['strata'][1], want))
                print('  difference (%s): qemu said %r' % (
                    reason, out['qemu'][1]))
            else:
                check(out['qemu'][1] == out['strata'][1],
                      'stderr:\n  qemu:   %r\n  strata: %r' % (
                          out['qemu'][1], out['strata'][1]))
    return run


GOOD_BD = ('driver=qcow2,node-name=d0,file.driver=file,'
           'file.filename={D}/d0.qcow2')
SOCK = 'socket,id=c0,path={D}/s.sock,server=on,wait=off'
CLI_CASES = {
    'unknown_option': ['--bogus'],
    'missing_argument': ['--blockdev'],
    'unexpected_argument': ['foo'],
    'blockdev_no_file': ['--blockdev', 'driver=qcow2'],
    'blockdev_no_node_name': ['--blockdev', 'driver=qcow2,file.driver=file,'
                              'file.filename={D}/d0.qcow2'],
    'blockdev_unknown_key': ['--blockdev', GOOD_BD + ',bogus=1'],
    'blockdev_bad_driver': ['--blockdev', 'driver=bogus,node-name=x'],
    'blockdev_bad_bool': ['--blockdev', GOOD_BD + ',read-only=maybe'],
    'blockdev_bad_cache': ['--blockdev', GOOD_BD + ',cache.direct=x'],
    'blockdev_bad_enum': ['--blockdev', GOOD_BD + ',discard=bogus'],
    # the options parsed, then the last one refused
    'blockdev_qcow2_options': ['--blockdev', GOOD_BD + ',lazy-refcounts=on,'
                               'overlap-check.template=none,overlap-check.'
                               'main-header=on,l2-cache-size=1048576,'
                               'detect-zeroes=unmap'],
    'blockdev_qcow2_bad_overlap': ['--blockdev', GOOD_BD +
                                   ',overlap-check=bogus'],
    'blockdev_qcow2_bad_entry_size': ['--blockdev', GOOD_BD +
                                      ',l2-cache-entry-size=100'],
    'blockdev_file_aio_native': ['--blockdev', GOOD_BD + ',file.aio=native,'
                                 'file.aio-max-batch=8,file.drop-cache=on'],
    'blockdev_file_aio_bogus': ['--blockdev', GOOD_BD + ',file.aio=bogus'],
    'blockdev_missing_image': ['--blockdev', 'driver=qcow2,node-name=d0,'
                               'file.driver=file,file.filename={D}/no.qcow2'],
    'blockdev_bad_node_name': ['--blockdev', GOOD_BD.replace('=d0,', '=1d,')],
    'blockdev_keyval_no_equals': ['--blockdev', GOOD_BD + ',a'],
    'blockdev_keyval_inconsistent': ['--blockdev', 'driver=qcow2,file=x,'
                                     'file.driver=file'],
    'blockdev_keyval_empty_item': ['--blockdev', ',driver=qcow2'],
    'blockdev_backing_null_keyval': ['--blockdev', GOOD_BD + ',backing=null'],
    'blockdev_json_truncated': ['--blockdev', '{"driver":'],
    'blockdev_json_no_file': ['--blockdev', '{"driver": "qcow2"}'],
    'blockdev_json_not_object': ['--blockdev', '[1]'],
    'blockdev_duplicate': ['--blockdev', GOOD_BD, '--blockdev',
                           GOOD_BD.replace('{D}/d0', '{D}/../qemu/d0')],
    'chardev_no_id': ['--chardev', 'socket,path={D}/s.sock,server=on,'
                      'wait=off'],
    'chardev_bad_id': ['--chardev', SOCK.replace('id=c0', 'id=0c')],
    'chardev_unknown_key': ['--chardev', SOCK + ',bogus=1'],
    'chardev_bad_backend': ['--chardev', 'bogus,id=c0'],
    'chardev_no_address': ['--chardev', 'socket,id=c0'],
    'chardev_bad_bool': ['--chardev', SOCK.replace('server=on',
                                                   'server=maybe')],
    'chardev_duplicate': ['--chardev', SOCK, '--chardev',
                          SOCK.replace('s.sock', 't.sock')],
    'monitor_no_chardev': ['--monitor', 'mode=control'],
    'monitor_unknown_chardev': ['--monitor', 'chardev=nope'],
    'monitor_unknown_key': ['--chardev', SOCK, '--monitor',
                            'chardev=c0,bogus=on'],
    # mode=readline is strata's human monitor now (test_hmp.py)
    'monitor_bad_mode': ['--chardev', SOCK, '--monitor',
                         'chardev=c0,mode=bogus'],
    'pidfile_missing_argument': ['--pidfile'],
}
for _name, _args in CLI_CASES.items():
    runner.add('cli_' + _name, cli_case(_args))


def start_strata(d, extra=()):
    strata, _ = daemon_paths()
    create_images(d, (('d0.qcow2', 'qcow2', ()),))
    return Daemon(strata, ['--blockdev', GOOD_BD.replace('{D}', d),
                           '--pidfile', os.path.join(d, 'pid')] +
                  list(extra), d)


def image_unlocked_and_clean(path):
    """No daemon holds it: a writable open works, check is clean."""
    common.run(['qemu-img', 'snapshot', '-c', 'probe', path])
    common.run(['qemu-img', 'snapshot', '-d', 'probe', path])
    common.qemu_check_clean(path)


@runner.case('signal_term_and_int')
def signal_quit():
    """SIGTERM and SIGINT end the daemon like quit: exit 0, images
    flushed, closed and unlocked, socket and pidfile removed."""
    import signal
    for sig in (signal.SIGTERM, signal.SIGINT):
        with common.TempDir('strata-qmp-sig-') as d:
            dm = start_strata(d)
            check(open(os.path.join(d, 'pid')).read().strip() ==
                  str(dm.proc.pid), 'pidfile does not hold the pid')
            dm.send({'execute': 'qmp_capabilities'})
            check(dm.send(cmd(INT, device='d0', name='before-signal')) ==
                  [{'return': {}}], 'snapshot failed')
            # the image is locked while the daemon runs
            res = common.run(['qemu-img', 'snapshot', '-c', 'x',
                              os.path.join(d, 'd0.qcow2')], rc=None)
            check(res.rc != 0 and 'lock' in res.text,
                  'image not locked: %s' % res.text)
            dm.proc.send_signal(sig)
            _, err = dm.proc.communicate(timeout=60)
            check(dm.proc.returncode == 0, 'exit %s after %s: %s' % (
                dm.proc.returncode, sig, err))
            check(sorted(os.listdir(d)) == ['d0.qcow2'],
                  'left behind: %s' % os.listdir(d))
            path = os.path.join(d, 'd0.qcow2')
            res = common.run(['qemu-img', 'snapshot', '-l', path])
            check('before-signal' in res.out, res.out)
            image_unlocked_and_clean(path)


@runner.case('signal_during_transaction')
def signal_during_transaction():
    """SIGTERM right behind a transaction over 8 disks: the daemon exits
    0, every image checks clean, and the transaction took effect on all
    disks or on none (internal snapshots and overlays alike)."""
    import signal
    strata, _ = daemon_paths()
    n = 8
    for attempt in range(3):
        with common.TempDir('strata-qmp-sigtx-') as d:
            create_images(d, [('d%d.qcow2' % i, 'qcow2', ())
                              for i in range(n)])
            args = []
            for i in range(n):
                args += ['--blockdev', GOOD_BD.replace('d0', 'd%d' % i)
                         .replace('{D}', d)]
            dm = Daemon(strata, args, d)
            dm.send({'execute': 'qmp_capabilities'})
            actions = []
            for i in range(n):
                actions.append(internal('d%d' % i, 'cut'))
                actions.append(external('d%d' % i, 'o%d.qcow2' % i,
                                        'o%d' % i))
            req = json.dumps(cmd('transaction', actions=actions))
            dm.sock.sendall(req.replace('{D}', d).encode() + b'\n')
            time.sleep(0.005 * attempt)
            dm.proc.send_signal(signal.SIGTERM)
            _, err = dm.proc.communicate(timeout=120)
            check(dm.proc.returncode == 0, 'exit %s: %s' % (
                dm.proc.returncode, err[-2000:]))
            snaps = overlays = 0
            for i in range(n):
                base = os.path.join(d, 'd%d.qcow2' % i)
                common.qemu_check_clean(base)
                res = common.run(['qemu-img', 'snapshot', '-l', base])
                snaps += ' cut ' in res.out
                ov = os.path.join(d, 'o%d.qcow2' % i)
                if os.path.exists(ov):
                    overlays += 1
                    common.qemu_check_clean(ov)
            check(snaps in (0, n) and overlays == snaps,
                  'torn transaction: %d snapshots, %d overlays of %d'
                  % (snaps, overlays, n))
            print('  attempt %d: transaction %s before the exit' % (
                attempt, 'took effect' if snaps else 'did not run'))


def expand(schema, name, depth=0):
    """A type of a SchemaInfo list as a comparable structure (the numbers
    QEMU gives types differ between any two schemas)."""
    if depth > 8:
        return '...'
    e = schema[name]
    mt = e['meta-type']
    if mt == 'builtin':
        return e['json-type']
    if mt == 'array':
        return [expand(schema, e['element-type'], depth + 1)]
    if mt == 'enum':
        return ('enum', tuple(sorted(e['values'])))
    if mt == 'alternate':
        return ('alternate', tuple(sorted(
            json.dumps(expand(schema, m['type'], depth + 1), sort_keys=True)
            for m in e['members'])))
    out = {m['name']: (expand(schema, m['type'], depth + 1),
                       'default' in m) for m in e['members']}
    for v in e.get('variants', []):
        out['case ' + v['case']] = expand(schema, v['type'], depth + 1)
    return out


# Commands whose arguments strata takes exactly as QEMU 7.2 does.
SAME_ARGUMENTS = ['qmp_capabilities', 'query-version', 'query-commands',
                  'query-qmp-schema', 'quit', 'blockdev-del',
                  'query-named-block-nodes', INT, DEL,
                  'blockdev-snapshot-sync', 'blockdev-snapshot']


@runner.case('qmp_schema')
def qmp_schema():
    """query-qmp-schema (generated from qapi/): strata's commands take the
    same arguments as QEMU's, member for member and type for type; where
    strata has a subset (blockdev-add's drivers, transaction's actions),
    each member it has is QEMU's."""
    strata, qsd = daemon_paths()
    schemas = {}
    for side, binary in (('qemu', qsd), ('strata', strata)):
        with common.TempDir('strata-qmp-schema-') as d:
            create_images(d, (('d0.qcow2', 'qcow2', ()),))
            dm = Daemon(binary, ['--blockdev', GOOD_BD.replace('{D}', d)], d)
            dm.send({'execute': 'qmp_capabilities'})
            schemas[side] = {e['name']: e for e in
                             dm.send(cmd('query-qmp-schema'))[0]['return']}
            check(dm.quit() == 0, 'quit')
    q, st = schemas['qemu'], schemas['strata']
    ours = [n for n, e in st.items() if e['meta-type'] == 'command']
    check(sorted(ours) == sorted(
        c['name'] for c in json.loads(json.dumps(qapi_command_names()))),
        'query-qmp-schema and query-commands disagree')
    for name in SAME_ARGUMENTS:
        a = expand(q, q[name]['arg-type'])
        b = expand(st, st[name]['arg-type'])
        check(a == b, '%s arguments:\n  qemu:   %s\n  strata: %s'
              % (name, a, b))
        if expand(q, q[name]['ret-type']) == {}:
            check(expand(st, st[name]['ret-type']) == {},
                  '%s returns something in strata' % name)
        # return types are the schema's own (test_qmp_results.py compares
        # them member for member), no longer 'any'
        check(st[name]['ret-type'] != 'any', '%s returns any' % name)
    for name in ('blockdev-add', 'transaction'):
        a = expand(q, q[name]['arg-type'])
        b = expand(st, st[name]['arg-type'])
        for member, value in b.items():
            if member.startswith('case ') or member == 'driver':
                continue
            check(member in a, '%s: %s is not QEMU\'s' % (name, member))
    print('  %d commands, %d with QEMU\'s exact arguments' % (
        len(ours), len(SAME_ARGUMENTS)))


def qapi_command_names():
    """strata's query-commands, from a fresh daemon."""
    strata, _ = daemon_paths()
    with common.TempDir('strata-qmp-cmds-') as d:
        dm = Daemon(strata, [], d)
        dm.send({'execute': 'qmp_capabilities'})
        names = dm.send(cmd('query-commands'))[0]['return']
        check(dm.quit() == 0, 'quit')
    return names


@runner.case('several_clients')
def several_clients():
    """Two clients at once: each its own negotiation, both answered; one
    leaving mid-stream does not disturb the other."""
    with common.TempDir('strata-qmp-multi-') as d:
        dm = start_strata(d)
        other = socket.socket(socket.AF_UNIX)
        other.connect(dm.sock_path)
        of = other.makefile('rb')
        greeting = json.loads(of.readline())
        check('QMP' in greeting, greeting)
        check(dm.send({'execute': 'qmp_capabilities'}) == [{'return': {}}],
              'first client')
        other.sendall(b'{"execute": "query-version", "id": 1}\n')
        r = json.loads(of.readline())
        check(r['error']['class'] == 'CommandNotFound', r)
        other.sendall(b'{"execute": "qmp_capabilities"}\n'
                      b'{"execute": "blockdev-snapshot-internal-')
        check(json.loads(of.readline()) == {'return': {}}, 'second client')
        other.close()           # gone in the middle of a request
        check(dm.send(cmd(INT, device='d0', name='after')) ==
              [{'return': {}}], 'first client after the second left')
        mode = os.stat(dm.sock_path).st_mode & 0o777
        check(mode == 0o600, 'socket mode %o' % mode)
        check(dm.quit() == 0, 'quit')


@runner.case('bounds')
def bounds():
    """Nesting beyond 1024 is refused with QEMU's text (both daemons);
    a string larger than strata's 8 MiB bound is refused without being
    stored, and the connection keeps working."""
    deep = b'[' * 1100 + b']' * 1100
    strata, qsd = daemon_paths()
    for binary in (qsd, strata):
        with common.TempDir('strata-qmp-bounds-') as d:
            create_images(d, (('d0.qcow2', 'qcow2', ()),))
            dm = Daemon(binary, ['--blockdev', GOOD_BD.replace('{D}', d)], d)
            dm.send({'execute': 'qmp_capabilities'})
            replies = dm.send(deep)
            check(replies and replies[0]['error']['desc'] ==
                  'JSON nesting depth limit exceeded', str(replies)[:300])
            if binary == strata:
                big = b'{"execute": "' + b'x' * (9 << 20) + b'"}'
                replies = dm.send(big)
                check(replies[0]['error']['desc'] ==
                      'JSON token size limit exceeded', str(replies)[:300])
            check(dm.send(cmd('query-version'))[0]['return']['qemu']
                  ['major'] == 7, 'not answering after the bounds')
            check(dm.quit() == 0, 'quit')


@runner.case('tcp_and_daemonize')
def tcp_and_daemonize():
    """--chardev host=,port= listens on loopback; --daemonize returns once
    the daemon serves, with the pidfile written."""
    strata, _ = daemon_paths()
    with common.TempDir('strata-qmp-tcp-') as d:
        create_images(d, (('d0.qcow2', 'qcow2', ()),))
        probe = socket.socket()
        probe.bind(('127.0.0.1', 0))
        port = probe.getsockname()[1]
        probe.close()
        pid = os.path.join(d, 'pid')
        res = subprocess.run([strata, '--daemonize', '--pidfile', pid,
                              '--blockdev', GOOD_BD.replace('{D}', d),
                              '--chardev', 'socket,id=t0,host=127.0.0.1,'
                              'port=%d,server=on,wait=off' % port,
                              '--monitor', 'chardev=t0'],
                             capture_output=True, timeout=60)
        check(res.returncode == 0, 'daemonize: %s' % res.stderr)
        check(os.path.exists(pid), 'no pidfile after --daemonize returned')
        c = socket.create_connection(('127.0.0.1', port), timeout=30)
        f = c.makefile('rb')
        check('QMP' in json.loads(f.readline()), 'no greeting')
        c.sendall(b'{"execute": "qmp_capabilities"}\n'
                  b'{"execute": "quit"}\n')
        check(json.loads(f.readline()) == {'return': {}}, 'negotiation')
        check(json.loads(f.readline()) == {'return': {}}, 'quit')
        deadline = time.monotonic() + 30
        while os.path.exists(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        check(not os.path.exists(pid), 'pidfile not removed at exit')
        image_unlocked_and_clean(os.path.join(d, 'd0.qcow2'))


def malformed_messages(rnd, n):
    """n bad messages of every kind: random bytes, truncated JSON, huge
    strings, deep nesting, wrong types, unknown commands."""
    good = json.dumps(cmd(INT, device='d0', name='x')).encode()
    kinds = [
        lambda: bytes(rnd.randrange(256) for _ in range(rnd.randrange(1, 64))),
        lambda: good[:rnd.randrange(1, len(good))],
        lambda: b'{"execute": "' + b'y' * rnd.randrange(1 << 14, 1 << 18) +
        b'"}',
        lambda: b'[' * rnd.randrange(1, 3000) + b']' * rnd.randrange(3000),
        lambda: json.dumps(cmd(INT, device=rnd.choice([1, None, [], {}]),
                               name=rnd.choice([2.5, True, 'n']))).encode(),
        lambda: json.dumps(cmd('no-such-%d' % rnd.randrange(1000))).encode(),
        lambda: json.dumps({'execute': 'transaction', 'arguments': {
            'actions': [{'type': rnd.choice(['abort', 'bogus', INT]),
                         'data': rnd.choice([{}, [], 1])}] * 50}}).encode(),
    ]
    return [rnd.choice(kinds)() for _ in range(n)]


def peak_rss_kib(pid):
    with open('/proc/%d/status' % pid) as f:
        for line in f:
            if line.startswith('VmHWM:'):
                return int(line.split()[1])
    return None


# Peak memory allowed after the malformed flood (sanitizer builds carry
# ASan's shadow memory and quarantine; a release build stays far below).
PEAK_RSS_BOUND_KIB = int(os.environ.get('STRATA_QMP_PEAK_KIB', 1 << 20))


@runner.case('malformed_flood')
def malformed_flood():
    """1,000 malformed messages on one connection: afterwards the daemon
    answers a new client correctly, the image is untouched and clean, and
    its peak memory stays under PEAK_RSS_BOUND_KIB."""
    import threading
    rnd = common.rng(11)
    with common.TempDir('strata-qmp-flood-') as d:
        dm = start_strata(d)
        before = common.sha256(os.path.join(d, 'd0.qcow2'))
        flood = socket.socket(socket.AF_UNIX)
        flood.connect(dm.sock_path)
        counted = []

        def drain():
            f = flood.makefile('rb')
            for _ in f:
                counted.append(1)

        reader = threading.Thread(target=drain, daemon=True)
        reader.start()
        flood.sendall(b'{"execute": "qmp_capabilities"}\n')
        for msg in malformed_messages(rnd, 1000):
            flood.sendall(msg + b'\n')
        flood.shutdown(socket.SHUT_WR)
        reader.join(300)
        flood.close()
        check(len(counted) > 1000, 'only %d replies to the flood'
              % len(counted))
        dm.send({'execute': 'qmp_capabilities'})
        check(dm.send(cmd('query-version'))[0]['return']['qemu']['minor']
              == 2, 'no answer after the flood')
        peak = peak_rss_kib(dm.proc.pid)
        print('  %d replies; peak RSS %d KiB (bound %d KiB)' % (
            len(counted), peak, PEAK_RSS_BOUND_KIB))
        check(peak < PEAK_RSS_BOUND_KIB, 'peak RSS %d KiB' % peak)
        check(dm.quit() == 0, 'quit')
        check(common.sha256(os.path.join(d, 'd0.qcow2')) == before,
              'the flood changed the image')
        common.qemu_check_clean(os.path.join(d, 'd0.qcow2'))


def main():
    try:
        daemon_paths()
    except Skip as e:
        print('SKIP (whole script): %s' % e)
        return common.SKIP
    return runner.main()


if __name__ == '__main__':
    sys.exit(main())
