"""The one place that speaks the Redis wire protocol on a redis-py connection by hand.

A pipeline through redis-py's ``Pipeline`` does per-command bookkeeping that a few hot paths
skip: they send commands packed as one write on one connection and read the replies back
themselves (sometimes later, with another write in between: ``eventfleet.worker.pipelines``'
one pipeline per master); the producers' pushes (sync and asyncio) and the liveness
connection do too. Every such path goes through here, and so shares one rule: **a
connection on which anything failed is dropped** (disconnected), never reused, because
replies left unread on it would answer the next command. Reply errors (``-ERR ...``) are
no failure of the connection: they come back as values, in order, and the connection stays
in step.

Works with every redis-py from the floor in ``locks/minimum.txt`` on: it uses only
``Connection.send_packed_command``, ``pack_commands``, ``read_response`` and ``disconnect``,
and ``ConnectionPool.get_connection``/``release``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import redis
from redis import exceptions as rx

Command = Sequence[Any]
"""One command as its arguments, name first: ``("RPUSHX", key, value)``."""


def _hiredis_packer() -> Any:
    try:
        from hiredis import pack_command
    except ImportError:  # pragma: no cover - hiredis is a dependency (redis[hiredis])
        return None
    return pack_command


_PACK: Any = _hiredis_packer()
"""hiredis' RESP packer, which redis-py's packer calls too after per-argument checks."""

FAST_PACK = _PACK is not None
"""Whether ``pack`` skips redis-py's per-argument checks (hiredis is installed)."""


def pack(conn: Any, commands: Sequence[Command], *, checked: bool = False) -> list[bytes]:
    """``commands`` packed as one write for ``conn``: hiredis packs them directly when it is
    installed (arguments must then be ``str``, ``bytes``, ``int`` or ``float``); redis-py's
    ``pack_commands`` otherwise, or with ``checked`` (its per-argument checks and encoding,
    as its own pipeline packs)."""
    if checked or _PACK is None:
        return list(conn.pack_commands(commands))
    return [b"".join([_PACK(tuple(cmd)) for cmd in commands])]


def send(conn: Any, packed: bytes | Sequence[bytes]) -> None:
    """Send what ``pack`` made; a failure drops the connection and raises."""
    try:
        conn.send_packed_command(packed)
    except BaseException:
        conn.disconnect()
        raise


def read(conn: Any, n: int, reply: Callable[[int], Any] | None = None) -> list[Any]:
    """Read ``n`` replies in order, reply errors as values. ``reply(i)`` reads the ``i``-th
    (for a parse of redis-py's own, ``client.parse_response``); by default the connection's
    ``read_response``. Any other failure drops the connection and raises."""
    replies: list[Any] = []
    try:
        for i in range(n):
            try:
                replies.append(conn.read_response() if reply is None else reply(i))
            except rx.ResponseError as exc:
                replies.append(exc)
    except BaseException:
        conn.disconnect()
        raise
    return replies


def parsed_by(client: Any, conn: Any, commands: Sequence[tuple[Command, dict[str, Any]]]) -> Any:
    """A ``reply`` for ``read``: the ``i``-th reply parsed by ``client`` as redis-py's
    pipeline parses it (the command's response callback applied, with its options);
    ``commands`` as a pipeline's ``command_stack`` holds them."""

    def reply(i: int) -> Any:
        args, options = commands[i]
        return client.parse_response(conn, args[0], **options)

    return reply


def raise_first_error(replies: Sequence[Any]) -> list[Any]:
    """``replies`` as a list, or the first error reply among them raised (as a pipeline
    executed with ``raise_on_error`` does)."""
    for r in replies:
        if isinstance(r, rx.ResponseError):
            raise r
    return list(replies)


def roundtrip(conn: Any, commands: Sequence[Command]) -> list[Any]:
    """Send ``commands`` as one write and read their replies; then raise the first error
    reply, if any (the connection is in step either way)."""
    send(conn, pack(conn, commands))
    return raise_first_error(read(conn, len(commands)))


class Queue:
    """Commands queued the way a redis-py pipeline takes them (``evalsha`` from a registered
    script's call, ``xack``, ``execute_command``), kept as plain tuples for ``exchange``: code
    that queues on a pipeline queues on this unchanged, and skips the pipeline's per-argument
    encoding and bookkeeping (about a fifth of a millisecond for a batch of 200 orders' writes,
    measured against redis-py's ``pack_commands``). A registered script called on it does not
    load itself (the pipeline's ``SCRIPT EXISTS`` round trip): a ``NOSCRIPT`` reply comes back
    as a value, for the caller to load the scripts and send again."""

    __slots__ = ("commands",)

    def __init__(self) -> None:
        self.commands: list[Command] = []

    def execute_command(self, *args: Any, **_options: Any) -> None:
        self.commands.append(args)

    def evalsha(self, sha: str, numkeys: int, *args: Any) -> None:
        self.commands.append(("EVALSHA", sha, numkeys, *args))

    def xack(self, name: Any, groupname: Any, *ids: Any) -> None:
        self.commands.append(("XACK", name, groupname, *ids))

    def __len__(self) -> int:
        return len(self.commands)


def exchange(pool: Any, commands: Sequence[Command]) -> list[Any]:
    """``commands`` packed as one write on a connection of ``pool`` (a redis-py pool) and their
    replies read back in order, reply errors as values; a connection on which anything failed
    is dropped before it goes back (``borrowed``)."""
    with borrowed(pool) as conn:
        if _PACK is None:
            send(conn, pack(conn, commands))
        else:
            _send_streamed(conn, commands)
        return read(conn, len(commands))


STREAM_BYTES = 64 * 1024
"""``exchange`` sends what it has packed once this much is waiting: Redis runs the first
commands of a large write (a read model's flush: megabytes) while the rest are packed."""


def _send_streamed(conn: Any, commands: Sequence[Command]) -> None:
    parts: list[bytes] = []
    size = 0
    for cmd in commands:
        packed = _PACK(tuple(cmd))
        parts.append(packed)
        size += len(packed)
        if size >= STREAM_BYTES:
            send(conn, [b"".join(parts)])
            parts, size = [], 0
    if parts:
        send(conn, [b"".join(parts)])


def checkout(pool: Any) -> Any:
    """A connection from a redis-py pool. ``get_connection()`` takes no argument from
    redis-py 5.3 on (and warns about one); 5.0 to 5.2 require a command name, which they
    ignore for a plain pool."""
    if _NEEDS_COMMAND_NAME:
        return pool.get_connection("PIPELINE")
    return pool.get_connection()


_NEEDS_COMMAND_NAME = redis.__version__.split(".")[:2] in (["5", "0"], ["5", "1"], ["5", "2"])


def release(pool: Any, conn: Any, *, in_step: bool) -> None:
    """Give ``conn`` back to ``pool``; dropped first unless ``in_step`` (every reply of what
    was sent on it read)."""
    if not in_step:
        conn.disconnect()
    pool.release(conn)


@contextmanager
def borrowed(pool: Any) -> Iterator[Any]:
    """A connection of ``pool`` for the block, given back after it; dropped first when the
    block raised (replies may be left unread on it)."""
    conn = checkout(pool)
    try:
        yield conn
    except BaseException:
        conn.disconnect()
        raise
    finally:
        pool.release(conn)


async def acheckout(pool: Any) -> Any:
    """``checkout`` for redis-py's asyncio pools."""
    return await (pool.get_connection("PIPELINE") if _NEEDS_COMMAND_NAME else pool.get_connection())


async def asend(conn: Any, packed: bytes | Sequence[bytes]) -> None:
    """``send`` for an asyncio connection: a failure (or a cancel) drops it and raises."""
    try:
        await conn.send_packed_command(packed)
    except BaseException:
        await conn.disconnect()
        raise


async def aread(conn: Any, n: int) -> list[Any]:
    """``read`` for an asyncio connection: ``n`` replies in order, reply errors as values;
    any other failure (or a cancel) drops the connection and raises."""
    replies: list[Any] = []
    try:
        for _ in range(n):
            try:
                replies.append(await conn.read_response())
            except rx.ResponseError as exc:
                replies.append(exc)
    except BaseException:
        await conn.disconnect()
        raise
    return replies


async def arelease(pool: Any, conn: Any, *, in_step: bool) -> None:
    """``release`` for an asyncio pool."""
    if not in_step:
        await conn.disconnect()
    await pool.release(conn)


async def apipeline(pool: Any, commands: Sequence[Command]) -> list[Any]:
    """For redis-py's asyncio clients: ``commands`` packed as one write on a connection of
    ``pool`` and their replies read back in order, reply errors as values (as ``send`` and
    ``read``). A connection on which anything failed, or that was cancelled midway, is dropped
    before it goes back to the pool."""
    conn = await acheckout(pool)
    in_step = False
    try:
        await asend(conn, pack(conn, commands))
        replies = await aread(conn, len(commands))
        in_step = True
    finally:
        await arelease(pool, conn, in_step=in_step)
    return replies
