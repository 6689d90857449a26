"""A tools/call result through the real MCP SDK server, both protocol eras, JSON and SSE:
capped at the tool's max_response_bytes (a result the model reads, never a cut stream)
and scrubbed of the tool's credential (docs/answers-and-pins.md)."""

from __future__ import annotations

import json

import pytest

from tests.support.audit import audit_source, wait_for_records
from tests.support.gateway import TOOL_SECRET
from tests.support.mcp import mcp_config
from tests.support.mcp_sdk import SERVERS, client, sdk_server

ALLOW_CALLERS = """package gateway

import rego.v1

default decision := {"allow": false, "reason": "not a caller"}

decision := {"allow": true, "reason": "caller"} if "caller" in input.agent.roles
"""


@pytest.mark.parametrize("server", list(SERVERS))
async def test_an_echoed_credential_and_a_result_over_the_cap(tmp_path, start_gateway, server):
    flags, mode, _ = SERVERS[server]
    async with sdk_server([*flags, "--answers"]) as upstream:
        config = mcp_config(tmp_path, upstream, max_response_bytes=4000)
        (config.policy.path / "gateway.rego").write_text(ALLOW_CALLERS)
        gw = await start_gateway(config=config)
        async with client(str(gw.make_url("/tools/mcp")), mode) as mcp:
            whoami = await mcp.call_tool("whoami", {})
            assert not whoami.is_error
            assert whoami.content[0].text == "you called with [redacted]"

            small = await mcp.call_tool("big", {"size": 1000})
            assert not small.is_error and small.content[0].text == "b" * 1000

            large = await mcp.call_tool("big", {"size": 20_000})
            assert large.is_error is True
            error = json.loads(large.content[0].text)["error"]
            assert error["code"] == "upstream_response_too_large"
            assert "max_response_bytes (4000)" in error["message"]

            again = await mcp.call_tool("big", {"size": 10})  # the session goes on
            assert again.content[0].text == "b" * 10

    records = await wait_for_records(
        audit_source(gw),
        lambda rs: sum(r["kind"] == "outcome" for r in rs) >= 4,
    )
    outcomes = [
        r
        for r in records
        if r["kind"] == "outcome" and r.get("mcp", {}).get("method") == "tools/call"
    ]
    assert [r["error"] for r in outcomes].count("upstream_response_too_large") == 1
    # Once in the text content, once in the structured content.
    assert any(r.get("redacted") == {"credential": 2} for r in outcomes)
    assert all(TOOL_SECRET not in json.dumps(r) for r in records)
