# Single-node cluster for scripts/e2e.sh (sourced): network, containerd,
# etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubelet;
# and the teardown that undoes all of it. Everything lives under $E2E_RUN
# (a temp dir) and on interfaces/namespaces named ppe2e*.
# shellcheck shell=bash

K8S_BIN="$E2E_CACHE/k8s-$K8S_VERSION/bin"

# start NAME COMMAND...: runs COMMAND in the background, logging to
# $E2E_RUN/logs/NAME.log; its PID goes to $E2E_RUN/pids (killed by teardown).
start() {
  local name="$1"; shift
  "$@" >"$E2E_RUN/logs/$name.log" 2>&1 &
  echo "$! $name" >>"$E2E_RUN/pids"
  disown "$!"
  log "started $name (pid $!)"
}

network_up() {
  # The node address on an empty bridge of its own (this kernel has no
  # dummy interfaces): a local address, nothing is routed off the machine.
  ip link add ppe2e0 type bridge
  ip addr add "$NODE_IP/32" dev ppe2e0
  ip link set ppe2e0 up
  # Any 198.18/15 address this script did not assign is unreachable rather
  # than routed to the default gateway.
  ip route add unreachable 198.18.0.0/15
  # The world: a netns of its own, reached through a veth.
  ip netns add "$WORLD_NS"
  ip link add ppe2e-w0 type veth peer name w1 netns "$WORLD_NS"
  ip addr add "$WORLD_HOST_IP/24" dev ppe2e-w0
  ip link set ppe2e-w0 up
  ip -n "$WORLD_NS" link set lo up
  ip -n "$WORLD_NS" addr add "${WORLD_NET%.*}.2/24" dev w1
  local a; for a in "$WORLD_GOOD_IP" "$WORLD_OTHER_IP" "$WORLD_PLAIN_IP"; do
    ip -n "$WORLD_NS" addr add "$a/24" dev w1
  done
  ip -n "$WORLD_NS" link set w1 up
  ip -n "$WORLD_NS" route add default via "$WORLD_HOST_IP"
  # Pods reach the world through the host. Forwarding is on only for
  # 198.18/15 both ways: our chain drops anything else the bridge or the
  # world veth would forward.
  cat /proc/sys/net/ipv4/ip_forward >"$E2E_RUN/ip_forward.saved"
  echo 1 >/proc/sys/net/ipv4/ip_forward
  iptables -N PPE2E-FWD
  iptables -A PPE2E-FWD -s 198.18.0.0/15 -d 198.18.0.0/15 -j ACCEPT
  iptables -A PPE2E-FWD -j DROP
  iptables -I FORWARD 1 -i ppe2e-br0 -j PPE2E-FWD
  iptables -I FORWARD 1 -o ppe2e-br0 -j PPE2E-FWD
  iptables -I FORWARD 1 -i ppe2e-w0 -j PPE2E-FWD
  # Pods resolve nothing: their resolv.conf names the node, where no DNS
  # server listens (hosts are named through hostAliases / the pinset).
  printf 'nameserver %s\noptions timeout:1 attempts:1\n' "$NODE_IP" >"$E2E_RUN/resolv.conf"
  mkdir -p "$E2E_RUN/cni/net.d"
  cat >"$E2E_RUN/cni/net.d/10-ppe2e.conflist" <<CNI
{
  "cniVersion": "1.0.0",
  "name": "ppe2e",
  "plugins": [
    {
      "type": "bridge", "bridge": "ppe2e-br0", "isGateway": true, "isDefaultGateway": true,
      "ipMasq": false, "hairpinMode": true,
      "ipam": {"type": "host-local", "dataDir": "$E2E_RUN/cni/ipam",
               "ranges": [[{"subnet": "$POD_CIDR", "gateway": "$POD_GW"}]]}
    },
    {"type": "loopback"}
  ]
}
CNI
}

containerd_up() {
  local c="$E2E_RUN/containerd"
  mkdir -p "$c"
  cat >"$c/config.toml" <<TOML
version = 2
root = "$c/root"
state = "$c/state"
[grpc]
  address = "$c/containerd.sock"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  enable_selinux = false
  # This machine's root has no CAP_SYS_RESOURCE (not in the bounding set),
  # so no process may lower its oom_score_adj below 0; runc fails on the
  # kubelet's -998 for sandboxes ("failed to update /proc/self/oom_score_adj:
  # Permission denied"). This clamps every container to containerd's own
  # value, as rootless setups do.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        BinaryName = "${E2E_RUNC:-/usr/sbin/runc}"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$E2E_RUN/cni/net.d"
TOML
  start containerd containerd --config "$c/config.toml"
  CTR=(ctr --address "$c/containerd.sock" -n k8s.io)
  wait_for 30 "containerd socket" "${CTR[@]}" version || die "containerd did not start (logs/containerd.log)"
}

etcd_up() {
  start etcd "$K8S_BIN/etcd" --name e2e --data-dir "$E2E_RUN/etcd" \
    --listen-client-urls http://127.0.0.1:23790 --advertise-client-urls http://127.0.0.1:23790 \
    --listen-peer-urls http://127.0.0.1:23800 --initial-advertise-peer-urls http://127.0.0.1:23800 \
    --initial-cluster e2e=http://127.0.0.1:23800 --log-level warn
}

apiserver_up() {
  local p="$E2E_RUN/pki"
  # Audit pod creations at level Request: the event carries each mutating
  # webhook's JSONPatch (annotation patch.webhook.admission.k8s.io/...).
  cat >"$E2E_RUN/audit-policy.yaml" <<YAML
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
  - level: Request
    verbs: [create]
    resources: [{group: "", resources: [pods]}]
  - level: None
YAML
  # --enable-aggregator-routing: the API server calls webhooks at their
  # Service's endpoint (pod IP) directly, so no kube-proxy is needed.
  start kube-apiserver "$K8S_BIN/kube-apiserver" \
    --etcd-servers http://127.0.0.1:23790 \
    --bind-address "$NODE_IP" --advertise-address "$NODE_IP" --secure-port 6443 \
    --service-cluster-ip-range "$SERVICE_CIDR" \
    --tls-cert-file "$p/apiserver.crt" --tls-private-key-file "$p/apiserver.key" \
    --client-ca-file "$p/ca.crt" \
    --kubelet-client-certificate "$p/apiserver-kubelet-client.crt" \
    --kubelet-client-key "$p/apiserver-kubelet-client.key" \
    --kubelet-preferred-address-types InternalIP \
    --service-account-key-file "$p/sa.pub" --service-account-signing-key-file "$p/sa.key" \
    --service-account-issuer https://kubernetes.default.svc.cluster.local \
    --authorization-mode Node,RBAC --enable-admission-plugins NodeRestriction \
    --enable-aggregator-routing=true --allow-privileged=true \
    --audit-policy-file "$E2E_RUN/audit-policy.yaml" --audit-log-path "$E2E_RUN/logs/audit.log" \
    --profiling=false --v=1
  wait_for 120 "API server /readyz" kubectl get --raw /readyz || die "API server not ready (logs/kube-apiserver.log)"
}

controllers_up() {
  local p="$E2E_RUN/pki"
  start kube-controller-manager "$K8S_BIN/kube-controller-manager" \
    --kubeconfig "$p/controller-manager.kubeconfig" \
    --authentication-kubeconfig "$p/controller-manager.kubeconfig" \
    --authorization-kubeconfig "$p/controller-manager.kubeconfig" \
    --bind-address 127.0.0.1 --secure-port 10257 --leader-elect=false \
    --service-account-private-key-file "$p/sa.key" --root-ca-file "$p/ca.crt" \
    --use-service-account-credentials=true --allocate-node-cidrs=false \
    --cluster-signing-cert-file "$p/ca.crt" --cluster-signing-key-file "$p/ca.key" \
    --service-cluster-ip-range "$SERVICE_CIDR" --v=1
  start kube-scheduler "$K8S_BIN/kube-scheduler" \
    --kubeconfig "$p/scheduler.kubeconfig" \
    --authentication-kubeconfig "$p/scheduler.kubeconfig" \
    --authorization-kubeconfig "$p/scheduler.kubeconfig" \
    --bind-address 127.0.0.1 --secure-port 10259 --leader-elect=false --v=1
}

kubelet_up() {
  local p="$E2E_RUN/pki" k="$E2E_RUN/kubelet"
  mkdir -p "$k"
  cat >"$k/config.yaml" <<YAML
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $NODE_IP
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
cgroupDriver: cgroupfs
failSwapOn: false
containerRuntimeEndpoint: unix://$E2E_RUN/containerd/containerd.sock
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $p/ca.crt}
authorization: {mode: Webhook}
tlsCertFile: $p/kubelet-serving.crt
tlsPrivateKeyFile: $p/kubelet-serving.key
clusterDomain: cluster.local
resolvConf: $E2E_RUN/resolv.conf
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: 100Mi, nodefs.available: "1%", imagefs.available: "1%", nodefs.inodesFree: "1%"}
serializeImagePulls: false
YAML
  start kubelet "$K8S_BIN/kubelet" --config "$k/config.yaml" \
    --kubeconfig "$p/kubelet.kubeconfig" --root-dir "$k/root" \
    --hostname-override "$NODE_NAME" --node-ip "$NODE_IP" --v=1
  wait_for 120 "node $NODE_NAME Ready" \
    sh -c "kubectl get node $NODE_NAME -o jsonpath='{.status.conditions[?(@.type==\"Ready\")].status}' | grep -qx True" \
    || die "node not Ready (logs/kubelet.log)"
}

# teardown: everything cluster_up made, in reverse, tolerating half-made
# states (it also runs when bring-up failed part way).
teardown() {
  set +e
  [ -n "${E2E_RUN:-}" ] && [ -d "$E2E_RUN" ] || return 0
  log "teardown"
  if [ -f "$E2E_RUN/pids" ]; then
    # kubelet first (it would restart containers), then the containers
    # themselves, then the control plane.
    local pid name
    while read -r pid name; do [ "$name" = kubelet ] && kill "$pid" 2>/dev/null; done <"$E2E_RUN/pids"
    sleep 1
    if [ -S "$E2E_RUN/containerd/containerd.sock" ]; then
      local t
      for t in $("${CTR[@]}" tasks ls -q 2>/dev/null); do "${CTR[@]}" tasks kill -s SIGKILL "$t" >/dev/null 2>&1; done
      sleep 1
      for t in $("${CTR[@]}" tasks ls -q 2>/dev/null); do "${CTR[@]}" tasks delete -f "$t" >/dev/null 2>&1; done
    fi
    tac "$E2E_RUN/pids" | while read -r pid name; do kill "$pid" 2>/dev/null; done
    sleep 2
    tac "$E2E_RUN/pids" | while read -r pid name; do kill -9 "$pid" 2>/dev/null; done
  fi
  # Shims (and anything else) started with our private paths on their
  # command line: containerd-shim-runc-v2 outlives containerd by design.
  local p
  for p in /proc/[0-9]*; do
    if { tr '\0' ' ' <"$p/cmdline"; } 2>/dev/null | grep -qF "$E2E_RUN/"; then kill -9 "${p#/proc/}" 2>/dev/null; fi
  done
  # Mounts under our tree (secret tmpfs, overlay rootfs, netns), deepest first.
  awk -v r="$E2E_RUN/" 'index($2, r) == 1 {print $2}' /proc/self/mounts | sort -r | while read -r m; do umount -l "$m"; done
  # Pod network namespaces our containerd made (cni-*): those that were not
  # there before bring-up.
  local ns
  for ns in $(ls /var/run/netns 2>/dev/null); do
    case "$ns" in cni-*) grep -qx "$ns" "$E2E_RUN/netns.before" 2>/dev/null || ip netns del "$ns" 2>/dev/null ;; esac
  done
  # Pod cgroups (kubelet's cgroupfs driver: /sys/fs/cgroup/*/kubepods).
  local cg
  for cg in /sys/fs/cgroup/*/kubepods /sys/fs/cgroup/*/kubepods.slice; do
    [ -d "$cg" ] && find "$cg" -depth -type d -exec rmdir {} \; 2>/dev/null
  done
  iptables -D FORWARD -i ppe2e-w0 -j PPE2E-FWD 2>/dev/null
  iptables -D FORWARD -o ppe2e-br0 -j PPE2E-FWD 2>/dev/null
  iptables -D FORWARD -i ppe2e-br0 -j PPE2E-FWD 2>/dev/null
  iptables -F PPE2E-FWD 2>/dev/null; iptables -X PPE2E-FWD 2>/dev/null
  ip netns del "$WORLD_NS" 2>/dev/null
  ip link del ppe2e-w0 2>/dev/null
  ip link del ppe2e-br0 2>/dev/null
  ip link del ppe2e0 2>/dev/null
  ip route del unreachable 198.18.0.0/15 2>/dev/null
  [ -f "$E2E_RUN/ip_forward.saved" ] && cat "$E2E_RUN/ip_forward.saved" >/proc/sys/net/ipv4/ip_forward
  if [ "${E2E_KEEP_RUN:-0}" = 1 ]; then log "kept $E2E_RUN"; else rm -rf "$E2E_RUN"; fi
  set -e
}
