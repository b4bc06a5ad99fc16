"""The pipelines as data: each an ordered list of named steps (``STEPS``), built for one run's context."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence

from cfops import procs
from cfops.cloudflare import DEPLOYMENT_MESSAGE_MAX
from cfops.records import DeployRecord
from cfops.release.model import (
    NEW,
    OLD,
    Context,
    Pipeline,
    Skip,
    Step,
    StepFailed,
    cfops,
    foreign_deployment,
)
from cfops.release.smoke import (
    LOCAL_POINTS,
    analysis_step,
    canary_step,
    fresh_points,
    perf_step,
    rehearsal_analysis_step,
    smoke_step,
)


def tests_step() -> Step:
    return Step(
        "tests",
        lambda ctx: [sys.executable, "-m", "pytest", "tests", "-q", "-p", "no:cacheprovider"],
        skip=lambda ctx: Skip("--skip-tests", quiet=True) if ctx.options.skip_tests else None,
    )


def preflight_step(*args: str) -> Step:
    def command(ctx: Context) -> list[str]:
        return cfops("preflight", *args, *(["--allow-dirty"] if ctx.options.allow_dirty else []))

    return Step("preflight", command)


def _stack_ports(ctx: Context) -> tuple[int, int]:
    """The local stack's (proxy, backend) ports, chosen when the stack starts, not when the plan is made:
    a port found free before the preflight and the image build may have been taken since."""
    ctx.state.proxy_port = ctx.state.proxy_port or procs.free_port()
    ctx.state.backend_port = ctx.state.backend_port or procs.free_port()
    return ctx.state.proxy_port, ctx.state.backend_port


def local_steps(ctx: Context) -> list[Step]:
    def proxy_url(ctx: Context) -> str:
        return f"http://127.0.0.1:{_stack_ports(ctx)[0]}"

    def stack(ctx: Context) -> list[str]:
        port, backend_port = _stack_ports(ctx)
        return fresh_points(ctx) + cfops(
            "proxy", "--port", str(port), "--backend-port", str(backend_port), "--no-sync"
        )

    def no_engine(ctx: Context) -> Skip | None:
        from cfops.image import engine_problem

        problem = engine_problem(ctx.settings)
        return Skip(f"no Docker Engine answers ({problem})") if problem else None

    origin = ctx.options.origin or ctx.settings.deploy.backend_origin or ctx.settings.release.rehearsal_origin
    # sync comes first: preflight checks the synced bundle (its sync and native-bundle checks), and a
    # fresh checkout has none (the synced files are git-ignored).
    return [
        Step("sync", lambda ctx: cfops("sync")),
        preflight_step("--target", "local"),
        tests_step(),
        Step(
            "spike image",
            lambda ctx: cfops("image", "spike", "--no-sync", "--run"),
            skip=no_engine,
            optional=True,
        ),
        Step(
            "local stack",
            stack,
            service_url=proxy_url,
            # The backend writes each request's analytics data point to a file instead of a binding.
            env=lambda ctx: {
                "IMMCAD_ANALYTICS_FILE": str(ctx.artifact(LOCAL_POINTS)),
                "IMMCAD_VERSION_ID": "local-rehearsal",
            },
        ),
        perf_step("perf smoke through the proxy", proxy_url, "perf-local.json", closes=True),
        rehearsal_analysis_step(),
        Step("deploy dry-run (native)", lambda ctx: cfops("deploy", "native", "--dry-run", "--no-sync")),
        Step("deploy dry-run (proxy)", lambda ctx: cfops("deploy", "proxy", "--dry-run", "--origin", origin)),
    ]


def _upload_after(ctx: Context) -> str:
    record = DeployRecord.read(ctx.artifact("deploy-native.json"))
    ctx.state.new_version, ctx.state.old_version = record.version_id, record.previous_version_id
    if not record.version_id:
        raise StepFailed("the upload recorded no version id")
    ctx.rollback_worker = "native"
    if record.previous_version_id:
        ctx.rollback_to = record.previous_version_id
        ctx.state.traffic = {record.previous_version_id: 100.0}  # what the first split must find live
    ctx.record("uploaded", new=record.version_id, stable=record.previous_version_id, tag=record.tag)
    return f"new version {record.version_id} (live: {record.previous_version_id or 'none'})"


def _traffic(ctx: Context, percent: float) -> dict[str, float]:
    new, old = ctx.state.new_version or NEW, ctx.state.old_version
    return {new: 100.0} if percent == 100 or not old else {new: percent, old: 100.0 - percent}


def split_message(ctx: Context, percent: float) -> str:
    """The deployment's message: which release made it (so Cloudflare's own history says so)."""
    stable = (ctx.state.old_version or OLD)[:8]
    text = f"cfops release {ctx.state.release_id or 'RELEASE_ID'} new@{percent:g} stable={stable}"
    return text[:DEPLOYMENT_MESSAGE_MAX]


def split_step(percent: float) -> Step:
    """A compare-and-set of the traffic: the live deployment must still be the one this release last
    set (or {stable: 100} before its first split), else the release stops without touching it."""

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
        args += ["--message", split_message(ctx, percent)]
        # The stage's analysis window starts here (a monotonic time: immune to the runner's clock).
        ctx.state.stage_started[percent] = time.monotonic()
        return cfops("promote", *args)

    def before(ctx: Context) -> None:
        foreign = foreign_deployment(ctx)
        if foreign:
            raise StepFailed(foreign)
        ctx.state.asked = _traffic(ctx, percent)
        ctx.record("splitting", new=ctx.state.new_version, traffic=ctx.state.asked, percent=percent)

    def after(ctx: Context) -> None:
        ctx.state.traffic, ctx.state.asked = _traffic(ctx, percent), None
        ctx.record("split", new=ctx.state.new_version, traffic=ctx.state.traffic, percent=percent)

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


def stage_steps(ctx: Context, stages: Sequence[float], previous: float | None = None) -> list[Step]:
    """Per stage: the split, its smoke, and its analysis (by each version's real traffic, against the
    stage before as the baseline)."""
    steps: list[Step] = []
    for percent in stages:
        steps += [split_step(percent), smoke_step(ctx, percent), analysis_step(percent, previous)]
        previous = percent
    return steps


def production_steps(ctx: Context) -> list[Step]:
    steps = [
        # Local only (no remote state), so a dry run syncs too: the upload's dry run bundles the result.
        Step("sync", lambda ctx: cfops("sync", "--vendor"), dry_command=lambda ctx: cfops("sync")),
        preflight_step("--target", "production", "--mode", "native", "--strict"),
        # Before anything remote changes: the stages will be judged by Analytics Engine, so a token that
        # cannot read it must fail here, not after the upload.
        Step(
            "analytics access",
            lambda ctx: cfops("analytics", "check"),
            skip=lambda ctx: (
                None if ctx.settings.release.gates.enabled else Skip("analysis disabled (gates.enabled)")
            ),
        ),
        tests_step(),
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
        ctx.record("deployed", new=record.version_id, stable=record.previous_version_id)
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
        preflight_step("--target", "production", "--mode", "proxy", "--skip", "secrets"),
        Step(
            "deploy proxy",
            lambda ctx: cfops("deploy", "proxy", "--origin", origin),
            before=lambda ctx: ctx.record("deploying"),
            after=deployed,
            dry_command=lambda ctx: cfops("deploy", "proxy", "--origin", origin, "--dry-run"),
        ),
        perf_step("smoke through the proxy", url, "perf-proxy.json"),
    ]


STEPS: dict[Pipeline, Callable[[Context], list[Step]]] = {
    "local": local_steps,
    "production": production_steps,
    "proxy": proxy_steps,
}
