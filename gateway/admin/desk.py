"""What the approvers' page shows of actions (docs/approvals.md, "The approvers' page"):
the queue's order and filters, relative times, a body as a tree of keys and values, and
what an approver's click will do. Plain data for the templates; they escape it all."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from gateway.approvals import headline, states
from gateway.store.actions import Action

# The queue's order: by the decision's `risk` tag in this rank, then newest first.
RISK_RANK = {"critical": 0, "high": 1, "medium": 2, "low": 3}
FILTERS = ("tool", "agent", "role", "risk")
HEX_PREVIEW_BYTES = 256
FOLD_CHARS = 120  # longer strings are folded in the body tree
FOLD_ITEMS = 12  # nested objects and lists with more entries are folded
TREE_MAX_BYTES = 256 * 1024  # larger bodies are shown as folded JSON only, not as a tree


def risk_of(action: Mapping[str, Any]) -> str:
    risk = action["decision"].get("tags", {}).get("risk")
    return risk if isinstance(risk, str) else ""


def queue_order(actions: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    newest_first = sorted(actions, key=lambda a: a["created_at"], reverse=True)
    return sorted(newest_first, key=lambda a: RISK_RANK.get(risk_of(a), len(RISK_RANK)))


def matches(action: Mapping[str, Any], wanted: Mapping[str, str]) -> bool:
    """Whether the action passes the queue's filters (empty ones pass everything)."""
    have = {
        "tool": {action["tool"]},
        "agent": {action["agent"]},
        "role": set(action["decision"]["roles"]),
        "risk": {risk_of(action)},
    }
    return all(value in have[name] for name, value in wanted.items() if value)


def choices(actions: Iterable[Mapping[str, Any]]) -> dict[str, list[str]]:
    """The values each filter can take among `actions`, sorted."""
    found: dict[str, set[str]] = {name: set() for name in FILTERS}
    for action in actions:
        found["tool"].add(action["tool"])
        found["agent"].add(action["agent"])
        found["role"].update(action["decision"]["roles"])
        if risk_of(action):
            found["risk"].add(risk_of(action))
    return {name: sorted(values) for name, values in found.items()}


@dataclass(frozen=True)
class Moment:
    """A time shown relative to now, with the absolute time for a hover and <time>."""

    iso: str
    absolute: str
    relative: str


def _span(seconds: float) -> str:
    seconds = int(abs(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, secs = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s" if minutes < 10 else f"{minutes}m"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m" if hours < 48 else f"{hours // 24}d"


def moment(iso: str | None) -> Moment | None:
    if not iso:
        return None
    at = datetime.fromisoformat(iso)
    delta = at.timestamp() - time.time()
    relative = f"in {_span(delta)}" if delta > 0 else f"{_span(delta)} ago"
    absolute = at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return Moment(iso, absolute, relative)


def row(action: Action | Mapping[str, Any]) -> dict[str, Any]:
    """An action as a queue or history row shows it."""
    document = states.summary(action) if isinstance(action, Action) else dict(action)
    return {
        **document,
        "headline": headline.headline(document),
        "risk": risk_of(document),
        "created": moment(document["created_at"]),
        "expires": moment(document["expires_at"]),
        "ended": moment(states.ended_at(document)),
        "approved_by": [a["approver"] for a in document["approvals"] if a["verdict"] == "approve"],
        "verdicts": [{**a, "moment": moment(a["at"])} for a in document["approvals"]],
    }


def badges(tags: Mapping[str, Any]) -> list[str]:
    """Risk tags as badge texts, `risk` first: `risk: high`, a true flag by its name alone."""
    out = []
    for key, value in sorted(tags.items(), key=lambda item: item[0] != "risk"):
        if value is True:
            out.append(key)
        elif value not in (False, None):
            text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
            out.append(f"{key}: {text}")
    return out


ABSENT = object()


def at_path(body: Any, path: str) -> Any:
    """The value at a dotted body path (`order.id`, `items.0.sku`), or ABSENT."""
    value = body
    for step in path.split("."):
        if isinstance(value, dict) and step in value:
            value = value[step]
        elif isinstance(value, list) and step.isdigit() and int(step) < len(value):
            value = value[int(step)]
        else:
            return ABSENT
    return value


def key_fields(request: Mapping[str, Any], paths: Iterable[str]) -> list[dict[str, Any]]:
    body = request.get("body")
    out = []
    for path in paths:
        value = at_path(body, path)
        absent = value is ABSENT
        out.append({"path": path, "absent": absent, "value": None if absent else value})
    return out


def hex_preview(body_base64: str) -> dict[str, Any]:
    raw = base64.b64decode(body_base64)
    head = raw[:HEX_PREVIEW_BYTES]
    lines = [
        f"{offset:08x}  {head[offset : offset + 16].hex(' ')}" for offset in range(0, len(head), 16)
    ]
    return {"size": len(raw), "hex": "\n".join(lines), "cut": len(raw) > len(head)}


def as_json(text: str) -> str | None:
    """`text` pretty-printed when it is a JSON object or array, else None."""
    try:
        value = json.loads(text)
    except ValueError:
        return None
    if not isinstance(value, dict | list):
        return None
    return json.dumps(value, indent=2, ensure_ascii=False)


def effect(document: Mapping[str, Any]) -> str:
    """What approving will do, in a sentence."""
    decision, request = document["decision"], document["request"]
    given = sum(a["verdict"] == "approve" for a in document["approvals"])
    still = decision["min_approvals"] - given - 1
    if still > 0:
        more = "approval" if still == 1 else "approvals"
        return (
            f"Approving adds your approval; {still} more {more} will be needed before the "
            "call is sent."
        )
    held = moment(document.get("held_until"))
    waiting = (
        f"the agent is waiting (its call is held open until {held.absolute})"
        if held is not None and held.relative.startswith("in ")
        else "the agent will get the result when it asks again"
    )
    return f"Approving sends this {request['method']} to {document['tool']} once; {waiting}."
