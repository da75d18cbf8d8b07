"""The state of one shard, and its snapshot encoding.

A shard's state is everything replay needs to continue exactly where the log left off: the
domain data (balances or items), the dedup watermark per source, the last sequence number
it emitted per destination, and the id of the last entry it applied.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

SNAPSHOT_VERSION = 1


class SnapshotError(ValueError):
    """A snapshot that cannot be read (corrupt, another shard's, or a newer format)."""


@dataclass(slots=True)
class Item:
    price: int
    remain: int


@dataclass(slots=True)
class ShardState:
    shard: str
    balances: dict[int, int] = field(default_factory=dict)
    items: dict[str, Item] = field(default_factory=dict)
    watermarks: dict[str, int] = field(default_factory=dict)
    out_seq: dict[str, int] = field(default_factory=dict)
    last_id: str = "0-0"
    applied: int = 0

    def next_seq(self, destination: str) -> int:
        seq = self.out_seq.get(destination, 0) + 1
        self.out_seq[destination] = seq
        return seq

    def to_snapshot(self, taken_ms: int = 0) -> bytes:
        """Columnar JSON: a million users encode and decode in well under a second.

        ``taken_ms`` is when it was taken (wall clock, for operators); it is not state.
        """
        doc: dict[str, Any] = {
            "v": SNAPSHOT_VERSION,
            "taken_ms": taken_ms,
            "shard": self.shard,
            "last_id": self.last_id,
            "applied": self.applied,
            "watermarks": self.watermarks,
            "out_seq": self.out_seq,
            "users": [list(self.balances.keys()), list(self.balances.values())],
            "items": [
                list(self.items.keys()),
                [it.price for it in self.items.values()],
                [it.remain for it in self.items.values()],
            ],
        }
        return json.dumps(doc, separators=(",", ":")).encode()

    @classmethod
    def from_snapshot(cls, raw: bytes | str, shard: str) -> ShardState:
        try:
            doc = json.loads(raw)
            version = doc["v"]
        except (ValueError, TypeError, KeyError) as exc:
            raise SnapshotError(f"snapshot of {shard} is not readable: {exc}") from None
        if version != SNAPSHOT_VERSION:
            raise SnapshotError(f"snapshot of {shard} has format {version}, expected 1")
        if doc.get("shard") != shard:
            raise SnapshotError(f"snapshot under {shard} belongs to {doc.get('shard')!r}")
        try:
            uids, bals = doc["users"]
            iids, prices, remains = doc["items"]
            return cls(
                shard=shard,
                balances=dict(zip(uids, bals, strict=True)),
                items={k: Item(p, r) for k, p, r in zip(iids, prices, remains, strict=True)},
                watermarks={str(k): int(v) for k, v in doc["watermarks"].items()},
                out_seq={str(k): int(v) for k, v in doc["out_seq"].items()},
                last_id=str(doc["last_id"]),
                applied=int(doc.get("applied", 0)),
            )
        except (ValueError, TypeError, KeyError) as exc:
            raise SnapshotError(f"snapshot of {shard} is malformed: {exc}") from None
