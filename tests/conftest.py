"""Shared fixtures: fixture projects copied from this repository, and real local servers."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest

from cfops import output, procs

REPO = Path(__file__).resolve().parents[1]

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


@pytest.fixture(autouse=True)
def _reset_redaction() -> Iterator[None]:
    yield
    output.clear_secrets()


def clean_env(**extra: str) -> dict[str, str]:
    """The test process's environment minus anything that would change the backend's behaviour."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("IMMCAD_", "CFOPS_"))}
    for name in ("ENVIRONMENT", "API_BEARER_TOKEN", "GEMINI_API_KEY"):
        env.pop(name, None)
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
