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

A production or proxy release also keeps a journal of its transitions (cfops.journal), holds the
checkout's release lock, and refuses to start (exit 2) while the last release is unfinished or the live
deployment of its Worker splits traffic: ``invoke recover`` (cfops.recover) finishes or undoes it first.
Each perf step records which Worker version answered (x-immcad-version); the canary fails unless every
answer came from the new version. A stage may carry extra checks (``Step.checks``): the hook for
per-stage analysis.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, cast

from cfops import cli, journal, output
from cfops.config import Settings, with_deferred_env
from cfops.errors import UsageError
from cfops.release.model import PIPELINES, Context, Options, Pipeline, Step, StepResult
from cfops.release.report import REPORT_JSON, REPORT_MD, summarize, write_report
from cfops.release.runner import execute
from cfops.release.stages import STEPS
from cfops.wrangler import require_credentials

if TYPE_CHECKING:
    from cfops.cloudflare_api import Deployment
    from cfops.deploy import Worker


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


def journal_worker(settings: Settings, last: journal.ReleaseJournal) -> Worker:
    """The Worker a journaled release changed; a name cfops does not know is bad input (exit 2)."""
    from cfops.deploy import WORKERS

    if last.worker not in WORKERS:
        raise UsageError(
            f"{journal.path_in(settings.artifacts_dir)}: release {last.release} names an unknown worker "
            f"{last.worker!r} (expected one of {', '.join(WORKERS)}): inspect it, then move it aside"
        )
    return last.worker  # narrowed to Worker by the check above


def refuse_unfinished(settings: Settings, worker: Worker) -> Deployment | None:
    """Exit 2 while the last release is unfinished or the live deployment splits traffic; returns the
    live deployment otherwise (so a second release on the same Worker cannot start blind)."""
    from cfops.deploy import current_deployment

    last = journal.last_release(settings.artifacts_dir)
    if last is not None and not last.finished:
        # A proxy release deploys at once: there are no stages to continue.
        own = journal_worker(settings, last)
        resume = "" if own == "proxy" else " (or `invoke recover --resume` to continue it)"
        raise UsageError(
            f"release {last.release} of {target_name(settings, own)} stopped "
            f"{last.where()} and is unfinished: run `invoke recover` to roll back to its stable version"
            f"{resume} before a new release"
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
        if _deploy_unconfirmed(ctx):
            # The proxy's deploy (straight to 100 %) failed or was cut short: whether it landed is not
            # known, so the release stays unfinished and `invoke recover` compares the live version.
            output.warn(
                f"the deploy of {ctx.settings.proxy.name} was not confirmed and may serve now, unverified: "
                "run `invoke recover` (it rolls back to the version live before, or closes the release)"
            )
        elif not ctx.state.rollback_failed:  # otherwise it stays unfinished: `invoke recover` takes over
            outcome = "rolled back" if ctx.state.rolled_back_to else str(report["result"])
            if ctx.state.foreign is not None:  # someone else's deployment: theirs to finish, not ours
                outcome = "stopped: foreign deployment"
            ctx.record("done", outcome=outcome, new=ctx.state.new_version)
    return report


def _deploy_unconfirmed(ctx: Context) -> bool:
    """Whether this release's last journal entry is a one-step deploy asked for and never confirmed."""
    last = journal.last_release(ctx.settings.artifacts_dir) if ctx.journaled else None
    return last is not None and last.release == ctx.state.release_id and last.last.event == "deploying"


def release(settings: Settings, options: Options) -> dict[str, Any]:
    """Run one pipeline and write its report, also when it fails or is interrupted."""
    ctx = prepare(settings, options)
    if options.pipeline == "local" or options.dry_run:
        return run_pipeline(ctx, STEPS[options.pipeline](ctx))
    from cfops.deploy import new_tag

    worker: Worker = "proxy" if options.pipeline == "proxy" else "native"
    with journal.release_lock(settings.artifacts_dir, "starting a release"):
        live = refuse_unfinished(settings, worker)
        ctx.journaled = True
        ctx.rollback_worker = worker
        ctx.state.release_id = new_tag()
        ctx.record(
            "started",
            stable=live.stable_version if live else None,
            stages=ctx.options.stages if worker == "native" else (),
            base_url=ctx.state.base_url if worker == "native" else ctx.state.proxy_url,
        )
        return run_pipeline(ctx, STEPS[options.pipeline](ctx))


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
