"""The report: a rich table on the terminal, artifacts/preflight.json, and a GitHub step summary.

Every string passes through output.redact on its way out, so a secret value that reached a message
(say, inside a tool's error text) is masked in all three.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cfops import output
from cfops.preflight.model import RANK, Finding, Status, kib
from cfops.report import redacted

if TYPE_CHECKING:
    from rich.table import Table

SYMBOL: dict[Status, str] = {"pass": "✓ pass", "warn": "! warn", "fail": "✗ fail", "skip": "– skip"}
STYLE: dict[Status, str] = {"pass": "green", "warn": "yellow", "fail": "bold red", "skip": "dim"}
_MAX_DETAILS = 5
_LOG_WIDTH = 150


@dataclass(frozen=True, kw_only=True)
class Report:
    findings: tuple[Finding, ...]
    target: str
    mode: str
    strict: bool
    wall_seconds: float

    @property
    def status(self) -> Status:
        worst: Status = "pass"
        for finding in self.findings:
            if RANK[finding.status] > RANK[worst]:
                worst = finding.status
        return worst

    @property
    def exit_code(self) -> int:
        if any(f.usage_error for f in self.findings):
            return 2
        if any(f.status == "fail" for f in self.findings):
            return 1
        if self.strict and any(f.status == "warn" for f in self.findings):
            return 1
        return 0

    def counts(self) -> dict[str, int]:
        return {s: sum(1 for f in self.findings if f.status == s) for s in ("pass", "warn", "fail", "skip")}

    def summary(self) -> str:
        counts = ", ".join(f"{n} {s}" for s, n in self.counts().items() if n)
        strict = ", strict" if self.strict else ""
        cached = sum(1 for f in self.findings if f.cached)
        reused = f", {cached} cached" if cached else ""
        run = f"target {self.target}, mode {self.mode}{strict}{reused}"
        return f"preflight {self.status}: {counts} in {self.wall_seconds:.1f} s ({run})"


def to_json(report: Report) -> dict[str, Any]:
    body = {
        "version": 1,
        "status": report.status,
        "exit_code": report.exit_code,
        "target": report.target,
        "mode": report.mode,
        "strict": report.strict,
        "wall_seconds": round(report.wall_seconds, 3),
        "slowest_check_seconds": round(max((f.duration for f in report.findings), default=0.0), 3),
        "findings": [
            {
                "id": f.id,
                "status": f.status,
                "message": f.message,
                "details": list(f.details),
                "measured": dict(f.measured),
                "limits": dict(f.limits),
                "duration_seconds": round(f.duration, 3),
                "usage_error": f.usage_error,
                "cached": f.cached,
            }
            for f in report.findings
        ],
    }
    clean: dict[str, Any] = redacted(body)
    return clean


def _measure_cell(finding: Finding) -> str:
    m = finding.measured
    if "raw_bytes" in m:
        return f"{kib(int(m['raw_bytes']))} / gz {kib(int(m['gzip_bytes']))}"
    if "startup_cpu_ms" in m:
        return f"{m['startup_cpu_ms']} ms CPU"
    if "routes" in m:
        return f"{m['routes']} routes, {m['protected_probes']} probed"
    if "changed_paths" in m:
        return f"{m['changed_paths']} changed"
    if "files" in m and "missing" in m:
        return f"{m['files']} files"
    return ""


def _time_cell(finding: Finding) -> str:
    """A reused finding says so instead of a time: nothing was measured in this run."""
    return "cached" if finding.cached else f"{finding.duration:.2f} s"


def _extra_details(finding: Finding) -> list[str]:
    """The details besides the one the message already says."""
    lead = f"{finding.status}: {finding.message.split(' (+', 1)[0]}"
    details = list(finding.details)
    if lead in details:
        details.remove(lead)
    return details


def table(report: Report) -> Table:
    # rich.table is imported when the report is printed, after the checks have started.
    from rich.table import Table
    from rich.text import Text

    grid = Table(title=None, show_lines=False, expand=False, pad_edge=False)
    grid.add_column("check", no_wrap=True)
    grid.add_column("status", no_wrap=True)
    grid.add_column("result")
    grid.add_column("measured", no_wrap=True)
    grid.add_column("time", justify="right", no_wrap=True)
    for finding in report.findings:
        text = Text(output.redact(finding.message))
        if finding.status in ("warn", "fail"):
            for line in _extra_details(finding)[:_MAX_DETAILS]:
                text.append("\n  " + output.redact(line), style="dim")
        grid.add_row(
            finding.id,
            Text(SYMBOL[finding.status], style=STYLE[finding.status]),
            text,
            output.redact(_measure_cell(finding)),
            _time_cell(finding),
        )
    return grid


def print_report(report: Report, artifact: Path | None) -> None:
    from rich.console import Console

    console = output.console()
    if not output.is_terminal():
        # Off a terminal (CI logs, pipes) rich assumes 80 columns; a log reads better wide than wrapped.
        console = Console(file=sys.stdout, highlight=False, width=_LOG_WIDTH)
    console.print(table(report))
    style = {"pass": "green", "skip": "green", "warn": "yellow", "fail": "bold red"}[report.status]
    where = f" → {artifact}" if artifact else ""
    output.echo(report.summary() + where, style=style)


def _cell(text: str) -> str:
    return output.redact(text).replace("|", "\\|").replace("\n", " ")


def markdown(report: Report) -> str:
    icon = {"pass": "✅", "warn": "⚠️", "fail": "❌", "skip": "⏭️"}
    lines = [
        f"## Preflight {icon[report.status]} {report.status}",
        "",
        _cell(report.summary()),
        "",
        "| check | status | result | measured | time |",
        "| --- | --- | --- | --- | ---: |",
    ]
    for f in report.findings:
        lines.append(
            f"| `{f.id}` | {icon[f.status]} {f.status} | {_cell(f.message)} "
            f"| {_cell(_measure_cell(f))} | {_time_cell(f)} |"
        )
    problems = [f for f in report.findings if f.status in ("warn", "fail") and f.details]
    for f in problems:
        lines += ["", f"<details><summary><code>{f.id}</code>: {len(f.details)} detail(s)</summary>", ""]
        lines += [f"- {_cell(d)}" for d in f.details[:30]]
        lines += ["", "</details>"]
    return "\n".join(lines) + "\n"
