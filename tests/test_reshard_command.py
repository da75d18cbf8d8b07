"""``eventfleet reshard --user-shards N --item-shards M`` as a process of its own, growing a
live namespace (docs/DESIGN-DECISIONS.md section 35, docs/SCALING.md section 7) under workers
while two producers publish (one never re-reads the counts, one learns them): its progress
lines and ``--json`` result; SIGKILLed once its markers are appended, refused while the killed
run's lease holds, then re-run to completion with no marker twice; a second run while one
holds the lease refused (exit 1), the first stopped by SIGTERM letting its lease go;
``eventfleet status`` showing the run's progress meanwhile. Every event applied once, on the
shard the new counts give it (tests/test_reshard_grow.py: ``settled``)."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

import redis

from eventfleet.ledger.shards import ShardCounts
from eventfleet.ops.reshard_online import lease_key
from eventfleet.store.namespace import read_counts
from tests.helpers import cli, cli_json, cli_process, wait_for
from tests.test_reshard_grow import Publishing, one_marker_each, settled, stocked
from tests.test_split_worker import running_worker

PACE_S = 0.05
"""Between the producers' rounds: the fleet stops for a while in some tests."""


@contextlib.contextmanager
def workers(r: redis.Redis, namespace: str) -> Iterator[None]:
    """The namespace's workers, stopped (drained) on the way out."""
    with running_worker(r, namespace):
        yield


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
    r: redis.Redis, namespace: str, env: dict[str, str]
) -> None:
    keys = stocked(r, namespace)
    with workers(r, namespace), Publishing(r, keys, read_counts(r, keys), PACE_S) as pub:
        wait_for(lambda: pub.rounds >= 2, 30, "producers publishing")
        res = cli_process("reshard", "--user-shards", "4", "--item-shards", "4", "--json", env=env)
        assert json.loads(res.stdout) == {
            "from": "2,2",
            "target": "4,4",
            "state": "done",
            "continued": None,
            "new_shards": ["u2", "u3", "i2", "i3"],
            "markers_appended": ["u0", "u1", "i0", "i1"],
        }
        steps = [line.removeprefix("reshard: ") for line in res.stderr.splitlines()]
        assert steps[:3] == [
            "recorded 2,2 -> 4,4 (users,items)",
            "new shards made: u2 u3 i2 i3",
            "split markers appended: u0 u1 i0 i1",
        ], res.stderr
        assert sorted(s.partition(" ")[0] for s in steps if " split (" in s) == [
            "i0",
            "i1",
            "u0",
            "u1",
        ]
        assert steps[-3:] == [
            "every parent split: every new shard seeded",
            "counts published: 4 user and 4 item shards",
            "done",
        ]
        assert read_counts(r, keys).users == 4 and not r.exists(lease_key(keys))
        at = pub.rounds
        wait_for(lambda: pub.rounds >= at + 3 and pub.learner.counts.users == 4, 30, "more")
        pub.halt()
        settled(r, keys, pub, ShardCounts(4, 4))
    one_marker_each(r, keys, 4, 4)
    assert cli_json("status", "--json", env=env)["reshard"]["state"] == "done"
    res = cli("reshard", "--user-shards", "4", "--item-shards", "4", env=env, check=False)
    assert res.returncode == 2 and "nothing to do" in res.stderr


def test_a_run_killed_after_its_markers_is_re_run_to_completion(
    r: redis.Redis, namespace: str, env: dict[str, str]
) -> None:
    """The fleet stopped, the producers going on: the command appends its markers and waits;
    SIGKILLed there, its lease holds (a re-run refused, exit 1) until it lapses, and `status`
    shows every parent waited for; with the fleet back, a re-run continues and completes."""
    keys = stocked(r, namespace)
    with Publishing(r, keys, read_counts(r, keys), PACE_S) as pub:
        with workers(r, namespace):
            wait_for(lambda: pub.rounds >= 2, 30, "producers publishing")
        killed = Command(env, "reshard", "--user-shards", "8", "--item-shards", "4")
        killed.until("split markers appended: u0 u1 i0 i1")
        assert killed.end(signal.SIGKILL) == -signal.SIGKILL
        meta = r.hgetall(keys.meta)
        assert (meta[b"reshard_state"], meta[b"user_shards"]) == (b"marked", b"2")
        shown = cli_json("status", "--json", env=env)["reshard"]
        assert shown == {
            "target": "8,4",
            "from": "2,2",
            "state": "marked",
            "split": [],
            "waiting": ["u0", "u1", "i0", "i1"],
        }
        assert "reshard 2,2 -> 8,4 (users,items): marked; split: -; waiting: u0 u1 i0 i1" in (
            cli("status", env=env).stdout
        )
        res = cli_process(
            "reshard", "--user-shards", "8", "--item-shards", "4", env=env, check=False
        )
        assert res.returncode == 1 and "holds the lease" in res.stderr, res.stderr
        assert 0 < r.pttl(lease_key(keys)) <= 30_000
        r.delete(lease_key(keys))  # it lapsed (30 s at most)
        with workers(r, namespace):
            res = cli_process("reshard", "--user-shards", "8", "--item-shards", "4", env=env)
            assert "continuing the run 2,2 -> 8,4 (users,items), left marked" in res.stderr
            assert "split markers appended: - (4 held one or had split already)" in res.stderr
            assert read_counts(r, keys) == ShardCounts(8, 4)
            at = pub.rounds
            wait_for(lambda: pub.rounds >= at + 3 and pub.learner.counts.users == 8, 30, "more")
            pub.halt()
            settled(r, keys, pub, ShardCounts(8, 4))
    one_marker_each(r, keys, 8, 4)


def test_a_second_run_is_refused_and_a_sigterm_lets_the_lease_go(
    r: redis.Redis, namespace: str, env: dict[str, str]
) -> None:
    """No fleet: the first run waits for its seeds; a second run exits 1 naming the lease;
    SIGTERM stops the first (exit 1, the run left to a re-run, its lease let go); with the
    fleet up, a re-run completes."""
    keys = stocked(r, namespace)
    first = Command(env, "reshard", "--user-shards", "4")
    first.until("split markers appended")
    second = cli_process("reshard", "--user-shards", "4", env=env, check=False)
    assert second.returncode == 1 and "another reshard run holds the lease" in second.stderr
    assert first.end(signal.SIGTERM) == 1
    assert any("stopped by SIGTERM" in line for line in first.seen), first.seen
    assert not r.exists(lease_key(keys))
    assert read_counts(r, keys) == ShardCounts(2, 2)
    with workers(r, namespace), Publishing(r, keys, read_counts(r, keys), PACE_S) as pub:
        cli_process("reshard", "--user-shards", "4", env=env)
        pub.halt()
        settled(r, keys, pub, ShardCounts(4, 2))
