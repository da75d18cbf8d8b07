"""store.wire, the one hand-written wire path, against a real Redis: replies in order, reply
errors as values, and a connection on which anything failed dropped, never reused (a cut in
the middle of a reply, a connection killed with replies pending, a block that raised)."""

from __future__ import annotations

import contextlib
import socket
import threading
import warnings
from collections.abc import Iterator

import pytest
import redis
from redis import exceptions as rx

from eventfleet.local.redisserver import LocalRedis
from eventfleet.store import wire


def test_roundtrip_reads_every_reply_then_raises_the_first_error(r: redis.Redis) -> None:
    r.set("s", "x")
    with wire.borrowed(r.connection_pool) as conn:
        with pytest.raises(rx.ResponseError, match="WRONGTYPE"):
            wire.roundtrip(conn, [("RPUSH", "l", "a"), ("RPUSH", "s", "b"), ("RPUSH", "l", "c")])
        assert r.lrange("l", 0, -1) == [b"a", b"c"]  # the others ran, as in a pipeline
        assert wire.roundtrip(conn, [("PING",), ("LLEN", "l")]) == [b"PONG", 2]  # in step


def test_read_gives_error_replies_as_values(r: redis.Redis) -> None:
    r.set("s", "x")
    with wire.borrowed(r.connection_pool) as conn:
        wire.send(conn, wire.pack(conn, [("GET", "s"), ("LLEN", "s"), ("INCR", "n")]))
        got = wire.read(conn, 3)
    assert got[0] == b"x" and got[2] == 1
    assert isinstance(got[1], rx.ResponseError) and "WRONGTYPE" in str(got[1])


def test_read_parses_with_the_clients_own_parser(r: redis.Redis) -> None:
    r.hset("h", mapping={"a": "1"})
    stack = [("HGETALL", "h"), ("EXISTS", "h")]
    with wire.borrowed(r.connection_pool) as conn:
        wire.send(conn, wire.pack(conn, stack, checked=True))
        got = wire.read(conn, 2, wire.parsed_by(r, conn, [(c, {}) for c in stack]))
    assert got == [{b"a": b"1"}, 1]


def test_both_packers_write_the_same_bytes(r: redis.Redis) -> None:
    cmds = [("RPUSHX", "k", "é", b"\x00\xff", 7, 1.5), ("PING",)]
    with wire.borrowed(r.connection_pool) as conn:
        assert b"".join(wire.pack(conn, cmds)) == b"".join(wire.pack(conn, cmds, checked=True))


def test_checkout_asks_the_pool_the_way_this_redis_py_wants(r: redis.Redis) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no deprecation of a command name argument
        conn = wire.checkout(r.connection_pool)
    wire.release(r.connection_pool, conn, in_step=True)


def test_a_connection_in_step_goes_back_to_the_pool_as_it_is(r: redis.Redis) -> None:
    pool = r.connection_pool
    with wire.borrowed(pool) as conn:
        assert wire.roundtrip(conn, [("PING",)]) == [b"PONG"]
    with wire.borrowed(pool) as again:
        assert again is conn
        assert again._sock is not None


def test_a_block_that_raises_drops_its_connection(r: redis.Redis) -> None:
    pool = r.connection_pool
    with pytest.raises(RuntimeError), wire.borrowed(pool) as conn:
        wire.send(conn, wire.pack(conn, [("SET", "a", "1"), ("GET", "a")]))
        raise RuntimeError("gave up before the replies")  # two replies left unread
    assert conn._sock is None
    with wire.borrowed(pool) as conn2:  # whatever connection it is, its replies are its own
        assert wire.roundtrip(conn2, [("ECHO", "mine")]) == [b"mine"]


def test_a_connection_killed_with_replies_pending_is_dropped(r: redis.Redis) -> None:
    pool = r.connection_pool
    with wire.borrowed(pool) as conn:
        my_id = wire.roundtrip(conn, [("CLIENT", "ID")])[0]
    admin = redis.Redis(connection_pool=redis.ConnectionPool.from_url(_url(r)))
    try:
        with pytest.raises(rx.ConnectionError), wire.borrowed(pool) as conn:
            assert wire.roundtrip(conn, [("CLIENT", "ID")])[0] == my_id
            wire.send(conn, wire.pack(conn, [("INCR", "n"), ("BLPOP", "nothing", 30), ("PING",)]))
            _wait_blocked(admin, my_id)
            admin.client_kill_filter(_id=my_id)
            wire.read(conn, 3)  # the INCR's reply, then the cut
        assert conn._sock is None
        assert r.get("n") == b"1"
        with wire.borrowed(pool) as conn3:
            assert wire.roundtrip(conn3, [("PING",)]) == [b"PONG"]
    finally:
        admin.close()


def test_a_reply_cut_in_the_middle_drops_the_connection(redis_server: LocalRedis) -> None:
    big = "v" * 200_000
    setup = redis.Redis.from_url(redis_server.url)
    setup.set("big", big)
    setup.close()
    with _cutting_proxy(redis_server.port, after=100_000) as port:
        pool = redis.ConnectionPool(host="127.0.0.1", port=port, socket_timeout=10)
        try:
            with pytest.raises(rx.ConnectionError), wire.borrowed(pool) as conn:
                wire.send(conn, wire.pack(conn, [("PING",), ("GET", "big"), ("PING",)]))
                wire.read(conn, 3)
            assert conn._sock is None
        finally:
            pool.disconnect()


# ---- helpers -----------------------------------------------------------------------------
def _url(r: redis.Redis) -> str:
    kw = r.connection_pool.connection_kwargs
    return f"redis://{kw['host']}:{kw['port']}"


def _wait_blocked(admin: redis.Redis, client_id: int) -> None:
    """Until Redis shows the client blocked (its BLPOP reached the server)."""
    for _ in range(100_000):
        found = admin.client_list(client_id=[str(client_id)])
        if found and found[0].get("cmd") == "blpop":
            return
    raise AssertionError("the client never blocked")


@contextlib.contextmanager
def _cutting_proxy(target: int, *, after: int) -> Iterator[int]:
    """One connection forwarded to Redis, its replies cut after ``after`` bytes (both
    sockets closed then): a connection lost in the middle of a reply."""
    server = socket.create_server(("127.0.0.1", 0))
    socks: list[socket.socket] = [server]

    def forward(src: socket.socket, dst: socket.socket, limit: int | None) -> None:
        passed = 0
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                if limit is not None and passed + len(data) >= limit:
                    dst.sendall(data[: limit - passed])
                    break
                passed += len(data)
                dst.sendall(data)
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def accept() -> None:
        with contextlib.suppress(OSError):
            client, _ = server.accept()
            upstream = socket.create_connection(("127.0.0.1", target))
            socks.extend([client, upstream])
            threading.Thread(target=forward, args=(client, upstream, None), daemon=True).start()
            forward(upstream, client, after)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1]
    finally:
        for s in socks:
            s.close()
        thread.join(10)


def test_a_large_exchange_is_sent_in_parts_and_answered_in_order(
    r: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past ``STREAM_BYTES`` what is packed goes out at once (Redis runs the first commands
    while the rest are packed); the replies are still read in order, one per command."""
    sent: list[int] = []
    real = wire.send

    def counting(conn: object, packed: object) -> None:
        sent.append(1)
        real(conn, packed)

    monkeypatch.setattr(wire, "send", counting)
    big = "x" * 40_000
    commands = [("SET", f"k{n}", f"{n}{big}") for n in range(10)] + [("MGET", "k0", "k9")]
    replies = wire.exchange(r.connection_pool, commands)
    assert replies[:10] == [b"OK"] * 10, replies[:10]
    assert replies[10] == [f"0{big}".encode(), f"9{big}".encode()]
    assert len(sent) == (6 if wire.FAST_PACK else 1), sent
