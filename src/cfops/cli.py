"""Shared plumbing for entry points: an argparse that fails in one line, the flags that settings declare,
and the one error handler.

Flags over settings, one mechanism for every command: a settings field names its flag in its metadata
(``config.setting(flag=…)``); a command adds the flags of the sections it uses (``settings_flags``) and
gets its settings from ``load(args)``, which layers the given flags over defaults < pyproject.toml <
.env < environment with the same coercion and messages as the config file.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import importlib.util
import math
import os
import sys
import traceback
import typing
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, NoReturn

from cfops import output
from cfops.config import Settings, is_secret_name, load_settings
from cfops.errors import CfopsError, UsageError
from cfops.procs import Terminated, interrupts_unwind_once

# argparse dest prefix of a settings flag: "setting:dev.port" holds the text given for --port.
_SETTING = "setting:"


class ArgumentParser(argparse.ArgumentParser):
    """argparse that raises UsageError (one line, exit 2) instead of printing usage and exiting."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message} (see --help)")


def parser(command: str, description: str | None) -> ArgumentParser:
    """The parser of ``cfops <command>``; the description is the first line of the module docstring."""
    first = (description or "").strip().split("\n")[0]
    # Module docstrings open with "`cfops <command>`: what it does"; --help shows the what.
    summary = first.split("`: ", 1)[1] if first.startswith("`") and "`: " in first else first
    # No abbreviations: `--head "Authorization: …"` would pass argparse yet not the secret hand-off
    # (cfops.argv), which knows the full flag names only.
    return ArgumentParser(prog=f"cfops {command}", description=summary or None, allow_abbrev=False)


def finite_float(text: str) -> float:
    """argparse type: a number that is neither nan nor ±inf (which pass every `<= 0` check)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def _section_type(section: str) -> type[Any]:
    hints = typing.get_type_hints(Settings)
    tp = hints.get(section)
    if not (isinstance(tp, type) and dataclasses.is_dataclass(tp)):
        raise ValueError(f"settings have no section {section!r}")  # a programming error, not input
    return tp


def settings_flags(
    parser: argparse.ArgumentParser,
    section: str,
    *,
    only: Sequence[str] | None = None,
    rename: Mapping[str, str] | None = None,
) -> None:
    """Add the flag of every field of ``Settings.<section>`` that declares one (``only``: these fields;
    ``rename``: field -> flag where one command needs another name, e.g. dev-proxy's --backend-port)."""
    cls = _section_type(section)
    hints = typing.get_type_hints(cls)
    rename = rename or {}
    for f in dataclasses.fields(cls):
        flag = rename.get(f.name) or f.metadata.get("flag")
        if not flag or (only is not None and f.name not in only):
            continue
        tp = hints[f.name]
        kwargs: dict[str, Any] = {"dest": f"{_SETTING}{section}.{f.name}", "default": None}
        env = f.metadata.get("env") or ()
        default = f.default if f.default is not dataclasses.MISSING else None
        shown = ",".join(f"{v:g}" for v in default) if isinstance(default, tuple) else default
        shown = f"{shown:g}" if isinstance(shown, float) else shown
        help_text = f.metadata.get("help") or ""
        extra = ", ".join([*env, f"default {shown}" if shown not in (None, "") else ""]).strip(", ")
        kwargs["help"] = f"{help_text} ({extra})" if extra else help_text
        if typing.get_origin(tp) is Literal:
            kwargs["choices"] = typing.get_args(tp)
        else:
            kwargs["metavar"] = flag.lstrip("-").upper().replace("-", "_")
        parser.add_argument(flag, **kwargs)


def flags_of(args: argparse.Namespace) -> dict[str, Any]:
    """The settings flags given on the command line, by dotted field path."""
    return {
        key.removeprefix(_SETTING): value
        for key, value in vars(args).items()
        if key.startswith(_SETTING) and value is not None
    }


def load(args: argparse.Namespace | None = None) -> Settings:
    """The settings of this process (flags in ``args`` on top) with every secret value registered for
    redaction."""
    settings = load_settings(environ=os.environ, flags=flags_of(args) if args is not None else None)
    output.add_secrets(value for name, value in settings.env.items() if is_secret_name(settings, name))
    output.mask_secrets()
    return settings


def settings_from_env() -> Settings:
    """``load()`` without flags (for commands that take none)."""
    return load()


def _take_exit_code_file() -> str | None:
    """CFOPS_EXIT_CODE_FILE, removed from the environment: it is meant for this process only. A child
    cfops (a release step) that inherited it would write its own code first, and invoke would report
    that (a skipped optional step's 2) instead of this command's."""
    return os.environ.pop("CFOPS_EXIT_CODE_FILE", None)


def _record_exit_code(code: int, target: str | None) -> None:
    """Leave the exit code where the invoke layer reads it (CFOPS_EXIT_CODE_FILE): nox reports every
    failed session as exit 1, and invoke gives the user back the command's own code (2 = bad input)."""
    if target and code:
        try:
            with Path(target).open("a", encoding="utf-8") as handle:
                handle.write(f"{code}\n")
        except OSError:
            pass  # the code still reaches nox as the process's exit status


def main(func: Callable[[Sequence[str]], int], argv: Sequence[str] | None = None) -> int:
    """Run ``func(argv)``; turn CfopsError into its exit code and Ctrl-C/SIGTERM into 130/143."""
    args = list(sys.argv[1:] if argv is None else argv)
    exit_code_file = _take_exit_code_file()
    try:
        with interrupts_unwind_once():
            code = func(args)
    except CfopsError as exc:
        output.error(str(exc))
        code = exc.exit_code
    except Terminated:
        # Being stopped is not an error of the command's own: say so without the error prefix.
        output.warn("terminated; everything started was stopped")
        code = 143
    except KeyboardInterrupt:
        output.warn("interrupted; everything started was stopped")
        code = 130
    _record_exit_code(code, exit_code_file)
    return code


def run_main(func: Callable[[Sequence[str]], int]) -> NoReturn:
    sys.exit(main(func))


def call(module: str, args: Sequence[str]) -> int:
    """``python -m <module> <args>`` (a cfops command) run in this process, with the exit code that process
    would give: a CfopsError is printed as its one line and becomes its code, a bug is printed with its
    traceback and becomes 1. Ctrl-C and SIGTERM are not caught: they unwind the caller too.

    For a pipeline that runs many commands (a release): one interpreter start and one import of httpx,
    aiohttp and rich instead of one per step.
    """
    try:
        spec = importlib.util.find_spec(module)
        # `python -m cfops.deploy` runs the package's __main__, whose `main` is the command's.
        target = f"{module}.__main__" if spec is not None and spec.submodule_search_locations else module
        func: Callable[[Sequence[str]], int] = importlib.import_module(target).main
        return func(list(args))
    except CfopsError as exc:
        output.error(str(exc))
        return exc.exit_code
    except SystemExit as exc:  # `--help`, or a command that exits on its own
        if isinstance(exc.code, str):  # as Python prints it on the way out
            sys.stderr.write(output.redact(exc.code) + "\n")
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except Exception:  # a bug: what the process would have printed, then its exit code
        sys.stderr.write(output.redact(traceback.format_exc()))
        return 1
