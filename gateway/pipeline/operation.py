"""operation: the call -> its operation in the tool's OpenAPI document (docs/typed-tools.md).

For a tool with `openapi`, finds the operation the method and path name, types its
parameters per their schemas, and checks them and the JSON body; the policy then sees
`input.operation` (null for a tool without a document, or a call matching no operation).
What is wrong with the call is handled per the tool's `validate`: `enforce` refuses it
with 400 `schema_violation` naming the first few problems by JSON pointer, before the
policy or the tool see it; `report` counts, logs and audits it, and the call goes on;
`off` only resolves the operation.
"""

from __future__ import annotations

import logging

from gateway.audit.records import schema_record
from gateway.call import Call
from gateway.errors import ErrorCode, GatewayError
from gateway.openapi.operations import MAX_PROBLEMS, Problem
from gateway.services import Services

log = logging.getLogger(__name__)


async def run(call: Call, svc: Services) -> None:
    assert call.tool is not None and call.input is not None
    spec = svc.specs.of(call.tool.name)
    if spec is None:
        call.input["operation"] = None
        return
    request = call.input["request"]
    call.resolved = resolved = spec.resolve(
        request["method"],
        request["path"],
        request["query"],
        request["headers"],
        request["body"],
        bool(call.body),
    )
    call.input["operation"] = resolved.policy_input()
    mode = call.tool.validate_calls
    if not resolved.problems or mode == "off":
        return
    svc.metrics.schema_violations.labels(call.tool.name, "request", mode).inc()
    if mode == "enforce":
        raise GatewayError(
            ErrorCode.SCHEMA_VIOLATION,
            _refusal_message(call.tool.name, resolved.problems),
            details={"problems": [p.as_json() for p in resolved.problems[:MAX_PROBLEMS]]},
        )
    log.warning(
        "call does not match the tool's OpenAPI document",
        extra={
            "request_id": call.request_id,
            "tool": call.tool.name,
            "problems": [str(p) for p in resolved.problems[:MAX_PROBLEMS]],
        },
    )
    if svc.audit is not None:
        svc.audit.append(
            schema_record(
                call, "request", resolved.problems, "report", svc.config.audit.record_bodies
            )
        )


def _refusal_message(tool: str, problems: list[Problem]) -> str:
    shown = "; ".join(str(p) for p in problems[:MAX_PROBLEMS])
    more = len(problems) - MAX_PROBLEMS
    tail = f" (and {more} more)" if more > 0 else ""
    return f"the call does not match tool {tool}'s OpenAPI document: {shown}{tail}"
