# SPDX-License-Identifier: LGPL-2.1-or-later
"""One transaction over N devices: strata's library against QEMU.

`make bench` runs ``python3 tests/bench/transaction.py --build build``.
For each case (N devices of SIZE each, internal or external snapshots of
all of them in one transaction) the same images -- created by qemu-img
with preallocation=metadata, so every cluster of SIZE is allocated and
referenced (what a snapshot's refcount work depends on) while the files
stay sparse -- are given to

  * strata: BUILD/tests/bench/txn-bench (the library: adds, then submit),
    which reports the whole transaction's time and how long guest I/O
    was held (first drain to resume);
  * QEMU: qemu-storage-daemon with the images as --blockdev nodes and a
    QMP `transaction` command, timed from sending it to its reply (QEMU
    does not report its hold; its drain covers the whole command).

Each side runs --rounds times on fresh copies; medians are reported.
Afterwards every image of both sides is checked with `qemu-img check`.
The Markdown table goes to stdout, progress to stderr.  The ratio is
QEMU's time / strata's: above 1.00 strata is faster.
"""
import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def run(argv):
    r = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       text=True)
    if r.returncode != 0:
        raise RuntimeError("%s failed: %s%s" % (argv[0], r.stdout, r.stderr))
    return r.stdout


def make_template(d, n, size):
    os.makedirs(d, exist_ok=True)
    paths = []
    for i in range(n):
        p = os.path.join(d, "d%d.qcow2" % i)
        run(["qemu-img", "create", "-q", "-f", "qcow2", "-o",
             "preallocation=metadata", p, str(size)])
        paths.append(p)
    return paths


def fresh_copy(template, d):
    if os.path.exists(d):
        shutil.rmtree(d)
    os.makedirs(d)
    out = []
    for p in template:
        q = os.path.join(d, os.path.basename(p))
        run(["cp", "--sparse=always", p, q])
        out.append(q)
    return out


def check_all(d):
    for name in sorted(os.listdir(d)):
        if name.endswith(".qcow2"):
            run(["qemu-img", "check", "-q", os.path.join(d, name)])


def strata_round(bench, kind, paths):
    out = run([bench, kind] + paths)
    r = json.loads(out)
    return r["total_ms"], r["hold_ms"]


class Qmp:
    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX)
        for _ in range(500):
            try:
                self.sock.connect(path)
                break
            except OSError:
                time.sleep(0.01)
        self.f = self.sock.makefile("rw")
        self.read()                      # greeting
        self.cmd("qmp_capabilities")

    def read(self):
        while True:
            msg = json.loads(self.f.readline())
            if "event" not in msg:
                return msg

    def cmd(self, name, args=None):
        req = {"execute": name}
        if args is not None:
            req["arguments"] = args
        self.f.write(json.dumps(req) + "\n")
        self.f.flush()
        r = self.read()
        if "error" in r:
            raise RuntimeError("%s: %s" % (name, r["error"]["desc"]))
        return r["return"]


def qemu_round(kind, paths, d, direct=False):
    """One QMP transaction over paths in a fresh qemu-storage-daemon, in
    ms; direct: the files opened with cache.direct=on."""
    sock = os.path.join(d, "qmp.sock")
    argv = ["qemu-storage-daemon",
            "--chardev", "socket,path=%s,server=on,wait=off,id=m" % sock,
            "--monitor", "chardev=m"]
    for i, p in enumerate(paths):
        argv += ["--blockdev", "driver=qcow2,node-name=d%d,file.driver=file,"
                 "file.filename=%s%s" % (i, p, ",file.cache.direct=on"
                                         if direct else "")]
    qsd = subprocess.Popen(argv, stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE)
    try:
        q = Qmp(sock)
        actions = []
        for i, p in enumerate(paths):
            if kind == "internal":
                actions.append({"type": "blockdev-snapshot-internal-sync",
                                "data": {"device": "d%d" % i,
                                         "name": "bench"}})
            else:
                actions.append({"type": "blockdev-snapshot-sync",
                                "data": {"node-name": "d%d" % i,
                                         "snapshot-file": p + ".ov.qcow2",
                                         "snapshot-node-name": "o%d" % i,
                                         "format": "qcow2"}})
        start = time.monotonic()
        q.cmd("transaction", {"actions": actions})
        total = (time.monotonic() - start) * 1000
        q.cmd("quit")
    finally:
        try:
            qsd.wait(timeout=120)
        except subprocess.TimeoutExpired:
            qsd.kill()
            qsd.wait()
    return total


def fmt_size(n):
    for unit, f in (("GiB", 1 << 30), ("MiB", 1 << 20)):
        if n >= f:
            return "%d %s" % (n // f, unit)
    return "%d B" % n


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--build", default="build")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--scratch")
    ap.add_argument("--cases", default="1x1G,8x1G,64x1G,8x128M",
                    help="comma-separated DEVICESxSIZE")
    args = ap.parse_args()
    bench = os.path.join(args.build, "tests", "bench", "txn-bench")
    if not os.path.exists(bench) or not shutil.which("qemu-storage-daemon"):
        log("txn-bench or qemu-storage-daemon missing: skipped")
        return 0
    # absolute: QEMU records the backing file's name as it was opened
    scratch = os.path.abspath(tempfile.mkdtemp(
        prefix="txn-bench-", dir=args.scratch or args.build))
    units = {"G": 1 << 30, "M": 1 << 20}
    rows = []
    try:
        for case in args.cases.split(","):
            n, size = case.split("x")
            n, size = int(n), int(size[:-1]) * units[size[-1]]
            template = make_template(os.path.join(scratch, "tpl"), n, size)
            for kind in ("internal", "external"):
                ours, hold, theirs = [], [], []
                for r in range(args.rounds):
                    log("%s: %d x %s, round %d" % (kind, n, fmt_size(size),
                                                   r + 1))
                    d = os.path.join(scratch, "run")
                    paths = fresh_copy(template, d)
                    t, h = strata_round(bench, kind, paths)
                    ours.append(t)
                    hold.append(h)
                    check_all(d)
                    paths = fresh_copy(template, d)
                    theirs.append(qemu_round(kind, paths, d))
                    check_all(d)
                o, h, q = (statistics.median(x) for x in (ours, hold, theirs))
                rows.append((kind, n, fmt_size(size), o, h, q, q / o))
            shutil.rmtree(os.path.join(scratch, "tpl"))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print("| snapshot | devices | allocated each | strata total ms | "
          "strata hold ms | QEMU total ms | ratio |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for kind, n, size, o, h, q, ratio in rows:
        print("| %s | %d | %s | %.1f | %.1f | %.1f | %.2f |" %
              (kind, n, size, o, h, q, ratio))
    return 0


if __name__ == "__main__":
    sys.exit(main())
