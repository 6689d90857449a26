"""Reading an audit log on PostgreSQL with the queries written for sqlite3 (`verify`,
`export`, `follow`): for `callgate audit` and the tests."""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from sqlalchemy import Connection

from gateway.audit.chain import Database
from gateway.store import migrate

T = TypeVar("T")


class _Connection:
    """A PostgreSQL connection that runs the reading queries (`?` placeholders) as the
    sqlite3 module does, streaming their rows."""

    def __init__(self, connection: Connection) -> None:
        self._connection = connection.execution_options(stream_results=True)

    def execute(self, sql: str, parameters: Sequence[Any] = (), /) -> Any:
        numbers = itertools.count(1)
        sql = re.sub(r"\?", lambda _: f"${next(numbers)}", sql)
        return self._connection.exec_driver_sql(sql, tuple(parameters))


async def read_postgres(url: str, work: Callable[[Database], T]) -> T:
    """`work` on a connection to the audit log at `url`."""
    source = migrate.engine(url)
    try:
        # Streaming cursors need a transaction: this one (READ COMMITTED) sees each
        # batch committed before each statement starts, as `follow` needs.
        async with source.connect() as connection:
            return await connection.run_sync(lambda sync: work(_Connection(sync)))
    finally:
        await source.dispose()
