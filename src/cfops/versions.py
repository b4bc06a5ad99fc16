"""`cfops versions`: a Worker's current deployment and its recent versions, as tables."""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

from rich.table import Table

from cfops import cli, output
from cfops.cloudflare_api import Deployment, VersionInfo
from cfops.deploy import WORKERS, Worker, list_deployments, list_versions, target
from cfops.errors import UsageError


def _when(timestamp: str) -> str:
    return timestamp[:19].replace("T", " ")


def deployment_table(name: str, deployment: Deployment | None) -> Table:
    table = Table(title=f"{name}: current deployment", title_justify="left")
    table.add_column("version", no_wrap=True, min_width=36)
    for column in ("traffic", "created", "source", "message"):
        table.add_column(column)
    if deployment is not None:
        for version_id, share in deployment.traffic.items():
            table.add_row(
                version_id, f"{share:g}%", _when(deployment.created_on), deployment.source, deployment.message
            )
    return table


def _versions_table(name: str, versions: Sequence[VersionInfo], live: dict[str, float]) -> Table:
    table = Table(title=f"{name}: recent versions (newest first)", title_justify="left")
    table.add_column("#")
    table.add_column("version", no_wrap=True, min_width=36)
    for column in ("traffic", "created", "source", "tag", "message"):
        table.add_column(column)
    for version in versions:
        share = live.get(version.id)
        table.add_row(
            str(version.number or ""),
            version.id,
            f"{share:g}%" if share is not None else "",
            _when(version.created_on),
            version.source,
            version.tag,
            output.redact(version.message),
        )
    return table


def main(argv: Sequence[str]) -> int:
    parser = cli.parser("versions", __doc__)
    parser.add_argument("--worker", choices=WORKERS, default="native", help="default: native")
    parser.add_argument(
        "--window",
        type=cli.finite_float,
        help="native: also each live version's real traffic over the last SECONDS (Analytics Engine)",
    )
    args = parser.parse_args(argv)
    if args.window is not None and (args.window <= 0 or args.worker != "native"):
        raise UsageError("--window takes seconds > 0, for the native Worker (the one that records traffic)")
    settings = cli.settings_from_env()
    worker = cast(Worker, args.worker)
    name = target(settings, worker).name
    deployments = list_deployments(settings, worker)
    current = deployments[-1] if deployments else None
    versions = list_versions(settings, worker)
    console = output.console()
    if current is None:
        output.warn(f"{name} has no deployments yet")
    else:
        console.print(deployment_table(name, current))
    console.print(_versions_table(name, versions, current.traffic if current else {}))
    if args.window is not None and current is not None:
        from cfops.analytics.command import live_table

        console.print(live_table(settings, current.traffic, args.window))
    return 0


if __name__ == "__main__":
    cli.run_main(main)
