"""What may cross a process boundary on a command line: everything but a secret.

Stdlib only: the nox and invoke layers (noxfile.py, tasks.py) import it before the project is installed.
A secret header value given as a flag (``--header "Authorization: Bearer …"``) is moved into the child's
environment and the flag refers to it (``Authorization: @env:NAME``), so neither the child's argv
(/proc/<pid>/cmdline, ``ps``) nor a runner's log line of the command ever holds it.
"""

from __future__ import annotations

from collections.abc import Sequence

# The one list of words that mark a name (an environment variable, a setting, a header) as holding a
# secret, matched case-insensitively anywhere in the name (cfops.config.is_secret_name reads it too).
SECRET_WORDS = ("token", "key", "secret", "password", "credential")
# Header names whose values are credentials: the secret words, and the headers that carry credentials
# without saying so.
SENSITIVE_WORDS = ("authorization", "cookie", *SECRET_WORDS)
ENV_REF = "@env:"
FILE_REF = "@file:"
HANDOFF_PREFIX = "CFOPS_SECRET_ARG_"


def is_sensitive(name: str) -> bool:
    lowered = name.lower()
    return any(word in lowered for word in SENSITIVE_WORDS)


def _hide(header: str, env: dict[str, str]) -> str:
    name, sep, value = header.partition(":")
    value = value.strip()
    if not sep or not is_sensitive(name) or not value or value.startswith((ENV_REF, FILE_REF)):
        return header
    var = f"{HANDOFF_PREFIX}{len(env)}"
    env[var] = value
    return f"{name.strip()}: {ENV_REF}{var}"


def hand_off_secrets(args: Sequence[str]) -> tuple[list[str], dict[str, str]]:
    """``args`` with every secret ``--header`` value replaced by an ``@env:`` reference, and the
    environment variables that carry the values."""
    out: list[str] = []
    env: dict[str, str] = {}
    after_header = False
    for arg in args:
        if after_header:
            out.append(_hide(arg, env))
            after_header = False
        elif arg == "--header":
            out.append(arg)
            after_header = True
        elif arg.startswith("--header="):
            out.append("--header=" + _hide(arg.removeprefix("--header="), env))
        else:
            out.append(arg)
    return out, env
