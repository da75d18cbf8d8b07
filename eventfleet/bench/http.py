"""A minimal HTTP/1.1 client on asyncio streams, for load: one keep-alive connection per
caller, ``Content-Length`` bodies only (what ``eventfleet api`` sends), no TLS, no redirects.

Example::

    conn = await Conn.open("127.0.0.1", 8080)
    status, headers, body = await conn.request("GET", "/healthz")
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any


class HttpError(RuntimeError):
    """The server's answer could not be read (closed, malformed)."""


class Conn:
    def __init__(
        self, host: str, port: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.host = host
        self.port = port
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, host: str, port: int) -> Conn:
        reader, writer = await asyncio.open_connection(host, port)
        return cls(host, port, reader, writer)

    async def request(
        self,
        method: str,
        path: str,
        *,
        headers: dict[str, str] | None = None,
        body: bytes = b"",
    ) -> tuple[int, dict[str, str], bytes]:
        lines = [f"{method} {path} HTTP/1.1", f"Host: {self.host}:{self.port}"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        if body or method in ("POST", "PUT", "PATCH"):
            lines.append(f"Content-Length: {len(body)}")
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status_line, *rest = head.decode("latin-1").split("\r\n")
        parts = status_line.split(" ", 2)
        if len(parts) < 2 or not parts[1].isdigit():
            raise HttpError(f"not an HTTP answer: {status_line[:80]!r}")
        got: dict[str, str] = {}
        for line in rest:
            if ":" in line:
                k, v = line.split(":", 1)
                got[k.strip().lower()] = v.strip()
        size = int(got.get("content-length", "0"))
        data = await self.reader.readexactly(size) if size else b""
        return int(parts[1]), got, data

    async def json(
        self, method: str, path: str, doc: Any = None, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], Any]:
        hdrs = dict(headers or {})
        body = b""
        if doc is not None:
            body = json.dumps(doc).encode()
            hdrs["Content-Type"] = "application/json"
        status, got, data = await self.request(method, path, headers=hdrs, body=body)
        return status, got, json.loads(data) if data else None

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await self.writer.wait_closed()


__all__ = ["Conn", "HttpError"]
