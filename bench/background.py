#!/usr/bin/env python3
"""background.py LABEL [SECONDS=5]: the machine's background load, one line.

loadavg, % of all cores busy over SECONDS (/proc/stat), and the three processes that used the most CPU
in that same window (utime+stime deltas of /proc/PID/stat; `ps %cpu` would be lifetime averages).
Prints the busy % alone on stdout with --busy-only (run.sh's bounded wait for a quiet machine)."""
import os, sys, time


def procs():
    out = {}
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                s = open(f"/proc/{p}/stat").read()
                name = s[s.index("(") + 1:s.rindex(")")]
                f = s.rsplit(")", 1)[1].split()
                out[int(p)] = (name, int(f[11]) + int(f[12]))
            except (OSError, ValueError):
                pass
    return out


def cpu():
    v = [int(x) for x in open("/proc/stat").readline().split()[1:9]]
    return sum(v) - v[3] - v[4], sum(v)


args = [a for a in sys.argv[1:] if a != "--busy-only"]
label, secs = args[0] if args else "background", float(args[1]) if len(args) > 1 else 5
p0, (b0, t0) = procs(), cpu()
time.sleep(secs)
p1, (b1, t1) = procs(), cpu()
busy = 100 * (b1 - b0) / max(t1 - t0, 1)
if "--busy-only" in sys.argv:
    print(int(round(busy)))
    sys.exit()
hz, ncpu = os.sysconf("SC_CLK_TCK"), os.cpu_count()
deltas = sorted(((p1[p][1] - p0[p][1], p1[p][0]) for p in p1 if p in p0), reverse=True)
tops = "; ".join(f"{n} {100 * d / hz / secs:.0f}%" for d, n in deltas[:3] if d > 0) or "none"
# CPU of processes that started or ended inside the window (compiler invocations, test binaries) is in
# the machine's busy ticks but in no surviving /proc/PID: show it, or a busy machine looks idle per process
short = max(0.0, (b1 - b0) - sum(d for d, _ in deltas if d > 0)) / max(t1 - t0, 1) * ncpu * 100
tops += f"; short-lived processes {short:.0f}%"
print(f"{label}: loadavg {' '.join(open('/proc/loadavg').read().split()[:3])}; CPU busy over {secs:.0f} s: "
      f"{busy:.0f}% of {ncpu} cores; busiest in that window (% of one core): {tops}")
