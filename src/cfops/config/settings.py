"""The one frozen settings object, its sections, and the rules read from it (secret names, placeholders)."""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cfops import cloudflare
from cfops.argv import SECRET_WORDS
from cfops.config.cloud import AnalyticsSettings, DeploySettings, PreflightSettings, ReleaseSettings
from cfops.config.local import (
    DevProxySettings,
    DevSettings,
    ImageSettings,
    PerfSettings,
    SyncSettings,
    WorkerSettings,
)
from cfops.config.metadata import from_env, setting


@dataclass(frozen=True, kw_only=True)
class Settings:
    root: Path
    artifacts_dir: Path = field(
        default=Path("artifacts"),
        metadata=from_env("CFOPS_ARTIFACTS_DIR", help="where JSON and Markdown reports go"),
    )
    worker_dir: Path = field(
        default=Path("backend-cloudflare"), metadata=setting(help="the Worker bundle directory")
    )
    # The Node that runs wrangler and tsc; unset: the one pinned in worker_dir/package.json (cfops.node).
    node: Path | None = field(
        default=None,
        metadata=setting(
            "CFOPS_NODE",
            help="the node executable wrangler and tsc run on (>= wrangler's engines); unset: the pinned one",
        ),
    )
    native: WorkerSettings = field(
        default_factory=lambda: WorkerSettings(
            name="immcad-backend-native-python", config=Path("backend-cloudflare/wrangler.toml")
        )
    )
    proxy: WorkerSettings = field(
        default_factory=lambda: WorkerSettings(
            name="immcad-backend-proxy", config=Path("backend-cloudflare/wrangler.backend-proxy.jsonc")
        )
    )
    # Names whose values are secrets: pushed by secrets sync, redacted from every output.
    secret_names: tuple[str, ...] = field(
        default=(
            *cloudflare.BEARER_TOKEN_NAMES,
            "GEMINI_API_KEY",
            "CANLII_API_KEY",
            "REDIS_URL",
        ),
        metadata=setting(
            help="names whose values are secrets: pushed by `cfops secrets`, redacted everywhere"
        ),
    )
    sync: SyncSettings = field(default_factory=SyncSettings)
    dev: DevSettings = field(default_factory=DevSettings)
    perf: PerfSettings = field(default_factory=PerfSettings)
    dev_proxy: DevProxySettings = field(default_factory=DevProxySettings)
    image: ImageSettings = field(default_factory=ImageSettings)
    preflight: PreflightSettings = field(default_factory=PreflightSettings)
    release: ReleaseSettings = field(default_factory=ReleaseSettings)
    deploy: DeploySettings = field(default_factory=DeploySettings)
    analytics: AnalyticsSettings = field(default_factory=AnalyticsSettings)
    # The merged .env + process environment, for lookups of secrets and compatible env vars.
    # repr=False: the settings object may be printed while debugging; secret values must not be.
    env: Mapping[str, str] = field(default_factory=dict, repr=False)
    # The command-line overrides these settings were built with, by dotted field path.
    flags: Mapping[str, Any] = field(default_factory=dict, repr=False)


def is_secret_name(settings: Settings, name: str) -> bool:
    """Configured secret names, plus anything named like a credential (cfops.argv.SECRET_WORDS)."""
    upper = name.upper()
    return name in settings.secret_names or any(word.upper() in upper for word in SECRET_WORDS)


def is_placeholder(settings: Settings, value: str) -> bool:
    """Whether ``value`` was never filled in (``[tool.cfops.preflight] placeholder_patterns``).

    The one rule for both sides: preflight flags such a value, secrets sync skips it (never pushes it).
    """
    lowered = value.strip().lower()
    return any(fnmatch.fnmatchcase(lowered, p.lower()) for p in settings.preflight.placeholder_patterns)
