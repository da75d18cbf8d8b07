"""``eventfleet bench``: measure the fleet on a throwaway redis-server."""

from __future__ import annotations

import json
from pathlib import Path

import click

from eventfleet.cli.context import EXIT_FAILED, UserError, dev_tool


@click.command()
@click.option("--quick", is_flag=True, help="small sizes (a smoke run for CI, about a minute)")
@click.option("--json", "as_json", is_flag=True, help="print the results as one JSON document")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("bench-results.json"),
    show_default=True,
    help="write the JSON results here",
)
@click.option(
    "--only",
    default="a,b,c,d,k,g,h,s,i,j,x,p,r,m,o,w,n",
    show_default=True,
    help="scenarios to run, comma-separated (b also runs e and f; p: client publish, "
    "r: client read latency against the fold, m: read model memory, o: calm scaling, "
    "w: the HTTP API against the asyncio client, n: online resharding under load)",
)
@click.option(
    "--appendfsync",
    type=click.Choice(["always", "everysec", "no"]),
    default="everysec",
    show_default=True,
    help="the throwaway Redis' AOF fsync policy",
)
def bench(quick: bool, as_json: bool, out: Path, only: str, appendfsync: str) -> None:
    """Measure throughput, latency, failover, snapshots, the application client (publish,
    balance() reads against the fold) and the read model's memory on a throwaway redis-server.

    Starts its own redis-server (a free loopback port, a temp dir) and worker processes,
    never touching REDIS_URL. Prints a table (or JSON with --json) and writes the JSON.
    """
    b = dev_tool("eventfleet.bench.suite", "bench")
    from eventfleet.bench.env import BenchError
    from eventfleet.local.redisserver import RedisNotInstalled

    chosen = tuple(s.strip() for s in only.split(",") if s.strip())
    unknown = [s for s in chosen if s not in b.SCENARIOS]
    if unknown or not chosen:
        raise UserError(f"--only takes some of {','.join(b.SCENARIOS)}; got {only!r}", 2)
    try:
        doc = b.run(
            quick=quick,
            only=chosen,
            appendfsync=appendfsync,
            say=lambda msg: click.echo(msg, err=True),
        )
    except RedisNotInstalled as exc:
        raise UserError(str(exc)) from None
    except BenchError as exc:
        raise UserError(f"benchmark failed: {exc}", EXIT_FAILED) from None
    text = json.dumps(doc, indent=2)
    out.write_text(text + "\n", encoding="utf-8")
    if as_json:
        click.echo(text)
    else:
        click.echo(b.table(doc))
        click.echo(f"\nwrote {out}")
