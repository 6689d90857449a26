"""The fuzz suite's Hypothesis profiles and its harness: a recording upstream, the config of
a gateway whose policy allows everything and echoes its input, and what every example checks.

Profiles (docs/security.md, Release checks): `ci`, the default, is bounded so that every fuzz module
together stays within a few minutes on a 2-core machine and is reproducible (derandomized,
no example database); `release` (CALLGATE_FUZZ_PROFILE=release) runs ten times as many
examples with fresh randomness, for the checks before a release. The gateway under test is
one per test function, with many examples sent through it.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from hypothesis import HealthCheck, settings

from tests.support.gateway import AGENT_TOKEN, TOOL_SECRET, sha

PROFILE_ENV = "CALLGATE_FUZZ_PROFILE"

_COMMON: dict[str, Any] = {
    "deadline": None,  # a shared 2-core machine: timing says nothing about correctness
    # One gateway serves all of a test's examples (that is the point: many requests through
    # one process); the fixture is not reset between examples on purpose.
    "suppress_health_check": [
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.filter_too_much,
    ],
    "print_blob": True,
}
settings.register_profile("ci", derandomize=True, database=None, **_COMMON)
settings.register_profile("release", derandomize=False, **_COMMON)

PROFILE = os.environ.get(PROFILE_ENV, "ci")
if PROFILE not in ("ci", "release"):
    raise pytest.UsageError(f"{PROFILE_ENV} must be ci or release, not {PROFILE!r}")
# Examples per fuzz target: `ci` keeps the whole suite within about 3 minutes here.
SCALE = 10 if PROFILE == "release" else 1

F = TypeVar("F", bound=Callable[..., Any])


def fuzz(examples: int) -> Callable[[F], F]:
    """Settings for one fuzz target: `examples` in the ci profile, scaled for release."""
    return settings(settings.get_profile(PROFILE), max_examples=examples * SCALE)  # type: ignore[return-value]


# Allows every call and puts the whole input it was given into the decision's reason,
# which the audit log keeps: what the policy saw, exactly, as the engine saw it.
ECHO_INPUT_REGO = """package gateway

import rego.v1

decision := {"allow": true, "reason": json.marshal(input)}
"""

# Request headers the gateway documents it sets or owns toward the tool (docs/policies.md,
# "Input", and docs/configuration.md, "tools[].forwarded_headers"), so the tool's
# value need not be the one the policy saw; and the credential headers the policy never
# sees. Everything else must be the same on both sides.
GATEWAY_OWNED = frozenset(
    {
        "host",
        "authorization",
        "content-length",
        "content-encoding",
        "transfer-encoding",
        "expect",
        "x-request-id",
        "traceparent",
        "idempotency-key",
        "forwarded",
        "x-forwarded-for",
        "x-forwarded-proto",
        "x-forwarded-host",
        "x-forwarded-port",
        "x-forwarded-prefix",
        "x-forwarded-server",
        "x-real-ip",
        "x-original-url",
        "x-rewrite-url",
        # The tool has a credential, so its answers are scrubbed and it is asked for
        # `identity` (docs/policies.md, "Input").
        "accept-encoding",
    }
)

NOT_JSON = "<not JSON>"


@dataclass
class Received:
    """One request as the tool (a plain aiohttp app) read it."""

    method: str
    raw_path: str
    path: str
    query: dict[str, list[str]]
    headers: list[tuple[str, str]]
    body: bytes
    json: Any  # `await request.json()`, or NOT_JSON when that raised


@dataclass
class Recorder:
    """The upstream's record of what reached it, by the gateway's X-Request-Id."""

    seen: dict[str, Received] = field(default_factory=dict)
    answer: Callable[[Received], web.Response] | None = None

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        try:
            parsed: Any = await request.json()
        except Exception:
            parsed = NOT_JSON
        query: dict[str, list[str]] = {}
        for name, value in request.query.items():
            query.setdefault(name, []).append(value)
        received = Received(
            method=request.method,
            raw_path=request.raw_path,
            path=request.path,
            query=query,
            headers=list(request.headers.items()),
            body=body,
            json=parsed,
        )
        self.seen[request.headers.get("X-Request-Id", "")] = received
        if self.answer is not None:
            return self.answer(received)
        return web.json_response({"ok": True})

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", r"/{tail:[\s\S]*}", self.handle)
        return app


@dataclass
class FuzzGateway:
    client: TestClient
    upstream: Recorder
    audit_path: Path
    base_path: str  # the tool's upstream path below which calls land
    # Headers this tool's kind has the gateway own besides GATEWAY_OWNED: an MCP tool's
    # Accept-Encoding is dropped, so that tool lists stay readable to filter.
    owned: frozenset[str] = frozenset()

    def policy_input(self, request_id: str) -> dict[str, Any]:
        """What the policy was given for this call (from its echo in the audit log)."""
        with sqlite3.connect(f"file:{self.audit_path}?mode=ro", uri=True) as db:
            rows = db.execute(
                "SELECT record FROM audit_log WHERE request_id = ? AND kind = 'decision'",
                (request_id,),
            ).fetchall()
        assert len(rows) == 1, f"{len(rows)} decision records for {request_id}"
        reason = json.loads(rows[0][0])["reason"]
        document: dict[str, Any] = json.loads(reason)
        return document


def config_tree(tmp_path: Path, upstream: str, tool: dict[str, Any]) -> dict[str, Any]:
    policies = tmp_path / "policies"
    policies.mkdir(exist_ok=True)
    (policies / "gateway.rego").write_text(ECHO_INPUT_REGO)
    return {
        "policy": {"path": str(policies), "watch": False},
        "agents": [{"id": "bot", "token_sha256": sha(AGENT_TOKEN), "roles": ["caller"]}],
        # Examples repeat (shrinking, small values): the loop breaker and budgets would
        # answer 429 to the fuzzer rather than parse its input.
        "limits": {"loop": None, "session_budget": None},
        "protection": {"refusals": {"limit": 1_000_000, "window_s": 1}},
        "tools": [
            {
                "name": "echo",
                "upstream": upstream,
                "credentials": {"header": "Authorization", "value": f"Bearer {TOOL_SECRET}"},
                "timeout_s": 5,
                **tool,
            }
        ],
    }


# --- what every fuzz example checks --------------------------------------------------


def same_json(policy: Any, tool: Any) -> bool:
    """The policy's JSON value (as the engine wrote it back) is the tool's: numbers equal as
    the tool holds them (a float as a double, an integer exactly), true is not 1."""
    a, b = policy, tool
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(b, float) and isinstance(a, int | float):
        # The engine writes a double without a fraction as an integer (3.6e16 as
        # 36419108617963030): the same double once read as one.
        return float(a) == b or (a != a and b != b)
    if isinstance(a, int | float) and isinstance(b, int):
        return a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same_json(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same_json(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


def assert_error_shape(status: int, headers: Any, body: bytes) -> dict[str, Any]:
    """The gateway's own error: the JSON of docs/errors.md."""
    from gateway.errors import SPECS, ErrorCode

    assert headers.get("Content-Type", "").startswith("application/json"), (status, body[:200])
    document = json.loads(body)
    assert isinstance(document, dict) and "error" in document, (status, body[:300])
    error = document["error"]
    assert set(error) == {"code", "message", "request_id", "retryable"}, document
    code = ErrorCode(error["code"])
    assert SPECS[code].status == status, (code, status)
    assert error["retryable"] is SPECS[code].retryable
    assert isinstance(error["message"], str) and error["message"]
    assert error["request_id"] == headers["X-Request-Id"]
    return dict(error)


def assert_no_server_error(status: int, body: bytes) -> None:
    # With a healthy upstream none of the documented 502/503/504 applies; 500 never does.
    assert status < 500, (status, body[:500])


def tool_headers(received: Received, owned: frozenset[str]) -> dict[str, str]:
    """The tool's headers as the policy contract shapes them: lower-case names, repeats
    joined with ", ", minus what the gateway owns and the credentials a policy never sees."""
    from gateway.headers import CREDENTIAL_HEADERS, HOP_BY_HOP

    skip = GATEWAY_OWNED | owned | CREDENTIAL_HEADERS | HOP_BY_HOP
    joined: dict[str, str] = {}
    for name, value in received.headers:
        key = name.lower()
        if key not in skip:
            joined[key] = f"{joined[key]}, {value}" if key in joined else value
    return joined


def policy_headers(given: dict[str, str], owned: frozenset[str]) -> dict[str, str]:
    return {name: value for name, value in given.items() if name not in GATEWAY_OWNED | owned}


def assert_forwarded_as_decided(fg: FuzzGateway, request_id: str) -> dict[str, Any]:
    """The policy's input (as the engine saw it) equals what the tool read."""
    received = fg.upstream.seen[request_id]
    given = fg.policy_input(request_id)["request"]
    assert received.raw_path.startswith(fg.base_path), received.raw_path
    assert given["method"] == received.method
    assert given["path"] == (received.path[len(fg.base_path) :] or "/"), (
        given["path"],
        received.raw_path,
    )
    assert given["query"] == received.query, (given["query"], received.raw_path)
    assert policy_headers(given["headers"], fg.owned) == tool_headers(received, fg.owned)
    assert given["size"] == len(received.body)
    if received.json is not NOT_JSON:  # the tool reads JSON: the policy read the same
        assert same_json(given["body"], received.json), (given["body"], received.body[:200])
    return given


@dataclass
class Answer:
    status: int
    headers: Any
    body: bytes

    @property
    def request_id(self) -> str | None:
        return self.headers.get("X-Request-Id")  # type: ignore[no-any-return]


async def exchange(
    fg: FuzzGateway,
    method: str,
    target: str,
    headers: Any = None,
    data: bytes | None = None,
    skip_auto_headers: tuple[str, ...] = (),
) -> Answer:
    """Send one request as given (the target already percent-encoded) and read the answer."""
    from yarl import URL

    url = URL(str(fg.client.make_url("")).rstrip("/") + target, encoded=True)
    async with fg.client.session.request(
        method, url, headers=headers, data=data, skip_auto_headers=skip_auto_headers
    ) as response:
        return Answer(response.status, response.headers, await response.read())


def refused_by_http_parser(answer: Answer) -> bool:
    """aiohttp's own HTTP parser refused the request before any gateway code ran (a
    header it holds must not repeat, such as Content-Type or Host): its plain-text 400,
    with no request id since the gateway never saw the request."""
    return (
        answer.status == 400
        and answer.request_id is None
        and answer.headers.get("Content-Type", "").startswith("text/plain")
    )


def check_http_answer(fg: FuzzGateway, answer: Answer) -> dict[str, Any] | None:
    """The tool's answer, and the policy saw what the tool read (its input is returned);
    or the gateway's JSON error (None). Never a 5xx."""
    assert_no_server_error(answer.status, answer.body)
    if refused_by_http_parser(answer):
        return None
    assert answer.request_id is not None, (answer.status, answer.headers, answer.body[:300])
    if answer.request_id in fg.upstream.seen:
        assert answer.status == 200, (answer.status, answer.body[:300])
        return assert_forwarded_as_decided(fg, answer.request_id)
    if answer.headers.get("Idempotent-Replayed") == "true":  # the first call's answer, again
        assert (answer.status, answer.body) == (200, b'{"ok": true}')
        return None
    assert_error_shape(answer.status, answer.headers, answer.body)
    return None
