#!/usr/bin/env bash
# bench/ab-cpu.sh [--rounds N] BIN_A BIN_B — forward-path CPU per request of two binaries, interleaved:
# each round runs wrk -t2 -c50 (the bench's forward load, absform.lua) for 5 s against each binary after a
# 2 s warm-up, alternating which goes first, and reads the proxy's utime+stime from /proc. Both run the
# bench's pinset with 1 worker at the same time, idle while the other is measured, so the machine's drift
# falls on both. For a change too small for run.sh's spread — or two builds of one tree (the gnu build and
# the image's static one). Needs the bench peers (bench/run.sh --smoke starts them); loopback only.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
B=/tmp/bench-peers; P=/tmp/bench-pp; W=${WORK:-/tmp/ab-cpu}
ROUNDS=8
[ "${1:-}" = --rounds ] && { ROUNDS=$2; shift 2; }
[ $# -eq 2 ] || { echo "usage: $0 [--rounds N] BIN_A BIN_B" >&2; exit 2; }
for bin in "$@"; do [ -x "$bin" ] || { echo "$bin: not an executable" >&2; exit 2; }; done
if ! curl -s -o /dev/null --cacert $B/pki/root.pem --resolve api.local:8443:127.0.0.1 https://api.local:8443/ \
   || [ ! -f $P/pins.yaml ]; then
  echo "### starting the bench peers (bench/run.sh --smoke)" >&2
  STOP=0 "$HERE/run.sh" --smoke >&2
fi
mkdir -p "$W"
PIDS=()
trap 'kill "${PIDS[@]}" 2>/dev/null || true' EXIT
start() {   # BIN PORT: a fresh instance; waits for /readyz
  "$1" run --pins $P/pins.yaml --listen 127.0.0.1:$2 --admin 127.0.0.1:$(($2 + 4000)) --workers 1 \
    --ca-out "$W/ca-$2" > "$W/pinproxy-$2.log" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 100); do curl -fs -o /dev/null http://127.0.0.1:$(($2 + 4000))/readyz && return; sleep 0.05; done
  echo "$1: not ready in 5 s; see $W/pinproxy-$2.log" >&2; exit 1
}
start "$1" 15071; pa=${PIDS[-1]}
start "$2" 15072; pb=${PIDS[-1]}
cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }
run() {   # PID PORT: CPU µs per request of one 5 s wrk run
  local c0 c1 reqs
  wrk -t2 -c50 -d2s -s $B/load/absform.lua http://127.0.0.1:$2 > /dev/null
  sleep 1
  c0=$(cpu $1)
  reqs=$(wrk -t2 -c50 -d5s -s $B/load/absform.lua http://127.0.0.1:$2 | awk '/requests in/ {print $1}')
  c1=$(cpu $1)
  awk -v c=$((c1 - c0)) -v r="$reqs" -v t="$(getconf CLK_TCK)" 'BEGIN {printf "%.2f", c / t / r * 1e6}'
}
echo "A: $1"; echo "B: $2"
for i in $(seq "$ROUNDS"); do
  if [ $((i % 2)) = 1 ]; then a=$(run $pa 15071); b=$(run $pb 15072); else b=$(run $pb 15072); a=$(run $pa 15071); fi
  echo "round $i: A $a µs/req, B $b µs/req, B/A $(awk -v a="$a" -v b="$b" 'BEGIN {printf "%.3f", b / a}')"
done
