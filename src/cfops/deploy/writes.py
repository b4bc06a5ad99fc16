"""The wrangler calls that change a Worker: upload a version, split traffic, roll back.

A write that ends in the same state however often it runs (a split, a rollback to an id) is repeated on
a transient failure; an upload never blindly is (its unique tag tells whether it landed).
"""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path

from cfops import cloudflare_api, output, retry
from cfops.cloudflare import DEPLOYMENT_MESSAGE_MAX, RATE_LIMIT_CODE
from cfops.config import Settings
from cfops.deploy.plan import (
    Target,
    Worker,
    backend_origin,
    check_version_id,
    config_args,
    default_rollback_version,
    new_tag,
    rollback_hint,
    split_traffic,
    target,
)
from cfops.deploy.reads import confirm_traffic, list_deployments, tagged_versions
from cfops.deploy.results import RollbackResult, SplitResult, VersionResult, write_artifact
from cfops.errors import CfopsError, CheckFailed
from cfops.wrangler import WranglerFailed, WranglerRun, require_credentials, run_wrangler


def version_args(
    t: Target, origin: str | None, message: str | None, tag: str | None, *, direct: bool
) -> list[str]:
    args: list[str] = []
    if t.worker == "proxy":
        assert origin is not None
        args += ["--var", f"BACKEND_ORIGIN:{origin}"]
        if direct:  # `versions upload` has no --keep-vars: it inherits config keep_vars only
            args.append("--keep-vars")
    if message:
        args += ["--message", message]
    if tag:
        args += ["--tag", tag]
    return args


def _repeatable(settings: Settings, what: str, args: list[str]) -> WranglerRun:
    """A wrangler write that ends in the same state however often it runs (a split, a rollback to an
    id): repeated on a transient failure within the retry policy; the last failure raised as it is."""

    def once() -> WranglerRun:
        try:
            return run_wrangler(settings, args)
        except WranglerFailed as exc:
            if exc.transient:
                wait = 1.0 if exc.code == RATE_LIMIT_CODE else None  # wrangler does not show Retry-After
                raise retry.TransientError(str(exc), retry_after=wait) from exc
            raise

    try:
        return retry.call(what, once, cloudflare_api.policy(settings))
    except retry.TransientError as exc:
        raise exc.__cause__ if isinstance(exc.__cause__, WranglerFailed) else exc from None


def upload_version(
    settings: Settings,
    worker: Worker,
    *,
    origin: str | None = None,
    message: str | None = None,
    tag: str | None = None,
    dry_run: bool = False,
    program: Path | None = None,
) -> VersionResult:
    """``wrangler versions upload``: a new version that receives no traffic until a deployment names it.

    The native bundle must be synced first (``deploy`` does it); ``program`` is the runner (pywrangler
    or the pinned wrangler, the default). The proxy needs ``origin`` (validated by ``backend_origin``).

    Never blindly repeated: every upload carries a unique ``tag``; when wrangler fails transiently (it
    already retried the upload itself), the versions list tells whether one landed anyway, and only
    when none did is the upload tried again. The id returned is one that carries the tag.
    """
    t = target(settings, worker)
    if not dry_run:
        require_credentials(settings, f"uploading a version of {t.name}", dry_run_hint=True)
        tag = tag or new_tag()
    if worker == "proxy":
        origin = backend_origin(origin if origin is not None else settings.deploy.backend_origin)
    args = [
        "versions",
        "upload",
        *config_args(settings, t),
        *version_args(t, origin, message, tag, direct=False),
    ]
    started = time.perf_counter()

    def once() -> tuple[str | None, str | None, tuple[str, ...]]:
        try:
            run = run_wrangler(
                settings, [*args, *(["--dry-run"] if dry_run else [])], program=program, offline=dry_run
            )
        except WranglerFailed as exc:
            if dry_run or not exc.transient:
                raise
            assert tag is not None
            try:
                landed = tagged_versions(settings, worker, tag)
            except retry.TransientError as unanswered:
                # Not transient for the upload loop: uploading again without knowing would be blind.
                raise CfopsError(
                    f"{exc}; whether a version with tag {tag} landed is unknown ({unanswered}): check with "
                    f"`cfops versions --worker {worker}` before uploading again"
                ) from None
            if landed:
                output.warn(
                    f"the upload failed ({exc.code or 'connection'}) but version {landed[0].id} carrying tag "
                    f"{tag} landed: it is the one this run uploaded"
                )
                return landed[0].id, None, tuple(output.redact(p) for p in ("wrangler", *args))
            raise retry.TransientError(f"{exc} (no version with tag {tag} landed)") from exc
        event = run.event("version-upload") or {}
        found = event.get("version_id")
        return (str(found) if found else None), (event.get("preview_url") or None), run.command

    try:
        version_id, preview_url, command = (
            once() if dry_run else retry.call(f"uploading {t.name}", once, cloudflare_api.policy(settings))
        )
    except retry.TransientError as exc:
        raise exc.__cause__ if isinstance(exc.__cause__, WranglerFailed) else exc from None
    if not dry_run:
        if not version_id:
            raise CfopsError(
                f"wrangler versions upload reported no version id for {t.name} (no version-upload event)"
            )
        assert tag is not None
        try:
            twins = [v.id for v in tagged_versions(settings, worker, tag) if v.id != version_id]
        except retry.TransientError as unanswered:
            # Only a courtesy: the upload itself succeeded, and its record must still be written.
            output.warn(f"could not look for other versions with tag {tag}: {unanswered}")
            twins = []
        if twins:
            # wrangler retried an upload whose answer was lost: the twin is identical and never deployed.
            output.warn(f"tag {tag} also marks {', '.join(twins)} (wrangler's retried upload landed twice)")
    return VersionResult(
        worker=worker,
        name=t.name,
        version_id=version_id,
        preview_url=preview_url,
        command=command,
        duration=round(time.perf_counter() - started, 3),
        tag=tag,
    )


def deploy_split(
    settings: Settings,
    worker: Worker,
    new_version: str,
    old_version: str | None,
    percent: float,
    *,
    message: str | None = None,
) -> SplitResult:
    """``wrangler versions deploy new@P old@100-P -y`` (repeated on a transient failure: the same split
    twice is the same state), then the deployment read back to confirm it."""
    t = target(settings, worker)
    traffic = split_traffic(new_version, old_version, percent)
    require_credentials(settings, f"deploying versions of {t.name}")
    specs = [f"{version}@{share:g}" for version, share in traffic.items()]
    args = ["versions", "deploy", *specs, *config_args(settings, t), "-y"]
    if message:
        args += ["--message", message[:DEPLOYMENT_MESSAGE_MAX]]
    run = _repeatable(settings, f"deploying {' '.join(specs)}", args)
    event = run.event("version-deploy") or {}
    # wrangler 4.86 writes version_traffic as {} (a Map through JSON.stringify): confirm from the API.
    current = confirm_traffic(settings, worker, traffic)
    if current is None:
        raise CheckFailed(
            f"{t.name}: asked for {traffic} but the current deployment does not show it; run "
            f"`cfops versions --worker {worker}` and repeat the split"
        )
    return SplitResult(
        worker=worker,
        name=t.name,
        deployment_id=str(event.get("deployment_id") or current.id),
        traffic=traffic,
        command=run.command,
        duration=run.duration,
    )


def rollback(
    settings: Settings, worker: Worker, version_id: str | None = None, *, message: str | None = None
) -> RollbackResult:
    """``wrangler rollback ID -y --message …``; without ID, the last version that had 100% of the traffic.

    The target is resolved here (not left to wrangler) so that the record names the version deployed.
    Repeated on a transient failure, then verified: the deployment is read back until it shows 100 % on
    the target (within the retry policy), else CheckFailed with the exact command to run by hand.
    Writes ``artifacts/rollback-<worker>.json``.
    """
    t = target(settings, worker)
    if version_id is not None:
        check_version_id(version_id)
    require_credentials(settings, f"rolling back {t.name}")
    started = time.perf_counter()
    deployments = list_deployments(settings, worker)
    if not deployments:
        raise CfopsError(f"{t.name} has no deployments: there is nothing to roll back")
    chosen = version_id or default_rollback_version(deployments)
    previous = deployments[-1].traffic
    note = message or f"cfops rollback of {t.worker} to {chosen[:8]}"
    args = ["rollback", chosen, *config_args(settings, t), "-y", "--message", note[:DEPLOYMENT_MESSAGE_MAX]]
    try:
        run = _repeatable(settings, f"rolling back {t.name} to {chosen}", args)
    except WranglerFailed as exc:
        raise WranglerFailed(
            f"{exc}; to roll back by hand: {rollback_hint(settings, worker, chosen)}",
            code=exc.code,
            returncode=exc.returncode,
            output_tail=exc.output_tail,
        ) from None
    if confirm_traffic(settings, worker, {chosen: 100.0}) is None:
        raise CheckFailed(
            f"{t.name}: the rollback to {chosen} is not confirmed (the deployment does not show it at 100%); "
            f"check with `cfops versions --worker {worker}` and run by hand: "
            f"{rollback_hint(settings, worker, chosen)}"
        )
    result = RollbackResult(
        worker=worker,
        name=t.name,
        version_id=chosen,
        previous_traffic=previous,
        command=run.command,
        duration=round(time.perf_counter() - started, 3),
        verified=True,
    )
    write_artifact(settings, f"rollback-{worker}.json", asdict(result))
    return result
