"""Retrying infrastructure calls (never business logic) with capped, jittered backoff."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import structlog
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_delay,
    stop_never,
    wait_exponential,
    wait_random,
)

from eventfleet.store.errors import OOM_HINT, TRANSIENT, FatalRedisError, OutOfMemory, classify

T = TypeVar("T")
log = structlog.get_logger("eventfleet.retry")


def _ignore(operation: str) -> None:
    return None


class Hooks:
    """Where retries and give-ups are counted: the worker points these at its metrics
    (``eventfleet.worker.metrics``); other processes count nothing."""

    def __init__(self) -> None:
        self.retried: Callable[[str], None] = _ignore
        self.failed: Callable[[str], None] = _ignore


hooks = Hooks()


class _OomEpisode:
    """Redis being full is said once, in one line, when an operation is first refused
    (``redis_out_of_memory``), and once when every refused operation has gone through again
    (``redis_memory_ok``), not at every retry. Operations Redis still allows when full (the
    small bookkeeping scripts) do not end an episode."""

    def __init__(self) -> None:
        self.refusing: set[str] = set()

    def refused(self, op: str) -> None:
        if not self.refusing:
            log.error("redis_out_of_memory", operation=op, error=OOM_HINT)
        self.refusing.add(op)

    def passed(self, op: str) -> None:
        if op in self.refusing:
            self.refusing.discard(op)
            if not self.refusing:
                log.info("redis_memory_ok", operation=op)


oom = _OomEpisode()


def _is_transient(exc: BaseException) -> bool:
    return isinstance(exc, TRANSIENT) and classify(exc) is None


def call(
    fn: Callable[[], T],
    op: str,
    *,
    deadline: float | None = None,
    max_wait: float = 2.0,
) -> T:
    """Run ``fn``, retrying transient Redis errors until ``deadline`` (monotonic) if given.

    A fatal error (credentials, permissions, TLS) raises ``FatalRedisError`` at once. When the
    deadline passes the last transient error propagates to the caller.
    """

    def before_sleep(rs: RetryCallState) -> None:
        hooks.retried(op)
        exc = rs.outcome.exception() if rs.outcome else None
        if isinstance(exc, OutOfMemory):
            oom.refused(op)
            return
        log.warning("redis_retry", operation=op, attempt=rs.attempt_number, error=_short(exc))

    stop = (
        stop_never if deadline is None else stop_after_delay(max(0.0, deadline - time.monotonic()))
    )
    retrying = Retrying(
        retry=retry_if_exception(_is_transient),
        # 50 ms doubling up to max_wait, plus up to 100 ms of jitter. Spelled with the two
        # waits every supported tenacity has: wait_exponential_jitter took `initial` before
        # 9.1 and warns about it since (tenacity floor: docs/DEPLOYMENT.md, "Dependencies").
        wait=wait_exponential(multiplier=0.05, max=max_wait) + wait_random(0, 0.1),
        stop=stop,
        before_sleep=before_sleep,
        reraise=True,
    )
    try:
        result = retrying(fn)
    except Exception as exc:
        if isinstance(exc, OutOfMemory):
            oom.refused(op)
        hooks.failed(op)
        fatal = classify(exc)
        if fatal is not None:
            raise fatal from None
        raise
    oom.passed(op)
    return result


def _short(exc: BaseException | None) -> str:
    if exc is None:
        return ""
    return f"{type(exc).__name__}: {str(exc)[:200]}"


__all__ = ["FatalRedisError", "call"]
