"""One HTTP request sent over a raw socket, byte for byte (HTTP clients normalise paths
such as `..`, `//` and `\\` before sending them), and the whole response read back."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from multidict import CIMultiDict


class RawResponse:
    def __init__(self, status: int, headers: CIMultiDict[str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    def json(self) -> Any:
        return json.loads(self.body)


async def _read_until_closed(reader: asyncio.StreamReader) -> bytes:
    """Everything the server sent; a reset after its response (it closes a connection whose
    request it refused without reading all of it) ends the read, not the test."""
    chunks = []
    while True:
        try:
            chunk = await reader.read(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


async def raw_request(
    port: int, request_line: str | bytes, headers: dict[str, str] | None = None
) -> RawResponse:
    """Send one request exactly as written (str as UTF-8) and read the whole response."""
    if isinstance(request_line, str):
        request_line = request_line.encode()
    lines = [request_line, b"Host: 127.0.0.1", b"Connection: close"]
    lines += [f"{name}: {value}".encode() for name, value in (headers or {}).items()]
    data = b"\r\n".join(lines) + b"\r\n\r\n"
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 2)
    try:
        writer.write(data)
        await writer.drain()
        raw = await asyncio.wait_for(_read_until_closed(reader), 3)
    finally:
        writer.close()
    head, _, rest = raw.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    parsed: CIMultiDict[str] = CIMultiDict()
    for line in header_lines:
        name, _, value = line.partition(":")
        parsed.add(name.strip(), value.strip())
    length = parsed.get("Content-Length")
    body = rest[: int(length)] if length is not None else rest
    return RawResponse(int(status_line.split(" ")[1]), parsed, body)
