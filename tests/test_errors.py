"""The error registry matches DESIGN.md section 3 and the README."""

from __future__ import annotations

import json
import re

import pytest

from gateway.errors import SPECS, ErrorCode, GatewayError, render
from tests.conftest import REPO

DESIGN = REPO.parent / "shared" / "DESIGN.md"


def test_every_code_has_a_status() -> None:
    assert set(SPECS) == set(ErrorCode)


@pytest.mark.parametrize("code", list(ErrorCode), ids=[c.value for c in ErrorCode])
def test_every_code_is_documented_in_the_readme(code: ErrorCode) -> None:
    assert f"`{code.value}`" in (REPO / "README.md").read_text() or re.search(
        rf"`{code.value.split('_')[0]}_\*`", (REPO / "README.md").read_text()
    )


@pytest.mark.skipif(not DESIGN.exists(), reason="shared/DESIGN.md is not beside the checkout")
def test_statuses_match_design_table() -> None:
    rows = re.findall(r"^\| (\d{3}) \| ([a-z_ /]+?) \|", DESIGN.read_text(), re.MULTILINE)
    assert rows, "the error table of DESIGN.md section 3 was not found"
    for status, codes in rows:
        for code in (c.strip() for c in codes.split("/")):
            if code.startswith("(not an error)"):
                continue
            assert SPECS[ErrorCode(code)].status == int(status), code


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
