"""Issue 14, finding 10: who is executing an action is decided by a lease (a holder id
per gateway process and an expiry it renews while the call runs), never by a PID that an
unrelated process may have taken over. See docs/approvals.md."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import sqlite3
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from gateway.approvals import execution, recovery
from gateway.audit.events import iso
from gateway.serve import build_apps
from gateway.services import SERVICES, Services
from gateway.store.actions import ActionStore
from tests.support.approvals import (
    APPROVAL_REGO,
    SHORT_LEASE_CONFIG,
    Tool,
    approval_config,
    approver_headers,
    killed_while_executing,
    state_becomes,
)
from tests.support.gateway import auth
from tests.support.process import Gateway


def _pose_as_a_live_process(database: Path, action_id: str) -> None:
    """What the old code checked: an executor on this host whose PID is alive. This test
    process is alive and unrelated, as a PID reused after the gateway died would be."""
    db = sqlite3.connect(database, isolation_level=None)
    try:
        (document,) = db.execute(
            "SELECT document FROM actions WHERE id = ?", (action_id,)
        ).fetchone()
        stored = json.loads(document)
        assert stored["state"] == "executing"
        stored["executor"] = {"host": socket.gethostname(), "pid": os.getpid(), "started": 0.0}
        db.execute("UPDATE actions SET document = ? WHERE id = ?", (json.dumps(stored), action_id))
    finally:
        db.close()


async def test_a_killed_holder_whose_pid_looks_alive_ends_outcome_unknown_when_its_lease_runs_out(
    tmp_path: Path, start_upstream: Any
) -> None:
    tool = Tool(delay_s=3)  # the kill lands while the tool works
    url = await start_upstream(tool.app())
    gateway = Gateway(tmp_path, url, rego=APPROVAL_REGO, extra=SHORT_LEASE_CONFIG)
    await gateway.start()
    admin = f"http://127.0.0.1:{gateway.admin_port}"
    async with aiohttp.ClientSession() as session:
        action_id = await killed_while_executing(gateway, tool, session)
        _pose_as_a_live_process(tmp_path / "callgate-data" / "callgate.db", action_id)

        await gateway.start()
        try:
            action = await state_becomes(session, admin, action_id, "outcome_unknown", 8)
            assert action["state"] == "outcome_unknown"
            await asyncio.sleep(0.5)  # time a wrong re-send would need to arrive
        finally:
            assert await gateway.stop() == 0
    assert len(tool.calls) == 1


async def test_a_live_holders_lease_is_renewed_and_never_taken(
    tmp_path: Path, start_upstream: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    tool = Tool(delay_s=1.5)  # several leases long, within the tool's timeout
    config = approval_config(tmp_path, await start_upstream(tool.app()), execution_lease_s=0.3)
    clients: list[TestClient] = []

    async def worker() -> tuple[TestClient, TestClient, Services]:
        agent_app, admin_app = build_apps(config)
        agent = TestClient(TestServer(agent_app, host="127.0.0.1"))
        admin = TestClient(TestServer(admin_app, host="127.0.0.1"))
        await agent.start_server()
        await admin.start_server()
        clients.extend([admin, agent])
        return agent, admin, agent_app[SERVICES]

    try:
        agent, admin, _ = await worker()
        resp = await agent.post("/tools/echo/refunds", headers=auth(), json={})
        action_id = (await resp.json())["action_id"]
        approving = asyncio.create_task(
            admin.post(
                f"/api/v1/actions/{action_id}/approve", headers=approver_headers("bob"), json={}
            )
        )
        async with asyncio.timeout(5):
            await tool.reached.wait()
        _, _, second = await worker()  # another gateway on the store, sweeping as it starts
        leases = []
        for _ in range(3):
            await asyncio.sleep(0.25)
            await recovery.sweep_dead_executions(second)
            running = await second.actions.get(action_id)
            assert running is not None and running.state == "executing"
            assert running.lease_until is not None and running.lease_until > time.time()
            leases.append(running.lease_until)
        assert leases == sorted(leases) and leases[0] < leases[-1]  # renewed as it runs
        final = await (await approving).json()
        assert final["state"] == "succeeded"
        assert final["executor"]["instance"] == execution.INSTANCE
        assert len(tool.calls) == 1
    finally:
        for client in clients:
            await client.close()


def _document(action_id: str, state: str) -> dict[str, Any]:
    return {
        "id": action_id,
        "state": state,
        "agent": "bot",
        "tool": "echo",
        "request_id": f"request-{action_id}",
        "created_at": "2026-01-01T00:00:00.000000Z",
        "expires_at": "2026-01-01T01:00:00.000000Z",
    }


async def test_approved_to_executing_is_won_by_one_writer_and_only_a_lapsed_lease_is_taken(
    store_url: str,
) -> None:
    store = ActionStore(store_url)
    other = ActionStore(store_url)  # a second gateway on the same store
    await store.open()
    await other.open()
    try:
        await store.insert(_document("a1", "approved"), b"{}", None)
        read = await store.get("a1")
        assert read is not None
        executing = {**read.document, "state": "executing"}
        later = time.time() + 60
        claims = await asyncio.gather(
            store.claim(read, executing, "holder-1", later),
            other.claim(read, executing, "holder-2", later),
        )
        assert sum(claim is not None for claim in claims) == 1
        claimed = next(claim for claim in claims if claim is not None)
        holder = "holder-1" if claims[0] is not None else "holder-2"
        assert await store.claim(claimed, executing, "holder-3", later) is None  # not approved

        unknown = {**executing, "state": "outcome_unknown"}
        assert [a.id for a in await other.lapsed(time.time())] == []
        assert await other.end_lapsed(claimed, unknown, time.time()) is None  # live: kept
        assert not await other.renew(claimed, "someone-else", later + 60)
        assert await store.renew(claimed, holder, time.time() + 0.05)
        await asyncio.sleep(0.1)
        (lapsed,) = await other.lapsed(time.time())
        assert await other.end_lapsed(lapsed, unknown, time.time()) is not None
        assert not await store.renew(claimed, holder, later)  # the holder cannot take it back
        ended = await store.get("a1")
        assert ended is not None and ended.state == "outcome_unknown"
        assert ended.lease_until is None
    finally:
        await store.close()
        await other.close()


# The actions table as the release before leases created it.
_SCHEMA_BEFORE_LEASES = """
CREATE TABLE actions (
    id              TEXT PRIMARY KEY,
    state           TEXT NOT NULL,
    agent           TEXT NOT NULL,
    tool            TEXT NOT NULL,
    idempotency_key TEXT,
    created_at      TEXT NOT NULL,
    expires_at      TEXT NOT NULL,
    version         INTEGER NOT NULL,
    document        TEXT NOT NULL,
    result          TEXT,
    body            BLOB NOT NULL
);
CREATE UNIQUE INDEX actions_idempotency
    ON actions (agent, tool, idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE INDEX actions_state ON actions (state, expires_at);
"""


async def test_a_store_from_before_leases_opens_and_its_executions_lapse_by_age(
    tmp_path: Path, start_upstream: Any, start_gateway: Any
) -> None:
    config = approval_config(tmp_path, await start_upstream(Tool().app()))
    database = config.storage.path
    database.parent.mkdir(parents=True, exist_ok=True)
    started = {"old": "2026-01-01T00:00:00.000000Z", "recent": iso(time.time())}
    with contextlib.closing(sqlite3.connect(database, isolation_level=None)) as db:
        db.executescript(_SCHEMA_BEFORE_LEASES)
        for name, since in started.items():
            document = {
                **_document(name, "executing"),
                "executing_since": since,
                "executor": {"host": socket.gethostname(), "pid": os.getpid(), "started": 0.0},
            }
            db.execute(
                "INSERT INTO actions (id, state, agent, tool, created_at, expires_at, version, "
                "document, body) VALUES (?, 'executing', 'bot', 'echo', ?, ?, 3, ?, x'')",
                (name, document["created_at"], document["expires_at"], json.dumps(document)),
            )
    gw = await start_gateway(config=config)  # opening it sweeps
    svc: Services = gw.services
    old, recent = await svc.actions.get("old"), await svc.actions.get("recent")
    assert old is not None and old.state == "outcome_unknown"
    # Another gateway of the earlier release may still be running it: left alone for now.
    assert recent is not None and recent.state == "executing"
    with contextlib.closing(sqlite3.connect(database)) as db:
        columns = {row[1] for row in db.execute("PRAGMA table_info(actions)")}
    assert {"lease_holder", "lease_until"} <= columns
