"""Fuzz: request headers through a real gateway.

Names are drawn from the tokens HTTP allows (underscores, method-override, forwarding,
credential and hop-by-hop names included), in any case and repeated; values from visible
text. A call the gateway forwards must show the policy exactly the headers the tool reads,
minus those the gateway documents as its own (docs/policies.md, "Input";
docs/configuration.md, "tools[].forwarded_headers"); anything else is the gateway's JSON error.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, note
from hypothesis import strategies as st
from multidict import CIMultiDict

from tests.support.fuzz import check_http_answer, exchange, fuzz
from tests.support.gateway import auth

_TCHAR = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
_NAMED = [
    "X-HTTP-Method-Override",
    "X_HTTP_Method_Override",
    "X-Method-Override",
    "X_Method_Override",
    "X-HTTP-Method",
    "X-Forwarded-For",
    "X_Forwarded_For",
    "X-Forwarded-Host",
    "X-Forwarded-Proto",
    "Forwarded",
    "X-Real-IP",
    "X-Original-URL",
    "X-Rewrite-URL",
    "Cookie",
    "X-Api-Key",
    "Api-Key",
    "X-Auth-Token",
    "Proxy-Authorization",
    "Connection",
    "Keep-Alive",
    "TE",
    "Trailer",
    "Upgrade",
    "Via",
    "X-Agent-Session",
    "X-Agent-Model",
    "X-Request-Id",
    "traceparent",
    "Prefer",
    "Accept",
    "Accept-Encoding",
    "Content-Type",
    "Idempotency-Key",
    "User-Agent",
]


def _cased(name: str, upper: list[bool]) -> str:
    return "".join(
        c.upper() if i < len(upper) and upper[i] else c.lower() for i, c in enumerate(name)
    )


header_name = st.one_of(
    st.text(alphabet=_TCHAR, min_size=1, max_size=20),
    st.tuples(st.sampled_from(_NAMED), st.lists(st.booleans(), max_size=24)).map(
        lambda pair: _cased(*pair)
    ),
)
# Visible text with inner spaces and tabs; CR, LF and NUL cannot be sent in a header.
header_value = st.text(
    alphabet=st.characters(
        exclude_categories=("Cs", "Cc"), include_characters="\t", exclude_characters="\x7f"
    ),
    max_size=40,
) | st.sampled_from(["", " x ", "close", "keep-alive, X-Agent-Model", "1.2.3.4", "wait=0"])
headers_list = st.lists(st.tuples(header_name, header_value), max_size=12)


@fuzz(examples=3000)
@given(headers=headers_list, verb=st.sampled_from(["GET", "POST", "DELETE"]))
async def test_headers_reach_the_tool_as_decided_or_are_refused(
    fuzz_gateway: Any, headers: list[tuple[str, str]], verb: str
) -> None:
    note(f"{verb} {headers!r}")
    fg = await fuzz_gateway()
    sent = CIMultiDict(auth())
    for name, value in headers:
        sent.add(name, value)
    check_http_answer(fg, await exchange(fg, verb, "/tools/echo/h", headers=sent))
