"""The OPA sidecar engine over real HTTP: pushed policies decide calls, a refused set is
rolled back, OPA down or slow fails closed (503), and bundle mode takes OPA's revision.

Each test runs against the real `opa` binary when one is on PATH (or CALLGATE_OPA_BIN),
and against the stand-in server otherwise (see tests/support/opa.py)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from gateway.policy.errors import PolicyLoadError
from gateway.policy.loader import read_policy_dir
from tests.support.approvals import Tool, approval_config, approver_headers
from tests.support.audit import read_records, wait_for_records
from tests.support.gateway import auth
from tests.support.opa import RealOpa, StandIn, opa_binary

NO_OPA = "no opa binary: put OPA 1.9 on PATH or set CALLGATE_OPA_BIN to run against real OPA"

POLICY = """package gateway

import rego.v1

default decision := {"allow": false, "reason": "only reads"}

decision := {"allow": true, "reason": sprintf("reads of %s are fine", [data.team.name])} if {
    input.request.method == "GET"
    count(input.request.path) <= data.max_path
}

decision := {"allow": true, "reason": x} if {
    input.request.method == "PATCH"
    x := 1 / 0
}
"""

TESTS = """package gateway_test

import rego.v1

import data.gateway

test_reads_allowed if gateway.decision.allow with input as {"request": {"method": "GET", "path": "/x"}}
"""

FAILING_TEST = (
    TESTS
    + """
test_writes_allowed if gateway.decision.allow with input as {"request": {"method": "POST"}}
"""
)


@pytest.fixture(params=["stand-in", "opa"])
async def opa_server(request: Any, tmp_path: Path) -> Any:
    if request.param == "opa" and opa_binary() is None:
        pytest.skip(NO_OPA)
    server = StandIn() if request.param == "stand-in" else RealOpa(tmp_path)
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def opa() -> Any:
    """The stand-in alone, for what only it can do (delays, losing its state)."""
    opa = StandIn()
    await opa.start()
    yield opa
    await opa.stop()


def write_policies(folder: Path, policy: str = POLICY, tests: str = TESTS) -> None:
    (folder / "gateway.rego").write_text(policy)
    (folder / "gateway_test.rego").write_text(tests)
    (folder / "team.json").write_text(json.dumps({"team": {"name": "finance"}, "max_path": 20}))


async def start(
    tmp_path: Path, start_upstream: Any, start_gateway: Any, opa_url: str, **policy: Any
) -> tuple[Any, Tool, Path]:
    tool = Tool()
    config = approval_config(tmp_path, await start_upstream(tool.app()))
    folder = config.policy.path
    write_policies(folder)
    config = config.model_copy(
        update={
            "policy": config.policy.model_copy(
                update={"engine": "opa", "opa_url": opa_url, "watch": False, **policy}
            )
        }
    )
    return await start_gateway(config=config), tool, folder


async def test_pushed_policies_decide_calls(tmp_path, start_upstream, start_gateway, opa_server):
    gw, tool, folder = await start(tmp_path, start_upstream, start_gateway, opa_server.url)
    assert gw.services.policies.policy_version == read_policy_dir(folder).policy_version

    resp = await gw.get("/tools/echo/items", headers=auth())
    assert resp.status == 201
    resp = await gw.post("/tools/echo/items", headers=auth())
    assert resp.status == 403
    assert (await resp.json())["error"]["message"] == "only reads"
    assert len(tool.calls) == 1

    # A builtin error is an error with OPA too (strict-builtin-errors): fail closed.
    resp = await gw.patch("/tools/echo/items", headers=auth())
    assert resp.status == 503
    assert (await resp.json())["error"]["code"] == "policy_unavailable"
    assert len(tool.calls) == 1

    shown = await (await gw.admin.get("/api/v1/policies", headers=approver_headers("olga"))).json()
    assert shown["engine"] == "opa"
    assert shown["served"]["files"] == ["gateway.rego", "team.json"]
    assert shown["served"]["tests"] == 1


@pytest.mark.parametrize(
    ("policy", "tests", "expected"),
    [
        ("package gateway\n\ndecision := {\n", TESTS, "gateway.rego:"),
        (
            POLICY.replace("only reads", "nothing at all"),
            FAILING_TEST,
            "test_writes_allowed failed",
        ),
    ],
    ids=["syntax-error", "failing-test"],
)
async def test_a_refused_set_is_rolled_back_on_opa(
    tmp_path, start_upstream, start_gateway, opa_server, policy, tests, expected
):
    gw, _tool, folder = await start(tmp_path, start_upstream, start_gateway, opa_server.url)
    good = gw.services.policies.policy_version
    write_policies(folder, policy, tests)
    resp = await gw.admin.post("/api/v1/policies/reload", headers=approver_headers("olga"))
    body = await resp.json()
    assert resp.status == 422
    assert expected in body["error"]["message"]
    assert gw.services.policies.policy_version == good
    # OPA itself decides with the previous set again, not the refused one.
    resp = await gw.post("/tools/echo/items", headers=auth())
    assert (await resp.json())["error"]["message"] == "only reads"


async def test_start_up_replaces_what_an_earlier_run_pushed(
    tmp_path, start_upstream, start_gateway
):
    opa = StandIn()
    opa.modules["callgate/removed_since.rego"] = "package removed\n\nx := 1\n"
    opa.modules["someone-else/theirs.rego"] = "package theirs\n\ny := 1\n"
    await opa.start()
    try:
        gw, _tool, _folder = await start(tmp_path, start_upstream, start_gateway, opa.url)
        assert sorted(opa.modules) == [
            "callgate/gateway.rego",
            "callgate/gateway_test.rego",
            "someone-else/theirs.rego",
        ]
        assert opa.data == {"team": {"name": "finance"}, "max_path": 20}
        resp = await gw.get("/tools/echo/" + "x" * 30, headers=auth())
        assert (await resp.json())["error"]["message"] == "only reads"
    finally:
        await opa.stop()


async def test_an_unreachable_opa_fails_closed(tmp_path, start_upstream, start_gateway):
    opa = StandIn()
    await opa.start()
    gw, tool, _folder = await start(tmp_path, start_upstream, start_gateway, opa.url)
    await opa.stop()
    resp = await gw.get("/tools/echo/items", headers=auth())
    assert resp.status == 503
    assert (await resp.json())["error"]["code"] == "policy_unavailable"
    assert tool.calls == []


async def test_a_slow_opa_fails_closed_after_the_decision_timeout(
    tmp_path, start_upstream, start_gateway, opa
):
    gw, tool, _folder = await start(
        tmp_path, start_upstream, start_gateway, opa.url, opa_timeout_s=0.2
    )
    opa.delay_s = 1.0
    resp = await gw.get("/tools/echo/items", headers=auth())
    assert resp.status == 503
    assert tool.calls == []
    opa.delay_s = 0
    resp = await gw.get("/tools/echo/items", headers=auth())
    assert resp.status == 201, "the pooled client recovers after a timeout"


async def test_an_undefined_decision_on_opa_is_a_deny_as_embedded(
    tmp_path, start_upstream, start_gateway, opa_server
):
    gw, tool, folder = await start(tmp_path, start_upstream, start_gateway, opa_server.url)
    write_policies(
        folder, POLICY.replace('default decision := {"allow": false, "reason": "only reads"}\n', "")
    )
    resp = await gw.admin.post("/api/v1/policies/reload", headers=approver_headers("olga"))
    assert resp.status == 200, await resp.text()
    for _ in range(3):
        resp = await gw.post("/tools/echo/items", headers=auth())
        assert resp.status == 403, "undefined: a deny, not OPA unavailable"
        assert (await resp.json())["error"]["code"] == "policy_denied"
    assert gw.services.policies.engine._repush is None, "nothing was pushed again"
    assert (await gw.get("/tools/echo/items", headers=auth())).status == 201
    assert len(tool.calls) == 1


async def test_calls_wait_for_a_push_longer_than_the_decision_timeout(
    tmp_path, start_upstream, start_gateway, opa
):
    gw, tool, folder = await start(
        tmp_path, start_upstream, start_gateway, opa.url, opa_timeout_s=0.2
    )
    opa.push_delay_s = 0.3  # two modules: the push takes 0.6 s
    write_policies(folder, POLICY.replace("only reads", "v2"))
    reload = asyncio.create_task(
        gw.admin.post("/api/v1/policies/reload", headers=approver_headers("olga"))
    )
    await asyncio.sleep(0.1)
    resp = await gw.post("/tools/echo/items", headers=auth())
    assert resp.status == 403, "a call during a push waits for it, then is decided"
    assert (await resp.json())["error"]["message"] == "v2"
    assert (await reload).status == 200
    assert tool.calls == []


async def test_a_gateway_whose_opa_refuses_its_policies_does_not_start(
    tmp_path, start_upstream, start_gateway, opa
):
    config = approval_config(tmp_path, await start_upstream(Tool().app()))
    write_policies(config.policy.path, "package gateway\n\ndecision := {\n")
    config = config.model_copy(
        update={"policy": config.policy.model_copy(update={"engine": "opa", "opa_url": opa.url})}
    )
    with pytest.raises(PolicyLoadError, match=r"gateway\.rego:"):
        await start_gateway(config=config)


async def test_bundle_mode_takes_the_version_from_opa(tmp_path, start_upstream, start_gateway):
    """OPA holds the policies (pre-loaded here); the gateway pushes nothing."""
    opa = StandIn(revision="r42")
    opa.modules["bundle/gateway.rego"] = POLICY
    opa.data.update({"team": {"name": "ops"}, "max_path": 20})
    await opa.start()
    try:
        tool = Tool()
        config = approval_config(tmp_path, await start_upstream(tool.app()))
        (config.policy.path / "gateway.rego").write_text("this folder is not read")
        config = config.model_copy(
            update={
                "policy": config.policy.model_copy(
                    update={"engine": "opa", "opa_url": opa.url, "opa_push": False}
                )
            }
        )
        gw = await start_gateway(config=config)
        assert gw.services.policies.policy_version == "main@r42"
        assert list(opa.modules) == ["bundle/gateway.rego"]
        resp = await gw.get("/tools/echo/items", headers=auth())
        assert resp.status == 201
        opa.revision = "r43"
        await gw.get("/tools/echo/items", headers=auth())
        assert gw.services.policies.policy_version == "main@r43"
        assert gw.services.policies.served.policy_version == "main@r43"
        loaded = [
            r for r in read_records(gw.services.config.audit.path) if r["kind"] == "policy_loaded"
        ]
        assert [(r["trigger"], r["policy_version"]) for r in loaded] == [
            ("start", "main@r42"),
            ("bundle", "main@r43"),
        ]
    finally:
        await opa.stop()


async def test_bundle_mode_on_real_opa(tmp_path, start_upstream, start_gateway):
    if opa_binary() is None:
        pytest.skip(NO_OPA)
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / ".manifest").write_text(json.dumps({"revision": "r42", "roots": [""]}))
    (bundle / "gateway.rego").write_text(POLICY)
    (bundle / "data.json").write_text(json.dumps({"team": {"name": "ops"}, "max_path": 20}))
    opa = RealOpa(tmp_path, bundle=bundle)
    await opa.start()
    try:
        tool = Tool()
        config = approval_config(tmp_path, await start_upstream(tool.app()))
        config = config.model_copy(
            update={
                "policy": config.policy.model_copy(
                    update={"engine": "opa", "opa_url": opa.url, "opa_push": False}
                )
            }
        )
        gw = await start_gateway(config=config)
        assert gw.services.policies.policy_version.endswith("@r42")
        resp = await gw.get("/tools/echo/items", headers=auth())
        assert resp.status == 201
    finally:
        await opa.stop()


async def test_a_decision_in_flight_during_a_refused_push_is_made_by_the_served_set(
    tmp_path, start_upstream, start_gateway, opa
):
    gw, tool, folder = await start(
        tmp_path, start_upstream, start_gateway, opa.url, opa_timeout_s=3
    )
    good = gw.services.policies.policy_version
    opa.delay_s = 0.3
    in_flight = asyncio.create_task(gw.post("/tools/echo/items", headers=auth()))
    await asyncio.sleep(0.1)
    write_policies(
        folder,
        POLICY.replace("only reads", "REFUSED SET").replace(
            'input.request.method == "GET"', 'input.request.method in {"GET", "POST"}'
        ),
        FAILING_TEST.replace("POST", "DELETE"),
    )
    resp = await gw.admin.post("/api/v1/policies/reload", headers=approver_headers("olga"))
    assert resp.status == 422
    answer = await in_flight
    assert answer.status == 403
    assert (await answer.json())["error"]["message"] == "only reads"
    assert tool.calls == []
    records = await wait_for_records(
        gw.services.config.audit.path,
        lambda rs: any(r["kind"] == "decision" for r in rs),
    )
    (decision,) = [r for r in records if r["kind"] == "decision"]
    assert decision["policy_version"] == good


async def test_an_opa_that_lost_the_pushed_set_gets_it_again(
    tmp_path, start_upstream, start_gateway, opa
):
    gw, _tool, _folder = await start(tmp_path, start_upstream, start_gateway, opa.url)
    opa.modules.clear()  # OPA restarted: pushed policies live in its memory only
    opa.data.clear()
    resp = await gw.get("/tools/echo/items", headers=auth())
    assert resp.status == 503, "no decision on OPA: fail closed, never a silent deny"
    async with asyncio.timeout(10):
        while (await gw.get("/tools/echo/items", headers=auth())).status != 201:
            await asyncio.sleep(0.05)

    # An explicit reload pushes again too, even with the same files.
    opa.modules.clear()
    resp = await gw.admin.post("/api/v1/policies/reload", headers=approver_headers("olga"))
    assert (resp.status, (await resp.json())["reloaded"]) == (200, False)
    assert "callgate/gateway.rego" in opa.modules


async def test_a_renamed_policy_file_is_pushed_without_clashing(
    tmp_path, start_upstream, start_gateway, opa_server
):
    gw, _tool, folder = await start(tmp_path, start_upstream, start_gateway, opa_server.url)
    (folder / "gateway.rego").rename(folder / "main.rego")
    resp = await gw.admin.post("/api/v1/policies/reload", headers=approver_headers("olga"))
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["served"]["files"] == ["main.rego", "team.json"]
    resp = await gw.post("/tools/echo/items", headers=auth())
    assert (await resp.json())["error"]["message"] == "only reads"


async def test_a_reload_during_a_push_again_waits_for_it(
    tmp_path, start_upstream, start_gateway, opa
):
    gw, tool, folder = await start(tmp_path, start_upstream, start_gateway, opa.url)
    opa.modules.clear()  # OPA restarted
    opa.data.clear()
    opa.push_delay_s = 0.2
    resp = await gw.get("/tools/echo/items", headers=auth())
    assert resp.status == 503, "the set is being pushed again"
    (folder / "gateway.rego").unlink()
    (folder / "main.rego").write_text(POLICY.replace("only reads", "v2"))
    resp = await gw.admin.post("/api/v1/policies/reload", headers=approver_headers("olga"))
    assert resp.status == 200, await resp.text()
    assert set(opa.modules) == {"callgate/main.rego", "callgate/gateway_test.rego"}
    resp = await gw.post("/tools/echo/items", headers=auth())
    assert (await resp.json())["error"]["message"] == "v2"
    assert tool.calls == []
