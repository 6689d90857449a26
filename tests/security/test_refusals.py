"""Refused calls count against a limit before they cost an audit record each (issue 14,
finding 6; docs/limits.md, Refusals): past `protection.refusals.limit` per window, an agent's (or,
before the agent is known, a client address's) refusals are still answered but written
as one counted `refusals_shed` record per window."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path
from typing import Any

from gateway.config import Config, RefusalLimit
from tests.support.gateway import OTHER_TOKEN, auth, make_config, start_path_recorder


def records(path: Path) -> list[dict[str, Any]]:
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        rows = db.execute("SELECT record FROM audit_log ORDER BY seq").fetchall()
    return [json.loads(row[0]) for row in rows]


def with_refusals(config: Config, limit: int, window_s: float) -> Config:
    protection = config.protection.model_copy(
        update={"refusals": RefusalLimit(limit=limit, window_s=window_s)}
    )
    return config.model_copy(update={"protection": protection})


async def test_a_flood_of_refusals_is_answered_but_recorded_once_per_window(
    tmp_path: Path, start_upstream: Any, start_gateway: Any
) -> None:
    config = with_refusals(
        make_config(tmp_path, (await start_path_recorder(start_upstream))[0]), 20, 60
    )
    gw = await start_gateway(config=config)
    padding = {"X-Padding": "p" * 4000}

    async def refused(i: int, headers: dict[str, str]) -> int:
        resp = await gw.get(f"/tools/echo/{i}", headers={**headers, **padding})
        await resp.read()
        return resp.status

    for batch in range(10):  # `other` lacks the role the policy wants: 403, 500 times
        statuses = await asyncio.gather(
            *(refused(batch * 50 + i, auth(OTHER_TOKEN)) for i in range(50))
        )
        assert statuses == [403] * 50
    statuses = await asyncio.gather(*(refused(i, auth("not-a-token")) for i in range(60)))
    assert statuses == [401] * 60
    for i in range(5):  # another agent's calls are recorded as ever
        assert (await gw.get(f"/tools/echo/ok-{i}", headers=auth())).status == 200
    metrics = await (await gw.admin.get("/metrics")).text()
    assert 'callgate_refusals_shed_total{by="agent"} 480.0' in metrics
    assert 'callgate_refusals_shed_total{by="client"} 40.0' in metrics
    await gw.close()  # the gateway stops: the open windows are summed up

    written = records(config.audit.path)
    decisions = [r for r in written if r["kind"] == "decision"]
    assert len([r for r in decisions if r["agent"] == "other"]) == 20
    assert len([r for r in decisions if r["agent"] is None]) == 20
    assert len([r for r in decisions if r["agent"] == "bot"]) == 5
    assert len([r for r in written if r["kind"] == "outcome" and r["agent"] == "bot"]) == 5
    shed = [r for r in written if r["kind"] == "refusals_shed"]
    by_key = {(r.get("agent"), r.get("client")): r for r in shed}
    assert len(shed) == 2
    agent = by_key[("other", None)]
    assert (agent["count"], agent["codes"], agent["recorded"]) == (
        480,
        {"policy_denied": 480},
        20,
    )
    client = by_key[(None, "127.0.0.1")]
    assert (client["count"], client["codes"]) == (40, {"unauthenticated": 40})
    assert len(written) < 100


async def test_recording_resumes_with_the_next_window(
    tmp_path: Path, start_upstream: Any, start_gateway: Any
) -> None:
    config = with_refusals(
        make_config(tmp_path, (await start_path_recorder(start_upstream))[0]), 3, 0.5
    )
    gw = await start_gateway(config=config)

    async def refuse() -> None:
        resp = await gw.get("/tools/echo/x", headers=auth(OTHER_TOKEN))
        assert resp.status == 403

    for _ in range(10):
        await refuse()
    # The window ends with no refusal after it: its summary is written all the same.
    async with asyncio.timeout(5):
        while not any(r["kind"] == "refusals_shed" for r in records(config.audit.path)):
            await asyncio.sleep(0.1)
    for _ in range(2):
        await refuse()
    await gw.close()
    written = records(config.audit.path)
    assert [r["count"] for r in written if r["kind"] == "refusals_shed"] == [7]
    assert len([r for r in written if r["kind"] == "decision"]) == 3 + 2
