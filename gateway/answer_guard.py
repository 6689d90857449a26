"""What of a tool's answer reaches the agent (docs/answers-and-pins.md): at most the tool's
`max_response_bytes`, and never a secret of the tool's config.

Scrubbing replaces, in the response headers and in text bodies (text/*, JSON, `+json`, SSE,
ndjson, XML, forms; an answer without a Content-Type too), every occurrence of the tool's
secrets (its credential and its `${ENV}` values, as written and as escaped in a JSON
string) and every match of its `redact_response` patterns with `[redacted]`. A streamed body
is scrubbed as it passes: the last `window - 1` bytes are held back until the next chunk,
so a secret or a match of up to `window` bytes split between two chunks is still caught.
A match never spans a line break: text up to the last one passes at once.
"""

from __future__ import annotations

import functools
import json
import re
import zlib
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass

from gateway.config import MIN_SECRET_CHARS, Tool
from gateway.errors import ErrorCode, GatewayError

REDACTED = b"[redacted]"
CREDENTIAL, PATTERN = "credential", "pattern"

# Decoded output per step of a compressed answer: a small gzip bomb never becomes one
# large buffer (the cap stops it a step after it is passed).
_DECODE_STEP = 64 * 1024

_TEXT_SUBTYPES = frozenset(
    {
        "json",
        "x-ndjson",
        "ndjson",
        "jsonl",
        "x-jsonlines",
        "xml",
        "javascript",
        "x-www-form-urlencoded",
        "graphql-response+json",
    }
)
DECODABLE = frozenset({"gzip", "x-gzip", "deflate"})


class TooLarge(GatewayError):
    def __init__(self, tool: Tool, declared: int | None = None) -> None:
        size = f" of {declared} bytes" if declared is not None else ""
        super().__init__(
            ErrorCode.UPSTREAM_RESPONSE_TOO_LARGE,
            f"tool '{tool.name}' answered with a body{size} larger than its "
            f"max_response_bytes ({tool.max_response_bytes}); the call may have taken "
            "effect, but its answer is not passed on",
        )


def check_declared(tool: Tool, content_length: int | None) -> None:
    """Refuse an answer whose Content-Length already says it is too large."""
    if content_length is not None and content_length > tool.max_response_bytes:
        raise TooLarge(tool, content_length)


async def capped(chunks: AsyncIterator[bytes], tool: Tool) -> AsyncIterator[bytes]:
    """`chunks` up to the tool's cap; TooLarge once it is passed (nothing past it is
    yielded)."""
    size, limit = 0, tool.max_response_bytes
    async for chunk in chunks:
        size += len(chunk)
        if size > limit:
            raise TooLarge(tool)
        yield chunk


async def whole(chunks: AsyncIterator[bytes], tool: Tool) -> AsyncIterator[bytes]:
    """`chunks` read whole, up to the tool's cap (else TooLarge), as one chunk."""
    body = b"".join([chunk async for chunk in capped(chunks, tool)])
    return _one(body)


async def _one(chunk: bytes) -> AsyncIterator[bytes]:
    yield chunk


def scrubbable(content_type: str) -> bool:
    """Whether a body of this media type (lower case, no parameters) is text to scrub."""
    if not content_type or content_type.startswith("text/"):
        return True
    subtype = content_type.partition("/")[2]
    return subtype in _TEXT_SUBTYPES or subtype.endswith(("+json", "+xml"))


class Redactor:
    """One tool's secrets and patterns as one regex."""

    def __init__(self, secrets: tuple[str, ...], patterns: tuple[str, ...], max_match: int):
        literal = set()
        # A match never spans a line break, so a secret of several lines (a PEM key) is
        # looked for line by line as well.
        lines = [line for s in secrets for line in s.splitlines() if len(line) >= MIN_SECRET_CHARS]
        for secret in (*secrets, *lines):
            literal.add(secret.encode())
            literal.add(json.dumps(secret, ensure_ascii=False)[1:-1].encode())
            literal.add(json.dumps(secret)[1:-1].encode())
        self.secrets = frozenset(literal)
        longest_first = sorted(self.secrets, key=len, reverse=True)
        alternatives = [re.escape(s) for s in longest_first] + [p.encode() for p in patterns]
        self.regex = re.compile(b"|".join(b"(?:" + a + b")" for a in alternatives))
        self.window = max([len(s) for s in self.secrets] + ([max_match] if patterns else []))
        # Without patterns, text holding none of the secrets needs no regex: `in` is a
        # fast search, and each secret holding a shorter one is found through it.
        self.probes = (
            None
            if patterns
            else tuple(s for s in self.secrets if not any(o != s and o in s for o in self.secrets))
        )

        self.text_probes = None if self.probes is None else tuple(p.decode() for p in self.probes)

    def _may_match(self, data: bytes) -> bool:
        return self.probes is None or any(probe in data for probe in self.probes)

    def kind(self, match: bytes) -> str:
        return CREDENTIAL if match in self.secrets else PATTERN

    def text(self, value: str, counts: dict[str, int]) -> str:
        """A header value, scrubbed."""
        probes = self.text_probes
        if probes is not None and not any(probe in value for probe in probes):
            return value
        raw = value.encode("utf-8", "surrogateescape")
        if self.regex.search(raw) is None:
            return value
        return self._sub(raw, counts).decode("utf-8", "surrogateescape")

    def _sub(self, data: bytes, counts: dict[str, int]) -> bytes:
        def replace(match: re.Match[bytes]) -> bytes:
            kind = self.kind(match.group())
            counts[kind] = counts.get(kind, 0) + 1
            return REDACTED

        return self.regex.sub(replace, data)

    async def stream(
        self, chunks: AsyncIterator[bytes], counts: dict[str, int]
    ) -> AsyncIterator[bytes]:
        """`chunks` scrubbed, holding back at most `window - 1` bytes between chunks, and
        none up to a line break (the end of an SSE event passes at once)."""
        hold = self.window - 1
        pending = b""
        async for chunk in chunks:
            data = pending + chunk
            # A match starting before `safe` lies whole in `data`: no later byte changes it;
            # nor does one before the last line break, which no match spans.
            safe = max(len(data) - hold, data.rfind(b"\n") + 1)
            if not self._may_match(data):  # the common case: nothing to replace
                pending = data[safe:]
                if safe > 0:
                    yield data[:safe]
                continue
            out: list[bytes] = []
            done = 0
            for match in self.regex.finditer(data):
                if match.start() >= safe:
                    break
                kind = self.kind(match.group())
                counts[kind] = counts.get(kind, 0) + 1
                out += (data[done : match.start()], REDACTED)
                done = match.end()
            cut = max(done, safe)
            out.append(data[done:cut])
            pending = data[cut:]
            passed = b"".join(out)
            if passed:
                yield passed
        if pending:
            yield self._sub(pending, counts)


@functools.lru_cache(maxsize=256)
def _redactor(secrets: tuple[str, ...], patterns: tuple[str, ...], window: int) -> Redactor:
    return Redactor(secrets, patterns, window)


def redactor_of(tool: Tool) -> Redactor | None:
    """The tool's redactor; None when it has nothing to scrub (no work per call then)."""
    if not tool.secrets and not tool.redact_response:
        return None
    return _redactor(tool.secrets, tool.redact_response, tool.max_match_bytes)


async def decoded(chunks: AsyncIterator[bytes], encoding: str) -> AsyncIterator[bytes]:
    """A gzip or deflate body decoded as it streams, in steps of at most _DECODE_STEP."""
    # 47: gzip or zlib by their header; deflate is sometimes sent raw (-15) instead.
    decoder = zlib.decompressobj(47 if encoding != "deflate" else 15)
    first = True
    async for chunk in chunks:
        if first and encoding == "deflate" and chunk and (chunk[0] & 0x0F) != 8:
            decoder = zlib.decompressobj(-15)  # raw deflate, no zlib header
        first = False
        data = chunk
        while data:
            piece = decoder.decompress(data, _DECODE_STEP)
            data = decoder.unconsumed_tail
            if piece:
                yield piece
    rest = decoder.flush()
    if rest:
        yield rest


@dataclass(frozen=True, slots=True)
class Scrubbing:
    """How one answer's body is scrubbed: by whom, after decoding which encoding."""

    redactor: Redactor
    encoding: str | None  # the Content-Encoding to decode first, if any

    def body(self, chunks: AsyncIterator[bytes], counts: dict[str, int]) -> AsyncIterator[bytes]:
        if self.encoding is not None:
            chunks = decoded(chunks, self.encoding)
        return self.redactor.stream(chunks, counts)


def encoding_refused(tool: Tool, encoding: str) -> GatewayError:
    return GatewayError(
        ErrorCode.UPSTREAM_UNREACHABLE,
        f"tool '{tool.name}' answered in the content encoding {encoding!r}, which the "
        "gateway cannot scrub of secrets; nothing of the answer is passed on",
    )


def scrubbed(
    tool: Tool,
    redactor: Redactor | None,
    headers: Mapping[str, str],
    body: AsyncIterator[bytes],
    counts: dict[str, int],
) -> tuple[AsyncIterator[bytes], bool]:
    """The body of an answer with these headers as it reaches the agent, and whether it
    was decoded (its Content-Encoding then goes) or changed (its Content-Length goes)."""
    content_type = headers.get("Content-Type", "").partition(";")[0].strip().lower()
    scrubbing = _body_scrubbing(tool, redactor, content_type, headers.get("Content-Encoding"))
    if scrubbing is None:
        return body, False
    return scrubbing.body(body, counts), True


def _body_scrubbing(
    tool: Tool, redactor: Redactor | None, content_type: str, encoding: str | None
) -> Scrubbing | None:
    """The scrubbing of a body with these headers; None when it passes as it is. An
    encoding other than gzip and deflate cannot be scrubbed: GatewayError."""
    if redactor is None or not scrubbable(content_type):
        return None
    encoding = (encoding or "").strip().lower() or None
    if encoding in (None, "identity"):
        return Scrubbing(redactor, None)
    if encoding not in DECODABLE:
        raise encoding_refused(tool, encoding)
    return Scrubbing(redactor, encoding)
