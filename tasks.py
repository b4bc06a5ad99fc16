"""Invoke tasks: pipelines over the nox sessions (`invoke --list`). The logic lives in src/cfops."""

from __future__ import annotations

import shlex
import sys

from invoke.collection import Collection
from invoke.context import Context
from invoke.exceptions import Exit
from invoke.tasks import task


def nox(c: Context, session: str, *args: str) -> None:
    """Run one nox session with the interpreter running invoke; arguments are quoted, never interpolated."""
    argv = [sys.executable, "-m", "nox", "-s", session]
    if args:
        argv += ["--", *args]
    c.run(shlex.join(argv), pty=False)


@task(help={"check": "report drift and write nothing"})
def sync(c: Context, check: bool = False) -> None:
    """Copy the backend into the Worker bundle (nox -s sync)."""
    nox(c, "sync", *(["--check"] if check else []))


@task(help={"runtime": "auto | uvicorn | pywrangler", "port": "port to serve on (default 8787)"})
def dev(c: Context, runtime: str = "auto", port: int = 0) -> None:
    """Run the native Worker locally until Ctrl-C (nox -s dev)."""
    nox(c, "dev", "--runtime", runtime, *(["--port", str(port)] if port else []))


@task(help={"port": "proxy port (default 8788)", "backend_port": "backend port (default 8787)"})
def dev_proxy(c: Context, port: int = 0, backend_port: int = 0) -> None:
    """Run the backend and the edge proxy Worker in front of it until Ctrl-C (nox -s dev_proxy)."""
    args = [
        *(["--port", str(port)] if port else []),
        *(["--backend-port", str(backend_port)] if backend_port else []),
    ]
    nox(c, "dev_proxy", *args)


@task(
    help={
        "which": "spike (the synced Worker bundle) or origin (src/immcad_api)",
        "run": "start the image, check /healthz, remove it",
        "no_cache": "build every step anew",
    }
)
def image(c: Context, which: str = "spike", run: bool = False, no_cache: bool = False) -> None:
    """Build a container image through the Docker Engine API (nox -s spike_image / origin_image)."""
    if which not in ("spike", "origin"):
        raise Exit(f"error: --which must be spike or origin, not {which!r}", code=2)
    flags = [flag for flag, on in (("--run", run), ("--no-cache", no_cache)) if on]
    nox(c, f"{which}_image", *flags)


@task(
    help={
        "target": "local | production (secrets required, clean tree, hardened vars)",
        "strict": "a warning fails too",
        "only": "comma-separated check ids (default: all)",
    }
)
def preflight(c: Context, target: str = "local", strict: bool = False, only: str = "") -> None:
    """Release readiness: one report from every check (nox -s preflight)."""
    nox(
        c,
        "preflight",
        "--target",
        target,
        *(["--strict"] if strict else []),
        *(["--only", only] if only else []),
    )


@task
def lint(c: Context) -> None:
    """ruff + mypy --strict (nox -s lint)."""
    nox(c, "lint")


@task
def test(c: Context) -> None:
    """The whole test suite (nox -s tests)."""
    nox(c, "tests")


ns = Collection(sync, dev, dev_proxy, image, preflight, lint, test)
