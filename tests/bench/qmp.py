# SPDX-License-Identifier: LGPL-2.1-or-later
"""strata-daemon against qemu-storage-daemon over QMP, in the same run.

`make bench` runs ``python3 tests/bench/qmp.py --build build``.  Both
daemons get the same command line (--blockdev qcow2 nodes on copies of
the same images, created by qemu-img with preallocation=metadata as in
transaction.py) and the same QMP input; every time is taken by this
script from sending a command to reading its reply, so both sides pay
the same socket and JSON costs.

  * round trip: the mean of --calls calls of `query-version` (the
    protocol alone), `query-named-block-nodes` and `query-block` with 32
    devices open (query-block only where the daemon has it);
  * transaction: one `transaction` snapshotting N = 1, 8, 32 devices,
    internal (blockdev-snapshot-internal-sync) or external
    (blockdev-snapshot-sync), median of --rounds fresh daemons on fresh
    copies; every image is checked with `qemu-img check` afterwards;
  * memory: VmHWM (peak resident set) of each daemon with 32 devices
    open, read from /proc right after the open, after the round trips,
    and after a 32-device external transaction.

The Markdown tables go to stdout, progress to stderr.  A ratio is QEMU's
time / strata's: above 1.00 strata is faster.
"""
import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from transaction import (Qmp, check_all, fmt_size, fresh_copy,  # noqa: E402
                         log, make_template)

NS = (1, 8, 32)
MEM_DEVICES = 32


class Daemon:
    """A daemon on paths (node-names d0..), with one QMP connection."""

    def __init__(self, binary, paths, d):
        self.sock = os.path.join(d, "qmp-%d.sock" % os.getpid())
        if os.path.exists(self.sock):
            os.unlink(self.sock)
        argv = [binary, "--chardev",
                "socket,path=%s,server=on,wait=off,id=m" % self.sock,
                "--monitor", "chardev=m"]
        for i, p in enumerate(paths):
            argv += ["--blockdev", "driver=qcow2,node-name=d%d,"
                     "file.driver=file,file.filename=%s" % (i, p)]
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)
        deadline = time.monotonic() + 60
        while not os.path.exists(self.sock):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("%s did not start: %s" % (
                    binary, self.proc.stderr.read().decode()[-2000:]))
            time.sleep(0.01)
        self.qmp = Qmp(self.sock)

    def timed(self, name, args=None):
        start = time.monotonic()
        self.qmp.cmd(name, args)
        return (time.monotonic() - start) * 1000

    def commands(self):
        return {c["name"] for c in self.qmp.cmd("query-commands")}

    def vm_hwm_kib(self):
        with open("/proc/%d/status" % self.proc.pid) as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
        raise RuntimeError("no VmHWM in /proc/%d/status" % self.proc.pid)

    def quit(self):
        try:
            self.qmp.cmd("quit")
        finally:
            try:
                self.proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.returncode != 0:
            raise RuntimeError("daemon exited with %d: %s" % (
                self.proc.returncode, self.proc.stderr.read().decode()[-2000:]))


def actions(kind, paths):
    out = []
    for i, p in enumerate(paths):
        if kind == "internal":
            out.append({"type": "blockdev-snapshot-internal-sync",
                        "data": {"device": "d%d" % i, "name": "bench"}})
        else:
            out.append({"type": "blockdev-snapshot-sync",
                        "data": {"node-name": "d%d" % i,
                                 "snapshot-file": p + ".ov.qcow2",
                                 "snapshot-node-name": "o%d" % i,
                                 "format": "qcow2"}})
    return out


def transaction_round(binary, kind, template, d):
    paths = fresh_copy(template, d)
    dm = Daemon(binary, paths, d)
    try:
        ms = dm.timed("transaction", {"actions": actions(kind, paths)})
    finally:
        dm.quit()
    check_all(d)
    return ms


def round_trips(binary, template, d, calls):
    """Mean ms per call of each query, and VmHWM (KiB) with the devices
    open, after the queries and after an external transaction over all
    of them."""
    paths = fresh_copy(template, d)
    dm = Daemon(binary, paths, d)
    out = {}
    try:
        hwm = [dm.vm_hwm_kib()]
        have = dm.commands()
        for name in ("query-version", "query-named-block-nodes",
                     "query-block"):
            if name not in have:
                continue
            dm.timed(name)                       # warm up
            start = time.monotonic()
            for _ in range(calls):
                dm.qmp.cmd(name)
            out[name] = (time.monotonic() - start) * 1000 / calls
        hwm.append(dm.vm_hwm_kib())
        dm.timed("transaction", {"actions": actions("external", paths)})
        hwm.append(dm.vm_hwm_kib())
    finally:
        dm.quit()
    check_all(d)
    return out, hwm


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--build", default="build")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--calls", type=int, default=1000)
    ap.add_argument("--size", default="1G",
                    help="virtual size of each image (M or G)")
    ap.add_argument("--scratch")
    args = ap.parse_args()
    strata = os.path.abspath(os.path.join(args.build, "tools", "daemon",
                                          "strata-daemon"))
    qsd = shutil.which("qemu-storage-daemon")
    if not os.path.exists(strata) or not qsd:
        log("strata-daemon or qemu-storage-daemon missing: skipped")
        return 0
    size = int(args.size[:-1]) << {"M": 20, "G": 30}[args.size[-1]]
    # absolute: QEMU records the backing file's name as it was opened
    scratch = os.path.abspath(tempfile.mkdtemp(
        prefix="qmp-bench-", dir=args.scratch or args.build))
    sides = (("strata", strata), ("qemu", qsd))
    try:
        log("creating %d images of %s" % (max(NS), fmt_size(size)))
        template = make_template(os.path.join(scratch, "tpl"), max(NS), size)
        run_dir = os.path.join(scratch, "run")

        rt, mem = {}, {}
        for side, binary in sides:
            log("%s: %d round trips of each query, %d devices open"
                % (side, args.calls, MEM_DEVICES))
            rt[side], mem[side] = round_trips(
                binary, template[:MEM_DEVICES], run_dir, args.calls)

        txn = {}
        for n in NS:
            for kind in ("internal", "external"):
                times = {"strata": [], "qemu": []}
                for r in range(args.rounds):
                    log("transaction: %s x %d, round %d" % (kind, n, r + 1))
                    # alternate who goes first: no side always gets the
                    # page cache the other one warmed
                    order = sides if r % 2 == 0 else sides[::-1]
                    for side, binary in order:
                        times[side].append(transaction_round(
                            binary, kind, template[:n], run_dir))
                txn[(kind, n)] = {s: statistics.median(t)
                                  for s, t in times.items()}
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    print("QMP round trip (mean of %d calls, %d devices open):\n"
          % (args.calls, MEM_DEVICES))
    print("| command | strata ms | QEMU ms | ratio |")
    print("| --- | ---: | ---: | ---: |")
    for name in ("query-version", "query-named-block-nodes", "query-block"):
        s, q = rt["strata"].get(name), rt["qemu"].get(name)
        if s is None or q is None:
            print("| %s | %s | %s | -- |" % (
                name, "%.3f" % s if s is not None else "missing",
                "%.3f" % q if q is not None else "missing"))
        else:
            print("| %s | %.3f | %.3f | %.2f |" % (name, s, q, q / s))
    print("\nOne `transaction` over N devices of %s (median of %d rounds):\n"
          % (fmt_size(size), args.rounds))
    print("| snapshot | N | strata ms | QEMU ms | ratio |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for (kind, n), t in txn.items():
        print("| %s | %d | %.1f | %.1f | %.2f |" % (
            kind, n, t["strata"], t["qemu"], t["qemu"] / t["strata"]))
    print("\nPeak memory (VmHWM), %d devices open:\n" % MEM_DEVICES)
    print("| daemon | after the open | after %d calls of each query | "
          "after a %d-device external transaction |" % (args.calls,
                                                       MEM_DEVICES))
    print("| --- | ---: | ---: | ---: |")
    for side, _ in sides:
        print("| %s | %.1f MiB | %.1f MiB | %.1f MiB |" % (
            "strata-daemon" if side == "strata" else "qemu-storage-daemon",
            mem[side][0] / 1024, mem[side][1] / 1024, mem[side][2] / 1024))
    return 0


if __name__ == "__main__":
    sys.exit(main())
