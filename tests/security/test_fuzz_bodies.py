"""Fuzz: request bodies through a real gateway: JSON values written in many ways, under
many content types, charsets and content encodings, and bytes that are almost JSON.

When the tool (an aiohttp app calling `await request.json()`, which honours the charset)
reads a JSON value, the policy must have seen that same value (docs/policies.md,
"Input"); otherwise the gateway refuses with its JSON error (400, 413,
415), never a 5xx.
"""

from __future__ import annotations

import gzip
import json
import zlib
from typing import Any

from hypothesis import given, note
from hypothesis import strategies as st

from tests.support.fuzz import check_http_answer, exchange, fuzz
from tests.support.gateway import auth

json_scalar = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=12),
)
json_value = st.recursive(
    json_scalar,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=12,
)

# What a parser may read differently: spelled out after a JSON text has been written.
_ODD_TEXTS = [
    '{"amount": 5, "amount": 50000}',
    '{"a": NaN}',
    '{"a": Infinity}',
    '{"a": -Infinity}',
    '{"a": 1e400}',
    '{"a": 1e-400}',
    '{"a": 123456789012345678901234567890}',
    '{"a": 9007199254740993}',
    '{"a": "\\ud800"}',
    '{"a": "\\udc00\\ud800"}',
    '{"a": "\\u0000"}',
    "[" * 70 + "]" * 70,
    "[" * 64 + "]" * 64,
    '{"a": 1} ',
    '{"a": 1}\x00',
    '{"a": 1}{"b": 2}',
    '\ufeff{"a": 1}',
    "+AHsAIgBh-",
    "{'a': 1}",
    "[1,]",
    "",
    " ",
    "null",
]


@st.composite
def json_texts(draw: Any) -> str:
    if draw(st.integers(0, 4)) == 0:
        return draw(st.sampled_from(_ODD_TEXTS))
    value = draw(json_value)
    return json.dumps(
        value,
        ensure_ascii=draw(st.booleans()),
        indent=draw(st.sampled_from([None, None, 1])),
        sort_keys=draw(st.booleans()),
    )


_CHARSETS = [
    *[""] * 8,
    *["; charset=utf-8"] * 4,
    "; charset=UTF-8",
    '; charset="utf-8"',
    "; charset=us-ascii",
    "; charset=utf-16",
    "; charset=utf-16le",
    "; charset=utf-32",
    "; charset=latin-1",
    "; charset=iso-8859-1",
    "; charset=utf-7",
    "; charset=cp1252",
    "; charset=x-unknown",
    "; charset=utf-8; charset=utf-7",
]
_TYPES = [
    "application/json",
    "application/json",
    "application/vnd.api+json",
    "text/plain",
    "application/x-www-form-urlencoded",
    "application/octet-stream",
    "text/html",
    None,
]
_ENCODINGS = [
    "utf-8",
    "utf-8",
    "utf-8",
    "utf-8-sig",
    "utf-16",
    "utf-16-le",
    "utf-32",
    "latin-1",
    "utf-7",
]
_CONTENT_ENCODINGS = [
    *[None] * 8,
    "gzip",
    "deflate",
    "identity",
    "gzip-but-plain",
    "x-gzip",
    "compress",
    "br, gzip",
]


def _compressed(body: bytes, coding: str | None) -> tuple[bytes, str | None]:
    if coding == "gzip":
        return gzip.compress(body), "gzip"
    if coding == "deflate":
        return zlib.compress(body), "deflate"
    if coding == "gzip-but-plain":
        return body, "gzip"
    return body, coding


@fuzz(examples=3000)
@given(
    text=json_texts(),
    media_type=st.sampled_from(_TYPES),
    charset=st.sampled_from(_CHARSETS),
    encoding=st.sampled_from(_ENCODINGS),
    content_encoding=st.sampled_from(_CONTENT_ENCODINGS),
    verb=st.sampled_from(["POST", "PUT", "PATCH"]),
)
async def test_bodies_reach_the_tool_as_decided_or_are_refused(
    fuzz_gateway: Any,
    text: str,
    media_type: str | None,
    charset: str,
    encoding: str,
    content_encoding: str | None,
    verb: str,
) -> None:
    body = (
        text.encode(encoding, errors="surrogatepass")
        if encoding != "latin-1"
        else text.encode("latin-1", errors="replace")
    )
    data, coding = _compressed(body, content_encoding)
    headers = auth()
    if media_type is not None:
        headers["Content-Type"] = media_type + charset
    if coding is not None:
        headers["Content-Encoding"] = coding
    note(f"{verb} {headers} {data!r}")
    fg = await fuzz_gateway()
    skip = () if media_type is not None else ("Content-Type",)
    answer = await exchange(
        fg, verb, "/tools/echo/b", headers=headers, data=data, skip_auto_headers=skip
    )
    check_http_answer(fg, answer)
