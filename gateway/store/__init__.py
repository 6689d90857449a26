"""Durable state: SQLite files opened the way callgate needs them."""
