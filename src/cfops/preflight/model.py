"""What a check gets (Context) and what it returns (Finding), plus the builder checks use."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from cfops import procs
from cfops.config import BackendMode, Settings
from cfops.node import NodeRuntime
from cfops.wrangler import QUIET_ENV, node_runtime, wrangler_bin

Status = Literal["pass", "warn", "fail", "skip"]
Target = Literal["local", "production"]

# Worst first decides a check's status; skip ranks with pass (nothing was found wrong).
RANK: dict[Status, int] = {"pass": 0, "skip": 0, "warn": 1, "fail": 2}


@dataclass(frozen=True, kw_only=True)
class Finding:
    """One check's result: a stable id, a status, one line of message, and what was measured."""

    id: str
    status: Status
    message: str
    details: tuple[str, ...] = ()
    measured: Mapping[str, Any] = field(default_factory=dict)
    limits: Mapping[str, Any] = field(default_factory=dict)
    duration: float = 0.0
    # True when the check could not run for want of a tool or valid input: the run exits 2.
    usage_error: bool = False
    # True when the finding was reused from the preflight cache (no input changed), not measured now.
    cached: bool = False


class Cancelled(Exception):
    """The run was interrupted; a check must not start another command."""


class Toolchain:
    """The pinned wrangler, installed at most once per run even when several checks ask concurrently."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._lock = threading.Lock()
        self._binary: Path | None = None
        self._node: NodeRuntime | None = None

    def wrangler(self) -> Path:
        with self._lock:
            if self._binary is None:
                self._binary = wrangler_bin(self._settings)
            return self._binary

    def node(self) -> NodeRuntime:
        """The Node wrangler runs on (the pinned package unless CFOPS_NODE says otherwise)."""
        with self._lock:
            if self._node is None:
                self._node = node_runtime(self._settings)
            return self._node

    def env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """A wrangler child's environment additions: quiet, offline, on the chosen Node."""
        return {**QUIET_ENV, **self.node().env(), **(extra or {})}

    def wrangler_version(self) -> str:
        """The installed wrangler's version, read from its package.json (no Node start-up)."""
        import json

        package = self._settings.worker_dir / "node_modules" / "wrangler" / "package.json"
        try:
            return str(json.loads(package.read_text(encoding="utf-8"))["version"])
        except (OSError, ValueError, KeyError):
            return "unknown"


@dataclass(frozen=True, kw_only=True)
class Context:
    settings: Settings
    target: Target = "local"
    mode: BackendMode = "native"
    allow_dirty: bool = False
    today: dt.date = field(default_factory=lambda: dt.datetime.now(dt.UTC).date())
    toolchain: Toolchain
    cancelled: threading.Event = field(default_factory=threading.Event)

    @property
    def root(self) -> Path:
        return self.settings.root

    def rel(self, path: Path) -> str:
        return str(path.relative_to(self.root)) if path.is_relative_to(self.root) else str(path)

    def run(
        self,
        cmd: Sequence[str | Path],
        *,
        cwd: Path | None = None,
        env: Mapping[str, str] | None = None,
        timeout: float | None = None,
        what: str | None = None,
    ) -> procs.Result:
        """Run a command for a check: captured, not echoed (checks run concurrently), exit code returned."""
        if self.cancelled.is_set():
            raise Cancelled
        return procs.run(
            cmd,
            cwd=cwd,
            env=env,
            timeout=timeout or self.settings.preflight.command_timeout,
            check=False,
            echo=False,
            what=what,
        )


class Outcome:
    """Collects what one check found. The worst status wins; the first problem of that status leads."""

    def __init__(self, check_id: str) -> None:
        self.id = check_id
        self.problems: list[tuple[Status, str]] = []
        self.notes: list[str] = []
        self.measured: dict[str, Any] = {}
        self.limits: dict[str, Any] = {}
        self.usage_error = False

    def fail(self, message: str) -> None:
        self.problems.append(("fail", message))

    def bad_input(self, message: str) -> None:
        """A project file that cannot be read (ConfigError): a failure, and the run exits 2 as every
        other command does on the same file (deploy, dev …), not 1 as for a target that fails a check."""
        self.fail(message)
        self.usage_error = True

    def warn(self, message: str) -> None:
        self.problems.append(("warn", message))

    def note(self, message: str) -> None:
        """A detail that changes no status (what was looked at, why something was not checked)."""
        self.notes.append(message)

    @property
    def status(self) -> Status:
        worst: Status = "pass"
        for status, _ in self.problems:
            if RANK[status] > RANK[worst]:
                worst = status
        return worst

    def finding(self, ok_message: str) -> Finding:
        status = self.status
        if status == "pass":
            message = ok_message
        else:
            worst = [text for s, text in self.problems if s == status]
            others = len(self.problems) - 1
            message = worst[0] + (f" (+{others} more)" if others else "")
        details = tuple(f"{s}: {text}" for s, text in self.problems) + tuple(self.notes)
        return Finding(
            id=self.id,
            status=status,
            message=message,
            details=details,
            measured=dict(self.measured),
            limits=dict(self.limits),
            usage_error=self.usage_error,
        )


def skipped(check_id: str, reason: str, **measured: Any) -> Finding:
    return Finding(id=check_id, status="skip", message=reason, measured=measured)


def kib(size: int) -> str:
    """Bytes as a short human size (KiB below 1 MiB, else MiB)."""
    if size < 1024 * 1024:
        return f"{size / 1024:.2f} KiB"
    return f"{size / (1024 * 1024):.2f} MiB"
