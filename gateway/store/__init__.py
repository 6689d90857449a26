"""Durable state: the store and audit databases, on SQLite files or PostgreSQL."""
