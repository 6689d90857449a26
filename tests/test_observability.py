"""Admin listener (/metrics, /healthz, /readyz) and the JSON access log."""

from __future__ import annotations

import io
import json
import logging
import re

from aiohttp.test_utils import TestClient, TestServer

from gateway.admin import create_admin_app
from gateway.observability.logs import AccessLog, JsonFormatter
from gateway.observability.metrics import Metrics
from gateway.policy.embedded import EmbeddedEngine
from gateway.policy.reload import Policies
from gateway.principals import AgentDirectory
from gateway.services import Services
from gateway.store.actions import ActionStore
from gateway.store.idempotency import IdempotencyStore
from gateway.switches.board import Switchboard
from gateway.switches.store import SwitchStore
from tests.support.gateway import auth, make_config, start_path_recorder


def sample(metrics_text: str, name: str, **labels: str) -> float:
    for line in metrics_text.splitlines():
        named = line.startswith((name + "{", name + " "))
        if named and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def test_metrics_count_calls_by_tool_agent_outcome(start_upstream, start_gateway):
    gw = await start_gateway((await start_path_recorder(start_upstream))[0])
    for _ in range(3):
        assert (await gw.get("/tools/echo/a", headers=auth())).status == 200
    assert (await gw.get("/tools/echo/a", headers=auth("nobody"))).status == 401
    assert (await gw.get("/tools/nope/a", headers=auth())).status == 404
    text = await (await gw.admin.get("/metrics")).text()
    assert (
        sample(text, "callgate_requests_total", tool="echo", agent="bot", outcome="forwarded") == 3
    )
    assert (
        sample(text, "callgate_requests_total", tool="-", agent="-", outcome="unauthenticated") == 1
    )
    assert (
        sample(text, "callgate_requests_total", tool="-", agent="bot", outcome="unknown_tool") == 1
    )
    assert sample(text, "callgate_upstream_duration_seconds_count", tool="echo") == 3
    assert sample(text, "callgate_request_duration_seconds_count", tool="echo") == 3
    assert sample(text, "callgate_policy_evaluation_seconds_count") == 3
    assert sample(text, "callgate_policy_loaded") == 1
    # nothing the agent controls (like the path "/a" or tool "nope") becomes a label
    assert 'tool="nope"' not in text


async def test_health_and_readiness(start_gateway):
    gw = await start_gateway()
    health = await gw.admin.get("/healthz")
    assert (health.status, await health.json()) == (200, {"status": "ok"})
    ready = await gw.admin.get("/readyz")
    body = await ready.json()
    assert ready.status == 200
    assert body == {
        "status": "ready",
        "policy_version": gw.services.policies.policy_version,
        "policy_last_failure": None,
    }
    assert len(body["policy_version"]) == 64


async def test_not_ready_without_policies(tmp_path):
    config = make_config(tmp_path)
    metrics = Metrics()
    svc = Services(
        config=config,
        policies=Policies(config.policy.path, EmbeddedEngine(), metrics),
        shadow=None,
        metrics=metrics,
        agents=AgentDirectory(()),
        tools={},
        approvers=AgentDirectory(()),
        actions=ActionStore(tmp_path / "callgate.db"),
        switchboard=Switchboard(SwitchStore(tmp_path / "callgate.db")),
        idempotency=IdempotencyStore(tmp_path / "callgate.db"),
    )
    client = TestClient(TestServer(create_admin_app(svc), host="127.0.0.1"))
    await client.start_server()
    try:
        resp = await client.get("/readyz")
        assert resp.status == 503
        assert (await resp.json())["status"] == "not ready"
    finally:
        await client.close()


async def test_one_json_access_line_per_call(start_upstream, start_gateway, caplog):
    caplog.set_level(logging.INFO, logger="callgate.access")
    gw = await start_gateway((await start_path_recorder(start_upstream))[0])
    stream = io.StringIO()
    gw.services.access_log = AccessLog(stream)
    resp = await gw.post("/tools/echo/v1/x", headers=auth(), json={"a": 1})
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1
    line = json.loads(lines[0])
    assert (line["level"], line["logger"], line["msg"]) == ("info", "callgate.access", "call")
    assert line["request_id"] == resp.headers["X-Request-Id"]
    assert (line["agent"], line["tool"], line["method"], line["path"]) == (
        "bot",
        "echo",
        "POST",
        "/v1/x",
    )
    assert (line["decision"], line["outcome"], line["status"]) == ("allow", "forwarded", 200)
    assert line["policy_version"] == gw.services.policies.policy_version
    assert isinstance(line["latency_ms"], float)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", line["time"])


async def test_access_log_obeys_the_logger_level(start_upstream, start_gateway):
    gw = await start_gateway((await start_path_recorder(start_upstream))[0])
    stream = io.StringIO()
    gw.services.access_log = AccessLog(stream)
    logger = logging.getLogger("callgate.access")
    previous = logger.level
    logger.setLevel(logging.WARNING)
    try:
        assert (await gw.get("/tools/echo/x", headers=auth())).status == 200
    finally:
        logger.setLevel(previous)
    assert stream.getvalue() == ""


def test_json_formatter_carries_extra_fields():
    record = logging.LogRecord(
        "callgate.x", logging.WARNING, "f.py", 1, "upstream %s", ("gone",), None
    )
    record.request_id = "rid"
    line = json.loads(JsonFormatter().format(record))
    assert (line["level"], line["logger"], line["msg"], line["request_id"]) == (
        "warning",
        "callgate.x",
        "upstream gone",
        "rid",
    )
