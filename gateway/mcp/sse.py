"""Server-sent events as MCP servers send them (the WHATWG rules that matter here): an
event ends at a blank line, lines end at CRLF, LF or CR, and `data:` lines, joined by
newlines, hold one JSON-RPC message. Other Unicode line breaks (U+2028...) are not line
ends: MCP servers put them raw inside JSON strings."""

from __future__ import annotations

import re

_LINE_END = re.compile(r"\r\n|\r|\n")
# A CR is a line end of its own unless an LF follows it. A CR at the end of the bytes so
# far ends its line at once (a server that ends lines with CR may then go quiet); should
# the next bytes bring its LF, that LF is an empty line, which SSE ignores.
_BYTE_LINE_END = rb"(?:\r\n|\r(?!\n)|\n)"
_EVENT_END = re.compile(_BYTE_LINE_END + _BYTE_LINE_END)


def lines(event: str) -> list[str]:
    if "\r" not in event:  # the common case: LF only, a plain split is the same
        return event.split("\n")
    return _LINE_END.split(event)


def data(event: str) -> str | None:
    """The event's data, or None when it has no `data:` line."""
    found = [line[5:].removeprefix(" ") for line in lines(event) if line.startswith("data:")]
    return "\n".join(found) if found else None


def next_event_end(buffer: bytes) -> int:
    """Where the first complete event in `buffer` ends (after its blank line), or -1."""
    if b"\r" not in buffer:  # the common case: LF only, the blank line is b"\n\n"
        end = buffer.find(b"\n\n")
        return end + 2 if end >= 0 else -1
    match = _EVENT_END.search(buffer)
    return match.end() if match else -1


def events(body: str) -> list[str]:
    """The events of a whole stream."""
    found, rest = [], body.encode()
    while (end := next_event_end(rest)) >= 0:
        found.append(rest[:end].decode())
        rest = rest[end:]
    if rest.strip():
        found.append(rest.decode())
    return found
