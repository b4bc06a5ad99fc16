"""Project settings, read once into frozen dataclasses.

Layering, lowest first: defaults here < ``[tool.cfops]`` in pyproject.toml < ``.env`` < the process
environment < command-line flags. One mechanism for all of it: a field names its environment variables
in ``metadata["env"]`` and its command-line flag in ``metadata["flag"]`` (see ``setting``); commands
declare which sections they take flags for (``cfops.cli``), and ``load_settings(flags=…)`` layers the
parsed values with the same coercion and error messages as the config file. Unknown keys in
``[tool.cfops]`` are errors, so a typo never silently falls back to a default.

One module per job (the layers are checked by `nox -s lint`): ``metadata`` (how a field names its
environment variables, flag and help), ``scenario`` (perf's weighted probes, checked as read), ``local``
and ``cloud`` (the sections of the commands that run here and of those that reach Cloudflare),
``settings`` (the root object and the rules read from it), ``coerce`` (a raw value into a field's type),
``load`` (finding the project and layering it all).
"""

from __future__ import annotations

from cfops.config.cloud import (
    AnalyticsSettings,
    BackendMode,
    DeploySettings,
    InconclusivePolicy,
    NativeRunner,
    PreflightCachePolicy,
    PreflightSettings,
    ReleaseSettings,
    StageGates,
)
from cfops.config.load import PYPROJECT, build, find_root, load_settings, read_env, with_deferred_env
from cfops.config.local import (
    DevProxySettings,
    DevSettings,
    Engine,
    ImageSettings,
    ImageTarget,
    PerfBounds,
    PerfSettings,
    Runtime,
    SyncEntry,
    SyncSettings,
    WorkerSettings,
)
from cfops.config.metadata import from_env, setting
from cfops.config.scenario import MAX_PROBE_WEIGHT, PerfProbe, parse_scenario
from cfops.config.settings import Settings, is_placeholder, is_secret_name

__all__ = [
    "MAX_PROBE_WEIGHT",
    "PYPROJECT",
    "AnalyticsSettings",
    "BackendMode",
    "DeploySettings",
    "DevProxySettings",
    "DevSettings",
    "Engine",
    "ImageSettings",
    "ImageTarget",
    "InconclusivePolicy",
    "NativeRunner",
    "PerfBounds",
    "PerfProbe",
    "PerfSettings",
    "PreflightCachePolicy",
    "PreflightSettings",
    "ReleaseSettings",
    "Runtime",
    "Settings",
    "StageGates",
    "SyncEntry",
    "SyncSettings",
    "WorkerSettings",
    "build",
    "find_root",
    "from_env",
    "is_placeholder",
    "is_secret_name",
    "load_settings",
    "parse_scenario",
    "read_env",
    "setting",
    "with_deferred_env",
]
