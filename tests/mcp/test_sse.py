"""Where server-sent events end, whatever the line ends and however the bytes arrive."""

from __future__ import annotations

import pytest

from gateway.mcp import sse

EVENTS = [
    'event: message\r\nid: 7\r\ndata: {"a":\r\ndata: 1}\r\n\r\n',
    'event: message\nid: 7\ndata: {"a":\ndata: 1}\n\n',
    'event: message\rid: 7\rdata: {"a":\rdata: 1}\r\r',
    ": keep-alive\r\n\r\n",
]


@pytest.mark.parametrize("event", EVENTS, ids=["crlf", "lf", "cr", "comment"])
def test_an_event_ends_at_its_blank_line_only(event: str) -> None:
    raw = event.encode()
    assert sse.next_event_end(raw + b"event: next\r\n") == len(raw)
    if "data" in event:
        assert sse.data(event) == '{"a":\n1}'


@pytest.mark.parametrize("event", EVENTS, ids=["crlf", "lf", "cr", "comment"])
def test_a_stream_cut_anywhere_gives_the_same_events(event: str) -> None:
    stream = (event * 3).encode()
    for cut in range(1, len(stream)):
        found, pending = [], b""
        for chunk in (stream[:cut], stream[cut:]):
            pending += chunk
            while (end := sse.next_event_end(pending)) >= 0:
                found.append(pending[:end])
                pending = pending[end:]
        found.append(pending)
        assert b"".join(found) == stream, "every byte passes, in order"
        datas = [sse.data(e.decode()) for e in found if e.strip()]
        assert datas == [sse.data(event)] * 3, cut


LF_ONLY = ["", "\n", "\n\n", "\n\n\n", "data: 1\n", "data: 1\n\ndata: 2\n\n", ": ping\n\n\n"]


@pytest.mark.parametrize("text", LF_ONLY)
def test_lf_only_streams_end_and_split_as_the_general_rule_says(text: str) -> None:
    # Streams without CR take a shortcut; it must find what the WHATWG rule finds.
    match = sse._EVENT_END.search(text.encode())
    assert sse.next_event_end(text.encode()) == (match.end() if match else -1)
    assert sse.lines(text) == sse._LINE_END.split(text)


def test_an_event_ending_in_cr_is_complete_without_waiting_for_more() -> None:
    # A server that ends lines with CR and then goes quiet: the event is whole already.
    assert sse.next_event_end(b"data: 1\r\r") == len(b"data: 1\r\r")
