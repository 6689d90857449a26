"""`callgate policy eval | explain | replay` and `audit export --format policy-input`, on
real traffic captured through a real gateway."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.support.approvals import Tool, approval_config
from tests.support.audit import wait_for_records
from tests.support.gateway import auth
from tests.support.process import cli

# The captured traffic was decided by APPROVAL_REGO (GET allowed, POST /refunds parked,
# anything else denied). The new policy denies refunds over 100 and allows DELETE.
NEW_REGO = """package gateway

import rego.v1

default decision := {"allow": false, "reason": "not allowed"}

decision := {"allow": true, "reason": "reads are fine"} if input.request.method == "GET"

decision := {"allow": true, "reason": "deletes are fine now"} if input.request.method == "DELETE"

decision := {"allow": true, "approval_required": true, "reason": "small refund"} if {
    input.request.method == "POST"
    input.request.body.amount <= 100
}

decision := {"allow": false, "reason": refusal} if {
    input.request.method == "POST"
    input.request.body.amount > 100
    refusal := sprintf("refunds over 100 are not allowed (%v)", [input.request.body.amount])
}
"""


def input_doc(method: str, path: str, body: Any = None) -> dict[str, Any]:
    return {
        "agent": {"id": "bot", "roles": ["caller"]},
        "tool": {"name": "echo", "kind": "http"},
        "request": {
            "method": method,
            "path": path,
            "query": {},
            "headers": {},
            "body": body,
            "size": 0,
        },
        "mcp": None,
        "context": {"request_id": "r-1", "time": "2026-11-24T10:00:00Z", "session": None},
    }


async def capture(tmp_path: Path, start_upstream: Any, start_gateway: Any) -> Path:
    """Traffic through a gateway that records bodies; its decisions as policy inputs."""
    config = approval_config(tmp_path, await start_upstream(Tool().app()))
    config = config.model_copy(
        update={"audit": config.audit.model_copy(update={"record_bodies": True})}
    )
    gw = await start_gateway(config=config)
    calls = [
        ("GET", "/items/1", None),
        ("GET", "/items/2", None),
        ("POST", "/refunds", {"amount": 50}),
        ("POST", "/refunds", {"amount": 500}),
        ("POST", "/refunds", {"amount": 900}),
        ("DELETE", "/items/3", None),
    ]
    for method, path, body in calls:
        resp = await gw.request(method, f"/tools/echo{path}", json=body, headers=auth())
        assert resp.status in (201, 202, 403)
    await gw.request("GET", "/tools/echo/x", headers={"Authorization": "Bearer nobody"})
    audit_file = config.audit.path
    await wait_for_records(audit_file, lambda rs: sum(r["kind"] == "decision" for r in rs) == 7)
    export = tmp_path / "inputs.jsonl"
    code, out = await cli(
        "audit", "export", "--db", str(audit_file), "--format", "policy-input", "--output",
        str(export),
    )  # fmt: skip
    assert code == 0, out
    return export


async def test_export_policy_input_holds_replayable_decisions(
    tmp_path, start_upstream, start_gateway
):
    export = await capture(tmp_path, start_upstream, start_gateway)
    lines = [json.loads(line) for line in export.read_text().splitlines()]
    # The unauthenticated call was never decided by the policy: not replayable.
    assert len(lines) == 6
    assert [line["recorded"]["outcome"] for line in lines] == [
        "allow", "allow", "approval", "approval", "approval", "deny",
    ]  # fmt: skip
    first = lines[2]["input"]
    assert first["agent"] == {
        "id": "bot",
        "roles": ["caller"],
        "claims": {},
        "identity": {"kind": "token"},
    }
    assert first["request"]["body"] == {"amount": 50}
    assert first["request"]["method"] == "POST"
    assert "authorization" not in first["request"]["headers"]
    assert lines[2]["recorded"]["body_recorded"] is True
    assert lines[0]["recorded"]["body_recorded"] is True, "a GET without a body lost nothing"


async def test_replay_counts_changed_decisions_by_tool_and_outcome(
    tmp_path, start_upstream, start_gateway
):
    export = await capture(tmp_path, start_upstream, start_gateway)
    new = tmp_path / "new-policies"
    new.mkdir()
    (new / "gateway.rego").write_text(NEW_REGO)
    code, out = await cli("policy", "replay", "--audit", str(export), "--policies", str(new))
    assert code == 0, out
    lines = out.splitlines()
    assert lines[0].startswith(f"replayed 6 decisions against {new} (version ")
    assert lines[0].endswith("3 would change, 3 unchanged")
    assert "  echo: approval -> deny: 2" in lines
    assert "  echo: deny -> allow: 1" in lines
    assert any(
        "POST /refunds" in line and "refunds over 100 are not allowed (500)" in line
        for line in lines
    )
    assert any("DELETE /items/3" in line and "deletes are fine now" in line for line in lines)

    code, _ = await cli(
        "policy", "replay", "--audit", str(export), "--policies", str(new), "--fail-on-change"
    )
    assert code == 1
    code, out = await cli("policy", "replay", "--audit", str(tmp_path / "nope.jsonl"))
    assert code == 2 and "--audit" in out


async def test_replay_refuses_a_file_that_is_not_policy_input(tmp_path):
    folder = tmp_path / "p"
    folder.mkdir()
    (folder / "gateway.rego").write_text(NEW_REGO)
    bad = tmp_path / "records.jsonl"
    bad.write_text('{"kind": "decision"}\n')
    code, out = await cli("policy", "replay", "--audit", str(bad), "--policies", str(folder))
    assert code == 2
    assert "line 1 is not a policy-input line" in out


async def test_eval_prints_the_decision(tmp_path):
    folder = tmp_path / "p"
    folder.mkdir()
    (folder / "gateway.rego").write_text(NEW_REGO)
    doc = tmp_path / "call.json"
    doc.write_text(json.dumps(input_doc("POST", "/refunds", {"amount": 70})))
    code, out = await cli("policy", "eval", "--input", str(doc), "--policies", str(folder))
    assert code == 0, out
    decision = json.loads(out)
    assert decision["allow"] is True
    assert decision["approval_required"] is True
    assert decision["reason"] == "small refund"
    assert len(decision["policy_version"]) == 64

    # A line of the policy-input export is accepted as it is.
    doc.write_text(json.dumps({"input": input_doc("POST", "/refunds", {"amount": 700})}))
    code, out = await cli("policy", "eval", "--input", str(doc), "--policies", str(folder))
    assert json.loads(out)["reason"] == "refunds over 100 are not allowed (700)"

    doc.write_text("[1]")
    code, out = await cli("policy", "eval", "--input", str(doc), "--policies", str(folder))
    assert code == 2 and "the input must be a JSON object" in out


async def test_eval_prints_what_approvers_will_see(tmp_path):
    folder = tmp_path / "p"
    folder.mkdir()
    (folder / "gateway.rego").write_text(
        "package gateway\n\nimport rego.v1\n\n"
        'decision := {"allow": true, "approval_required": true, "reason": "big", "approval": '
        '{"summary": sprintf("refund %v", [input.request.body.amount]), "fields": ["amount"]}}\n'
    )
    doc = tmp_path / "call.json"
    doc.write_text(json.dumps(input_doc("POST", "/refunds", {"amount": 70})))
    code, out = await cli("policy", "eval", "--input", str(doc), "--policies", str(folder))
    assert code == 0, out
    approval = json.loads(out)["approval"]
    assert (approval["summary"], approval["fields"]) == ("refund 70", ["amount"])


async def test_explain_shows_which_rules_made_the_reason(tmp_path):
    folder = tmp_path / "p"
    folder.mkdir()
    (folder / "gateway.rego").write_text(
        "package gateway\n\nimport rego.v1\n\n"
        'default decision := {"allow": false, "reason": "no rule allowed this"}\n\n'
        'decision := {"allow": false, "reason": concat("; ", sort(deny))} if count(deny) > 0\n\n'
        'decision := {"allow": true, "reason": "ok"} if count(deny) == 0\n\n'
        'deny contains "too much" if input.request.body.amount > 100\n\n'
        'deny contains "no currency" if not input.request.body.currency\n\n'
        "big if input.request.body.amount > 1000\n"
    )
    doc = tmp_path / "call.json"
    doc.write_text(json.dumps(input_doc("POST", "/refunds", {"amount": 500})))
    code, out = await cli(
        "policy", "explain", "--input", str(doc), "--policies", str(folder), "--lines"
    )
    assert code == 0, out
    assert '"reason": "no currency; too much"' in out
    assert 'data.gateway.deny = ["no currency", "too much"]  (gateway.rego:11)' in out
    assert "data.gateway.big = undefined  (gateway.rego:15)" in out
    assert "lines reached:" in out
    assert "gateway.rego:11: deny contains" in out
