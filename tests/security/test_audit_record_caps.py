"""Issue 14, finding 6 (the records): what one audit record keeps of the agent's input is
bounded by `audit.max_record_bytes`; the overflow is kept as its size and SHA-256, and the
record says what was cut (see docs/operations.md, Audit log). 100 denied calls with 120 headers of
16 KB each wrote ~3 MB of records per call before.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from gateway.audit.chain import canonical_bytes
from gateway.audit.records import cap
from gateway.policy.recorded_inputs import policy_input_line
from tests.support.audit import call_records, wait_for_records, with_audit
from tests.support.gateway import OTHER_TOKEN, auth, make_config
from tests.support.process import cli

BUDGET = 4096
# The gateway's own fields of a record (ids, times, decision, policy version, timings,
# the truncation marks) come on top of the budget.
OWN_FIELDS = 2048
# Within the listener's bounds for headers, many times the budget.
BIG_HEADERS = {f"X-Pad-{i}": "a" * 8000 for i in range(7)}
LONG_PATH = "/p" + "x" * 5000  # over the budget by itself
LONG_QUERY = "?" + "&".join(f"q{i}={'v' * 100}" for i in range(20))


def size(record: dict[str, Any]) -> int:
    return len(canonical_bytes(record))


def digest(value: Any) -> str:
    return hashlib.sha256(canonical_bytes(value)).hexdigest()


async def echo_upstream(start_upstream: Any) -> str:
    async def handler(request: web.Request) -> web.Response:
        await request.read()
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    return str(await start_upstream(app))


@pytest.mark.parametrize(
    ("token", "kinds"),
    [(OTHER_TOKEN, ["decision"]), (None, ["decision", "intent", "outcome"])],
    ids=["denied", "allowed"],
)
async def test_each_record_of_a_call_keeps_at_most_the_budget_of_its_input(
    tmp_path: Path, start_upstream: Any, start_gateway: Any, token: str | None, kinds: list[str]
) -> None:
    url = await echo_upstream(start_upstream)
    config = with_audit(make_config(tmp_path, url), max_record_bytes=BUDGET)
    gw = await start_gateway(config=config)
    headers = {**(auth(token) if token else auth()), **BIG_HEADERS}
    resp = await gw.post("/tools/echo" + LONG_PATH + LONG_QUERY, headers=headers, data=b"{}")
    assert resp.status == (403 if token else 200)
    request_id = resp.headers["X-Request-Id"]
    path = gw.services.audit.path
    records = await wait_for_records(
        path, lambda rs: [r["kind"] for r in rs if r.get("request_id") == request_id] == kinds
    )
    for record in call_records(path, request_id):
        assert size(record) <= BUDGET + OWN_FIELDS, (record["kind"], size(record))
        assert set(record["truncated"]) >= {"path"}
        assert record["path"] == LONG_PATH[: len(record["path"])]
        assert record["truncated"]["path"] == {
            "bytes": len(json.dumps(LONG_PATH)),
            "sha256": digest(LONG_PATH),
        }
    decision = call_records(path, request_id)[0]
    headers_cut = decision["truncated"]["request.headers"]
    assert headers_cut["bytes"] > 7 * 8000
    assert decision["truncated"]["request.query"]["bytes"] > 20 * 100
    # Small headers are kept whole, the big ones cut to an equal share.
    assert decision["request"]["headers"]["authorization"] == "***"
    pads = [decision["request"]["headers"][f"x-pad-{i}"] for i in range(7)]
    assert all(0 < len(pad) < 8000 and set(pad) == {"a"} for pad in pads)
    assert len(records) > len(kinds)
    code, out = await cli("audit", "verify", "--db", str(path))
    assert code == 0 and out.startswith("ok "), out


async def test_a_recorded_body_over_its_share_is_left_out_whole_and_not_replayed_in_part(
    tmp_path: Path, start_upstream: Any, start_gateway: Any
) -> None:
    url = await echo_upstream(start_upstream)
    config = with_audit(make_config(tmp_path, url), max_record_bytes=BUDGET, record_bodies=True)
    gw = await start_gateway(config=config)
    body = {"items": [{"sku": f"sku-{i}", "amount": i} for i in range(500)]}
    small = {"amount": 5}
    big_resp = await gw.post("/tools/echo/orders", headers=auth(), json=body)
    small_resp = await gw.post("/tools/echo/orders", headers=auth(), json=small)
    assert (big_resp.status, small_resp.status) == (200, 200)
    path = gw.services.audit.path
    await wait_for_records(path, lambda rs: sum(r["kind"] == "outcome" for r in rs) == 2)
    (big,) = [r for r in call_records(path, big_resp.headers["X-Request-Id"]) if "request" in r]
    (kept,) = [r for r in call_records(path, small_resp.headers["X-Request-Id"]) if "request" in r]
    assert "body" not in big["request"]
    assert big["truncated"]["request.body"] == {
        "bytes": len(canonical_bytes(body)),
        "sha256": digest(body),
    }
    assert big["request"]["body_sha256"]  # the raw body's digest, as for every call
    # A replay of the big call says its body was not recorded; the small one replays whole.
    line = policy_input_line(big)
    assert line is not None and line["recorded"]["body_recorded"] is False
    assert kept["request"]["body"] == small and "truncated" not in kept


def test_a_record_within_its_budget_is_unchanged() -> None:
    record = {
        "kind": "decision",
        "path": "/a",
        "model": "gpt",
        "request": {"headers": {"x": "1"}, "query": {"q": ["1"]}, "body": {"a": 1}},
    }
    before = json.loads(json.dumps(record))
    assert cap(record, 1024) == before


@pytest.mark.parametrize(
    ("text", "budget"),
    [("é" * 5000, 1024), ("😀" * 5000, 1024), ("\x00" * 5000, 1024), ("a" * 5000, 1024)],
    ids=["two-byte", "four-byte", "escaped", "ascii"],
)
def test_text_is_cut_to_a_prefix_within_the_budget(text: str, budget: int) -> None:
    record = cap({"kind": "outcome", "path": text}, budget)
    kept = record["path"]
    assert text.startswith(kept) and kept
    assert len(canonical_bytes(kept)) <= budget
    assert record["truncated"] == {
        "path": {"bytes": len(canonical_bytes(text)), "sha256": digest(text)}
    }


def test_many_small_headers_keep_the_first_ones_whole() -> None:
    headers = {f"h{i:04}": "v" for i in range(5000)}
    record = cap({"kind": "decision", "request": {"headers": headers}}, 1024)
    kept = record["request"]["headers"]
    assert list(kept) == list(headers)[: len(kept)] and len(kept) > 50
    assert all(value == "v" for value in kept.values())
    assert len(canonical_bytes(kept)) <= 1024


def test_a_base64_body_is_cut_to_whole_groups() -> None:
    record = cap({"kind": "decision", "request": {"body_base64": "QUJD" * 1000}}, 1024)
    kept = record["request"]["body_base64"]
    assert len(kept) % 4 == 0 and "QUJD".startswith(kept[:4])
