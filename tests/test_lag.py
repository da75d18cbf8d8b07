"""One definition of lag (store.lag): `eventfleet status` and the exporter count the same
events per shard (inbox, undelivered, pending), and the lag in seconds is not 0 while events
wait in an inbox that nobody moves (no worker running)."""

from __future__ import annotations

import redis

from eventfleet.exporter.read import NamespaceReader
from eventfleet.ledger.events import Topup
from eventfleet.ledger.shards import user_shard
from eventfleet.ops.status import shard_status
from eventfleet.producer.client import Producer
from eventfleet.store.keys import GROUP, Keys
from tests.fleet_utils import append_to_logs, setup_namespace
from tests.helpers import cli_json, wait_for


def test_status_and_the_exporter_count_lag_alike(
    r: redis.Redis, namespace: str, env: dict[str, str]
) -> None:
    counts = setup_namespace(r, namespace, 2, 2)
    keys = Keys(namespace)
    shard = user_shard(1, counts)
    append_to_logs(r, keys, counts, [Topup(user_id=1, amount=1)] * 20)  # in the log
    r.xreadgroup(GROUP, "inspector", {keys.events(shard): ">"}, count=4)  # 4 pending
    Producer(r, keys, counts).publish([Topup(user_id=1, amount=1)] * 7)  # in the inbox
    reading = NamespaceReader(r, keys).read()
    exported = {s.shard: s.lag for s in reading.shards}
    assert exported[shard] == 27
    rows = {row.shard: row for row in shard_status(r, keys, counts)}
    assert {s: row.lag for s, row in rows.items()} == exported
    assert (rows[shard].inbox, rows[shard].undelivered, rows[shard].pending) == (7, 16, 4)
    doc = cli_json("status", "--json", env=env)
    assert doc["totals"]["lag"] == sum(exported.values()) == 27
    assert {row["shard"]: row["lag"] for row in doc["shards"]} == exported


def test_lag_seconds_grow_while_events_wait_in_an_inbox(r: redis.Redis, namespace: str) -> None:
    counts = setup_namespace(r, namespace, 2, 2)
    keys = Keys(namespace)
    shard = user_shard(1, counts)
    Producer(r, keys, counts).publish([Topup(user_id=1, amount=1)] * 3000)
    reader = NamespaceReader(r, keys)

    def waited() -> float:
        [one] = [s for s in reader.read().shards if s.shard == shard]
        assert one.lag == 3000 and one.inbox == 3000
        return one.lag_seconds

    first = waited()  # the first pass that sees them: a lower bound, from now on
    assert first == 0.0
    wait_for(lambda: waited() >= 0.3, 10, "the inbox's wait to show in lag_seconds")
    # The owner moves the oldest event out (as move_inbox's LTRIM does): the new front is
    # another event, timed from the pass that first sees it there.
    r.ltrim(keys.inbox(shard), 1, -1)
    [moved] = [s for s in reader.read().shards if s.shard == shard]
    assert moved.inbox == 2999 and moved.lag_seconds < 0.3
    # An empty inbox (everything applied): 0 again.
    r.ltrim(keys.inbox(shard), -1, -1)
    assert all(s.lag_seconds == 0 for s in reader.read().shards)
