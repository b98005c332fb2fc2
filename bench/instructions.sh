#!/usr/bin/env bash
# bench/instructions.sh [BIN] — instructions per request, counted by callgrind: the figures
# docs/benchmarks.md gives beside the wall-clock tables, which this machine's drift does not move.
#
#   forward     2,000 keep-alive forward requests on one connection after 200 warm-up ones, shaped like
#               wrk's (only Host: curl's User-Agent, Accept and Proxy-Connection removed), through the
#               bench's h2 upstream (:8443, the pinset of the forward rows)
#   ca, ten     300 fresh upstream handshakes (:8445, no keep-alive) after 30 warm-up ones: CA-only
#               (expired pins) and 10 pins — the "10-pin vs CA-only" row
#   ct-off, ct-enforce
#               the same on :8446 (a leaf with 3 SCTs): `ct: off` and `ct: enforce` — issue 27 item 5
#
# Counters are zeroed after the warm-up (callgrind_control -z) and dumped after the counted requests
# (-d), so start-up and warm-up are not counted. Needs the bench peers (bench/run.sh --smoke starts them
# if they are not up) and valgrind. Prints one line per measurement; ~2 minutes.
set -euo pipefail
export LC_ALL=C
HERE=$(cd "$(dirname "$0")" && pwd); ROOT=$(dirname "$HERE")
B=/tmp/bench-peers; P=/tmp/bench-pp; W=${WORK:-/tmp/bench-instructions}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/tmp/bench-target}
BIN=${1:-$CARGO_TARGET_DIR/release/pinproxy}
log() { printf '### %s\n' "$*" >&2; }

command -v valgrind >/dev/null || { log "installing valgrind"; apt-get update -q && apt-get install -y -q --no-install-recommends valgrind; }
if ! curl -s -o /dev/null --cacert $B/pki/root.pem --resolve api.local:8443:127.0.0.1 https://api.local:8443/ \
   || ! curl -s -o /dev/null --cacert $B/pki/root.pem --resolve api.local:8446:127.0.0.1 https://api.local:8446/ \
   || [ ! -f $P/pins-ct-enforce.yaml ]; then
  log "starting the bench peers (bench/run.sh --smoke)"
  STOP=0 "$HERE/run.sh" --smoke >&2
fi
[ $# -ge 1 ] || { log "building pinproxy (release)"; (cd "$ROOT" && cargo build --release --quiet --bin pinproxy); }
rm -rf "$W" && mkdir -p "$W"
VG=""
trap '[ -z "$VG" ] || kill "$VG" 2>/dev/null || true' EXIT

# count NAME PINS WARM N [run args...]: instructions per request of N requests after WARM ones
count() {
  local name=$1 pins=$2 warm=$3 n=$4; shift 4
  local port=$((17900 + RANDOM % 100)) admin ready="" out total
  admin=$((port + 100))
  valgrind --tool=callgrind --callgrind-out-file="$W/$name.out.%p" \
    "$BIN" run --pins "$pins" --listen 127.0.0.1:$port --admin 127.0.0.1:$admin --workers 1 \
    --ca-out "$W/ca-$name" "$@" > "$W/$name.log" 2>&1 &
  VG=$!
  for _ in $(seq 600); do curl -fs -o /dev/null http://127.0.0.1:$admin/readyz && { ready=1; break; }; sleep 0.1; done
  [ -n "$ready" ] || { log "$name: not ready after 60 s under valgrind; see $W/$name.log"; exit 1; }
  # one curl, one keep-alive connection, URL globbing for the count; only Host (as wrk sends)
  local curl=(curl -s -H Proxy-Connection: -H User-Agent: -H Accept: -x http://127.0.0.1:$port)
  "${curl[@]}" -o /dev/null "http://api.local/w[1-$warm]"
  sleep 1
  callgrind_control -z $VG > /dev/null 2>&1
  out=$("${curl[@]}" -o /dev/null -w '%{http_code}\n' "http://api.local/r[1-$n]" | sort | uniq -c | tr -s ' ')
  callgrind_control -d $VG > /dev/null 2>&1
  sleep 1
  kill $VG; wait $VG 2>/dev/null || true; VG=""
  [ "$(echo $out)" = "$n 200" ] || { log "$name: not $n × 200: $out; see $W/$name.log"; exit 1; }
  # the dump after the counted requests (.1), not the one at exit
  total=$(callgrind_annotate "$(ls "$W/$name".out.*.1)" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')
  printf '%-11s %9d instructions per request (%d requests, %s)\n' "$name" $((total / n)) "$n" "$(basename "$pins")"
}

CT=(--ct-log-list $B/ct/log_list.json)
count forward    $P/pins.yaml            200 2000
count ca         $P/pins-ca.yaml          30  300
count ten        $P/pins-ten.yaml         30  300
count ct-off     $P/pins-ct-off.yaml      30  300 "${CT[@]}"
count ct-enforce $P/pins-ct-enforce.yaml  30  300 "${CT[@]}"
