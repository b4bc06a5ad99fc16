"""The settings of the commands that check or change Cloudflare: preflight, deploy, analytics, release."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Literal

from cfops import cloudflare
from cfops.config.metadata import from_env, setting
from cfops.errors import ConfigError

BackendMode = Literal["proxy", "native"]
PreflightCachePolicy = Literal["reuse", "same-commit", "off"]


@dataclass(frozen=True, kw_only=True)
class PreflightSettings:
    """`cfops preflight`: Cloudflare platform facts and release policy, kept out of the code."""

    # Cloudflare's limits (cfops.cloudflare), lowered here to test the checks or to keep a margin.
    size_limit_kib: int = field(
        default=cloudflare.WORKER_SIZE_LIMIT_KIB,
        metadata=setting(help="Worker size limit (uncompressed), Cloudflare's unless lowered"),
    )
    # Optional gzip budget: the old per-plan limits (Free 3 MiB, Paid 10 MiB gzip) that teams keep.
    gzip_budget_kib: int | None = field(
        default=None,
        metadata=from_env(
            "CFOPS_PREFLIGHT_GZIP_BUDGET_KIB",
            "CLOUDFLARE_FREE_WORKER_GZIP_LIMIT_KIB",
            help="optional gzip budget (the old Free 3 MiB / Paid 10 MiB limits); none: no budget",
        ),
    )
    startup_limit_ms: float = field(
        default=cloudflare.STARTUP_LIMIT_MS, metadata=setting(help="Worker startup CPU limit")
    )
    compatibility_date_max_age_days: int = field(
        default=365, metadata=setting(help="warn when a compatibility_date is older")
    )
    # Which Worker production runs; the other one's over-budget bundle is only a warning.
    mode: BackendMode = field(
        default="native",
        metadata=setting(
            "CLOUDFLARE_BACKEND_MODE", flag="--mode", help="the Worker production runs: native or proxy"
        ),
    )
    # Secrets a production deploy cannot work without (the hardened app refuses to start without a token).
    required_secrets: tuple[str, ...] = field(
        default=(cloudflare.BEARER_TOKEN,),
        metadata=setting(help="secrets a production deploy cannot work without"),
    )
    # Secrets the CI workflows may read besides secret_names (deploy credentials; GITHUB_TOKEN is built in).
    ci_secrets: tuple[str, ...] = field(
        default=cloudflare.CREDENTIALS,
        metadata=setting(help="secrets the CI workflows may read besides secret_names"),
    )
    # Case-insensitive shell-style patterns of values that were never filled in (what templates and
    # .env.example files ship with). The one placeholder rule (is_placeholder): preflight flags such a
    # value, secrets sync never pushes one.
    placeholder_patterns: tuple[str, ...] = field(
        default=(
            "your-*",
            "your_*",
            "changeme*",
            "change-me*",
            "change_me*",
            "replace-*",
            "replace_*",
            "replaceme*",
            "*placeholder*",
            "<*",
            "todo",
            "xxx*",
        ),
        metadata=setting(help="case-insensitive patterns of values never filled in (flagged, never pushed)"),
    )
    # [vars] the native Worker must hold for --target production (the app's hardened settings).
    production_vars: dict[str, str] = field(
        default_factory=lambda: {
            "ENVIRONMENT": "production",
            "IMMCAD_ENVIRONMENT": "production",
            "ALLOW_SCAFFOLD_SYNTHETIC_CITATIONS": "false",
            "ENABLE_SCAFFOLD_PROVIDER": "false",
            "EXPORT_POLICY_GATE_ENABLED": "true",
        },
        metadata=setting(help="[vars] the native Worker must hold for --target production"),
    )
    allowlist: Path = field(
        default=Path("backend-cloudflare/src/allowlist.json"),
        metadata=setting(help="the edge proxy's path allowlist"),
    )
    # Paths under these prefixes must answer 401 without a bearer token.
    protected_prefixes: tuple[str, ...] = field(
        default=("/ops/",), metadata=setting(help="paths that must answer 401 without a bearer token")
    )
    # Owners whose GitHub Actions need no commit-SHA pin (GitHub's own).
    first_party_action_owners: tuple[str, ...] = field(
        default=("actions", "github"),
        metadata=setting(help="GitHub Action owners that need no commit-SHA pin"),
    )
    # Upper bound for each external command a check runs (wrangler, git, node).
    command_timeout: float = field(
        default=180.0, metadata=setting(help="seconds for each external command a check runs")
    )
    # Reuse of the expensive checks' findings while nothing they read changed (cfops.preflight.cache):
    # reuse | same-commit (also only from a run at the current commit) | off. A run takes the strictest
    # of `cache`, `cache_ci` when CI is set, and `cache_production` with --target production.
    cache: PreflightCachePolicy = field(
        default="reuse",
        metadata=setting(
            "CFOPS_PREFLIGHT_CACHE", help="reuse cached findings: reuse, same-commit or off (--no-cache)"
        ),
    )
    cache_ci: PreflightCachePolicy = field(
        default="same-commit", metadata=setting(help="the cache policy when CI is set")
    )
    cache_production: PreflightCachePolicy = field(
        default="same-commit", metadata=setting(help="the cache policy of --target production")
    )
    cache_file: Path = field(
        default=Path(".cfops-cache/preflight.json"), metadata=setting(help="where the findings are cached")
    )


NativeRunner = Literal["auto", "pywrangler", "wrangler"]


@dataclass(frozen=True, kw_only=True)
class DeploySettings:
    # The container origin the edge proxy forwards to (https://…); passed as --var BACKEND_ORIGIN.
    backend_origin: str = field(
        default="",
        metadata=setting(
            "IMMCAD_BACKEND_ORIGIN",
            "BACKEND_ORIGIN",
            flag="--origin",
            help="the proxy's https container origin",
        ),
    )
    # Who uploads the native Worker: pywrangler (vendors the Python packages), or the pinned wrangler
    # standing in for it (uploads the synced source only). auto = pywrangler when its toolchain can run.
    native_runner: NativeRunner = field(
        default="auto",
        metadata=setting("CFOPS_NATIVE_RUNNER", flag="--runner", help="who uploads the native Worker"),
    )
    # Upper bound for one wrangler call (an upload of the native bundle is the slowest).
    timeout: float = field(
        default=600.0, metadata=from_env("CFOPS_WRANGLER_TIMEOUT", help="seconds for one wrangler call")
    )
    # Cloudflare calls that are safe to repeat (reads, splits, rollbacks) are tried at most this many
    # times on a transient failure (connection lost, 5xx, 429), and none starts after this many seconds.
    retry_attempts: int = field(
        default=4, metadata=from_env("CFOPS_RETRY_ATTEMPTS", help="tries of a repeatable Cloudflare call")
    )
    retry_max_seconds: float = field(
        default=60.0,
        metadata=from_env("CFOPS_RETRY_MAX_SECONDS", help="no retry of a Cloudflare call starts after this"),
    )


InconclusivePolicy = Literal["fail", "pass"]


@dataclass(frozen=True, kw_only=True)
class AnalyticsSettings:
    """Workers Analytics Engine: where the native Worker records each request (docs/analytics.md).

    The one place of truth for the names: wrangler.toml's [[analytics_engine_datasets]] and the Worker's
    code (immcad_api.analytics.BINDING) must agree with these; preflight check "analytics" fails if not.
    """

    binding: str = field(default="IMMCAD_ANALYTICS", metadata=setting(help="the Worker's dataset binding"))
    dataset: str = field(default="immcad_requests", metadata=setting(help="the dataset the release reads"))
    # The SQL API (``POST {api}/accounts/<id>/analytics_engine/sql``): per attempt, and attempts in all
    # (transient failures — 5xx, 429, network — are retried with backoff; then the stage is inconclusive).
    timeout_seconds: float = field(default=30.0, metadata=setting(help="per SQL API call, s"))
    attempts: int = field(
        default=4, metadata=setting(help="SQL API attempts (5xx, 429, network are retried)")
    )


@dataclass(frozen=True, kw_only=True)
class StageGates:
    """How each production stage is judged from real traffic per version (docs/analytics.md)."""

    enabled: bool = field(
        default=True,
        metadata=setting("CFOPS_RELEASE_ANALYSIS", help="judge each stage by Analytics Engine at all"),
    )
    # Too little traffic on the new version: extend the soak up to this (0: never extend) …
    max_soak_seconds: float = field(
        default=900.0,
        metadata=setting(
            "CFOPS_RELEASE_MAX_SOAK", help="an inconclusive stage's soak is extended up to this, s"
        ),
    )
    # … and then the policy decides: "fail" (roll back; the safe default) or "pass" (on the smoke alone).
    inconclusive: InconclusivePolicy = field(
        default="fail",
        metadata=setting(
            "CFOPS_RELEASE_INCONCLUSIVE",
            help="then: fail (roll back, the safe default) or pass (on the smoke)",
        ),
    )
    min_requests: int = field(
        default=200, metadata=setting(help="requests (sample-weighted) on the new version for a verdict")
    )
    # A fraction: 0.01 = one percentage point.
    error_rate_margin: float = field(default=0.01, metadata=setting(help="new 5xx rate <= old + this"))
    # A broken route often answers 404/422, not 500.
    client_error_rate_margin: float = field(default=0.05, metadata=setting(help="new 4xx rate <= old + this"))
    # The slack keeps a 3 ms -> 5 ms change from counting as a regression.
    p95_factor: float = field(default=1.5, metadata=setting(help="new p95 <= factor x old p95 + slack"))
    p95_slack_ms: float = field(default=20.0, metadata=setting(help="the p95 gate's slack, ms"))

    def __post_init__(self) -> None:
        # A negative margin or a factor below 1 fails a version equal to the old one; nan/inf pass anything.
        lowest = {
            "max_soak_seconds": 0.0,
            "min_requests": 1,
            "error_rate_margin": 0.0,
            "client_error_rate_margin": 0.0,
            "p95_factor": 1.0,
            "p95_slack_ms": 0.0,
        }
        env = {f.name: f.metadata.get("env", ()) for f in fields(self)}
        for key, low in lowest.items():
            value = getattr(self, key)
            if not math.isfinite(value) or value < low:
                also = f" ({', '.join(env[key])})" if env[key] else ""
                raise ConfigError(
                    f"[tool.cfops.release.gates] {key}{also} = {value!r}: must be a finite number >= {low:g}"
                )


@dataclass(frozen=True, kw_only=True)
class ReleaseSettings:
    """`invoke release`: the pipelines' policy."""

    # Traffic shares the new native version is promoted through after its canary (the last must be 100).
    stages: tuple[float, ...] = field(
        default=(10.0, 50.0, 100.0),
        metadata=setting(
            flag="--stages", help="production: traffic percentages after the canary, e.g. 10,50,100"
        ),
    )
    # The origin the local rehearsal's proxy deploy dry-run is bundled with (.invalid is never resolvable).
    rehearsal_origin: str = field(
        default="https://origin.example.invalid",
        metadata=setting(help="the origin the rehearsal's proxy dry-run is bundled with"),
    )
    # Where the deployed edge proxy answers, for the smoke test of `invoke release-proxy`.
    proxy_url: str = field(
        default="",
        metadata=setting(
            "IMMCAD_PROXY_URL", flag="--proxy-url", help="proxy: where the deployed proxy answers"
        ),
    )
    # Upper bound for one step (the test suite is the slowest).
    step_timeout: float = field(default=3600.0, metadata=setting(help="seconds for one pipeline step"))
    # Each production stage soaks this long after its promote before its analysis reads the window.
    soak_seconds: float = field(
        default=300.0,
        metadata=setting(
            "CFOPS_RELEASE_SOAK",
            flag="--soak",
            help="production: seconds each stage soaks before its analysis",
        ),
    )
    # Each stage judged by real traffic per version (Workers Analytics Engine) after its soak.
    gates: StageGates = field(default_factory=StageGates)

    def __post_init__(self) -> None:
        # The step limit arms an interval timer (a cfops step runs in the release's process): it must be a
        # positive number of seconds the timer can hold.
        if not 0 < self.step_timeout <= 1e8:
            raise ConfigError(
                f"[tool.cfops.release] step_timeout = {self.step_timeout!r}: must be a number of seconds "
                "> 0 and <= 1e8"
            )
