"""A `tools/call` that needs approval, the MCP way (docs/mcp.md, "Approvals").

The call is parked like any other. The gateway holds it up to the tool's
`approval_wait_s` (capped by `approvals.max_wait_s`); when the client asked for progress
and reads SSE, the hold sends `notifications/progress` every few seconds so the client's
stream stays alive. If the action is approved and executed in time, the agent gets the
server's real result. Otherwise it gets a tool result marked `isError` saying that nothing
has happened yet, the action's id, and that calling the same tool with the same arguments
again returns the outcome once decided: such a repeat (same agent, tool and arguments) is
matched to the action, whatever its JSON-RPC id. Once an outcome has been given to the
agent, the next identical call is a new call, parked anew.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from aiohttp import web

from gateway import json_bounds
from gateway.answers import body_of
from gateway.approvals import parking, responses, states
from gateway.call import Call
from gateway.errors import ErrorCode, GatewayError, StreamBroken
from gateway.json_bounds import TooDeep
from gateway.mcp import sse
from gateway.mcp.refusals import refusal, tool_error
from gateway.services import Services
from gateway.store.actions import Action

PROGRESS_EVERY_S = 5.0
_OPEN = ("pending", "approved", "executing")

log = logging.getLogger(__name__)


def _rpc(call: Call, result: dict[str, Any]) -> dict[str, Any]:
    assert call.mcp is not None
    return {"jsonrpc": "2.0", "id": call.mcp.id, "result": result}


def _waiting(action: Action) -> dict[str, Any]:
    """The isError result for an action nobody has finished deciding or executing."""
    if action.state == "pending":
        text = (
            "This call needs a human's approval and has NOT been executed: nothing has "
            f"happened yet (action {action.id}, waiting until {action.document['expires_at']}). "
            "To get its outcome once it is decided, call the same tool with exactly the same "
            "arguments again; do not change them, and do not try another way meanwhile."
        )
    else:
        text = (
            f"This call was approved and is being executed now (action {action.id}). Call "
            "the same tool with exactly the same arguments again to get its result."
        )
    status = "pending_approval" if action.state == "pending" else action.state
    body = {"status": status, "action_id": action.id, "message": text}
    return tool_error(json.dumps(body, ensure_ascii=False))


def _server_answer(result: dict[str, Any], limit: int) -> dict[str, Any] | None:
    """The JSON-RPC response in the server's stored answer (a JSON document or SSE);
    TooDeep when the last one that could be it is nested deeper than `limit`."""
    body = body_of(result).decode("utf-8", errors="replace")
    if body.lstrip().startswith("{"):
        candidates: list[str | None] = [body]
    else:
        candidates = [sse.data(event) for event in sse.events(body)]
    for text in reversed(candidates):
        try:
            message = json_bounds.loads(text or "", limit)
        except TooDeep:
            raise
        except ValueError:
            continue
        if isinstance(message, dict) and ("result" in message or "error" in message):
            return message
    return None


def _outcome(call: Call, action: Action, limit: int) -> dict[str, Any]:
    """The agent's answer once the action has ended; GatewayError for a refusal."""
    result = action.document.get("result") or {}
    if action.state in ("succeeded", "failed") and "status" in result:
        try:
            answer = _server_answer(result, limit)
        except TooDeep:
            raise GatewayError(
                ErrorCode.CONFLICT,
                f"the approved call was executed (action {action.id}), but the server's "
                f"answer is nested deeper than {limit} arrays or objects "
                "(protection.max_json_depth), more than the gateway reads; do not call "
                "again, ask an operator",
            ) from None
        if answer is None:
            raise GatewayError(
                ErrorCode.CONFLICT,
                f"the approved call was executed (action {action.id}) and the server "
                f"answered HTTP {result['status']} without a JSON-RPC result; do not call "
                "again, ask an operator",
            )
        assert call.mcp is not None
        return {**answer, "id": call.mcp.id}
    responses.ended(action, call.request_id)  # raises the refusal for every other end
    raise AssertionError(f"no answer for an action in state {action.state}")


def _json(document: dict[str, Any], call: Call) -> web.Response:
    return web.json_response(document, headers={"X-Request-Id": call.request_id})


async def _delivered(svc: Services, action: Action) -> None:
    """The agent has had this action's outcome: an identical call is a new one now."""
    await svc.actions.release_key(action.id)


async def run(call: Call, svc: Services, wait_s: float) -> web.StreamResponse:
    action = await parking.park(call, svc, wait_s)
    call.action_id = action.id
    if action.state in _OPEN and wait_s > 0:
        if _progress_token(call) is not None and _reads_sse(call):
            return await _hold_with_progress(call, svc, action, wait_s)
        assert call.tool is not None
        action = await states.hold(svc, action, wait_s, call.tool.timeout_s)
    return await _answer(call, svc, action)


async def _answer(call: Call, svc: Services, action: Action) -> web.Response:
    if action.state in _OPEN:
        call.pending_answer = True
        return _json(_rpc(call, _waiting(action)), call)
    if action.document.get("result") is None:  # found by its key: read with its result
        action = await svc.actions.get(action.id) or action
    try:
        document = _outcome(call, action, svc.config.protection.max_json_depth)
    finally:
        await _delivered(svc, action)
    return _json(document, call)


def _progress_token(call: Call) -> Any:
    body = call.input["request"]["body"] if call.input else None
    meta = (body.get("params") or {}).get("_meta") if isinstance(body, dict) else None
    return meta.get("progressToken") if isinstance(meta, dict) else None


def _reads_sse(call: Call) -> bool:
    return "text/event-stream" in call.request.headers.get("Accept", "")


async def _hold_with_progress(
    call: Call, svc: Services, action: Action, wait_s: float
) -> web.StreamResponse:
    """Hold as an SSE stream: progress while waiting, then the answer as the last event."""
    stream = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-store",
            "X-Request-Id": call.request_id,
        }
    )
    await stream.prepare(call.request)
    token, tick = _progress_token(call), 0
    assert call.tool is not None
    waiting = asyncio.ensure_future(states.hold(svc, action, wait_s, call.tool.timeout_s))
    try:
        while not waiting.done():
            tick += 1
            params = {
                "progressToken": token,
                "progress": tick,
                "message": f"waiting for approval of action {action.id}",
            }
            note = {"jsonrpc": "2.0", "method": "notifications/progress", "params": params}
            await stream.write(_event(note))
            await asyncio.wait({waiting}, timeout=PROGRESS_EVERY_S)
    except ConnectionError as exc:  # the agent left; the action waits for its repeat
        raise StreamBroken(stream) from exc
    finally:
        waiting.cancel()
    try:  # the stream has begun: a refusal now (the store failing, say) is its last event
        answer = (await _answer(call, svc, waiting.result())).text
    except GatewayError as error:
        refused = refusal(call.mcp, error, call.request_id)
        answer = (
            refused.text
            if refused is not None
            else json.dumps(_rpc(call, tool_error(error.message)))
        )
    except Exception:  # the store, say: the action is kept, its outcome is asked again
        log.exception("holding a parked MCP call failed", extra={"action": action.id})
        lost = (
            f"the gateway could not follow action {action.id} to its end; nothing more is "
            "known here: call the same tool with the same arguments again for its outcome"
        )
        answer = json.dumps(_rpc(call, tool_error(lost)))
    try:
        await stream.write(_event(json.loads(answer or "{}")))
        await stream.write_eof()
    except ConnectionError as exc:
        raise StreamBroken(stream) from exc
    return stream


def _event(message: dict[str, Any]) -> bytes:
    return f"event: message\ndata: {json.dumps(message, ensure_ascii=False)}\n\n".encode()
