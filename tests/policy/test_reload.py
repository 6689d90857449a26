"""Hot reload over real HTTP: a refused set (syntax error, failing Rego test, builtin the
engine lacks) never replaces the served one; API, file-watch and SIGHUP reloads; every
concurrent call is decided by exactly one version."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.config import Protection, RefusalLimit
from gateway.policy.loader import read_policy_dir
from tests.support.approvals import Tool, approval_config, approver_headers
from tests.support.audit import read_records, wait_for_records
from tests.support.gateway import auth
from tests.support.process import Gateway

OPERATOR = approver_headers("olga")


def rego(marker: str, allow: bool = True) -> str:
    verdict = "true" if allow else "false"
    return (
        "package gateway\n\nimport rego.v1\n\n"
        f'decision := {{"allow": {verdict}, "reason": "{marker}"}}\n'
    )


PASSING_TEST = (
    "package gateway_test\n\nimport rego.v1\n\nimport data.gateway\n\n"
    "test_decision_defined if gateway.decision\n"
)

REFUSED = {
    "syntax-error": ({"gateway.rego": "package gateway\n\ndecision := {\n"}, "gateway.rego:"),
    "failing-test": (
        {
            "gateway.rego": rego("v2", allow=False),
            "gateway_test.rego": PASSING_TEST + "\ntest_allows if gateway.decision.allow\n",
        },
        "data.gateway_test.test_allows failed",
    ),
    "unknown-builtin": (
        {
            "gateway.rego": "package gateway\n\nimport rego.v1\n\n"
            'decision := {"allow": true, "reason": x} if x := io.jwt.decode("a.b.c")\n'
        },
        "unknown function 'io.jwt.decode'",
    ),
}


async def start(tmp_path: Path, start_upstream: Any, start_gateway: Any) -> tuple[Any, Path]:
    config = approval_config(tmp_path, await start_upstream(Tool().app()))
    # Every denied call keeps its own decision record: these tests count them.
    config = config.model_copy(
        update={"protection": Protection(refusals=RefusalLimit(limit=100_000))}
    )
    folder = config.policy.path
    (folder / "gateway.rego").write_text(rego("v1"))
    (folder / "gateway_test.rego").write_text(PASSING_TEST)
    return await start_gateway(config=config), folder


async def reload(gw: Any, headers: dict[str, str] = OPERATOR) -> tuple[int, Any]:
    resp = await gw.admin.post("/api/v1/policies/reload", headers=headers)
    return resp.status, await resp.json()


async def metric(gw: Any, name: str) -> float:
    text = await (await gw.admin.get("/metrics")).text()
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no metric {name}")


@pytest.mark.parametrize("case", list(REFUSED))
async def test_a_refused_set_never_replaces_the_served_one(
    tmp_path, start_upstream, start_gateway, case
):
    gw, folder = await start(tmp_path, start_upstream, start_gateway)
    good = gw.services.policies.policy_version
    files, expected = REFUSED[case]
    for name, text in files.items():
        (folder / name).write_text(text)

    status, body = await reload(gw)
    assert status == 422
    assert body["error"]["code"] == "policy_invalid"
    assert expected in body["error"]["message"]
    assert good[:12] in body["error"]["message"]

    # Calls are still decided by the last good set.
    resp = await gw.get("/tools/echo/x", headers=auth())
    assert resp.status == 201
    assert gw.services.policies.policy_version == good

    shown = await (await gw.admin.get("/api/v1/policies", headers=OPERATOR)).json()
    assert shown["served"]["version"] == good
    assert shown["last_failure"]["trigger"] == "api"
    assert shown["last_failure"]["by"] == "olga"
    assert any(expected in problem for problem in shown["last_failure"]["problems"])

    ready = await gw.admin.get("/readyz")
    details = await ready.json()
    assert ready.status == 200, "the last good set serves: still ready"
    assert details["policy_version"] == good
    assert any(expected in p for p in details["policy_last_failure"]["problems"])
    assert await metric(gw, 'callgate_policy_reload_failing{set="enforced"}') == 1
    assert await metric(gw, 'callgate_policy_reloads_total{result="failed",set="enforced"}') == 1

    records = await wait_for_records(
        gw.services.config.audit.path,
        lambda rs: any(r["kind"] == "policy_load_failed" for r in rs),
    )
    (failed,) = [r for r in records if r["kind"] == "policy_load_failed"]
    assert failed["serving_version"] == good
    assert failed["by"] == "olga"
    assert any(expected in problem for problem in failed["problems"])


async def test_an_api_reload_serves_the_new_set_and_audits_it(
    tmp_path, start_upstream, start_gateway
):
    gw, folder = await start(tmp_path, start_upstream, start_gateway)
    first = gw.services.policies.policy_version
    status, body = await reload(gw)
    assert (status, body["reloaded"]) == (200, False), "unchanged files: nothing to do"

    (folder / "gateway.rego").write_text(rego("v2", allow=False))
    status, body = await reload(gw)
    assert status == 200
    assert body["reloaded"] is True
    assert body["previous_version"] == first
    second = read_policy_dir(folder).policy_version
    assert body["served"]["version"] == second
    assert body["served"]["files"] == ["gateway.rego"]
    assert body["served"]["tests"] == 1
    assert body["last_failure"] is None

    resp = await gw.get("/tools/echo/x", headers=auth())
    assert resp.status == 403
    assert (await resp.json())["error"]["message"] == "v2"
    # The denied call's record is committed after its answer: wait for it too.
    records = await wait_for_records(
        gw.services.config.audit.path,
        lambda rs: (
            sum(r["kind"] == "policy_loaded" for r in rs) == 2
            and any(r["kind"] == "decision" and r["policy_version"] == second for r in rs)
        ),
    )
    loaded = [r for r in records if r["kind"] == "policy_loaded"]
    assert [r["trigger"] for r in loaded] == ["start", "api"]
    assert loaded[1]["previous_version"] == first
    assert loaded[1]["policy_version"] == second
    assert loaded[1]["by"] == "olga"
    denied = [r for r in records if r["kind"] == "decision"][-1]
    assert denied["policy_version"] == second


async def test_reloading_needs_an_operator(tmp_path, start_upstream, start_gateway):
    gw, _folder = await start(tmp_path, start_upstream, start_gateway)
    status, body = await reload(gw, approver_headers("alice"))
    assert (status, body["error"]["code"]) == (403, "forbidden")
    status, body = await reload(gw, auth())  # an agent token is unknown here
    assert (status, body["error"]["code"]) == (401, "unauthenticated")
    resp = await gw.admin.get("/api/v1/policies", headers=approver_headers("alice"))
    assert resp.status == 200, "any approver may look"


async def test_a_file_change_is_picked_up_by_the_watcher(tmp_path, start_upstream, start_gateway):
    gw, folder = await start(tmp_path, start_upstream, start_gateway)
    first = gw.services.policies.policy_version
    (folder / "gateway.rego").write_text(rego("v2", allow=False))
    second = read_policy_dir(folder).policy_version
    async with asyncio.timeout(15):
        while gw.services.policies.policy_version != second:
            await asyncio.sleep(0.05)
    assert gw.services.policies.served.trigger == "watch"

    # A broken save is refused by the watcher too, and the previous good set serves on.
    (folder / "gateway.rego").write_text("package gateway\n\ndecision := {\n")
    async with asyncio.timeout(15):
        while gw.services.policies.last_failure is None:
            await asyncio.sleep(0.05)
    assert gw.services.policies.last_failure.trigger == "watch"
    assert gw.services.policies.policy_version == second != first


async def test_concurrent_calls_are_each_decided_by_exactly_one_version(
    tmp_path, start_upstream, start_gateway
):
    gw, folder = await start(tmp_path, start_upstream, start_gateway)
    versions = {}
    for marker, allow in (("v1", True), ("v2", False)):
        (folder / "gateway.rego").write_text(rego(marker, allow))
        versions[read_policy_dir(folder).policy_version] = (marker, allow)

    flipped = asyncio.Event()

    async def calls() -> list[int]:
        async def one(n: int) -> int:  # distinct paths: the loop breaker stays out of it
            return (await gw.get(f"/tools/echo/x{n}", headers=auth())).status

        statuses: list[int] = []
        while not flipped.is_set():
            statuses += await asyncio.gather(*(one(len(statuses) + i) for i in range(20)))
        return statuses

    async def flip() -> None:
        for round_ in range(6):
            marker, allow = ("v1", True) if round_ % 2 else ("v2", False)
            (folder / "gateway.rego").write_text(rego(marker, allow))
            assert (await reload(gw))[0] == 200
            await asyncio.sleep(0.02)
        flipped.set()

    statuses, _ = await asyncio.gather(calls(), flip())
    assert set(statuses) == {201, 403}
    records = await wait_for_records(
        gw.services.config.audit.path,
        lambda rs: sum(r["kind"] == "decision" for r in rs) >= len(statuses),
    )
    decisions = [r for r in records if r["kind"] == "decision"]
    assert len(decisions) == len(statuses)
    for record in decisions:
        marker, allow = versions[record["policy_version"]]
        assert record["policy_allow"] is allow
        assert record["reason"] == marker


async def test_sighup_reloads_a_running_gateway(tmp_path, start_upstream):
    shadow = tmp_path / "shadow"
    shadow.mkdir()
    (shadow / "gateway.rego").write_text(rego("shadow-v1"))
    gateway = Gateway(
        tmp_path,
        await start_upstream(Tool().app()),
        extra={"policy": {"path": "policies", "watch": False, "shadow": "shadow"}},
    )
    await gateway.start()
    assert gateway.proc is not None
    folder = tmp_path / "policies"

    async def status_and_message(session: aiohttp.ClientSession) -> tuple[int, Any]:
        async with session.get(f"{gateway.url}/tools/echo/x", headers=auth()) as resp:
            return resp.status, (await resp.json())["error"][
                "message"
            ] if resp.status == 403 else None

    try:
        async with aiohttp.ClientSession() as session:
            (folder / "gateway.rego").write_text(rego("v2", allow=False))
            (shadow / "gateway.rego").write_text(rego("shadow-v2"))
            await asyncio.sleep(0.5)
            assert (await status_and_message(session))[0] == 201, "no watcher: still v1"
            gateway.proc.send_signal(signal.SIGHUP)
            async with asyncio.timeout(15):
                while await status_and_message(session) != (403, "v2"):
                    await asyncio.sleep(0.05)
    finally:
        assert await gateway.stop() == 0
    loaded = [r for r in read_records(gateway.audit_file) if r["kind"] == "policy_loaded"]
    assert sorted((r["set"], r["trigger"], r["by"]) for r in loaded) == [
        ("enforced", "signal", "SIGHUP"),
        ("enforced", "start", "gateway"),
        ("shadow", "signal", "SIGHUP"),
        ("shadow", "start", "gateway"),
    ]


async def test_data_json_cannot_hold_is_refused_and_the_watcher_goes_on(
    tmp_path, start_upstream, start_gateway
):
    """YAML reads unquoted dates and .nan, which no Rego value can be."""
    gw, folder = await start(tmp_path, start_upstream, start_gateway)
    good = gw.services.policies.policy_version
    (folder / "holidays.yaml").write_text("holidays:\n  - 2026-12-25\n")
    status, body = await reload(gw)
    assert status == 422
    assert "holidays.yaml: cannot read data file" in body["error"]["message"]
    assert "quote dates and times in YAML" in body["error"]["message"]

    (folder / "holidays.yaml").write_text("limits: {ratio: .nan}\n")
    async with asyncio.timeout(15):
        while "NaN or infinity" not in str(gw.services.policies.last_failure):
            await asyncio.sleep(0.05)
    assert gw.services.policies.last_failure.trigger == "watch"

    (folder / "holidays.yaml").write_text("holidays: ['2026-12-25']\n")
    async with asyncio.timeout(15):
        while gw.services.policies.policy_version == good:
            await asyncio.sleep(0.05)
    assert gw.services.policies.served.files == ("gateway.rego", "holidays.yaml")


async def test_a_test_only_edit_runs_the_new_tests(tmp_path, start_upstream, start_gateway):
    gw, folder = await start(tmp_path, start_upstream, start_gateway)
    (folder / "more_test.rego").write_text(
        "package more_test\n\nimport rego.v1\n\nimport data.gateway\n\n"
        'test_v2 if gateway.decision.reason == "v2"\n'
    )
    async with asyncio.timeout(15):
        while gw.services.policies.last_failure is None:
            await asyncio.sleep(0.05)
    assert "data.more_test.test_v2 failed" in gw.services.policies.last_failure.problems[0]


def configmap_volume(folder: Path, files: dict[str, str], generation: int) -> None:
    """What the kubelet does to a mounted ConfigMap: the files go into a new hidden folder,
    the hidden `..data` link is swapped to it in one rename, each key is a link through
    `..data`, and the previous folder is removed. No visible name changes on an update."""
    new = folder / f"..2026_11_24_20_00_0{generation}.000000001"
    new.mkdir()
    for name, text in files.items():
        (new / name).write_text(text)
    old = (folder / "..data").resolve() if (folder / "..data").exists() else None
    (folder / "..data_tmp").symlink_to(new.name)
    (folder / "..data_tmp").rename(folder / "..data")
    for name in files:
        if not (folder / name).is_symlink():
            (folder / name).symlink_to(Path("..data") / name)
    if old is not None:
        for leftover in old.iterdir():
            leftover.unlink()
        old.rmdir()


async def test_a_configmap_volume_update_is_picked_up(tmp_path, start_upstream, start_gateway):
    config = approval_config(tmp_path, await start_upstream(Tool().app()))
    folder = config.policy.path
    for leftover in folder.iterdir():
        leftover.unlink()
    configmap_volume(folder, {"gateway.rego": rego("v1"), "gateway_test.rego": PASSING_TEST}, 1)
    gw = await start_gateway(config=config)
    assert gw.services.policies.served.files == ("gateway.rego",), "hidden folders unread"

    configmap_volume(folder, {"gateway.rego": rego("v2"), "gateway_test.rego": PASSING_TEST}, 2)
    second = read_policy_dir(folder).policy_version
    async with asyncio.timeout(15):
        while gw.services.policies.policy_version != second:
            await asyncio.sleep(0.05)
    assert gw.services.policies.served.trigger == "watch"


async def test_the_served_set_counts_its_test_rules(tmp_path, start_upstream, start_gateway):
    gw, folder = await start(tmp_path, start_upstream, start_gateway)
    (folder / "gateway_test.rego").write_text(
        PASSING_TEST + "\ntest_also_defined if gateway.decision\n\ntest_a_third if true\n"
    )
    status, _ = await reload(gw)
    assert status == 200
    shown = await (await gw.admin.get("/api/v1/policies", headers=OPERATOR)).json()
    assert shown["served"]["tests"] == 3, "three test rules in one file"
