#!/usr/bin/env bash
# End-to-end test on a real single-node Kubernetes cluster built here:
#
#   etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubelet
#   (k8s.io/kubernetes $K8S_VERSION from the Go module proxy, see
#   scripts/e2e/build-k8s.sh), containerd + runc + the CNI bridge plugin
#   (Debian), images built here without a registry (scripts/e2e/images.sh),
#   helm (npm), Prometheus (Go module proxy: Debian's has no Kubernetes
#   service discovery).
#
# Then the scenarios of scripts/e2e/scenarios.sh run against it: the chart's
# webhook injecting through the real admission chain, the proxy from inside
# a pod, a Secret edit reaching the sidecar through the kubelet, Prometheus
# scraping and alerting, transparent mode, failurePolicy, shutdown,
# `pinproxy status`, and signed pinsets (the API server calling the
# webhook's /validate, a sidecar verifying with the key).
#
# Root only (it creates interfaces, a netns, iptables rules, cgroups,
# mounts). Everything it starts and creates is undone on exit. Addresses
# are all in 198.18.0.0/15; nothing leaves the machine.
#
#   scripts/e2e.sh                 build (cached) + cluster + every scenario
#   E2E_SCENARIOS="1 2" scripts/e2e.sh   only these
#   E2E_KEEP_RUN=1                 keep the run directory (logs, pki)
#
# Caches (keyed by version/content) live in $E2E_CACHE (~/.cache/pinproxy-e2e):
# Kubernetes binaries, image tarballs. Logs of every component and the
# transcript of each scenario are copied to $E2E_ARTIFACTS at the end.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=e2e/lib.sh
. "$ROOT/scripts/e2e/lib.sh"
. "$ROOT/scripts/e2e/certs.sh"
. "$ROOT/scripts/e2e/cluster.sh"
. "$ROOT/scripts/e2e/images.sh"
. "$ROOT/scripts/e2e/world.sh"
. "$ROOT/scripts/e2e/scenarios.sh"

E2E_ARTIFACTS="${E2E_ARTIFACTS:-$ROOT/target/e2e}"
E2E_SCENARIOS="${E2E_SCENARIOS:-1 2 3 4 5 6 7 8}"

[ "$(id -u)" = 0 ] || die "scripts/e2e.sh needs root (interfaces, netns, cgroups, mounts)"
T0=$(date +%s)

# --- parts ----------------------------------------------------------------------
apt_install containerd runc containernetworking-plugins buildah musl-tools busybox-static \
  openssl curl python3 python3-yaml iptables iproute2 ca-certificates
export PATH="$PINPROXY_TOOLS/bin:$PATH"
install_helm_kubectl

# The pinproxy binary: static musl (what the Dockerfile's build stage makes).
MUSL=x86_64-unknown-linux-musl
if ! rustup target list --installed 2>/dev/null | grep -qx "$MUSL"; then
  log "rustup target add $MUSL"
  rustup target add "$MUSL" || die "rustup target add $MUSL failed: the image needs a static binary"
fi
# Its own target dir in the cache: CI builds in a fresh clone each time, and
# the dependencies (LTO, musl) are the slow part of this build.
MUSL_TARGET_DIR="${MUSL_TARGET_DIR:-$E2E_CACHE/cargo-target}"
# Cargo judges freshness by mtimes under paths relative to the workspace:
# another checkout whose files are older than the last build would get that
# build's binary. A stamp of the sources makes any other tree rebuild the
# workspace's own crates — pinproxy and its room crates, each judged by
# mtimes too — (the dependencies stay cached).
stamp="$(cd "$ROOT" && find Cargo.toml Cargo.lock build.rs link src crates -type f -print0 2>/dev/null | sort -z | xargs -0 sha256sum | sha256sum | cut -c1-16)"
mkdir -p "$MUSL_TARGET_DIR"
if [ "$(cat "$MUSL_TARGET_DIR/.e2e-stamp" 2>/dev/null)" != "$stamp" ]; then
  mapfile -t own < <(cd "$ROOT" && cargo metadata --no-deps --format-version 1 --offline \
    | python3 -c 'import json, sys; [print("-p\n" + p["name"]) for p in json.load(sys.stdin)["packages"]]')
  (cd "$ROOT" && CARGO_TARGET_DIR="$MUSL_TARGET_DIR" cargo clean --release --target "$MUSL" "${own[@]}" -q) || true
fi
log "cargo build --release --target $MUSL (target dir $MUSL_TARGET_DIR)"
(cd "$ROOT" && CARGO_TARGET_DIR="$MUSL_TARGET_DIR" cargo build --release --locked --target "$MUSL" --bin pinproxy)
echo "$stamp" >"$MUSL_TARGET_DIR/.e2e-stamp"
PINPROXY_BIN="$MUSL_TARGET_DIR/$MUSL/release/pinproxy"
ldd "$PINPROXY_BIN" 2>&1 | grep -qE 'not a dynamic executable|statically linked' \
  || die "$PINPROXY_BIN is not static: $(ldd "$PINPROXY_BIN" 2>&1)"

"$ROOT/scripts/e2e/build-k8s.sh"
case " $E2E_SCENARIOS " in *" 4 "*) "$ROOT/scripts/e2e/build-prometheus.sh" ;; esac
PROMETHEUS_BIN="$E2E_CACHE/prometheus-${PROM_VERSION:-v0.305.1}/bin/prometheus"
PROMTOOL_BIN="$E2E_CACHE/prometheus-${PROM_VERSION:-v0.305.1}/bin/promtool"
build_images "$PINPROXY_BIN"
T_PARTS=$(date +%s)
log "parts ready in $((T_PARTS - T0))s"

# --- cluster --------------------------------------------------------------------
E2E_RUN="$(mktemp -d /tmp/pinproxy-e2e.XXXXXX)"
mkdir -p "$E2E_RUN/logs"
export KUBECONFIG="$E2E_RUN/pki/admin.kubeconfig"
CTR=(ctr --address "$E2E_RUN/containerd/containerd.sock" -n k8s.io)
finish() {
  local rc=$?
  trap - EXIT
  if [ "$rc" != 0 ] && [ -n "${KUBECONFIG:-}" ] && [ -f "$KUBECONFIG" ]; then
    kubectl get pods -A -o wide >"$E2E_RUN/logs/pods-at-failure.txt" 2>&1 || true
    kubectl get events -A --sort-by=.lastTimestamp >"$E2E_RUN/logs/events-at-failure.txt" 2>&1 || true
  fi
  rm -rf "$E2E_ARTIFACTS"; mkdir -p "$E2E_ARTIFACTS"
  cp -a "$E2E_RUN/logs/." "$E2E_ARTIFACTS/" 2>/dev/null || true
  teardown
  log "logs: $E2E_ARTIFACTS"
  exit "$rc"
}
trap finish EXIT
trap 'exit 130' INT TERM

make_pki "$E2E_RUN/pki"
ls /var/run/netns >"$E2E_RUN/netns.before" 2>/dev/null || true
network_up
containerd_up
import_images
etcd_up
apiserver_up
controllers_up
kubelet_up
T_UP=$(date +%s)
log "cluster up in $((T_UP - T_PARTS))s: $(kubectl version -o json | python3 -c 'import json,sys; v=json.load(sys.stdin); print("server", v["serverVersion"]["gitVersion"])')"
kubectl get nodes -o wide

# --- scenarios ------------------------------------------------------------------
world_up
run_scenarios $E2E_SCENARIOS
log "e2e passed in $(( $(date +%s) - T0 ))s (parts $((T_PARTS - T0))s, cluster $((T_UP - T_PARTS))s, scenarios $(( $(date +%s) - T_UP ))s)"
