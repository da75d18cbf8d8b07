"""Connecting to Redis: URL, ACL user, password file, TLS; and telling transient from fatal.

The same URL may name a single Redis or any node of a Redis Cluster: ``connect`` asks the
server once (``HELLO`` reports ``mode: cluster``) and returns redis-py's cluster client
for a cluster, with the same options. Callers keep one code path; the few places that must
differ on a cluster (scripts, the idle wait, WAIT) ask ``is_cluster``.

Credentials never reach a log line or an error message: every URL we show goes through
``mask_url``, and fatal errors are rephrased without the text Redis or the driver gave.
"""

from __future__ import annotations

import time
from typing import Any, cast
from urllib.parse import unquote, urlsplit

import redis
from redis import exceptions as rx
from redis.backoff import NoBackoff
from redis.cluster import RedisCluster
from redis.retry import Retry

from eventfleet.store import retry
from eventfleet.store.errors import TRANSIENT, FatalRedisError, classify, mask_url
from eventfleet.store.settings import Settings

CLUSTER_CLIENT_RETRIES = 3
"""Attempts redis-py's cluster client makes on its own (refreshing the slot map between them)
before a connection error reaches ``eventfleet.store.retry``, which backs off until its deadline."""


_NOT_DB0 = "REDIS_URL names a database other than 0, and Redis Cluster has only database 0"


def is_cluster(r: object) -> bool:
    """True for the client ``connect`` returns for a Redis Cluster."""
    return isinstance(r, RedisCluster)


def _cluster_mode(r: redis.Redis) -> bool:
    """Ask the server whether it runs in cluster mode (``HELLO``'s ``mode``, Redis 6+)."""
    try:
        reply: Any = r.execute_command("HELLO", "2")  # type: ignore[no-untyped-call]
    except rx.NoPermissionError:
        return False  # an ACL without HELLO: a standalone setup from before cluster support
    except rx.ResponseError as exc:
        if classify(exc) is not None:
            raise
        if "not allowed in cluster mode" in str(exc):  # SELECT of the URL's database
            raise FatalRedisError(_NOT_DB0) from None
        return False  # Redis < 6 has no HELLO, and no cluster mode we support
    if isinstance(reply, dict):
        mode = reply.get(b"mode", reply.get("mode"))
    else:
        fields = list(reply)
        mode = dict(zip(fields[::2], fields[1::2], strict=False)).get(b"mode")
    return mode in (b"cluster", "cluster")


def _open_cluster(url: str, kwargs: dict[str, Any]) -> redis.Redis:
    try:
        rc = RedisCluster.from_url(url, retry=Retry(NoBackoff(), CLUSTER_CLIENT_RETRIES), **kwargs)
    except rx.RedisClusterException as exc:
        if "db`` querystring" in str(exc):
            raise FatalRedisError(_NOT_DB0) from None
        # no node answered the slot map: try again later
        raise rx.ConnectionError(f"Redis Cluster not reachable: {str(exc)[:200]}") from None
    # RedisCluster offers the same command methods; typing it as redis.Redis keeps one code
    # path in every caller (see is_cluster for the few differences).
    return cast(redis.Redis, rc)


def client_kwargs(settings: Settings, timeout: float, name: str | None) -> dict[str, Any]:
    """The options every client of ours gets: timeouts, name, credentials, TLS."""
    scheme = urlsplit(settings.redis_url).scheme
    if scheme not in ("redis", "rediss", "unix"):
        raise FatalRedisError(f"REDIS_URL must start with redis:// or rediss://, got {scheme!r}://")
    kwargs: dict[str, Any] = {
        "socket_timeout": timeout,
        "socket_connect_timeout": min(timeout, 5.0),
        "socket_keepalive": True,
        "health_check_interval": 0,
        "client_name": name,
    }
    if settings.redis_password_file is not None:
        try:
            kwargs["password"] = settings.redis_password_file.read_text().strip()
        except OSError as exc:
            raise FatalRedisError(
                f"cannot read REDIS_PASSWORD_FILE {settings.redis_password_file}: {exc.strerror}"
            ) from None
    if settings.redis_username:
        kwargs["username"] = settings.redis_username
    if scheme == "rediss":
        kwargs["ssl_cert_reqs"] = "required"
        if settings.tls_ca_file:
            kwargs["ssl_ca_certs"] = str(settings.tls_ca_file)
        if settings.tls_cert_file:
            kwargs["ssl_certfile"] = str(settings.tls_cert_file)
        if settings.tls_key_file:
            kwargs["ssl_keyfile"] = str(settings.tls_key_file)
    return kwargs


def connect(
    settings: Settings,
    *,
    timeout: float = 10.0,
    name: str | None = None,
    wait_s: float = 3.0,
) -> redis.Redis:
    """A client for ``settings.redis_url`` with the ACL user, password file and TLS applied.

    Asks the server whether it is a cluster node, retrying transient errors for ``wait_s``
    seconds; a server still unreachable then raises the transient error, bad credentials raise
    ``FatalRedisError``.
    """
    url = settings.redis_url
    scheme = urlsplit(url).scheme
    kwargs = client_kwargs(settings, timeout, name)
    try:
        plain = redis.Redis.from_url(url, **kwargs)
    except ValueError as exc:
        raise FatalRedisError(f"REDIS_URL {mask_url(url)} is not valid: {exc}") from None
    if scheme == "unix":
        return plain
    deadline = time.monotonic() + wait_s
    # A client of its own for the question: redis-py changes how a client parses replies
    # once HELLO went through it.
    probe = redis.Redis.from_url(url, **{**kwargs, "client_name": None})
    try:
        cluster = retry.call(lambda: _cluster_mode(probe), "connect", deadline=deadline)
    except BaseException:
        plain.close()
        raise
    finally:
        probe.close()
    if not cluster:
        return plain
    plain.close()
    return retry.call(lambda: _open_cluster(url, kwargs), "connect", deadline=deadline)


def node_client(
    settings: Settings, r: redis.Redis, key: str, *, timeout: float, name: str
) -> redis.Redis:
    """A plain client with one connection of its own to the node that serves ``key``: on a
    single Redis that Redis, on a cluster the master of ``key``'s slot (as ``r`` maps it now).

    For what must be asked of one node: its view of its connections (``CLIENT LIST``).
    """
    kwargs = {**client_kwargs(settings, timeout, name), "single_connection_client": True}
    if not is_cluster(r):
        return redis.Redis.from_url(settings.redis_url, **kwargs)
    node: Any = cast(Any, r).get_node_from_key(key)
    url = urlsplit(settings.redis_url)
    if url.scheme == "rediss":
        kwargs["ssl"] = True
    if url.username and "username" not in kwargs:
        kwargs["username"] = unquote(url.username)
    if url.password and "password" not in kwargs:
        kwargs["password"] = unquote(url.password)
    return redis.Redis(host=node.host, port=int(node.port), **kwargs)


__all__ = [
    "TRANSIENT",
    "FatalRedisError",
    "classify",
    "connect",
    "is_cluster",
    "mask_url",
    "node_client",
]
