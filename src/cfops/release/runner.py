"""Running a pipeline's steps in order: each command streamed, each service owned, each result a line;
the failure policy (a failure after the upload rolls back, read back before it is called done).
"""

from __future__ import annotations

import os
import signal
import sys
import time
import traceback
from collections.abc import Iterator
from contextlib import chdir, contextmanager, suppress
from types import FrameType

from cfops import cli, output, procs
from cfops.errors import CfopsError
from cfops.release.model import (
    SYMBOL,
    Context,
    Step,
    StepFailed,
    StepResult,
    cfops,
    fmt_traffic,
    foreign_deployment,
    shown,
)


def rollback_command(ctx: Context, failed_step: str) -> list[str]:
    note = f"release rolled back: {failed_step} failed"
    return cfops(
        "rollback", "--worker", ctx.rollback_worker, "--version", str(ctx.rollback_to), "--message", note
    )


def _child_env(ctx: Context, step: Step) -> dict[str, str]:
    # Every step works on this project and writes into this artifacts directory.
    return {
        "CFOPS_ROOT": str(ctx.settings.root),
        "CFOPS_ARTIFACTS_DIR": str(ctx.settings.artifacts_dir),
        **step.env(ctx),
    }


def _plain_lines(text: str, count: int) -> list[str]:
    """The last ``count`` non-empty lines as a log shows them: no colour or cursor codes (a command in
    this process on a terminal draws them), and of a line rewritten with ``\r`` its last state only."""
    lines = (
        line.rsplit("\r", 1)[-1] for line in procs.strip_ansi(procs.tail_lines(text, count)).splitlines()
    )
    return [line for line in lines if line.strip()]


def _failure_line(text: str, returncode: int) -> str:
    lines = _plain_lines(text, 40)
    errors = [line for line in lines if line.lstrip().startswith(("error:", "✗", "FAILED", "E "))]
    return (errors or lines or [f"exited with {returncode}"])[-1].strip()


class _TimeLimit(BaseException):
    """A step run in this process took longer than its limit. Not an Exception: no step may catch it."""


@contextmanager
def _time_limit(seconds: float) -> Iterator[None]:
    """Interrupt the block after ``seconds`` (SIGALRM), as a child would be stopped on its timeout; the
    block's ``finally`` and ``with`` cleanups stop whatever it started. An alarm set outside (a test
    runner's timeout) keeps its time: its own handler runs if it comes due first, and what remains of it
    is armed again afterwards."""
    previous = signal.getsignal(signal.SIGALRM)
    outer, interval = signal.getitimer(signal.ITIMER_REAL)
    outer_first = 0 < outer < seconds
    started = time.monotonic()

    def expire(signum: int, frame: FrameType | None) -> None:
        nonlocal outer_first
        if outer_first:
            outer_first = False
            if callable(previous):
                previous(signum, frame)  # if the outer handler returns, this limit goes on
            signal.setitimer(signal.ITIMER_REAL, max(seconds - (time.monotonic() - started), 0.001))
            return
        raise _TimeLimit

    signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, outer if outer_first else seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        left = outer - (time.monotonic() - started)
        if outer and left > 0 and (outer_first or outer >= seconds):  # not delivered yet
            signal.setitimer(signal.ITIMER_REAL, left, interval)


@contextmanager
def _environ(env: dict[str, str]) -> Iterator[None]:
    """``env`` set in this process's environment for the block (what a child would have been given)."""
    saved = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _in_this_process(argv: list[str]) -> tuple[str, list[str]] | None:
    """The module and arguments of a cfops command (``python -m cfops.<command> …``): such a step runs in
    this process, sparing a Python start and the imports of httpx, aiohttp and rich each time (a
    production release runs about 17). Anything else (nox, a service) is a child process."""
    if len(argv) >= 3 and argv[0] == sys.executable and argv[1] == "-m" and argv[2].startswith("cfops."):
        return argv[2], argv[3:]
    return None


def _run_command(ctx: Context, argv: list[str], step: Step) -> str:
    """Run a step's command, streaming its output; returns its last line, raises StepFailed."""
    timeout = ctx.settings.release.step_timeout
    here = _in_this_process(argv)
    if here is None:
        result = procs.run(
            argv,
            cwd=ctx.settings.root,
            env=_child_env(ctx, step),
            stream=True,
            check=False,
            echo=False,
            timeout=timeout,
        )
        returncode, text = result.returncode, result.stdout + result.stderr
    else:
        # The directory and environment a child would have had.
        try:
            with (
                output.recording() as seen,
                chdir(ctx.settings.root),
                _environ(_child_env(ctx, step)),
                _time_limit(timeout),
            ):
                returncode = cli.call(*here)
        except _TimeLimit:
            raise StepFailed(f"{step.name} timed out after {timeout:g} s", returncode=1) from None
        except OSError as exc:  # the project directory went away
            raise StepFailed(
                f"{step.name} could not run in {ctx.settings.root}: {exc}", returncode=1
            ) from None
        text = seen.text()
    if returncode != 0:
        raise StepFailed(_failure_line(text, returncode), returncode=returncode)
    lines = _plain_lines(text, 5)
    return lines[-1].strip() if lines else ""


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
            # A CfopsError; or a bug, which fails the step (and rolls back) all the same.
            except Exception as exc:
                why = str(exc)
                if not isinstance(exc, CfopsError):
                    sys.stderr.write(output.redact(traceback.format_exc()))
                    why = output.redact(f"{type(exc).__name__}: {exc}")
                code = exc.returncode if isinstance(exc, StepFailed) else None
                if step.optional and code == 2:
                    result.status, result.detail = "skipped", why
                    output.warn(f"{step.name} skipped: {why}")
                else:
                    result.status, result.detail = "failed", why
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


def _not_ours(ctx: Context) -> str | None:
    """Why the live deployment is not this release's to roll back (None: it is, or it cannot tell)."""
    if ctx.state.foreign is not None:
        return f"{ctx.settings.native.name} serves {fmt_traffic(ctx.state.foreign)}, not this release's split"
    try:
        return foreign_deployment(ctx)
    except CfopsError as exc:  # the read failed: the rollback reads (and retries) on its own
        output.warn(f"could not read the live deployment before the rollback ({exc})")
        return None


def _roll_back(ctx: Context, results: list[StepResult], failed_step: str, *, interrupted: bool) -> None:
    if ctx.rollback_to is None or ctx.options.dry_run:
        return
    # The rollback policy acts only on the state this release set: another release's (or a person's)
    # deployment is theirs, and rolling it back would undo their change as well.
    foreign = _not_ours(ctx)
    if foreign is not None:
        detail = f"not rolled back: {foreign}"
        results.append(StepResult("rollback", "skipped", detail=detail))
        output.warn(f"{failed_step} failed after the upload, but the live deployment is not this release's")
        _line(results[-1])
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
