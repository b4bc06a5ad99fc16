"""The check registry and the runner: every selected check at once, each in its own thread."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import replace

from cfops import output, procs
from cfops.errors import CfopsError, UsageError
from cfops.preflight import analytics, bundles, configs, contract, repo, workflows
from cfops.preflight.cache import Cache
from cfops.preflight.model import Cancelled, Context, Finding

Check = Callable[[Context], Finding]

# Stable ids, in report order (--only/--skip take these).
CHECKS: dict[str, Check] = {
    "configs": configs.check,
    "analytics": analytics.check,
    "proxy-bundle": bundles.proxy_bundle,
    "native-bundle": bundles.native_bundle,
    "startup": bundles.startup,
    "sync": repo.sync,
    "edge-contract": contract.check,
    "secrets": repo.secrets,
    "workflows": workflows.check,
    "git": repo.git,
    "tooling": repo.tooling,
}
# Started first: they wait on Node's start-up (seconds); the pure-Python checks fill the gaps.
_SLOW_FIRST = ("startup", "proxy-bundle", "edge-contract", "tooling")


def select(only: Sequence[str], skip: Sequence[str]) -> list[str]:
    unknown = sorted((set(only) | set(skip)) - set(CHECKS))
    if unknown:
        raise UsageError(f"unknown check {unknown[0]!r}; the checks are: {', '.join(CHECKS)}")
    chosen = [c for c in CHECKS if (not only or c in only) and c not in skip]
    if not chosen:
        raise UsageError("--only/--skip left no check to run")
    return chosen


def run_one(check_id: str, check: Check, ctx: Context, cache: Cache | None = None) -> Finding:
    """Run one check; whatever it raises becomes its finding, so one broken check never hides the rest.

    With a cache, a finding stored under the same inputs is returned instead of measuring again, and a
    new measurement is kept for the next run.
    """
    started = time.perf_counter()
    key = None
    if cache is not None:
        try:
            hit, key = cache.lookup(check_id, ctx)
        except Exception as exc:  # the cache only ever saves time: never let it cost a result
            output.warn(f"preflight cache lookup for {check_id} failed ({type(exc).__name__}: {exc})")
            hit, key = None, None
        if hit is not None:
            return replace(hit, id=check_id, duration=time.perf_counter() - started)
    try:
        finding = check(ctx)
        if cache is not None:
            cache.store(check_id, key, replace(finding, duration=time.perf_counter() - started))
    except UsageError as exc:  # a missing tool or unusable input: reported, and the run exits 2
        finding = Finding(id=check_id, status="fail", message=str(exc), usage_error=True)
    except Cancelled:
        finding = Finding(id=check_id, status="skip", message="interrupted")
    except CfopsError as exc:
        finding = Finding(id=check_id, status="fail", message=str(exc))
    except Exception as exc:  # a bug in a check: say which, keep the others' results
        finding = Finding(id=check_id, status="fail", message=f"check crashed: {type(exc).__name__}: {exc}")
    return replace(finding, id=check_id, duration=time.perf_counter() - started)


def run_checks(
    ctx: Context,
    ids: Sequence[str],
    on_done: Callable[[Finding, list[str]], None] | None = None,
    cache: Cache | None = None,
) -> list[Finding]:
    """Run ``ids`` concurrently; return their findings in report order.

    Ctrl-C/SIGTERM arrive in the main thread, which is only waiting here: it marks the run cancelled,
    stops every command the checks are waiting on, then lets the threads finish before re-raising.
    """
    order = sorted(ids, key=lambda c: (c not in _SLOW_FIRST, _SLOW_FIRST.index(c) if c in _SLOW_FIRST else 0))
    pool = ThreadPoolExecutor(max_workers=len(ids), thread_name_prefix="preflight")
    futures: dict[Future[Finding], str] = {pool.submit(run_one, c, CHECKS[c], ctx, cache): c for c in order}
    pending = set(futures)
    try:
        while pending:
            done, pending = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
            for future in done:
                if on_done:
                    on_done(future.result(), sorted(futures[f] for f in pending))
    except BaseException as exc:  # Ctrl-C, SIGTERM, or the time limit of a release step running this
        ctx.cancelled.set()
        why = "interrupted" if isinstance(exc, KeyboardInterrupt) else "stopped"
        output.warn(f"{why}: stopping the running checks")
        procs.stop_running()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    by_id = {futures[f]: f.result() for f in futures}
    return [by_id[c] for c in CHECKS if c in by_id]
