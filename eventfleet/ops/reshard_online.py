"""Growing a live namespace's shard counts (docs/DESIGN-DECISIONS.md, section 35): the checks
the online ``reshard`` command makes, its lease, and the steps built so far.

A run holds a lease (``<ns>:{<ns>:meta}:reshard-lease``, an epoch per run in
``<ns>:{<ns>:meta}:reshard-epoch``: the hash tag puts both in the meta hash's slot, so one script
checks the token and writes meta atomically on Redis Cluster too). Every meta write of a run
goes through that check (``eventfleet/store/lua/reshard_meta.lua``), so a run that lost its
lease, paused past its TTL or superseded by a second run, writes nothing more, and two runs
never both proceed. Every step is idempotent, so a re-run continues where one was killed.

The steps (``grow``, which ``eventfleet reshard --user-shards N --item-shards M`` runs:
``eventfleet/cli/reshard.py``): check the counts (``plan``, before anything is written), record
the target, the counts it grows from and the counts at ``init`` (which every fold starts with),
create the new shards' streams, groups and inboxes, append the split markers (each once), wait
a bounded time for the children's seeds (every parent split: its owner applied the marker),
and only then publish the new counts (``Run.publish`` says why), then record the run done.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import redis

from eventfleet.ledger.shards import ShardCounts
from eventfleet.ledger.split import children, growth_error, marker_text, parse_marker
from eventfleet.ops.reshard_progress import (
    DONE,
    MARKED,
    MARKER,
    PREPARING,
    PUBLISHED,
    SEED_DIGEST,
    dead_markers,
    is_seed,
    resume_from,
    run_key,
    seed_digests,
    split_yet,
)
from eventfleet.store import lua
from eventfleet.store.keys import EVENT_FIELD, Keys
from eventfleet.store.namespace import counts_of, create_shards
from eventfleet.store.scripts import load_script
from eventfleet.worker.scripts import Scripts

LEASE_TTL_MS = 30_000
"""A run renews its lease between steps; one killed frees it after this long."""
SCAN = 1000
"""Log entries read per XRANGE while looking for a marker."""
DEAD_EVERY = 10
"""While waiting for the seeds, the waiting parents' dead letters are read every this many
polls (about 2 s), for a marker a worker that does not apply them dead-lettered."""


class ReshardRefused(Exception):
    """The reshard cannot go ahead as asked (the message says why and what to do)."""


class ReshardBusy(ReshardRefused):
    """Another run holds the reshard lease, or this one lost it."""


class LeaseLost(ReshardBusy):
    """This run's lease is gone: lapsed (paused past its TTL), taken by another run, or lost
    with a failover that did not replicate it."""


class SeedsLate(ReshardRefused):
    """The workers have not seeded every new shard within the wait: the run is recorded and
    a re-run of the same command goes on from where it stopped."""


class MarkerDeadLettered(SeedsLate):
    """A parent's owner dead-lettered its split marker: it runs a version that does not apply
    markers. Once every worker is upgraded, a re-run appends the marker again."""


Say = Callable[[str], None]
"""Where a run reports each step it completed (the command: a line on stderr)."""


def quiet(_line: str) -> None:
    pass


def lease_key(keys: Keys) -> str:
    """Under the namespace (the ACL's key patterns), in the meta hash's slot (its tag)."""
    return f"{keys.ns}:{{{keys.meta}}}:reshard-lease"


def epoch_key(keys: Keys) -> str:
    return f"{keys.ns}:{{{keys.meta}}}:reshard-epoch"


def check_growth(current: ShardCounts, users: int, items: int) -> None:
    """Refuse counts that are not the current ones or multiples of them (``ReshardRefused``),
    and a reshard that changes nothing."""
    errors = [
        e
        for e in (
            growth_error(current.users, users, "user"),
            growth_error(current.items, items, "item"),
        )
        if e is not None
    ]
    if errors:
        raise ReshardRefused(
            "; ".join(errors) + " (a count only grows, by a multiple of the current one; "
            "to shrink, move to a new namespace: docs/SCALING.md)"
        )
    if (users, items) == (current.users, current.items):
        raise ReshardRefused(
            f"the namespace already has {users} user and {items} item shards: nothing to do"
        )


def plan(
    r: redis.Redis, keys: Keys, users: int | None, items: int | None
) -> tuple[ShardCounts, int, int]:
    """The counts a run grows from and its target (a family not given keeps its current
    count), checked (``ReshardRefused``) before anything is written. A run to the same target
    that is unfinished grows from the counts it recorded, even once it published them, so a
    re-run after a kill continues instead of finding nothing to do."""
    meta: Any = r.hgetall(keys.meta)
    current = counts_of(meta, keys)
    users = current.users if users is None else users
    items = current.items if items is None else items
    old = resume_from(meta, keys, users, items)
    check_growth(old, users, items)
    return old, users, items


def new_shards(current: ShardCounts, users: int, items: int) -> list[str]:
    """The shards ``users`` and ``items`` add to ``current``."""
    return [f"u{n}" for n in range(current.users, users)] + [
        f"i{n}" for n in range(current.items, items)
    ]


@dataclass
class Run:
    """One run of the command: its lease token once taken."""

    r: redis.Redis
    keys: Keys
    ttl_ms: int = LEASE_TTL_MS
    token: str = ""

    def take(self) -> None:
        """Take the lease, or raise ``ReshardBusy`` naming its holder."""
        run_id = f"reshard-{uuid.uuid4().hex[:12]}"
        got: Any = Scripts(self.r).acquire(
            self.r,
            lease=lease_key(self.keys),
            epoch=epoch_key(self.keys),
            worker_id=run_id,
            ttl_ms=self.ttl_ms,
        )
        if not isinstance(got, int):
            holder = got.decode() if isinstance(got, bytes) else str(got)
            raise ReshardBusy(
                f"another reshard run holds the lease ({holder}): wait for it, or, if it was "
                f"killed, re-run once its lease lapses (at most {self.ttl_ms / 1000:g} s)"
            )
        self.token = f"{run_id}:{got}"

    def renew(self) -> None:
        if not Scripts(self.r).renew(
            self.r, lease=lease_key(self.keys), token=self.token, ttl_ms=self.ttl_ms
        ):
            raise LeaseLost("this run lost the reshard lease (paused too long?): re-run it")

    def release(self) -> None:
        if self.token:
            Scripts(self.r).release(self.r, lease=lease_key(self.keys), token=self.token)
            self.token = ""

    def write_meta(
        self, fields: dict[str, Any], absent: dict[str, Any] | None = None, key: str = ""
    ) -> None:
        """Set ``fields`` in meta (or the hash ``key``, in its slot), and ``absent`` where not
        set yet, only while this run holds the lease (else ``ReshardBusy``, nothing written)."""
        args: list[Any] = [self.token]
        for name, value in fields.items():
            args += [name, value]
        args.append("--")
        for name, value in (absent or {}).items():
            args += [name, value]
        script = load_script(self.r, lua.source("reshard_meta"))
        target = key or self.keys.meta
        if not script(keys=[lease_key(self.keys), target], args=args, client=self.r):
            raise LeaseLost("this run lost the reshard lease (paused too long?): re-run it")

    def begin(self, current: ShardCounts, users: int, items: int) -> str | None:
        """Record the target (a run already recorded with another target must be finished
        first: ``ReshardRefused``, nothing written) and the counts at ``init``; the state of
        the unfinished run to this target it continues (None: a new run)."""
        got: list[Any] = self.r.hmget(self.keys.meta, ["reshard_target", "reshard_state"])
        recorded, state = (_text(v) for v in got)
        target = f"{users},{items}"
        if recorded == target and state != DONE:
            self.renew()  # a re-run continues where the last one stopped
            return state
        if recorded and recorded != target and state != DONE:
            to_users, _, to_items = recorded.partition(",")
            raise ReshardRefused(
                f"a reshard to {to_users} user and {to_items} item shards is not finished: "
                "re-run it with those counts first (--user-shards "
                f"{to_users} --item-shards {to_items})"
            )
        self.write_meta(
            {
                "reshard_target": target,
                "reshard_from": f"{current.users},{current.items}",
                "reshard_begun_ms": self.redis_ms(),
                "reshard_state": PREPARING,
            },
            {"init_user_shards": current.users, "init_item_shards": current.items},
        )
        return None

    def prepare(self, current: ShardCounts, users: int, items: int) -> list[str]:
        """Create the new shards' streams, groups and inboxes (idempotent); their names."""
        self.renew()
        shards = new_shards(current, users, items)
        create_shards(self.r, self.keys, shards)
        return shards

    def redis_ms(self) -> int:
        secs, micros = self.r.time()
        return int(secs) * 1000 + int(micros) // 1000

    def publish(self, users: int, items: int) -> None:
        """Publish the new counts in meta, once every parent has split (``wait_seeded``): a
        producer that learns them starts each child's seqs at its parent's
        (``Stamper.regrow``), so everything the parent applied before its marker must have been
        sent before the producer learnt them. Published earlier, events a learning producer
        sends to a parent for the keys it keeps would reach its log before the marker, with
        seqs the child's counter reuses, and the child would drop those as repeats."""
        self.write_meta({"user_shards": users, "item_shards": items, "reshard_state": PUBLISHED})

    def mark(self, old: ShardCounts, users: int, items: int) -> list[str]:
        """Append the split marker to the log of every shard of ``old`` that does not hold it
        since the run began (a re-run appends none twice; one appended twice anyway would be
        a duplicate in the domain), each one's entry id recorded (``MARKER``); the shards it
        was appended to."""
        text = marker_text(users, items)
        since = self.begun_ms()
        appended = []
        for shard in old.all_shards():
            self.renew()
            # a parent whose children are seeded applied it: its log need not be read
            if split_yet(self.r, self.keys, shard, old, users, items) or self.holds(
                shard, text, since
            ):
                continue
            eid: Any = self.r.xadd(self.keys.events(shard), {EVENT_FIELD: text})
            self.write_meta({_marker_field(text, shard): _text(eid)}, key=run_key(self.keys))
            appended.append(shard)
        self.write_meta({"reshard_state": MARKED})
        return appended

    def begun_ms(self) -> int:
        return int(_text(self.r.hget(self.keys.meta, "reshard_begun_ms")) or 0)

    def holds(self, shard: str, text: str, since_ms: int) -> bool:
        """Whether ``shard``'s log holds ``text`` at or after ``since_ms``, not dead-lettered
        (one a worker that does not apply markers dead-lettered is appended again): the entry
        recorded when it was appended (gone from the log: trimmed once applied), else, killed
        between the append and the record, the log read from ``since_ms``."""
        dead = dead_markers(self.r, self.keys, shard, text, since_ms)
        recorded: Any = self.r.hget(run_key(self.keys), _marker_field(text, shard))
        if recorded is not None:
            return _text(recorded) not in dead
        start, want = f"{since_ms}-0", text.encode()
        while True:
            got: Any = self.r.xrange(self.keys.events(shard), min=start, count=SCAN)
            if any(f.get(EVENT_FIELD) == want and _text(e) not in dead for e, f in got):
                return True
            if len(got) < SCAN:
                return False
            start = f"({_text(got[-1][0])}"

    def refused_markers(self, waiting: list[str], text: str, since_ms: int) -> None:
        """``MarkerDeadLettered`` when a ``waiting`` parent's owner dead-lettered every marker
        this run appended to it (one ``XRANGE`` of its dead letters; its log is read only when
        one is there)."""
        refused = [
            shard
            for shard in waiting
            if dead_markers(self.r, self.keys, shard, text, since_ms)
            and not self.holds(shard, text, since_ms)
        ]
        if refused:
            raise MarkerDeadLettered(
                f"the owner of {' '.join(refused)} dead-lettered the split marker "
                "(unknown_type): a worker of a version that does not apply split markers "
                "owns it. Upgrade every worker, then re-run the same command: it appends the "
                "marker again to those shards. Nothing was published; producers and clients "
                "go on with the current counts"
            )

    def unseeded(self, old: ShardCounts, users: int, items: int) -> list[str]:
        """The new shards whose seed snapshot does not exist yet (one pipeline)."""
        shards = new_shards(old, users, items)
        pipe = self.r.pipeline(transaction=False)  # one round trip, however many
        for s in shards:
            pipe.exists(self.keys.snapshot(s))
        return [s for s, there in zip(shards, pipe.execute(), strict=True) if not there]

    def wait_seeded(
        self,
        old: ShardCounts,
        users: int,
        items: int,
        timeout_s: float,
        every_s: float = 0.2,
        say: Say = quiet,
    ) -> None:
        """Wait until the workers have applied every marker (each new shard seeded), renewing
        the lease and saying which parent split as it does; ``SeedsLate`` after
        ``timeout_s`` (the run stays recorded: a re-run goes on waiting)."""
        deadline = time.monotonic() + timeout_s
        told: set[str] = set()
        noted = set(seed_digests(self.r.hgetall(run_key(self.keys))))
        text, since, polls = marker_text(users, items), self.begun_ms(), 0
        while True:
            missing = self.unseeded(old, users, items)
            self.note_seeds([s for s in new_shards(old, users, items) if s not in missing], noted)
            split, waiting = parents_split(old, users, items, missing)
            for shard in split:
                if shard not in told:
                    told.add(shard)
                    say(f"{shard} split ({len(split)} of {len(split) + len(waiting)} parents)")
            if not missing:
                return
            polls += 1
            if polls % DEAD_EVERY == 1 or time.monotonic() >= deadline:
                self.refused_markers(waiting, text, since)
            if time.monotonic() >= deadline:
                raise SeedsLate(
                    f"the workers have not applied the split marker of {' '.join(waiting)} "
                    f"within {timeout_s:g} s (no seed yet for {' '.join(missing)}; are workers "
                    "of this version running and owning them? `eventfleet status` shows the "
                    "shards' owners and lag): the run stays recorded and nothing was "
                    "published; re-run the same command to go on waiting"
                )
            self.renew()
            time.sleep(every_s)

    def note_seeds(self, seeded: list[str], noted: set[str]) -> None:
        """Record the SHA-1 of each of ``seeded``'s seed (``SEED_DIGEST``, once) while
        its snapshot is still the seed: ``verify`` checks a child's seed with it after the
        child's own snapshots replaced it and its log was trimmed. A child that wrote a
        snapshot of its own before this run looked (one interval after its takeover) gets
        none, and ``verify`` says its seed was not checked then. ``noted``: the children
        looked at, updated."""
        for shard in seeded:
            if shard in noted:
                continue
            raw: Any = self.r.get(self.keys.snapshot(shard))
            noted.add(shard)
            if raw is not None and is_seed(raw):
                digest = hashlib.sha1(raw).hexdigest()
                self.write_meta({}, {f"{SEED_DIGEST}{shard}": digest}, run_key(self.keys))

    def finish(self) -> None:
        self.write_meta({"reshard_state": DONE})


def parents_split(
    old: ShardCounts, users: int, items: int, unseeded: list[str]
) -> tuple[list[str], list[str]]:
    """The old shards of the growing families that have split (no child of theirs in
    ``unseeded``) and those still waited for."""
    missing = set(unseeded)
    split: list[str] = []
    waiting: list[str] = []
    for shard in old.all_shards():
        before, after = (old.users, users) if shard[0] == "u" else (old.items, items)
        kids = children(shard, before, after)[1:]
        if kids:
            (waiting if missing.intersection(kids) else split).append(shard)
    return split, waiting


@dataclass
class Grown:
    """What a run did: the counts it grew from, the target, the new shards, the shards a
    marker was appended to by this run, and the state of the run it continued (None: new)."""

    old: ShardCounts
    users: int
    items: int
    created: list[str] = field(default_factory=list)
    marked: list[str] = field(default_factory=list)
    continued: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "from": f"{self.old.users},{self.old.items}",
            "target": f"{self.users},{self.items}",
            "state": DONE,
            "continued": self.continued,
            "new_shards": self.created,
            "markers_appended": self.marked,
        }


def grow(run: Run, users: int, items: int, wait_s: float, say: Say = quiet) -> Grown:
    """Every step of a reshard to ``users`` and ``items`` under ``run`` (its lease taken),
    each idempotent, so a re-run after a kill continues: record, create the new shards,
    append the markers, wait up to ``wait_s`` for the seeds (every parent split: ``SeedsLate``
    otherwise), publish the counts, done. ``say`` hears each step as it completes."""
    old, users, items = plan(run.r, run.keys, users, items)
    done = Grown(old, users, items)
    done.continued = run.begin(old, users, items)
    route = f"{old.users},{old.items} -> {users},{items} (users,items)"
    say(
        f"recorded {route}"
        if done.continued is None
        else f"continuing the run {route}, left {done.continued}"
    )
    done.created = run.prepare(old, users, items)
    say(f"new shards made: {' '.join(done.created)}")
    done.marked = run.mark(old, users, items)
    held = len(old.all_shards()) - len(done.marked)
    say(
        f"split markers appended: {' '.join(done.marked) or '-'}"
        + (f" ({held} held one or had split already)" if held else "")
    )
    run.wait_seeded(old, users, items, wait_s, say=say)
    say("every parent split: every new shard seeded")
    run.publish(users, items)
    say(f"counts published: {users} user and {items} item shards")
    run.finish()
    say("done")
    return done


def _marker_field(text: str, shard: str) -> str:
    """The run record's field for ``shard``'s marker ``text`` (its counts name the target)."""
    target = parse_marker(text)
    assert target is not None
    return f"{MARKER}{target[0]},{target[1]}:{shard}"


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value or "")
