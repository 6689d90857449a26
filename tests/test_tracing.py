"""Traces over OTLP/HTTP (docs/operations.md, Tracing): a real collector started here
decodes what the gateway exports; the trace id in the audit log and the access log."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
import socket
import time
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span as ProtoSpan
from pydantic import SecretStr

from gateway.config import ConfigError, Otlp, Rate, Telemetry, parse_config
from gateway.observability import tracing
from gateway.observability.logs import AccessLog
from tests.support.approvals import approval_config
from tests.support.audit import call_records, wait_for_records
from tests.support.gateway import auth, make_config
from tests.support.mcp import post, rpc, start_with

TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")
SERVER, CLIENT = ProtoSpan.SPAN_KIND_SERVER, ProtoSpan.SPAN_KIND_CLIENT
STATUS_ERROR = 2


@pytest.fixture(autouse=True)
def quick_batches(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """Batches leave every 50 ms instead of 5 s (the SDK reads this when it starts); the
    access log writes its lines."""
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "50")
    caplog.set_level(logging.INFO, logger="callgate.access")


class Collector:
    """An OTLP/HTTP receiver: the spans of every export, decoded, and the headers sent."""

    def __init__(self) -> None:
        self.spans: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []

    async def handle(self, request: web.Request) -> web.Response:
        assert request.content_type == "application/x-protobuf"
        export = ExportTraceServiceRequest.FromString(await request.read())
        self.headers.append(dict(request.headers))
        for resource in export.resource_spans:
            service = _attributes(resource.resource.attributes)
            for scope in resource.scope_spans:
                for span in scope.spans:
                    self.spans.append(
                        {
                            "name": span.name,
                            "kind": span.kind,
                            "trace_id": span.trace_id.hex(),
                            "span_id": span.span_id.hex(),
                            "parent": span.parent_span_id.hex(),
                            "attributes": _attributes(span.attributes),
                            "status": (span.status.code, span.status.message),
                            "resource": service,
                        }
                    )
        return web.Response(status=200, content_type="application/x-protobuf")

    async def spans_of(self, trace_id: str, count: int) -> list[dict[str, Any]]:
        async with asyncio.timeout(10):
            while True:
                found = [s for s in self.spans if s["trace_id"] == trace_id]
                if len(found) >= count:
                    return found
                await asyncio.sleep(0.02)


def _attributes(pairs: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in pairs:
        kind = pair.value.WhichOneof("value")
        out[pair.key] = getattr(pair.value, kind)
    return out


def recording_tool() -> tuple[web.Application, list[str]]:
    """A tool answering 200, keeping the traceparent of each request it got."""
    seen: list[str] = []

    async def handler(request: web.Request) -> web.Response:
        await request.read()
        seen.append(request.headers["traceparent"])
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    return app, seen


async def start_collector(start_upstream: Any) -> tuple[Collector, str]:
    collector = Collector()
    app = web.Application()
    app.router.add_post("/v1/traces", collector.handle)
    return collector, await start_upstream(app) + "/v1/traces"


def traced(config: Any, endpoint: str, **otlp: Any) -> Any:
    limits = config.limits.model_copy(update={"per_agent": Rate(limit=1000, window_s=60)})
    telemetry = Telemetry(otlp=Otlp(endpoint=endpoint, **otlp))
    return config.model_copy(update={"telemetry": telemetry, "limits": limits})


def by_name(spans: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {span["name"]: span for span in spans}


def access_lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


async def test_a_call_is_one_trace_the_tool_joins(tmp_path, start_upstream, start_gateway):
    collector, endpoint = await start_collector(start_upstream)
    app, seen = recording_tool()
    config = traced(
        make_config(tmp_path, await start_upstream(app)),
        endpoint,
        headers={"x-api-key": SecretStr("collector-key")},
        service_name="gw-east",
    )
    gw = await start_gateway(config=config)
    stream = io.StringIO()
    gw.services.access_log = AccessLog(stream)
    resp = await gw.get("/tools/echo/orders/7?secret=s3", headers=auth())
    assert resp.status == 200
    [sent] = seen
    trace_id, client_id, flags = TRACEPARENT.match(sent).groups()  # type: ignore[union-attr]
    assert int(flags, 16) & 1, "sampled"

    spans = by_name(await collector.spans_of(trace_id, 4))
    assert set(spans) == {"GET /tools/echo", "callgate.decide", "callgate.limits", "GET"}
    server = spans["GET /tools/echo"]
    assert (server["kind"], server["parent"]) == (SERVER, "")
    for child in ("callgate.decide", "callgate.limits", "GET"):
        assert spans[child]["parent"] == server["span_id"], child
    client = spans["GET"]
    assert client["kind"] == CLIENT
    assert client["span_id"] == client_id, "the tool's parent is the gateway's CLIENT span"
    assert server["attributes"] == {
        "http.request.method": "GET",
        "url.path": "/tools/echo/orders/7",
        "url.scheme": "http",
        "http.response.status_code": 200,
        "callgate.agent": "bot",
        "callgate.tool": "echo",
        "callgate.decision": "allow",
        "callgate.policy_version": gw.services.policies.policy_version,
    }
    tool_port = int(config.tools[0].upstream.rsplit(":", 1)[1])
    assert client["attributes"] == {
        "http.request.method": "GET",
        "url.full": f"http://127.0.0.1:{tool_port}/orders/7",
        "server.address": "127.0.0.1",
        "server.port": tool_port,
        "http.response.status_code": 200,
    }
    assert spans["callgate.decide"]["attributes"]["callgate.decision"] == "allow"
    assert server["resource"]["service.name"] == "gw-east"
    assert collector.headers[0]["x-api-key"] == "collector-key"

    request_id = resp.headers["X-Request-Id"]
    source = gw.services.audit.path
    await wait_for_records(source, lambda rs: any(r["kind"] == "outcome" for r in rs))
    records = call_records(source, request_id)
    assert [r["kind"] for r in records] == ["decision", "intent", "outcome"]
    assert {r["trace_id"] for r in records} == {trace_id}
    [line] = access_lines(stream)
    assert line["trace_id"] == trace_id


async def test_an_incoming_traceparent_is_continued(tmp_path, start_upstream, start_gateway):
    collector, endpoint = await start_collector(start_upstream)
    app, seen = recording_tool()
    config = traced(make_config(tmp_path, await start_upstream(app)), endpoint, sample_ratio=0.0)
    gw = await start_gateway(config=config)
    trace_id, parent = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    incoming = f"00-{trace_id}-{parent}-01"  # sampled: kept, whatever sample_ratio says
    assert (
        await gw.get("/tools/echo/a", headers={**auth(), "traceparent": incoming})
    ).status == 200
    spans = by_name(await collector.spans_of(trace_id, 4))
    assert spans["GET /tools/echo"]["parent"] == parent
    assert TRACEPARENT.match(seen[0]).group(1) == trace_id  # type: ignore[union-attr]


async def test_refusals_fail_their_spans(tmp_path, start_upstream, start_gateway):
    collector, endpoint = await start_collector(start_upstream)
    gw = await start_gateway(
        config=traced(approval_config(tmp_path, "http://127.0.0.1:9"), endpoint)
    )
    denied = await gw.post("/tools/echo/orders", headers=auth(), json={})
    assert denied.status == 403
    stranger = await gw.get("/tools/echo/a", headers=auth("nobody"))
    assert stranger.status == 401
    await gw.services.tracing.flush()
    servers = [s for s in collector.spans if s["kind"] == SERVER]
    assert len(servers) == 2
    by_status = {s["attributes"]["http.response.status_code"]: s for s in servers}
    policy = by_status[403]
    assert policy["status"] == (STATUS_ERROR, "policy_denied")
    assert policy["attributes"]["error.type"] == "policy_denied"
    assert policy["attributes"]["callgate.decision"] == "deny"
    decide = by_name([s for s in collector.spans if s["trace_id"] == policy["trace_id"]])
    assert decide["callgate.decide"]["status"] == (STATUS_ERROR, "policy_denied")
    unknown = by_status[401]
    assert unknown["status"] == (STATUS_ERROR, "unauthenticated")
    assert "callgate.agent" not in unknown["attributes"]


async def test_the_approval_wait_is_a_span(tmp_path, start_upstream, start_gateway):
    collector, endpoint = await start_collector(start_upstream)
    gw = await start_gateway(
        config=traced(approval_config(tmp_path, "http://127.0.0.1:9"), endpoint)
    )
    held = await gw.post(
        "/tools/echo/refunds", headers={**auth(), "Prefer": "wait=1"}, json={"amount": 5}
    )
    assert held.status == 202
    action_id = (await held.json())["action_id"]
    await gw.services.tracing.flush()
    [server] = [s for s in collector.spans if s["kind"] == SERVER]
    spans = by_name([s for s in collector.spans if s["trace_id"] == server["trace_id"]])
    wait = spans["callgate.approval.wait"]
    assert wait["parent"] == server["span_id"]
    assert wait["attributes"] == {
        "callgate.action_id": action_id,
        "callgate.action_state": "pending",
    }
    assert server["attributes"]["callgate.decision"] == "approval"
    assert server["attributes"]["callgate.action_id"] == action_id
    assert server["status"][0] != STATUS_ERROR


async def test_an_mcp_tool_call_names_its_method_and_tool(tmp_path, start_upstream, start_gateway):
    collector, endpoint = await start_collector(start_upstream)

    async def server(request: web.Request) -> web.Response:
        body = await request.json()
        result = {"content": [{"type": "text", "text": "42"}], "isError": False}
        return web.json_response({"jsonrpc": "2.0", "id": body["id"], "result": result})

    gw = await start_with(tmp_path, start_upstream, start_gateway, server)
    await gw.close()  # the same tool, traced
    gw = await start_gateway(config=traced(gw.services.config, endpoint))
    resp = await post(gw, rpc("tools/call", {"name": "add", "arguments": {"a": 1}}, id=7))
    assert resp.status == 200
    await gw.services.tracing.flush()
    [span] = [s for s in collector.spans if s["kind"] == SERVER]
    assert span["name"] == "tools/call add"
    attributes = span["attributes"]
    assert attributes["mcp.method.name"] == "tools/call"
    assert attributes["gen_ai.tool.name"] == "add"
    assert attributes["gen_ai.operation.name"] == "execute_tool"
    assert attributes["jsonrpc.request.id"] == "7"


async def test_sample_ratio_zero_exports_nothing_but_calls_keep_their_trace_id(
    tmp_path, start_upstream, start_gateway
):
    collector, endpoint = await start_collector(start_upstream)
    app, seen = recording_tool()
    config = traced(make_config(tmp_path, await start_upstream(app)), endpoint, sample_ratio=0.0)
    gw = await start_gateway(config=config)
    stream = io.StringIO()
    gw.services.access_log = AccessLog(stream)
    ids = []
    for i in range(3):
        resp = await gw.get(f"/tools/echo/a{i}", headers=auth())
        assert resp.status == 200
        ids.append(resp.headers["X-Request-Id"])
    await gw.close()  # stopping flushes whatever was kept
    assert collector.spans == []
    sent = [TRACEPARENT.match(header).groups() for header in seen]  # type: ignore[union-attr]
    assert [int(flags, 16) & 1 for _, _, flags in sent] == [0] * 3, "not sampled"
    trace_ids = [trace_id for trace_id, _, _ in sent]
    assert len(set(trace_ids)) == 3
    for request_id, trace_id in zip(ids, trace_ids, strict=True):
        assert {r["trace_id"] for r in call_records(gw.services.audit.path, request_id)} == {
            trace_id
        }
    assert [line["trace_id"] for line in access_lines(stream)] == trace_ids


async def test_without_an_endpoint_records_carry_the_trace_the_tool_gets(
    tmp_path, start_upstream, start_gateway
):
    app, seen = recording_tool()
    gw = await start_gateway(config=make_config(tmp_path, await start_upstream(app)))
    assert gw.services.tracing is None
    stream = io.StringIO()
    gw.services.access_log = AccessLog(stream)
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    incoming = f"00-{trace_id}-00f067aa0ba902b7-01"
    first = await gw.get("/tools/echo/a", headers={**auth(), "traceparent": incoming})
    second = await gw.get("/tools/echo/b", headers=auth())
    refused = await gw.get("/tools/echo/a", headers={**auth("nobody"), "traceparent": incoming})
    assert (first.status, second.status, refused.status) == (200, 200, 401)
    fresh = TRACEPARENT.match(seen[1]).group(1)  # type: ignore[union-attr]
    expected = [trace_id, fresh, trace_id]
    source = gw.services.audit.path
    ids = {resp.headers["X-Request-Id"] for resp in (first, second, refused)}
    records = await wait_for_records(
        source,
        lambda rs: (
            sum(r["kind"] == "outcome" for r in rs) == 2
            and ids <= {r.get("request_id") for r in rs}
        ),
    )
    for resp, want in zip((first, second, refused), expected, strict=True):
        mine = [r for r in records if r.get("request_id") == resp.headers["X-Request-Id"]]
        assert mine and {r["trace_id"] for r in mine} == {want}
    assert [line["trace_id"] for line in access_lines(stream)] == expected


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_a_dead_collector_is_logged_once_and_fails_no_call(
    tmp_path, start_upstream, start_gateway, monkeypatch, caplog
):
    monkeypatch.setattr(tracing, "EXPORT_TIMEOUT_S", 0.5)
    caplog.set_level(logging.DEBUG)
    app, seen = recording_tool()
    endpoint = f"http://127.0.0.1:{_free_port()}/v1/traces"  # nothing listens there
    gw = await start_gateway(
        config=traced(make_config(tmp_path, await start_upstream(app)), endpoint)
    )
    for i in range(3):
        for j in range(5):
            assert (await gw.get(f"/tools/echo/{i}/{j}", headers=auth())).status == 200
        await gw.services.tracing.flush()  # an export that fails
    assert len(seen) == 15
    failing = [r for r in caplog.records if "trace export failing" in r.getMessage()]
    assert len(failing) == 1
    sdk = [r for r in caplog.records if r.name.startswith("opentelemetry")]
    assert sdk == [], [r.getMessage() for r in sdk]


async def test_a_collector_that_hangs_never_holds_a_call(
    tmp_path, start_upstream, start_gateway, monkeypatch
):
    """Exports run in the SDK's thread: a call never waits for one, so none takes as long
    as the export timeout while an export hangs."""
    monkeypatch.setattr(tracing, "EXPORT_TIMEOUT_S", 3.0)
    exporting = asyncio.Event()

    async def black_hole(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1)
        exporting.set()
        await asyncio.sleep(10)  # never answers
        writer.close()

    hole = await asyncio.start_server(black_hole, "127.0.0.1", 0)
    port = hole.sockets[0].getsockname()[1]
    try:
        app, _seen = recording_tool()
        config = traced(
            make_config(tmp_path, await start_upstream(app)), f"http://127.0.0.1:{port}/v1/traces"
        )
        gw = await start_gateway(config=config)
        assert (await gw.get("/tools/echo/a", headers=auth())).status == 200
        async with asyncio.timeout(5):
            await exporting.wait()
        for i in range(10):
            started = time.monotonic()
            assert (await gw.get(f"/tools/echo/{i}", headers=auth())).status == 200
            assert time.monotonic() - started < tracing.EXPORT_TIMEOUT_S
        await gw.close()  # gives up on the hanging export
    finally:
        hole.close()


def test_telemetry_config(tmp_path: Path) -> None:
    text = """
telemetry:
  otlp:
    endpoint: https://collector.example:4318/v1/traces
    headers: {authorization: "Bearer ${OTLP_TOKEN}"}
"""
    config = parse_config(text, tmp_path, {"OTLP_TOKEN": "tok-123"})
    otlp = config.telemetry.otlp
    assert otlp is not None
    assert otlp.headers["authorization"].get_secret_value() == "Bearer tok-123"
    assert "tok-123" not in repr(config)
    assert (otlp.sample_ratio, otlp.service_name) == (1.0, "callgate")
    assert parse_config("{}", tmp_path, {}).telemetry.otlp is None
    for bad, where in (
        ("{endpoint: 'collector:4318', sample_ratio: 0.5}", "telemetry.otlp.endpoint"),
        ("{endpoint: 'http://c/v1/traces', sample_ratio: 1.5}", "telemetry.otlp.sample_ratio"),
    ):
        with pytest.raises(ConfigError) as raised:
            parse_config(f"telemetry: {{otlp: {bad}}}", tmp_path, {})
        assert any(p.startswith(where) for p in raised.value.problems), raised.value.problems
