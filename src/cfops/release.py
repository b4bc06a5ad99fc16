"""`cfops release`: release pipelines — ordered steps, a failure policy, one report.

Three pipelines, each an ordered list of named steps (data, below):

- ``local`` (the default, a rehearsal: no credentials, nothing remote changes): sync → preflight → tests →
  spike image → local stack (backend + edge proxy in workerd) → perf smoke through the proxy → deploy
  dry-runs of both Workers.
- ``production``: sync (+ vendoring) → preflight --mode native --strict → tests → secrets → upload a new
  version → split new@0 old@100 → canary (perf smoke against the new version only) → promote through the
  configured stages with a perf smoke at each, and each stage judged by its real traffic per version
  (Workers Analytics Engine, after the stage's soak: docs/analytics.md). The token's analytics access
  is checked before the upload. Any failure after the upload rolls back to the previous version.
- ``proxy`` (the emergency path): sync → preflight --mode proxy → deploy the proxy with the origin →
  smoke through its URL → roll back on failure.

Both start with the sync because preflight measures the synced bundle, which a fresh checkout lacks.
Every step runs one command (``python -m cfops.<command> …``, the same entry points the nox sessions
call) and the steps talk through the JSON artifacts those commands write. ``--dry-run`` prints the plan
with the exact commands and runs only what changes nothing remote (the bundle and validation of the
upload). The report goes to ``artifacts/release.json`` and ``release.md`` (and $GITHUB_STEP_SUMMARY).

A production release also keeps a journal of its transitions (cfops.journal), holds the checkout's
release lock, and refuses to start (exit 2) while the last release is unfinished or the live deployment
splits traffic: ``invoke recover`` (cfops.recover) finishes or undoes it first. Each perf step records
which Worker version answered (x-immcad-version); the canary fails unless every answer came from the new
version. A stage may carry extra checks (``Step.checks``): the hook for per-stage analysis.
"""

from __future__ import annotations

import dataclasses
import shlex
import signal
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast

from cfops import cli, journal, output, procs
from cfops import report as artifacts
from cfops.config import Settings, with_deferred_env
from cfops.errors import CfopsError, UsageError
from cfops.journal import Entry
from cfops.records import DeployRecord, PerfRecord, read_object

if TYPE_CHECKING:
    from cfops.cloudflare_api import Deployment
    from cfops.deploy import Worker
from cfops.wrangler import require_credentials, toolchain_versions

Pipeline = Literal["local", "production", "proxy"]
PIPELINES: tuple[Pipeline, ...] = ("local", "production", "proxy")
Status = Literal["ok", "failed", "skipped", "interrupted", "not run", "planned"]
SYMBOL: dict[str, str] = {
    "ok": "✓",
    "failed": "✗",
    "interrupted": "✗",
    "skipped": "–",
    "not run": "·",
    "planned": "·",
}
REPORT_JSON = "release.json"
REPORT_MD = "release.md"
# Placeholders in a plan for values only a real run knows.
NEW, OLD = "NEW_VERSION_ID", "PREVIOUS_VERSION_ID"


class StepFailed(CfopsError):
    """A step's command failed; the message is its last meaningful output line."""

    def __init__(self, message: str, *, returncode: int | None = None) -> None:
        super().__init__(message)
        self.returncode = returncode


@dataclass(frozen=True, kw_only=True)
class Options:
    pipeline: Pipeline
    dry_run: bool = False
    skip_tests: bool = False
    allow_dirty: bool = False
    base_url: str | None = None  # production: where the canary and stage smokes send their requests
    origin: str | None = None  # proxy (and the rehearsal's dry run): the container origin
    proxy_url: str | None = None  # proxy: where the deployed proxy answers
    stages: tuple[float, ...] = ()
    message: str | None = None


@dataclass
class ReleaseState:
    """What a run learns as it goes (and what a plan shows as placeholders until then)."""

    release_id: str = ""  # also the upload's tag, so a lost upload can be found
    base_url: str = ""  # production: where the canary and stage smokes send their requests
    origin: str = ""  # proxy: the container origin
    proxy_url: str = ""  # proxy: where the deployed proxy answers
    proxy_port: int = 0  # local: the rehearsal's stack
    backend_port: int = 0
    new_version: str | None = None
    old_version: str | None = None
    rolled_back_to: str | None = None
    rollback_failed: bool = False
    # When each stage's split was asked for (time.monotonic()): where its analysis window starts.
    stage_started: dict[float, float] = field(default_factory=dict)


@dataclass
class Context:
    settings: Settings
    options: Options
    stack: ExitStack = field(default_factory=ExitStack)
    state: ReleaseState = field(default_factory=ReleaseState)
    perf: dict[str, PerfRecord] = field(default_factory=dict)
    # Each stage's analysis record (cfops.analytics: old vs new, verdict, reason), by step name.
    analysis: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Set once a new version exists remotely: from then on a failure rolls back.
    rollback_to: str | None = None
    rollback_worker: str = "native"
    # A production release records each transition (cfops.journal); the rehearsal and dry runs do not.
    journaled: bool = False

    def artifact(self, name: str) -> Path:
        return self.settings.artifacts_dir / name

    def record(self, event: journal.Event, **fields: Any) -> None:
        if self.journaled:
            entry = Entry(release=self.state.release_id, event=event, worker=self.rollback_worker, **fields)
            journal.record(self.settings.artifacts_dir, entry)


@dataclass(frozen=True)
class Skip:
    reason: str
    quiet: bool = False  # asked for (--skip-tests): no warning


@dataclass(frozen=True)
class Step:
    name: str
    # The exact command; placeholders (NEW_VERSION_ID) where only a real run knows the value.
    command: Callable[[Context], list[str]]
    skip: Callable[[Context], Skip | None] = lambda ctx: None
    before: Callable[[Context], None] = lambda ctx: None  # journal the intent of a remote change
    after: Callable[[Context], str | None] = lambda ctx: None  # read the artifacts the command wrote
    # Extra checks once ``after`` has read the step's artifacts (per-stage analysis plugs in here): each
    # returns None when it passes, or the one line that fails the step (and so rolls the release back).
    checks: tuple[Callable[[Context], str | None], ...] = ()
    stage: float | None = None  # the new version's traffic share this step runs at (perf steps)
    # The command run by --dry-run instead of nothing (it must change nothing remote).
    dry_command: Callable[[Context], list[str]] | None = None
    # A long-running service instead of a command: started, health-checked, owned by the context.
    service_url: Callable[[Context], str] | None = None
    env: Callable[[Context], dict[str, str]] = lambda ctx: {}
    # The services started so far have served their purpose once this step is done: stop them.
    closes_services: bool = False
    # A missing prerequisite (the command exits 2: no engine, no base image) skips the step with a
    # warning instead of failing the pipeline; a real failure (exit 1) still fails it.
    optional: bool = False
    # The artifact the command writes: removed before it runs (a stale one must never be read), and read
    # by ``after`` even when the step fails (a failed canary's numbers belong in the report).
    artifact: str | None = None


@dataclass
class StepResult:
    name: str
    status: Status
    duration: float = 0.0
    command: str = ""
    detail: str = ""


# ------------------------------------------------------------------------------------------- commands


def cfops(command: str, *args: str) -> list[str]:
    return [sys.executable, "-m", f"cfops.{command}", *args]


def shown(argv: Sequence[str]) -> str:
    """A command as the plan and report show it: the interpreter as ``python`` (its path is in the header)."""
    parts = ["python" if part == sys.executable else part for part in argv]
    return output.redact(shlex.join(parts))


def _perf_step(
    name: str,
    url: Callable[[Context], str],
    artifact: str,
    *,
    version: bool = False,
    closes: bool = False,
    stage: float | None = None,
) -> Step:
    """A perf smoke whose numbers, and the answers by version, land in the report's perf section.

    With ``version`` it is the canary: the override header names the new version, and perf fails it
    unless every answer came from that version (x-immcad-version)."""

    def command(ctx: Context) -> list[str]:
        args = ["--base-url", url(ctx), "--json", str(ctx.artifact(artifact))]
        if version:
            args += ["--version-id", ctx.state.new_version or NEW]
        return cfops("perf", *args)

    def after(ctx: Context) -> str:
        record = PerfRecord.read(ctx.artifact(artifact))
        ctx.perf[name] = record
        if ctx.journaled and record.passed:
            answers = record.answers_by_version
            if version:
                ctx.record("canary", new=ctx.state.new_version, answers=answers, detail=record.verdict)
            elif stage is not None:
                ctx.record("stage", percent=stage, answers=answers, detail=record.verdict)
        p95 = "?" if record.p95_ms is None else f"{record.p95_ms:g}"
        return f"p95 {p95} ms over {record.requests} requests; answers by version: {record.answers()}"

    return Step(
        name,
        command,
        after=after,
        env=_local_token,
        closes_services=closes,
        artifact=artifact,
        stage=stage if not version else 0.0,
    )


def _local_token(ctx: Context) -> dict[str, str]:
    """The local stack serves .dev.vars: its bearer token goes to the perf child by environment."""
    if ctx.options.pipeline != "local":
        return {}
    from cfops.cloudflare import BEARER_TOKEN
    from cfops.dev import local_bearer_token

    token = local_bearer_token(ctx.settings)
    return {BEARER_TOKEN: token} if token else {}


def _tests_step() -> Step:
    return Step(
        "tests",
        lambda ctx: [sys.executable, "-m", "pytest", "tests", "-q", "-p", "no:cacheprovider"],
        skip=lambda ctx: Skip("--skip-tests", quiet=True) if ctx.options.skip_tests else None,
    )


def _preflight_step(*args: str) -> Step:
    def command(ctx: Context) -> list[str]:
        return cfops("preflight", *args, *(["--allow-dirty"] if ctx.options.allow_dirty else []))

    return Step("preflight", command)


# ----------------------------------------------------------------------------------------- pipelines


def local_steps(ctx: Context) -> list[Step]:
    ctx.state.proxy_port = port = ctx.state.proxy_port or procs.free_port()
    ctx.state.backend_port = backend_port = ctx.state.backend_port or procs.free_port()
    proxy_url = f"http://127.0.0.1:{port}"

    def no_engine(ctx: Context) -> Skip | None:
        from cfops.image import engine_problem

        problem = engine_problem(ctx.settings)
        return Skip(f"no Docker Engine answers ({problem})") if problem else None

    origin = ctx.options.origin or ctx.settings.deploy.backend_origin or ctx.settings.release.rehearsal_origin
    # sync comes first: preflight checks the synced bundle (its sync and native-bundle checks), and a
    # fresh checkout has none (the synced files are git-ignored).
    return [
        Step("sync", lambda ctx: cfops("sync")),
        _preflight_step("--target", "local"),
        _tests_step(),
        Step(
            "spike image",
            lambda ctx: cfops("image", "spike", "--no-sync", "--run"),
            skip=no_engine,
            optional=True,
        ),
        Step(
            "local stack",
            lambda ctx: (
                _fresh_points(ctx)
                + cfops("proxy", "--port", str(port), "--backend-port", str(backend_port), "--no-sync")
            ),
            service_url=lambda ctx: proxy_url,
            # The backend writes each request's analytics data point to a file instead of a binding.
            env=lambda ctx: {
                "IMMCAD_ANALYTICS_FILE": str(ctx.artifact(LOCAL_POINTS)),
                "IMMCAD_VERSION_ID": "local-rehearsal",
            },
        ),
        _perf_step("perf smoke through the proxy", lambda ctx: proxy_url, "perf-local.json", closes=True),
        _rehearsal_analysis_step(),
        Step("deploy dry-run (native)", lambda ctx: cfops("deploy", "native", "--dry-run", "--no-sync")),
        Step("deploy dry-run (proxy)", lambda ctx: cfops("deploy", "proxy", "--dry-run", "--origin", origin)),
    ]


LOCAL_POINTS = "analytics-local.jsonl"


def _fresh_points(ctx: Context) -> list[str]:
    """The rehearsal's data points start empty (a stale file would be judged as this run's traffic)."""
    ctx.artifact(LOCAL_POINTS).unlink(missing_ok=True)
    return []


def _record_analysis(ctx: Context, name: str, artifact: str) -> str:
    from cfops.analytics.command import summary_line

    record = read_object(ctx.artifact(artifact))
    ctx.analysis[name] = record
    return summary_line(record)


def _rehearsal_analysis_step() -> Step:
    """The configured gates tried on seeded versions (labelled so); the local stack's points beside them."""
    name, artifact = "analysis (seeded)", "analysis-local.json"
    return Step(
        name,
        lambda ctx: cfops(
            "analytics",
            "rehearse",
            "--points",
            str(ctx.artifact(LOCAL_POINTS)),
            "--json",
            str(ctx.artifact(artifact)),
        ),
        skip=lambda ctx: (
            None if ctx.settings.release.gates.enabled else Skip("analysis disabled (gates.enabled)")
        ),
        after=lambda ctx: _record_analysis(ctx, name, artifact),
        artifact=artifact,
    )


def _analysis_step(percent: float, previous: float | None) -> Step:
    """After the stage's smoke: soak, then judge the stage by each version's real traffic."""
    name, artifact = f"analysis at {percent:g} %", f"analysis-{percent:g}.json"

    def command(ctx: Context) -> list[str]:
        started = ctx.state.stage_started.get(percent)
        ago = max(time.monotonic() - started, 0.0) if started is not None else 0.0
        args = ["--new", ctx.state.new_version or NEW, "--percent", f"{percent:g}"]
        if ctx.state.old_version:
            args += ["--old", ctx.state.old_version]
        args += ["--started-ago", f"{ago:.3f}", "--json", str(ctx.artifact(artifact))]
        args += ["--soak", f"{ctx.settings.release.soak_seconds:g}"]
        if previous is not None:
            # At 100 % the old version serves nothing: its numbers from the stage before are the baseline.
            args += ["--baseline", str(ctx.artifact(f"analysis-{previous:g}.json"))]
        return cfops("analytics", "stage", *args)

    return Step(
        name,
        command,
        skip=lambda ctx: (
            None if ctx.settings.release.gates.enabled else Skip("analysis disabled (gates.enabled)")
        ),
        after=lambda ctx: _record_analysis(ctx, name, artifact),
        artifact=artifact,
    )


def _upload_after(ctx: Context) -> str:
    record = DeployRecord.read(ctx.artifact("deploy-native.json"))
    ctx.state.new_version, ctx.state.old_version = record.version_id, record.previous_version_id
    if not record.version_id:
        raise StepFailed("the upload recorded no version id")
    ctx.rollback_worker = "native"
    if record.previous_version_id:
        ctx.rollback_to = record.previous_version_id
    ctx.record("uploaded", new=record.version_id, stable=record.previous_version_id, tag=record.tag)
    return f"new version {record.version_id} (live: {record.previous_version_id or 'none'})"


def _traffic(ctx: Context, percent: float) -> dict[str, float]:
    new, old = ctx.state.new_version or NEW, ctx.state.old_version
    return {new: 100.0} if percent == 100 or not old else {new: percent, old: 100.0 - percent}


def split_step(percent: float) -> Step:
    def command(ctx: Context) -> list[str]:
        new = ctx.state.new_version or NEW
        old = ctx.state.old_version if ctx.state.new_version else OLD
        args = ["--worker", "native", "--new", new, "--percent", f"{percent:g}"]
        if percent < 100:
            if not old:
                raise StepFailed(
                    f"{ctx.settings.native.name} had no live version: a first deploy has nothing to canary "
                    "against; deploy it once with `nox -s deploy_native`"
                )
            args += ["--old", str(old)]
        # The stage's analysis window starts here (a monotonic time: immune to the runner's clock).
        ctx.state.stage_started[percent] = time.monotonic()
        return cfops("promote", *args)

    def before(ctx: Context) -> None:
        ctx.record("splitting", new=ctx.state.new_version, traffic=_traffic(ctx, percent), percent=percent)

    def after(ctx: Context) -> None:
        ctx.record("split", new=ctx.state.new_version, traffic=_traffic(ctx, percent), percent=percent)

    label = "split new@0 old@100" if percent == 0 else f"promote to {percent:g} %"
    return Step(label, command, before=before, after=after)


def _upload_step(ctx: Context) -> Step:
    message = ctx.options.message or "cfops release"

    def command(ctx: Context) -> list[str]:
        args = ["deploy", "native", "--strategy", "versions", "--no-sync", "--message", message]
        return cfops(*args, "--tag", ctx.state.release_id or "RELEASE_ID")

    def before(ctx: Context) -> None:
        ctx.record("uploading", tag=ctx.state.release_id)

    return Step(
        "upload version",
        command,
        before=before,
        after=_upload_after,
        dry_command=lambda ctx: cfops("deploy", "native", "--strategy", "versions", "--no-sync", "--dry-run"),
        artifact="deploy-native.json",
    )


def smoke_step(ctx: Context, percent: float) -> Step:
    """The perf smoke of a stage: it records the split it saw, by version."""
    base_url = ctx.state.base_url
    return _perf_step(
        f"perf smoke at {percent:g} %", lambda ctx: base_url, f"perf-{percent:g}.json", stage=percent
    )


def stage_steps(ctx: Context, stages: Sequence[float], previous: float | None = None) -> list[Step]:
    """Per stage: the split, its smoke, and its analysis (by each version's real traffic, against the
    stage before as the baseline)."""
    steps: list[Step] = []
    for percent in stages:
        steps += [split_step(percent), smoke_step(ctx, percent), _analysis_step(percent, previous)]
        previous = percent
    return steps


def canary_step(ctx: Context) -> Step:
    base_url = ctx.state.base_url
    return _perf_step("canary (new version only)", lambda ctx: base_url, "perf-canary.json", version=True)


def production_steps(ctx: Context) -> list[Step]:
    steps = [
        # Local only (no remote state), so a dry run syncs too: the upload's dry run bundles the result.
        Step("sync", lambda ctx: cfops("sync", "--vendor"), dry_command=lambda ctx: cfops("sync")),
        _preflight_step("--target", "production", "--mode", "native", "--strict"),
        # Before anything remote changes: the stages will be judged by Analytics Engine, so a token that
        # cannot read it must fail here, not after the upload.
        Step(
            "analytics access",
            lambda ctx: cfops("analytics", "check"),
            skip=lambda ctx: (
                None if ctx.settings.release.gates.enabled else Skip("analysis disabled (gates.enabled)")
            ),
        ),
        _tests_step(),
        Step("secrets", lambda ctx: cfops("secrets", "--worker", "native")),
        _upload_step(ctx),
        split_step(0),
        canary_step(ctx),
    ]
    return steps + stage_steps(ctx, ctx.options.stages)


def proxy_steps(ctx: Context) -> list[Step]:
    origin = ctx.state.origin

    def deployed(ctx: Context) -> str:
        record = DeployRecord.read(ctx.artifact("deploy-proxy.json"))
        ctx.state.new_version, ctx.state.old_version = record.version_id, record.previous_version_id
        ctx.rollback_worker = "proxy"
        ctx.rollback_to = record.previous_version_id
        if not ctx.state.proxy_url and record.urls:
            ctx.state.proxy_url = record.urls[0]
        return f"version {record.version_id} at 100 % (was {record.previous_version_id or 'none'})"

    def url(ctx: Context) -> str:
        if ctx.state.proxy_url:
            return ctx.state.proxy_url
        if ctx.options.dry_run:
            return "PROXY_URL"
        raise StepFailed("the deploy recorded no URL for the proxy: pass --proxy-url or set IMMCAD_PROXY_URL")

    return [
        # The sync feeds preflight's edge-contract check (the allowlist against the synced app's routes).
        Step("sync", lambda ctx: cfops("sync"), dry_command=lambda ctx: cfops("sync")),
        # The proxy Worker holds no secrets (the origin has its own), so the secrets check does not apply.
        _preflight_step("--target", "production", "--mode", "proxy", "--skip", "secrets"),
        Step(
            "deploy proxy",
            lambda ctx: cfops("deploy", "proxy", "--origin", origin),
            after=deployed,
            dry_command=lambda ctx: cfops("deploy", "proxy", "--origin", origin, "--dry-run"),
        ),
        _perf_step("smoke through the proxy", url, "perf-proxy.json"),
    ]


STEPS: dict[Pipeline, Callable[[Context], list[Step]]] = {
    "local": local_steps,
    "production": production_steps,
    "proxy": proxy_steps,
}


def rollback_command(ctx: Context, failed_step: str) -> list[str]:
    note = f"release rolled back: {failed_step} failed"
    return cfops(
        "rollback", "--worker", ctx.rollback_worker, "--version", str(ctx.rollback_to), "--message", note
    )


# --------------------------------------------------------------------------------------------- runner


def prepare(settings: Settings, options: Options) -> Context:
    """Check everything a pipeline needs before it starts (exit 2 on bad input, nothing run)."""
    ctx = Context(settings=settings, options=options)
    if options.pipeline == "production":
        base_url = options.base_url or with_deferred_env(settings.perf, settings).base_url
        if not base_url and not options.dry_run:
            raise UsageError(
                "the canary needs the native Worker's URL: pass --base-url or set IMMCAD_API_BASE_URL"
            )
        ctx.state.base_url = base_url or "BASE_URL"
        stages = options.stages or settings.release.stages
        if (
            not stages
            or stages[-1] != 100
            or any(not 0 < s <= 100 for s in stages)
            or list(stages) != sorted(stages)
        ):
            raise UsageError(f"stages {list(stages)} must rise to 100 (e.g. 10,50,100)")
        if settings.release.soak_seconds < 0:
            raise UsageError(f"--soak {settings.release.soak_seconds:g}: expected seconds >= 0")
        ctx.options = dataclasses.replace(options, stages=tuple(stages))
        if not options.dry_run:
            require_credentials(settings, "a production release", dry_run_hint=True)
    if options.pipeline == "proxy":
        from cfops.deploy import backend_origin

        ctx.state.origin = backend_origin(options.origin or settings.deploy.backend_origin)
        ctx.state.proxy_url = options.proxy_url or settings.release.proxy_url
        if not options.dry_run:
            require_credentials(settings, "a proxy release", dry_run_hint=True)
    return ctx


def _child_env(ctx: Context, step: Step) -> dict[str, str]:
    # Every step works on this project and writes into this artifacts directory.
    return {
        "CFOPS_ROOT": str(ctx.settings.root),
        "CFOPS_ARTIFACTS_DIR": str(ctx.settings.artifacts_dir),
        **step.env(ctx),
    }


def _failure_line(result: procs.Result) -> str:
    lines = [
        line for line in procs.tail_lines(result.stdout + result.stderr, 40).splitlines() if line.strip()
    ]
    errors = [line for line in lines if line.lstrip().startswith(("error:", "✗", "FAILED", "E "))]
    return (errors or lines or [f"exited with {result.returncode}"])[-1].strip()


def _run_command(ctx: Context, argv: list[str], step: Step) -> str:
    """Run a step's command, streaming its output; returns its last line, raises StepFailed."""
    result = procs.run(
        argv,
        cwd=ctx.settings.root,
        env=_child_env(ctx, step),
        stream=True,
        check=False,
        echo=False,
        timeout=ctx.settings.release.step_timeout,
    )
    if result.returncode != 0:
        raise StepFailed(_failure_line(result), returncode=result.returncode)
    lines = [line.strip() for line in procs.tail_lines(result.stdout, 5).splitlines() if line.strip()]
    return lines[-1] if lines else ""


def _start_service(ctx: Context, argv: list[str], step: Step) -> None:
    assert step.service_url is not None
    service = procs.Service(
        step.name,
        argv,
        cwd=ctx.settings.root,
        env=_child_env(ctx, step),
        health_url=f"{step.service_url(ctx)}/healthz",
        ready_timeout=180,
        stop_signal=signal.SIGINT,
        grace=20,
    )
    ctx.stack.enter_context(service)


def execute(ctx: Context, steps: list[Step], results: list[StepResult]) -> None:
    """Run (or, with --dry-run, plan) ``steps`` in order, filling ``results`` as they go (so an interrupted
    run still reports where it stopped); roll back on a failure after the upload."""
    results[:] = [StepResult(step.name, "not run") for step in steps]
    dry = ctx.options.dry_run
    output.echo(
        f"release pipeline {ctx.options.pipeline}{' (dry run)' if dry else ''} — python = {sys.executable}"
    )
    failed: StepResult | None = None
    with ctx.stack:
        for step, result in zip(steps, results, strict=True):
            started = time.perf_counter()
            try:
                skip = step.skip(ctx)
                if skip is not None:
                    result.status, result.detail = "skipped", skip.reason
                    if not skip.quiet:
                        output.warn(f"{step.name} skipped: {skip.reason}")
                    _line(result)
                    continue
                argv = (step.dry_command or step.command)(ctx) if dry else step.command(ctx)
                result.command = shown(argv)
                if dry and step.dry_command is None:
                    result.status = "planned"
                    output.echo(f"{SYMBOL['planned']} {step.name}: {result.command}")
                    continue
                output.echo(f"▶ {step.name}: {result.command}", style="bold")
                if step.artifact:
                    ctx.artifact(step.artifact).unlink(missing_ok=True)
                # A step's own output folds into one group in a GitHub Actions log; ▶ and ✓ stay outside.
                with output.group(step.name):
                    if step.service_url is not None:
                        _start_service(ctx, argv, step)
                        result.detail = f"serving {step.service_url(ctx)}"
                    else:
                        if not dry:
                            step.before(ctx)
                        last = _run_command(ctx, argv, step)
                        result.detail = (step.after(ctx) if not dry else "") or last
                        for check in () if dry else step.checks:
                            problem = check(ctx)
                            if problem:
                                raise StepFailed(problem)
                result.status = "ok"
            except KeyboardInterrupt:
                result.status, result.detail = "interrupted", "interrupted (Ctrl-C / SIGTERM)"
                result.duration = time.perf_counter() - started
                _line(result)
                _roll_back(ctx, results, step.name, interrupted=True)
                raise
            except CfopsError as exc:
                code = exc.returncode if isinstance(exc, StepFailed) else None
                if step.optional and code == 2:
                    result.status, result.detail = "skipped", str(exc)
                    output.warn(f"{step.name} skipped: {exc}")
                else:
                    result.status, result.detail = "failed", str(exc)
                    failed = result
                    if step.artifact and ctx.artifact(step.artifact).is_file():
                        with suppress(CfopsError):
                            step.after(ctx)
            finally:
                result.duration = round(time.perf_counter() - started, 3)
            _line(result)
            if failed:
                break
            if step.closes_services:
                ctx.stack.close()
    if failed is not None:
        _roll_back(ctx, results, failed.name, interrupted=False)


def _roll_back(ctx: Context, results: list[StepResult], failed_step: str, *, interrupted: bool) -> None:
    if ctx.rollback_to is None or ctx.options.dry_run:
        return
    argv = rollback_command(ctx, failed_step)
    entry = StepResult("rollback", "not run", command=shown(argv))
    results.append(entry)
    why = "interrupted" if interrupted else "failed"
    output.warn(f"{failed_step} {why} after the upload: rolling back to {ctx.rollback_to}")
    started = time.perf_counter()
    ctx.record("rolling-back", stable=ctx.rollback_to, detail=f"{failed_step} {why}")
    try:
        # cfops rollback repeats a transient failure and reads the deployment back before it says ok.
        _run_command(ctx, argv, Step("rollback", lambda c: argv))
        entry.status, entry.detail = "ok", f"back on {ctx.rollback_to} (read back at 100 %)"
        ctx.state.rolled_back_to = ctx.rollback_to
        ctx.record("rolled-back", stable=ctx.rollback_to)
    except CfopsError as exc:
        ctx.state.rollback_failed = True
        entry.status, entry.detail = "failed", f"ROLLBACK FAILED: {exc}; run `invoke recover`"
        ctx.record("rollback-failed", stable=ctx.rollback_to, detail=str(exc))
    except KeyboardInterrupt:
        ctx.state.rollback_failed = True
        entry.status, entry.detail = "interrupted", "rollback interrupted: run `invoke recover`"
    entry.duration = round(time.perf_counter() - started, 3)
    _line(entry)


def _line(result: StepResult) -> None:
    style = {"ok": "green", "failed": "bold red", "interrupted": "bold red", "skipped": "yellow"}.get(
        result.status
    )
    detail = f" — {result.detail}" if result.detail else ""
    output.echo(f"{SYMBOL[result.status]} {result.name} ({result.duration:.1f} s){detail}", style=style)


# --------------------------------------------------------------------------------------------- report


def summarize(ctx: Context, results: list[StepResult], started_at: str, duration: float) -> dict[str, Any]:
    statuses = [r.status for r in results]
    if "interrupted" in statuses:
        outcome = "interrupted"
    elif "failed" in statuses:
        outcome = "failed"
    else:
        outcome = "dry-run" if ctx.options.dry_run else "passed"
    stopped = next((r.name for r in results if r.status in {"failed", "interrupted"}), None)
    return {
        "pipeline": ctx.options.pipeline,
        "dry_run": ctx.options.dry_run,
        "result": outcome,
        "stopped_at": stopped,
        "started_at": started_at,
        "duration_seconds": round(duration, 3),
        "python": sys.executable,
        "release_id": ctx.state.release_id or None,
        # The Node toolchain the steps' wrangler calls ran on (the pin, unless CFOPS_NODE said otherwise).
        "toolchain": toolchain_versions(ctx.settings),
        "versions": {
            "new": ctx.state.new_version,
            "previous": ctx.state.old_version,
            "rolled_back_to": ctx.state.rolled_back_to,
        },
        # Every perf step: latency, verdict and which version gave how many answers.
        "canary": {name: dataclasses.asdict(record) for name, record in ctx.perf.items()},
        "analysis": ctx.analysis,
        "steps": [
            {
                "name": r.name,
                "status": r.status,
                "duration_seconds": r.duration,
                "command": r.command,
                "detail": r.detail,
            }
            for r in results
        ],
    }


def markdown(report: dict[str, Any]) -> str:
    lines = [
        f"## Release `{report['pipeline']}`: {report['result']}",
        "",
        "| | step | duration | detail |",
        "| --- | --- | --- | --- |",
    ]
    for step in report["steps"]:
        detail = str(step["detail"]).replace("|", "\\|")
        lines.append(
            f"| {SYMBOL[step['status']]} | {step['name']} | {step['duration_seconds']:.1f} s | {detail} |"
        )
    tools = report.get("toolchain") or {}
    if tools:
        lines += [
            "",
            f"- toolchain: wrangler {tools.get('wrangler')} on Node {tools.get('node')} "
            f"({tools.get('node_source')})",
        ]
    versions = report["versions"]
    if versions["new"] or versions["rolled_back_to"]:
        lines += ["", f"- new version: `{versions['new']}`, previous: `{versions['previous']}`"]
        if versions["rolled_back_to"]:
            lines.append(f"- **rolled back to `{versions['rolled_back_to']}`**")
    if report["canary"]:
        lines += [
            "",
            "| perf step | p50 ms | p95 ms | p99 ms | error rate | passed | answers by version |",
            "| --- | --- | --- | --- | --- | --- | --- |",
        ]
        for name, c in report["canary"].items():
            cells = [name, *(str(c[k]) for k in ("p50_ms", "p95_ms", "p99_ms", "error_rate", "passed"))]
            answers = ", ".join(f"`{v}` {n}" for v, n in (c.get("answers_by_version") or {}).items())
            lines.append("| " + " | ".join([*cells, answers or "none"]) + " |")
    lines += analysis_table(report.get("analysis") or {})
    if report["stopped_at"]:
        lines += ["", f"Stopped at **{report['stopped_at']}**."]
    lines += ["", f"Total: {report['duration_seconds']:.1f} s."]
    return "\n".join(lines) + "\n"


def _side(data: dict[str, Any] | None) -> list[str]:
    if not data:
        return ["–", "–", "–", "–"]
    p95 = data.get("p95_ms")
    return [
        f"{float(data.get('requests') or 0):g}",
        f"{float(data.get('error_rate') or 0) * 100:.2f} %",
        f"{float(data.get('client_error_rate') or 0) * 100:.2f} %",
        "–" if p95 is None else f"{p95:g} ms",
    ]


def analysis_table(analysis: dict[str, dict[str, Any]]) -> list[str]:
    """Each stage's old vs new side by side (requests, 5xx and 4xx rates, p95) with its verdict."""
    if not analysis:
        return []
    lines = [
        "",
        "| analysis | requests new / old | 5xx new / old | 4xx new / old | p95 new / old "
        "| verdict | reason |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, record in analysis.items():
        versions = record.get("versions") or {}
        new, old = _side(versions.get("new")), _side(versions.get("old"))
        pairs = [f"{a} / {b}" for a, b in zip(new, old, strict=True)]
        seeded = " (seeded)" if record.get("seeded") else ""
        verdict = f"{record.get('outcome')}{seeded}" + (
            f" ({record.get('verdict')})" if record.get("verdict") != record.get("outcome") else ""
        )
        reason = str(record.get("reason", "")).replace("|", "\\|")
        lines.append(f"| {name} | " + " | ".join(pairs) + f" | {verdict} | {reason} |")
    return lines


def write_report(settings: Settings, report: dict[str, Any]) -> Path:
    text = output.redact(markdown(report))
    path = artifacts.write_json(settings.artifacts_dir / REPORT_JSON, report)
    artifacts.write_text(settings.artifacts_dir / REPORT_MD, text)
    artifacts.append_step_summary(settings.env, text)
    return path


def refuse_unfinished(settings: Settings, worker: Worker) -> Deployment | None:
    """Exit 2 while the last release is unfinished or the live deployment splits traffic; returns the
    live deployment otherwise (so a second release on the same Worker cannot start blind)."""
    from cfops.deploy import current_deployment

    last = journal.last_release(settings.artifacts_dir)
    if last is not None and not last.finished:
        raise UsageError(
            f"release {last.release} stopped {last.where()} and is unfinished: run `invoke recover` to roll "
            "back to its stable version (or `invoke recover --resume` to continue it) before a new release"
        )
    live = current_deployment(settings, worker)
    if live is not None and len(live.traffic) > 1:
        shares = ", ".join(f"{v}@{p:g}" for v, p in live.traffic.items())
        raise UsageError(
            f"the live deployment of {target_name(settings, worker)} splits traffic ({shares}): another "
            "release is running or was cut short; run `invoke recover` before a new release"
        )
    return live


def target_name(settings: Settings, worker: Worker) -> str:
    return settings.native.name if worker == "native" else settings.proxy.name


def run_pipeline(ctx: Context, steps: list[Step]) -> dict[str, Any]:
    """Run ``steps`` and write the report, also when they fail or are interrupted; journal the end."""
    started_at = datetime.now(UTC).isoformat(timespec="seconds")
    started = time.perf_counter()
    results: list[StepResult] = []
    try:
        execute(ctx, steps, results)
    finally:
        # Also on Ctrl-C / SIGTERM: the report says where the pipeline stopped.
        report = summarize(ctx, results, started_at, time.perf_counter() - started)
        write_report(ctx.settings, report)
        if not ctx.state.rollback_failed:  # otherwise it stays unfinished: `invoke recover` takes over
            outcome = "rolled back" if ctx.state.rolled_back_to else str(report["result"])
            ctx.record("done", outcome=outcome, new=ctx.state.new_version)
    return report


def release(settings: Settings, options: Options) -> dict[str, Any]:
    """Run one pipeline and write its report, also when it fails or is interrupted."""
    ctx = prepare(settings, options)
    if options.pipeline == "local" or options.dry_run:
        return run_pipeline(ctx, STEPS[options.pipeline](ctx))
    from cfops.deploy import new_tag

    with journal.release_lock(settings.artifacts_dir, "starting a release"):
        if options.pipeline == "proxy":
            return run_pipeline(ctx, STEPS[options.pipeline](ctx))
        live = refuse_unfinished(settings, "native")
        ctx.journaled = True
        ctx.state.release_id = new_tag()
        ctx.record(
            "started",
            stable=live.stable_version if live else None,
            stages=ctx.options.stages,
            base_url=ctx.state.base_url,
        )
        return run_pipeline(ctx, STEPS[options.pipeline](ctx))


# ------------------------------------------------------------------------------------------- command


def main(argv: Sequence[str]) -> int:
    parser = cli.parser("release", __doc__)
    parser.add_argument("pipeline", nargs="?", choices=PIPELINES, default="local")
    parser.add_argument("--dry-run", action="store_true", help="print the plan with the exact commands")
    parser.add_argument("--skip-tests", action="store_true", help="leave the test suite out")
    parser.add_argument("--allow-dirty", action="store_true", help="production: allow uncommitted changes")
    cli.settings_flags(parser, "perf", only=("base_url",))
    cli.settings_flags(parser, "deploy", only=("backend_origin",))
    cli.settings_flags(parser, "release", only=("proxy_url", "stages", "soak_seconds"))
    parser.add_argument("--message", help="production: annotation of the new version")
    args = parser.parse_args(argv)
    # --base-url, --origin, --proxy-url and --stages land in the settings (perf.base_url,
    # deploy.backend_origin, release.proxy_url, release.stages), which prepare() reads.
    settings = cli.load(args)
    options = Options(
        pipeline=cast(Pipeline, args.pipeline),
        dry_run=args.dry_run,
        skip_tests=args.skip_tests,
        allow_dirty=args.allow_dirty,
        message=args.message,
    )
    report = release(settings, options)
    path = settings.artifacts_dir / REPORT_JSON
    verdict = f"release {report['pipeline']}: {report['result']}"
    if report["versions"]["rolled_back_to"]:
        verdict += f" (rolled back to {report['versions']['rolled_back_to']})"
    if report["stopped_at"]:
        verdict += f" at {report['stopped_at']}"
    verdict += f" in {report['duration_seconds']:.1f} s"  # each step's time is on its own line above
    output.echo(f"report: {path} and {REPORT_MD}", style="dim")
    if report["result"] in {"passed", "dry-run"}:
        output.success(verdict)
        return 0
    output.error(verdict)
    return 1


if __name__ == "__main__":
    cli.run_main(main)
