"""What a request body means, read exactly as the tool will read it, or refused.

The policy must decide on the value the tool acts on. Parsers disagree on charsets,
byte-order marks, duplicate keys, `NaN`, huge numbers, repeated form keys and content
encodings, so every body the gateway could read one way and a tool another is refused:
- a body is read as UTF-8. A declared `charset` of UTF-16 or UTF-32 (with a byte-order
  mark, or an explicit `le`/`be`) is transcoded to UTF-8, and the UTF-8 bytes are what is
  decided on and forwarded (`Content-Type` rewritten). Any other charset that reads the
  bytes differently from UTF-8 is 415 `unsupported_body_encoding` when the body is JSON or
  a form under either reading; otherwise the body is opaque to the policy (null);
- a UTF-8 byte-order mark, or JSON in UTF-16/32 without a declared charset: 415;
- a `Content-Encoding` other than one `gzip`, `deflate` (or `identity`) that the server
  decodes: 415 (the decoded body is what is decided on and forwarded);
- JSON: nested deeper than `protection.max_json_depth`, an object with a key twice, `NaN`
  or `Infinity`, half a surrogate pair, a number the policy engine cannot hold (see
  json_bounds), or a body declared JSON that is not: 400 `bad_request`;
- a form (`application/x-www-form-urlencoded`) with a key twice, or not UTF-8 once
  percent-decoded: 400. Its fields are the policy's `request.form`.
A body that is JSON under no declared type is still JSON to the policy: many servers parse
it whatever the type says.
"""

from __future__ import annotations

import codecs
import json
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import web
from aiohttp.helpers import parse_mimetype

from gateway import json_bounds
from gateway.errors import ErrorCode, GatewayError

# Charsets read as UTF-8 (ASCII is a subset: its bytes must then all be ASCII).
_UTF8_NAMES = frozenset({"utf-8", "utf8"})
_ASCII_NAMES = frozenset({"us-ascii", "ascii"})
# Transcoded to UTF-8. Plain "utf-16"/"utf-32" only with a byte-order mark: without one
# RFC 2781 says big-endian and Python reads little-endian.
_WIDE = {
    "utf-16le": "utf-16-le",
    "utf-16be": "utf-16-be",
    "utf-32le": "utf-32-le",
    "utf-32be": "utf-32-be",
}
_WIDE_BOMS = {
    "utf-16": (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE),
    "utf-32": (codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE),
}
# Decoded by aiohttp's server before the body is read (a single one, never a list).
_DECODED_ENCODINGS = frozenset({"gzip", "deflate", "identity"})
FORM = "application/x-www-form-urlencoded"
# `\ud800`-`\udfff`: the only escapes that can leave half a character.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
ADMIN_JSON_DEPTH = 16  # an admin body is a flat object: {"comment": …}, {"reason": …}


@dataclass(frozen=True, slots=True)
class Body:
    data: bytes  # what is forwarded: the body as received, or transcoded to UTF-8
    json: Any  # the parsed JSON body, or None
    form: dict[str, str] | None  # a form body's fields, or None
    content_type: str | None  # the rewritten Content-Type after transcoding, else None


def _unsupported(message: str) -> GatewayError:
    return GatewayError(ErrorCode.UNSUPPORTED_BODY_ENCODING, message + "; nothing was sent")


def _bad(message: str) -> GatewayError:
    return GatewayError(ErrorCode.BAD_REQUEST, message + "; nothing was sent")


class _Duplicate(ValueError):
    pass


class _Constant(ValueError):
    pass


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise _Duplicate
    return obj


def _reject_constant(name: str) -> None:
    raise _Constant(name)


def _is_json(text: str | bytes) -> bool:
    """Whether a lenient reader (Python's, which also reads NaN and keys twice) takes it.
    A text too deep for it is JSON to a reader without that bound."""
    try:
        json.loads(text)
    except ValueError:
        return False
    except RecursionError:
        pass
    return True


def _decode(data: bytes, charset: str) -> str | None:
    try:
        return data.decode(charset)
    except (LookupError, ValueError):  # some codecs raise UnicodeError itself (punycode)
        return None


def check_content_encoding(encodings: list[str]) -> None:
    """Refuse content encodings the server did not decode (unknown, stacked, repeated)."""
    if not encodings:
        return
    # As aiohttp's parser compares it: lower-cased, nothing stripped (" gzip" is not decoded).
    if len(encodings) > 1 or encodings[0].lower() not in _DECODED_ENCODINGS:
        raise _unsupported(
            "the body's Content-Encoding must be one of gzip or deflate, applied once "
            f"(got {', '.join(encodings)!r})"
        )


def _media(content_types: list[str]) -> tuple[str, str | None]:
    """(media type, charset) of the body."""
    if not content_types:
        return "", None
    if len(content_types) > 1:
        raise _bad("the request has more than one Content-Type header; send one")
    mime = parse_mimetype(content_types[0])
    charsets = mime.parameters.getall("charset", [])
    if len(charsets) > 1:
        raise _unsupported("the Content-Type names more than one charset")
    media = f"{mime.type}/{mime.subtype}".lower()
    if mime.suffix:
        media += "+" + mime.suffix.lower()
    charset = charsets[0].strip().strip('"').lower() if charsets else None
    return media, charset


def _is_json_media(media: str) -> bool:
    return media.endswith("/json") or media.endswith("+json")


def _to_utf8(data: bytes, media: str, charset: str | None) -> tuple[bytes, bool]:
    """The body as UTF-8 bytes, and whether it was transcoded; raises on a differential."""
    if charset is None or charset in _UTF8_NAMES:
        return data, False
    if charset in _ASCII_NAMES:
        if not data.isascii():
            raise _unsupported("the body is declared US-ASCII but holds other bytes")
        return data, False
    codec = _WIDE.get(charset)
    if codec is None and charset in _WIDE_BOMS:
        if not data.startswith(_WIDE_BOMS[charset]):
            raise _unsupported(
                f"a {charset.upper()} body needs a byte-order mark (or declare "
                f"{charset}le or {charset}be); better, send UTF-8"
            )
        codec = charset
    if codec is not None:
        text = _decode(data, codec)
        if text is None:
            raise _unsupported(f"the body is not valid {charset.upper()}")
        return text.removeprefix("\ufeff").encode("utf-8"), True
    declared, as_utf8 = _decode(data, charset), _decode(data, "utf-8")
    if declared is not None and declared == as_utf8:
        return data, False  # the charset reads these bytes as UTF-8 does
    structured = _is_json_media(media) or media == FORM
    if structured or any(text is not None and _is_json(text) for text in (declared, as_utf8)):
        raise _unsupported(
            f"the body is declared in charset {charset!r}, which tools read differently "
            "from UTF-8; send JSON and forms as UTF-8"
        )
    return data, False  # opaque text in its own charset: the policy sees no value


def _parse_json(data: bytes, media: str, max_depth: int) -> Any:
    if data.startswith(codecs.BOM_UTF8):
        if _is_json_media(media) or _is_json(data[3:]):
            raise _unsupported("the JSON body starts with a byte-order mark; send it without")
        return None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        # Python's json.loads(bytes) reads UTF-16 and UTF-32 by their zero bytes.
        if _is_json_media(media) or _is_json(data):
            raise _unsupported("the JSON body is not UTF-8; send it as UTF-8") from None
        return None
    try:
        value = json_bounds.loads(
            text,
            max_depth,
            object_pairs_hook=_unique_keys,
            parse_constant=_reject_constant,
            **json_bounds.strict_numbers,
        )
    except json_bounds.TooDeep:
        raise _bad(f"the JSON body is nested deeper than {max_depth} levels") from None
    except json_bounds.OutOfRange:
        pointer = json_bounds.out_of_range_pointer(text)
        if pointer is None:
            return _not_json(media)
        raise _bad(
            f"the number at {pointer} in the JSON body is out of range: numbers must be "
            "finite, below 2**63 in magnitude, and integers must fit in 64 bits"
        ) from None
    except _Duplicate:
        raise _bad(
            "the JSON body has an object with the same key twice; send each key once"
        ) from None
    except _Constant as constant:
        raise _bad(
            f"the JSON body holds {constant}, which is not JSON; send a number or null"
        ) from None
    except ValueError:
        return _not_json(media)
    if _SURROGATE_ESCAPE.search(text) and not is_unicode(json.dumps(value, ensure_ascii=False)):
        raise _bad(
            "the JSON body escapes half of a UTF-16 surrogate pair (such as \\ud83d alone); "
            "send whole characters"
        )
    return value


def _not_json(media: str) -> None:
    """A body that does not parse: opaque to the policy, unless it says it is JSON."""
    if _is_json_media(media):
        raise _bad("the body is declared as JSON but is not valid JSON")


def _parse_form(data: bytes) -> dict[str, str]:
    try:
        pairs = parse_qsl(
            data.decode("utf-8"), keep_blank_values=True, encoding="utf-8", errors="strict"
        )
    except UnicodeDecodeError:
        raise _bad("the form body is not UTF-8 once percent-decoded") from None
    form = dict(pairs)
    if len(form) != len(pairs):
        raise _bad("the form body has the same field twice; send each field once")
    return form


def is_unicode(text: str) -> bool:
    """False for strings holding lone surrogates: invalid Unicode, which the policy engine,
    the store and the tool could each read differently (regorus crashes on them)."""
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def read(data: bytes, content_types: list[str], max_depth: int) -> Body:
    """The body as the policy sees it and the tool gets it; raises GatewayError (400, 415).
    The caller has checked the content encoding (check_content_encoding) before reading."""
    if not data:
        return Body(data, None, None, None)
    media, charset = _media(content_types)
    data, transcoded = _to_utf8(data, media, charset)
    value = _parse_json(data, media, max_depth)
    form = _parse_form(data) if media == FORM else None
    content_type = _utf8_type(content_types[0]) if transcoded else None
    return Body(data, value, form, content_type)


def _utf8_type(sent: str) -> str:
    """`sent` with its charset parameter replaced by utf-8, its other parameters kept."""
    kept = [p for p in sent.split(";")[1:] if p.split("=", 1)[0].strip().lower() != "charset"]
    return ";".join([sent.split(";", 1)[0].strip(), *kept, " charset=utf-8"])


async def admin_json(request: web.Request) -> Any:
    """An admin request's JSON body, read under the rules of an agent's; None when it has
    none or it is not JSON. Raises GatewayError (400, 415)."""
    if not request.can_read_body:
        return None
    check_content_encoding(request.headers.getall("Content-Encoding", []))
    data = await request.read()
    return read(data, request.headers.getall("Content-Type", []), ADMIN_JSON_DEPTH).json
