"""Fixture projects for `nox -s preflight` and a helper that runs it in-process and returns everything."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from cfops import cli, sync
from cfops.config import load_settings
from cfops.preflight.command import main as preflight_main
from tests.conftest import PROJECT_FILES, copy_project, repo_toolchain

PROXY_FILES = (
    "backend-cloudflare/src/allowlist.json",
    "backend-cloudflare/src/worker.ts",
    "backend-cloudflare/wrangler.backend-proxy.jsonc",
    "backend-cloudflare/package.json",
    "backend-cloudflare/package-lock.json",
)
# Variables of the caller's shell that would change what preflight sees.
_SCRUB_PREFIXES = ("IMMCAD_", "CFOPS_", "CLOUDFLARE_", "GITHUB_")
_SCRUB = ("ENVIRONMENT", "API_BEARER_TOKEN", "GEMINI_API_KEY", "CANLII_API_KEY", "REDIS_URL", "CI")


def make_project(dest: Path, *, synced: bool = True) -> Path:
    """This repository's backend, both Worker configs and the allowlist, synced like `nox -s sync`."""
    project = copy_project(dest, PROJECT_FILES + PROXY_FILES)
    if synced:
        sync.sync(load_settings(project, {}))
    return project


def link_node_modules(project: Path) -> None:
    """Share the repository's installed toolchain (same package.json + lock, so no npm ci runs)."""
    source = repo_toolchain()
    (project / "backend-cloudflare" / "node_modules").symlink_to(source, target_is_directory=True)


def set_preflight(project: Path, **values: str) -> None:
    """Set keys of the fixture's [tool.cfops.preflight] table (values are TOML literals)."""
    pyproject = project / "pyproject.toml"
    head, header, rest = pyproject.read_text().partition("[tool.cfops.preflight]\n")
    assert header, "the fixture's pyproject.toml has no [tool.cfops.preflight] table"
    body, next_table, tail = rest.partition("\n[")
    lines = [line for line in body.splitlines() if line.split("=", 1)[0].strip() not in values]
    lines += [f"{key} = {value}" for key, value in values.items()]
    pyproject.write_text(head + header + "\n".join(lines) + next_table + tail)


@dataclass(frozen=True)
class Run:
    code: int
    out: str
    err: str
    report: dict[str, Any]

    def finding(self, check_id: str) -> dict[str, Any]:
        return next(f for f in self.report["findings"] if f["id"] == check_id)

    @property
    def text(self) -> str:
        return self.out + self.err


def scrub_env(monkeypatch: pytest.MonkeyPatch, project: Path, **env: str) -> None:
    for name in list(os.environ):
        if name.startswith(_SCRUB_PREFIXES) or name in _SCRUB:
            monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CFOPS_ROOT", str(project))
    for name, value in env.items():
        monkeypatch.setenv(name, value)


def run_preflight(
    project: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    *args: str,
    **env: str,
) -> Run:
    """`python -m cfops.preflight ARGS` in-process against ``project``, through cli.main (exit codes)."""
    scrub_env(monkeypatch, project, **env)
    artifact = project / "artifacts" / "preflight.json"
    artifact.unlink(missing_ok=True)
    code = cli.main(preflight_main, list(args))
    captured = capsys.readouterr()
    report = json.loads(artifact.read_text()) if artifact.is_file() else {}
    return Run(code=code, out=captured.out, err=captured.err, report=report)
