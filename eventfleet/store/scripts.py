"""Calling the Lua scripts of ``eventfleet/store/lua``: EVALSHA on a single Redis, EVAL on a
cluster;
and the wrapper of ``create_inbox``, the one script ``store`` itself runs."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Protocol

import redis

from eventfleet.store import lua
from eventfleet.store.connection import is_cluster


class LuaScript(Protocol):
    """How a wrapper calls a script: ``script(keys=..., args=..., client=pipe_or_client)``."""

    def __call__(
        self,
        keys: Sequence[Any] | None = None,
        args: Iterable[Any] | None = None,
        client: Any = None,
    ) -> Any: ...


class EvalScript:
    """A script sent with its text (EVAL), for Redis Cluster.

    redis-py's cluster pipeline refuses EVALSHA, and a node that restarted or a replica just
    promoted may not have the script cached: EVAL needs neither. Redis still compiles each
    script once (it caches EVAL'd scripts by their SHA); only the text travels each time.
    """

    def __init__(self, client: redis.Redis, text: str) -> None:
        self.client = client
        self.script = text

    def __call__(
        self,
        keys: Sequence[Any] | None = None,
        args: Iterable[Any] | None = None,
        client: Any = None,
    ) -> Any:
        keys = list(keys or [])
        target = self.client if client is None else client
        return target.execute_command("EVAL", self.script, len(keys), *keys, *(args or []))


def load_script(r: redis.Redis, text: str) -> LuaScript:
    """A script callable on ``r`` (or a pipeline of it): EVALSHA with redis-py's registered
    scripts on a single Redis, EVAL with the text on a cluster (see ``EvalScript``)."""
    return EvalScript(r, text) if is_cluster(r) else r.register_script(text)


def create_inbox(r: redis.Redis, *, inbox: str, head: bytes | str) -> int:
    """Create ``inbox`` holding only ``head``, unless the key exists (then it is left alone).
    Returns the list's length when created, else 0. Sent with its text (EVAL), on a single
    Redis or a cluster alike."""
    return int(r.eval(lua.source("create_inbox"), 1, inbox, head))
