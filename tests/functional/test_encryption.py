#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Encrypted images (qcow2 LUKS and legacy AES, the raw luks format),
side by side with QEMU's tools: each side reads what the other wrote.

- luks_ours_read_by_qemu: strata-img creates a LUKS qcow2, strata-io
  writes patterns (whole clusters, a partial sector, a range across two
  unallocated clusters, a zero write); qemu-io reads them all back,
  qemu-img check finds the image clean and its header extension and
  key slots are what QEMU's own create makes (same layout in info);
- luks_qemu_read_by_ours: the other way round, including COW of a
  cluster an internal snapshot shares (the copy moves to a new host
  offset, so it must be re-encrypted: the IV is the host sector);
- aes_both_ways: the same for the legacy method (encryption=on),
  whose IV is the guest sector;
- wrong_or_missing_key_like_qemu: a wrong password, a missing
  encrypt.key-secret, an unknown secret id, a wrong encrypt.format:
  qemu-io's texts and exit codes, and the file unchanged;
- info_without_key: strata-img info describes an encrypted image without
  its key, as qemu-img does (same lines but uuid and iteration counts);
- raw_luks_format_both_ways: -f luks images made by either tool (the
  size QEMU's are) are written by it and read by the other, across a
  partial-sector write;
- amend_key_slots: strata-img amend adds a key slot and erases one;
  qemu-io opens with the new secret and not with the erased one;
  erasing the last slot is refused with QEMU's text;
- measure_like_qemu: measure with encrypt.format=luks gives qemu-img's
  numbers;
- preallocated_convert_reads_source: convert into an encrypted image
  created with preallocation=metadata: the target reads as the source
  (its preallocated clusters hold no zeroes, so convert must write them);
- compressed_write_refused: a compressed write to an encrypted image is
  refused and changes nothing;
- daemon_opens_encrypted_nodes_like_qsd: strata-daemon and
  qemu-storage-daemon, each given --object secret and an encrypted qcow2
  (and a luks) --blockdev: the same node description over QMP (the
  json:{...} name, encrypted, the LUKS header's description in
  format-specific, in QEMU's member order), an internal snapshot taken
  over QMP that qemu-img then lists, the data intact; a wrong key id or
  a wrong password stops both daemons with the same message;
- qmp_object_add_del_like_qsd: the same QMP conversation with both
  daemons: object-add of a master key and of the password encrypted
  with it (keyid=, iv=, as libvirt passes secrets), blockdev-add of an
  encrypted qcow2 using it, the errors of a duplicate id, a missing
  secret, an unknown id to delete and a bad format value (the same
  replies), object-del of the secret while a node opened with it stays
  (its data read back after the daemon quits), and a blockdev-add
  failing afterwards for want of it.
"""

import json
import os
import re
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
from common import check, run  # noqa: E402

runner = common.Runner()

SECRET = 'secret,id=sec0,data=astrochicken'
WRONG = 'secret,id=sec0,data=platypus'
LUKS_OPTS = 'encrypt.format=luks,encrypt.key-secret=sec0,encrypt.iter-time=10'
AES_OPTS = 'encryption=on,encrypt.key-secret=sec0'


def spec(img, extra=''):
    return 'driver=qcow2,file.filename=%s,encrypt.key-secret=sec0%s' % (
        img, extra)


def io(tool, img, cmds, secret=SECRET, rc=0):
    """qemu-io style run on an encrypted qcow2 opened with --image-opts."""
    return common.run_io(tool, spec(img), cmds, fmt=None,
                         extra=['--object', secret, '--image-opts'], rc=rc)


def create(tool, img, opts, size='4M', fmt='qcow2'):
    run([tool, 'create', '-q', '-f', fmt, '--object', SECRET, '-o', opts,
         img, size])


def check_clean(img):
    run([common.tools().qemu_img, 'check', '--object', SECRET,
         '--image-opts', spec(img)])


# writes covering whole clusters, a partial sector, two unallocated
# clusters at once (iotest 263's case) and a zero write
WRITES = ['write -P 0x11 0 64k', 'write -P 0x22 65636 100',
          'write -P 0x33 192k 8k', 'write -P 0x44 ' + str(320 * 1024 - 512)
          + ' 1k', 'write -z 448k 64k', 'write -P 0x55 1000 24']
READS = ['read -P 0x11 0 1000', 'read -P 0x55 1000 24',
         'read -P 0x11 1024 64512', 'read -P 0 64k 100',
         'read -P 0x22 65636 100', 'read -P 0 65736 62 ',
         'read -P 0x33 192k 8k', 'read -P 0x44 ' + str(320 * 1024 - 512)
         + ' 1k', 'read -P 0 448k 64k', 'read -P 0 1M 64k']


def both_ways(writer_img, writer_io, reader_io, opts):
    t = common.tools()
    with common.TempDir() as d:
        img = os.path.join(d, 'a.qcow2')
        create(writer_img, img, opts)
        io(writer_io, img, WRITES)
        io(reader_io, img, [r.strip() for r in READS])
        check_clean(img)
        return run([t.qemu_img, 'info', '--output=json', img]).out


@runner.case()
def luks_ours_read_by_qemu():
    t = common.tools()
    ours = json.loads(both_ways(t.img, t.io, t.qemu_io, LUKS_OPTS))
    with common.TempDir() as d:
        img = os.path.join(d, 'q.qcow2')
        create(t.qemu_img, img, LUKS_OPTS)
        theirs = json.loads(run([t.qemu_img, 'info', '--output=json',
                                 img]).out)
    enc_o = ours['format-specific']['data']['encrypt']
    enc_t = theirs['format-specific']['data']['encrypt']
    for e in (enc_o, enc_t):
        e.pop('uuid')
        e.pop('master-key-iters')
        for sl in e['slots']:
            sl.pop('iters', None)
    check(enc_o == enc_t, 'LUKS header differs from QEMU\'s:\n%s\n%s'
          % (enc_o, enc_t))
    check(ours.get('encrypted') is True, 'not reported encrypted')


@runner.case()
def luks_qemu_read_by_ours():
    t = common.tools()
    both_ways(t.qemu_img, t.qemu_io, t.io, LUKS_OPTS)
    # a cluster shared with an internal snapshot is copied on write: the
    # copy lands at a new host offset and must be re-encrypted
    with common.TempDir() as d:
        img = os.path.join(d, 's.qcow2')
        create(t.qemu_img, img, LUKS_OPTS)
        io(t.qemu_io, img, ['write -P 0x61 0 128k'])
        run([t.img, 'snapshot', '-c', 'sn', '--object', SECRET,
             '--image-opts', spec(img)])
        io(t.io, img, ['write -P 0x62 4k 512'])
        io(t.qemu_io, img, ['read -P 0x61 0 4k', 'read -P 0x62 4k 512',
                            'read -P 0x61 4608 123392'])
        check_clean(img)
        run([t.qemu_img, 'snapshot', '-a', 'sn', '--object', SECRET,
             '--image-opts', spec(img)])
        io(t.qemu_io, img, ['read -P 0x61 0 128k'])


@runner.case()
def aes_both_ways():
    t = common.tools()
    both_ways(t.img, t.io, t.qemu_io, AES_OPTS)
    both_ways(t.qemu_img, t.qemu_io, t.io, AES_OPTS)


def prog_err(res, tool):
    return common.normalize_prog(res.err, os.path.basename(tool))


@runner.case()
def wrong_or_missing_key_like_qemu():
    t = common.tools()
    with common.TempDir() as d:
        img = os.path.join(d, 'a.qcow2')
        create(t.qemu_img, img, LUKS_OPTS)
        io(t.qemu_io, img, ['write -P 0x11 0 64k'])
        before = open(img, 'rb').read()
        cases = [
            ['--object', WRONG, '--image-opts', spec(img)],
            ['--image-opts', 'driver=qcow2,file.filename=' + img],
            ['--object', SECRET, '--image-opts',
             'driver=qcow2,file.filename=%s,encrypt.key-secret=nope' % img],
            ['--object', SECRET, '--image-opts',
             spec(img, ',encrypt.format=aes')],
            ['--object', 'secret,id=sec0', '--image-opts', spec(img)],
            [img],
        ]
        for argv in cases:
            outs = []
            for tool in (t.qemu_io, t.io):
                r = run([tool, '-c', 'read 0 512'] + argv, rc=None)
                outs.append((r.rc, prog_err(r, tool), r.out))
            check(outs[0] == outs[1], 'differs from qemu-io for %s:\n'
                  'qemu: %r\nours: %r' % (argv, outs[0], outs[1]))
            check(outs[1][0] != 0, 'opened without the right key: %s' % argv)
        check(open(img, 'rb').read() == before, 'a refused open changed '
              'the image')


@runner.case()
def info_without_key():
    t = common.tools()
    with common.TempDir() as d:
        img = os.path.join(d, 'a.qcow2')
        create(t.qemu_img, img, LUKS_OPTS)
        outs = []
        for tool in (t.qemu_img, t.img):
            out = run([tool, 'info', img]).out
            out = re.sub(r'disk size: .*\n', '', out)
            outs.append(re.sub(r'iters: \d+', 'iters: N', out))
        check(outs[0] == outs[1], 'info differs:\nqemu:\n%s\nours:\n%s'
              % tuple(outs))
        check('encrypted: yes' in outs[1] and 'format: luks' in outs[1],
              'not described as encrypted:\n' + outs[1])


def luks_spec(img):
    return 'driver=luks,key-secret=sec0,file.filename=' + img


@runner.case()
def raw_luks_format_both_ways():
    t = common.tools()
    with common.TempDir() as d:
        for n, (maker, writer, reader) in enumerate(
                ((t.img, t.io, t.qemu_io), (t.qemu_img, t.qemu_io, t.io))):
            img = os.path.join(d, 'l%d.luks' % n)
            run([maker, 'create', '-q', '-f', 'luks', '--object', SECRET,
                 '-o', 'key-secret=sec0,iter-time=10', img, '1M'])
            check(os.path.getsize(img) == 2068480 + (1 << 20),
                  'size %d' % os.path.getsize(img))
            # (never-written sectors decrypt to garbage in both tools:
            # only what was written is compared; the second write covers
            # parts of two sectors, whose other bytes must survive)
            common.run_io(writer, luks_spec(img),
                          ['write -P 0x77 0 8k', 'write -P 0x78 5000 200'],
                          fmt=None, extra=['--object', SECRET,
                                           '--image-opts'])
            common.run_io(reader, luks_spec(img),
                          ['read -P 0x77 0 5000', 'read -P 0x78 5000 200',
                           'read -P 0x77 5200 2992'],
                          fmt=None, extra=['--object', SECRET,
                                           '--image-opts'])


@runner.case()
def amend_key_slots():
    t = common.tools()
    s1 = 'secret,id=sec1,data=hunter1'
    with common.TempDir() as d:
        img = os.path.join(d, 'a.qcow2')
        create(t.qemu_img, img, LUKS_OPTS)
        io(t.qemu_io, img, ['write -P 0x11 0 64k'])
        objs = ['--object', SECRET, '--object', s1]
        run([t.img, 'amend'] + objs + ['--image-opts', spec(img), '-o',
            'encrypt.state=active,encrypt.new-secret=sec1,'
            'encrypt.iter-time=10'])
        s1spec = 'driver=qcow2,file.filename=%s,encrypt.key-secret=sec1' % img
        common.run_io(t.qemu_io, s1spec, ['read -P 0x11 0 64k'], fmt=None,
                      extra=['--object', s1, '--image-opts'])
        run([t.img, 'amend'] + objs + ['--image-opts', s1spec, '-o',
            'encrypt.state=inactive,encrypt.keyslot=0'])
        r = run([t.qemu_io, '--object', SECRET, '--image-opts', spec(img),
                 '-c', 'read 0 512'], rc=1)
        check('Invalid password, cannot unlock any keyslot' in r.err,
              'the erased slot still opens:\n' + r.describe())
        r = run([t.img, 'amend'] + objs + ['--image-opts', s1spec, '-o',
                'encrypt.state=inactive,encrypt.keyslot=1'], rc=1)
        check('Attempt to erase the only active keyslot 1 which will erase '
              'all the data in the image irreversibly - refusing operation'
              in r.err, 'last slot not protected:\n' + r.describe())
        common.run_io(t.qemu_io, s1spec, ['read -P 0x11 0 64k'], fmt=None,
                      extra=['--object', s1, '--image-opts'])
        run([t.qemu_img, 'check', '--object', s1, '--image-opts', s1spec])


@runner.case()
def measure_like_qemu():
    t = common.tools()
    outs = []
    for tool in (t.qemu_img, t.img):
        outs.append(run([tool, 'measure', '--object', SECRET, '-O', 'qcow2',
                         '-o', LUKS_OPTS, '--size', '1G']).out)
    check(outs[0] == outs[1], 'measure differs:\n%s\n%s' % tuple(outs))


@runner.case()
def preallocated_convert_reads_source():
    t = common.tools()
    with common.TempDir() as d:
        src = os.path.join(d, 's.qcow2')
        dst = os.path.join(d, 'd.qcow2')
        run([t.qemu_img, 'create', '-q', '-f', 'qcow2', src, '1M'])
        run([t.qemu_io, '-c', 'write -P 0x31 64k 64k', src])
        run([t.img, 'convert', '-O', 'qcow2', '--object', SECRET, '-o',
             LUKS_OPTS + ',preallocation=metadata', src, dst])
        r = run([t.qemu_img, 'compare', '--object', SECRET, '--image-opts',
                 'driver=qcow2,file.filename=' + src, spec(dst)], rc=None)
        check(r.rc == 0 and 'Images are identical.' in r.out,
              'converted image differs:\n' + r.describe())


@runner.case()
def compressed_write_refused():
    common.skip_if_qemu_tools('qemu-io writes compressed clusters in clear')
    t = common.tools()
    with common.TempDir() as d:
        img = os.path.join(d, 'a.qcow2')
        create(t.qemu_img, img, LUKS_OPTS)
        before = open(img, 'rb').read()
        r = run([t.io, '--object', SECRET, '--image-opts', spec(img),
                 '-c', 'write -c 0 64k'], rc=None)
        check('Operation not supported' in r.out + r.err,
              'compressed write not refused:\n' + r.describe())
        check(open(img, 'rb').read() == before, 'refused write changed '
              'the image')


def luks_facts_normalised(text):
    """A LUKS description with what differs between two headers made
    alike (uuid, measured iteration counts) replaced."""
    text = re.sub(r'"uuid": "[^"]*"', '"uuid": "U"', text)
    return re.sub(r'"(master-key-iters|iters)": \d+', r'"\1": N', text)


def node_facts(reply):
    """What both daemons must agree on about the named nodes, the
    format-specific facts (the LUKS header's description) in their text
    order."""
    out = {}
    for n in reply[0]['return']:
        if n['node-name'].startswith('#'):
            continue
        out[n['node-name']] = (n['file'], n['encrypted'], n['drv'],
                               n['image'].get('encrypted'),
                               n['image']['filename'],
                               luks_facts_normalised(json.dumps(
                                   n['image'].get('format-specific'))))
    return out


@runner.case()
def daemon_opens_encrypted_nodes_like_qsd():
    import qmplib
    strata, qsd = qmplib.daemon_paths()
    t = common.tools()
    facts = {}
    with common.TempDir() as d:
        for side, binary in (('qsd', qsd), ('strata', strata)):
            sd = os.path.join(d, side)
            os.mkdir(sd)
            img = os.path.join(sd, 'a.qcow2')
            lk = os.path.join(sd, 'b.luks')
            create(t.qemu_img, img, LUKS_OPTS)
            io(t.qemu_io, img, ['write -P 0x21 0 64k'])
            run([t.qemu_img, 'create', '-q', '-f', 'luks', '--object', SECRET,
                 '-o', 'key-secret=sec0,iter-time=10', lk, '1M'])
            args = ['--object', SECRET,
                    '--blockdev', 'driver=qcow2,node-name=d0,file.driver=file,'
                    'file.filename=%s,encrypt.format=luks,'
                    'encrypt.key-secret=sec0' % img,
                    '--blockdev', 'driver=luks,node-name=d1,file.driver=file,'
                    'file.filename=%s,key-secret=sec0' % lk]
            dm = qmplib.Daemon(binary, args, sd)
            dm.send({'execute': 'qmp_capabilities'})
            got = node_facts(dm.send({'execute': 'query-named-block-nodes',
                                      'arguments': {'flat': True}}))
            facts[side] = json.loads(json.dumps(got).replace(sd, 'DIR'))
            r = dm.send({'execute': 'blockdev-snapshot-internal-sync',
                         'arguments': {'device': 'd0', 'name': 'sn1'}})
            check(r == [{'return': {}}], 'snapshot failed: %r' % r)
            check(dm.quit() == 0, '%s did not quit cleanly' % side)
            out = run([t.qemu_img, 'snapshot', '-l', '--object', SECRET,
                       '--image-opts', spec(img)]).out
            check(' sn1 ' in out, 'no snapshot:\n' + out)
            io(t.qemu_io, img, ['read -P 0x21 0 64k'])
            check_clean(img)
        check(facts['qsd'] == facts['strata'], 'node descriptions differ:\n'
              'qsd:    %s\nstrata: %s' % (facts['qsd'], facts['strata']))
        check(facts['strata']['d0'][1] is True, 'not reported encrypted')
        check('"encrypt": {"' in facts['strata']['d0'][5] and
              '"cipher-alg": "aes-256"' in facts['strata']['d0'][5] and
              '"type": "luks"' in facts['strata']['d1'][5],
              'no LUKS description: %r' % (facts['strata'],))
        # a key the daemon does not have, a wrong password
        img = os.path.join(d, 'qsd', 'a.qcow2')
        errs = []
        for secret, key in (('secret,id=sec0,data=x', 'nope'),
                            (WRONG, 'sec0')):
            for binary in (qsd, strata):
                p = subprocess.run(
                    [binary, '--object', secret, '--blockdev',
                     'driver=qcow2,node-name=d0,file.driver=file,'
                     'file.filename=%s,encrypt.key-secret=%s' % (img, key)],
                    stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                    timeout=60)
                check(p.returncode != 0, '%s started without the key'
                      % binary)
                errs.append(p.stderr.decode().split(': ', 1)[1])
        check(errs[0] == errs[1] and errs[2] == errs[3],
              'daemon errors differ: %r' % errs)


def obj_session(binary, sd, img, img2):
    """One QMP conversation about secrets; the replies, the directory
    name replaced."""
    import qmplib

    def blockdev(node, path):
        return {'driver': 'qcow2', 'node-name': node,
                'file': {'driver': 'file', 'filename': path},
                'encrypt': {'format': 'luks', 'key-secret': 'k1'}}
    cmds = [
        # libvirt's way: a master key, then the password encrypted with
        # it (AES-256-CBC; made once with openssl enc, key bytes 0..31,
        # IV bytes 0xa0..0xaf)
        ('object-add', {'qom-type': 'secret', 'id': 'master',
                        'format': 'base64', 'data': 'AAECAwQFBgcICQoLDA0ODx'
                        'AREhMUFRYXGBkaGxwdHh8='}),
        ('object-add', {'qom-type': 'secret', 'id': 'k1', 'keyid': 'master',
                        'iv': 'oKGio6SlpqeoqaqrrK2urw==', 'format': 'base64',
                        'data': 'J72nCQpnE4fUl6jlhNY4tA=='}),
        ('object-add', {'qom-type': 'secret', 'id': 'k1', 'data': 'x'}),
        ('object-add', {'qom-type': 'secret', 'id': 'k2', 'data': 'x',
                        'format': 'hex'}),
        ('blockdev-add', blockdev('d0', img)),
        ('object-del', {'id': 'k1'}),
        ('object-del', {'id': 'k1'}),
        ('blockdev-add', blockdev('d1', img2)),
        ('query-named-block-nodes', {'flat': True}),
    ]
    dm = qmplib.Daemon(binary, [], sd)
    dm.send({'execute': 'qmp_capabilities'})
    replies = []
    for name, arguments in cmds:
        r = dm.send({'execute': name, 'arguments': arguments})[-1]
        if name == 'query-named-block-nodes':
            r = sorted(n['node-name'] for n in r['return']
                       if not n['node-name'].startswith('#'))
        else:
            r = r.get('error', {}).get('desc', r.get('return'))
        replies.append((name, r))
    check(dm.quit() == 0, '%s did not quit cleanly' % binary)
    return json.loads(json.dumps(replies).replace(sd, 'DIR'))


@runner.case()
def qmp_object_add_del_like_qsd():
    import qmplib
    strata, qsd = qmplib.daemon_paths()
    t = common.tools()
    got = {}
    with common.TempDir() as d:
        for side, binary in (('qsd', qsd), ('strata', strata)):
            sd = os.path.join(d, side)
            os.mkdir(sd)
            img = os.path.join(sd, 'a.qcow2')
            img2 = os.path.join(sd, 'b.qcow2')
            for p in (img, img2):
                create(t.qemu_img, p, LUKS_OPTS)
            io(t.qemu_io, img, ['write -P 0x21 0 64k'])
            got[side] = obj_session(binary, sd, img, img2)
            io(t.qemu_io, img, ['read -P 0x21 0 64k'])
            check_clean(img)
    check(got['qsd'] == got['strata'],
          'replies differ:\nqsd:    %s\nstrata: %s' % (got['qsd'],
                                                        got['strata']))
    want = [['object-add', {}],
            ['object-add', {}],
            ['object-add', "attempt to add duplicate property 'k1' to "
             "object (type 'container')"],
            ['object-add', "Parameter 'format' does not accept value 'hex'"],
            ['blockdev-add', {}],
            ['object-del', {}],
            ['object-del', "object 'k1' not found"],
            ['blockdev-add', "No secret with id 'k1'"],
            ['query-named-block-nodes', ['d0']]]
    check(got['strata'] == want, 'unexpected replies %r' % got['strata'])

if __name__ == '__main__':
    sys.exit(runner.main())
