"""What a build reports: ``artifacts/<which>-image.json`` (ImageReport, with the smoke run's RunReport)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from cfops.report import write_json

Which = Literal["spike", "origin"]
IMAGES: tuple[Which, ...] = ("spike", "origin")


@dataclass(frozen=True, kw_only=True)
class RunReport:
    url: str
    container: str
    healthz_status: int
    healthz: Any
    seconds_to_healthy: float
    uid: int
    kept: bool


@dataclass(frozen=True, kw_only=True)
class ImageReport:
    name: str
    tag: str
    image_id: str
    tags: list[str]
    stage_tags: list[str]
    size_bytes: int
    base_image: str
    base_size_bytes: int | None
    layers: int
    context_bytes: int
    context_files: int
    build_seconds: float
    steps_total: int
    steps_cached: int
    steps_built: int
    steps: list[dict[str, Any]]
    labels: dict[str, str]
    dockerfile: str
    engine: str
    revision: str
    dirty: bool
    artifact: Path
    run: RunReport | None = None

    @property
    def added_bytes(self) -> int | None:
        return None if self.base_size_bytes is None else self.size_bytes - self.base_size_bytes

    def to_json(self) -> dict[str, Any]:
        body = dataclasses.asdict(self)
        body["artifact"] = str(self.artifact)
        body["added_bytes"] = self.added_bytes
        body["size_mib"] = round(self.size_bytes / 2**20, 1)
        return body


def write_report(report: ImageReport) -> Path:
    """Write the report (atomically, redacted): a failure never leaves a half-written artifact."""
    return write_json(report.artifact, report.to_json())
