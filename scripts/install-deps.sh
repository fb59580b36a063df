#!/bin/sh
# SPDX-License-Identifier: LGPL-2.1-or-later
# Installs the Debian packages strata needs to build and test, but only
# those that are missing, so a prepared machine pays nothing.
#   install-deps.sh          what `make`, `make check`, `make demo` need
#   install-deps.sh --fuzz   that plus clang with libFuzzer (`make fuzz`)
#   install-deps.sh --iotests   that plus what `make check-iotests` needs
#   install-deps.sh --ceph   that plus the Ceph daemons of the RBD tests
set -e

# build: compiler, meson/ninja, libraries; tests: Check, qemu oracles
# (qemu-system-common has qemu-storage-daemon), python3
PKGS="gcc pkg-config meson ninja-build libglib2.0-dev libjson-glib-dev
check zlib1g-dev libzstd-dev qemu-utils qemu-system-common python3"
PKGS="$PKGS libedit-dev"    # strata-daemon's terminal monitor (HMP)
# the HMP oracle: qemu-system-x86_64 -M none runs savevm, info snapshots...
PKGS="$PKGS qemu-system-x86"
# NBD (issue 13): libnbd for the NBD client driver and the C test client,
# nbdinfo/nbdcopy (libnbd-bin) as real clients of our exports, nbdkit as a
# server for the client driver (qemu-nbd comes with qemu-utils)
PKGS="$PKGS libnbd-dev libnbd-bin nbdkit"
# TLS on NBD exports: GnuTLS, and certtool to make the tests' certificates
PKGS="$PKGS libgnutls28-dev gnutls-bin"
# encrypted images (LUKS, qcow2 AES): nettle's ciphers; GnuTLS's PBKDF2
# and random numbers (libgnutls28-dev pulls nettle-dev in; named anyway)
PKGS="$PKGS nettle-dev"
# driver=rbd (block/rbd.c): librbd/librados headers (Debian 12 ships no
# .pc for them); the RBD tests' throw-away cluster needs the daemons and
# the rbd CLI (scripts/ceph-test-cluster.sh installs them itself if missing)
PKGS="$PKGS librbd-dev librados-dev"
# QEMU's rbd driver (a loadable module, only Recommended by qemu-utils):
# the RBD interop tests and the RBD benchmark run qemu-img/qemu-io on rbd:
PKGS="$PKGS qemu-block-extra"
# strace: test_prealloc compares the calls that size an image file with
# qemu-img's (the file system's placement of them varies by machine)
PKGS="$PKGS strace"

# `make fuzz` only: clang and its runtime libraries (libFuzzer, ASan, UBSan)
fuzz_pkgs() {
    echo "clang libclang-rt-dev"
}

# `make check-iotests` only: dpkg-source (apt-get source)
iotests_pkgs() {
    echo "dpkg-dev"
}

case "$1" in
    --fuzz) PKGS="$PKGS $(fuzz_pkgs)" ;;
    --iotests) PKGS="$PKGS $(iotests_pkgs)" ;;
    --ceph) PKGS="$PKGS ceph-mon ceph-osd ceph-common" ;;
esac

missing=""
for p in $PKGS; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed"; then
        missing="$missing $p"
    fi
done

[ -z "$missing" ] && exit 0

echo "install-deps: installing$missing"
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# shellcheck disable=SC2086
$SUDO apt-get install -y -qq --no-install-recommends $missing
