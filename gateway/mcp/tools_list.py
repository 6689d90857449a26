"""`tools/list` filtered per agent: a tool is listed only if the policy would not deny
this agent a call to it.

For each listed tool the policy is asked with the call's input and
`input.mcp = {"method": "tools/list", "tool": <name>, ...}`; an `allow` (approval
required or not) keeps the tool, a deny or an engine failure drops it. The answer may come
as one JSON document or as an SSE stream: only the event holding this request's result is
rewritten, every other event (progress, logs) passes as the server sent it, when it came.
A filtered list is this agent's own, so it is never left publicly cacheable.

What cannot be checked never reaches the agent. A JSON tools/list answer that cannot be
read (not JSON, over 16 MiB, nested deeper than `protection.max_json_depth`) is a clean
`upstream_unreachable` refusal before the answer starts. In an event stream, an event too
deep to read ends a stream that answers a request with that refusal as its last event; any
other unreadable event (and any on the GET stream, which answers no request) cuts it.
"""

from __future__ import annotations

import copy
import json
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Any

from gateway.answer_guard import TooLarge
from gateway.call import Call
from gateway.errors import ErrorCode, GatewayError
from gateway.json_bounds import TooDeep, dumps, loads
from gateway.mcp import pins, sse
from gateway.mcp.messages import REQUEST
from gateway.mcp.refusals import answer_document
from gateway.policy.errors import PolicyError
from gateway.services import Services

MAX_JSON_BYTES = 16 * 1024 * 1024  # a JSON answer is read whole to be filtered

# Awaited before the agent's answer starts; what it returns is streamed to the agent.
Rewrite = Callable[[AsyncIterator[bytes], Call, Services], Awaitable[AsyncIterator[bytes]]]


def rewriter(call: Call, status: int, content_type: str) -> Rewrite | None:
    """How to filter this answer: a JSON answer to a tools/list request, and every event
    stream of an MCP tool (a GET stream may replay a tools/list result, after
    Last-Event-ID, under the id of another request). A tools/list answer in any other
    content type is read as JSON too: what cannot be read is cut, never passed unfiltered."""
    message = call.mcp
    if message is None or not 200 <= status < 300:
        return None
    if content_type == "text/event-stream":
        return filtered_sse
    if message.method == "tools/list":
        return filtered_json
    return None


def cache_privately(headers: MutableMapping[str, str]) -> None:
    """`Cache-Control: public` (or `s-maxage`) becomes `private`, the other directives
    kept: a filtered list is for one agent, and no shared cache may hand it to another.
    (Without those, a shared cache does not store an answer to a request that carried
    Authorization.)"""
    value = headers.get("Cache-Control")
    if value is None:
        return
    directives = [d.strip() for d in value.split(",") if d.strip()]

    def shared(directive: str) -> bool:
        return directive.lower() == "public" or directive.lower().startswith("s-maxage")

    if any(shared(d) for d in directives):
        kept = [d for d in directives if not shared(d) and d.lower() != "private"]
        headers["Cache-Control"] = ", ".join(["private", *kept])


async def _listed(call: Call, svc: Services, tool: Any) -> bool:
    if not isinstance(tool, dict) or not isinstance(tool.get("name"), str):
        return False
    assert call.input is not None and call.mcp is not None
    probe = copy.copy(call.input)
    probe["mcp"] = {
        **call.mcp.as_input(),
        "method": "tools/list",
        "tool": tool["name"],
        "arguments": None,
    }
    try:
        return (await svc.policies.decide(probe)).allow
    except PolicyError:
        return False


async def filter_message(message: Any, call: Call, svc: Services) -> Any:
    """A JSON-RPC response holding a tool list, with the list filtered; anything else as
    it is. Any response with `result.tools` is filtered, whatever its id."""
    if not isinstance(message, dict):
        return message
    result = message.get("result")
    if not isinstance(result, dict) or not isinstance(result.get("tools"), list):
        return message
    shown = await pins.listed(call, svc, result["tools"])  # a changed definition is held
    kept = [tool for tool in shown if await _listed(call, svc, tool)]
    result = {**result, "tools": kept}
    if result.get("cacheScope") == "public":
        result["cacheScope"] = "private"
    return {**message, "result": result}


def _too_deep(what: str, limit: int, then: str) -> GatewayError:
    return GatewayError(
        ErrorCode.UPSTREAM_UNREACHABLE,
        f"{what} is nested deeper than {limit} arrays or objects "
        f"(protection.max_json_depth), more than the gateway reads to check it; {then}",
    )


async def filtered_json(
    chunks: AsyncIterator[bytes], call: Call, svc: Services
) -> AsyncIterator[bytes]:
    """The list read whole and filtered before the agent's answer starts, so one that
    cannot be read is a clean 502 rather than a broken body."""
    limit = svc.config.protection.max_json_depth
    body = bytearray()
    try:
        async for chunk in chunks:
            body += chunk
            if len(body) > MAX_JSON_BYTES:
                raise ValueError("over 16 MiB")
        message = loads(bytes(body), limit)
        filtered = dumps(await filter_message(message, call, svc))
    except TooDeep:
        raise _too_deep("the tool's tools/list answer", limit, "nothing is listed") from None
    except ValueError:  # not JSON, not UTF-8, too large
        raise GatewayError(
            ErrorCode.UPSTREAM_UNREACHABLE,
            "the tool's tools/list answer is not a JSON-RPC message of at most 16 MiB the "
            "gateway can filter; nothing is listed",
        ) from None
    return _one(filtered.encode())


async def _one(chunk: bytes) -> AsyncIterator[bytes]:
    yield chunk


async def filtered_sse(
    chunks: AsyncIterator[bytes], call: Call, svc: Services
) -> AsyncIterator[bytes]:
    return _filtered_events(chunks, call, svc)


async def _filtered_events(
    chunks: AsyncIterator[bytes], call: Call, svc: Services
) -> AsyncIterator[bytes]:
    """Events pass as they come, byte for byte, but a tool list, rewritten. An event whose
    data is not JSON cuts the stream: it cannot be checked, so it is not passed. One too
    deep to read, or the tool's max_response_bytes passed, ends a stream answering a
    request with a refusal as its last event (only whole events before it are passed)."""
    pending = b""
    try:
        async for chunk in chunks:
            pending += chunk
            while (end := sse.next_event_end(pending)) >= 0:
                event, pending = pending[:end], pending[end:]
                yield await _rewritten(event, call, svc)
        if pending.strip():
            yield await _rewritten(pending, call, svc)
    except TooDeep:
        limit = svc.config.protection.max_json_depth
        then = "the rest of the answer was not passed on"
        last = _refusal_event(call, _too_deep("an event of the tool's answer", limit, then))
        if last is None:
            raise  # the GET stream: cut
        yield last
    except TooLarge as too_large:
        last = _refusal_event(call, too_large)
        if last is None:
            raise  # the GET stream: cut
        call.answer_cut = too_large.code.value
        yield last


def _refusal_event(call: Call, error: GatewayError) -> bytes | None:
    """The refusal of the stream's request as an event; None when it answers none."""
    message = call.mcp
    if message is None or message.kind != REQUEST:
        return None
    answer = answer_document(message, error, call.request_id)
    if answer is None:
        return None
    return f"event: message\ndata: {json.dumps(answer[1], ensure_ascii=False)}\n\n".encode()


async def _rewritten(event: bytes, call: Call, svc: Services) -> bytes:
    limit = svc.config.protection.max_json_depth
    text = event.decode("utf-8")  # not UTF-8: cut (UnicodeDecodeError)
    data = sse.data(text)
    if not data or not data.strip():
        return event  # comments (keep-alives), priming events with no data
    message = loads(data, limit)  # not JSON: cut (ValueError); too deep: TooDeep
    changed = await filter_message(message, call, svc)
    if changed is message:
        return event
    others = [line for line in sse.lines(text) if line and not line.startswith("data:")]
    rewritten = "\n".join([*others, "data: " + dumps(changed)])
    return (rewritten + "\n\n").encode()
