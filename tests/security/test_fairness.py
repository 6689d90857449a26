"""One tool or one agent cannot take the whole gateway (issue 14, finding 4; docs/limits.md,
"Connections and fairness"): per-tool and per-agent caps on calls in progress answer 503
`tool_busy` with Retry-After, a slot is held until the answer is fully sent and given back
on every path, and each tool has its own upstream connection pool."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from aiohttp import web
from aiohttp.test_utils import TestClient

from gateway.config import Config, parse_config
from tests.support.gateway import AGENT_TOKEN, OTHER_TOKEN, auth, sha

BOTH_AGENTS = """package gateway

import rego.v1

default decision := {"allow": false, "reason": "denied"}

decision := {"allow": true, "reason": "ok"} if {
    input.agent.id in {"bot", "other"}
    input.request.path != "/deny"
}
"""


class Hanging:
    """An upstream whose answers wait until `release` is set; with `stream`, it sends its
    headers and a first chunk at once and the rest only then."""

    def __init__(self, *, stream: bool = False) -> None:
        self.release = asyncio.Event()
        self.arrived = 0
        self.stream = stream

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.arrived += 1
        if not self.stream:
            await self.release.wait()
            return web.Response(text="late")
        response = web.StreamResponse()
        await response.prepare(request)
        await response.write(b"first ")
        await self.release.wait()
        await response.write(b"last")
        await response.write_eof()
        return response

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        return app


async def fast_upstream(start_upstream: Any) -> str:
    async def ok(request: web.Request) -> web.Response:
        return web.Response(text="fast")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", ok)
    url: str = await start_upstream(app)
    return url


def fairness_config(
    tmp_path: Path, slow: str, fast: str, *, slow_cap: int, agent_cap: int = 128
) -> Config:
    policies = tmp_path / "policies"
    policies.mkdir(exist_ok=True)
    (policies / "gateway.rego").write_text(BOTH_AGENTS)
    tree = {
        "policy": {"path": str(policies), "watch": False},
        "agents": [
            {"id": "bot", "token_sha256": sha(AGENT_TOKEN), "roles": []},
            {"id": "other", "token_sha256": sha(OTHER_TOKEN), "roles": []},
        ],
        "limits": {"loop": None, "session_budget": None},
        "protection": {"max_concurrent_per_agent": agent_cap},
        "tools": [
            {"name": "slow", "upstream": slow, "timeout_s": 5, "max_concurrent": slow_cap},
            {"name": "fast", "upstream": fast, "timeout_s": 5},
        ],
    }
    return parse_config(yaml.safe_dump(tree), tmp_path)


async def until(check: Callable[[], bool], timeout_s: float = 5) -> None:
    async with asyncio.timeout(timeout_s):
        while not check():
            await asyncio.sleep(0.01)


async def busy_code(resp: aiohttp.ClientResponse) -> str:
    assert resp.status == 503, (resp.status, await resp.text())
    assert resp.headers["Retry-After"] == "1"
    body = await resp.json()
    assert body["error"]["retryable"] is True
    return str(body["error"]["code"])


async def test_calls_hanging_on_one_tool_leave_the_others_alone(
    tmp_path: Path, start_upstream: Any, start_gateway: Any
) -> None:
    """40 calls to a tool capped at 20 that hangs: 20 wait for it, 20 get tool_busy at
    once, and calls to another tool go through meanwhile."""
    hanging = Hanging()
    slow = await start_upstream(hanging.app())
    fast = await fast_upstream(start_upstream)
    gw: TestClient = await start_gateway(config=fairness_config(tmp_path, slow, fast, slow_cap=20))
    busy: list[str] = []

    async def call_slow(i: int) -> int:
        resp = await gw.get(f"/tools/slow/{i}", headers=auth())
        if resp.status == 503:
            busy.append(await busy_code(resp))
        else:
            await resp.read()
        return resp.status

    calls = [asyncio.create_task(call_slow(i)) for i in range(40)]
    try:
        await until(lambda: hanging.arrived + len(busy) >= 40)
        assert (hanging.arrived, busy) == (20, ["tool_busy"] * 20)
        for i in range(10):
            resp = await gw.get(f"/tools/fast/{i}", headers=auth(OTHER_TOKEN))
            assert (resp.status, await resp.text()) == (200, "fast")
        metrics = await (await gw.admin.get("/metrics")).text()
        assert 'callgate_calls_in_flight{tool="slow"} 20.0' in metrics
    finally:
        hanging.release.set()
        statuses = await asyncio.gather(*calls)
    assert sorted(statuses) == [200] * 20 + [503] * 20
    # Every slot came back: the tool takes 20 again.
    hanging.arrived = 0
    hanging.release.clear()
    calls = [asyncio.create_task(call_slow(i)) for i in range(20)]
    await until(lambda: hanging.arrived == 20)
    hanging.release.set()
    assert await asyncio.gather(*calls) == [200] * 20


async def test_each_tool_has_its_own_upstream_pool(
    tmp_path: Path, start_upstream: Any, start_gateway: Any
) -> None:
    hanging = Hanging()
    slow = await start_upstream(hanging.app())
    fast = await fast_upstream(start_upstream)
    gw = await start_gateway(config=fairness_config(tmp_path, slow, fast, slow_cap=20))
    svc = gw.services
    slow_pool, fast_pool = svc.client_for("slow"), svc.client_for("fast")
    assert slow_pool is not fast_pool
    assert slow_pool.connector.limit < fast_pool.connector.limit


async def test_one_agent_over_its_cap_does_not_stop_another(
    tmp_path: Path, start_upstream: Any, start_gateway: Any
) -> None:
    hanging = Hanging()
    slow = await start_upstream(hanging.app())
    fast = await fast_upstream(start_upstream)
    gw = await start_gateway(config=fairness_config(tmp_path, slow, fast, slow_cap=20, agent_cap=3))
    held = [asyncio.create_task(gw.get(f"/tools/slow/{i}", headers=auth())) for i in range(3)]
    try:
        await until(lambda: hanging.arrived == 3)
        # The agent's cap counts its calls to every tool.
        resp = await gw.get("/tools/fast/x", headers=auth())
        assert await busy_code(resp) == "tool_busy"
        assert "you have 3 calls in progress" in (await resp.json())["error"]["message"]
        resp = await gw.get("/tools/fast/x", headers=auth(OTHER_TOKEN))
        assert (resp.status, await resp.text()) == (200, "fast")
        other = asyncio.create_task(gw.get("/tools/slow/y", headers=auth(OTHER_TOKEN)))
        await until(lambda: hanging.arrived == 4)
    finally:
        hanging.release.set()
        answers = await asyncio.gather(*held, other)
    assert [r.status for r in answers] == [200] * 4
    assert (await gw.get("/tools/fast/x", headers=auth())).status == 200


async def test_a_slot_is_held_until_the_answer_is_fully_sent(
    tmp_path: Path, start_upstream: Any, start_gateway: Any
) -> None:
    streaming = Hanging(stream=True)
    slow = await start_upstream(streaming.app())
    fast = await fast_upstream(start_upstream)
    gw = await start_gateway(config=fairness_config(tmp_path, slow, fast, slow_cap=1))
    resp = await gw.get("/tools/slow/a", headers=auth())
    assert resp.status == 200
    assert await resp.content.readexactly(6) == b"first "
    assert await busy_code(await gw.get("/tools/slow/b", headers=auth())) == "tool_busy"
    streaming.release.set()
    assert await resp.read() == b"last"
    resp = await gw.get("/tools/slow/c", headers=auth())
    assert (resp.status, await resp.read()) == (200, b"first last")


async def test_a_slot_comes_back_on_every_path(
    tmp_path: Path, start_upstream: Any, start_gateway: Any
) -> None:
    """A cap of one: after each way a call can end, the next call is admitted."""
    streaming = Hanging(stream=True)
    slow = await start_upstream(streaming.app())
    config = fairness_config(tmp_path, slow, "http://127.0.0.1:9", slow_cap=1)
    tools = [
        config.tools[0].model_copy(update={"timeout_s": 0.3}),
        config.tools[1].model_copy(update={"max_concurrent": 1}),
    ]
    gw = await start_gateway(config=config.model_copy(update={"tools": tuple(tools)}))
    svc = gw.services

    async def admitted(tool: str) -> bool:
        resp = await gw.get(f"/tools/{tool}/deny", headers=auth())
        await resp.read()
        return resp.status == 403

    # Refused by the policy after the slot was taken.
    assert (await gw.get("/tools/fast/deny", headers=auth())).status == 403
    assert await admitted("fast")
    # The upstream cannot be reached (502).
    assert (await gw.get("/tools/fast/x", headers=auth())).status == 502
    assert await admitted("fast")
    # The upstream's answer stops in the middle (it sends nothing more within timeout_s).
    resp = await gw.get("/tools/slow/x", headers=auth())
    assert resp.status == 200
    with contextlib.suppress(aiohttp.ClientPayloadError):
        await resp.read()
    await until(lambda: svc.in_flight.count("tool", "slow") == 0)
    assert await admitted("slow")
    # The agent hangs up while the answer streams.
    resp = await gw.get("/tools/slow/y", headers=auth())
    assert await resp.content.readexactly(6) == b"first "
    resp.close()
    await until(lambda: svc.in_flight.count("tool", "slow") == 0)
    assert await admitted("slow")
    assert svc.in_flight.count("agent", "bot") == 0


async def test_an_mcp_call_shed_for_its_cap_does_not_wait_for_its_body(
    tmp_path: Path, start_upstream: Any, start_gateway: Any
) -> None:
    """Shedding load stays cheap: a refused MCP call is answered in the MCP form, but the
    gateway does not read (or wait for) its body to find the JSON-RPC id."""
    hanging = Hanging()
    config = fairness_config(
        tmp_path, await start_upstream(hanging.app()), "http://127.0.0.1:9", slow_cap=1
    )
    mcp = config.tools[0].model_copy(update={"kind": "mcp"})
    gw: TestClient = await start_gateway(config=config.model_copy(update={"tools": (mcp,)}))
    message = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "a"}}
    held = asyncio.create_task(gw.post("/tools/slow", headers=auth(), json=message))
    try:
        await until(lambda: hanging.arrived == 1)
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.server.port)
        writer.write(
            b"POST /tools/slow HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n"
            + f"Authorization: Bearer {AGENT_TOKEN}\r\nContent-Length: 1000\r\n\r\n".encode()
        )
        async with asyncio.timeout(3):  # the tool's timeout_s (5 s) is what a read would wait
            head = await reader.readuntil(b"\r\n\r\n")
        writer.close()
        assert head.startswith(b"HTTP/1.1 503"), head
    finally:
        hanging.release.set()
        await held
