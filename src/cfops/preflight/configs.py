"""configs: both wrangler configs parse and say what a deploy needs."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from cfops.config import WorkerSettings
from cfops.errors import ConfigError
from cfops.preflight.model import Context, Finding, Outcome
from cfops.wrangler import config_vars, read_config

CHECK_ID = "configs"
ENVIRONMENT_VARS = ("ENVIRONMENT", "IMMCAD_ENVIRONMENT")


def check(ctx: Context) -> Finding:
    out = Outcome(CHECK_ID)
    settings = ctx.settings
    checked: list[str] = []
    for kind, worker in (("native", settings.native), ("proxy", settings.proxy)):
        config = _check_one(ctx, out, kind, worker)
        if config is not None:
            checked.append(worker.config.name)
            date = config.get("compatibility_date")
            out.measured[f"{kind}_compatibility_date"] = None if date is None else str(date)
    out.limits["compatibility_date_max_age_days"] = settings.preflight.compatibility_date_max_age_days
    out.limits["target"] = ctx.target
    return out.finding(f"{', '.join(checked)}: parse, complete, consistent (target {ctx.target})")


def _check_one(ctx: Context, out: Outcome, kind: str, worker: WorkerSettings) -> dict[str, Any] | None:
    path = worker.config
    where = ctx.rel(path)
    try:
        config = read_config(path)
    except ConfigError as exc:
        out.bad_input(str(exc).replace(str(path), where))
        return None
    name = config.get("name")
    if not isinstance(name, str) or not name:
        out.fail(f"{where}: `name` is missing")
    elif name != worker.name:
        out.fail(
            f"{where}: name {name!r} differs from [tool.cfops.{kind}] name {worker.name!r} "
            "(the deploy commands would target another Worker)"
        )
    _check_main(out, where, path.parent, config.get("main"))
    _check_date(ctx, out, where, config.get("compatibility_date"))
    flags = config.get("compatibility_flags", [])
    if kind == "native" and (not isinstance(flags, list) or "python_workers" not in flags):
        out.fail(f"{where}: compatibility_flags lacks python_workers (a Python Worker needs it)")
    try:
        variables = config_vars(config, path)
    except ConfigError as exc:
        out.bad_input(str(exc).replace(str(path), where))
        return config
    _check_vars(ctx, out, kind, where, variables)
    return config


def _check_main(out: Outcome, where: str, base: Path, main: object) -> None:
    if not isinstance(main, str) or not main:
        out.fail(f"{where}: `main` is missing (the Worker's entry file)")
    elif not (base / main).is_file():
        out.fail(f"{where}: main {main!r} does not exist")


def _check_date(ctx: Context, out: Outcome, where: str, value: object) -> None:
    if not value:
        out.fail(f"{where}: compatibility_date is missing")
        return
    try:
        date = value if isinstance(value, dt.date) else dt.date.fromisoformat(str(value))
    except ValueError:
        out.fail(f"{where}: compatibility_date {value!r} is not a YYYY-MM-DD date")
        return
    if date > ctx.today:
        out.fail(f"{where}: compatibility_date {date} is in the future (today is {ctx.today} UTC)")
        return
    max_age = ctx.settings.preflight.compatibility_date_max_age_days
    age = (ctx.today - date).days
    if age > max_age:
        out.warn(
            f"{where}: compatibility_date {date} is {age} days old (more than {max_age}); review and bump it"
        )


def _check_vars(ctx: Context, out: Outcome, kind: str, where: str, variables: dict[str, str]) -> None:
    present = {name: variables[name].strip().lower() for name in ENVIRONMENT_VARS if name in variables}
    if len(set(present.values())) > 1:
        listed = ", ".join(f"{k}={v!r}" for k, v in present.items())
        out.fail(f"{where}: {listed} disagree (the app refuses to start)")
    if kind != "native" or ctx.target != "production":
        return
    for name, required in ctx.settings.preflight.production_vars.items():
        actual = variables.get(name)
        if actual is None:
            out.fail(f"{where}: [vars] {name} is missing (production needs {required!r})")
        elif actual.strip().lower() != required.strip().lower():
            out.fail(f"{where}: [vars] {name}={actual!r}, production needs {required!r}")
