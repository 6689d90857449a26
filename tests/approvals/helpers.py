"""A gateway with approvers and a policy that parks POSTs, and a counting upstream."""

from __future__ import annotations

import asyncio
import contextlib
import re
import sys
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from gateway.config import Config, Principal
from tests.conftest import make_config, sha
from tests.gateway_process import Gateway, wait_until_up

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


# `callgate serve` with the execution lease set to argv[1] seconds, so that a test sees a
# dead holder's lease run out within a second or two instead of the default.
_SERVE_WITH_LEASE = (
    "import sys\n"
    "from gateway.approvals import lifecycle\n"
    "lifecycle.EXECUTION_LEASE_S = float(sys.argv[1])\n"
    "from gateway.cli import main\n"
    "main(['serve', *sys.argv[2:]], prog_name='callgate')\n"
)


class ShortLeaseGateway(Gateway):
    """A real gateway process whose execution leases last `lease_s`."""

    def __init__(self, *args: Any, lease_s: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lease_s = lease_s

    async def start(self, *, log_to_file: bool = True) -> None:
        output = self.log.open("ab") if log_to_file else None
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            _SERVE_WITH_LEASE,
            str(self.lease_s),
            "--config",
            str(self.config),
            stdout=output or asyncio.subprocess.DEVNULL,
            stderr=output or asyncio.subprocess.DEVNULL,
        )
        if output:
            output.close()
        proc = self.proc
        await wait_until_up(
            f"http://127.0.0.1:{self.admin_port}/readyz",
            lambda: None if proc.returncode is None else self.log.read_text(errors="replace"),
        )


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
