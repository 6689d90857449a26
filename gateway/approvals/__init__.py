"""Approvals: the pending-actions queue, its lifecycle and the approvers' API (README,
"Approvals")."""

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
