"""Benchmark: a no-change rebuild through cfops against `docker build` on the same Dockerfile (issue 6).

    PYTHON_IMAGE=immcad-python-base:bookworm python benchmarks/image_build.py [--rounds N] [spike|origin ...]

For each image: one warm-up build through cfops (fills the cache; the spike is synced once), then
``--rounds`` (default 11) rounds that each time a no-change rebuild three ways, in alternating order:

- ``docker build`` CLI: the classic builder (DOCKER_BUILDKIT=0, the builder the Engine API uses), same
  Dockerfile, context, build args, labels and tag;
- ``build_image()``: the cfops library call in a warm process (what the release pipeline calls);
- ``python -m cfops.image``: a fresh process, so interpreter start-up and imports are included.

Every rebuild must be all cache hits and give the same image id. Goals (exit 1 if one is missed):
library rebuild median <= 1.5 x CLI median; build context <= 1 MiB; image <= base image + 80 MiB.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from cfops import image, procs  # noqa: E402
from cfops.config import load_settings  # noqa: E402

RATIO_GOAL = 1.5
CONTEXT_GOAL = 1 << 20
ADDED_GOAL = 80 << 20


class Silent:
    def step_started(self, step: image.Step) -> None:
        pass

    def step_finished(self, step: image.Step) -> None:
        pass

    def output(self, step: image.Step | None, line: str) -> None:
        pass


def timed_cli(argv: list[str], env: dict[str, str]) -> tuple[float, str]:
    started = time.perf_counter()
    result = procs.run(argv, cwd=ROOT, env=env, echo=False)
    return time.perf_counter() - started, result.stdout.strip()


def bench(which: image.Which, rounds: int) -> tuple[list[str], bool]:
    settings = load_settings(ROOT, os.environ)
    warm = image.build_image(settings, which, display=Silent())  # warm-up, syncs the spike bundle
    target = image.target_for(settings, which)
    labels = image.provenance(settings, target).labels
    cli = ["docker", "build", "-q", "-f", warm.dockerfile, "--build-arg", f"PYTHON_IMAGE={warm.base_image}"]
    cli += [arg for name, value in sorted(labels.items()) for arg in ("--label", f"{name}={value}")]
    cli += ["-t", warm.tag, "."]
    cli_env = {"DOCKER_BUILDKIT": "0"}
    proc = [sys.executable, "-m", "cfops.image", which, "--no-sync"]
    proc_env = {"CI": "1", "PYTHONPATH": str(ROOT / "src")}
    timed_cli(cli, cli_env)  # warm the CLI path as well (same cache, so no new layers)

    times: dict[str, list[float]] = {"cli": [], "lib": [], "proc": []}
    ids = set()
    for round_no in range(rounds):
        order = ["cli", "lib", "proc"] if round_no % 2 == 0 else ["proc", "lib", "cli"]
        for kind in order:
            if kind == "cli":
                seconds, image_id = timed_cli(cli, cli_env)
                ids.add(image_id)
            elif kind == "proc":
                seconds, _ = timed_cli(proc, proc_env)
            else:
                started = time.perf_counter()
                with contextlib.redirect_stdout(io.StringIO()):
                    report = image.build_image(settings, which, sync_bundle=False, display=Silent())
                seconds = time.perf_counter() - started
                assert report.steps_built == 0, (
                    f"{which}: a no-change rebuild built {report.steps_built} steps"
                )
                ids.add(report.image_id)
            times[kind].append(seconds)
    assert ids == {warm.image_id}, f"{which}: rebuilds gave other images: {ids - {warm.image_id}}"

    med = {kind: statistics.median(values) for kind, values in times.items()}
    ratio = med["lib"] / med["cli"]
    proc_ratio = med["proc"] / med["cli"]
    added = warm.added_bytes if warm.added_bytes is not None else warm.size_bytes
    goals = [
        (f"library rebuild / CLI rebuild = {ratio:.2f} (goal <= {RATIO_GOAL})", ratio <= RATIO_GOAL),
        (
            f"build context {warm.context_bytes / 1024:.0f} KiB (goal <= 1024 KiB)",
            warm.context_bytes <= CONTEXT_GOAL,
        ),
        (f"image {added / 2**20:.1f} MiB over the base (goal <= 80 MiB)", added <= ADDED_GOAL),
    ]

    def row(label: str, values: list[float]) -> str:
        return f"  {label:<34} median {statistics.median(values):6.3f} s   min {min(values):6.3f} s"

    lines = [
        f"{which}: {warm.tag} {warm.image_id[7:19]}  {warm.size_bytes / 2**20:.1f} MiB "
        f"(base {warm.base_image} {(warm.base_size_bytes or 0) / 2**20:.1f} MiB), {warm.layers} layers, "
        f"{warm.steps_total} steps, context {warm.context_bytes} bytes in {warm.context_files} entries",
        row("docker build (CLI, classic)", times["cli"]),
        row("cfops build_image() (library)", times["lib"]),
        row("python -m cfops.image (process)", times["proc"]),
        f"  process / CLI = {proc_ratio:.2f} (not a goal: includes interpreter start-up and imports)",
    ]
    lines += [f"  {'PASS' if ok else 'FAIL'} {text}" for text, ok in goals]
    return lines, all(ok for _, ok in goals)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("which", nargs="*", choices=[*image.IMAGES, []], help="default: both")
    parser.add_argument("--rounds", type=int, default=11)
    args = parser.parse_args()
    settings = load_settings(ROOT, os.environ)
    problem = image.engine_problem(settings)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    versions = procs.run(
        ["docker", "version", "--format", "{{.Client.Version}}/{{.Server.Version}}"], echo=False
    )
    print(
        f"image rebuild benchmark: {args.rounds} rounds, docker client/engine {versions.stdout.strip()}, "
        f"{os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}"
    )
    ok = True
    for which in args.which or image.IMAGES:
        lines, passed = bench(which, args.rounds)
        print("\n".join(lines))
        ok = ok and passed
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
