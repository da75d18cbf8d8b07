"""``eventfleet up``: the whole system on this machine, live, with faults on keys."""

from __future__ import annotations

import signal
import sys
from types import FrameType

import click

from eventfleet.cli.context import EXIT_DIFFERENCES, EXIT_USAGE, UserError, dev_tool
from eventfleet.cli.options import emit_json, group_option, ns_option


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # SIGTERM, SIGHUP: finish like q (stop, verify, clean up)


@click.command()
@click.option(
    "--redis",
    "redis_url",
    default=None,
    help="use this Redis instead of a throwaway redis-server (REDIS_URL is not read here)",
)
@click.option(
    "--cluster",
    is_flag=True,
    help="start a throwaway 3-master Redis Cluster instead of one redis-server",
)
@ns_option
@click.option(
    "--workers",
    type=click.IntRange(1, 64),
    default=3,
    show_default=True,
    help="worker processes to start",
)
@click.option(
    "--events",
    type=click.IntRange(1),
    default=None,
    help="publish this many events (as fast as possible unless --rate) [default: endless]",
)
@click.option(
    "--rate",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="events per second [default: 500 without --events, else unlimited]",
)
@click.option("--seed", type=int, default=1, show_default=True, help="seed of the workload")
@click.option(
    "--exit-when-idle",
    is_flag=True,
    help="end once the workload is fully applied (needs --events)",
)
@click.option("--json", "as_json", is_flag=True, help="print one JSON object at the end")
def up(
    redis_url: str | None,
    cluster: bool,
    namespace: str | None,
    workers: int,
    events: int | None,
    rate: float | None,
    seed: int,
    exit_when_idle: bool,
    as_json: bool,
) -> None:
    """Run Redis, init, N workers and a producer here, watch them live, break them on purpose.

    \b
    Keys: k kill a random worker (SIGKILL), a add one, s stop one (SIGTERM),
    p pause one past its lease (SIGSTOP, SIGCONT after TTL+1s), q quit.
    Without --redis a throwaway redis-server runs in a temp dir, removed on exit
    (with --cluster: three of them as a Redis Cluster).
    On exit `verify` runs and a summary is printed; the exit code is 0 when it passed.
    Workers run with a 2 s lease TTL and 5 s snapshots so faults show within seconds.
    Without a terminal (or with --json) it prints progress lines instead of the live view.
    """
    dev_tool("eventfleet.local.up", "up")  # one clear line where the image left it out
    from eventfleet.local.liveview import LiveView, PlainView
    from eventfleet.local.up import run, summary_lines
    from eventfleet.store.logs import configure
    from eventfleet.store.settings import url_problem

    # stderr, and quiet unless asked (-v, EVENTFLEET_LOG_LEVEL): the view and summary say it
    configure(group_option("log_level") or "error", "json")
    redis_url = redis_url or group_option("redis_url")
    namespace = namespace or group_option("namespace")
    if redis_url is not None and (problem := url_problem(redis_url)):
        raise UserError(problem, EXIT_USAGE)
    if cluster and redis_url is not None:
        raise UserError(
            "--cluster starts its own cluster; to use yours, give any node with --redis",
            EXIT_USAGE,
        )
    if exit_when_idle and events is None:
        raise UserError(
            "--exit-when-idle needs --events: an endless workload is never idle", EXIT_USAGE
        )
    stack = dev_tool("eventfleet.local.stack", "up")
    redisserver = dev_tool("eventfleet.local.redisserver", "up")
    cfg = stack.UpConfig(
        workers=workers,
        events=events,
        rate=rate,
        redis_url=redis_url,
        cluster=cluster,
        namespace=namespace,
        seed=seed,
    )
    live = not as_json and sys.stdin.isatty() and sys.stdout.isatty()
    view = (
        LiveView()
        if live
        else PlainView(sys.stderr if as_json else sys.stdout, cfg.expected_orders)
    )
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGHUP, _interrupt)  # the terminal closed
    try:
        with view:
            summary = run(cfg, view, exit_when_idle=exit_when_idle)
    except (stack.UpError, redisserver.RedisNotInstalled) as exc:
        raise UserError(str(exc)) from None
    if as_json:
        emit_json(summary.as_json())
    else:
        for line in summary_lines(summary):
            click.echo(line)
    sys.exit(0 if summary.ok else EXIT_DIFFERENCES)
