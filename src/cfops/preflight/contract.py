"""edge-contract: the proxy's allowlist against the synced app's real route table and auth."""

from __future__ import annotations

import json
import re
import secrets
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cfops import cloudflare
from cfops.errors import ConfigError
from cfops.preflight.model import Context, Finding, Outcome
from cfops.preflight.probe import BINDINGS_ENV, PROBE_TOKEN_ENV
from cfops.wrangler import config_vars, read_config

CHECK_ID = "edge-contract"


@dataclass(frozen=True)
class Allowlist:
    exact: tuple[str, ...]
    prefixes: tuple[str, ...]
    methods: tuple[str, ...]
    not_exposed: Mapping[str, str] = field(default_factory=dict)

    def exposes(self, path: str) -> bool:
        return path in self.exact or any(path.startswith(prefix) for prefix in self.prefixes)


def load_allowlist(path: Path) -> Allowlist:
    """The proxy's allowlist.json: {exact, prefixes, methods, not_exposed: {path: reason}}."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path} not found") from None
    except ValueError as exc:
        raise ConfigError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be an object")

    def strings(key: str) -> tuple[str, ...]:
        value = data.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{path}: {key} must be a list of strings")
        return tuple(value)

    not_exposed = data.get("not_exposed", {})
    if not isinstance(not_exposed, dict) or not all(isinstance(v, str) for v in not_exposed.values()):
        raise ConfigError(f"{path}: not_exposed must be an object of path -> reason")
    return Allowlist(
        exact=strings("exact"),
        prefixes=strings("prefixes"),
        methods=tuple(m.upper() for m in strings("methods")),
        not_exposed=dict(not_exposed),
    )


def _template_regex(template: str) -> re.Pattern[str]:
    parts = re.split(r"(\{[^}]+\})", template)
    return re.compile("".join("[^/]+" if p.startswith("{") else re.escape(p) for p in parts) + r"\Z")


def compare(
    out: Outcome,
    allowlist: Allowlist,
    routes: Sequence[Mapping[str, Any]],
    probes: Sequence[Mapping[str, Any]],
    protected: Sequence[str],
) -> None:
    """Record every disagreement between the allowlist, the route table and the auth probes."""
    templates = [str(r["path"]) for r in routes]
    for path in allowlist.exact:
        if not any(_template_regex(t).match(path) for t in templates):
            out.fail(
                f"allowlisted path {path} does not exist in the app (the proxy would forward it to a 404)"
            )
    for prefix in allowlist.prefixes:
        if not any(t.startswith(prefix) for t in templates):
            out.warn(f"allowlisted prefix {prefix} matches no route of the app")
    for route in routes:
        path = str(route["path"])
        methods = [str(m) for m in route["methods"]]
        reachable = allowlist.exposes(path) or any(_template_regex(path).match(e) for e in allowlist.exact)
        allowed = [m for m in methods if m == "*" or m in allowlist.methods]
        if path in allowlist.not_exposed:
            if reachable:
                out.fail(f"{path} is listed in not_exposed but the allowlist exposes it")
            continue
        if not reachable:
            out.fail(f"route {'/'.join(methods)} {path} is neither allowlisted nor listed in not_exposed")
        elif not allowed:
            out.fail(f"route {'/'.join(methods)} {path} is allowlisted but none of its methods are")
        elif len(allowed) < len(methods):
            blocked = "/".join(m for m in methods if m not in allowed)
            out.warn(f"route {path}: method {blocked} is blocked by the allowlist's methods")
    for path in allowlist.not_exposed:
        if path not in templates:
            out.warn(f"not_exposed lists {path}, which the app does not have (stale entry)")
    for probe in probes:
        where = f"{probe['method']} {probe['path']}"
        if probe["no_token"] != 401:
            out.fail(
                f"{where} answered {probe['no_token']} without a token (protected routes must answer 401)"
            )
        if probe["wrong_token"] != 401:
            out.fail(f"{where} answered {probe['wrong_token']} with a wrong token (must be 401)")
    if not probes:
        out.note(f"the app has no route under {', '.join(protected)}: no auth probe ran")


def check(ctx: Context) -> Finding:
    out = Outcome(CHECK_ID)
    settings = ctx.settings
    facts = settings.preflight
    try:
        allowlist = load_allowlist(facts.allowlist)
    except ConfigError as exc:
        out.bad_input(str(exc).replace(str(facts.allowlist), ctx.rel(facts.allowlist)))
        return out.finding("")
    bundle_src = settings.worker_dir / "src"
    if not (bundle_src / "immcad_api").is_dir():
        out.fail(f"the synced app is missing from {ctx.rel(bundle_src)}: run cfops sync")
        return out.finding("")
    try:
        bindings = config_vars(read_config(settings.native.config), settings.native.config)
    except ConfigError as exc:
        out.fail(f"cannot build the app's bindings: {exc}")
        return out.finding("")
    # A throwaway token: the app is hardened like production, and no real secret enters the probe.
    bindings[cloudflare.BEARER_TOKEN] = secrets.token_urlsafe(24)
    report = _probe(ctx, bundle_src, bindings, facts.protected_prefixes)
    if "error" in report:
        out.fail(f"the synced app could not be built: {report['error']}")
        return out.finding("")
    routes, probes = report["routes"], report["probes"]
    compare(out, allowlist, routes, probes, facts.protected_prefixes)
    out.measured.update(
        routes=len(routes),
        allowlisted_exact=len(allowlist.exact),
        allowlisted_prefixes=len(allowlist.prefixes),
        protected_probes=len(probes),
    )
    out.limits["protected_status"] = 401
    return out.finding(
        f"{len(routes)} app routes reachable or declared not exposed; "
        f"{len(probes)} protected route(s) answer 401 without/with a wrong token"
    )


def _probe(
    ctx: Context, bundle_src: Path, bindings: dict[str, str], prefixes: Sequence[str]
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="cfops-preflight-") as tmp:
        report_path = Path(tmp) / "probe.json"
        cmd: list[str | Path] = [sys.executable, "-m", "cfops.preflight.probe", "--bundle-src", bundle_src]
        cmd += ["--out", report_path, *(arg for p in prefixes for arg in ("--protected-prefix", p))]
        env = {
            BINDINGS_ENV: json.dumps(bindings),
            PROBE_TOKEN_ENV: secrets.token_urlsafe(24),
        }
        result = ctx.run(cmd, cwd=ctx.root, env=env, what="edge-contract probe")
        try:
            data: dict[str, Any] = json.loads(report_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            tail = (result.stderr or result.stdout).strip().splitlines()
            return {
                "error": f"the probe exited with {result.returncode}: {tail[-1] if tail else 'no output'}"
            }
    return data
