#!/usr/bin/env bash
# run-guest.sh - boot the e2e test guest by hand (debugging aid; the tests use test/e2e/lib/guest.ts).
# Usage: run-guest.sh SCRIPT [extra qemu args...]
#   e.g. run-guest.sh test/e2e/guest-scripts/blk-geometry.sh \
#          -chardev socket,id=c0,path=/tmp/vhost.0 -device vhost-user-blk-pci,chardev=c0,num-queues=2
# Environment: GUEST_ENV="K=V K2=V2" (exported in the guest), GUEST_TIMEOUT (s, default 300),
#   GUEST_MEM (MiB, default 512), GUEST_SMP (default 2), VHOSTD_GUEST_DIR (see mkguest.sh).
# Everything (kernel messages and the script's output) goes to this terminal; the exit status is
# the guest script's, parsed from its VHOSTD-GUEST-EXIT line (124 on timeout, 125 if none).
set -euo pipefail
here=$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")
[ $# -ge 1 ] || { sed -n '2,9p' "$0"; exit 2; }
script=$1; shift
read -r kernel initrd < <("$here/mkguest.sh" build)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
: >"$tmp/env"
for kv in ${GUEST_ENV:-}; do printf "export %s='%s'\n" "${kv%%=*}" "${kv#*=}" >>"$tmp/env"; done
"$here/mkguest.sh" overlay "$tmp/overlay.cpio" "$script" "$here/../e2e/guest-scripts/lib/guest-lib.sh" "$tmp/env"
# the kernel only looks for the next archive at a 4-byte aligned offset: pad the base with zeros
cp "$initrd" "$tmp/initrd"
pad=$(( (4 - $(stat -c %s "$initrd") % 4) % 4 ))
head -c "$pad" /dev/zero >>"$tmp/initrd"
cat "$tmp/overlay.cpio" >>"$tmp/initrd"
mem=${GUEST_MEM:-512}
set +e
timeout "${GUEST_TIMEOUT:-300}" qemu-system-x86_64 -accel tcg,thread=multi -cpu max -smp "${GUEST_SMP:-2}" -m "$mem" \
  -object "memory-backend-memfd,id=mem,size=${mem}M,share=on" -numa node,memdev=mem \
  -nographic -nodefaults -serial stdio -no-reboot -kernel "$kernel" -initrd "$tmp/initrd" \
  -append "console=ttyS0 quiet panic=-1 mitigations=off" "$@" </dev/null | tee "$tmp/log"
qrc=${PIPESTATUS[0]}
set -e
[ "$qrc" = 124 ] && { echo "run-guest: timeout" >&2; exit 124; }
rc=$(sed -n 's/.*VHOSTD-GUEST-EXIT rc=\([0-9]*\).*/\1/p' "$tmp/log" | tail -1)
[ -n "$rc" ] || { echo "run-guest: no VHOSTD-GUEST-EXIT marker (qemu rc=$qrc)" >&2; exit 125; }
exit "$rc"
