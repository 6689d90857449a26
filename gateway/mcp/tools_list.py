"""`tools/list` filtered per agent: a tool is listed only if the policy would not deny
this agent a call to it.

For each listed tool the policy is asked with the call's input and
`input.mcp = {"method": "tools/list", "tool": <name>, ...}`; an `allow` (approval
required or not) keeps the tool, a deny or an engine failure drops it. The answer may come
as one JSON document or as an SSE stream: only the event holding this request's result is
rewritten, every other event (progress, logs) passes as the server sent it, when it came.
A filtered list is this agent's own, so it is never left publicly cacheable.
"""

from __future__ import annotations

import copy
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

from gateway.mcp.messages import REQUEST
from gateway.pipeline.call import Call
from gateway.policy.engine import PolicyError
from gateway.services import Services

MAX_JSON_BYTES = 16 * 1024 * 1024  # a JSON answer is read whole to be filtered

Rewrite = Callable[[AsyncIterator[bytes], Call, Services], AsyncIterator[bytes]]


def rewriter(call: Call, status: int, content_type: str) -> Rewrite | None:
    """How to filter this answer, if it is the answer to a tools/list request."""
    message = call.mcp
    if message is None or message.kind != REQUEST or message.method != "tools/list":
        return None
    if status != 200:
        return None
    if content_type == "application/json":
        return filtered_json
    if content_type == "text/event-stream":
        return filtered_sse
    return None


async def _listed(call: Call, svc: Services, tool: Any) -> bool:
    if not isinstance(tool, dict) or not isinstance(tool.get("name"), str):
        return False
    assert call.input is not None and call.mcp is not None
    probe = copy.copy(call.input)
    probe["mcp"] = {**call.mcp.as_input(), "tool": tool["name"], "arguments": None}
    try:
        return (await svc.policies.decide(probe)).allow
    except PolicyError:
        return False


async def filter_message(message: Any, call: Call, svc: Services) -> Any:
    """The JSON-RPC response with its `result.tools` filtered (anything else as it is)."""
    assert call.mcp is not None
    if not isinstance(message, dict) or message.get("id") != call.mcp.id:
        return message
    result = message.get("result")
    if not isinstance(result, dict) or not isinstance(result.get("tools"), list):
        return message
    kept = [tool for tool in result["tools"] if await _listed(call, svc, tool)]
    result = {**result, "tools": kept}
    if result.get("cacheScope") == "public":
        result["cacheScope"] = "private"
    return {**message, "result": result}


async def filtered_json(
    chunks: AsyncIterator[bytes], call: Call, svc: Services
) -> AsyncIterator[bytes]:
    body = bytearray()
    async for chunk in chunks:
        body += chunk
        if len(body) > MAX_JSON_BYTES:
            raise ValueError("a tools/list answer over 16 MiB")
    message = json.loads(body)
    yield json.dumps(await filter_message(message, call, svc), ensure_ascii=False).encode()


async def filtered_sse(
    chunks: AsyncIterator[bytes], call: Call, svc: Services
) -> AsyncIterator[bytes]:
    """SSE events pass as they come, byte for byte, except the one holding the result."""
    pending = b""
    async for chunk in chunks:
        pending += chunk
        while True:
            end, size = _event_end(pending)
            if end < 0:
                break
            event, pending = pending[: end + size], pending[end + size :]
            yield await _rewritten(event, call, svc)
    if pending:
        yield pending


def _event_end(buffer: bytes) -> tuple[int, int]:
    """Where the first complete event ends (a blank line), and the separator's length."""
    found = [
        (i, len(sep)) for sep in (b"\r\n\r\n", b"\n\n", b"\r\r") if (i := buffer.find(sep)) >= 0
    ]
    return min(found) if found else (-1, 0)


async def _rewritten(event: bytes, call: Call, svc: Services) -> bytes:
    try:
        lines = event.decode("utf-8").splitlines()
    except UnicodeDecodeError:
        return event
    data = [line[5:].removeprefix(" ") for line in lines if line.startswith("data:")]
    if not data:
        return event
    try:
        message = json.loads("\n".join(data))
    except ValueError:
        return event
    changed = await filter_message(message, call, svc)
    if changed is message:
        return event
    others = [line for line in lines if line and not line.startswith("data:")]
    text = "\n".join([*others, "data: " + json.dumps(changed, ensure_ascii=False)])
    return (text + "\n\n").encode()
