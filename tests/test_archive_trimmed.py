"""The archive finds a head its streams lost to retention before it saw them: ``XTRIM``, what
retention trims with, leaves the stream's ``max-deleted-entry-id`` as it was (only ``XDEL``
raises it), so such entries are found by counting (``eventfleet.ops.archive.writer``:
``trimmed_head``) and recorded as a gap, and ``verify --archive`` does not claim the shard
from its first event. Before, the archive claimed it complete and ``verify --archive``
reported the trimmed entries as ``lost``."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis

from eventfleet.ledger.shards import ShardCounts
from eventfleet.ops.archive import archive
from eventfleet.ops.archive.segments import Gap, Manifest, load_manifest
from eventfleet.store.keys import EVENT_FIELD, Keys
from eventfleet.store.namespace import init_namespace

COUNTS = ShardCounts(2, 2)


def _logged(r: redis.Redis, keys: Keys, n: int) -> list[str]:
    return [r.xadd(keys.events("u0"), {EVENT_FIELD: f"e{i}"}).decode() for i in range(n)]


@pytest.fixture
def keys(r: redis.Redis, namespace: str) -> Keys:
    k = Keys(namespace)
    init_namespace(r, k, COUNTS)
    return k


def _manifest(root: Path) -> Manifest:
    m = load_manifest(root, "u0", "events")
    assert m is not None
    return m


def test_a_head_trimmed_before_the_first_run_is_a_gap(
    r: redis.Redis, keys: Keys, tmp_path: Path
) -> None:
    added = _logged(r, keys, 6)
    r.xtrim(keys.events("u0"), minid=added[3], approximate=False)
    assert r.xinfo_stream(keys.events("u0"))["max-deleted-entry-id"] == b"0-0"  # why
    archive(r, keys, COUNTS, tmp_path)
    ms, seq = (int(x) for x in added[3].split("-"))
    before = f"{ms}-{seq - 1}" if seq else f"{ms - 1}-18446744073709551615"
    assert (_manifest(tmp_path).count, _manifest(tmp_path).gaps) == (3, [Gap("0-0", before)])
    _logged(r, keys, 2)
    archive(r, keys, COUNTS, tmp_path)  # a later run adds no gap
    assert (_manifest(tmp_path).count, len(_manifest(tmp_path).gaps)) == (5, 1)
    other = load_manifest(tmp_path, "u1", "events")
    assert other is not None and other.complete  # never trimmed


def test_trimming_what_was_archived_leaves_the_archive_complete(
    r: redis.Redis, keys: Keys, tmp_path: Path
) -> None:
    added = _logged(r, keys, 6)
    archive(r, keys, COUNTS, tmp_path)
    r.xtrim(keys.events("u0"), minid=added[4], approximate=False)  # below the archived mark
    later = _logged(r, keys, 2)
    archive(r, keys, COUNTS, tmp_path)
    m = _manifest(tmp_path)
    assert m.complete and (m.count, m.last) == (8, later[-1])
    r.xtrim(keys.events("u0"), maxlen=0, approximate=False)  # every entry gone, all archived
    archive(r, keys, COUNTS, tmp_path)
    assert _manifest(tmp_path).complete


def test_a_stream_emptied_before_the_archive_saw_it_is_a_gap_to_its_last_id(
    r: redis.Redis, keys: Keys, tmp_path: Path
) -> None:
    added = _logged(r, keys, 3)
    r.xtrim(keys.events("u0"), maxlen=0, approximate=False)
    archive(r, keys, COUNTS, tmp_path)
    assert _manifest(tmp_path).gaps == [Gap(after="0-0", upto=added[-1])]
