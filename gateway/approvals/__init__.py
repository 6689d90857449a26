"""Approvals: the pending-actions queue, its lifecycle and the approvers' API (docs/approvals.md,
"Approvals")."""

# Every state an action can be in (lifecycle.py has the transitions).
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
