"""`cfops toolchain`: install the Worker's pinned Node toolchain (`npm ci`, skipped while node_modules
matches the lock) and print what wrangler runs on.

Every command that needs wrangler or tsc does this on first use. The nox sessions that reach Cloudflare run
it at install time too, so `nox -s release recover --install-only` in a CI step without secrets installs
everything, and the later step that holds the API token installs nothing (npm's install scripts never see
it).
"""

from __future__ import annotations

from collections.abc import Sequence

from cfops import cli, output
from cfops.wrangler import node_runtime, toolchain_versions


def main(argv: Sequence[str]) -> int:
    cli.parser("toolchain", __doc__).parse_args(argv)
    settings = cli.settings_from_env()
    node_runtime(settings)  # npm ci when the lock changed; a missing or too old Node is exit 2
    versions = toolchain_versions(settings)
    output.success(
        f"Node toolchain in {settings.worker_dir.name}/node_modules matches the lock: wrangler "
        f"{versions['wrangler']} on Node {versions['node']} ({versions['node_source']})"
    )
    return 0


if __name__ == "__main__":
    cli.run_main(main)
