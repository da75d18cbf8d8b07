"""``verify`` and ``state`` across an online growth (docs/DESIGN-DECISIONS.md section 35)
against the session's Redis, on namespaces grown live by ``reshard_online.grow`` under a
worker with splits on (tests/test_reshard_grow.py's helpers): grown once or twice they verify
clean, each shard created by growth folded from the seed its parent's fold gives; a damaged
seed, a forward missing from a child's log and a forward written twice are found; a parent
trimmed past its marker leaves its children unchecked, not reported; a live fleet's forwards
in flight are no finding; a run not yet published is verified with its new shards; ``state``
of every parent and child equals the worker's read model, and the commands agree, ``state
all`` before the counts are published included;
``verify --archive`` folds across the splits, an archive begun before them included."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import redis

from eventfleet.ledger.shards import ShardCounts
from eventfleet.ledger.state import ShardState
from eventfleet.ops.reader import current
from eventfleet.ops.reshard_online import Run, grow
from eventfleet.ops.verify import Report, verify
from eventfleet.ops.verify.report import Finding
from eventfleet.store.keys import Keys
from eventfleet.store.namespace import read_counts
from tests.helpers import wait_for
from tests.test_reshard_grow import ITEMS, USERS, Publishing, settled, stocked
from tests.test_split_worker import running_worker


def grown(
    r: redis.Redis,
    namespace: str,
    steps: list[tuple[int, int]],
    before: Callable[[Keys], object] = lambda keys: None,
    after: Callable[[Keys], object] = lambda keys: None,
) -> Keys:
    """A namespace of 2 + 2 grown live through each (users, items) of ``steps`` while two
    producers publish (one stale, one learning the counts), then left idle with its worker
    stopped. ``before`` runs once events are applied, before the first growth; ``after``
    after the last one, while the producers still publish."""
    keys = stocked(r, namespace)
    with running_worker(r, namespace), Publishing(r, keys, read_counts(r, keys)) as pub:
        wait_for(lambda: pub.rounds >= 2, 30, "producers publishing")
        # each parent's state holds keys its children take: the seeds are not empty
        old = ShardCounts(2, 2).all_shards()
        wait_for(lambda: all(r.hlen(keys.model(s)) > 5 for s in old), 30, "events applied")
        before(keys)
        for users, items in steps:
            run = Run(r, keys)
            run.take()
            grow(run, users, items, wait_s=30)
            run.release()
            at = pub.rounds
            wait_for(lambda at=at: pub.rounds >= at + 2, 30, "more rounds")
        after(keys)
        pub.halt()
        settled(r, keys, pub, ShardCounts(*steps[-1]))
        idle(r, keys)
    return keys


def idle(r: redis.Redis, keys: Keys) -> None:
    from eventfleet.ops.status import is_idle

    wait_for(lambda: is_idle(r, keys, read_counts(r, keys)), 30, "the fleet idle")


def check(r: redis.Redis, keys: Keys) -> Report:
    return verify(r, keys, read_counts(r, keys))


def shown(report: Report) -> list[Finding]:
    return report.findings.shown


def forwarded(r: redis.Redis, keys: Keys, shard: str) -> list[tuple[bytes, dict[bytes, bytes]]]:
    got: Any = r.xrange(keys.events(shard))
    return [(eid, f) for eid, f in got if f.get(b"fwd")]


def test_a_namespace_grown_once_verifies_clean(r: redis.Redis, namespace: str) -> None:
    keys = grown(r, namespace, [(4, 4)])
    report = check(r, keys)
    assert report.ok, shown(report)
    assert report.quiescent
    assert set(report.folds) == set(ShardCounts(4, 4).all_shards())
    assert all(f.complete for f in report.folds.values())
    assert not [u for u in report.unchecked if "conservation" in u], report.unchecked
    # each child's stored snapshot (its seed or a later one) was compared with the fold
    assert {report.folds[s].snapshot for s in ("u2", "u3", "i2", "i3")} == {"match"}
    for child in ("u2", "u3", "i2", "i3"):  # what the parents forwarded was accounted
        sender = f"{child[0]}{int(child[1:]) - 2}"
        assert report.folds[sender].forwards.get(child), child


def test_a_namespace_grown_twice_verifies_clean(r: redis.Redis, namespace: str) -> None:
    """2+2 -> 4+2 -> 8+2: a grandchild starts from the seed its parent's fold gave, itself
    folded from the seed of the first growth; entries forwarded twice (path ``u0.u2``)."""
    keys = grown(r, namespace, [(4, 2), (8, 2)])
    report = check(r, keys)
    assert report.ok, shown(report)
    assert set(report.folds) == set(ShardCounts(8, 2).all_shards())
    paths = {p for f in report.folds.values() for per in f.forwarded_in.values() for p, *_ in per}
    assert {p for p in paths if p.count(".") == 1}, paths  # two hops accounted


def test_a_damaged_seed_is_a_mismatch(r: redis.Redis, namespace: str) -> None:
    keys = grown(r, namespace, [(4, 4)])
    seed = check(r, keys).folds["u0"].seeds["u2"]
    user = next(iter(seed.balances))
    seed.balances[user] += 7
    r.set(keys.snapshot("u2"), seed.to_snapshot())
    report = check(r, keys)
    assert [(f.kind, f.shard, f.what) for f in shown(report)] == [
        ("mismatch", "u2", "seed (snapshot @0-0)")
    ], shown(report)
    assert f"balances[{user}]" in shown(report)[0].detail


def _without(r: redis.Redis, keys: Keys, shard: str, gone: bytes) -> None:
    """``shard``'s log rewritten without the entry ``gone``, the same ids, leaving no trace
    of a deletion (as if the forward had never been written)."""
    tmp = f"{keys.events(shard)}:rewrite"
    for eid, fields in r.xrange(keys.events(shard)):  # type: ignore[union-attr]
        if eid != gone:
            r.xadd(tmp, fields, id=eid)
    r.rename(tmp, keys.events(shard))
    r.xgroup_create(keys.events(shard), "workers", id="$")


def test_a_forward_missing_from_the_childs_log_is_lost(r: redis.Redis, namespace: str) -> None:
    keys = grown(r, namespace, [(4, 4)])
    r.delete(keys.snapshot("u2"))  # so the child is folded from its seed, not a later state
    r.set(keys.snapshot("u2"), check(r, keys).folds["u0"].seeds["u2"].to_snapshot())
    eid, fields = forwarded(r, keys, "u2")[0]
    _without(r, keys, "u2", eid)
    report = check(r, keys)
    assert not report.ok
    lost = [
        f for f in shown(report) if (f.kind, f.shard, f.what) == ("lost", "u0", "forwarded to u2")
    ]
    assert lost, shown(report)
    assert fields[b"fwd"] == b"u0"


def test_a_forward_written_twice_is_a_duplicate(r: redis.Redis, namespace: str) -> None:
    keys = grown(r, namespace, [(4, 4)])
    _eid, fields = forwarded(r, keys, "i3")[-1]
    r.xadd(keys.events("i3"), fields)  # the child's dedup drops it: only verify can tell
    with running_worker(r, namespace):  # consumed, so the fleet is idle again
        idle(r, keys)
    report = check(r, keys)
    assert {(f.kind, f.shard, f.what) for f in shown(report)} == {
        ("duplicate", "i3", "forwarded by i1")
    }, shown(report)


def test_state_of_a_parent_and_a_child_is_the_workers(r: redis.Redis, namespace: str) -> None:
    """``state``'s fold (snapshot, then the log) of every shard, parent or created by
    growth, equals the read model its worker wrote."""
    from eventfleet.worker.model import UPTO, fields

    keys = grown(r, namespace, [(4, 2), (8, 2)])
    counts = read_counts(r, keys)
    for shard in counts.all_shards():
        for snapshot in (True, False):  # from the stored snapshot, then from the seed
            if not snapshot and shard in ("u2", "u3", "u4", "u5", "u6", "u7"):
                seeds = check(r, keys).folds
                parent = f"u{int(shard[1:]) % (4 if int(shard[1:]) >= 4 else 2)}"
                r.set(keys.snapshot(shard), seeds[parent].seeds[shard].to_snapshot())
            st = current(r, keys, shard, counts).state
            model: Any = r.hgetall(keys.model(shard))
            want = {k.decode(): v.decode() for k, v in model.items() if k != UPTO.encode()}
            assert fields(st) == want, shard
    assert check(r, keys).ok


def test_verify_archive_folds_across_a_split(
    r: redis.Redis, namespace: str, tmp_path: Path
) -> None:
    """The archive keeps a forwarded entry's path (``fwd``) and scope (``by``): a fold from
    the archived segments forwards and deduplicates as one of the live log."""
    from eventfleet.ops.archive import Archive
    from eventfleet.ops.archive.segments import decode_line  # noqa: F401 (the format read)
    from eventfleet.ops.archive.writer import archive

    keys = grown(r, namespace, [(4, 2), (8, 2)])
    counts = read_counts(r, keys)
    root = tmp_path / "archive"
    archive(r, keys, counts, root, segment_entries=50)
    report = verify(r, keys, counts, archive=Archive(root, namespace, counts))
    assert report.ok, shown(report)
    assert report.unchecked == [], report.unchecked
    assert all(f.complete for f in report.folds.values())
    assert report.folds["u2"].forwarded_in.get("u0"), "forwards read from the archive"


def test_an_archive_begun_before_a_growth_goes_on_after_it(
    r: redis.Redis, namespace: str, tmp_path: Path
) -> None:
    """Archived at 2 + 2, grown twice, archived again: the archive takes the grown counts and
    ``verify --archive`` folds each shard from its first event across both splits."""
    from eventfleet.ops.archive import Archive
    from eventfleet.ops.archive.segments import TOP
    from eventfleet.ops.archive.writer import archive

    root = tmp_path / "archive"
    keys = grown(
        r, namespace, [(4, 2), (8, 2)], before=lambda k: archive(r, k, ShardCounts(2, 2), root)
    )
    counts = read_counts(r, keys)
    archive(r, keys, counts, root, segment_entries=50)
    assert json.loads((root / TOP).read_text())["user_shards"] == 8
    report = verify(r, keys, counts, archive=Archive(root, namespace, counts))
    assert report.ok, shown(report)
    assert report.unchecked == [], report.unchecked


def test_the_commands_across_a_growth(r: redis.Redis, namespace: str, env: dict[str, str]) -> None:
    """``eventfleet verify`` exits 0 and ``state user`` / ``state item`` read every user and
    item where its worker left it, parent or child."""
    from tests.helpers import cli, cli_json

    keys = grown(r, namespace, [(4, 4)])
    assert cli("verify", env=env, check=False).returncode == 0
    counts = read_counts(r, keys)
    model = {}
    for s in counts.all_shards():
        got: Any = r.hgetall(keys.model(s))
        model.update({k.decode(): v.decode() for k, v in got.items()})
    for user in USERS:
        assert cli_json("state", "user", str(user), "--json", env=env)["balance"] == int(
            model[f"b:{user}"]
        ), user
    for item in ITEMS:
        doc = cli_json("state", "item", item, "--json", env=env)["item"]
        assert str(doc["remain"]) == model[f"i:{item}"].split()[0], item


@contextmanager
def split_not_published(r: redis.Redis, namespace: str) -> Iterator[Keys]:
    """A namespace of 2 + 2 whose every parent split for 4 + 4 under a live worker and
    producers, then idle with the counts not published yet; published and finished after."""
    from eventfleet.ops.status import is_idle

    keys = stocked(r, namespace)
    with running_worker(r, namespace), Publishing(r, keys, read_counts(r, keys)) as pub:
        old = read_counts(r, keys)
        wait_for(lambda: all(r.hlen(keys.model(s)) > 5 for s in old.all_shards()), 30, "events")
        run = Run(r, keys)
        run.take()
        run.begin(old, 4, 4)
        run.prepare(old, 4, 4)
        run.mark(old, 4, 4)
        run.wait_seeded(old, 4, 4, timeout_s=30)
        pub.halt()
        wait_for(lambda: is_idle(r, keys, ShardCounts(4, 4)), 30, "the fleet idle")
        assert read_counts(r, keys).users == 2  # not published
        yield keys
        run.publish(4, 4)
        run.finish()
        run.release()


def test_a_namespace_verified_while_its_reshard_runs(r: redis.Redis, namespace: str) -> None:
    """Every parent split, the counts not published yet: ``verify`` folds the target's new
    shards too (what the parents moved into their seeds), and it is clean."""
    with split_not_published(r, namespace) as keys:
        report = check(r, keys)
    assert report.ok, shown(report)
    assert (report.counts.users, report.counts.items) == (4, 4)
    assert set(report.folds) == set(ShardCounts(4, 4).all_shards())
    assert not [u for u in report.unchecked if "conservation" in u], report.unchecked


def test_a_parent_trimmed_past_its_marker_leaves_its_children_unchecked(
    r: redis.Redis, namespace: str
) -> None:
    """The parent's log trimmed (its snapshot covering what went): its fold starts after the
    marker and gives no seed, so its children start from their own snapshots, said so, with
    no finding."""
    keys = grown(r, namespace, [(4, 4)])
    snap: Any = r.get(keys.snapshot("u0"))
    last = ShardState.from_snapshot(snap, "u0").last_id
    r.xtrim(keys.events("u0"), minid=last)  # the snapshot's own entry stays: it covers the rest
    report = check(r, keys)
    assert report.ok, shown(report)
    assert not report.folds["u0"].complete and not report.folds["u2"].complete
    assert [u for u in report.unchecked if u.startswith("u2: its parent's fold")], report.unchecked


def test_verify_on_a_live_grown_namespace_finds_nothing(r: redis.Redis, namespace: str) -> None:
    """Run while the producers publish and the worker applies, forwards included: a parent
    is folded before its children, which meanwhile get more forwards; nothing in flight is a
    finding."""
    reports: list[Report] = []

    def live(keys: Keys) -> None:
        for _ in range(3):
            reports.append(check(r, keys))

    grown(r, namespace, [(4, 2), (8, 2)], after=live)
    for report in reports:
        assert report.ok, shown(report)
    assert not all(report.quiescent for report in reports)


def test_state_reads_a_moved_key_from_its_child_before_the_counts_are_published(
    r: redis.Redis, namespace: str, env: dict[str, str]
) -> None:
    """Every parent split, the counts not published yet: ``state user`` and ``state item``
    read a key from the child that now holds it (its parent no longer has it), and agree
    with that child's read model."""
    from eventfleet.ledger.shards import item_shard, user_shard
    from tests.helpers import cli_json

    old, target = ShardCounts(2, 2), ShardCounts(4, 4)
    with split_not_published(r, namespace) as keys:
        moved = [u for u in USERS if user_shard(u, target) != user_shard(u, old)]
        assert moved, "no user moved to a child"

        def field(shard: str, name: str) -> Any:
            return r.hget(keys.model(shard), name)

        wait_for(
            lambda: all(field(user_shard(u, target), f"b:{u}") is not None for u in moved),
            30,
            "the children's models",
        )
        for u in USERS:
            want = field(user_shard(u, target), f"b:{u}")
            got = cli_json("state", "user", str(u), "--json", env=env)["balance"]
            assert want is not None and got == int(want), u
        for item in ITEMS:
            want = field(item_shard(item, target), f"i:{item}")
            doc = cli_json("state", "item", item, "--json", env=env)["item"]
            assert want is not None and str(doc["remain"]) == want.decode().split()[0], item


def test_state_all_lists_a_moved_key_from_its_child_before_the_counts_are_published(
    r: redis.Redis, namespace: str, env: dict[str, str]
) -> None:
    """Every parent split, the counts not published yet: ``state all`` reads the seeded new
    shards too and lists every user and item once, as the shard that holds it now has it in
    its read model (the published counts alone would miss every moved key: its parent
    dropped it at the marker), and every order's outcome, the children's included."""
    from eventfleet.ledger.shards import item_shard, user_shard
    from tests.helpers import cli_json
    from tests.test_split_worker import outcomes

    target = ShardCounts(4, 4)
    with split_not_published(r, namespace) as keys:

        def field(shard: str, name: str) -> Any:
            return r.hget(keys.model(shard), name)

        wait_for(
            lambda: all(field(user_shard(u, target), f"b:{u}") is not None for u in USERS),
            30,
            "the children's models",
        )
        doc = cli_json("state", "all", "--json", env=env)
        assert doc["users"] == {
            str(u): {"balance": int(field(user_shard(u, target), f"b:{u}"))} for u in USERS
        }
        assert {i: str(it["remain"]) for i, it in doc["items"].items()} == {
            i: field(item_shard(i, target), f"i:{i}").decode().split()[0] for i in ITEMS
        }
        decided = outcomes(r, keys, [f"u{n}" for n in range(4)])
        assert sorted(doc["orders"]) == sorted({o.order_id for o in decided})
        assert any(user_shard(o.user_id, target) in ("u2", "u3") for o in decided)
