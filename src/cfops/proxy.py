"""`cfops dev-proxy`: the edge proxy Worker in workerd (wrangler dev) in front of the local backend.

Starts the backend as `nox -s dev` does (sync, then pywrangler dev or uvicorn), then the proxy Worker
under the pinned ``wrangler dev`` with BACKEND_ORIGIN pointed at it, prints both URLs and serves until
Ctrl-C. ``--origin URL`` fronts an origin that is already running (a container, say) instead.
"""

from __future__ import annotations

import signal
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from cfops import cli, cloudflare, output, procs
from cfops.config import Runtime, Settings, is_secret_name
from cfops.dev import Backend, choose_runtime, dev_bindings, native_backend
from cfops.errors import ServiceError, UsageError
from cfops.sync import sync
from cfops.wrangler import QUIET_ENV, toolchain_env, wrangler_bin
from immcad_api import analytics as layout

ORIGIN_VAR = "BACKEND_ORIGIN"
# The proxy stamps every answer it gives with this header, its own 404s included: seeing it proves the
# Worker is running, whether or not the origin behind it is up.
TRACE_HEADER = "x-immcad-trace-id"
READY_PATH = "/__edge-proxy-ready"

# wrangler dev must not prompt, phone home, or load the native Worker's .dev.vars secrets.
_QUIET_ENV = {
    **QUIET_ENV,
    "CLOUDFLARE_LOAD_DEV_VARS_FROM_DOT_ENV": "false",
}


@dataclass(frozen=True)
class EdgeProxy:
    url: str
    origin: str
    vars: Mapping[str, str]
    service: procs.Service


def parse_vars(pairs: Sequence[str]) -> dict[str, str]:
    """``NAME:VALUE`` pairs (wrangler's --var syntax) into a mapping; BACKEND_ORIGIN has its own flag."""
    parsed: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition(":")
        if not sep or not name.strip():
            raise UsageError(f"--var {pair!r}: expected NAME:VALUE, e.g. BACKEND_REQUEST_TIMEOUT_MS:5000")
        if name.strip() == ORIGIN_VAR:
            raise UsageError(f"--var {ORIGIN_VAR}:… is set by the command: use --origin URL instead")
        parsed[name.strip()] = value
    return parsed


def check_origin(origin: str) -> str:
    parts = urlsplit(origin)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise UsageError(
            f"--origin {origin!r} is not an http(s) URL; pass e.g. --origin http://127.0.0.1:8000"
        )
    return origin.rstrip("/")


_TAIL = 40


def _merged_vars(settings: Settings, origin: str, extra: Mapping[str, str] | None) -> dict[str, str]:
    """[tool.cfops.dev_proxy] vars < ``extra`` < BACKEND_ORIGIN; UsageError for a secret-looking name."""
    merged = {**settings.dev_proxy.vars, **(extra or {}), ORIGIN_VAR: origin}
    secret = next((name for name in merged if is_secret_name(settings, name)), None)
    if secret:
        # Vars travel on wrangler's command line, where any local user can read them.
        raise UsageError(f"{secret} looks like a secret; the edge proxy takes only plain vars")
    return merged


def _worker_answered(response: httpx.Response) -> bool:
    return TRACE_HEADER in response.headers


@contextmanager
def edge_proxy(
    settings: Settings,
    *,
    origin: str,
    host: str = "127.0.0.1",
    port: int | None = None,
    vars: Mapping[str, str] | None = None,
    forward_output: bool = True,
    ready_timeout: float | None = None,
) -> Iterator[EdgeProxy]:
    """Run the proxy Worker under the pinned ``wrangler dev`` until the block ends.

    ``origin`` is passed as BACKEND_ORIGIN as it is (even an unusable one: the Worker's own answer to
    that is worth testing). Vars layer as wrangler.backend-proxy.jsonc < [tool.cfops.dev_proxy] vars
    < ``vars`` < BACKEND_ORIGIN. Ready once the Worker itself answers, whatever the origin's state.
    """
    binary = wrangler_bin(settings)
    port = procs.free_port(host) if port is None else port
    procs.ensure_port_free(host, port)
    worker_vars = _merged_vars(settings, origin, vars)
    url = f"http://{host}:{port}"
    with tempfile.TemporaryDirectory(prefix="cfops-proxy-") as tmp:
        scratch = Path(tmp)
        # Naming an env file stops wrangler from reading backend-cloudflare/.dev.vars, and
        # CLOUDFLARE_LOAD_DEV_VARS_FROM_DOT_ENV=false from reading any .env: those hold the native
        # Worker's local secrets, which the proxy has no use for.
        env_file = scratch / "proxy.env"
        env_file.write_text("")
        cmd: list[str | Path] = [
            binary,
            "dev",
            "--config",
            settings.proxy.config,
            "--local",
            "--ip",
            host,
            "--port",
            str(port),
            "--inspector-ip",
            "127.0.0.1",
            "--inspector-port",
            str(procs.free_port("127.0.0.1")),
            "--persist-to",
            scratch / "state",
            "--env-file",
            env_file,
            "--show-interactive-dev-session=false",
        ]
        for name, value in worker_vars.items():
            cmd += ["--var", f"{name}:{value}"]
        env = {
            **_QUIET_ENV,
            **toolchain_env(settings),
            # Each run its own dev registry: two local stacks must not discover each other's Workers.
            "WRANGLER_REGISTRY_PATH": str(scratch / "registry"),
        }
        service = procs.Service(
            "proxy",
            cmd,
            cwd=settings.proxy.config.parent,
            env=env,
            health_url=url + READY_PATH,
            healthy=_worker_answered,
            ready_timeout=ready_timeout or settings.dev_proxy.startup_timeout,
            stop_signal=signal.SIGINT,  # wrangler's graceful Ctrl-C also stops its workerd processes
            forward_output=forward_output,
        )
        started = False
        try:
            with service:
                started = True
                yield EdgeProxy(url=url, origin=origin, vars=worker_vars, service=service)
        except ServiceError as exc:
            detail = " ".join(cloudflare.error_lines(service.tail(_TAIL)))
            if started or not detail:
                raise
            raise ServiceError(f"the edge proxy (wrangler dev) did not start: {detail}") from exc


@dataclass(frozen=True)
class LocalStack:
    backend: Backend | None
    proxy: EdgeProxy


@contextmanager
def local_stack(
    settings: Settings,
    *,
    runtime: Runtime = "auto",
    host: str = "127.0.0.1",
    backend_port: int | None = None,
    proxy_port: int | None = None,
    origin: str | None = None,
    vars: Mapping[str, str] | None = None,
    forward_output: bool = True,
) -> Iterator[LocalStack]:
    """The backend (already synced; skipped when ``origin`` is given) with the edge proxy in front.

    Both are stopped when the block ends. Ports default to free ones, so stacks can run side by side.
    """
    if origin is not None:
        with edge_proxy(
            settings, origin=origin, host=host, port=proxy_port, vars=vars, forward_output=forward_output
        ) as proxy:
            yield LocalStack(backend=None, proxy=proxy)
        return
    choice = choose_runtime(settings, runtime)
    if choice.runtime == "uvicorn" and choice.reason.startswith("pywrangler unavailable"):
        output.warn(f"{choice.reason}; serving the synced bundle with uvicorn instead")
    port = procs.free_port(host) if backend_port is None else backend_port
    with (
        native_backend(
            settings, runtime=choice.runtime, host=host, port=port, forward_output=forward_output
        ) as backend,
        edge_proxy(
            settings, origin=backend.url, host=host, port=proxy_port, vars=vars, forward_output=forward_output
        ) as proxy,
    ):
        yield LocalStack(backend=backend, proxy=proxy)


def main(argv: Sequence[str]) -> int:
    parser = cli.parser("dev-proxy", __doc__)
    cli.settings_flags(parser, "dev_proxy", only=("port",))
    cli.settings_flags(parser, "dev", only=("port", "host", "runtime"), rename={"port": "--backend-port"})
    parser.add_argument("--origin", default=None, help="front this running origin instead of starting one")
    parser.add_argument(
        "--var", action="append", default=[], metavar="NAME:VALUE", help="a Worker var (repeatable)"
    )
    parser.add_argument("--no-sync", action="store_true", help="serve the bundle as it is, without syncing")
    args = parser.parse_args(argv)
    settings = cli.load(args)
    host, proxy_port, backend_port = settings.dev.host, settings.dev_proxy.port, settings.dev.port
    extra_vars = parse_vars(args.var)
    origin = check_origin(args.origin) if args.origin else None
    _merged_vars(settings, origin or "", extra_vars)
    # Everything that can be wrong with the input fails here, before anything starts.
    procs.ensure_port_free(host, proxy_port)
    if origin is None:
        if backend_port == proxy_port:
            raise UsageError(f"--port and --backend-port are both {proxy_port}; pick two different ports")
        procs.ensure_port_free(host, backend_port)
        dev_bindings(settings)
        if not args.no_sync:
            result = sync(settings)
            output.info(f"synced {result.files} files into {settings.worker_dir.name}/")
    with local_stack(
        settings,
        runtime=settings.dev.runtime,
        host=host,
        backend_port=backend_port,
        proxy_port=proxy_port,
        origin=origin,
        vars=extra_vars,
    ) as stack:
        services = [stack.proxy.service]
        if stack.backend is not None:
            label = "pywrangler dev" if stack.backend.runtime == "pywrangler" else "uvicorn, synced bundle"
            output.success(f"backend ({label}) ready at {stack.backend.url}")
            services.append(stack.backend.service)
        output.success(
            f"edge proxy (wrangler dev, workerd) ready at {stack.proxy.url} → {stack.proxy.origin}"
        )
        _report_chain(stack.proxy)
        output.info("Ctrl-C to stop")
        procs.wait_forever(services)
    return 0


def _report_chain(proxy: EdgeProxy) -> None:
    """One request through the proxy to the origin's /healthz, so a broken chain shows at once."""
    try:
        response = httpx.get(
            f"{proxy.url}/healthz",
            headers={layout.SYNTHETIC_HEADER: layout.SYNTHETIC_VALUE},  # cfops's own, not user traffic
            timeout=httpx.Timeout(20.0),
            trust_env=False,
        )
    except httpx.HTTPError as exc:
        output.warn(f"GET {proxy.url}/healthz failed: {type(exc).__name__}")
        return
    if response.is_success:
        output.info(f"GET {proxy.url}/healthz → {response.status_code} from {proxy.origin}")
    else:
        output.warn(f"GET {proxy.url}/healthz → {response.status_code}: {response.text[:200]}")


if __name__ == "__main__":
    cli.run_main(main)
