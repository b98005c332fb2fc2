#!/usr/bin/env python3
"""loadtime.py [--old BIN] [--new BIN] [--sizes 1000,2000,...] [--timeout S] [--reps N] [--json FILE]

Pinset load cost against the number of hosts, old and new binary in one command.
For every size it writes a pinset of N block-style host entries (two pins, ports, address each), then,
for each binary, measures:
  check    `BIN check FILE`: wall time and peak RSS (/usr/bin/time's %M)
  cold     spawn `BIN run --pins FILE --workers 1 --no-watch` -> first 200 from /readyz (polled every 2 ms);
           peak RSS (VmHWM) once ready, and "extra": that minus VmHWM of the same binary ready on a 1-host file
  reload   with that process running: a changed N-host file renamed over the pinset, SIGHUP, then the time
           until the binary logs the new generation ("pinset reloaded"); peak RSS (VmHWM) after it
Medians of --reps runs (default 3; 1 for sizes over 10,000, or when one run takes over 5 s). A run that does not finish within --timeout
(default 60 s) is killed and shown as "> T". `run` gets --max-pinset-bytes 64 MiB where the binary has the flag and the file is over the 4 MiB
default (50,000 hosts); `check` has no such flag and refuses them, shown as "refused: over the cap".
Then, items 2-3, hostile files on a running 1-host proxy: SIGHUP onto 400 KB of nested `[` and onto 50 MB of host lines; time until
the reload failure is logged, peak RSS (VmHWM), and time from SIGTERM to exit (--shutdown-grace 0; bounded at 10 s), with the
default size limit. `--sizes ""` runs only these.
Prints markdown tables; --json also writes the raw figures.
The old binary defaults to /tmp/pinproxy-baseline (the release build before the LineIndex refactor), the
new one to target/release/pinproxy. Ports 127.0.0.1:15020 (proxy) and :19020 (admin)."""
import argparse, base64, hashlib, json, os, signal, socket, statistics, subprocess, sys, threading, time

HERE = os.path.dirname(os.path.abspath(__file__))
DIR = "/tmp/bench-loadtime"
LISTEN, ADMIN = "127.0.0.1:15020", ("127.0.0.1", 19020)
DEFAULT_CAP, RAISED_CAP = 4 * 1024 * 1024, 64 * 1024 * 1024


def pin(tag):
    return "sha256/" + base64.b64encode(hashlib.sha256(tag.encode()).digest()).decode()


def pinset(n, variant=""):
    out = ["version: 1", "defaults:", "  unlisted: deny", "hosts:"]
    for i in range(n):
        first = pin(f"a{i}" + (variant if i == n - 1 else ""))   # the variant changes the last host's pin
        out += [f"  h{i}.svc{i % 97}.example.com:", "    pins:", f"      - {first}", f"      - {pin(f'b{i}')}",
                "    ports: [443]", f"    address: 10.{i // 65536 % 256}.{i // 256 % 256}.{i % 256}:443"]
    return "\n".join(out) + "\n"


def write(path, text):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.rename(tmp, path)     # atomic, as a reload sees it


def vm(pid, key):
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def ready():
    try:
        s = socket.create_connection(ADMIN, timeout=0.5)
        s.sendall(b"GET /readyz HTTP/1.0\r\n\r\n")
        d = s.recv(64)
        s.close()
        return d.startswith(b"HTTP/1.1 200") or d.startswith(b"HTTP/1.0 200")
    except OSError:
        return False


def check(binp, path, timeout):
    # /usr/bin/time reports the child's own peak RSS (a fork of this script would count ours too).
    out = os.path.join(DIR, "time.out")
    t0 = time.monotonic()
    p = subprocess.Popen(["/usr/bin/time", "-o", out, "-f", "%M", binp, "check", path],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        code = p.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)   # time and the binary under it
        p.wait()
        return {"s": None, "rss": None, "ok": False}
    s = time.monotonic() - t0
    return {"s": s, "rss": int(open(out).read().split()[-1]) / 1024, "ok": code == 0}


def takes_cap(binp):
    """Whether the binary has --max-pinset-bytes (the old one has no cap at all)."""
    out = subprocess.run([binp, "run", "--help"], capture_output=True, text=True).stdout
    return "--max-pinset-bytes" in out


class Running:
    """`BIN run` on a pinset; a thread watches its log for reload lines."""

    def __init__(self, binp, path, raise_cap=False):
        self.lines, self.cv = [], threading.Condition()
        # Files over the 4 MiB default (50,000 hosts) need the cap raised.
        cap = ["--max-pinset-bytes", str(RAISED_CAP)] if raise_cap and takes_cap(binp) else []
        self.p = subprocess.Popen([binp, "run", "--pins", path, "--listen", LISTEN, "--admin", f"{ADMIN[0]}:{ADMIN[1]}",
                                   "--workers", "1", "--no-watch", "--shutdown-grace", "0", *cap],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.p.stderr:
            with self.cv:
                self.lines.append(line)
                self.cv.notify_all()

    def wait_ready(self, t0, timeout):
        while time.monotonic() - t0 < timeout:
            if ready():
                return time.monotonic() - t0
            if self.p.poll() is not None:
                return None
            time.sleep(0.002)
        return None

    def wait_line(self, words, since, timeout):
        end = time.monotonic() + timeout
        with self.cv:
            while True:
                for line in self.lines[since:]:
                    if any(w in line for w in words):
                        return line
                left = end - time.monotonic()
                if left <= 0:
                    return None
                self.cv.wait(left)

    def stop(self):
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGKILL)
        self.p.wait()
        time.sleep(0.1)

    def term(self, timeout):
        """SIGTERM; seconds until the process exited, or None."""
        t0 = time.monotonic()
        self.p.send_signal(signal.SIGTERM)
        try:
            self.p.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
        return time.monotonic() - t0


def run_once(binp, path, changed, timeout):
    write(path, open(path + ".orig").read())
    t0 = time.monotonic()
    r = Running(binp, path, raise_cap=max(os.path.getsize(path), len(changed)) > DEFAULT_CAP)
    try:
        cold = r.wait_ready(t0, timeout)
        out = {"cold": cold, "cold_rss": vm(r.p.pid, "VmHWM") if cold else None, "reload": None, "reload_rss": None}
        if cold is None:
            return out
        since = len(r.lines)
        write(path, changed)
        t1 = time.monotonic()
        r.p.send_signal(signal.SIGHUP)
        line = r.wait_line(["pinset reloaded", "reload failed"], since, timeout)
        if line and "pinset reloaded" in line:
            out["reload"] = time.monotonic() - t1
            out["reload_rss"] = vm(r.p.pid, "VmHWM")
        return out
    finally:
        r.stop()


def slow(s):
    return s is None or s > 5


def hostile(binp, path, text, timeout):
    """SIGHUP onto a hostile file: seconds until the reload failure is logged, peak RSS, then
    seconds from SIGTERM to exit (--shutdown-grace 0). The size limit is the default."""
    write(path, open(path + ".orig").read())
    r = Running(binp, path)
    try:
        if r.wait_ready(time.monotonic(), timeout) is None:
            return None
        since = len(r.lines)
        write(path, text)
        t1 = time.monotonic()
        r.p.send_signal(signal.SIGHUP)
        line = r.wait_line(["reload failed", "pinset reloaded"], since, timeout)
        refused = time.monotonic() - t1 if line and "reload failed" in line else None
        rss = vm(r.p.pid, "VmHWM")
        return {"refused_s": refused, "rss": rss, "term_s": r.term(10)}
    finally:
        r.stop()


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def fmt_s(v, timeout):
    if v is None:
        return f"> {timeout:g} s"
    return f"{v * 1e3:.0f} ms" if v < 1 else f"{v:.2f} s"


def fmt_mb(v):
    return "-" if v is None else f"{v:.1f}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--old", default="/tmp/pinproxy-baseline")
    ap.add_argument("--new", default=os.path.join(os.path.dirname(HERE), "target/release/pinproxy"))
    ap.add_argument("--sizes", default="1000,2000,5000,10000,50000")
    ap.add_argument("--timeout", type=float, default=60)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--json")
    a = ap.parse_args()
    os.makedirs(DIR, exist_ok=True)
    bins = [("old", a.old), ("new", a.new)]
    for _, b in bins:
        if not os.access(b, os.X_OK):
            sys.exit(f"not an executable: {b}")
    sizes = [int(s) for s in a.sizes.split(",") if s]   # --sizes "": the hostile files only
    one = os.path.join(DIR, "p1.yaml")
    write(one + ".orig", pinset(1))
    idle = {}
    for name, b in bins:
        idle[name] = median([run_once(b, one, pinset(1, "x"), a.timeout)["cold_rss"] for _ in range(3)])
    res = {}
    for n in sizes:
        path = os.path.join(DIR, f"p{n}.yaml")
        write(path + ".orig", pinset(n))
        changed = pinset(n, "x")
        reps = a.reps if n <= 10000 else 1
        for name, b in bins:
            checks, runs = [], []
            for _ in range(reps):
                checks.append(check(b, path + ".orig", a.timeout))
                runs.append(run_once(b, path, changed, a.timeout))
                if slow(checks[-1]["s"]) or slow(runs[-1]["cold"]) or slow(runs[-1]["reload"]):
                    break   # one run of a slow case is enough to see it
            r = {
                "check_s": median([c["s"] for c in checks]), "check_rss": median([c["rss"] for c in checks]),
                "check_ok": all(c["ok"] for c in checks),
                "cold_s": median([x["cold"] for x in runs]), "cold_rss": median([x["cold_rss"] for x in runs]),
                "reload_s": median([x["reload"] for x in runs]), "reload_rss": median([x["reload_rss"] for x in runs]),
            }
            r["extra_rss"] = None if r["cold_rss"] is None or idle[name] is None else r["cold_rss"] - idle[name]
            res[(n, name)] = r
            print(f"{n} {name}: {json.dumps(r)}", file=sys.stderr, flush=True)
    t = a.timeout
    print(f"idle RSS on a 1-host pinset, MiB: old {fmt_mb(idle['old'])}, new {fmt_mb(idle['new'])}\n")
    print("| hosts | check old | check new | cold start old | cold start new | reload old | reload new "
          "| peak RSS ready old / new MiB | extra over 1 host old / new MiB | peak RSS after reload old / new MiB |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for n in sizes:
        o, w = res[(n, "old")], res[(n, "new")]
        ck = lambda r: fmt_s(r["check_s"], t) if r["check_ok"] or r["check_s"] is None else "refused: over the cap"
        print(f"| {n:,} | {ck(o)} | {ck(w)} | {fmt_s(o['cold_s'], t)} "
              f"| {fmt_s(w['cold_s'], t)} | {fmt_s(o['reload_s'], t)} | {fmt_s(w['reload_s'], t)} "
              f"| {fmt_mb(o['cold_rss'])} / {fmt_mb(w['cold_rss'])} | {fmt_mb(o['extra_rss'])} / {fmt_mb(w['extra_rss'])} "
              f"| {fmt_mb(o['reload_rss'])} / {fmt_mb(w['reload_rss'])} |")
    # Items 2-3: files that cost more than they weigh, on a running 1-host proxy.
    entry = f"  h.big.test:\n    pins: [{pin('big')}]\n"
    files = [("400 KB of nested [", "version: 1\nhosts: " + "[" * 400_000 + "\n"),
             ("50 MB of host lines", "version: 1\nhosts:\n" + entry * (50_000_000 // len(entry)))]
    print("\n| hostile file (SIGHUP on a running proxy) | refused after, old | new | peak RSS MiB, old / new "
          "| SIGTERM to exit, old | new |")
    print("|---|---:|---:|---:|---:|---:|")
    hostile_res = {}
    for label, text in files:
        o, w = (hostile(b, one, text, a.timeout) or {} for _, b in bins)
        hostile_res[label] = {"old": o, "new": w}
        print(f"| {label} | {fmt_s(o.get('refused_s'), t)} | {fmt_s(w.get('refused_s'), t)} "
              f"| {fmt_mb(o.get('rss'))} / {fmt_mb(w.get('rss'))} | {fmt_s(o.get('term_s'), 10)} "
              f"| {fmt_s(w.get('term_s'), 10)} |", flush=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"idle_rss": idle, "runs": {f"{n}-{k}": v for (n, k), v in res.items()},
                       "hostile": hostile_res}, f, indent=1)


if __name__ == "__main__":
    main()
