"""What each write returns, and the artifacts a deploy and a rollback leave under ``artifacts/``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cfops.config import Settings
from cfops.deploy.plan import Strategy, Worker
from cfops.report import write_json


@dataclass(frozen=True)
class VersionResult:
    worker: Worker
    name: str
    version_id: str | None  # None for a dry run
    preview_url: str | None
    command: tuple[str, ...]
    duration: float
    tag: str | None = None  # the unique tag the upload carries (None for a dry run)


@dataclass(frozen=True)
class DeployResult:
    worker: Worker
    name: str
    strategy: Strategy
    dry_run: bool
    runner: str
    version_id: str | None
    previous_version_id: str | None
    urls: tuple[str, ...]
    command: tuple[str, ...]
    duration: float
    started_at: str
    note: str = ""
    tag: str | None = None  # versions strategy: the unique tag of the upload


@dataclass(frozen=True)
class SplitResult:
    worker: Worker
    name: str
    deployment_id: str | None
    traffic: dict[str, float]
    command: tuple[str, ...]
    duration: float


@dataclass(frozen=True)
class RollbackResult:
    worker: Worker
    name: str
    version_id: str
    previous_traffic: dict[str, float]
    command: tuple[str, ...]
    duration: float
    verified: bool = False  # the deployment was read back at 100 % on version_id


def write_artifact(settings: Settings, filename: str, data: dict[str, Any]) -> Path:
    """Write ``artifacts/<filename>`` (atomically, every string redacted)."""
    return write_json(settings.artifacts_dir / filename, data)


def artifact_name(worker: Worker, *, dry_run: bool = False, failed: bool = False) -> str:
    suffix = ".dry-run" if dry_run else ".failed" if failed else ""
    return f"deploy-{worker}{suffix}.json"
