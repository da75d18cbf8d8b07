"""``python -m eventfleet.local.demo`` (what ``make demo`` runs): the whole system once, in seconds.

A throwaway redis-server in a temp dir, ``eventfleet init``, three workers and a small seeded
load that reaches every order outcome (confirmed, out of stock, unknown item, insufficient
funds). Once the fleet is idle it prints the balances, stock and order outcomes as
``eventfleet state all`` does, and what ``eventfleet verify`` finds; then everything is
stopped and the temp dir removed. The processes are those of ``eventfleet up``
(``eventfleet.local.stack``), without the live view.
"""

from __future__ import annotations

import subprocess
import sys
import time

import click

from eventfleet.cli.context import Ctx, make_settings
from eventfleet.local.redisserver import RedisNotInstalled
from eventfleet.local.stack import Stack, UpConfig, UpError
from eventfleet.ops.status import wait_idle

DEMO = UpConfig(workers=3, events=300, seed=1, users=20, items=10)
"""Seed 1 with 20 users and 10 items: every outcome kind shows up in 300 events."""
TIMEOUT_S = 25.0


def step(text: str) -> None:
    click.secho(f"==> {text}", bold=True)


def run(cfg: UpConfig = DEMO) -> int:
    t0 = time.monotonic()
    stack = Stack(cfg)
    try:
        stack.start_redis()
        step(f"redis-server on {stack.url} (data in a temp dir, removed at the end)")
        step(f"eventfleet init: {stack.init()}")
        fleet = stack.start_fleet(cfg.workers)
        step(f"{len(fleet.workers)} workers started (python -m eventfleet.worker)")
        stack.start_producer()
        step(f"eventfleet {' '.join(cfg.produce_args())}")
        assert stack.producer is not None
        try:
            stack.producer.wait(timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise UpError(f"the producer did not finish in {TIMEOUT_S:g}s") from None
        if stack.producer.returncode != 0:
            raise UpError(f"the producer failed: {stack.producer_log.read_text()[-500:]}")
        c = Ctx(make_settings(redis_url=stack.url, namespace=stack.namespace))
        if not wait_idle(c.redis, c.keys, c.counts(), TIMEOUT_S):
            raise UpError(f"the fleet was not idle after {TIMEOUT_S:g}s")
        step(f"every event applied after {time.monotonic() - t0:.1f}s; $ eventfleet state all")
        state = stack.command("state", "all")
        click.echo(state.stdout, nl=False)
        fleet.stop_all()
        step("workers stopped (SIGTERM: final snapshots); $ eventfleet verify")
        verified = stack.command("verify", timeout=TIMEOUT_S * 4)
        click.echo(verified.stdout, nl=False)
        click.echo(verified.stderr, nl=False, err=True)
        ok = state.returncode == 0 and verified.returncode == 0
    except (UpError, RedisNotInstalled) as exc:
        click.echo(f"error: {exc}", err=True)
        return 1
    finally:
        stack.close()
    step(f"redis-server stopped, temp dir removed ({time.monotonic() - t0:.1f}s in all)")
    click.echo(
        "Next (after `. .venv/bin/activate`): `eventfleet up` shows the fleet live (press k to"
        " kill a worker); `eventfleet redis` keeps a Redis on localhost:6379 for the commands"
        ' of README\'s "Using it".'
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(run())
