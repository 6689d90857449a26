"""Approvals (docs/approvals.md): a parked call's life, a module per job (parking,
decisions, execution, recovery, states), what a held agent gets and the agents' view of
their actions. The approvers' API and web page are on the admin listener
(gateway/admin/); `callgate approvals` is in gateway/cli/."""

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
