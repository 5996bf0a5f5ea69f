#!/bin/sh
# blk-discard.sh - discard (blkdiscard) and write-zeroes (blkdiscard -z) on a pattern-filled range
# (-f: util-linux refuses a disk holding a filesystem signature otherwise):
# the range must read back as zeros and the bytes right before and after it must be untouched.
# Env: DEV (vda) OFFSET (bytes, default 1 MiB) LEN (bytes, default 1 MiB) GUARD (bytes kept
#   intact on each side, default 64 KiB)
#   DISCARD (1: run the discard part) REQUIRE_DISCARD (1: the disk must advertise discard)
#   DISCARD_ZEROES (1: discarded blocks must read back as zeros, as with vhostd's malloc bdev;
#     0: only report it, for backends whose discard is a hint)
#   ZEROOUT (1: run the blkdiscard -z part; it must always zero)
# RESULT keys: discard_max_bytes write_zeroes_max_bytes discard_rc discard_zeroed discard_guard_ok
#   zeroout_rc zeroout_zeroed zeroout_guard_ok
. /vhostd/lib.sh
DEV=${DEV:-vda}
OFFSET=${OFFSET:-1048576}
LEN=${LEN:-1048576}
GUARD=${GUARD:-65536}
wait_dev "/dev/$DEV" || finish
q=/sys/block/$DEV/queue
result discard_max_bytes "$(cat $q/discard_max_bytes)"
result write_zeroes_max_bytes "$(cat $q/write_zeroes_max_bytes)"
[ $((OFFSET % 4096)) -eq 0 ] && [ $((LEN % 4096)) -eq 0 ] && [ $((GUARD % 4096)) -eq 0 ] ||
  die "OFFSET, LEN and GUARD must be multiples of 4096"
[ "$OFFSET" -ge "$GUARD" ] || die "OFFSET must be >= GUARD"

# fill [start - GUARD, start + len + GUARD) with a pattern; remember the guards' checksums
fill() { # NAME START LEN
  local start=$(($2 - GUARD)) total=$(($3 + 2 * GUARD))
  pattern_chunk "$1" "$start" "$total" >/tmp/pat
  write_at "$DEV" "$start" /tmp/pat || die "$1: writing the pattern failed"
  [ "$(sha_at "$DEV" "$start" "$total")" = "$(sha256sum </tmp/pat | cut -d' ' -f1)" ] ||
    die "$1: the pattern did not read back"
  is_zero_at "$DEV" "$2" "$3" && die "$1: the pattern reads as zeros?"
  G1=$(head -c "$GUARD" /tmp/pat | sha256sum | cut -d' ' -f1)
  G2=$(tail -c "$GUARD" /tmp/pat | sha256sum | cut -d' ' -f1)
}
check() { # NAME START LEN MUST_ZERO
  if is_zero_at "$DEV" "$2" "$3"; then result "$1_zeroed" 1
  else
    result "$1_zeroed" 0
    if [ "$4" = 1 ]; then fail "$1: [$2, +$3) does not read back as zeros"; else note "$1 did not zero the range (allowed)"; fi
  fi
  if [ "$(sha_at "$DEV" $(($2 - GUARD)) "$GUARD")" = "$G1" ] && [ "$(sha_at "$DEV" $(($2 + $3)) "$GUARD")" = "$G2" ]; then
    result "$1_guard_ok" 1
  else
    result "$1_guard_ok" 0; fail "$1 changed data outside [$2, +$3)"
  fi
}

if [ "${DISCARD:-1}" = 1 ]; then
  if [ "$(cat $q/discard_max_bytes)" = 0 ]; then
    result discard_rc unsupported
    [ "${REQUIRE_DISCARD:-1}" = 1 ] && fail "the disk does not advertise discard"
  else
    fill discard "$OFFSET" "$LEN"
    blkdiscard -f -o "$OFFSET" -l "$LEN" "/dev/$DEV"; rc=$?
    result discard_rc "$rc"
    [ $rc -eq 0 ] || fail "blkdiscard exited $rc"
    check discard "$OFFSET" "$LEN" "${DISCARD_ZEROES:-1}"
  fi
fi

if [ "${ZEROOUT:-1}" = 1 ]; then
  zoff=$((OFFSET + LEN + 4 * GUARD))
  fill zeroout "$zoff" "$LEN"
  blkdiscard -f -z -o "$zoff" -l "$LEN" "/dev/$DEV"; rc=$?
  result zeroout_rc "$rc"
  [ $rc -eq 0 ] || fail "blkdiscard -z exited $rc"
  check zeroout "$zoff" "$LEN" 1
fi
finish
