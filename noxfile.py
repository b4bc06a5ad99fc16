"""Sessions: one environment and one entry point per command. The logic lives in src/cfops."""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

import nox

ROOT = Path(__file__).resolve().parent
# cfops.argv is stdlib only: the session layer uses it before (and outside) the project's environments.
sys.path.insert(0, str(ROOT / "src"))
from cfops.argv import hand_off_secrets  # noqa: E402

nox.needs_version = ">=2024.10.9"
nox.options.default_venv_backend = "uv|virtualenv"
nox.options.reuse_venv = "yes"
nox.options.sessions = ["lint", "tests"]

LOCK = ROOT / "requirements" / "lock.txt"
LINT_PATHS = ("src", "tests", "noxfile.py", "tasks.py", "benchmarks")


def install(session: nox.Session, extras: str = "", *, node: bool = False) -> None:
    """Install the project (editable) against the lock, once per change of pyproject.toml or the lock.

    Reused environments skip the installer entirely, which keeps a warm session's overhead well under
    a second; source edits need no reinstall because the install is editable. Without a virtualenv
    (``--no-venv``, as the tests run the sessions) the running interpreter already has the project.

    ``node``: also the Worker's pinned Node toolchain (`cfops toolchain`: npm ci when the lock changed),
    as part of the install, so ``nox --install-only`` in a CI step without secrets installs it and the step
    with the API token installs nothing (npm's install scripts never see the token).
    """
    if session.venv_backend == "none":
        return
    _install_project(session, extras)
    if node:
        session.run_install("python", "-m", "cfops", "toolchain")


def _install_project(session: nox.Session, extras: str) -> None:
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


def bytecode_env(session: nox.Session) -> dict[str, str | None]:
    """Let the session's processes keep compiled bytecode, under the session's own directory.

    Where PYTHONDONTWRITEBYTECODE is set (as on the shared dev machine), every process compiles cfops,
    the backend and every test module (pytest's assertion rewriting) from source again: a tenth to a
    third of a second per start-up, paid by each preflight and by each child process of the tests.
    PYTHONPYCACHEPREFIX keeps that bytecode out of the source tree, which is what the variable is set
    for; Python checks each cached file against its source, so an edit is never served stale.
    """
    if session.venv_backend == "none":
        return {}
    if not os.environ.get("PYTHONDONTWRITEBYTECODE") or os.environ.get("PYTHONPYCACHEPREFIX"):
        return {}
    prefix = Path(session.virtualenv.location) / "pycache"
    return {"PYTHONDONTWRITEBYTECODE": None, "PYTHONPYCACHEPREFIX": str(prefix)}


def cfops(session: nox.Session, command: str, *args: str) -> None:
    """Run ``cfops <command> args`` in the session's environment with nox's own ``session.run``.

    A failure is reported by nox like any failed command ("Command … failed with exit code 2", then
    "Session … failed" and the summary); nox itself exits 1 for every failed session, so the precise
    code (2 = bad input) is in that line, kept by ``cfops`` run directly, and given back by the invoke
    tasks. Secret header values move from the arguments into the child's environment (cfops.argv), so
    neither nox's log line nor the child's argv holds one. Ctrl-C reaches the child too (same process
    group): it gets a minute to stop the services it owns; if nox is killed outright, the child is told
    by its parent-death signal (CFOPS_PARENT_PID).
    """
    shown, secret_env = hand_off_secrets(args)
    session.run(
        "python",
        "-m",
        "cfops",
        command,
        *shown,
        env={**secret_env, "CFOPS_PARENT_PID": str(os.getpid()), **bytecode_env(session)},
        stderr=None,  # the command's errors and warnings stay on stderr (nox would fold them into stdout)
        interrupt_timeout=60.0,
        terminate_timeout=30.0,
    )


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
    env = bytecode_env(session)
    if session.posargs:
        session.run("pytest", *session.posargs, env=env)
        return
    # Timing-sensitive tests (latency percentiles, health-poll deadlines) measure wall time, which a
    # second worker on a 2-core machine distorts: they run alone after the parallel phase.
    session.run("pytest", "-m", "not serial", "tests", env=env)
    session.run("pytest", "-m", "serial", "-n", "0", "tests", env=env)


# ------------------------------------------------------------------ commands: `cfops <name>`, same name here
# (cfops/commands.py lists them; tests/unit/test_front_door.py checks the three layers agree)


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


@nox.session(name="dev-proxy")
def dev_proxy(session: nox.Session) -> None:
    """Sync, run the backend and the edge proxy Worker (wrangler dev, workerd) in front of it until Ctrl-C."""
    install(session, "worker")
    cfops(session, "dev-proxy", *session.posargs)


@nox.session
def perf(session: nox.Session) -> None:
    """Latency canary: percentiles, thresholds, verdict (no base URL: measures the local backend)."""
    install(session)
    cfops(session, "perf", *session.posargs)


@nox.session(default=False)
def perf_fidelity(session: nox.Session) -> None:
    """Benchmark: perf's numbers next to wrk's on one pinned local server (needs wrk; a quiet box)."""
    install(session, "dev")
    session.run("python", "benchmarks/perf_fidelity.py", *session.posargs)


@nox.session
def image(session: nox.Session) -> None:
    """Build an image via the Docker Engine API: `-- spike` (the synced Worker bundle) or `-- origin`."""
    install(session)
    cfops(session, "image", *session.posargs)


@nox.session
def preflight(session: nox.Session) -> None:
    """Release readiness: configs, measured bundles, startup, sync, edge contract, secrets, CI, git."""
    install(session)
    cfops(session, "preflight", *session.posargs)


@nox.session
def docs(session: nox.Session) -> None:
    """Regenerate docs/configuration.md from the settings' metadata (`-- --check`: fail if stale)."""
    install(session)
    cfops(session, "docs", *session.posargs)


# ------------------------------------------------------------------ remote state (default=False)


@nox.session(default=False, tags=["remote"])
def deploy(session: nox.Session) -> None:
    """Deploy a Worker: `-- native` (sync first) or `-- proxy`; `--dry-run`, `--strategy versions`."""
    install(session, "worker", node=True)
    cfops(session, "deploy", *session.posargs)


@nox.session(default=False, tags=["remote"])
def secrets(session: nox.Session) -> None:
    """Push the configured secrets in one `wrangler secret bulk` call (`-- --dry-run` lists names only)."""
    install(session, node=True)
    cfops(session, "secrets", *session.posargs)


@nox.session(default=False, tags=["remote"])
def versions(session: nox.Session) -> None:
    """A Worker's current deployment and recent versions as tables (`-- --worker native|proxy`)."""
    install(session, node=True)
    cfops(session, "versions", *session.posargs)


@nox.session(default=False, tags=["remote"])
def promote(session: nox.Session) -> None:
    """Move traffic between two versions: `-- --worker native --new ID --old ID --percent 10`."""
    install(session, node=True)
    cfops(session, "promote", *session.posargs)


@nox.session(default=False, tags=["remote"])
def rollback(session: nox.Session) -> None:
    """Roll a Worker back (`-- --worker native|proxy --version ID`; default: last version at 100%)."""
    install(session, node=True)
    cfops(session, "rollback", *session.posargs)


@nox.session(default=False)
def release(session: nox.Session) -> None:
    """Release pipeline: `-- local` (rehearsal, default), `-- production`, `-- proxy`; `--dry-run` plans."""
    install(session, "dev,worker", node=True)
    cfops(session, "release", *session.posargs)


@nox.session(default=False, tags=["remote"])
def recover(session: nox.Session) -> None:
    """Finish an interrupted release: roll back to its stable version (default) or `-- --resume`."""
    install(session, "dev,worker", node=True)
    cfops(session, "recover", *session.posargs)


@nox.session(default=False)
def status(session: nox.Session) -> None:
    """Each Worker's current deployment (with credentials) and the last artifacts."""
    install(session)
    cfops(session, "status", *session.posargs)


# ------------------------------------------------------------------ old names (scripts/, workflows, habits)


@nox.session(default=False)
def perf_smoke(session: nox.Session) -> None:
    """Old name of `perf`."""
    install(session)
    cfops(session, "perf", *session.posargs)


@nox.session(name="dev_proxy", default=False)
def dev_proxy_old(session: nox.Session) -> None:
    """Old name of `dev-proxy`."""
    install(session, "worker")
    cfops(session, "dev-proxy", *session.posargs)


@nox.session(default=False, tags=["image"])
def spike_image(session: nox.Session) -> None:
    """Old name of `image -- spike`."""
    install(session)
    cfops(session, "image", "spike", *session.posargs)


@nox.session(default=False, tags=["image"])
def origin_image(session: nox.Session) -> None:
    """Old name of `image -- origin`."""
    install(session)
    cfops(session, "image", "origin", *session.posargs)


@nox.session(default=False, tags=["remote"])
def deploy_native(session: nox.Session) -> None:
    """Old name of `deploy -- native`."""
    install(session, "worker", node=True)
    cfops(session, "deploy", "native", *session.posargs)


@nox.session(default=False, tags=["remote"])
def deploy_proxy(session: nox.Session) -> None:
    """Old name of `deploy -- proxy`."""
    install(session, node=True)
    cfops(session, "deploy", "proxy", *session.posargs)


@nox.session(default=False, tags=["remote"])
def secrets_sync(session: nox.Session) -> None:
    """Old name of `secrets`."""
    install(session, node=True)
    cfops(session, "secrets", *session.posargs)
