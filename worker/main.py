"""Starting a worker: settings, logging, connection, namespace check, health server, loop."""

from __future__ import annotations

import time

import structlog
from redis import exceptions as rx

from store import retry
from store.connection import TRANSIENT, FatalRedisError, classify, connect, mask_url
from store.keys import Keys
from store.logs import configure
from store.namespace import NamespaceError, check_counts, read_counts
from store.settings import Settings
from worker.health import serve
from worker.loop import Worker

EXIT_OK = 0
EXIT_FATAL = 2


def run_worker(settings: Settings) -> int:
    configure(settings.log_level, settings.log_format)
    structlog.contextvars.bind_contextvars(worker_id=settings.worker_id)
    log = structlog.get_logger("eventfleet.worker")
    url = mask_url(settings.redis_url)
    try:
        r = connect(
            settings,
            timeout=max(2.0, settings.lease_ttl_ms / 1000),
            name=settings.worker_id,
            wait_s=settings.connect_timeout_s,
        )
        deadline = time.monotonic() + settings.connect_timeout_s
        retry.call(r.ping, "connect", deadline=deadline)
        counts = read_counts(r, Keys(settings.namespace))
        check_counts(counts, settings.user_shards, settings.item_shards)
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
    worker = Worker(settings, r, counts)
    worker.install_signals()
    if settings.metrics_port:
        try:
            serve(worker.health, settings.metrics_host, settings.metrics_port)
        except OSError as exc:  # the port is taken (another worker on this host?) or refused
            where = f"{settings.metrics_host}:{settings.metrics_port}"
            log.error("fatal", error=f"cannot serve /metrics on {where}: {exc.strerror or exc}")
            return EXIT_FATAL
    log.info(
        "connected",
        redis=url,
        namespace=settings.namespace,
        user_shards=counts.users,
        item_shards=counts.items,
        metrics_port=settings.metrics_port or None,
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
