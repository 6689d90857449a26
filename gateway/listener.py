"""The agent listener's connections: how long a request head may take and how big it may
be (see docs/limits.md, Connections and fairness).

aiohttp closes a connection idle between requests after `keepalive_timeout` and its
parser counts headers (`max_headers`) and the bytes of each (`max_field_size`); it has no
bound on the time to send a head, nor on a head's bytes all together. This handler adds
both: a connection must send its first request head within `protection.header_timeout_s`
of connecting, and every later head within that time of its first byte, or it is closed;
a head whose header lines together pass `protection.max_header_bytes` is answered 431
and the connection closed. These refusals, and the parser's own for too many headers or
one too long (also 431), happen before any gateway code sees the request: they are
plain-text answers in aiohttp's form, not the gateway's JSON, and write no audit record
(nothing of the call was accepted).

It uses a few of aiohttp's RequestHandler internals (`_request_count`, `_messages`,
`_waiter`, `_request_in_progress`, `_ErrInfo`: a 431 is queued the way aiohttp queues a
head its parser refused); tests/security/test_listener.py pins the behaviour.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage, HttpProcessingError, LineTooLong
from aiohttp.http_parser import RawRequestMessage
from aiohttp.streams import EMPTY_PAYLOAD
from aiohttp.web_protocol import RequestHandler, _ErrInfo
from aiohttp.web_request import BaseRequest

from gateway.config import Protection

log = logging.getLogger(__name__)


class HeadersTooLarge(HttpProcessingError):
    code = 431


def _header_bytes(message: RawRequestMessage) -> int:
    """The header lines of a parsed head, as sent: `name: value` and CRLF each."""
    return sum(len(name) + len(value) + 4 for name, value in message.raw_headers)


class GuardedHandler(RequestHandler):
    """One agent connection: aiohttp's handler with a deadline and a size cap per head."""

    __slots__ = ("_head_bytes", "_head_timeout_s", "_head_timer", "_max_head_bytes", "_refused")

    def __init__(self, manager: web.Server, *, protection: Protection, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._head_timeout_s = protection.header_timeout_s
        self._max_head_bytes = protection.max_header_bytes
        self._head_timer: asyncio.TimerHandle | None = None
        self._head_bytes = 0
        self._refused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: BaseException | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:  # the 431 is on its way and the connection closes after it
            return
        # Bytes that come while no request is parsed, queued or being handled begin a
        # new head (or, rarely, end the body of a request whose handler did not read it).
        awaiting = self._head_timer is not None or (
            not self._request_in_progress and not self._messages
        )
        heads = self._request_count
        super().data_received(data)
        parsed = self._request_count - heads
        if parsed:
            self._disarm()
            self._check_parsed(parsed)
            return
        if not awaiting or not data:
            return
        if self._head_timer is None:
            self._arm()
        self._head_bytes += len(data)
        # Not parsed yet: the request line may be up to max_line_size on top.
        if self._head_bytes > self._max_head_bytes + self.max_line_size:
            self._refuse(len(self._messages))

    def _check_parsed(self, parsed: int) -> None:
        """The heads parsed just now are each within max_header_bytes, or refused."""
        first = len(self._messages) - parsed
        for index in range(max(first, 0), len(self._messages)):
            message = self._messages[index][0]
            if isinstance(message, RawRequestMessage) and (
                _header_bytes(message) > self._max_head_bytes
            ):
                self._refuse(index)
                return

    def _refuse(self, index: int) -> None:
        """Answer 431 in place of the request at `index` of the queue (the ones after it
        are dropped: the connection closes after the answer), as aiohttp answers a head
        its parser refuses."""
        self._disarm()
        self._refused = True
        while len(self._messages) > index:
            self._messages.pop()
        detail = (
            f"the request's header lines are over {self._max_head_bytes} bytes together"
            " (protection.max_header_bytes)"
        )
        error = _ErrInfo(status=431, exc=HeadersTooLarge(message=detail), message=detail)
        self._messages.append((error, EMPTY_PAYLOAD))
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """Heads too big are 431, whether the parser refused them (too many headers, or
        one too long) or this handler did; they are not logged as errors with a
        traceback each (an agent could flood the log with them)."""
        if status == 431 or (status == 400 and self._parser_too_large(exc)):
            log.debug("request headers too large", extra={"client": request.remote})
            response = web.Response(
                status=431,
                text=f"431 Request Header Fields Too Large\n\n{message or exc}\n",
                content_type="text/plain",
            )
            response.force_close()
            return response
        return super().handle_error(request, status, exc, message)

    def _parser_too_large(self, exc: BaseException | None) -> bool:
        if isinstance(exc, LineTooLong):  # a header line, not the request line
            return bool(exc.args[1:2] == (self.max_field_size,))
        return isinstance(exc, BadHttpMessage) and "Too many headers" in str(exc)

    def _arm(self) -> None:
        self._head_bytes = 0
        self._head_timer = self._loop.call_later(self._head_timeout_s, self._head_late)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        self._head_bytes = 0

    def _head_late(self) -> None:
        self._head_timer = None
        if not self._request_in_progress and not self._messages:
            self.force_close()


class _GuardedServer(web.Server):
    def __init__(self, *args: Any, protection: Protection, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._protection = protection

    def __call__(self) -> RequestHandler:
        return GuardedHandler(self, loop=self._loop, protection=self._protection, **self._kwargs)


class AgentRunner(web.AppRunner):
    """An AppRunner whose connections are GuardedHandlers."""

    def __init__(self, app: web.Application, protection: Protection, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self._protection = protection

    async def _make_server(self) -> web.Server:
        plain = await super()._make_server()  # starts the app; its server is replaced
        return _GuardedServer(
            plain.request_handler,
            request_factory=plain.request_factory,
            handler_cancellation=plain.handler_cancellation,
            loop=asyncio.get_running_loop(),
            protection=self._protection,
            **plain._kwargs,
        )
