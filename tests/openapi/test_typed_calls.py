"""Typed tools through a real gateway in front of a real payments API (tests/support/
payments.py) described by tests/data/payments.yaml (docs/typed-tools.md): calls resolved
to their operation before the policy, checked per `validate`, answers per
`validate_responses`, grants by operation, and documents read again on reload."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web

from gateway.config import Principal
from gateway.openapi.document import SpecError
from gateway.policy.embedded import EmbeddedEngine
from gateway.policy.recorded_inputs import policy_input_line
from gateway.serve import build_apps
from gateway.services import SERVICES
from tests.support.audit import audit_source, wait_for_records
from tests.support.gateway import (
    REPO,
    auth,
    copy_default_policies,
    make_config,
    sha,
    start_path_recorder,
)
from tests.support.payments import SPEC, Payments

PAYMENTS_SPEC = REPO / SPEC
OPERATOR_TOKEN = "olga-operator-token"
OPERATOR = {"Authorization": f"Bearer {OPERATOR_TOKEN}"}
GOOD_REFUND = {"charge": "ch_1", "amount": 1200, "currency": "EUR"}

# Denies every call, its reason the operation the policy saw (as JSON).
SHOW_OPERATION_REGO = """package gateway

import rego.v1

decision := {"allow": false, "reason": json.marshal(input.operation)}
"""


async def typed_gateway(
    tmp_path: Path,
    start_upstream: Any,
    start_gateway: Any,
    *,
    policy_dir: Path | None = None,
    spec: Path = PAYMENTS_SPEC,
    watch: bool = False,
    **tool: Any,
) -> tuple[Any, Payments]:
    """A gateway with the tool `payments` (its document `spec`) and the operator `olga`;
    `watch`: policy.watch, which also reloads the document when its file changes."""
    payments = Payments()
    base = await start_upstream(payments.app())
    config = make_config(
        tmp_path,
        policy_dir=policy_dir,
        tool={"name": "payments", "upstream": f"{base}/api", "openapi": str(spec), **tool},
    )
    operator = Principal(id="olga", token_sha256=sha(OPERATOR_TOKEN), roles=("operator",))
    config = config.model_copy(
        update={
            "approvers": (operator,),
            "policy": config.policy.model_copy(update={"watch": watch}),
        }
    )
    return await start_gateway(config=config), payments


def policy_folder(tmp_path: Path, rego: str) -> Path:
    folder = tmp_path / "shown"
    folder.mkdir()
    (folder / "gateway.rego").write_text(rego)
    return folder


async def operation_seen(
    gw: Any, method: str, target: str, headers: dict[str, str] | None = None
) -> Any:
    """The operation the policy saw (SHOW_OPERATION_REGO refuses with it as its reason)."""
    response = await gw.request(
        method, f"/tools/payments{target}", headers={**auth(), **(headers or {})}
    )
    body = await response.json()
    assert response.status == 403, body
    return json.loads(body["error"]["message"])


async def test_the_policy_sees_the_operation_with_typed_parameters(
    tmp_path: Path, start_upstream: Any, start_gateway: Any
) -> None:
    gw, payments = await typed_gateway(
        tmp_path,
        start_upstream,
        start_gateway,
        policy_dir=policy_folder(tmp_path, SHOW_OPERATION_REGO),
    )
    listed = await operation_seen(
        gw, "GET", "/v1/refunds?limit=5&status=pending&status=failed&include_failed=true&x=1"
    )
    assert listed == {
        "id": "listRefunds",
        "tags": ["refunds"],
        "path_template": "/v1/refunds",
        "params": {
            "path": {},
            "query": {"limit": 5, "status": ["pending", "failed"], "include_failed": True},
            "header": {},
        },
        "deprecated": False,
    }
    card = await operation_seen(
        gw, "GET", "/v1/customers/J%C3%BCrgen%20M/cards/0042", headers={"X-Trace-Depth": "3"}
    )
    assert card["id"] == "getCustomerCard"
    assert card["path_template"] == "/v1/customers/{customer}/cards/{last4}"
    assert card["params"]["path"] == {"customer": "Jürgen M", "last4": 42}
    assert card["params"]["header"] == {"x-trace-depth": 3}
    cancelled = await operation_seen(gw, "DELETE", "/v1/refunds/re_9")
    assert (cancelled["id"], cancelled["deprecated"]) == ("cancelRefund", True)
    assert cancelled["tags"] == ["refunds", "money"]
    # Nothing matches: the policy sees null (validate: report lets the call on to it).
    assert await operation_seen(gw, "PUT", "/v1/refunds") is None
    assert payments.seen == []


@pytest.mark.parametrize(
    ("target", "operation", "path_params"),
    [
        # A literal segment beats a parameter: /search is not a refund id.
        ("/v1/refunds/search?q=x", "searchRefunds", {}),
        ("/v1/refunds/re_1", "getRefund", {"refund_id": "re_1"}),
        # Templated at the second segment: the more literal template wins first.
        ("/v1/charges/ch_1", "getAnything", {"resource": "charges", "id": "ch_1"}),
        # Trailing slashes: /v1/refunds/ is /v1/refunds when no template has the slash.
        ("/v1/refunds/", "listRefunds", {}),
        ("/v1/refunds/search/?q=x", "searchRefunds", {}),
        # Percent-encoded segments are matched and typed decoded.
        ("/v1/refunds/re%5F7", "getRefund", {"refund_id": "re_7"}),
        ("/v1/customers/a%3Bb/cards/12", "getCustomerCard", {"customer": "a;b", "last4": 12}),
    ],
)
async def test_calls_resolve_to_the_most_specific_operation(
    tmp_path: Path,
    start_upstream: Any,
    start_gateway: Any,
    target: str,
    operation: str,
    path_params: dict[str, Any],
) -> None:
    gw, _ = await typed_gateway(
        tmp_path,
        start_upstream,
        start_gateway,
        policy_dir=policy_folder(tmp_path, SHOW_OPERATION_REGO),
        validate="off",
    )
    seen = await operation_seen(gw, "GET", target)
    assert (seen["id"], seen["params"]["path"]) == (operation, path_params)


async def test_enforce_refuses_a_bad_call_naming_its_problems_before_policy_and_tool(
    tmp_path: Path, start_upstream: Any, start_gateway: Any
) -> None:
    gw, payments = await typed_gateway(
        tmp_path,
        start_upstream,
        start_gateway,
        # The policy would refuse everything: a schema violation is refused before it.
        policy_dir=policy_folder(tmp_path, SHOW_OPERATION_REGO),
        validate="enforce",
    )
    bad = {"charge": "ch_1", "amount": 0, "currency": "eur", "note": "x"}
    response = await gw.post("/tools/payments/v1/refunds", json=bad, headers=auth())
    error = (await response.json())["error"]
    assert response.status == 400 and error["code"] == "schema_violation"
    assert error["retryable"] is False
    assert error["problems"] == [
        {"pointer": "/body/amount", "message": "0 is less than or equal to the minimum of 0"},
        {"pointer": "/body/currency", "message": '"eur" is not one of "EUR", "USD" or "GBP"'},
        {
            "pointer": "/body",
            "message": "Additional properties are not allowed ('note' was unexpected)",
        },
    ]
    assert error["message"].startswith(
        "the call does not match tool payments's OpenAPI document: /body/amount: 0 is less"
    )
    for target, pointer, fragment in (
        ("/v1/refunds?limit=500", "/query/limit", "500 is greater than the maximum of 100"),
        ("/v1/refunds?limit=five", "/query/limit", '"five" is not of type "integer"'),
        ("/v1/refunds/search", "/query/q", "the required query parameter q is missing"),
        ("/v1/refunds/nope", "/path/refund_id", "does not match"),
        ("/v1/refundz", "/path", "matches no path of the tool's OpenAPI document"),
        ("/v1/customers/c/cards/12345", "/path/last4", "greater than the maximum of 9999"),
    ):
        response = await gw.get(f"/tools/payments{target}", headers=auth())
        problems = (await response.json())["error"]["problems"]
        assert response.status == 400, target
        assert problems[0]["pointer"] == pointer and fragment in problems[0]["message"], target
    response = await gw.patch("/tools/payments/v1/refunds/re_1", json={}, headers=auth())
    assert (await response.json())["error"]["problems"] == [
        {
            "pointer": "/method",
            "message": "/v1/refunds/{refund_id} has no PATCH operation (it has: GET, DELETE)",
        }
    ]
    response = await gw.post("/tools/payments/v1/refunds", headers=auth())
    assert (await response.json())["error"]["problems"][0]["pointer"] == "/body"
    response = await gw.post(
        "/tools/payments/v1/refunds",
        data="amount=1",
        headers={**auth(), "Content-Type": "text/plain"},
    )
    assert "content type text/plain is not one createRefund takes" in (await response.text())
    assert payments.seen == []
    # A good call goes on to the policy (which here refuses it, showing the operation).
    response = await gw.post("/tools/payments/v1/refunds", json=GOOD_REFUND, headers=auth())
    assert response.status == 403
    metrics = await (await gw.admin.get("/metrics")).text()
    assert (
        'callgate_schema_violations_total{mode="enforce",tool="payments",where="request"} 10.0'
        in metrics
    )


async def test_report_lets_a_bad_call_through_counted_logged_and_audited(
    tmp_path: Path, start_upstream: Any, start_gateway: Any, caplog: pytest.LogCaptureFixture
) -> None:
    gw, payments = await typed_gateway(tmp_path, start_upstream, start_gateway)  # report
    bad = {"charge": "ch_1", "amount": 5, "currency": "XXX", "card": "4111111111111111"}
    response = await gw.post("/tools/payments/v1/refunds?answer=x", json=bad, headers=auth())
    assert response.status == 201
    assert payments.seen == [("POST", "/api/v1/refunds?answer=x")]
    request_id = response.headers["X-Request-Id"]
    records = await wait_for_records(
        audit_source(gw), lambda rs: any(r["kind"] == "outcome" for r in rs)
    )
    [record] = [r for r in records if r["kind"] == "schema_violation"]
    assert record["request_id"] == request_id
    assert (record["where"], record["mode"], record["operation"]) == (
        "request",
        "report",
        "createRefund",
    )
    # Without audit.record_bodies the messages (which quote the body) are not kept.
    assert record["problems"] == [
        {"pointer": "/body/currency", "keyword": "enum"},
        {"pointer": "/body", "keyword": "additionalProperties"},
    ]
    assert "4111111111111111" not in json.dumps(records)
    assert any(
        r.getMessage() == "call does not match the tool's OpenAPI document" for r in caplog.records
    )
    metrics = await (await gw.admin.get("/metrics")).text()
    assert (
        'callgate_schema_violations_total{mode="report",tool="payments",where="request"} 1.0'
        in metrics
    )


async def test_off_checks_nothing(tmp_path: Path, start_upstream: Any, start_gateway: Any) -> None:
    gw, payments = await typed_gateway(tmp_path, start_upstream, start_gateway, validate="off")
    response = await gw.get("/tools/payments/v1/refunds?limit=5000", headers=auth())
    assert response.status == 200
    response = await gw.get("/tools/payments/v1/refundz", headers=auth())
    assert response.status == 404  # the tool's own answer
    assert len(payments.seen) == 2
    metrics = await (await gw.admin.get("/metrics")).text()
    assert "callgate_schema_violations_total{" not in metrics


async def test_grants_by_operation_in_the_default_policy(
    tmp_path: Path, start_upstream: Any, start_gateway: Any
) -> None:
    policies = copy_default_policies(tmp_path)
    grants = {
        "caller": {
            "payments": {
                "methods": ["GET", "POST", "DELETE"],
                "operations": ["createRefund", "getRefund"],
            }
        }
    }
    shipped = json.loads((policies / "data.json").read_text())
    (policies / "data.json").write_text(json.dumps({"grants": {**shipped["grants"], **grants}}))
    gw, payments = await typed_gateway(
        tmp_path, start_upstream, start_gateway, policy_dir=policies, validate="report"
    )
    created = await gw.post("/tools/payments/v1/refunds", json=GOOD_REFUND, headers=auth())
    assert created.status == 201
    refund = await created.json()
    got = await gw.get(f"/tools/payments/v1/refunds/{refund['id']}", headers=auth())
    assert got.status == 200 and (await got.json())["amount"] == 1200
    cancel = await gw.delete(f"/tools/payments/v1/refunds/{refund['id']}", headers=auth())
    assert cancel.status == 403
    assert (await cancel.json())["error"]["message"] == (
        f"operation cancelRefund (DELETE /v1/refunds/{refund['id']}) is not allowed on tool "
        "payments for this agent; operations it may call there: createRefund, getRefund"
    )
    unknown = await gw.get("/tools/payments/v2/nothing", headers=auth())
    assert unknown.status == 403
    assert (
        "is no operation of tool payments's OpenAPI document"
        in (await unknown.json())["error"]["message"]
    )
    assert [method for method, _ in payments.seen] == ["POST", "GET"]

    # The decision records keep the operation, so a replay decides as the gateway did.
    records = await wait_for_records(
        audit_source(gw), lambda rs: sum(r["kind"] == "decision" for r in rs) == 4
    )
    engine = EmbeddedEngine("data.gateway.decision")
    engine.load(policies)
    replayed = []
    for record in records:
        line = policy_input_line(record)
        if line is not None:
            decision = engine.decide(line["input"])
            assert decision.outcome == line["recorded"]["outcome"], record
            replayed.append(line["input"]["operation"] and line["input"]["operation"]["id"])
    assert replayed == ["createRefund", "getRefund", "cancelRefund", None]


async def test_validate_responses_report_passes_a_bad_answer_on_and_audits_it(
    tmp_path: Path, start_upstream: Any, start_gateway: Any
) -> None:
    gw, _ = await typed_gateway(
        tmp_path, start_upstream, start_gateway, validate_responses="report"
    )
    good = await gw.post("/tools/payments/v1/refunds", json=GOOD_REFUND, headers=auth())
    assert good.status == 201
    bad = await gw.post(
        "/tools/payments/v1/refunds?answer=broken", json=GOOD_REFUND, headers=auth()
    )
    assert bad.status == 201 and await bad.json() == {"id": "re_x"}  # passed on as it came
    zipped = await gw.get("/tools/payments/v1/refunds?answer=gzip-broken", headers=auth())
    assert zipped.status == 200 and await zipped.json() == {"data": [{"id": 7}]}
    records = await wait_for_records(
        audit_source(gw),
        lambda rs: (
            sum(r["kind"] == "schema_violation" for r in rs) == 2
            and sum(r["kind"] == "outcome" for r in rs) == 3
        ),
    )
    violations = [r for r in records if r["kind"] == "schema_violation"]
    assert [(r["request_id"], r["where"], r["mode"]) for r in violations] == [
        (bad.headers["X-Request-Id"], "response", "report"),
        (zipped.headers["X-Request-Id"], "response", "report"),
    ]
    assert {"pointer": "/body", "keyword": "required"} in violations[0]["problems"]
    assert violations[1]["problems"][0]["pointer"].startswith("/body/data/0")
    metrics = await (await gw.admin.get("/metrics")).text()
    assert (
        'callgate_schema_violations_total{mode="report",tool="payments",where="response"} 2.0'
        in metrics
    )


async def test_validate_responses_enforce_withholds_a_bad_answer(
    tmp_path: Path, start_upstream: Any, start_gateway: Any
) -> None:
    gw, payments = await typed_gateway(
        tmp_path, start_upstream, start_gateway, validate_responses="enforce"
    )
    good = await gw.post("/tools/payments/v1/refunds", json=GOOD_REFUND, headers=auth())
    assert good.status == 201 and (await good.json())["id"] == "re_1"
    assert good.headers["Content-Type"].startswith("application/json")
    # A documented 4XX, a documented 404, and a gzip answer checked decoded: all fine.
    missing = await gw.get("/tools/payments/v1/refunds/re_404", headers=auth())
    assert missing.status == 404 and await missing.json() == {"error": "no such refund"}
    zipped = await gw.get("/tools/payments/v1/refunds?answer=gzip", headers=auth())
    assert zipped.status == 200 and len((await zipped.json())["data"]) == 1
    cancelled = await gw.delete("/tools/payments/v1/refunds/re_1", headers=auth())
    assert cancelled.status == 204
    for answer, pointer in (
        ("broken", "/body"),
        ("undocumented", "/status"),
        ("html", "/content-type"),
        ("gzip-broken", "/body/data/0"),
    ):
        response = await gw.get(f"/tools/payments/v1/refunds?answer={answer}", headers=auth())
        text = await response.text()
        assert response.status == 502, (answer, text)
        error = json.loads(text)["error"]
        assert error["code"] == "upstream_schema_violation" and error["retryable"] is False
        assert error["problems"][0]["pointer"].startswith(pointer), (answer, error)
        # Nothing of the tool's answer reached the agent.
        assert "re_x" not in text and "internal trouble" not in text and "<p>" not in text
    # A tool that drops the connection midway: refused before anything was sent.
    dropped = await gw.get("/tools/payments/v1/refunds?answer=drop", headers=auth())
    assert dropped.status == 502
    assert (await dropped.json())["error"]["code"] == "upstream_unreachable"
    assert len(payments.seen) == 9
    # The tool may have acted: a retry with the same Idempotency-Key is never sent again.
    keyed = {**auth(), "Idempotency-Key": "refund-1"}
    for expected in ("upstream_schema_violation", "idempotency_outcome_unknown"):
        response = await gw.post(
            "/tools/payments/v1/refunds?answer=broken", json=GOOD_REFUND, headers=keyed
        )
        assert (await response.json())["error"]["code"] == expected
    assert len(payments.seen) == 10
    records = await wait_for_records(
        audit_source(gw), lambda rs: sum(r["kind"] == "schema_violation" for r in rs) == 5
    )
    outcomes = [r for r in records if r["kind"] == "outcome" and r.get("error")]
    assert {r["error"] for r in outcomes} == {"upstream_schema_violation", "upstream_unreachable"}


async def test_reload_reads_the_document_again_and_keeps_the_last_good_one(
    tmp_path: Path, start_upstream: Any, start_gateway: Any
) -> None:
    spec = tmp_path / "payments.yaml"
    shutil.copy(PAYMENTS_SPEC, spec)
    gw, _ = await typed_gateway(
        tmp_path,
        start_upstream,
        start_gateway,
        policy_dir=policy_folder(tmp_path, SHOW_OPERATION_REGO),
        spec=spec,
        validate="enforce",
    )
    assert (await operation_seen(gw, "GET", "/v1/refunds/search?q=a"))["id"] == "searchRefunds"
    document = yaml.safe_load(spec.read_text())
    document["paths"]["/v1/refunds/search"]["get"]["operationId"] = "findRefunds"
    spec.write_text(yaml.safe_dump(document))
    reloaded = await gw.admin.post("/api/v1/policies/reload", headers=OPERATOR)
    answer = await reloaded.json()
    assert reloaded.status == 200 and answer["openapi_problems"] == []
    loaded_version = answer["openapi"]["payments"]["version"]
    assert (await operation_seen(gw, "GET", "/v1/refunds/search?q=a"))["id"] == "findRefunds"
    # A broken document is refused; the last good one serves on.
    spec.write_text("openapi: 2.0\npaths: {}\n")
    reloaded = await gw.admin.post("/api/v1/policies/reload", headers=OPERATOR)
    assert reloaded.status == 200  # the policies loaded; the document is only reported
    assert (await reloaded.json())["openapi_problems"] == [
        f"tools[payments].openapi: {spec}: openapi: must be a 3.0.x or 3.1.x version (found 2.0)"
    ]
    assert (await operation_seen(gw, "GET", "/v1/refunds/search?q=a"))["id"] == "findRefunds"
    records = await wait_for_records(
        audit_source(gw), lambda rs: any(r["kind"] == "openapi_load_failed" for r in rs)
    )
    [loaded] = [r for r in records if r["kind"] == "openapi_loaded"]
    assert loaded["tools"] == ["payments"]
    status = await (await gw.admin.get("/api/v1/policies", headers=OPERATOR)).json()
    served = status["openapi"]["payments"]
    assert served["operations"] == 7 and served["version"] == loaded_version
    assert loaded["by"] == "olga" and loaded["trigger"] == "api"


async def test_a_changed_document_file_is_read_again_with_policy_watch(
    tmp_path: Path, start_upstream: Any, start_gateway: Any
) -> None:
    spec = tmp_path / "specs" / "payments.yaml"
    spec.parent.mkdir()
    shutil.copy(PAYMENTS_SPEC, spec)
    gw, _ = await typed_gateway(
        tmp_path,
        start_upstream,
        start_gateway,
        policy_dir=policy_folder(tmp_path, SHOW_OPERATION_REGO),
        spec=spec,
        watch=True,
    )
    assert (await operation_seen(gw, "GET", "/v1/refunds"))["id"] == "listRefunds"
    await asyncio.sleep(0.2)  # the watcher has started
    spec.write_text(
        spec.read_text().replace("operationId: listRefunds", "operationId: pageRefunds")
    )
    async with asyncio.timeout(10):
        while (await operation_seen(gw, "GET", "/v1/refunds"))["id"] != "pageRefunds":
            await asyncio.sleep(0.05)
    records = await wait_for_records(
        audit_source(gw), lambda rs: any(r["kind"] == "openapi_loaded" for r in rs)
    )
    [loaded] = [r for r in records if r["kind"] == "openapi_loaded"]
    assert (loaded["trigger"], loaded["by"]) == ("watch", "file change")


async def test_a_document_served_over_http_is_fetched(
    tmp_path: Path, start_upstream: Any, start_gateway: Any
) -> None:
    async def serve_spec(request: web.Request) -> web.Response:
        return web.Response(text=PAYMENTS_SPEC.read_text(), content_type="application/yaml")

    spec_app = web.Application()
    spec_app.router.add_get("/openapi.yaml", serve_spec)
    spec_url = await start_upstream(spec_app) + "/openapi.yaml"
    payments = Payments()
    base = await start_upstream(payments.app())
    config = make_config(
        tmp_path,
        policy_dir=policy_folder(tmp_path, SHOW_OPERATION_REGO),
        tool={"name": "payments", "upstream": f"{base}/api", "openapi": spec_url},
    )
    gw = await start_gateway(config=config)
    assert (await operation_seen(gw, "GET", "/v1/refunds"))["id"] == "listRefunds"


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("swagger: '2.0'\npaths: {}\n", "openapi: must be a 3.0.x or 3.1.x version (found none)"),
        ("openapi: 3.1.0\npaths: [1]\n", "paths: must be a mapping of path templates"),
        ("openapi: 3.1.0\npaths: {a: {}}\n", "paths.a: a path template must start with '/'"),
        (
            "openapi: 3.1.0\npaths: {/a: {get: {operationId: x}, put: {operationId: x}}}\n",
            "paths./a.put.operationId: 'x' is also the id of GET /a",
        ),
        (
            "openapi: 3.1.0\npaths: {/a: {get: {parameters: [{$ref: 'other.yaml#/p'}]}}}\n",
            "paths./a.get: $ref 'other.yaml#/p': only references within the document work",
        ),
        (
            "openapi: 3.1.0\npaths: {/a: {get: {parameters: [{name: n, in: query, schema: {type: 5}}]}}}\n",
            "paths./a.get: ",
        ),
        ("openapi: [3.1\n", "not valid YAML or JSON at line"),
    ],
)
async def test_the_gateway_does_not_start_with_a_bad_document(
    tmp_path: Path, text: str, problem: str
) -> None:
    spec = tmp_path / "bad.yaml"
    spec.write_text(text)
    config = make_config(
        tmp_path, tool={"name": "payments", "upstream": "http://127.0.0.1:9", "openapi": str(spec)}
    )
    agent_app, _ = build_apps(config)
    with pytest.raises(SpecError) as refused:
        await agent_app[SERVICES].start()
    [said] = refused.value.problems
    assert said.startswith(f"tools[payments].openapi: {spec}: {problem}"), said


async def test_a_public_document_through_the_gateway(
    tmp_path: Path, start_upstream: Any, start_gateway: Any
) -> None:
    """GitHub's description (a subset) in front of a tool that answers every call: the
    policy grants by GitHub's operationIds, and enforce refuses what GitHub would."""
    upstream, paths = await start_path_recorder(start_upstream)
    policies = copy_default_policies(tmp_path)
    shipped = json.loads((policies / "data.json").read_text())
    grants = {
        "caller": {
            "github": {"methods": ["GET", "PUT"], "operations": ["pulls/get", "pulls/merge"]}
        }
    }
    (policies / "data.json").write_text(json.dumps({"grants": {**shipped["grants"], **grants}}))
    config = make_config(
        tmp_path,
        policy_dir=policies,
        tool={
            "name": "github",
            "upstream": upstream,
            "openapi": str(REPO / "tests" / "data" / "github-subset.yaml"),
            "validate": "enforce",
        },
    )
    gw = await start_gateway(config=config)
    merged = await gw.put(
        "/tools/github/repos/acme/site/pulls/3/merge",
        json={"merge_method": "squash"},
        headers=auth(),
    )
    assert merged.status == 200
    got = await gw.get("/tools/github/repos/acme/site/pulls/3", headers=auth())
    assert got.status == 200
    listed = await gw.get("/tools/github/repos/acme/site/pulls?per_page=5", headers=auth())
    assert listed.status == 403
    assert (await listed.json())["error"]["message"].startswith("operation pulls/list (GET ")
    wrong = await gw.put(
        "/tools/github/repos/acme/site/pulls/three/merge",
        json={"merge_method": "ff"},
        headers=auth(),
    )
    assert wrong.status == 400
    assert [p["pointer"] for p in (await wrong.json())["error"]["problems"]] == [
        "/path/pull_number",
        "/body/merge_method",
    ]
    assert paths == ["/repos/acme/site/pulls/3/merge", "/repos/acme/site/pulls/3"]
