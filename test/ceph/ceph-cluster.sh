#!/usr/bin/env bash
# A throwaway single-node Ceph cluster for the RBD tests: one mon and one memstore OSD on
# 127.0.0.1, no mgr, no auth, pools of size 1 (after /work/shared/ceph/ceph-vstart.sh).
#
#   ceph-cluster.sh start [DIR]   start it in DIR (default: a new temp dir); prints the conf path
#   ceph-cluster.sh stop DIR      kill its daemons and remove DIR
#
# Installs ceph-mon, ceph-osd and ceph-common with apt-get when they are missing (as root). Exit
# status 77 means they are missing and cannot be installed (the tests skip on it outside CI);
# any other non-zero status is a real failure. Diagnostics go to stderr, the conf path to stdout.
# MON_PORT picks the monitor's port (default: a free one).
set -euo pipefail

PACKAGES="ceph-mon ceph-osd ceph-common"

log() { echo "ceph-cluster: $*" >&2; }

ensure_packages() {
  command -v ceph-mon >/dev/null && command -v ceph-osd >/dev/null && command -v ceph >/dev/null &&
    command -v rbd >/dev/null && command -v monmaptool >/dev/null && return 0
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    log "ceph packages missing and apt-get is not usable here (need root): $PACKAGES"
    return 77
  fi
  log "installing $PACKAGES"
  local opts="-q -o DPkg::Lock::Timeout=300 -o Acquire::Retries=3"
  export DEBIAN_FRONTEND=noninteractive
  # shellcheck disable=SC2086
  if ! apt-get $opts install -y --no-install-recommends $PACKAGES >/tmp/vhostd-ceph-apt.log 2>&1; then
    # shellcheck disable=SC2086
    apt-get $opts update >>/tmp/vhostd-ceph-apt.log 2>&1 &&
      apt-get $opts install -y --no-install-recommends $PACKAGES >>/tmp/vhostd-ceph-apt.log 2>&1 || {
      tail -20 /tmp/vhostd-ceph-apt.log >&2
      log "cannot install $PACKAGES"
      return 77
    }
  fi
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Runs a command with a deadline, so a wedged daemon fails the start instead of hanging it.
t() { timeout 60 "$@"; }

start() {
  ensure_packages || exit $?
  local d=${1:-}
  if [ -z "$d" ]; then d=$(mktemp -d /tmp/vhostd-ceph.XXXXXX); else rm -rf "$d"; mkdir -p "$d"; fi
  d=$(readlink -f "$d")
  mkdir -p "$d"/{mon.a,osd.0,run,log}
  local port=${MON_PORT:-$(free_port)}
  local fsid
  fsid=$(cat /proc/sys/kernel/random/uuid)
  cat >"$d/ceph.conf" <<CONF
[global]
fsid = $fsid
mon host = v2:127.0.0.1:$port
public network = 127.0.0.0/8
auth cluster required = none
auth service required = none
auth client required = none
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
mon allow pool size one = true
mon allow pool delete = true
osd crush chooseleaf type = 0
run dir = $d/run
log file = $d/log/\$name.log
pid file = $d/\$name.pid
[client]
# auth is off: no keyring search (and no warnings about it on the clients' stderr)
keyring = /dev/null
[mon]
mon data = $d/mon.\$id
mon warn on pool no redundancy = false
# propose map changes at once (default: gather for 1 s): pool and OSD changes take ms, not seconds
paxos propose interval = 0.01
mon data avail warn = 1
mon data avail crit = 0
[osd]
osd data = $d/osd.\$id
osd objectstore = memstore
memstore device bytes = 1073741824
osd max object name len = 460
osd max object namespace len = 64
CONF
  (
    cd "$d"
    export CEPH_CONF=$d/ceph.conf
    t monmaptool --create --fsid "$fsid" --addv a "[v2:127.0.0.1:$port]" monmap >/dev/null
    t ceph-authtool --create-keyring mon.keyring --gen-key -n mon. --cap mon 'allow *' >/dev/null
    t ceph-mon --mkfs -i a --monmap monmap --keyring mon.keyring
    t ceph-mon -i a
    local id
    id=$(t ceph osd create)
    t ceph-osd -i "$id" --mkfs 2>/dev/null
    t ceph-osd -i "$id" 2>/dev/null
    t ceph osd crush add "osd.$id" 1.0 host=localhost root=default >/dev/null 2>&1 || true
    # Up and in before anyone creates a pool.
    for _ in $(seq 1 300); do
      [ "$(t ceph osd stat -f json 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin).get("num_up_osds", 0))')" = 1 ] && break
      sleep 0.1
    done
  ) >"$d/log/start.log" 2>&1 || {
    tail -30 "$d/log/start.log" >&2
    stop "$d"
    log "cluster did not start"
    exit 1
  }
  echo "$d/ceph.conf"
}

stop() {
  local d=${1:?usage: ceph-cluster.sh stop DIR}
  local f pid
  # Throwaway state (memstore, a temp mon store): SIGKILL, nothing to shut down cleanly.
  for f in "$d"/*.pid; do
    [ -e "$f" ] || continue
    pid=$(cat "$f")
    kill -9 "$pid" 2>/dev/null || true
  done
  case "$d" in /tmp/* | /var/tmp/*) rm -rf "$d" ;; *) log "not removing $d (outside /tmp)" ;; esac
}

case "${1:-}" in
  start) start "${2:-}" ;;
  stop) stop "${2:-}" ;;
  install) ensure_packages ;;
  *) echo "usage: $0 start [DIR] | stop DIR | install" >&2; exit 2 ;;
esac
