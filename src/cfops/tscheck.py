"""`cfops tscheck`: type-check the Workers' TypeScript with the pinned `tsc --noEmit` (part of lint)."""

from __future__ import annotations

from collections.abc import Sequence

from cfops import cli, output
from cfops.wrangler import typecheck


def main(argv: Sequence[str]) -> int:
    cli.parser("tscheck", __doc__).parse_args(argv)
    settings = cli.settings_from_env()
    files = typecheck(settings)
    output.success(f"tsc --noEmit: {files} TypeScript file(s) in {settings.worker_dir.name}/src type-check")
    return 0


if __name__ == "__main__":
    cli.run_main(main)
