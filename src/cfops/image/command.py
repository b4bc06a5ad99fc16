"""`cfops image`: build a container image (spike or origin) through the Docker Engine API.

The command line of cfops.image: arguments, then build (and with ``--run`` a smoke run), then the summary.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Sequence
from pathlib import Path

from cfops import cli, output
from cfops.config import Settings, is_secret_name
from cfops.errors import UsageError
from cfops.image.build import build_image
from cfops.image.report import IMAGES, write_report
from cfops.image.run import smoke_run


def parse_assignments(settings: Settings, items: Sequence[str], *, what: str) -> dict[str, str]:
    """``NAME=VALUE`` or ``NAME`` (value from the environment/.env). Secret values never come from argv."""
    values: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        name = name.strip()
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.\-]*", name):
            raise UsageError(f"{what} {item!r}: expected NAME=VALUE or NAME")
        if not sep:
            if name not in settings.env:
                raise UsageError(f"{what} {name}: not set in the environment or .env (or pass {name}=VALUE)")
            value = settings.env[name]
        elif is_secret_name(settings, name):
            raise UsageError(
                f"{what} {name}=…: a secret value on the command line is visible to other users; "
                "pass the name alone and set the value in the environment or .env"
            )
        if is_secret_name(settings, name):
            output.add_secrets([value])
        values[name] = value
    return values


def _mib(value: int | None) -> str:
    return "?" if value is None else f"{value / 2**20:.1f} MiB"


def main(argv: Sequence[str]) -> int:
    parser = cli.parser("image", __doc__)
    parser.add_argument(
        "which", choices=IMAGES, help="spike (backend-cloudflare/Dockerfile) or origin (Dockerfile)"
    )
    parser.add_argument("--tag", help="image tag (default: [tool.cfops.image.<which>] tag)")
    parser.add_argument(
        "--dockerfile", type=Path, help="Dockerfile inside the project (default: from the config)"
    )
    cli.settings_flags(parser, "image", only=("python_image", "health_timeout"))
    parser.add_argument("--build-arg", action="append", default=[], metavar="NAME[=VALUE]")
    parser.add_argument(
        "--label", action="append", default=[], metavar="NAME=VALUE", help="extra image label"
    )
    parser.add_argument("--no-cache", action="store_true", help="build every step anew")
    parser.add_argument("--pull", action="store_true", help="pull a newer base image first")
    parser.add_argument(
        "--no-sync", action="store_true", help="spike: build the bundle as it is, without syncing"
    )
    parser.add_argument("--verbose", action="store_true", help="show the output of every step")
    parser.add_argument("--run", action="store_true", help="start it, wait for /healthz, then remove it")
    parser.add_argument("--keep", action="store_true", help="with --run: leave the container running")
    parser.add_argument("--port", type=int, help="with --run: host port on 127.0.0.1 (default: a free one)")
    parser.add_argument("--env", action="append", default=[], metavar="NAME[=VALUE]", help="with --run")
    args = parser.parse_args(argv)
    health_flag = "image.health_timeout" in cli.flags_of(args)
    if (args.keep or args.port is not None or args.env or health_flag) and not args.run:
        raise UsageError("--keep, --port, --env and --health-timeout only apply with --run")
    settings = cli.load(args)
    if health_flag and settings.image.health_timeout <= 0:
        raise UsageError("--health-timeout must be positive")
    build_args = parse_assignments(settings, args.build_arg, what="--build-arg")
    secret_args = [name for name in build_args if is_secret_name(settings, name)]
    if secret_args:
        raise UsageError(
            f"--build-arg {secret_args[0]}: build args are stored in the image history; pass secrets at run "
            "time (--run --env NAME) instead"
        )
    labels = {}
    for item in args.label:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise UsageError(f"--label {item!r}: expected NAME=VALUE")
        labels[name] = value
    run_env = parse_assignments(settings, args.env, what="--env") if args.run else {}

    with output.group(f"build the {args.which} image"):
        report = build_image(
            settings,
            args.which,
            tag=args.tag,
            dockerfile=args.dockerfile,
            build_args=build_args,
            labels=labels,
            no_cache=args.no_cache,
            pull=args.pull,
            sync_bundle=not args.no_sync,
            verbose=args.verbose,
        )
    output.success(
        f"built {report.tag} {report.image_id[7:19]}: {_mib(report.size_bytes)} "
        f"({_mib(report.added_bytes)} over {report.base_image}), {report.layers} layers, "
        f"{report.steps_built} steps built, {report.steps_cached} cached, "
        f"context {report.context_bytes / 1024:.0f} KiB, {report.build_seconds:.1f} s"
    )
    if report.stage_tags:
        output.echo(f"  build cache kept as {', '.join(report.stage_tags)}", style="dim")
    if report.dirty:
        output.warn(
            f"uncommitted changes: the revision label names {report.revision[:12]}, the image holds more"
        )
    if args.run:
        run = smoke_run(
            settings,
            report,
            port=args.port,
            env=run_env,
            labels=labels,
            health_timeout=settings.image.health_timeout,
            keep=args.keep,
        )
        report = dataclasses.replace(report, run=run)
        write_report(report)
        output.success(
            f"{run.url}/healthz answered {run.healthz_status} after {run.seconds_to_healthy:.1f} s "
            f"(uid {run.uid}): {json.dumps(run.healthz)}"
        )
        output.echo(f"URL: {run.url}")
        if run.kept:
            output.info(
                f"container {run.container} keeps running; stop it with: docker rm -f {run.container}"
            )
        else:
            output.echo(f"container {run.container} removed", style="dim")
    output.echo(f"report: {report.artifact}", style="dim")
    return 0
