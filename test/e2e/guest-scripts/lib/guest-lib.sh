# guest-lib.sh - helpers for vhostd guest check scripts. Installed in the guest as /vhostd/lib.sh;
# a script starts with `. /vhostd/lib.sh`. The guest's /bin/sh is bash (see mkguest.sh), the
# tools on PATH are the real util-linux/coreutils/e2fsprogs/fio ones, busybox for the rest.
#
# Output protocol, one item per line (the host parses stdout, see test/e2e/lib/guest.ts):
#   RESULT key=value    a measured fact; the host reads them as results[key]
#   MARK name           a point the host can wait for (GuestSession.waitFor('MARK name'))
#   WAIT name           printed by wait_host before it blocks until the host sends "name"
#   FAIL what           a failed check (the script then exits non-zero)
#   # text              commentary

VHOSTD_CHAN=${VHOSTD_CHAN:-/dev/console}
FAILURES=0

result() { echo "RESULT $1=$2"; }
mark() { echo "MARK $*"; }
note() { echo "# $*"; }
# fail WHAT: record a failed check and go on (the script's final `finish` exits 1)
fail() { echo "FAIL $*"; FAILURES=$((FAILURES + 1)); }
# die WHAT: fail and stop now
die() { echo "FAIL $*"; echo "FAILED: stopping at the first fatal check"; exit 1; }
# finish: exit 0 if no check failed, else 1
finish() {
  if [ "$FAILURES" -ne 0 ]; then echo "FAILED: $FAILURES check(s)"; exit 1; fi
  echo "PASSED"; exit 0
}

# expect NAME ACTUAL EXPECTED: prints RESULT NAME=ACTUAL; fails if EXPECTED is set and differs
expect() {
  result "$1" "$2"
  if [ -n "${3:-}" ] && [ "$2" != "$3" ]; then fail "$1: got '$2', expected '$3'"; fi
}

# run NAME CMD...: runs CMD with its output shown; RESULT NAME=ok, or NAME=fail(rc) + fail
run() {
  local name=$1 rc; shift
  note "\$ $*"
  "$@"; rc=$?
  if [ $rc -eq 0 ]; then result "$name" ok; else result "$name" "fail($rc)"; fail "$name: '$*' exited $rc"; fi
  return $rc
}

# wait_dev /dev/NAME [TIMEOUT_S]: wait for a block device node to appear (default 15 s)
wait_dev() {
  local dev=$1 t=${2:-15} i=0
  while [ ! -b "$dev" ]; do
    i=$((i + 1))
    [ $i -le $((t * 10)) ] || { fail "block device $dev did not appear within ${t}s"; return 1; }
    sleep 0.1
  done
}

# wait_host NAME [TIMEOUT_S]: tell the host we wait (WAIT NAME), block until it sends the line NAME
# The port is raw: a `read -t` that times out mid-line leaves the bytes that arrived in the
# variable; they are the start of the next line, so they are kept, not dropped.
wait_host() {
  local name=$1 t=${2:-120} line part= end
  echo "WAIT $name"
  end=$(($(date +%s) + t))
  exec 3<"$VHOSTD_CHAN"
  while [ "$(date +%s)" -lt "$end" ]; do
    line=
    if read -r -t 1 line <&3; then
      line=$part$line part=
      if [ "$line" = "$name" ]; then exec 3<&-; return 0; fi
    else
      part=$part$line
    fi
  done
  exec 3<&-
  fail "wait_host $name: the host did not answer within ${t}s"
  return 1
}

# size_bytes DEV (e.g. vda)
size_bytes() { blockdev --getsize64 "/dev/$1"; }

# virtio_name DEV: the virtio device behind a block device (virtio3)
virtio_name() { basename "$(readlink -f "/sys/block/$1/device")"; }

# queue_irqs DEV: interrupt count of each request virtqueue of a virtio-blk disk, space separated
# in queue order (MSI-X vectors named virtioN-req.Q in /proc/interrupts, summed over CPUs)
queue_irqs() {
  local v; v=$(virtio_name "$1")
  awk -v pfx="$v-req." '
    NR == 1 { ncpu = NF; next }
    index($NF, pfx) == 1 { q = substr($NF, length(pfx) + 1); s = 0
      for (i = 2; i <= ncpu + 1; i++) s += $i; c[q] = s; if (q + 0 > max) max = q + 0; n++ }
    END { if (n == 0) exit 1; out = ""; for (q = 0; q <= max; q++) out = out (q ? " " : "") (c[q] + 0); print out }
  ' /proc/interrupts
}

# pattern_chunk SEED OFFSET LEN: LEN bytes of deterministic, offset-specific text to stdout
pattern_chunk() {
  yes "vhostd pattern seed=$1 offset=$2 0123456789abcdefghijklmnopqrstuvwxyz" | head -c "$3"
}

# write_at DEV OFFSET FILE: write FILE at byte OFFSET with O_DIRECT, then fsync (a FLUSH)
write_at() {
  dd if="$3" of="/dev/$1" bs=64K oflag=direct,seek_bytes seek="$2" conv=notrunc,fsync status=none
}

# sha_at DEV OFFSET LEN: sha256 of LEN bytes at OFFSET, read with O_DIRECT
sha_at() {
  dd if="/dev/$1" bs=64K iflag=direct,skip_bytes,count_bytes skip="$2" count="$3" status=none | sha256sum | cut -d' ' -f1
}

# is_zero_at DEV OFFSET LEN: true when the range reads back as zeros (O_DIRECT)
is_zero_at() {
  dd if="/dev/$1" bs=64K iflag=direct,skip_bytes,count_bytes skip="$2" count="$3" status=none |
    cmp -s -n "$3" - /dev/zero
}

# check_fio_verify OUT RC JOBS: the checks of a fio write+verify run whose output is in OUT
# and whose exit status was RC, with JOBS job summaries expected: prints the output (as notes)
# and the fio_* results, and records a failure for an exit status, an error count, a missing
# job summary, a verify failure, or verify reads that do not match the writes.
check_fio_verify() {
  sed 's/^/# fio: /' "$1"
  result fio_rc "$2"
  [ "$2" -eq 0 ] || fail "fio exited $2"
  # each job's summary line: "verify: (groupid=0, jobs=1): err= 0: pid=..."
  errs=$(sed -n 's/.*: err= *\([0-9]*\).*/\1/p' "$1" | awk '{s += $1} END {print s + 0}')
  nsum=$(grep -c ': err= *[0-9]' "$1")
  result fio_errors "$errs"
  [ "$errs" -eq 0 ] || fail "fio reported errors ($errs)"
  [ "$nsum" -eq "$3" ] || fail "expected $3 fio job summaries, found $nsum"
  grep -qi 'verify failed\|bad magic\|crc32c: verify' "$1" && fail "fio verify failure"
  # issued rwts: total=READS,WRITES,... : the verify reads must equal the writes, per job
  ios=$(sed -n 's/.*issued rwts: total=\([0-9]*\),\([0-9]*\),.*/\1 \2/p' "$1")
  wr=$(echo "$ios" | awk '{s += $2} END {print s + 0}')
  rd=$(echo "$ios" | awk '{s += $1} END {print s + 0}')
  result fio_write_ios "$wr"
  result fio_verify_ios "$rd"
  [ "$wr" -gt 0 ] && [ "$rd" -eq "$wr" ] || fail "verify reads ($rd) != writes ($wr)"
}
