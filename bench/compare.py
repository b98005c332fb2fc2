#!/usr/bin/env python3
"""compare.py RESULTS_DIR RESULTS_DIR [...]: the target verdicts of several bench/run.sh runs side by side.

Each run's targets table comes from bench/report.py on that run alone; the last two columns from
bench/report.py on all of them together, so a target is "met" only when every repetition of every run
meets it (claims only what every run shows). Runs should come from different machines or days."""
import pathlib, subprocess, sys

HERE = pathlib.Path(__file__).resolve().parent
dirs = sys.argv[1:]
if len(dirs) < 2: sys.exit("usage: compare.py RESULTS_DIR RESULTS_DIR [...]")


def targets(*ds):
    out = subprocess.run([sys.executable, str(HERE / "report.py"), *ds], capture_output=True, text=True, check=True).stdout
    body = out.split("### Targets", 1)[1]
    rows = {}
    for line in body.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 4 and cells[0] not in ("target", "---") and not cells[0].startswith("-"):
            rows[cells[0]] = cells
    return rows


per = [targets(d) for d in dirs]
both = targets(*dirs)
for i, d in enumerate(dirs):
    print(f"run {i + 1}: {d}")
print()
print("| target | " + " | ".join(f"run {i + 1}" for i in range(len(dirs))) + " | all runs together | limit | verdict (all runs) |")
print("|---|" + "---|" * len(dirs) + "---|---|---|")
for name, cells in both.items():
    print(f"| {name} | " + " | ".join(p.get(name, ["", "-"])[1] for p in per) + f" | {cells[1]} | {cells[2]} | {cells[3]} |")
