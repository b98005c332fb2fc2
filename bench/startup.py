#!/usr/bin/env python3
"""startup.py BIN PINS N [extra args...]: time from spawning `pinproxy run` to the first 200 from /readyz
(polled every 0.5 ms with a raw HTTP/1.0 request), median/min/max of N starts. Ports 127.0.0.1:15016/19016."""
import json, os, signal, socket, statistics, subprocess, sys, time

def ready():
    try:
        s = socket.create_connection(("127.0.0.1", 19016), timeout=0.5)
        s.sendall(b"GET /readyz HTTP/1.0\r\n\r\n"); d = s.recv(64); s.close()
        return d.startswith(b"HTTP/1.1 200") or d.startswith(b"HTTP/1.0 200")
    except OSError:
        return False

binp, pins, n, extra = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4:]
ts = []
for i in range(n):
    t0 = time.monotonic()
    p = subprocess.Popen([binp, "run", "--pins", pins, "--listen", "127.0.0.1:15016", "--admin", "127.0.0.1:19016",
                          "--workers", "1", *extra], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while time.monotonic() - t0 < 5 and not ready():
        time.sleep(0.0005)
    ts.append((time.monotonic() - t0) * 1e3)
    p.send_signal(signal.SIGKILL); p.wait(); time.sleep(0.1)
print(json.dumps({"starts": n, "median_ms": statistics.median(ts), "min_ms": min(ts), "max_ms": max(ts)}))
