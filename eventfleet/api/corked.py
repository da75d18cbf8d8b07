"""One socket write per response: uvicorn writes a response's head and its body apart (two
``transport.write`` calls, and uvloop sends each at once: two ``send`` syscalls, two TCP
segments, two wake-ups of the client). On loopback a write costs the sender about as much CPU
as the rest of a small request's Python, so the API's HTTP protocol is uvicorn's own with its
transport wrapped: the writes of one turn of the event loop are kept and sent as one, at the
end of the turn (``call_soon``), or at once when the connection closes.

Nothing else changes: uvicorn parses, answers, keeps connections alive and shuts down as
before, through the transport it was given (``connection_made``), which it uses for everything.
"""

from __future__ import annotations

import asyncio
from typing import Any, cast


class Corked:
    """A transport whose writes within a turn of the event loop leave as one write."""

    def __init__(self, transport: asyncio.Transport) -> None:
        self._t = transport
        self._held: list[bytes] = []
        self._loop = asyncio.get_running_loop()

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not self._held:
            self._loop.call_soon(self.flush)
        self._held.append(data if type(data) is bytes else bytes(data))

    def writelines(self, lines: Any) -> None:
        for data in lines:
            self.write(data)

    def flush(self) -> None:
        if self._held:
            data = b"".join(self._held)
            self._held = []
            if not self._t.is_closing():
                self._t.write(data)

    def close(self) -> None:
        self.flush()
        self._t.close()

    def abort(self) -> None:
        self._held = []
        self._t.abort()

    def write_eof(self) -> None:
        self.flush()
        self._t.write_eof()

    def get_write_buffer_size(self) -> int:
        return self._t.get_write_buffer_size() + sum(map(len, self._held))

    def __getattr__(self, name: str) -> Any:  # the rest: the transport's own
        return getattr(self._t, name)


def corked(base: type[asyncio.Protocol]) -> type[asyncio.Protocol]:
    """uvicorn's HTTP protocol ``base`` with its transport ``Corked``."""

    class CorkedProtocol(base):  # type: ignore[valid-type,misc]
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            super().connection_made(Corked(cast(asyncio.Transport, transport)))

    CorkedProtocol.__name__ = CorkedProtocol.__qualname__ = f"Corked{base.__name__}"
    return CorkedProtocol


__all__ = ["Corked", "corked"]
