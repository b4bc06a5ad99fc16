"""`cfops status`: what is live (each Worker's current deployment) and what the last runs left behind.

The deployments need Cloudflare credentials; without them that part is skipped, not failed. The last
artifacts (release, deploys, rollbacks, preflight, perf smoke) are read from the artifacts directory.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.table import Table

from cfops import cli, output
from cfops.config import Settings
from cfops.deploy import WORKERS, current_deployment, target
from cfops.errors import CfopsError
from cfops.versions import deployment_table
from cfops.wrangler import missing_credentials

# artifact file -> how to say in one line what it holds
_ARTIFACTS = (
    "release.json",
    "deploy-native.json",
    "deploy-proxy.json",
    "rollback-native.json",
    "rollback-proxy.json",
    "preflight.json",
    "perf-smoke.json",
)


def _summary(name: str, data: dict[str, Any]) -> str:
    if name == "release.json":
        where = f" at {data['stopped_at']}" if data.get("stopped_at") else ""
        return f"{data.get('pipeline')}: {data.get('result')}{where}"
    if name.startswith("deploy-"):
        previous = data.get("previous_version_id")
        return f"version {data.get('version_id')} (previous {previous}), {data.get('strategy')}"
    if name.startswith("rollback-"):
        return f"back on {data.get('version_id')}"
    if name == "preflight.json":
        return str(data.get("summary") or data.get("result") or data.get("status") or "")
    if name.startswith("analysis-"):  # a release stage judged by its real traffic: old vs new
        from cfops.analytics.command import summary_line

        return summary_line(data)
    if name == "perf-smoke.json":
        verdict = data.get("verdict", {})
        return str(verdict.get("line") or verdict.get("passed"))
    return ""


def artifacts_table(settings: Settings) -> Table:
    table = Table(title=f"last runs ({settings.artifacts_dir})", title_justify="left")
    for column in ("artifact", "written", "what"):
        table.add_column(column)
    stages = sorted(p.name for p in settings.artifacts_dir.glob("analysis-*.json"))
    for name in (*_ARTIFACTS, *stages):
        path: Path = settings.artifacts_dir / name
        if not path.is_file():
            continue
        written = datetime.fromtimestamp(path.stat().st_mtime, UTC).strftime("%Y-%m-%d %H:%M UTC")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            what = _summary(name, data) if isinstance(data, dict) else "not a JSON object"
        except (OSError, ValueError) as exc:
            what = f"unreadable: {exc}"
        table.add_row(name, written, output.redact(what))
    return table


def main(argv: Sequence[str]) -> int:
    parser = cli.parser("status", __doc__)
    parser.parse_args(argv)
    settings = cli.settings_from_env()
    console = output.console()
    missing = missing_credentials(settings)
    if missing:
        output.warn(f"live deployments skipped: {' and '.join(missing)} not set")
    else:
        for worker in WORKERS:
            name = target(settings, worker).name
            try:
                console.print(deployment_table(name, current_deployment(settings, worker)))
            except CfopsError as exc:
                output.warn(f"{name}: cannot read the current deployment: {exc}")
    console.print(artifacts_table(settings))
    return 0


if __name__ == "__main__":
    cli.run_main(main)
