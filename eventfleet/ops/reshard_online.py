"""Growing a live namespace's shard counts (docs/DESIGN-DECISIONS.md, section 35): the checks
the online ``reshard`` command makes, its lease, and the steps built so far.

A run holds a lease (``<ns>:{<ns>:meta}:reshard-lease``, an epoch per run in
``<ns>:{<ns>:meta}:reshard-epoch``: the hash tag puts both in the meta hash's slot, so one script
checks the token and writes meta atomically on Redis Cluster too). Every meta write of a run
goes through that check (``eventfleet/store/lua/reshard_meta.lua``), so a run that lost its
lease, paused past its TTL or superseded by a second run, writes nothing more, and two runs
never both proceed. Every step is idempotent, so a re-run continues where one was killed.

Built so far: the checks, the lease, the record of the target and of the counts at ``init``
(which every fold of a shard born then starts with), and creating the new shards' streams,
groups and inboxes. Publishing the new counts and appending the split markers are not: the
workers of this version do not apply markers yet, so ``eventfleet reshard`` stops before any
write (``eventfleet/cli/reshard.py``).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import redis

from eventfleet.ledger.shards import ShardCounts
from eventfleet.ledger.split import growth_error
from eventfleet.store import lua
from eventfleet.store.keys import Keys
from eventfleet.store.namespace import create_shards
from eventfleet.store.scripts import load_script
from eventfleet.worker.scripts import Scripts

LEASE_TTL_MS = 30_000
"""A run renews its lease between steps; one killed frees it after this long."""
PREPARING = "preparing"


class ReshardRefused(Exception):
    """The reshard cannot go ahead as asked (the message says why and what to do)."""


class ReshardBusy(ReshardRefused):
    """Another run holds the reshard lease."""


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
            raise ReshardBusy("this run lost the reshard lease (paused too long?): re-run it")

    def release(self) -> None:
        if self.token:
            Scripts(self.r).release(self.r, lease=lease_key(self.keys), token=self.token)
            self.token = ""

    def write_meta(self, fields: dict[str, Any], absent: dict[str, Any] | None = None) -> None:
        """Set ``fields`` in meta, and ``absent`` where not set yet, only while this run
        holds the lease (else ``ReshardBusy``, nothing written)."""
        args: list[Any] = [self.token]
        for name, value in fields.items():
            args += [name, value]
        args.append("--")
        for name, value in (absent or {}).items():
            args += [name, value]
        script = load_script(self.r, lua.source("reshard_meta"))
        if not script(keys=[lease_key(self.keys), self.keys.meta], args=args, client=self.r):
            raise ReshardBusy("this run lost the reshard lease (paused too long?): re-run it")

    def begin(self, current: ShardCounts, users: int, items: int) -> None:
        """Record the target (a run already recorded with another target must be finished
        first: ``ReshardRefused``) and the counts at ``init``."""
        got: list[Any] = self.r.hmget(self.keys.meta, ["reshard_target", "reshard_state"])
        recorded, state = (_text(v) for v in got)
        target = f"{users},{items}"
        if recorded and recorded != target and state != "done":
            to_users, _, to_items = recorded.partition(",")
            raise ReshardRefused(
                f"a reshard to {to_users} user and {to_items} item shards is not finished: "
                "re-run it with those counts first"
            )
        self.write_meta(
            {"reshard_target": target, "reshard_state": PREPARING},
            {"init_user_shards": current.users, "init_item_shards": current.items},
        )

    def prepare(self, current: ShardCounts, users: int, items: int) -> list[str]:
        """Create the new shards' streams, groups and inboxes (idempotent); their names."""
        self.renew()
        shards = new_shards(current, users, items)
        create_shards(self.r, self.keys, shards)
        return shards


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value or "")
