"""A gateway with approvers and a policy that parks POSTs, a counting upstream, the
approvers' API and page as a test drives them, and a webhook receiver."""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from gateway.config import Config, Principal
from tests.support.gateway import auth, make_config, sha
from tests.support.process import Gateway

APPROVAL_REGO = """package gateway

import rego.v1

default decision := {"allow": false, "reason": "not allowed"}

decision := {"allow": true, "reason": "reads are fine"} if input.request.method == "GET"

decision := {
    "allow": true,
    "approval_required": true,
    "reason": "refunds need finance",
    "approval": {"roles": ["finance"]},
    "tags": {"risk": "high"},
} if {
    input.request.method == "POST"
    startswith(input.request.path, "/refunds")
}

decision := {
    "allow": true,
    "approval_required": true,
    "reason": "transfers need two people",
    "approval": {"min_approvals": 2},
} if {
    input.request.method == "POST"
    startswith(input.request.path, "/transfers")
}

decision := {
    "allow": true,
    "approval_required": true,
    "reason": "short-lived",
    "approval": {"ttl_s": 1},
} if {
    input.request.method == "POST"
    startswith(input.request.path, "/quick")
}
"""

CSRF = re.compile(r'name="csrf" value="([^"]+)"')

APPROVERS = {"alice": ["finance"], "bob": ["finance"], "carol": ["ops"], "olga": ["operator"]}


# The approvers above, as a config file lists them.
APPROVER_CONFIG = {
    "approvers": [
        {"id": name, "token_sha256": sha(f"{name}-approver-token"), "roles": roles}
        for name, roles in APPROVERS.items()
    ]
}
# A dead holder's execution lease runs out within a second or two instead of 30 s.
SHORT_LEASE_CONFIG = {**APPROVER_CONFIG, "approvals": {"execution_lease_s": 1}}


def approver_headers(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {name}-approver-token"}


def approval_config(tmp_path: Path, upstream: str, **approvals: Any) -> Config:
    policies = tmp_path / "approval-policies"
    policies.mkdir(exist_ok=True)
    (policies / "gateway.rego").write_text(APPROVAL_REGO)
    config = make_config(tmp_path, upstream, policy_dir=policies)
    approvers = tuple(
        Principal(id=name, token_sha256=sha(f"{name}-approver-token"), roles=tuple(roles))
        for name, roles in APPROVERS.items()
    )
    return config.model_copy(
        update={
            "approvers": approvers,
            "approvals": config.approvals.model_copy(update=approvals),
        }
    )


async def log_in(admin: Any, token: str = "alice-approver-token") -> Any:
    """Log in to the approvers' page through its form, as a browser would."""
    form = await admin.get("/ui/login")
    match = CSRF.search(await form.text())
    assert match is not None
    return await admin.post(
        "/ui/login", data={"csrf": match.group(1), "token": token}, allow_redirects=False
    )


class Tool:
    """An upstream that counts the calls it gets and answers 201 with what it got."""

    def __init__(self, delay_s: float = 0) -> None:
        self.calls: list[tuple[str, str, bytes]] = []
        self.delay_s = delay_s
        self.reached = asyncio.Event()

    def app(self) -> web.Application:
        async def handler(request: web.Request) -> web.Response:
            body = await request.read()
            self.calls.append((request.method, request.path_qs, body))
            self.reached.set()
            if self.delay_s:
                await asyncio.sleep(self.delay_s)
            return web.json_response(
                {"done": len(self.calls), "got": body.decode(errors="replace")},
                status=201,
                headers={"X-Tool": "refunds"},
            )

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handler)
        return app


async def state_becomes(
    session: aiohttp.ClientSession, admin: str, action_id: str, wanted: str, timeout_s: float
) -> dict[str, Any]:
    """The action once an approver sees it `wanted`, or as last seen after `timeout_s`."""
    action: dict[str, Any] = {}
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout_s):
            while action.get("state") != wanted:
                async with session.get(
                    f"{admin}/api/v1/actions/{action_id}", headers=approver_headers("bob")
                ) as resp:
                    action = await resp.json()
                await asyncio.sleep(0.1)
    return action


async def killed_while_executing(gateway: Gateway, tool: Tool, session: Any) -> str:
    """Park a call, approve it, and SIGKILL the gateway process while the tool works on
    it: the action's id. The action is left `executing` in the store."""
    async with session.post(
        f"{gateway.url}/tools/echo/refunds", headers=auth(), json={"amount": 5}
    ) as resp:
        assert resp.status == 202
        action_id: str = (await resp.json())["action_id"]
    approving = asyncio.create_task(
        session.post(
            f"http://127.0.0.1:{gateway.admin_port}/api/v1/actions/{action_id}/approve",
            headers=approver_headers("alice"),
            json={"comment": "go"},
        )
    )
    async with asyncio.timeout(10):
        await tool.reached.wait()
    assert await gateway.stop(signal.SIGKILL) == -signal.SIGKILL
    with contextlib.suppress(aiohttp.ClientError):  # it died with the gateway
        await approving
    return action_id


async def pending_action(gw: Any) -> dict[str, Any]:
    async with asyncio.timeout(10):
        while True:
            resp = await gw.admin.get(
                "/api/v1/actions?status=pending", headers=approver_headers("alice")
            )
            actions = (await resp.json())["actions"]
            if actions:
                return actions[0]
            await asyncio.sleep(0.05)


async def decide(gw: Any, action_id: str, verdict: str = "approve") -> None:
    resp = await gw.admin.post(
        f"/api/v1/actions/{action_id}/{verdict}",
        headers=approver_headers("alice"),
        json={"comment": "checked the ticket"},
    )
    assert resp.status == 200, await resp.text()


async def ended(gw: Any, action_id: str) -> dict[str, Any]:
    async with asyncio.timeout(10):
        while True:
            resp = await gw.admin.get(
                f"/api/v1/actions/{action_id}", headers=approver_headers("alice")
            )
            action = await resp.json()
            if action["state"] in ("succeeded", "failed", "denied", "expired"):
                return action
            await asyncio.sleep(0.05)


class Receiver:
    """A webhook receiver that fails the first `failures` deliveries with 503."""

    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.deliveries: list[tuple[dict[str, str], bytes]] = []
        self.taken = asyncio.Event()

    def app(self) -> web.Application:
        async def hook(request: web.Request) -> web.Response:
            self.deliveries.append((dict(request.headers), await request.read()))
            if len(self.deliveries) <= self.failures:
                return web.Response(status=503)
            self.taken.set()
            return web.Response(text="ok")

        app = web.Application()
        app.router.add_post("/hook", hook)
        return app
