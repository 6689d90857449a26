"""An approved action's stored result is what an agent would have got: capped at the
tool's max_response_bytes and scrubbed of its credential (docs/answers-and-pins.md)."""

from __future__ import annotations

import asyncio

from aiohttp import web

from tests.support.approvals import approval_config, decide, ended
from tests.support.audit import audit_source, wait_for_records
from tests.support.gateway import TOOL_SECRET, auth


def refunds_app(write_body: bytes | list[bytes]) -> web.Application:
    """A refunds tool that echoes its credential header, its body written in pieces."""

    async def handler(request: web.Request) -> web.StreamResponse:
        await request.read()
        response = web.StreamResponse(
            status=201,
            headers={"Content-Type": "text/plain", "X-Seen": request.headers["Authorization"]},
        )
        response.enable_chunked_encoding()
        await response.prepare(request)
        for piece in write_body if isinstance(write_body, list) else [write_body]:
            await response.write(piece)
            await asyncio.sleep(0.02)
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_post("/refunds", handler)
    return app


async def park_and_approve(gw, tool_name: str = "echo") -> dict:
    resp = await gw.post(f"/tools/{tool_name}/refunds", headers=auth(), json={"amount": 5})
    assert resp.status == 202
    action_id = (await resp.json())["action_id"]
    await decide(gw, action_id)
    return await ended(gw, action_id)


async def test_the_stored_result_is_scrubbed(tmp_path, start_upstream, start_gateway):
    upstream = await start_upstream(
        refunds_app(
            [b"refunded, key " + TOOL_SECRET[:5].encode(), TOOL_SECRET[5:].encode() + b" ok"]
        )
    )
    gw = await start_gateway(config=approval_config(tmp_path, upstream))
    action = await park_and_approve(gw)
    result = action["result"]
    assert action["state"] == "succeeded"
    assert result["body"] == "refunded, key [redacted] ok"
    assert ["X-Seen", "[redacted]"] in result["headers"]
    assert result["redacted"] == {"credential": 2}
    records = await wait_for_records(
        audit_source(gw),
        lambda rs: any(r["kind"] == "outcome" and r.get("action_id") == action["id"] for r in rs),
    )
    outcome = next(
        r for r in records if r["kind"] == "outcome" and r.get("action_id") == action["id"]
    )
    assert outcome["redacted"] == {"credential": 2}
    metrics = gw.services.metrics.registry
    labels = {"tool": "echo", "kind": "credential"}
    assert metrics.get_sample_value("callgate_response_redactions_total", labels) == 2


async def test_the_stored_result_is_capped(tmp_path, start_upstream, start_gateway):
    upstream = await start_upstream(refunds_app([b"r" * 600, b"r" * 600]))
    config = approval_config(tmp_path, upstream)
    tool = config.tools[0].model_copy(update={"max_response_bytes": 1000})
    gw = await start_gateway(config=config.model_copy(update={"tools": (tool,)}))
    action = await park_and_approve(gw)
    result = action["result"]
    assert result["error"] == "upstream_response_too_large"
    assert result["truncated"] is True
    # What came before the cap (less the scrubber's held-back tail), nothing past it.
    assert set(result["body"]) == {"r"} and 500 < len(result["body"]) <= 1000
    labels = {"tool": "echo", "source": "approved_action"}
    metrics = gw.services.metrics.registry
    assert metrics.get_sample_value("callgate_responses_too_large_total", labels) == 1
