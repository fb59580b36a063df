# SPDX-License-Identifier: LGPL-2.1-or-later
"""The daemon part of `make demo`: strata-daemon holds three disks, and one
QMP `transaction` snapshots all of them (an internal snapshot of two and
an external one of the third); a second transaction that ends in an
`abort` action rolls back and leaves every disk as it was.  Prints each
QMP exchange; exits non-zero if an answer is not the expected one.

    demo-qmp.py STRATA_DAEMON DIR
"""
import json
import os
import socket
import subprocess
import sys
import time


def show(direction, obj):
    print("%s %s" % (direction, json.dumps(obj)), flush=True)


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
        show("<-", json.loads(self.f.readline()))

    def cmd(self, name, args=None):
        req = {"execute": name}
        if args is not None:
            req["arguments"] = args
        show("->", req)
        self.f.write(json.dumps(req) + "\n")
        self.f.flush()
        while True:
            r = json.loads(self.f.readline())
            show("<-", r)
            if "event" not in r:
                return r


def main():
    daemon, d = sys.argv[1], sys.argv[2]
    sock = os.path.join(d, "qmp.sock")
    argv = [daemon, "--chardev", "socket,path=%s,server=on,wait=off,id=m"
            % sock, "--monitor", "chardev=m"]
    for i in range(3):
        argv += ["--blockdev", "driver=qcow2,node-name=disk%d,file.driver="
                 "file,file.filename=%s/disk%d.qcow2" % (i, d, i)]
    proc = subprocess.Popen(argv)
    ok = True
    try:
        q = Qmp(sock)
        q.cmd("qmp_capabilities")
        good = [
            {"type": "blockdev-snapshot-internal-sync",
             "data": {"device": "disk0", "name": "nightly"}},
            {"type": "blockdev-snapshot-internal-sync",
             "data": {"device": "disk1", "name": "nightly"}},
            {"type": "blockdev-snapshot-sync",
             "data": {"node-name": "disk2", "snapshot-node-name": "disk2-ov",
                      "snapshot-file": os.path.join(d, "disk2-ov.qcow2"),
                      "format": "qcow2"}},
        ]
        print("\n== one transaction snapshots all three disks", flush=True)
        ok &= q.cmd("transaction", {"actions": good}).get("return") == {}
        bad = [
            {"type": "blockdev-snapshot-internal-sync",
             "data": {"device": "disk0", "name": "doomed"}},
            {"type": "blockdev-snapshot-sync",
             "data": {"node-name": "disk1",
                      "snapshot-file": os.path.join(d, "doomed.qcow2"),
                      "snapshot-node-name": "doomed", "format": "qcow2"}},
            {"type": "abort", "data": {}},
        ]
        print("\n== a transaction that fails at its last action rolls back",
              flush=True)
        r = q.cmd("transaction", {"actions": bad})
        ok &= r.get("error", {}).get("desc") == \
            "Transaction aborted using Abort action"
        ok &= not os.path.exists(os.path.join(d, "doomed.qcow2"))
        print("\n== HMP over QMP: savevm on every disk at once, then "
              "info snapshots", flush=True)
        ok &= q.cmd("human-monitor-command",
                    {"command-line": "savevm demo-vm"}).get("return") == ""
        r = q.cmd("human-monitor-command",
                  {"command-line": "info snapshots"})
        print(r.get("return", ""), end="", flush=True)
        ok &= "demo-vm" in r.get("return", "")
        q.cmd("quit")
    finally:
        proc.wait(timeout=60)
    return 0 if ok and proc.returncode == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
