"""The read model (``eventfleet.worker.model``) held to the fold: when the fleet is idle, a shard's
model
hash must hold exactly the values its log folds to. A field the fold has and the model lacks
is ``lost`` (a read would miss it); one with another value, or one the fold does not have, is
a ``mismatch`` (a read would return what the ledger never held). A shard with no model at all
(a namespace from before the read model, not taken over since) is reported as unchecked."""

from __future__ import annotations

from typing import Any

import redis

from eventfleet.ops.verify.report import Report, ShardFold
from eventfleet.store.keys import Keys
from eventfleet.worker.model import UPTO, fields


def check_model(r: redis.Redis, keys: Keys, fold: ShardFold, report: Report) -> None:
    raw: Any = r.hgetall(keys.model(fold.shard))
    stored = {k.decode(): v.decode() for k, v in raw.items()}
    if stored.pop(UPTO, None) is None:  # no owner has written one since it had none
        if fold.state.applied:
            report.unchecked.append(
                f"{fold.shard}: no read model yet (its next owner writes it whole)"
            )
        return
    expected = fields(fold.state)
    shard = fold.shard
    for field, value in expected.items():
        got = stored.get(field)
        if got is None:
            report.findings.add("lost", shard, "read model", f"{field} missing (log: {value})")
        elif got != value:
            report.findings.add("mismatch", shard, "read model", f"{field}: {got} (log: {value})")
    for field in stored.keys() - expected.keys():
        report.findings.add(
            "mismatch", shard, "read model", f"{field}: {stored[field]} (not in the log's fold)"
        )
