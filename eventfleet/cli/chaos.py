"""``eventfleet chaos``: inject faults into a local fleet while events flow, then verify."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from eventfleet.cli.context import EXIT_DIFFERENCES, EXIT_USAGE, UserError
from eventfleet.cli.options import group_option

F = TypeVar("F", bound=Callable[..., Any])

FIELDS = (
    "events",
    "published",
    "file_lines_rerun",
    "faults",
    "faults_in_flight",
    "faults_with_backlog",
    "mismatches",
    "invariant_violations",
    "duplicates_applied",
    "lost",
    "dead_letters",
    "replayed_entries",
    "recovery_seconds",
    "recovery_by_kind",
    "scale_unowned",
    "takeovers",
    "duration_seconds",
    "ok",
)


def _kinds(ctx: click.Context, param: click.Parameter, value: str) -> tuple[str, ...]:
    from eventfleet.chaos.config import KINDS

    kinds = tuple(k.strip() for k in value.split(",") if k.strip())
    bad = [k for k in kinds if k not in KINDS]
    if bad or not kinds:
        raise click.BadParameter(f"choose among {', '.join(KINDS)} (got {value!r})")
    return tuple(dict.fromkeys(kinds))


def _clients(flag: str, help: str) -> Callable[[F], F]:
    """An option counting client threads of a kind (0 to 16, 2 by default)."""
    return click.option(flag, type=click.IntRange(0, 16), default=2, show_default=True, help=help)


@click.command("chaos")
@click.option(
    "--workers",
    type=click.IntRange(1, 64),
    default=3,
    show_default=True,
    help="worker processes",
)
@click.option(
    "--events",
    type=click.IntRange(1),
    default=10_000,
    show_default=True,
    help="events of the seeded workload",
)
@click.option("--seed", type=int, default=1, show_default=True, help="seed of the workload")
@click.option("--json", "as_json", is_flag=True, help="print exactly one JSON object on stdout")
@click.option(
    "--faults",
    default="kill,pause,scale,redis_restart,producer_rerun,hostile",
    show_default=True,
    callback=_kinds,
    help="fault kinds, comma separated (also: client_kill); producer_rerun SIGKILLs and re-runs "
    "`produce file --source`",
)
@click.option(
    "--rounds",
    type=click.IntRange(1),
    default=3,
    show_default=True,
    help="each round injects every chosen kind once, in a seeded order",
)
@click.option(
    "--fault-interval",
    type=click.FloatRange(0),
    default=1.0,
    show_default=True,
    help="seconds between one fault's recovery and the next fault",
)
@click.option(
    "--redis",
    "redis_url",
    default=None,
    help="use this Redis (a fresh namespace) instead of a throwaway redis-server; "
    "REDIS_URL is deliberately not read",
)
@click.option("--namespace", default=None, help="default: a fresh chaos-<random>")
@click.option(
    "--user-shards",
    type=click.IntRange(1, 4096),
    default=8,
    show_default=True,
    help="user shards of the namespace it creates",
)
@click.option(
    "--item-shards",
    type=click.IntRange(1, 4096),
    default=8,
    show_default=True,
    help="item shards of the namespace it creates",
)
@click.option(
    "--lease-ttl-ms",
    type=click.IntRange(200, 5000),
    default=1500,
    show_default=True,
    help="the workers' lease TTL",
)
@click.option(
    "--max-rate", type=click.FloatRange(1), default=3000, show_default=True, help="events/s cap"
)
@_clients(
    "--readers",
    "clients that write a top-up and read the balance back with its receipt throughout; "
    "every read is held to the log",
)
@click.option(
    "--logdir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="keep worker and Redis logs here (default: a temp dir, removed when ok)",
)
@click.option("--report", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="also write the JSON report to this file")  # fmt: skip
@click.option(
    "--reshard",
    "reshard_steps",
    default=None,
    metavar="UxI[,UxI...]",
    help="grow the namespace online under the load, step by step (e.g. 8x8,16x16 after "
    "--user-shards 4 --item-shards 4; each step a multiple of the one before) with "
    "`eventfleet reshard`, striking kill, pause and redis_restart while each step runs",
)
@_clients(
    "--order-waiters",
    "with --reshard: clients that place orders and wait for their outcome; every order one "
    "is told is confirmed must stay confirmed",
)
def chaos_cmd(
    workers: int,
    events: int,
    seed: int,
    as_json: bool,
    faults: tuple[str, ...],
    rounds: int,
    fault_interval: float,
    redis_url: str | None,
    namespace: str | None,
    user_shards: int,
    item_shards: int,
    lease_ttl_ms: int,
    max_rate: float,
    readers: int,
    logdir: Path | None,
    report: Path | None,
    reshard_steps: str | None,
    order_waiters: int,
) -> None:
    """Run workers, publish a seeded workload, inject faults while it flows, then verify.

    Exit 0 only when nothing was lost, applied twice or mismatched and every invariant holds.
    """
    from eventfleet.chaos.config import ChaosConfig, ChaosError, parse_reshard
    from eventfleet.chaos.run import run_chaos
    from eventfleet.store.logs import configure
    from eventfleet.store.settings import url_problem

    # retries during a Redis restart are expected: quiet unless asked (-v, EVENTFLEET_LOG_LEVEL)
    configure(group_option("log_level") or "error", "auto")
    redis_url = redis_url or group_option("redis_url")
    namespace = namespace or group_option("namespace")
    if redis_url is not None and (problem := url_problem(redis_url)):
        raise UserError(problem, EXIT_USAGE)
    try:
        steps = parse_reshard(reshard_steps, user_shards, item_shards) if reshard_steps else ()
    except ChaosError as exc:
        raise UserError(str(exc), EXIT_USAGE) from None
    cfg = ChaosConfig(
        workers=workers,
        events=events,
        seed=seed,
        faults=faults,
        rounds=rounds,
        fault_interval=fault_interval,
        redis_url=redis_url,
        namespace=namespace,
        user_shards=user_shards,
        item_shards=item_shards,
        lease_ttl_ms=lease_ttl_ms,
        max_rate=max_rate,
        readers=readers,
        logdir=logdir,
        reshard=steps,
        order_waiters=order_waiters,
    )
    try:
        doc = run_chaos(cfg, log=lambda s: click.echo(s, err=True))
    except ChaosError as exc:
        raise UserError(str(exc), EXIT_USAGE) from None
    if report is not None:
        report.write_text(json.dumps(doc, indent=2) + "\n")
    if as_json:
        click.echo(json.dumps(doc, separators=(",", ":")))
    else:
        for line in table(doc):
            click.echo(line)
    sys.exit(0 if doc["ok"] else EXIT_DIFFERENCES)


def table(doc: dict[str, Any]) -> list[str]:
    lines = []
    for name in FIELDS:
        value = doc[name]
        if isinstance(value, dict):
            value = ", ".join(f"{k} {v}" for k, v in value.items())
        lines.append(f"{name:<22} {value}")
    for step in doc.get("reshards", []):
        lines.append(
            f"reshard {step['from']} -> {step['to']}: {step['duration_s']} s, "
            f"{step['reruns']} re-runs, faults {', '.join(f['kind'] for f in step['faults'])}"
        )
    if "orders_waited" in doc:
        lines.append(f"{'orders_waited':<22} {doc['orders_waited']}")
        lines.append(f"{'final_counts':<22} {doc['final_counts']}")
    lines += [f"problem: {p}" for p in doc["problems"]]
    lines += [
        f"  {f['kind']} {f['shard']} {f['what']}: {f['detail']}" for f in doc["verify"]["findings"]
    ]
    if "logdir" in doc:
        lines.append(f"logs kept in {doc['logdir']}")
    return lines
