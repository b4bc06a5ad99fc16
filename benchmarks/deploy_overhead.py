"""What a deploy costs: bare `wrangler deploy` versus `cfops deploy proxy`, against the fake Cloudflare API.

    .nox/tests/bin/python benchmarks/deploy_overhead.py [--runs 3]

Runs in a throw-away copy of the project (node_modules linked), so nothing of this checkout changes. For
each run it prints the wall time and the number of API requests; at the end the medians and the ratio
(issue 15's goal: cfops deploy proxy <= 1.3 x bare wrangler deploy). Both run wrangler on the same Node
(the pinned one). The difference is what cfops adds: the Python start-up, the live version's look-up
(over httpx, no second Node process) and the artifact.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.conftest import _ignore_generated, clean_env, copy_project  # noqa: E402
from tests.fakes.cloudflare_api import FakeCloudflare  # noqa: E402

from cfops.config import load_settings  # noqa: E402
from cfops.node import choice  # noqa: E402

ORIGIN = "https://origin.example.com"


def project_copy(base: Path) -> Path:
    root = copy_project(base / "project", ("pyproject.toml", "src/immcad_api", "config", "data"))
    shutil.copytree(ROOT / "backend-cloudflare", root / "backend-cloudflare", ignore=_ignore_generated)
    (root / "backend-cloudflare/node_modules").symlink_to(ROOT / "backend-cloudflare/node_modules")
    return root


def timed(argv: list[str], cwd: Path, env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run(argv, cwd=cwd, env=env, check=True, capture_output=True)
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    if not (ROOT / "backend-cloudflare/node_modules/.bin/wrangler").exists():
        print(
            "run `nox -s deploy_proxy -- --dry-run` once first (installs the pinned wrangler)",
            file=sys.stderr,
        )
        return 2
    results: dict[str, list[tuple[float, int]]] = {"wrangler deploy": [], "cfops deploy proxy": []}
    with tempfile.TemporaryDirectory() as tmp, FakeCloudflare() as api:
        project = project_copy(Path(tmp))
        env = clean_env(CFOPS_ROOT=str(project), IMMCAD_BACKEND_ORIGIN=ORIGIN, **api.wrangler_env())
        bare_env = {**env, "WRANGLER_SEND_METRICS": "false", "WRANGLER_HIDE_BANNER": "true"}
        # The bare run gets the Node cfops runs wrangler on (the pinned one), first on PATH: wrangler's
        # `#!/usr/bin/env node` would otherwise find the system's, which may be too old for it.
        node = choice(load_settings(project, env))
        if node is not None:
            bare_env["PATH"] = os.pathsep.join([str(node.parent), bare_env.get("PATH", "")])
        wrangler = str(project / "backend-cloudflare/node_modules/.bin/wrangler")
        commands = {
            "wrangler deploy": (
                [
                    wrangler,
                    "deploy",
                    "--config",
                    "wrangler.backend-proxy.jsonc",
                    "--var",
                    f"BACKEND_ORIGIN:{ORIGIN}",
                ],
                project / "backend-cloudflare",
                bare_env,
            ),
            "cfops deploy proxy": ([sys.executable, "-m", "cfops", "deploy", "proxy"], project, env),
        }
        for run in range(args.runs):
            for label, (argv, cwd, environ) in commands.items():
                before = len(api.requests)
                seconds = timed(argv, cwd, environ)
                requests = len(api.requests) - before
                results[label].append((seconds, requests))
                print(f"run {run + 1}  {label:<20} {seconds:6.2f} s  {requests:2d} API requests")
    print(f"\nmedian of {args.runs} runs (load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs):")
    for label, samples in results.items():
        seconds = statistics.median(s for s, _ in samples)
        requests = statistics.median(r for _, r in samples)
        print(f"  {label:<20} {seconds:6.2f} s  {requests:4.0f} API requests")
    medians = {label: statistics.median(s for s, _ in samples) for label, samples in results.items()}
    ratio = medians["cfops deploy proxy"] / medians["wrangler deploy"]
    print(f"  ratio cfops / bare    {ratio:6.2f}      (goal <= 1.3)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
