#!/bin/sh
# migrate-fio-verify.sh - fio write+verify rounds on one disk while the host live-migrates the VM,
# and a region written before the migration whose checksum must survive it.
#
#   1. write REGION_MB of pattern data at offset 0 (O_DIRECT + FLUSH), read it back: RESULT pre_sha
#   2. MARK fio-running, then fio rounds on the disk after the region, each a randwrite of SIZE_MB
#      (libaio, QD 16, 4 KiB) followed by fio's read-back crc32c verify of every block. Rounds go on
#      until the host sends `stop` (checked between rounds: the host sends it after the migration,
#      so fio was writing or verifying while the VM moved) or MAX_S seconds passed; at least
#      MIN_ROUNDS rounds, and always one round that starts after `stop` arrived, i.e. entirely on
#      the destination.
#   3. re-read the region: RESULT post_sha, region_intact.
# A write lost in the switch (the destination's back-end never saw it, or saw it twice out of
# order) fails fio's verify; a read whose data the source's back-end put into guest memory without
# marking it dirty fails it too when the verify runs on the destination. MARK round<N> after each.
#
# Env: DISK (vda; sda for a vhost-user-scsi disk) REGION_MB (4) SIZE_MB (8) MAX_S (150) MIN_ROUNDS (2)
# RESULT keys: pre_sha post_sha region_intact rounds rounds_after_stop stopped_by_host fio_errors
. /vhostd/lib.sh
DISK=${DISK:-vda}
REGION_MB=${REGION_MB:-4}
SIZE_MB=${SIZE_MB:-8}
MAX_S=${MAX_S:-150}
MIN_ROUNDS=${MIN_ROUNDS:-2}
wait_dev "/dev/$DISK" || finish

region=$((REGION_MB * 1048576))
pattern_chunk migrate 0 "$region" >/tmp/region
write_at "$DISK" 0 /tmp/region || die "writing the region failed"
want=$(sha256sum </tmp/region | cut -d' ' -f1)
pre=$(sha_at "$DISK" 0 "$region")
result pre_sha "$pre"
[ "$pre" = "$want" ] || die "the region reads back wrong before any migration"

# the host's `stop`, read without blocking between rounds (the tty keeps what arrives meanwhile)
exec 3<"$VHOSTD_CHAN"
stopped=0
# The port is raw: a read that times out mid-line leaves the bytes that arrived in `line`; they
# start the next line, so they are kept (stop_part) instead of dropped.
stop_part=
host_said_stop() {
  local line
  while :; do
    line=
    if read -r -t 0.05 line <&3; then
      line=$stop_part$line stop_part=
      [ "$line" = stop ] && stopped=1
    else
      stop_part=$stop_part$line
      break
    fi
  done
  [ "$stopped" -eq 1 ]
}

mark fio-running
errors=0 rounds=0 after=0 start=$(date +%s)
while :; do
  seen_stop=$stopped
  rounds=$((rounds + 1))
  rm -f /tmp/f.txt /tmp/f.err
  fio --name=m$rounds --filename="/dev/$DISK" --offset="${REGION_MB}m" --size="${SIZE_MB}m" --rw=randwrite --bs=4k \
    --ioengine=libaio --iodepth=16 --direct=1 --verify=crc32c --randseed=$rounds --output=/tmp/f.txt >/dev/null 2>/tmp/f.err
  rc=$?
  bad=$(cat /tmp/f.txt 2>/dev/null | grep -c 'err= *[1-9]\|verify:\|bad magic\|crc32c: wanted')
  note "round $rounds: fio rc=$rc, error lines $bad, uptime $(cut -d' ' -f1 /proc/uptime)"
  if [ "$rc" -ne 0 ] || [ "$bad" -ne 0 ]; then errors=$((errors + 1)); grep -E 'err=|verify|wanted' /tmp/f.txt 2>/dev/null | head -5 | sed 's/^/# /'; tail -5 /tmp/f.err | sed 's/^/# stderr: /'; fi
  [ "$seen_stop" -eq 1 ] && after=$((after + 1))
  mark "round$rounds"
  host_said_stop
  [ "$after" -ge 1 ] && [ "$rounds" -ge "$MIN_ROUNDS" ] && break
  if [ $(($(date +%s) - start)) -ge "$MAX_S" ]; then note "no stop from the host within ${MAX_S}s"; break; fi
done
exec 3<&-
result rounds "$rounds"
result rounds_after_stop "$after"
result stopped_by_host "$stopped"
expect fio_errors "$errors" 0

post=$(sha_at "$DISK" 0 "$region")
result post_sha "$post"
if [ "$post" = "$pre" ]; then result region_intact 1; else result region_intact 0; fail "the region written before the migration changed"; fi
finish
