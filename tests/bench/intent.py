# SPDX-License-Identifier: LGPL-2.1-or-later
"""The cost of the intent log (issue 14): one transaction over N devices
through the engine, without and with a state directory.

`make bench` runs ``python3 tests/bench/intent.py --build build``.  For N
in --devices (default 1, 8, 32) and each kind (internal snapshots of all
N devices; external snapshots of all N), BUILD/tests/bench/txn-bench runs
the transaction on fresh copies of the same qcow2 images (created by
qemu-img with preallocation=metadata), alternating plain and
crash-atomic rounds (TXN_BENCH_STATE_DIR set: extension on every image,
the record committed before the first publish, removed after the last);
medians of --rounds rounds each.  The images and the journal live in one
scratch directory on the same file system (under BUILD unless
--scratch), so the journal's fsyncs cost what the images' do.  Every
image is checked with qemu-img check afterwards.  The Markdown table goes
to stdout, progress to stderr; "extra" is the intent log's added time per
transaction (the target is about one synced write: the record's commit).

The stable figure is the count of synced writes: when strace is
installed, one more plain and one more logged transaction per (kind, N)
run under ``strace -f -c -e trace=fsync,fdatasync`` (the journal already
exists then, as in a running daemon), and a second table gives fsync and
fdatasync calls per transaction, plain and with the log.
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

# the journal helpers the functional tests use
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                '..', 'functional'))
import common  # noqa: E402


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def run(argv, env=None):
    r = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       text=True, env=env)
    if r.returncode != 0:
        raise RuntimeError("%s failed: %s%s" % (argv[0], r.stdout, r.stderr))
    return r.stdout


def fresh(template, d, n):
    if os.path.exists(d):
        shutil.rmtree(d)
    os.makedirs(d)
    out = []
    for i in range(n):
        q = os.path.join(d, "d%d.qcow2" % i)
        run(["cp", "--sparse=always", template, q])
        out.append(q)
    return out


def bench_env(journal):
    env = dict(os.environ)
    env.pop("TXN_BENCH_STATE_DIR", None)
    if journal:
        env["TXN_BENCH_STATE_DIR"] = journal
    return env


def one(bench, kind, paths, journal):
    r = json.loads(run([bench, kind] + paths, env=bench_env(journal)))
    if journal:
        left = common.live_records(journal)
        if left:
            raise RuntimeError("records left in the journal: %s" % left)
    return r["total_ms"], r["hold_ms"]


def count_syncs(bench, kind, paths, journal, out):
    """fsync and fdatasync calls of one txn-bench run (strace -c)."""
    env = bench_env(journal)
    # LeakSanitizer cannot run under ptrace (a sanitizer build)
    env["ASAN_OPTIONS"] = (env.get("ASAN_OPTIONS", "") +
                           ":detect_leaks=0").lstrip(":")
    run(["strace", "-f", "-c", "-e", "trace=fsync,fdatasync", "-o", out,
         bench, kind] + paths, env=env)
    counts = {"fsync": 0, "fdatasync": 0}
    with open(out) as fh:
        for line in fh:
            t = line.split()
            if t and t[-1] in counts and t[3].isdigit():
                counts[t[-1]] = int(t[3])
    return counts


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build", default="build")
    ap.add_argument("--devices", default="1,8,32")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--size", type=int, default=1 << 30)
    ap.add_argument("--kinds", default="internal,external")
    ap.add_argument("--scratch")
    args = ap.parse_args()
    bench = os.path.join(args.build, "tests", "bench", "txn-bench")
    if not os.access(bench, os.X_OK) or not shutil.which("qemu-img"):
        log("txn-bench or qemu-img missing: skipped")
        return 0
    base = tempfile.mkdtemp(prefix="intent-bench-",
                            dir=args.scratch or args.build)
    try:
        template = os.path.join(base, "template.qcow2")
        run(["qemu-img", "create", "-q", "-f", "qcow2", "-o",
             "preallocation=metadata", template, str(args.size)])
        rows = []
        for kind in args.kinds.split(","):
            for n in [int(x) for x in args.devices.split(",")]:
                res = {False: [], True: []}
                for r in range(args.rounds):
                    # alternate which side goes first
                    for with_log in ((False, True) if r % 2 == 0
                                     else (True, False)):
                        d = os.path.join(base, "imgs")
                        paths = fresh(template, d, n)
                        j = os.path.join(base, "journal") if with_log \
                            else None
                        res[with_log].append(one(bench, kind, paths, j))
                        for f in sorted(os.listdir(d)):
                            if f.endswith(".qcow2"):
                                run(["qemu-img", "check", "-q",
                                     os.path.join(d, f)])
                plain = statistics.median(t for t, _ in res[False])
                logged = statistics.median(t for t, _ in res[True])
                hold_p = statistics.median(h for _, h in res[False])
                hold_l = statistics.median(h for _, h in res[True])
                log("%s N=%d: %.1f / %.1f ms" % (kind, n, plain, logged))
                sy = {}
                if shutil.which("strace"):
                    for with_log in (False, True):
                        d = os.path.join(base, "imgs")
                        paths = fresh(template, d, n)
                        j = os.path.join(base, "journal") if with_log \
                            else None
                        sy[with_log] = count_syncs(
                            bench, kind, paths, j,
                            os.path.join(base, "strace.out"))
                rows.append((kind, n, plain, logged, hold_p, hold_l, sy))
        print("| kind | N | plain ms | intent log ms | extra ms | "
              "hold plain ms | hold intent ms |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        for kind, n, p, lg, hp, hl, _ in rows:
            print("| %s | %d | %.1f | %.1f | %+.1f | %.1f | %.1f |"
                  % (kind, n, p, lg, lg - p, hp, hl))
        if any(r[6] for r in rows):
            print("\nSynced writes per transaction (strace -c; the process "
                  "also opens and closes the images):\n")
            print("| kind | N | fdatasync plain | fsync plain | "
                  "fdatasync log | fsync log | extra |")
            print("|---|---:|---:|---:|---:|---:|---:|")
            for kind, n, _, _, _, _, sy in rows:
                if not sy:
                    continue
                p, lg = sy[False], sy[True]
                extra = (lg["fsync"] + lg["fdatasync"] -
                         p["fsync"] - p["fdatasync"])
                print("| %s | %d | %d | %d | %d | %d | %+d |"
                      % (kind, n, p["fdatasync"], p["fsync"],
                         lg["fdatasync"], lg["fsync"], extra))
        print("\n(medians of %d rounds, %s images, %s)"
              % (args.rounds, "%d MiB" % (args.size >> 20), base))
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
