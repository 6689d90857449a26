"""The error registry matches the README's table of errors."""

from __future__ import annotations

import json
import re

import pytest

from gateway.errors import SPECS, ErrorCode, GatewayError, render
from tests.conftest import REPO


def test_every_code_has_a_status() -> None:
    assert set(SPECS) == set(ErrorCode)


@pytest.mark.parametrize("code", list(ErrorCode), ids=[c.value for c in ErrorCode])
def test_every_code_is_documented_in_the_readme(code: ErrorCode) -> None:
    assert f"`{code.value}`" in (REPO / "README.md").read_text() or re.search(
        rf"`{code.value.split('_')[0]}_\*`", (REPO / "README.md").read_text()
    )


def test_statuses_match_the_readme_table() -> None:
    text = (REPO / "README.md").read_text()
    rows = re.findall(r"^\| (\d{3}) \| (`[a-z_]+`(?: / `[a-z_]+`)*) \|", text, re.MULTILINE)
    assert rows, "the README's table of errors was not found"
    documented = {}
    for status, codes in rows:
        for code in re.findall(r"`([a-z_]+)`", codes):
            documented[ErrorCode(code)] = int(status)
    assert documented == {code: spec.status for code, spec in SPECS.items()}


def test_render_has_the_one_shape() -> None:
    response = render(
        GatewayError(ErrorCode.RATE_LIMITED, "slow down", headers={"Retry-After": "3"}), "rid"
    )
    assert response.status == 429
    assert response.headers["Retry-After"] == "3"
    assert response.headers["X-Request-Id"] == "rid"
    assert response.content_type == "application/json"
    assert response.body is not None
    assert json.loads(bytes(response.body)) == {
        "error": {
            "code": "rate_limited",
            "message": "slow down",
            "request_id": "rid",
            "retryable": True,
        }
    }
