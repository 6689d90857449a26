"""The audit log as a gateway writes it: real gateway, real upstream, real SQLite file or
real PostgreSQL (`audit_backend`)."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path
from typing import Any

from aiohttp import web

from gateway.config import Config
from tests.support.audit import (
    Source,
    audit_source,
    call_records,
    read_records,
    verify_file,
    wait_for_records,
)
from tests.support.gateway import OTHER_TOKEN, auth, make_config

CALL_KINDS = ("decision", "intent", "outcome")


def with_audit(config: Config, **settings: Any) -> Config:
    return config.model_copy(update={"audit": config.audit.model_copy(update=settings)})


def audit_path(gw: Any) -> Source:
    return audit_source(gw)


async def recording_upstream(
    start_upstream: Any, audit_file: list[Source]
) -> tuple[str, list[Any]]:
    """An upstream that, for each call, notes its X-Request-Id and whether the gateway's
    audit file already held that call's intent record when the call arrived."""
    seen: list[Any] = []

    async def handler(request: web.Request) -> web.Response:
        request_id = request.headers["X-Request-Id"]
        kinds = [r["kind"] for r in call_records(audit_file[0], request_id)] if audit_file else []
        seen.append((request_id, kinds))
        await request.read()
        return web.json_response({"ok": True}, status=201)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    return await start_upstream(app), seen


async def test_an_allowed_call_is_recorded_as_decision_intent_and_outcome(
    audit_backend, tmp_path, start_upstream, start_gateway
):
    audit_file: list[Source] = []
    url, seen = await recording_upstream(start_upstream, audit_file)
    gw = await start_gateway(config=audit_backend(make_config(tmp_path, url)))
    audit_file.append(audit_path(gw))
    resp = await gw.post(
        "/tools/echo/refunds?amount=5",
        headers={**auth(), "X-Agent-Model": "gpt-x", "X-Agent-Session": "s-1"},
        json={"amount": 5},
    )
    assert resp.status == 201
    request_id = resp.headers["X-Request-Id"]
    # The intent was committed before the upstream was contacted.
    assert seen == [(request_id, ["decision", "intent"])]
    records = await wait_for_records(
        audit_file[0], lambda rs: any(r["kind"] == "outcome" for r in rs)
    )
    decision, intent, outcome = (r for r in records if r.get("request_id") == request_id)
    assert [decision["kind"], intent["kind"], outcome["kind"]] == list(CALL_KINDS)
    for record in (decision, intent, outcome):
        assert record["agent"] == "bot"
        assert record["tool"] == "echo"
        assert record["method"] == "POST"
        assert record["path"] == "/refunds"
        assert record["model"] == "gpt-x"
        assert record["session"] == "s-1"
    assert decision["decision"] == "allow"
    assert decision["code"] is None
    assert decision["reason"] == "caller"
    assert decision["policy_version"] == gw.services.policies.policy_version
    assert decision["request"]["query"] == {"amount": ["5"]}
    assert len(decision["request"]["body_sha256"]) == 64
    assert "body" not in decision["request"]  # only a hash unless record_bodies is on
    assert outcome["status"] == 201
    assert outcome["upstream_status"] == 201
    assert outcome["error"] is None
    assert outcome["bytes"] == len(b'{"ok": true}')
    assert outcome["timings"]["upstream_ms"] > 0
    assert [r["kind"] for r in records[:2]] == ["gateway_started", "policy_loaded"]
    report = verify_file(audit_file[0])
    assert report.broken is None and report.incomplete == []


async def test_each_refusal_leaves_one_decision_record_and_nothing_is_sent(
    audit_backend, tmp_path, start_upstream, start_gateway
):
    audit_file: list[Source] = []
    url, seen = await recording_upstream(start_upstream, audit_file)
    gw = await start_gateway(config=audit_backend(make_config(tmp_path, url)))
    audit_file.append(audit_path(gw))
    cases = [
        (await gw.get("/tools/echo/x"), "error", "unauthenticated", 401),
        (await gw.get("/tools/nope/x", headers=auth()), "error", "unknown_tool", 404),
        (await gw.get("/tools/echo/x", headers=auth(OTHER_TOKEN)), "deny", "policy_denied", 403),
        (
            await gw.post("/tools/echo/x", headers=auth(), data=b'{"a": 1, "a": 2}'),
            "error",
            "bad_request",
            400,
        ),
    ]
    ids = [resp.headers["X-Request-Id"] for resp, *_ in cases]
    records = await wait_for_records(
        audit_file[0], lambda rs: {r.get("request_id") for r in rs} >= set(ids)
    )
    for (resp, verdict, code, status), request_id in zip(cases, ids, strict=True):
        assert resp.status == status
        (record,) = [r for r in records if r.get("request_id") == request_id]
        assert (record["kind"], record["decision"], record["code"], record["status"]) == (
            "decision",
            verdict,
            code,
            status,
        )
        assert record["reason"] == (await resp.json())["error"]["message"]
    unknown = next(r for r in records if r.get("request_id") == ids[1])
    assert (unknown["tool"], unknown["path"], unknown["target"]) == (None, None, "/tools/nope/x")
    denied = next(r for r in records if r.get("request_id") == ids[2])
    assert (denied["tool"], denied["path"]) == ("echo", "/x") and "target" not in denied
    assert denied["policy_allow"] is False
    assert denied["policy_version"] == gw.services.policies.policy_version
    assert seen == []


async def test_an_unreachable_upstream_is_an_outcome_with_its_error(
    audit_backend, tmp_path, start_gateway
):
    gw = await start_gateway(
        config=audit_backend(make_config(tmp_path, "http://127.0.0.1:9"))
    )  # nothing listens on the discard port
    resp = await gw.get("/tools/echo/x", headers=auth())
    assert resp.status == 502
    request_id = resp.headers["X-Request-Id"]
    records = await wait_for_records(
        audit_path(gw), lambda rs: len([r for r in rs if r.get("request_id") == request_id]) == 3
    )
    outcome = [r for r in records if r.get("request_id") == request_id][-1]
    assert (outcome["kind"], outcome["status"], outcome["error"]) == (
        "outcome",
        502,
        "upstream_unreachable",
    )
    assert outcome["upstream_status"] is None


async def test_1000_calls_from_50_clients_leave_2000_call_records_plus_decisions(
    audit_backend, tmp_path, start_upstream, start_gateway
):
    url, seen = await recording_upstream(start_upstream, [])
    gw = await start_gateway(config=audit_backend(make_config(tmp_path, url)))

    async def client(n: int) -> list[str]:
        ids = []
        for i in range(20):
            # One session per client: calls without one share the agent's session budget.
            headers = {**auth(), "X-Agent-Session": f"s{n}"}
            resp = await gw.post(f"/tools/echo/c{n}/{i}", headers=headers, data=b"x")
            assert resp.status == 201
            await resp.read()
            ids.append(resp.headers["X-Request-Id"])
        return ids

    async with asyncio.timeout(120):
        ids = [i for batch in await asyncio.gather(*(client(n) for n in range(50))) for i in batch]
    assert len(set(ids)) == 1000
    assert sorted(request_id for request_id, _ in seen) == sorted(ids)
    records = await wait_for_records(
        audit_path(gw), lambda rs: sum(r["kind"] == "outcome" for r in rs) >= 1000
    )
    calls = [r for r in records if r["kind"] in ("intent", "outcome")]
    decisions = [r for r in records if r["kind"] == "decision"]
    assert len(calls) == 2000
    assert len(decisions) == 1000
    by_call: dict[str, list[str]] = {}
    for record in records:
        if "request_id" in record:
            by_call.setdefault(record["request_id"], []).append(record["kind"])
    assert by_call == {request_id: list(CALL_KINDS) for request_id in ids}
    assert [r["seq"] for r in records] == list(range(1, len(records) + 1))
    report = verify_file(audit_path(gw))
    assert report.broken is None
    assert report.records == len(records)


async def test_an_unwritable_store_stops_forwarding_and_recovers_by_itself(
    tmp_path, start_upstream, start_gateway
):
    url, seen = await recording_upstream(start_upstream, [])
    gw = await start_gateway(url)
    path = audit_path(gw)
    resp = await gw.get("/tools/echo/before", headers=auth())
    assert resp.status == 201
    # Another process holds the write lock: the gateway's commits fail (SQLITE_BUSY).
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        refused = []
        for _ in range(2):  # the first waits out the lock timeout; the next fails at once
            resp = await gw.get("/tools/echo/during", headers=auth())
            body = await resp.json()
            assert resp.status == 503
            assert body["error"]["code"] == "audit_unavailable"
            assert body["error"]["retryable"] is True
            refused.append(resp.headers["X-Request-Id"])
        ready = await gw.admin.get("/readyz")
        assert ready.status == 503
        assert "locked" in (await ready.json())["audit"]
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    async with asyncio.timeout(15):
        while (await gw.admin.get("/readyz")).status != 200:
            await asyncio.sleep(0.05)
    resp = await gw.get("/tools/echo/after", headers=auth())
    assert resp.status == 201
    assert len(seen) == 2  # "before" and "after"; nothing while the store was down
    after = resp.headers["X-Request-Id"]
    records = await wait_for_records(
        path, lambda rs: any(r.get("request_id") == after and r["kind"] == "outcome" for r in rs)
    )
    outage = [r for r in records if r["kind"] == "audit_store_failed"]
    assert len(outage) == 1 and "locked" in outage[0]["error"]
    for request_id in refused:  # the refusals were kept and written once the store was back
        (record,) = [r for r in records if r.get("request_id") == request_id]
        assert (record["kind"], record["code"], record["status"]) == (
            "decision",
            "audit_unavailable",
            503,
        )
    assert verify_file(path).broken is None


REDACTING_POLICY = """package gateway

import rego.v1

decision := {
    "allow": true,
    "redact": [
        "request.body.card.number",
        "request.body.items.*.secret",
        "request.headers.x-customer",
        "request.query.email",
        "request.form.card",
    ],
}
"""


async def test_bodies_are_recorded_only_when_asked_and_then_redacted(
    tmp_path, start_upstream, start_gateway
):
    url, seen = await recording_upstream(start_upstream, [])
    policies = tmp_path / "redacting"
    policies.mkdir()
    (policies / "gateway.rego").write_text(REDACTING_POLICY)
    config = with_audit(make_config(tmp_path, url, policy_dir=policies), record_bodies=True)
    gw = await start_gateway(config=config)
    body = {
        "card": {"number": "4111111111111111", "exp": "12/30"},
        "items": [{"secret": "a", "n": 1}, {"secret": "b", "n": 2}],
        "amount": 12,
    }
    resp = await gw.post(
        "/tools/echo/pay?email=a@b.example&page=2&access_token=t0k",
        headers={
            **auth(),
            "Cookie": "sid=1",
            "X-Api-Key": "k",
            "X-Customer": "c-42",
            "X-Vendor-Secret": "v",
            "Accept": "application/json",
        },
        json=body,
    )
    assert resp.status == 201
    request_id = resp.headers["X-Request-Id"]
    (decision,) = [r for r in call_records(audit_path(gw), request_id) if r["kind"] == "decision"]
    request = decision["request"]
    assert request["body"] == {
        "card": {"number": "***", "exp": "12/30"},
        "items": [{"secret": "***", "n": 1}, {"secret": "***", "n": 2}],
        "amount": 12,
    }
    headers = request["headers"]
    for name in ("authorization", "cookie", "x-api-key", "x-customer", "x-vendor-secret"):
        assert headers[name] == "***", name
    assert headers["accept"] == "application/json"
    assert request["query"] == {"email": "***", "page": ["2"], "access_token": ["***"]}
    # What the tool received is untouched by the audit's masking.
    assert len(seen) == 1


async def redacting_gateway(tmp_path: Path, start_upstream: Any, start_gateway: Any) -> Any:
    """A gateway recording bodies, under REDACTING_POLICY."""
    url, _seen = await recording_upstream(start_upstream, [])
    policies = tmp_path / "redacting"
    policies.mkdir()
    (policies / "gateway.rego").write_text(REDACTING_POLICY)
    return await start_gateway(
        config=with_audit(make_config(tmp_path, url, policy_dir=policies), record_bodies=True)
    )


async def test_a_non_json_body_is_kept_as_text_and_masked_whole_by_a_body_path(
    tmp_path, start_upstream, start_gateway
):
    gw = await redacting_gateway(tmp_path, start_upstream, start_gateway)
    resp = await gw.post("/tools/echo/raw", headers=auth(), data=b"card=4111111111111111")
    request_id = resp.headers["X-Request-Id"]
    (decision,) = [r for r in call_records(audit_path(gw), request_id) if r["kind"] == "decision"]
    assert decision["request"]["body_text"] == "***"
    assert "body" not in decision["request"]


async def test_a_form_is_kept_as_fields_masked_by_a_form_path_and_replayed(
    tmp_path, start_upstream, start_gateway
):
    from gateway.policy.recorded_inputs import policy_input_line

    gw = await redacting_gateway(tmp_path, start_upstream, start_gateway)
    resp = await gw.post("/tools/echo/pay", headers=auth(), data={"card": "4111", "n": "2"})
    request_id = resp.headers["X-Request-Id"]
    (decision,) = [r for r in call_records(audit_path(gw), request_id) if r["kind"] == "decision"]
    assert decision["request"]["form"] == {"card": "***", "n": "2"}
    assert decision["request"]["body_text"] == "***"  # the raw form would show the card
    line = policy_input_line(decision)
    assert line is not None
    assert line["input"]["request"]["form"] == {"card": "***", "n": "2"}


async def test_with_the_audit_off_nothing_is_written(tmp_path, start_upstream, start_gateway):
    url, seen = await recording_upstream(start_upstream, [])
    config = with_audit(make_config(tmp_path, url), enabled=False)
    gw = await start_gateway(config=config)
    resp = await gw.get("/tools/echo/x", headers=auth())
    assert resp.status == 201
    assert len(seen) == 1
    assert gw.services.audit is None
    assert not config.audit.path.exists()
    assert (await gw.admin.get("/readyz")).status == 200


async def test_a_restarted_gateway_continues_the_same_chain(
    audit_backend, tmp_path, start_upstream
):
    from aiohttp.test_utils import TestClient, TestServer

    from gateway.serve import build_apps

    url, _seen = await recording_upstream(start_upstream, [])
    config = audit_backend(make_config(tmp_path, url))
    source: Source = config.audit.url
    if not config.audit.url.startswith("postgresql://"):
        source = config.audit.path
    for _ in range(2):
        agent_app, _admin = build_apps(config)
        client = TestClient(TestServer(agent_app, host="127.0.0.1"))
        await client.start_server()
        try:
            assert (await client.get("/tools/echo/x", headers=auth())).status == 201
        finally:
            await client.close()  # flushes the outcome and writes gateway_stopped
    kinds = [r["kind"] for r in read_records(source)]
    one_run = ["gateway_started", "policy_loaded", *CALL_KINDS, "gateway_stopped"]
    assert kinds == one_run * 2
    report = verify_file(source)
    assert report.broken is None and report.records == len(kinds)


def test_time_helper_is_monotonic_enough() -> None:
    from gateway.audit.events import now

    first = now()
    time.sleep(0.001)
    assert now() > first
