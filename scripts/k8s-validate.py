#!/usr/bin/env python3
"""Offline checks for pinproxy's Kubernetes manifests (used by k8s-check.sh).

  k8s-validate.py [--kubernetes-version V[,V...]] FILE...
      Validate every document against the Kubernetes OpenAPI schemas shipped
      in the kubernetes-validate package, in strict mode (unknown fields are
      errors). Custom resources (PodMonitor, PrometheusRule, Certificate,
      Issuer) have no offline schema: they are listed and skipped, and the
      PrometheusRule groups are checked by --compare-rules instead.

  k8s-validate.py --compare-rules RULES FILE...
      Every PrometheusRule in FILEs must carry exactly the groups of the plain
      Prometheus rules file RULES.

  k8s-validate.py --write-rules
      Regenerate the PrometheusRule copies from deploy/prometheus/pinproxy-rules.yaml.

  k8s-validate.py --check-chart-defaults [--passthrough ENTRY]... FILE
      FILE is `helm template` of the chart without pins.content. Checks what
      docs/kubernetes.md promises of the defaults: the pins Secret holds the
      observing pinset (unlisted: allow, no hosts, the passthrough ENTRYs
      and the two cluster.local patterns, every entry a host pattern or a
      CIDR), and the webhook stays available with one replica down (at
      least two replicas spread over nodes, a PodDisruptionBudget with
      minAvailable 1 selecting them), and both injection webhooks fail
      closed while seeing only pods that asked (the label on the pod or
      its namespace; an annotation alone is never selected).

  k8s-validate.py --check-webhooks [--pod-opt-out allow|refuse] [--no-updates]
                  [--release-namespace NS] FILE
      FILE is a `helm template` of the chart. Which MutatingWebhookConfiguration
      entries the API server would call, worked out from their rules and
      selectors: a CREATE by exactly one entry for a pod that asked (its
      label, or its namespace's), by none for one that did not or that opts
      out (--pod-opt-out allow) and by the namespace entry for one that opts
      out in a labelled namespace (refuse, the webhook's --pod-opt-out=refuse
      set; the release namespace's own pods never); an UPDATE of an injected
      pod by exactly one entry whatever its namespace's labels, with the
      matchConditions (none with --no-updates: Kubernetes < 1.28).
"""
import argparse
import os
import sys

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CANONICAL = os.path.join(ROOT, "deploy/prometheus/pinproxy-rules.yaml")
BASE_RULE = os.path.join(ROOT, "deploy/base/prometheusrule.yaml")
CHART_RULES = os.path.join(ROOT, "charts/pinproxy/files/pinproxy-rules.yaml")

# Custom resources: no schema in kubernetes-validate. Skipped explicitly.
CRD_GROUPS = ("monitoring.coreos.com/", "cert-manager.io/")


def documents(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]


def name_of(doc):
    meta = doc.get("metadata") or {}
    return "%s/%s" % (doc.get("kind"), meta.get("name") or meta.get("generateName") or "?")


def validate(paths, versions):
    import kubernetes_validate
    from kubernetes_validate import utils as kv

    failures = checked = 0
    skipped = []
    for path in paths:
        rel = os.path.relpath(path, ROOT) if path.startswith(ROOT) else path
        try:
            docs = documents(path)
        except yaml.YAMLError as e:
            print("ERROR %s: not YAML: %s" % (rel, e))
            failures += 1
            continue
        for doc in docs:
            if not isinstance(doc, dict) or "apiVersion" not in doc or "kind" not in doc:
                print("ERROR %s: a document without apiVersion/kind" % rel)
                failures += 1
                continue
            if doc["apiVersion"].startswith(CRD_GROUPS):
                skipped.append("%s %s (%s)" % (rel, name_of(doc), doc["apiVersion"]))
                continue
            for version in versions:
                try:
                    kubernetes_validate.validate(doc, version, strict=True)
                    checked += 1
                except kv.ValidationError as e:
                    where = ".".join(str(p) for p in e.path)
                    print("ERROR %s: %s against Kubernetes %s: %s: %s"
                          % (rel, name_of(doc), e.version, where, e.message))
                    failures += 1
                except kv.SchemaNotFoundError as e:
                    print("ERROR %s: %s: %s" % (rel, name_of(doc), e.message))
                    failures += 1
    for s in skipped:
        print("SKIP  %s: custom resource, no offline schema" % s)
    print("validated %d document(s) x version(s) [%s] in %d file(s); %d skipped; %d error(s)"
          % (checked, ", ".join(versions), len(paths), len(skipped), failures))
    return failures == 0


def rule_groups(path):
    with open(path) as f:
        return yaml.safe_load(f)["groups"]


def compare_rules(canonical, paths):
    want = rule_groups(canonical)
    ok, found = True, 0
    for path in paths:
        for doc in documents(path):
            if doc.get("kind") != "PrometheusRule":
                continue
            found += 1
            if doc.get("spec", {}).get("groups") != want:
                print("ERROR %s: %s differs from %s (run scripts/k8s-validate.py --write-rules)"
                      % (path, name_of(doc), os.path.relpath(canonical, ROOT)))
                ok = False
            else:
                print("OK    %s: %s matches" % (os.path.relpath(path, ROOT) if path.startswith(ROOT) else path,
                                               name_of(doc)))
    if found < len(paths):
        print("ERROR expected a PrometheusRule in each of %d file(s), found %d" % (len(paths), found))
        ok = False
    return ok


def check_chart_defaults(path, want_passthrough):
    import ipaddress
    import re

    docs = documents(path)
    errors = []

    def one(kind, pred=lambda d: True):
        found = [d for d in docs if d.get("kind") == kind and pred(d)]
        if len(found) != 1:
            errors.append("want one %s, found %d" % (kind, len(found)))
            return {}
        return found[0]

    # The observing default pinset.
    secret = one("Secret", lambda d: "pins.yaml" in (d.get("stringData") or {}))
    pins = yaml.safe_load((secret.get("stringData") or {}).get("pins.yaml") or "{}") or {}
    defaults = pins.get("defaults") or {}
    if pins.get("version") != 1:
        errors.append("pinset: version is %r, not 1" % pins.get("version"))
    if defaults.get("unlisted") != "allow":
        errors.append("pinset: defaults.unlisted is %r, not allow (it would block)" % defaults.get("unlisted"))
    if pins.get("hosts") != {}:
        errors.append("pinset: hosts is %r, not {} (nothing pinned)" % pins.get("hosts"))
    if set(pins) - {"version", "defaults", "passthrough", "hosts"}:
        errors.append("pinset: unexpected keys %s" % sorted(set(pins) - {"version", "defaults", "passthrough", "hosts"}))
    passthrough = pins.get("passthrough")
    if not isinstance(passthrough, list):
        errors.append("pinset: passthrough is %r, not a list" % passthrough)
        passthrough = []
    host = re.compile(r"^(\*\*?\.)?[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    for entry in passthrough:
        try:
            ipaddress.ip_network(entry, strict=True)
            continue
        except ValueError:
            pass
        if not isinstance(entry, str) or not host.match(entry):
            errors.append("pinset: passthrough entry %r is neither a host pattern nor a CIDR" % entry)
    for want in ["**.svc.cluster.local", "**.cluster.local"] + want_passthrough:
        if want not in passthrough:
            errors.append("pinset: passthrough lacks %r (has %r)" % (want, passthrough))

    # The webhook survives one replica down.
    deploy = one("Deployment", lambda d: d["metadata"]["name"].endswith("-webhook"))
    spec = deploy.get("spec") or {}
    pod_labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
    if (spec.get("replicas") or 0) < 2:
        errors.append("webhook: %r replicas, want at least 2" % spec.get("replicas"))
    spread = ((spec.get("template") or {}).get("spec") or {}).get("topologySpreadConstraints") or []
    if not any(c.get("topologyKey") == "kubernetes.io/hostname" for c in spread):
        errors.append("webhook: replicas are not spread over nodes")
    pdb = one("PodDisruptionBudget")
    if (pdb.get("spec") or {}).get("minAvailable") != 1:
        errors.append("webhook PDB: minAvailable is %r, want 1" % (pdb.get("spec") or {}).get("minAvailable"))
    selector = (((pdb.get("spec") or {}).get("selector") or {}).get("matchLabels")) or {}
    if not selector or any(pod_labels.get(k) != v for k, v in selector.items()):
        errors.append("webhook PDB: selector %r does not select the webhook pods %r" % (selector, pod_labels))
    mwc = one("MutatingWebhookConfiguration")
    hooks = {w["name"]: w for w in mwc.get("webhooks") or []}
    policies = {n: w.get("failurePolicy") for n, w in hooks.items()}
    if policies != {"pods.inject.pinproxy.io": "Fail", "namespaces.inject.pinproxy.io": "Fail",
                    "updates.inject.pinproxy.io": "Fail"}:
        errors.append("webhook failure policies are %r, want Fail for all three" % policies)
    # Fail is safe only because each webhook sees nothing but pods that
    # asked: the label on the pod, or the label on its namespace.
    pods = hooks.get("pods.inject.pinproxy.io") or {}
    asked = {"pinproxy.io/inject": "true"}
    for labels, want in [(asked, True), ({}, False), ({"pinproxy.io/inject": "false"}, False),
                         ({"app": "x"}, False)]:
        if selects(pods.get("objectSelector"), labels) != want:
            errors.append("pods webhook: objectSelector %s pod labels %r"
                          % ("misses" if want else "selects", labels))
    for ns, want in [({"kubernetes.io/metadata.name": "shop"}, True),
                     ({"kubernetes.io/metadata.name": "kube-system"}, False),
                     ({"kubernetes.io/metadata.name": "shop", "pinproxy.io/inject": "enabled"}, False)]:
        if selects(pods.get("namespaceSelector"), ns) != want:
            errors.append("pods webhook: namespaceSelector %s namespace %r"
                          % ("misses" if want else "selects", ns))
    nss = hooks.get("namespaces.inject.pinproxy.io") or {}
    enabled = {"kubernetes.io/metadata.name": "shop", "pinproxy.io/inject": "enabled"}
    if not selects(nss.get("namespaceSelector"), enabled) or selects(nss.get("namespaceSelector"), {}):
        errors.append("namespaces webhook: namespaceSelector does not select exactly labelled namespaces")
    if selects(nss.get("objectSelector"), {"pinproxy.io/inject": "false"}) or not selects(nss.get("objectSelector"), {}):
        errors.append("namespaces webhook: objectSelector must select every pod but those opted out")

    for e in errors:
        print("ERROR %s: %s" % (path, e))
    if not errors:
        print("OK    %s: observing default pinset (passthrough %s); webhook %d replicas, PDB minAvailable 1"
              % (path, ", ".join(passthrough), spec.get("replicas")))
    return not errors


def check_webhooks(path, pod_opt_out, updates, release_ns):
    docs = documents(path)
    errors = []
    mwcs = [d for d in docs if d.get("kind") == "MutatingWebhookConfiguration"]
    if len(mwcs) != 1:
        print("ERROR %s: want one MutatingWebhookConfiguration, found %d" % (path, len(mwcs)))
        return False
    hooks = mwcs[0].get("webhooks") or []

    def ops(w):
        return {o for r in w.get("rules") or [] for o in r.get("operations") or []}

    def called(op, ns_labels, pod_labels):
        return sorted(w["name"] for w in hooks
                      if op in ops(w) and selects(w.get("namespaceSelector"), ns_labels)
                      and selects(w.get("objectSelector"), pod_labels))

    def ns(name, **labels):
        return dict(labels, **{"kubernetes.io/metadata.name": name})

    labelled = ns("shop", **{"pinproxy.io/inject": "enabled"})
    plain = ns("other")
    pods, nss, upd = "pods.inject.pinproxy.io", "namespaces.inject.pinproxy.io", "updates.inject.pinproxy.io"
    optout = "refuse" == pod_opt_out
    # CREATE: who injects what.
    for where, labels, want in [
        (labelled, {}, [nss]),
        (labelled, {"pinproxy.io/inject": "true"}, [nss]),
        (labelled, {"pinproxy.io/inject": "false"}, [nss] if optout else []),
        (plain, {"pinproxy.io/inject": "true"}, [pods]),
        (plain, {}, []),
        (plain, {"pinproxy.io/inject": "false"}, []),
        (ns("kube-system"), {"pinproxy.io/inject": "true"}, []),
        # The webhook's own pods (pinproxy.io/inject: "false"), were its
        # namespace labelled: never sent to themselves.
        (ns(release_ns, **{"pinproxy.io/inject": "enabled"}), {"pinproxy.io/inject": "false"}, []),
    ]:
        got = called("CREATE", where, labels)
        if got != want:
            errors.append("CREATE of a pod labelled %r in namespace %r calls %r, want %r" % (labels, where, got, want))
    # UPDATE: every injected pod, by one entry, whatever its namespace says
    # now (the label removed from a labelled namespace); nothing else.
    injected = {"pinproxy.io/injected": "true"}
    for where in [labelled, ns("shop"), plain, ns("kube-system")]:
        for labels, want in [
            (injected, [upd] if updates else []),
            (dict(injected, **{"pinproxy.io/inject": "true"}), [upd] if updates else []),
            ({"pinproxy.io/inject": "true"}, []),
            ({}, []),
        ]:
            got = called("UPDATE", where, labels)
            if got != want:
                errors.append("UPDATE of a pod labelled %r in namespace %r calls %r, want %r" % (labels, where, got, want))
    byname = {w["name"]: w for w in hooks}
    if updates:
        u = byname.get(upd) or {}
        res = sorted(r for rule in u.get("rules") or [] for r in rule.get("resources") or [])
        if res != ["pods", "pods/ephemeralcontainers", "pods/status"]:
            errors.append("%s: resources %r" % (upd, res))
        exprs = [c.get("expression", "") for c in u.get("matchConditions") or []]
        if len(exprs) != 1 or "pinproxy.io/" not in exprs[0] or "ephemeralcontainers" not in exprs[0]:
            errors.append("%s: matchConditions %r" % (upd, exprs))
        if (u.get("clientConfig") or {}).get("service", {}).get("path") != "/inject":
            errors.append("%s: path is not /inject" % upd)
        if u.get("reinvocationPolicy") != "IfNeeded":
            errors.append("%s: reinvocationPolicy %r" % (upd, u.get("reinvocationPolicy")))
        creating = [w.get("failurePolicy") for n, w in byname.items() if n != upd]
        want = "Fail" if "Fail" in creating else "Ignore"
        if u.get("failurePolicy") != want:
            errors.append("%s: failurePolicy %r, want %r (the CREATE entries: %r)" % (upd, u.get("failurePolicy"), want, creating))
    for n, w in byname.items():
        if n != upd and (ops(w) != {"CREATE"} or w.get("matchConditions")):
            errors.append("%s: operations %r, matchConditions %r: want CREATE only" % (n, sorted(ops(w)), w.get("matchConditions")))
    args = [a for d in docs if d.get("kind") == "Deployment"
            for c in d["spec"]["template"]["spec"]["containers"] if (c.get("args") or [""])[0] == "webhook"
            for a in c["args"]]
    if ("--pod-opt-out=refuse" in args) != optout:
        errors.append("webhook args %r, want --pod-opt-out=refuse %s" % (args, "set" if optout else "unset"))
    for e in errors:
        print("ERROR %s: %s" % (path, e))
    if not errors:
        print("OK    %s: %s; pod opt-out %s" % (path, ", ".join(
            "%s %s" % (w["name"], "/".join(sorted(ops(w)))) for w in hooks), pod_opt_out))
    return not errors


def selects(selector, labels):
    """A Kubernetes LabelSelector applied to `labels` (absent: everything)."""
    selector = selector or {}
    for k, v in (selector.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for e in selector.get("matchExpressions") or []:
        key, op, values = e["key"], e["operator"], e.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and key in labels and labels[key] in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def write_rules():
    with open(CANONICAL) as f:
        text = f.read()
    body = "".join(l for l in text.splitlines(True) if not l.startswith("#")).lstrip("\n")
    header = ("# GENERATED from deploy/prometheus/pinproxy-rules.yaml by\n"
              "# `python3 scripts/k8s-validate.py --write-rules`. Do not edit by hand.\n")
    with open(BASE_RULE, "w") as f:
        f.write(header)
        f.write("apiVersion: monitoring.coreos.com/v1\nkind: PrometheusRule\nmetadata:\n"
                "  name: pinproxy\n  labels:\n    app.kubernetes.io/name: pinproxy\nspec:\n")
        f.write("".join("  " + l if l.strip() else l for l in body.splitlines(True)))
    os.makedirs(os.path.dirname(CHART_RULES), exist_ok=True)
    with open(CHART_RULES, "w") as f:
        f.write(header)
        f.write(body)
    print("wrote %s and %s" % (os.path.relpath(BASE_RULE, ROOT), os.path.relpath(CHART_RULES, ROOT)))


def extract_pinset(path):
    """Prints the pins.yaml a rendering's pins Secret holds."""
    for doc in yaml.safe_load_all(open(path)):
        if doc and doc.get("kind") == "Secret" and "pins.yaml" in (doc.get("stringData") or {}):
            sys.stdout.write(doc["stringData"]["pins.yaml"])
            return True
    print("no pins Secret in %s" % path, file=sys.stderr)
    return False


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kubernetes-version", default="1.29.0,1.33.0",
                    help="comma-separated Kubernetes versions to validate against")
    ap.add_argument("--compare-rules", metavar="RULES")
    ap.add_argument("--write-rules", action="store_true")
    ap.add_argument("--check-chart-defaults", action="store_true")
    ap.add_argument("--passthrough", action="append", default=[])
    ap.add_argument("--check-webhooks", action="store_true")
    ap.add_argument("--pod-opt-out", choices=["allow", "refuse"], default="allow")
    ap.add_argument("--no-updates", action="store_true")
    ap.add_argument("--release-namespace", default="pinproxy-system")
    ap.add_argument("--extract-pinset", action="store_true",
                    help="print the pins.yaml of FILE's pins Secret")
    ap.add_argument("files", nargs="*")
    args = ap.parse_args()
    if args.write_rules:
        write_rules()
        return 0
    if not args.files:
        ap.error("no files")
    if args.extract_pinset:
        return 0 if all([extract_pinset(f) for f in args.files]) else 1
    if args.check_webhooks:
        return 0 if all([check_webhooks(f, args.pod_opt_out, not args.no_updates, args.release_namespace)
                         for f in args.files]) else 1
    if args.check_chart_defaults:
        return 0 if all([check_chart_defaults(f, args.passthrough) for f in args.files]) else 1
    if args.compare_rules:
        return 0 if compare_rules(args.compare_rules, args.files) else 1
    versions = [v.strip() for v in args.kubernetes_version.split(",") if v.strip()]
    return 0 if validate(args.files, versions) else 1


if __name__ == "__main__":
    sys.exit(main())
