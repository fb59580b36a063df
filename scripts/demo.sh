#!/bin/sh
# SPDX-License-Identifier: LGPL-2.1-or-later
# The demo: strata's tools build a small set of qcow2 images (a base, an
# overlay on it, an internal snapshot), and QEMU's tools verify every one:
# qemu-img check finds them clean and qemu-io reads back what strata wrote.
# Then strata-daemon takes three disks and QMP transactions snapshot them
# all at once (one that succeeds, one that rolls back); HMP comes later.
set -eu
BUILD=${1:-build}
IMG="$BUILD/tools/img/strata-img"
IO="$BUILD/tools/io/strata-io"
D=$(mktemp -d "${TMPDIR:-/tmp}/strata-demo.XXXXXX")
trap 'rm -rf "$D"' EXIT

step() { printf '\n== %s\n' "$*"; }

step "strata-img creates a 64 MiB qcow2 base image and strata-io writes to it"
"$IMG" create -f qcow2 "$D/base.qcow2" 64M
"$IO" -c 'write -P 0xaa 0 1M' -c 'write -z 4M 2M' "$D/base.qcow2"

step "an overlay on the base (external snapshot on disk), written through"
"$IMG" create -f qcow2 -b base.qcow2 -F qcow2 "$D/top.qcow2"
"$IO" -c 'write -P 0xbb 512k 1M' "$D/top.qcow2"

if "$IMG" snapshot -l "$D/top.qcow2" >/dev/null 2>&1; then
    step "an internal snapshot of the overlay, then more writes"
    "$IMG" snapshot -c before-update "$D/top.qcow2"
    "$IO" -c 'write -P 0xcc 0 64k' "$D/top.qcow2"
    qemu-img snapshot -l "$D/top.qcow2"
fi

step "qemu-img verifies: check, chain, content"
qemu-img check "$D/base.qcow2"
qemu-img check "$D/top.qcow2"
qemu-img info --backing-chain "$D/top.qcow2"
# qemu-io reports a pattern mismatch on stdout without failing: look.
out=$(qemu-io -r -c 'read -P 0xaa 64k 448k' -c 'read -P 0xbb 512k 1M' \
    -c 'read -P 0 4M 2M' "$D/top.qcow2")
echo "$out"
if echo "$out" | grep -q "verification failed"; then
    echo "demo: qemu-io read back something strata did not write" >&2
    exit 1
fi
DAEMON="$BUILD/tools/daemon/strata-daemon"
if [ -x "$DAEMON" ]; then
    step "strata-daemon holds three disks; QMP transactions over all of them"
    for i in 0 1 2; do
        "$IMG" create -q -f qcow2 "$D/disk$i.qcow2" 16M
        "$IO" -c "write -P 0x1$i 0 1M" "$D/disk$i.qcow2" >/dev/null
    done
    python3 "$(dirname "$0")/demo-qmp.py" "$DAEMON" "$D"

    step "qemu-img verifies the result: snapshots, chain, check"
    qemu-img snapshot -l "$D/disk0.qcow2"
    qemu-img snapshot -l "$D/disk1.qcow2"
    qemu-img snapshot -l "$D/disk2-ov.qcow2"
    qemu-img info --backing-chain "$D/disk2-ov.qcow2"
    for f in disk0 disk1 disk2 disk2-ov; do
        qemu-img check -q "$D/$f.qcow2"
    done
    for i in 0 1; do
        if ! qemu-img snapshot -l "$D/disk$i.qcow2" | grep -q nightly ||
           qemu-img snapshot -l "$D/disk$i.qcow2" | grep -q doomed; then
            echo "demo: disk$i does not hold exactly the committed snapshot" >&2
            exit 1
        fi
    done
    for f in disk0 disk1 disk2-ov; do
        if ! qemu-img snapshot -l "$D/$f.qcow2" | grep -q demo-vm; then
            echo "demo: savevm did not reach $f" >&2
            exit 1
        fi
    done
    if [ -e "$D/doomed.qcow2" ]; then
        echo "demo: the rolled-back transaction left a file" >&2
        exit 1
    fi
fi
step "demo finished: every image checked clean by qemu-img"
