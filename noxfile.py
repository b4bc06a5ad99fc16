"""Sessions: one environment and one entry point per command. The logic lives in src/cfops."""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import nox

nox.needs_version = ">=2024.10.9"
nox.options.default_venv_backend = "uv|virtualenv"
nox.options.reuse_venv = "yes"
nox.options.sessions = ["lint", "tests"]

ROOT = Path(__file__).resolve().parent
LOCK = ROOT / "requirements" / "lock.txt"
LINT_PATHS = ("src", "tests", "noxfile.py", "tasks.py", "benchmarks")


def install(session: nox.Session, extras: str = "") -> None:
    """Install the project (editable) against the lock, once per change of pyproject.toml or the lock.

    Reused environments skip the installer entirely, which keeps a warm session's overhead well under
    a second; source edits need no reinstall because the install is editable.
    """
    digest = hashlib.sha256(
        (ROOT / "pyproject.toml").read_bytes() + LOCK.read_bytes() + extras.encode()
    ).hexdigest()
    marker = Path(session.virtualenv.location) / ".cfops-installed"
    if marker.is_file() and marker.read_text() == digest:
        return
    target = f".[{extras}]" if extras else "."
    # Bytecode at install time: uv skips it by default, and where PYTHONDONTWRITEBYTECODE is set (as on
    # the shared dev machine) every process would otherwise compile FastAPI from source (~1.5 s).
    session.install("-c", str(LOCK), "-e", target, env={"UV_COMPILE_BYTECODE": "1"})
    marker.write_text(digest)


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6").prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def cfops(session: nox.Session, command: str, *args: str) -> None:
    """Run ``python -m cfops.<command> args`` in the session's environment; exit nox with its code.

    Not session.run: that maps every failure to exit 1 (we promise 2 for bad input), and when nox is
    killed its child keeps running. Here the child gets SIGTERM if nox dies, and Ctrl-C gives the
    child time to stop the services it owns.
    """
    if session._runner.global_config.install_only:
        session.log(f"skipping cfops {command}: --install-only")
        return
    bin_dir = session.bin
    env = {**os.environ, **{k: v for k, v in session.env.items() if v is not None}}
    env["PATH"] = os.pathsep.join([bin_dir, env.get("PATH", "")])
    env["VIRTUAL_ENV"] = str(session.virtualenv.location)
    argv = [str(Path(bin_dir) / "python"), "-m", f"cfops.{command}", *args]
    session.log(" ".join(["cfops", command, *args]))
    preexec = _die_with_parent if sys.platform.startswith("linux") else None
    proc = subprocess.Popen(argv, cwd=ROOT, env=env, preexec_fn=preexec)
    try:
        code = proc.wait()
    except KeyboardInterrupt:
        # The terminal's Ctrl-C reached the child as well (same process group): let it clean up.
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.terminate()
            proc.wait(timeout=30)
        raise
    if code != 0:
        sys.exit(code)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff, mypy --strict and import layers over src/, noxfile.py, tasks.py; tsc over the Worker."""
    install(session, "dev")
    session.run("ruff", "check", *LINT_PATHS)
    session.run("ruff", "format", "--check", *LINT_PATHS)
    session.run("mypy")
    # The import layers of [tool.importlinter] (pyproject.toml): a cycle or an upward import fails lint.
    session.run("lint-imports", "--no-logo", "--no-cache")
    cfops(session, "tscheck")


@nox.session
def tests(session: nox.Session) -> None:
    """The whole test suite (unit + integration against real uvicorn, wrangler/workerd, Docker)."""
    install(session, "dev")
    session.run("pytest", *(session.posargs or ("tests",)))


@nox.session
def sync(session: nox.Session) -> None:
    """Copy backend source/config/data into backend-cloudflare/ (`-- --check`: only report drift)."""
    install(session)
    cfops(session, "sync", *session.posargs)


@nox.session
def dev(session: nox.Session) -> None:
    """Sync, then run the native Worker locally (pywrangler dev, or uvicorn fallback) until Ctrl-C."""
    install(session, "worker")
    cfops(session, "dev", *session.posargs)


@nox.session
def perf_smoke(session: nox.Session) -> None:
    """Latency canary: percentiles, thresholds, verdict (no base URL: measures the local backend)."""
    install(session)
    cfops(session, "perf", *session.posargs)


@nox.session(default=False)
def perf_fidelity(session: nox.Session) -> None:
    """Benchmark: perf_smoke's numbers next to wrk's on one pinned local server (needs wrk; a quiet box)."""
    install(session, "dev")
    session.run("python", "benchmarks/perf_fidelity.py", *session.posargs)


@nox.session
def dev_proxy(session: nox.Session) -> None:
    """Sync, run the backend and the edge proxy Worker (wrangler dev, workerd) in front of it until Ctrl-C."""
    install(session, "worker")
    cfops(session, "proxy", *session.posargs)


@nox.session(tags=["image"])
def spike_image(session: nox.Session) -> None:
    """Sync, then build the spike image (backend-cloudflare/Dockerfile) via the Docker Engine API."""
    install(session)
    cfops(session, "image", "spike", *session.posargs)


@nox.session(tags=["image"])
def origin_image(session: nox.Session) -> None:
    """Build the origin image (Dockerfile: src/immcad_api) via the Docker Engine API."""
    install(session)
    cfops(session, "image", "origin", *session.posargs)


@nox.session
def preflight(session: nox.Session) -> None:
    """Release readiness: configs, measured bundles, startup, sync, edge contract, secrets, CI, git."""
    install(session)
    cfops(session, "preflight", *session.posargs)


# ------------------------------------------------------------------ deploys (change remote state)


@nox.session(default=False, tags=["remote"])
def deploy_native(session: nox.Session) -> None:
    """Sync, then deploy the native Python Worker (`-- --dry-run`, `--strategy versions`, `--runner`)."""
    install(session, "worker")
    cfops(session, "deploy", "native", *session.posargs)


@nox.session(default=False, tags=["remote"])
def deploy_proxy(session: nox.Session) -> None:
    """Deploy the edge proxy with BACKEND_ORIGIN from IMMCAD_BACKEND_ORIGIN (`-- --dry-run`, `--strategy`)."""
    install(session)
    cfops(session, "deploy", "proxy", *session.posargs)


@nox.session(default=False, tags=["remote"])
def secrets_sync(session: nox.Session) -> None:
    """Push the configured secrets in one `wrangler secret bulk` call (`-- --dry-run` lists names only)."""
    install(session)
    cfops(session, "secrets", *session.posargs)


@nox.session(default=False, tags=["remote"])
def rollback(session: nox.Session) -> None:
    """Roll a Worker back (`-- --worker native|proxy --version ID`; default: last version at 100%)."""
    install(session)
    cfops(session, "rollback", *session.posargs)


@nox.session(default=False, tags=["remote"])
def versions(session: nox.Session) -> None:
    """A Worker's current deployment and recent versions as tables (`-- --worker native|proxy`)."""
    install(session)
    cfops(session, "versions", *session.posargs)


@nox.session(default=False, tags=["remote"])
def promote(session: nox.Session) -> None:
    """Move traffic between two versions: `-- --worker native --new ID --old ID --percent 10`."""
    install(session)
    cfops(session, "promote", *session.posargs)


# ------------------------------------------------------------------ pipelines (invoke tasks run these)


@nox.session(default=False)
def release(session: nox.Session) -> None:
    """Release pipeline: `-- local` (rehearsal, default), `-- production`, `-- proxy`; `--dry-run` plans."""
    install(session, "dev,worker")
    cfops(session, "release", *session.posargs)


@nox.session(default=False, tags=["remote"])
def recover(session: nox.Session) -> None:
    """Finish an interrupted release: roll back to its stable version (default) or `-- --resume`."""
    install(session, "dev,worker")
    cfops(session, "recover", *session.posargs)


@nox.session(default=False)
def status(session: nox.Session) -> None:
    """Each Worker's current deployment (with credentials) and the last artifacts."""
    install(session)
    cfops(session, "status", *session.posargs)
