"""Reading a workflow step's ``run:`` script as the shell would split it: its simple commands, the nox
sessions and invoke tasks it calls, and their options. No shell is run; a line that does not parse is
skipped."""

from __future__ import annotations

import shlex
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import groupby

_SHELL_OPERATORS = {"&&", "||", ";", "|", "&", "(", ")", ";;"}
# invoke's own options that take a value (so the value is not mistaken for a task name).
_INVOKE_VALUE_FLAGS = {"-c", "--collection", "-r", "--search-root", "-f", "--config", "-e", "--echo-format"}
_NOX_SESSION_FLAGS = {"-s", "-e", "--session", "--sessions"}


@dataclass(frozen=True)
class Call:
    tool: str  # "nox" or "invoke"
    name: str
    where: str


def tokens(script: str) -> Iterator[list[str]]:
    """Each logical line of a shell script as tokens (operators split off); unparsable lines skipped."""
    for line in script.replace("\\\n", " ").splitlines():
        lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        lexer.commenters = "#"
        try:
            yield list(lexer)
        except ValueError:
            continue


def calls(script: str, where: str) -> list[Call]:
    """The nox sessions and invoke tasks a ``run:`` script calls."""
    return [call for words in tokens(script) for call in calls_in(words, where)]


def calls_in(words: list[str], where: str) -> list[Call]:
    """The nox sessions and invoke tasks that already-split ``words`` (a line, or one command) call."""
    found: list[Call] = []
    for i, word in enumerate(words):
        program = word.rsplit("/", 1)[-1]
        if program == "nox":
            found += _nox_calls(words[i + 1 :], where)
        elif program in {"invoke", "inv"}:
            found += _invoke_calls(words[i + 1 :], where)
    return found


def _nox_calls(args: list[str], where: str) -> list[Call]:
    found, taking = [], False
    for arg in args:
        if arg in _SHELL_OPERATORS or arg == "--":
            break
        if arg in _NOX_SESSION_FLAGS:
            taking = True
        elif "=" in arg and arg.split("=", 1)[0] in _NOX_SESSION_FLAGS:
            found += [Call("nox", n, where) for n in arg.split("=", 1)[1].split(",") if n]
            taking = False
        elif arg.startswith("-"):
            taking = False
        elif taking:
            found += [Call("nox", n, where) for n in arg.split(",") if n]
    return found


def _invoke_calls(args: list[str], where: str) -> list[Call]:
    skip_next = False
    for arg in args:
        if arg in _SHELL_OPERATORS:
            break
        if skip_next:
            skip_next = False
        elif arg in _INVOKE_VALUE_FLAGS:
            skip_next = True
        elif not arg.startswith("-"):
            return [Call("invoke", arg, where)]
    return []


def commands(script: str) -> Iterator[list[str]]:
    """Each simple command of a script (its logical lines split at the shell's operators), as tokens."""
    for words in tokens(script):
        yield from (list(g) for op, g in groupby(words, key=lambda t: t in _SHELL_OPERATORS) if not op)


def option(words: list[str], *names: str) -> str | None:
    """The value of the first of ``names`` (``--name value`` or ``--name=value``) in ``words``."""
    for i, word in enumerate(words):
        flag, sep, value = word.partition("=")
        if flag in names and (sep or i + 1 < len(words)):
            return value if sep else words[i + 1]
    return None
