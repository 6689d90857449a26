"""The JSON-RPC message an agent POSTs to an MCP tool, as the policy sees it.

A POST carries one message: a request (`method` and `id`), a notification (`method`, no
`id`) or a response to a request of the server (`result` or `error`). Batches (arrays) are
refused: they were dropped from MCP, and one decision per message is the contract. The
decision is taken from the body; `Mcp-Method` and `Mcp-Name` headers (sent by 2026-era
clients for routing) must agree with it, or the call is refused, so a proxy or server
routing on the headers cannot be told something else than the policy was.

Method names are case-sensitive. A method that differs from one of MCP's only by case or
by Unicode compatibility forms (`Tools/Call`, a fullwidth letter) is refused, naming the
canonical spelling: the policy would see it as some other method (no tool named), while a
lenient server could run it as the real one. Every other method reaches the policy
exactly as sent.
"""

from __future__ import annotations

import base64
import hashlib
import json
import unicodedata
from dataclasses import dataclass, field
from typing import Any

from gateway.errors import ErrorCode, GatewayError

REQUEST, NOTIFICATION, RESPONSE = "request", "notification", "response"

KNOWN_METHODS = frozenset(
    {
        "initialize",
        "ping",
        "server/discover",
        "tools/list",
        "tools/call",
        "resources/list",
        "resources/read",
        "resources/templates/list",
        "resources/subscribe",
        "resources/unsubscribe",
        "prompts/list",
        "prompts/get",
        "completion/complete",
        "logging/setLevel",
        "notifications/initialized",
        "notifications/cancelled",
        "notifications/progress",
        "notifications/roots/list_changed",
    }
)


# Every method of the protocol's versions, client's and server's: a spelling that folds to
# one of these and is not it is refused.
_PROTOCOL_METHODS = KNOWN_METHODS | {
    "subscriptions/listen",
    "tasks/get",
    "tasks/result",
    "tasks/list",
    "tasks/cancel",
    "roots/list",
    "sampling/createMessage",
    "elicitation/create",
    "notifications/message",
    "notifications/tasks/status",
    "notifications/elicitation/complete",
    "notifications/tools/list_changed",
    "notifications/prompts/list_changed",
    "notifications/resources/list_changed",
    "notifications/resources/updated",
}


def _folded(method: str) -> str:
    return unicodedata.normalize("NFKC", method).strip().casefold()


_CANONICAL = {_folded(method): method for method in _PROTOCOL_METHODS}

# One encoder for every digest: `json.dumps` with options builds a new one per call.
_CANONICAL_JSON = json.JSONEncoder(sort_keys=True, separators=(",", ":"))


@dataclass(frozen=True, slots=True)
class McpMessage:
    kind: str  # request | notification | response | stream (GET) | end (DELETE)
    id: Any = None  # the JSON-RPC id of a request (a string or a number)
    method: str | None = None
    tool: str | None = None  # tools/call: the tool's name
    arguments: dict[str, Any] | None = None  # tools/call: its arguments
    protocol_version: str | None = None
    # The digest of the arguments once asked for: the audit record and the loop breaker
    # both ask for it.
    _arguments_digest: str | None = field(default=None, init=False, compare=False, repr=False)

    @property
    def decided(self) -> bool:
        """Whether the policy decides this message: requests and the GET stream and
        DELETE; notifications and responses pass."""
        return self.kind not in (NOTIFICATION, RESPONSE)

    @property
    def arguments_sha256(self) -> str | None:
        """A digest of the arguments as JSON with sorted keys: the same call, the same
        digest, however the client ordered them."""
        if self.arguments is None:
            return None
        if self._arguments_digest is None:
            canonical = _CANONICAL_JSON.encode(self.arguments)
            digest = hashlib.sha256(canonical.encode()).hexdigest()
            object.__setattr__(self, "_arguments_digest", digest)  # frozen: set once
        return self._arguments_digest

    @property
    def metric_method(self) -> str:
        """The method as a metric label: one of a fixed set (methods are agent input)."""
        if self.kind in ("stream", "end", RESPONSE):
            return self.kind
        return self.method if self.method in KNOWN_METHODS else "other"

    def as_record(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "kind": self.kind,
            "tool": self.tool,
            "arguments_sha256": self.arguments_sha256,
            "protocol_version": self.protocol_version,
        }

    def as_input(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "tool": self.tool,
            "arguments": self.arguments,
            "protocol_version": self.protocol_version,
        }


def _invalid(message: str) -> GatewayError:
    return GatewayError(ErrorCode.BAD_REQUEST, message)


class Malformed(GatewayError):
    """A message that is not valid MCP, whose request id is known: JSON-RPC error -32600
    with HTTP 400, answering that id."""

    def __init__(self, message: str, rpc_id: Any = None) -> None:
        super().__init__(ErrorCode.BAD_REQUEST, message)
        self.rpc_id = rpc_id


class HeaderMismatch(Malformed):
    """A routing header that disagrees with the body (or has no place on the message):
    JSON-RPC error -32020 (HEADER_MISMATCH, 2026 protocol) with HTTP 400, answering the
    request's id where it has one."""


def _name_of(method: str, params: dict[str, Any]) -> str | None:
    """What `Mcp-Name` carries for this method: a tool, prompt or resource."""
    value = params.get("uri") if method.startswith("resources/") else params.get("name")
    return value if isinstance(value, str) else None


def read_message(http_method: str, body: Any, raw_body: bytes, headers: Any) -> McpMessage:
    """The message of one MCP request; GatewayError (400) when it is not one."""
    version = headers.get("MCP-Protocol-Version")
    if http_method == "GET":
        _check_no_routing_headers(headers, "the GET event stream")
        return McpMessage("stream", protocol_version=version)
    if http_method == "DELETE":
        _check_no_routing_headers(headers, "a DELETE")
        return McpMessage("end", protocol_version=version)
    if http_method != "POST":
        raise _invalid(f"MCP endpoints take POST, GET and DELETE, not {http_method}")
    if isinstance(body, list):
        raise _invalid("JSON-RPC batches are not accepted: send one message per request")
    if not isinstance(body, dict) or body.get("jsonrpc") != "2.0":
        what = "no JSON" if not raw_body.strip() or body is None else "not a JSON-RPC 2.0 object"
        raise _invalid(f"an MCP request must hold one JSON-RPC 2.0 message; this body holds {what}")
    method = body.get("method")
    if method is None:
        if "id" not in body or ("result" not in body and "error" not in body):
            raise _invalid("a JSON-RPC message needs a method, or an id with a result or error")
        _check_no_routing_headers(headers, "a JSON-RPC response")
        return McpMessage(RESPONSE, id=body["id"], protocol_version=version)
    if not isinstance(method, str):
        raise _invalid("the JSON-RPC method must be a string")
    _check_spelling(method, body.get("id"))
    params = body.get("params", {})
    if not isinstance(params, dict):
        raise _invalid("the JSON-RPC params must be an object")
    _check_headers(headers, method, params, body.get("id"))
    if method == "initialize" and isinstance(params.get("protocolVersion"), str):
        version = version or params["protocolVersion"]
    tool = arguments = None
    if method == "tools/call":
        tool, arguments = params.get("name"), params.get("arguments", {})
        if not isinstance(tool, str) or not isinstance(arguments, dict | None):
            raise _invalid(
                "tools/call needs params.name (a string) and params.arguments (an object)"
            )
    if "id" not in body:
        if not method.startswith("notifications/"):
            raise _invalid(
                f"{method} without an id: only notifications/* may come without one "
                "(a request needs an id to be decided and answered)"
            )
        return McpMessage(NOTIFICATION, method=method, protocol_version=version)
    request_id = body["id"]
    if isinstance(request_id, bool) or not isinstance(request_id, str | int):
        raise _invalid("a JSON-RPC request id must be a string or an integer")
    return McpMessage(REQUEST, request_id, method, tool, arguments, version)


def _check_spelling(method: str, rpc_id: Any) -> None:
    if method in _PROTOCOL_METHODS:  # the common case: nothing to fold
        return
    canonical = _CANONICAL.get(_folded(method))
    if canonical is not None and canonical != method:
        answerable = isinstance(rpc_id, str | int) and not isinstance(rpc_id, bool)
        raise Malformed(
            f"the JSON-RPC method {method!r} is not MCP's {canonical!r}: method names are "
            f"case-sensitive; send {canonical!r}",
            rpc_id if answerable else None,
        )


def _header_value(value: str) -> str | None:
    """A routing header's value: clients send values that are not plain ASCII (or have
    edge spaces) as `=?base64?<UTF-8, base64>?=`; None when such a value is malformed."""
    if not (value.startswith("=?base64?") and value.endswith("?=")):
        return value
    try:
        return base64.b64decode(value[9:-2], validate=True).decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        return None


def _check_no_routing_headers(headers: Any, what: str) -> None:
    """Mcp-Method and Mcp-Name describe a request's body; on anything else they would
    reach the server as a claim no policy checked."""
    for name in ("Mcp-Method", "Mcp-Name"):
        if name in headers:
            raise HeaderMismatch(
                f"{what} carries no method: the {name} header does not belong on it"
            )


def _check_headers(headers: Any, method: str, params: dict[str, Any], rpc_id: Any) -> None:
    for name in ("Mcp-Method", "Mcp-Name"):
        if len(headers.getall(name, ())) > 1:
            raise HeaderMismatch(f"the {name} header is given more than once", rpc_id)
    said = headers.get("Mcp-Method")
    if said is not None and _header_value(said) != method:
        raise HeaderMismatch(
            f"the Mcp-Method header says {said!r} but the body's method is {method!r}", rpc_id
        )
    named = headers.get("Mcp-Name")
    if named is not None and _header_value(named) != _name_of(method, params):
        raise HeaderMismatch(
            f"the Mcp-Name header says {named!r} but the body names {_name_of(method, params)!r}",
            rpc_id,
        )
