"""Managing producer identities: ``eventfleet producers add / list / remove``.

``add`` creates (or gives a fresh password to) the producer's ACL user on every node of the
Redis (every node of a cluster: ACL users are not replicated), saves the ACL file where the
server has one, creates the producer's own inbox on every shard and registers the name in the
namespace, whose workers start moving it within one ownership pass. ``remove`` deletes the
ACL user first (no new writes; its connections are closed), then waits until workers have
moved what it had published, and only then unregisters it: accepted events are never lost.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import redis
from redis import exceptions as rx

from eventfleet.ledger.shards import ShardCounts
from eventfleet.store.connection import is_cluster
from eventfleet.store.keys import INBOX_HEAD, Keys
from eventfleet.store.producers import LEGACY, acl_rules, acl_user, check_name, registered
from eventfleet.store.scripts import create_inbox


class NotDrained(Exception):
    """The producer's user is gone but workers have not moved all it published yet."""


@dataclass
class Added:
    name: str
    redis_url: str
    acl_line: str
    """The user's line for an ACL file (the password as its SHA-256)."""
    unsaved: list[str] = field(default_factory=list)
    """Nodes where ``ACL SAVE`` failed (no ACL file, or a read-only one): why, per node."""


def nodes(r: Any) -> list[Any]:
    """A client per Redis node: ``r`` itself, or one per node of a cluster."""
    if not is_cluster(r):
        return [r]
    return [r.get_redis_connection(n) for n in r.get_nodes()]


def url_for(base: str, user: str, password: str | None) -> str:
    """``base`` with ``user:password`` (or ``user`` alone) as its credentials."""
    u = urlsplit(base)
    host = u.hostname or "localhost"
    if ":" in host:
        host = f"[{host}]"
    netloc = quote(user, safe="")
    if password is not None:
        netloc += ":" + quote(password, safe="")
    netloc += f"@{host}"
    if u.port:
        netloc += f":{u.port}"
    return urlunsplit((u.scheme or "redis", netloc, u.path, u.query, u.fragment))


MIN_PASSWORD = 32
"""The shortest password ``add`` takes from a file (its own are 64 hex digits)."""


class WeakPassword(ValueError):
    """A given password that is too short or not one line of visible characters."""


def add(
    r: Any,
    keys: Keys,
    counts: ShardCounts,
    name: str,
    base_url: str,
    password: str | None = None,
) -> Added:
    """Create producer ``name`` (or give it a fresh password). ``password``: the one to set
    (a deployment's secret, e.g. one the ACL file Redis loads already declares), and the URL
    returned then carries the user only; else a new random one, and the URL carries it."""
    check_name(name)
    given = password is not None
    if password is None:
        password = secrets.token_hex(32)
    elif len(password) < MIN_PASSWORD or not password.isprintable() or " " in password:
        raise WeakPassword(
            f"the password for producer {name} must be one line of at least {MIN_PASSWORD} "
            "visible characters"
        )
    user = acl_user(keys.ns, name)
    rules = acl_rules(keys.ns, name, password)
    unsaved = []
    for node in nodes(r):
        node.execute_command("ACL", "SETUSER", user, *rules)
        try:
            node.execute_command("ACL", "SAVE")
        except rx.ResponseError as exc:
            unsaved.append(str(exc).splitlines()[0][:200])
    for shard in counts.all_shards():
        create_inbox(r, inbox=keys.inbox(shard, name), head=INBOX_HEAD)
    r.hset(keys.producers, name, user)
    digest = hashlib.sha256(password.encode()).hexdigest()
    line = " ".join(["user", user, *(f"#{digest}" if x[:1] == ">" else x for x in rules[1:])])
    url = url_for(base_url, user, None if given else password)
    return Added(name, url, line, unsaved)


@dataclass
class Backlog:
    name: str
    waiting: int
    dropped: int
    registered: bool = True


def backlogs(r: Any, keys: Keys, counts: ShardCounts) -> list[Backlog]:
    """Per registered producer (and the shared inbox, ``legacy``): events waiting in its
    inboxes, and events the moves dropped (past its bound, or not an event)."""
    names = registered(r, keys)
    shards = counts.all_shards()
    pipe = r.pipeline(transaction=False)
    for s in shards:
        pipe.llen(keys.inbox(s))
        for n in names:
            pipe.llen(keys.inbox(s, n))
        pipe.hgetall(keys.dropped(s))
    replies = iter(pipe.execute())
    waiting = dict.fromkeys([LEGACY, *names], 0)
    dropped = dict.fromkeys(names, 0)
    for _s in shards:
        for n in [LEGACY, *names]:
            waiting[n] += max(0, int(next(replies)) - 1)
        for kb, v in next(replies).items():
            k = kb.decode()
            if k in dropped:
                dropped[k] += int(v)
    rows = [Backlog(LEGACY, waiting[LEGACY], 0, registered=False)]
    return rows + [Backlog(n, waiting[n], dropped[n]) for n in names]


def remove(
    r: Any, keys: Keys, counts: ShardCounts, name: str, wait_s: float
) -> tuple[int, list[str]]:
    """Delete the producer's ACL user (every node), wait up to ``wait_s`` until its inboxes
    are empty, then unregister it. Returns (events it still had waiting: 0 when done, the
    nodes where ``ACL SAVE`` failed). While events wait it stays registered, so workers go on
    moving them: run ``remove`` again later."""
    check_name(name)
    if not r.hexists(keys.producers, name):
        raise KeyError(name)
    unsaved = []
    for node in nodes(r):
        node.execute_command("ACL", "DELUSER", acl_user(keys.ns, name))
        try:
            node.execute_command("ACL", "SAVE")
        except rx.ResponseError as exc:
            unsaved.append(str(exc).splitlines()[0][:200])
    deadline = time.monotonic() + wait_s
    while True:
        left = _waiting(r, keys, counts, name)
        if left == 0:
            r.hdel(keys.producers, name)
            return 0, unsaved
        if time.monotonic() >= deadline:
            return left, unsaved
        time.sleep(0.1)


def _waiting(r: redis.Redis, keys: Keys, counts: ShardCounts, name: str) -> int:
    pipe = r.pipeline(transaction=False)
    for s in counts.all_shards():
        pipe.llen(keys.inbox(s, name))
    return sum(max(0, int(n) - 1) for n in pipe.execute())
