"""Wrangler: the pinned Node toolchain (npm ci, cached), and reading the Workers' config files."""

from __future__ import annotations

import hashlib
import json
import tomllib
from pathlib import Path
from typing import Any

import json5

from cfops import output, procs
from cfops.config import Settings
from cfops.errors import CheckFailed, ConfigError, MissingToolError

_MARKER = ".cfops-lock-sha256"


def read_config(path: Path) -> dict[str, Any]:
    """Parse a wrangler config: TOML, or JSON/JSONC (comments and trailing commas allowed)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path} not found") from None
    try:
        data = tomllib.loads(text) if path.suffix == ".toml" else json5.loads(text)
    except (tomllib.TOMLDecodeError, ValueError) as exc:
        kind = "TOML" if path.suffix == ".toml" else "JSONC"
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(f"{path} is not valid {kind}: {first}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a table/object")
    return data


def config_vars(config: dict[str, Any], path: Path) -> dict[str, str]:
    """The ``[vars]`` of a wrangler config, as strings (wrangler passes non-strings as JSON)."""
    raw = config.get("vars", {})
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: vars must be a table")
    return {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in raw.items()}


def _lock_digest(package_dir: Path) -> str:
    lock = package_dir / "package-lock.json"
    if not lock.is_file():
        raise ConfigError(f"{lock} is missing: the Node toolchain must be pinned (run npm install there)")
    return hashlib.sha256(lock.read_bytes() + (package_dir / "package.json").read_bytes()).hexdigest()


def ensure_node_toolchain(settings: Settings) -> Path:
    """``npm ci`` in the worker directory unless node_modules already matches the lock; returns its bin.

    The marker keeps warm runs free: npm ci wipes and reinstalls (~10 s), so it only runs when the lock
    changed or node_modules is missing.
    """
    package_dir = settings.worker_dir
    modules = package_dir / "node_modules"
    digest = _lock_digest(package_dir)
    marker = modules / _MARKER
    if not (marker.is_file() and marker.read_text().strip() == digest):
        procs.which("node", hint="install Node.js 20 or newer")
        npm = procs.which("npm", hint="install npm (it ships with Node.js)")
        procs.run([npm, "ci", "--no-audit", "--no-fund"], cwd=package_dir, timeout=600, what="npm ci")
        marker.write_text(digest + "\n")
    return modules / ".bin"


def wrangler_bin(settings: Settings) -> Path:
    """The pinned wrangler executable (installs the toolchain on first use)."""
    binary = ensure_node_toolchain(settings) / "wrangler"
    if not binary.exists():
        raise MissingToolError(
            f"{binary} missing after npm ci: is wrangler in {settings.worker_dir}/package.json?"
        )
    return binary


def typecheck(settings: Settings) -> int:
    """``tsc --noEmit`` over the Workers' TypeScript with the pinned compiler; returns the files checked.

    Raises CheckFailed (exit 1) after printing every error tsc reported.
    """
    project = settings.worker_dir / "tsconfig.json"
    if not project.is_file():
        raise ConfigError(f"{project} is missing: tsc needs it to type-check the Worker")
    tsc = ensure_node_toolchain(settings) / "tsc"
    result = procs.run(
        [tsc, "--noEmit", "--pretty", "false", "-p", project],
        cwd=settings.worker_dir,
        timeout=300,
        check=False,
        what="tsc",
    )
    problems = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    if result.returncode != 0:
        for line in problems:
            output.echo(line)
        count = sum(1 for line in problems if ": error TS" in line) or len(problems)
        raise CheckFailed(f"tsc --noEmit: {count} error(s) in {settings.worker_dir.name}/ (listed above)")
    return len(list((settings.worker_dir / "src").rglob("*.ts")))
