"""The append-only, hash-chained audit log (docs/operations.md, "Audit log")."""
