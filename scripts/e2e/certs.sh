# Cluster PKI for scripts/e2e.sh (sourced): a CA, the API server's serving
# certificate, client certificates for the admin, the kubelet, the
# controller-manager, the scheduler and the API server's kubelet client,
# the service-account key pair, and a kubeconfig for each client.
# shellcheck shell=bash

# cert NAME CN O [SANS]: a key and a certificate signed by the cluster CA.
_e2e_cert() {
  local dir="$1" name="$2" cn="$3" org="$4" sans="${5:-}" ext
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout "$dir/$name.key" -out "$dir/$name.csr" -subj "/O=$org/CN=$cn" 2>/dev/null
  ext="$dir/$name.ext"
  if [ -n "$sans" ]; then
    printf 'basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth,clientAuth\nsubjectAltName=%s\n' "$sans" >"$ext"
  else
    printf 'basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=clientAuth\n' >"$ext"
  fi
  openssl x509 -req -in "$dir/$name.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" -CAcreateserial \
    -days 2 -extfile "$ext" -out "$dir/$name.crt" 2>/dev/null
  rm -f "$dir/$name.csr" "$ext"
}

_e2e_kubeconfig() {
  local dir="$1" name="$2" server="$3"
  cat >"$dir/$name.kubeconfig" <<KC
apiVersion: v1
kind: Config
clusters:
- name: e2e
  cluster:
    server: $server
    certificate-authority: $dir/ca.crt
users:
- name: $name
  user:
    client-certificate: $dir/$name.crt
    client-key: $dir/$name.key
contexts:
- name: e2e
  context: {cluster: e2e, user: $name}
current-context: e2e
KC
}

# make_pki DIR: everything the cluster needs, valid for 2 days.
make_pki() {
  local d="$1" server="https://$NODE_IP:6443"
  mkdir -p "$d"
  openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout "$d/ca.key" -out "$d/ca.crt" -days 2 -subj "/CN=pinproxy-e2e-ca" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
  local svc_ip="${SERVICE_CIDR%.*}.1"
  _e2e_cert "$d" apiserver kube-apiserver e2e \
    "IP:$NODE_IP,IP:$svc_ip,IP:127.0.0.1,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,DNS:localhost"
  _e2e_cert "$d" admin admin system:masters
  _e2e_cert "$d" apiserver-kubelet-client kube-apiserver-kubelet-client system:masters
  _e2e_cert "$d" kubelet "system:node:$NODE_NAME" system:nodes
  _e2e_cert "$d" kubelet-serving "system:node:$NODE_NAME" system:nodes "IP:$NODE_IP,DNS:$NODE_NAME"
  _e2e_cert "$d" controller-manager system:kube-controller-manager system:kube-controller-manager
  _e2e_cert "$d" scheduler system:kube-scheduler system:kube-scheduler
  # An operator bound only to the chart's status ClusterRole (pinproxy status).
  _e2e_cert "$d" status e2e-status e2e
  openssl genrsa -out "$d/sa.key" 2048 2>/dev/null
  openssl rsa -in "$d/sa.key" -pubout -out "$d/sa.pub" 2>/dev/null
  local c; for c in admin kubelet controller-manager scheduler status; do _e2e_kubeconfig "$d" "$c" "$server"; done
  chmod 600 "$d"/*.key
}
