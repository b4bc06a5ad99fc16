"""How fast is a warm `nox -s preflight`, cached and not, and do its checks overlap?

    python3 benchmarks/preflight_timing.py [--runs 5] [--cache-only] [-- PREFLIGHT ARGS]

First (issue 15), the preflight cache: --runs interleaved pairs of a warm no-change `nox -s preflight`
(every expensive check reused from the cache) and the same with `--no-cache`, each pair back to back
so that both see the same load; medians, the ratio cached / --no-cache, and the CPU seconds of each.
Goals: cached wall <= 1.0 s, ratio <= 0.5.

Then (issue 4; left out with --cache-only), all with --no-cache, as the median of --runs warm runs
(after one untimed warm-up that creates/reuses the environment and the Node toolchain):

- the wall time of `python -m nox -s preflight` and of the same `python -m cfops.preflight` call
  run directly in the session's environment;
- each check's duration, from artifacts/preflight.json, and the slowest check;
- the ratio wall / slowest check, against the slowest check *in the same run* (measured while the
  others compete for the CPU) and against that check *run alone* (`--only <it>`);
- nox's own overhead: paired, interleaved runs of both with `--only secrets` (a check that takes
  microseconds), so the difference is not drowned in the slow checks' noise;
- CPU seconds of each process tree (getrusage of the waited-for children). Unlike wall time, CPU does
  not grow with the machine's load, so it tells what a quiet machine would see.

Goals (issue 4): wall <= 1.3 x the slowest single check, wall <= 6 s, nox overhead <= 1 s. Wall times
depend on what else the machine runs: quote them with the load average this prints.
Stdlib only, so it runs from any Python 3.11.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ARTIFACT = ROOT / "artifacts" / "preflight.json"
SESSION_PYTHON = ROOT / ".nox" / "preflight" / "bin" / "python"


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(argv: list[str]) -> tuple[float, dict[str, object], float]:
    """Wall seconds, the JSON report, and the CPU seconds of the whole process tree."""
    cpu_before = _children_cpu()
    started = time.perf_counter()
    result = subprocess.run(
        argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, check=False
    )
    wall = time.perf_counter() - started
    cpu = _children_cpu() - cpu_before
    if result.returncode not in (0, 1):
        sys.exit(f"{' '.join(argv)} exited with {result.returncode}: {result.stderr.strip()[-500:]}")
    report: dict[str, object] = json.loads(ARTIFACT.read_text(encoding="utf-8"))
    return wall, report, cpu


def durations(report: dict[str, object]) -> dict[str, float]:
    findings = report["findings"]
    assert isinstance(findings, list)
    return {str(f["id"]): float(f["duration_seconds"]) for f in findings}


def cache_pairs(cached_cmd: list[str], runs: int) -> list[str]:
    """Interleaved pairs: a cached no-change run, then the same with --no-cache (same load for both)."""
    cached_walls, full_walls, cached_cpus, full_cpus, ratios, reused = [], [], [], [], [], []
    for _ in range(runs):
        wall, report, cpu = timed(cached_cmd)
        cached_walls.append(wall)
        cached_cpus.append(cpu)
        findings = report["findings"]
        assert isinstance(findings, list)
        reused.append(sum(1 for f in findings if f.get("cached")))
        full_wall, _, full_cpu = timed([*cached_cmd, "--no-cache"])
        full_walls.append(full_wall)
        full_cpus.append(full_cpu)
        ratios.append(wall / full_wall)
    load = os.getloadavg()
    cached_wall, full_wall = statistics.median(cached_walls), statistics.median(full_walls)
    return [
        f"preflight cache: median of {runs} interleaved pairs, {os.cpu_count()} CPUs, "
        f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}",
        f"nox -s preflight (no change, cached)   {cached_wall:6.2f} s wall, "
        f"{statistics.median(cached_cpus):.2f} s CPU   (goal <= 1.0 s); checks reused: {min(reused)}",
        f"nox -s preflight -- --no-cache         {full_wall:6.2f} s wall, "
        f"{statistics.median(full_cpus):.2f} s CPU",
        f"ratio cached / --no-cache, same pair   {statistics.median(ratios):6.2f}          (goal <= 0.5)",
    ]


def main() -> int:
    parser = argparse.ArgumentParser(
        prog="benchmarks/preflight_timing.py", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--cache-only", action="store_true", help="only the cached / --no-cache pairs")
    parser.add_argument("preflight_args", nargs="*", help="passed to preflight (put them after --)")
    args = parser.parse_args()
    extra = list(args.preflight_args)
    cached_cmd = [sys.executable, "-m", "nox", "-s", "preflight", "--", *extra]
    # Warm-up: creates or reuses .nox/preflight and the Node toolchain, and fills the cache; not timed.
    for _ in range(2):
        subprocess.run(
            cached_cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False
        )
    if not SESSION_PYTHON.exists():
        sys.exit(f"{SESSION_PYTHON} missing: did `nox -s preflight` run?")
    print("\n".join(cache_pairs(cached_cmd, args.runs)))
    if args.cache_only:
        return 0
    print()
    extra = [*extra, "--no-cache"]
    nox_cmd = [*cached_cmd, "--no-cache"]
    direct_cmd = [str(SESSION_PYTHON), "-m", "cfops.preflight", *extra]

    nox_walls, direct_walls, inner_walls, same_run_ratios, cpus = [], [], [], [], []
    per_check: dict[str, list[float]] = {}
    for _ in range(args.runs):
        wall, report, cpu = timed(nox_cmd)
        nox_walls.append(wall)
        cpus.append(cpu)
        checks = durations(report)
        for check_id, seconds in checks.items():
            per_check.setdefault(check_id, []).append(seconds)
        inner_walls.append(float(report["wall_seconds"]))  # type: ignore[arg-type]
        same_run_ratios.append(wall / max(checks.values()))
        direct_walls.append(timed(direct_cmd)[0])

    # nox's fixed cost, measured where the checks themselves take no time.
    overheads, overhead_cpus = [], []
    for _ in range(args.runs):
        light = ["--only", "secrets", "--no-cache"]
        light_nox = timed([sys.executable, "-m", "nox", "-s", "preflight", "--", *light])
        light_direct = timed([str(SESSION_PYTHON), "-m", "cfops.preflight", *light])
        overheads.append(light_nox[0] - light_direct[0])
        overhead_cpus.append(light_nox[2] - light_direct[2])

    medians = {check_id: statistics.median(values) for check_id, values in per_check.items()}
    slowest_id = max(medians, key=lambda c: medians[c])
    alone = [durations(timed([*direct_cmd, "--only", slowest_id])[1])[slowest_id] for _ in range(args.runs)]

    nox_wall, direct_wall = statistics.median(nox_walls), statistics.median(direct_walls)
    cpu, cpu_count = statistics.median(cpus), os.cpu_count() or 1
    load = os.getloadavg()
    lines = [
        f"preflight timing: median of {args.runs} warm runs, {cpu_count} CPUs, "
        f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}",
        "",
        "check durations (median, while all checks run at once):",
        *(f"  {check_id:<14} {seconds:6.2f} s" for check_id, seconds in medians.items()),
        "",
        f"nox -s preflight wall            {nox_wall:6.2f} s   (goal <= 6 s)",
        f"python -m cfops.preflight wall   {direct_wall:6.2f} s",
        f"runner wall (checks only)        {statistics.median(inner_walls):6.2f} s",
        f"slowest check ({slowest_id})     {medians[slowest_id]:6.2f} s in the run, "
        f"{statistics.median(alone):.2f} s alone",
        f"ratio wall / slowest, same run   {statistics.median(same_run_ratios):6.2f}     (goal <= 1.3)",
        f"ratio wall / slowest, alone      {nox_wall / statistics.median(alone):6.2f}",
        f"nox overhead (--only secrets)    {statistics.median(overheads):6.2f} s   (goal <= 1 s), "
        f"CPU {statistics.median(overhead_cpus):.2f} s",
        f"CPU of a whole nox run           {cpu:6.2f} s   (all processes; on {cpu_count} idle CPUs the wall "
        f"cannot drop below ~{cpu / cpu_count:.2f} s)",
    ]
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
