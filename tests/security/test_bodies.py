"""Finding 1, 9 (request bodies), 12 and NaN: the policy and the tool read one body.

A money policy allows refunds under 1000 without approval; the tool parses the body as an
aiohttp tool does (`await request.json()`, which honours the declared charset). Every
body a hostile agent can send is either refused before the tool is called, or reaches
the tool as exactly the value the policy decided on (docs/security.md).
"""

from __future__ import annotations

import codecs
import gzip
import json
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from tests.support.gateway import auth

MONEY_REGO = """package gateway

import rego.v1

default decision := {"allow": false, "reason": "refunds of 1000 or more need approval"}

decision := {"allow": true} if input.request.body.amount < 1000

decision := {"allow": true} if to_number(input.request.form.amount) < 1000
"""

# UTF-8 reads a string after amount 5; UTF-7 reads `"x": "", "amount": 50000`, and
# Python's JSON keeps the last key.
UTF7_SMUGGLE = b'{"amount": 5, "x": "+ACIALAAiAGEAbQBvAHUAbgB0ACIAOgAgADUAMAAwADAAMA-"}'


@pytest.fixture
async def money(tmp_path: Path, start_upstream, start_gateway):
    folder = tmp_path / "money"
    folder.mkdir()
    (folder / "gateway.rego").write_text(MONEY_REGO)
    seen: list[dict[str, Any]] = []

    async def refund(request: web.Request) -> web.Response:
        raw = await request.read()
        if request.content_type == "application/x-www-form-urlencoded":
            parsed: Any = dict(await request.post())
        else:
            parsed = await request.json()  # honours `charset`, as many tools' frameworks do
        seen.append(
            {"raw": raw, "parsed": parsed, "content_type": request.headers.get("Content-Type")}
        )
        return web.json_response({"refunded": parsed.get("amount")})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", refund)
    upstream = await start_upstream(app)
    gw = await start_gateway(upstream, policy_dir=folder)

    async def post(body: bytes, headers: list[tuple[str, str]]) -> tuple[int, dict[str, Any]]:
        resp = await gw.post(
            "/tools/echo/refunds",
            headers=[*auth().items(), *headers],
            data=body,
            skip_auto_headers=["Content-Type"],
        )
        if resp.content_type != "application/json":  # aiohttp's parser refused it
            return resp.status, {"plain": await resp.text()}
        return resp.status, await resp.json()

    return post, seen


def utf16(text: str, codec: str = "utf-16") -> bytes:
    return text.encode(codec)


JSON = ("Content-Type", "application/json")

REFUSED = [
    ("utf-7-smuggle", [("Content-Type", "application/json; charset=utf-7")], UTF7_SMUGGLE, 415),
    ("utf-7-as-text", [("Content-Type", "text/plain; charset=utf-7")], UTF7_SMUGGLE, 415),
    (
        "utf-7-json-only-as-utf-7",
        [("Content-Type", "text/plain; charset=utf-7")],
        b"+AHsAIg-amount+ACIAOgA1ADAAMAAwADAAfQ-",
        415,
    ),
    (
        "latin-1-non-ascii",
        [("Content-Type", "application/json; charset=iso-8859-1")],
        b'{"amount": 5, "n": "caf\xe9"}',
        415,
    ),
    (
        "unknown-charset",
        [("Content-Type", "application/json; charset=x-klingon")],
        b'{"amount": 5}',
        415,
    ),
    (
        "charset-twice",
        [("Content-Type", "application/json; charset=utf-8; charset=utf-7")],
        b'{"amount": 5}',
        415,
    ),
    (
        "ascii-with-8-bit",
        [("Content-Type", "application/json; charset=us-ascii")],
        '{"amount": 5, "n": "é"}'.encode(),
        415,
    ),
    (
        "utf-16-without-bom",
        [("Content-Type", "application/json; charset=utf-16")],
        utf16('{"amount": 5}', "utf-16-be"),
        415,
    ),
    ("utf-8-bom", [JSON], codecs.BOM_UTF8 + b'{"amount": 5}', 415),
    ("utf-16-json-undeclared", [("Content-Type", "text/plain")], utf16('{"amount": 50000}'), 415),
    ("utf-32-json-no-type", [], utf16('{"amount": 50000}', "utf-32"), 415),
    ("duplicate-keys", [JSON], b'{"amount": 5, "amount": 50000}', 400),
    ("nested-duplicate-keys", [JSON], b'{"amount": 5, "meta": {"a": 1, "a": 2}}', 400),
    ("nan", [JSON], b'{"amount": NaN}', 400),
    ("nan-as-text", [("Content-Type", "text/plain")], b'{"amount": NaN}', 400),
    ("infinity", [JSON], b'{"amount": -Infinity}', 400),
    ("lone-surrogate", [JSON], b'{"amount": 5, "n": "\\ud800"}', 400),
    ("declared-json-not-json", [JSON], b'{"amount": 5,}', 400),
    (
        "form-key-twice",
        [("Content-Type", "application/x-www-form-urlencoded")],
        b"amount=5&amount=50000",
        400,
    ),
    (
        "form-not-utf-8",
        [("Content-Type", "application/x-www-form-urlencoded")],
        b"amount=5&n=%ff",
        400,
    ),
    (
        "form-latin-1",
        [("Content-Type", "application/x-www-form-urlencoded; charset=iso-8859-1")],
        b"amount=5&n=caf\xe9",
        415,
    ),
    (
        "content-encoding-stacked",
        [JSON, ("Content-Encoding", "gzip, gzip")],
        gzip.compress(gzip.compress(b'{"amount": 50000}')),
        415,
    ),
    (
        "content-encoding-twice",
        [JSON, ("Content-Encoding", "gzip"), ("Content-Encoding", "gzip")],
        gzip.compress(gzip.compress(b'{"amount": 50000}')),
        415,
    ),
    ("content-encoding-unknown", [JSON, ("Content-Encoding", "compress")], b'{"amount": 5}', 415),
    (
        "content-encoding-identity-twice",
        [JSON, ("Content-Encoding", "identity, identity")],
        b'{"amount": 5}',
        415,
    ),
]


@pytest.mark.parametrize(
    ("headers", "body", "status"), [c[1:] for c in REFUSED], ids=[c[0] for c in REFUSED]
)
async def test_a_body_read_two_ways_is_refused(money, headers, body, status) -> None:
    post, seen = money
    got, answer = await post(body, headers)
    assert got == status, answer
    code = "unsupported_body_encoding" if status == 415 else "bad_request"
    assert answer["error"]["code"] == code
    assert answer["error"]["retryable"] is False
    assert "nothing was sent" in answer["error"]["message"]
    assert seen == []


PARSER_REFUSED = [
    ("two-content-types", [JSON, ("Content-Type", "text/plain")], b'{"amount": 5}'),
    # Without the Brotli package aiohttp cannot decode it; with it, the gateway refuses br.
    ("content-encoding-br", [JSON, ("Content-Encoding", "br")], b'{"amount": 5}'),
]


@pytest.mark.parametrize(
    ("headers", "body"), [c[1:] for c in PARSER_REFUSED], ids=[c[0] for c in PARSER_REFUSED]
)
async def test_what_the_http_parser_refuses_never_reaches_the_tool(money, headers, body) -> None:
    post, seen = money
    status, answer = await post(body, headers)
    assert (status, list(answer)) == (400, ["plain"])  # aiohttp's 400, before gateway code
    assert seen == []


OUT_OF_RANGE = [
    ("overflow", b'{"amount": 1e400}', "/amount"),
    ("past-i64", b'{"amount": 9223372036854775808}', "/amount"),
    ("past-u64", b'{"amount": 18446744073709551616}', "/amount"),
    ("below-i64", b'{"amount": -9223372036854775809}', "/amount"),
    ("huge-float", b'{"amount": 1.5e300}', "/amount"),
    ("underflow", b'{"amount": 5, "fee": 1e-400}', "/fee"),
    ("nested", b'{"amount": 5, "lines": [{"q": 1}, {"q": 1e999}]}', "/lines/1/q"),
]


@pytest.mark.parametrize(
    ("body", "pointer"), [c[1:] for c in OUT_OF_RANGE], ids=[c[0] for c in OUT_OF_RANGE]
)
async def test_out_of_range_numbers_are_the_agents_error_not_a_retryable_503(
    money, body, pointer
) -> None:
    post, seen = money
    status, answer = await post(body, [JSON])
    assert status == 400, answer
    assert answer["error"]["code"] == "bad_request"
    assert answer["error"]["retryable"] is False
    assert pointer in answer["error"]["message"]
    assert seen == []


@pytest.mark.parametrize("depth", [65, 20_000])
async def test_deep_json_is_refused_naming_the_limit(money, depth) -> None:
    post, seen = money
    body = b'{"amount": 5, "x": ' + b"[" * depth + b"]" * depth + b"}"
    status, answer = await post(body, [JSON])
    assert status == 400, answer
    assert "deeper than 64 levels" in answer["error"]["message"]
    assert seen == []


ACCEPTED = [
    ("utf-8", [JSON], b'{"amount": 5}', b'{"amount": 5}'),
    (
        "utf-8-declared",
        [("Content-Type", "application/json; charset=UTF-8")],
        b'{"amount": 5}',
        b'{"amount": 5}',
    ),
    (
        "quoted-charset",
        [("Content-Type", 'application/json; charset="utf-8"')],
        b'{"amount": 5}',
        b'{"amount": 5}',
    ),
    (
        "utf-16-bom",
        [("Content-Type", "application/json; charset=utf-16")],
        utf16('{"amount": 5, "n": "café"}'),
        '{"amount": 5, "n": "café"}'.encode(),
    ),
    (
        "utf-16le",
        [("Content-Type", "application/json; charset=utf-16le")],
        utf16('{"amount": 5}', "utf-16-le"),
        b'{"amount": 5}',
    ),
    (
        "utf-32be",
        [("Content-Type", "application/json; charset=UTF-32BE")],
        utf16('{"amount": 5}', "utf-32-be"),
        b'{"amount": 5}',
    ),
    (
        "latin-1-ascii-only",
        [("Content-Type", "application/json; charset=iso-8859-1")],
        b'{"amount": 5}',
        b'{"amount": 5}',
    ),
    (
        "gzip",
        [JSON, ("Content-Encoding", "gzip")],
        gzip.compress(b'{"amount": 5}'),
        b'{"amount": 5}',
    ),
    (
        "depth-64",
        [JSON],
        b'{"amount": 5, "x": ' + b"[" * 63 + b"]" * 63 + b"}",
        b'{"amount": 5, "x": ' + b"[" * 63 + b"]" * 63 + b"}",
    ),
    (
        "big-but-held",
        [JSON],
        b'{"amount": 5, "id": 9223372036854775807, "f": 1e18}',
        b'{"amount": 5, "id": 9223372036854775807, "f": 1e18}',
    ),
    (
        "form",
        [("Content-Type", "application/x-www-form-urlencoded")],
        b"amount=5&memo=a+b%21",
        b"amount=5&memo=a+b%21",
    ),
]


@pytest.mark.parametrize(
    ("headers", "body", "forwarded"), [c[1:] for c in ACCEPTED], ids=[c[0] for c in ACCEPTED]
)
async def test_the_tool_acts_on_the_value_the_policy_decided_on(
    money, headers, body, forwarded
) -> None:
    post, seen = money
    status, answer = await post(body, headers)
    assert status == 200, answer
    assert answer == {"refunded": seen[0]["parsed"]["amount"]}
    assert seen[0]["raw"] == forwarded
    assert float(seen[0]["parsed"]["amount"]) < 1000


async def test_a_transcoded_body_is_declared_utf_8(money) -> None:
    post, seen = money
    headers = [("Content-Type", "application/json; charset=utf-16; profile=x")]
    status, _ = await post(utf16('{"amount": 5}'), headers)
    assert status == 200
    assert seen[0]["content_type"] == "application/json; profile=x; charset=utf-8"


async def test_the_policy_sees_a_form_as_fields(tmp_path: Path, start_gateway) -> None:
    folder = tmp_path / "echo"
    folder.mkdir()
    (folder / "gateway.rego").write_text(
        'package gateway\n\ndecision := {"allow": false, "reason": json.marshal(input.request)}\n'
    )
    gw = await start_gateway(policy_dir=folder)
    resp = await gw.post(
        "/tools/echo/refunds",
        headers={**auth(), "Content-Type": "application/x-www-form-urlencoded"},
        data=b"amount=50000&memo=caf%C3%A9&empty=",
    )
    seen = json.loads((await resp.json())["error"]["message"])
    assert seen["form"] == {"amount": "50000", "memo": "café", "empty": ""}
    assert seen["body"] is None
