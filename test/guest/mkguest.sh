#!/usr/bin/env bash
# mkguest.sh - build the tiny Linux guest used by vhostd's end-to-end tests.
#
# Produces, in the guest directory ($VHOSTD_GUEST_DIR, default /tmp/vhostd-guest):
#   vmlinuz        Debian's cloud kernel (linux-image-cloud-amd64's current dependency)
#   base.initrd    ONE reusable initramfs: busybox + bash + fio + util-linux + e2fsprogs + sg3-utils
#                  + a few coreutils, the virtio/SCSI modules, and an /init that runs /vhostd/test.sh.
#                  Uncompressed by default: unpacking gzip costs ~1.3 s of every TCG boot, and the
#                  90 MiB it weighs instead cost nothing worth measuring.
#   manifest.txt   what went in (package versions, kernel, modules, sha256 of the outputs)
#   stamp          cache key; when it still matches, the build is skipped
#   debs/          the downloaded kernel .deb, kept across runs (VHOSTD_GUEST_DEB_CACHE overrides)
#
# The per-test script is NOT baked in. It travels in a second, tiny cpio archive appended to
# base.initrd (Linux unpacks concatenated archives in order; later files win):
#   /vhostd/test.sh   the script; run as `sh /vhostd/test.sh "$@"`
#   /vhostd/test.env  optional, sourced by /init before the script (exports, `set -- args`)
#   /vhostd/lib.sh    optional helper library for scripts (test/e2e/guest-scripts/lib/guest-lib.sh)
# The kernel looks for the next archive only at a 4-byte aligned offset, so the base is padded
# with zero bytes to a multiple of 4 before the overlay is appended (zeros between archives are
# skipped). test/e2e/lib/guest.ts writes the overlay itself; `mkguest.sh overlay` does it for shells.
#
# Guest protocol (what /init prints; the harness parses it):
#   the test's stdout+stderr go to the port named by `vhostd.chan=ttyS1` on the kernel command line
#   (a second UART, so kernel messages on the ttyS0 console can never split a line) or to the
#   console when that port is absent. Lines: VHOSTD-GUEST-BOOT ..., VHOSTD-GUEST-START,
#   whatever the script prints (RESULT key=value, MARK name, WAIT name, ...),
#   VHOSTD-GUEST-EXIT rc=N, then the guest powers off.
#
# Usage:
#   mkguest.sh [build] [--force]          build or reuse; prints "KERNEL INITRD" paths on stdout
#   mkguest.sh overlay OUT.cpio SCRIPT [LIB] [ENVFILE]   write a per-test overlay archive
#   mkguest.sh clean                      remove the guest directory (keeps nothing)
# Environment:
#   VHOSTD_GUEST_DIR         output/cache directory (default /tmp/vhostd-guest)
#   VHOSTD_GUEST_DEB_CACHE   where the kernel .deb is kept (default $VHOSTD_GUEST_DIR/debs)
#   VHOSTD_GUEST_KERNEL_PKG  exact kernel package to use (default: what linux-image-cloud-amd64 depends on)
#   VHOSTD_GUEST_COMPRESS    none (default) | gzip | zstd
#   VHOSTD_GUEST_RECHECK_S   a build younger than this (default 3600) is reused without asking apt
#                            whether the cloud kernel moved on (saves ~0.7 s a call)
set -euo pipefail
export LC_ALL=C
umask 022

SELF=$(readlink -f "${BASH_SOURCE[0]}")
OUT=${VHOSTD_GUEST_DIR:-/tmp/vhostd-guest}
DEBS=${VHOSTD_GUEST_DEB_CACHE:-$OUT/debs}
COMPRESS=${VHOSTD_GUEST_COMPRESS:-none}
INITRD=base.initrd
# a build younger than this is trusted without asking apt whether a newer kernel exists
RECHECK=${VHOSTD_GUEST_RECHECK_S:-3600}
# Fixed timestamp for every file in the archives, so identical inputs give identical bytes.
EPOCH=${SOURCE_DATE_EPOCH:-1700000000}

log() { echo "mkguest: $*" >&2; }
die() { echo "mkguest: ERROR: $*" >&2; exit 1; }

# --- what goes into the guest ----------------------------------------------------------------
# Host packages the guest's userland is copied from (also part of the cache key).
PKGS="busybox-static bash fio util-linux fdisk e2fsprogs sg3-utils coreutils diffutils kmod cpio"
# Real binaries (override busybox applets of the same name). Missing optional ones are skipped.
BINS_REQUIRED="busybox bash fio blockdev blkdiscard lsblk mount umount mkfs.ext4 e2fsck dd sync sha256sum cmp od stty"
BINS_OPTIONAL="fstrim sfdisk findmnt blkid wipefs dumpe2fs tune2fs
  sg_inq sg_vpd sg_readcap sg_unmap sg_luns sg_turs sg_sync sg_write_same sg_requests sg_raw
  sg_modes sg_reset sg_get_lba_status sg_persist sg_rtpg sg_format sg_map26 sg_dd sg_verify sg_compare_and_write"
# Kernel modules wanted, loaded in dependency order resolved with the kernel's own modules.dep.
MODULES="virtio_pci virtio_blk virtio_scsi sd_mod sg virtio_console"

# --- helpers ---------------------------------------------------------------------------------
need_tools() {
  local missing="" t
  for t in apt-get apt-cache dpkg-deb dpkg-query depmod modprobe cpio gzip sha256sum flock ldd $BINS_REQUIRED; do
    command -v "$t" >/dev/null 2>&1 || missing="$missing $t"
  done
  [ "$COMPRESS" != zstd ] || command -v zstd >/dev/null 2>&1 || missing="$missing zstd"
  [ -z "$missing" ] || die "missing host tools:$missing
  install: apt-get install -y --no-install-recommends busybox-static fio util-linux e2fsprogs sg3-utils coreutils diffutils kmod cpio"
}

# deterministic newc archive of directory $1 to stdout (paths sorted, owner root, fixed mtimes)
pack_dir() {
  (cd "$1" && find . -mindepth 1 -exec touch -h -d "@$EPOCH" {} + &&
    find . -mindepth 1 | sed 's|^\./||' | sort | cpio -o -H newc --reproducible -R 0:0 --quiet)
}

compress() {
  case "$COMPRESS" in
    gzip) gzip -n -6 ;;
    zstd) zstd -q -T0 -10 ;;
    none) cat ;;
    *) die "VHOSTD_GUEST_COMPRESS must be gzip, zstd or none" ;;
  esac
}

cmd_overlay() {
  local out=$1 script=$2 lib=${3:-} envf=${4:-} st
  [ -f "$script" ] || die "no such script: $script"
  st=$(mktemp -d)
  mkdir -p "$st/vhostd"
  install -m 0755 "$script" "$st/vhostd/test.sh"
  [ -z "$lib" ] || install -m 0644 "$lib" "$st/vhostd/lib.sh"
  [ -z "$envf" ] || install -m 0644 "$envf" "$st/vhostd/test.env"
  pack_dir "$st" >"$out"
  rm -rf "$st"
}

# apt-cache on Debian images without a persistent package cache takes ~0.7 s a call: ask once.
# Prints "PKG VERSION SHA256" of the kernel package linux-image-cloud-amd64 depends on.
apt_resolve() {
  local guess=$1 out pkg
  if [ -n "${VHOSTD_GUEST_KERNEL_PKG:-}" ]; then
    pkg=$VHOSTD_GUEST_KERNEL_PKG
    out=$(apt-cache show --no-all-versions "$pkg" 2>/dev/null) || return 1
  else
    out=$(apt-cache show --no-all-versions linux-image-cloud-amd64 ${guess:+"$guess"} 2>/dev/null) || out=$(apt-cache show --no-all-versions linux-image-cloud-amd64 2>/dev/null) || return 1
    pkg=$(echo "$out" | awk '/^Package: linux-image-cloud-amd64$/{m=1} m&&/^Depends:/{for(i=2;i<=NF;i++) if ($i ~ /^linux-image-[0-9]/) {sub(/,$/,"",$i); print $i; exit}}')
    [ -n "$pkg" ] || return 1
    echo "$out" | grep -qx "Package: $pkg" || out=$(apt-cache show --no-all-versions "$pkg" 2>/dev/null) || return 1
  fi
  echo "$out" | awk -v p="$pkg" '/^Package:/{m=($2==p)} m&&/^Version:/{v=$2} m&&/^SHA256:/{s=$2} END{if (v!="") print p, v, s; else exit 1}'
}

# Resolve the kernel package and make sure its .deb is in the cache. Sets KPKG KVERSION KDEB.
fetch_kernel() {
  mkdir -p "$DEBS"
  local r sha="" guess=${1:-}
  if ! r=$(apt_resolve "$guess"); then
    if [ "$(id -u)" = 0 ]; then
      log "kernel package not known to apt; running apt-get update"
      apt-get update -qq >&2 || true
    fi
    if ! r=$(apt_resolve "$guess"); then
      # offline fallback: newest cached cloud kernel
      KDEB=$(ls -1 "$DEBS"/linux-image-*-cloud-amd64_*.deb 2>/dev/null | sort -V | tail -1 || true)
      [ -n "$KDEB" ] || die "cannot resolve linux-image-cloud-amd64 (apt-get update?) and no cached kernel in $DEBS"
      KPKG=$(dpkg-deb -f "$KDEB" Package); KVERSION=$(dpkg-deb -f "$KDEB" Version)
      log "apt cannot resolve the kernel; using cached $KDEB"
      return 0
    fi
  fi
  read -r KPKG KVERSION sha <<<"$r"
  KDEB="$DEBS/${KPKG}_${KVERSION//:/%3a}_amd64.deb"
  if [ ! -f "$KDEB" ]; then
    log "downloading $KPKG $KVERSION"
    local tmp; tmp=$(mktemp -d "$DEBS/.dl.XXXXXX")
    (cd "$tmp" && apt-get download -o APT::Sandbox::User=root -q "$KPKG=$KVERSION" >&2) ||
      { rm -rf "$tmp"; die "apt-get download $KPKG=$KVERSION failed"; }
    if [ -n "$sha" ] && [ "$(sha256sum "$tmp"/*.deb | cut -d' ' -f1)" != "$sha" ]; then
      rm -rf "$tmp"; die "downloaded $KPKG does not match apt's SHA256"
    fi
    mv "$tmp"/*.deb "$KDEB"; rm -rf "$tmp"
    # keep only the newest two kernels in the cache
    ls -1t "$DEBS"/linux-image-*.deb 2>/dev/null | tail -n +3 | xargs -r rm -f
  fi
}

# Cache key: this script, the compression, the kernel package, the userland package versions and
# which optional tools the host has.
cache_key() {
  local b
  {
    sha256sum <"$SELF"
    echo "compress=$COMPRESS kernel=$KPKG=$KVERSION"
    dpkg-query -W -f '${Package}=${Version}\n' $PKGS 2>/dev/null || true
    for b in $BINS_OPTIONAL; do command -v "$b" || true; done
  } | sha256sum | cut -d' ' -f1
}

copy_bin() { # copy host binary $1 (a path) to the guest as /usr/bin/<name> plus its libraries
  local src=$1 name; name=$(basename "$src")
  rm -f "$R/usr/bin/$name"
  cp -L "$src" "$R/usr/bin/$name"
  chmod 0755 "$R/usr/bin/$name"
  ldd "$src" 2>/dev/null | awk '/=> \//{print $3} /^[[:space:]]*\/[^ ]*ld-linux/{print $1}' >>"$R/.libs" || true
}

build() {
  local force=${1:-0}
  need_tools
  mkdir -p "$OUT"
  exec 9>"$OUT/.lock"
  flock 9
  local key old_key="" old_pkg="" old_ver=""
  [ -f "$OUT/stamp" ] && read -r old_key old_pkg old_ver <"$OUT/stamp" || true
  local have=0
  [ -s "$OUT/vmlinuz" ] && [ -s "$OUT/$INITRD" ] && [ -n "$old_key" ] && have=1
  # Fast path: built less than $RECHECK s ago from the same inputs: don't even ask apt.
  if [ "$force" = 0 ] && [ $have = 1 ] && [ -n "$(find "$OUT/stamp" -newermt "-$RECHECK seconds" 2>/dev/null)" ]; then
    KPKG=$old_pkg KVERSION=$old_ver
    if [ "$(cache_key)" = "$old_key" ]; then
      echo "$OUT/vmlinuz $OUT/$INITRD"; return 0
    fi
  fi
  fetch_kernel "$old_pkg"
  key=$(cache_key)
  if [ "$force" = 0 ] && [ $have = 1 ] && [ "$old_key" = "$key" ]; then
    touch "$OUT/stamp"
    log "up to date ($KPKG $KVERSION)"
    echo "$OUT/vmlinuz $OUT/$INITRD"
    return 0
  fi
  local t0=$SECONDS
  rm -f "$OUT/stamp"
  W=$(mktemp -d "$OUT/.build.XXXXXX")
  trap 'rm -rf "${W:-}"' EXIT
  R=$W/root
  # ---- kernel: unpack vmlinuz + modules, let depmod/modprobe compute the load order
  log "unpacking $KPKG"
  mkdir -p "$W/k"
  dpkg-deb --fsys-tarfile "$KDEB" | tar -x -C "$W/k" --wildcards './boot/vmlinuz-*' './lib/modules/*' \
    './usr/lib/modules/*' 2>/dev/null || true
  local kmods; kmods=$(ls -d "$W"/k/lib/modules/* "$W"/k/usr/lib/modules/* 2>/dev/null | head -1 || true)
  [ -n "$kmods" ] || die "no modules in $KDEB"
  local kver; kver=$(basename "$kmods")
  local kbase; kbase=$(dirname "$(dirname "$(dirname "$kmods")")")  # dir containing lib/modules
  [ "$kbase/lib/modules/$kver" = "$kmods" ] || { mkdir -p "$W/k/lib/modules"; ln -s "$kmods" "$W/k/lib/modules/$kver"; kbase=$W/k; }
  depmod -b "$kbase" "$kver"
  mkdir -p "$R/usr/lib/vhostd/modules"
  : >"$W/order"
  local m line f
  for m in $MODULES; do
    modprobe -d "$kbase" -S "$kver" --show-depends "$m" >"$W/deps" || die "module $m not found in $kver"
    while read -r line; do
      case "$line" in
        insmod\ *) f=$(echo "$line" | awk '{print $2}')
          grep -qxF "$f" "$W/order" || echo "$f" >>"$W/order" ;;
      esac
    done <"$W/deps"
  done
  : >"$R/etc.modules"
  while read -r f; do
    local base; base=$(basename "$f")
    case "$base" in
      *.ko) cp "$f" "$R/usr/lib/vhostd/modules/$base" ;;
      *.ko.xz) xz -dc "$f" >"$R/usr/lib/vhostd/modules/${base%.xz}"; base=${base%.xz} ;;
      *.ko.zst) zstd -qdc "$f" >"$R/usr/lib/vhostd/modules/${base%.zst}"; base=${base%.zst} ;;
      *) die "unknown module format $f" ;;
    esac
    echo "$base" >>"$R/etc.modules"
  done <"$W/order"
  cp "$kbase"/boot/vmlinuz-* "$W/vmlinuz" 2>/dev/null || cp "$kmods"/vmlinuz "$W/vmlinuz" ||
    die "no vmlinuz in $KDEB"

  # ---- userland: usr-merged layout like the host, busybox for everything not copied for real
  mkdir -p "$R"/usr/{bin,sbin,lib64} "$R"/usr/lib/x86_64-linux-gnu "$R"/{proc,sys,dev,tmp,run,mnt,root,etc,vhostd}
  ln -s usr/bin "$R/bin"; ln -s usr/sbin "$R/sbin"; ln -s usr/lib "$R/lib"; ln -s usr/lib64 "$R/lib64"
  mv "$R/etc.modules" "$R/etc/vhostd-modules"
  cp /bin/busybox "$R/usr/bin/busybox"
  local a
  for a in $(/bin/busybox --list); do
    [ "$a" = busybox ] || ln -sf busybox "$R/usr/bin/$a"
  done
  : >"$R/.libs"
  local b p
  for b in $BINS_REQUIRED; do
    [ "$b" = busybox ] && continue
    p=$(command -v "$b") || die "required binary $b not found"
    copy_bin "$p"
  done
  for b in $BINS_OPTIONAL; do
    if p=$(command -v "$b"); then copy_bin "$p"; else log "optional $b not on host, skipped"; fi
  done
  # Debian's busybox-static ash runs its own applet whenever a name matches one (SH_STANDALONE),
  # whatever PATH says, so `dd` in a busybox script would never be coreutils' dd. /bin/sh is
  # therefore bash: a command runs what PATH finds (real tools first, busybox for the rest).
  ln -sf bash "$R/usr/bin/sh"
  # fsck.ext4 / mkfs names the tools look up by argv[0]
  ln -sf e2fsck "$R/usr/bin/fsck.ext4"; ln -sf mkfs.ext4 "$R/usr/bin/mke2fs"
  local l dst
  for l in $(sort -u "$R/.libs"); do
    case "$l" in /lib/*|/lib64/*) dst=$R/usr$l ;; *) dst=$R$l ;; esac
    mkdir -p "$(dirname "$dst")"
    [ -e "$dst" ] || cp -L "$l" "$dst"
  done
  rm -f "$R/.libs"
  [ -f /etc/mke2fs.conf ] && cp /etc/mke2fs.conf "$R/etc/"
  echo "root:x:0:0:root:/root:/bin/sh" >"$R/etc/passwd"
  echo "root:x:0:" >"$R/etc/group"
  echo vhostd-guest >"$R/etc/hostname"
  ln -s /proc/self/mounts "$R/etc/mtab"
  : >"$R/etc/fstab"

  # ---- /init
  cat >"$R/init" <<'INIT'
#!/bin/sh
# vhostd e2e guest init (generated by test/guest/mkguest.sh)
export PATH=/usr/sbin:/usr/bin HOME=/root TERM=dumb
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs -o mode=1777 tmpfs /tmp
mount -t tmpfs tmpfs /run
mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
mkdir -p /dev/pts /dev/shm && mount -t devpts devpts /dev/pts && mount -t tmpfs tmpfs /dev/shm
hostname vhostd-guest

chan=/dev/console
for a in $(cat /proc/cmdline); do
  case "$a" in vhostd.chan=*) chan=/dev/${a#vhostd.chan=} ;; esac
done
if [ "$chan" != /dev/console ] && ! stty -F "$chan" raw -echo -ixon 2>/dev/null; then
  echo "vhostd-init: $chan is not usable, the test output goes to the console" >/dev/console
  chan=/dev/console
fi
exec >"$chan" 2>&1 </dev/null
export VHOSTD_CHAN=$chan

echo "VHOSTD-GUEST-BOOT kernel=$(uname -r) cpus=$(nproc) mem_kb=$(awk '/MemTotal/{print $2}' /proc/meminfo)"
while read -r m; do
  insmod "/usr/lib/vhostd/modules/$m" || echo "VHOSTD-GUEST-WARN insmod $m failed"
done </etc/vhostd-modules

cd /root
rc=127
if [ -f /vhostd/test.env ]; then . /vhostd/test.env; fi
if [ -f /vhostd/test.sh ]; then
  echo "VHOSTD-GUEST-START uptime=$(cut -d' ' -f1 /proc/uptime)"
  sh /vhostd/test.sh "$@"
  rc=$?
else
  echo "VHOSTD-GUEST-ERROR no /vhostd/test.sh in the initramfs"
fi
sync
echo "VHOSTD-GUEST-EXIT rc=$rc uptime=$(cut -d' ' -f1 /proc/uptime)"
# coreutils stty applies settings with TCSADRAIN: returns once the line above has left the UART
stty -F "$chan" raw -echo -ixon 2>/dev/null
poweroff -f
echo o >/proc/sysrq-trigger
INIT
  chmod 0755 "$R/init"

  # ---- archive, deterministically
  log "packing initramfs ($(du -sm "$R" | cut -f1) MiB unpacked, $COMPRESS)"
  pack_dir "$R" | compress >"$W/$INITRD"
  {
    echo "# vhostd test guest, built by test/guest/mkguest.sh"
    echo "kernel_package=$KPKG"
    echo "kernel_version=$KVERSION"
    echo "kernel_release=$kver"
    echo "compress=$COMPRESS"
    echo "modules=$(tr '\n' ' ' <"$R/etc/vhostd-modules")"
    dpkg-query -W -f 'package ${Package}=${Version}\n' $PKGS 2>/dev/null || true
    (cd "$W" && sha256sum vmlinuz $INITRD)
  } >"$W/manifest.txt"
  mv -f "$W/vmlinuz" "$OUT/vmlinuz"
  mv -f "$W/$INITRD" "$OUT/$INITRD"
  mv -f "$W/manifest.txt" "$OUT/manifest.txt"
  echo "$key $KPKG $KVERSION" >"$OUT/stamp"
  rm -rf "$W"; trap - EXIT
  log "built $OUT/$INITRD ($(du -m "$OUT/$INITRD" | cut -f1) MiB) for $kver in $((SECONDS - t0)) s"
  echo "$OUT/vmlinuz $OUT/$INITRD"
}

cmd=${1:-build}
case "$cmd" in
  build) shift || true; f=0; [ "${1:-}" = --force ] && f=1; build "$f" ;;
  --force) build 1 ;;
  overlay) shift; [ $# -ge 2 ] || die "usage: mkguest.sh overlay OUT.cpio SCRIPT [LIB] [ENVFILE]"; cmd_overlay "$@" ;;
  clean) rm -rf "$OUT" ;;
  -h|--help) sed -n '2,/^set -euo/p' "$SELF" | sed 's/^# \{0,1\}//' | head -n -1 ;;
  *) die "unknown command $cmd (try --help)" ;;
esac
