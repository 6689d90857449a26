"""The agent listener against connections that take it from everyone (issue 14, findings 4
and 6; docs/limits.md, Connections and fairness): a head that takes too long (slowloris), an idle
kept-alive connection, heads too big or with too many lines, and the open files limit.
Each runs a real `python -m gateway serve` on 127.0.0.1 and talks raw HTTP to it."""

from __future__ import annotations

import asyncio
import contextlib
import resource
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.gateway import AGENT_TOKEN, start_path_recorder
from tests.support.process import Gateway

REQUEST = (
    f"GET /tools/echo/x HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {AGENT_TOKEN}\r\n"
).encode()


@pytest.fixture
async def serve(tmp_path: Path, start_upstream: Any) -> AsyncIterator[Any]:
    """serve(protection) -> a running gateway process with that protection section."""
    started: list[Gateway] = []

    async def start(protection: dict[str, Any] | None = None) -> Gateway:
        gateway = Gateway(
            tmp_path,
            (await start_path_recorder(start_upstream))[0],
            extra={"protection": protection or {}},
        )
        started.append(gateway)
        await gateway.start()
        return gateway

    yield start
    for gateway in started:
        await gateway.stop()


@contextlib.asynccontextmanager
async def connection(gateway: Gateway) -> AsyncIterator[tuple[Any, Any]]:
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
    try:
        yield reader, writer
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def closed_by_gateway(reader: asyncio.StreamReader, within_s: float = 5) -> bytes:
    """Everything the gateway sends until it closes the connection (fails past `within_s`)."""
    async with asyncio.timeout(within_s):
        try:
            return await reader.read(-1)
        except ConnectionResetError:
            return b""


async def answer(reader: asyncio.StreamReader, writer: Any, head: bytes) -> bytes:
    """Send a whole request head, read one answer's status line and headers and body."""
    writer.write(head + b"\r\n")
    await writer.drain()
    async with asyncio.timeout(5):
        status_and_headers = await reader.readuntil(b"\r\n\r\n")
        length = next(
            int(line.split(b":", 1)[1])
            for line in status_and_headers.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        return status_and_headers + await reader.readexactly(length)


async def test_a_head_sent_too_slowly_is_cut_off(serve: Any) -> None:
    gateway = await serve({"header_timeout_s": 0.5, "keepalive_timeout_s": 60})
    async with connection(gateway) as (reader, writer):  # slowloris: a header now and then
        writer.write(REQUEST)

        async def dribble() -> None:
            with contextlib.suppress(OSError):
                for i in range(100):
                    writer.write(f"X-Slow-{i}: a\r\n".encode())
                    await writer.drain()
                    await asyncio.sleep(0.1)

        dribbling = asyncio.create_task(dribble())
        try:
            assert await closed_by_gateway(reader) == b""
        finally:
            dribbling.cancel()
    async with connection(gateway) as (reader, _writer):  # connects and sends nothing
        assert await closed_by_gateway(reader) == b""
    async with connection(gateway) as (reader, writer):  # a whole head in time is served
        assert (await answer(reader, writer, REQUEST)).startswith(b"HTTP/1.1 200")
        # Idle between requests is the keep-alive's to limit, not the head timeout's.
        await asyncio.sleep(1)
        assert (await answer(reader, writer, REQUEST)).startswith(b"HTTP/1.1 200")


async def test_an_idle_kept_alive_connection_is_closed(serve: Any) -> None:
    gateway = await serve({"header_timeout_s": 10, "keepalive_timeout_s": 0.5})
    async with connection(gateway) as (reader, writer):
        assert (await answer(reader, writer, REQUEST)).startswith(b"HTTP/1.1 200")
        assert await closed_by_gateway(reader) == b""


@pytest.mark.parametrize(
    ("extra", "end", "why"),
    [
        # 70 lines of 1,000 bytes: each fine, together past max_header_bytes (65,536).
        ([f"X-Big-{i}: {'b' * 1000}" for i in range(70)], b"\r\n", b"max_header_bytes"),
        # The same, never ending: refused once past the limit, request line allowed for.
        ([f"X-Big-{i}: {'b' * 1000}" for i in range(75)], b"", b"max_header_bytes"),
        # 101 short lines: past max_headers (100).
        ([f"X-Many-{i}: m" for i in range(101)], b"\r\n", b"Too many headers"),
        # One line of 20,000 bytes: past the longest line (16 KiB).
        ([f"X-Long: {'l' * 20_000}"], b"\r\n", b"Got more than 16384 bytes"),
    ],
    ids=["total-bytes", "total-bytes-unfinished", "too-many", "one-too-long"],
)
async def test_heads_too_big_are_refused_with_431(
    serve: Any, extra: list[str], end: bytes, why: bytes
) -> None:
    gateway = await serve()
    head = REQUEST + "".join(f"{line}\r\n" for line in extra).encode() + end
    async with connection(gateway) as (reader, writer):
        writer.write(head)
        await writer.drain()
        refused = await closed_by_gateway(reader)
    status_line = refused.split(b"\r\n", 1)[0]
    # aiohttp answers a head it could not read as HTTP/1.0 (see docs/limits.md).
    assert status_line.endswith(b" 431 Request Header Fields Too Large"), refused[:200]
    assert why in refused
    async with connection(gateway) as (reader, writer):  # just under the limits: served
        fine = [f"X-Fine-{i}: {'f' * 600}" for i in range(90)]
        served = await answer(reader, writer, REQUEST + "".join(f"{x}\r\n" for x in fine).encode())
        assert served.startswith(b"HTTP/1.1 200"), served[:200]


def open_files_limits(pid: int) -> tuple[int, int]:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            soft, hard = line.split()[3:5]
            return int(soft), int(hard)
    raise AssertionError("no open files line")


@pytest.mark.skipif(not Path("/proc/self/limits").exists(), reason="needs /proc")
async def test_the_open_files_limit_is_raised_to_the_hard_one(
    tmp_path: Path, start_upstream: Any
) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard <= 1024:
        pytest.skip("a hard open files limit of 1,024 or less, or none, tells nothing")
    gateway = Gateway(tmp_path, (await start_path_recorder(start_upstream))[0])
    # The gateway process inherits a soft limit of 1,024, as from a default shell.
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard))
    try:
        await gateway.start()
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    try:
        assert gateway.proc is not None
        started_soft, started_hard = open_files_limits(gateway.proc.pid)
        assert started_hard == hard
        assert started_soft == started_hard
        assert f'"open_files_limit": {started_soft}' in gateway.log.read_text()
    finally:
        await gateway.stop()
