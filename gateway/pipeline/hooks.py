"""What differs between the protocols a tool speaks: plain HTTP here, MCP in
gateway/mcp/hooks.py. Stages ask `of(call)` instead of branching on the protocol.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, MutableMapping
from typing import Any, Protocol

import aiohttp
from aiohttp import web

from gateway.approvals import responses
from gateway.call import Call
from gateway.errors import GatewayError, render
from gateway.mcp.hooks import MCP
from gateway.policy.decision import Decision
from gateway.services import Services


class Hooks(Protocol):
    def below_tool(self, call: Call, raw_below: str) -> str:
        """The raw path below the tool that is sent to it (route); GatewayError if none."""

    def describe(self, call: Call, body: Any) -> None:
        """Read the protocol's message from the parsed body (describe)."""

    async def vet(self, call: Call, svc: Services) -> None:
        """Refuse a message the protocol forbids once read (describe): a tools/call of an
        MCP tool whose definition changed and awaits review."""

    def policy_input(self, call: Call) -> dict[str, Any] | None:
        """`input.mcp` of the policy input."""

    def undecided(self, call: Call, policy_version: str) -> Decision | None:
        """The decision for a message the policy does not decide; None for the others."""

    def loop_counted(self, call: Call) -> bool:
        """Whether the loop breaker counts this call."""

    async def held(self, call: Call, svc: Services, wait_s: float) -> web.StreamResponse:
        """Park a call that needs approval and answer it: held up to `wait_s`."""

    async def refusal(self, call: Call, error: GatewayError, svc: Services) -> web.Response:
        """The answer to a refused call."""

    def kept_open(self, call: Call) -> bool:
        """An answer that may stream for hours: no deadline, no read timeout."""

    def outbound_headers(self, call: Call, headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
        """The headers sent to the tool."""

    async def answer(
        self,
        call: Call,
        svc: Services,
        upstream: aiohttp.ClientResponse,
        headers: MutableMapping[str, str],
        body: AsyncIterator[bytes],
    ) -> AsyncIterator[bytes] | None:
        """Adjust the answer's `headers`; the body to stream if it is rewritten (from
        `body`, the upstream's scrubbed), else None."""

    def watches_agent(self, call: Call, content_type: str) -> bool:
        """Whether a quiet answer must look for an agent that left (forward)."""

    def count(self, call: Call, svc: Services, tool: str, outcome: str) -> None:
        """The protocol's own metrics of a call that ended."""


class Http:
    def below_tool(self, call: Call, raw_below: str) -> str:
        return raw_below

    def describe(self, call: Call, body: Any) -> None:
        return None

    async def vet(self, call: Call, svc: Services) -> None:
        return None

    def policy_input(self, call: Call) -> dict[str, Any] | None:
        return None

    def undecided(self, call: Call, policy_version: str) -> Decision | None:
        return None

    def loop_counted(self, call: Call) -> bool:
        return True

    async def held(self, call: Call, svc: Services, wait_s: float) -> web.StreamResponse:
        return await responses.held(call, svc, wait_s)

    async def refusal(self, call: Call, error: GatewayError, svc: Services) -> web.Response:
        return render(error, call.request_id)

    def kept_open(self, call: Call) -> bool:
        return False

    def outbound_headers(self, call: Call, headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
        return headers

    async def answer(
        self,
        call: Call,
        svc: Services,
        upstream: aiohttp.ClientResponse,
        headers: MutableMapping[str, str],
        body: AsyncIterator[bytes],
    ) -> AsyncIterator[bytes] | None:
        return None

    def watches_agent(self, call: Call, content_type: str) -> bool:
        return False

    def count(self, call: Call, svc: Services, tool: str, outcome: str) -> None:
        return None


HTTP = Http()
_BY_KIND: dict[str, Hooks] = {"http": HTTP, "mcp": MCP}


def of(call: Call) -> Hooks:
    """The hooks of the call's tool; plain HTTP before the tool is known."""
    return HTTP if call.tool is None else _BY_KIND[call.tool.kind]
