"""A gateway whose approvers sign in through the test's own OpenID provider
(tests/support/oidc.py): the provider, the parking policy and counting tool of
tests/support/approvals.py, and the admin listener on a port chosen before the config is
made, since the provider must know the redirect URI."""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient, TestServer

from gateway.config import ApproversSso
from gateway.serve import build_apps
from gateway.services import SERVICES
from tests.support.approvals import Tool, approval_config
from tests.support.oidc import API_AUDIENCE, CLIENT_ID, CLIENT_SECRET, TestIdp

SESSION_SECRET = "a-test-session-secret-of-at-least-32-chars"
GROUPS = {"payments-approvers": ("finance",), "sre": ("ops", "operator")}


@dataclass
class SsoGateway:
    agent: TestClient
    admin: str  # the admin listener's base URL
    idp: TestIdp
    tool: Tool

    @property
    def services(self) -> Any:
        return self.agent.app[SERVICES]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def sso_config(idp: TestIdp, **overrides: Any) -> ApproversSso:
    fields: dict[str, Any] = {
        "issuer": idp.issuer,
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "groups": GROUPS,
        "session_secret": SESSION_SECRET,
        "audience": API_AUDIENCE,
        **overrides,
    }
    return ApproversSso.model_validate(fields)


async def start_sso_gateway(
    tmp_path: Path,
    start_upstream: Any,
    clients: list[TestClient],
    *,
    idp_down: bool = False,
    **overrides: Any,
) -> SsoGateway:
    """The gateway and its provider (answering 503 while `idp_down`); `clients` collects
    what the test must close."""
    idp = TestIdp(down=idp_down)
    idp.issuer = await start_upstream(idp.app())
    tool = Tool()
    upstream = await start_upstream(tool.app())
    port = free_port()
    admin = f"http://127.0.0.1:{port}"
    idp.redirect_uri = f"{admin}/ui/sso/callback"
    config = approval_config(tmp_path, upstream)
    config = config.model_copy(
        update={"approvers_sso": sso_config(idp, **{"redirect_url": idp.redirect_uri, **overrides})}
    )
    agent_app, admin_app = build_apps(config)
    agent = TestClient(TestServer(agent_app, host="127.0.0.1"))
    admin_client = TestClient(TestServer(admin_app, host="127.0.0.1", port=port))
    await agent.start_server()
    await admin_client.start_server()
    clients.extend([admin_client, agent])
    return SsoGateway(agent, admin, idp, tool)
