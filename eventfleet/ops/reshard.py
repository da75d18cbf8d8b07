"""Moving a live ledger to a namespace with more shards (docs/SCALING.md, "Resharding").

Shard counts are fixed at ``init``: a key's shard is CRC32(id) modulo the count, so a new
count moves most keys, and a shard's state is the fold of its own log. Resharding therefore
starts a new namespace from the old one's state at a quiet moment (every saga settled):

- ``seed_events``: one ``topup`` per user with money and one ``add_item`` per item in stock,
  published to the new namespace, carry balances and stock over exactly (and keep the
  conservation checks of ``verify`` true there, since the seeds are its first topups and
  additions);
- ``compare``: once the seeds are applied, the new namespace must hold exactly the state at
  the cut.

Items sold out at the cut cannot be seeded (``add_item`` needs a count above 0): the new
namespace learns them at their next restock, and until then rejects their orders as
``unknown_item`` where the old one says ``out_of_stock``.

After the cut the two namespaces are each a correct ledger, but not copies of each other when
both receive the same events: whether an order's charge lands in a user's log before or after
a top-up depends on timing, so an order may be confirmed in one and refused for funds in the
other. Each is checked on its own with ``verify`` (conservation includes the seeds).
"""

from __future__ import annotations

from typing import Any

from eventfleet.ledger.events import AddItem, Topup


def seed_events(doc: dict[str, Any]) -> list[Topup | AddItem]:
    """The events that rebuild ``state all --json``'s balances and stock in a new namespace."""
    out: list[Topup | AddItem] = []
    for uid, u in doc["users"].items():
        if u["balance"] > 0:
            out.append(Topup(user_id=int(uid), amount=u["balance"]))
    for iid, it in doc["items"].items():
        if it["remain"] > 0:
            out.append(AddItem(item_id=iid, count=it["remain"], price=it["price"]))
    return out


def sold_out(doc: dict[str, Any]) -> list[str]:
    """Items with no stock left: not carried over by ``seed_events``."""
    return sorted(iid for iid, it in doc["items"].items() if it["remain"] == 0)


def compare(cut: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Differences between the old state at the cut and the new namespace once seeded.

    Users with a zero balance and items sold out at the cut are absent from the new one.
    """
    diffs: list[str] = []
    for uid in sorted(cut["users"].keys() | new["users"].keys(), key=int):
        have = new["users"].get(uid, {"balance": 0})
        want = cut["users"].get(uid, {"balance": 0})
        if have != want:
            diffs.append(f"user {uid}: new {have}, at the cut {want}")
    gone = set(sold_out(cut))
    for iid in sorted(cut["items"].keys() | new["items"].keys()):
        have_it = new["items"].get(iid)
        if have_it is None and iid in gone:
            continue
        if have_it != cut["items"].get(iid):
            diffs.append(f"item {iid}: new {have_it}, at the cut {cut['items'].get(iid)}")
    diffs += [f"order {oid}: in the new namespace before the cut-over" for oid in new["orders"]]
    return diffs
