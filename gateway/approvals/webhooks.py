"""Announce each new pending action to the configured webhooks, signed and retried.

In the `generic` format the POST body is a JSON summary (with a Slack-compatible `text`);
the request body is left out unless the webhook's `include_body` is on. The `slack` format
is a Slack incoming-webhook message (slack.py). `X-Callgate-Signature: t=<unix time>,
v1=<hex>` is HMAC-SHA256 with the webhook's secret over `<unix time>.<body>`: receivers
recompute it and reject old timestamps, so a captured delivery cannot be replayed later.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import time
from typing import Any

import aiohttp

from gateway.approvals import slack
from gateway.approvals.headline import headline
from gateway.config import Webhook
from gateway.services import Services

log = logging.getLogger(__name__)

ATTEMPTS = 5
FIRST_BACKOFF_S = 0.5
TIMEOUT = aiohttp.ClientTimeout(total=10)


def link(svc: Services, action: dict[str, Any]) -> str | None:
    """The action's page for approvers, when approvals.public_url says where that is."""
    base = svc.config.approvals.public_url
    return None if base is None else f"{base}/ui/actions/{action['id']}"


def summary(action: dict[str, Any], include_body: bool, url: str | None) -> dict[str, Any]:
    request = action["request"]
    # The target as sent (percent-encoded), and <>& escaped: agent text must not become
    # Slack markup (`<!channel>`, `<mailto:…|Approved by CFO>`).
    text = _slack_escape(
        f"callgate: {action['agent']} wants {request['method']} {request['target']} on "
        f"{action['tool']} ({action['decision']['reason'] or 'approval required'}); "
        f"action {action['id']}, expires {action['expires_at']}"
    )
    out = {
        "event": "action.pending",
        "text": text,
        "summary": headline(action, include_body),
        "action_id": action["id"],
        "agent": action["agent"],
        "tool": action["tool"],
        "method": request["method"],
        "path": request["path"],
        "reason": action["decision"]["reason"],
        "tags": action["decision"]["tags"],
        "roles": action["decision"]["roles"],
        "min_approvals": action["decision"]["min_approvals"],
        "created_at": action["created_at"],
        "expires_at": action["expires_at"],
    }
    if url is not None:
        out["url"] = url
    if include_body:
        out["request_body"] = {
            key: request[key] for key in ("body", "body_text", "body_base64") if key in request
        }
    return out


def _slack_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def signature(secret: str, timestamp: int, body: bytes) -> str:
    signed = f"{timestamp}.".encode() + body
    return f"t={timestamp},v1={hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()}"


async def deliver(svc: Services, hook: Webhook, action: dict[str, Any]) -> bool:
    """POST the summary until the receiver takes it (2xx), at most ATTEMPTS times."""
    url = link(svc, action)
    if hook.format == "slack":
        assert url is not None  # config: a slack webhook needs approvals.public_url
        document = slack.message(action, url, hook.include_body)
    else:
        document = summary(action, hook.include_body, url)
    body = json.dumps(document, ensure_ascii=False).encode()
    backoff = FIRST_BACKOFF_S
    for attempt in range(1, ATTEMPTS + 1):
        timestamp = int(time.time())
        headers = {
            "Content-Type": "application/json",
            "X-Callgate-Delivery": f"{action['id']}/{attempt}",
        }
        if hook.secret is not None:
            secret = hook.secret.get_secret_value()
            headers["X-Callgate-Signature"] = signature(secret, timestamp, body)
        try:
            async with svc.http.post(
                hook.url, data=body, headers=headers, timeout=TIMEOUT
            ) as response:
                if 200 <= response.status < 300:
                    return True
                retry = response.status == 429 or response.status >= 500
                problem = f"status {response.status}"
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            retry, problem = True, type(exc).__name__
        if not retry or attempt == ATTEMPTS:
            break
        await asyncio.sleep(backoff)
        backoff *= 2
    svc.metrics.webhook_failures.inc()
    log.error(
        "webhook gave up",
        extra={"action_id": action["id"], "attempts": attempt, "problem": problem},
    )
    return False


def announce(svc: Services, action: dict[str, Any]) -> None:
    for hook in svc.config.approvals.webhooks:
        svc.spawn(deliver(svc, hook, action), loop=True)  # best effort: not awaited at exit
