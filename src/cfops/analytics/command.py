"""`cfops analytics`: real traffic per version from Workers Analytics Engine (check, stage, rehearse, show).

The analysis commands the release runs (and people, to look):

    check                      the token can query Analytics Engine (and whether the dataset exists yet)
    stage --new V --old V …    soak, then judge one release stage by real traffic per version
    rehearse --points FILE     the rehearsal's analysis: the gates tried on seeded versions (+ local points)
    show --new V [--old V]     the last window's per-version numbers (what `nox -s versions --window` shows)

``stage`` exits 0 on pass (or inconclusive under the "pass" policy), 1 on fail (or inconclusive under
"fail"), 2 on bad input; its record goes to ``--json``.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from rich.table import Table

from cfops import cli, output
from cfops import report as artifacts
from cfops.analytics import query
from cfops.analytics.client import (
    PERMISSION,
    AnalyticsAccessError,
    AnalyticsQueryError,
    AnalyticsUnavailable,
    SqlClient,
)
from cfops.analytics.gates import Judgement, gates_record, judge
from cfops.analytics.query import VersionStats
from cfops.analytics.rehearsal import rehearse
from cfops.config import Settings, StageGates
from cfops.errors import CheckFailed, UsageError
from immcad_api import analytics as layout

# A runner clock this far from the API's is worth a note (the windows never depend on it).
SKEW_NOTE_SECONDS = 5.0


def check_access(settings: Settings, client: SqlClient | None = None) -> str:
    """One line: the token can query Analytics Engine, and whether the dataset has data yet.

    Raises AnalyticsAccessError (exit 1) when the token lacks the permission.
    """
    dataset = query.dataset_name(settings.analytics.dataset)
    with client or SqlClient(settings) as sql:
        tables = query.read_tables(sql.query(query.show_tables()).data)
    if dataset in tables:
        return f"the API token can read Analytics Engine ({PERMISSION}); dataset {dataset} has data"
    return (
        f"the API token can read Analytics Engine ({PERMISSION}); dataset {dataset} has no data yet "
        "(it appears with the first data point a deployed version writes)"
    )


def fetch(
    settings: Settings, client: SqlClient, versions: Sequence[str], window_seconds: float
) -> tuple[dict[str, VersionStats], float | None]:
    """Per-version numbers for the window; a dataset that does not exist yet reads as no traffic."""
    dataset = query.dataset_name(settings.analytics.dataset)
    # Rounded down: a window of 1 s or more never reaches back before the stage's split was asked, where
    # the traffic was the previous split's (a canary takes a second or two: the 0 % split is that close).
    text = query.per_version(dataset, versions, int(window_seconds))
    try:
        answer = client.query(text)
    except AnalyticsQueryError:
        if dataset not in query.read_tables(client.query(query.show_tables()).data):
            raise DatasetMissing(
                f"dataset {dataset} not found: no data point was written yet (is the binding "
                f"{settings.analytics.binding} in the deployed versions?)"
            ) from None
        raise
    skew = None if answer.server_time is None else time.time() - answer.server_time
    return query.read_per_version(answer.data, versions), skew


class DatasetMissing(CheckFailed):
    """The dataset has never been written: to a stage, that is no traffic at all."""


def _line(name: str, stats: VersionStats | None) -> str:
    if stats is None:
        return f"{name} —"
    p95 = "?" if stats.p95_ms is None else f"{stats.p95_ms:g} ms"
    return (
        f"{name} {stats.requests:g} req, 5xx {stats.error_rate * 100:.2f} %, "
        f"4xx {stats.client_error_rate * 100:.2f} %, p95 {p95}"
    )


def summary_line(record: dict[str, Any]) -> str:
    """The one line a stage's verdict prints (and the release report shows as the step's detail)."""
    versions = record.get("versions")
    versions = versions if isinstance(versions, dict) else {}
    new, old = (v if isinstance(v, dict) else None for v in (versions.get("new"), versions.get("old")))
    sides = " | ".join(
        _line(name, VersionStats.from_dict(data) if data else None)
        for name, data in (("new", new), ("old", old))
    )
    label = " [seeded]" if record.get("seeded") else ""
    return f"{record.get('outcome')}{label} ({record.get('verdict')}: {record.get('reason')}) — {sides}"


def comparison(
    old: VersionStats | None, baseline: VersionStats | None, gates: StageGates
) -> tuple[VersionStats | None, bool]:
    """What the new version is judged against, and whether that is the earlier stage's baseline.

    The old version's own numbers when it served enough for a verdict (``min_requests``, as the new side
    needs); otherwise the baseline — the handful of old requests seen after a promote to 100 %, while the
    split propagates, is noise; without a baseline, whatever the old version served.
    """
    if old is not None and old.requests >= gates.min_requests:
        return old, False
    if baseline is not None:
        return baseline, True
    return (old if old is not None and old.requests > 0 else None), False


def run_stage(
    settings: Settings,
    *,
    new: str,
    old: str | None,
    percent: float,
    started_ago: float,
    soak: float,
    gates: StageGates,
    baseline: VersionStats | None = None,
    client: SqlClient | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> dict[str, Any]:
    """Soak, query, judge; extend an inconclusive stage up to ``max_soak_seconds``; apply the policy."""
    began = clock() - started_ago
    versions = [new, *([old] if old else [])]
    soak = max(soak, 0.0)
    limit = max(gates.max_soak_seconds, soak)
    wait = soak - (clock() - began)
    queries = 0
    skew: float | None = None
    stats: dict[str, VersionStats] = {}
    compare: VersionStats | None = None
    used_baseline = False
    judgement: Judgement
    with client or SqlClient(settings, sleep=sleep) as sql:
        while True:
            if wait > 0:
                output.info(f"soaking {wait:.0f} s before reading the {percent:g} % stage's traffic")
                sleep(wait)
            window = clock() - began
            queries += 1
            try:
                stats, skew = fetch(settings, sql, versions, window)
                compare, used_baseline = comparison(stats.get(old) if old else None, baseline, gates)
                judgement = judge(stats[new], compare, gates)
            except (AnalyticsUnavailable, DatasetMissing) as exc:
                judgement = Judgement(verdict="inconclusive", reason=str(exc))
            except AnalyticsAccessError as exc:
                judgement = Judgement(verdict="fail", reason=str(exc))
            if judgement.verdict != "inconclusive":
                break
            remaining = limit - (clock() - began)
            if remaining <= 0:
                break
            wait = min(max(soak, 1.0), remaining)
            output.warn(
                f"{percent:g} % stage inconclusive ({judgement.reason}): soak extended by {wait:.0f} s"
            )
    if judgement.verdict == "inconclusive":
        outcome = "pass" if gates.inconclusive == "pass" else "fail"
        policy = f"inconclusive policy {gates.inconclusive!r}: " + (
            "passed on the smoke alone" if outcome == "pass" else "fail safe"
        )
    else:
        outcome, policy = judgement.verdict, ""
    # The old side as judged: the baseline when it stood in, else the old version's own numbers.
    shown_old = compare if used_baseline else (stats.get(old) if old else None)
    if skew is not None and abs(skew) > SKEW_NOTE_SECONDS:
        output.warn(
            f"the runner's clock differs from the API's by {skew:+.0f} s; the window uses the API's clock"
        )
    return {
        "stage_percent": percent,
        "seeded": False,
        # The numbers are user traffic only: the stage's own smoke (synthetic) is left out by the query.
        "origin": layout.ORIGIN_USER,
        "window_seconds": round(clock() - began, 3),
        "queries": queries,
        "versions": {
            "new": stats[new].as_dict() if new in stats else None,
            "old": shown_old.as_dict() if shown_old is not None else None,
        },
        "baseline_from_earlier_stage": used_baseline,
        "verdict": judgement.verdict,
        "reason": judgement.reason + (f"; {policy}" if policy else ""),
        "outcome": outcome,
        "checks": judgement.as_dict()["checks"],
        "clock_skew_seconds": None if skew is None else round(skew, 3),
        "gates": gates_record(gates),
    }


def live_table(settings: Settings, traffic: dict[str, float], window_seconds: float) -> Table:
    """Each live version's numbers over the last ``window_seconds`` (for `nox -s versions --window`)."""
    with SqlClient(settings) as sql:
        stats, _ = fetch(settings, sql, list(traffic), window_seconds)
    table = Table(
        title=f"user traffic, last {window_seconds:g} s (Analytics Engine; cfops's synthetic requests "
        "left out)",
        title_justify="left",
    )
    table.add_column("version", no_wrap=True, min_width=36)
    for column in ("traffic", "requests", "5xx", "4xx", "p50", "p95"):
        table.add_column(column, justify="right")
    for version, share in traffic.items():
        v = stats[version]
        table.add_row(
            version,
            f"{share:g}%",
            f"{v.requests:g}",
            f"{v.error_rate * 100:.2f} %",
            f"{v.client_error_rate * 100:.2f} %",
            "–" if v.p50_ms is None else f"{v.p50_ms:g} ms",
            "–" if v.p95_ms is None else f"{v.p95_ms:g} ms",
        )
    return table


# -------------------------------------------------------------------------------------------- command


def _gates(settings: Settings, args: argparse.Namespace) -> StageGates:
    gates = settings.release.gates
    if args.max_soak is not None:
        if not math.isfinite(args.max_soak) or args.max_soak < 0:
            raise UsageError(f"--max-soak {args.max_soak:g}: expected a finite number of seconds >= 0")
        gates = replace(gates, max_soak_seconds=args.max_soak)
    return gates


def _baseline(path: str | None) -> VersionStats | None:
    if not path:
        return None
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        old = data["versions"]["old"]
    except (OSError, ValueError, KeyError, TypeError):
        return None  # an earlier stage without numbers: no baseline
    return VersionStats.from_dict(old) if isinstance(old, dict) else None


def _write(path: str | None, record: dict[str, Any]) -> None:
    if path:
        artifacts.write_json(Path(path), record)


def main(argv: Sequence[str]) -> int:
    parser = cli.parser("analytics", __doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("check", help="the token can query Analytics Engine")
    stage = commands.add_parser("stage", help="soak, then judge one release stage")
    stage.add_argument("--new", required=True, help="the new version id")
    stage.add_argument("--old", help="the previous version id")
    stage.add_argument(
        "--percent", type=cli.finite_float, required=True, help="the stage's share of the new version"
    )
    stage.add_argument(
        "--started-ago", type=cli.finite_float, default=0.0, help="seconds since the stage's promote began"
    )
    stage.add_argument(
        "--soak",
        type=cli.finite_float,
        help="seconds to wait before reading (default: [tool.cfops.release] soak_seconds)",
    )
    stage.add_argument(
        "--max-soak", type=cli.finite_float, help="extend an inconclusive stage up to this many seconds"
    )
    stage.add_argument(
        "--baseline", help="an earlier stage's record: the old version's numbers when it has none"
    )
    stage.add_argument("--json", help="write the stage's record here")
    rehearsal = commands.add_parser(
        "rehearse", help="try the gates on seeded versions (and read the local points)"
    )
    rehearsal.add_argument("--points", required=True, help="the JSONL file the local backend wrote")
    rehearsal.add_argument("--json", help="write the record here")
    show = commands.add_parser("show", help="per-version numbers of the last window")
    show.add_argument("--new", required=True)
    show.add_argument("--old")
    show.add_argument("--window", type=cli.finite_float, default=300.0, help="seconds (default 300)")
    args = parser.parse_args(argv)
    settings = cli.settings_from_env()
    if args.command == "check":
        output.success(check_access(settings))
        return 0
    if args.command == "show":
        versions = [args.new, *([args.old] if args.old else [])]
        with SqlClient(settings) as sql:
            stats, _ = fetch(settings, sql, versions, args.window)
        output.info(f"user traffic, last {args.window:g} s (cfops's synthetic requests left out)")
        for name, version in zip(("new", "old"), versions, strict=False):
            output.echo(_line(f"{name} {version}:", stats[version]))
        return 0
    if args.command == "rehearse":
        record = rehearse(Path(args.points), settings.release.gates)
    else:
        if args.percent <= 0 or args.percent > 100 or args.started_ago < 0 or (args.soak or 0) < 0:
            raise UsageError("--percent must be in (0, 100], --started-ago and --soak >= 0")
        record = run_stage(
            settings,
            new=args.new,
            old=args.old,
            percent=args.percent,
            started_ago=args.started_ago,
            soak=settings.release.soak_seconds if args.soak is None else args.soak,
            gates=_gates(settings, args),
            baseline=_baseline(args.baseline),
        )
    _write(args.json, record)
    line = summary_line(record)
    if record["outcome"] == "pass":
        output.success(line)
        return 0
    output.error(line)
    return 1
