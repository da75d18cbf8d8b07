"""``eventfleet redis``: a throwaway redis-server for trying the commands out (development)."""

from __future__ import annotations

import signal
import sys
import threading
from types import FrameType

import click

from eventfleet.cli.context import UserError, dev_tool

DEFAULT_PORT = 6379
"""REDIS_URL's default (redis://localhost:6379/0): the other commands find it unconfigured."""


@click.command("redis")
@click.option(
    "--port",
    type=click.IntRange(1, 65535),
    default=DEFAULT_PORT,
    show_default=True,
    help="port on 127.0.0.1 (6379 is where every command looks without REDIS_URL)",
)
def redis_cmd(port: int) -> None:
    """Run a throwaway redis-server in the foreground until Ctrl-C (or SIGTERM), its data in
    a temp dir removed on exit: a Redis to try `init`, `worker`, `produce` and `state` on
    after `make demo` (whose Redis is gone). Not for production (docs/DEPLOYMENT.md)."""
    redisserver = dev_tool("eventfleet.local.redisserver", "redis")
    stop = threading.Event()

    def _stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    try:
        server = redisserver.LocalRedis(port=port)
        server.start()
    except redisserver.RedisNotInstalled as exc:
        raise UserError(str(exc)) from None
    except (RuntimeError, TimeoutError) as exc:  # the port is taken, most often
        raise UserError(
            f"redis-server could not start on 127.0.0.1:{port} ({str(exc).strip()[-160:]}); "
            f"if a Redis already listens there, use it, or pick another --port"
        ) from None
    try:
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, _stop)
        env = "" if port == DEFAULT_PORT else f"export REDIS_URL={server.url}; "
        click.echo(
            f"redis-server on {server.url} (data in {server.dir}, removed on exit); "
            f"in another terminal: {env}eventfleet init; Ctrl-C stops it",
        )
        sys.stdout.flush()
        while not stop.wait(0.5):
            if server.proc is None or server.proc.poll() is not None:
                raise UserError(f"redis-server on port {port} exited unexpectedly")
    finally:
        server.close()
    click.echo("redis-server stopped, its data removed")
