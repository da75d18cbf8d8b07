"""Warm standbys (worker/standby.py): which shards a worker stands by for, what a standby folds
(only acked entries, exactly the owner's fold), and takeovers that start from the warm copy
after a SIGKILL and after a graceful leave, with real processes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import redis
from hypothesis import given, settings
from hypothesis import strategies as st

from eventfleet.bench.env import wait_settled
from eventfleet.chaos.paced import PacedProducer
from eventfleet.ledger.bundle import pack
from eventfleet.ledger.codec import encode
from eventfleet.ledger.events import AddItem, Topup
from eventfleet.ledger.shards import ShardCounts, item_shard, user_shard
from eventfleet.ledger.state import ShardState
from eventfleet.local.fleet import LocalFleet, WorkerProc
from eventfleet.local.redisserver import LocalRedis
from eventfleet.ops.status import is_idle
from eventfleet.producer.workload import mixed
from eventfleet.store.fold import fold
from eventfleet.store.keys import EVENT_FIELD, GROUP, VIA_FIELD, VIA_INBOX, Keys
from eventfleet.store.settings import Settings
from eventfleet.worker.assignment import assign
from eventfleet.worker.conn import Conn
from eventfleet.worker.standby import Standbys, standby_shards
from tests.fleet_utils import append_to_logs, log_lines, make_fleet, owners, setup_namespace
from tests.helpers import wait_for
from tests.recompute import check_against_logs

BATCH = 1000


# ---- which shards -----------------------------------------------------------------------
members_st = st.lists(
    st.from_regex(r"w[0-9]{1,3}", fullmatch=True), min_size=2, max_size=8, unique=True
)


@settings(max_examples=60)
@given(members_st, st.integers(1, 3))
def test_a_standby_is_whoever_wins_the_shard_when_its_owner_leaves(
    members: list[str], k: int
) -> None:
    shards = ShardCounts(8, 8).all_shards()
    owner = assign(shards, members)
    for me in members:
        mine = standby_shards(shards, members, me, 1)
        for s in shards:
            without_owner = assign([s], [m for m in members if m != owner[s]])
            assert (s in mine) == (without_owner.get(s) == me)
        # never a standby for a shard it owns; more standbys only add shards
        assert all(owner[s] != me for s in mine)
        assert mine <= standby_shards(shards, members, me, k)
    assert standby_shards(shards, members, members[0], 0) == set()
    assert standby_shards(shards, [members[0]], members[0], 1) == set()


# ---- what a standby folds ----------------------------------------------------------------
def _standbys(url: str, r: redis.Redis, ns: str, counts: ShardCounts) -> Standbys:
    s = Settings(redis_url=url, namespace=ns, worker_id="me", standbys=1)
    sb = Standbys(s, Conn(s, r), counts)
    sb.retarget(["me", "other"], [])
    return sb


def test_a_standby_folds_only_acked_entries_and_matches_a_fold_from_scratch(
    r: redis.Redis, redis_server: LocalRedis, namespace: str
) -> None:
    counts = setup_namespace(r, namespace, 2, 2)
    keys = Keys(namespace)
    events = list(mixed(400, seed=23, users=20, items=5))
    append_to_logs(r, keys, counts, events)  # as the owners' moves out of the inboxes leave them
    sb = _standbys(redis_server.url, r, namespace, counts)
    mine = [
        s
        for s in counts.all_shards()
        if s in standby_shards(counts.all_shards(), ["me", "other"], "me", 1)
    ]
    assert mine
    shard = mine[0]
    stream = keys.events(shard)
    reply: Any = r.xreadgroup(GROUP, "owner", {stream: ">"})
    delivered: list[Any] = reply[0][1]
    assert len(delivered) > 4
    acked = [eid for eid, _ in delivered[:3]]
    r.xack(stream, GROUP, *acked)  # the owner acked three; the rest are pending
    for _ in range(len(mine) + 1):  # one restore per tail, then the reads
        sb.tail()
    warm = sb.take(shard)
    assert warm is not None and warm.last_id == acked[-1].decode()
    # a forgery that came through the inbox, tailed by the warm standby: refused there too
    uid = next(u for u in range(1, 999) if user_shard(u, counts) == shard or shard[0] == "i")
    iid = next(
        f"g{n}" for n in range(999) if item_shard(f"g{n}", counts) == shard or shard[0] == "u"
    )
    forged = Topup(user_id=uid, amount=10**6) if shard[0] == "u" else AddItem(
        item_id=iid, count=10**6, price=1
    )  # fmt: skip
    source = "i0" if shard[0] == "u" else "u0"
    r.xadd(stream, {EVENT_FIELD: encode(forged, source, 99), VIA_FIELD: VIA_INBOX})
    more: Any = r.xreadgroup(GROUP, "owner", {stream: ">"})
    delivered += more[0][1]
    sb.retarget(["me", "other"], [])
    r.xack(stream, GROUP, *[eid for eid, _ in delivered])
    for _ in range(len(mine) + 1):
        sb.tail()
    warm = sb.take(shard)
    assert warm is not None and warm.last_id == delivered[-1][0].decode()
    scratch = ShardState(shard)
    fold(r, stream, scratch, counts, set())
    assert warm.to_snapshot() == scratch.to_snapshot()


def test_a_warm_copy_stays_until_its_takeover_when_the_owner_leaves_first(
    r: redis.Redis, redis_server: LocalRedis, namespace: str
) -> None:
    """The owner leaves the members at once; its lease goes a pass or more later (its hand-over
    done, or lapsed). Meanwhile the standby is the shard's owner-to-be, no longer its standby,
    and its copy must stay for the takeover; once it holds the shard, the copy
    goes."""
    counts = setup_namespace(r, namespace, 2, 2)
    s = Settings(redis_url=redis_server.url, namespace=namespace, worker_id="me", standbys=1)
    sb = Standbys(s, Conn(s, r), counts)
    shards = counts.all_shards()
    sb.retarget(["me", "other"], [])
    mine = sorted(standby_shards(shards, ["me", "other"], "me", 1))
    assert mine, "me stands by for no shard of 2+2: nothing is tested"
    for shard in mine:
        sb.adopt(shard, ShardState(shard))
    assert sb.shards == mine
    sb.retarget(["me"], [])  # "other" left; its leases not yet released
    assert sb.shards == mine
    sb.retarget(["me"], mine[:1])  # the first taken over (``take`` hands the copy over)
    assert sb.shards == mine[1:]
    sb.retarget(["me"], mine)  # all taken
    assert sb.shards == []


def test_a_standby_tails_about_a_batch_of_events_when_entries_are_bundles(
    r: redis.Redis, redis_server: LocalRedis, namespace: str
) -> None:
    """A tail reads about ``EVENTFLEET_BATCH_SIZE`` events per shard, as the owner's reads do:
    with bundles of 100 events, a batch of 300 is 3 entries (not 300 entries, 30,000 events
    folded in one go while the worker's own shards wait)."""
    counts = setup_namespace(r, namespace, 2, 2)
    keys = Keys(namespace)
    s = Settings(
        redis_url=redis_server.url, namespace=namespace, worker_id="me", standbys=1, batch_size=300
    )
    sb = Standbys(s, Conn(s, r), counts)
    sb.retarget(["me", "other"], [])
    shard = next(x for x in sorted(standby_shards(counts.all_shards(), ["me", "other"], "me", 1)))
    stream = keys.events(shard)
    if shard.startswith("u"):
        users = [u for u in range(1, 999) if user_shard(u, counts) == shard]
        evs: list[Any] = [Topup(user_id=users[n % len(users)], amount=1) for n in range(2000)]
    else:
        sku = [f"g{n}" for n in range(999) if item_shard(f"g{n}", counts) == shard]
        evs = [AddItem(item_id=sku[n % len(sku)], count=1, price=1) for n in range(2000)]
    for bundle in pack([encode(e, "bundler", n + 1) for n, e in enumerate(evs)]):
        r.xadd(stream, {EVENT_FIELD: bundle})
    entries = r.xlen(stream)
    assert entries == 20
    delivered: Any = r.xreadgroup(GROUP, "owner", {stream: ">"})
    r.xack(stream, GROUP, *[eid for eid, _ in delivered[0][1]])
    reads: list[int] = []
    while sum(reads) < entries and len(reads) < 100:
        reads.append(sb.tail())
    assert sum(reads) == entries and max(reads) == 3, reads
    warm = sb.take(shard)
    scratch = ShardState(shard)
    fold(r, stream, scratch, counts, set())
    assert warm is not None and warm.to_snapshot() == scratch.to_snapshot()


# ---- takeovers with real processes --------------------------------------------------------
def _takeovers(
    ws: list[WorkerProc], shards: set[str], since: dict[str, int]
) -> list[dict[str, object]]:
    return [
        e
        for w in ws
        for e in log_lines(w)[since.get(w.worker_id, 0) :]
        if e["event"] == "lease_acquired" and e["shard"] in shards
    ]


def _run(
    r: redis.Redis,
    url: str,
    namespace: str,
    tmp_path: Path,
    fleets: list[LocalFleet],
    graceful: bool,
    **env: str,
) -> list[dict[str, object]]:
    counts = setup_namespace(r, namespace, 8, 8)
    env = {"EVENTFLEET_STANDBYS": "1", **env}  # the default, said here as the test relies on it
    fleet = make_fleet(url, namespace, tmp_path, fleets, EVENTFLEET_LEASE_TTL_MS="5000", **env)
    ws = [fleet.start() for _ in range(3)]
    # settled, not merely every worker owning a shard: a hand-over of the first settling
    # still under way would be counted as a takeover of the leaver's shards below
    wait_settled(r, Keys(namespace), counts, [w.worker_id for w in ws], 60)
    if env["EVENTFLEET_STANDBYS"] != "0":
        # and each standby copy restored: a busy worker restores one per tail, so under a
        # loaded machine's load a copy could still be missing when the victim leaves
        members = [w.worker_id for w in ws]
        wait_for(
            lambda: all(
                standby_shards(counts.all_shards(), members, w.worker_id, 1)
                <= {e["shard"] for e in log_lines(w) if e["event"] == "standby_started"}
                for w in ws
            ),
            60,
            "every standby copy to be restored",
        )
    events = list(mixed(8000, seed=29))
    producer = PacedProducer(r, Keys(namespace), counts, events, rate=2000, chunk=200)
    producer.start()
    wait_for(lambda: producer.published >= 2000, 30, "events in flight")
    victim, others = ws[0], ws[1:]
    held = {s for s, o in owners(r, namespace, counts).items() if o == victim.worker_id}
    since = {w.worker_id: len(log_lines(w)) for w in others}
    if graceful:
        assert fleet.terminate(victim, timeout=30) == 0
    else:
        fleet.kill(victim)
    taken = wait_for(
        lambda: (t := _takeovers(others, held, since)) and {e["shard"] for e in t} == held and t,
        60,
        "every shard of the leaver to be taken over",
    )
    producer.join(60)
    assert producer.error is None
    wait_for(lambda: is_idle(r, Keys(namespace), counts), 90, "the fleet to become idle")
    check_against_logs(r, namespace, events)
    assert taken
    return list(taken)


def test_after_a_sigkill_the_standby_takes_over_from_its_warm_copy(
    r: redis.Redis,
    redis_server: LocalRedis,
    namespace: str,
    tmp_path: Path,
    fleet_factory: list[LocalFleet],
) -> None:
    taken = _run(r, redis_server.url, namespace, tmp_path, fleet_factory, graceful=False)
    assert all(e["warm"] for e in taken), json.dumps([e for e in taken if not e["warm"]])
    assert all(int(e["replayed"]) <= BATCH for e in taken), taken  # type: ignore[call-overload]


def test_after_a_graceful_leave_the_next_owner_starts_from_its_warm_copy(
    r: redis.Redis,
    redis_server: LocalRedis,
    namespace: str,
    tmp_path: Path,
    fleet_factory: list[LocalFleet],
) -> None:
    taken = _run(r, redis_server.url, namespace, tmp_path, fleet_factory, graceful=True)
    assert all(e["warm"] for e in taken), json.dumps([e for e in taken if not e["warm"]])
    assert all(int(e["replayed"]) <= BATCH for e in taken), taken  # type: ignore[call-overload]


def test_without_standbys_a_takeover_restores_the_snapshot(
    r: redis.Redis,
    redis_server: LocalRedis,
    namespace: str,
    tmp_path: Path,
    fleet_factory: list[LocalFleet],
) -> None:
    taken = _run(
        r,
        redis_server.url,
        namespace,
        tmp_path,
        fleet_factory,
        graceful=False,
        EVENTFLEET_STANDBYS="0",
    )
    assert not any(e["warm"] for e in taken), taken
