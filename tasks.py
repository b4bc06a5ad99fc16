"""Invoke tasks: the commands a pipeline user runs, by the same names as `cfops <command>` and the nox
sessions (`invoke --list`), plus the pipelines `check` and `release-proxy`. Each task runs its nox
session; the logic lives in src/cfops.

Which layer for what: `cfops <command>` is the complete command line (every flag; needs the project
installed, e.g. in .venv); `nox -s <command> -- <flags>` runs it in a managed environment; `invoke
<command> --flag` is the same with typed flags and the command's own exit code (2 = bad input) where nox
reports every failure as 1.
"""

from __future__ import annotations

import os
import shlex
import sys
import tempfile
from pathlib import Path
from typing import Any

from invoke.collection import Collection
from invoke.context import Context
from invoke.exceptions import Exit, ParseError
from invoke.program import Program
from invoke.tasks import task

ROOT = Path(__file__).resolve().parent
# cfops.argv is stdlib only: this layer uses it before (and outside) the project's environments.
sys.path.insert(0, str(ROOT / "src"))
from cfops.argv import hand_off_secrets  # noqa: E402


def _parse_tasks_or_exit_2(self: Program) -> None:
    """An unknown flag or task is bad input: one line and exit 2 (invoke itself exits 1, no hook)."""
    try:
        _parse_tasks(self)
    except ParseError as exc:
        raise Exit(f"error: invoke: {exc} (see invoke --help <task>)", code=2) from None


_parse_tasks = Program.parse_tasks
Program.parse_tasks = _parse_tasks_or_exit_2  # type: ignore[method-assign]


def nox(c: Context, session: str, *args: str) -> None:
    """Run nox session(s) (space-separated) with the interpreter running invoke; exit with its code.

    Arguments are quoted, never interpolated; secret header values travel in the environment
    (cfops.argv). nox exits 1 for any failed session: for one session, the command's own code (2 for
    bad input) is read back from CFOPS_EXIT_CODE_FILE, where cfops leaves it.
    """
    shown, env = hand_off_secrets(args)
    argv = [sys.executable, "-m", "nox", "-f", str(ROOT / "noxfile.py"), "-s", *session.split()]
    if shown:
        argv += ["--", *shown]
    fd, codes = tempfile.mkstemp(prefix="cfops-exit-")
    os.close(fd)
    try:
        result = c.run(shlex.join(argv), pty=False, warn=True, env={**env, "CFOPS_EXIT_CODE_FILE": codes})
        if result is None or result.exited == 0:
            return
        recorded = Path(codes).read_text(encoding="utf-8").split()
        single = len(session.split()) == 1
        raise Exit(code=int(recorded[0]) if single and recorded else result.exited)
    finally:
        Path(codes).unlink(missing_ok=True)


def _flags(**values: Any) -> list[str]:
    """--name value for every given value (True: a bare --name); underscores become dashes."""
    out: list[str] = []
    for name, value in values.items():
        flag = "--" + name.replace("_", "-")
        if value is True:
            out.append(flag)
        elif isinstance(value, (list, tuple)):
            for item in value:
                out += [flag, str(item)]
        elif value not in (None, "", 0, False):
            out += [flag, str(value)]
    return out


@task(help={"check": "report drift and write nothing"})
def sync(c: Context, check: bool = False) -> None:
    """Copy the backend into the Worker bundle (cfops sync)."""
    nox(c, "sync", *_flags(check=check))


@task(help={"runtime": "auto | uvicorn | pywrangler", "port": "port to serve on (default 8787)"})
def dev(c: Context, runtime: str = "", port: int = 0) -> None:
    """Run the native Worker locally until Ctrl-C (cfops dev)."""
    nox(c, "dev", *_flags(runtime=runtime, port=port))


@task(help={"port": "proxy port (default 8788)", "backend_port": "backend port (default 8787)"})
def dev_proxy(c: Context, port: int = 0, backend_port: int = 0) -> None:
    """Run the backend and the edge proxy Worker in front of it until Ctrl-C (cfops dev-proxy)."""
    nox(c, "dev-proxy", *_flags(port=port, backend_port=backend_port))


@task(
    iterable=["header"],
    help={
        "base_url": "target (IMMCAD_API_BASE_URL); empty: start the local backend",
        "requests": "measured requests (default 20)",
        "concurrency": "requests in flight (default 5)",
        "header": "extra header 'Name: value' (repeatable; '@env:VAR' reads the value from there)",
        "version_id": "pin a Worker version (Cloudflare-Workers-Version-Overrides)",
        "json": "artifact path; '-' prints it to stdout",
    },
)
def perf(
    c: Context,
    base_url: str = "",
    requests: int = 0,
    concurrency: int = 0,
    header: list[str] | None = None,
    version_id: str = "",
    json: str = "",
) -> None:
    """Latency canary: percentiles, thresholds, verdict (cfops perf; every flag: nox -s perf -- --help)."""
    nox(
        c,
        "perf",
        *_flags(
            base_url=base_url,
            requests=requests,
            concurrency=concurrency,
            header=header or [],
            version_id=version_id,
            json=json,
        ),
    )


@task(
    help={
        "which": "spike (the synced Worker bundle) or origin (src/immcad_api)",
        "run": "start the image, check /healthz, remove it",
        "no_cache": "build every step anew",
    }
)
def image(c: Context, which: str = "spike", run: bool = False, no_cache: bool = False) -> None:
    """Build a container image through the Docker Engine API (cfops image)."""
    if which not in ("spike", "origin"):
        raise Exit(f"error: --which must be spike or origin, not {which!r}", code=2)
    nox(c, "image", which, *_flags(run=run, no_cache=no_cache))


@task(
    help={
        "target": "local | production (secrets required, clean tree, hardened vars)",
        "strict": "a warning fails too",
        "only": "comma-separated check ids (default: all)",
    }
)
def preflight(c: Context, target: str = "local", strict: bool = False, only: str = "") -> None:
    """Release readiness: one report from every check (cfops preflight)."""
    nox(c, "preflight", *_flags(target=target, strict=strict, only=only))


@task(
    help={
        "worker": "native (default) or proxy",
        "dry_run": "bundle and validate only; no credentials needed",
        "strategy": "direct (100%, default) or versions (upload without traffic)",
        "origin": "proxy: the https container origin (IMMCAD_BACKEND_ORIGIN)",
    }
)
def deploy(
    c: Context, worker: str = "native", dry_run: bool = False, strategy: str = "", origin: str = ""
) -> None:
    """Deploy a Worker with the pinned wrangler (cfops deploy)."""
    nox(c, "deploy", worker, *_flags(dry_run=dry_run, strategy=strategy, origin=origin))


@task(help={"worker": "native (default) or proxy", "dry_run": "list the names only; push nothing"})
def secrets(c: Context, worker: str = "native", dry_run: bool = False) -> None:
    """Push the configured secrets in one `wrangler secret bulk` call (cfops secrets)."""
    nox(c, "secrets", *_flags(worker=worker, dry_run=dry_run))


@task(help={"worker": "native (default) or proxy"})
def versions(c: Context, worker: str = "native") -> None:
    """A Worker's current deployment and recent versions (cfops versions)."""
    nox(c, "versions", *_flags(worker=worker))


@task(
    help={
        "worker": "native (default) or proxy",
        "new": "version id that gets --percent of the traffic",
        "old": "version id that keeps the rest (not needed at 100)",
        "percent": "0 to 100",
    }
)
def promote(c: Context, new: str, percent: float, worker: str = "native", old: str = "") -> None:
    """Move traffic between two versions of a Worker (cfops promote)."""
    nox(c, "promote", *_flags(worker=worker, new=new, old=old), "--percent", f"{percent:g}")


@task(help={"worker": "native (default) or proxy", "version": "version id (default: the last at 100%)"})
def rollback(c: Context, worker: str = "native", version: str = "") -> None:
    """Put a Worker back on an earlier version (cfops rollback)."""
    nox(c, "rollback", *_flags(worker=worker, version=version))


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
    """Release pipeline with canary, staged promotion and automatic rollback (cfops release)."""
    flags = _flags(
        dry_run=dry_run, skip_tests=skip_tests, allow_dirty=allow_dirty, base_url=base_url, stages=stages
    )
    nox(c, "release", target, *flags)


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
    nox(
        c,
        "release",
        "proxy",
        *_flags(origin=origin, proxy_url=proxy_url, dry_run=dry_run, allow_dirty=allow_dirty),
    )


@task(
    help={
        "resume": "continue the interrupted release's stages (with canaries) instead of rolling back",
        "worker": "native|proxy: only that Worker's unfinished release or live split",
    }
)
def recover(c: Context, resume: bool = False, worker: str = "") -> None:
    """Finish an interrupted release from its journal: roll back (default) or --resume (cfops recover)."""
    nox(c, "recover", *_flags(resume=resume, worker=worker))


@task
def status(c: Context) -> None:
    """Current deployments (with credentials) and the last artifacts (cfops status)."""
    nox(c, "status")


@task(help={"check": "fail if docs/configuration.md is stale; write nothing"})
def docs(c: Context, check: bool = False) -> None:
    """Regenerate docs/configuration.md from the settings' metadata (cfops docs)."""
    nox(c, "docs", *_flags(check=check))


@task
def lint(c: Context) -> None:
    """ruff + mypy --strict + tsc (nox -s lint)."""
    nox(c, "lint")


@task(aliases=["test"])
def tests(c: Context) -> None:
    """The whole test suite (nox -s tests)."""
    nox(c, "tests")


@task
def check(c: Context) -> None:
    """Lint + tests + preflight, the old `make quality` / `release-preflight`."""
    nox(c, "lint tests preflight")


ns = Collection(
    sync,
    dev,
    dev_proxy,
    perf,
    image,
    preflight,
    deploy,
    secrets,
    versions,
    promote,
    rollback,
    release,
    release_proxy,
    recover,
    status,
    docs,
    lint,
    tests,
    check,
)
