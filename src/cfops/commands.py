"""The command line's table of contents: every ``cfops`` command, the module that runs it, one line
about it. Stdlib only (noxfile.py and tasks.py may read it before the project is installed).

The nox sessions and invoke tasks use the same names; tests/unit/test_front_door.py checks that they
do. Old names kept for scripts and workflows are listed in ALIASES (nox sessions / invoke tasks).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Command:
    name: str
    module: str
    summary: str


COMMANDS: tuple[Command, ...] = (
    Command(
        "sync", "cfops.sync", "copy backend source/config/data into backend-cloudflare/ (--check: drift only)"
    ),
    Command("dev", "cfops.dev", "sync, then serve the native Worker locally until Ctrl-C"),
    Command("dev-proxy", "cfops.proxy", "serve the backend with the edge proxy Worker (workerd) in front"),
    Command(
        "perf", "cfops.perf", "latency canary: percentiles, thresholds, verdict (default: local backend)"
    ),
    Command("image", "cfops.image", "build (and --run) the spike or origin image via the Docker Engine API"),
    Command("preflight", "cfops.preflight.command", "release readiness: one report from every check"),
    Command("deploy", "cfops.deploy", "deploy the native or proxy Worker (--dry-run, --strategy versions)"),
    Command("secrets", "cfops.secrets", "push the configured secrets to a Worker (--dry-run: names only)"),
    Command("versions", "cfops.versions", "a Worker's current deployment and recent versions"),
    Command("promote", "cfops.promote", "move traffic between two versions of a Worker"),
    Command("rollback", "cfops.rollback", "put a Worker back on an earlier version"),
    Command("release", "cfops.release", "release pipelines: local rehearsal, production, proxy (--dry-run)"),
    Command(
        "analytics",
        "cfops.analytics.command",
        "real traffic per version (Analytics Engine): check access, judge a stage, show a window",
    ),
    Command(
        "recover",
        "cfops.recover",
        "finish an interrupted release: roll back to its stable version, or --resume",
    ),
    Command("status", "cfops.status", "each Worker's current deployment and the last artifacts"),
    Command("tscheck", "cfops.tscheck", "type-check the Worker's TypeScript (tsc --noEmit; part of lint)"),
    Command(
        "toolchain",
        "cfops.toolchain",
        "install the Worker's pinned Node toolchain (npm ci when the lock changed; part of nox's install)",
    ),
    Command("docs", "cfops.docs", "write docs/configuration.md from the settings' own metadata (--check)"),
)

BY_NAME = {command.name: command for command in COMMANDS}

# Commands that nox and invoke do not expose under their own name (run as part of another one).
CFOPS_ONLY = frozenset({"tscheck", "analytics", "toolchain"})
# Old names kept for the scripts, workflows and muscle memory that use them: old -> command (+ args).
ALIASES: dict[str, tuple[str, ...]] = {
    "perf_smoke": ("perf",),
    "dev_proxy": ("dev-proxy",),
    "spike_image": ("image", "spike"),
    "origin_image": ("image", "origin"),
    "deploy_native": ("deploy", "native"),
    "deploy_proxy": ("deploy", "proxy"),
    "secrets_sync": ("secrets",),
}
