"""The error registry matches the table of errors in docs/errors.md."""

from __future__ import annotations

import json
import re

import pytest

from gateway.errors import SPECS, ErrorCode, GatewayError, render
from tests.support.gateway import REPO

ERRORS_PAGE = REPO / "docs" / "errors.md"


def test_every_code_has_a_status() -> None:
    assert set(SPECS) == set(ErrorCode)


@pytest.mark.parametrize("code", list(ErrorCode), ids=[c.value for c in ErrorCode])
def test_every_code_is_documented(code: ErrorCode) -> None:
    text = ERRORS_PAGE.read_text()
    assert f"`{code.value}`" in text or re.search(rf"`{code.value.split('_')[0]}_\*`", text)


def test_statuses_match_the_documented_table() -> None:
    text = ERRORS_PAGE.read_text()
    rows = re.findall(r"^\| (\d{3}) \| (`[a-z_]+`(?: / `[a-z_]+`)*) \|", text, re.MULTILINE)
    assert rows, "the table of errors in docs/errors.md was not found"
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
