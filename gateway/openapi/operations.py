"""A tool's OpenAPI document compiled once into what each call needs: a path table, and
per operation its parameter readers and JSON Schema validators (jsonschema-rs, built once;
the document itself is their one registry resource, so `$ref`s resolve as written).

`Spec.resolve` is the per-call work: which operation a call is, its parameters typed, and
what is wrong with it (JSON pointers into `/path`, `/query`, `/header`, `/body`, with
messages a model can correct from). `Spec.check_answer` does the same for the tool's
answer (`/status`, `/content-type`, `/body`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import jsonschema_rs
import orjson

from gateway.openapi.document import METHODS, SpecError, parse
from gateway.openapi.params import Reader, reader_for
from gateway.openapi.paths import PathTable

URI = "urn:callgate:openapi"  # where the document sits in its validators' registry
MAX_PROBLEMS = 5  # named in a refusal; the rest are counted
MAX_LISTED = 10  # paths or operations listed in a message
LOCATIONS = ("path", "query", "header")
# Header parameters OpenAPI says to ignore (the gateway sets or owns them anyway).
_IGNORED_HEADERS = frozenset({"accept", "content-type", "authorization"})


MAX_MESSAGE = 300  # characters of one message (they may quote the value)


@dataclass(frozen=True, slots=True)
class Problem:
    pointer: str  # a JSON pointer into {"path", "query", "header", "body"} or the answer
    message: str  # for the model; may quote the value it is about
    keyword: str  # what failed (`minimum`, `required`, `path`), never the value

    def as_json(self) -> dict[str, str]:
        return {"pointer": self.pointer, "message": self.message}

    def __str__(self) -> str:
        return f"{self.pointer}: {self.message}"


@dataclass(frozen=True, slots=True)
class Parameter:
    name: str  # as the policy sees it: header names in lower case
    location: str
    required: bool
    reader: Reader


@dataclass(slots=True)
class Operation:
    id: str
    method: str
    template: str
    tags: list[str]
    deprecated: bool
    parameters: list[Parameter]
    params_validator: Any  # a jsonschema-rs validator of {"path", "query", "header"}
    body_required: bool
    bodies: dict[str, Any]  # media type -> validator (None: no schema, or not JSON)
    answers: dict[str, dict[str, Any]]  # status, "2XX" or "default" -> the same


@dataclass(slots=True)
class Resolved:
    """A call as the document reads it: its operation (None: none matched), its
    parameters typed, and what is wrong with it."""

    operation: Operation | None
    params: dict[str, dict[str, Any]] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)

    def policy_input(self) -> dict[str, Any] | None:
        """`input.operation` (docs/policies.md)."""
        op = self.operation
        if op is None:
            return None
        return {
            "id": op.id,
            "tags": op.tags,
            "path_template": op.template,
            "params": self.params,
            "deprecated": op.deprecated,
        }


def _media_type(content_type: str | None) -> str:
    return (content_type or "").partition(";")[0].strip().lower()


def _is_json(media_type: str) -> bool:
    return media_type == "application/json" or media_type.endswith("+json")


def _pick(by_type: Mapping[str, Any], media_type: str) -> str | None:
    """The media type range of `by_type` that covers `media_type`, most specific first."""
    for candidate in (media_type, media_type.partition("/")[0] + "/*", "*/*"):
        if candidate in by_type:
            return candidate
    return None


def _pointer(location: str, path: list[str | int]) -> str:
    escaped = (str(part).replace("~", "~0").replace("/", "~1") for part in path)
    return "/" + "/".join([location, *escaped])


def _escape(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")


def _ref(pointer: str) -> dict[str, str]:
    """A `$ref` to `pointer` in the document (templates' braces percent-encoded)."""
    return {"$ref": URI + "#" + quote(pointer, safe="/~-._!$&'()*+,;=:@")}


class Spec:
    """One tool's compiled document."""

    def __init__(self, source: str, text: str, base_url: str) -> None:
        self.source = source
        self.version = hashlib.sha256(text.encode()).hexdigest()
        self.document = parse(source, text)
        try:
            self._registry = jsonschema_rs.Registry([(URI, self.document)])
        except ValueError as exc:
            raise SpecError.at(source, [f"its schemas cannot be read: {exc}"]) from None
        self._base_path = unquote(urlsplit(base_url).path.rstrip("/"))
        self._prefixes = self._server_prefixes()
        self.table: PathTable[dict[str, Operation]] = PathTable()
        self.operations: dict[str, Operation] = {}
        problems: list[str] = []
        for template, item in self.document.get("paths", {}).items():
            by_method: dict[str, Operation] = {}
            for method in METHODS:
                if isinstance(item.get(method), dict):
                    try:
                        op = self._operation(template, method, item)
                    except (ValueError, KeyError, TypeError, IndexError) as exc:
                        # jsonschema-rs says what is wrong on the first line, then more.
                        first_line = (str(exc).splitlines() or [repr(exc)])[0]
                        problems.append(f"paths.{template}.{method}: {first_line}")
                        continue
                    by_method[method.upper()] = op
                    self.operations[op.id] = op
            self.table.add(template, by_method)
        if problems:
            raise SpecError.at(source, problems)

    # ------------------------------------------------------------------ compiling

    def _server_prefixes(self) -> list[str]:
        """The path prefixes of the document's servers, longest first ("" for none)."""
        prefixes = set()
        for server in self.document.get("servers") or [{"url": "/"}]:
            url = server["url"]
            for name, variable in (server.get("variables") or {}).items():
                url = url.replace("{" + name + "}", str(variable.get("default", "")))
            prefixes.add(unquote(urlsplit(url).path).rstrip("/"))
        return sorted(prefixes, key=len, reverse=True)

    def _deref(self, node: Any, pointer: str) -> tuple[Any, str]:
        """A `$ref` to a place in this document followed (repeatedly), with its pointer."""
        seen = set()
        while isinstance(node, dict) and isinstance(node.get("$ref"), str):
            ref = node["$ref"]
            if not ref.startswith("#/") or ref in seen:
                raise ValueError(f"$ref {ref!r}: only references within the document work")
            seen.add(ref)
            node = self.document
            try:
                for part in ref[2:].split("/"):
                    key = unquote(part).replace("~1", "/").replace("~0", "~")
                    node = node[int(key)] if isinstance(node, list) else node[key]
            except (KeyError, IndexError, TypeError, ValueError):
                raise ValueError(f"$ref {ref!r} points to nothing in the document") from None
            pointer = ref[1:]
        return node, pointer

    def _resolve(self, node: Any) -> Any:
        return self._deref(node, "")[0]

    def _validator(self, pointer: str) -> Any:
        return jsonschema_rs.validator_for(
            _ref(pointer), registry=self._registry, validate_formats=False
        )

    def _operation(self, template: str, method: str, item: dict[str, Any]) -> Operation:
        at = f"/paths/{_escape(template)}"
        spec = item[method]
        declared: dict[tuple[str, str], tuple[dict[str, Any], str]] = {}
        for where, holder in ((at, item), (f"{at}/{method}", spec)):
            for i, raw in enumerate(holder.get("parameters") or []):
                parameter, pointer = self._deref(raw, f"{where}/parameters/{i}")
                location = parameter.get("in")
                if location not in LOCATIONS:
                    continue  # cookies: the gateway does not look at them
                name = str(parameter["name"])
                if location == "header":
                    name = name.lower()
                    if name in _IGNORED_HEADERS:
                        continue
                declared[(location, name)] = (parameter, pointer)
        parameters = []
        properties: dict[str, dict[str, Any]] = {loc: {} for loc in LOCATIONS}
        for (location, name), (parameter, pointer) in declared.items():
            required = bool(parameter.get("required")) or location == "path"
            parameters.append(
                Parameter(name, location, required, reader_for(parameter, self._resolve))
            )
            if "schema" in parameter:
                properties[location][name] = _ref(f"{pointer}/schema")
        params_schema = {
            "type": "object",
            "properties": {
                loc: {"type": "object", "properties": props} for loc, props in properties.items()
            },
        }
        body, body_pointer = self._deref(
            spec.get("requestBody") or {}, f"{at}/{method}/requestBody"
        )
        return Operation(
            id=str(spec.get("operationId") or f"{method.upper()} {template}"),
            method=method.upper(),
            template=template,
            tags=[str(tag) for tag in spec.get("tags") or []],
            deprecated=bool(spec.get("deprecated", False)),
            parameters=parameters,
            params_validator=jsonschema_rs.validator_for(
                params_schema, registry=self._registry, validate_formats=False
            ),
            body_required=bool(body.get("required", False)),
            bodies=self._contents(body.get("content") or {}, f"{body_pointer}/content"),
            answers=self._answers(spec.get("responses") or {}, f"{at}/{method}/responses"),
        )

    def _answers(self, responses: dict[str, Any], pointer: str) -> dict[str, dict[str, Any]]:
        """Each documented status (or range, or default) -> its content's validators."""
        answers = {}
        for status, raw in responses.items():
            answer, at = self._deref(raw, f"{pointer}/{_escape(str(status))}")
            answers[str(status)] = self._contents(answer.get("content") or {}, f"{at}/content")
        return answers

    def _contents(self, content: dict[str, Any], pointer: str) -> dict[str, Any]:
        return {
            media_type.lower(): (
                self._validator(f"{pointer}/{_escape(media_type)}/schema")
                if _is_json(media_type.lower()) and "schema" in entry
                else None
            )
            for media_type, entry in content.items()
        }

    # ------------------------------------------------------------------ per call

    def relative(self, path: str) -> str | None:
        """The call's path (below the tool's base URL) as the document's templates read
        it, below one of its servers' paths; None when it is below none."""
        full = self._base_path + path
        for prefix in self._prefixes:
            if full == prefix:
                return "/"
            if full.startswith(prefix + "/") or not prefix:
                return full[len(prefix) :]
        return None

    def resolve(
        self,
        method: str,
        path: str,
        query: Mapping[str, list[str]],
        headers: Mapping[str, str],
        body: Any,
        has_body: bool,
    ) -> Resolved:
        relative = self.relative(path)
        if relative is None:
            where = ", ".join(p or "/" for p in self._prefixes)
            return Resolved(
                None,
                problems=[
                    Problem("/path", f"{path} is outside the document's servers ({where})", "path")
                ],
            )
        first: tuple[str, dict[str, Operation]] | None = None
        for template, by_method, path_values in self.table.matches(relative):
            first = first or (template, by_method)
            operation = by_method.get(method)
            if operation is not None:
                return self._checked(operation, path_values, query, headers, body, has_body)
        if first is None:
            listed = ", ".join(list(self.table_templates())[:MAX_LISTED])
            message = (
                f"{method} {relative} matches no path of the tool's OpenAPI document "
                f"(its paths: {listed})"
            )
            return Resolved(None, problems=[Problem("/path", message, "path")])
        template, by_method = first
        allowed = ", ".join(by_method) or "none"
        return Resolved(
            None,
            problems=[
                Problem(
                    "/method", f"{template} has no {method} operation (it has: {allowed})", "method"
                )
            ],
        )

    def table_templates(self) -> Iterator[str]:
        yield from self.document.get("paths", {})

    def _checked(
        self,
        op: Operation,
        path_values: dict[str, str],
        query: Mapping[str, list[str]],
        headers: Mapping[str, str],
        body: Any,
        has_body: bool,
    ) -> Resolved:
        params: dict[str, dict[str, Any]] = {"path": {}, "query": {}, "header": {}}
        problems: list[Problem] = []
        for parameter in op.parameters:
            if parameter.location == "path":
                text = path_values.get(parameter.name)
                texts = None if text is None else [text]
            elif parameter.location == "query":
                texts = query.get(parameter.name)
            else:
                header = headers.get(parameter.name)
                texts = None if header is None else [header]
            if texts is None:
                if parameter.required:
                    problems.append(
                        Problem(
                            f"/{parameter.location}/{_escape(parameter.name)}",
                            f"the required {parameter.location} parameter "
                            f"{parameter.name} is missing",
                            "required",
                        )
                    )
                continue
            params[parameter.location][parameter.name] = parameter.reader.read(texts)
        validator = op.params_validator
        if not validator.is_valid(params):
            problems += (
                _problem(str(e.instance_path[0]), list(e.instance_path[1:]), e)
                for e in validator.iter_errors(params)
            )
        problems += self._body_problems(op, headers.get("content-type"), body, has_body)
        return Resolved(op, params, problems)

    def _body_problems(
        self, op: Operation, content_type: str | None, body: Any, has_body: bool
    ) -> list[Problem]:
        if not has_body:
            if op.body_required:
                wanted = ", ".join(op.bodies) or "a body"
                return [Problem("/body", f"{op.id} needs a request body ({wanted})", "required")]
            return []
        if not op.bodies:
            return []  # the document says nothing of a body here
        media_type = _media_type(content_type)
        chosen = _pick(op.bodies, media_type)
        if chosen is None:
            return [
                Problem(
                    "/body",
                    f"content type {media_type or 'none'} is not one {op.id} takes "
                    f"({', '.join(op.bodies)})",
                    "content-type",
                )
            ]
        return _schema_problems(op.bodies[chosen], body, "body")

    def check_answer(
        self, op: Operation, status: int, content_type: str | None, body: bytes
    ) -> list[Problem]:
        """What is wrong with the tool's answer to `op`, by the document."""
        code = str(status)
        key = next(
            (k for k in (code, f"{code[0]}XX", f"{code[0]}xx", "default") if k in op.answers), None
        )
        if key is None:
            documented = ", ".join(op.answers) or "none"
            return [
                Problem(
                    "/status",
                    f"status {status} is not a documented answer of {op.id} "
                    f"(documented: {documented})",
                    "status",
                )
            ]
        contents = op.answers[key]
        if not contents:
            return []
        media_type = _media_type(content_type)
        chosen = _pick(contents, media_type)
        if chosen is None:
            if not body:
                return []
            return [
                Problem(
                    "/content-type",
                    f"content type {media_type or 'none'} is not one documented for {status} "
                    f"({', '.join(contents)})",
                    "content-type",
                )
            ]
        validator = contents[chosen]
        if validator is None:
            return []
        try:
            value = orjson.loads(body)
        except orjson.JSONDecodeError:
            return [Problem("/body", f"the answer is not the JSON {media_type} declares", "json")]
        return _schema_problems(validator, value, "body")


def _schema_problems(validator: Any, value: Any, location: str) -> list[Problem]:
    if validator is None or validator.is_valid(value):
        return []
    return [_problem(location, list(e.instance_path), e) for e in validator.iter_errors(value)]


def _problem(location: str, path: list[str | int], error: Any) -> Problem:
    """A jsonschema-rs error as a Problem: its message cut to MAX_MESSAGE characters."""
    message = str(error.message)
    if len(message) > MAX_MESSAGE:
        message = message[: MAX_MESSAGE - 1] + "…"
    keyword = str(error.schema_path[-1]) if error.schema_path else "schema"
    return Problem(_pointer(location, path), message, keyword)
