"""`cfops rollback`: put a Worker back on an earlier version (default: the last one that had 100%).

Runs `wrangler rollback ID -y --message …` (repeated on a transient failure), then reads the deployment
back until it shows 100 % on that version — else exit 1 with the exact command to run by hand — and
writes ``artifacts/rollback-<worker>.json``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

from cfops import cli, output
from cfops.deploy import WORKERS, Worker, rollback


def main(argv: Sequence[str]) -> int:
    parser = cli.parser("rollback", __doc__)
    parser.add_argument("--worker", choices=WORKERS, default="native", help="default: native")
    parser.add_argument("--version", default=None, help="version id to go back to (default: last at 100%%)")
    parser.add_argument("--message", default=None, help="why (recorded on the deployment)")
    args = parser.parse_args(argv)
    settings = cli.settings_from_env()
    result = rollback(settings, cast(Worker, args.worker), args.version, message=args.message)
    before = ", ".join(f"{v} at {p:g}%" for v, p in result.previous_traffic.items()) or "nothing"
    output.success(f"{result.name} now serves version {result.version_id} at 100% (was {before})")
    return 0


if __name__ == "__main__":
    cli.run_main(main)
