#!/usr/bin/env python3
"""report.py RESULTS_DIR [RESULTS_DIR ...]: every table of one bench/run.sh run, then the target verdicts.
With several directories (runs on other machines or days), every cell and every target is computed over the
repetitions of all of them together: a target is "met" only when every repetition of every run meets it.

Inputs (all written by that one run): runs.jsonl (bench/load.py, one record per load run; the allocator's
committed bytes beside idle RSS for pinproxy targets), and per repetition
idle10k-{served,silent}-repN.json, connrate-*-repN.json, reload-repN.json, startup[-ca]-repN.json; sizes.txt, machine.txt, background.txt.

A target measured in parts inside one repetition (the handshake pairs, run A B B A) counts as one run: its
parts' CPU, requests and time summed. Cells are median [min–max] over the repetitions. Ratios are PER-REPETITION PAIRED: targets ran interleaved,
so repetition i of A is compared with repetition i of B (measured seconds apart, under the same background
load); a ratio row shows the median [min–max] of those per-rep ratios. A verdict is "met" only when the
whole range is on the right side of the target, "not met" when the whole range is on the wrong side, and
"undecided (range straddles target)" otherwise. Absolute limits (MiB, ms) are judged the same way on the
range of the measured values."""
import json, pathlib, statistics as st, sys

DIRS = [pathlib.Path(a) for a in sys.argv[1:]]
if not DIRS: sys.exit("usage: report.py RESULTS_DIR [RESULTS_DIR ...]")
d = DIRS[0]
runs = []
for k, dd in enumerate(DIRS):   # repetition r of run k becomes k*1000 + r: pairs stay inside one run
    for l in ((dd / "runs.jsonl").read_text().splitlines() if (dd / "runs.jsonl").exists() else []):
        if l.strip():
            rec = json.loads(l); rec["rep"] = k * 1000 + rec["rep"]; runs.append(rec)


def merge(parts):
    """One record from the runs of one (rep, workload, target) measured in parts (run.sh's A B B A pairs):
    CPU, requests and time summed, so the per-request figures are those of all parts together."""
    if len(parts) == 1:
        return parts[0]
    ok = [r for r in parts if not r.get("stalled") and r.get("requests")]
    if len(ok) < len(parts):   # a part without figures: the target has none for this repetition
        return dict(parts[0], stalled=True)
    n = sum(r["requests"] for r in ok); t = sum(r["interval_s"] for r in ok)
    w = lambda k: sum(r[k] * r["requests"] for r in ok) / n if all(r.get(k) is not None for r in ok) else None
    out = dict(ok[0], parts=len(ok), requests=n, interval_s=t, proxy_cpu_s=sum(r["proxy_cpu_s"] for r in ok),
               rps=sum(r["rps"] * r["interval_s"] for r in ok) / t, p50=w("p50"), p99=w("p99"),
               upstream_cpu_us=w("upstream_cpu_us"), bad=sum(r.get("bad") or 0 for r in ok),
               foreign_cpu_pct=max(r.get("foreign_cpu_pct") or 0 for r in ok),
               max_rss_kb=max(r.get("max_rss_kb") or 0 for r in ok), rss_after_kb=ok[-1].get("rss_after_kb"))
    out["cpu_us"] = out["proxy_cpu_s"] / n * 1e6
    return out


groups = {}
for rec in runs:
    groups.setdefault((rec["rep"], rec["workload"], rec["target"]), []).append(rec)
runs = [merge(g) for g in groups.values()]
REPS = sorted({r["rep"] for r in runs})
J = lambda f: json.loads((d / f).read_text()) if (d / f).exists() else None
def reps_of(pattern): return [json.loads(p.read_text()) for dd in DIRS for p in sorted(dd.glob(pattern), key=lambda p: int(p.stem.rsplit("rep", 1)[1]))]


def val(w, t, k, rep):
    for r in runs:
        if r["workload"] == w and r["target"] == t and r["rep"] == rep and not r.get("stalled"):
            v = r.get(k)
            return None if v is None else float(v)
    return None


def series(w, t, k): return [v for v in (val(w, t, k, i) for i in REPS) if v is not None]
def rng(vs, f="{:.1f}"):
    if not vs: return "-"
    return f"{f.format(st.median(vs))} [{f.format(min(vs))}–{f.format(max(vs))}]" if len(vs) > 1 else f.format(vs[0])


def paired(fa, fb):
    """per-rep ratios fa(rep)/fb(rep) where both exist"""
    out = []
    for i in REPS:
        a, b = fa(i), fb(i)
        if a is not None and b not in (None, 0):
            out.append(a / b)
    return out


def mn(*xs): xs = [x for x in xs if x is not None]; return min(xs) if xs else None
def mx(*xs): xs = [x for x in xs if x is not None]; return max(xs) if xs else None


def verdict(vs, op, limit):
    if not vs: return "no data"
    lo, hi = min(vs), max(vs)
    if op == "<=":
        return "met" if hi <= limit else "**not met**" if lo > limit else "undecided (range straddles target)"
    return "met" if lo >= limit else "**not met**" if hi < limit else "undecided (range straddles target)"


# ---- header -------------------------------------------------------------------------------------------
for k, dd in enumerate(DIRS):
    if len(DIRS) > 1: print(f"    run {k + 1}: {dd}")
    for f in ("machine.txt", "background.txt"):
        if (dd / f).exists():
            print("\n".join("    " + l for l in (dd / f).read_text().splitlines()))
print()
if len(DIRS) > 1:
    print(f"{len(REPS)} repetitions from {len(DIRS)} runs, all targets interleaved inside each repetition. Cells: median [min–max] over the repetitions of all runs.")
else:
    print(f"{len(REPS)} repetitions, all targets interleaved inside each (one run). Cells: median [min–max] over repetitions.")
print("CPU µs/req: utime+stime of the proxy's process tree over the measured interval / requests completed in it.")
print("foreign CPU: what other processes used on the machine during the run, % of all cores.\n")

COMMON = [("req/s", "rps", "{:,.0f}"), ("p50 ms", "p50", "{:.2f}"), ("p99 ms", "p99", "{:.2f}"),
          ("proxy CPU µs/req", "cpu_us", "{:.1f}"), ("upstream CPU µs/req", "upstream_cpu_us", "{:.1f}")]
MEM = [("idle RSS MiB before the run", "idle_rss_kb"), ("max RSS MiB under load", "max_rss_kb"),
       ("RSS MiB idle again, settle after the run", "rss_after_kb")]


def table(title, w, cols, relay=False):
    cols = [(t, n) for t, n in cols if any(r["workload"] == w and r["target"] == t for r in runs) or n.endswith("n/a")]
    if not cols: return
    print(f"### {title}\n")
    print("| measurement | " + " | ".join(n for _, n in cols) + " |")
    print("|---|" + "---:|" * len(cols))
    def row(name, f):
        print(f"| {name} | " + " | ".join(f(t) if not n.endswith("n/a") else "n/a" for t, n in cols) + " |")
    for name, k, f in COMMON:
        row(name, lambda t, k=k, f=f: (rng(series(w, t, k), f) + (" (upstream)" if t == "direct" and k == "cpu_us" else "")))
    if relay:
        row("connect-relay CPU µs/req (not in proxy CPU)", lambda t: rng(series(w, t, "relay_cpu_us")))
    for name, k in MEM:
        row(name, lambda t, k=k: "-" if t == "direct" else rng([v / 1024 for v in series(w, t, k)]))
    row("errors (non-2xx, socket) / stalled runs", lambda t: f"{int(sum(series(w, t, 'bad')))} / "
        f"{sum(1 for r in runs if r['workload'] == w and r['target'] == t and r.get('stalled'))}")
    row("new upstream conns per run", lambda t: "/".join(str(r.get("upstream_new_conns")) for r in runs if r["workload"] == w and r["target"] == t))
    row("foreign CPU % during the run", lambda t: rng(series(w, t, "foreign_cpu_pct"), "{:.0f}"))
    print()


table("Forward path: wrk -t2 -c50 keep-alive, absolute-form GET http://api.local/ (HTTP/1.1 client side)", "fwd",
      [("direct", "direct TLS (limit)"), ("pinproxy", "pinproxy 1 worker"), ("pph1", "pinproxy 1 worker, h1 upstream"),
       ("pinproxyN", "pinproxy N workers"), ("envoy", "Envoy (SPKI pin)"), ("nginx", "nginx"), ("haproxy", "haproxy")])
CONN = [("direct", "direct via relay (limit)"), ("pinproxy", "pinproxy 1 worker"), ("pinproxyN", "pinproxy N workers"),
        ("squid", "squid ssl_bump"), ("mitm", "mitmproxy"), ("pptransparent", "pinproxy transparent")]
table("CONNECT api.local:443 intercepted, HTTP/1.1 inside: h2load --h1 -c50 -t2 through bench/connect-relay", "connect-h1", CONN, relay=True)
table("CONNECT api.local:443 intercepted, h2 inside: h2load -c10 -m100 -t1 through bench/connect-relay", "connect-h2",
      [c if c[0] != "squid" else ("squid", "squid: n/a") for c in CONN], relay=True)
if not any(r["target"] == "pptransparent" for r in runs):
    print("pinproxy transparent: not measured (bench/run.sh could not install its REDIRECT rule: it needs root and iptables).\n")

# ---- pinproxy-only rows ----------------------------------------------------------------------------------
served, silent = reps_of("idle10k-served-rep*.json"), reps_of("idle10k-silent-rep*.json")
cd, cc = reps_of("connrate-direct-rep*.json"), reps_of("connrate-connect-rep*.json")
rel, stt, stc = reps_of("reload-rep*.json"), reps_of("startup-rep*.json"), reps_of("startup-ca-rep*.json")
sizes = dict(l.split(None, 1) for l in (d / "sizes.txt").read_text().splitlines() if len(l.split()) == 2) if (d / "sizes.txt").exists() else {}
mib = lambda b: f"{int(b) / 2**20:.1f}" if str(b).isdigit() else "n/a"
print("### pinproxy only\n\n| measurement | value |\n|---|---:|")
if served:
    print(f"| fresh idle RSS MiB (started, no traffic yet) | {rng([x['rss_before_kb'] / 1024 for x in served + silent])} |")
    print(f"| RSS MiB, idle keep-alive conns that served one request (10,000 opened; those held: below) | {rng([x['rss_with_idle_conns_kb'] / 1024 for x in served])} "
          f"({min(x['connections'] for x in served)}–{max(x['connections'] for x in served)} conns, {min(x['ok_200'] for x in served)}+ × 200) |")
    held = [x["held_at_1s"] for x in served + silent if x.get("held_at_1s") is not None]   # absent in older runs
    if held and min(held) < min(x["connections"] for x in served + silent):
        # the rest refused (503, closed): over --max-connections, lowered to what the open-files limit carries
        print(f"| connections the proxy held at +1 s (of {served[0]['connections']} opened; per-connection KiB is over these) | {rng(held, '{:.0f}')} |")
    print(f"| RSS MiB, idle conns that never spoke (10,000 opened) | {rng([x['rss_with_idle_conns_kb'] / 1024 for x in silent])} |")
    print(f"| per-connection KiB: served one request / never spoke | {rng([x['per_conn_kib'] for x in served], '{:.2f}')} / {rng([x['per_conn_kib'] for x in silent], '{:.2f}')} |")
    # the allocator's committed bytes beside those RSS figures (idle10k.py --admin; absent in older runs)
    heap = lambda xs, at, k="committed_kb": [h[k] / 1024 for h in ((x.get("allocator_at") or {}).get(at) if at else x.get("allocator_before") for x in xs) if h and k in h]
    if heap(served + silent, None):
        print(f"|   allocator committed MiB: fresh / served at +1 s / never spoke at +1 s | {rng(heap(served + silent, None))} / {rng(heap(served, '1s'))} / {rng(heap(silent, '1s'))} |")
        print(f"|   allocator committed peak MiB, served / never spoke | {rng(heap(served, '1s', 'committed_peak_kb'))} / {rng(heap(silent, '1s', 'committed_peak_kb'))} |")
for w in ("fwd", "connect-h1", "connect-h2"):
    if series(w, "pinproxy", "committed_after_kb"):   # load.py --admin-port (absent in older runs)
        print(f"| {w}, 1 worker: idle RSS MiB before / after the run; allocator committed MiB before / after | "
              f"{rng([v / 1024 for v in series(w, 'pinproxy', 'idle_rss_kb')])} / {rng([v / 1024 for v in series(w, 'pinproxy', 'rss_after_kb')])}; "
              f"{rng([v / 1024 for v in series(w, 'pinproxy', 'idle_committed_kb')])} / {rng([v / 1024 for v in series(w, 'pinproxy', 'committed_after_kb')])} |")
if cd and cc:
    print(f"| new TLS conns/s, fresh client handshake each: direct / CONNECT interception | {rng([x['conns_per_s'] for x in cd], '{:,.0f}')} / {rng([x['conns_per_s'] for x in cc], '{:,.0f}')} |")
    print(f"| server CPU µs per new client TLS conn: upstream (direct) / pinproxy (CONNECT) | {rng([x['server_cpu_us_per_conn'] for x in cd], '{:.0f}')} / {rng([x['server_cpu_us_per_conn'] for x in cc], '{:.0f}')} |")
print(f"| fresh upstream handshake per req (wrk -c16 via :8445), req/s: 10 pins / CA-only | {rng(series('pins', 'ppten', 'rps'), '{:,.0f}')} / {rng(series('pins', 'ppca', 'rps'), '{:,.0f}')} |")
print(f"|   same, pinproxy CPU µs/req: 10 pins / CA-only | {rng(series('pins', 'ppten', 'cpu_us'))} / {rng(series('pins', 'ppca', 'cpu_us'))} |")
if series('ct', 'ppctenf', 'rps'):
    print(f"| fresh upstream handshake per req (wrk -c16 via :8446, leaf with 3 SCTs), req/s: ct: enforce / ct: off | {rng(series('ct', 'ppctenf', 'rps'), '{:,.0f}')} / {rng(series('ct', 'ppctoff', 'rps'), '{:,.0f}')} |")
    print(f"|   same, pinproxy CPU µs/req: ct: enforce / ct: off | {rng(series('ct', 'ppctenf', 'cpu_us'))} / {rng(series('ct', 'ppctoff', 'cpu_us'))} |")
if rel: print(f"| `..data` swap → enforcement ms: per-rep median of {rel[0]['swaps']} swaps, median [min–max] over reps; slowest single swap | {rng([x['median_ms'] for x in rel], '{:.0f}')}; {max(x['max_ms'] for x in rel):.0f} |")
if stt: print(f"| start → /readyz ms: per-rep median of {stt[0]['starts']} starts, median [min–max] over reps; with --ca-out | {rng([x['median_ms'] for x in stt])}" + (f"; {rng([x['median_ms'] for x in stc])}" if stc else "") + f"; slowest single start {max(x['max_ms'] for x in stt + stc):.1f} |")
if sizes:
    print(f"| binary MiB: pinproxy (stripped) / Envoy / nginx / haproxy / squid (the last three + shared libs) | {mib(sizes.get('pinproxy_bytes'))} ({mib(sizes.get('pinproxy_stripped_bytes'))}) / "
          f"{mib(sizes.get('envoy_bytes'))} / {mib(sizes.get('nginx_bytes'))} / {mib(sizes.get('haproxy_bytes'))} / {mib(sizes.get('squid_bytes'))} |")
print()

# ---- the image's static binary beside this one (bench/after-load.sh, after the repetitions) --------------
al = {}
for dd in DIRS:
    f = dd / "after-load.txt"
    for line in (f.read_text().splitlines()[1:] if f.exists() else []):
        parts = line.split()
        if len(parts) == 5:
            al.setdefault((pathlib.Path(parts[0]).name, parts[1]), []).append([float(x) for x in parts[2:]])
if al:
    print("### The image's static binary (x86_64-unknown-linux-musl) beside this build: bench/after-load.sh\n")
    print("RSS MiB (median anonymous + file-backed in brackets): fresh (1 s after /readyz), then 2 s after each 5 s load, in this")
    print("order, one fresh instance per round, the two binaries alternated; median [min–max] over rounds.\n")
    whens = [("fresh", "fresh"), ("fwd", "forward"), ("c-h1", "CONNECT h1"), ("c-h2", "CONNECT h2"), ("fwd2", "forward again")]
    print("| binary | " + " | ".join(w[1] for w in whens) + " | last − fresh |\n|---|" + "---:|" * (len(whens) + 1))
    for name, label in (("pinproxy-gnu", "this build (gnu, what the tables above measure)"), ("pinproxy-image", "the image's (static musl)")):
        if (name, "fresh") not in al:
            continue
        cell = lambda w: (f"{rng([x[2] for x in al[(name, w)]])} ({st.median(x[0] for x in al[(name, w)]):.1f} + "
                          f"{st.median(x[1] for x in al[(name, w)]):.1f})" if (name, w) in al else "n/a")
        growth = [b[2] - a[2] for a, b in zip(al[(name, "fresh")], al.get((name, "fwd2"), []))]
        print(f"| {label} | " + " | ".join(cell(w) for w, _ in whens) + f" | {rng(growth) if growth else 'n/a'} |")
    print()

# ---- targets ---------------------------------------------------------------------------------------------
V = lambda w, t, k: (lambda i: val(w, t, k, i))
rows = []
def foreign(*wts):
    """per rep, the highest foreign CPU % among the runs a ratio reads: how disturbed that pair was"""
    per = [mx(*(val(w, t, "foreign_cpu_pct", i) for w, t in wts)) for i in REPS]
    per = [p for p in per if p is not None]
    return f"foreign CPU {rng(per, '{:.0f}')} %" if per else ""


def chk(name, vs, op, limit, unit="×", note="", fg=()):
    f = "{:.2f}" if unit == "×" else "{:.1f}"
    note = "; ".join(x for x in (note, foreign(*fg) if fg else "") if x)
    rows.append(f"| {name} | {rng(vs, f)}{unit if unit == '×' else ' ' + unit} (n={len(vs)}) | {op.replace('<=', '≤').replace('>=', '≥')} {limit}{unit if unit == '×' else ' ' + unit} | {verdict(vs, op, limit)} | {note} |")

best_fwd_cpu = lambda i: mn(val("fwd", "nginx", "cpu_us", i), val("fwd", "haproxy", "cpu_us", i))
best_fwd_rps = lambda i: mx(val("fwd", "envoy", "rps", i), val("fwd", "nginx", "rps", i), val("fwd", "haproxy", "rps", i))
chk("forward CPU/req ≤ 0.7× the better of nginx and haproxy", paired(V("fwd", "pinproxy", "cpu_us"), best_fwd_cpu), "<=", 0.7, note="pinproxy 1 worker, default `upstream_protocol: auto` (the upstream chooses h2: one multiplexed connection) / min(nginx, haproxy) per rep", fg=[("fwd", "pinproxy"), ("fwd", "nginx"), ("fwd", "haproxy")])
chk("forward CPU/req with `upstream_protocol: h1`, vs the better of nginx and haproxy", paired(V("fwd", "pph1", "cpu_us"), best_fwd_cpu), "<=", 0.7, note="pinproxy 1 worker, HTTP/1.1 upstream pool (as nginx and haproxy) / min(nginx, haproxy) per rep", fg=[("fwd", "pph1"), ("fwd", "nginx"), ("fwd", "haproxy")])
chk("forward req/s ≥ 1.1× best peer (1 worker)", paired(V("fwd", "pinproxy", "rps"), best_fwd_rps), ">=", 1.1, note="/ max(Envoy, nginx, haproxy) per rep", fg=[("fwd", t) for t in ("pinproxy", "envoy", "nginx", "haproxy")])
chk("forward req/s ≥ 1.1× best peer (N workers)", paired(V("fwd", "pinproxyN", "rps"), best_fwd_rps), ">=", 1.1, fg=[("fwd", t) for t in ("pinproxyN", "envoy", "nginx", "haproxy")])
for w, label in (("connect-h1", "CONNECT h1"), ("connect-h2", "CONNECT h2")):
    for peer, pn in (("squid", "squid"), ("mitm", "mitmproxy")):
        if w == "connect-h2" and peer == "squid":
            rows.append("| CONNECT h2 CPU/req ≤ 0.5× squid's | n/a | ≤ 0.5× | n/a | squid 5 has no HTTP/2 on bumped connections |"); continue
        chk(f"{label} CPU/req ≤ 0.5× {pn}'s", paired(V(w, "pinproxy", "cpu_us"), V(w, peer, "cpu_us")), "<=", 0.5, fg=[(w, "pinproxy"), (w, peer)])
    chk(f"{label} CPU/req ≤ 1.3× pinproxy's own forward path", paired(V(w, "pinproxy", "cpu_us"), V("fwd", "pinproxy", "cpu_us")), "<=", 1.3,
        note="1 worker; forward = wrk -c50 h1" + ("" if w == "connect-h1" else "; h2 inside the tunnel, 10×100 streams"), fg=[(w, "pinproxy"), ("fwd", "pinproxy")])
    best = (lambda i, w=w: mn(val(w, "squid", "p99", i), val(w, "mitm", "p99", i)))
    chk(f"{label} p99 ≤ best peer's", paired(V(w, "pinproxy", "p99"), best), "<=", 1.0,
        note="/ min(squid, mitmproxy) per rep" if w == "connect-h1" else "/ mitmproxy (squid: n/a)", fg=[(w, "pinproxy"), (w, "squid"), (w, "mitm")])
if any(r["target"] == "pptransparent" for r in runs):
    for w, label in (("connect-h1", "h1"), ("connect-h2", "h2")):
        chk(f"transparent CPU/req ≤ 1.1× CONNECT's ({label}, redirect overhead)", paired(V(w, "pptransparent", "cpu_us"), V(w, "pinproxy", "cpu_us")), "<=", 1.1,
            note="kernel REDIRECT + SNI vs CONNECT via the relay, both intercepted, 1 worker", fg=[(w, "pptransparent"), (w, "pinproxy")])
        chk(f"transparent p99 ≤ 1.1× CONNECT's ({label})", paired(V(w, "pptransparent", "p99"), V(w, "pinproxy", "p99")), "<=", 1.1, fg=[(w, "pptransparent"), (w, "pinproxy")])
if served:
    chk("idle keep-alive conns that served one request (10,000 opened, as many held as the open-files limit allows) RSS, 1 s after the last response", [x["rss_with_idle_conns_kb"] / 1024 for x in served], "<=", 40, "MiB",
        note="a fresh instance per rep; connections as many as the open-files limit carries (`held_at_1s` in idle10k-served-repN.json)")
    per = {i + 1: x["per_conn_kib"] for i, x in enumerate(served)}; per_s = {i + 1: x["per_conn_kib"] for i, x in enumerate(silent)}
    chk("idle conn that served a request ≤ 2× one that never did (per-conn KiB)", [per[i] / per_s[i] for i in per if per_s.get(i)], "<=", 2.0,
        note=f"per rep: {'; '.join(f'{per[i]:.2f}/{per_s[i]:.2f}' for i in per if per_s.get(i))} KiB")
fresh = [x["rss_before_kb"] / 1024 for x in served + silent]
if fresh:
    chk("fresh idle RSS ≤ 8 MiB", fresh, "<=", 8, "MiB", note="started, no traffic yet (idle10k's fresh instances, both modes)")
    base = st.median(fresh)
    for t, name in (("pinproxy", "1 worker"), ("pph1", "1 worker, h1 upstream")):
        after = [v / 1024 - base for w in ("fwd", "connect-h1", "connect-h2") for v in series(w, t, "rss_after_kb")]
        if after:
            chk(f"RSS after each load run ≤ fresh + 1 MiB ({name})", after, "<=", 1, "MiB",
                note=f"RSS settle s (SETTLE, 2 s by default) after each of its load runs, minus the median fresh RSS ({base:.1f} MiB); the instance served every earlier run")
    closed = [(x["rss_after_close_kb"] - x["rss_before_kb"]) / 1024 for x in served + silent if x.get("rss_after_close_kb")]
    chk("RSS 2 s after the idle conns close ≤ fresh + 1 MiB", closed, "<=", 1, "MiB", note="served and never-spoke instances")
for w in ("fwd", "connect-h1", "connect-h2"):
    chk(f"N workers CPU/req ≤ 1.2× 1 worker ({w})", paired(V(w, "pinproxyN", "cpu_us"), V(w, "pinproxy", "cpu_us")), "<=", 1.2, fg=[(w, "pinproxy"), (w, "pinproxyN")])
chk("existing: 10-pin vs CA-only handshake rate within 3%", paired(V("pins", "ppten", "rps"), V("pins", "ppca", "rps")), ">=", 0.97, fg=[("pins", "ppten"), ("pins", "ppca")])
if series('ct', 'ppctenf', 'rps'):
    chk("ct: enforce vs off handshake rate ≥ 0.95 (issue 26)", paired(V("ct", "ppctenf", "rps"), V("ct", "ppctoff", "rps")), ">=", 0.95, fg=[("ct", "ppctenf"), ("ct", "ppctoff")])
if cd and cc:
    chk("existing: CONNECT per-handshake server CPU ≤ 1.5× direct", [b["server_cpu_us_per_conn"] / a["server_cpu_us_per_conn"] for a, b in zip(cd, cc)], "<=", 1.5)
if rel: chk("existing: `..data` swap → enforcement median ≤ 300 ms", [x["median_ms"] for x in rel], "<=", 300, "ms", note="range of the per-rep medians")
if stt: chk("existing: start → /readyz median ≤ 50 ms", [x["median_ms"] for x in stt], "<=", 50, "ms", note="range of the per-rep medians")
if stc: chk("existing: start → /readyz median ≤ 50 ms, with --ca-out", [x["median_ms"] for x in stc], "<=", 50, "ms", note="CA generated at start")
print("### Targets (per-repetition paired ratios, same run)\n")
print("'foreign CPU' in the last column: per repetition, the highest share of the machine that other processes used during")
print("the runs the ratio reads (median [min–max] over repetitions); ranges measured under heavy foreign load are wide.\n")
print("| target | measured: median [min–max] | target | verdict | how |\n|---|---|---|---|---|")
print("\n".join(rows))
