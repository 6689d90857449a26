"""A gateway killed while it executes an approved action: after the restart the action is
`outcome_unknown` once the dead gateway's lease runs out, shown to approvers, and the tool
was called at most once."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp

from tests.support.approvals import (
    APPROVAL_REGO,
    SHORT_LEASE_CONFIG,
    Tool,
    approver_headers,
    killed_while_executing,
    state_becomes,
)
from tests.support.gateway import auth
from tests.support.process import Gateway


async def test_killed_while_executing_becomes_outcome_unknown_and_is_never_resent(
    tmp_path: Path, start_upstream
) -> None:
    tool = Tool(delay_s=3)  # the tool is slow: the kill lands while it works
    url = await start_upstream(tool.app())
    gateway = Gateway(tmp_path, url, rego=APPROVAL_REGO, extra=SHORT_LEASE_CONFIG)
    await gateway.start()
    admin = f"http://127.0.0.1:{gateway.admin_port}"
    async with aiohttp.ClientSession() as session:
        action_id = await killed_while_executing(gateway, tool, session)

        await gateway.start()
        try:
            # once the dead gateway's lease on the execution has run out
            action = await state_becomes(session, admin, action_id, "outcome_unknown", 8)
            assert action["state"] == "outcome_unknown"
            async with session.get(
                f"{admin}/api/v1/actions?status=outcome_unknown",
                headers=approver_headers("bob"),
            ) as resp:
                assert [a["id"] for a in (await resp.json())["actions"]] == [action_id]
            async with session.post(
                f"{admin}/api/v1/actions/{action_id}/approve",
                headers=approver_headers("bob"),
                json={},
            ) as resp:
                assert resp.status == 409
            async with session.get(f"{gateway.url}/actions/{action_id}", headers=auth()) as resp:
                assert (await resp.json())["state"] == "outcome_unknown"
            await asyncio.sleep(0.5)  # time a wrong re-send would need to arrive
        finally:
            assert await gateway.stop() == 0
    assert len(tool.calls) == 1
