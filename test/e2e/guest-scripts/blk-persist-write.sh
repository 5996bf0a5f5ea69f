#!/bin/sh
# blk-persist-write.sh - first boot of a persistence check: writes deterministic, offset-specific
# 64 KiB chunks at the start, just past 1 MiB, the middle and the end of the disk, plus one chunk
# of random data, each fsync'ed (FLUSH). blk-persist-check.sh verifies them on a later boot.
# Env: DEV (vda) SEED (default vhostd)
# RESULT keys: size_bytes offsets sha_<offset>... random_offset random_sha (pass random_sha to the
#   check as RANDOM_SHA)
. /vhostd/lib.sh
DEV=${DEV:-vda}
SEED=${SEED:-vhostd}
CHUNK=65536
wait_dev "/dev/$DEV" || finish
size=$(size_bytes "$DEV")
[ "$size" -ge $((4 * 1024 * 1024)) ] || die "disk too small ($size bytes)"
result size_bytes "$size"
offsets="0 $((1024 * 1024 + 4096)) $((size / 2 / 4096 * 4096)) $((size - CHUNK))"
result offsets "$(echo $offsets | tr ' ' ,)"
for off in $offsets; do
  pattern_chunk "$SEED" "$off" $CHUNK >/tmp/chunk
  write_at "$DEV" "$off" /tmp/chunk || die "write at $off failed"
  result "sha_$off" "$(sha256sum </tmp/chunk | cut -d' ' -f1)"
done
roff=$((size / 4 / 4096 * 4096))
head -c $CHUNK /dev/urandom >/tmp/chunk
write_at "$DEV" "$roff" /tmp/chunk || die "write at $roff failed"
result random_offset "$roff"
result random_sha "$(sha256sum </tmp/chunk | cut -d' ' -f1)"
# read everything back once (O_DIRECT) before declaring success
for off in $offsets; do
  [ "$(sha_at "$DEV" "$off" $CHUNK)" = "$(pattern_chunk "$SEED" "$off" $CHUNK | sha256sum | cut -d' ' -f1)" ] ||
    fail "chunk at $off did not read back right after writing"
done
finish
