"""Seeded policy inputs for parity tests: the input document of docs/policies.md ("Input"),
built from realistic agents, tools, methods and paths, with awkward values mixed in.

`policy_inputs(seed, count)` gives the same list for the same arguments; `policy_grid()`
crosses the role sets, methods and paths of the tools the shipped grants name, so that the
narrow branches (a glob-like path listed verbatim, a granted call without a path) are
reached too. Every input is a pair (shaped, document): `shaped` says the document has the contract's field types, as the
gateway builds it (strings may still hold quotes, backslashes, newlines, non-ASCII and
emoji; optional values may be null; numbers in bodies may be anything JSON holds); the
others have a field missing, null or of another type, which only a policy sees from a
caller other than the gateway.
"""

from __future__ import annotations

import random
from typing import Any

ODD_STRINGS = (
    'say "hi"',
    "back\\slash",
    "new\nline",
    "tab\there",
    "Grüße",
    "日本語",
    "🚀 launch",
    "",
    " ",
    "/",
)
ROLES = ("support", "auditor", "developer", "release-manager", "editor", "finance", "nobody")
TOOLS = (
    "demo",
    "payments",
    "payments-mcp",
    "cms",
    "github",
    "tickets",
    "fetch",
    "deploys",
    "deploys-prod",
    "db-prod",
)
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")
PATHS = {
    "demo": (
        "/tickets",
        "/tickets/42",
        "/tickets/42/secrets",
        "/",
        "/tickets/",
        "/anything/at/all",
    ),
    "payments": ("/v1/refunds", "/v1/payouts", "/v1/transfers", "/v1/balance", "/"),
    "payments-mcp": ("/",),
    "cms": ("/drafts", "/drafts/7", "/drafts/7/publish", "/drafts/7/assets/a/b.png", "/pages/home"),
    "github": (
        "/repos/acme/website/pulls",
        "/repos/acme/website/pulls/3",
        "/repos/acme/website/pulls/3/merge",
        "/repos/acme/docs/releases",
        "/repos/evil/repo/issues/1/comments",
        "/repos/ACME/Website/git/refs",
    ),
    "tickets": ("/issues", "/issues/SUP-1", "/"),
    "fetch": ("/", "/get"),
}
# Paths a glob could read as syntax, or that are unusual as text.
ODD_PATHS = (
    "/tickets/[x]",
    "/tickets/*",
    "/tickets/?",
    "/tickets/{a,b}",
    "/tickets/\\",
    "/tickets/ü",
    "/tickets/🚀",
    "/tickets/a b",
    "/tickets/%2F",
    "/tickets//",
    "",
    "/x/[ab]",
    "/files/a",
    "/lit?",
)
OVERRIDE_HEADERS = (
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
    "x_http_method_override",
    "x_http_method",
    "x_method_override",
)
NUMBERS: tuple[Any, ...] = (
    0,
    -1,
    1,
    1e3,
    999,
    1000,
    1001,
    10001,
    2**53 + 1,
    2**63 - 1,
    -(2**63),
    0.5,
    1000.01,
    1e-9,
)
MCP_TOOLS = ("lookup_order", "refund", "search", None)
# operationIds of typed tools (input.operation.id), as the payments and GitHub documents
# of tests/data/ name them, and odd ones.
OPERATION_IDS = (
    "createRefund",
    "listRefunds",
    "getRefund",
    "cancelRefund",
    "pulls/list",
    "pulls/get",
    "pulls/merge",
    "repos/get",
    'say "hi"',
    "",
)
MCP_METHODS = ("tools/call", "tools/list", "initialize", "ping", "resources/read")
TIMES = (
    "2026-11-23T10:00:00Z",  # Monday, office hours in Berlin
    "2026-11-23T19:30:00Z",  # Monday evening
    "2026-11-28T11:00:00Z",  # Saturday
    "2026-12-24T10:00:00Z",  # a holiday
)
SESSIONS = (None, "sess-42", "sess-2026-11-23-refunds")
CARD = "4111 1111 1111 1111"


def _text(rng: random.Random, usual: tuple[str, ...]) -> str:
    return rng.choice(ODD_STRINGS) if rng.random() < 0.1 else rng.choice(usual)


def _body(rng: random.Random, tool: str) -> Any:
    kind = rng.random()
    if kind < 0.2:
        return None
    if tool == "payments" or kind < 0.4:
        currency: Any = rng.choice(("EUR", "USD", "GBP", "JPY", "CHF", None, "eur"))
        body: dict[str, Any] = {"amount": rng.choice(NUMBERS), "currency": currency}
        if rng.random() < 0.1:
            del body["currency"]
        if rng.random() < 0.1:
            body["amount"] = rng.choice(("1200", None, [1200], {"value": 1}))
        return body
    if kind < 0.5:
        return {"card": {"number": CARD}, "note": _text(rng, ("hi",))}
    if kind < 0.6:
        return {"url": rng.choice(("https://docs.python.org/3/", "https://evil.example/", 7))}
    if kind < 0.7:
        return {"project": rng.choice(("SUP", "OPS", "sup", "HR", None))}
    if kind < 0.8:
        return [1, "two", None, {"three": 3.0}]
    return {"title": _text(rng, ("printer on fire",)), "n": rng.choice(NUMBERS)}


def _operation(operation_id: str, path: str | None) -> dict[str, Any]:
    """`input.operation` as the gateway builds it for a typed tool."""
    return {
        "id": operation_id,
        "tags": [],
        "path_template": path,
        "params": {"path": {}, "query": {}, "header": {}},
        "deprecated": False,
    }


def _document(rng: random.Random) -> dict[str, Any]:
    # Most calls go to the tools the shipped grants and examples name, so that allows,
    # approvals and each kind of deny are all common.
    tool = rng.choices(TOOLS, weights=(8, 2, 3, 2, 1, 1, 1, 1, 1, 1))[0]
    mcp_server = tool == "payments-mcp"
    paths = PATHS.get(tool, ("/",))
    path = rng.choice(ODD_PATHS) if rng.random() < 0.2 else rng.choice(paths)
    headers = {"content-type": "application/json"}
    if rng.random() < 0.08:
        headers[rng.choice(OVERRIDE_HEADERS)] = rng.choice(("DELETE", "PUT", ""))
    if rng.random() < 0.05:
        headers[rng.choice(OVERRIDE_HEADERS)] = "GET"
    if rng.random() < 0.1:
        headers["x-note"] = _text(rng, ("ok",))
    query: dict[str, list[str]] = {}
    if rng.random() < 0.2:
        query["project"] = [rng.choice(("SUP", "OPS", "HR", 'a"b'))]
    if rng.random() < 0.05:
        query["pan"] = [CARD.replace(" ", "")]
    body = _body(rng, tool)
    mcp: dict[str, Any] | None = None
    if mcp_server or rng.random() < 0.05:
        mcp = {
            "method": rng.choice(MCP_METHODS),
            "tool": rng.choice(MCP_TOOLS),
            "arguments": {},
            "protocol_version": "2026-07-28",
        }
    operation = None
    if not mcp_server and rng.random() < 0.6:
        operation = _operation(rng.choice(OPERATION_IDS), path)
    roles = []
    for _ in range(rng.choice((0, 1, 1, 1, 2, 2, 3))):
        role = rng.choices(ROLES, weights=(8, 4, 3, 2, 2, 2, 1))[0]
        if role not in roles:
            roles.append(role)
    if rng.random() < 0.05:
        roles.append(rng.choice(ODD_STRINGS))
    agent = (
        rng.choice(("support-bot", "ops-bot", "release-bot"))
        if rng.random() < 0.9
        else rng.choice(ODD_STRINGS)
    )
    return {
        "agent": {"id": agent, "roles": roles},
        "tool": {
            "name": tool if rng.random() < 0.95 else rng.choice(ODD_STRINGS),
            "kind": "mcp" if mcp_server else "http",
        },
        "request": {
            "method": rng.choices(METHODS, weights=(4, 3, 1, 1, 1, 1, 1))[0]
            if rng.random() < 0.97
            else rng.choice(("get", "BREW", "")),
            "path": path,
            "query": query,
            "headers": headers,
            "body": body,
            "form": None,
            "size": rng.choice((0, 29, 41, 10**6)),
        },
        "mcp": mcp,
        "operation": operation,
        "context": {
            "request_id": f"01PARITY{rng.randrange(10**6):06d}",
            "time": rng.choice(TIMES),
            "session": rng.choice(SESSIONS),
            "model": rng.choice((None, "gpt-x-2026-10", "模型")),
        },
    }


# Where a document can be odd, and with what: a field missing (None in the list means
# "remove it"), null, or of another type.
ODD_PLACES: tuple[tuple[str, ...], ...] = (
    ("agent",),
    ("agent", "id"),
    ("agent", "roles"),
    ("tool",),
    ("tool", "name"),
    ("request",),
    ("request", "method"),
    ("request", "path"),
    ("request", "headers"),
    ("mcp",),
    ("mcp", "tool"),
    ("operation",),
    ("operation", "id"),
    ("context",),
)
ODD_VALUES: tuple[Any, ...] = (
    None,
    "support",
    7,
    -1,
    1e3,
    2**62,
    1.5,
    True,
    False,
    [],
    {},
    ["support", 1],
    [None],
    {"support": True},
)
_MISSING = object()


def _make_odd(rng: random.Random, doc: dict[str, Any]) -> None:
    place = rng.choices(ODD_PLACES, weights=(1, 1, 2, 1, 1, 1, 2, 3, 2, 1, 2, 1, 1, 1))[0]
    parent: Any = doc
    for key in place[:-1]:
        if not isinstance(parent.get(key), dict):
            parent[key] = {}
        parent = parent[key]
    value = _MISSING if rng.random() < 0.3 else rng.choice(ODD_VALUES)
    if value is _MISSING:
        parent.pop(place[-1], None)
    else:
        parent[place[-1]] = value


def policy_inputs(seed: int, count: int) -> list[tuple[bool, dict[str, Any]]]:
    rng = random.Random(seed)
    docs: list[tuple[bool, dict[str, Any]]] = []
    for _ in range(count):
        doc = _document(rng)
        shaped = rng.random() >= 0.2
        if not shaped:
            for _ in range(rng.choice((1, 1, 2))):
                _make_odd(rng, doc)
        docs.append((shaped, doc))
    docs.append((False, {}))
    return docs


GRID_ROLE_SETS: tuple[list[str], ...] = (
    [],
    ["support"],
    ["auditor"],
    ["developer"],
    ["editor"],
    ["release-manager"],
    ["support", "auditor"],
    ["nobody", "developer"],
)


def policy_grid() -> list[tuple[bool, dict[str, Any]]]:
    """Every role set x method x path (the tool's, the odd ones, and none at all) for the
    tools with grants, MCP calls cycling through their tools; no override headers."""
    docs: list[tuple[bool, dict[str, Any]]] = []
    n = 0
    for tool in ("demo", "payments-mcp", "cms", "github"):
        for roles in GRID_ROLE_SETS:
            for method in ("GET", "POST", "PUT", "DELETE", "HEAD"):
                for path in (*PATHS[tool], *ODD_PATHS, None):
                    n += 1
                    mcp: dict[str, Any] | None = None
                    if tool == "payments-mcp":
                        mcp = {
                            "method": MCP_METHODS[n % 2],
                            "tool": MCP_TOOLS[n % len(MCP_TOOLS)],
                            "arguments": {},
                            "protocol_version": "2026-07-28",
                        }
                    request: dict[str, Any] = {
                        "method": method,
                        "path": path,
                        "query": {},
                        "headers": {"content-type": "application/json"},
                        "body": None,
                        "form": None,
                        "size": 0,
                    }
                    if path is None:
                        del request["path"]
                    operation = None
                    if tool == "github" and n % 3:
                        operation = _operation(OPERATION_IDS[4 + n % 4], path)
                    doc = {
                        "agent": {"id": "grid-bot", "roles": list(roles)},
                        "tool": {"name": tool, "kind": "mcp" if mcp else "http"},
                        "request": request,
                        "mcp": mcp,
                        "operation": operation,
                        "context": {
                            "request_id": f"01GRID{n:06d}",
                            "time": TIMES[0],
                            "session": None,
                            "model": None,
                        },
                    }
                    docs.append((path is not None, doc))
    return docs
