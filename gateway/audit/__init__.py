"""The append-only, hash-chained audit log (README "Audit log")."""
