"""The append-only, hash-chained audit log (DESIGN.md section 6)."""
