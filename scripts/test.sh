#!/usr/bin/env bash
# The one command that runs every test. It installs what the tests need
# (curl, openssl, promtool from Debian's `prometheus`; for the network
# namespace tests of `pinproxy redirect`: iptables, iproute2, util-linux's
# setpriv and unshare, python3 where other UIDs can run it, and aioquic in
# a venv) when missing, so it passes on a fresh machine.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v curl >/dev/null 2>&1 || missing+=(curl)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
command -v iptables-legacy-restore >/dev/null 2>&1 || missing+=(iptables)
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
command -v setpriv >/dev/null 2>&1 || missing+=(util-linux)
[ -x /usr/bin/python3 ] || missing+=(python3)
if [ ${#missing[@]} -gt 0 ]; then
  echo "scripts/test.sh: installing ${missing[*]}" >&2
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# tests/redirect/lock.rs drives an HTTP/3 client and server (aioquic, from PyPI,
# pinned in scripts/tools/quic-requirements.txt) in a venv other UIDs can
# run; created once, refreshed when the requirements change.
venv="${CARGO_TARGET_DIR:-target}/py-venv"
reqs=scripts/tools/quic-requirements.txt
if ! cmp -s "$reqs" "$venv/requirements.txt" 2>/dev/null; then
  echo "scripts/test.sh: installing $reqs into $venv" >&2
  rm -rf "$venv"
  /usr/bin/python3 -m venv "$venv" 2>/dev/null || {
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
    /usr/bin/python3 -m venv "$venv"
  }
  "$venv/bin/pip" install -q --disable-pip-version-check -r "$reqs"
  cp "$reqs" "$venv/requirements.txt"
fi
PINPROXY_TEST_PYTHON="$(cd "$venv" && pwd)/bin/python"
export PINPROXY_TEST_PYTHON

# crates/sign's tests sign and verify with the real cosign, built once from
# its Go module (needs Go; minutes the first time, cached afterwards).
PINPROXY_COSIGN="$(scripts/tools/cosign.sh)"
export PINPROXY_COSIGN

cargo test --locked --workspace --all-targets

if [ -x scripts/k8s-check.sh ]; then
  scripts/k8s-check.sh
fi
