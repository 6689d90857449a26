"""Fuzz: JSON-RPC messages to an MCP tool through a real gateway.

Requests, notifications, responses, batches and near-misses, with routing headers
(`Mcp-Method`, `Mcp-Name`) that agree with the body or not. A message the MCP server
receives was either decided by the policy on the method, tool and arguments the server
reads, or is a notification or response (which pass undecided, docs/mcp.md); a
method spelled like a known one but for case or width is never forwarded. Refusals are
the gateway's JSON error, bare or inside a JSON-RPC error or tool result; never a 5xx.
"""

from __future__ import annotations

import base64
import json
import unicodedata
from typing import Any

from aiohttp import web
from hypothesis import given, note
from hypothesis import strategies as st

from gateway.mcp.messages import KNOWN_METHODS
from tests.support.fuzz import (
    NOT_JSON,
    Answer,
    FuzzGateway,
    Received,
    assert_error_shape,
    assert_forwarded_as_decided,
    assert_no_server_error,
    exchange,
    fuzz,
    same_json,
)
from tests.support.gateway import auth

_KNOWN = sorted(KNOWN_METHODS)
_NEAR = ["Tools/Call", "TOOLS/LIST", "tools/call ", " tools/call", "tools/Call", "tools\u2215call"]
_NEAR += ["\uff54ools/call", "tools/call\u200b", "Initialize", "notifications/Initialized"]

json_leaf = st.one_of(st.none(), st.booleans(), st.integers(-(2**40), 2**40), st.text(max_size=8))
json_value = st.recursive(
    json_leaf,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)
method = st.one_of(
    st.sampled_from(_KNOWN),
    st.sampled_from(["tools/call"] * 4),
    st.sampled_from(_NEAR),
    st.text(max_size=12),
)
rpc_id = st.one_of(
    st.integers(-5, 2**40), st.text(max_size=6), st.none(), st.booleans(), st.floats(0, 2)
)
params = st.one_of(
    st.fixed_dictionaries(
        {"name": st.one_of(st.text(max_size=10), st.sampled_from(["refund", "lookup"]))},
        optional={
            "arguments": st.one_of(
                st.dictionaries(st.text(max_size=5), json_value, max_size=3), json_value
            )
        },
    ),
    st.dictionaries(st.text(max_size=8), json_value, max_size=3),
    json_value,
)


@st.composite
def messages(draw: Any) -> Any:
    shape = draw(st.sampled_from(["request"] * 5 + ["notification", "response", "odd", "batch"]))
    if shape == "batch":
        return draw(st.lists(messages(), max_size=3))
    message: dict[str, Any] = {"jsonrpc": draw(st.sampled_from(["2.0"] * 8 + ["1.0", 2.0]))}
    if shape == "response":
        message["id"] = draw(rpc_id)
        message[draw(st.sampled_from(["result", "error"]))] = draw(json_value)
        return message
    message["method"] = draw(method)
    if draw(st.integers(0, 3)):
        message["params"] = draw(params)
    if shape == "request":
        message["id"] = draw(rpc_id)
    if shape == "odd":
        return draw(
            st.dictionaries(
                st.sampled_from(["jsonrpc", "method", "id", "params", "result"]), json_value
            )
        )
    return message


def _said(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    return value


@st.composite
def routing_headers(draw: Any, message: Any) -> dict[str, str]:
    """Mcp-Method / Mcp-Name: absent, agreeing with the body, or not."""
    headers: dict[str, str] = {}
    if not isinstance(message, dict):
        return headers
    body_method = _said(message.get("method"))
    body_params = message.get("params") if isinstance(message.get("params"), dict) else {}
    body_name = _said(body_params.get("name"))
    for header, agreeing in (("Mcp-Method", body_method), ("Mcp-Name", body_name)):
        choice = draw(st.sampled_from(["absent", "absent", "agree", "base64", "other"]))
        if (
            choice == "agree"
            and agreeing is not None
            and agreeing.isascii()
            and agreeing.isprintable()
            and agreeing == agreeing.strip()
        ):
            headers[header] = agreeing
        elif choice == "base64" and agreeing is not None:
            headers[header] = "=?base64?" + base64.b64encode(agreeing.encode()).decode() + "?="
        elif choice == "other":
            headers[header] = draw(st.sampled_from(["tools/list", "refund", "x", "=?base64?!!?="]))
    return headers


def _answer(received: Received) -> web.Response:
    """The MCP server: a result for requests (an empty tool list for tools/list), 202 for
    the rest."""
    message = received.json
    if isinstance(message, dict) and "method" in message and "id" in message:
        result: dict[str, Any] = {"tools": []} if message["method"] == "tools/list" else {}
        return web.json_response({"jsonrpc": "2.0", "id": message["id"], "result": result})
    return web.Response(status=202)


def _folds_to_known(name: str) -> bool:
    folded = unicodedata.normalize("NFKC", name).strip().casefold()
    return name not in KNOWN_METHODS and folded in {m.casefold() for m in KNOWN_METHODS}


def _check_forwarded(fg: FuzzGateway, answer: Answer) -> None:
    assert answer.request_id is not None
    received = fg.upstream.seen[answer.request_id]
    message = received.json
    assert message is not NOT_JSON and isinstance(message, dict), received.body[:200]
    name = message.get("method")
    assert not (isinstance(name, str) and _folds_to_known(name)), (
        f"{name!r} differs from a known MCP method only in spelling, and reached the server"
    )
    is_request = isinstance(name, str) and "id" in message
    given = fg.policy_input(answer.request_id) if is_request else None
    if given is None:  # a notification or a response: passed undecided, as documented
        assert not is_request
        return
    assert_forwarded_as_decided(fg, answer.request_id)
    mcp = given["mcp"]
    assert mcp["method"] == name
    raw_params = message.get("params", {})
    if name == "tools/call":
        assert mcp["tool"] == raw_params["name"]
        sent = raw_params.get("arguments", {})  # absent is {}; null stays null
        assert same_json(mcp["arguments"], sent), (mcp, raw_params)
    else:
        assert mcp["tool"] is None


def _check_refused(answer: Answer) -> None:
    document = json.loads(answer.body)
    if "jsonrpc" not in document:  # refusals of the caller: plain HTTP errors
        assert_error_shape(answer.status, answer.headers, answer.body)
        return
    assert document["jsonrpc"] == "2.0" and "id" in document
    if "error" in document:
        error = document["error"]
        assert isinstance(error["code"], int) and isinstance(error["message"], str)
        inner = json.dumps(error["data"]).encode()
    else:  # a refused tools/call: a tool result the model reads
        result = document["result"]
        assert result["isError"] is True
        inner = result["content"][0]["text"].encode()
    status = json.loads(inner)["error"]["code"]
    from gateway.errors import SPECS, ErrorCode

    expected_status = SPECS[ErrorCode(status)].status
    assert answer.status in (200, expected_status)
    headers = {"Content-Type": "application/json", "X-Request-Id": answer.request_id}
    assert_error_shape(expected_status, headers, inner)


@fuzz(examples=3000)
@given(data=st.data())
async def test_jsonrpc_messages_are_decided_as_the_server_reads_them(
    fuzz_gateway: Any, data: st.DataObject
) -> None:
    message = data.draw(messages(), label="message")
    headers = {
        **auth(),
        "Content-Type": "application/json",
        "Accept": "application/json, text/event-stream",
        **data.draw(routing_headers(message), label="routing headers"),
    }
    body = json.dumps(message, ensure_ascii=data.draw(st.booleans(), label="ascii")).encode()
    note(f"{headers} {body!r}")
    fg = await fuzz_gateway(tool={"kind": "mcp"}, base_path="/mcp")
    fg.upstream.answer = _answer
    answer = await exchange(fg, "POST", "/tools/echo", headers=headers, data=body)
    assert_no_server_error(answer.status, answer.body)
    if answer.request_id in fg.upstream.seen:
        assert answer.status in (200, 202), (answer.status, answer.body[:300])
        _check_forwarded(fg, answer)
    else:
        _check_refused(answer)
