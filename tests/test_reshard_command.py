"""``eventfleet reshard --user-shards N --item-shards M`` as a process of its own, growing a
live namespace (docs/DESIGN-DECISIONS.md section 35, docs/SCALING.md section 7) the way we
ship it: the redis-server with the shipped ACL file, the command as the admin user, worker
processes as the worker user, two producers as the producer user publishing meanwhile (one
never re-reads the counts, one learns them). Its progress lines and ``--json`` result;
SIGKILLed once its markers are appended, refused while the killed run's lease holds, then
re-run to completion with no marker twice; a second run while one holds the lease refused
(exit 1), the first stopped by SIGTERM letting its lease go; a worker SIGKILLed before it
applies its markers, taken over while the command waits; ``eventfleet status`` showing the
run's progress meanwhile. Every event applied once, on the shard the new counts give it
(tests/test_reshard_grow.py: ``settled``), and ``verify`` clean."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from eventfleet.ledger.events import AddItem
from eventfleet.ledger.shards import ShardCounts
from eventfleet.local.fleet import LocalFleet
from eventfleet.ops.reshard_online import lease_key
from eventfleet.producer.client import Producer
from eventfleet.store.keys import Keys
from eventfleet.store.namespace import read_counts
from tests.acl_stack import AclStack
from tests.helpers import wait_for
from tests.secure_redis import connect
from tests.test_reshard_grow import ITEMS, Publishing, one_marker_each, settled

PACE_S = 0.05
"""Between the producers' rounds: the fleet stops for a while in some tests."""
KEYS = Keys("eventfleet")


class Shipped:
    """The namespace at 2 + 2 shards with ``ITEMS`` in stock, as the shipped users make it:
    ``root`` for the test's checks, ``producer`` for the producers."""

    def __init__(self, port: int, tmp: Path, fleets: list[LocalFleet]) -> None:
        self.stack = AclStack(port, tmp, fleets)
        self.stack.init("--user-shards", "2", "--item-shards", "2")
        self.root = connect(port, "root", decode_responses=False)
        self.producer = self.stack.client("producer")
        Producer(self.producer, KEYS, ShardCounts(2, 2)).publish(
            [AddItem(item_id=i, count=10**6, price=1) for i in ITEMS]
        )

    def publishing(self) -> Publishing:
        return Publishing(self.producer, KEYS, read_counts(self.root, KEYS), PACE_S)

    def workers(self) -> LocalFleet:
        """Two worker processes, once they own every shard."""
        fleet = self.stack.workers(2)
        shards = read_counts(self.root, KEYS).all_shards()
        wait_for(
            lambda: self.root.exists(*(KEYS.lease(s) for s in shards)) == len(shards),
            60,
            "the workers owning every shard",
        )
        return fleet

    def stop_workers(self) -> None:
        fleet = self.stack.fleet
        assert fleet is not None
        for w in fleet.live():
            assert fleet.terminate(w, timeout=60) == 0

    def reshard(self, *args: str) -> subprocess.CompletedProcess[str]:
        """``eventfleet reshard <args>`` as a process, logged in as the admin user (a wait
        shorter than the default: a fleet that never seeds fails the test sooner)."""
        return subprocess.run(
            [sys.executable, "-m", "eventfleet", "reshard", "--wait", "120", *args],
            env=self.stack.env["admin"],
            capture_output=True,
            text=True,
            timeout=240,
            check=False,
        )

    def command(self, *args: str) -> Command:
        return Command(self.stack.env["admin"], "reshard", *args)

    def status(self) -> dict[str, Any]:
        doc: dict[str, Any] = json.loads(self.stack.ok("admin", "status", "--json"))
        return doc

    def verified(self) -> None:
        self.stack.idle()
        doc = self.stack.verify()
        assert doc["ok"], doc


class Command:
    """``eventfleet <args>`` started in the background; its stderr read line by line."""

    def __init__(self, env: dict[str, str], *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "eventfleet", *args],
            env={**os.environ, **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        assert self.proc.stderr is not None
        self.reader = threading.Thread(target=self._read, args=(self.proc.stderr,), daemon=True)
        self.reader.start()

    def _read(self, stream: Any) -> None:
        for line in stream:
            self.lines.put(line.rstrip("\n"))

    def until(self, text: str, timeout: float = 60) -> None:
        """Wait for a stderr line holding ``text``."""

        def seen() -> bool:
            with contextlib.suppress(queue.Empty):
                while True:
                    self.seen.append(self.lines.get_nowait())
            return any(text in line for line in self.seen)

        wait_for(seen, timeout, f"{text!r} on the command's stderr (so far: {self.seen})")

    def end(self, sig: int | None = None) -> int:
        if sig is not None:
            self.proc.send_signal(sig)
        code = self.proc.wait(60)
        self.reader.join(30)
        with contextlib.suppress(AssertionError):
            self.until("\0", 0)  # what is left, into ``seen``
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()
        return code


def test_the_command_grows_a_live_namespace(
    port: int, tmp_path: Path, fleet_factory: list[LocalFleet]
) -> None:
    ns = Shipped(port, tmp_path, fleet_factory)
    ns.workers()
    with ns.publishing() as pub:
        wait_for(lambda: pub.rounds >= 2, 60, "producers publishing")
        res = ns.reshard("--user-shards", "4", "--item-shards", "4", "--json")
        assert res.returncode == 0, res.stderr
        assert json.loads(res.stdout) == {
            "from": "2,2",
            "target": "4,4",
            "state": "done",
            "continued": None,
            "new_shards": ["u2", "u3", "i2", "i3"],
            "markers_appended": ["u0", "u1", "i0", "i1"],
        }
        steps = [
            line.removeprefix("reshard: ")
            for line in res.stderr.splitlines()
            if line.startswith("reshard: ")
        ]
        assert steps[:3] == [
            "recorded 2,2 -> 4,4 (users,items)",
            "new shards made: u2 u3 i2 i3",
            "split markers appended: u0 u1 i0 i1",
        ], res.stderr
        split = sorted(s.partition(" ")[0] for s in steps if " split (" in s)
        assert split == ["i0", "i1", "u0", "u1"], steps
        assert steps[-3:] == [
            "every parent split: every new shard seeded",
            "counts published: 4 user and 4 item shards",
            "done",
        ]
        assert read_counts(ns.root, KEYS).users == 4 and not ns.root.exists(lease_key(KEYS))
        more_rounds_then_settled(ns, pub, ShardCounts(4, 4))
    one_marker_each(ns.root, KEYS, 4, 4)
    assert ns.status()["reshard"]["state"] == "done"
    ns.verified()
    res = ns.reshard("--user-shards", "4", "--item-shards", "4")
    assert res.returncode == 2 and "nothing to do" in res.stderr


@pytest.mark.parametrize(
    "at", ["recorded", "new shards made", "split markers appended: u0 u1 i0 i1"]
)
def test_a_killed_run_is_re_run_to_completion(
    port: int, tmp_path: Path, fleet_factory: list[LocalFleet], at: str
) -> None:
    """The fleet stopped, the producers going on: the command is SIGKILLed as soon as it
    says ``at`` (it cannot finish: no worker seeds the new shards), somewhere between its
    record and its wait. Its lease holds (a re-run refused, exit 1) until it lapses, and
    `status` shows every parent waited for; with the fleet back, a re-run continues and
    completes, no marker appended twice."""
    ns = Shipped(port, tmp_path, fleet_factory)
    ns.workers()
    with ns.publishing() as pub:
        wait_for(lambda: pub.rounds >= 2, 60, "producers publishing")
        ns.stop_workers()
        killed = ns.command("--user-shards", "8", "--item-shards", "4")
        killed.until(at)
        assert killed.end(signal.SIGKILL) == -signal.SIGKILL
        meta = ns.root.hgetall(KEYS.meta)
        state = meta[b"reshard_state"].decode()
        assert state in ("preparing", "marked") and meta[b"user_shards"] == b"2"
        assert ns.status()["reshard"] == {
            "target": "8,4",
            "from": "2,2",
            "state": state,
            "split": [],
            "waiting": ["u0", "u1", "i0", "i1"],
        }
        shown = ns.stack.ok("admin", "status")
        assert f"reshard 2,2 -> 8,4 (users,items): {state}; split: -; waiting: u0 u1 i0 i1" in (
            shown
        )
        res = ns.reshard("--user-shards", "8", "--item-shards", "4")
        assert res.returncode == 1 and "holds the lease" in res.stderr, res.stderr
        assert 0 < ns.root.pttl(lease_key(KEYS)) <= 30_000
        ns.root.delete(lease_key(KEYS))  # it lapsed (30 s at most)
        ns.workers()
        res = ns.reshard("--user-shards", "8", "--item-shards", "4")
        assert res.returncode == 0, res.stderr
        assert f"continuing the run 2,2 -> 8,4 (users,items), left {state}" in res.stderr
        if state == "marked":
            assert "split markers appended: - (4 held one or had split already)" in res.stderr
        assert read_counts(ns.root, KEYS) == ShardCounts(8, 4)
        more_rounds_then_settled(ns, pub, ShardCounts(8, 4))
    one_marker_each(ns.root, KEYS, 8, 4)
    ns.verified()


def more_rounds_then_settled(ns: Shipped, pub: Publishing, counts: ShardCounts) -> None:
    """Three more rounds published, by then routed with ``counts`` by the producer that
    learns them; then the producers halted and every event followed (``settled``)."""
    at = pub.rounds
    wait_for(lambda: pub.rounds >= at + 3 and pub.learner.counts.users == counts.users, 60, "more")
    pub.halt()
    settled(ns.root, KEYS, pub, counts)


def test_a_second_run_is_refused_and_a_sigterm_lets_the_lease_go(
    port: int, tmp_path: Path, fleet_factory: list[LocalFleet]
) -> None:
    """No fleet: the first run waits for its seeds; a second run exits 1 naming the lease;
    SIGTERM stops the first (exit 1, the run left to a re-run, its lease let go); with the
    fleet up, a re-run completes."""
    ns = Shipped(port, tmp_path, fleet_factory)
    first = ns.command("--user-shards", "4")
    first.until("split markers appended")
    second = ns.reshard("--user-shards", "4")
    assert second.returncode == 1 and "another reshard run holds the lease" in second.stderr
    assert first.end(signal.SIGTERM) == 1
    assert any("stopped by SIGTERM" in line for line in first.seen), first.seen
    assert not ns.root.exists(lease_key(KEYS))
    assert read_counts(ns.root, KEYS) == ShardCounts(2, 2)
    ns.workers()
    with ns.publishing() as pub:
        res = ns.reshard("--user-shards", "4")
        assert res.returncode == 0, res.stderr
        assert (
            res.stdout
            == "grown from 2 user and 2 item shards to 4 and 2: the counts are published\n"
        )
        pub.halt()
        settled(ns.root, KEYS, pub, ShardCounts(4, 2))


def test_a_worker_killed_before_it_applies_the_markers_is_taken_over(
    port: int, tmp_path: Path, fleet_factory: list[LocalFleet]
) -> None:
    """Both worker processes paused (SIGSTOP) while the command appends its markers; one is
    then SIGKILLed, the other resumed: it takes the dead one's shards over once their leases
    lapse, applies their markers, and the command, still waiting, completes. Every event
    once on its shard, verify clean."""
    ns = Shipped(port, tmp_path, fleet_factory)
    fleet = ns.workers()
    with ns.publishing() as pub:
        wait_for(lambda: pub.rounds >= 2, 60, "producers publishing")
        first, second = fleet.live()
        for w in (first, second):
            fleet.pause(w)
        run = ns.command("--user-shards", "4", "--item-shards", "4", "--wait", "120")
        run.until("split markers appended: u0 u1 i0 i1")
        fleet.kill(first)
        fleet.resume(second)
        assert run.end() == 0, run.seen
        assert any("counts published: 4 user and 4 item shards" in s for s in run.seen)
        more_rounds_then_settled(ns, pub, ShardCounts(4, 4))
    one_marker_each(ns.root, KEYS, 4, 4)
    ns.verified()
