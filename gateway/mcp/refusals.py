"""Refusals of MCP calls, in a form the model itself reads.

A refused `tools/call` (denied, switched off, rate limited, out of budget, a loop, an
upstream failure...) is answered HTTP 200 with a tool result marked `isError`, whose text is
the error JSON (docs/errors.md): the model sees the reason and can
correct its next call (a JSON-RPC error would only reach the host program, as an exception).
Other refused requests get a JSON-RPC error (HTTP 200) with that JSON as `data`; a message
that is not valid MCP (a batch, a header/body mismatch, a body too large) gets a JSON-RPC
error with the HTTP status of the error. Refusals of the caller itself (unknown token,
unknown tool) and of notifications stay plain HTTP errors."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from gateway.errors import SPECS, ErrorCode, GatewayError
from gateway.mcp.messages import REQUEST, HeaderMismatch, Malformed, McpMessage

# JSON-RPC error codes: the message is not a valid request; the server refused it.
INVALID_REQUEST = -32600
HEADER_MISMATCH = -32020  # 2026: a header disagrees with the body
REFUSED = -32001

# The caller, the tool or the MCP session is unknown: plain HTTP, as MCP clients expect
# (a 404 tells them to start a new session).
_TRANSPORT = frozenset({ErrorCode.UNAUTHENTICATED, ErrorCode.UNKNOWN_TOOL, ErrorCode.NOT_FOUND})
_NOT_MCP = frozenset({ErrorCode.BAD_REQUEST, ErrorCode.BODY_TOO_LARGE})


def error_document(error: GatewayError, request_id: str) -> dict[str, Any]:
    return {
        "error": {
            "code": error.code.value,
            "message": error.message,
            "request_id": request_id,
            "retryable": SPECS[error.code].retryable,
        }
    }


def tool_error(text: str) -> dict[str, Any]:
    """A tools/call result the model reads as a failed call."""
    return {"content": [{"type": "text", "text": text}], "isError": True, "resultType": "complete"}


def _response(
    status: int, document: dict[str, Any], error: GatewayError, request_id: str
) -> web.Response:
    response = web.Response(
        status=status,
        body=json.dumps(document, ensure_ascii=False).encode(),
        content_type="application/json",
    )
    response.headers.update(error.headers)
    response.headers["X-Request-Id"] = request_id
    return response


def refusal(
    message: McpMessage | None, error: GatewayError, request_id: str
) -> web.Response | None:
    """The MCP answer to a refused call; None where a plain HTTP error is the answer."""
    answer = answer_document(message, error, request_id)
    if answer is None:
        return None
    status, document = answer
    return _response(status, document, error, request_id)


def answer_document(
    message: McpMessage | None, error: GatewayError, request_id: str
) -> tuple[int, dict[str, Any]] | None:
    """The HTTP status and JSON-RPC document of `refusal`, for an answer that is not a
    response of its own (the last event of a stream); None where there is none."""
    if error.code in _TRANSPORT:
        return None
    document = error_document(error, request_id)
    if error.code in _NOT_MCP:
        if message is not None:
            rpc_id = message.id
        else:
            rpc_id = error.rpc_id if isinstance(error, Malformed) else None
        invalid = {
            "code": HEADER_MISMATCH if isinstance(error, HeaderMismatch) else INVALID_REQUEST,
            "message": error.message,
            "data": document,
        }
        return SPECS[error.code].status, {"jsonrpc": "2.0", "id": rpc_id, "error": invalid}
    if message is None or message.kind != REQUEST:
        return None
    if message.method == "tools/call":
        result = tool_error(json.dumps(document, ensure_ascii=False))
        return 200, {"jsonrpc": "2.0", "id": message.id, "result": result}
    refused = {"code": REFUSED, "message": error.message, "data": document}
    return 200, {"jsonrpc": "2.0", "id": message.id, "error": refused}
