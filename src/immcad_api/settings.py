"""Backend settings, read from an environment mapping (os.environ, or a Worker's copied bindings)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

HARDENED_ENVIRONMENTS = frozenset({"production", "prod", "ci"})

# Every name the app reads. The Worker entry copies exactly these bindings into the environment,
# because a Worker's `env` cannot be enumerated reliably from Python.
ENV_NAMES: tuple[str, ...] = (
    "ENVIRONMENT",
    "IMMCAD_ENVIRONMENT",
    "IMMCAD_API_BEARER_TOKEN",
    "API_BEARER_TOKEN",
    "GEMINI_API_KEY",
    "CANLII_API_KEY",
    "REDIS_URL",
    "IMMCAD_SERVICE_NAME",
    "IMMCAD_RESOURCE_ROOT",
    "ENABLE_SCAFFOLD_PROVIDER",
    "ALLOW_SCAFFOLD_SYNTHETIC_CITATIONS",
    "EXPORT_POLICY_GATE_ENABLED",
    "IMMCAD_VERSION_ID",
)


class SettingsError(Exception):
    """The configuration cannot be served (for example a hardened environment without a token)."""


def _flag(value: str | None, default: bool) -> bool:
    if value is None or not value.strip():
        return default
    lowered = value.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise SettingsError(f"expected a boolean (true/false), got {value!r}")


@dataclass(frozen=True, kw_only=True)
class Settings:
    environment: str = "development"
    service_name: str = "immcad-api"
    bearer_token: str | None = field(default=None, repr=False)
    model_api_key: str | None = field(default=None, repr=False)
    resource_root: Path | None = None
    allow_synthetic_citations: bool = False
    # The Worker version this process serves (the entry copies it from the version-metadata binding;
    # locally a dev var). Each analytics data point carries it, and every
    # answer names it in x-immcad-version (the canary's proof of which version answered).
    version_id: str = "local"
    # Local only: append each request's analytics data point to this JSONL file (the rehearsal reads it).
    analytics_file: str | None = None

    @property
    def hardened(self) -> bool:
        return self.environment in HARDENED_ENVIRONMENTS

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        environment = (
            (env.get("ENVIRONMENT") or env.get("IMMCAD_ENVIRONMENT") or "development").strip().lower()
        )
        other = (env.get("IMMCAD_ENVIRONMENT") or "").strip().lower()
        if other and other != environment:
            raise SettingsError(
                f"ENVIRONMENT={environment!r} and IMMCAD_ENVIRONMENT={other!r} disagree; "
                "set them to the same value"
            )
        token = (env.get("IMMCAD_API_BEARER_TOKEN") or env.get("API_BEARER_TOKEN") or "").strip() or None
        alias = (env.get("API_BEARER_TOKEN") or "").strip()
        if token and alias and alias != token:
            # Never echo either value: only say that they differ.
            raise SettingsError("IMMCAD_API_BEARER_TOKEN and API_BEARER_TOKEN are both set but differ")
        root = (env.get("IMMCAD_RESOURCE_ROOT") or "").strip()
        settings = cls(
            environment=environment,
            service_name=(env.get("IMMCAD_SERVICE_NAME") or "immcad-api").strip(),
            bearer_token=token,
            model_api_key=(env.get("GEMINI_API_KEY") or "").strip() or None,
            resource_root=Path(root) if root else None,
            allow_synthetic_citations=_flag(env.get("ALLOW_SCAFFOLD_SYNTHETIC_CITATIONS"), False),
            version_id=(env.get("IMMCAD_VERSION_ID") or "").strip() or "local",
            analytics_file=(env.get("IMMCAD_ANALYTICS_FILE") or "").strip() or None,
        )
        if settings.hardened and not settings.bearer_token:
            raise SettingsError(
                f"refusing to start: ENVIRONMENT={environment} is hardened and requires "
                "IMMCAD_API_BEARER_TOKEN (or API_BEARER_TOKEN) to be set"
            )
        if settings.hardened and settings.allow_synthetic_citations:
            raise SettingsError(
                "refusing to start: ALLOW_SCAFFOLD_SYNTHETIC_CITATIONS must be false "
                f"when ENVIRONMENT={environment}"
            )
        return settings
