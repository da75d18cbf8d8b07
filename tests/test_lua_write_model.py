"""write_model.lua (the read model's write, worker/model.py) run directly as the shipped
worker user: fenced by the lease, never back in the log, the written mark raised, its key
kind only. EVALSHA as on a single Redis and EVAL as on Redis Cluster."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import redis

from eventfleet.ledger.state import Item, ShardState
from eventfleet.store.keys import Keys
from eventfleet.store.scripts import EvalScript
from eventfleet.worker import scripts as worker_scripts
from eventfleet.worker.model import Changes, values
from eventfleet.worker.scripts import Scripts
from tests.secure_redis import connect, refused

K = Keys("eventfleet")
S = "u0"
TOKEN = "w1:1"


@pytest.fixture
def clients(port: int) -> Iterator[tuple[redis.Redis, redis.Redis]]:
    root, worker = connect(port, "root"), connect(port, "worker")
    root.delete(K.lease(S), K.model(S), K.written(S))
    yield root, worker
    root.close()
    worker.close()


@pytest.mark.parametrize("mode", ["evalsha", "eval"])
def test_write_model_is_fenced_never_goes_back_and_raises_the_mark(
    mode: str, clients: tuple[redis.Redis, redis.Redis], monkeypatch: pytest.MonkeyPatch
) -> None:
    root, worker = clients
    if mode == "eval":
        monkeypatch.setattr(worker_scripts, "load_script", EvalScript)
    scripts = Scripts(worker)
    root.set(K.lease(S), TOKEN)

    def write(upto: str, *pairs: str, removed: tuple[str, ...] = (), token: str = TOKEN) -> Any:
        return scripts.write_model(
            worker, written=K.written(S), lease=K.lease(S), model=K.model(S), token=token,
            upto=upto, pairs=pairs, removed=removed,
        )  # fmt: skip

    assert write("5-0", "b:1", "10", "w:p:a", "1") == 2  # a model that had no _upto
    assert root.hgetall(K.model(S)) == {"b:1": "10", "w:p:a": "1", "_upto": "5-0"}
    assert root.get(K.written(S)) == "5-0"
    assert write("6-0", "b:1", "99", token="w2:2") == 0  # not the holder: the model stays
    assert root.hget(K.model(S), "b:1") == "10"
    assert root.get(K.written(S)) == "6-0"  # the mark rises whoever writes (an effect's mark)
    assert write("4-9", "b:1", "3") == 0  # behind the model: refused
    assert write("5-0", "b:1", "10") == 1  # the same point again: harmless
    # every kind of field, as worker/model.py: values spells it
    state = ShardState("u0")
    state.items = {"x.1": Item(price=7, remain=5), "y": Item(price=3, remain=0)}
    state.orders = {"3/o:1": (1, True), "3/o-2": (1, False)}
    state.watermarks = {"app/p:b": 9}
    changes = Changes()
    changes.items.update(state.items)
    changes.orders.update(state.orders)
    changes.sources.update(state.watermarks)
    assert write("5-1", *values(state, changes).args()) == 1
    assert root.hmget(K.model(S), ["i:x.1", "i:y", "o:3/o:1", "o:3/o-2", "w:app/p:b"]) == [
        "5 7", "0 3", "confirmed", "rejected", "9",
    ]  # fmt: skip
    many = [w for n in range(9000) for w in (f"b:{n}", str(n))]  # more than one HSET
    assert write("7-0", *many, removed=("w:p:a", "i:y")) == 1
    model = root.hgetall(K.model(S))
    assert len(model) == 9005 and model["b:8999"] == "8999" and "w:p:a" not in model
    assert "i:y" not in model and model["i:x.1"] == "5 7"
    assert model["_upto"] == "7-0" and root.get(K.written(S)) == "7-0"
    with pytest.raises(ValueError, match="even number"):
        write("8-0", "b:1")
    assert refused(worker, "HSET", K.model(S), "b:1", "0") is False  # its own key kind
    assert refused(worker, "HSET", K.snapshot(S), "x", "0")
