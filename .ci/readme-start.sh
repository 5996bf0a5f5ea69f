#!/usr/bin/env bash
# Proves the README's first command works the way a new user runs it: it runs that exact line (taken
# from README.md, not copied here), waits for the daemon it starts to answer spdk_get_version on the
# default RPC socket, then stops it. Before that it checks, with dpkg, that every library the native
# addon links (binding.gyp "libraries") comes from a package the line installs, directly or as a
# dependency: on a machine where CI installed them earlier the run alone could not tell.
set -euo pipefail
cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.."

LINE=$(grep -m1 -E '^apt-get update && ' README.md) || { echo "README.md has no 'apt-get update && ...' start line" >&2; exit 1; }
echo "README start line: $LINE"
APT_LINE=$(sed -E 's/^.*apt-get install -y ([^&]*)&&.*$/\1/' <<<"$LINE")
read -r -a NAMED <<<"$APT_LINE"

apt-get -q -o DPkg::Lock::Timeout=600 update >/dev/null
apt-get -q -o DPkg::Lock::Timeout=600 install -y --no-install-recommends "${NAMED[@]}" >/dev/null
covered=" ${NAMED[*]} "
for p in "${NAMED[@]}"; do
  covered+=" $(apt-cache depends --no-recommends --no-suggests "$p" 2>/dev/null | awk '/Depends:/{sub(/:.*/, "", $2); print $2}' | tr '\n' ' ') "
done
LIBS=$(node -e "const g = JSON.parse(require('fs').readFileSync('binding.gyp', 'utf8')); console.log(g.targets.flatMap((t) => t.libraries || []).join(' '))")
for lib in $LIBS; do
  so=$(realpath -s "$(gcc -print-file-name="lib${lib#-l}.so")")
  pkg=$(dpkg -S "$so" 2>/dev/null | head -1 | cut -d: -f1) || true
  [ -n "$pkg" ] || { echo "cannot tell which package provides $so (for $lib)" >&2; exit 1; }
  if [[ "$covered" != *" $pkg "* ]]; then
    echo "README's start line does not install $pkg, which provides $so for the addon's $lib" >&2
    exit 1
  fi
  echo "  $lib: $so from $pkg (installed by the start line)"
done

# Run the line itself, in its own process group, until the daemon answers.
SOCK=/var/tmp/spdk.sock
LOG=$(mktemp)
setsid bash -c "$LINE" >"$LOG" 2>&1 </dev/null &
PGID=$!
stop() { kill -TERM -- "-$PGID" 2>/dev/null || true; sleep 1; kill -KILL -- "-$PGID" 2>/dev/null || true; }
trap stop EXIT
for _ in $(seq 1 600); do
  if [ -S "$SOCK" ] && node bin/vhostctl -s "$SOCK" spdk_get_version >/tmp/vhostd-readme-version.json 2>/dev/null; then
    echo "the README's start line serves: $(tr -d '\n ' </tmp/vhostd-readme-version.json)"
    node bin/vhostctl -s "$SOCK" vhost_get_controllers | grep -q '"ctrlr": "vhost.0"' || { echo "no vhost.0 controller" >&2; cat "$LOG"; exit 1; }
    exit 0
  fi
  kill -0 "$PGID" 2>/dev/null || { echo "the README's start line exited before serving:" >&2; tail -40 "$LOG" >&2; exit 1; }
  sleep 1
done
echo "the README's start line did not answer spdk_get_version within 10 minutes:" >&2
tail -40 "$LOG" >&2
exit 1
