"""Which worker should own which shard: rendezvous (highest-random-weight) hashing.

Every worker computes the same answer from the same member list, with no coordinator;
when a member joins or leaves only the shards it wins or held move.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable


def weight(member: str, shard: str) -> int:
    digest = hashlib.blake2b(f"{member}\x00{shard}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def assign(shards: Iterable[str], members: Iterable[str]) -> dict[str, str]:
    """Map each shard to the member with the highest weight for it."""
    live = sorted(set(members))
    if not live:
        return {}
    return {s: max(live, key=lambda m: (weight(m, s), m)) for s in shards}


def targets(shards: Iterable[str], members: Iterable[str], me: str) -> set[str]:
    return {s for s, owner in assign(shards, members).items() if owner == me}
