#!/bin/sh
# backend-read-error.sh - an error the host injects into one read reaches the guest as an I/O
# error on that request only. The guest writes a pattern chunk, reads it back (O_DIRECT), stops
# for the host to inject one read failure, then reads the same chunk twice with O_DIRECT dd: the
# first must fail with EIO, the second must succeed and return the pattern.
# Host protocol: WAIT injected -> host runs bdev_error_inject_error NAME read failure -n 1, sends
#   "injected".
# Env: DEV (vdb) OFFSET (1 MiB) LEN (4096) SEED (read-error)
# RESULT keys: read_before first_rc first_eio second_rc second_match
. /vhostd/lib.sh
DEV=${DEV:-vdb}
OFFSET=${OFFSET:-1048576}
LEN=${LEN:-4096}
SEED=${SEED:-read-error}
wait_dev "/dev/$DEV" || finish
pattern_chunk "$SEED" "$OFFSET" "$LEN" >/tmp/chunk
want=$(sha256sum </tmp/chunk | cut -d' ' -f1)
write_at "$DEV" "$OFFSET" /tmp/chunk || die "writing the chunk failed"
if [ "$(sha_at "$DEV" "$OFFSET" "$LEN")" = "$want" ]; then result read_before ok; else result read_before bad; die "no read-back before the injection"; fi
wait_host injected || finish
# one request each: LEN bytes, O_DIRECT, no read-ahead
read_once() { dd if="/dev/$DEV" of="$1" bs="$LEN" count=1 iflag=direct,skip_bytes skip="$OFFSET" status=none 2>/tmp/dd.err; }
read_once /tmp/r1; rc=$?
result first_rc "$rc"
note "first read: $(cat /tmp/dd.err)"
if grep -q 'Input/output error' /tmp/dd.err; then result first_eio 1; else result first_eio 0; fi
[ $rc -ne 0 ] || fail "the first read after the injection succeeded"
read_once /tmp/r2; rc=$?
result second_rc "$rc"
[ $rc -eq 0 ] || fail "the second read failed too: $(cat /tmp/dd.err)"
if [ "$(sha256sum </tmp/r2 | cut -d' ' -f1)" = "$want" ]; then result second_match 1; else result second_match 0; fail "the second read returned wrong data"; fi
finish
