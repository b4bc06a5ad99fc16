"""How much faster is the test suite on parallel workers, and does it still run every test?

    python3 benchmarks/suite_timing.py [--runs 1] [--workers auto] [-- PYTEST SELECTION/ARGS]

Runs `nox -s tests -- <selection> -n 0` (one process, as before pytest-xdist) and `nox -s tests -- <selection>
-n <workers>` back to back, --runs times, alternating which goes first so that both see the same load.
Prints the median wall of each, the ratio parallel / serial (issue 15's goal: <= 0.5 against the serial
suite of before), and the passed/skipped/failed counts of each, which must be equal: parallel workers
must not lose a test. The selection defaults to the whole suite (tests). Wall times depend on what else
the machine runs: quote them with the load average printed. The CPU seconds (user + system of the run's
process tree, as far as each process was waited for) depend much less on other load: compare those when
the machine is shared. Stdlib only.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_COUNT = re.compile(r"(\d+) (passed|skipped|failed|errors?|xfailed|xpassed|deselected)")


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run(selection: list[str], workers: str) -> tuple[float, float, dict[str, int]]:
    argv = [sys.executable, "-m", "nox", "-s", "tests", "--", *selection, "-q", "-n", workers]
    cpu_before = _children_cpu()
    started = time.perf_counter()
    proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    cpu = _children_cpu() - cpu_before
    summary = next(
        (line for line in reversed(proc.stdout.splitlines()) if re.search(r" in [\d.]+s", line)), ""
    )
    counts = {
        kind.rstrip("s") if kind.startswith("error") else kind: int(n) for n, kind in _COUNT.findall(summary)
    }
    for line in proc.stdout.splitlines():
        if line.startswith(("FAILED ", "ERROR ")):
            print(f"  {workers=}: {line}")
    if proc.returncode not in (0, 1) or not counts:
        sys.exit(f"{' '.join(argv)} exited {proc.returncode}: {(proc.stdout + proc.stderr)[-800:]}")
    return wall, cpu, counts


def main() -> int:
    parser = argparse.ArgumentParser(prog="benchmarks/suite_timing.py", description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--workers", default="auto", help="pytest-xdist -n for the parallel side")
    parser.add_argument("selection", nargs="*", help="pytest selection/arguments (after --)")
    args = parser.parse_args()
    selection = list(args.selection) or ["tests"]
    walls: dict[str, list[float]] = {"serial": [], "parallel": []}
    cpus: dict[str, list[float]] = {"serial": [], "parallel": []}
    counts: dict[str, dict[str, int]] = {}
    for index in range(args.runs):
        order = [("serial", "0"), ("parallel", args.workers)]
        for name, workers in order if index % 2 == 0 else reversed(order):
            wall, cpu, seen = run(selection, workers)
            walls[name].append(wall)
            cpus[name].append(cpu)
            counts[name] = seen
    load = os.getloadavg()
    serial, parallel = statistics.median(walls["serial"]), statistics.median(walls["parallel"])
    print(
        f"test suite timing: {' '.join(selection)}, median of {args.runs} run(s) each, "
        f"{os.cpu_count()} CPUs, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
    )
    cpu = {name: statistics.median(values) for name, values in cpus.items()}
    print(
        f"serial   (-n 0)              {serial:8.1f} s wall {cpu['serial']:8.1f} s CPU   {counts['serial']}"
    )
    print(
        f"parallel (-n {args.workers:<6})        {parallel:8.1f} s wall {cpu['parallel']:8.1f} s CPU   "
        f"{counts['parallel']}"
    )
    print(f"ratio parallel / serial      {parallel / serial:8.2f}")
    same = counts["serial"] == counts["parallel"]
    print("same tests passed/skipped on both sides" if same else "COUNTS DIFFER: a test was lost or broke")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
