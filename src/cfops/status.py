"""`cfops status`: what is live (each Worker's current deployment) and what the last runs left behind.

The deployments need Cloudflare credentials; without them that part is skipped, not failed. The last
artifacts (release, deploys, rollbacks, preflight, perf smoke) are read from the artifacts directory.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from rich.table import Table

from cfops import cli, journal, output
from cfops.config import Settings
from cfops.deploy import WORKERS, current_deployment, target
from cfops.errors import CfopsError
from cfops.records import DeployRecord, PerfRecord, ReleaseRecord, RollbackRecord, read_object
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


def _summary(name: str, path: Path) -> str:
    """What an artifact holds, in one line, through the same typed readers the release uses."""
    if name == "release.json":
        return ReleaseRecord.read(path).summary()
    if name.startswith("deploy-"):
        return DeployRecord.read(path).summary()
    if name.startswith("rollback-"):
        record = RollbackRecord.read(path)
        return f"back on {record.version_id}" + (" (read back)" if record.verified else "")
    if name.startswith("perf-"):
        perf = PerfRecord.read(path)
        return f"{perf.verdict or perf.passed}; answers by version: {perf.answers()}"
    data = read_object(path)
    if name.startswith("analysis-"):  # a release stage judged by its real traffic: old vs new
        from cfops.analytics.command import summary_line

        return summary_line(data)
    return str(data.get("summary") or data.get("result") or data.get("status") or "")


def journal_line(settings: Settings) -> tuple[str, bool] | None:
    """Where the last release stands, from its journal, and whether it is unfinished (None: no journal)."""
    last = journal.last_release(settings.artifacts_dir)
    if last is None:
        return None
    if last.finished:
        return f"release {last.release}: {last.last.outcome or 'done'}", False
    return f"release {last.release} is unfinished: stopped {last.where()}; run `invoke recover`", True


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
            what = _summary(name, path)
        except CfopsError as exc:
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
    found = journal_line(settings)
    if found is not None:
        line, unfinished = found
        (output.warn if unfinished else output.info)(line)
    return 0


if __name__ == "__main__":
    cli.run_main(main)
