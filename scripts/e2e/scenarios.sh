# The scenarios of scripts/e2e.sh (sourced). Each prints a transcript of
# what it ran and saw (copied to $E2E_ARTIFACTS/scenario-N.log) and fails
# the run on the first assertion that does not hold.
# shellcheck shell=bash

APP_NS=shop
CHART_NS=pinproxy-system
# The pinproxy binary on the host, for `pinproxy inject` and `pinproxy status`.
PP() { "$PINPROXY_BIN" "$@"; }
# pinproxy status as an operator bound to the chart's status ClusterRole only.
PP_STATUS() { "$PINPROXY_BIN" status --kubeconfig "$E2E_RUN/pki/status.kubeconfig" "$@"; }

# run CMD...: prints the command, then runs it (its output is the transcript).
run() { printf '$ %s\n' "$*"; "$@"; }
check() {  # DESCRIPTION COMMAND...: asserts COMMAND succeeds.
  local what="$1"; shift
  if "$@"; then printf 'ok: %s\n' "$what"; else printf 'NOT OK: %s\n' "$what"; return 1; fi
}
matches() { printf '%s' "$1" | grep -qE "$2"; }
eq() { [ "$1" = "$2" ] || { printf '  expected [%s], got [%s]\n' "$2" "$1"; return 1; }; }

# pins_yaml NEXT_PIN: the app namespace's pinset. next.world.test is served
# with key B; its pin is A in v1 (refused) and B in v2 (allowed).
pins_yaml() {
  cat <<YAML
version: 1
defaults:
  unlisted: deny
  mode: enforce
hosts:
  good.world.test:
    pins: [$PIN_A]
    trust: world-ca.pem   # beside pins.yaml: a key of the same Secret
    address: $WORLD_GOOD_IP:443
  bad.world.test:
    pins: [$PIN_A]
    trust: world-ca.pem   # beside pins.yaml: a key of the same Secret
    address: $WORLD_OTHER_IP:443
  next.world.test:
    pins: [$1]
    trust: world-ca.pem   # beside pins.yaml: a key of the same Secret
    address: $WORLD_OTHER_IP:443
YAML
}

# apply_pins NS NEXT_PIN: the pins Secret, the way docs/kubernetes.md says
# (create --dry-run=client | kubectl apply).
apply_pins() {
  local dir; dir="$(mktemp -d)"
  pins_yaml "$2" >"$dir/pins.yaml"
  cp "$E2E_RUN/world/ca.crt" "$dir/world-ca.pem"
  PP check "$dir/pins.yaml" >/dev/null || { PP check "$dir/pins.yaml"; return 1; }
  kubectl -n "$1" create secret generic pinproxy-pins --from-file="$dir/pins.yaml" \
    --from-file="$dir/world-ca.pem" --dry-run=client -o yaml | kubectl apply -f -
  rm -rf "$dir"
}

# app_exec CMD...: in the app container of the app Deployment's pod.
app_pod() { kubectl -n "$APP_NS" get pods -l app=app -o jsonpath='{.items[0].metadata.name}'; }
app_exec() { kubectl -n "$APP_NS" exec "$(app_pod)" -c app -- "$@"; }

# curl_code URL [curl args]: "CODE REASON" as the app sees them.
curl_code() {
  local url="$1"; shift
  app_exec curl -s -o /dev/null -D /tmp/h -w '%{http_code}' "$@" "$url" || true
  app_exec sh -c "grep -i '^x-pinproxy-error' /tmp/h | tr -d '\r' | sed 's/^[^:]*: */ /'" || true
}

# run_scenarios N...: each in order; a failed one stops the run (later
# ones build on its state). Ends with the plain "N passed, N failed" line.
run_scenarios() {
  local n rc passed=0 failed=0
  for n in "$@"; do
    log "=== scenario $n ==="
    set +e
    ( set -e; "scenario_$n" ) 2>&1 | tee "$E2E_RUN/logs/scenario-$n.log"
    rc=${PIPESTATUS[0]}
    set -e
    if [ "$rc" = 0 ]; then
      passed=$((passed + 1)); log "=== scenario $n passed ==="
    else
      failed=$((failed + 1)); log "=== scenario $n FAILED (transcript: scenario-$n.log) ==="
      break
    fi
  done
  echo "e2e: $passed passed, $failed failed"
  [ "$failed" = 0 ]
}

# --- 1: helm install, admission, native sidecar start order ---------------------
scenario_1() {
  run helm install pinproxy "$ROOT/charts/pinproxy" -n "$CHART_NS" --create-namespace \
    --set image.repository="$REGISTRY/pinproxy" --set image.initRepository="$REGISTRY/pinproxy-init" \
    --set pins.existingSecret=pinproxy-pins \
    --set status.clusterRole.create=true --set 'status.clusterRole.subjects[0].kind=User' \
    --set 'status.clusterRole.subjects[0].name=e2e-status' \
    --set 'status.clusterRole.subjects[0].apiGroup=rbac.authorization.k8s.io' \
    --wait --timeout 180s
  run kubectl -n "$CHART_NS" get pods -o wide
  local ready
  ready="$(kubectl -n "$CHART_NS" get deploy -l app.kubernetes.io/component=webhook -o jsonpath='{.items[0].status.readyReplicas}')"
  check "webhook: 2 replicas ready on $REGISTRY/pinproxy:$E2E_TAG" eq "$ready" 2
  # The certificate flow without cert-manager (values.yaml certManager):
  # the chart generates a CA and serving certificate; the webhook
  # configuration's caBundle is that CA, and it verifies the served cert.
  local d="$E2E_RUN/s1"; mkdir -p "$d"
  kubectl get mutatingwebhookconfiguration -o jsonpath='{.items[0].webhooks[0].clientConfig.caBundle}' | base64 -d >"$d/ca.pem"
  local tls; tls="$(kubectl -n "$CHART_NS" get secret -o name | grep -- '-tls$\|webhook-tls\|tls' | head -n1)"
  kubectl -n "$CHART_NS" get "$tls" -o jsonpath='{.data.tls\.crt}' | base64 -d >"$d/tls.crt"
  run openssl verify -CAfile "$d/ca.pem" "$d/tls.crt"
  openssl x509 -in "$d/tls.crt" -noout -subject -ext subjectAltName
  local wh_ip; wh_ip="$(kubectl -n "$CHART_NS" get pods -l app.kubernetes.io/component=webhook -o jsonpath='{.items[0].status.podIP}')"
  run sh -c "echo | openssl s_client -connect $wh_ip:8443 -CAfile $d/ca.pem -servername $(openssl x509 -in "$d/tls.crt" -noout -ext subjectAltName | grep -o 'DNS:[^,]*' | head -n1 | cut -d: -f2) 2>/dev/null | grep -E 'Verify return code'"

  run kubectl create namespace "$APP_NS"
  run kubectl label namespace "$APP_NS" pinproxy.io/inject=enabled
  apply_pins "$APP_NS" "$PIN_A"
  run kubectl apply -f - <<YAML
apiVersion: apps/v1
kind: Deployment
metadata: {name: app, namespace: $APP_NS}
spec:
  replicas: 1
  selector: {matchLabels: {app: app}}
  template:
    metadata:
      labels: {app: app, pinproxy.io/inject: "true"}
    spec:
      terminationGracePeriodSeconds: 30
      containers:
        - name: app
          image: $APP_IMAGE
          imagePullPolicy: IfNotPresent
          # The first thing the app does: ask the proxy's /readyz.
          command: ["sh", "-c", "echo app-start \$(date +%s) readyz=\$(curl -s -o /dev/null -w %{http_code} http://127.0.0.1:9901/readyz); exec sleep 100000"]
YAML
  run kubectl -n "$APP_NS" rollout status deploy/app --timeout 180s
  local pod; pod="$(app_pod)"
  kubectl -n "$APP_NS" get deploy app -o json >"$d/deploy.json"
  kubectl -n "$APP_NS" get pod "$pod" -o json >"$d/pod.json"
  python3 - "$d/deploy.json" "$d/pod.json" <<'PY'
import json, sys
dep = json.load(open(sys.argv[1]))["spec"]["template"]["spec"]
pod = json.load(open(sys.argv[2]))
spec, st = pod["spec"], pod["status"]
assert not dep.get("initContainers"), "the Deployment's template has no sidecar"
print("Deployment template: containers", [c["name"] for c in dep["containers"]], "initContainers", dep.get("initContainers", []))
inits = spec.get("initContainers", [])
print("Pod (after admission): initContainers", [(c["name"], c.get("restartPolicy"), c["image"]) for c in inits],
      "containers", [c["name"] for c in spec["containers"]])
side = inits[0]
assert side["name"] == "pinproxy" and side.get("restartPolicy") == "Always", "native sidecar first"
assert pod["metadata"]["labels"].get("pinproxy.io/injected") == "true"
env = {e["name"]: e.get("value") for e in spec["containers"][0].get("env", [])}
print("app env:", {k: env[k] for k in sorted(env) if "PROXY" in k or "CA" in k or "SSL" in k})
assert env.get("HTTP_PROXY") == "http://127.0.0.1:3128"
sc = side.get("securityContext", {})
print("sidecar securityContext:", sc)
assert sc.get("readOnlyRootFilesystem") is True and sc.get("runAsNonRoot") is True
s_start = [c for c in st["initContainerStatuses"] if c["name"] == "pinproxy"][0]["state"]["running"]["startedAt"]
a_start = [c for c in st["containerStatuses"] if c["name"] == "app"][0]["state"]["running"]["startedAt"]
print(f"started: pinproxy {s_start}, app {a_start}")
assert s_start <= a_start, "sidecar started before the app"
PY
  local first; first="$(kubectl -n "$APP_NS" logs "$pod" -c app | head -n1)"
  echo "app's first line: $first"
  check "the app's first request to /readyz saw a ready sidecar" sh -c "echo '$first' | grep -q 'readyz=200'"
  echo "webhook log (the admission request for $pod):"
  kubectl -n "$CHART_NS" logs -l app.kubernetes.io/component=webhook --tail=-1 | grep '"pod injected"' | grep "$APP_NS" | tail -n 3
  check "the webhook logged the injection" sh -c "kubectl -n $CHART_NS logs -l app.kubernetes.io/component=webhook --tail=-1 | grep -q 'pod injected'"
  # The API server's own record of the admission chain for this pod.
  echo "API server audit event for the pod's creation (the webhook's patch):"
  python3 - "$E2E_RUN/logs/audit.log" "$pod" <<'PY'
import json, sys
events = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
ev = [e for e in events if e.get("objectRef", {}).get("name") == sys.argv[2]
      or (e.get("objectRef", {}).get("namespace") == "shop" and e.get("requestObject", {}).get("metadata", {}).get("generateName", "").startswith("app-")
          and e.get("responseStatus", {}).get("code") == 201)]
assert ev, "no audit event for the pod"
ann = ev[-1].get("annotations", {})
muts = {k: v for k, v in ann.items() if k.startswith("mutation.webhook.admission.k8s.io/")}
patches = {k: json.loads(v) for k, v in ann.items() if k.startswith("patch.webhook.admission.k8s.io/")}
for k, v in muts.items():
    print(" ", k, v)
ours = [p for p in patches.values() if p.get("webhook", "").endswith("inject.pinproxy.io")]
assert ours, f"no patch from a pinproxy webhook: {list(patches)}"
ops = ours[0]["patch"]
print(f"  patch from {ours[0]['webhook']} ({ours[0]['patchType']}): {len(ops)} operations, e.g.")
for op in ops[:6]:
    v = json.dumps(op.get("value"))
    print("   ", op["op"], op["path"], v[:100] + ("..." if len(v) > 100 else ""))
assert any(op["path"].startswith("/spec/initContainers") for op in ops), "the patch adds the sidecar"
PY
  # The runtime stage's settings, as the container runs them.
  local ctr_id; ctr_id="$(kubectl -n "$APP_NS" get pod "$pod" -o jsonpath='{.status.initContainerStatuses[0].containerID}')"
  ctr_id="${ctr_id#containerd://}"
  "${CTR[@]}" containers info "$ctr_id" >"$d/ctr.json"
  python3 - "$d/ctr.json" <<'PY'
import json, sys
spec = json.load(open(sys.argv[1]))["Spec"]
proc, root = spec["process"], spec["root"]
print("sidecar process: args", proc["args"], "uid", proc["user"]["uid"], "root readonly", root.get("readonly"))
assert proc["args"][0] in ("pinproxy", "/usr/local/bin/pinproxy") and proc["user"]["uid"] == 65532 and root.get("readonly") is True
PY
  # After admission the webhook judges UPDATEs too: the sidecar's image
  # cannot be swapped for something else running as its UID.
  local image out
  image="$(kubectl -n "$APP_NS" get pod "$pod" -o jsonpath='{.spec.initContainers[0].image}')"
  out="$(kubectl -n "$APP_NS" patch pod "$pod" --type=json \
    -p '[{"op": "replace", "path": "/spec/initContainers/0/image", "value": "evil.test/relay:1"}]' 2>&1 || true)"
  echo "kubectl patch pod $pod (the sidecar's image -> evil.test/relay:1): $out"
  check "the API server denied swapping the sidecar's image" sh -c 'printf %s "$1" | grep -q "cannot be changed"' _ "$out"
  check "the sidecar's image is unchanged" eq "$(kubectl -n "$APP_NS" get pod "$pod" -o jsonpath='{.spec.initContainers[0].image}')" "$image"
  run kubectl -n "$APP_NS" label pod "$pod" e2e-update=allowed
  check "other updates of the pod pass" eq "$(kubectl -n "$APP_NS" get pod "$pod" -o jsonpath='{.metadata.labels.e2e-update}')" allowed
  # Dropping the selector's own label first would take the next update out
  # of the webhook's sight: pinproxy.io/ labels are frozen too.
  out="$(kubectl -n "$APP_NS" label pod "$pod" pinproxy.io/inject- 2>&1 || true)"
  echo "kubectl label pod $pod pinproxy.io/inject- : $out"
  check "the API server denied dropping pinproxy.io/inject" sh -c 'printf %s "$1" | grep -q "cannot be changed after creation"' _ "$out"
  check "the label is still there" eq "$(kubectl -n "$APP_NS" get pod "$pod" -o jsonpath='{.metadata.labels.pinproxy\.io/inject}')" true
  # ...also through the status subresource, which keeps metadata changes.
  out="$(kubectl -n "$APP_NS" patch pod "$pod" --subresource=status --type=merge \
    -p '{"metadata": {"labels": {"pinproxy.io/inject": null}}}' 2>&1 || true)"
  echo "kubectl patch pod $pod --subresource=status (drop pinproxy.io/inject): $out"
  check "the API server denied it through pods/status" sh -c 'printf %s "$1" | grep -q "cannot be changed after creation"' _ "$out"
  check "the label is still there" eq "$(kubectl -n "$APP_NS" get pod "$pod" -o jsonpath='{.metadata.labels.pinproxy\.io/inject}')" true
  # A pod injected only because its namespace is labelled stays judged
  # once the label is removed from the namespace (a fourth attack review:
  # the namespace entry no longer matched it, and nothing judged its
  # UPDATEs). The label is put back before anything is asserted.
  run kubectl -n "$APP_NS" run ns-only --image "$APP_IMAGE" --image-pull-policy IfNotPresent \
    --restart Never --command -- sleep 600
  check "a pod with no pinproxy.io/ label of its own got the sidecar from its namespace" sh -c \
    "kubectl -n $APP_NS get pod ns-only -o jsonpath='{.spec.initContainers[0].name} {.metadata.labels}' | grep -q '^pinproxy .*pinproxy.io/injected'"
  run kubectl label namespace "$APP_NS" pinproxy.io/inject-
  sleep 2  # the API server's namespace informer sees the change
  local swap drop
  swap="$(kubectl -n "$APP_NS" patch pod ns-only --type=json \
    -p '[{"op": "replace", "path": "/spec/initContainers/0/image", "value": "evil.test/relay:1"}]' 2>&1 || true)"
  drop="$(kubectl -n "$APP_NS" label pod ns-only pinproxy.io/injected- 2>&1 || true)"
  local after; after="$(kubectl -n "$APP_NS" get pod ns-only -o jsonpath='{.spec.initContainers[0].image} {.metadata.labels.pinproxy\.io/injected}')"
  run kubectl label namespace "$APP_NS" pinproxy.io/inject=enabled
  run kubectl -n "$APP_NS" delete pod ns-only --wait=false
  echo "namespace label removed; kubectl patch pod ns-only (the sidecar's image -> evil.test/relay:1): $swap"
  echo "namespace label removed; kubectl label pod ns-only pinproxy.io/injected- : $drop"
  echo "ns-only's sidecar image and pinproxy.io/injected afterwards: $after"
  check "with the namespace label removed, the API server still denied swapping the sidecar's image" \
    sh -c 'printf %s "$1" | grep -q "cannot be changed"' _ "$swap"
  check "...and dropping pinproxy.io/injected" sh -c 'printf %s "$1" | grep -q "cannot be changed after creation"' _ "$drop"
  check "the sidecar's image and the label are unchanged" eq "$after" "$image true"
}

# --- 2: from inside the app container ---------------------------------------------
scenario_2() {
  local r
  echo '$ curl http://good.world.test/ (HTTP_PROXY; pinned, key A)'
  r="$(curl_code http://good.world.test/)"; echo "  -> $r"
  check "pinned host through HTTP_PROXY: 200" eq "$r" 200
  run app_exec curl -s http://good.world.test/hello
  echo '$ curl http://unlisted.world.test/'
  r="$(curl_code http://unlisted.world.test/)"; echo "  -> $r"
  check "unlisted host: 403 host-not-allowed" eq "$r" "403 host-not-allowed"
  echo '$ curl http://bad.world.test/ (pinned to A, served with key B)'
  r="$(curl_code http://bad.world.test/)"; echo "  -> $r"
  check "wrong pin: 502 pin-mismatch" eq "$r" "502 pin-mismatch"
  echo '$ curl https://good.world.test/ (HTTPS_PROXY: CONNECT; trusting the injected bundle via CURL_CA_BUNDLE)'
  app_exec sh -c 'env | grep -E "^(HTTPS_PROXY|CURL_CA_BUNDLE|SSL_CERT_FILE)="'
  r="$(curl_code https://good.world.test/)"; echo "  -> $r"
  check "https via CONNECT: 200" eq "$r" 200
  app_exec sh -c 'curl -sv https://good.world.test/ -o /dev/null 2>&1 | grep -E "issuer:|subject:|HTTP/1.1 200"'
  check "the app's TLS peer is the pod CA's minted leaf" sh -c \
    "kubectl -n $APP_NS exec $(app_pod) -c app -- sh -c 'curl -sv https://good.world.test/ -o /dev/null 2>&1' | grep 'issuer:' | grep -qi pinproxy"
  echo '$ curl https://bad.world.test/ (CONNECT; pin mismatch)'
  r="$(curl_code https://bad.world.test/)"; echo "  -> $r"
  check "https to the wrong pin is refused" sh -c "[ '${r%% *}' != 200 ]"
}

# --- 3: a Secret edit through the kubelet; pinproxy status STALE -> SYNCED -------
status_line() {  # the app pod's row of `pinproxy status`
  PP_STATUS -n "$APP_NS" -o json | python3 -c '
import json, sys
r = json.load(sys.stdin)
for s in r["sidecars"]:
    if s["pod"].startswith("app-"):
        print(s["state"], s["generation"], (s["pins_sha256"] or "-")[:12], (s["secret_sha256"] or "-")[:12])'
}

scenario_3() {
  local pod; pod="$(app_pod)"
  # Copied through `kubectl exec -i` and checked: the kubelet's stream
  # proxy was seen to drop the stdin of such an exec ("broken pipe" in
  # kubelet.log), leaving an empty script that python3 ran silently.
  local want tries=0
  want="$(sha256sum <"$ROOT/scripts/e2e/loop_client.py" | cut -d' ' -f1)"
  until [ "$(app_exec python3 -c 'import hashlib; print(hashlib.sha256(open("/tmp/loop.py", "rb").read()).hexdigest())' 2>/dev/null)" = "$want" ]; do
    tries=$((tries + 1))
    if [ "$tries" -gt 3 ]; then
      echo "could not copy loop_client.py into the app container (3 tries)"
      return 1
    fi
    kubectl -n "$APP_NS" exec -i "$pod" -c app -- sh -c 'cat > /tmp/loop.py' <"$ROOT/scripts/e2e/loop_client.py" || true
  done
  # The client runs in the app container; its lines stream to the node.
  local loop="$E2E_RUN/logs/scenario-3-loop.log"
  app_exec rm -f /tmp/loop.stop
  # Started detached inside the container (its log there), mirrored to the
  # node once a second: a backgrounded, long-lived `kubectl exec` was seen
  # to never start its process in the container (empty output, no python3
  # in the container's process list, twice in a row on one machine), while
  # short execs always ran.
  app_exec sh -c 'rm -f /tmp/loop.log /tmp/loop.done; (python3 /tmp/loop.py 240 good.world.test next.world.test >/tmp/loop.log 2>&1 </dev/null; touch /tmp/loop.done) >/dev/null 2>&1 &'
  : >"$loop"
  (
    while :; do
      kubectl -n "$APP_NS" exec "$pod" -c app -- cat /tmp/loop.log >"$loop.part" 2>/dev/null \
        && mv "$loop.part" "$loop"
      # Done when the client has exited (PID 1 here is `sleep`, which
      # reaps no one: a finished client stays a zombie, so not kill -0).
      app_exec test -e /tmp/loop.done 2>/dev/null && break
      sleep 1
    done
    kubectl -n "$APP_NS" exec "$pod" -c app -- cat /tmp/loop.log >"$loop.part" 2>/dev/null && mv "$loop.part" "$loop"
  ) &
  local loop_pid=$!
  if ! wait_for 30 "the loop client's first lines" grep -q next.world.test "$loop"; then
    echo "loop client silent for 30 s; processes in the app container:"
    app_exec sh -c 'ps -ef 2>/dev/null || ls /proc | grep -E "^[0-9]+$" | while read p; do tr "\0" " " </proc/$p/cmdline; echo; done' || true
    return 1
  fi
  echo "loop client under v1 (next.world.test pinned to A, served with B):"
  tail -n 2 "$loop"
  run PP_STATUS -n "$APP_NS"
  local s0; s0="$(status_line)"
  check "status before the edit: SYNCED at generation 1 ($s0)" matches "$s0" '^SYNCED 1 '

  local t_apply; t_apply="$(date +%s.%N)"
  echo "--- $(date -u +%H:%M:%S.%N | cut -c1-12) kubectl apply (v2: next.world.test pinned to B)"
  apply_pins "$APP_NS" "$PIN_B"
  local seen_stale="" line deadline=$(( $(date +%s) + 180 )) t_status=""
  while [ "$(date +%s)" -lt "$deadline" ]; do
    line="$(status_line)"
    printf '%s status: %s\n' "$(date -u +%H:%M:%S)" "$line"
    case "$line" in
      STALE*) seen_stale=1 ;;
      "SYNCED 2 "*) t_status="$(date +%s.%N)"; break ;;
    esac
    sleep 1
  done
  run PP_STATUS -n "$APP_NS"
  check "status saw STALE while the kubelet had not written the edit" [ -n "$seen_stale" ]
  check "status: SYNCED at generation 2" [ -n "$t_status" ]
  wait_for 30 "a 200 from next.world.test" grep -q 'next.world.test 200' "$loop"
  app_exec touch /tmp/loop.stop
  wait "$loop_pid" || true
  python3 - "$loop" "$t_apply" "$t_status" <<'PY'
import sys
lines = [l.split(maxsplit=3) for l in open(sys.argv[1]) if l.strip()]
t_apply, t_status = float(sys.argv[2]), float(sys.argv[3])
good = [l for l in lines if l[1] == "good.world.test"]
bad_good = [l for l in good if l[2] != "200"]
nxt = [l for l in lines if l[1] == "next.world.test"]
first_ok = min(float(l[0]) for l in nxt if l[2] == "200")
last_refused = max((float(l[0]) for l in nxt if l[2] != "200"), default=None)
print(f"loop: {len(lines)} requests; good.world.test (allowed by both pinsets): {len(good)}, failed: {len(bad_good)}")
print(f"next.world.test: refused until {last_refused - t_apply:+.1f}s, first 200 at {first_ok - t_apply:+.1f}s after kubectl apply")
print(f"SECRET-TO-ENFORCEMENT: {first_ok - t_apply:.1f} s (status SYNCED at {t_status - t_apply:.1f} s)")
assert not bad_good, f"requests both pinsets allow failed: {bad_good[:5]}"
assert all(l[2] in ("200", "502") for l in nxt), "next.world.test: only 502 pin-mismatch before, 200 after"
assert last_refused is None or last_refused < first_ok, "no refusal after the first success"
PY
  echo "sidecar log around the reload:"
  kubectl -n "$APP_NS" logs "$pod" -c pinproxy | grep -E 'pinset reloaded|reload failed' | tail -n 3
}

# --- 4: Prometheus scrapes the sidecar; PinproxyPinMismatch fires ---------------
prom_query() {  # PROMQL: the first sample's value, or empty
  curl -s --get --data-urlencode "query=$1" http://127.0.0.1:19090/api/v1/query |
    python3 -c 'import json,sys; r=json.load(sys.stdin)["data"]["result"]; print(r[0]["value"][1] if r else "")'
}

counter_reached() { local v; v="$(prom_query "$PROM_Q")"; [ -n "$v" ] && [ "${v%%.*}" -ge "$PROM_WANT" ]; }
alert_firing() {  # ALERTNAME
  curl -s http://127.0.0.1:19090/api/v1/alerts | python3 -c '
import json, sys
a = json.load(sys.stdin)["data"]["alerts"]
sys.exit(0 if any(x["labels"]["alertname"] == sys.argv[1] and x["state"] == "firing" for x in a) else 1)' "$1"
}

scenario_4() {
  local d="$E2E_RUN/prometheus"; mkdir -p "$d"
  # Its own identity with read-only discovery rights, as in a real install.
  _e2e_cert "$E2E_RUN/pki" prometheus prometheus e2e
  run kubectl create clusterrole e2e-prometheus --verb=get,list,watch --resource=pods,namespaces
  run kubectl create clusterrolebinding e2e-prometheus --clusterrole=e2e-prometheus --user=prometheus
  # The alert rules from the chart's PrometheusRule, as rendered.
  helm template pinproxy "$ROOT/charts/pinproxy" --set monitoring.prometheusRule.enabled=true \
    --show-only templates/prometheusrule.yaml >"$d/prometheusrule.yaml"
  /usr/bin/python3 -c 'import sys, yaml; d = yaml.safe_load(open(sys.argv[1])); yaml.safe_dump({"groups": d["spec"]["groups"]}, open(sys.argv[2], "w"))' \
    "$d/prometheusrule.yaml" "$d/rules.yaml"
  run "$PROMTOOL_BIN" check rules "$d/rules.yaml"
  grep -A3 'alert: PinproxyPinMismatch$' "$d/rules.yaml"
  # The chart's PodMonitor, written as the scrape config the operator makes
  # of it: pods labelled pinproxy.io/injected=true, port pinproxy-admin.
  cat >"$d/prometheus.yml" <<YAML
global: {scrape_interval: 2s, evaluation_interval: 2s}
rule_files: [$d/rules.yaml]
scrape_configs:
  - job_name: podMonitor/$CHART_NS/pinproxy/0
    metrics_path: /metrics
    kubernetes_sd_configs:
      - role: pod
        api_server: https://$NODE_IP:6443
        tls_config:
          ca_file: $E2E_RUN/pki/ca.crt
          cert_file: $E2E_RUN/pki/prometheus.crt
          key_file: $E2E_RUN/pki/prometheus.key
    relabel_configs:
      - {source_labels: [__meta_kubernetes_pod_label_pinproxy_io_injected, __meta_kubernetes_pod_labelpresent_pinproxy_io_injected], regex: "(true);true", action: keep}
      - {source_labels: [__meta_kubernetes_pod_container_port_name], regex: pinproxy-admin, action: keep}
      - {source_labels: [__meta_kubernetes_namespace], target_label: namespace}
      - {source_labels: [__meta_kubernetes_pod_name], target_label: pod}
      - {source_labels: [__meta_kubernetes_pod_container_name], target_label: container}
YAML
  run "$PROMTOOL_BIN" check config "$d/prometheus.yml"
  start prometheus "$PROMETHEUS_BIN" --config.file "$d/prometheus.yml" --storage.tsdb.path "$d/data" \
    --web.listen-address 127.0.0.1:19090
  local pod; pod="$(app_pod)"
  wait_for 60 "Prometheus target for $APP_NS/$pod up" sh -c \
    "curl -s http://127.0.0.1:19090/api/v1/targets | python3 -c 'import json,sys; t=json.load(sys.stdin)[\"data\"][\"activeTargets\"]; sys.exit(0 if any(x[\"labels\"].get(\"pod\")==\"$pod\" and x[\"health\"]==\"up\" for x in t) else 1)'"
  curl -s http://127.0.0.1:19090/api/v1/targets | python3 -c '
import json, sys
for t in json.load(sys.stdin)["data"]["activeTargets"]:
    print("target", t["scrapeUrl"], t["labels"].get("namespace"), t["labels"].get("pod"), t["health"])'
  local q="pinproxy_pin_mismatch_total{namespace=\"$APP_NS\",pod=\"$pod\",host=\"bad.world.test\",mode=\"enforce\"}"
  local before; before="$(prom_query "$q")"
  echo "before: $q = $before"
  local i; for i in 1 2 3; do curl_code http://bad.world.test/ >/dev/null; done
  echo "3 requests to bad.world.test (502 pin-mismatch) from the app"
  PROM_Q="$q"; PROM_WANT=$(( ${before:-0} + 3 ))
  wait_for 30 "the counter to rise in Prometheus" counter_reached
  echo "after: $q = $(prom_query "$q")"
  wait_for 60 "PinproxyPinMismatch firing" alert_firing PinproxyPinMismatch
  curl -s http://127.0.0.1:19090/api/v1/alerts | python3 -c '
import json, sys
alerts = json.load(sys.stdin)["data"]["alerts"]
for a in alerts:
    print("ALERT", a["labels"]["alertname"], a["state"], {k: v for k, v in a["labels"].items() if k != "alertname"}, a["annotations"]["summary"])
assert any(a["labels"]["alertname"] == "PinproxyPinMismatch" and a["state"] == "firing"
           and a["labels"].get("host") == "bad.world.test" and a["labels"].get("namespace") == "'"$APP_NS"'" for a in alerts)'
}

# --- 5: transparent mode: rules in the real pod netns, the lock ------------------
pod_netns() {  # NS POD: the cni-* netns holding the pod's IP
  local ip n; ip="$(kubectl -n "$1" get pod "$2" -o jsonpath='{.status.podIP}')"
  for n in $(ip netns list | awk '/^cni-/ {print $1}'); do
    ip -n "$n" -4 addr show 2>/dev/null | grep -q "inet $ip/" && { echo "$n"; return 0; }
  done
  return 1
}

scenario_5() {
  local ns=edge d="$E2E_RUN/s5"; mkdir -p "$d"
  run kubectl create namespace "$ns"
  apply_pins "$ns" "$PIN_B"
  cat >"$d/pod.yaml" <<YAML
apiVersion: v1
kind: Pod
metadata: {name: legacy-app, namespace: $ns, labels: {app: legacy-app}}
spec:
  hostAliases:
    - {ip: "$WORLD_GOOD_IP", hostnames: [good.world.test]}
    - {ip: "$WORLD_OTHER_IP", hostnames: [bad.world.test, next.world.test]}
    - {ip: "$WORLD_PLAIN_IP", hostnames: [direct.world.test]}
  containers:
    - name: app
      image: $APP_IMAGE
      imagePullPolicy: IfNotPresent
      command: ["sleep", "100000"]
YAML
  echo '$ pinproxy inject --transparent --transparent-ports 443 --transparent-lock -f pod.yaml | kubectl apply -f -'
  PP inject --image "$PINPROXY_IMAGE" --init-image "$INIT_IMAGE" --image-pull-policy IfNotPresent \
    --transparent --transparent-ports 443 --transparent-lock -f "$d/pod.yaml" >"$d/injected.yaml"
  kubectl apply -f "$d/injected.yaml"
  run kubectl -n "$ns" wait --for=condition=Ready pod/legacy-app --timeout 120s
  kubectl -n "$ns" get pod legacy-app -o jsonpath='{range .spec.initContainers[*]}{.name} {.image} {.securityContext.capabilities.add}{"\n"}{end}'
  echo "pinproxy-redirect (init container) log:"
  kubectl -n "$ns" logs legacy-app -c pinproxy-redirect | tail -n 5
  local netns; netns="$(pod_netns "$ns" legacy-app)" || { echo "no netns for the pod"; return 1; }
  echo "rules in the pod's network namespace ($netns), read from the node:"
  ip netns exec "$netns" iptables-nft-save 2>/dev/null | grep -E '^\*|^-A' | grep -v '^-A KUBE' || true
  ip netns exec "$netns" iptables-legacy-save 2>/dev/null | grep -E '^-A' || true
  check "a REDIRECT rule to the transparent port is in the pod netns" sh -c \
    "{ ip netns exec $netns iptables-nft-save; ip netns exec $netns iptables-legacy-save; } 2>/dev/null | grep -q 'REDIRECT --to-ports 15001'"
  local ex="kubectl -n $ns exec legacy-app -c app --"
  echo '$ env | grep -i proxy  (the app has no proxy variables)'
  $ex sh -c 'env | grep -i _proxy || echo "(none)"'
  check "no HTTP(S)_PROXY in the app" sh -c "! $ex sh -c 'env' | grep -qi '^https\?_proxy='"
  local r
  r="$($ex curl -s -o /dev/null -w '%{http_code}' https://good.world.test/ || true)"
  echo "curl https://good.world.test/ (direct, redirected to pinproxy) -> $r"
  check "pinned host through the kernel redirect: 200" eq "$r" 200
  $ex sh -c 'curl -sv https://good.world.test/ -o /dev/null 2>&1 | grep -E "issuer:"'
  r="$($ex curl -s -o /dev/null -w '%{http_code}' https://bad.world.test/ 2>&1; echo " exit=$?")"
  echo "curl https://bad.world.test/ (wrong pin) -> $r"
  check "wrong pin refused in transparent mode" sh -c "! echo '$r' | grep -q '^200'"
  local before; before="$(grep -c "GET /" "$E2E_RUN/logs/world-direct.log" || true)"
  r="$($ex curl -s -m 5 -o /dev/null -w '%{http_code}' http://direct.world.test/ 2>&1; echo " exit=$?")"
  echo "curl http://direct.world.test/ (port 80: not redirected, locked) -> $r"
  check "the lock stopped the direct connection" sh -c "echo '$r' | grep -qv '^200'"
  check "the direct server saw no request" eq "$(grep -c "GET /" "$E2E_RUN/logs/world-direct.log" || true)" "$before"
  # Control: the same server from the node answers (the lock, not the route, stopped it).
  check "control: direct.world.test answers from the node" sh -c "curl -sf http://$WORLD_PLAIN_IP/ >/dev/null"
  # Review 8: the app container runs as root without a securityContext of its
  # own, so it would hold the runtime's default NET_RAW: injection drops it, and
  # no packet socket (whose frames no iptables rule sees) can be opened.
  local drops; drops="$(kubectl -n "$ns" get pod legacy-app -o jsonpath='{.spec.containers[?(@.name=="app")].securityContext.capabilities.drop}')"
  echo "app container capabilities.drop: $drops"
  check "injection dropped NET_RAW from the app container" matches "$drops" 'NET_RAW'
  r="$($ex python3 -c 'import socket
try:
    socket.socket(socket.AF_PACKET, socket.SOCK_RAW); print("opened")
except OSError as e:
    print("refused", e.errno)' 2>&1)"
  echo "AF_PACKET socket in the app container -> $r"
  check "no packet socket in the app container" eq "$r" "refused 1"
  # The lock is default-deny: UDP-Lite (any process may open it) is dropped.
  r="$($ex python3 -c 'import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, 136)
try:
    s.sendto(b"x", (sys.argv[1], 443)); print("sent")
except OSError as e:
    print("refused", e.errno)' "$WORLD_PLAIN_IP" 2>&1)"
  echo "UDP-Lite datagram to direct.world.test:443 -> $r"
  check "the lock drops UDP-Lite" eq "$r" "refused 1"
  check "the lock ends in a DROP of every protocol" sh -c \
    "ip netns exec $netns iptables-nft-save 2>/dev/null | grep -qx -- '-A PINPROXY_LOCK -j DROP'"
  # With the chart's UPDATE entry (scenario 1), kubectl debug is judged as an app
  # container: --profile=netadmin (NET_ADMIN, NET_RAW) is refused, baseline joins
  # without NET_RAW.
  if kubectl get mutatingwebhookconfiguration -o jsonpath='{..webhooks[*].name}' 2>/dev/null | grep -q updates.inject.pinproxy.io; then
    r="$(kubectl -n "$ns" debug legacy-app --image "$APP_IMAGE" --image-pull-policy IfNotPresent \
      --profile=netadmin -c netadmin -- sleep 600 2>&1 || true)"
    echo "kubectl debug --profile=netadmin -> $r"
    check "a netadmin debug container is refused in a transparent pod" matches "$r" 'NET_ADMIN'
    run kubectl -n "$ns" debug legacy-app --image "$APP_IMAGE" --image-pull-policy IfNotPresent \
      --profile=baseline -c baseline -- sleep 600
    drops="$(kubectl -n "$ns" get pod legacy-app -o jsonpath='{.spec.ephemeralContainers[?(@.name=="baseline")].securityContext.capabilities.drop}')"
    echo "baseline debug container capabilities.drop: $drops"
    check "a baseline debug container joins without NET_RAW" matches "$drops" 'NET_RAW'
  else
    echo "(no updates.inject.pinproxy.io entry: kubectl debug is not judged; run scenario 1 first to check it)"
  fi
}

# --- 6: the webhook scaled to 0: failurePolicy as documented ---------------------
# Which webhook entry of the chart's configuration matches a pod with
# LABELS in namespace NS, and its failurePolicy (label selectors evaluated
# as the API server does).
matching_policy() {  # NS POD_LABELS_JSON
  kubectl get mutatingwebhookconfiguration -o json | python3 -c '
import json, subprocess, sys
ns, pod_labels = sys.argv[1], json.loads(sys.argv[2])
ns_labels = json.loads(subprocess.check_output(["kubectl", "get", "ns", ns, "-o", "json"]))["metadata"].get("labels", {})
def match(sel, labels):
    if sel is None: return True
    for k, v in sel.get("matchLabels", {}).items():
        if labels.get(k) != v: return False
    for e in sel.get("matchExpressions", []):
        k, op, vals = e["key"], e["operator"], e.get("values", [])
        if op == "In" and labels.get(k) not in vals: return False
        if op == "NotIn" and k in labels and labels[k] in vals: return False
        if op == "Exists" and k not in labels: return False
        if op == "DoesNotExist" and k in labels: return False
    return True
for c in json.load(sys.stdin)["items"]:
    for w in c["webhooks"]:
        if match(w.get("namespaceSelector"), ns_labels) and match(w.get("objectSelector"), pod_labels):
            print(w["name"], w.get("failurePolicy", "Fail"))' "$1" "$2"
}

# probe_policy NS: with the webhook down, create a pod labelled for
# injection in NS and check the outcome against the failurePolicy of the
# one webhook entry that selects it.
probe_policy() {
  local ns="$1"
  local m; m="$(matching_policy "$ns" '{"pinproxy.io/inject": "true"}')"
  echo "webhook entries selecting a pod labelled pinproxy.io/inject=true in $ns: $m"
  local policy; policy="$(echo "$m" | awk 'NR==1 {print $2}')"
  check "exactly one webhook entry applies" eq "$(echo "$m" | grep -c .)" 1
  local out rc=0
  out="$(kubectl -n "$ns" run probe --image "$APP_IMAGE" --image-pull-policy IfNotPresent \
        --labels pinproxy.io/inject=true --restart Never --command -- sleep 600 2>&1)" || rc=$?
  echo "$ kubectl -n $ns run probe (labelled for injection) -> exit $rc: $out"
  case "$policy" in
    Fail)
      check "failurePolicy Fail: the pod is refused" [ "$rc" != 0 ]
      check "the refusal names the webhook call" matches "$out" 'failed calling webhook'
      check "no pod was created" sh -c "! kubectl -n $ns get pod probe >/dev/null 2>&1" ;;
    Ignore)
      check "failurePolicy Ignore: the pod is created" eq "$rc" 0
      check "without the sidecar" sh -c "! kubectl -n $ns get pod probe -o jsonpath='{.spec.initContainers[*].name}{.spec.containers[*].name}' | grep -q pinproxy"
      run PP_STATUS -n "$ns"
      check "status lists it as asked-for but without the sidecar" sh -c "$PINPROXY_BIN status --kubeconfig $E2E_RUN/pki/status.kubeconfig -n $ns | grep -A3 WITHOUT | grep -q $ns/probe"
      kubectl -n "$ns" delete pod probe --wait=false >/dev/null ;;
    *) echo "unknown failurePolicy [$policy]"; return 1 ;;
  esac
}

scenario_6() {
  local dep; dep="$(kubectl -n "$CHART_NS" get deploy -l app.kubernetes.io/component=webhook -o jsonpath='{.items[0].metadata.name}')"
  run kubectl create namespace optin
  run kubectl -n "$CHART_NS" scale deploy "$dep" --replicas=0
  wait_for 60 "webhook pods gone" sh -c "[ -z \"\$(kubectl -n $CHART_NS get pods -l app.kubernetes.io/component=webhook -o name)\" ]"
  echo "values.yaml says:"; grep -n 'failurePolicy' "$ROOT/charts/pinproxy/values.yaml" | head -n 4
  echo "--- a namespace labelled pinproxy.io/inject=enabled ($APP_NS)"
  probe_policy "$APP_NS"
  echo "--- a pod that opts in by label, in a namespace that is not labelled (optin)"
  probe_policy optin
  # The narrow scope: a pod that did not ask never calls the webhook.
  run kubectl -n optin run plain --image "$APP_IMAGE" --image-pull-policy IfNotPresent --restart Never --command -- sleep 600
  check "a pod that did not ask is created while the webhook is down" sh -c "kubectl -n optin get pod plain >/dev/null"
  # Updates of injected pods: only what the webhook judges waits for it
  # (the chart's matchConditions); a controller's label patch goes through.
  local app; app="$(app_pod)"
  run kubectl -n "$APP_NS" label pod "$app" e2e-outage=passed
  check "an unrelated update of an injected pod passes while the webhook is down" \
    eq "$(kubectl -n "$APP_NS" get pod "$app" -o jsonpath='{.metadata.labels.e2e-outage}')" passed
  local out; out="$(kubectl -n "$APP_NS" patch pod "$app" --type=json \
    -p '[{"op": "replace", "path": "/spec/initContainers/0/image", "value": "evil.test/relay:1"}]' 2>&1 || true)"
  echo "the sidecar's image swap while the webhook is down: $out"
  check "an image swap is refused while the webhook is down (failurePolicy Fail)" \
    sh -c 'printf %s "$1" | grep -q "failed calling webhook"' _ "$out"
  run kubectl -n "$CHART_NS" scale deploy "$dep" --replicas=2
  run kubectl -n "$CHART_NS" rollout status deploy "$dep" --timeout 120s
  # Webhook back: the same requests are injected.
  local ns
  for ns in "$APP_NS" optin; do
    wait_for 60 "a pod created through the webhook again in $ns" sh -c \
      "kubectl -n $ns run probe2 --image $APP_IMAGE --image-pull-policy IfNotPresent --labels pinproxy.io/inject=true --restart Never --command -- sleep 600 >/dev/null 2>&1 || kubectl -n $ns get pod probe2 >/dev/null 2>&1"
    check "with the webhook back, the pod in $ns gets the sidecar" sh -c \
      "kubectl -n $ns get pod probe2 -o jsonpath='{.spec.initContainers[*].name}' | grep -q pinproxy"
    kubectl -n "$ns" delete pod probe2 --wait=false >/dev/null
  done
  kubectl -n optin delete pod plain --wait=false >/dev/null
  # webhook.labelledNamespaces.podOptOut: false — every pod of a labelled
  # namespace is pinned: one that opts out (label or annotation) is not
  # created, the refusal names the namespace rule; outside labelled
  # namespaces the opt-out still holds. The default is put back after.
  run helm upgrade pinproxy "$ROOT/charts/pinproxy" -n "$CHART_NS" --reuse-values \
    --set webhook.labelledNamespaces.podOptOut=false --wait --timeout 180s
  run kubectl -n "$CHART_NS" rollout status deploy "$dep" --timeout 120s
  echo "webhook args: $(kubectl -n "$CHART_NS" get deploy "$dep" -o jsonpath='{.spec.template.spec.containers[0].args}')"
  local how rc
  for how in "--labels pinproxy.io/inject=false" "--annotations pinproxy.io/inject=false"; do
    rc=0
    # shellcheck disable=SC2086
    out="$(kubectl -n "$APP_NS" run opted-out --image "$APP_IMAGE" --image-pull-policy IfNotPresent $how \
      --restart Never --command -- sleep 600 2>&1)" || rc=$?
    echo "$ kubectl -n $APP_NS run opted-out $how -> exit $rc: $out"
    check "podOptOut false: a pod opting out ($how) in $APP_NS is refused" [ "$rc" != 0 ]
    check "the refusal names the namespace rule" matches "$out" "namespace .$APP_NS. is labelled pinproxy.io/inject=enabled.*--pod-opt-out refuse"
    check "no pod was created" sh -c "! kubectl -n $APP_NS get pod opted-out >/dev/null 2>&1"
  done
  run kubectl -n optin run opted-out --image "$APP_IMAGE" --image-pull-policy IfNotPresent \
    --labels pinproxy.io/inject=false --restart Never --command -- sleep 600
  check "outside labelled namespaces the opt-out holds (no sidecar)" sh -c \
    "! kubectl -n optin get pod opted-out -o jsonpath='{.spec.initContainers[*].name}' | grep -q pinproxy"
  kubectl -n optin delete pod opted-out --wait=false >/dev/null
  run helm upgrade pinproxy "$ROOT/charts/pinproxy" -n "$CHART_NS" --reuse-values \
    --set webhook.labelledNamespaces.podOptOut=true --wait --timeout 180s
  run kubectl -n "$CHART_NS" rollout status deploy "$dep" --timeout 120s
}

# --- 7: shutdown and Jobs ---------------------------------------------------------
scenario_7() {
  local d="$E2E_RUN/s7"; mkdir -p "$d"
  # An app that finishes its in-flight request on SIGTERM, then makes one
  # more: the native sidecar must outlive it.
  run kubectl apply -f - <<YAML
apiVersion: v1
kind: Pod
metadata: {name: drain, namespace: $APP_NS, labels: {pinproxy.io/inject: "true"}}
spec:
  terminationGracePeriodSeconds: 30
  containers:
    - name: app
      image: $APP_IMAGE
      imagePullPolicy: IfNotPresent
      command:
        - sh
        - -c
        - |
          term=0; pid=""
          trap 'echo "app: SIGTERM at \$(date +%s)"; term=1' TERM
          echo app: up
          while [ \$term = 0 ]; do
            if [ -f /tmp/go ] && [ -z "\$pid" ]; then
              (curl -s -o /dev/null -w "app: in-flight request -> %{http_code} at \$(date +%s)\n" "http://good.world.test/slow?s=4") & pid=\$!
              echo "app: in-flight request started at \$(date +%s)"
            fi
            sleep 0.2
          done
          [ -n "\$pid" ] && wait \$pid
          curl -s -o /dev/null -w "app: request after SIGTERM -> %{http_code}\n" http://good.world.test/after-term
          echo "app: exit at \$(date +%s)"
YAML
  run kubectl -n "$APP_NS" wait --for=condition=Ready pod/drain --timeout 120s
  kubectl -n "$APP_NS" logs -f drain -c app >"$d/app.log" 2>&1 &
  local lapp=$!
  kubectl -n "$APP_NS" logs -f drain -c pinproxy >"$d/sidecar.log" 2>&1 &
  local lside=$!
  kubectl -n "$APP_NS" exec drain -c app -- touch /tmp/go
  wait_for 10 "the in-flight request" grep -q "in-flight request started" "$d/app.log"
  local t0; t0=$(date +%s.%N)
  run kubectl -n "$APP_NS" delete pod drain --wait=true --timeout 60s
  local took; took="$(python3 -c "import time; print(f'{time.time() - $t0:.1f}')")"
  wait "$lapp" "$lside" 2>/dev/null || true
  echo "app log:"; sed 's/^/  /' "$d/app.log"
  echo "sidecar log (last lines):"; tail -n 4 "$d/sidecar.log" | sed 's/^/  /'
  echo "pod deleted in ${took}s (terminationGracePeriodSeconds 30)"
  check "the in-flight request completed with 200" grep -q "in-flight request -> 200" "$d/app.log"
  check "a request after SIGTERM still went through the sidecar" grep -q "request after SIGTERM -> 200" "$d/app.log"
  check "the pod ended within the grace period" python3 -c "import sys; sys.exit(0 if $took < 30 else 1)"
  cp "$d/app.log" "$E2E_RUN/logs/scenario-7-app.log"; cp "$d/sidecar.log" "$E2E_RUN/logs/scenario-7-sidecar.log"

  run kubectl apply -f - <<YAML
apiVersion: batch/v1
kind: Job
metadata: {name: once, namespace: $APP_NS}
spec:
  backoffLimit: 0
  template:
    metadata: {labels: {pinproxy.io/inject: "true"}}
    spec:
      restartPolicy: Never
      containers:
        - name: app
          image: $APP_IMAGE
          imagePullPolicy: IfNotPresent
          command: ["sh", "-c", "curl -sf http://good.world.test/job && echo job-done"]
YAML
  run kubectl -n "$APP_NS" wait --for=condition=Complete job/once --timeout 120s
  kubectl -n "$APP_NS" get pods -l job-name=once -o jsonpath='{range .items[*]}{.metadata.name} phase={.status.phase} sidecar={.status.initContainerStatuses[0].state}{"\n"}{end}'
  run kubectl -n "$APP_NS" logs job/once -c app
}

# --- 8: signed pinsets: the real API server calls /validate; a signed sidecar ----
# signed_pins DIR SERIAL NEXT_PIN: DIR/pins.yaml (pins_yaml with `serial:`),
# world-ca.pem beside it, and DIR/pins.yaml.sig by `pinproxy sign`.
signed_pins() {
  local dir="$1"; mkdir -p "$dir"
  { echo "serial: $2"; pins_yaml "$3"; } >"$dir/pins.yaml"
  cp "$E2E_RUN/world/ca.crt" "$dir/world-ca.pem"
  (cd "$dir" && run PP sign --key ../pinset.key pins.yaml && run PP check --key ../pinset.pub pins.yaml)
}

# apply_pinset NS DIR [LABEL]: docs/kubernetes.md's hand update (the
# entries of DIR in one object, labelled LABEL unless it is "-", kubectl
# apply). Prints the command, kubectl's output and the exit code, which it
# also sets APPLY_RC to; kubectl's stderr stays in DIR/apply.err.
apply_pinset() {
  local ns="$1" dir="$2" label="${3:-pinproxy.io/pinset=true}" f from=() rc=0
  for f in pins.yaml pins.yaml.sig world-ca.pem; do
    [ -f "$dir/$f" ] && from+=("--from-file=$f")
  done
  local create=(kubectl -n "$ns" create secret generic pinproxy-pins "${from[@]}" --dry-run=client -o yaml)
  local tag=(kubectl label --local -f - "$label" -o yaml) shown
  shown="${create[*]} | ${tag[*]} | kubectl apply -f -"
  if [ "$label" = - ]; then tag=(cat); shown="${create[*]} | kubectl apply -f -"; fi
  printf '$ (in %s/) %s\n' "${dir##*/}" "$shown"
  (cd "$dir" && "${create[@]}" | "${tag[@]}" | kubectl apply -f -) >"$dir/apply.out" 2>"$dir/apply.err" || rc=$?
  sed 's/^/  stdout: /' "$dir/apply.out"
  # kubectl echoes the patch it sent (base64 data): its size stands in for it.
  awk 'length > 400 {print "  stderr: (" length " bytes: the patch kubectl sent)"; next} {print "  stderr: " $0}' "$dir/apply.err"
  echo "  exit code: $rc"
  APPLY_RC=$rc
}
contains() { grep -qF -- "$2" "$1"; }   # FILE STRING

stored_serial() {  # NS: the serial of the pins.yaml the API server holds
  kubectl -n "$1" get secret pinproxy-pins -o jsonpath='{.data.pins\.yaml}' | base64 -d | sed -n 's/^serial: *//p'
}

pins_json() { app_exec curl -s http://127.0.0.1:9901/pins; }   # the sidecar's /pins (loopback)
reloads() {  # RESULT: pinproxy_config_reloads_total{result=RESULT} of the sidecar
  app_exec curl -s http://127.0.0.1:9901/metrics |
    awk -v r="result=\"$1\"" '/^pinproxy_config_reloads_total\{/ && index($0, r) {s += $NF} END {print s + 0}'
}
rollback_refused() { [ "$(reloads rollback)" -ge 1 ]; }

scenario_8() {
  # The app pod of this scenario is `app` in namespace `signed`: app_exec,
  # curl_code and app_pod read APP_NS (dynamic scope).
  local APP_NS=signed d="$E2E_RUN/s8" r
  mkdir -p "$d"
  run kubectl create namespace "$APP_NS"
  echo "--- docs/kubernetes.md, 'Signed pinsets': a key pair, the chart told the public key"
  (cd "$d" && run PP keygen --out pinset) | tee "$d/keygen.out"
  local key_id; key_id="$(sed -n 's/.*(id \(.*\))$/\1/p' "$d/keygen.out")"
  check "keygen printed the key id ($key_id)" matches "$key_id" '^sha256/'
  # The release's pins Secrets are the operator's own (pins.existingSecret).
  # pinset.signing.inline (the default): the key's ConfigMap stays in the
  # release namespace, the webhook copies the key into each pod it injects.
  (cd "$d" && run helm upgrade pinproxy "$ROOT/charts/pinproxy" -n "$CHART_NS" --reuse-values \
    --set-file pinset.signing.publicKey=pinset.pub --set pinset.signing.admission=true \
    --set pinset.signing.keepNamespaceKeys=false \
    --set "pins.extraNamespaces={$APP_NS}" --wait --timeout 180s)
  local dep; dep="$(kubectl -n "$CHART_NS" get deploy -l app.kubernetes.io/component=webhook -o jsonpath='{.items[0].metadata.name}')"
  run kubectl -n "$CHART_NS" rollout status deploy "$dep" --timeout 120s
  # Only the new replicas (with --pinset-key) may answer /validate.
  wait_for 90 "the old webhook replicas gone" sh -c \
    "[ \"\$(kubectl -n $CHART_NS get pods -l app.kubernetes.io/component=webhook -o name | wc -l)\" = 2 ]"
  check "the webhook runs with --pinset-key" sh -c \
    "kubectl -n $CHART_NS get deploy $dep -o jsonpath='{.spec.template.spec.containers[0].args}' | tr ',' '\n' | grep -- --pinset-key="
  check "... and gives sidecars the key with --pinset-key-inline" sh -c \
    "kubectl -n $CHART_NS get deploy $dep -o jsonpath='{.spec.template.spec.containers[0].args}' | tr ',' '\n' | grep -- --pinset-key-inline="
  run kubectl get validatingwebhookconfiguration -o custom-columns='NAME:.metadata.name,WEBHOOK:.webhooks[*].name,PATH:.webhooks[*].clientConfig.service.path,POLICY:.webhooks[*].failurePolicy,SELECTOR:.webhooks[*].objectSelector.matchLabels'
  helm get notes pinproxy -n "$CHART_NS" >"$d/notes.txt"
  check "the install notes give the signed update" contains "$d/notes.txt" "--from-file=pins.yaml.sig"
  check "... and do not call the operator's pinset the chart's default" sh -c "! grep -q \"chart's default\" $d/notes.txt"
  check "the key's ConfigMap in $CHART_NS holds pinset.pub" eq \
    "$(kubectl -n "$CHART_NS" get configmap pinproxy-pinset-key -o jsonpath='{.data.cosign\.pub}')" "$(cat "$d/pinset.pub")"
  check "no key ConfigMap in $APP_NS (nothing there for its editors to replace)" sh -c \
    "! kubectl -n $APP_NS get configmap pinproxy-pinset-key >/dev/null 2>&1"

  echo "--- an UNSIGNED pinset, labelled: the API server asks /validate"
  mkdir -p "$d/unsigned"
  { echo "serial: 1"; pins_yaml "$PIN_B"; } >"$d/unsigned/pins.yaml"
  cp "$E2E_RUN/world/ca.crt" "$d/unsigned/world-ca.pem"
  apply_pinset "$APP_NS" "$d/unsigned"
  check "kubectl apply exits non-zero" [ "$APPLY_RC" != 0 ]
  check "kubectl prints the webhook's refusal" contains "$d/unsigned/apply.err" \
    'admission webhook "pinsets.validate.pinproxy.io" denied the request: pinproxy: pins.yaml is not signed: the object has no pins.yaml.sig entry'
  check "no Secret was created" sh -c "! kubectl -n $APP_NS get secret pinproxy-pins >/dev/null 2>&1"

  echo "--- signed pinsets: v1 (serial 1: next.world.test pinned to A), v2 (serial 2: pinned to B)"
  signed_pins "$d/v1" 1 "$PIN_A"
  signed_pins "$d/v2" 2 "$PIN_B"
  apply_pinset "$APP_NS" "$d/v1"
  check "v1 (serial 1) accepted on CREATE" eq "$APPLY_RC" 0
  apply_pinset "$APP_NS" "$d/v2"
  check "v2 (serial 2) accepted on UPDATE" eq "$APPLY_RC" 0
  apply_pinset "$APP_NS" "$d/v1"
  check "v1 again (serial 1 < 2, validly signed) refused on UPDATE" [ "$APPLY_RC" != 0 ]
  check "the refusal says rollback" contains "$d/v1/apply.err" \
    'denied the request: pinproxy: serial 1 is lower than the serial in force (2): a rollback is refused'
  mkdir -p "$d/edited"; cp "$d/v2/"* "$d/edited/"
  sed -i 's/unlisted: deny/unlisted: allow/' "$d/edited/pins.yaml"
  echo "(edited: v2 with 'unlisted: allow', v2's signature kept)"
  apply_pinset "$APP_NS" "$d/edited"
  check "an edited v2 refused" [ "$APPLY_RC" != 0 ]
  check "the refusal says the signature does not verify" contains "$d/edited/apply.err" \
    "denied the request: pinproxy: pins.yaml is not signed by a trusted key (tried $key_id): signature does not verify"
  echo "(v1 again, dropping the label in the same update: the API server still sends it)"
  apply_pinset "$APP_NS" "$d/v1" -
  check "dropping the label does not let the rollback in" [ "$APPLY_RC" != 0 ]
  check "... refused as a rollback" contains "$d/v1/apply.err" 'a rollback is refused'
  check "the API server holds serial 2" eq "$(stored_serial "$APP_NS")" 2
  echo "webhook log:"
  kubectl -n "$CHART_NS" logs -l app.kubernetes.io/component=webhook --tail=-1 \
    | grep -E 'signed pinset admitted|pinset refused at admission' | cut -c1-400 || true

  echo "--- a pod injected now: the sidecar verifies the pinset with the key"
  run kubectl apply -f - <<YAML
apiVersion: v1
kind: Pod
metadata: {name: app, namespace: $APP_NS, labels: {app: app, pinproxy.io/inject: "true"}}
spec:
  containers:
    - name: app
      image: $APP_IMAGE
      imagePullPolicy: IfNotPresent
      command: ["sleep", "100000"]
YAML
  run kubectl -n "$APP_NS" wait --for=condition=Ready pod/app --timeout 120s
  kubectl -n "$APP_NS" get pod app -o json >"$d/pod.json"
  python3 - "$d/pod.json" "$d/pinset.pub" <<'PY'
import json, sys
spec = json.load(open(sys.argv[1]))["spec"]
side = [c for c in spec["initContainers"] if c["name"] == "pinproxy"][0]
args = side["args"]
env = {e["name"]: e.get("value") for e in side["env"]}
pem = env.get("PINPROXY_PINSET_KEY_PEM") or ""
print("sidecar env PINPROXY_PINSET_KEY_PEM:", pem.splitlines()[:1], "--state-dir:", "--state-dir" in args)
assert pem.strip() == open(sys.argv[2]).read().strip(), pem
assert "--pinset-key" not in args and "--state-dir" in args, args
names = [v["name"] for v in spec["volumes"]]
print("volumes:", names)
assert "pinproxy-pinset-key" not in names, names
mounts = {m["name"]: m["mountPath"] for m in side["volumeMounts"]}
print("state at", mounts["pinproxy-state"])
PY
  kubectl -n "$APP_NS" logs app -c pinproxy | grep -E 'signed pinset in force|pinset key' | cut -c1-400 || true
  echo '$ kubectl exec app -c app -- curl -s http://127.0.0.1:9901/pins'
  pins_json >"$d/pins.json"
  local want_sha; want_sha="$(sha256sum "$d/v2/pins.yaml" | cut -d' ' -f1)"
  python3 - "$d/pins.json" "$key_id" "$want_sha" <<'PY'
import json, sys
p = json.load(open(sys.argv[1]))
print("  /pins: serial", p["serial"], "signature", json.dumps(p["signature"]))
assert p["serial"] == 2, p["serial"]
assert p["signature"] == {"key": sys.argv[2], "serial": 2, "sha256": sys.argv[3]}, p["signature"]
PY
  echo '$ curl http://next.world.test/ (v2: pinned to B, served with B)'
  r="$(curl_code http://next.world.test/)"; echo "  -> $r"
  check "next.world.test under the signed v2: 200" eq "$r" 200
  echo '$ curl http://bad.world.test/ (pinned to A, served with B)'
  r="$(curl_code http://bad.world.test/)"; echo "  -> $r"
  check "wrong pin: 502 pin-mismatch" eq "$r" "502 pin-mismatch"
  echo '$ curl http://unlisted.world.test/'
  r="$(curl_code http://unlisted.world.test/)"; echo "  -> $r"
  check "unlisted host: 403 host-not-allowed" eq "$r" "403 host-not-allowed"

  echo "--- past admission: unlabel v2 (allowed: its content is judged), then v1 unlabelled (never sent)"
  apply_pinset "$APP_NS" "$d/v2" -
  check "v2 without the label: accepted" eq "$APPLY_RC" 0
  apply_pinset "$APP_NS" "$d/v1" -
  check "v1 unlabelled lands (the webhook never sees it)" eq "$APPLY_RC" 0
  check "the API server now holds serial 1" eq "$(stored_serial "$APP_NS")" 1
  # A pod update makes the kubelet sync the pod now, volumes included
  # (instead of its periodic resync, which scenario 3 measures).
  local t0; t0=$(date +%s)
  run kubectl -n "$APP_NS" annotate pod app e2e/resync="$t0"
  wait_for 120 "the sidecar to refuse the rollback" rollback_refused
  echo "sidecar: pinproxy_config_reloads_total{result=\"rollback\"} $(reloads rollback), $(( $(date +%s) - t0 )) s after the annotation"
  kubectl -n "$APP_NS" logs app -c pinproxy | grep -iE 'rollback' | tail -n 2 | cut -c1-400 || true
  pins_json >"$d/pins-after.json"
  python3 -c 'import json, sys; p = json.load(open(sys.argv[1])); print("  /pins: serial", p["serial"], "signature", json.dumps(p["signature"])); assert p["serial"] == 2' "$d/pins-after.json"
  r="$(curl_code http://next.world.test/)"; echo "curl http://next.world.test/ -> $r"
  check "v2 still in force in the sidecar: next.world.test 200" eq "$r" 200
}
