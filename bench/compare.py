#!/usr/bin/env python3
"""compare.py RESULTS_DIR RESULTS_DIR [...]: the target verdicts of several bench/run.sh runs side by side.
compare.py A1 A2 -- B1 B2 [-- ...]: the same per group of runs (one machine's runs each), groups side by side.

Each column comes from bench/report.py on that run (or that group's runs together) alone; the last two
columns from bench/report.py on all of them together, so a target is "met" only when every repetition
of every run meets it (claims only what every run shows). Runs should come from different machines or
days."""
import pathlib, subprocess, sys

HERE = pathlib.Path(__file__).resolve().parent
groups, cur = [], []
for a in sys.argv[1:] + ["--"]:
    if a == "--":
        if cur: groups.append(cur)
        cur = []
    else:
        cur.append(a)
if "--" not in sys.argv[1:]:
    groups = [[d] for g in groups for d in g]   # no groups given: each run is its own column
dirs = [d for g in groups for d in g]
if len(dirs) < 2: sys.exit("usage: compare.py RESULTS_DIR RESULTS_DIR [...]  |  compare.py A1 [A2...] -- B1 [B2...] [-- ...]")
label = "run" if all(len(g) == 1 for g in groups) else "group"


def targets(*ds):
    out = subprocess.run([sys.executable, str(HERE / "report.py"), *ds], capture_output=True, text=True, check=True).stdout
    body = out.split("### Targets", 1)[1]
    rows = {}
    for line in body.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 4 and cells[0] not in ("target", "---") and not cells[0].startswith("-"):
            rows[cells[0]] = cells
    return rows


per = [targets(*g) for g in groups]
both = targets(*dirs)
for i, g in enumerate(groups):
    print(f"{label} {i + 1}: {' '.join(g)}")
print()
print("| target | " + " | ".join(f"{label} {i + 1}" for i in range(len(groups))) + " | all runs together | limit | verdict (all runs) |")
print("|---|" + "---|" * len(groups) + "---|---|---|")
for name, cells in both.items():
    print(f"| {name} | " + " | ".join(p.get(name, ["", "-"])[1] for p in per) + f" | {cells[1]} | {cells[2]} | {cells[3]} |")
