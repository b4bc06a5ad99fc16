"""Everything cfops prints goes through here, so secret values can be redacted in one place.

Under GitHub Actions (GITHUB_ACTIONS=true) errors and warnings become ``::error::``/``::warning::``
annotations, ``group()`` folds a long step into ``::group::``/``::endgroup::``, and ``mask_secrets``
registers secret values with ``::add-mask::`` so the runner hides them from the whole job's log.
``json_to_stdout()`` keeps stdout for one JSON document (``--json -``): all text goes to stderr.
"""

from __future__ import annotations

import collections
import os
import sys
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import IO, Any

from rich.console import Console
from rich.markup import escape

REDACTED = "***"
# Values shorter than this are not redacted: masking "1" or "ok" everywhere would garble output
# without protecting anything a real secret looks like.
_MIN_SECRET_LENGTH = 4
# The name prefix of the threads that forward a background service's log (procs.Service): their lines
# are the service's, never part of what ``recording()`` keeps for a command.
SERVICE_THREAD = "cfops-service:"

_secrets: set[str] = set()
_lock = threading.Lock()
_stdout = Console(highlight=False, soft_wrap=True)
_stderr = Console(highlight=False, soft_wrap=True, stderr=True)
_text = _stdout  # where text (and GitHub workflow commands) go; stderr once stdout carries JSON
# Set in the environment once the secrets are masked, so that cfops children do not repeat it.
_MASKED_MARK = "CFOPS_GITHUB_MASKED"


def github_actions() -> bool:
    return os.environ.get("GITHUB_ACTIONS") == "true"


def _command_data(text: str) -> str:
    """A workflow command's data, escaped as the runner expects (one line)."""
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


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


def mask_secrets() -> None:
    """Under GitHub Actions: ``::add-mask::`` every registered secret value (once per job step)."""
    if not github_actions() or os.environ.get(_MASKED_MARK):
        return
    with _lock:
        values = sorted(_secrets)
    stream = sys.stderr if _text is _stderr else sys.stdout
    for value in values:
        # Written raw: redact() would turn the value into *** and mask nothing.
        stream.write(f"::add-mask::{_command_data(value)}\n")
    stream.flush()
    os.environ[_MASKED_MARK] = "1"


def json_to_stdout() -> None:
    """From now on stdout carries only the JSON document; every line of text goes to stderr."""
    global _text
    _text = _stderr


def print_json(text: str) -> None:
    """Write a (redacted) JSON document to stdout, raw: no markup, no wrapping."""
    sys.stdout.write(redact(text))
    sys.stdout.flush()


def is_terminal() -> bool:
    """Live displays only on an interactive terminal, never in CI logs."""
    return sys.stdout.isatty() and not os.environ.get("CI")


def console() -> Console:
    return _text


def echo(message: str = "", *, style: str | None = None) -> None:
    _text.print(escape(redact(message)), style=style)


@contextmanager
def group(title: str) -> Iterator[None]:
    """Fold what a long step prints into one collapsible group in a GitHub Actions log."""
    if not github_actions():
        yield
        return
    _text.file.flush()
    _raw(f"::group::{_command_data(redact(title))}")
    try:
        yield
    finally:
        _raw("::endgroup::")


def _raw(line: str) -> None:
    stream = _text.file
    stream.write(line + "\n")
    stream.flush()


def info(message: str) -> None:
    echo(message, style="cyan")


def success(message: str) -> None:
    echo(message, style="green")


def warn(message: str) -> None:
    if github_actions():
        _stderr.file.write(f"::warning::{_command_data(redact(message))}\n")
        _stderr.file.flush()
        return
    _stderr.print(escape(redact(f"warning: {message}")), style="yellow")


def error(message: str) -> None:
    if github_actions():
        _stderr.file.write(f"::error::{_command_data(redact(message))}\n")
        _stderr.file.flush()
        return
    _stderr.print(escape(redact(f"error: {message}")), style="bold red")


class Recording:
    """The last lines written to stdout and stderr (both, in order) while ``recording()`` is active."""

    def __init__(self, keep: int) -> None:
        self._lines: collections.deque[str] = collections.deque(maxlen=keep)
        self._partial = ""
        self._lock = threading.Lock()

    def add(self, text: str) -> None:
        with self._lock:
            *done, self._partial = (self._partial + text).split("\n")
            self._lines.extend(done)

    def text(self) -> str:
        with self._lock:
            return "\n".join([*self._lines, self._partial])


class _Tee:
    """A text stream that writes through to ``stream`` and keeps a copy in ``recording``."""

    def __init__(self, stream: IO[str], recording: Recording) -> None:
        self._stream, self._recording = stream, recording

    def write(self, text: str) -> int:
        if not threading.current_thread().name.startswith(SERVICE_THREAD):
            self._recording.add(text)
        return self._stream.write(text)

    def __getattr__(self, name: str) -> Any:  # flush, isatty, fileno, encoding …: the real stream's
        return getattr(self._stream, name)


@contextmanager
def recording(keep: int = 40) -> Iterator[Recording]:
    """Keep the last ``keep`` lines printed (through here or to sys.stdout/stderr) while they still go
    out as usual: a command run in this process (``cli.call``) is judged by its last lines, as a child
    process is by its captured output. Where text goes (``json_to_stdout``) is put back afterwards."""
    global _text
    seen = Recording(keep)
    saved = sys.stdout, sys.stderr, _text
    sys.stdout, sys.stderr = _Tee(sys.stdout, seen), _Tee(sys.stderr, seen)
    try:
        yield seen
    finally:
        sys.stdout, sys.stderr, _text = saved
