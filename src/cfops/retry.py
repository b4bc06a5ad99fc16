"""Bounded retries of Cloudflare operations that are safe to repeat (tenacity).

What may be repeated is decided by the caller, not here: reads, ``versions deploy`` of a given split and
a rollback to a given version end in the same state however often they run; an upload does not (see
``deploy.upload_version``, which first looks whether the version landed). What is retried is decided by
``is_transient``: a lost connection, a 5xx or a 429 (after its ``Retry-After``), never a 4xx that would
answer the same again. Every retry is announced once, and the whole is bounded in attempts and in time.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    stop_before_delay,
    wait_exponential_jitter,
)

from cfops import output
from cfops.errors import CfopsError

T = TypeVar("T")


class TransientError(CfopsError):
    """A failure that another attempt may not meet: connection lost, 5xx, 429. Exit 1 when it persists."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    attempts: int = 4  # the first try included
    max_seconds: float = 60.0  # no attempt starts after this long since the first one
    initial_wait: float = 0.5  # exponential backoff with jitter from here …
    max_wait: float = 8.0  # … up to here; a Retry-After longer than the time left ends the retries


def is_transient(exc: BaseException) -> bool:
    return isinstance(exc, TransientError)


def _waiter(policy: RetryPolicy) -> Callable[[RetryCallState], float]:
    backoff = wait_exponential_jitter(
        multiplier=policy.initial_wait, max=policy.max_wait, jitter=policy.initial_wait
    )

    def wait(state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, TransientError) and exc.retry_after is not None:
            return max(0.0, exc.retry_after)
        return float(backoff(state))

    return wait


def call(
    what: str, fn: Callable[[], T], policy: RetryPolicy, *, sleep: Callable[[float], None] = time.sleep
) -> T:
    """``fn()``, repeated on a TransientError within ``policy``; the last error is raised as it is.

    ``sleep`` is injectable so tests of a caller's bounds need not wait out the backoff.
    """

    def announce(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        delay = state.next_action.sleep if state.next_action else 0.0
        output.warn(f"{what}: {exc}; retry {state.attempt_number}/{policy.attempts - 1} in {delay:.1f} s")

    retrying = Retrying(
        stop=stop_after_attempt(policy.attempts) | stop_before_delay(policy.max_seconds),
        wait=_waiter(policy),
        retry=retry_if_exception(is_transient),
        before_sleep=announce,
        reraise=True,
        sleep=sleep,
    )
    return retrying(fn)
