"""Shadow mode: a second policy set decides every call too, and is never enforced.

Where its outcome (allow, approval or deny) differs from the enforced decision's, the
disagreement is counted (`callgate_policy_shadow_disagreements_total` by tool and
direction, e.g. `allow->deny`) and audited with both reasons, so a new policy can be tried
against live traffic before it is switched on. A shadow set that fails to load or to
decide never changes what happens to a call.
"""

from __future__ import annotations

import logging
from typing import Any

from gateway.policy.decision import Decision
from gateway.policy.errors import PolicyError
from gateway.policy.reload import Policies

log = logging.getLogger(__name__)


async def disagreement(
    shadow: Policies,
    input_doc: dict[str, Any],
    enforced: Decision | None,
    enforced_reason: str,
    enforced_version: str,
) -> dict[str, Any] | None:
    """What the shadow set decided, when it disagrees with the enforced decision (None
    when the enforced engine failed: its outcome is then `error`)."""
    if shadow.served is None:
        return None  # never loaded: its failure is on record already
    try:
        decision = await shadow.decide(input_doc)
        theirs, reason = decision.outcome, decision.reason
    except PolicyError as exc:
        log.warning("shadow policy failed", extra={"error": str(exc)})
        theirs, reason = "error", str(exc)
    ours = enforced.outcome if enforced is not None else "error"
    if theirs == ours:
        return None
    return {
        "direction": f"{ours}->{theirs}",
        "enforced": {"outcome": ours, "reason": enforced_reason, "version": enforced_version},
        "shadow": {"outcome": theirs, "reason": reason, "version": shadow.policy_version},
    }
