"""`invoke recover`: finish what an interrupted release left, from its journal and the live deployment.

The journal (cfops.journal) says where the last release stopped, and of which Worker; the live deployment
says what serves. By default that Worker goes back to the release's recorded stable version (a verified
rollback): the native Worker after a production release, the edge proxy after ``release proxy``. With
``--resume`` the release continues instead: the split new@0 where it never happened, the canary through
the override header, the smoke and analysis of the stage it stopped in (its window from the journal's
split), then the stages it had not reached, each with its smoke and analysis against the stage before as
the baseline; any failure rolls back. A proxy release has no stages to continue: it is rolled back.
With nothing unfinished it says so and exits 0.

Without a journal entry to go by (a split left by hand or by another checkout), the stable version is the
last one that had 100 % of the traffic before the current deployment.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import UTC, datetime

from cfops import cli, journal, output
from cfops.cloudflare_api import Deployment
from cfops.config import Settings
from cfops.deploy import (
    WORKERS,
    Worker,
    current_deployment,
    default_rollback_version,
    list_deployments,
    new_tag,
    rollback,
    rollback_hint,
    tagged_versions,
    target,
)
from cfops.errors import CfopsError, UsageError
from cfops.journal import Entry
from cfops.release import (
    Context,
    Options,
    Step,
    analysis_step,
    canary_step,
    journal_worker,
    run_pipeline,
    smoke_step,
    split_step,
    stage_steps,
)

STAGED: Worker = "native"  # the Worker released in stages, and the one a split left by hand is found on


def _record(settings: Settings, release: str, event: journal.Event, worker: Worker, **fields: object) -> None:
    journal.record(settings.artifacts_dir, Entry(release=release, event=event, worker=worker, **fields))  # type: ignore[arg-type]


def roll_back(settings: Settings, unfinished: journal.ReleaseJournal | None, worker: Worker) -> int:
    """Put ``worker`` back on the stable version of the ``unfinished`` release (or, without one, on the
    last version that had 100 %), verified; the journal says so."""
    name = target(settings, worker).name
    live = current_deployment(settings, worker)
    release = unfinished.release if unfinished is not None else f"recover-{new_tag()[6:]}"
    stable = unfinished.stable if unfinished is not None else None
    if unfinished is not None and unfinished.last.event == "uploading" and unfinished.last.tag:
        orphans = [v.id for v in tagged_versions(settings, worker, unfinished.last.tag)]
        if orphans:
            output.warn(f"uploaded but never deployed by release {release}: {', '.join(orphans)}")
    if stable is None and unfinished is not None:
        return _close_without_stable(settings, unfinished, worker, live)
    if stable is None:
        if live is None:
            raise UsageError(f"{name} has no deployment: nothing to roll back to")
        stable = live.stable_version or default_rollback_version(list_deployments(settings, worker))
    if live is not None and live.traffic == {stable: 100.0}:
        _record(
            settings,
            release,
            "done",
            worker,
            outcome="recovered",
            stable=stable,
            detail="already on the stable version",
        )
        output.success(f"{name} already serves its stable version {stable} at 100 %; the release is closed")
        return 0
    _record(settings, release, "rolling-back", worker, stable=stable, detail="invoke recover")
    try:
        rollback(settings, worker, stable, message=f"cfops recover: back to {stable[:8]}")
    except CfopsError as exc:
        _record(settings, release, "rollback-failed", worker, stable=stable, detail=str(exc))
        raise
    _record(settings, release, "rolled-back", worker, stable=stable)
    _record(settings, release, "done", worker, outcome="recovered", stable=stable)
    output.success(f"{name} is back on {stable} at 100 % (read back from the API)")
    return 0


def _close_without_stable(
    settings: Settings, unfinished: journal.ReleaseJournal, worker: Worker, live: Deployment | None
) -> int:
    """The release was the Worker's first: there is no earlier version to go back to. What serves now
    (if anything) came from it, unverified; the release is closed, and said to be, rather than left to
    refuse every later release."""
    name, release = target(settings, worker).name, unfinished.release
    if live is None:
        _record(settings, release, "done", worker, outcome="recovered", detail="nothing was deployed")
        output.success(f"{name} has no deployment: release {release} deployed nothing; it is closed")
        return 0
    serving = ", ".join(f"{v}@{p:g}" for v, p in live.traffic.items())
    _record(
        settings,
        release,
        "done",
        worker,
        outcome="not rolled back",
        detail=f"first release of {name}: no earlier version; serving {serving}, unverified",
    )
    output.error(
        f"{name} serves {serving} from release {release}, its first, unverified, and there is no earlier "
        "version to roll back to: smoke it by hand (cfops perf) or release again; the release is closed"
    )
    return 1


def resume(settings: Settings, last: journal.ReleaseJournal) -> int:
    if journal_worker(settings, last) != STAGED:
        raise UsageError(
            f"release {last.release} deployed {settings.proxy.name} at once, so it has no stages to continue "
            "(--resume): run `invoke recover` to roll it back, then release it again"
        )
    name = settings.native.name
    started = last.entries[0]
    new, stable = last.new, last.stable
    if new is None and last.last.tag:
        landed = tagged_versions(settings, STAGED, last.last.tag)
        new = landed[0].id if landed else None
    if new is None or stable is None or not started.base_url or not started.stages:
        raise UsageError(
            f"release {last.release} stopped {last.where()}: there is no uploaded version (or no stable "
            "one, or no canary URL) to continue with; run `invoke recover` without --resume"
        )
    live = current_deployment(settings, STAGED)
    share = live.traffic.get(new) if live is not None else None
    if live is not None and share is None and live.traffic != {stable: 100.0}:
        shares = ", ".join(f"{v}@{p:g}" for v, p in live.traffic.items())
        raise UsageError(
            f"{name} serves {shares}, neither the release's new version {new} nor its stable {stable} "
            "alone: run `invoke recover` (without --resume) or check by hand: "
            + rollback_hint(settings, STAGED, stable)
        )
    current = share or 0.0
    options = Options(pipeline="production", stages=started.stages)
    ctx = Context(settings=settings, options=options, journaled=True)
    ctx.state.release_id, ctx.state.base_url = last.release, started.base_url
    ctx.state.new_version, ctx.state.old_version = new, stable
    ctx.rollback_to, ctx.rollback_worker = stable, STAGED
    # What the resumed splits require to find live (a compare-and-set, as in the release itself).
    ctx.state.traffic = dict(live.traffic) if live is not None else None
    steps: list[Step] = [] if share is not None else [split_step(0)]
    steps.append(canary_step(ctx))
    previous: float | None = None  # the stage whose analysis record is the next one's baseline
    if current > 0:
        # The stage the release stopped in gets its gates again, at the split it already has: the smoke,
        # and the analysis of its real traffic, whose window starts when the split was asked for (as in
        # the release), so the soak it already served counts and the rest is waited out.
        asked = last.asked_at(current)
        served = (datetime.now(UTC) - asked).total_seconds() if asked is not None else 0.0
        ctx.state.stage_started[current] = time.monotonic() - max(served, 0.0)
        earlier = [s for s in started.stages if 0 < s < current]
        steps += [smoke_step(ctx, current), analysis_step(current, earlier[-1] if earlier else None)]
        previous = current
    steps += stage_steps(ctx, [s for s in started.stages if s > current], previous)
    output.info(f"resuming release {last.release} ({last.where()}): {new} at {current:g} %")
    report = run_pipeline(ctx, steps)
    if report["result"] == "passed":
        output.success(f"release {last.release} resumed and finished: {name} serves {new} at 100 %")
        return 0
    output.error(f"release {last.release} resumed and {report['result']} at {report['stopped_at']}")
    return 1


def recover(settings: Settings, *, resume_release: bool = False, worker: Worker | None = None) -> int:
    """Roll back (or resume) the unfinished release, or a split left live; ``worker`` limits it to one
    Worker (the proxy workflow's recover must never touch a native release running elsewhere)."""
    with journal.release_lock(settings.artifacts_dir, "recovering"):
        last = journal.last_release(settings.artifacts_dir)
        unfinished = last if last is not None and not last.finished else None
        own = journal_worker(settings, unfinished) if unfinished is not None else STAGED
        if worker is not None and unfinished is not None and own != worker:
            raise UsageError(
                f"the unfinished release {unfinished.release} is of {target(settings, own).name}, not "
                f"{target(settings, worker).name}: run `invoke recover` without --worker for it"
            )
        worker = worker or own
        live = current_deployment(settings, worker)
        split = live is not None and len(live.traffic) > 1
        if unfinished is None and not split:
            serving = f"{live.primary_version} at 100 %" if live else "no deployment yet"
            name = target(settings, worker).name
            output.success(f"nothing to recover: no unfinished release, and {name} serves {serving}")
            return 0
        if unfinished is not None:
            output.warn(f"release {unfinished.release} stopped {unfinished.where()}")
        if resume_release:
            if unfinished is None:
                raise UsageError("--resume needs an unfinished release in the journal; run `invoke recover`")
            return resume(settings, unfinished)
        return roll_back(settings, unfinished, worker)


def main(argv: Sequence[str]) -> int:
    parser = cli.parser("recover", __doc__)
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue the stages (with their canaries) instead of rolling back",
    )
    parser.add_argument(
        "--worker",
        choices=WORKERS,
        help="only this Worker's unfinished release or live split (default: the journal's, else native)",
    )
    args = parser.parse_args(argv)
    return recover(cli.settings_from_env(), resume_release=args.resume, worker=args.worker)


if __name__ == "__main__":
    cli.run_main(main)
