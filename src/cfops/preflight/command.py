"""`cfops preflight`: one release-readiness report, measured from the real bundles.

Runs every check at once (configs, proxy-bundle, native-bundle, startup, sync, edge-contract, secrets,
workflows, git, tooling), prints one table, writes artifacts/preflight.json and, in GitHub Actions,
appends the table to the step summary. Exit 0 pass/warn, 1 any fail (--strict: any warn), 2 bad input
or a missing tool.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import cast

from cfops import cli, output
from cfops.errors import CfopsError
from cfops.preflight import report as reporting
from cfops.preflight.cache import Cache, policy_for
from cfops.preflight.model import Context, Finding, Target, Toolchain
from cfops.preflight.runner import CHECKS, run_checks, select
from cfops.report import append_step_summary, write_json

ARTIFACT = "preflight.json"


def _ids(values: Sequence[str] | None) -> list[str]:
    return [part.strip() for value in values or () for part in value.split(",") if part.strip()]


def main(argv: Sequence[str]) -> int:
    parser = cli.parser("preflight", __doc__)
    ids = ", ".join(CHECKS)
    parser.add_argument(
        "--only", action="append", metavar="IDS", help=f"run only these checks (comma-separated: {ids})"
    )
    parser.add_argument("--skip", action="append", metavar="IDS", help="skip these checks (comma-separated)")
    cli.settings_flags(parser, "preflight", only=("mode",))
    parser.add_argument(
        "--target",
        choices=["local", "production"],
        default="local",
        help="production: secrets required, clean tree, hardened vars (default local)",
    )
    parser.add_argument("--strict", action="store_true", help="a warning fails the run too")
    parser.add_argument(
        "--allow-dirty", action="store_true", help="with --target production, a dirty working tree only warns"
    )
    parser.add_argument(
        "--no-cache",
        action="store_true",
        help="measure every check anew (default: reuse a cached finding whose inputs did not change)",
    )
    args = parser.parse_args(argv)
    chosen = select(_ids(args.only), _ids(args.skip))
    settings = cli.load(args)
    mode = settings.preflight.mode
    ctx = Context(
        settings=settings,
        target=cast(Target, args.target),
        mode=mode,
        allow_dirty=args.allow_dirty,
        toolchain=Toolchain(settings),
    )
    started = time.perf_counter()
    cache = Cache(settings, policy_for(settings, ctx.target, no_cache=args.no_cache))
    findings = _run(ctx, chosen, cache)
    cache.save()
    report = reporting.Report(
        findings=tuple(findings),
        target=ctx.target,
        mode=mode,
        strict=args.strict,
        wall_seconds=time.perf_counter() - started,
    )
    artifact = settings.artifacts_dir / ARTIFACT
    try:
        write_json(artifact, reporting.to_json(report))
    except OSError as exc:
        raise CfopsError(
            f"cannot write {artifact}: {exc.strerror or exc}; check CFOPS_ARTIFACTS_DIR"
        ) from None
    try:
        append_step_summary(settings.env, reporting.markdown(report))
    except OSError as exc:
        output.warn(f"cannot append to GITHUB_STEP_SUMMARY: {exc.strerror or exc}")
    reporting.print_report(
        report, artifact.relative_to(settings.root) if artifact.is_relative_to(settings.root) else artifact
    )
    return report.exit_code


def _run(ctx: Context, chosen: list[str], cache: Cache) -> list[Finding]:
    if not output.is_terminal():
        return run_checks(ctx, chosen, cache=cache)
    console = output.console()
    with console.status(f"running {len(chosen)} checks: {', '.join(chosen)}") as status:

        def progress(finding: Finding, pending: list[str]) -> None:
            status.update(f"waiting for {', '.join(pending)}" if pending else "writing the report")

        return run_checks(ctx, chosen, progress, cache)
