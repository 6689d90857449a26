"""Approvals: the pending-actions queue, its lifecycle, the agents' view of their actions
and `callgate approvals` (docs/approvals.md); the approvers' API and web page are on
the admin listener (gateway/admin/)."""

# Every state an action can be in (states.py has the transitions).
STATES = (
    "pending",
    "approved",
    "executing",
    "succeeded",
    "failed",
    "denied",
    "expired",
    "outcome_unknown",
)
