"""The steps that judge a new version: perf smokes (the canary against the new version only, one per
stage, the rehearsal's through the local proxy) and each stage's analysis of real traffic per version.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from cfops.records import PerfRecord, read_object
from cfops.release.model import NEW, Context, Skip, Step, cfops


def perf_step(
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
        env=local_token,
        closes_services=closes,
        artifact=artifact,
        stage=stage if not version else 0.0,
    )


def local_token(ctx: Context) -> dict[str, str]:
    """The local stack serves .dev.vars: its bearer token goes to the perf child by environment."""
    if ctx.options.pipeline != "local":
        return {}
    from cfops.cloudflare import BEARER_TOKEN
    from cfops.dev import local_bearer_token

    token = local_bearer_token(ctx.settings)
    return {BEARER_TOKEN: token} if token else {}


LOCAL_POINTS = "analytics-local.jsonl"


def fresh_points(ctx: Context) -> list[str]:
    """The rehearsal's data points start empty (a stale file would be judged as this run's traffic)."""
    ctx.artifact(LOCAL_POINTS).unlink(missing_ok=True)
    return []


def record_analysis(ctx: Context, name: str, artifact: str) -> str:
    from cfops.analytics.command import summary_line

    record = read_object(ctx.artifact(artifact))
    ctx.analysis[name] = record
    return summary_line(record)


def rehearsal_analysis_step() -> Step:
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
        after=lambda ctx: record_analysis(ctx, name, artifact),
        artifact=artifact,
    )


def analysis_step(percent: float, previous: float | None) -> Step:
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
        after=lambda ctx: record_analysis(ctx, name, artifact),
        artifact=artifact,
    )


def smoke_step(ctx: Context, percent: float) -> Step:
    """The perf smoke of a stage: it records the split it saw, by version."""
    base_url = ctx.state.base_url
    return perf_step(
        f"perf smoke at {percent:g} %", lambda ctx: base_url, f"perf-{percent:g}.json", stage=percent
    )


def canary_step(ctx: Context) -> Step:
    base_url = ctx.state.base_url
    return perf_step("canary (new version only)", lambda ctx: base_url, "perf-canary.json", version=True)
