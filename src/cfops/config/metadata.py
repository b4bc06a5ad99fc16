"""Field metadata: how a setting names its environment variables, its command-line flag and its help.

``cfops.config.load`` layers the environment and the flags over the config file by these names,
``cfops.cli`` adds the flags a command takes, and ``cfops docs`` writes docs/configuration.md from them.
"""

from __future__ import annotations

from typing import Any


def setting(
    *env: str, flag: str | None = None, help: str | None = None, deferred: bool = False
) -> dict[str, Any]:
    """Field metadata: the environment variables that override this setting (first one set wins), the
    command-line flag that overrides both, and the one-line help shown by ``--help`` and the docs.

    ``deferred``: generic names kept for compatibility (REQUESTS, CONCURRENCY …) are applied and
    validated only by the command that uses them (``with_deferred_env``), so a stray value in someone's
    shell cannot break unrelated commands. A flag always wins over them.
    """
    return {"env": env, "deferred": deferred, "flag": flag, "help": help}


def from_env(
    *names: str, deferred: bool = False, flag: str | None = None, help: str | None = None
) -> dict[str, Any]:
    """``setting`` by its older name: a field overridden by environment variables (and a flag)."""
    return setting(*names, flag=flag, help=help, deferred=deferred)
