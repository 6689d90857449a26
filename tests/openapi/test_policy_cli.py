"""`callgate policy eval` and `explain` with a config: a typed tool's call is resolved to
its operation by the config's document before the policy decides, and shown."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from tests.support.gateway import REPO, copy_default_policies
from tests.support.process import cli

GRANTS = {"finance": {"payments": {"methods": ["GET", "POST"], "operations": ["createRefund"]}}}


def write_config(tmp_path: Path) -> Path:
    policies = copy_default_policies(tmp_path)
    shipped = json.loads((policies / "data.json").read_text())
    (policies / "data.json").write_text(json.dumps({"grants": {**shipped["grants"], **GRANTS}}))
    config = tmp_path / "callgate.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "policy": {"path": str(policies)},
                "tools": [
                    {
                        "name": "payments",
                        "upstream": "http://127.0.0.1:9/api",
                        # relative to the config file, as users write it
                        "openapi": str(Path("..") / "spec" / "payments.yaml"),
                    }
                ],
            }
        )
    )
    spec_dir = tmp_path.parent / "spec"
    spec_dir.mkdir(exist_ok=True)
    (spec_dir / "payments.yaml").write_text((REPO / "tests/data/payments.yaml").read_text())
    return config


def call(tmp_path: Path, method: str, path: str, body: Any) -> Path:
    doc = tmp_path / "call.json"
    doc.write_text(
        json.dumps(
            {
                "agent": {"id": "bot", "roles": ["finance"]},
                "tool": {"name": "payments", "kind": "http"},
                "request": {
                    "method": method,
                    "path": path,
                    "query": {},
                    "headers": {"content-type": "application/json"},
                    "body": body,
                    "size": 10 if body is not None else 0,
                },
                "mcp": None,
                "context": {"request_id": "r-1", "time": "2026-11-24T10:00:00Z"},
            }
        )
    )
    return doc


async def test_eval_resolves_the_operation_with_the_configs_document(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    refund = {"charge": "ch_1", "amount": 5, "currency": "EUR"}
    doc = call(tmp_path, "POST", "/v1/refunds", refund)
    code, out = await cli("policy", "eval", "--input", str(doc), "--config", str(config))
    assert code == 0, out
    shown = json.loads(out)
    assert shown["allow"] is True
    assert shown["resolved"]["tool"] == "payments"
    assert shown["resolved"]["operation"]["id"] == "createRefund"
    assert shown["resolved"]["schema_problems"] == []

    doc = call(tmp_path, "GET", "/v1/refunds/re_1", None)
    code, out = await cli("policy", "eval", "--input", str(doc), "--config", str(config))
    shown = json.loads(out)
    assert shown["allow"] is False
    assert shown["reason"].startswith("operation getRefund (GET /v1/refunds/re_1) is not allowed")

    # Without --config the input is decided as it is: no operation, so no grant covers it.
    code, out = await cli(
        "policy", "eval", "--input", str(doc), "--policies", str(tmp_path / "default-policies")
    )
    assert "resolved" not in json.loads(out)


async def test_explain_shows_the_operation_and_its_schema_problems(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    doc = call(tmp_path, "POST", "/v1/refunds", {"amount": -1, "currency": "EUR"})
    code, out = await cli("policy", "explain", "--input", str(doc), "--config", str(config))
    assert code == 0, out
    assert out.startswith("operation (payments's OpenAPI document):\n")
    assert '"id": "createRefund"' in out
    assert '  schema problem: /body: "charge" is a required property' in out
    assert "decision (data.gateway.decision):" in out
