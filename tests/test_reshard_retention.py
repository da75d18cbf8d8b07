"""Online resharding with retention and the archive on (docs/DESIGN-DECISIONS.md, section
35): worker processes trim every log up to each periodic snapshot once ``eventfleet archive``
has it (``EVENTFLEET_RETAIN_S=0``, ``EVENTFLEET_ARCHIVE_REQUIRED=1``), an archiver runs over
and over with the counts it reads each time, and ``eventfleet reshard`` grows the live
namespace 2+2 -> 8+4 while two producers publish (one stale, one learning the counts). The
outcome streams are trimmed too, so what was decided is read from the archive. Every
parent's log is trimmed past its split marker and every child's past its first entries, so
only the archive holds where the seeds and the first forwards came from; ``verify --archive``
folds every shard from its first entry and is clean, checking every seed; ``verify`` without
the archive is clean too and says what it could not check. The same with worker processes
SIGKILLed while the command runs and after."""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import redis

from eventfleet.ledger.events import AddItem
from eventfleet.ledger.shards import ShardCounts
from eventfleet.ledger.split import marker_text
from eventfleet.ledger.state import ShardState
from eventfleet.local.fleet import LocalFleet
from eventfleet.ops.archive import archive
from eventfleet.ops.status import is_idle
from eventfleet.producer.client import Producer
from eventfleet.store.keys import EVENT_FIELD, Keys
from eventfleet.store.namespace import init_namespace, read_counts
from tests.fleet_utils import make_fleet
from tests.helpers import cli_json, cli_process, wait_for
from tests.test_reshard_grow import ITEMS, USERS, Publishing
from tests.test_retention import _settled
from tests.test_split_worker import balances

INIT, GROWN = ShardCounts(2, 2), ShardCounts(8, 4)
TRIMMING = {
    "EVENTFLEET_RETAIN_S": "0",
    "EVENTFLEET_SNAPSHOT_INTERVAL_S": "0.3",
    "EVENTFLEET_ARCHIVE_REQUIRED": "1",
}
"""Every log trimmed to each snapshot once the archive has it."""


class Archiver:
    """``archive`` run over and over on a thread, with the counts read before each run."""

    def __init__(self, client: redis.Redis, keys: Keys, root: Path) -> None:
        self.client = client
        """Its own (closed on the way out): a client is not shared between threads."""
        self.keys, self.root = keys, root
        self.runs, self.errors = 0, list[str]()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                counts = read_counts(self.client, self.keys)
                archive(self.client, self.keys, counts, self.root, segment_entries=200)
                self.runs += 1
            except Exception as exc:  # reported by the test
                self.errors.append(repr(exc))
                return

    def __enter__(self) -> Archiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(60)
        self.client.close()


def grow_killing(
    r: redis.Redis, keys: Keys, fleet: LocalFleet, env: dict[str, str], kills: int
) -> None:
    """The reshard command; with ``kills``, the owner of ``u0`` SIGKILLed as soon as the run
    has recorded its target (most often before it applied its marker: the command then waits
    for ``u0``'s children's seeds until a takeover applies it), then ``kills - 1`` random
    workers every half second, each replaced at once: a parent may be taken over before,
    during or after its split, its log trimmed to a snapshot on either side of its marker."""
    failed: list[str] = []

    def command() -> None:
        done = cli_process(
            "reshard", "--user-shards", "8", "--item-shards", "4", env=env, timeout=180,
            check=False,
        )  # fmt: skip
        if done.returncode:
            failed.append(done.stderr)

    thread = threading.Thread(target=command, daemon=True)
    thread.start()
    if kills:
        wait_for(lambda: r.hget(keys.meta, "reshard_target"), 60, "the run begun", 0.002)
        owner = r.get(keys.lease("u0")).decode().rpartition(":")[0]
        fleet.kill(next(w for w in fleet.live() if w.worker_id == owner))
        fleet.start()
    rng = random.Random(kills)
    for _ in range(kills - 1):
        time.sleep(0.5)  # the fault schedule, not a wait for a result
        fleet.kill(rng.choice(fleet.live()))
        fleet.start()
    thread.join(180)
    assert not thread.is_alive() and not failed, failed


@pytest.mark.parametrize("kills", [0, 6], ids=["calm", "sigkills"])
def test_a_growth_under_retention_and_the_archive_verifies_clean_from_the_archive(
    r: redis.Redis,
    namespace: str,
    env: dict[str, str],
    tmp_path: Path,
    fleet_factory: list[LocalFleet],
    kills: int,
) -> None:
    keys = Keys(namespace)
    init_namespace(r, keys, INIT)
    Producer(r, keys, INIT).publish([AddItem(item_id=i, count=10**6, price=1) for i in ITEMS])
    url = env["REDIS_URL"]
    fleet = make_fleet(url, namespace, tmp_path, fleet_factory, **TRIMMING)
    fleet.start(), fleet.start()
    leases = [keys.lease(s) for s in INIT.all_shards()]
    wait_for(lambda: all(r.mget(leases)), 60, "every shard owned")
    root = tmp_path / "archive"
    with Archiver(redis.Redis.from_url(url), keys, root) as archiver:
        with Publishing(r, keys, INIT, pace_s=0.05) as pub:
            wait_for(lambda: pub.rounds >= 3 and archiver.runs >= 2, 60, "publishing, archived")
            grow_killing(r, keys, fleet, env, kills)
            wait_for(lambda: pub.learner.counts.users == 8, 60, "a producer learning 8")
            at = pub.rounds
            wait_for(lambda: pub.rounds >= at + 3, 60, "rounds published after the growth")
        shards = GROWN.all_shards()
        try:
            wait_for(lambda: is_idle(r, keys, GROWN), 120, "the fleet to become idle")
            # every log down to its last snapshot: possible only once the archive has it all
            wait_for(lambda: all(_settled(r, keys, s) for s in shards), 90, "the last trims")
        except AssertionError as exc:
            shown = cli_process("status", env=env, check=False)
            raise AssertionError(f"{exc}:\n{shown.stdout}{shown.stderr}") from None
    assert not archiver.errors, archiver.errors
    assert len(fleet.live()) == 2
    assert sum(balances(r, keys, GROWN).values()) > 0  # each once, on its shard under 8+4
    marker = marker_text(8, 4).encode()
    for parent in INIT.all_shards():  # each marker is only in the archive now
        assert all(f[EVENT_FIELD] != marker for _i, f in r.xrange(keys.events(parent)))
    for child in set(shards) - set(INIT.all_shards()):  # and so are the first forwards
        info = r.xinfo_stream(keys.events(child))
        assert int(info["entries-added"]) > int(info["length"]), child
    archive(r, keys, GROWN, root, segment_entries=200)
    report = cli_json("verify", "--archive", str(root), "--json", env=env)
    assert report["ok"] and report["quiescent"], report["findings"]
    assert report["unchecked"] == [], report["unchecked"]
    assert sorted(s["shard"] for s in report["shards"]) == sorted(shards)
    assert all(s["from"] == "first entry" for s in report["shards"]), report["shards"]
    t = report["totals"]  # the outcomes are trimmed too: what was decided, from the archive
    assert (t["orders"], sum(t["outcomes"].values())) == (len(pub.orders), len(pub.orders))
    assert t["topups"] == 2 * 5 * len(USERS) * pub.rounds
    assert t["added"] == 10**6 * len(ITEMS)
    bare = cli_json("verify", "--json", env=env)
    assert bare["ok"], bare["findings"]
    assert bare["unchecked"], "without the archive, the trimmed history is not checked"


def test_a_child_is_kept_until_the_archive_has_seen_it(
    r: redis.Redis,
    namespace: str,
    env: dict[str, str],
    tmp_path: Path,
    fleet_factory: list[LocalFleet],
) -> None:
    """Without ``EVENTFLEET_ARCHIVE_REQUIRED``, in a namespace archived once before the growth
    (every parent held to its archived-up-to mark): each child, which the archive finds only
    once the counts are published, keeps every entry until an archive run has seen it, though
    its snapshots cover them (``eventfleet.worker.retention``: a child trimmed first left the
    archive a gap where its seed's history and first forwards were). Then it is trimmed like
    any shard, and ``verify --archive`` is clean from every shard's first entry."""
    keys = Keys(namespace)
    init_namespace(r, keys, INIT)
    Producer(r, keys, INIT).publish([AddItem(item_id=i, count=10**6, price=1) for i in ITEMS])
    url = env["REDIS_URL"]
    trimming = {k: v for k, v in TRIMMING.items() if k != "EVENTFLEET_ARCHIVE_REQUIRED"}
    fleet = make_fleet(url, namespace, tmp_path, fleet_factory, **trimming)
    root = tmp_path / "archive"
    archive(r, keys, INIT, root, segment_entries=200)  # before any trim: the parents complete
    fleet.start(), fleet.start()
    leases = [keys.lease(s) for s in INIT.all_shards()]
    wait_for(lambda: all(r.mget(leases)), 60, "every shard owned")
    with Publishing(r, keys, INIT, pace_s=0.05) as pub:
        wait_for(lambda: pub.rounds >= 2, 60, "publishing")
        cli_process("reshard", "--user-shards", "8", "--item-shards", "4", env=env)
        wait_for(lambda: pub.learner.counts.users == 8, 60, "a producer learning 8")
        at = pub.rounds
        wait_for(lambda: pub.rounds >= at + 3, 60, "rounds published after the growth")
    wait_for(lambda: is_idle(r, keys, GROWN), 120, "the fleet to become idle")
    children = [s for s in GROWN.all_shards() if s not in INIT.all_shards()]

    def covered(child: str) -> bool:  # its snapshot covers its last entry: trimmable
        snap: Any = r.get(keys.snapshot(child))
        last: Any = r.xrevrange(keys.events(child), count=1)
        return (
            bool(snap and last)
            and ShardState.from_snapshot(snap, child).last_id == last[0][0].decode()
        )

    wait_for(lambda: all(covered(c) for c in children), 60, "every child's snapshot")
    for child in children:  # nothing trimmed while the archive has not seen it
        info = r.xinfo_stream(keys.events(child))
        assert int(info["entries-added"]) == int(info["length"]) > 1, child
    cli_process("archive", str(root), env=env)
    wait_for(lambda: all(_settled(r, keys, s) for s in children), 60, "the children trimmed")
    cli_process("archive", str(root), env=env)
    report = cli_json("verify", "--archive", str(root), "--json", env=env)
    assert report["ok"] and report["quiescent"], report["findings"]
    assert report["unchecked"] == [], report["unchecked"]
    assert all(s["from"] == "first entry" for s in report["shards"]), report["shards"]
