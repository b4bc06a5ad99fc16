"""`cfops <command> [args]`: the same entry points the nox sessions call, for use without nox."""

from __future__ import annotations

import importlib
import sys

from cfops import output

COMMANDS = {
    "sync": "cfops.sync",
    "dev": "cfops.dev",
    "perf": "cfops.perf",
    "dev_proxy": "cfops.proxy",
    "tscheck": "cfops.tscheck",
    "image": "cfops.image",
    "preflight": "cfops.preflight.command",
    "deploy": "cfops.deploy",
    "secrets": "cfops.secrets",
    "rollback": "cfops.rollback",
    "versions": "cfops.versions",
    "promote": "cfops.promote",
    "release": "cfops.release",
    "recover": "cfops.recover",
    "status": "cfops.status",
}


def main() -> int:
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        output.error(f"usage: cfops {{{','.join(COMMANDS)}}} [args]  (each takes --help)")
        return 2
    module = importlib.import_module(COMMANDS[sys.argv[1]])
    from cfops import cli

    return cli.main(module.main, sys.argv[2:])


if __name__ == "__main__":
    sys.exit(main())
