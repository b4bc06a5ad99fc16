"""`cfops promote`: move traffic between two versions of a Worker (``new@P old@100-P``).

Runs ``wrangler versions deploy NEW@P OLD@100-P -y``, confirms the split from the API, and writes
``artifacts/promote-<worker>.json``. At 100 % only the new version remains.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from typing import cast

from cfops import cli, output
from cfops.deploy import WORKERS, Worker, deploy_split, write_artifact


def main(argv: Sequence[str]) -> int:
    parser = cli.parser("promote", __doc__)
    parser.add_argument("--worker", choices=WORKERS, default="native", help="default: native")
    parser.add_argument("--new", required=True, help="version id that gets --percent of the traffic")
    parser.add_argument("--old", default=None, help="version id that keeps the rest (not needed at 100)")
    parser.add_argument("--percent", type=cli.finite_float, required=True, help="0 to 100")
    parser.add_argument("--message", default=None, help="annotation recorded on the deployment")
    args = parser.parse_args(argv)
    settings = cli.settings_from_env()
    worker = cast(Worker, args.worker)
    result = deploy_split(settings, worker, args.new, args.old, args.percent, message=args.message)
    write_artifact(settings, f"promote-{worker}.json", asdict(result))
    shares = ", ".join(f"{version} at {share:g}%" for version, share in result.traffic.items())
    output.success(f"{result.name} now serves {shares}")
    return 0


if __name__ == "__main__":
    cli.run_main(main)
