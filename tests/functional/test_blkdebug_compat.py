#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""The blkdebug fault-injection filter in QEMU's syntax.

Each case gives the same blkdebug config file (QEMU's ini format) or the
same driver=blkdebug options to qemu-io and to $STRATA_IO, each on a
fresh image made the same way by qemu-img, and requires the same stdout
and exit code.  After a failed write both images must pass qemu-img
check without corruption (leaks are allowed: QEMU leaks there too).

- blkdebug:CONFIG:IMAGE with an [inject-error] rule on each of QEMU's
  qcow2 event names that a plain write or read makes fail in QEMU
  (l1_update, l2_load, l2_alloc_write, l2_alloc_cow_read, write_aio,
  read_aio, refblock_load, refblock_update_part, refblock_alloc,
  refblock_alloc_hookup, refblock_alloc_write, cluster_alloc,
  reftable_grow, refblock_alloc_write_blocks, refblock_alloc_write_table,
  refblock_alloc_switch_table, flush_to_os), errno 5 once=on and errno
  28 once=off: the command fails, with QEMU's error;
- [set-state] rules: an inject rule that only applies in state 2 fires
  only after the event that moves the node there;
- sector= and iotype=: only requests covering that sector, of that kind,
  fail;
- a close that cannot write the caches back reports each, as qemu-io;
- cluster_free failing while snapshot -d frees a snapshot's clusters
  (iotest 217): the delete took effect, the same leaks as QEMU's;
- write -b without a write cache flushes the state, as qemu-io;
- break/wait_break/resume/remove_break hold an aio request at an event
  while others queue behind it (test 046), data right afterwards; the
  resumed request reports before those queued behind it (test 271);
- a zero write with opt-write-zero/max-write-zero through blkdebug on
  an overlay: same pieces (small ones as zeroed data) and the same map,
  which descends through the filter to the backing file (test 204);
- driver=blkdebug options (inject-error.0.event=..., image.filename=,
  config=) through --image-opts and open -o; blkdebug on top of qcow2
  (image.driver=qcow2 with blkdebug::IMG);
- align=: unaligned writes through an aligned blkdebug node keep the
  data right;
- every way a config or option can be wrong (no such file, unknown
  event, missing event, text outside a section, unknown section, unknown
  key, unquoted value, no image path, bad align, unknown key in a
  numbered rule): QEMU's message and exit code, image unchanged.
"""

import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

runner = common.Runner()

RATE_RE = re.compile(r'(\d+ ops; ).*$', re.M)


def mask(text, d, prog):
    text = common.normalize_prog(text, prog)
    return RATE_RE.sub(r'\1TIME', text.replace(d + '/', 'DIR/'))


def write_conf(path, sections):
    with open(path, 'w') as f:
        for name, keys in sections:
            f.write('[%s]\n' % name)
            for k, v in keys:
                f.write('%s = "%s"\n' % (k, v))
            f.write('\n')


def both(prepare, argv_of, check_image=True, compare_err=False):
    """prepare(img) makes the image with the oracles; argv_of(img, d) is
    the tool's arguments.  Returns strata's (rc, out, err)."""
    t = common.tools()
    got = []
    with common.TempDir() as d:
        for who, tool in (('theirs', t.qemu_io), ('ours', t.io)):
            img = os.path.join(d, who + '.qcow2')
            prepare(img)
            before = common.sha256(img)
            res = common.run([tool] + argv_of(img, d), rc=None)
            prog = os.path.basename(tool)
            out = mask(res.out, d, prog).replace(who + '.qcow2', 'IMG')
            err = mask(res.err, d, prog).replace(who + '.qcow2', 'IMG')
            got.append((res.rc, out, err, before, common.sha256(img)))
            if check_image:
                # the image stays consistent whatever failed
                chk = common.run([t.qemu_img, 'check', img], rc=(0, 3))
                common.check('corrupt' not in chk.out.lower() or
                             '0 errors' in chk.out,
                             '%s left a corrupt image:\n%s'
                             % (who, chk.out))
        (qrc, qout, qerr, _, _), (src, sout, serr, b, a) = got
        same = (qrc, qout) == (src, sout)
        if compare_err:
            same = same and qerr == serr
        common.check(same, 'differs from qemu-io\n--- qemu-io (exit %d)\n'
                     '%s%s--- strata-io (exit %d)\n%s%s'
                     % (qrc, qout, qerr, src, sout, serr))
        return src, sout, serr, b == a


def new_image(size='1G', cluster=1024, data=()):
    def prepare(img):
        t = common.tools()
        common.run([t.qemu_img, 'create', '-q', '-f', 'qcow2', '-o',
                    'cluster_size=%d' % cluster, img, size])
        if data:
            common.run([t.qemu_io] + common.io_args(data) + [img])
    return prepare


def conf_run(sections, cmds, prepare, fmt=None, check_image=True,
             compare_err=False):
    def argv_of(img, d):
        conf = os.path.join(d, 'blkdebug.conf')
        write_conf(conf, sections)
        extra = ['-f', fmt] if fmt else []
        return extra + common.io_args(cmds) + ['blkdebug:%s:%s' % (conf, img)]
    return both(prepare, argv_of, check_image=check_image,
                compare_err=compare_err)


def inject(event, errno, once, cmds, prepare):
    """stderr is compared too: it holds the close's report of caches it
    could not write back (QEMU's close syncs once per cache, and that sync
    fails under a once=off rule exactly when something was written since
    the last one that passed)."""
    rc, out, _, _ = conf_run([('inject-error', [('event', event),
                                                ('errno', errno),
                                                ('once', once)])],
                             cmds, prepare, compare_err=True)
    return rc, out


# (event, commands, image): each reaches the event with a plain request
WRITE = ['write -P 0x11 0 128k']
EVENTS = [
    ('l1_update', WRITE, new_image()),
    ('l2_alloc_write', WRITE, new_image()),
    ('write_aio', WRITE, new_image()),
    ('refblock_load', WRITE, new_image()),
    ('refblock_update_part', WRITE, new_image()),
    ('refblock_alloc', WRITE, new_image()),
    ('cluster_alloc', WRITE, new_image()),
    ('l2_load', ['read -P 0x11 0 4k'], new_image(data=['write -P 0x11 0 4k'])),
    ('read_aio', ['read -P 0x11 0 4k'],
     new_image(data=['write -P 0x11 0 4k'])),
    # an L2 table shared with a snapshot is copied on the first write
    ('l2_alloc_cow_read', ['write -P 0x22 0 512'], None),
    # 64M in 512-byte clusters outgrows the first refcount table
    ('reftable_grow', ['write 0 64M'], new_image(cluster=512)),
    ('refblock_alloc_write_blocks', ['write 0 64M'], new_image(cluster=512)),
    ('refblock_alloc_write_table', ['write 0 64M'], new_image(cluster=512)),
    ('refblock_alloc_switch_table', ['write 0 64M'], new_image(cluster=512)),
    ('refblock_alloc_hookup', ['write 0 64M'], new_image(cluster=512)),
    ('refblock_alloc_write', ['write 0 64M'], new_image(cluster=512)),
    ('flush_to_os', ['write 0 4k', 'flush'], new_image()),
]


def snapshot_image(img):
    t = common.tools()
    common.run([t.qemu_img, 'create', '-q', '-f', 'qcow2', '-o',
                'cluster_size=1024', img, '1G'])
    common.run([t.qemu_io, '-c', 'write -P 0x11 0 4k', img])
    common.run([t.qemu_img, 'snapshot', '-c', 's1', img])


def event_case(event, cmds, prepare, errno, once):
    rc, out = inject(event, errno, once, cmds, prepare or snapshot_image)
    # the rule must have done something, or the case proves nothing
    common.check(rc == 1 and 'failed' in out,
                 'no request failed after %s:\n%s' % (event, out))


for _ev, _cmds, _prep in EVENTS:
    for _errno, _once in (('5', 'on'), ('28', 'off')):
        runner.add('event_%s_errno%s_once_%s' % (_ev, _errno, _once),
                   event_case, _ev, _cmds, _prep, _errno, _once)


@runner.case('set_state')
def set_state():
    """The write_aio rule applies in state 2 only, and l2_alloc_write
    moves the node from state 1 to 2: a write into the existing L2 table
    passes, a write that needs a new one fails, the next one passes."""
    sections = [('set-state', [('event', 'l2_alloc_write'), ('state', '1'),
                               ('new_state', '2')]),
                ('inject-error', [('event', 'write_aio'), ('state', '2'),
                                  ('once', 'on')])]
    rc, out, _, _ = conf_run(sections, ['write -P 0x22 8k 4k',
                                        'write -P 0x22 512M 4k',
                                        'write -P 0x22 512M 4k',
                                        'read -P 0x22 8k 4k'],
                             new_image(data=['write -P 0x11 0 4k']))
    common.check(out.count('wrote 4096') == 2 and
                 out.index('wrote 4096') < out.index('write failed'),
                 'the state machine did not fail the second write:\n' + out)


@runner.case('state_never_reached')
def state_never_reached():
    sections = [('inject-error', [('event', 'write_aio'), ('state', '3')])]
    rc, out, _, _ = conf_run(sections, ['write -P 0x11 0 4k',
                                        'read -P 0x11 0 4k'], new_image())
    common.check(rc == 0, 'a rule for state 3 fired in state 1:\n' + out)


@runner.case('sector_and_iotype')
def sector_and_iotype():
    """event none (at open): reads covering sector 40 fail, writes there
    and reads elsewhere pass."""
    sections = [('inject-error', [('event', 'none'), ('sector', '40'),
                                  ('iotype', 'read')])]
    def prepare(img):
        t = common.tools()
        common.run([t.qemu_img, 'create', '-q', '-f', 'raw', img, '1M'])
        common.run([t.qemu_io, '-f', 'raw', '-c', 'write -P 0x11 0 64k',
                    img])
    rc, out, _, _ = conf_run(sections, ['read -P 0x11 0 16k',
                                        'read -P 0x11 16k 16k',
                                        'write -P 0x22 16k 4k',
                                        'read -P 0x11 32k 4k'],
                             prepare, fmt='raw', check_image=False)
    common.check(out.count('read failed') == 1 and 'wrote 4096' in out,
                 'sector/iotype did not pick exactly one read:\n' + out)


def opts_case(opts_of, cmds, extra=(), prepare=None):
    def argv_of(img, d):
        return list(extra) + common.io_args(cmds) + ['--image-opts',
                                                      opts_of(img, d)]
    return both(prepare or new_image(data=['write -P 0x11 0 4k']), argv_of)


@runner.case('driver_blkdebug_numbered_rule')
def numbered_rule():
    rc, out, _, _ = opts_case(
        lambda img, d: 'driver=qcow2,file.driver=blkdebug,'
        'file.image.filename=%s,file.inject-error.0.event=l2_load' % img,
        ['read -P 0x11 0 4k'])
    common.check(rc == 1 and 'read failed' in out, out)


@runner.case('driver_blkdebug_single_rule')
def single_rule():
    rc, out, _, _ = opts_case(
        lambda img, d: 'driver=qcow2,file.driver=blkdebug,'
        'file.image.filename=%s,file.inject-error.event=read_aio,'
        'file.inject-error.errno=28,file.inject-error.once=on' % img,
        ['read -P 0x11 0 4k', 'read -P 0x11 0 4k'])
    common.check(out.count('read failed: No space left on device') == 1,
                 out)


@runner.case('driver_blkdebug_config_option')
def config_option():
    def opts_of(img, d):
        conf = os.path.join(d, 'c.conf')
        write_conf(conf, [('inject-error', [('event', 'write_aio'),
                                            ('once', 'on')])])
        return ('driver=qcow2,file.driver=blkdebug,file.config=%s,'
                'file.image.filename=%s' % (conf, img))
    rc, out, _, _ = opts_case(opts_of, ['write 0 4k', 'write 0 4k'])
    common.check(out.count('write failed') == 1, out)


@runner.case('open_o_with_blkdebug_prefix_and_align')
def open_align():
    """qemu-io's open -o with an aligned blkdebug node (tests 033/268):
    unaligned writes land right."""
    t = common.tools()

    def argv_of(img, d):
        return ['-c', 'open -o driver=qcow2,file.align=4k blkdebug::' + img,
                '-c', 'write -P 0x22 512 1k', '-c', 'write -P 0x33 5k 3k',
                '-c', 'read -P 0x11 0 512', '-c', 'read -P 0x22 512 1k',
                '-c', 'read -P 0x11 1536 3584', '-c', 'read -P 0x33 5k 3k']
    rc, out, _, _ = both(new_image(data=['write -P 0x11 0 64k']), argv_of)
    common.check(rc == 0 and out.count('read ') == 4, out)
    del t


@runner.case('blkdebug_on_top_image_driver_qcow2')
def blkdebug_on_top():
    """driver=blkdebug,image.driver=qcow2 with blkdebug::IMG (tests 177,
    197, 204): the image name goes to the qcow2 child, which opens its
    own file on it; data written through the stack reads back."""
    def argv_of(img, d):
        return ['-c', 'open -o driver=blkdebug,image.driver=qcow2,align=4k '
                'blkdebug::' + img,
                '-c', 'write -P 0x22 1000 128k',
                '-c', 'read -P 0x22 1000 128k', '-c', 'read -P 0x11 0 1000']
    rc, out, err, _ = both(new_image(data=['write -P 0x11 0 4k']), argv_of)
    common.check(rc == 0 and out.count('read ') == 2 and
                 'wrote 131072' in out, out + err)


@runner.case('zero_write_limits_and_map_through_blkdebug')
def zero_limits_map():
    """blkdebug on top of an overlay (test 204): a zero write with
    opt-write-zero/max-write-zero is cut as QEMU cuts it, the pieces
    smaller than the alignment written as zeroed data, and qemu-img map
    through the blkdebug node descends to the backing file: both tools'
    writes give the same JSON map, read by qemu-img and by strata-img."""
    t = common.tools()
    opts = ('driver=blkdebug,image.driver=qcow2,align=512,'
            'opt-write-zero=3M,max-write-zero=3M')
    with common.TempDir() as d:
        maps = {}
        for who, io in (('theirs', t.qemu_io), ('ours', t.io)):
            base = os.path.join(d, who + '.base')
            top = os.path.join(d, who + '.qcow2')
            common.run([t.qemu_img, 'create', '-q', '-f', 'qcow2', '-o',
                        'cluster_size=1M', base, '16M'])
            common.run([t.qemu_io, '-c', 'write -P 11 0 16M', base])
            common.run([t.qemu_img, 'create', '-q', '-f', 'qcow2', '-o',
                        'cluster_size=1M', '-b', base, '-F', 'qcow2', top])
            common.run([t.qemu_io, '-c', 'write -P 22 0 12M', top])
            common.run([io, '-c', 'open -o %s blkdebug::%s' % (opts, top),
                        '-c', 'write -z 1M 10M', '-c', 'read -P 0 1M 10M',
                        '-c', 'read -P 11 12M 4M'])
            for tool in (t.qemu_img, t.img):
                res = common.run([tool, 'map', '--output=json',
                                  '--image-opts',
                                  'driver=blkdebug,image.driver=qcow2,'
                                  'image.file.driver=file,'
                                  'image.file.filename=' + top])
                maps[(who, tool)] = res.out.replace(who + '.', 'X.')
        first = maps[('theirs', t.qemu_img)]
        common.check('"depth": 1' in first, 'no backing layer:\n' + first)
        for k, v in maps.items():
            common.check(v == first, '%s differs:\n%s\nqemu:\n%s'
                         % (k, v, first))


@runner.case('close_reports_unwritten_caches')
def close_reports_unwritten():
    """Refcount block writes failing for good (refblock_update_part,
    once=off) after a write into an existing L2 table: the close cannot
    write the caches back and says so for each, with qemu-io's lines;
    the image stays clean."""
    t = common.tools()
    with common.TempDir() as d:
        errs = []
        for io in (t.qemu_io, t.io):
            img = os.path.join(d, 'a.qcow2')
            new_image(size='64M', cluster=65536,
                      data=['write 0 64k'])(img)
            conf = os.path.join(d, 'c.conf')
            write_conf(conf, [('inject-error',
                               [('event', 'refblock_update_part'),
                                ('errno', '5'), ('once', 'off')])])
            res = common.run([io, '-c', 'write 64k 64k',
                              'blkdebug:%s:%s' % (conf, img)], rc=None)
            errs.append((res.rc, common.normalize_prog(
                res.err, os.path.basename(io))))
            chk = common.run([t.qemu_img, 'check', img], rc=(0, 3))
            common.check('corrupt' not in chk.out.lower(), chk.out)
        common.check(errs[0] == errs[1] and
                     'PROG: Failed to flush the L2 table cache: Input/output '
                     'error' in errs[1][1] and 'refcount block cache' in
                     errs[1][1], 'qemu-io: %r\nours: %r' % tuple(errs))


@runner.case('cluster_free_in_snapshot_delete')
def cluster_free_in_snapshot_delete():
    """iotest 217's fault: cluster_free failing for good (errno 5) while
    snapshot -d frees what the snapshot held, on a snapshot qemu-img
    made.  Both tools fail with the same words (QEMU's: the failed free,
    then "Failed to free the cluster and L1 table"), the snapshot is gone
    (the delete took effect before the frees), and qemu-img check finds
    the same leaks and nothing else."""
    t = common.tools()
    with common.TempDir() as d:
        conf = os.path.join(d, 'c.conf')
        write_conf(conf, [('inject-error', [('event', 'cluster_free'),
                                            ('errno', '5')])])
        checks, errs = [], []
        for tool in (t.qemu_img, t.img):
            img = os.path.join(d, 'a.qcow2')
            common.run([t.qemu_img, 'create', '-q', '-f', 'qcow2', img, '64M'])
            common.run([t.qemu_io, '-c', 'write 0 64k', img])
            common.run([t.qemu_img, 'snapshot', '-c', 'foo', img])
            res = common.run([tool, 'snapshot', '-d', 'foo',
                              'blkdebug:%s:%s' % (conf, img)], rc=1)
            common.check('Input/output error' in res.err, res.describe())
            errs.append(common.normalize_prog(res.err, os.path.basename(tool)))
            lst = common.run([t.qemu_img, 'snapshot', '-l', img]).out
            common.check('foo' not in lst, 'snapshot still listed:\n' + lst)
            chk = common.run([t.qemu_img, 'check', img], rc=3)
            checks.append(chk.out + chk.err)
            os.unlink(img)
        common.check(checks[0] == checks[1] and
                     '4 leaked clusters' in checks[1],
                     'check differs:\nqemu-img:\n%s\nours:\n%s'
                     % tuple(checks))
        common.check(errs[0] == errs[1], 'messages differ:\nqemu-img:\n%s'
                     '\nours:\n%s' % tuple(errs))


@runner.case('vmstate_write_flushed_without_write_cache')
def vmstate_writethrough():
    """write -b with the write cache off (-t writethrough) flushes the
    state before it counts as written, as QEMU's device does: the L2
    update of a write into an existing table fails the write (test 026)."""
    t = common.tools()
    outs = []
    with common.TempDir() as d:
        for io in (t.qemu_io, t.io):
            img = os.path.join(d, 'a.qcow2')
            new_image(size='1G', cluster=1024, data=['write -b 0 512'])(img)
            conf = os.path.join(d, 'c.conf')
            write_conf(conf, [('inject-error', [('event', 'l2_update'),
                                                ('errno', '5'),
                                                ('once', 'on')])])
            for cache in ('writethrough', 'writeback'):
                res = common.run([io, '-t', cache, '-c', 'write -b 0 128k',
                                  'blkdebug:%s:%s' % (conf, img)], rc=None)
                outs.append((io == t.io, cache, res.rc,
                             mask(res.out, d, os.path.basename(io))))
    theirs = [o[1:] for o in outs if not o[0]]
    ours = [o[1:] for o in outs if o[0]]
    common.check(theirs == ours and ours[0][1] == 1 and ours[1][1] == 0,
                 'qemu-io: %r\nours: %r' % (theirs, ours))


@runner.case('breakpoint_holds_a_request_while_others_queue')
def breakpoint_requests():
    """break/wait_break/resume (test 046): an allocating aio_write held at
    write_aio while two more writes into the same cluster and one into
    the next are issued; after resume all four complete.  Same output as
    qemu-io (the completion reports compared as a set); afterwards every
    byte reads as written (the overlapping allocations were ordered), and
    qemu-img check is clean.
    Without a blkdebug node the commands fail with qemu-io's texts."""
    t = common.tools()
    cmds = ['break write_aio A', 'aio_write -P 10 0x18000 0x2000',
            'wait_break A', 'aio_write -P 11 0x12000 0x2000',
            'aio_write -P 12 0x1c000 0x2000',
            'aio_write -P 13 0x2a000 0x10000', 'resume A', 'aio_flush',
            'remove_break A', 'resume A']
    with common.TempDir() as d:
        outs = []
        for io in (t.qemu_io, t.io):
            img = os.path.join(d, 'a.qcow2')
            new_image(size='1M', cluster=65536,
                      data=['write -P 1 0 0x10000'])(img)
            res = common.run([io] + common.io_args(cmds) +
                             ['blkdebug::' + img], rc=None)
            # completions are reported in the order they happened, which
            # neither tool fixes: compare the reports as a set
            text = mask(res.out, d, os.path.basename(io))
            reports = re.findall(r'wrote .*\n.*\n', text)
            outs.append((res.rc, re.sub(r'wrote .*\n.*\n', '', text),
                         sorted(reports)))
            common.run([t.qemu_io, '-c', 'read -P 1 0 0x10000',
                        '-c', 'read -P 0 0x10000 0x2000',
                        '-c', 'read -P 11 0x12000 0x2000',
                        '-c', 'read -P 0 0x14000 0x4000',
                        '-c', 'read -P 10 0x18000 0x2000',
                        '-c', 'read -P 0 0x1a000 0x2000',
                        '-c', 'read -P 12 0x1c000 0x2000',
                        '-c', 'read -P 13 0x2a000 0x10000', img])
            common.qemu_check_clean(img)
            res = common.run([io, '-c', 'break write_aio A', '-c',
                              'resume A', '-c', 'remove_break A', img],
                             rc=None)
            outs.append((res.rc, mask(res.out, d, os.path.basename(io))))
        common.check(outs[0] == outs[2] and outs[1] == outs[3],
                     'qemu-io: %r\nours: %r' % (outs[:2], outs[2:]))
        common.check(len(outs[2][2]) == 4 and
                     outs[2][1].startswith("blkdebug: Suspended request 'A'"
                                           "\nblkdebug: Resuming request 'A'"
                                           "\nCould not"), outs[2])


@runner.case('resumed_request_reports_before_those_queued_behind_it')
def resumed_reports_first():
    """break/resume (test 271's end): the held write allocates a cluster,
    two more writes into that cluster queue behind it.  qemu-io runs the
    resumed request on until it completed before the queued ones go on,
    so its report comes first; strata-io's requests are threads the
    resumed one wakes, and must still report after it, every time (20
    runs each, with and without extended L2 entries).  The data is
    right and the image clean."""
    t = common.tools()
    cmds = ['break write_aio A', 'aio_write -P 10 30k 2k', 'wait_break A',
            'aio_write -P 11 20k 2k', 'aio_write -P 12 40k 2k', 'resume A',
            'aio_flush']
    with common.TempDir() as d:
        img = os.path.join(d, 'a.qcow2')
        for opts in ('extended_l2=on', 'cluster_size=65536'):
            for io, runs in ((t.qemu_io, 3), (t.io, 20)):
                for _ in range(runs):
                    common.run([t.qemu_img, 'create', '-q', '-f', 'qcow2',
                                '-o', opts, img, '1M'])
                    out = common.run([io] + common.io_args(cmds) +
                                     ['blkdebug::' + img]).out
                    offs = re.findall(r'wrote 2048/2048 bytes at offset '
                                      r'(\d+)', out)
                    common.check(len(offs) == 3 and offs[0] == '30720',
                                 '%s (%s): reports in the order %s'
                                 % (os.path.basename(io), opts, offs))
                    common.run([t.qemu_io, '-c', 'read -P 10 30k 2k',
                                '-c', 'read -P 11 20k 2k',
                                '-c', 'read -P 12 40k 2k',
                                '-c', 'read -P 0 22k 8k', img])
                    common.qemu_check_clean(img)


def refused_conf(content, text, name_of=None):
    def argv_of(img, d):
        conf = os.path.join(d, 'bad.conf')
        if content is not None:
            with open(conf, 'w') as f:
                f.write(content)
        name = name_of(img, conf) if name_of else \
            'blkdebug:%s:%s' % (conf, img)
        return ['-c', 'write -P 0x55 0 64k', name]
    rc, _, err, unchanged = both(new_image(data=['write -P 0x11 0 4k']),
                                 argv_of, compare_err=True)
    common.check(rc == 1 and text in err and unchanged,
                 'wanted exit 1, %r and the image unchanged; got exit %d:\n%s'
                 % (text, rc, err))


BAD_CONFS = [
    ('no_config_file', None, 'Could not read blkdebug config file: No such '
     'file or directory'),
    ('unknown_event', '[inject-error]\nevent = "nosuch"\n',
     'invalid parameter value: nosuch'),
    ('missing_event', '[inject-error]\nerrno = "5"\n',
     'Missing event name for rule'),
    ('text_outside_section', 'garbage\n', 'no group defined'),
    ('unknown_section', '[bogus]\nx = "1"\n',
     "There is no option group 'bogus'"),
    ('unknown_key', '[inject-error]\nevent = "l2_load"\nfoo = "1"\n',
     "Invalid parameter 'foo'"),
    ('unquoted_value', '[inject-error]\nevent = l2_load\n',
     'invalid parameter value: \n'),
    ('bad_number', '[inject-error]\nevent = "l2_load"\nerrno = "x"\n',
     "Parameter 'errno' expects a number"),
    ('bad_bool', '[inject-error]\nevent = "l2_load"\nonce = "maybe"\n',
     "Parameter 'once' expects 'on' or 'off'"),
    ('bad_iotype', '[inject-error]\nevent = "l2_load"\niotype = "x"\n',
     'invalid parameter value: x'),
]
for _name, _content, _text in BAD_CONFS:
    runner.add('bad_config_' + _name, refused_conf, _content, _text)

runner.add('bad_name_no_image_path', refused_conf, '',
           'blkdebug requires both config file and image path',
           lambda img, conf: 'blkdebug:' + img)


def refused_opts(suffix, text):
    def argv_of(img, d):
        return ['-c', 'write -P 0x55 0 64k', '--image-opts',
                'driver=qcow2,file.driver=blkdebug,file.image.filename=%s,%s'
                % (img, suffix)]
    rc, _, err, unchanged = both(new_image(data=['write -P 0x11 0 4k']),
                                 argv_of, compare_err=True)
    common.check(rc == 1 and text in err and unchanged,
                 'wanted exit 1, %r and the image unchanged; got exit %d:\n%s'
                 % (text, rc, err))


runner.add('bad_opt_align', refused_opts, 'file.align=3',
           'Cannot meet constraints with align 3')
runner.add('bad_opt_rule_key', refused_opts,
           'file.inject-error.0.event=l2_load,file.inject-error.0.bogus=1',
           "[inject-error] section doesn't support the option 'bogus'")
runner.add('bad_opt_event', refused_opts, 'file.inject-error.event=nosuch',
           'invalid parameter value: nosuch')


if __name__ == '__main__':
    sys.exit(runner.main())
