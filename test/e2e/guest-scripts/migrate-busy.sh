#!/bin/sh
# migrate-busy.sh - the bench's migration guest (bench/lib/migration.ts): idle first, then busy on
# the disk, while the host live-migrates the VM in each state.
#
#   1. MARK ready, then idle (only wait_host's 1 s read timeout ticks) until the host sends `busy`
#      (the host migrates the idle guest in between).
#   2. fio random read/write on the whole disk in the background (4 KiB, RWMIX % reads, libaio,
#      QD IODEPTH, O_DIRECT, time-based: it runs until stopped), MARK fio-running; the host
#      migrates the busy guest meanwhile and then sends `stop`.
#   3. fio is stopped with SIGTERM (it then reports what it did; its exit status is then 128) and
#      its numbers are printed.
# A host that only wants the idle migration sends `stop` instead of `busy`.
#
# Env: DISK (vda) IODEPTH (16) RWMIX (50) MAX_S (600: fio's own limit)
# RESULT keys: busy (0/1) fio_rc fio_errors fio_read_ios fio_write_ios fio_read_iops fio_write_iops fio_runtime_ms
. /vhostd/lib.sh
DISK=${DISK:-vda}
IODEPTH=${IODEPTH:-16}
RWMIX=${RWMIX:-50}
MAX_S=${MAX_S:-600}
wait_dev "/dev/$DISK" || finish

# host_cmd WORD...: waits (MAX_S at most) for a line from the host that is one of WORDs; sets cmd.
# The port is raw (mkguest.sh's init): `read -t` returns what arrived so far when it times out,
# and bash keeps those bytes in the variable; they are the start of the next line, not a line.
exec 3<"$VHOSTD_CHAN"
host_cmd() {
  local part= line end=$(($(date +%s) + MAX_S))
  cmd=
  while [ "$(date +%s)" -lt "$end" ]; do
    line=
    if read -r -t 1 line <&3; then
      line=$part$line part=
      for w in "$@"; do [ "$line" = "$w" ] && { cmd=$w; return 0; }; done
      note "ignored line from the host: '$line'"
    elif [ -n "$line" ]; then
      part=$part$line
      note "partial line from the host so far: '$part'"
    fi
  done
  return 1
}

mark ready
host_cmd busy stop || die "no busy/stop from the host within ${MAX_S}s"
if [ "$cmd" = stop ]; then
  result busy 0
  finish
fi

result busy 1
fio --name=busy --filename="/dev/$DISK" --rw=randrw --rwmixread="$RWMIX" --bs=4k --ioengine=libaio \
  --iodepth="$IODEPTH" --direct=1 --time_based --runtime="$MAX_S" --randrepeat=0 --norandommap \
  --output-format=terse --terse-version=3 --output=/tmp/fio.txt >/dev/null 2>&1 &
fio_pid=$!
# fio is issuing I/O once its job reports a completed request: give it a moment, then check it lives
sleep 1
kill -0 "$fio_pid" 2>/dev/null || die "fio ended at once: $(cat /tmp/fio.txt)"
mark fio-running
host_cmd stop || note "no stop from the host within ${MAX_S}s"
exec 3<&-
kill -TERM "$fio_pid" 2>/dev/null
wait "$fio_pid"
rc=$?
# terse v3: 5 error, 8 read iops, 9 read runtime ms, 49 write iops; ios = kB / 4 (4 KiB requests)
line=$(grep '^3;' /tmp/fio.txt | tail -1)
[ -n "$line" ] || die "no fio summary (rc $rc): $(head -c 500 /tmp/fio.txt)"
field() { echo "$line" | cut -d';' -f"$1"; }
result fio_rc "$rc"
expect fio_errors "$(field 5)" 0
result fio_read_ios $(($(field 6) / 4))
result fio_write_ios $(($(field 47) / 4))
result fio_read_iops "$(field 8)"
result fio_write_iops "$(field 49)"
result fio_runtime_ms "$(field 9)"
finish
