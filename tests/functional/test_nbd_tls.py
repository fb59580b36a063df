#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""TLS on strata-daemon's NBD exports: --object tls-creds-x509 and
--nbd-server ...,tls-creds=.

Certificates are made here with certtool (gnutls-bin): a CA, a server
certificate for 127.0.0.1/localhost, a client certificate, and a second,
unrelated CA with its own client certificate.
- qemu-io and qemu-img (x509 client credentials) write and read through
  the TLS export; nbdinfo (nbds://, tls-certificates=) reads; the data is
  in the image after the daemon quit.
- A client without TLS gets NBD_REP_ERR_TLS_REQD for every option and no
  data (qemu-io fails; raw GO / INFO / LIST / EXPORT_NAME are refused);
  a client trusting another CA refuses the server, and a client whose
  certificate another CA signed is refused by the server (verify-peer,
  QEMU's default), before any export is shown.
- Bad --object / tls-creds arguments fail at startup with a message.

Needs $STRATA_DAEMON, qemu-img, qemu-io, certtool; nbdinfo for its case.
Skips (77) without them.
"""

import os
import shutil
import socket
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
from common import Skip, check  # noqa: E402
from qmplib import Daemon, cmd  # noqa: E402
import nbdwire as w  # noqa: E402

runner = common.Runner()
SIZE = 16 << 20


def strata():
    path = os.environ.get('STRATA_DAEMON')
    if not path or not os.access(path, os.X_OK):
        raise Skip('STRATA_DAEMON is not set to strata-daemon')
    if not shutil.which('certtool'):
        raise Skip('certtool (gnutls-bin) not found')
    return path


def certtool(*args):
    common.run(['certtool'] + list(args))


def template(d, name, text):
    path = os.path.join(d, name + '.info')
    with open(path, 'w') as f:
        f.write(text + 'expiration_days = 2\n')
    return path


def make_ca(d, name):
    key = os.path.join(d, name + '-key.pem')
    cert = os.path.join(d, name + '-cert.pem')
    certtool('--generate-privkey', '--key-type=ecdsa', '--outfile', key)
    certtool('--generate-self-signed', '--load-privkey', key, '--template',
             template(d, name, 'cn = %s\nca\ncert_signing_key\n' % name),
             '--outfile', cert)
    return key, cert


def make_cert(d, name, ca, text, outdir, prefix):
    key = os.path.join(outdir, prefix + '-key.pem')
    cert = os.path.join(outdir, prefix + '-cert.pem')
    certtool('--generate-privkey', '--key-type=ecdsa', '--outfile', key)
    certtool('--generate-certificate', '--load-privkey', key,
             '--load-ca-certificate', ca[1], '--load-ca-privkey', ca[0],
             '--template', template(d, name, text), '--outfile', cert)


SERVER = ('organization = strata\ncn = localhost\ndns_name = localhost\n'
          'ip_address = 127.0.0.1\ntls_www_server\nencryption_key\n'
          'signing_key\n')
CLIENT = 'organization = strata\ncn = client\ntls_www_client\n' \
         'encryption_key\nsigning_key\n'


def make_pki(d):
    """Directories: server/, client/ (good), wrongca/ (trusts another CA,
    its certificate from that CA), badcert/ (trusts our CA, its
    certificate from the other CA)."""
    ca = make_ca(d, 'ca')
    other = make_ca(d, 'other')
    dirs = {}
    for name in ('server', 'client', 'wrongca', 'badcert'):
        dirs[name] = os.path.join(d, name)
        os.mkdir(dirs[name])
    make_cert(d, 'server', ca, SERVER, dirs['server'], 'server')
    make_cert(d, 'client', ca, CLIENT, dirs['client'], 'client')
    make_cert(d, 'wrongca', other, CLIENT, dirs['wrongca'], 'client')
    make_cert(d, 'badcert', other, CLIENT, dirs['badcert'], 'client')
    for name, cacert in (('server', ca[1]), ('client', ca[1]),
                         ('wrongca', other[1]), ('badcert', ca[1])):
        shutil.copy(cacert, os.path.join(dirs[name], 'ca-cert.pem'))
    return dirs


_PKI = {}


def shared_pki():
    """One set of certificates for the whole script (key generation is
    the slow part); removed by main()."""
    if not _PKI:
        import tempfile
        _PKI['dir'] = tempfile.mkdtemp(prefix='strata-nbdtls-pki-')
        _PKI['dirs'] = make_pki(_PKI['dir'])
    return _PKI['dirs']


def free_port():
    s = socket.socket()
    s.bind(('127.0.0.1', 0))
    port = s.getsockname()[1]
    s.close()
    return port


class TlsServer:
    def __init__(self, d, dirs, identity=None):
        self.img = os.path.join(d, 'a.qcow2')
        common.run(['qemu-img', 'create', '-q', '-f', 'qcow2', self.img,
                    str(SIZE)])
        common.run(['qemu-io', '-f', 'qcow2', '-c',
                    'write -P 0xab 0 %d' % SIZE, self.img])
        self.port = free_port()
        authz = []
        if identity:
            # keyval: a comma in a value is written twice
            authz = ['--object', 'authz-simple,id=a0,identity=%s'
                     % identity.replace(',', ',,')]
        self.dm = Daemon(strata(), [
            '--object', 'tls-creds-x509,id=t0,dir=%s,endpoint=server'
            % dirs['server']] + authz + [
            '--blockdev', 'driver=qcow2,node-name=d0,file.driver=file,'
            'file.filename=%s' % self.img,
            '--nbd-server', 'addr.type=inet,addr.host=127.0.0.1,'
            'addr.port=%d,tls-creds=t0%s' % (
                self.port, ',tls-authz=a0' if identity else ''),
            '--export', 'type=nbd,id=e0,node-name=d0,name=disk,writable=on'],
            d)

    def io(self, creds_dir, cmds, rc=0):
        args = ['qemu-io']
        opts = 'driver=nbd,host=127.0.0.1,port=%d,export=disk' % self.port
        if creds_dir:
            args += ['--object', 'tls-creds-x509,id=tls0,endpoint=client,'
                     'dir=%s' % creds_dir]
            opts += ',tls-creds=tls0'
        return common.run(args + ['--image-opts', opts] +
                          common.io_args(cmds), rc=rc)

    def quit(self):
        self.dm.send(cmd('qmp_capabilities'))
        check(self.dm.quit() == 0, 'daemon exit status')


@runner.case()
def tls_clients_read_and_write():
    with common.TempDir('strata-nbdtls-') as d:
        dirs = shared_pki()
        srv = TlsServer(d, dirs)
        try:
            res = srv.io(dirs['client'], ['write -P 0x5a 1M 64k',
                                          'read -P 0x5a 1M 64k',
                                          'read -P 0xab 0 64k'])
            check('Pattern verification failed' not in res.out and
                  res.out.count('bytes at offset') == 3, res.out)
            out = os.path.join(d, 'out.raw')
            common.run([
                'qemu-img', 'convert', '--object',
                'tls-creds-x509,id=tls0,endpoint=client,dir=%s'
                % dirs['client'], '--image-opts',
                'driver=nbd,host=127.0.0.1,port=%d,export=disk,'
                'tls-creds=tls0' % srv.port, '-O', 'raw', out])
            with open(out, 'rb') as f:
                data = f.read()
            check(data[1 << 20:(1 << 20) + 65536] == b'\x5a' * 65536 and
                  data[:65536] == b'\xab' * 65536, 'qemu-img convert data')
            if shutil.which('nbdinfo'):
                res = common.run([
                    'nbdinfo', 'nbds://127.0.0.1:%d/disk?tls-certificates=%s'
                    % (srv.port, dirs['client'])])
                check('export-size: %d' % SIZE in res.out and
                      'TLS' in res.out, 'nbdinfo over TLS:\n' + res.out)
        finally:
            srv.quit()
        res = common.run(['qemu-io', '-f', 'qcow2', '-c',
                          'read -P 0x5a 1M 64k', srv.img])
        check('Pattern verification failed' not in res.out,
              'the TLS write is not in the image')
        common.qemu_check_clean(srv.img)


@runner.case()
def refused_without_tls_or_with_wrong_ca():
    with common.TempDir('strata-nbdtls-') as d:
        dirs = shared_pki()
        srv = TlsServer(d, dirs)
        try:
            res = srv.io(None, ['read 0 512'], rc=1)
            check('TLS' in res.err and 'read 512' not in res.out,
                  'a plain client was served:\n' + res.text)
            res = srv.io(dirs['wrongca'], ['read 0 512'], rc=1)
            check('read 512' not in res.out,
                  'a client trusting another CA was served:\n' + res.text)
            res = srv.io(dirs['badcert'], ['write -P 1 0 512'], rc=1)
            check('wrote' not in res.out,
                  'a client certificate of another CA was accepted:\n'
                  + res.text)
            # on the wire: every option but STARTTLS is refused
            c = w.Client.__new__(w.Client)
            c.sock = socket.create_connection(('127.0.0.1', srv.port), 30)
            c.structured, c.handle = False, 0
            c.hello()
            for opt, data in ((w.OPT_GO, c.name_data('disk')),
                              (w.OPT_INFO, c.name_data('disk')),
                              (w.OPT_LIST, b''),
                              (w.OPT_STRUCTURED_REPLY, b'')):
                r = c.option_replies(opt, data)
                check(r[-1][0] == 0x80000005,
                      'option %d before TLS: %s' % (opt, r))
            c.option(w.OPT_EXPORT_NAME, b'disk')
            check(c.is_closed(), 'EXPORT_NAME before TLS not closed')
            c.close()
        finally:
            srv.quit()
        # nothing was written by the refused clients
        res = common.run(['qemu-io', '-f', 'qcow2', '-c',
                          'read -P 0xab 0 %d' % SIZE, srv.img])
        check('Pattern verification failed' not in res.out,
              'a refused client changed the image')


@runner.case()
def tls_authz_identity():
    """tls-authz with authz-simple: the client's certificate name (as
    GnuTLS prints it, QEMU's comparison) must be the identity."""
    dirs = shared_pki()
    for identity, allowed in (('O=strata,CN=client', True),
                              ('O=strata,CN=someone-else', False)):
        with common.TempDir('strata-nbdtls-') as d:
            srv = TlsServer(d, dirs, identity)
            try:
                res = srv.io(dirs['client'], ['read -P 0xab 0 512'],
                             rc=0 if allowed else 1)
                check(('read 512' in res.out) == allowed,
                      '%s: %s' % (identity, res.text))
            finally:
                srv.quit()


@runner.case()
def bad_tls_arguments():
    with common.TempDir('strata-nbdtls-') as d:
        binary = strata()
        empty = os.path.join(d, 'empty')
        os.mkdir(empty)
        cases = [
            (['--object', 'tls-creds-x509,id=t0,dir=%s,endpoint=server'
              % empty], 'ca-cert.pem'),
            (['--nbd-server', 'addr.type=inet,addr.host=127.0.0.1,'
              'addr.port=%d,tls-creds=nope' % free_port()],
             "No TLS credentials with id 'nope'"),
            (['--object', 'tls-creds-x509,id=t0,dir=%s,bogus=1' % empty],
             "Property 'tls-creds-x509.bogus' not found"),
            # an object type strata-daemon lacks (secrets it has)
            (['--object', 'authz-list,id=a0'], 'tls-creds-x509'),
            (['--object', 'secret,id=s0'],
             "Either 'file' or 'data' must be provided"),
            (['--nbd-server', 'addr.type=inet,addr.host=127.0.0.1,'
              'addr.port=%d,tls-authz=a0' % free_port()],
             'tls-authz is not supported without tls-creds'),
        ]
        for args, text in cases:
            p = subprocess.run([binary] + args, capture_output=True,
                               text=True, timeout=60)
            check(p.returncode == 1 and text in p.stderr,
                  '%s: rc %d, %s' % (args, p.returncode, p.stderr))


@runner.case()
def qmp_object_add_and_del():
    """object-add of credentials and an authz list over QMP, then
    nbd-server-start with them: a TLS client reads.  object-del of the
    credentials the running server uses is refused (strata frees what it
    deletes; QEMU keeps its own reference and deletes the name), of the
    authz list (the server copied the identity) and, after
    nbd-server-stop, of the credentials it is not."""
    dirs = shared_pki()
    with common.TempDir('strata-nbdtls-') as d:
        img = os.path.join(d, 'a.qcow2')
        common.run(['qemu-img', 'create', '-q', '-f', 'qcow2', img,
                    str(SIZE)])
        common.run(['qemu-io', '-f', 'qcow2', '-c', 'write -P 0xab 0 1M',
                    img])
        port = free_port()
        dm = Daemon(strata(), ['--blockdev', 'driver=qcow2,node-name=d0,'
                               'file.driver=file,file.filename=%s' % img], d)
        try:
            def ok(req):
                r = dm.send(req)[-1]
                check(r == {'return': {}}, '%r: %r' % (req, r))

            def err(req, desc):
                r = dm.send(req)[-1]
                check(r.get('error', {}).get('desc') == desc,
                      '%r: %r, expected %r' % (req, r, desc))
            dm.send(cmd('qmp_capabilities'))
            ok(cmd('object-add', **{'qom-type': 'tls-creds-x509', 'id': 't0',
                                    'dir': dirs['server'],
                                    'endpoint': 'server'}))
            ok(cmd('object-add', **{'qom-type': 'authz-simple', 'id': 'a0',
                                    'identity': 'O=strata,CN=client'}))
            err(cmd('object-add', **{'qom-type': 'secret', 'id': 't0',
                                     'data': 'x'}),
                "attempt to add duplicate property 't0' to object (type "
                "'container')")
            ok(cmd('nbd-server-start', addr={
                'type': 'inet', 'data': {'host': '127.0.0.1',
                                         'port': str(port)}},
                **{'tls-creds': 't0', 'tls-authz': 'a0'}))
            ok(cmd('block-export-add', type='nbd', id='e0',
                   **{'node-name': 'd0', 'name': 'disk'}))
            err(cmd('object-del', id='t0'),
                "object 't0' is in use, can not be deleted")
            ok(cmd('object-del', id='a0'))
            res = common.run(
                ['qemu-io', '-r', '--object', 'tls-creds-x509,id=tls0,'
                 'endpoint=client,dir=%s' % dirs['client'], '--image-opts',
                 'driver=nbd,host=127.0.0.1,port=%d,export=disk,'
                 'tls-creds=tls0' % port, '-c', 'read -P 0xab 0 64k'])
            check('read 65536/65536' in res.out, res.text)
            ok(cmd('nbd-server-stop'))
            ok(cmd('object-del', id='t0'))
            err(cmd('object-del', id='t0'), "object 't0' not found")
            err(cmd('nbd-server-start', addr={
                'type': 'inet', 'data': {'host': '127.0.0.1',
                                         'port': str(port)}},
                **{'tls-creds': 't0'}), "No TLS credentials with id 't0'")
        finally:
            check(dm.quit() == 0, 'daemon exit status')


def strata_io_tls(creds, opts, cmds, rc=0):
    """strata-io with --object CREDS (none if None) on --image-opts OPTS."""
    t = common.tools()
    args = [t.io]
    if creds:
        args += ['--object', creds]
    return common.run(args + ['--image-opts', opts] + common.io_args(cmds),
                      rc=rc)


def x509_client(dirname):
    return 'tls-creds-x509,id=tls0,endpoint=client,dir=%s' % dirname


@runner.case()
def strata_tools_as_tls_clients():
    """strata's NBD client with --object tls-creds-x509 and tls-creds=:
    strata-io writes and reads through strata-daemon's TLS export and
    strata-img copies it; without credentials, trusting another CA, or
    with a certificate of another CA it is refused and writes nothing;
    a TLS client of a plain server is refused too.  The data is in the
    image after the daemon quit."""
    t = common.tools()
    with common.TempDir('strata-nbdtls-') as d:
        dirs = shared_pki()
        srv = TlsServer(d, dirs)
        opts = 'driver=nbd,host=127.0.0.1,port=%d,export=disk' % srv.port
        try:
            res = strata_io_tls(x509_client(dirs['client']),
                                opts + ',tls-creds=tls0',
                                ['write -P 0x6c 2M 64k', 'read -P 0x6c 2M 64k',
                                 'read -P 0xab 0 64k'])
            check('Pattern verification failed' not in res.out and
                  res.out.count('bytes at offset') == 3, res.out)
            info = common.run([t.img, 'info', '--object',
                               x509_client(dirs['client']), '--image-opts',
                               opts + ',tls-creds=tls0']).out
            check('image: nbd://127.0.0.1:%d/disk' % srv.port in info and
                  'file format: nbd' in info, info)
            out = os.path.join(d, 'out.raw')
            common.run([t.img, 'convert', '--object',
                        x509_client(dirs['client']), '--image-opts',
                        opts + ',tls-creds=tls0', '-O', 'raw', out])
            with open(out, 'rb') as f:
                data = f.read()
            check(data[2 << 20:(2 << 20) + 65536] == b'\x6c' * 65536 and
                  data[:65536] == b'\xab' * 65536, 'strata-img convert data')
            for creds, what in ((None, 'no credentials'),
                                (x509_client(dirs['wrongca']),
                                 'another CA trusted'),
                                (x509_client(dirs['badcert']),
                                 'a certificate of another CA')):
                res = strata_io_tls(creds, opts + (',tls-creds=tls0'
                                                   if creds else ''),
                                    ['write -P 0x11 0 512'], rc=1)
                check('wrote' not in res.out, '%s: %s' % (what, res.text))
        finally:
            srv.quit()
        res = common.run(['qemu-io', '-f', 'qcow2', '-c',
                          'read -P 0x6c 2M 64k', '-c', 'read -P 0xab 0 512',
                          srv.img])
        check('Pattern verification failed' not in res.out,
              'the TLS write is missing or a refused one landed')
        common.qemu_check_clean(srv.img)


@runner.case()
def strata_tools_with_qemu_nbd():
    """tls-creds-psk against qemu-nbd --tls-creds (user "qemu", QEMU's
    default): the right key reads what the file holds; another key, or
    TLS towards a plain qemu-nbd, is refused; x509 over a unix socket is
    refused as qemu-io refuses it (no host name to check)."""
    t = common.tools()
    qemu_nbd = shutil.which('qemu-nbd')
    if not qemu_nbd:
        raise Skip('qemu-nbd not found')
    with common.TempDir('strata-nbdpsk-') as d:
        disk = os.path.join(d, 'disk.raw')
        common.run(['qemu-img', 'create', '-q', '-f', 'raw', disk, '1M'])
        common.run(['qemu-io', '-f', 'raw', '-c', 'write -P 0x3e 0 64k',
                    disk])
        keys = {}
        for name in ('good', 'other'):
            keys[name] = os.path.join(d, name)
            os.mkdir(keys[name])
            with open(os.path.join(keys[name], 'keys.psk'), 'w') as f:
                f.write('qemu:%s\n' % os.urandom(32).hex())
        sock = os.path.join(d, 'nbd.sock')
        opts = 'driver=nbd,path=%s,tls-creds=tls0' % sock

        def psk(dirname):
            return 'tls-creds-psk,id=tls0,endpoint=client,dir=%s' % dirname
        srv = subprocess.Popen(
            [qemu_nbd, '-t', '--object', 'tls-creds-psk,id=tls0,'
             'endpoint=server,dir=%s' % keys['good'], '--tls-creds', 'tls0',
             '-f', 'raw', '-x', '', '-k', sock, disk],
            stderr=subprocess.DEVNULL)
        try:
            wait_unix(sock, srv)
            res = strata_io_tls(psk(keys['good']), opts,
                                ['read -P 0x3e 0 64k'])
            check('read 65536/65536' in res.out, res.text)
            res = strata_io_tls(psk(keys['other']), opts, ['read 0 512'],
                                rc=1)
            check('read 512' not in res.out, 'another key: ' + res.text)
        finally:
            srv.terminate()
            srv.wait()
        srv = subprocess.Popen([qemu_nbd, '-t', '-f', 'raw', '-x', '',
                                '-k', sock, disk],
                               stderr=subprocess.DEVNULL)
        try:
            wait_unix(sock, srv)
            res = strata_io_tls(psk(keys['good']), opts, ['read 0 512'],
                                rc=1)
            check('read 512' not in res.out, 'plain server: ' + res.text)
        finally:
            srv.terminate()
            srv.wait()
        # x509 over a unix socket: no host name to check the server's
        # certificate by, so refused as qemu-io refuses it
        dirs = shared_pki()
        srv = subprocess.Popen(
            [qemu_nbd, '-t', '--object', 'tls-creds-x509,id=tls0,'
             'endpoint=server,dir=%s' % dirs['server'], '--tls-creds',
             'tls0', '-f', 'raw', '-x', '', '-k', sock, disk],
            stderr=subprocess.DEVNULL)
        try:
            wait_unix(sock, srv)
            errs = []
            for prog in ('qemu-io', t.io):
                r = common.run([prog, '--object', 'tls-creds-x509,id=tls0,'
                                'endpoint=client,dir=%s' % dirs['client'],
                                '--image-opts', opts, '-c', 'read 0 512'],
                               rc=1)
                errs.append(r.err.replace(os.path.basename(prog), 'PROG'))
            check(errs[0] == errs[1] and
                  'No hostname for certificate validation' in errs[1],
                  'x509 over unix:\nqemu-io %s\nours    %s' % tuple(errs))
        finally:
            srv.terminate()
            srv.wait()


def wait_unix(sock, proc):
    common.connect_unix(sock, proc, 'qemu-nbd').close()


@runner.case()
def tls_creds_arguments_like_qemu_io():
    """Bad --object tls-creds-* and tls-creds= fail before any connection,
    with qemu-io's messages (compared but for the program's name)."""
    t = common.tools()
    dirs = shared_pki()
    with common.TempDir('strata-nbdtls-') as d:
        opts = 'driver=nbd,path=%s/none.sock,tls-creds=tls0' % d
        cases = [
            ['--object', 'tls-creds-x509,id=tls0,endpoint=client'],
            ['--object', 'tls-creds-psk,id=tls0,endpoint=client,dir=%s'
             % dirs['client']],
            ['--object', 'tls-creds-x509,id=tls0,endpoint=client,dir=%s/x'
             % d],
            ['--object', 'tls-creds-x509,id=tls0,endpoint=client,dir=%s,'
             'foo=1' % dirs['client']],
            ['--object', 'tls-creds-x509,id=tls0,endpoint=server,dir=%s'
             % dirs['client']],
            ['--object', 'tls-creds-x509,id=tls0,endpoint=server,dir=%s'
             % dirs['server']],
            ['--object', 'secret,id=tls0,data=x'],
            [],
        ]
        for extra in cases:
            msgs = []
            for prog in ('qemu-io', t.io):
                r = common.run([prog] + extra + ['--image-opts', opts, '-c',
                                                 'read 0 512'], rc=1)
                msgs.append(r.err.replace(os.path.basename(prog) + ':',
                                          'PROG:'))
            check(msgs[0] == msgs[1], '%s:\nqemu-io %s\nours    %s'
                  % (extra, msgs[0], msgs[1]))


def main():
    for prog in ('qemu-img', 'qemu-io'):
        if not common.oracle(prog):
            print('SKIP (whole script): %s not found' % prog)
            return 77
    try:
        return runner.main()
    finally:
        if _PKI:
            shutil.rmtree(_PKI['dir'], ignore_errors=True)


if __name__ == '__main__':
    sys.exit(main())
