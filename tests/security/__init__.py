"""Regression tests for what a hostile agent and a bad day found (docs/security.md)."""
