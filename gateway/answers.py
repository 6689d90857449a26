"""A tool's answer as the gateway keeps it: for the replays of an Idempotency-Key, and as
an approved action's result (which approvers read, so a text body is kept as text).

`{"status", "headers", "size", "truncated", "body" | "body_base64"}`: `headers` as
`[name, value]` pairs in order, `size` the bytes kept, `truncated` when the tool sent more
than were kept (such an answer is never passed off as whole).
"""

from __future__ import annotations

import base64
from typing import Any

from multidict import CIMultiDictProxy

from gateway.headers import without

# Response headers never kept for replays: the gateway's server sets them afresh for each
# response (a replay's body has its own length; hop-by-hop headers are dropped too).
NOT_REPLAYED = frozenset({"content-length", "date", "server", "x-request-id"})


def kept(status: int, headers: list[list[str]], body: bytes, truncated: bool) -> dict[str, Any]:
    answer: dict[str, Any] = {
        "status": status,
        "headers": headers,
        "size": len(body),
        "truncated": truncated,
    }
    try:
        answer["body"] = body.decode()
    except UnicodeDecodeError:
        answer["body_base64"] = base64.b64encode(body).decode()
    return answer


def body_of(answer: dict[str, Any]) -> bytes:
    if "body_base64" in answer:
        return base64.b64decode(answer["body_base64"])
    if "too_large" in answer:  # kept for a replay by callgate 0.1: the body in base64
        return base64.b64decode(answer["body"])
    return str(answer.get("body", "")).encode()


def truncated(answer: dict[str, Any]) -> bool:
    return bool(answer.get("truncated") or answer.get("too_large"))


def replayable_headers(headers: CIMultiDictProxy[str]) -> list[list[str]]:
    """The tool's response headers worth keeping for replays, in order."""
    return [[name, value] for name, value in without(headers, NOT_REPLAYED)]
