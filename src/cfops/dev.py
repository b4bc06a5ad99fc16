"""`cfops dev`: run the native Python Worker locally until Ctrl-C.

With a working pywrangler toolchain this is ``pywrangler dev``. Where pywrangler cannot start — it
fetches the Pyodide runtime and a CPython build from the internet — the synced bundle's app is served
by uvicorn instead, through the same env-binding function the Worker's entry.py uses.
"""

from __future__ import annotations

import json
import signal
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

from dotenv import dotenv_values

from cfops import cli, cloudflare, output, procs
from cfops.config import Runtime, Settings, is_secret_name
from cfops.devserver import BINDINGS_ENV
from cfops.errors import MissingToolError
from cfops.sync import sync
from cfops.wrangler import config_vars, pywrangler_problem, read_config, toolchain_env

ResolvedRuntime = Literal["uvicorn", "pywrangler"]
# pywrangler dev vendors packages and boots Pyodide before it answers; give it longer than uvicorn.
_PYWRANGLER_MIN_STARTUP = 180.0


@dataclass(frozen=True)
class RuntimeChoice:
    runtime: ResolvedRuntime
    reason: str


@dataclass(frozen=True)
class Backend:
    url: str
    runtime: ResolvedRuntime
    service: procs.Service


def choose_runtime(settings: Settings, requested: Runtime) -> RuntimeChoice:
    if requested == "uvicorn":
        return RuntimeChoice("uvicorn", "requested with --runtime uvicorn")
    problem = pywrangler_problem(settings)
    if requested == "pywrangler":
        if problem:
            raise MissingToolError(f"pywrangler cannot run here: {problem}; use --runtime uvicorn")
        return RuntimeChoice("pywrangler", "requested with --runtime pywrangler")
    if problem:
        return RuntimeChoice("uvicorn", f"pywrangler unavailable: {problem}")
    return RuntimeChoice("pywrangler", "pywrangler toolchain available")


def _dev_vars_file(settings: Settings) -> dict[str, str]:
    path = settings.worker_dir / ".dev.vars"
    if not path.is_file():
        return {}
    return {k: v for k, v in dotenv_values(path).items() if v is not None}


def dev_bindings(settings: Settings, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """What the local Worker sees: wrangler.toml [vars] < [tool.cfops.dev] vars < .dev.vars < ``extra``."""
    bindings = config_vars(read_config(settings.native.config), settings.native.config)
    bindings.update(settings.dev.vars)
    local = _dev_vars_file(settings)
    # .dev.vars is where local secrets live: none of them may reach the output.
    output.add_secrets(v for k, v in local.items() if is_secret_name(settings, k))
    bindings.update(local)
    bindings.update(extra or {})
    return bindings


def local_bearer_token(settings: Settings) -> str | None:
    """The bearer token the local backend will require (from .dev.vars or the dev vars), if any."""
    bindings = dev_bindings(settings)
    return cloudflare.bearer_token(bindings)


@contextmanager
def native_backend(
    settings: Settings,
    *,
    runtime: ResolvedRuntime,
    host: str,
    port: int,
    extra_bindings: Mapping[str, str] | None = None,
    forward_output: bool = True,
) -> Iterator[Backend]:
    """Start the native Worker locally (already synced), wait for /healthz, stop it on exit."""
    procs.ensure_port_free(host, port)
    bindings = dev_bindings(settings, extra_bindings)
    url = f"http://{host}:{port}"
    if runtime == "uvicorn":
        cmd: list[str] = [
            sys.executable,
            "-m",
            "cfops.devserver",
            "--bundle-src",
            str(settings.worker_dir / "src"),
            "--host",
            host,
            "--port",
            str(port),
        ]
        env = {BINDINGS_ENV: json.dumps(bindings), "PYTHONDONTWRITEBYTECODE": "1"}
        timeout = settings.dev.startup_timeout
    else:
        # pywrangler calls `npx wrangler`: the pinned local one, on the chosen Node (first on PATH).
        env = toolchain_env(settings)
        # Only the non-secret dev overrides go on the command line; wrangler reads .dev.vars itself.
        overrides = [arg for k, v in settings.dev.vars.items() for arg in ("--var", f"{k}:{v}")]
        cmd = ["pywrangler", "dev", "--ip", host, "--port", str(port), *overrides]
        timeout = max(settings.dev.startup_timeout, _PYWRANGLER_MIN_STARTUP)
    service = procs.Service(
        "backend",
        cmd,
        cwd=settings.worker_dir if runtime == "pywrangler" else settings.root,
        env=env,
        health_url=f"{url}/healthz",
        ready_timeout=timeout,
        stop_signal=signal.SIGINT,  # what wrangler and uvicorn treat as a graceful Ctrl-C
        forward_output=forward_output,
    )
    with service:
        yield Backend(url=url, runtime=runtime, service=service)


def main(argv: Sequence[str]) -> int:
    parser = cli.parser("dev", __doc__)
    cli.settings_flags(parser, "dev", only=("runtime", "port", "host"))
    parser.add_argument("--no-sync", action="store_true", help="serve the bundle as it is, without syncing")
    args = parser.parse_args(argv)
    settings = cli.load(args)
    host, port = settings.dev.host, settings.dev.port
    procs.ensure_port_free(host, port)
    dev_bindings(settings)  # a malformed wrangler.toml or .dev.vars fails here, before anything starts
    if not args.no_sync:
        result = sync(settings)
        output.info(f"synced {result.files} files into {settings.worker_dir.name}/")
    choice = choose_runtime(settings, settings.dev.runtime)
    if choice.runtime == "uvicorn" and choice.reason.startswith("pywrangler unavailable"):
        output.warn(f"{choice.reason}; serving the synced bundle with uvicorn instead")
    with native_backend(settings, runtime=choice.runtime, host=host, port=port) as backend:
        label = "pywrangler dev" if backend.runtime == "pywrangler" else "uvicorn, synced bundle"
        output.success(f"native worker ({label}) ready at {backend.url}  —  Ctrl-C to stop")
        procs.wait_forever([backend.service])
    return 0


if __name__ == "__main__":
    cli.run_main(main)
