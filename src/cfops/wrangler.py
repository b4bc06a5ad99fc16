"""Wrangler: the pinned Node toolchain (npm ci, cached), reading the Workers' config files, and the one
function that runs wrangler (ND-JSON events, Cloudflare error codes turned into advice)."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import socket
import tempfile
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import json5

from cfops import cloudflare, node, output, procs
from cfops.config import Settings
from cfops.errors import CfopsError, CheckFailed, CommandFailed, ConfigError, MissingToolError, UsageError

_MARKER = ".cfops-lock-sha256"

# Every wrangler child runs with these: no prompts, no telemetry, nothing fetched but the API it is for.
QUIET_ENV = {
    "WRANGLER_SEND_METRICS": "false",
    "WRANGLER_SEND_ERROR_REPORTS": "false",
    # The banner's update check asks the npm registry for the latest wrangler on every start.
    "WRANGLER_HIDE_BANNER": "true",
    # Otherwise miniflare (dev, check startup) fetches Request.cf from workers.cloudflare.com.
    "CLOUDFLARE_CF_FETCH_ENABLED": "false",
    # wrangler colours its errors even into a pipe; findings and records carry plain text.
    "FORCE_COLOR": "0",
    "NO_COLOR": "1",
}


def read_config(path: Path) -> dict[str, Any]:
    """Parse a wrangler config: TOML, or JSON/JSONC (comments and trailing commas allowed)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path} not found") from None
    try:
        data = tomllib.loads(text) if path.suffix == ".toml" else json5.loads(text)
    except (tomllib.TOMLDecodeError, ValueError) as exc:
        kind = "TOML" if path.suffix == ".toml" else "JSONC"
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(f"{path} is not valid {kind}: {first}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a table/object")
    return data


def config_vars(config: dict[str, Any], path: Path) -> dict[str, str]:
    """The ``[vars]`` of a wrangler config, as strings (wrangler passes non-strings as JSON)."""
    raw = config.get("vars", {})
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: vars must be a table")
    return {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in raw.items()}


def _lock_digest(package_dir: Path) -> str:
    lock = package_dir / "package-lock.json"
    if not lock.is_file():
        raise ConfigError(f"{lock} is missing: the Node toolchain must be pinned (run npm install there)")
    return hashlib.sha256(lock.read_bytes() + (package_dir / "package.json").read_bytes()).hexdigest()


def ensure_node_toolchain(settings: Settings) -> Path:
    """``npm ci`` in the worker directory unless node_modules already matches the lock; returns its bin.

    The marker keeps warm runs free: npm ci wipes and reinstalls (~10 s), so it only runs when the lock
    changed or node_modules is missing. Concurrent cfops processes (two sessions, a release beside a
    preflight) take turns on a lock file, and the second one finds the marker the first one wrote. The lock
    lives in the temp dir: npm ci deletes node_modules, and a file in the Worker directory would enter its
    bundle digests and image context.
    """
    package_dir = settings.worker_dir
    modules = package_dir / "node_modules"
    digest = _lock_digest(package_dir)
    marker = modules / _MARKER

    def installed() -> bool:
        return marker.is_file() and marker.read_text().strip() == digest

    if installed():
        return modules / ".bin"
    key = hashlib.sha256(str(package_dir.resolve()).encode()).hexdigest()[:16]
    with (Path(tempfile.gettempdir()) / f"cfops-npm-ci-{key}.lock").open("a") as lock:
        # Blocking: the holder's npm ci is itself bounded by its timeout below.
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        if not installed():
            # Any npm installs it (Node 20's included): the Node that then runs wrangler is the pinned
            # package.
            procs.which(
                "node", hint="install Node.js and npm (any version from 20 on: the project pins its own Node)"
            )
            npm = procs.which("npm", hint="install npm (it ships with Node.js)")
            procs.run([npm, "ci", "--no-audit", "--no-fund"], cwd=package_dir, timeout=600, what="npm ci")
            marker.write_text(digest + "\n")
    return modules / ".bin"


def node_runtime(settings: Settings) -> node.NodeRuntime:
    """The Node every wrangler/tsc child runs on (installs the toolchain first); exit 2 when unusable."""
    ensure_node_toolchain(settings)
    return node.locate(settings)


def toolchain_env(settings: Settings, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment additions for a Node-toolchain child: PATH with the chosen Node first."""
    return node_runtime(settings).env(base)


# pywrangler's reachability probes are short: a missing network must not stall a command that falls back.
_PROBE_TIMEOUT = 2.0


def pywrangler_problem(settings: Settings) -> str | None:
    """Why pywrangler cannot run here, or None. Fast: local lookups plus short TCP probes."""
    if not shutil.which("pywrangler"):
        return "pywrangler is not installed (it comes with pip install -e '.[worker]')"
    if not shutil.which("uv"):
        return "uv is not installed (pywrangler uses it to vendor packages)"
    for target in settings.dev.pywrangler_probe:
        host, _, port = target.rpartition(":")
        try:
            with socket.create_connection((host, int(port)), timeout=_PROBE_TIMEOUT):
                pass
        except (OSError, ValueError) as exc:
            reason = (exc.strerror if isinstance(exc, OSError) else None) or str(exc)
            return f"cannot reach {target} ({reason}), which pywrangler needs to fetch the Pyodide runtime"
    return None


def toolchain_versions(settings: Settings) -> dict[str, str]:
    """What the Node toolchain is, for reports: wrangler's version and the Node it runs on (and why)."""
    package = settings.worker_dir / "node_modules" / "wrangler" / "package.json"
    try:
        wrangler = str(json.loads(package.read_text(encoding="utf-8"))["version"])
    except (OSError, ValueError, KeyError):
        wrangler = "not installed"
    try:
        runtime = node.locate(settings)
    except CfopsError as exc:
        return {"wrangler": wrangler, "node": "unusable", "node_source": str(exc)}
    return {"wrangler": wrangler, "node": runtime.text, "node_source": runtime.source}


def wrangler_bin(settings: Settings) -> Path:
    """The pinned wrangler executable (installs the toolchain on first use)."""
    binary = ensure_node_toolchain(settings) / "wrangler"
    node.locate(settings)  # a missing or too old Node is bad input before any wrangler call
    if not binary.exists():
        raise MissingToolError(
            f"{binary} missing after npm ci: is wrangler in {settings.worker_dir}/package.json?"
        )
    return binary


def typecheck(settings: Settings) -> int:
    """``tsc --noEmit`` over the Workers' TypeScript with the pinned compiler; returns the files checked.

    Raises CheckFailed (exit 1) after printing every error tsc reported.
    """
    project = settings.worker_dir / "tsconfig.json"
    if not project.is_file():
        raise ConfigError(f"{project} is missing: tsc needs it to type-check the Worker")
    tsc = ensure_node_toolchain(settings) / "tsc"
    result = procs.run(
        [tsc, "--noEmit", "--pretty", "false", "-p", project],
        cwd=settings.worker_dir,
        env=toolchain_env(settings),
        timeout=300,
        check=False,
        what="tsc",
    )
    problems = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    if result.returncode != 0:
        for line in problems:
            output.echo(line)
        count = sum(1 for line in problems if ": error TS" in line) or len(problems)
        raise CheckFailed(f"tsc --noEmit: {count} error(s) in {settings.worker_dir.name}/ (listed above)")
    return len(list((settings.worker_dir / "src").rglob("*.ts")))


# ------------------------------------------------------------------------------- running wrangler
#
# Every wrangler call (deploys, versions, secrets, rollbacks, listings) goes through run_wrangler: it
# sets WRANGLER_OUTPUT_FILE_PATH and reads wrangler's ND-JSON events instead of scraping its human
# output, keeps wrangler offline apart from the API (no telemetry, no update check, no error reports),
# keeps its debug log in a private temp dir that is removed afterwards, and turns a Cloudflare error
# code into advice.

# Passed from settings.env (.env + environment) so a .env file can hold them.
_PASS_THROUGH = (*cloudflare.ACCOUNT_VARS, cloudflare.API_BASE_URL)


class WranglerFailed(CommandFailed):
    """wrangler exited non-zero; ``code`` is the Cloudflare error code from its command-failed event."""

    def __init__(self, message: str, *, code: int | None, returncode: int | None, output_tail: str) -> None:
        super().__init__(message, returncode=returncode, output_tail=output_tail)
        self.code = code

    @property
    def transient(self) -> bool:
        """Whether another attempt may succeed: a 5xx/429 code or a lost connection, not a refusal."""
        return cloudflare.is_transient(self.code, f"{self}\n{self.output_tail}")


@dataclass(frozen=True)
class WranglerRun:
    command: tuple[str, ...]  # redacted, program as its file name: what artifacts record
    returncode: int
    events: tuple[dict[str, Any], ...]
    stdout: str
    stderr: str
    duration: float

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def event(self, kind: str) -> dict[str, Any] | None:
        """The last ND-JSON event of type ``kind``: deploy, version-upload, version-deploy, command-failed."""
        found = [e for e in self.events if e.get("type") == kind]
        return found[-1] if found else None

    @property
    def error_code(self) -> int | None:
        failed = self.event("command-failed")
        code = failed.get("code") if failed else None
        return code if isinstance(code, int) else None

    @property
    def secret_not_deployed(self) -> bool:
        """Cloudflare refused a secret edit because the latest version is not the deployed one."""
        if self.error_code in cloudflare.SECRET_NOT_DEPLOYED_CODES:
            return True
        failed = self.event("command-failed") or {}
        text = f"{failed.get('message') or ''}\n{procs.strip_ansi(self.stderr)}".lower()
        return cloudflare.SECRET_NOT_DEPLOYED_TEXT in text

    @property
    def error_message(self) -> str:
        failed = self.event("command-failed")
        message = str(failed.get("message") or "") if failed else ""
        if not message:
            message = cloudflare.error_summary(self.stderr + "\n" + self.stdout, fallback="no output")
        return output.redact(message.strip().splitlines()[0])

    def json_output(self) -> Any:
        """stdout of a ``--json`` command."""
        try:
            return json.loads(self.stdout)
        except json.JSONDecodeError:
            raise CommandFailed(
                f"{' '.join(self.command[:3])} printed no JSON: {self.stdout.strip()[:200]!r}"
            ) from None

    def failure(self) -> WranglerFailed:
        code = self.error_code
        label = " ".join(part for part in self.command[1:3] if not part.startswith("-"))
        text = f"wrangler {label} failed"
        if code is not None:
            text += f" (Cloudflare error {code})"
        text += f": {self.error_message}"
        advice = cloudflare.advice_for(code)
        if advice:
            text += f" — {advice}"
        return WranglerFailed(
            text,
            code=code,
            returncode=self.returncode,
            output_tail=procs.tail_lines(self.stderr + self.stdout),
        )


def parse_events(text: str) -> tuple[dict[str, Any], ...]:
    """wrangler's output file: one JSON object per line; anything else is ignored."""
    events = []
    for line in text.splitlines():
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(event, dict):
            events.append(event)
    return tuple(events)


def missing_credentials(settings: Settings) -> list[str]:
    return [name for name in cloudflare.CREDENTIALS if not settings.env.get(name, "").strip()]


def require_credentials(settings: Settings, what: str, *, dry_run_hint: bool = False) -> None:
    """Exit 2 before any call when the Cloudflare credentials are not set. ``dry_run_hint``: the
    command has a --dry-run that needs none (versions, promote and rollback have not)."""
    missing = missing_credentials(settings)
    if missing:
        hint = "; --dry-run needs neither" if dry_run_hint else ""
        raise UsageError(
            f"{' and '.join(missing)} not set: {what} needs a Cloudflare API token and account id "
            f"(environment or .env){hint}"
        )


def wrangler_env(settings: Settings, *, offline: bool) -> dict[str, str]:
    """The environment of a wrangler child: this process's, plus credentials from .env, minus noise."""
    env = {k: v for k, v in os.environ.items() if not (offline and k in cloudflare.ACCOUNT_VARS)}
    for name in _PASS_THROUGH:
        value = settings.env.get(name)
        if value and not (offline and name in cloudflare.ACCOUNT_VARS):
            env[name] = value
    env.update(QUIET_ENV)
    return env


def run_wrangler(
    settings: Settings,
    args: Sequence[str],
    *,
    program: str | Path | None = None,
    cwd: Path | None = None,
    input: str | None = None,
    offline: bool = False,
    timeout: float | None = None,
    check: bool = True,
    show_output: bool = True,
) -> WranglerRun:
    """Run ``wrangler args`` (or ``program args``, e.g. pywrangler, which hands over to wrangler).

    ``input`` goes to stdin (secrets travel only that way). ``offline`` drops the account credentials
    (dry runs). With ``check``, a non-zero exit raises WranglerFailed with the Cloudflare error code and
    advice. The child's output is captured and echoed redacted (``show_output``).
    """
    binary = Path(program) if program is not None else wrangler_bin(settings)
    workdir = tempfile.mkdtemp(prefix="cfops-wrangler-")  # 0700: wrangler's debug log may hold request bodies
    events_file = Path(workdir) / "events.ndjson"
    env = wrangler_env(settings, offline=offline)
    env.update(toolchain_env(settings, env))  # the chosen Node first on PATH (wrangler.js, npx)
    env["WRANGLER_OUTPUT_FILE_PATH"] = str(events_file)
    env["WRANGLER_LOG_PATH"] = str(Path(workdir) / "logs")
    # Otherwise wrangler caches the account in node_modules/.cache, and a later call without
    # CLOUDFLARE_ACCOUNT_ID would silently reuse it.
    env["WRANGLER_CACHE_DIR"] = str(Path(workdir) / "cache")
    try:
        result = procs.run(
            [binary, *args],
            cwd=cwd or settings.worker_dir,
            env=env,
            inherit_env=False,
            input=input,
            timeout=timeout or settings.deploy.timeout,
            check=False,
            what=f"{binary.name} {' '.join(args[:2])}",
        )
        events = parse_events(events_file.read_text(encoding="utf-8")) if events_file.is_file() else ()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    run = WranglerRun(
        command=tuple(output.redact(part) for part in (binary.name, *args)),
        returncode=result.returncode,
        events=events,
        stdout=result.stdout,
        stderr=result.stderr,
        duration=result.duration,
    )
    if show_output:
        for line in procs.strip_ansi(result.stdout + result.stderr).splitlines():
            if line.strip():
                output.echo(f"  {line.rstrip()}", style="dim")
    if check and not run.ok:
        raise run.failure()
    return run
