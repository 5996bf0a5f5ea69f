#!/bin/sh
# blk-persist-check.sh - second boot of a persistence check: the chunks blk-persist-write.sh wrote
# must still be there. Env: DEV (vda) SEED (same as the write) RANDOM_SHA (optional: the write's
# random_sha result).
# RESULT keys: size_bytes match_<offset>... random_match
. /vhostd/lib.sh
DEV=${DEV:-vda}
SEED=${SEED:-vhostd}
CHUNK=65536
wait_dev "/dev/$DEV" || finish
size=$(size_bytes "$DEV")
result size_bytes "$size"
offsets="0 $((1024 * 1024 + 4096)) $((size / 2 / 4096 * 4096)) $((size - CHUNK))"
for off in $offsets; do
  want=$(pattern_chunk "$SEED" "$off" $CHUNK | sha256sum | cut -d' ' -f1)
  got=$(sha_at "$DEV" "$off" $CHUNK)
  if [ "$got" = "$want" ]; then result "match_$off" 1; else result "match_$off" 0; fail "chunk at $off lost (sha $got)"; fi
done
if [ -n "${RANDOM_SHA:-}" ]; then
  got=$(sha_at "$DEV" $((size / 4 / 4096 * 4096)) $CHUNK)
  if [ "$got" = "$RANDOM_SHA" ]; then result random_match 1; else result random_match 0; fail "random chunk lost"; fi
fi
finish
