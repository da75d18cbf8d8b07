"""Starting a worker: settings, logging, connection, namespace check, health server, loop."""

from __future__ import annotations

import errno
import gc
import signal
import time
from http.server import ThreadingHTTPServer
from typing import Any

import structlog
from redis import exceptions as rx

from eventfleet.ledger.shards import ShardCounts
from eventfleet.store import retry
from eventfleet.store.connection import TRANSIENT, FatalRedisError, classify, connect, mask_url
from eventfleet.store.keys import Keys
from eventfleet.store.logs import configure
from eventfleet.store.namespace import (
    NamespaceError,
    NamespaceMissing,
    check_counts,
    read_counts,
    read_init_counts,
)
from eventfleet.store.reload_safety import UnsafeReload, guard_worker
from eventfleet.store.settings import Settings, unknown_env_names
from eventfleet.worker.health import HealthState, serve
from eventfleet.worker.loop import Worker
from eventfleet.worker.metrics import exposition

EXIT_OK = 0
EXIT_FATAL = 2
WAIT_LOG_EVERY_S = 5.0
WAIT_POLL_S = 0.5
GC_THRESHOLDS = (10_000, 50, 100)
"""Python's cyclic garbage collector, run far less often than its default (700, 10, 10): a
worker allocates a few objects per event, nearly all freed by reference counting, while its
shard state (balances, items, remembered order ids) is millions of long-lived objects that
every full collection walks; cycles are still collected, later. The first threshold stays
small, because a larger young generation pauses the loop for longer at each collection (the
measurements: docs/DESIGN-DECISIONS.md, section 27)."""


def wait_for_namespace(
    r: Any, keys: Keys, settings: Settings, health: HealthState, log: Any
) -> ShardCounts:
    """The namespace's shard counts, waiting up to ``EVENTFLEET_NAMESPACE_WAIT_S`` for
    ``eventfleet init`` to create it (one log line every few seconds; ``/healthz`` stays 200
    meanwhile), so that workers started before init do not crash-loop."""
    t0 = time.monotonic()
    next_log = t0
    while True:
        try:
            return read_counts(r, keys)
        except NamespaceMissing as exc:
            now = time.monotonic()
            waited = now - t0
            if waited >= settings.namespace_wait_s:
                raise NamespaceError(
                    f"{exc} (waited {round(waited)} s; EVENTFLEET_NAMESPACE_WAIT_S="
                    f"{settings.namespace_wait_s:g})"
                ) from None
            if now >= next_log:
                next_log = now + WAIT_LOG_EVERY_S
                log.warning(
                    "waiting_for_namespace",
                    namespace=keys.ns,
                    waited_s=round(waited, 1),
                    gives_up_in_s=round(settings.namespace_wait_s - waited, 1),
                    hint="run `eventfleet init`",
                )
            health.tick()
            time.sleep(min(WAIT_POLL_S, settings.namespace_wait_s - waited))


def serve_metrics(
    health: HealthState, settings: Settings, *, fallback: bool
) -> ThreadingHTTPServer:
    """Serve ``/metrics``, ``/healthz`` and ``/readyz`` (the server's ``server_address`` has
    the port). When the port is
    taken and ``fallback`` (the port is the default, not set on purpose: a second worker on
    one host), serve on a free port the system picks; a port set on purpose must be that
    port (probes and scrapes point at it), and its ``OSError`` is raised."""
    metrics = exposition(settings.namespace)
    host, port = settings.metrics_host, settings.metrics_port
    try:
        server = serve(health, host, port, metrics)
    except OSError as exc:
        if not fallback or exc.errno != errno.EADDRINUSE:
            raise
        server = serve(health, host, 0, metrics)
    return server


def _stopped_before_start(signum: int, _frame: object) -> None:
    """SIGTERM or SIGINT before the loop runs: nothing is held yet, so stop at once, exit 0
    (the loop's own handlers, installed once it runs, drain instead)."""
    raise SystemExit(EXIT_OK)


def run_worker(settings: Settings) -> int:
    signal.signal(signal.SIGTERM, _stopped_before_start)
    signal.signal(signal.SIGINT, _stopped_before_start)
    configure(settings.log_level, settings.log_format)
    structlog.contextvars.bind_contextvars(worker_id=settings.worker_id)
    log = structlog.get_logger("eventfleet.worker")
    url = mask_url(settings.redis_url)
    for name in unknown_env_names():
        log.warning("unknown_setting", name=name, hint="ignored; see docs/CONTRACTS.md")
    health = HealthState(stale_after_s=max(5.0, 3 * settings.lease_ttl_ms / 1000))
    metrics_port = settings.metrics_port
    if metrics_port:
        try:
            server = serve_metrics(
                health, settings, fallback="metrics_port" not in settings.model_fields_set
            )
            metrics_port = int(server.server_address[1])
        except OSError as exc:  # a port set on purpose is taken, or binding is refused
            where = f"{settings.metrics_host}:{settings.metrics_port}"
            log.error("fatal", error=f"cannot serve /metrics on {where}: {exc.strerror or exc}")
            return EXIT_FATAL
        if metrics_port != settings.metrics_port:
            log.warning(
                "metrics_port_taken",
                wanted=settings.metrics_port,
                metrics_port=metrics_port,
                hint="another worker on this host has the default port; this one serves "
                "/metrics, /healthz and /readyz on metrics_port (set EVENTFLEET_METRICS_PORT "
                "to choose one)",
            )
    try:
        r = connect(
            settings,
            timeout=max(2.0, settings.lease_ttl_ms / 1000),
            name=settings.worker_id,
            wait_s=settings.connect_timeout_s,
        )
        deadline = time.monotonic() + settings.connect_timeout_s
        retry.call(r.ping, "connect", deadline=deadline)
        counts = wait_for_namespace(r, Keys(settings.namespace), settings, health, log)
        # every fold starts with the counts at init (a split shard routes with its own after)
        init = read_init_counts(r, Keys(settings.namespace))
        check_counts(counts, settings.user_shards, settings.item_shards, init)
        if settings.allow_unsafe_reload:
            log.warning("reload_check_skipped", hint="EVENTFLEET_ALLOW_UNSAFE_RELOAD is set")
        else:
            guard_worker(r, Keys(settings.namespace))
    except UnsafeReload as exc:
        log.error("fatal", error=str(exc), redis=url)
        return EXIT_FATAL
    except FatalRedisError as exc:
        log.error("fatal", error=str(exc), redis=url)
        return EXIT_FATAL
    except NamespaceError as exc:
        log.error("fatal", error=str(exc), redis=url)
        return EXIT_FATAL
    except TRANSIENT as exc:
        log.error(
            "fatal",
            error=f"Redis at {url} is unreachable ({type(exc).__name__})",
            waited_s=settings.connect_timeout_s,
        )
        return EXIT_FATAL
    gc.set_threshold(*GC_THRESHOLDS)
    worker = Worker(settings, r, init, health)
    worker.install_signals()
    log.info(
        "connected",
        redis=url,
        namespace=settings.namespace,
        user_shards=counts.users,
        item_shards=counts.items,
        metrics_port=metrics_port or None,
    )
    try:
        return worker.run()
    except FatalRedisError as exc:
        log.error("fatal", error=str(exc), redis=url)
        return EXIT_FATAL
    except rx.ResponseError as exc:  # e.g. a stream or group deleted under the fleet
        fatal = classify(exc)
        text = str(fatal or exc)
        if "no such key" in text or "NOGROUP" in text:
            text = (
                f"a shard stream or its consumer group is missing ({text[:120]}): the namespace "
                "was deleted or Redis lost its data; restore Redis from its backup, or run "
                "`eventfleet init` to start an empty ledger"
            )
        log.error("fatal", error=text[:400], redis=url)
        return EXIT_FATAL
