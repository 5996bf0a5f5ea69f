#!/bin/sh
# backend-discard.sh - discard and write-zeroes on a file-backed disk, checked on the host in
# between: the guest fills two ranges with a pattern (O_DIRECT + fsync, so a FLUSH), stops for the
# host to look at the backing file, discards the first range (blkdiscard) and write-zeroes the
# second (blkdiscard -z), checks both read back as zeros with their guards intact, and stops again
# for the host.
# Ranges: discard [OFFSET, +LEN), write-zeroes [ZOFFSET, +LEN), each with GUARD bytes of pattern on
# both sides that must survive.
# Host protocol: WAIT filled (pattern written and flushed) -> host sends "filled";
#                WAIT discarded (both ranges done) -> host sends "discarded".
# Env: DEV (vda) SEED (discard) OFFSET (40 MiB) ZOFFSET (OFFSET + LEN + 4 GUARD) LEN (1 MiB)
#      GUARD (64 KiB)
# RESULT keys: discard_max_bytes write_zeroes_max_bytes discard_rc zeroout_rc discard_zeroed
#   zeroout_zeroed discard_guard_ok zeroout_guard_ok
. /vhostd/lib.sh
DEV=${DEV:-vda}
SEED=${SEED:-discard}
LEN=${LEN:-1048576}
GUARD=${GUARD:-65536}
OFFSET=${OFFSET:-41943040}
ZOFFSET=${ZOFFSET:-$((OFFSET + LEN + 4 * GUARD))}
wait_dev "/dev/$DEV" || finish
q=/sys/block/$DEV/queue
result discard_max_bytes "$(cat $q/discard_max_bytes)"
result write_zeroes_max_bytes "$(cat $q/write_zeroes_max_bytes)"
[ "$(cat $q/discard_max_bytes)" != 0 ] || die "the disk does not advertise discard"
[ "$(cat $q/write_zeroes_max_bytes)" != 0 ] || die "the disk does not advertise write-zeroes"

# fill NAME START: pattern over [START - GUARD, START + LEN + GUARD); remembers the guards' sums
fill() {
  local start=$(($2 - GUARD)) total=$((LEN + 2 * GUARD))
  pattern_chunk "$SEED" "$start" "$total" >/tmp/pat
  write_at "$DEV" "$start" /tmp/pat || die "$1: writing the pattern failed"
  [ "$(sha_at "$DEV" "$start" "$total")" = "$(sha256sum </tmp/pat | cut -d' ' -f1)" ] || die "$1: the pattern did not read back"
  eval "G1_$1=\$(head -c $GUARD /tmp/pat | sha256sum | cut -d' ' -f1)"
  eval "G2_$1=\$(tail -c $GUARD /tmp/pat | sha256sum | cut -d' ' -f1)"
}
# check NAME START: zeros inside, guards unchanged
check() {
  if is_zero_at "$DEV" "$2" "$LEN"; then result "$1_zeroed" 1; else result "$1_zeroed" 0; fail "$1: [$2, +$LEN) is not zero"; fi
  local g1 g2
  eval "g1=\$G1_$1; g2=\$G2_$1"
  if [ "$(sha_at "$DEV" $(($2 - GUARD)) "$GUARD")" = "$g1" ] && [ "$(sha_at "$DEV" $(($2 + LEN)) "$GUARD")" = "$g2" ]; then
    result "$1_guard_ok" 1
  else
    result "$1_guard_ok" 0; fail "$1 changed data outside [$2, +$LEN)"
  fi
}

fill discard "$OFFSET"
fill zeroout "$ZOFFSET"
wait_host filled || finish
blkdiscard -f -o "$OFFSET" -l "$LEN" "/dev/$DEV"; rc=$?
result discard_rc "$rc"; [ $rc -eq 0 ] || fail "blkdiscard exited $rc"
blkdiscard -f -z -o "$ZOFFSET" -l "$LEN" "/dev/$DEV"; rc=$?
result zeroout_rc "$rc"; [ $rc -eq 0 ] || fail "blkdiscard -z exited $rc"
check discard "$OFFSET"
check zeroout "$ZOFFSET"
wait_host discarded || finish
finish
