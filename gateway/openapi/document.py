"""Reading an OpenAPI 3.0 or 3.1 document: from a file or an http(s) URL, as YAML or JSON,
checked enough that every later step can trust its shape, with one `SpecError` naming
every problem found.

An OpenAPI 3.0 document's schemas are written in its own JSON Schema dialect; they are
rewritten here into JSON Schema 2020-12 (what 3.1 uses), so one validator serves both:
`nullable: true` adds "null" to the type (or, without a type, allows null besides the
schema, as documents such as GitHub's mean it), boolean `exclusiveMinimum`/
`exclusiveMaximum` become the numeric forms.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import yaml

FETCH_TIMEOUT_S = 10
MAX_DOCUMENT_BYTES = 16 * 1024 * 1024
METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


class SpecError(Exception):
    """Documents that cannot be used; `problems` has one line per problem, each starting
    with the document it is about."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems

    @classmethod
    def at(cls, source: str, problems: list[str]) -> SpecError:
        return cls([f"{source}: {problem}" for problem in problems])


def is_url(source: str) -> bool:
    return urlsplit(source).scheme in ("http", "https")


async def read_source(source: str) -> str:
    """The document's text, from a file or an http(s) URL."""
    if not is_url(source):
        try:
            return Path(source).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise SpecError.at(source, [f"cannot read the OpenAPI document: {exc}"]) from None
    try:
        timeout = aiohttp.ClientTimeout(total=FETCH_TIMEOUT_S)
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.get(source) as response,
        ):
            if response.status != 200:
                raise SpecError.at(source, [f"fetching the OpenAPI document got {response.status}"])
            body = await response.content.read(MAX_DOCUMENT_BYTES + 1)
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        raise SpecError.at(
            source, [f"cannot fetch the OpenAPI document: {type(exc).__name__} {exc}"]
        ) from None
    if len(body) > MAX_DOCUMENT_BYTES:
        raise SpecError.at(source, [f"the OpenAPI document is over {MAX_DOCUMENT_BYTES} bytes"])
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        raise SpecError.at(source, ["the OpenAPI document is not UTF-8"]) from None


def parse(source: str, text: str) -> dict[str, Any]:
    """The document as JSON Schema 2020-12 where it holds schemas; SpecError if unusable."""
    try:
        document = yaml.safe_load(text)  # JSON is YAML too
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise SpecError.at(source, [f"not valid YAML or JSON{where}"]) from None
    if not isinstance(document, dict):
        raise SpecError.at(source, ["an OpenAPI document must be a mapping"])
    _check(source, document)
    # YAML may give keys and values JSON cannot hold (dates, integer keys): as JSON text.
    plain: dict[str, Any] = json.loads(json.dumps(document, default=str))
    if plain["openapi"].startswith("3.0"):
        plain = _from_openapi_30(plain)
    return plain


def _check(source: str, document: dict[str, Any]) -> None:
    problems = []
    version = document.get("openapi")
    if not isinstance(version, str) or not version.startswith(("3.0.", "3.1.")):
        found = "none" if version is None else repr(version)
        problems.append(f"openapi: must be a 3.0.x or 3.1.x version (found {found})")
    paths = document.get("paths", {})
    if not isinstance(paths, dict):
        problems.append("paths: must be a mapping of path templates")
        paths = {}
    seen_ids: dict[str, str] = {}
    for template, item in paths.items():
        where = f"paths.{template}"
        if not isinstance(template, str) or not template.startswith("/"):
            problems.append(f"{where}: a path template must start with '/'")
        if not isinstance(item, dict):
            problems.append(f"{where}: must be a path item (a mapping)")
            continue
        for method in METHODS:
            operation = item.get(method)
            if operation is None:
                continue
            if not isinstance(operation, dict):
                problems.append(f"{where}.{method}: must be an operation (a mapping)")
                continue
            op_id = operation.get("operationId")
            if op_id is None:
                continue
            if not isinstance(op_id, str):
                problems.append(f"{where}.{method}.operationId: must be a string")
            elif op_id in seen_ids:
                problems.append(
                    f"{where}.{method}.operationId: {op_id!r} is also the id of {seen_ids[op_id]}"
                )
            else:
                seen_ids[op_id] = f"{method.upper()} {template}"
    servers = document.get("servers", [])
    if not isinstance(servers, list) or not all(
        isinstance(s, dict) and isinstance(s.get("url"), str) for s in servers
    ):
        problems.append("servers: must be a list of {url: ...}")
    if problems:
        raise SpecError.at(source, problems)


def _from_openapi_30(node: Any) -> Any:
    """An OpenAPI 3.0 document with its schema keywords in JSON Schema 2020-12 terms. Every
    mapping is looked at: outside schemas these keys do not occur."""
    if isinstance(node, list):
        return [_from_openapi_30(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: _from_openapi_30(value) for key, value in node.items()}
    if out.get("nullable") is True and "type" not in out:
        del out["nullable"]
        return {"anyOf": [out, {"type": "null"}]}
    if out.get("nullable") is True:
        kind = out["type"]
        kinds = kind if isinstance(kind, list) else [kind]
        out["type"] = [*kinds, "null"] if "null" not in kinds else kinds
        if "enum" in out and None not in out["enum"]:
            out["enum"] = [*out["enum"], None]
    for exclusive, bound in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        # `exclusiveMinimum: true` makes `minimum` exclusive; `false` means nothing.
        if isinstance(out.get(exclusive), bool) and out.pop(exclusive) and bound in out:
            out[exclusive] = out.pop(bound)
    return out
