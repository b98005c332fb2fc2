#!/usr/bin/env python3
"""load.py: one load run against one target, with the target's CPU and memory accounted; appends one JSON
record to OUT/runs.jsonl. bench/run.sh calls it once per (repetition, workload, target), interleaved.

usage: load.py --out DIR --rep N --workload W --target T --pids "PID..." [--upstream-pids "PID..."]
               [--relay-pids "PID..."] [--settle S] [--timeout S] [--admin-port PORT] -- COMMAND...

COMMAND is wrk (--latency) or h2load (--log-file=FILE, optionally --warm-up-time): the tool is recognised
from argv[0]. What is measured, and over which interval:
  - proxy CPU: utime+stime (/proc/PID/stat) summed over the process TREE of every --pids root (children
    found through /proc/PID/task/*/children at every sample: nginx workers, squid's certgen helpers).
    wrk: from spawn to exit. h2load with --warm-up-time: from the first "Main benchmark duration is
    started" line to the last "... is over" line, i.e. the interval whose requests h2load counts; so the
    connection handshakes and the warm-up are not charged to the counted requests. A slow proxy with
    1000 requests in flight (h2, -m100) would otherwise be charged for work on requests that h2load
    abandons at the end.
  - CPU µs/request = proxy CPU / requests completed in that interval (wrk: "N requests in"; h2load: done).
  - upstream and relay CPU: the same way, for the upstream nginx (bench/peers) and bench/connect-relay.
  - foreign CPU: all CPU busy on the machine (/proc/stat) minus proxy, upstream, relay and the load tool
    itself (its rusage): other people's work on this shared machine, as % of all cores. Shown per run.
  - RSS (VmRSS of the tree): idle before the run, max under load (sampled every 0.25 s), and idle again
    SETTLE seconds after the run ended (the "idle RSS after load"). With --admin-port (pinproxy's admin
    port): beside both idle RSS figures, the allocator's committed bytes and their peak from /metrics
    (bench/allocator.py), so an idle RSS figure says whether it is heap mimalloc keeps.
  - latency: wrk's --latency percentiles; h2load prints none, so p50/p99 come from its --log-file
    (one line per request of the measured interval: start µs, status, duration µs).
  - new upstream connections: accepted-connections delta of the upstream's stub_status (127.0.0.1:8081).
A run that does not end within --timeout is killed and recorded as stalled (no figures), never retried.
"""
import argparse, json, os, re, signal, subprocess, sys, threading, time
import allocator

HZ = os.sysconf("SC_CLK_TCK")


def tree(roots):
    seen, todo = [], [int(p) for p in roots]
    while todo:
        p = todo.pop()
        if p in seen or not os.path.exists(f"/proc/{p}"):
            continue
        seen.append(p)
        try:
            for t in os.listdir(f"/proc/{p}/task"):
                todo += [int(c) for c in open(f"/proc/{p}/task/{t}/children").read().split()]
        except OSError:
            pass
    return seen


def cpu_ticks(roots):
    s = 0
    for p in tree(roots):
        try:
            f = open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()
            s += int(f[11]) + int(f[12])
        except OSError:
            pass
    return s


def rss_kb(roots):
    s = 0
    for p in tree(roots):
        try:
            for l in open(f"/proc/{p}/status"):
                if l.startswith("VmRSS:"):
                    s += int(l.split()[1])
        except OSError:
            pass
    return s


def machine_ticks():
    v = [int(x) for x in open("/proc/stat").readline().split()[1:9]]
    return sum(v) - v[3] - v[4], sum(v)      # busy, total (idle + iowait excluded from busy)


def upstream_accepted():
    try:
        import urllib.request
        t = urllib.request.urlopen("http://127.0.0.1:8081/status", timeout=2).read().decode().splitlines()
        return int(t[2].split()[0])
    except Exception:
        return None


class Sample:
    def __init__(s, a):
        s.t = time.monotonic()
        s.proxy, s.up, s.relay = cpu_ticks(a.pids), cpu_ticks(a.upstream_pids), cpu_ticks(a.relay_pids)
        s.busy, s.total = machine_ticks()


def ms(v, unit):
    return float(v) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]


def parse_wrk(text):
    r = {"requests": int(re.search(r"(\d+) requests in", text).group(1)),
         "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))}
    for q in ("50", "99"):
        m = re.search(rf"\s{q}%\s+([\d.]+)(us|ms|s)", text); r["p" + q] = ms(*m.groups())
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    e = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    r["bad"] = (int(m.group(1)) if m else 0) + (sum(int(x) for x in e.groups()) if e else 0)
    return r


def parse_h2load(text, logf):
    r = {"rps": float(re.search(r"finished in [\d.]+s, ([\d.]+) req/s", text).group(1))}
    m = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored, (\d+) timeout", text)
    r["requests"] = int(m.group(4))
    c = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", text)
    r["bad"] = int(m.group(5)) + int(m.group(6)) + int(m.group(7)) + int(c.group(3)) + int(c.group(4))
    p = re.search(r"Application protocol: (\S+)", text)
    r["proto"] = p.group(1) if p else None
    lat = sorted(int(l.split("\t")[2]) for l in open(logf) if l.count("\t") == 2) if logf and os.path.exists(logf) else []
    if lat:
        r["p50"] = lat[len(lat) // 2] / 1e3
        r["p99"] = lat[min(len(lat) - 1, int(len(lat) * 0.99))] / 1e3
    return r


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True); ap.add_argument("--rep", type=int, required=True)
    ap.add_argument("--workload", required=True); ap.add_argument("--target", required=True)
    ap.add_argument("--pids", required=True); ap.add_argument("--upstream-pids", default="")
    ap.add_argument("--relay-pids", default=""); ap.add_argument("--settle", type=float, default=2)
    ap.add_argument("--timeout", type=float, default=60)
    ap.add_argument("--admin-port", type=int, default=None)
    ap.add_argument("cmd", nargs=argparse.REMAINDER)
    a = ap.parse_args()
    cmd = a.cmd[1:] if a.cmd and a.cmd[0] == "--" else a.cmd
    for k in ("pids", "upstream_pids", "relay_pids"):
        setattr(a, k, getattr(a, k).split())
    tool = os.path.basename(cmd[0])
    logf = next((x.split("=", 1)[1] for x in cmd if x.startswith("--log-file=")), None)
    if logf and os.path.exists(logf):
        os.unlink(logf)                     # h2load appends to an existing log file
    rec = {"rep": a.rep, "workload": a.workload, "target": a.target, "cmd": " ".join(cmd), "start": round(time.time(), 1)}
    rec["idle_rss_kb"] = rss_kb(a.pids)
    heap = allocator.scrape(a.admin_port) or {}
    rec["idle_committed_kb"], rec["idle_committed_peak_kb"] = heap.get("committed_kb"), heap.get("committed_peak_kb")
    acc0 = upstream_accepted()
    stop, maxrss = threading.Event(), [rec["idle_rss_kb"]]

    def sampler():
        while not stop.wait(0.25):
            maxrss[0] = max(maxrss[0], rss_kb(a.pids))
    th = threading.Thread(target=sampler, daemon=True); th.start()

    s0 = Sample(a); s1 = None; started = tool != "h2load" or not any(x.startswith("--warm-up-time") for x in cmd)
    out = []
    t_spawn, killed = time.monotonic(), threading.Event()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)

    def kill():
        killed.set(); os.killpg(p.pid, signal.SIGKILL)
    killer = threading.Timer(a.timeout, kill); killer.start()
    for line in p.stdout:
        out.append(line)
        if not started and "Main benchmark duration is started" in line:
            s0, started = Sample(a), True
        if "Main benchmark duration is over" in line:
            s1 = Sample(a)                  # the last thread's "over" wins
    _, status, ru = os.wait4(p.pid, 0)
    killer.cancel(); tool_elapsed = time.monotonic() - t_spawn
    if s1 is None or tool != "h2load":
        s1 = Sample(a)
    stop.set(); th.join()
    text = "".join(out)
    rec["stalled"] = killed.is_set()
    rec["exit"] = os.waitstatus_to_exitcode(status)
    acc1 = upstream_accepted()
    rec["upstream_new_conns"] = acc1 - acc0 - 1 if None not in (acc0, acc1) else None   # -1: our own status GET
    try:
        r = parse_wrk(text) if tool == "wrk" else parse_h2load(text, logf)
    except Exception as e:
        r = {"parse_error": repr(e)[:200]}
    rec.update(r)
    wall = s1.t - s0.t
    rec["interval_s"] = round(wall, 3)
    n = rec.get("requests") or 0
    rec["proxy_cpu_s"] = (s1.proxy - s0.proxy) / HZ
    if n and not rec["stalled"]:
        rec["cpu_us"] = (s1.proxy - s0.proxy) / HZ / n * 1e6
        rec["upstream_cpu_us"] = (s1.up - s0.up) / HZ / n * 1e6 if a.upstream_pids else None
        rec["relay_cpu_us"] = (s1.relay - s0.relay) / HZ / n * 1e6 if a.relay_pids else None
    tool_ticks = (ru.ru_utime + ru.ru_stime) * HZ * min(1.0, wall / max(tool_elapsed, 1e-9))   # its share in the interval
    busy = s1.busy - s0.busy; total = max(s1.total - s0.total, 1)
    ours = (s1.proxy - s0.proxy) + (s1.up - s0.up) + (s1.relay - s0.relay) + tool_ticks
    rec["foreign_cpu_pct"] = round(max(0.0, busy - ours) / total * 100, 1)   # % of all cores
    rec["max_rss_kb"] = maxrss[0]
    time.sleep(a.settle)
    rec["rss_after_kb"] = rss_kb(a.pids)
    heap = allocator.scrape(a.admin_port) or {}
    rec["committed_after_kb"], rec["committed_peak_after_kb"] = heap.get("committed_kb"), heap.get("committed_peak_kb")
    rec["tail"] = text[-600:] if (rec.get("parse_error") or rec["stalled"] or rec.get("bad")) else ""
    with open(os.path.join(a.out, "runs.jsonl"), "a") as f:
        f.write(json.dumps(rec) + "\n")
    brief = {k: rec.get(k) for k in ("rep", "workload", "target", "rps", "cpu_us", "p50", "p99", "bad", "stalled", "foreign_cpu_pct")}
    print(json.dumps(brief), file=sys.stderr)


if __name__ == "__main__":
    main()
