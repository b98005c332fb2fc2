#!/usr/bin/env bash
# bench/after-load.sh [--rounds N] BIN [BIN...] — what a fresh instance keeps after the bench's loads:
# RSS split into anonymous and file-backed pages, fresh (1 s after /readyz) and 2 s after each of
# four 5 s loads — forward (wrk -t2 -c50), CONNECT h1 (h2load --h1 -c50), CONNECT h2 (h2load -c10
# -m100) and forward again — the bench's workloads against its upstream (docs/benchmarks.md, "RSS
# after each load run"). With several binaries (an allocator or layout change against HEAD's), they
# are alternated N times (default 2), a fresh instance each time, so that the machine's drift falls
# on both. Needs the bench peers (bench/run.sh --smoke starts them if they are not up); loopback only.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
B=/tmp/bench-peers; P=/tmp/bench-pp; W=${WORK:-/tmp/after-load}
ROUNDS=2
[ "${1:-}" = --rounds ] && { ROUNDS=$2; shift 2; }
[ $# -ge 1 ] || { echo "usage: $0 [--rounds N] BIN [BIN...]" >&2; exit 2; }
for bin in "$@"; do [ -x "$bin" ] || { echo "$bin: not an executable" >&2; exit 2; }; done
if ! curl -s -o /dev/null --cacert $B/pki/root.pem --resolve api.local:8443:127.0.0.1 https://api.local:8443/ \
   || [ ! -x $P/connect-relay ]; then
  echo "### starting the bench peers (bench/run.sh --smoke)" >&2
  STOP=0 "$HERE/run.sh" --smoke >&2
fi
mkdir -p "$W"
# Each binary runs from a copy made now: how much of a binary's code a fault maps depends on how its
# file sits in the page cache (a file written a moment ago against one read back hours later: 0.2–0.4
# MiB of RSS apart for the same binary, measured), so binaries compared here enter it the same way.
[ "$(stat -f -c %T "$W")" != tmpfs ] || echo "warning: $W is on tmpfs: the copies' code counts as shared memory (RssShmem), not in the file column; set WORK= to a directory on disk" >&2
COPIES=()
for i in $(seq $#); do install -m 0755 "${!i}" "$W/bin$i"; COPIES+=("$W/bin$i"); done
PIDS=()
trap 'kill "${PIDS[@]}" 2>/dev/null || true' EXIT
mib() { awk -v k="$1" '$1 == k":" {printf "%.1f", $2 / 1024}' "/proc/$2/status"; }
row() { printf '%-40s %-7s %6s %6s %6s\n' "$1" "$2" "$(mib RssAnon "$3")" "$(mib RssFile "$3")" "$(mib VmRSS "$3")"; }

printf '%-40s %-7s %6s %6s %6s\n' binary when anon file rss
for r in $(seq "$ROUNDS"); do
  for i in $(seq $#); do
    bin=${!i}
    rm -rf "$W/ca"
    "${COPIES[$((i - 1))]}" run --pins $P/pins.yaml --listen 127.0.0.1:15061 --admin 127.0.0.1:19061 --workers 1 \
      --ca-out "$W/ca" > "$W/pinproxy.log" 2>&1 &
    pid=$!; PIDS+=($pid)
    "$P/connect-relay" 16061 127.0.0.1:15061 api.local:443 > "$W/relay.log" 2>&1 &
    rl=$!; PIDS+=($rl)
    ready=""
    for _ in $(seq 100); do curl -fs -o /dev/null http://127.0.0.1:19061/readyz && { ready=1; break; }; sleep 0.05; done
    [ -n "$ready" ] || { echo "$bin: not ready in 5 s; see $W/pinproxy.log" >&2; exit 1; }
    sleep 1; row "$bin" fresh $pid
    wrk -t2 -c50 -d5s -s $B/load/absform.lua http://127.0.0.1:15061 > "$W/load.log"
    sleep 2; row "$bin" fwd $pid
    h2load --h1 -c50 -t2 -D 5 --connect-to=127.0.0.1:16061 https://api.local/ > "$W/load.log"
    sleep 2; row "$bin" c-h1 $pid
    h2load --npn-list=h2 -c10 -m100 -t1 -D 5 --connect-to=127.0.0.1:16061 https://api.local/ > "$W/load.log"
    sleep 2; row "$bin" c-h2 $pid
    wrk -t2 -c50 -d5s -s $B/load/absform.lua http://127.0.0.1:15061 > "$W/load.log"
    sleep 2; row "$bin" fwd2 $pid
    kill $pid $rl; wait $pid $rl 2>/dev/null || true
  done
done
