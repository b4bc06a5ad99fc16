"""`cfops deploy`: ship a Worker with the pinned wrangler.

Also the versions primitives the release pipeline composes: upload a version, split traffic between
two versions, read the deployments and versions, roll back. Every wrangler call is recorded from its
ND-JSON events (cfops.wrangler.run_wrangler), and each deploy writes ``artifacts/deploy-<worker>.json``
(a failed one ``deploy-<worker>.failed.json``, a dry run ``deploy-<worker>.dry-run.json``, so the record
of the last real deploy is never overwritten by anything else).
"""

from __future__ import annotations

import ipaddress
import re
import shutil
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, cast, get_args
from urllib.parse import urlsplit

from cfops import cli, cloudflare_api, output, pyruntime, retry
from cfops.cloudflare import RATE_LIMIT_CODE
from cfops.cloudflare_api import Deployment, VersionInfo
from cfops.config import NativeRunner, Settings
from cfops.errors import CfopsError, CheckFailed, CommandFailed, ConfigError, MissingToolError, UsageError
from cfops.report import write_json
from cfops.sync import sync
from cfops.wrangler import (
    WranglerFailed,
    WranglerRun,
    pywrangler_problem,
    read_config,
    require_credentials,
    run_wrangler,
    wrangler_bin,
)

Worker = Literal["native", "proxy"]
Strategy = Literal["direct", "versions"]
WORKERS: tuple[Worker, ...] = get_args(Worker)
STRATEGIES: tuple[Strategy, ...] = get_args(Strategy)
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_HOST = re.compile(r"^[a-z0-9]([a-z0-9.-]*[a-z0-9])?$")


# ------------------------------------------------------------------------------------------ targets


@dataclass(frozen=True)
class Target:
    worker: Worker
    name: str
    config: Path


def target(settings: Settings, worker: Worker) -> Target:
    """The Worker ``worker`` names, checked against its wrangler config (the name wrangler will use)."""
    if worker not in WORKERS:
        raise UsageError(f"unknown worker {worker!r}: use one of {', '.join(WORKERS)}")
    configured = settings.native if worker == "native" else settings.proxy
    declared = read_config(configured.config).get("name")
    if declared != configured.name:
        raise ConfigError(
            f"{configured.config.name} names the Worker {declared!r} but [tool.cfops.{worker}] name is "
            f"{configured.name!r}: make them agree"
        )
    return Target(worker=worker, name=configured.name, config=configured.config)


def config_args(settings: Settings, t: Target) -> list[str]:
    config = t.config
    shown = config.relative_to(settings.worker_dir) if config.is_relative_to(settings.worker_dir) else config
    return ["--config", str(shown)]


def backend_origin(raw: str) -> str:
    """The proxy's container origin, validated: ``https://host[:port]`` and nothing else."""
    value = raw.strip()
    if not value:
        raise UsageError(
            "IMMCAD_BACKEND_ORIGIN (or BACKEND_ORIGIN) is not set: the edge proxy needs the https origin it "
            "forwards to, e.g. https://api.example.com (or pass --origin)"
        )
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError:
        raise UsageError("the backend origin is not a valid URL: use https://host[:port]") from None
    if parts.username is not None or parts.password is not None:
        # Said without the value: it holds a password.
        raise UsageError("the backend origin must not carry credentials (user:password@): use https://host")
    if parts.scheme != "https":
        raise UsageError(f"the backend origin {value!r} must be an https:// URL")
    host = parts.hostname or ""
    if ":" in host:  # an IPv6 literal, which urlsplit returns without its brackets
        try:
            host = f"[{ipaddress.IPv6Address(host)}]"
        except ValueError:
            host = ""
    elif not _HOST.match(host):
        host = ""
    if not host:
        raise UsageError(f"the backend origin {value!r} has no valid host name")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise UsageError(f"the backend origin {value!r} must be scheme://host[:port], without path or query")
    return f"https://{host}" + (f":{port}" if port is not None else "")


# ------------------------------------------------------------------------------------------ runners


@dataclass(frozen=True)
class Runner:
    name: Literal["pywrangler", "wrangler"]
    program: Path
    note: str  # said aloud when the runner is not the obvious one


def choose_runner(settings: Settings, requested: NativeRunner, *, dry_run: bool) -> Runner:
    """Who uploads the native Worker.

    pywrangler vendors the packages of backend-cloudflare/pyproject.toml into python_modules/ and then
    runs the pinned wrangler. Where it cannot run (it downloads Pyodide and a CPython build), a dry run
    still bundles and validates the synced source with the pinned wrangler and says so; a real deploy
    refuses unless the stand-in is asked for, because the Worker would ship without its packages.
    """
    if requested == "wrangler":
        vendored = (settings.worker_dir / "python_modules").is_dir()
        packages = "with the python_modules/ vendored earlier" if vendored else "without vendored packages"
        return Runner(
            "wrangler",
            wrangler_bin(settings),
            "the pinned wrangler stands in for pywrangler (requested): it uploads the synced source "
            + packages,
        )
    problem = pywrangler_problem(settings)
    if problem is None:
        found = shutil.which("pywrangler")
        assert found is not None  # pywrangler_problem checked it
        wrangler_bin(settings)  # pywrangler runs `npx wrangler` in the worker dir: the pinned one
        return Runner("pywrangler", Path(found), "")
    if requested == "pywrangler" or not dry_run:
        raise MissingToolError(
            f"pywrangler cannot run here: {problem}. A native deploy needs it to vendor the Python packages; "
            "deploy from a machine where it runs, or pass --runner wrangler to upload the synced source "
            "without vendored packages"
        )
    return Runner(
        "wrangler",
        wrangler_bin(settings),
        f"pywrangler cannot run here ({problem}): the dry run bundles the synced source with the pinned "
        "wrangler instead; Python packages are not vendored",
    )


# --------------------------------------------------------------------------- deployments & versions


def list_deployments(settings: Settings, worker: Worker) -> list[Deployment]:
    """The Worker's recent deployments, oldest first (empty when it was never deployed); over httpx."""
    t = target(settings, worker)
    return cloudflare_api.client(settings, f"reading the deployments of {t.name}").deployments(t.name)


def current_deployment(settings: Settings, worker: Worker) -> Deployment | None:
    deployments = list_deployments(settings, worker)
    return deployments[-1] if deployments else None


def list_versions(settings: Settings, worker: Worker) -> list[VersionInfo]:
    """The Worker's recent versions, newest first; over httpx."""
    t = target(settings, worker)
    return cloudflare_api.client(settings, f"reading the versions of {t.name}").versions(t.name)


def default_rollback_version(deployments: Sequence[Deployment]) -> str:
    """The last version that had 100% of the traffic before the current deployment (wrangler's rule)."""
    ordered = sorted(deployments, key=lambda d: d.created_on)
    for deployment in reversed(ordered[:-1]):
        if deployment.stable_version:
            return deployment.stable_version
    raise UsageError("no earlier deployment had a version at 100%: pass --version ID to choose one")


def check_version_id(version_id: str) -> str:
    if not _UUID.match(version_id):
        raise UsageError(f"{version_id!r} is not a version id (a UUID like 1b2c3d4e-…; see cfops versions)")
    return version_id


# ----------------------------------------------------------------------------------------- results


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


# -------------------------------------------------------------------------------------- primitives


def _version_extra(
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


def new_tag() -> str:
    """A tag no other upload carries: how an upload is found again when its answer was lost."""
    return f"cfops-{uuid.uuid4().hex[:12]}"


def tagged_versions(settings: Settings, worker: Worker, tag: str) -> list[VersionInfo]:
    """The versions carrying ``tag``, newest first (more than one: a retried upload landed twice)."""
    return [v for v in list_versions(settings, worker) if v.tag == tag]


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
        *_version_extra(t, origin, message, tag, direct=False),
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
            landed = tagged_versions(settings, worker, tag)
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
        twins = [v.id for v in tagged_versions(settings, worker, tag) if v.id != version_id]
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


def split_traffic(new_version: str, old_version: str | None, percent: float) -> dict[str, float]:
    """``new@P old@100-P``; at 100 (or without an old version) only the new one.

    ``new@0 old@100`` stays a two-version deployment on purpose: a canary reaches a version through the
    ``Cloudflare-Workers-Version-Overrides`` header only while it is part of the current deployment.
    """
    check_version_id(new_version)
    if not 0 <= percent <= 100:
        raise UsageError(f"traffic percentage {percent:g} must be between 0 and 100")
    if old_version is None or percent == 100:
        if percent != 100:
            raise UsageError("a split below 100% needs the old version that keeps the rest of the traffic")
        return {new_version: 100.0}
    check_version_id(old_version)
    if old_version == new_version:
        raise UsageError("the new and the old version of a split must differ")
    return {new_version: float(percent), old_version: 100.0 - percent}


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
        args += ["--message", message]
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


def confirm_traffic(settings: Settings, worker: Worker, traffic: dict[str, float]) -> Deployment | None:
    """The current deployment once it shows ``traffic`` (re-read within the retry policy), else None."""
    t = target(settings, worker)

    def read() -> Deployment:
        current = current_deployment(settings, worker)
        if current is None or current.traffic != traffic:
            seen = current.traffic if current else "no deployment"
            raise retry.TransientError(f"{t.name} shows {seen}, not {traffic} yet")
        return current

    try:
        return retry.call(f"reading back the deployment of {t.name}", read, cloudflare_api.policy(settings))
    except retry.TransientError:
        return None


def rollback_hint(settings: Settings, worker: Worker, version_id: str) -> str:
    """The exact command that puts the Worker back by hand."""
    t = target(settings, worker)
    config = " ".join(config_args(settings, t))
    return f"cd {settings.worker_dir} && npx wrangler rollback {version_id} {config} -y"


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
    args = ["rollback", chosen, *config_args(settings, t), "-y", "--message", note[:120]]
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


def _previous_version(settings: Settings, worker: Worker) -> str | None:
    current = current_deployment(settings, worker)
    return current.primary_version if current else None


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
    previous = None if dry_run else _previous_version(settings, worker)
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
                *_version_extra(t, origin, message, None, direct=True),
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


# -------------------------------------------------------------------------------------- entry point


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


if __name__ == "__main__":
    cli.run_main(main)
