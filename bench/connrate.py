#!/usr/bin/env python3
"""connrate.py: new-connection rate with a FRESH client TLS handshake per request (no session reuse).

  direct : TCP to the upstream, TLS (trust the bench root.pem), GET /, close.
  connect: TCP to the proxy, CONNECT api.local:443, TLS inside the tunnel (trust the proxy's CA), GET /, close.

Runs PROCS processes x CONC asyncio workers for DURATION seconds and reports JSON:
conn/s, ok count, p50/p99 ms per connection, and the CPU (utime+stime from /proc/PID/stat)
spent by the server-side PIDs given with --pids, per connection.
usage: connrate.py direct|connect [--proxy 127.0.0.1:15010] [--ca FILE] [--upstream 127.0.0.1:8443]
                   [--duration 5] [--conc 16] [--procs 2] [--pids "1 2"]
"""
import argparse, asyncio, json, multiprocessing as mp, os, ssl, statistics, sys, time

def ticks(pids):
    s = 0
    for p in pids:
        f = open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()
        s += int(f[11]) + int(f[12])
    return s

async def one(a, ctx):
    host, port = (a.proxy if a.mode == "connect" else a.upstream).rsplit(":", 1)
    r, w = await asyncio.open_connection(host, int(port))
    try:
        if a.mode == "connect":
            w.write(b"CONNECT api.local:443 HTTP/1.1\r\nHost: api.local:443\r\n\r\n")
            head = await r.readuntil(b"\r\n\r\n")
            if not head.startswith(b"HTTP/1.1 200"):
                return False
        await w.start_tls(ctx, server_hostname="api.local")
        w.write(b"GET / HTTP/1.1\r\nHost: api.local\r\nConnection: close\r\n\r\n")
        head = await r.readuntil(b"\r\n\r\n")
        ok = head.startswith(b"HTTP/1.1 200")
        n = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                n = int(line.split(b":")[1])
        if n:
            await r.readexactly(n)
        return ok
    finally:
        w.transport.abort()   # RST-free enough on loopback; avoids waiting for close_notify

async def worker(a, ctx, deadline, lat, res):
    while time.monotonic() < deadline:
        t = time.perf_counter()
        try:
            ok = await one(a, ctx)
        except Exception as e:  # counted as an error
            ok = False
            res["err"] = repr(e)[:200]
        lat.append(time.perf_counter() - t)
        res["ok" if ok else "bad"] += 1

def proc_main(a, q):
    ctx = ssl.create_default_context(cafile=a.ca)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    lat, res = [], {"ok": 0, "bad": 0}
    async def main():
        deadline = time.monotonic() + a.duration
        await asyncio.gather(*(worker(a, ctx, deadline, lat, res) for _ in range(a.conc)))
    asyncio.run(main())
    q.put((lat, res))

if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["direct", "connect"])
    ap.add_argument("--proxy", default="127.0.0.1:15010")
    ap.add_argument("--upstream", default="127.0.0.1:8443")
    ap.add_argument("--ca", default="/tmp/bench-peers/pki/root.pem")
    ap.add_argument("--duration", type=float, default=5)
    ap.add_argument("--conc", type=int, default=16)
    ap.add_argument("--procs", type=int, default=2)
    ap.add_argument("--pids", default="")
    a = ap.parse_args()
    pids = [int(p) for p in a.pids.split()]
    q = mp.Queue()
    c0, t0 = ticks(pids), time.monotonic()
    ps = [mp.Process(target=proc_main, args=(a, q)) for _ in range(a.procs)]
    for p in ps: p.start()
    outs = [q.get() for _ in ps]
    for p in ps: p.join()
    c1, t1 = ticks(pids), time.monotonic()
    lat = sorted(x for l, _ in outs for x in l)
    ok = sum(r["ok"] for _, r in outs); bad = sum(r["bad"] for _, r in outs)
    errs = [r["err"] for _, r in outs if "err" in r]
    hz = os.sysconf("SC_CLK_TCK")
    cpu_us = (c1 - c0) / hz * 1e6 / ok if ok else None
    print(json.dumps({"mode": a.mode, "conns_per_s": ok / (t1 - t0), "ok": ok, "bad": bad,
                      "p50_ms": lat[len(lat) // 2] * 1e3 if lat else None,
                      "p99_ms": lat[int(len(lat) * 0.99)] * 1e3 if lat else None,
                      "server_cpu_us_per_conn": cpu_us, "err": errs[:1]}))
