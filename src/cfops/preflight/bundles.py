"""proxy-bundle, native-bundle and startup: sizes and startup CPU measured from what a deploy uploads."""

from __future__ import annotations

import json
import re
import tempfile
import tomllib
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cfops import cloudflare, procs, pyruntime
from cfops.errors import CfopsError, ConfigError
from cfops.preflight.model import Context, Finding, Outcome, kib
from cfops.sync import walk_files
from cfops.wrangler import read_config

# Modules wrangler collects next to a Worker's main by default (its default module rules + Python).
DEFAULT_MODULE_GLOBS = ("**/*.py", "**/*.txt", "**/*.html", "**/*.sql", "**/*.bin", "**/*.wasm")


@dataclass(frozen=True)
class Bundle:
    files: tuple[tuple[str, int], ...]
    raw: int
    gzip: int

    def largest(self, count: int = 5) -> list[tuple[str, int]]:
        return sorted(self.files, key=lambda item: (-item[1], item[0]))[:count]


def measure(files: Iterable[tuple[str, Path]]) -> Bundle:
    """Raw size and the gzip size of all files concatenated: how wrangler and Cloudflare count them."""
    compressor = zlib.compressobj(6, zlib.DEFLATED, 31)  # level 6 in a gzip container, like gzipSync
    sizes, raw, packed = [], 0, 0
    for name, path in files:
        size = 0
        with path.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                size += len(chunk)
                packed += len(compressor.compress(chunk))
        sizes.append((name, size))
        raw += size
    packed += len(compressor.flush())
    return Bundle(files=tuple(sizes), raw=raw, gzip=packed)


def glob_regex(glob: str) -> re.Pattern[str]:
    """A wrangler module-rule glob as a regex over a relative POSIX path (``**/`` spans directories)."""
    parts, i = [], 0
    while i < len(glob):
        if glob.startswith("**/", i):
            parts.append("(?:.*/)?")
            i += 3
        elif glob.startswith("**", i):
            parts.append(".*")
            i += 2
        elif glob[i] == "*":
            parts.append("[^/]*")
            i += 1
        elif glob[i] == "?":
            parts.append("[^/]")
            i += 1
        else:
            parts.append(re.escape(glob[i]))
            i += 1
    return re.compile("".join(parts) + r"\Z")


def judge(out: Outcome, ctx: Context, bundle: Bundle, label: str, *, severe: bool) -> None:
    """Compare a bundle with the size limit and the optional gzip budget."""
    facts = ctx.settings.preflight
    limit = facts.size_limit_kib * 1024
    budget = facts.gzip_budget_kib * 1024 if facts.gzip_budget_kib is not None else None
    out.measured.update(raw_bytes=bundle.raw, gzip_bytes=bundle.gzip, file_count=len(bundle.files))
    out.limits.update(size_limit_bytes=limit, gzip_budget_bytes=budget)
    report = out.fail if severe else out.warn
    if bundle.raw > limit:
        report(
            f"{label} is {kib(bundle.raw)} uncompressed, over the {kib(limit)} limit: Cloudflare would "
            f"reject the upload (error {cloudflare.SIZE_CODE})"
        )
    if budget is not None and bundle.gzip > budget:
        report(f"{label} is {kib(bundle.gzip)} gzip, over the {kib(budget)} gzip budget")


def size_summary(ctx: Context, bundle: Bundle) -> str:
    facts = ctx.settings.preflight
    budget = f", gzip budget {kib(facts.gzip_budget_kib * 1024)}" if facts.gzip_budget_kib is not None else ""
    return (
        f"{kib(bundle.raw)} raw / {kib(bundle.gzip)} gzip (limit {kib(facts.size_limit_kib * 1024)}{budget})"
    )


def wrangler_error(result: procs.Result) -> tuple[str, list[str]]:
    """The one-line cause of a failed wrangler run, and the informative tail of its output."""
    text = f"{result.stderr}\n{result.stdout}"
    head = cloudflare.error_summary(text, fallback=f"exit code {result.returncode}, no output")
    return head, cloudflare.informative_lines(text)[-12:]


# ------------------------------------------------------------------------------------ proxy-bundle


def proxy_bundle(ctx: Context) -> Finding:
    out = Outcome("proxy-bundle")
    config = ctx.settings.proxy.config
    wrangler = ctx.toolchain.wrangler()
    out.measured["wrangler"] = ctx.toolchain.wrangler_version()
    with tempfile.TemporaryDirectory(prefix="cfops-preflight-") as tmp:
        outdir = Path(tmp) / "dist"
        result = ctx.run(
            [wrangler, "deploy", "--dry-run", "--outdir", outdir, "--config", config],
            cwd=config.parent,
            env=ctx.toolchain.env(),
            what="wrangler deploy --dry-run",
        )
        out.measured["command"] = f"wrangler deploy --dry-run --outdir <tmp> --config {ctx.rel(config)}"
        out.measured["wrangler_seconds"] = round(result.duration, 3)
        if result.returncode != 0:
            head, tail = wrangler_error(result)
            out.fail(f"wrangler deploy --dry-run failed (exit {result.returncode}): {head}")
            for line in tail:
                out.note(line)
            return out.finding("")
        files = _uploaded(outdir, _uploads_source_maps(config))
        if not files:
            out.fail(
                f"wrangler deploy --dry-run wrote no modules to its --outdir (output: {result.stdout[-200:]})"
            )
            return out.finding("")
        bundle = measure(files)
        out.measured["modules"] = dict(bundle.files)
    judge(out, ctx, bundle, "the proxy bundle", severe=True)
    return out.finding(f"{size_summary(ctx, bundle)}, measured from wrangler's dry-run output")


def _uploads_source_maps(config: Path) -> bool:
    try:
        return bool(read_config(config).get("upload_source_maps", False))
    except ConfigError:
        return False  # wrangler has already failed on it, or will say why


def _uploaded(outdir: Path, source_maps: bool) -> list[tuple[str, Path]]:
    """The modules wrangler wrote: everything but its README and, unless uploaded, the source maps."""
    files = []
    for path in sorted(p for p in outdir.rglob("*") if p.is_file()):
        rel = path.relative_to(outdir).as_posix()
        if rel == "README.md" or (path.suffix == ".map" and not source_maps):
            continue
        files.append((rel, path))
    return files


# ----------------------------------------------------------------------------------- native-bundle


def native_bundle(ctx: Context) -> Finding:
    out = Outcome("native-bundle")
    settings = ctx.settings
    config_path = settings.native.config
    try:
        config = read_config(config_path)
    except ConfigError as exc:
        out.bad_input(f"cannot list the native upload: {exc}")
        return out.finding("")
    main = config.get("main")
    if not isinstance(main, str) or not main:
        out.fail(f"cannot list the native upload: {ctx.rel(config_path)} has no `main`")
        return out.finding("")
    config_dir = config_path.parent
    base = config_dir / str(config.get("base_dir") or Path(main).parent)
    patterns = [glob_regex(g) for g in (*DEFAULT_MODULE_GLOBS, *_rule_globs(config))]
    files = [
        (path.relative_to(base).as_posix(), path)
        for path in (walk_files(base, settings.sync.exclude) if base.is_dir() else [])
        if any(p.match(path.relative_to(base).as_posix()) for p in patterns)
    ]
    vendor = config_dir / pyruntime.VENDOR_DIR
    vendored = [
        (f"{pyruntime.VENDOR_DIR}/{path.relative_to(vendor).as_posix()}", path)
        for path in (walk_files(vendor, settings.sync.exclude) if vendor.is_dir() else [])
    ]
    bundle = measure(files + vendored)
    severe = ctx.mode == "native"
    judge(out, ctx, bundle, "the native Worker upload", severe=severe)
    out.measured["source_bytes"] = sum(
        size for name, size in bundle.files if not name.startswith(pyruntime.VENDOR_DIR)
    )
    out.measured["vendored_files"] = len(vendored)
    out.measured["largest_files"] = [{"path": name, "bytes": size} for name, size in bundle.largest()]
    out.limits["mode"] = ctx.mode
    dependencies = _dependencies(config_dir)
    if dependencies and not vendored:
        out.warn(
            f"source-only size: {', '.join(dependencies)} not vendored into {ctx.rel(vendor)}/ "
            "(pywrangler vendors them at deploy; that needs the internet)"
        )
    _check_runtime_python(ctx, out, vendor)
    if not severe:
        out.note("mode proxy: the native Worker is not what production runs, so its limits only warn")
    out.note("largest: " + ", ".join(f"{name} ({kib(size)})" for name, size in bundle.largest()))
    what = "source + vendored packages" if vendored else "source only"
    return out.finding(f"{size_summary(ctx, bundle)}, {len(bundle.files)} files ({what})")


def _check_runtime_python(ctx: Context, out: Outcome, vendor: Path) -> None:
    """Vendored packages built for another Python than the one Cloudflare will run break at import."""
    try:
        runtime = pyruntime.runtime_python(ctx.settings, today=ctx.today)
    except CfopsError as exc:  # a future or missing date: the configs check reports it as well
        out.warn(f"runtime Python unknown: {exc}")
        return
    out.measured["runtime_python"] = runtime.version
    out.limits["runtime_python_reason"] = runtime.reason
    mismatches = pyruntime.vendored_mismatches(vendor, runtime.version)
    out.measured["vendored_python_mismatches"] = [m.package for m in mismatches]
    if mismatches:
        message = pyruntime.describe(mismatches, runtime)
        # Production would import them and fail after the upload; locally it is a warning (--strict fails).
        if ctx.target == "production" and ctx.mode == "native":
            out.fail(message)
        else:
            out.warn(message)
        for line in pyruntime.details(mismatches):
            out.note(line)


def _rule_globs(config: dict[str, Any]) -> list[str]:
    rules = config.get("rules", [])
    globs: list[str] = []
    for rule in rules if isinstance(rules, list) else []:
        if isinstance(rule, dict) and isinstance(rule.get("globs"), list):
            globs += [g for g in rule["globs"] if isinstance(g, str)]
    return globs


def _dependencies(config_dir: Path) -> list[str]:
    """The Worker's runtime dependencies (its pyproject.toml, else requirements.txt), by name."""
    pyproject = config_dir / "pyproject.toml"
    if pyproject.is_file():
        try:
            deps = (
                tomllib.loads(pyproject.read_text(encoding="utf-8"))
                .get("project", {})
                .get("dependencies", [])
            )
        except tomllib.TOMLDecodeError:
            deps = []
        return [str(d) for d in deps]
    requirements = config_dir / "requirements.txt"
    if requirements.is_file():
        lines = requirements.read_text(encoding="utf-8").splitlines()
        return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    return []


# ----------------------------------------------------------------------------------------- startup


def startup(ctx: Context) -> Finding:
    out = Outcome("startup")
    facts = ctx.settings.preflight
    config = ctx.settings.proxy.config
    wrangler = ctx.toolchain.wrangler()
    version = ctx.toolchain.wrangler_version()
    out.measured["wrangler"] = version
    out.limits["startup_limit_ms"] = facts.startup_limit_ms
    out.note("the native Python Worker's startup is not measurable locally (Python Workers need Pyodide)")
    if " " in config.name:
        out.warn(
            f"proxy startup not measurable with wrangler {version}: --args cannot carry a path with spaces"
        )
        return out.finding("")
    with tempfile.TemporaryDirectory(prefix="cfops-preflight-") as tmp:
        profile_path = Path(tmp) / "startup.cpuprofile"
        # `check startup` rebuilds the Worker with an inner `deploy --dry-run`, which does not inherit
        # --config: the config goes through --args.
        result = ctx.run(
            [wrangler, "check", "startup", f"--args=--config={config.name}", "--outfile", profile_path],
            cwd=config.parent,
            env=ctx.toolchain.env(),
            what="wrangler check startup",
        )
        out.measured["command"] = f"wrangler check startup --args=--config={config.name}"
        out.measured["wrangler_seconds"] = round(result.duration, 3)
        profile = _load_profile(profile_path) if result.returncode == 0 else None
    if profile is None:
        head, tail = wrangler_error(result)
        if "Unknown argument" in head:
            head = "it has no `check startup` command"
        out.warn(f"proxy startup not measurable with wrangler {version}: {head}")
        for line in tail:
            out.note(line)
        return out.finding("")
    cpu_ms, window_ms, samples = profile_stats(profile)
    out.measured.update(
        startup_cpu_ms=round(cpu_ms, 1), profile_window_ms=round(window_ms, 1), samples=samples
    )
    if cpu_ms > facts.startup_limit_ms:
        out.fail(
            f"proxy startup used {cpu_ms:.0f} ms CPU, over the {facts.startup_limit_ms:g} ms limit: "
            f"Cloudflare would reject the deploy (error {cloudflare.STARTUP_CODE})"
        )
    out.note("measured locally by `wrangler check startup` (alpha); Cloudflare's CPUs differ")
    return out.finding(
        f"proxy startup {cpu_ms:.0f} ms CPU (limit {facts.startup_limit_ms:g} ms), "
        f"profiled with wrangler {version}"
    )


def _load_profile(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and "samples" in data else None


def profile_stats(profile: dict[str, Any]) -> tuple[float, float, int]:
    """(CPU ms, profile window ms, samples) of a V8 CPU profile; CPU excludes samples taken while idle."""
    names = {
        node["id"]: node.get("callFrame", {}).get("functionName", "") for node in profile.get("nodes", [])
    }
    samples: Sequence[int] = profile.get("samples", [])
    deltas: Sequence[int] = profile.get("timeDeltas", [])
    busy_us = sum(
        delta for sample, delta in zip(samples, deltas, strict=False) if names.get(sample) != "(idle)"
    )
    window_us = float(profile.get("endTime", 0)) - float(profile.get("startTime", 0))
    return busy_us / 1000, window_us / 1000, len(samples)
