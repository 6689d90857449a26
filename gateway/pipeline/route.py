"""route: `/tools/{tool}/{path}` -> the tool and a safe upstream URL.

Reads the raw request target, never a decoded form, so what is checked is exactly what
is sent. Refuses with 404 `unknown_tool` for a tool that is not configured and 400
`bad_request` for any path that could leave the tool's base URL or means different things
to different parsers: absolute-form targets, `.`/`..` segments (also percent-encoded, or
with `;` parameters), empty segments (`//host`), encoded `/` or `\\`, raw `\\`, control or
non-URI characters, and double encoding of any of these. The upstream host is only ever
the configured one.
"""

from __future__ import annotations

import re
from urllib.parse import unquote

from yarl import URL

from gateway.call import Call
from gateway.errors import ErrorCode, GatewayError
from gateway.pipeline import hooks
from gateway.services import Services

PREFIX = "/tools/"

# RFC 3986 pchar plus "/" (path); percent signs are checked separately.
_PATH_CHARS = re.compile(r"^[A-Za-z0-9\-._~!$&'()*+,;=:@/%]*$")
# The query may also carry "?" and the gen-delims "[" "]" that clients commonly leave
# unencoded there (`ids[]=1`, `page[size]=10`); they mean nothing for the path.
_QUERY_CHARS = re.compile(r"^[A-Za-z0-9\-._~!$&'()*+,;=:@/?%\[\]]*$")
_BAD_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")
_ENCODED_DANGER = re.compile(r"%(2[eEfF]|5[cC]|25|00)")


def _refuse(message: str) -> GatewayError:
    return GatewayError(ErrorCode.BAD_REQUEST, message)


def _decoded_segments(raw_path: str) -> list[str]:
    """Check every segment of the raw path below the tool and return them decoded."""
    segments = raw_path.split("/")[1:]  # raw_path starts with "/" or is ""
    decoded = []
    for i, segment in enumerate(segments):
        if segment == "" and i != len(segments) - 1:
            raise _refuse("empty path segment ('//') in the tool path")
        try:
            plain = unquote(segment, errors="strict")
        except UnicodeDecodeError:
            raise _refuse("the tool path is not valid UTF-8 once percent-decoded") from None
        # `..;x` is `..` to servlet containers (Tomcat, Jetty), which drop path parameters.
        if plain.split(";", 1)[0] in (".", ".."):
            raise _refuse("'.' and '..' path segments are not allowed in the tool path")
        if "/" in plain or "\\" in plain:
            raise _refuse("encoded '/' or '\\' is not allowed in the tool path")
        if any(ord(c) < 0x20 or ord(c) == 0x7F for c in plain):
            raise _refuse("control characters are not allowed in the tool path")
        if _ENCODED_DANGER.search(plain):
            raise _refuse("double percent-encoding of '.', '/', '\\' or '%' is not allowed")
        decoded.append(plain)
    return decoded


async def run(call: Call, svc: Services) -> None:
    target = call.request.raw_path
    if not target.startswith(PREFIX):
        raise _refuse("only origin-form request targets under /tools/ are accepted")
    path_part, question, query = target.partition("?")
    if (
        not _PATH_CHARS.match(path_part)
        or not _QUERY_CHARS.match(query)
        or _BAD_PERCENT.search(target)
    ):
        raise _refuse("the request target has characters that must be percent-encoded")
    tool_name, slash, below = path_part[len(PREFIX) :].partition("/")
    tool = svc.tools.get(tool_name)
    if tool is None:
        raise GatewayError(
            ErrorCode.UNKNOWN_TOOL,
            f"no tool named '{tool_name}' is configured on this gateway; "
            "call tools as /tools/<tool>/<path>",
        )
    call.tool = tool
    raw_below = hooks.of(call).below_tool(call, slash + below)
    call.path = "/" + "/".join(_decoded_segments(raw_below))
    call.upstream_url = URL(tool.upstream + raw_below + question + query, encoded=True)
