"""Typed tools: a tool's OpenAPI document, read once, compiled into a path table and JSON
Schema validators, and used to resolve each call to its operation (docs/typed-tools.md)."""
