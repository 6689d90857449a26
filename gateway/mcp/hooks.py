"""How the pipeline treats a call to an MCP server (docs/mcp.md): the stages
ask these hooks where MCP differs from plain HTTP (gateway/pipeline/hooks.py)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, MutableMapping
from typing import Any

import aiohttp
from aiohttp import web

from gateway import answer_guard, inbound
from gateway.approvals import responses
from gateway.call import Call
from gateway.errors import ErrorCode, GatewayError, render
from gateway.mcp import approvals, pins, sessions, tools_list
from gateway.mcp.messages import REQUEST, read_message
from gateway.mcp.refusals import refusal
from gateway.policy.decision import Decision
from gateway.services import Services

log = logging.getLogger(__name__)


class Mcp:
    def below_tool(self, call: Call, raw_below: str) -> str:
        assert call.tool is not None
        if raw_below not in ("", "/"):
            name = call.tool.name
            raise GatewayError(
                ErrorCode.BAD_REQUEST,
                f"'{name}' is an MCP server: its one endpoint is /tools/{name}",
            )
        return ""  # the endpoint is the upstream URL itself (`/mcp`, not `/mcp/`)

    def describe(self, call: Call, body: Any) -> None:
        assert call.agent is not None
        request = call.request
        call.mcp = read_message(request.method, body, call.body, request.headers)
        call.headers = sessions.unwrapped(call.agent, call.headers)

    async def vet(self, call: Call, svc: Services) -> None:
        await pins.vet_call(call, svc)

    def policy_input(self, call: Call) -> dict[str, Any] | None:
        return call.mcp.as_input() if call.mcp is not None else None

    def undecided(self, call: Call, policy_version: str) -> Decision | None:
        if call.mcp is None or call.mcp.decided:
            return None
        # Notifications and responses to the server's requests are not tool calls.
        return Decision(True, "MCP notifications and responses pass", policy_version)

    def loop_counted(self, call: Call) -> bool:
        """Protocol traffic (ping, lists, notifications, the event stream) repeats by
        design, and so does the repeat of a parked tools/call, which is how its agent gets
        the outcome: the loop breaker counts the other tool calls."""
        assert call.decision is not None
        if call.mcp is None:
            return True
        return call.mcp.method == "tools/call" and not call.decision.approval_required

    async def held(self, call: Call, svc: Services, wait_s: float) -> web.StreamResponse:
        if call.mcp is not None and call.mcp.method == "tools/call":
            return await approvals.run(call, svc, wait_s)
        return await responses.held(call, svc, wait_s)

    async def refusal(self, call: Call, error: GatewayError, svc: Services) -> web.Response:
        """In the MCP form the model reads. A call refused before its body was read has it
        read now, for the JSON-RPC id; not when shedding load, which must stay cheap."""
        shedding = error.code == ErrorCode.TOOL_BUSY
        if not call.body_read and call.request.method == "POST" and not shedding:
            try:
                self.describe(call, await inbound.read(call, svc.config.protection.max_json_depth))
            except GatewayError:
                pass  # unreadable: the refusal answers without an id
            except Exception:
                log.exception("unreadable refused call", extra={"request_id": call.request_id})
        answered = refusal(call.mcp, error, call.request_id)
        return answered if answered is not None else render(error, call.request_id)

    def kept_open(self, call: Call) -> bool:
        """An event stream the server keeps open for its notifications, perhaps for hours."""
        message = call.mcp
        return message is not None and (
            message.kind == "stream" or message.method == "subscriptions/listen"
        )

    def outbound_headers(self, call: Call, headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
        # Tool lists are filtered in JSON answers and in every event stream: readable.
        return [(n, v) for n, v in headers if n.lower() != "accept-encoding"]

    async def answer(
        self,
        call: Call,
        svc: Services,
        upstream: aiohttp.ClientResponse,
        headers: MutableMapping[str, str],
        body: AsyncIterator[bytes],
    ) -> AsyncIterator[bytes] | None:
        assert call.tool is not None
        if sessions.HEADER in headers:
            assert call.agent is not None  # the session is this agent's alone
            headers[sessions.HEADER] = sessions.for_agent(call.agent, headers[sessions.HEADER])
        rewrite = tools_list.rewriter(call, upstream.status, upstream.content_type)
        if rewrite is None:
            if self._json_result(call, upstream):
                # Read whole (up to the cap) before the answer starts: one too large is
                # then the refusal a model reads, never a cut connection.
                return await answer_guard.whole(body, call.tool)
            return None
        if "Content-Encoding" in headers:
            raise GatewayError(
                ErrorCode.UPSTREAM_UNREACHABLE,
                "the tool answered tools/list in a content encoding the gateway cannot "
                "filter; nothing is listed",
            )
        capped = answer_guard.capped(body, call.tool)
        chunks = await rewrite(capped, call, svc)  # the list, filtered
        if call.mcp is not None and call.mcp.method == "tools/list":
            tools_list.cache_privately(headers)  # a list for this agent alone
        return chunks

    @staticmethod
    def _json_result(call: Call, upstream: aiohttp.ClientResponse) -> bool:
        """A JSON answer to a request, of a length not known beforehand."""
        return (
            call.mcp is not None
            and call.mcp.kind == REQUEST
            and upstream.content_length is None
            and upstream.content_type == "application/json"
        )

    def watches_agent(self, call: Call, content_type: str) -> bool:
        return content_type == "text/event-stream"

    def count(self, call: Call, svc: Services, tool: str, outcome: str) -> None:
        if call.mcp is not None:
            svc.metrics.mcp_requests.labels(tool, call.mcp.metric_method, outcome).inc()


MCP = Mcp()
