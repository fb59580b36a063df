#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""driver=rbd against QEMU on one throw-away Ceph cluster: images strata
creates and writes read identically with qemu-img/qemu-io and the
reverse; snapshots strata takes are listed and rolled back by `rbd` and
`qemu-img snapshot` and the reverse; group snapshots stay out of the
per-image list; resize, discard and write-zeroes; bad input (missing
pool, missing image, unreachable cluster, writable snapshot) gets a clear
error in bounded time and changes nothing."""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
import rbdlib  # noqa: E402
from common import check, run, run_io  # noqa: E402
from rbdlib import rbd, uri  # noqa: E402

R = common.Runner()
MiB = 1 << 20
SIZE = 32 * MiB

# (offset, length, byte): touches the first object, crosses an object
# boundary (4 MiB objects) and leaves holes between
WRITES = [(0, 64 * 1024, 0x11), (4 * MiB - 4096, 8192, 0x22),
          (9 * MiB + 512, 3000, 0x33), (SIZE - 4096, 4096, 0x44)]


def write_cmds(writes):
    return ['write -P 0x%x %d %d' % (b, o, n) for o, n, b in writes]


def read_cmds(writes):
    # the data, and zeroes in a hole between the writes
    return (['read -P 0x%x %d %d' % (b, o, n) for o, n, b in writes] +
            ['read -P 0 %d %d' % (1 * MiB, 1 * MiB)])


def shadow(path, writes, size=SIZE):
    with open(path, 'wb') as f:
        f.truncate(size)
        for o, n, b in writes:
            f.seek(o)
            f.write(bytes([b]) * n)


@R.case()
def ours_to_qemu():
    t = rbdlib.setup()
    name = rbdlib.new_name()
    res = run([t.img, 'create', '-f', 'raw', uri(name), str(SIZE)])
    check(uri(name) in res.out, 'create said: ' + res.out)
    check(('%d MiB' % (SIZE // MiB)) in rbd('info', name).out,
          'rbd info does not show the size:\n' + rbd('info', name).out)
    run_io(t.io, uri(name), write_cmds(WRITES), fmt='raw')
    run_io(t.qemu_io, uri(name), read_cmds(WRITES), fmt='raw')
    with common.TempDir() as d:
        raw = os.path.join(d, 'shadow.raw')
        shadow(raw, WRITES)
        run([t.qemu_img, 'compare', '-f', 'raw', '-F', 'raw', uri(name), raw])
    # block status: what strata maps is what QEMU maps
    ours = run([t.img, 'map', '-f', 'raw', '--output=json', uri(name)]).out
    theirs = run([t.qemu_img, 'map', '-f', 'raw', '--output=json',
                  uri(name)]).out
    check(ours == theirs, 'map differs:\nours %s\nqemu %s' % (ours, theirs))
    check('"zero": true' in ours, 'no hole mapped: ' + ours)


@R.case()
def qemu_to_ours():
    t = rbdlib.setup()
    name = rbdlib.new_name()
    run([t.qemu_img, 'create', '-f', 'raw', uri(name), str(SIZE)])
    run_io(t.qemu_io, uri(name), write_cmds(WRITES), fmt='raw')
    run_io(t.io, uri(name), read_cmds(WRITES), fmt='raw')
    # the options form reaches the same image
    run_io(t.io, 'driver=raw,file.driver=rbd,file.pool=%s,file.image=%s,'
           'file.conf=%s' % (rbdlib.POOL, name, rbdlib.cluster()),
           ['read -P 0x11 0 65536'], fmt=None, extra=['--image-opts'])
    with common.TempDir() as d:
        raw = os.path.join(d, 'shadow.raw')
        shadow(raw, WRITES)
        run([t.img, 'compare', '-f', 'raw', '-F', 'raw', uri(name), raw])


@R.case()
def discard_zeroes_resize():
    t = rbdlib.setup()
    name = rbdlib.new_name()
    rbdlib.rbd_create(name, SIZE)
    run_io(t.io, uri(name), ['write -P 0x55 0 8M'], fmt='raw')
    run_io(t.io, uri(name), ['discard 0 4M', 'write -z 4M 64k',
                             'write -z -u 5M 1M'], fmt='raw')
    run_io(t.qemu_io, uri(name), ['read -P 0 0 4M', 'read -P 0 4M 64k',
                                  'read -P 0x55 %d %d' % (4 * MiB + 65536,
                                                          MiB - 65536),
                                  'read -P 0 5M 1M', 'read -P 0x55 6M 2M'],
           fmt='raw')
    # the discarded object is a hole again
    m = run([t.img, 'map', '-f', 'raw', '--output=json', uri(name)]).out
    check(m.startswith('[{ "start": 0, "length": 4194304, "depth": 0, '
                       '"present": true, "zero": true'),
          'discarded object still mapped as data: ' + m)
    run([t.img, 'resize', '-f', 'raw', uri(name), '48M'])
    check('48 MiB' in rbd('info', name).out, 'rbd did not see the resize')
    res = run([t.qemu_img, 'info', '-f', 'raw', uri(name)]).out
    check('virtual size: 48 MiB' in res, 'qemu-img info: ' + res)
    run_io(t.io, uri(name), ['read -P 0x55 6M 2M', 'read -P 0 32M 16M'],
           fmt='raw')


@R.case()
def snapshots_ours_listed_by_others():
    t = rbdlib.setup()
    name = rbdlib.new_name()
    rbdlib.rbd_create(name, SIZE)
    run_io(t.io, uri(name), ['write -P 0x11 0 1M'], fmt='raw')
    run([t.img, 'snapshot', '-f', 'raw', '-c', 'first', uri(name)])
    run_io(t.io, uri(name), ['write -P 0x22 0 1M'], fmt='raw')
    run([t.img, 'snapshot', '-f', 'raw', '-c', 'second', uri(name)])
    run_io(t.io, uri(name), ['write -P 0x33 0 1M'], fmt='raw')
    check(rbdlib.snaps(name, True) == [('first', 'user'), ('second', 'user')],
          'rbd lists %s' % rbdlib.snaps(name, True))
    lst = run([t.qemu_img, 'snapshot', '-l', uri(name)]).out
    check('first' in lst and 'second' in lst, 'qemu-img -l:\n' + lst)
    # the snapshot reads its content, read-only, through QEMU too
    run_io(t.qemu_io, uri(name, 'first'), ['read -P 0x11 0 1M'], fmt='raw',
           extra=['-r'])
    # rolled back by the rbd CLI, then by qemu-img
    rbd('snap', 'rollback', '--no-progress', '%s@second' % name)
    run_io(t.io, uri(name), ['read -P 0x22 0 1M'], fmt='raw')
    run([t.qemu_img, 'snapshot', '-a', 'first', uri(name)])
    run_io(t.io, uri(name), ['read -P 0x11 0 1M'], fmt='raw')
    # deleted by qemu-img: strata's list follows
    run([t.qemu_img, 'snapshot', '-d', 'second', uri(name)])
    lst = run([t.img, 'snapshot', '-f', 'raw', '-l', uri(name)]).out
    check('first' in lst and 'second' not in lst, 'strata -l:\n' + lst)
    rbdlib.check_no_hidden(name)


@R.case()
def snapshots_theirs_used_by_ours():
    t = rbdlib.setup()
    name = rbdlib.new_name()
    rbdlib.rbd_create(name, SIZE)
    run_io(t.qemu_io, uri(name), ['write -P 0x44 0 1M'], fmt='raw')
    rbd('snap', 'create', '%s@by-rbd' % name)
    run_io(t.qemu_io, uri(name), ['write -P 0x55 0 1M'], fmt='raw')
    run([t.qemu_img, 'snapshot', '-c', 'by-qemu', uri(name)])
    run_io(t.qemu_io, uri(name), ['write -P 0x66 0 1M'], fmt='raw')
    ours = run([t.img, 'snapshot', '-f', 'raw', '-l', uri(name)]).out
    theirs = run([t.qemu_img, 'snapshot', '-l', uri(name)]).out
    ids = lambda text: [ln.split()[0] for ln in text.splitlines()[2:]]  # noqa
    check(ids(ours) == ids(theirs) == ['by-rbd', 'by-qemu'],
          'lists differ:\nours\n%s\nqemu\n%s' % (ours, theirs))
    run([t.img, 'snapshot', '-f', 'raw', '-a', 'by-rbd', uri(name)])
    run_io(t.qemu_io, uri(name), ['read -P 0x44 0 1M'], fmt='raw')
    run([t.img, 'snapshot', '-f', 'raw', '-a', 'by-qemu', uri(name)])
    run_io(t.qemu_io, uri(name), ['read -P 0x55 0 1M'], fmt='raw')
    run([t.img, 'snapshot', '-f', 'raw', '-d', 'by-rbd', uri(name)])
    check(rbdlib.snap_names(name, True) == ['by-qemu'],
          'after delete rbd lists %s' % rbdlib.snap_names(name, True))
    # a duplicate name is refused and nothing changes
    res = run([t.img, 'snapshot', '-f', 'raw', '-c', 'by-qemu', uri(name)],
              rc=1)
    check("already exists" in res.err, res.describe())
    check(rbdlib.snap_names(name, True) == ['by-qemu'],
          'after refused create rbd lists %s' % rbdlib.snap_names(name, True))


@R.case()
def group_snapshots_not_listed():
    t = rbdlib.setup()
    a, b, g = rbdlib.new_name(), rbdlib.new_name(), rbdlib.new_name('grp')
    for n in (a, b):
        rbdlib.rbd_create(n, SIZE)
    rbd('snap', 'create', '%s@mine' % a)
    rbd('group', 'create', g)
    for n in (a, b):
        rbd('group', 'image', 'add', g, n)
    rbd('group', 'snap', 'create', '%s@gs' % g)
    check(any(ns == 'group' for _, ns in rbdlib.snaps(a, True)),
          'rbd shows no group snapshot on the image')
    lst = run([t.img, 'snapshot', '-f', 'raw', '-l', uri(a)]).out
    lines = lst.splitlines()[2:]
    check(len(lines) == 1 and lines[0].split()[0] == 'mine',
          'strata lists group snapshots as the image\'s own:\n' + lst)
    lst = run([t.img, 'snapshot', '-f', 'raw', '-l', uri(b)]).out
    check(lst.strip() == '', 'image with only a group snapshot lists:\n'
          + lst)
    res = run([t.img, 'snapshot', '-f', 'raw', '-d', rbdlib.snaps(b, True)[0][0],
               uri(b)], rc=1)
    check('not found' in res.err, res.describe())
    rbd('group', 'snap', 'rm', '%s@gs' % g)
    rbd('group', 'rm', g)


@R.case()
def filename_form_like_qemu():
    """The rbd: filename form: namespaces, Ceph settings, conf and id keys
    and their errors read as QEMU reads them (same open error text)."""
    t = rbdlib.setup()
    name = rbdlib.new_name()
    rbdlib.rbd_create(name, SIZE)
    cases = [('rbd:%s/no-ns/%s' % (rbdlib.POOL, name), 1),
             ('%s:no_such_key=1' % uri(name), 1),
             ('%s:novalue' % uri(name), 1),
             ('%s:rbd_cache=false:id=admin:conf=%s' % (uri(name),
                                                        rbdlib.cluster()), 0),
             ('rbd:%s/%s' % (rbdlib.POOL, name.replace('-', '\\-')), 0)]
    for fname, rc in cases:
        got = []
        for tool in (t.io, t.qemu_io):
            res = run([tool, '-f', 'raw', '-c', 'read -P 0 0 4k', fname],
                      rc=rc)
            err = [ln for ln in res.err.splitlines() if 'open' in ln]
            got.append([common.normalize_prog(ln, os.path.basename(tool))
                        for ln in err])
        check(got[0] == got[1], '%s: strata %s, qemu %s' % (fname, got[0],
                                                            got[1]))
        check(rc == 0 or got[0], '%s: no error printed' % fname)


@R.case()
def reopen_read_write():
    """A node opened read-only becomes writable (a new writable handle);
    one on a snapshot refuses, with QEMU's text, and stays usable."""
    t = rbdlib.setup()
    name = rbdlib.new_name()
    rbdlib.rbd_create(name, SIZE)
    rbd('snap', 'create', '%s@s' % name)
    run_io(t.io, uri(name), ['reopen -w', 'write -P 0x77 0 64k'], fmt='raw',
           extra=['-r'])
    run_io(t.qemu_io, uri(name), ['read -P 0x77 0 64k'], fmt='raw')
    for tool in (t.io, t.qemu_io):
        res = run([tool, '-r', '-f', 'raw', '-c', 'reopen -w', '-c',
                   'read -P 0 0 64k', uri(name, 's')], rc=1)
        check("to r/w when using RBD snapshot" in res.text and
              'read 65536/65536' in res.out, res.describe())


@R.case()
def bench_many_in_flight():
    """strata-img bench at depth 32 keeps its requests in flight through
    bdrv_aio_submit (raw over rbd): every write lands where qemu-img's
    pattern puts it, as QEMU reads back, and its lines are qemu-img's."""
    t = rbdlib.setup()
    name = rbdlib.new_name()
    rbdlib.rbd_create(name, 8 * MiB)
    args = ['bench', '-f', 'raw', '-w', '-c', '128', '-d', '32', '-s', '64K',
            '--pattern=0x5a']
    ours = run([t.img] + args + [uri(name)])
    run_io(t.qemu_io, uri(name), ['read -P 0x5a 0 8M'], fmt='raw')
    # reads at depth 32, from an offset, over a wrap of the image's end
    rargs = ['bench', '-f', 'raw', '-c', '300', '-d', '32', '-s', '4K',
             '-o', '4M', '-S', '60K']
    res = run([t.img] + rargs + [uri(name)])
    theirs = run([t.qemu_img] + rargs + [uri(name)])
    for a, b in ((ours.out, run([t.qemu_img] + args + [uri(name)]).out),
                 (res.out, theirs.out)):
        check(a.splitlines()[0] == b.splitlines()[0] and
              'Run completed' in a, 'ours:\n%s\nqemu:\n%s' % (a, b))


@R.case()
def embedding_queue():
    """The embedding API's queue on an RBD device (tests/functional/
    rbd-queue.c): 64 writes in flight, plain ones straight to librbd, FUA
    and zero writes through the workers, then 64 parallel reads checked in
    C; qemu-io reads the same bytes."""
    helper = os.environ.get('STRATA_RBD_QUEUE')
    if not helper or not os.access(helper, os.X_OK):
        raise common.Skip('STRATA_RBD_QUEUE (the API helper) not built')
    t = rbdlib.setup()
    name = rbdlib.new_name()
    rbdlib.rbd_create(name, 8 * MiB)
    run([helper, 'rbd', name, '64', str(64 * 1024)])
    cmds = ['read -P 0x%x %d 64k' % (0 if i == 3 else (i * 37 + 1) & 0xff,
                                     i * 64 * 1024) for i in range(64)]
    run_io(t.qemu_io, uri(name), cmds, fmt='raw')


def expect_open_error(argv, text, limit):
    t0 = time.monotonic()
    res = run(argv, rc=1, timeout=limit + 60)
    took = time.monotonic() - t0
    check(text in res.err, 'wanted %r in the error:\n%s' % (text,
                                                            res.describe()))
    check(took < limit, 'error took %.1f s (bound %d s)' % (took, limit))
    return res


@R.case()
def bad_input():
    t = rbdlib.setup()
    name = rbdlib.new_name()
    rbdlib.rbd_create(name, SIZE)
    rbd('snap', 'create', '%s@ro' % name)
    for tool in (t.io, t.qemu_io):
        # QEMU's texts, both tools
        expect_open_error([tool, '-f', 'raw', '-c', 'read 0 512',
                           'rbd:no-such-pool/%s' % name],
                          'error opening pool no-such-pool: No such file or '
                          'directory', 60)
        expect_open_error([tool, '-f', 'raw', '-c', 'read 0 512',
                           uri('no-such-image')],
                          'error reading header from no-such-image: No such '
                          'file or directory', 60)
        expect_open_error([tool, '-f', 'raw', '-c', 'write 0 512',
                           uri(name, 'ro')], 'rbd snapshots are read-only',
                          60)
    expect_open_error([t.io, '-f', 'raw', '-c', 'read 0 512', 'rbd:' + name],
                      'Pool name is required', 30)
    res = expect_open_error([t.img, 'create', '-f', 'raw', uri(name, 'x'),
                             '1M'],
                            "Can't use snapshot name for image creation", 60)
    # a monitor nobody listens on: an error in bounded time, not a hang
    # (librados waits 300 s by default; the driver bounds it)
    with common.TempDir() as d:
        conf = os.path.join(d, 'dead.conf')
        with open(conf, 'w') as f:
            f.write('[global]\nmon host = v2:127.0.0.1:9\n'
                    'auth client required = none\n')
        expect_open_error([t.io, '-f', 'raw', '-c', 'read 0 512',
                           'rbd:%s/%s:conf=%s' % (rbdlib.POOL, name, conf)],
                          'error connecting', 45)
    # nothing changed on the image
    check(rbdlib.snap_names(name, True) == ['ro'],
          'snapshots after bad input: %s' % rbdlib.snap_names(name, True))
    run_io(t.qemu_io, uri(name), ['read -P 0 0 1M'], fmt='raw')


@R.case()
def key_secret_like_qemu():
    """key-secret names a secret object, as in QEMU: an unknown id fails
    with QEMU's text in both tools; a known one is handed to librados as
    the cephx key (base64 of the secret).  The throw-away cluster runs
    without authentication, so it accepts any key: this checks the
    option's plumbing and errors, not a cephx handshake."""
    t = rbdlib.setup()
    name = rbdlib.new_name()
    rbdlib.rbd_create(name, SIZE)
    opts = 'driver=rbd,pool=%s,image=%s' % (rbdlib.POOL, name)
    for tool in (t.io, t.qemu_io):
        expect_open_error([tool, '--image-opts', opts + ',key-secret=nope',
                           '-c', 'read 0 512'], "No secret with id 'nope'",
                          60)
        res = run([tool, '--object', 'secret,id=k,data=AQBkey==',
                   '--image-opts', opts + ',key-secret=k,user=admin',
                   '-c', 'write -P 0x5c 0 4k', '-c', 'read -P 0x5c 0 4k'])
        check('Pattern verification failed' not in res.out and
              res.out.count('bytes at offset') == 2, res.describe())


if __name__ == '__main__':
    sys.exit(R.main())
