"""Shared fixtures: fixture projects copied from this repository, and real local servers."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest

from cfops import output, procs
from cfops.config import load_settings
from cfops.wrangler import _lock_digest, ensure_node_toolchain
from tests.fakes.cloudflare_api import cloudflare_api  # noqa: F401 - the fake Cloudflare API fixture

REPO = Path(__file__).resolve().parents[1]

# Started from a background job (`nohup … &`, a non-interactive shell), pytest and its workers inherit an
# ignored SIGINT, and so would every command the tests start: cfops keeps a signal it was started with
# ignored (nohup's meaning), so the Ctrl-C tests could not interrupt anything. Children of a process
# that handles SIGINT start with the default disposition.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """``-n auto``: one worker more than the CPUs this process may use. Each worker spends part of its time
    waiting on a chain of processes (wrangler, workerd, a stage's smoke, a 60 s proxy timeout), which the
    extra worker fills (measured in docs/benchmarks.md, "Test suite")."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()  # macOS
    return (usable or 1) + 1


# What a fixture project needs to be a working copy of this one (no node_modules, no .nox).
PROJECT_FILES = (
    "pyproject.toml",
    "src/immcad_api",
    "config",
    "data",
    "backend-cloudflare/wrangler.toml",
    "backend-cloudflare/pyproject.toml",
    "backend-cloudflare/src/entry.py",
    "backend-cloudflare/src/bindings.py",
)


def _ignore(_dir: str, names: list[str]) -> set[str]:
    return {n for n in names if n == "__pycache__" or n.endswith(".pyc")}


def copy_project(dest: Path, files: tuple[str, ...] = PROJECT_FILES) -> Path:
    for rel in files:
        src = REPO / rel
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, target, ignore=_ignore)
        else:
            shutil.copy2(src, target)
    return dest


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A copy of this project's backend and Worker files in tmp_path (its own pyproject [tool.cfops])."""
    return copy_project(tmp_path / "project")


# backend-cloudflare/ minus what is installed, generated or synced: both Workers, configs, package lock.
_WORKER_DIR_SKIP = {
    "node_modules",
    ".wrangler",
    "python_modules",
    "sync-manifest.json",
    "__pycache__",
    ".dev.vars",
}
_SYNCED = {"immcad_api", "config", "data"}


def _ignore_generated(directory: str, names: list[str]) -> set[str]:
    skip = {n for n in names if n in _WORKER_DIR_SKIP or n.endswith(".pyc") or n.startswith(".sync-")}
    if Path(directory).name == "src" and Path(directory).parent.name == "backend-cloudflare":
        skip |= _SYNCED & set(names)
    return skip


@contextlib.contextmanager
def repo_lock(name: str) -> Iterator[None]:
    """An exclusive lock shared by every test process of this checkout (the parallel workers, another
    run of the suite): one-time installs into the repository (npm ci, a nox environment) must not run
    twice at once, or the second wipes what the first is installing."""
    digest = hashlib.sha256(str(REPO).encode()).hexdigest()[:12]
    path = Path(tempfile.gettempdir()) / f"cfops-tests-{digest}-{name}.lock"
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # bounded by the holder's own timeout (npm ci: 600 s)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def repo_toolchain() -> Path:
    """This repository's pinned Node toolchain: `npm ci` once, only if the lock changed."""
    with repo_lock("node-toolchain"):
        ensure_node_toolchain(load_settings(REPO, {}))
    return REPO / "backend-cloudflare" / "node_modules"


def pytest_configure(config: pytest.Config) -> None:
    # With parallel workers the controller installs the toolchain before any worker starts: cfops also
    # installs it on first use inside tests (not under repo_lock), and two npm ci at once corrupt it.
    if getattr(config.option, "numprocesses", None) and not hasattr(config, "workerinput"):
        repo_toolchain()


@pytest.fixture(scope="session")
def node_modules() -> Path:
    """This repository's pinned Node toolchain (Node + wrangler): `npm ci` once, only if the lock changed."""
    return repo_toolchain()


@pytest.fixture
def worker_project(tmp_path: Path, node_modules: Path) -> Path:
    """A fixture project with both Workers and the pinned wrangler (node_modules linked, not reinstalled)."""
    root = copy_project(tmp_path / "project", ("pyproject.toml", "src/immcad_api", "config", "data"))
    worker_dir = root / "backend-cloudflare"
    shutil.copytree(REPO / "backend-cloudflare", worker_dir, ignore=_ignore_generated)
    # The link is shared: a mismatching lock would make cfops run `npm ci` through it and wipe the
    # repository's toolchain, so refuse instead.
    marker = (node_modules / ".cfops-lock-sha256").read_text().strip()
    assert _lock_digest(worker_dir) == marker, "fixture project's package lock differs from the repository's"
    (worker_dir / "node_modules").symlink_to(node_modules, target_is_directory=True)
    return root


# Variables that change what cfops or the backend do. Tests must not depend on the shell that runs them
# (a developer's IMMCAD_API_BASE_URL, or the release pipeline running this suite with CFOPS_ROOT set),
# so each test starts without them; tests that need one set it themselves.
_OWN_PREFIXES = ("CFOPS_", "IMMCAD_", "CLOUDFLARE_", "WRANGLER_")
_OWN_NAMES = {
    "REQUESTS",
    "CONCURRENCY",
    "MAX_P95_SECONDS",
    "MAX_P99_SECONDS",
    "MAX_ERROR_RATE",
    "CHAT_PATH",
    "ENVIRONMENT",
    "API_BEARER_TOKEN",
    "GEMINI_API_KEY",
    "CANLII_API_KEY",
    "REDIS_URL",
    "BACKEND_ORIGIN",
    "GITHUB_STEP_SUMMARY",
    # CI runners set these, and cfops reads them (the preflight cache's CI policy, GitHub annotations):
    # a test that wants them sets them itself.
    "CI",
    "GITHUB_ACTIONS",
}
# How the suite itself is run (CI's engine requirement) stays.
_KEEP = {"CFOPS_REQUIRE_DOCKER"}


@pytest.fixture(autouse=True)
def _hermetic_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name not in _KEEP and (name.startswith(_OWN_PREFIXES) or name in _OWN_NAMES):
            monkeypatch.delenv(name)


@pytest.fixture(autouse=True)
def _reset_redaction() -> Iterator[None]:
    yield
    output.clear_secrets()


@pytest.fixture(autouse=True)
def _own_signal_handlers() -> Iterator[None]:
    """A command run in this process that was interrupted leaves Ctrl-C and SIGTERM ignored (it is on its
    way out); the next test, and every command it starts, gets this process's handlers back."""
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    yield
    for sig, handler in saved.items():
        signal.signal(sig, handler)


def clean_env(**extra: str) -> dict[str, str]:
    """The test process's environment minus anything that would change cfops's or the backend's behaviour."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k in _KEEP or not (k.startswith(_OWN_PREFIXES) or k in _OWN_NAMES)
    }
    env.update(extra)
    return env


ServerFactory = Callable[..., str]


@pytest.fixture
def backend_server() -> Iterator[ServerFactory]:
    """Start the real backend (`python -m immcad_api`) under uvicorn on 127.0.0.1; stopped at teardown."""
    started: list[procs.Service] = []

    def start(env: Mapping[str, str] | None = None) -> str:
        port = procs.free_port()
        service = procs.Service(
            "backend",
            [sys.executable, "-m", "immcad_api", "--port", str(port), "--log-level", "warning"],
            env=clean_env(**dict(env or {})),
            inherit_env=False,
            health_url=f"http://127.0.0.1:{port}/healthz",
            ready_timeout=30,
            forward_output=False,
        )
        service.__enter__()
        started.append(service)
        return f"http://127.0.0.1:{port}"

    yield start
    for service in started:
        service.stop()
