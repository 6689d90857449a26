"""The admin API's OpenAPI description (gateway/admin/admin-api.yaml, docs/admin-api.yaml
links to it): it names every route of the admin listener and no other, it is served at
/api/v1/openapi.json without a token, it ships in the package, and a real admin listener
answers schemathesis' generated requests without a 500 and as described."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import tomllib
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.serve import build_apps
from tests.support.gateway import AGENT_TOKEN, REPO, make_config, sha
from tests.support.process import free_port

SPEC = REPO / "gateway" / "admin" / "admin-api.yaml"
METHODS = {"get", "put", "post", "delete", "patch", "options", "head"}
APPROVER_TOKEN = "test-operator-token"


def described() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(SPEC.read_text())
    return document


def described_routes() -> set[tuple[str, str]]:
    return {
        (method.upper(), path)
        for path, item in described()["paths"].items()
        for method in item
        if method in METHODS
    }


def registered_routes(tmp_path: Path) -> set[tuple[str, str]]:
    _agent, admin = build_apps(make_config(tmp_path))
    routes = set()
    for route in admin.router.routes():
        path = route.resource.canonical if route.resource is not None else ""
        if route.method == "HEAD":
            continue  # aiohttp adds HEAD to every GET; it answers as GET does, without a body
        if path == "/ui/static":  # a static folder: one route for all its files
            path = "/ui/static/{file}"
        routes.add((route.method, path))
    return routes


def test_every_admin_route_is_described_and_nothing_else(tmp_path: Path) -> None:
    registered, documented = registered_routes(tmp_path), described_routes()
    assert registered - documented == set(), "routes missing from gateway/admin/admin-api.yaml"
    assert documented - registered == set(), "described routes the admin app does not have"


def test_docs_link_to_the_one_description() -> None:
    assert (REPO / "docs" / "admin-api.yaml").resolve() == SPEC.resolve()


def test_the_description_ships_in_the_package() -> None:
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    package_data = pyproject["tool"]["setuptools"]["package-data"]
    assert "admin-api.yaml" in package_data.get("gateway.admin", [])


def test_the_description_is_valid_openapi() -> None:
    schema = schemathesis.openapi.from_dict(described())
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == len(described_routes())


async def test_the_description_is_served_as_json_without_a_token(start_gateway: Any) -> None:
    gateway = await start_gateway()
    response = await gateway.admin.get("/api/v1/openapi.json")
    assert response.status == 200
    assert response.content_type == "application/json"
    assert await response.json() == json.loads(json.dumps(described()))


# --- schemathesis against a real admin listener -------------------------------------

APPROVE_POSTS = """package gateway

import rego.v1

default decision := {"allow": true, "reason": "reads pass"}

decision := {"allow": true, "approval_required": true, "reason": "writes need a human",
    "approval": {"roles": ["operator"]}} if input.request.method == "POST"
"""


def _get(url: str, headers: dict[str, str] | None = None, data: bytes | None = None) -> int:
    request = urllib.request.Request(url, data=data, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


@pytest.fixture(scope="module")
def admin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, list[str]]]:
    """A real `python -m gateway serve` with an operator approver and a few pending
    actions (POSTs need approval), so that the action routes have something to show."""
    folder = tmp_path_factory.mktemp("openapi")
    (folder / "policies").mkdir()
    (folder / "policies" / "gateway.rego").write_text(APPROVE_POSTS)
    port, admin_port = free_port(), free_port()
    config = {
        "listen": {"port": port},
        "admin": {"port": admin_port},
        "policy": {"path": "policies", "watch": False},
        "agents": [{"id": "bot", "token_sha256": sha(AGENT_TOKEN), "roles": ["caller"]}],
        "approvers": [{"id": "olga", "token_sha256": sha(APPROVER_TOKEN), "roles": ["operator"]}],
        "tools": [{"name": "echo", "upstream": "http://127.0.0.1:9", "timeout_s": 1}],
    }
    (folder / "callgate.yaml").write_text(yaml.safe_dump(config))
    log = (folder / "gateway.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway", "serve", "--config", str(folder / "callgate.yaml")],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{admin_port}"
    try:
        deadline = time.monotonic() + 20
        while _get_or_none(url + "/readyz") != 200:
            assert process.poll() is None, (folder / "gateway.log").read_text()
            assert time.monotonic() < deadline, "the gateway did not become ready"
            time.sleep(0.05)
        for n in range(3):
            status = _get(
                f"http://127.0.0.1:{port}/tools/echo/refunds",
                {"Authorization": f"Bearer {AGENT_TOKEN}", "Content-Type": "application/json"},
                json.dumps({"n": n}).encode(),
            )
            assert status == 202
        listed = urllib.request.Request(
            url + "/api/v1/actions", headers={"Authorization": f"Bearer {APPROVER_TOKEN}"}
        )
        with urllib.request.urlopen(listed, timeout=5) as response:
            ids = [action["id"] for action in json.load(response)["actions"]]
        yield url, ids
    finally:
        process.terminate()
        process.wait(timeout=20)
        log.close()


def _get_or_none(url: str) -> int | None:
    try:
        return _get(url)
    except OSError:
        return None


OPERATIONS = sorted(f"{method} {path}" for method, path in described_routes())


@pytest.mark.parametrize("operation", OPERATIONS)
def test_the_admin_listener_answers_as_described(
    admin: tuple[str, list[str]], operation: str
) -> None:
    admin_url, action_ids = admin
    schema = schemathesis.openapi.from_url(admin_url + "/api/v1/openapi.json")
    method, path = operation.split(" ", 1)
    found = schema[path][method]

    @settings(
        max_examples=40,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(
        case=found.as_strategy(),
        with_token=st.booleans(),
        action=st.sampled_from([None, *action_ids]),
    )
    def run(case: Any, with_token: bool, action: str | None) -> None:
        if action is not None and "id" in (case.path_parameters or {}):
            case.path_parameters["id"] = action  # a real pending (or decided) action
        headers = {"Authorization": f"Bearer {APPROVER_TOKEN}"} if with_token else {}
        case.call_and_validate(
            base_url=admin_url,
            headers=headers,
            allow_redirects=False,
            excluded_checks=excluded,
        )

    excluded = []
    if operation == "PUT /api/v1/switches/{target}":
        # A well-formed target naming an agent or tool that is not configured is a 400:
        # valid by the schema, which cannot know the config.
        excluded.append(schemathesis.checks.positive_data_acceptance)

    run()


async def test_a_deep_switch_body_is_a_bad_request_not_a_crash(
    start_gateway: Any, tmp_path: Path
) -> None:
    """The switch's {"reason": …} is read under the agents' JSON rules, as an approver's
    comment is (docs/errors.md): 20,000 nested arrays were a 500."""
    config = make_config(tmp_path)
    operator = config.model_copy(
        update={
            "approvers": [
                config.agents[0].model_copy(
                    update={
                        "id": "olga",
                        "token_sha256": sha(APPROVER_TOKEN),
                        "roles": ("operator",),
                    }
                )
            ]
        }
    )
    gateway = await start_gateway(config=operator)
    response = await gateway.admin.put(
        "/api/v1/switches/all",
        data=b"[" * 20_000 + b"]" * 20_000,
        headers={"Authorization": f"Bearer {APPROVER_TOKEN}", "Content-Type": "application/json"},
    )
    assert response.status == 400, await response.text()
    assert (await response.json())["error"]["code"] == "bad_request"
