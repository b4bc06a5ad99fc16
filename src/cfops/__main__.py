"""`cfops <command> [args]`: the complete command line; nox sessions and invoke tasks call the same
commands by the same names (`cfops --help` lists them)."""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Sequence

from cfops import __version__
from cfops.commands import ALIASES, BY_NAME, COMMANDS

USAGE = "usage: cfops [--help] [--version] <command> [args]"


def _help() -> str:
    width = max(len(command.name) for command in COMMANDS)
    lines = [
        USAGE,
        "",
        "The IMMCAD Cloudflare ops library: sync, run, check, measure, build, deploy, release.",
        "",
        "commands:",
        *(f"  {c.name.ljust(width)}  {c.summary}" for c in COMMANDS),
        "",
        "`cfops <command> --help` shows a command's flags. Exit codes: 0 ok, 1 a check failed,",
        "2 bad input or a missing prerequisite.",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    # Taken out of the environment: meant for this process, not for the cfops children a release starts.
    parent = os.environ.pop("CFOPS_PARENT_PID", None)
    if parent and parent.isdigit():
        # Started by the nox layer (session.run cannot set this up for its child): stop when nox dies.
        from cfops.procs import die_with_starter

        die_with_starter(int(parent))
    if not args:  # no command is bad input: the list goes to stderr, exit 2
        print(_help(), file=sys.stderr)
        return 2
    if args[0] in {"-h", "--help", "help"}:
        print(_help())
        return 0
    if args[0] in {"-V", "--version"}:
        print(f"cfops {__version__}")
        return 0
    name, rest = args[0], args[1:]
    if name not in BY_NAME and name in ALIASES:
        name, *fixed = ALIASES[name]
        rest = [*fixed, *rest]
    command = BY_NAME.get(name)
    if command is None:
        print(f"error: cfops: unknown command {name!r} (see cfops --help)", file=sys.stderr)
        return 2
    from cfops import cli

    module = importlib.import_module(command.module)
    return cli.main(module.main, rest)


if __name__ == "__main__":
    sys.exit(main())
