"""Shared plumbing for entry points: an argparse that fails in one line, and the one error handler."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

from cfops import output
from cfops.config import Settings, is_secret_name, load_settings
from cfops.errors import CfopsError, UsageError
from cfops.procs import Terminated, sigterm_as_interrupt


class ArgumentParser(argparse.ArgumentParser):
    """argparse that raises UsageError (one line, exit 2) instead of printing usage and exiting."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message} (see --help)")


def parser(prog: str, description: str | None) -> ArgumentParser:
    return ArgumentParser(prog=prog, description=(description or "").strip().split("\n")[0] or None)


def settings_from_env() -> Settings:
    """Load the settings for this process and register every secret value they expose for redaction."""
    settings = load_settings(environ=os.environ)
    output.add_secrets(value for name, value in settings.env.items() if is_secret_name(settings, name))
    return settings


def main(func: Callable[[Sequence[str]], int], argv: Sequence[str] | None = None) -> int:
    """Run ``func(argv)``; turn CfopsError into its exit code and Ctrl-C/SIGTERM into 130/143."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        with sigterm_as_interrupt():
            return func(args)
    except CfopsError as exc:
        output.error(str(exc))
        return exc.exit_code
    except Terminated:
        # Being stopped is not an error of the command's own: say so without the error prefix.
        output.warn("terminated; everything started was stopped")
        return 143
    except KeyboardInterrupt:
        output.warn("interrupted; everything started was stopped")
        return 130


def run_main(func: Callable[[Sequence[str]], int]) -> NoReturn:
    sys.exit(main(func))
