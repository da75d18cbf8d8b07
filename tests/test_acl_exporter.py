"""The shipped ACL's `eventfleet-exporter` user: enough for a whole exporter pass, and
nothing that writes."""

from __future__ import annotations

import pytest

from eventfleet.exporter.read import NamespaceReader
from eventfleet.store.keys import Keys
from tests.secure_redis import EVENTS, INBOX, connect, refused


def test_the_exporter_user_can_read_a_whole_pass(port: int, seeded: dict[str, str]) -> None:
    exporter = connect(port, "exporter", decode_responses=False)
    root = connect(port, "root")
    root.xadd("eventfleet:{u0}:dlq", {"reason": "bad_json"})
    root.rpush(INBOX, "{}")  # an event waiting in the (seeded) inbox: LINDEX times it
    reader = NamespaceReader(exporter, Keys("eventfleet"))
    reading = reader.read()
    assert reading.unreadable == [f"i{n}" for n in range(8)], "only u0 has a stream here"
    (u0,) = reading.shards
    assert (u0.lag, u0.pending, u0.dead_letters, u0.inbox) == (3, 1, 1, 1)
    assert u0.lag_seconds >= 0
    assert "u0" in reader._fronts, "the oldest inbox event was read (LINDEX)"

    # an online reshard 1+8 -> 2+8 recorded as a run records it, u0's child seeded: the
    # meta fields (HGETALL) and the seed's EXISTS are all the exporter reads of it
    root.hset(
        "eventfleet:meta",
        mapping={"reshard_target": "2,8", "reshard_from": "1,8", "reshard_state": "marked"},
    )
    reshard = reader.read().reshard
    assert reshard is not None and reshard.state == 2
    assert reshard.parents[("user", "waiting")] == 1
    root.set("eventfleet:{u1}:snapshot", "{}")
    reshard = reader.read().reshard
    assert reshard is not None and reshard.parents[("user", "split")] == 1


@pytest.mark.parametrize(
    "command",
    [
        ("SET", "eventfleet:x", "1"),
        ("XADD", EVENTS, "*", "event", "{}"),
        ("DEL", "eventfleet:meta"),
        ("XACK", EVENTS, "workers", "0-1"),
        ("EVAL", "return 1", "0"),
        ("GET", "other:key"),
        ("FLUSHALL",),
    ],
)
def test_the_exporter_user_writes_nothing(port: int, command: tuple[str, ...]) -> None:
    assert refused(connect(port, "exporter"), *command)
