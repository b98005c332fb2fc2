#!/usr/bin/env python3
"""report.py RESULTS_DIR: one markdown table from a bench/run.sh run, then the issue-6 target checks.
Raw wrk outputs are parsed with the kit's own parser (/tmp/bench-peers/load/summarize.py); CPU/RSS come
from the kit-format resources.csv written by bench/wrk-bench.sh."""
import csv, glob, json, pathlib, statistics as st, sys
sys.path.insert(0, "/tmp/bench-peers/load"); from summarize import parse   # the kit's parser, unchanged

d = pathlib.Path(sys.argv[1]); med = st.median
def cells(prefix):
    rows = {}
    for rep in sorted(d.glob(prefix + "[0-9]*")):
        for row in csv.DictReader(open(rep / "resources.csv")):
            r = parse(row["tool"], (rep / f"{row['tool']}-{row['target']}.txt").read_text())
            wall = float(row["wall_s"])
            r["cpu_us"] = float(row["peer_cpu_s"]) / (r["rps"] * wall) * 1e6
            r["ucpu_us"] = float(row["upstream_cpu_s"]) / (r["rps"] * wall) * 1e6
            r["idle"] = int(row["idle_rss_kb"]) / 1024; r["max"] = int(row["max_rss_kb_under_load"]) / 1024
            r["newc"] = row["upstream_new_conns"]
            rows.setdefault(row["target"], []).append(r)
    return rows
main, pins = cells("rep"), cells("pins-rep")
J = lambda f: json.loads((d / f).read_text()) if (d / f).exists() else None
conn = {m: [J(f.name) for f in sorted(d.glob(f"connrate-{m}-rep*.json"))] for m in ("direct", "connect")}
idle, rel, stt, stc = J("idle10k.json"), J("reload.json"), J("startup.json"), J("startup-ca.json")
sizes = dict(l.split(None, 1) for l in (d / "sizes.txt").read_text().splitlines() if len(l.split()) == 2) if (d / "sizes.txt").exists() else {}
mib = lambda b: f"{int(b) / 2**20:.1f}" if str(b).isdigit() else "n/a"

cols = [("direct", "direct TLS (limit)"), ("pinproxy", "pinproxy 1 worker"), ("pinproxy2", "pinproxy 2 workers"),
        ("envoy", "Envoy 1.40 (SPKI pin)"), ("nginx", "nginx 1.22"), ("haproxy", "haproxy 2.6")]
def m(t, k, fmt="{:.2f}"):
    rs = main.get(t); return fmt.format(med([r[k] for r in rs])) if rs else "-"
def rps(t):
    rs = main.get(t)
    if not rs: return "-"
    v = [r["rps"] for r in rs]; return f"{med(v):,.0f} [{min(v):,.0f}–{max(v):,.0f}]"
rows = [("req/s, median [min–max]", [rps(t) for t, _ in cols]),
        ("p50 ms", [m(t, "p50") for t, _ in cols]),
        ("p99 ms", [m(t, "p99") for t, _ in cols]),
        ("proxy CPU µs/req", [m("direct", "ucpu_us", "{:.1f} (upstream)")] + [m(t, "cpu_us", "{:.1f}") for t, _ in cols[1:]]),
        ("upstream CPU µs/req", [m(t, "ucpu_us", "{:.1f}") for t, _ in cols]),
        ("idle RSS MiB (before load)", ["-"] + [m(t, "idle", "{:.1f}") for t, _ in cols[1:]]),
        ("max RSS under load MiB", ["-"] + [m(t, "max", "{:.1f}") for t, _ in cols[1:]]),
        ("non-2xx / socket errors", [",".join(sorted({r["bad"] for r in main.get(t, [])})) or "-" for t, _ in cols]),
        ("new upstream conns per run", ["/".join(r["newc"] for r in main.get(t, [])) for t, _ in cols])]
na = lambda: ["n/a"] * 4
if idle:
    rows.append(("fresh idle RSS MiB (started, no traffic yet)", ["-", f"{idle['rss_before_kb'] / 1024:.1f}", "-"] + ["see kit: 65.6 / 11.0 / 10.1"] + ["-"] * 2))
    rows.append(("RSS with 10,000 idle keep-alive client conns MiB", ["-", f"{idle['rss_with_idle_conns_kb'] / 1024:.1f} ({idle['connections']} conns, {idle['ok_200']}×200)", "-"] + ["not run"] * 3))
cm = {k: (med([x["conns_per_s"] for x in v]), med([x["server_cpu_us_per_conn"] for x in v]), med([x["p50_ms"] for x in v])) if v else None for k, v in conn.items()}
if cm["direct"] and cm["connect"]:
    rows.append(("new TLS conns/s, fresh client handshake each (direct vs CONNECT interception)",
                 [f"{cm['direct'][0]:,.0f}", f"{cm['connect'][0]:,.0f}", "-"] + ["n/a"] * 3))
    rows.append(("server CPU µs per new client TLS conn (upstream vs pinproxy)",
                 [f"{cm['direct'][1]:.0f} (upstream)", f"{cm['connect'][1]:.0f}", "-"] + ["n/a"] * 3))
    rows.append(("latency per new conn p50 ms", [f"{cm['direct'][2]:.2f}", f"{cm['connect'][2]:.2f}", "-"] + ["n/a"] * 3))
pm = {t: (med([r["rps"] for r in v]), med([r["cpu_us"] for r in v])) for t, v in pins.items()}
if "ppca" in pm and "ppten" in pm:
    rows.append(("fresh upstream handshake per req, req/s: 10 pins / CA-only (ratio)",
                 ["-", f"{pm['ppten'][0]:,.0f} / {pm['ppca'][0]:,.0f} ({pm['ppten'][0] / pm['ppca'][0]:.3f})", "-"] + ["n/a"] * 3))
    rows.append(("  same, pinproxy CPU µs/req: 10 pins / CA-only",
                 ["-", f"{pm['ppten'][1]:.1f} / {pm['ppca'][1]:.1f} ({pm['ppten'][1] / pm['ppca'][1]:.3f})", "-"] + ["n/a"] * 3))
if rel:
    rows.append(("`..data` swap → enforcement ms, median [min–max] of %d" % rel["swaps"],
                 ["-", f"{rel['median_ms']:.0f} [{rel['min_ms']:.0f}–{rel['max_ms']:.0f}]", "-"] + ["n/a"] * 3))
if stt:
    rows.append(("start → /readyz ms, median (with --ca-out)", ["-", f"{stt['median_ms']:.1f} ({stc['median_ms']:.1f})" if stc else f"{stt['median_ms']:.1f}", "-"] + ["n/a"] * 3))
if sizes:
    rows.append(("binary size MiB", ["-", f"{mib(sizes.get('pinproxy_bytes'))} ({mib(sizes.get('pinproxy_stripped_bytes'))} stripped)", "same",
                                     mib(sizes.get("envoy_bytes")), mib(sizes.get("nginx_bytes")) + " + libs", mib(sizes.get("haproxy_bytes")) + " + libs"]))
    rows.append(("container image MiB", ["-", mib(sizes.get("image_bytes")), "-", "-", "-", "-"]))
print(f"wrk -t2 -c50 keep-alive, HTTP/1.1 client side, medians of {len(next(iter(main.values()), []))} runs; all targets in one run.\n")
print("| measurement | " + " | ".join(c for _, c in cols) + " |")
print("|---|" + "---:|" * len(cols))
for name, vals in rows:
    print(f"| {name} | " + " | ".join(vals) + " |")

# ---- issue-6 targets --------------------------------------------------------------------------
def g(t, k): return med([r[k] for r in main[t]]) if t in main else None
out = []
def chk(name, val, limit, ok, ratio=""):
    out.append(f"| {name} | {val} | {limit} | {'met' if ok else '**not met**'} | {ratio} |")
pc = g("pinproxy", "cpu_us")
if pc:
    for peer, f in (("nginx", 0.7), ("haproxy", 0.7), ("envoy", 0.4)):
        pv = g(peer, "cpu_us"); chk(f"CPU µs/req ≤ {f}× {peer}", f"{pc:.1f} vs {pv:.1f}", f"≤ {f * pv:.1f}", pc <= f * pv, f"{pc / pv:.2f}×")
    best = max(("envoy", "nginx", "haproxy"), key=lambda t: g(t, "rps"))
    for t in ("pinproxy", "pinproxy2"):
        r = g(t, "rps"); chk(f"req/s ≥ 1.1× best peer ({best}) [{t}]", f"{r:,.0f} vs {g(best, 'rps'):,.0f}", f"≥ {1.1 * g(best, 'rps'):,.0f}", r >= 1.1 * g(best, "rps"), f"{r / g(best, 'rps'):.2f}×")
    p99, e99 = g("pinproxy", "p99"), g("envoy", "p99"); chk("p99 ≤ Envoy's", f"{p99:.2f} vs {e99:.2f} ms", f"≤ {e99:.2f}", p99 <= e99, f"{p99 / e99:.2f}×")
    if idle: chk("idle RSS ≤ 8 MiB (fresh, no traffic yet)", f"{idle['rss_before_kb'] / 1024:.1f} MiB", "≤ 8", idle["rss_before_kb"] / 1024 <= 8, f"{idle['rss_before_kb'] / 1024 / 8:.2f}× limit")
    chk("idle RSS ≤ 8 MiB (idle again after traffic)", f"{g('pinproxy', 'idle'):.1f} MiB", "≤ 8", g("pinproxy", "idle") <= 8, f"{g('pinproxy', 'idle') / 8:.2f}× limit")
    chk("RSS under 50-conn load ≤ 16 MiB", f"{g('pinproxy', 'max'):.1f} MiB", "≤ 16", g("pinproxy", "max") <= 16, f"{g('pinproxy', 'max') / 16:.2f}× limit")
if idle:
    v = idle["rss_with_idle_conns_kb"] / 1024; chk("RSS with 10k idle conns ≤ 64 MiB", f"{v:.1f} MiB", "≤ 64", v <= 64 and idle["connections"] == 10000, f"{v / 64:.2f}× limit")
if cm["direct"] and cm["connect"]:
    r = cm["connect"][1] / cm["direct"][1]
    chk("CONNECT per-handshake overhead ≤ 1.5× direct (server CPU/conn)", f"{cm['connect'][1]:.0f} vs {cm['direct'][1]:.0f} µs", "≤ 1.5×", r <= 1.5, f"{r:.2f}× (rate {cm['connect'][0] / cm['direct'][0]:.2f}×)")
if "ppca" in pm and "ppten" in pm:
    r = pm["ppten"][0] / pm["ppca"][0]; chk("10-pin vs CA-only handshake rate within 3%", f"{pm['ppten'][0]:,.0f} vs {pm['ppca'][0]:,.0f}/s", "≥ 0.97×", r >= 0.97, f"{r:.3f}× (CPU {pm['ppten'][1] / pm['ppca'][1]:.3f}×)")
if rel: chk("`..data` swap → enforcement median ≤ 300 ms", f"{rel['median_ms']:.0f} ms", "≤ 300", rel["median_ms"] <= 300, f"{rel['median_ms'] / 300:.2f}× limit")
if stt: chk("startup → /readyz ≤ 50 ms", f"{stt['median_ms']:.1f} ms" + (f" ({stc['median_ms']:.1f} with --ca-out)" if stc else ""), "≤ 50", max(stt["median_ms"], stc["median_ms"] if stc else 0) <= 50, f"{max(stt['median_ms'], stc['median_ms'] if stc else 0) / 50:.2f}× limit")
print("\nIssue-6 targets (same run):\n")
print("| target | measured | limit | status | ratio |\n|---|---|---|---|---|")
print("\n".join(out))
