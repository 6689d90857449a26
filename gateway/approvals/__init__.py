"""Approvals: the pending-actions queue, its lifecycle and the approvers' API (DESIGN.md §5)."""
