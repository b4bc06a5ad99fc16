"""`cfops perf`: the latency canary. Sends a scenario of requests, reports percentiles, decides.

Without a base URL (IMMCAD_API_BASE_URL / --base-url) it syncs and starts the local backend on a free
port, measures it and stops it. Exit 0 when every threshold holds, 1 when one is breached, 2 on bad
input. Writes artifacts/perf-smoke.json and, under GitHub Actions, a Markdown step summary.

Library use (the release pipeline):
``report = run_smoke(resolve(settings, version_id=ID), settings=settings)``, then
``publish(report, settings)``; ``report.passed`` / ``report.exit_code`` hold the decision.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType

from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from cfops import cli, cloudflare, output, procs
from cfops.config import Settings
from cfops.dev import local_bearer_token, native_backend
from cfops.errors import UsageError
from cfops.perf.config import RunConfig, resolve
from cfops.perf.load import ProgressSink, generate
from cfops.perf.report import (
    Report,
    build_report,
    histogram_lines,
    terminal_lines,
    write_json,
    write_step_summary,
)
from cfops.report import STDOUT
from cfops.sync import sync

__all__ = ["Report", "RunConfig", "main", "publish", "resolve", "run_smoke"]

ARTIFACT = "perf-smoke.json"


class PlainProgress:
    """A line per tenth of the run: readable in CI logs, which a redrawn bar would flood."""

    def __init__(self, config: RunConfig) -> None:
        self.config = config
        self.next_tenth = 1

    def update(self, done: int, failed: int, elapsed: float) -> None:
        if self.config.duration_seconds:
            fraction = elapsed / self.config.duration_seconds
        else:
            fraction = done / self.config.requests
        if fraction * 10 >= self.next_tenth:
            output.echo(f"perf: {done} requests, {failed} failed, {elapsed:.1f} s", style="dim")
            self.next_tenth = int(fraction * 10) + 1

    def __enter__(self) -> PlainProgress:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        return None


class LiveProgress(PlainProgress):
    """A rich progress bar, redrawn by the load generator's progress coroutine (no refresh thread
    competing with the hot loop)."""

    def __init__(self, config: RunConfig) -> None:
        super().__init__(config)
        self.bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TimeElapsedColumn(),
            console=output.console(),
            auto_refresh=False,
            transient=True,
        )
        self.task = self.bar.add_task("perf", total=1.0)

    def update(self, done: int, failed: int, elapsed: float) -> None:
        if self.config.duration_seconds:
            fraction = elapsed / self.config.duration_seconds
        else:
            fraction = done / self.config.requests
        self.bar.update(
            self.task, completed=min(fraction, 1.0), description=f"{done} requests, {failed} failed"
        )
        self.bar.refresh()

    def __enter__(self) -> LiveProgress:
        self.bar.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.bar.stop()


@contextmanager
def embedded_backend(settings: Settings, config: RunConfig) -> Iterator[tuple[str, RunConfig]]:
    """Sync and start the local backend (uvicorn, as `nox -s dev` falls back to) on a free port."""
    result = sync(settings)
    output.info(f"no base URL: measuring the local backend (synced {result.files} files)")
    extra = {cloudflare.BEARER_TOKEN: config.bearer_token} if config.bearer_token else None
    if not config.bearer_token:
        # A token in backend-cloudflare/.dev.vars makes the local backend require it: send it.
        token = local_bearer_token(settings)
        if token:
            output.add_secrets([token])
            config = dataclasses.replace(config, bearer_token=token)
    with native_backend(
        settings,
        runtime="uvicorn",
        host="127.0.0.1",
        port=procs.free_port(),
        extra_bindings=extra,
        forward_output=False,
    ) as backend:
        yield backend.url, config


def run_smoke(
    config: RunConfig, *, settings: Settings | None = None, progress: ProgressSink | None = None
) -> Report:
    """Measure ``config.base_url`` (or, when it is None, the local backend started from ``settings``)."""
    if config.base_url:
        result = generate(config, config.base_url, progress)
        return build_report(config, result, target=config.base_url, embedded=False)
    if settings is None:
        raise UsageError("no base URL: set IMMCAD_API_BASE_URL or pass --base-url")
    with embedded_backend(settings, config) as (url, local_config):
        result = generate(local_config, url, progress)
    return build_report(local_config, result, target=url, embedded=True)


def publish(report: Report, settings: Settings, json_path: Path | str | None = None) -> Path | None:
    """Write the JSON artifact (``-``: print it to stdout) and, when $GITHUB_STEP_SUMMARY is set, the
    Markdown summary."""
    path = write_json(report, json_path or settings.artifacts_dir / ARTIFACT)
    write_step_summary(report, settings.env)
    return path


def _parser() -> cli.ArgumentParser:
    parser = cli.parser("perf", __doc__)
    cli.settings_flags(parser, "perf")
    add = parser.add_argument
    add("--scenario", type=Path, help="YAML file of weighted probes (name: {method, path, json, status})")
    add(
        "--header",
        action="append",
        default=[],
        help="extra header 'Name: value' (repeatable); a value '@env:VAR' or '@file:PATH' is read from there",
    )
    add("--version-id", help="send Cloudflare-Workers-Version-Overrides for this Worker version")
    add("--worker", help="Worker name for --version-id (default [tool.cfops.native] name)")
    add("--baseline", type=Path, help="an earlier perf-smoke.json: fail on a p95 regression")
    add("--json", help=f"artifact path (default artifacts/{ARTIFACT}); '-' prints it to stdout")
    return parser


def main(argv: Sequence[str]) -> int:
    args = _parser().parse_args(argv)
    if args.json == STDOUT:
        output.json_to_stdout()
    settings = cli.load(args)
    config = resolve(
        settings,
        baseline=args.baseline,
        scenario=args.scenario,
        headers=args.header,
        version_id=args.version_id,
        worker=args.worker,
    )
    plan = f"{config.duration_seconds:g} s" if config.duration_seconds else f"{config.requests} requests"
    shape = f"at {config.rate:g}/s (open model)" if config.rate else f"{config.concurrency} in flight"
    output.info(f"perf smoke: {plan}, {shape}, scenario {config.scenario_source}")
    progress = LiveProgress(config) if output.is_terminal() else PlainProgress(config)
    with progress:
        report = run_smoke(config, settings=settings, progress=progress)
    for line in terminal_lines(report):
        output.echo(line)
    for line in histogram_lines(report):
        output.echo(line, style="dim")
    path = publish(report, settings, args.json)
    if path is not None:
        output.echo(f"wrote {path}", style="dim")
    if report.self_check.client_bottleneck:
        output.warn("the load generator was the bottleneck; see the verdict")
    output.echo(report.verdict, style="bold green" if report.passed else "bold red")
    return report.exit_code
