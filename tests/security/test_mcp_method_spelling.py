"""A JSON-RPC method spelled unlike MCP's own (issue 14, 13b): `Tools/Call` was forwarded
with `input.mcp.tool` null, which the default policy reads as "no MCP tool involved" and
allows, while a lenient server may run it as tools/call. A method that differs from a
known MCP method only by case (or by Unicode compatibility forms) is refused as a
malformed message naming the canonical spelling; the policy sees every method exactly as
sent (see docs/mcp.md)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from aiohttp import web

from tests.support.gateway import auth, copy_default_policies, make_config
from tests.support.mcp import rpc

GRANT = {"echo": {"methods": ["POST"], "mcp_tools": ["add"]}}  # for the role "caller"


async def gateway_with_default_policies(tmp_path: Any, start_upstream: Any, start_gateway: Any):
    seen: list[Any] = []

    async def server(request: web.Request) -> web.Response:
        body = await request.json()
        seen.append(body)
        answer = {"jsonrpc": "2.0", "id": body.get("id"), "result": {"content": []}}
        return web.json_response(answer)

    app = web.Application()
    app.router.add_post("/mcp", server)
    upstream = await start_upstream(app)
    policies = copy_default_policies(tmp_path)
    data = json.loads((policies / "data.json").read_text())
    data["grants"]["caller"] = GRANT
    (policies / "data.json").write_text(json.dumps(data))
    config = make_config(tmp_path, upstream + "/mcp", policy_dir=policies, tool={"kind": "mcp"})
    return await start_gateway(config=config), seen


async def post(gw: Any, message: dict[str, Any]) -> Any:
    headers = {**auth(), "Accept": "application/json, text/event-stream"}
    return await gw.post("/tools/echo", json=message, headers=headers)


@pytest.mark.parametrize(
    ("method", "canonical"),
    [
        ("Tools/Call", "tools/call"),
        ("TOOLS/CALL", "tools/call"),
        ("tools/Call", "tools/call"),
        ("\uff54ools/call", "tools/call"),  # a fullwidth t
        ("tools/call ", "tools/call"),
        ("Resources/Read", "resources/read"),
        ("Initialize", "initialize"),
    ],
)
async def test_a_known_method_in_another_spelling_is_refused(
    tmp_path, start_upstream, start_gateway, method, canonical
):
    gw, seen = await gateway_with_default_policies(tmp_path, start_upstream, start_gateway)
    message = rpc(method, {"name": "secret", "arguments": {}, "uri": "file:///x"}, id=4)
    resp = await post(gw, message)
    assert resp.status == 400
    answer = await resp.json()
    assert answer["id"] == 4
    assert answer["error"]["code"] == -32600
    assert repr(canonical) in answer["error"]["message"]
    assert answer["error"]["data"]["error"]["code"] == "bad_request"
    assert seen == [], "nothing reached the server"


async def test_the_canonical_spelling_is_decided_on_the_tool(
    tmp_path, start_upstream, start_gateway
):
    gw, seen = await gateway_with_default_policies(tmp_path, start_upstream, start_gateway)
    denied = await post(gw, rpc("tools/call", {"name": "secret", "arguments": {}}))
    assert (await denied.json())["result"]["isError"] is True
    allowed = await post(gw, rpc("tools/call", {"name": "add", "arguments": {}}))
    assert (await allowed.json())["result"] == {"content": []}
    assert [m["params"]["name"] for m in seen] == ["add"]


ECHO_METHOD_REGO = """package gateway

import rego.v1

decision := {"allow": false, "reason": sprintf("method <%s>", [input.mcp.method])}
"""


async def test_the_policy_sees_a_method_as_sent(tmp_path, start_upstream, start_gateway):
    """A method MCP does not know is the policy's to judge, under the name it was sent."""
    policies = tmp_path / "echo-method"
    policies.mkdir()
    (policies / "gateway.rego").write_text(ECHO_METHOD_REGO)
    config = make_config(
        tmp_path, "http://127.0.0.1:9/mcp", policy_dir=policies, tool={"kind": "mcp"}
    )
    gw = await start_gateway(config=config)
    resp = await post(gw, rpc("vendor/Custom-Thing", {}, id=9))
    answer = await resp.json()
    assert answer["id"] == 9
    assert answer["error"]["message"] == "method <vendor/Custom-Thing>"
