"""A worker configured with shard counts (``EVENTFLEET_USER_SHARDS``/``_ITEM_SHARDS``) refuses
a namespace with other counts, except, once the namespace grew online, a count on the way from
its counts at ``init`` to the current ones: the configuration written before a growth."""

from __future__ import annotations

import pytest
import redis
from hypothesis import given
from hypothesis import strategies as st

from eventfleet.ledger.shards import ShardCounts
from eventfleet.store.keys import Keys
from eventfleet.store.namespace import (
    NamespaceMismatch,
    check_counts,
    create_shards,
    init_namespace,
    read_counts,
    read_init_counts,
)
from tests.helpers import cli_process


@given(st.lists(st.integers(1, 8), min_size=1, max_size=3), st.integers(1, 64), st.booleans())
def test_a_configured_count_is_the_current_one_or_on_the_way_from_init(
    factors: list[int], configured: int, grown: bool
) -> None:
    first = factors[0]
    now = first
    for f in factors[1:] if grown else []:
        now *= f
    actual = ShardCounts(now, 2)
    init = ShardCounts(first, 2) if grown else None
    ok = configured == now or (grown and now % configured == 0 and configured % first == 0)
    if ok:
        check_counts(actual, configured, None, init)
        check_counts(actual, None, 2, init)
    else:
        with pytest.raises(NamespaceMismatch, match=f"namespace has {now} / 2"):
            check_counts(actual, configured, None, init)


def test_a_worker_configured_before_a_growth_starts_and_another_count_is_refused(
    r: redis.Redis, namespace: str, env: dict[str, str]
) -> None:
    keys = Keys(namespace)
    init_namespace(r, keys, ShardCounts(2, 2))
    create_shards(r, keys, ["u2", "u3"])
    # what an online reshard records: the counts at init, then the grown ones
    r.hset(keys.meta, mapping={"init_user_shards": 2, "init_item_shards": 2})
    r.hset(keys.meta, "user_shards", 4)
    counts, init = read_counts(r, keys), read_init_counts(r, keys)
    check_counts(counts, 2, 2, init)  # the configuration of before the growth
    check_counts(counts, 4, 2, init)
    res = cli_process(
        "worker",
        env={**env, "EVENTFLEET_METRICS_PORT": "0", "EVENTFLEET_USER_SHARDS": "3"},
        check=False,
        timeout=30,
    )
    assert res.returncode == 2 and "namespace has 4 / 2" in res.stderr, res.stderr
