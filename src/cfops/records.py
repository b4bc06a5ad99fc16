"""Typed readers for the artifacts the commands exchange (deploy, perf, rollback, release).

The release pipeline reads what its steps wrote, and ``status`` shows what the last runs left; both go
through these readers, so a changed artifact shape breaks in one place. A missing or malformed artifact
raises ``ArtifactError`` (exit 1: the step that should have written it did not).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cfops.errors import CfopsError


class ArtifactError(CfopsError):
    """An expected artifact is missing, unreadable or not the shape its writer promises."""


def read_object(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"expected artifact {path.name} is missing or unreadable: {exc}") from None
    if not isinstance(data, dict):
        raise ArtifactError(f"artifact {path.name} is not a JSON object")
    return data


def _str(value: Any) -> str | None:
    return str(value) if value not in (None, "") else None


def _float(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


@dataclass(frozen=True, kw_only=True)
class DeployRecord:
    """``artifacts/deploy-<worker>.json`` (cfops.deploy)."""

    worker: str
    name: str
    strategy: str
    version_id: str | None
    previous_version_id: str | None
    urls: tuple[str, ...] = ()
    tag: str | None = None
    ok: bool = True

    @classmethod
    def read(cls, path: Path) -> DeployRecord:
        data = read_object(path)
        return cls(
            worker=str(data.get("worker") or ""),
            name=str(data.get("name") or ""),
            strategy=str(data.get("strategy") or ""),
            version_id=_str(data.get("version_id")),
            previous_version_id=_str(data.get("previous_version_id")),
            urls=tuple(str(u) for u in data.get("urls") or ()),
            tag=_str(data.get("tag")),
            ok=bool(data.get("ok", True)),
        )

    def summary(self) -> str:
        return f"version {self.version_id} (previous {self.previous_version_id}), {self.strategy}"


@dataclass(frozen=True, kw_only=True)
class PerfRecord:
    """``artifacts/perf-*.json`` (cfops.perf): the numbers a release shows per perf step."""

    p50_ms: float | None = None
    p95_ms: float | None = None
    p99_ms: float | None = None
    requests: int | None = None
    error_rate: float | None = None
    passed: bool | None = None
    verdict: str = ""
    # Which Worker version gave how many answers (x-immcad-version); "unknown" for answers without it.
    answers_by_version: dict[str, int] = field(default_factory=dict)
    expected_version: str | None = None  # the override sent, if any

    @classmethod
    def read(cls, path: Path) -> PerfRecord:
        data = read_object(path)
        stats = data.get("stats") or {}
        latency = stats.get("latency_ms") or {}
        verdict = data.get("verdict") or {}
        requests = stats.get("requests")
        answers = stats.get("answers_by_version") or {}
        return cls(
            p50_ms=_float(latency.get("p50")),
            p95_ms=_float(latency.get("p95")),
            p99_ms=_float(latency.get("p99")),
            requests=requests if isinstance(requests, int) else None,
            error_rate=_float(stats.get("error_rate")),
            passed=verdict.get("passed") if isinstance(verdict.get("passed"), bool) else None,
            verdict=str(verdict.get("line") or verdict.get("text") or ""),
            answers_by_version={str(k): int(v) for k, v in answers.items() if isinstance(v, int)},
            expected_version=_str((data.get("config") or {}).get("version_id")),
        )

    def answers(self) -> str:
        """``a1b2c3d4… 20`` per version, most answers first."""
        return ", ".join(f"{v[:8]} {n}" for v, n in self.answers_by_version.items()) or "none"


@dataclass(frozen=True, kw_only=True)
class RollbackRecord:
    """``artifacts/rollback-<worker>.json`` (cfops.deploy.rollback)."""

    version_id: str | None
    verified: bool

    @classmethod
    def read(cls, path: Path) -> RollbackRecord:
        data = read_object(path)
        return cls(version_id=_str(data.get("version_id")), verified=bool(data.get("verified")))


@dataclass(frozen=True, kw_only=True)
class ReleaseRecord:
    """``artifacts/release.json`` (cfops.release), as ``status`` shows it."""

    pipeline: str
    result: str
    stopped_at: str | None
    new: str | None
    rolled_back_to: str | None

    @classmethod
    def read(cls, path: Path) -> ReleaseRecord:
        data = read_object(path)
        versions = data.get("versions") or {}
        return cls(
            pipeline=str(data.get("pipeline") or ""),
            result=str(data.get("result") or ""),
            stopped_at=_str(data.get("stopped_at")),
            new=_str(versions.get("new")),
            rolled_back_to=_str(versions.get("rolled_back_to")),
        )

    def summary(self) -> str:
        text = f"{self.pipeline}: {self.result}" + (f" at {self.stopped_at}" if self.stopped_at else "")
        if self.rolled_back_to:
            text += f", rolled back to {self.rolled_back_to}"
        return text
