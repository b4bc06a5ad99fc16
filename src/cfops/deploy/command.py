"""`cfops deploy`: ship a Worker with the pinned wrangler.

Also the versions primitives the release pipeline composes: upload a version, split traffic between
two versions, read the deployments and versions, roll back. Every wrangler call is recorded from its
ND-JSON events (cfops.wrangler.run_wrangler), and each deploy writes ``artifacts/deploy-<worker>.json``
(a failed one ``deploy-<worker>.failed.json``, a dry run ``deploy-<worker>.dry-run.json``, so the record
of the last real deploy is never overwritten by anything else).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any, cast

from cfops import cli, output, pyruntime
from cfops.config import NativeRunner, Settings
from cfops.deploy.plan import (
    STRATEGIES,
    WORKERS,
    Runner,
    Strategy,
    Worker,
    backend_origin,
    choose_runner,
    config_args,
    new_tag,
    target,
)
from cfops.deploy.reads import previous_version
from cfops.deploy.results import DeployResult, artifact_name, write_artifact
from cfops.deploy.writes import upload_version, version_args
from cfops.errors import CfopsError, CommandFailed, UsageError
from cfops.sync import sync
from cfops.wrangler import WranglerFailed, require_credentials, run_wrangler, wrangler_bin


def deploy(
    settings: Settings,
    worker: Worker,
    *,
    strategy: Strategy = "direct",
    dry_run: bool = False,
    runner: NativeRunner | None = None,
    origin: str | None = None,
    message: str | None = None,
    tag: str | None = None,
    sync_first: bool = True,
) -> DeployResult:
    """Deploy one Worker and record it in ``artifacts/deploy-<worker>.json``.

    Input and credentials are checked before anything runs. ``direct`` is ``wrangler deploy`` (new version
    at 100%); ``versions`` is ``wrangler versions upload`` (no traffic yet). ``dry_run`` bundles and
    validates with wrangler ``--dry-run`` and contacts no account.
    """
    started = time.perf_counter()
    started_at = datetime.now(UTC).isoformat(timespec="seconds")
    t = target(settings, worker)
    if strategy not in STRATEGIES:
        raise UsageError(f"unknown strategy {strategy!r}: use one of {', '.join(STRATEGIES)}")
    if worker == "proxy":
        origin = backend_origin(origin if origin is not None else settings.deploy.backend_origin)
    if not dry_run:
        require_credentials(settings, f"deploying {t.name}", dry_run_hint=True)
    if worker == "native":
        chosen = choose_runner(settings, runner or settings.deploy.native_runner, dry_run=dry_run)
        if sync_first:
            synced = sync(settings)
            output.info(f"synced {synced.files} files into {settings.worker_dir.name}/")
        # Before any upload: the Python Cloudflare will run, and (when wrangler uploads python_modules/
        # as it is) packages vendored for another one, which would break at import in production.
        runtime = pyruntime.check_before_upload(settings, vendored=chosen.name == "wrangler")
        output.info(f"runtime Python {runtime.version} ({runtime.reason})")
    else:
        chosen = Runner("wrangler", wrangler_bin(settings), "")
    if chosen.note:
        output.warn(chosen.note)
    previous = None if dry_run else previous_version(settings, worker)
    verb = "dry run of" if dry_run else "deploying"
    output.info(
        f"{verb} {t.name} ({strategy}, {chosen.name})" + (f", live version {previous}" if previous else "")
    )
    if strategy == "versions" and not dry_run:
        tag = tag or new_tag()
    record: dict[str, Any] = {
        "tag": tag,
        "worker": worker,
        "name": t.name,
        "strategy": strategy,
        "dry_run": dry_run,
        "runner": chosen.name,
        "previous_version_id": previous,
        "note": chosen.note,
        "started_at": started_at,
    }
    try:
        if strategy == "direct":
            args = [
                "deploy",
                *config_args(settings, t),
                *version_args(t, origin, message, None, direct=True),
            ]
            run = run_wrangler(
                settings,
                [*args, *(["--dry-run"] if dry_run else [])],
                program=chosen.program,
                offline=dry_run,
            )
            event = run.event("deploy") or {}
            version_id = event.get("version_id") or None
            urls = tuple(str(u) for u in event.get("targets") or ())
            command = run.command
        else:
            uploaded = upload_version(
                settings,
                worker,
                origin=origin,
                message=message,
                tag=tag,
                dry_run=dry_run,
                program=chosen.program,
            )
            tag = uploaded.tag
            version_id, urls = uploaded.version_id, tuple(u for u in (uploaded.preview_url,) if u)
            command = uploaded.command
    except CommandFailed as exc:  # wrangler failed (WranglerFailed: with its error code) or timed out
        if not dry_run:
            failed = {
                **record,
                "ok": False,
                "error": {"code": exc.code if isinstance(exc, WranglerFailed) else None, "message": str(exc)},
                "duration": round(time.perf_counter() - started, 3),
            }
            write_artifact(settings, artifact_name(worker, failed=True), failed)
        raise
    if not dry_run and not version_id:
        raise CfopsError(f"wrangler reported no version id for {t.name}: see its output above")
    result = DeployResult(
        worker=worker,
        name=t.name,
        strategy=strategy,
        dry_run=dry_run,
        runner=chosen.name,
        version_id=str(version_id) if version_id else None,
        previous_version_id=previous,
        urls=urls,
        command=command,
        duration=round(time.perf_counter() - started, 3),
        started_at=started_at,
        note=chosen.note,
        tag=tag if strategy == "versions" else None,
    )
    write_artifact(settings, artifact_name(worker, dry_run=dry_run), {**asdict(result), "ok": True})
    return result


def main(argv: Sequence[str]) -> int:
    parser = cli.parser("deploy", __doc__)
    parser.add_argument("worker", choices=WORKERS, help="native (Python Worker) or proxy (edge proxy)")
    parser.add_argument(
        "--dry-run", action="store_true", help="bundle and validate only; no credentials needed"
    )
    parser.add_argument("--strategy", choices=STRATEGIES, default="direct", help="direct (100%%) or versions")
    cli.settings_flags(parser, "deploy", only=("native_runner", "backend_origin"))
    parser.add_argument("--message", default=None, help="annotation for the new version/deployment")
    parser.add_argument("--no-sync", action="store_true", help="native only: upload the bundle as it is")
    parser.add_argument(
        "--tag", default=None, help="versions strategy: the upload's unique tag (default: a new one)"
    )
    args = parser.parse_args(argv)
    worker = cast(Worker, args.worker)
    flags = cli.flags_of(args)
    if worker == "proxy" and ("deploy.native_runner" in flags or args.no_sync):
        raise UsageError("--runner and --no-sync apply to the native Worker only")
    if worker == "native" and "deploy.backend_origin" in flags:
        raise UsageError("--origin applies to the proxy Worker only")
    settings = cli.load(args)
    result = deploy(
        settings,
        worker,
        strategy=cast(Strategy, args.strategy),
        dry_run=args.dry_run,
        message=args.message,
        tag=args.tag,
        sync_first=not args.no_sync,
    )
    artifact = settings.artifacts_dir / artifact_name(worker, dry_run=args.dry_run)
    if result.dry_run:
        output.success(
            f"dry run: {result.name} bundled and validated by {result.runner}; nothing was uploaded"
        )
    elif result.strategy == "versions":
        output.success(
            f"uploaded {result.name} version {result.version_id} (no traffic yet; live: "
            f"{result.previous_version_id or 'none'})"
        )
    else:
        output.success(
            f"deployed {result.name} version {result.version_id} at 100% "
            f"(was {result.previous_version_id or 'none'})"
        )
    for url in result.urls:
        output.echo(f"  {url}")
    shown = artifact.relative_to(settings.root) if artifact.is_relative_to(settings.root) else artifact
    output.echo(f"record: {shown}")
    return 0
