"""Cloudflare platform facts, in one place: every command imports them from here.

What the platform decides and cfops only knows: the environment variables wrangler reads for an account,
the API error codes and what to do about each, how wrangler prints an error, the Worker limits and the
headers the edge honours. Also the names of the backend's bearer token (the Worker reads either), which
preflight, secrets sync, dev, perf and the release all look up. A fact that lives twice drifts: add it
here, not next to its first user.

Data and pure functions: of cfops it imports only procs.strip_ansi, so every layer above procs may use it.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping, Sequence

from cfops.procs import strip_ansi

# --------------------------------------------------------------------------------------- credentials

API_TOKEN = "CLOUDFLARE_API_TOKEN"  # noqa: S105 - the variable's name, not a token
ACCOUNT_ID = "CLOUDFLARE_ACCOUNT_ID"
# The legacy global API key (with the account e-mail): wrangler accepts it, cfops's commands do not
# ask for it (the advice below names the token's scopes), but it must not leak into an offline call.
API_KEY = "CLOUDFLARE_API_KEY"
EMAIL = "CLOUDFLARE_EMAIL"
# Where wrangler sends its API calls; tests point it at the fake API.
API_BASE_URL = "CLOUDFLARE_API_BASE_URL"

# What a call to the API needs: cfops checks these before any call (exit 2 when one is missing).
CREDENTIALS = (API_TOKEN, ACCOUNT_ID)
# Everything that lets wrangler reach an account: dropped for offline (dry-run) calls.
ACCOUNT_VARS = (API_TOKEN, ACCOUNT_ID, API_KEY, EMAIL)
# Either one authenticates wrangler (preflight's `wrangler whoami` runs when one is set).
WRANGLER_AUTH = (API_TOKEN, API_KEY)

# The backend's bearer token: the Worker (src/immcad_api/settings.py) reads either name and refuses to
# start when both are set and differ. immcad_api keeps its own copy: it must not import cfops.
BEARER_TOKEN = "IMMCAD_API_BEARER_TOKEN"  # noqa: S105 - names, not tokens
BEARER_TOKEN_ALIAS = "API_BEARER_TOKEN"  # noqa: S105
BEARER_TOKEN_NAMES = (BEARER_TOKEN, BEARER_TOKEN_ALIAS)


def bearer_token(values: Mapping[str, str]) -> str | None:
    """The bearer token among ``values`` (the main name wins over the alias), or None."""
    return values.get(BEARER_TOKEN) or values.get(BEARER_TOKEN_ALIAS) or None


def bearer_conflict(values: Mapping[str, str | None]) -> bool:
    """Whether both bearer-token names hold (non-blank) values that differ: the app refuses to start."""
    first, second = ((values.get(name) or "").strip() for name in BEARER_TOKEN_NAMES)
    return bool(first and second and first != second)


# Workers Analytics Engine: the token permission the SQL API needs (the dashboard's Account | Account
# Analytics | Read), and the API's default base URL (CLOUDFLARE_API_BASE_URL overrides it).
ANALYTICS_PERMISSION = "Account Analytics Read"
DEFAULT_API_BASE_URL = "https://api.cloudflare.com/client/v4"

# ------------------------------------------------------------------------------------ API error codes

NOT_FOUND_CODE = 10007  # the Worker does not exist on this account
STARTUP_CODE = 10021  # the Worker failed validation at startup (global scope too slow or throwing)
SIZE_CODE = 10027  # the upload is over the Worker size limit
# The latest version is not the deployed one: secrets cannot be edited (`versions secret bulk` can).
SECRET_NOT_DEPLOYED_CODES = frozenset({10214, 10215})
# wrangler >= 4.1xx turns those codes from `secret bulk` into this message, without the code.
SECRET_NOT_DEPLOYED_TEXT = "the latest version of your worker isn't currently deployed"  # noqa: S105
AUTH_CODES = frozenset({10000, 10001, 9106, 9107, 9109})
RATE_LIMIT_CODE = 971  # answered with HTTP 429 and a Retry-After header
# Answers another attempt may not meet: rate limited, "An unknown error occurred" / internal error (what a
# 5xx carries). Anything else (auth, validation, 10215) answers the same again.
TRANSIENT_CODES = frozenset({RATE_LIMIT_CODE, 10013, 10002})
# What wrangler prints when the connection itself failed (undici's errors), with no API code.
_TRANSIENT_TEXT = (
    "fetch failed",
    "other side closed",
    "socket hang up",
    "econnreset",
    "econnrefused",
    "etimedout",
    "und_err",
    "bad gateway",
    "service unavailable",
    "gateway timeout",
)


def is_transient(code: int | None, text: str) -> bool:
    """Whether a failed call may succeed when repeated: by its API code, or (without one) by the
    connection error wrangler printed."""
    if code is not None:
        return code in TRANSIENT_CODES
    lowered = text.lower()
    return any(marker in lowered for marker in _TRANSIENT_TEXT)


_ADVICE = {
    SIZE_CODE: "the Worker bundle is too large: run `cfops preflight` to see what makes it big",
    STARTUP_CODE: "the Worker failed validation at startup: move imports and heavy work out of global scope "
    "(into the request handler) and check the bundle with `nox -s preflight`",
    NOT_FOUND_CODE: "the Worker does not exist on this account yet: deploy it once with --strategy direct",
    **dict.fromkeys(
        SECRET_NOT_DEPLOYED_CODES,
        "the latest version is not fully deployed: change secrets with `wrangler versions secret bulk` "
        "(cfops secrets does so itself) or deploy the latest version first",
    ),
    **dict.fromkeys(
        AUTH_CODES,
        f"authentication failed: {API_TOKEN} needs the scopes Account · Workers Scripts · Edit "
        f"(and Account Settings · Read), and {ACCOUNT_ID} must be that token's account",
    ),
}


def advice_for(code: int | None) -> str | None:
    """What to do about a Cloudflare API error code, or None when there is nothing specific to say."""
    return _ADVICE.get(code) if code is not None else None


# ------------------------------------------------------------------------------------------- limits

# Since 2026-09-04 every plan has one uncompressed Worker size limit (64 MiB).
WORKER_SIZE_LIMIT_KIB = 65536
# CPU a Worker's global scope may spend at startup before the upload is refused (STARTUP_CODE).
STARTUP_LIMIT_MS = 1000.0
# A version's or deployment's message (the workers/message annotation) is kept to 100 characters.
DEPLOYMENT_MESSAGE_MAX = 100

# --------------------------------------------------------------------------- Python Workers runtime

# A Python Worker needs this compatibility flag; the Python it runs on then follows from its date.
PYTHON_WORKERS_FLAG = "python_workers"
# (Python, the compatibility date from which Cloudflare runs it, the flag that opts into it earlier),
# newest first. The last row is the base runtime. pywrangler (workers-py) keeps the same table.
PYTHON_WORKERS_RUNTIMES: tuple[tuple[str, dt.date | None, str | None], ...] = (
    ("3.14", dt.date(2026, 9, 8), "python_workers_314"),
    ("3.13", dt.date(2025, 9, 29), "python_workers_20250116"),
    ("3.12", None, None),
)


def python_workers_runtime(date: dt.date, flags: Sequence[str]) -> tuple[str, str] | None:
    """(Python, why) Cloudflare runs a Worker with this date and flags on; None: not a Python Worker."""
    if PYTHON_WORKERS_FLAG not in flags:
        return None
    for version, since, flag in PYTHON_WORKERS_RUNTIMES:
        if flag is not None and flag in flags:
            return version, f"compatibility flag {flag}"
        if since is not None and date >= since:
            return version, f"compatibility_date {date} >= {since}"
    version = PYTHON_WORKERS_RUNTIMES[-1][0]
    first = PYTHON_WORKERS_RUNTIMES[-2][1]
    return version, f"compatibility_date {date} < {first}"


def python_workers_dates(version: str) -> str | None:
    """The compatibility dates that run ``version`` ("from 2025-09-29 to 2026-09-07"), or None if unknown."""
    rows = list(PYTHON_WORKERS_RUNTIMES)
    for index, (candidate, since, _) in enumerate(rows):
        if candidate != version:
            continue
        newer = rows[index - 1][1] if index > 0 else None
        until = f"before {newer}" if newer else ""
        if since is None:
            return until or None
        if newer is None:
            return f"from {since}"
        return f"from {since} to {newer - dt.timedelta(days=1)}"
    return None


# ------------------------------------------------------------------------------------------ headers

# Routes a request to a version of the named Worker — honoured only for a version in the current
# deployment, otherwise silently ignored.
VERSION_OVERRIDE_HEADER = "Cloudflare-Workers-Version-Overrides"

# ------------------------------------------------------------------------------- wrangler's errors

# wrangler prints a failure as `✘ [ERROR] <message>`, sometimes followed by a source location line.
_ERROR_MARK = "[ERROR]"
_LOCATION = re.compile(r"^\S+:\d+:\d+:$")
# Lines of wrangler's error output that carry no information about the failure.
_NOISE = (
    "Logs were written to",
    "If you think this is a bug",
    "Please report any issues",
    "report this error",
)


def informative_lines(text: str) -> list[str]:
    """wrangler's output without colour codes, blank lines and its boilerplate ("report this bug" …)."""
    return [
        line.rstrip()
        for line in strip_ansi(text).splitlines()
        if line.strip() and not any(noise in line for noise in _NOISE)
    ]


def error_lines(text: str) -> list[str]:
    """The messages of wrangler's ``✘ [ERROR]`` lines in ``text``, each with the source location that
    follows it (``(at file:line:col)``) when there is one."""
    lines = [line.strip() for line in strip_ansi(text).splitlines() if line.strip()]
    found: list[str] = []
    for index, line in enumerate(lines):
        if _ERROR_MARK not in line:
            continue
        message = line.split(_ERROR_MARK, 1)[1].strip()
        following = lines[index + 1] if index + 1 < len(lines) else ""
        if _LOCATION.match(following):
            message += f" (at {following.rstrip(':')})"
        found.append(message)
    return found


def error_summary(text: str, *, fallback: str) -> str:
    """One line saying why wrangler failed: its first ``[ERROR]`` message, else its last informative
    line, else ``fallback``."""
    errors = error_lines(text)
    if errors:
        return errors[0]
    lines = informative_lines(text)
    return lines[-1].strip() if lines else fallback
