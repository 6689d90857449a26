"""Shadow mode over real HTTP: a second policy set decides every call, is never enforced,
and its disagreements are counted by tool and direction and audited."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.support.approvals import Tool, approval_config, approver_headers
from tests.support.audit import wait_for_records
from tests.support.gateway import auth

ENFORCED = """package gateway

import rego.v1

default decision := {"allow": true, "reason": "everything goes"}

decision := {"allow": true, "reason": x} if {
    input.request.method == "PUT"
    x := 1 / 0
}
"""

SHADOW = """package gateway

import rego.v1

default decision := {"allow": true, "reason": "reads and writes"}

decision := {"allow": false, "reason": "no deletes"} if input.request.method == "DELETE"

decision := {"allow": true, "approval_required": true, "reason": "writes need a human"} if {
    input.request.method == "POST"
}

decision := {"allow": true, "reason": x} if {
    input.request.method == "PATCH"
    x := 1 / 0
}
"""


async def start(
    tmp_path: Path, start_upstream: Any, start_gateway: Any, shadow_rego: str
) -> tuple[Any, Tool, Path]:
    tool = Tool()
    config = approval_config(tmp_path, await start_upstream(tool.app()))
    (config.policy.path / "gateway.rego").write_text(ENFORCED)
    shadow = tmp_path / "shadow-policies"
    shadow.mkdir()
    (shadow / "gateway.rego").write_text(shadow_rego)
    config = config.model_copy(
        update={"policy": config.policy.model_copy(update={"shadow": shadow})}
    )
    return await start_gateway(config=config), tool, shadow


async def metric_lines(gw: Any, name: str) -> dict[str, float]:
    text = await (await gw.admin.get("/metrics")).text()
    return {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name + "{")
    }


async def test_disagreements_are_counted_and_audited_and_never_enforced(
    tmp_path, start_upstream, start_gateway
):
    gw, tool, _shadow = await start(tmp_path, start_upstream, start_gateway, SHADOW)
    for method in ("GET", "POST", "DELETE", "PATCH", "POST"):
        resp = await gw.request(method, f"/tools/echo/items/{method}", headers=auth())
        assert resp.status == 201, "the enforced set decides; the shadow only watches"
    assert len(tool.calls) == 5
    resp = await gw.put("/tools/echo/items/PUT", headers=auth())
    assert resp.status == 503, "the enforced engine failed: the shadow changes nothing"

    counted = await metric_lines(gw, "callgate_policy_shadow_disagreements_total")
    prefix = "callgate_policy_shadow_disagreements_total"
    assert counted == {
        f'{prefix}{{direction="allow->approval",tool="echo"}}': 2,
        f'{prefix}{{direction="allow->deny",tool="echo"}}': 1,
        f'{prefix}{{direction="allow->error",tool="echo"}}': 1,
        f'{prefix}{{direction="error->allow",tool="echo"}}': 1,
    }
    records = await wait_for_records(
        gw.services.config.audit.path,
        lambda rs: sum(r["kind"] == "shadow_disagreement" for r in rs) == 5,
    )
    deny = next(
        r for r in records if r["kind"] == "shadow_disagreement" and r["method"] == "DELETE"
    )
    assert deny["direction"] == "allow->deny"
    assert deny["enforced"] == {
        "outcome": "allow",
        "reason": "everything goes",
        "version": gw.services.policies.policy_version,
    }
    assert deny["shadow"]["outcome"] == "deny"
    assert deny["shadow"]["reason"] == "no deletes"
    assert deny["shadow"]["version"] == gw.services.shadow.policy_version
    assert deny["agent"] == "bot" and deny["tool"] == "echo" and deny["path"] == "/items/DELETE"
    error = next(r for r in records if r.get("direction") == "allow->error")
    assert "divide by zero" in error["shadow"]["reason"]
    failed = next(r for r in records if r.get("direction") == "error->allow")
    assert "divide by zero" in failed["enforced"]["reason"]
    assert failed["shadow"]["reason"] == "reads and writes"

    shown = await (await gw.admin.get("/api/v1/policies", headers=approver_headers("olga"))).json()
    assert shown["shadow"]["set"] == "shadow"
    assert shown["shadow"]["served"]["version"] == gw.services.shadow.policy_version


async def test_a_broken_shadow_set_never_stops_the_gateway(tmp_path, start_upstream, start_gateway):
    gw, _tool, shadow = await start(
        tmp_path, start_upstream, start_gateway, "package gateway\n\ndecision := {\n"
    )
    resp = await gw.get("/tools/echo/x", headers=auth())
    assert resp.status == 201
    shown = await (await gw.admin.get("/api/v1/policies", headers=approver_headers("olga"))).json()
    assert shown["shadow"]["served"] is None
    assert shown["shadow"]["last_failure"]["trigger"] == "start"
    assert shown["served"] is not None and shown["last_failure"] is None

    # Fixed, and reloaded with the enforced set: the shadow serves from then on.
    (shadow / "gateway.rego").write_text(SHADOW)
    resp = await gw.admin.post("/api/v1/policies/reload", headers=approver_headers("olga"))
    body = await resp.json()
    assert resp.status == 200
    assert body["shadow"]["served"]["trigger"] == "api"
    await gw.delete("/tools/echo/x", headers=auth())
    counted = await metric_lines(gw, "callgate_policy_shadow_disagreements_total")
    assert list(counted.values()) == [1]
