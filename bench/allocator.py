"""allocator.py: the allocator's figures of a running pinproxy, from its admin /metrics (imported by
bench/idle10k.py and bench/load.py). pinproxy_allocator_committed_bytes is what mimalloc holds committed
(on Linux: mapped read/write, pages already given back with madvise included), so it bounds the heap's
resident part from above; RSS above it is outside the heap (the binary's pages, thread stacks). Beside
RSS it says whether a figure is heap the allocator keeps or memory it never had (docs/reference.md,
"Metrics")."""
import re, urllib.request

NAMES = {"pinproxy_allocator_committed_bytes": "committed_kb",
         "pinproxy_allocator_committed_peak_bytes": "committed_peak_kb"}


def scrape(admin_port):
    """{"committed_kb", "committed_peak_kb"} from 127.0.0.1:ADMIN_PORT/metrics, in KiB; None when no port
    is given, the scrape fails, or the binary has no such gauges (an older build)."""
    if not admin_port:
        return None
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/metrics", timeout=5).read().decode()
    except Exception:
        return None
    out = {}
    for name, key in NAMES.items():
        m = re.search(rf"^{name} (\S+)$", text, re.M)
        if m:
            out[key] = round(float(m.group(1)) / 1024)
    return out or None
