"""OpenAPI documents compiled (gateway/openapi/): the path table's order, servers and base
paths, typed parameters, the 3.0 and 3.1 dialects, answers, and a subset of GitHub's REST
API description (tests/data/github-subset.yaml) read as GitHub publishes it."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from gateway.openapi.document import SpecError
from gateway.openapi.operations import Resolved, Spec
from gateway.openapi.paths import PathTable
from tests.support.gateway import REPO

GITHUB = (REPO / "tests" / "data" / "github-subset.yaml").read_text()
PAYMENTS = (REPO / "tests" / "data" / "payments.yaml").read_text()


def resolve(
    spec: Spec,
    method: str,
    path: str,
    query: dict[str, list[str]] | None = None,
    body: Any = None,
    headers: dict[str, str] | None = None,
) -> Resolved:
    headers = {"content-type": "application/json", **(headers or {})}
    return spec.resolve(method, path, query or {}, headers, body, body is not None)


def problems(resolved: Resolved) -> list[str]:
    return [str(p) for p in resolved.problems]


def test_the_table_prefers_literal_segments_from_the_left() -> None:
    table: PathTable[str] = PathTable()
    for template in (
        "/a/{x}/c",
        "/a/b/{y}",
        "/{p}/b/c",
        "/a/b/c",
        "/files/{name}.json",
        "/files/{name}",
        "/v{major}.{minor}/ping",
    ):
        table.add(template, template)
    assert [t for t, _, _ in table.matches("/a/b/c")] == [
        "/a/b/c",
        "/a/b/{y}",
        "/a/{x}/c",
        "/{p}/b/c",
    ]
    assert [(t, v) for t, _, v in table.matches("/a/z/c")] == [("/a/{x}/c", {"x": "z"})]
    assert [(t, v) for t, _, v in table.matches("/q/b/c")] == [("/{p}/b/c", {"p": "q"})]
    assert [(t, v) for t, _, v in table.matches("/files/x.json")] == [
        ("/files/{name}.json", {"name": "x"}),
        ("/files/{name}", {"name": "x.json"}),
    ]
    assert [(t, v) for t, _, v in table.matches("/v2.1/ping")] == [
        ("/v{major}.{minor}/ping", {"major": "2", "minor": "1"})
    ]
    # A parameter never fills an empty segment, nor two segments.
    assert list(table.matches("/a//c")) == []
    assert list(table.matches("/files/a/b")) == []


def test_trailing_slashes_are_ignored_only_when_nothing_matches_as_sent() -> None:
    table: PathTable[str] = PathTable()
    for template in ("/items", "/items/{id}", "/slashed/"):
        table.add(template, template)
    assert [t for t, _, _ in table.matches("/items/")] == ["/items"]
    assert [t for t, _, _ in table.matches("/slashed")] == ["/slashed/"]
    assert [t for t, _, _ in table.matches("/slashed/")] == ["/slashed/"]
    assert [t for t, _, _ in table.matches("/items/7/")] == ["/items/{id}"]


@pytest.mark.parametrize(
    ("upstream", "servers", "path", "relative"),
    [
        # The tool's base path joined to the call's path, below the server's path.
        ("http://h/api", [{"url": "https://payments.example/api"}], "/v1/refunds", "/v1/refunds"),
        ("http://h", [{"url": "https://payments.example/api"}], "/api/v1/refunds", "/v1/refunds"),
        ("http://h/api/v1", [{"url": "/api"}], "/refunds", "/v1/refunds"),
        ("http://h", [], "/v1/refunds", "/v1/refunds"),
        # Server variables take their defaults; the longest server path that fits wins.
        (
            "http://h",
            [{"url": "https://x/{base}", "variables": {"base": {"default": "svc"}}}, {"url": "/"}],
            "/svc/v1/refunds",
            "/v1/refunds",
        ),
        ("http://h", [{"url": "https://x/api"}], "/other/v1/refunds", None),
        ("http://h", [{"url": "https://x/api"}], "/api", "/"),
    ],
)
def test_paths_are_read_below_the_servers_path(
    upstream: str, servers: list[dict[str, Any]], path: str, relative: str | None
) -> None:
    document = {"openapi": "3.1.0", "servers": servers, "paths": {"/v1/refunds": {"get": {}}}}
    spec = Spec("doc", yaml.safe_dump(document), upstream)
    assert spec.relative(path) == relative
    found = resolve(spec, "GET", path)
    if relative == "/v1/refunds":
        assert found.operation is not None and found.operation.id == "GET /v1/refunds"
    else:
        assert found.operation is None and found.problems[0].pointer == "/path"


def test_github_subset_resolves_and_types_its_calls() -> None:
    spec = Spec("github-subset.yaml", GITHUB, "https://api.github.com")
    assert len(spec.operations) == 14
    merge = resolve(spec, "PUT", "/repos/acme/site/pulls/3/merge", body={"merge_method": "squash"})
    assert merge.policy_input() == {
        "id": "pulls/merge",
        "tags": ["pulls"],
        "path_template": "/repos/{owner}/{repo}/pulls/{pull_number}/merge",
        "params": {
            "path": {"owner": "acme", "repo": "site", "pull_number": 3},
            "query": {},
            "header": {},
        },
        "deprecated": False,
    }
    assert merge.problems == []
    # 3.0's `nullable: true` on the body schema: a JSON null body is one it takes.
    assert resolve(spec, "PUT", "/repos/acme/site/pulls/3/merge", body=None).problems == []
    assert problems(
        resolve(spec, "PUT", "/repos/a/b/pulls/3/merge", body={"merge_method": "ff"})
    ) == ['/body/merge_method: "ff" is not one of "merge", "squash" or "rebase"']
    listed = resolve(
        spec, "GET", "/repos/acme/site/pulls", {"state": ["closed"], "per_page": ["50"]}
    )
    assert (listed.operation and listed.operation.id, listed.params["query"]) == (
        "pulls/list",
        {"state": "closed", "per_page": 50},
    )
    assert problems(resolve(spec, "GET", "/repos/a/b/pulls/three")) == [
        '/path/pull_number: "three" is not of type "integer"'
    ]
    assert problems(
        resolve(spec, "POST", "/repos/a/b/pulls", body={"title": "x", "head": "f"})
    ) == ['/body: "base" is a required property']
    assert resolve(spec, "GET", "/user").operation.id == "users/get-authenticated"  # type: ignore[union-attr]
    assert resolve(spec, "GET", "/user/repos").operation.id == "repos/list-for-authenticated-user"  # type: ignore[union-attr]
    assert resolve(spec, "DELETE", "/repos/acme/site/").operation.id == "repos/delete"  # type: ignore[union-attr]
    # A parameter is one segment: a ref with a slash in it is no operation of the document.
    assert resolve(spec, "PATCH", "/repos/a/b/git/refs/heads/main").operation is None
    assert resolve(spec, "PATCH", "/repos/a/b/git/refs/main", body={"sha": "1"}).problems == []
    assert problems(resolve(spec, "POST", "/repos/a/b/pulls/1")) == [
        "/method: /repos/{owner}/{repo}/pulls/{pull_number} has no POST operation (it has: GET, PATCH)"
    ]


def test_github_subset_answers() -> None:
    spec = Spec("github-subset.yaml", GITHUB, "https://api.github.com")
    get = spec.operations["pulls/get"]
    pull = b'{"id": 1, "number": 3, "state": "open", "title": "t", "user": null}'
    assert spec.check_answer(get, 200, "application/json; charset=utf-8", pull) == []
    assert [str(p) for p in spec.check_answer(get, 200, "application/json", b'{"id": 1}')] == [
        '/body: "number" is a required property',
        '/body: "state" is a required property',
        '/body: "title" is a required property',
        '/body: "user" is a required property',
    ]
    assert spec.check_answer(get, 404, "application/json", b'{"message": "Not Found"}') == []
    assert [p.pointer for p in spec.check_answer(get, 500, "text/plain", b"x")] == ["/status"]
    merged = spec.operations["pulls/check-if-merged"]
    assert spec.check_answer(merged, 204, None, b"") == []
    assert spec.check_answer(merged, 404, "text/html", b"<p>no</p>") == []  # no content documented
    assert [p.pointer for p in spec.check_answer(get, 200, "application/json", b"{nope")] == [
        "/body"
    ]


def test_openapi_31_is_read_as_json_schema_2020_12() -> None:
    document = """
openapi: 3.1.0
paths:
  /orders/{id}:
    parameters:
      - {name: id, in: path, required: true, schema: {type: integer, exclusiveMinimum: 0}}
    put:
      operationId: putOrder
      parameters:
        - {name: ids, in: query, explode: false, schema: {type: array, items: {type: integer}}}
        - {name: dry, in: query, schema: {type: [boolean, "null"]}}
        - {name: X-Mode, in: header, schema: {$ref: "#/components/schemas/Mode"}}
      requestBody:
        content:
          application/merge-patch+json:
            schema: {$ref: "#/components/schemas/Order"}
      responses:
        2XX: {description: ok}
components:
  schemas:
    Mode: {type: string, enum: [fast, safe]}
    Order:
      type: object
      properties:
        note: {type: [string, "null"], maxLength: 5}
        lines: {type: array, items: {$ref: "#/components/schemas/Order"}}
"""
    spec = Spec("doc", document, "http://h")
    found = spec.resolve(
        "PUT",
        "/orders/0",
        {"ids": ["1,2,x"], "dry": ["true"]},
        {"content-type": "application/merge-patch+json", "x-mode": "slow"},
        {"note": None, "lines": [{"note": "too long"}]},
        True,
    )
    assert found.params == {
        "path": {"id": 0},
        "query": {"ids": [1, 2, "x"], "dry": True},
        "header": {"x-mode": "slow"},
    }
    assert problems(found) == [
        "/path/id: 0 is less than or equal to the minimum of 0",
        '/query/ids/2: "x" is not of type "integer"',
        '/header/x-mode: "slow" is not one of "fast" or "safe"',
        '/body/lines/0/note: "too long" is longer than 5 characters',
    ]
    assert spec.check_answer(spec.operations["putOrder"], 204, None, b"") == []


def test_a_document_whose_schemas_do_not_compile_is_refused() -> None:
    document = {
        "openapi": "3.1.0",
        "paths": {
            "/a": {
                "get": {"parameters": [{"name": "n", "in": "query", "schema": {"minimum": "x"}}]}
            }
        },
    }
    with pytest.raises(SpecError) as refused:
        Spec("doc.yaml", yaml.safe_dump(document), "http://h")
    [problem] = refused.value.problems
    assert problem.startswith("doc.yaml: paths./a.get: ")


def test_payments_document_has_its_operations() -> None:
    spec = Spec("payments.yaml", PAYMENTS, "http://h/api")
    assert sorted(spec.operations) == [
        "cancelRefund",
        "createRefund",
        "getAnything",
        "getCustomerCard",
        "getRefund",
        "listRefunds",
        "searchRefunds",
    ]


def test_parameter_values_that_cannot_be_numbers_stay_text() -> None:
    spec = Spec("payments.yaml", PAYMENTS, "http://h/api")
    for text in ("9" * 5000, "1e999", "0x10", ""):
        found = resolve(spec, "GET", "/v1/refunds", {"limit": [text]})
        assert found.params["query"]["limit"] == text
        assert [p.keyword for p in found.problems] == ["type"]
    assert resolve(spec, "GET", "/v1/refunds", {"limit": ["+7"]}).params["query"] == {"limit": 7}


def test_a_reference_to_nothing_is_named() -> None:
    document = {
        "openapi": "3.0.3",
        "paths": {"/a": {"get": {"parameters": [{"$ref": "#/components/parameters/gone"}]}}},
    }
    with pytest.raises(SpecError) as refused:
        Spec("doc.yaml", yaml.safe_dump(document), "http://h")
    assert refused.value.problems == [
        "doc.yaml: paths./a.get: $ref '#/components/parameters/gone' points to nothing in the document"
    ]
