"""Audit decision records as policy input documents, to replay real traffic against a
changed policy (`callgate audit export --format policy-input`, `callgate policy replay`).

Each line is `{"input": <the policy input>, "recorded": {...}}` (docs/policies.md,
"Testing policies"), where `recorded` is what the policy decided then. The input is
rebuilt from the record, so it holds what the record holds: the body only where
`audit.record_bodies` was on (null otherwise, with `body_recorded: false`), redacted paths
as the mask, and no header or query parameter (nor operation parameter) that was masked
as a credential."""

from __future__ import annotations

from typing import Any

from gateway.audit.records import MASK
from gateway.policy.decision import outcome_of


def policy_input_line(record: dict[str, Any]) -> dict[str, Any] | None:
    """The replayable form of one decision record; None for records no policy decided
    (other kinds, and calls refused before the policy was asked)."""
    if record.get("kind") != "decision" or record.get("policy_allow") is None:
        return None
    mcp = record.get("mcp")
    if mcp is not None and mcp.get("kind") in ("notification", "response"):
        return None  # passed without a policy decision
    request = record.get("request") or {}
    # A call without a body lost nothing; one whose body was not kept (or not JSON) did.
    body_recorded = "body" in request or request.get("size", 0) == 0
    return {
        "input": {
            "agent": {
                "id": record["agent"],
                "roles": record.get("roles") or [],
                "claims": record.get("claims") or {},
                "identity": record.get("identity") or {"kind": "token"},
            },
            "tool": {"name": record["tool"], "kind": "http" if mcp is None else "mcp"},
            "request": {
                "method": record["method"],
                "path": record["path"],
                "query": {
                    name: values
                    for name, values in (request.get("query") or {}).items()
                    if MASK not in values
                },
                "headers": {
                    name: value
                    for name, value in (request.get("headers") or {}).items()
                    if value != MASK
                },
                "body": request.get("body"),
                "form": request.get("form"),
                "size": request.get("size", 0),
            },
            "mcp": None if mcp is None else _mcp_input(mcp, request.get("body")),
            # A typed tool's operation (docs/typed-tools.md), as the record keeps it.
            "operation": record.get("operation"),
            "context": {
                "request_id": record["request_id"],
                "time": record["time"][:19] + "Z",
                "session": record.get("session"),
                "model": record.get("model"),
            },
        },
        "recorded": {
            "outcome": outcome_of(
                bool(record["policy_allow"]), bool(record.get("policy_approval_required"))
            ),
            "reason": record.get("reason"),
            "policy_version": record.get("policy_version"),
            "body_recorded": body_recorded,
        },
    }


def _mcp_input(mcp: dict[str, Any], body: Any) -> dict[str, Any]:
    """input.mcp again, as the gateway built it: arguments for tools/call only (`{}` when
    the call had none), and only where the JSON-RPC body was recorded."""
    params = body.get("params") if isinstance(body, dict) else None
    arguments = None
    if mcp.get("method") == "tools/call" and isinstance(params, dict):
        arguments = params.get("arguments", {})
    return {
        "method": mcp.get("method"),
        "tool": mcp.get("tool"),
        "arguments": arguments,
        "protocol_version": mcp.get("protocol_version"),
    }
