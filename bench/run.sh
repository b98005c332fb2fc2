#!/usr/bin/env bash
# bench/run.sh [--smoke] [--duration S] [--reps N]
# bench/run.sh --loadtime [loadtime.py args]   # pinset load cost only (issue 12): no kit, see bench/loadtime.py
#
# One-command side-by-side benchmark of pinproxy against the kit in ../shared/bench-peers
# (Envoy 1.40 SPKI-pinned, nginx, haproxy, direct TLS), all on 127.0.0.1, same upstream and PKI.
#   1. copies the kit to /tmp/bench-peers if missing and runs its setup.sh (apt + pip; oha only with WITH_OHA=1)
#   2. builds pinproxy --release (CARGO_TARGET_DIR, default /tmp/bench-target)
#   3. starts the peers, a fresh-handshake upstream (:8445) and pinproxy instances (1 and 2 workers)
#   4. wrk -t2 -c50 keep-alive x REPS for direct / pinproxy / pinproxy 2w / Envoy / nginx / haproxy,
#      then the pinproxy-only measurements (10k idle conns, CONNECT new-conn rate, 10-pin vs CA-only
#      handshakes, ..data swap to enforcement, startup to /readyz, binary size)
#   5. prints one markdown table (+ the issue-6 target checks); raw outputs under /tmp/bench-peers/results/pinproxy-<ts>/
# --smoke: start everything, 1-second correctness pass (every target answers 200), stop. No figures.
# Needs root for apt (as the kit does). Leaves the peers running at the end unless STOP=1.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd); ROOT=$(dirname "$HERE")
KIT_SRC=${KIT_SRC:-$ROOT/../shared/bench-peers}
B=/tmp/bench-peers; P=/tmp/bench-pp
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/tmp/bench-target}
BIN=$CARGO_TARGET_DIR/release/pinproxy
SMOKE=0; D=10; REPS=3
if [ "${1:-}" = --loadtime ]; then   # builds, then old (/tmp/pinproxy-baseline) vs this tree, same command
  shift; (cd "$ROOT" && cargo build --release --quiet)
  exec python3 "$HERE/loadtime.py" --new "$BIN" "$@"
fi
while [ $# -gt 0 ]; do case $1 in
  --smoke) SMOKE=1 ;; --duration) D=$2; shift ;; --reps) REPS=$2; shift ;;
  *) echo "usage: $0 [--smoke] [--duration S] [--reps N]" >&2; exit 2 ;; esac; shift; done
log() { printf '\n### %s\n' "$*" >&2; }

# ---- 1. kit + tools ----------------------------------------------------------------------------
if [ ! -d $B ]; then
  [ -d "$KIT_SRC" ] || { echo "kit not found at $KIT_SRC (set KIT_SRC)" >&2; exit 1; }
  cp -r "$KIT_SRC" $B && chmod -R u+w $B
fi
if ! command -v wrk >/dev/null || ! command -v nginx >/dev/null || ! command -v haproxy >/dev/null \
   || [ ! -x $B/venv/lib/python3.11/site-packages/envoy/_bin/envoy ] || [ ! -f $B/pki/root.pem ]; then
  log "installing the kit (apt + pip; its setup.sh)"
  if [ "${WITH_OHA:-0}" = 1 ]; then $B/setup.sh
  else sed '/cargo install oha/d' $B/setup.sh > $B/setup-no-oha.sh && bash $B/setup-no-oha.sh; fi   # oha: ~200 s compile, optional
fi

# ---- 2. build -------------------------------------------------------------------------------------
log "building pinproxy (release)"
BUILT_FROM="working tree"
if ! (cd "$ROOT" && cargo build --release --quiet); then
  # the tree may be mid-edit: measure the last binary built from it, else build a snapshot of HEAD (git archive: read-only)
  if [ -x "$BIN" ]; then BUILT_FROM="previous build of the working tree ($(date -r $BIN '+%F %T'); current tree does not compile)"
  else
    rm -rf /tmp/bench-pinproxy-head && mkdir -p /tmp/bench-pinproxy-head
    (cd "$ROOT" && git archive HEAD) | tar -x -C /tmp/bench-pinproxy-head
    (cd /tmp/bench-pinproxy-head && cargo build --release --quiet); BUILT_FROM="HEAD snapshot (working tree does not compile)"
  fi
  echo "WARNING: cargo build failed; measuring $BUILT_FROM" >&2
fi

# ---- 3. start everything -----------------------------------------------------------------------
mkdir -p $P $B/upstream-fresh/{logs,tmp}
pin_of() { openssl x509 -in "$1" -noout -pubkey | openssl pkey -pubin -outform DER | openssl dgst -sha256 -binary | openssl enc -base64 -A; }
LEAF=$(pin_of $B/pki/leaf.pem); INT=$(pin_of $B/pki/int.pem)
pinset() { # address pins... [extra yaml line]
  local addr=$1; shift; local extra=${EXTRA:-}
  printf 'version: 1\nhosts:\n  api.local:\n    pins: [%s]\n    trust: %s/pki/root.pem\n    address: %s\n%s' \
    "$(printf 'sha256/%s, ' "$@" | sed 's/, $//')" $B "$addr" "$extra"
}
# 8 pins that match nothing (random SPKI hashes), then the real ones last: the worst case for a list scan
FILLER=$(for i in 1 2 3 4 5 6 7 8; do head -c32 /dev/urandom | base64; done)
pinset 127.0.0.1:8443 "$LEAF" "$INT" > $P/pins.yaml
pinset 127.0.0.1:8445 $FILLER "$INT" "$LEAF" > $P/pins-ten.yaml
EXTRA=$'    expires: 2020-01-01\n' pinset 127.0.0.1:8445 $FILLER "$INT" "$LEAF" > $P/pins-ca.yaml   # expired pins = CA-only validation
$BIN check $P/pins.yaml >/dev/null && $BIN check $P/pins-ten.yaml >/dev/null

alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
stop_pp() { # SIGTERM our own instance, wait (bounded) for it to release its ports, then SIGKILL
  alive $P/$1.pid || return 0
  local pid; pid=$(cat $P/$1.pid); kill $pid 2>/dev/null || true
  running() { ps -o stat= -p $1 2>/dev/null | grep -qv Z; }     # zombies (PID 1 may not reap) count as gone
  for i in $(seq 60); do running $pid || break; sleep 0.1; done
  running $pid && kill -9 $pid 2>/dev/null; rm -f $P/$1.pid
}
start_pp() { # name port admin pins workers [extra args]
  local n=$1 port=$2 adm=$3 pins=$4 w=$5; shift 5
  stop_pp $n
  rm -rf $P/ca-$n
  nohup "$BIN" run --pins "$pins" --listen 127.0.0.1:$port --admin 127.0.0.1:$adm --workers "$w" \
      --ca-out $P/ca-$n "$@" > $P/$n.log 2>&1 &
  echo $! > $P/$n.pid
  for i in $(seq 200); do curl -fs -o /dev/null http://127.0.0.1:$adm/readyz && return 0; sleep 0.05; done
  echo "pinproxy $n did not become ready; see $P/$n.log" >&2; exit 1
}
stop_all() {
  for n in pinproxy pinproxy2 ppca ppten pp10k; do stop_pp $n; done
  alive $B/upstream-fresh/logs/nginx.pid && nginx -p $B/upstream-fresh -c $HERE/upstream-fresh.conf -s quit
  $B/peers.sh stop >/dev/null 2>&1 || true
}
[ "${STOP:-0}" = 1 ] && trap stop_all EXIT
log "starting peers + pinproxy"
$B/peers.sh start >/dev/null
alive $B/upstream-fresh/logs/nginx.pid || nginx -p $B/upstream-fresh -c $HERE/upstream-fresh.conf
start_pp pinproxy  15010 19010 $P/pins.yaml     1
start_pp pinproxy2 15011 19011 $P/pins.yaml     2
start_pp ppca      15012 19012 $P/pins-ca.yaml  1
start_pp ppten     15013 19013 $P/pins-ten.yaml 1

# ---- smoke: every target answers 200 -------------------------------------------------------------
smoke() {
  local fail=0 code
  check() { printf '%-34s %s\n' "$1" "$2" >&2; [ "$2" = 200 ] || fail=1; }
  check "direct TLS :8443" "$(curl -s -o /dev/null -w '%{http_code}' --cacert $B/pki/root.pem --resolve api.local:8443:127.0.0.1 https://api.local:8443/)"
  check "fresh-handshake upstream :8445" "$(curl -s -o /dev/null -w '%{http_code}' --cacert $B/pki/root.pem --resolve api.local:8445:127.0.0.1 https://api.local:8445/)"
  for t in envoy:15001 nginx:15002 haproxy:15003 pinproxy:15010 pinproxy2:15011 "pinproxy CA-only:15012" "pinproxy 10 pins:15013"; do
    check "${t%:*} :${t##*:}" "$(curl -s -o /dev/null -w '%{http_code}' -x http://127.0.0.1:${t##*:} http://api.local/)"
  done
  check "pinproxy CONNECT interception" "$(curl -s -o /dev/null -w '%{http_code}' --cacert $P/ca-pinproxy/ca.crt -x http://127.0.0.1:15010 https://api.local/)"
  # 1 s of wrk on every keep-alive target: no non-2xx, no socket errors
  for t in direct:8443 envoy:15001 nginx:15002 haproxy:15003 pinproxy:15010 pinproxy2:15011; do
    if [ "${t%:*}" = direct ]; then out=$(wrk -t1 -c4 -d1s -H 'Host: api.local' https://127.0.0.1:8443/ 2>&1)
    else out=$(wrk -t1 -c4 -d1s -s $B/load/absform.lua http://127.0.0.1:${t##*:} 2>&1); fi
    n=$(echo "$out" | awk '/requests in/{print $1}')
    if echo "$out" | grep -q -e Non-2xx -e 'Socket errors' || [ "${n:-0}" -lt 10 ]; then code=FAIL; else code=200; fi
    check "wrk 1s ${t%:*} ($n req)" $code
  done
  return $fail
}
log "smoke: every target answers 200"
smoke || { echo "SMOKE FAILED" >&2; exit 1; }
[ $SMOKE = 1 ] && { echo "smoke OK"; exit 0; }

# ---- 4. the comparison ---------------------------------------------------------------------------
busy() { # % of all CPUs busy over 2 s (everything running now: the bench is idle at this point)
  local a b; a=($(head -1 /proc/stat)); sleep 2; b=($(head -1 /proc/stat))
  local idle=$(( (b[4]+b[5]) - (a[4]+a[5]) )) tot=0 i
  for i in 1 2 3 4 5 6 7 8; do tot=$(( tot + b[i] - a[i] )); done
  echo $(( 100 * (tot - idle) / (tot > 0 ? tot : 1) ))
}
for i in $(seq ${QUIET_WAIT:-60}); do   # wait (bounded, ~3 min) for other work on the machine to stop: it skews every figure
  bz=$(busy); [ "$bz" -le 10 ] && break
  [ $i = 1 ] && { echo "machine is ${bz}% busy before the bench; waiting for it to go quiet:" >&2; ps -eo pcpu,args --sort=-pcpu | sed -n 2,4p >&2; }
done
BACKGROUND_BUSY=$bz
OUT=$B/results/pinproxy-$(date +%Y%m%d-%H%M%S); mkdir -p $OUT
for r in $(seq $REPS); do
  log "wrk -t2 -c50 ${D}s, repetition $r/$REPS"
  $HERE/wrk-bench.sh $OUT/rep$r $D "direct pinproxy pinproxy2 envoy nginx haproxy" >&2
done

log "pin-check cost: fresh upstream handshake per request (:8445, no keep-alive, no resumption), 10 pins vs CA-only"
for r in $(seq $REPS); do
  CONNS=16 UPSTREAM_PEER=upstream-fresh $HERE/wrk-bench.sh $OUT/pins-rep$r $D "ppca ppten" >&2
done
curl -s http://127.0.0.1:19012/metrics > $OUT/metrics-ppca.txt; curl -s http://127.0.0.1:19013/metrics > $OUT/metrics-ppten.txt

log "CONNECT interception: fresh client TLS handshake per connection, vs direct TLS to the upstream"
UPP=$($B/peers.sh pids upstream)
for r in $(seq $REPS); do
  python3 $HERE/connrate.py direct --duration 5 --pids "$UPP" > $OUT/connrate-direct-rep$r.json
  python3 $HERE/connrate.py connect --duration 5 --proxy 127.0.0.1:15010 --ca $P/ca-pinproxy/ca.crt \
      --pids "$(cat $P/pinproxy.pid)" > $OUT/connrate-connect-rep$r.json
  cat $OUT/connrate-*-rep$r.json >&2
done

log "10,000 idle keep-alive client connections"
( ulimit -n 20000
  start_pp pp10k 15014 19014 $P/pins.yaml 1 --max-connections 12000 --header-timeout 300
  python3 $HERE/idle10k.py "$(cat $P/pp10k.pid)" 10000 15014 > $OUT/idle10k.json
  stop_pp pp10k ); cat $OUT/idle10k.json >&2

log "live pins: ..data swap to enforcement"
python3 $HERE/reload_latency.py $BIN 20 "$INT" > $OUT/reload.json; cat $OUT/reload.json >&2

log "startup to /readyz"
python3 $HERE/startup.py $BIN $P/pins.yaml 20 > $OUT/startup.json
rm -rf $P/ca-startup; python3 $HERE/startup.py $BIN $P/pins.yaml 20 --ca-out $P/ca-startup > $OUT/startup-ca.json
cat $OUT/startup*.json >&2

{ echo "pinproxy_bytes $(stat -c %s $BIN)"
  cp $BIN $P/pinproxy.stripped && strip $P/pinproxy.stripped && echo "pinproxy_stripped_bytes $(stat -c %s $P/pinproxy.stripped)"
  echo "envoy_bytes $(stat -L -c %s $B/venv/lib/python3.11/site-packages/envoy/_bin/envoy)"
  echo "nginx_bytes $(stat -L -c %s "$(command -v nginx)")"
  echo "haproxy_bytes $(stat -L -c %s "$(command -v haproxy)")"
  img=$(docker image inspect pinproxy:dev --format '{{.Size}}' 2>/dev/null | head -1) || true; echo "image_bytes ${img:-n/a}"
} > $OUT/sizes.txt
{ echo "$(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB, $(. /etc/os-release; echo $PRETTY_NAME), kernel $(uname -r)"
  grep -m1 'model name' /proc/cpuinfo | cut -d: -f2
  echo "binary: $BUILT_FROM"
  echo "background CPU busy before the run: ${BACKGROUND_BUSY}% of all cores"
  echo "pinproxy $(cd $ROOT && git rev-parse --short HEAD 2>/dev/null)$(cd $ROOT && git diff --quiet HEAD -- src Cargo.toml 2>/dev/null || echo +dirty) ($($BIN --version)), $(rustc --version)"
  echo "wrk $(wrk -v 2>&1 | head -1 | awk '{print $2}'); nginx $(nginx -v 2>&1 | cut -d/ -f2); haproxy $(haproxy -v | head -1 | awk '{print $3}'); envoy $($B/venv/lib/python3.11/site-packages/envoy/_bin/envoy --version | grep -o '[0-9a-f]*/1\.[0-9.]*' | cut -d/ -f2)"
} > $OUT/machine.txt

# ---- 5. one table ------------------------------------------------------------------------------
python3 $HERE/report.py $OUT | tee $OUT/table.md
echo "raw results: $OUT" >&2
