#!/usr/bin/env python3
"""reload_latency.py BIN N: time from a kubelet-style `..data` symlink swap to enforcement, median of N swaps.

Lays out a Secret-volume directory as the kubelet does (..<timestamp>/pins.yaml, ..data -> ..<timestamp>,
pins.yaml -> ..data/pins.yaml), starts pinproxy on it (127.0.0.1:15015, admin :19015), then alternates:
swap to a pinset whose only pins are the "other" key  -> poll until a request gets 502 pin-mismatch,
swap back to the right pins                             -> poll until a request gets 200.
Each poll is one absolute-form GET over a keep-alive client connection, every 2 ms (bounded: 5 s per swap)."""
import http.client, json, os, shutil, signal, statistics, subprocess, sys, time

D = "/tmp/bench-pp/reload"; K = "/tmp/bench-peers/pki"
def pinset(pins):
    return ("version: 1\nhosts:\n  api.local:\n    pins: [%s]\n    trust: %s/root.pem\n    address: 127.0.0.1:8443\n"
            % (", ".join("sha256/" + p for p in pins), K))
def swap(content, i):
    ts = f"..2026_01_01_00_00_{i:02d}.{i:09d}"
    os.mkdir(f"{D}/{ts}")
    open(f"{D}/{ts}/pins.yaml", "w").write(content)
    old = os.readlink(f"{D}/..data")
    os.symlink(ts, f"{D}/..data_tmp")
    t = time.monotonic()
    os.rename(f"{D}/..data_tmp", f"{D}/..data")       # the atomic step the kubelet does
    shutil.rmtree(f"{D}/{old}")
    return t
def status(conn):
    try:
        conn.request("GET", "http://api.local/", headers={"Host": "api.local"})
        r = conn.getresponse(); r.read()
    except (http.client.HTTPException, OSError):   # a reload may close idle client connections: reconnect, poll again
        conn.close(); return None, None
    return r.status, r.getheader("x-pinproxy-error")

if __name__ == "__main__":
    binp, n = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 10
    good = [open(f"{K}/leaf.spki.b64").read().strip(), sys.argv[3]] if len(sys.argv) > 3 else [open(f"{K}/leaf.spki.b64").read().strip()]
    bad = [open(f"{K}/other.spki.b64").read().strip()]
    shutil.rmtree(D, ignore_errors=True); os.makedirs(D)
    os.mkdir(f"{D}/..2026_01_01_00_00_99.0"); open(f"{D}/..2026_01_01_00_00_99.0/pins.yaml", "w").write(pinset(good))
    os.symlink("..2026_01_01_00_00_99.0", f"{D}/..data"); os.symlink("..data/pins.yaml", f"{D}/pins.yaml")
    p = subprocess.Popen([binp, "run", "--pins", f"{D}/pins.yaml", "--listen", "127.0.0.1:15015",
                          "--admin", "127.0.0.1:19015", "--workers", "1"], stdout=subprocess.DEVNULL, stderr=open(f"{D}.log", "w"))
    try:
        for _ in range(500):
            try:
                c = http.client.HTTPConnection("127.0.0.1", 19015, timeout=1); c.request("GET", "/readyz")
                if c.getresponse().status == 200: break
            except OSError: pass
            time.sleep(0.01)
        conn = http.client.HTTPConnection("127.0.0.1", 15015, timeout=5)
        assert status(conn)[0] == 200, "baseline request failed"
        lat = {"to_mismatch": [], "to_pass": []}
        for i in range(n):
            to_bad = i % 2 == 0
            t0 = swap(pinset(bad if to_bad else good), i)
            want = (502, "pin-mismatch") if to_bad else (200, None)
            while time.monotonic() - t0 < 5:
                if status(conn) == want:
                    lat["to_mismatch" if to_bad else "to_pass"].append((time.monotonic() - t0) * 1e3); break
                time.sleep(0.002)
            else:
                lat["to_mismatch" if to_bad else "to_pass"].append(float("inf"))
            time.sleep(0.4)      # let the debounce window close before the next swap
        allv = lat["to_mismatch"] + lat["to_pass"]
        print(json.dumps({"swaps": n, "median_ms": statistics.median(allv), "max_ms": max(allv), "min_ms": min(allv),
                          "median_to_mismatch_ms": statistics.median(lat["to_mismatch"]),
                          "median_to_pass_ms": statistics.median(lat["to_pass"]) if lat["to_pass"] else None}))
    finally:
        p.send_signal(signal.SIGKILL); p.wait()
