"""The typed state of a release: its options, what a run learns as it goes, the steps as data and their
results; and how a step's command is written and shown.
"""

from __future__ import annotations

import shlex
import sys
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from cfops import journal, output
from cfops.config import Settings
from cfops.errors import CfopsError
from cfops.journal import Entry
from cfops.records import PerfRecord

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
    # The deployment this release last set and saw confirmed ({stable: 100} once the upload is known):
    # every later split requires to find exactly this live (a compare-and-set), else someone else
    # deployed in between. ``asked`` is a split in flight (the live state may already show it).
    traffic: dict[str, float] | None = None
    asked: dict[str, float] | None = None
    # A deployment this release did not make, found live: the release stops and leaves it alone.
    foreign: dict[str, float] | None = None
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
    # A production or proxy release records each transition (cfops.journal); the rehearsal and dry
    # runs do not.
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


def fmt_traffic(traffic: dict[str, float] | None) -> str:
    return ", ".join(f"{v}@{p:g}" for v, p in (traffic or {}).items()) or "no deployment"


def foreign_deployment(ctx: Context) -> str | None:
    """Read the live deployment of the native Worker (the one released in stages); when it is none this
    release set or is setting, journal it, keep it in ``ctx.state.foreign`` and return the one line that
    says so: the release stops there and must not roll back over it. None when the live state is this
    release's, or when there is nothing yet to compare with (before the upload)."""
    from cfops.deploy import current_deployment

    owned = [t for t in (ctx.state.traffic, ctx.state.asked) if t is not None]
    if not owned:
        return None
    live = current_deployment(ctx.settings, "native")
    seen = dict(live.traffic) if live is not None else {}
    if seen in owned:
        return None
    ctx.state.foreign = seen
    ours = {v for t in owned for v in t}
    others = [v for v in seen if v not in ours]
    who = f"version {', '.join(others)}" if others else "a split of its versions it did not ask for"
    problem = (
        f"foreign deployment: {ctx.settings.native.name} serves {fmt_traffic(seen)}, not "
        f"{fmt_traffic(owned[0])} as this release last set it — someone else deployed {who}; the release "
        "stops and does not roll back over a deployment it does not own: check `cfops versions` and "
        "settle it with whoever made it"
    )
    ctx.record("foreign-deployment", traffic=seen, detail=problem)
    return problem


def cfops(command: str, *args: str) -> list[str]:
    return [sys.executable, "-m", f"cfops.{command}", *args]


def shown(argv: Sequence[str]) -> str:
    """A command as the plan and report show it: the interpreter as ``python`` (its path is in the header)."""
    parts = ["python" if part == sys.executable else part for part in argv]
    return output.redact(shlex.join(parts))
