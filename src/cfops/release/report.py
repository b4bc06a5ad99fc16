"""The release report: ``artifacts/release.json`` and ``release.md`` (and $GITHUB_STEP_SUMMARY)."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any

from cfops import output
from cfops import report as artifacts
from cfops.config import Settings
from cfops.release.model import SYMBOL, Context, StepResult
from cfops.wrangler import toolchain_versions

REPORT_JSON = "release.json"
REPORT_MD = "release.md"


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
