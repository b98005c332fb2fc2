#!/usr/bin/env bash
# bench/link-order.sh [--musl] [BIN] — regenerates link/symbol-order.txt, the order the linker lays
# out the release binary's functions in (build.rs hands it to lld; docs/benchmarks.md, "Code layout");
# with --musl, link/symbol-order-musl.txt for the image's static binary (--target
# x86_64-unknown-linux-musl, as scripts/e2e.sh and the Dockerfile build it), whose names differ.
#
# Why: the kernel maps a binary's code into a process 64 KiB at a time (fault-around), so a function
# run once maps its 64 KiB neighbourhood too. In link order, the ~2,600 functions pinproxy runs are
# spread over the whole 8.6 MiB .text and a fresh instance had 5.6–6.2 MiB of it resident; laid out
# together, the code it runs is ~3 MiB. The file lists them in two groups: what starting up runs,
# then what serving runs that starting did not (the common paths first) — so an instance that has
# not served yet maps the first group only.
#
# How: the release binary runs under valgrind (callgrind, which records every function executed)
# with the bench's pinsets and load — forward (h2 upstream and `upstream_protocol: h1`), CONNECT
# interception over HTTP/1.1 and h2, fresh upstream handshakes with 10 pins and with `ct: enforce`,
# /metrics — against the bench peers (bench/run.sh --smoke starts them if they are not up).
# Symbols are the mangled names, which depend on the toolchain and Cargo.lock, and on the code:
# a change anywhere can renumber local symbols (`….1648` → `….1650`) of std functions every request
# runs. Rerun this after a toolchain or Cargo.lock change and before a release (bench/run.sh reports
# how many of the file's symbols its binary still has: 13 fewer after one small change cost 0.5 MiB
# at start and 0.7–1.1 MiB after load, docs/benchmarks.md "Code layout"). A
# stale file costs memory, never correctness: names the linker does not find are skipped. Two runs
# differ by a few dozen names at the margins (what the end of a load happens to run: stream resets,
# thread exits); such a difference is not worth a commit.
set -euo pipefail
export LC_ALL=C
HERE=$(cd "$(dirname "$0")" && pwd); ROOT=$(dirname "$HERE")
B=/tmp/bench-peers; P=/tmp/bench-pp; W=${WORK:-/tmp/link-order}
OUT=$ROOT/link/symbol-order.txt; TARGET=x86_64-unknown-linux-gnu
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/tmp/bench-target}
BUILD=(cargo build --release --quiet --bin pinproxy)
BIN=$CARGO_TARGET_DIR/release/pinproxy
if [ "${1:-}" = --musl ]; then
  shift
  OUT=$ROOT/link/symbol-order-musl.txt; TARGET="x86_64-unknown-linux-musl, static"
  BUILD+=(--target x86_64-unknown-linux-musl)
  BIN=$CARGO_TARGET_DIR/x86_64-unknown-linux-musl/release/pinproxy
fi
BIN=${1:-$BIN}
log() { printf '### %s\n' "$*" >&2; }

command -v valgrind >/dev/null || { log "installing valgrind"; apt-get update -q && apt-get install -y -q --no-install-recommends valgrind; }
if ! curl -s -o /dev/null --cacert $B/pki/root.pem --resolve api.local:8443:127.0.0.1 https://api.local:8443/ \
   || [ ! -x $P/connect-relay ]; then
  log "starting the bench peers (bench/run.sh --smoke)"
  STOP=0 "$HERE/run.sh" --smoke >&2
fi
[ $# -ge 1 ] || { log "building pinproxy: ${BUILD[*]}"; (cd "$ROOT" && "${BUILD[@]}"); }
rm -rf "$W" && mkdir -p "$W"
PIDS=()   # what a trace started: stopped on any exit, a failed one's too
trap 'kill "${PIDS[@]}" 2>/dev/null || true' EXIT

# trace NAME PINS [LOAD...]: pinproxy under callgrind with PINS; after /readyz and /metrics, runs each
# LOAD command (PORT and RELAY in it are this instance's); writes the functions it ran to $W/NAME.fns.
trace() {
  local name=$1 pins=$2; shift 2
  local port=$((17800 + RANDOM % 100)) relay
  local admin=$((port + 100)); relay=$((port + 200))
  valgrind --tool=callgrind --demangle=no --compress-strings=no --dump-instr=no \
    --callgrind-out-file="$W/$name.out.%p" \
    "$BIN" run --pins "$pins" --listen 127.0.0.1:$port --admin 127.0.0.1:$admin --workers 1 \
    --ca-out "$W/ca-$name" > "$W/$name.log" 2>&1 &
  local vg=$! ready=""
  PIDS+=($vg)
  for _ in $(seq 600); do curl -fs -o /dev/null http://127.0.0.1:$admin/readyz && { ready=1; break; }; sleep 0.1; done
  [ -n "$ready" ] || { log "$name: not ready after 60 s under valgrind; see $W/$name.log"; exit 1; }
  curl -fs -o /dev/null http://127.0.0.1:$admin/metrics
  "$P/connect-relay" $relay 127.0.0.1:$port api.local:443 > "$W/relay-$name.log" 2>&1 &
  local rl=$!
  PIDS+=($rl)
  local cmd
  for cmd in "$@"; do
    cmd=${cmd//PORT/$port}; cmd=${cmd//RELAY/$relay}
    log "$name: $cmd"
    bash -c "$cmd" > "$W/$name.load.log" 2>&1 || { log "failed: $cmd"; cat "$W/$name.load.log" >&2; exit 1; }
  done
  curl -fs -o /dev/null http://127.0.0.1:$admin/metrics
  kill $rl 2>/dev/null || true; kill -INT $vg; wait $vg || true
  # fn= lines name every function that ran; 'N marks a recursion cycle, not another symbol
  cat "$W/$name".out.* | sed -n 's/^fn=\(([0-9]*) \)\{0,1\}//p' | sed "s/'[0-9]*\$//" \
    | grep -v -E '^0x|^\(below main\)' | sort -u > "$W/$name.fns"
  log "$name: $(wc -l < "$W/$name.fns") functions"
}

WRK="wrk -t2 -c50 -d3s -s $B/load/absform.lua http://127.0.0.1:PORT"
H1="h2load --h1 -c50 -t2 -D 3 --connect-to=127.0.0.1:RELAY https://api.local/"
H2="h2load --npn-list=h2 -c10 -m100 -t1 -D 3 --connect-to=127.0.0.1:RELAY https://api.local/"
CURL="curl -fsS -o /dev/null -x http://127.0.0.1:PORT"
trace start "$P/pins.yaml"
# Serving is traced twice and the two joined: which functions a load runs at its margins (flow
# control, stream resets, a read that returns early) varies from run to run, and one that the file
# misses costs its 64 KiB neighbourhood in every instance that runs it.
for s in serve serve2; do
  trace $s "$P/pins.yaml" "$CURL http://api.local/a" "$WRK" "$H1" "$H2" \
    "$CURL --cacert $W/ca-$s/ca.crt https://api.local/b" "$CURL --http1.1 --cacert $W/ca-$s/ca.crt https://api.local/c"
done
sort -u "$W/serve.fns" "$W/serve2.fns" -o "$W/serve.fns"
trace h1 "$P/pins-h1.yaml" "$WRK"
trace ten "$P/pins-ten.yaml" "${WRK/-c50/-c4}"
trace ct "$P/pins-ct-enforce.yaml" "${WRK/-c50/-c4}"

mkdir -p "$(dirname "$OUT")"
{
  echo "# The release binary's functions in the order lld lays them out (build.rs: --symbol-ordering-file): $TARGET."
  echo "# Generated by bench/link-order.sh from $(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo '?') with $(${RUSTC:-rustc} --version); do not edit."
  echo "# What starting up runs; then what serving (forward, CONNECT) runs besides; then what only an h1"
  echo "# upstream, 10 pins or ct: enforce add. Names not in the binary are skipped."
  cat "$W/start.fns"
  comm -23 "$W/serve.fns" "$W/start.fns"
  sort -u "$W"/h1.fns "$W"/ten.fns "$W"/ct.fns | comm -23 - "$W/start.fns" | comm -23 - "$W/serve.fns"
} > "$OUT"
log "wrote $OUT: $(grep -vc '^#' "$OUT") symbols ($(wc -l < "$W/start.fns") start, the rest serve)"
