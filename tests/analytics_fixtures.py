"""What the analytics tests share: the versions and dataset they seed, the fake Cloudflare API with its
Analytics Engine, settings that point at it, and one stage run without waits."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cfops.analytics.command import run_stage
from cfops.config import StageGates, load_settings
from tests.conftest import copy_project
from tests.fakes.cloudflare_api import FakeCloudflare

NEW, OLD = "4a1b2c3d-0000-4000-8000-00000000000a", "4a1b2c3d-0000-4000-8000-00000000000b"
DATASET = "immcad_requests"
GATES = StageGates(max_soak_seconds=0, min_requests=100)


@pytest.fixture
def api() -> Iterator[FakeCloudflare]:
    with FakeCloudflare() as fake:
        yield fake


@pytest.fixture
def settings(api: FakeCloudflare, tmp_path: Path) -> Any:
    root = copy_project(tmp_path / "project", ("pyproject.toml",))
    return load_settings(root, api.wrangler_env() | {"HTTPS_PROXY": "", "HTTP_PROXY": ""})


def stage(settings: Any, **given: Any) -> dict[str, Any]:
    """``run_stage`` of NEW against OLD at 10 %, started now, without a soak or waits; ``given`` overrides."""
    defaults: dict[str, Any] = {
        "new": NEW,
        "old": OLD,
        "percent": 10,
        "started_ago": 0,
        "soak": 0,
        "gates": GATES,
        "sleep": lambda s: None,
    }
    return run_stage(settings, **(defaults | given))
