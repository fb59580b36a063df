# SPDX-License-Identifier: LGPL-2.1-or-later
"""What the RBD tests share: a throw-away Ceph cluster started by
scripts/ceph-test-cluster.sh for the script's run (CEPH_CONF exported, so
strata's tools, qemu-img/qemu-io and the rbd CLI all find it), stopped by
its PIDs at exit, unique image names, and small wrappers over the rbd CLI.

A script using it exits 77 (a counted skip) only when the cluster cannot
run here (the script's exit 77: no Ceph and no way to install it) or the
tools were built without the rbd driver.
"""
import atexit
import itertools
import json
import os
import signal
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
from common import Skip, check, fail  # noqa: E402

SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..',
                      'scripts', 'ceph-test-cluster.sh')
POOL = 'rbd'

_conf = None
_names = itertools.count()


def cluster():
    """Starts the cluster once per script; returns the conf path."""
    global _conf
    if _conf:
        return _conf
    d = tempfile.mkdtemp(prefix='strata-ceph-')
    os.rmdir(d)                    # the script creates it

    def stop():
        # not interruptible: a second SIGTERM must not leave daemons behind
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        subprocess.run(['sh', SCRIPT, 'stop', d], timeout=120)

    # meson's timeout sends SIGTERM: exit through atexit, so the cluster
    # is stopped then too (also while it is starting)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    atexit.register(stop)
    p = subprocess.Popen(['sh', SCRIPT, 'start', d], stdin=subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        out, err = p.communicate(timeout=300)
    except BaseException:
        p.terminate()              # its EXIT trap stops what it started
        p.wait()
        raise
    if p.returncode == 77:
        raise Skip('Ceph cannot run here: ' + err.decode()[-300:])
    if p.returncode != 0:
        fail('ceph-test-cluster.sh start failed (%d):\n%s'
             % (p.returncode, err.decode(errors='replace')[-3000:]))
    _conf = os.path.join(d, 'ceph.conf')
    os.environ['CEPH_CONF'] = _conf
    return _conf


def require_driver():
    """Skips when strata-img was built without driver=rbd (its help lists
    the formats, as qemu-img's does; an open would make librados look
    for monitors in DNS)."""
    t = common.tools()
    res = common.run([t.img, '--help'], rc=None)
    fmts = [ln for ln in res.out.splitlines()
            if ln.startswith('Supported formats:')]
    if not fmts or 'rbd' not in fmts[0].split():
        raise Skip('strata was built without the rbd driver')


def setup():
    """Driver there (checked first: no cluster for nothing), cluster up;
    returns the tools."""
    require_driver()
    cluster()
    return common.tools()


def new_name(prefix='img'):
    return '%s%d-%d' % (prefix, os.getpid(), next(_names))


def rbd(*args, rc=0):
    return common.run(['rbd', '-p', POOL] + list(args), rc=rc, timeout=120)


def rbd_create(name, size):
    rbd('create', '--size', '%dK' % (size // 1024), name)


def snaps(name, all_ns=False):
    """[(name, namespace)] of the image's snapshots, as the rbd CLI lists
    them (--all: every namespace, the hidden ones too)."""
    args = ['snap', 'ls', '--format', 'json'] + (['--all'] if all_ns else [])
    out = rbd(*(args + [name])).out
    return [(s['name'], s.get('namespace', {}).get('type', 'user'))
            for s in json.loads(out or '[]')]


def snap_names(name, all_ns=False):
    return sorted(n for n, _ in snaps(name, all_ns))


def uri(name, snap=None):
    return 'rbd:%s/%s%s' % (POOL, name, '@' + snap if snap else '')


def check_no_hidden(name):
    """No snapshot strata keeps under a hidden name is left on the image."""
    left = [n for n in snap_names(name, True) if n.startswith('.strata-')]
    check(not left, 'hidden snapshots left on %s: %s' % (name, left))
