"""SQLAlchemy engines for a database URL of the config: `sqlite:///<file>` (over aiosqlite)
or `postgresql://…` (over asyncpg; libpq's `options=-c name=value` become server settings,
so `?options=-csearch_path%3D<schema>` puts the tables in a schema)."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine


class UrlError(ValueError):
    """A URL this module cannot make an engine for."""


def safe_url(url: str) -> str:
    """`url` without its password, for messages and logs."""
    return make_url(url).render_as_string(hide_password=True)


def server_settings(options: str) -> dict[str, str]:
    """libpq's `options` (`-c name=value …`) as asyncpg's server settings."""
    settings: dict[str, str] = {}
    words = iter(shlex.split(options))
    for word in words:
        if not word.startswith("-c"):
            raise UrlError(f"options: only -c name=value is understood, not {word!r}")
        setting = word[2:] or next(words, "")
        name, _, value = setting.partition("=")
        settings[name] = value
    return settings


def sqlite_file(url: str) -> Path | None:
    """The file of a `sqlite:///` URL; None for any other."""
    parsed = make_url(url)
    return Path(parsed.database) if parsed.drivername == "sqlite" and parsed.database else None


def create(url: str, connect_timeout_s: float, **options: Any) -> AsyncEngine:
    """An engine for `url`; `options` go to create_async_engine (pool, isolation)."""
    parsed: URL = make_url(url)
    path = sqlite_file(url)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        return create_async_engine(
            parsed.set(drivername="sqlite+aiosqlite"),
            connect_args={"timeout": connect_timeout_s},
            **options,
        )
    if parsed.drivername == "postgresql":
        plain, settings = _without_options(parsed)
        return create_async_engine(
            plain.set(drivername="postgresql+asyncpg"),
            connect_args={"server_settings": settings, "timeout": connect_timeout_s},
            **options,
        )
    raise UrlError(f"{safe_url(url)}: not a sqlite:/// or postgresql:// URL")


def asyncpg_dsn(url: str) -> tuple[str, dict[str, str]]:
    """A `postgresql://` URL as asyncpg.connect takes it: the DSN (password included: never
    print it, print `safe_url(url)`) and the server settings of its `options`."""
    parsed = make_url(url)
    if parsed.drivername != "postgresql":
        raise UrlError(f"{safe_url(url)}: not a postgresql:// URL")
    plain, settings = _without_options(parsed)
    return plain.render_as_string(hide_password=False), settings


def _without_options(parsed: URL) -> tuple[URL, dict[str, str]]:
    given = parsed.query.get("options")
    settings = server_settings(given if isinstance(given, str) else "")
    return parsed.difference_update_query(["options"]), settings
