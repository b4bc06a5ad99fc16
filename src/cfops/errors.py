"""One error hierarchy. Each class carries its exit code; entry points catch CfopsError in one place."""

from __future__ import annotations


class CfopsError(Exception):
    """Base class. The message is one line that says what went wrong and what to do next."""

    exit_code = 1


class UsageError(CfopsError):
    """Bad input: a flag, an env var, a setting. Exit 2."""

    exit_code = 2


class ConfigError(UsageError):
    """A project file (pyproject.toml, wrangler.toml, sync map …) is malformed or inconsistent."""


class MissingToolError(UsageError):
    """A required program or service is not installed or not reachable. Exit 2."""


class CheckFailed(CfopsError):
    """The tool worked and the target did not pass (drift, threshold, failed check). Exit 1."""


class CommandFailed(CfopsError):
    """An external command exited non-zero or timed out. Exit 1."""

    def __init__(self, message: str, *, returncode: int | None = None, output_tail: str = "") -> None:
        super().__init__(message)
        self.returncode = returncode
        self.output_tail = output_tail


class ServiceError(CfopsError):
    """A background service did not start, exited early or never became healthy. Exit 1."""
