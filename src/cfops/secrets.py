"""`cfops secrets`: push the configured secrets to a Worker in one `wrangler secret bulk` call.

Values come from the environment / .env (``[tool.cfops] secret_names``) and reach wrangler as JSON on
stdin, never on a command line. Unset, empty and placeholder values are skipped (and named). When
Cloudflare refuses because the latest version is not the deployed one (10214/10215), the secrets go into
a new version with `wrangler versions secret bulk` instead. Writes ``artifacts/secrets-<worker>.json``
(names only).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Literal, cast

from cfops import cli, cloudflare, output
from cfops.config import Settings, is_placeholder
from cfops.deploy import WORKERS, Worker, config_args, list_versions, target, write_artifact
from cfops.errors import UsageError
from cfops.wrangler import require_credentials, run_wrangler

Method = Literal["secret bulk", "versions secret bulk", "dry run"]


def skip_reason(settings: Settings, value: str | None) -> str | None:
    """Why a value is not pushed (unset, empty, placeholder), or None when it is a real value.

    Placeholders by the one rule preflight flags them with (config.is_placeholder): a value preflight
    calls a placeholder is never pushed as a secret.
    """
    if value is None:
        return "unset"
    if not value.strip():
        return "empty"
    if is_placeholder(settings, value):
        return "placeholder"
    return None


@dataclass(frozen=True)
class SecretsPlan:
    values: dict[str, str] = field(repr=False)  # never printed
    skipped: dict[str, str]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.values)


def plan(settings: Settings) -> SecretsPlan:
    """Which configured secrets have real values; refuses bearer-token aliases that disagree."""
    values: dict[str, str] = {}
    skipped: dict[str, str] = {}
    for name in settings.secret_names:
        value = settings.env.get(name)
        reason = skip_reason(settings, value)
        if reason is None and value is not None:
            values[name] = value.strip()
        else:
            skipped[name] = reason or "unset"
    output.add_secrets(values.values())
    if cloudflare.bearer_conflict(values):
        first, second = cloudflare.BEARER_TOKEN_NAMES
        raise UsageError(
            f"{first} and {second} are both set and differ: the Worker reads either, "
            "so clients would be accepted or refused depending on which wins; set both to the same token or "
            "unset one"
        )
    return SecretsPlan(values=values, skipped=skipped)


@dataclass(frozen=True)
class SecretsResult:
    worker: Worker
    name: str
    pushed: tuple[str, ...]
    skipped: dict[str, str]
    method: Method
    version_id: str | None  # the new version when the secrets went into one (versions secret bulk)
    command: tuple[str, ...]
    duration: float


def sync_secrets(settings: Settings, worker: Worker = "native", *, dry_run: bool = False) -> SecretsResult:
    started = time.perf_counter()
    t = target(settings, worker)
    wanted = plan(settings)
    for name, reason in wanted.skipped.items():
        output.warn(f"skipping {name}: {reason}")
    if dry_run:
        return SecretsResult(worker, t.name, wanted.names, wanted.skipped, "dry run", None, (), 0.0)
    if not wanted.values:
        raise UsageError(
            f"none of {', '.join(settings.secret_names)} has a value to push: "
            "set them in the environment or .env"
        )
    require_credentials(settings, f"pushing secrets to {t.name}", dry_run_hint=True)
    payload = json.dumps(wanted.values)  # one line: wrangler joins the stdin lines before parsing
    config = config_args(settings, t)
    run = run_wrangler(settings, ["secret", "bulk", *config], input=payload, check=False)
    method: Method = "secret bulk"
    version_id = None
    if not run.ok and run.secret_not_deployed:
        code = run.error_code or "10214/10215"
        output.warn(
            f"Cloudflare refused (error {code}): the latest version of {t.name} is not the "
            "deployed one; putting the secrets into a new version (`wrangler versions secret bulk`) instead"
        )
        note = f"cfops secrets: {len(wanted.values)} secrets"
        run = run_wrangler(
            settings, ["versions", "secret", "bulk", *config, "--message", note], input=payload
        )
        method = "versions secret bulk"
        # That command writes no output event; the version it created is now the newest.
        newest = list_versions(settings, worker)
        version_id = newest[0].id if newest else None
    elif not run.ok:
        raise run.failure()
    result = SecretsResult(
        worker=worker,
        name=t.name,
        pushed=wanted.names,
        skipped=wanted.skipped,
        method=method,
        version_id=version_id,
        command=run.command,
        duration=round(time.perf_counter() - started, 3),
    )
    write_artifact(settings, f"secrets-{worker}.json", asdict(result))
    return result


def main(argv: Sequence[str]) -> int:
    parser = cli.parser("secrets", __doc__)
    parser.add_argument("--worker", choices=WORKERS, default="native", help="default: native")
    parser.add_argument(
        "--dry-run", action="store_true", help="list the names that would be pushed; send nothing"
    )
    args = parser.parse_args(argv)
    settings = cli.settings_from_env()
    result = sync_secrets(settings, cast(Worker, args.worker), dry_run=args.dry_run)
    names = ", ".join(result.pushed) or "none"
    if result.method == "dry run":
        output.success(f"dry run: would push {len(result.pushed)} secret(s) to {result.name}: {names}")
    elif result.method == "versions secret bulk":
        output.success(
            f"pushed {len(result.pushed)} secret(s) to {result.name} in new version {result.version_id} "
            f"({names}); it receives traffic once deployed (cfops versions, wrangler versions deploy)"
        )
    else:
        output.success(f"pushed {len(result.pushed)} secret(s) to {result.name}: {names}")
    return 0


if __name__ == "__main__":
    cli.run_main(main)
