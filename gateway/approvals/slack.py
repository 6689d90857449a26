"""A new pending action as a Slack incoming-webhook message: a header, the action's
headline, why, who may decide and until when, and a button to its page.

Everything an agent wrote goes into `plain_text` objects, which Slack never reads as
markup, so `<!channel>` or `<https://evil|Approved>` in a body stays visible text.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from gateway.approvals.headline import headline

_MAX_FIELD_CHARS = 1900  # Slack takes at most 2000 characters in a section field


def _text(value: str) -> dict[str, Any]:
    return {"type": "plain_text", "text": _cut(value or "-"), "emoji": False}


def _cut(text: str) -> str:
    return text if len(text) <= _MAX_FIELD_CHARS else text[: _MAX_FIELD_CHARS - 1] + "…"


def _needs(decision: dict[str, Any]) -> str:
    count = decision["min_approvals"]
    needs = f"{count} approval{'s' if count != 1 else ''}"
    return needs + (f" by {' or '.join(decision['roles'])}" if decision["roles"] else "")


def message(action: dict[str, Any], link: str, with_body: bool) -> dict[str, Any]:
    decision = action["decision"]
    line = headline(action, with_body)
    expires = datetime.fromisoformat(action["expires_at"])
    risk = decision.get("tags", {}).get("risk")
    fields = [
        {"type": "mrkdwn", "text": "*Why*"},
        _text(decision["reason"] or "approval required"),
        {"type": "mrkdwn", "text": "*Needs*"},
        _text(_needs(decision)),
    ]
    if isinstance(risk, str) and risk:
        fields += [{"type": "mrkdwn", "text": "*Risk*"}, _text(risk)]
    when = (
        f"<!date^{int(expires.timestamp())}^{{date_short_pretty}} {{time}}|{action['expires_at']}>"
    )
    return {
        "text": f"Approval needed: {line}",  # the notification's text, and the fallback
        "blocks": [
            {"type": "header", "text": _text("Approval needed")},
            {"type": "section", "text": _text(line)},
            {"type": "section", "fields": fields},
            {"type": "context", "elements": [{"type": "mrkdwn", "text": f"Expires {when}"}]},
            {
                "type": "actions",
                "elements": [
                    {
                        "type": "button",
                        "text": _text("Open in callgate"),
                        "url": link,
                        "action_id": "open_action",
                        "style": "primary",
                    }
                ],
            },
        ],
    }
