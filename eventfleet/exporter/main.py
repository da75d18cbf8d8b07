"""Starting the exporter: settings, logging, connection, the HTTP server, the wait for a signal."""

from __future__ import annotations

import time

import structlog

from eventfleet.exporter.read import NamespaceReader
from eventfleet.exporter.serve import Exporter, run_until_signal, serve
from eventfleet.store import retry
from eventfleet.store.connection import TRANSIENT, FatalRedisError, connect, mask_url
from eventfleet.store.keys import Keys
from eventfleet.store.logs import configure
from eventfleet.store.settings import Settings

EXIT_FATAL = 2


def run_exporter(settings: Settings) -> int:
    """Serve until a signal (exit 0); bad credentials, TLS or a port in use exit 2 at once.

    A namespace not yet initialised, or Redis going away later, is no reason to stop: each
    pass that fails is logged and served as ``eventfleet_exporter_pass_ok 0``.
    """
    configure(settings.log_level, settings.log_format)
    log = structlog.get_logger("eventfleet.exporter")
    url = mask_url(settings.redis_url)
    try:
        r = connect(
            settings, timeout=5.0, name="eventfleet-exporter", wait_s=settings.connect_timeout_s
        )
        retry.call(r.ping, "connect", deadline=time.monotonic() + settings.connect_timeout_s)
    except FatalRedisError as exc:
        log.error("fatal", error=str(exc), redis=url)
        return EXIT_FATAL
    except TRANSIENT as exc:
        log.error("fatal", error=f"Redis at {url} is unreachable ({type(exc).__name__})")
        return EXIT_FATAL
    exporter = Exporter(
        NamespaceReader(r, Keys(settings.namespace)),
        settings.namespace,
        settings.exporter_interval_s,
    )
    try:
        server = serve(exporter, settings.metrics_host, settings.exporter_port)
    except OSError as exc:
        where = f"{settings.metrics_host}:{settings.exporter_port}"
        log.error("fatal", error=f"cannot serve /metrics on {where}: {exc.strerror or exc}")
        return EXIT_FATAL
    log.info(
        "exporter_started",
        redis=url,
        namespace=settings.namespace,
        port=server.server_address[1],
        interval_s=settings.exporter_interval_s,
    )
    return run_until_signal(server)
