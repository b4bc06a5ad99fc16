"""Invoke tasks: pipelines over the nox sessions (`invoke --list`). The logic lives in src/cfops."""

from __future__ import annotations

import shlex
import sys

from invoke.collection import Collection
from invoke.context import Context
from invoke.exceptions import Exit
from invoke.tasks import task


def nox(c: Context, session: str, *args: str) -> None:
    """Run nox session(s) (space-separated) with the interpreter running invoke; exit with its code.

    Arguments are quoted, never interpolated. A failure exits with the session's own code (2 for bad
    input, 1 for a failed check) instead of invoke's multi-line "bad command exit code" report.
    """
    argv = [sys.executable, "-m", "nox", "-s", *session.split()]
    if args:
        argv += ["--", *args]
    result = c.run(shlex.join(argv), pty=False, warn=True)
    if result is not None and result.exited != 0:
        raise Exit(code=result.exited)


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


@task(
    help={
        "target": "local (rehearsal, default: no credentials, nothing remote changes) or production",
        "dry_run": "print the plan with the exact commands; change nothing remote",
        "skip_tests": "leave the test suite out",
        "allow_dirty": "production: allow uncommitted changes",
        "base_url": "production: the native Worker's URL for the canary (IMMCAD_API_BASE_URL)",
        "stages": "production: traffic percentages after the canary (default 10,50,100)",
    }
)
def release(
    c: Context,
    target: str = "local",
    dry_run: bool = False,
    skip_tests: bool = False,
    allow_dirty: bool = False,
    base_url: str = "",
    stages: str = "",
) -> None:
    """Release pipeline with canary, staged promotion and automatic rollback (nox -s release)."""
    args = [target]
    args += [flag for flag, on in (("--dry-run", dry_run), ("--skip-tests", skip_tests)) if on]
    args += ["--allow-dirty"] if allow_dirty else []
    args += ["--base-url", base_url] if base_url else []
    args += ["--stages", stages] if stages else []
    nox(c, "release", *args)


@task(
    help={
        "origin": "the https container origin (IMMCAD_BACKEND_ORIGIN)",
        "proxy_url": "where the deployed proxy answers, for the smoke (IMMCAD_PROXY_URL)",
        "dry_run": "print the plan; bundle the proxy without deploying it",
        "allow_dirty": "allow uncommitted changes",
    }
)
def release_proxy(
    c: Context, origin: str = "", proxy_url: str = "", dry_run: bool = False, allow_dirty: bool = False
) -> None:
    """Emergency path: deploy the edge proxy in front of the origin, smoke it, roll back on failure."""
    args = ["proxy"]
    args += ["--origin", origin] if origin else []
    args += ["--proxy-url", proxy_url] if proxy_url else []
    args += [flag for flag, on in (("--dry-run", dry_run), ("--allow-dirty", allow_dirty)) if on]
    nox(c, "release", *args)


@task(help={"worker": "native (default) or proxy", "version": "version id (default: the last at 100%)"})
def rollback(c: Context, worker: str = "native", version: str = "") -> None:
    """Put a Worker back on an earlier version (nox -s rollback)."""
    nox(c, "rollback", "--worker", worker, *(["--version", version] if version else []))


@task(help={"resume": "continue the interrupted release's stages (with canaries) instead of rolling back"})
def recover(c: Context, resume: bool = False) -> None:
    """Finish an interrupted release from its journal: roll back (default) or --resume (nox -s recover)."""
    nox(c, "recover", *(["--resume"] if resume else []))


@task
def status(c: Context) -> None:
    """Current deployments (with credentials) and the last artifacts (nox -s status)."""
    nox(c, "status")


@task
def check(c: Context) -> None:
    """Lint + tests + preflight, the old `make quality` / `release-preflight`."""
    nox(c, "lint tests preflight")


ns = Collection(
    sync,
    dev,
    dev_proxy,
    image,
    preflight,
    lint,
    test,
    release,
    release_proxy,
    rollback,
    recover,
    status,
    check,
)
