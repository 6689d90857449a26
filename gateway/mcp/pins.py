"""Pinned MCP tool definitions (docs/answers-and-pins.md, "Pinned MCP tools").

Whenever a server's tool list passes the gateway, each tool's definition (name, title,
description, input and output schemas, annotations) is digested: SHA-256 of its canonical
JSON. The first digest seen for a name is pinned, unless `tools[].mcp_pins` gives it. A
different digest later is a change awaiting review: with `mcp_pinning: enforce` the tool
leaves `tools/list` and its `tools/call` is refused (`tool_changed`) until an operator
accepts the new definition (or the server presents the pinned one again); with `report`
the change is only recorded. Each gateway re-reads the pins of a tool at most every
REFRESH_S, so a decision made on another gateway holds everywhere within that time.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import time
from typing import Any

from gateway.audit.events import event, now
from gateway.call import Call
from gateway.config import Tool
from gateway.errors import ErrorCode, GatewayError
from gateway.services import Services
from gateway.store.pins import PINNED, Pin

FIELDS = ("name", "title", "description", "inputSchema", "outputSchema", "annotations")
REFRESH_S = 1.0

_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def definition(tool: dict[str, Any]) -> dict[str, Any]:
    return {field: tool[field] for field in FIELDS if field in tool}


def digest_of(defined: dict[str, Any]) -> str:
    return hashlib.sha256(_CANONICAL.encode(defined).encode()).hexdigest()


async def _pins(svc: Services, tool: str, fresh: bool = False) -> dict[str, Pin]:
    cached = svc.pin_cache.get(tool)
    if not fresh and cached is not None and time.monotonic() - cached[0] < REFRESH_S:
        return cached[1]
    assert svc.pins is not None
    found = await svc.pins.of_tool(tool)
    svc.pin_cache[tool] = (time.monotonic(), found)
    return found


def _audit(svc: Services, kind: str, **fields: Any) -> None:
    if svc.audit is not None:
        svc.audit.append(event(kind, **fields))


async def listed(call: Call, svc: Services, tools: list[Any]) -> list[Any]:
    """The tools of a server's list (already filtered for the agent) that may be shown:
    every definition in `tools` is checked against its pin, and recorded."""
    tool = call.tool
    assert tool is not None
    if tool.mcp_pinning == "off":
        return tools
    pins = await _pins(svc, tool.name)
    held: set[str] = set()
    for item in tools:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            continue
        defined = definition(item)
        digest = digest_of(defined)
        if not await _check(svc, tool, pins, item["name"], digest, defined, call.request_id):
            held.add(item["name"])
    if tool.mcp_pinning == "report":
        return tools
    return [t for t in tools if not (isinstance(t, dict) and t.get("name") in held)]


async def _check(
    svc: Services,
    tool: Tool,
    pins: dict[str, Pin],
    name: str,
    digest: str,
    defined: dict[str, Any],
    request_id: str,
) -> bool:
    """Whether this definition is the pinned one; records what is new about it."""
    configured = tool.mcp_pins.get(name)
    if configured is not None:
        key = (tool.name, name)
        if digest == configured:
            svc.pin_held.pop(key, None)
        elif svc.pin_held.get(key) != digest:
            svc.pin_held[key] = digest
            svc.metrics.mcp_tool_changes.labels(tool.name).inc()
            _audit(
                svc,
                "mcp_tool_changed",
                tool=tool.name,
                name=name,
                pinned=configured,
                seen=digest,
                pinned_by="config",
                request_id=request_id,
            )
        return digest == configured
    assert svc.pins is not None
    pin = pins.get(name)
    text = _CANONICAL.encode(defined)
    if pin is None:
        svc.pin_cache.pop(tool.name, None)
        if await svc.pins.first_seen(tool.name, name, digest, text, now()):
            _audit(
                svc, "mcp_tool_pinned", tool=tool.name, name=name, digest=digest, by="first seen"
            )
            return True
        pin = (await _pins(svc, tool.name, fresh=True)).get(name)  # pinned meanwhile
        if pin is None:
            return False
    if digest == pin.seen_digest:
        return pin.status == PINNED
    # Another definition than last seen: a change, or back to the pinned one.
    svc.pin_cache.pop(tool.name, None)
    if await svc.pins.seen(pin, digest, text, now()):
        back = digest == pin.pinned_digest
        if not back:
            svc.metrics.mcp_tool_changes.labels(tool.name).inc()
        _audit(
            svc,
            "mcp_tool_restored" if back else "mcp_tool_changed",
            tool=tool.name,
            name=name,
            pinned=pin.pinned_digest,
            seen=digest,
            request_id=request_id,
        )
    return digest == pin.pinned_digest


async def vet_call(call: Call, svc: Services) -> None:
    """Refuse a tools/call of a tool whose definition changed and awaits review."""
    tool, message = call.tool, call.mcp
    if tool is None or message is None or message.method != "tools/call" or message.tool is None:
        return
    if tool.mcp_pinning != "enforce":
        return
    name = message.tool
    if name in tool.mcp_pins:  # held once this gateway saw another definition listed
        if (tool.name, name) not in svc.pin_held:
            return
    else:
        pin = (await _pins(svc, tool.name)).get(name)
        if pin is None or pin.status == PINNED:
            return
    raise GatewayError(
        ErrorCode.TOOL_CHANGED,
        f"the tool {name!r} of '{tool.name}' changed its definition since it was reviewed "
        "and awaits an operator's review; it cannot be called until then",
    )


def review(pin: Pin) -> dict[str, Any]:
    """A pin with both definitions, for an operator comparing them."""

    def pretty(text: str) -> list[str]:
        return json.dumps(
            json.loads(text), indent=2, sort_keys=True, ensure_ascii=False
        ).splitlines()

    diff = difflib.unified_diff(
        pretty(pin.pinned_definition),
        pretty(pin.seen_definition),
        f"pinned {pin.pinned_digest[:12]}",
        f"seen {pin.seen_digest[:12]}",
        lineterm="",
    )
    shown = pin.as_json()
    shown["pinned"]["definition"] = json.loads(pin.pinned_definition)
    shown["seen"]["definition"] = json.loads(pin.seen_definition)
    shown["diff"] = "\n".join(diff)
    return shown
