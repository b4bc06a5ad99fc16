"""Everything cfops prints goes through here, so secret values can be redacted in one place."""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Iterable

from rich.console import Console
from rich.markup import escape

REDACTED = "***"
# Values shorter than this are not redacted: masking "1" or "ok" everywhere would garble output
# without protecting anything a real secret looks like.
_MIN_SECRET_LENGTH = 4

_secrets: set[str] = set()
_lock = threading.Lock()
_stdout = Console(highlight=False, soft_wrap=True)
_stderr = Console(highlight=False, soft_wrap=True, stderr=True)


def add_secrets(values: Iterable[str | None]) -> None:
    """Register values that must never appear in output (tokens, keys, URLs with passwords)."""
    with _lock:
        _secrets.update(v for v in values if v and len(v) >= _MIN_SECRET_LENGTH)


def clear_secrets() -> None:
    with _lock:
        _secrets.clear()


def redact(text: str) -> str:
    with _lock:
        secrets = sorted(_secrets, key=len, reverse=True)  # longest first: a secret may contain another
    for value in secrets:
        if value in text:
            text = text.replace(value, REDACTED)
    return text


def is_terminal() -> bool:
    """Live displays only on an interactive terminal, never in CI logs."""
    return sys.stdout.isatty() and not os.environ.get("CI")


def console() -> Console:
    return _stdout


def echo(message: str = "", *, style: str | None = None) -> None:
    _stdout.print(escape(redact(message)), style=style)


def info(message: str) -> None:
    echo(message, style="cyan")


def success(message: str) -> None:
    echo(message, style="green")


def warn(message: str) -> None:
    _stderr.print(escape(redact(f"warning: {message}")), style="yellow")


def error(message: str) -> None:
    _stderr.print(escape(redact(f"error: {message}")), style="bold red")
