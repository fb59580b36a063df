#!/bin/sh
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# A throw-away Ceph cluster for the rbd driver's tests: one monitor and one
# OSD whose object store is RAM (memstore), no manager, no authentication,
# every socket on 127.0.0.1, every file under DIR.  Nothing of it survives
# `stop`: the daemons are ended by the PIDs `start` recorded and DIR is
# removed.
#
#   ceph-test-cluster.sh start DIR   prints CEPH_CONF=DIR/ceph.conf once a
#                                    write to the pool has round-tripped
#   ceph-test-cluster.sh stop DIR    ends the daemons, removes DIR
#   ceph-test-cluster.sh status DIR  exit 0 if the cluster answers
#
# Exit 77 from start: Ceph cannot run here (daemons missing and not
# installable); the caller counts a skip.
# Env: CEPH_TEST_POOL (default rbd), CEPH_TEST_MEM (memstore bytes, 1 GiB),
#      CEPH_TEST_NO_INSTALL=1 (never call apt-get).
set -eu

CMD=${1:-}
D=${2:-}
POOL=${CEPH_TEST_POOL:-rbd}
MEM=${CEPH_TEST_MEM:-1073741824}

log() { printf '[ceph-test-cluster] %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

[ -n "$D" ] || { echo "usage: $0 start|stop|status DIR" >&2; exit 2; }
case "$D" in /*) ;; *) D=$(pwd)/$D ;; esac
CONF=$D/ceph.conf

# The daemons and the CLI, installed from Debian when missing (a fresh CI
# box has neither); the same list as install-deps.sh --ceph.
ensure_packages() {
    command -v ceph-mon >/dev/null && command -v ceph-osd >/dev/null &&
        command -v rbd >/dev/null && command -v monmaptool >/dev/null &&
        return 0
    if [ "${CEPH_TEST_NO_INSTALL:-0}" = 1 ]; then
        log "ceph-mon/ceph-osd/rbd missing and CEPH_TEST_NO_INSTALL=1"
        exit 77
    fi
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null && sudo -n true 2>/dev/null ||
            { log "Ceph is not installed and cannot be installed"; exit 77; }
        SUDO="sudo -n"
    fi
    log "installing ceph-mon ceph-osd ceph-common"
    export DEBIAN_FRONTEND=noninteractive
    if ! $SUDO apt-get install -y -qq --no-install-recommends \
            ceph-mon ceph-osd ceph-common >&2; then
        $SUDO apt-get update -qq >&2 &&
            $SUDO apt-get install -y -qq --no-install-recommends \
                ceph-mon ceph-osd ceph-common >&2 ||
            { log "installing Ceph failed"; exit 77; }
    fi
}

free_port() {
    python3 -c 'import socket
s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# The CLI waits forever for an unreachable monitor and for commands only a
# manager answers (there is none): every call is bounded.
ceph_() { timeout 20 ceph -c "$CONF" "$@"; }

# wait_until SECONDS PIDFILE CMD...: polls CMD every 50 ms; fails early if
# the daemon of PIDFILE has died (its log tail goes to stderr).
wait_until() {
    limit=$(( $1 * 20 )); pf=$2; shift 2
    n=0
    until "$@" >/dev/null 2>&1; do
        if ! kill -0 "$(cat "$pf")" 2>/dev/null; then
            log "$(basename "$pf" .pid) died:"
            tail -n 20 "$D"/log/* >&2 2>/dev/null || true
            return 1
        fi
        n=$((n + 1))
        [ $n -le $limit ] || { log "timed out waiting for: $*"; return 1; }
        sleep 0.05
    done
}

write_conf() {
    cat > "$CONF" <<EOF
[global]
fsid = $1
mon host = v2:127.0.0.1:$2
public addr = 127.0.0.1
cluster addr = 127.0.0.1
ms bind msgr1 = false
ms bind ipv6 = false
auth cluster required = none
auth service required = none
auth client required = none
auth allow insecure global id reclaim = false
mon warn on insecure global id reclaim allowed = false
keyring = /dev/null
# every file under DIR (the defaults are /var/run/ceph, /var/log/ceph)
run dir = $D/run
admin socket = $D/run/\$name.asok
pid file = $D/run/\$name.pid
log file = $D/log/\$name.log
mon cluster log file = $D/log/\$cluster.\$channel.log
crash dir = $D/crash
mon data = $D/mon.\$id
osd data = $D/osd.\$id
osd objectstore = memstore
memstore device bytes = $MEM
# RAM use follows the data written (the default bloats ~7x on small writes)
memstore page set = true
osd min pg log entries = 100
osd max pg log entries = 500
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
mon allow pool size one = true
mon allow pool delete = true
mon warn on pool no redundancy = false
mon data avail warn = 2
mon data avail crit = 1
# snapshot ids come from the monitor: with the 1 s default every snapshot
# create or remove takes a second
paxos propose interval = 0.01
paxos min wait = 0.01

[client]
# fail in bounded time instead of hanging when a daemon is gone
client mount timeout = 15
rados mon op timeout = 30
rados osd op timeout = 30
EOF
}

do_start() {
    [ -e "$D" ] && die "$D exists; stop it first"
    ensure_packages
    mkdir -p "$D/mon.a" "$D/osd.0" "$D/run" "$D/log" "$D/crash"
    # a failed start leaves nothing running
    trap 'log "start failed"; do_stop' EXIT
    trap 'exit 1' INT TERM
    fsid=$(cat /proc/sys/kernel/random/uuid)
    port=$(free_port)
    write_conf "$fsid" "$port"

    monmaptool --create --fsid "$fsid" --addv a "[v2:127.0.0.1:$port]" \
        "$D/monmap" >/dev/null
    ceph-mon -c "$CONF" --mkfs -i a --monmap "$D/monmap" \
        >"$D/log/mon.a.mkfs" 2>&1
    ceph-mon -c "$CONF" -i a -f >>"$D/log/mon.a.out" 2>&1 &
    echo $! > "$D/mon.pid"
    wait_until 30 "$D/mon.pid" ceph_ mon stat
    # Without authentication a client does not check the fsid: make sure
    # the port was not taken by another cluster between pick and bind.
    [ "$(ceph_ fsid)" = "$fsid" ] || die "127.0.0.1:$port is another cluster"

    osd_uuid=$(cat /proc/sys/kernel/random/uuid)
    id=$(ceph_ osd new "$osd_uuid")
    ceph-osd -c "$CONF" -i "$id" --mkfs --osd-uuid "$osd_uuid" \
        >"$D/log/osd.mkfs" 2>&1
    ceph-osd -c "$CONF" -i "$id" -f >>"$D/log/osd.out" 2>&1 &
    echo $! > "$D/osd.pid"
    wait_until 60 "$D/osd.pid" sh -c \
        "timeout 10 ceph -c '$CONF' osd dump | grep -q '^osd.$id up'"

    ceph_ osd pool create "$POOL" 8 8 >/dev/null 2>&1
    timeout 30 rbd -c "$CONF" pool init "$POOL"
    # the placement groups are active once a write round-trips
    wait_until 60 "$D/osd.pid" sh -c "echo x | timeout 5 rados -c '$CONF' \
        -p '$POOL' put _probe - && timeout 5 rados -c '$CONF' -p '$POOL' \
        rm _probe"
    trap - EXIT INT TERM
    echo "CEPH_CONF=$CONF"
}

# Ends one daemon by its recorded PID.  The data is RAM and thrown away,
# so SIGKILL is right (SIGTERM costs ~2 s per daemon for nothing).
stop_pid() {
    [ -f "$1" ] || return 0
    p=$(cat "$1")
    kill -9 "$p" 2>/dev/null || return 0
    n=0
    while kill -0 "$p" 2>/dev/null && [ $n -lt 200 ]; do
        n=$((n + 1)); sleep 0.05
    done
}

do_stop() {
    [ -d "$D" ] || return 0
    stop_pid "$D/osd.pid"
    stop_pid "$D/mon.pid"
    rm -rf "$D"
}

case "$CMD" in
start) do_start ;;
stop) do_stop ;;
status) [ -f "$CONF" ] && timeout 10 ceph -c "$CONF" fsid >/dev/null 2>&1 ;;
*) echo "usage: $0 start|stop|status DIR" >&2; exit 2 ;;
esac
