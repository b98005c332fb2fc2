#!/usr/bin/env bash
# wrk-bench.sh OUTDIR [DURATION] [TARGETS] [TOOLS]
# The kit's load/bench.sh (/tmp/bench-peers/load/bench.sh), extended with pinproxy targets:
#   same wrk command lines, same /proc CPU-tick and RSS sampling, same upstream stub_status counters,
#   same resources.csv columns, so the kit's summarize.py parses the raw outputs unchanged.
# Targets: direct envoy nginx haproxy (kit)  +  pinproxy pinproxy2 ppca ppten (this file; PID files in /tmp/bench-pp).
set -u
B=/tmp/bench-peers; P=/tmp/bench-pp; export PATH=$B/cargo-root/bin:$PATH
OUT=$1; D=${2:-10}; TARGETS=${3:-"direct pinproxy envoy nginx haproxy"}; TOOLS=${4:-wrk}
mkdir -p "$OUT"
port() { case $1 in envoy) echo 15001;; nginx) echo 15002;; haproxy) echo 15003;; squid) echo 15005;;
                    pinproxy) echo 15010;; pinproxy2) echo 15011;; ppca) echo 15012;; ppten) echo 15013;; esac; }
cmd() { # tool target -> command line (identical to the kit's for wrk/hey/oha)
  local t=$1 g=$2 p; p=$(port "$g")
  if [ "$g" = direct ]; then case $t in
    wrk) echo "wrk -t2 -c50 -d${D}s --latency -H 'Host: api.local' https://127.0.0.1:8443/";;
    hey) echo "hey -z ${D}s -c 50 -cpus 2 -host api.local https://127.0.0.1:8443/";;
  esac; else case $t in
    wrk) echo "wrk -t2 -c${CONNS:-50} -d${D}s --latency -s $B/load/absform.lua http://127.0.0.1:$p";;
    hey) echo "hey -z ${D}s -c 50 -cpus 2 -x http://127.0.0.1:$p http://api.local/";;
    *) echo "";;
  esac; fi
}
pids() { # the PIDs whose CPU/RSS are accounted to a target
  case $1 in
    pinproxy|pinproxy2|ppca|ppten) cat $P/$1.pid ;;
    upstream-fresh) p=$(cat $B/upstream-fresh/logs/nginx.pid); echo $p $(pgrep -P $p) ;;
    *) $B/peers.sh pids "$1" ;;
  esac
}
cpu_ticks() { local s=0; for p in "$@"; do set -- $(cut -d')' -f2 /proc/$p/stat); s=$((s + ${12} + ${13})); done; echo $s; }
rss_kb() { ps -o rss= -p "$(echo "$@" | tr ' ' ',')" | awk '{s+=$1} END{print s+0}'; }
[ -f "$OUT/resources.csv" ] || echo "tool,target,peer_pids,idle_rss_kb,max_rss_kb_under_load,peer_cpu_s,upstream_cpu_s,wall_s,upstream_new_conns,upstream_requests" > "$OUT/resources.csv"
ups() { curl -s http://127.0.0.1:8081/status | awk 'NR==3{print $1, $3}'; }
for g in $TARGETS; do
  if [ "$g" = direct ]; then peer=upstream; else peer=$g; fi
  upname=${UPSTREAM_PEER:-upstream}
  for t in $TOOLS; do
    c=$(cmd "$t" "$g"); [ -z "$c" ] && continue
    pp=$(pids $peer); up=$(pids $upname)
    sleep ${SETTLE:-2}
    read a0 q0 < <(ups); idle=$(rss_kb $pp); c0=$(cpu_ticks $pp); u0=$(cpu_ticks $up); t0=$(date +%s.%N)
    echo "== $t -> $g : $c" | tee "$OUT/$t-$g.txt"
    bash -c "$c" >> "$OUT/$t-$g.txt" 2>&1 &
    lp=$!; max=$idle
    while kill -0 $lp 2>/dev/null; do r=$(rss_kb $pp); [ "$r" -gt "$max" ] && max=$r; sleep 0.5; done
    wait $lp
    t1=$(date +%s.%N); c1=$(cpu_ticks $pp); u1=$(cpu_ticks $up); read a1 q1 < <(ups)
    hz=$(getconf CLK_TCK)
    echo "$t,$g,$(echo $pp|tr ' ' '+'),$idle,$max,$(echo "scale=2;($c1-$c0)/$hz"|bc),$(echo "scale=2;($u1-$u0)/$hz"|bc),$(echo "$t1-$t0"|bc),$((a1-a0-1)),$((q1-q0-1))" | tee -a "$OUT/resources.csv"
  done
done
