"""``eventfleet archive``: killed (SIGKILL) at any point and re-run, it neither loses nor
repeats an entry; a re-run with nothing new writes nothing; ``verify --archive`` refuses a
damaged segment and another namespace's archive in one line."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import redis

from eventfleet.ledger.codec import encode_outcome
from eventfleet.ledger.events import OrderOutcome
from eventfleet.ops.archive import Archive
from eventfleet.ops.archive.segments import MANIFEST, load_manifest, stream_dir
from eventfleet.ops.archive.writer import stream_key, streams_of
from eventfleet.producer.workload import mixed
from eventfleet.store.keys import Keys
from tests.fleet_utils import append_to_logs, setup_namespace
from tests.helpers import cli, wait_for


def _segments(root: Path) -> int:
    return sum(1 for _ in root.glob("*/*/*.jsonl.gz")) if root.exists() else 0


def _seed(r: redis.Redis, keys: Keys, n: int) -> Any:
    counts = setup_namespace(r, keys.ns, 2, 2)
    append_to_logs(r, keys, counts, mixed(n, seed=3, users=80, items=15))
    for s in counts.all_shards():  # records as the workers write them (seq first)
        for i in range(1, 301):
            r.xadd(keys.dlq(s), {"seq": i, "reason": "bad_json", "raw": b"\xff\xfe not utf-8"})
            if s.startswith("u"):
                out = OrderOutcome(
                    order_id=f"o{i}", user_id=i, item_id="x", qty=1, amount=1,
                    status="confirmed", reason=None,
                )  # fmt: skip
                r.xadd(keys.outcomes(s), {"seq": i, "outcome": encode_outcome(out)})
    return counts


def test_archive_killed_at_any_point_then_rerun_neither_loses_nor_repeats(
    r: redis.Redis, env: dict[str, str], namespace: str, tmp_path: Path
) -> None:
    keys = Keys(namespace)
    counts = _seed(r, keys, 20_000)
    root = tmp_path / "archive"
    cmd = [sys.executable, "-m", "eventfleet", "archive", str(root), "--segment-entries", "250"]
    rng = random.Random(5)
    kills = 0
    for _ in range(40):
        proc = subprocess.Popen(cmd, env={**os.environ, **env}, stdout=subprocess.DEVNULL)
        if kills < 6:
            before = _segments(root)
            wait_for(lambda: proc.poll() is not None or _segments(root) > before, 120, "a segment")  # noqa: B023
            if proc.poll() is None:
                # the fault: SIGKILL at a random moment after the run has written something
                time.sleep(rng.uniform(0, 0.05))
                proc.kill()
                proc.wait()
                kills += 1
                continue
        assert proc.wait(timeout=300) == 0
        break
    assert kills >= 3, kills

    archived_total = 0
    for s in counts.all_shards():
        for stream in streams_of(s):
            live = [(e.decode(), f) for e, f in r.xrange(stream_key(keys, s, stream))]
            got = list(Archive(root, namespace, counts).entries(s, stream))
            assert got == live, f"{s}/{stream}: archive differs from Redis"
            archived_total += len(got)
            m = load_manifest(root, s, stream)
            assert m is not None and m.complete and m.count == len(live)
            listed = {seg.file for seg in m.segments} | {MANIFEST}
            assert {p.name for p in stream_dir(root, s, stream).iterdir()} == listed
            mark = r.hget(keys.archived(s), stream)
            assert mark is not None and mark.decode() == live[-1][0]
    assert archived_total > 20_000

    files = sorted(p.name for p in root.rglob("*.jsonl.gz"))
    again = cli("archive", str(root), "--json", env=env)
    assert '"entries":0' in again.stdout and '"segments":0' in again.stdout
    assert sorted(p.name for p in root.rglob("*.jsonl.gz")) == files


def test_verify_archive_refuses_damage_and_another_namespace_in_one_line(
    r: redis.Redis, env: dict[str, str], namespace: str, tmp_path: Path
) -> None:
    keys = Keys(namespace)
    _seed(r, keys, 500)
    root = tmp_path / "archive"
    out = cli("archive", str(root), env=env).stdout
    assert out.startswith("archived ")
    setup_namespace(r, f"{namespace}x", 2, 2)
    other_env = {**env, "EVENTFLEET_NAMESPACE": f"{namespace}x"}
    other = cli("archive", str(root), env=other_env, check=False)
    assert other.returncode == 1 and "archives namespace" in other.stderr
    assert len(other.stderr.strip().splitlines()) == 1
    missing = cli("verify", "--archive", str(tmp_path / "nope"), env=env, check=False)
    assert missing.returncode == 2 and "does not exist" in missing.stderr

    seg = next(root.glob("u0/events/*.jsonl.gz"))
    data = bytearray(seg.read_bytes())
    data[len(data) // 2] ^= 0xFF
    seg.write_bytes(bytes(data))
    bad = cli("verify", "--archive", str(root), env=env, check=False)
    assert bad.returncode == 1
    assert "sha256" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
