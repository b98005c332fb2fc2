#!/usr/bin/env python3
"""idle10k.py PROXY_PID [N=10000] [PORT=15014] [--silent] [--admin PORT]: open N keep-alive client connections to the proxy,
send one absolute-form GET on each (so every connection has served a request and sits idle in keep-alive),
then report the proxy's RSS. With --silent the connections are opened and never speak (the baseline for
"what does an idle connection that has served a request cost, against one that never did").

RSS is sampled at fixed times after the last response (1 s, 2 s, 5 s: a sidecar's memory limit is hit by
the peak, so the figure must not depend on when one looks), and 2 s after every connection was closed.
Beside each RSS sample: the kernel's memory for the proxy's sockets (`ss -tm` totals of skmem r+t+f+w over
the proxy's listening port), and with --admin (pinproxy's admin port) the allocator's committed bytes and
their peak from /metrics (bench/allocator.py), so a figure can be explained. Per-connection cost = (RSS at +1 s - RSS
before) / connections the proxy holds at +1 s (`held_at_1s`, its established sockets: pinproxy refuses
connections over --max-connections, which it lowers to what the open-files limit carries). Raises RLIMIT_NOFILE to the hard limit. Loopback only; bounded."""
import asyncio, json, os, re, resource, subprocess, sys, time
import allocator
AT = tuple(float(x) for x in os.environ.get("IDLE_AT", "1,2,5").split(","))

def rss_kb(pid, field="VmRSS"):
    for l in open(f"/proc/{pid}/status"):
        if l.startswith(field + ":"):
            return int(l.split()[1])

def rss_parts(pid):
    """RSS split: anonymous (heap, stacks) and file-backed (the binary's pages touched so far: code used
    for the first time, such as TLS and HTTP/2 on the first request, stays resident and is not a leak)."""
    return {"anon_kb": rss_kb(pid, "RssAnon"), "file_kb": rss_kb(pid, "RssFile")}

def held_conns(port):
    """How many client connections the proxy holds open: its established sockets on the listening port.
    Fewer than asked when the proxy refused some (503 and close: over --max-connections, which pinproxy
    lowers to what the open-files limit carries)."""
    try:
        ss = subprocess.run(["ss", "-tnH", "state", "established", f"sport = :{port}"],
                            capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    if ss.returncode != 0:
        return None
    return sum(1 for l in ss.stdout.splitlines() if l.strip())

def socket_kb(port):
    """Kernel socket memory (receive + send queues, forward allocations) of the proxy's side of the
    client connections: `ss -tmH state established sport = :PORT`, skmem r, t, f, w summed, in KiB."""
    try:
        out = subprocess.run(["ss", "-tmH", "state", "established", f"sport = :{port}"],
                             capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    total = 0
    for m in re.finditer(r"skmem:\(([^)]*)\)", out):
        for field in m.group(1).split(","):
            k = re.match(r"([a-z]+)(\d+)", field)
            if k and k.group(1) in ("r", "t", "f", "w"):
                total += int(k.group(2))
    return round(total / 1024)

async def main(pid, n, port, silent, admin):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    before, before_parts, heap_before = rss_kb(pid), rss_parts(pid), allocator.scrape(admin)
    conns, ok, sem = [], 0, asyncio.Semaphore(200)
    async def opener():
        nonlocal ok
        async with sem:
            r, w = await asyncio.open_connection("127.0.0.1", port)
            if silent:
                conns.append(w); return
            w.write(b"GET http://api.local/ HTTP/1.1\r\nHost: api.local\r\n\r\n")
            head = await r.readuntil(b"\r\n\r\n")
            n = int([l for l in head.split(b"\r\n") if l.lower().startswith(b"content-length:")][0].split(b":")[1])
            await r.readexactly(n)
            ok += head.startswith(b"HTTP/1.1 200")
            conns.append(w)
    t0 = time.monotonic()
    res = await asyncio.gather(*(opener() for _ in range(n)), return_exceptions=True)
    errs = [repr(e) for e in res if isinstance(e, Exception)]
    t1 = time.monotonic()                      # the last response (or the last connect, --silent)
    samples = {}
    for at in AT:
        await asyncio.sleep(max(0.0, t1 + at - time.monotonic()))
        samples[at] = (rss_kb(pid), socket_kb(port), rss_parts(pid), allocator.scrape(admin), held_conns(port))
    for w in conns: w.close()
    await asyncio.sleep(2)
    after_close, parts_after_close = rss_kb(pid), rss_parts(pid)
    held = samples[1][0]
    # per connection the proxy actually holds at +1 s (not per connection asked for: a refused one is closed)
    open_at_1s = samples[1][4] if samples[1][4] is not None else len(conns)
    if open_at_1s < n:
        print(f"idle10k: the proxy holds {open_at_1s} of {n} connections ({ok} answered 200); "
              f"per-connection cost is over those it holds", file=sys.stderr)
    print(json.dumps({"mode": "silent" if silent else "served", "connections": len(conns), "held_at_1s": open_at_1s,
                      "per_conn_kib": round((held - before) / max(open_at_1s, 1), 2), "ok_200": ok, "errors": len(errs), "first_error": errs[:1],
                      "open_s": round(t1 - t0, 2), "rss_before_kb": before, "rss_with_idle_conns_kb": held,
                      "rss_at_kb": {f"{at:g}s": s[0] for at, s in samples.items()},
                      "socket_kb_at": {f"{at:g}s": s[1] for at, s in samples.items()},
                      "rss_parts_before": before_parts,
                      "rss_parts_at": {f"{at:g}s": s[2] for at, s in samples.items()},
                      "rss_after_close_kb": after_close, "rss_parts_after_close": parts_after_close,
                      # the allocator's figures (KiB) at the same moments; null without --admin
                      "allocator_before": heap_before,
                      "allocator_at": {f"{at:g}s": s[3] for at, s in samples.items()},
                      "allocator_after_close": allocator.scrape(admin)}))

if __name__ == "__main__":
    silent = "--silent" in sys.argv; av = [x for x in sys.argv if x != "--silent"]
    admin = None
    if "--admin" in av:
        i = av.index("--admin"); admin = int(av[i + 1]); del av[i:i + 2]
    asyncio.run(main(int(av[1]), int(av[2]) if len(av) > 2 else 10000,
                     int(av[3]) if len(av) > 3 else 15014, silent, admin))
