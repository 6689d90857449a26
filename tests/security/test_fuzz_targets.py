"""Fuzz: request targets (tool name, path and query) through a real gateway.

Every answer is either the tool's (and then the policy saw the method, path and query the
tool read) or the gateway's JSON error, never a 5xx (see docs/errors.md, "Errors the gateway
returns"); the tool's upstream base path is never left.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from hypothesis import given
from hypothesis import strategies as st

from tests.support.fuzz import check_http_answer, exchange, fuzz
from tests.support.gateway import auth

# RFC 3986 pchar (unreserved, sub-delims, ":" and "@"), one at a time.
_PCHAR = list("aZ09-._~!$&'()*+,;=:@")
# Printable ASCII a client may send raw although it must be percent-encoded.
_RAW_ODD = list('\\"<>^`{|}[]?')
_TRICKS = [".", "..", "..;x", ";", "%2e", "%2E%2e", "%2f", "%5C", "%25", "%252e", "%2525"]
_TRICKS += ["%00", "%0a", "%7f", "%c3%a9", "%e2%80%ae", "%ef%bc%8e", "%ff", "%c0%ae", "%", "%g1"]

percent_byte = st.integers(0, 255).map(lambda b: f"%{b:02X}")
# A whole character, percent-encoded as UTF-8 (`%C3%A9`): valid, unlike most single bytes.
percent_char = st.characters(exclude_categories=("Cs",)).map(lambda c: quote(c, safe=""))
plain_segment = st.text(alphabet="".join(_PCHAR), max_size=8)
tricky_segment = st.lists(
    st.sampled_from(_PCHAR) | percent_char | percent_byte | st.sampled_from(_TRICKS + _RAW_ODD),
    min_size=1,
    max_size=6,
).map("".join)
# Mostly plain, so that many examples reach the tool and the two views can be compared.
segment = st.one_of(*[plain_segment] * 3, percent_char, tricky_segment)
path = st.lists(segment, max_size=5).map(lambda segments: "".join("/" + s for s in segments))

_QCHAR = "".join([*_PCHAR, "/", "?", "+", "[", "]"])
_QUERY_TRICKS = ["%20", "%2B", "%26", "%3D", "%3B", "%23", *_TRICKS]
query_word = st.one_of(
    st.text(alphabet=_QCHAR.replace("&", "").replace("=", ""), max_size=6),
    st.lists(
        st.sampled_from(list(_QCHAR))
        | percent_char
        | percent_byte
        | st.sampled_from(_QUERY_TRICKS),
        max_size=5,
    ).map("".join),
)
query_pair = st.tuples(query_word, st.sampled_from(["=", ""]), query_word).map("".join)
query = st.lists(query_pair, max_size=4).map("&".join)

tool_name = st.sampled_from(["echo"] * 40 + ["Echo", "echo.", "nope", "ech%6f", ""])
method = st.sampled_from(["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"])


@st.composite
def targets(draw: Any) -> str:
    target = "/tools/" + draw(tool_name) + draw(path)
    if draw(st.booleans()):
        target += "?" + draw(query)
    return target


@fuzz(examples=3000)
@given(verb=method, target=targets())
async def test_targets_reach_the_tool_as_decided_or_are_refused(
    fuzz_gateway: Any, verb: str, target: str
) -> None:
    fg = await fuzz_gateway()
    check_http_answer(fg, await exchange(fg, verb, target, headers=auth()))
