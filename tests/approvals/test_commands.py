"""`callgate approvals …` as a real process against a real gateway's admin listener."""

from __future__ import annotations

import json
from typing import Any

from tests.support.approvals import Tool, approval_config
from tests.support.gateway import AGENT_TOKEN, auth
from tests.support.process import approver_cli, free_port


async def callgate(*args: str, token: str | None = "alice-approver-token") -> tuple[int, str, str]:
    return await approver_cli("approvals", *args, token=token)


async def gateway_with_two_actions(tmp_path: Any, start_upstream: Any, start_gateway: Any):
    tool = Tool()
    url = await start_upstream(tool.app())
    gw = await start_gateway(config=approval_config(tmp_path, url))
    ids = []
    for path in ("/refunds", "/transfers"):
        resp = await gw.post(f"/tools/echo{path}", headers=auth(), json={"amount": 5})
        ids.append((await resp.json())["action_id"])
    admin = str(gw.admin.make_url("")).rstrip("/")
    return gw, tool, admin, ids


async def test_list_show_approve_and_deny(tmp_path, start_upstream, start_gateway):
    _gw, tool, admin, (refund, transfer) = await gateway_with_two_actions(
        tmp_path, start_upstream, start_gateway
    )
    code, out, _ = await callgate("list", "--url", admin)
    assert code == 0
    lines = out.splitlines()
    assert [line.split()[0] for line in lines] == [transfer, refund]
    assert "bot -> echo POST /refunds" in lines[1]
    assert "refunds need finance" in lines[1]

    code, out, _ = await callgate("list", "--url", admin, "--json", "--tool", "echo")
    assert [a["id"] for a in json.loads(out)["actions"]] == [transfer, refund]

    code, out, _ = await callgate("show", refund, "--url", admin)
    shown = json.loads(out)
    assert (code, shown["id"], shown["request"]["body"]) == (0, refund, {"amount": 5})

    code, out, _ = await callgate("approve", refund, "-m", "fine", "--url", admin)
    assert (code, out) == (0, f"{refund}: succeeded (the tool answered 201)\n")
    assert len(tool.calls) == 1

    code, out, _ = await callgate("deny", transfer, "-m", "no", "--url", admin)
    assert (code, out) == (0, f"{transfer}: denied\n")
    code, out, err = await callgate("list", "--url", admin)
    assert (code, out, err) == (0, "", "no actions\n")
    code, out, _ = await callgate("list", "--url", admin, "--status", "denied")
    assert out.split()[0] == transfer


async def test_errors_are_one_line_with_an_exit_code(tmp_path, start_upstream, start_gateway):
    _gw, tool, admin, (refund, _transfer) = await gateway_with_two_actions(
        tmp_path, start_upstream, start_gateway
    )
    code, _, err = await callgate("approve", refund, "--url", admin, token=AGENT_TOKEN)
    assert code == 1
    assert err.startswith("error: 401 ")
    code, _, err = await callgate("approve", refund, "--url", admin, token="carol-approver-token")
    assert code == 1
    assert err.startswith("error: 403 ") and "finance" in err
    code, _, err = await callgate("show", "nope", "--url", admin)
    assert (code, err.startswith("error: 404 ")) == (1, True)
    code, _, err = await callgate("list", "--url", f"http://127.0.0.1:{free_port()}")
    assert code == 2 and err.startswith("cannot reach ")
    code, _, err = await callgate("list", "--url", admin, token=None)
    assert code == 2 and "Missing option '--token'" in err
    assert tool.calls == []
